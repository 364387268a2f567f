/* Pure directory-MESI engine with leases: one instance per cache node plays the requester (cache
 * controller) for the lines it holds and the home (directory + memory controller) for its keys.
 *
 * Protocol: home-centric, blocking directory MESI (Nagarajan, Sorin, Hill, Wood, "A Primer on Memory
 * Consistency and Cache Coherence", 2nd ed., ch. 8, Tables 8.2/8.3) with leases (Gray & Cheriton,
 * SOSP 1989, §2-3).  The home serialises one transaction per key; it sends every Inv / Fwd itself and
 * collects the Inv-Acks / owner data before it answers the requester, so a requester never counts
 * acks (hence no IM_AD/IM_A/SM_A states: the Data is the unblock).
 *
 * Purity: no socket, clock or randomness inside.  Time comes in as `now_ms` arguments (a monotonic
 * clock of the caller's node); messages, main-memory operations and client completions go out through
 * an outbox drained with ds_mesi_poll().
 *
 * CLOCK ASSUMPTION.  Every node's clock advances at a rate within (1 +- rho) of real time.  A holder
 * times its lease from the moment it SENT the request (the home echoes that timestamp) and ends it
 * `margin_ms` early: holder deadline = sent_ts + lease_ms - margin_ms.  The home counts a grant from
 * when it sent the grant and ends it `margin_ms` late: home deadline = grant_ts + lease_ms + margin_ms.
 * Correct when margin_ms >= 2 * rho * lease_ms (e.g. rho = 1e-3, lease 2 s: margin >= 4 ms; we use
 * 50-100 ms).  Under that assumption a copy stops being used before the home treats it as gone.
 *
 * RETRANSMISSION.  Requests (GetS, GetM, Put*, WB) are resent every retry_ms with the same request id
 * until answered; the home resends Inv / Fwd every retry_ms to each node that has not answered, until it
 * answers or its lease (home deadline) runs out.  Replies are never resent on their own: a duplicate
 * request re-triggers them, and every handler is idempotent (ids + versions).  A client operation that
 * has not completed after op_timeout_ms completes with DS_MESI_EUNAVAIL (the glue answers 503).
 * A write-through write is applied at most once: it travels with its id, and a home that already
 * applied that write for that node (the answer was lost or overtaken by a Fwd, and the requester
 * retried it as a GetM) answers with the version of that first application instead.  The home
 * keeps the last applied write id of each node in its directory entry and in main memory with the
 * value (MEM_WRITE's `applied`), so a retry that reaches a restarted home or a new home of the key
 * is recognised too.
 *
 * WRITE POLICY and LOSS WINDOW.  write-through: a write completes after the home has written it to main
 * memory (no acknowledged write is ever lost).  write-back: a write completes when it is applied to the
 * local M line; dirty data is flushed (WB) every flush_ms, on eviction (PutM) and when the home recalls
 * the line (Fwd).  An owner that cannot flush (crash, partition, home restart or re-homing of the key)
 * loses the writes made since its last acknowledged flush: at most flush_ms + lease_ms of writes, and at
 * most max_dirty versions (the owner stops writing until a flush is acknowledged).  The home then skips
 * max_dirty versions (the persisted "floor") so versions never go back.
 *
 * MEMBERSHIP.  Node ids are small integers < DS_MESI_MAX_NODES; every message carries the membership
 * epoch and messages of another epoch are dropped (counted).  After creation or an epoch change the
 * home waits one lease term (+ margin) before it grants anything (DS_MESI_NACK_NOT_READY meanwhile), so
 * every copy granted by a previous home has expired.
 *
 * HOME LEASES (home_lease_ms > 0).  Membership views can differ (gossip has no quorum): two nodes may
 * both take themselves for a key's home.  Main memory is then the arbiter: a home acts for a key only
 * while it holds the key's home lease there.  MEM_READ loads the key AND takes the lease for
 * home_lease_ms (refused while another node holds it: ds_mesi_mem_read_refused; requesters retry);
 * MEM_RENEW extends it if still held (in the background while copies granted are valid or requests
 * wait, so grants need no round trip); MEM_WRITE is refused unless the lease is held.  The home times
 * its lease from when it sent the MEM_READ / MEM_RENEW and ends it home_margin early (margin_ms scaled
 * to home_lease_ms), and every copy it grants ends no later than its lease: after that, by its own
 * clock, it drops the key's entry (a paused home that resumes cannot grant; a new home takes the
 * lease only after memory expired it, when every copy of the old one has ended). */
#ifndef DS_ROLES_CACHE_MESI_H
#define DS_ROLES_CACHE_MESI_H

#include <stddef.h>
#include <stdint.h>

#define DS_MESI_MAX_NODES 16
#define DS_MESI_MAX_KEY 512
#define DS_MESI_MAX_VALUE (1u << 20)

/* Return codes. */
enum {
    DS_MESI_OK = 0,
    DS_MESI_PENDING = 1,  /* the operation completes later through a DS_MESI_OUT_DONE output */
    DS_MESI_EBUSY = 2,    /* too many queued operations (glue: 503 + Retry-After) */
    DS_MESI_EUNAVAIL = 3, /* the home did not answer in time (glue: 503) */
    DS_MESI_EINVAL = 4,   /* bad argument (key or value too long, bad node id) */
    DS_MESI_ENOMEM = 5,
    DS_MESI_ENOTFOUND = 6, /* no such line / directory entry (introspection) */
    DS_MESI_EDECODE = 7,   /* malformed wire message */
};
const char *ds_mesi_strerror(int rv);

/* Cache-side line states (stable M/E/S/I, then transient; "X_Y" = going from X to Y). */
enum ds_mesi_state {
    DS_MESI_I = 0,
    DS_MESI_S,
    DS_MESI_E,
    DS_MESI_M,
    DS_MESI_IS_D,   /* sent GetS, waiting for Data */
    DS_MESI_IS_D_I, /* sent GetS, an Inv for the awaited grant came first: serve the reads once, then I */
    DS_MESI_IM_D,   /* sent GetM from I, waiting for Data */
    DS_MESI_SM_D,   /* sent GetM holding S (still readable while the lease lasts), waiting for Data */
    DS_MESI_MI_A,   /* sent PutM (with data), waiting for Put-Ack */
    DS_MESI_EI_A,   /* sent PutE, waiting for Put-Ack */
    DS_MESI_SI_A,   /* sent PutS, waiting for Put-Ack */
    DS_MESI_II_A,   /* sent a Put, then lost the copy to an Inv/Fwd: waiting for Put-Ack */
    DS_MESI_NSTATES
};
const char *ds_mesi_state_name(int state);

/* Directory states at the home. */
enum ds_mesi_dir_state { DS_MESI_DIR_I = 0, DS_MESI_DIR_S, DS_MESI_DIR_EM };

enum ds_mesi_msg_type {
    DS_MESI_MSG_GETS = 1,
    DS_MESI_MSG_GETM,
    DS_MESI_MSG_PUTS,
    DS_MESI_MSG_PUTE,
    DS_MESI_MSG_PUTM,    /* eviction of M, carries the dirty value */
    DS_MESI_MSG_WB,      /* write-back of M keeping the line; renews the owner's lease */
    DS_MESI_MSG_FWD_GETS,
    DS_MESI_MSG_FWD_GETM,
    DS_MESI_MSG_INV,
    DS_MESI_MSG_DATA,    /* grant S/E/M, value, version, lease */
    DS_MESI_MSG_INV_ACK,
    DS_MESI_MSG_FWD_ACK, /* owner's answer to a Fwd: its value, or FLAG_NOCOPY */
    DS_MESI_MSG_PUT_ACK, /* answer to Put* and WB (WB: renews the lease) */
    DS_MESI_MSG_NACK,
    DS_MESI_MSG_NTYPES
};
const char *ds_mesi_msg_name(int type);

enum ds_mesi_nack {
    DS_MESI_NACK_BUSY = 1,      /* the key's queue at the home is full */
    DS_MESI_NACK_NOT_READY = 2, /* the home is in its warm-up lease term; retry */
    DS_MESI_NACK_WRONG_HOME = 3,/* the receiver is not the key's home; retry */
    DS_MESI_NACK_NOT_OWNER = 4, /* WB from a node that no longer owns the line */
};

#define DS_MESI_FLAG_PRESENT 0x01u /* the value exists (0 = deleted / never written) */
#define DS_MESI_FLAG_DIRTY 0x02u   /* FWD_ACK: the value is newer than main memory */
#define DS_MESI_FLAG_NOCOPY 0x04u  /* FWD_ACK: the node holds no copy for that grant */
#define DS_MESI_FLAG_WRITE 0x08u   /* GETM / WB (write-through): carries a client write to apply,
                                    * txn = the write's id (the same on every retry); DATA answering
                                    * such a GETM: txn = the version the home applied it at */

/* One coherence message.  key/value point into the sender's (or decoder's) buffer. */
struct ds_mesi_msg {
    uint8_t type;    /* enum ds_mesi_msg_type */
    uint8_t grant;   /* DATA: DS_MESI_S / E / M */
    uint8_t flags;   /* DS_MESI_FLAG_* */
    uint8_t reason;  /* NACK: enum ds_mesi_nack */
    uint16_t from, to;
    uint64_t epoch;   /* membership epoch of the sender */
    uint64_t txn;     /* home transaction id (Inv, Fwd and their acks); FLAG_WRITE: see there */
    uint64_t req;     /* requester's request id (requests, DATA, PUT_ACK, NACK) */
    uint64_t gid;     /* grant id the message is about (= req of the DATA that granted the copy) */
    uint64_t version; /* version of the carried value */
    uint64_t floor;   /* DATA: writes by the new holder must use versions > floor */
    uint64_t ts;      /* requests: sender clock at send; DATA / PUT_ACK echo it (lease start) */
    uint32_t lease_ms;
    uint16_t key_len;
    uint32_t value_len;
    const uint8_t *key;
    const uint8_t *value;
};

/* Wire encoding (mesi_wire.c): little-endian, fixed header then key then value:
 *   u8 magic 0xC7 | u8 wire version 1 | u8 type | u8 grant | u8 flags | u8 reason |
 *   u16 from | u16 to | u64 epoch | u64 txn | u64 req | u64 gid | u64 version | u64 floor | u64 ts |
 *   u32 lease_ms | u16 key_len | u32 value_len | key bytes | value bytes          (header: 76 bytes)
 * ds_mesi_encode writes into buf (cap bytes); *len receives the size; DS_MESI_EINVAL if it does not
 * fit.  ds_mesi_decode validates everything (magic, version, type, ranges, lengths, exact size) and
 * returns DS_MESI_EDECODE on any malformed input; on success msg->key/value point into buf. */
#define DS_MESI_WIRE_HEADER 76
int ds_mesi_encode(const struct ds_mesi_msg *msg, uint8_t *buf, size_t cap, size_t *len);
int ds_mesi_decode(const uint8_t *buf, size_t len, struct ds_mesi_msg *msg);

/* The ring: which node is the home of a key.  The glue embeds this in its own struct. */
struct ds_mesi_ring {
    uint16_t (*home_of)(const struct ds_mesi_ring *ring, const uint8_t *key, size_t len);
};

/* Replacement policy over the lines of one node.  Lines are identified by an opaque
 * struct ds_mesi_lru_node embedded in each line; `victim` walks candidates from the best victim on
 * (prev = NULL starts).  The engine skips lines that may not be evicted (transient). */
struct ds_mesi_lru_node {
    struct ds_mesi_lru_node *prev, *next;
};
struct ds_mesi_policy {
    void (*insert)(struct ds_mesi_policy *p, struct ds_mesi_lru_node *n);
    void (*touch)(struct ds_mesi_policy *p, struct ds_mesi_lru_node *n);
    void (*remove)(struct ds_mesi_policy *p, struct ds_mesi_lru_node *n);
    struct ds_mesi_lru_node *(*victim)(struct ds_mesi_policy *p, struct ds_mesi_lru_node *prev);
};
/* The LRU policy (lru.c): a list head owned by the caller, no allocation. */
struct ds_mesi_lru {
    struct ds_mesi_policy ops;
    struct ds_mesi_lru_node head;
};
void ds_mesi_lru_init(struct ds_mesi_lru *lru);

enum ds_mesi_write_policy { DS_MESI_WRITE_BACK = 0, DS_MESI_WRITE_THROUGH = 1 };

struct ds_mesi_config {
    uint16_t self;           /* this node's id, < DS_MESI_MAX_NODES */
    uint64_t incarnation;    /* < 2^32, larger on every start of the node (a persisted boot
                              * count): ids are (incarnation << 32 | counter) and a home drops
                              * requests with ids not above the last it granted that node */
    uint64_t epoch;          /* initial membership epoch */
    uint32_t lease_ms;       /* lease term granted with every copy */
    uint32_t margin_ms;      /* clock margin, see CLOCK ASSUMPTION */
    uint32_t retry_ms;       /* retransmission interval */
    uint32_t op_timeout_ms;  /* client operation deadline */
    uint32_t flush_ms;       /* write-back: an M line is flushed at most this long after a write */
    uint32_t max_dirty;      /* write-back: versions an owner may write beyond its last flush */
    uint32_t queue_max;      /* home: queued requests per key beyond the running one */
    uint32_t ops_max;        /* pending client operations per line */
    size_t max_entries;      /* LRU: lines per node */
    size_t max_bytes;        /* LRU: key + value bytes per node */
    int write_policy;        /* enum ds_mesi_write_policy */
    uint32_t home_lease_ms;  /* 0, or >= 2 * lease_ms: fence homes by leases in memory (HOME LEASES) */
    const struct ds_mesi_ring *ring; /* borrowed, outlives the engine */
    struct ds_mesi_policy *policy;   /* borrowed; NULL = built-in LRU */
};
/* Fills cfg with sane defaults (lease 2000 ms, margin 50, retry 100, op timeout 5000, flush 500,
 * max_dirty 64, queue_max 16, ops_max 32, 4096 entries, 64 MiB, write-back, no home leases). */
void ds_mesi_config_default(struct ds_mesi_config *cfg);

struct ds_mesi; /* opaque engine */

/* Creates an engine; *out owns it (free with ds_mesi_destroy).  now_ms starts the home's warm-up. */
int ds_mesi_create(const struct ds_mesi_config *cfg, uint64_t now_ms, struct ds_mesi **out);
void ds_mesi_destroy(struct ds_mesi *m);

/* Result of a client operation (hit or completion).  value points into the engine and stays valid
 * until the next call into the engine. */
struct ds_mesi_result {
    int rv;            /* DS_MESI_OK, EBUSY or EUNAVAIL (completions) */
    uint64_t op_id;
    uint64_t version;  /* the key's version (home write counter) the operation saw or made */
    int present;       /* 0: the key does not exist (never written or deleted) */
    int state;         /* this node's line state at completion */
    const uint8_t *value;
    uint32_t value_len;
};

/* Client operations.  DS_MESI_OK: served now, *res filled.  DS_MESI_PENDING: *op_id completes later
 * through a DS_MESI_OUT_DONE output.  DS_MESI_EBUSY: too many operations waiting on this line.
 * key/value are copied. */
int ds_mesi_read(struct ds_mesi *m, const uint8_t *key, size_t klen, uint64_t now_ms,
                 struct ds_mesi_result *res, uint64_t *op_id);
int ds_mesi_write(struct ds_mesi *m, const uint8_t *key, size_t klen, const uint8_t *value,
                  size_t vlen, uint64_t now_ms, struct ds_mesi_result *res, uint64_t *op_id);
int ds_mesi_delete(struct ds_mesi *m, const uint8_t *key, size_t klen, uint64_t now_ms,
                   struct ds_mesi_result *res, uint64_t *op_id);

/* Inputs.  ds_mesi_recv: a message from the network (copied as needed; the caller keeps msg).
 * ds_mesi_tick: retransmissions, lease expiries, flushes, timeouts; call every few ms.
 * ds_mesi_set_epoch: new membership (restarts the home's warm-up, drops entries no longer homed here). */
int ds_mesi_recv(struct ds_mesi *m, const struct ds_mesi_msg *msg, uint64_t now_ms);
void ds_mesi_tick(struct ds_mesi *m, uint64_t now_ms);
void ds_mesi_set_epoch(struct ds_mesi *m, uint64_t epoch, uint64_t now_ms);

/* Main memory completions, for DS_MESI_OUT_MEM_READ / MEM_WRITE outputs with the same id.  A missing
 * key is present = 0, version 0, floor 0, no applied record.  `applied` is the record stored by the
 * last MEM_WRITE of the key (applied_len <= DS_MESI_MAX_APPLIED, else DS_MESI_EINVAL).  The glue
 * retries failed memory operations itself. */
int ds_mesi_mem_read_done(struct ds_mesi *m, uint64_t id, int present, const uint8_t *value,
                          size_t vlen, uint64_t version, uint64_t floor, const uint8_t *applied,
                          size_t applied_len, uint64_t now_ms);
int ds_mesi_mem_write_done(struct ds_mesi *m, uint64_t id, uint64_t now_ms);
/* Home leases: memory did not give the lease of MEM_READ `id` (another node holds it).  The entry is
 * dropped; the requests waiting on it are retransmitted by their senders and try again. */
int ds_mesi_mem_read_refused(struct ds_mesi *m, uint64_t id, uint64_t now_ms);
/* Home leases: the MEM_RENEW `id` completed; held = 0: the lease was no longer this node's (the
 * entry is dropped). */
int ds_mesi_mem_renew_done(struct ds_mesi *m, uint64_t id, int held, uint64_t now_ms);
/* Main memory refused the MEM_WRITE `id` because it holds a higher version (or the same version
 * with a higher floor), or (home leases) this node does not hold the key's lease: another node acted
 * as the key's home.  The home answers nothing of that
 * transaction (a write-through write is never acknowledged at a refused version), drops the key's
 * directory entry and waits one lease term (+ margin) before it grants anything again. */
int ds_mesi_mem_write_refused(struct ds_mesi *m, uint64_t id, uint64_t now_ms);

/* Outbox. */
enum ds_mesi_out_kind {
    DS_MESI_OUT_SEND = 1,  /* send msg to msg.to */
    DS_MESI_OUT_MEM_READ,  /* read key from main memory (home leases: and take its lease), then
                            * ds_mesi_mem_read_done(id) or ds_mesi_mem_read_refused(id) */
    DS_MESI_OUT_MEM_WRITE, /* store {present, value, version, floor, applied} (replacing the key's
                            * record), then ds_mesi_mem_write_done(id) */
    DS_MESI_OUT_DONE,      /* client operation res.op_id completed */
    DS_MESI_OUT_LOST,      /* write-back data of key lost: versions (lost_from, lost_to] */
    DS_MESI_OUT_MEM_RENEW, /* home leases: extend key's lease if held, then ds_mesi_mem_renew_done */
};
/* The home's record of the last client write it applied for each node (write ids, so that a write
 * retried to a restarted or new home is not applied again): opaque bytes main memory keeps with the
 * value. */
#define DS_MESI_MAX_APPLIED (DS_MESI_MAX_NODES * 17)
struct ds_mesi_out {
    int kind;
    struct ds_mesi_msg msg;     /* SEND */
    uint64_t id;                /* MEM_*: operation id */
    const uint8_t *key;         /* MEM_*, DONE, LOST */
    uint16_t key_len;
    const uint8_t *value;       /* MEM_WRITE */
    uint32_t value_len;
    int present;                /* MEM_WRITE */
    uint64_t version, floor;    /* MEM_WRITE */
    uint8_t applied[DS_MESI_MAX_APPLIED]; /* MEM_WRITE */
    uint32_t applied_len;
    uint64_t lost_from, lost_to;/* LOST */
    struct ds_mesi_result res;  /* DONE */
};
/* Takes the next output into *out; returns 1, or 0 when the outbox is empty.  Pointers in *out stay
 * valid until the next call into the engine. */
int ds_mesi_poll(struct ds_mesi *m, struct ds_mesi_out *out);

/* Introspection. */
struct ds_mesi_line_info {
    int state;
    uint64_t version;
    uint64_t lease_until;  /* holder deadline (this node's clock) */
    int lease_valid;       /* at the now_ms given */
    int present;
    int dirty;
    uint64_t acked_base;   /* write-back: version of the last acknowledged flush / grant */
    uint64_t unflushed_from; /* versions (unflushed_from, version] would be lost by a crash now */
    uint64_t gid;
    const uint8_t *value;  /* valid until the next call */
    uint32_t value_len;
    uint32_t pending_ops;
};
int ds_mesi_line_info(struct ds_mesi *m, const uint8_t *key, size_t klen, uint64_t now_ms,
                      struct ds_mesi_line_info *info);

struct ds_mesi_dir_info {
    int state;              /* enum ds_mesi_dir_state */
    uint64_t sharers;       /* bitmap of node ids */
    int owner;              /* -1 = none */
    uint64_t version, floor;
    int busy;               /* a transaction is running */
    uint32_t queued;
    int ready;              /* warm-up over */
};
/* DS_MESI_ENOTFOUND if this node keeps no directory entry for the key (not home, or never used). */
int ds_mesi_dir_info(struct ds_mesi *m, const uint8_t *key, size_t klen, uint64_t now_ms,
                     struct ds_mesi_dir_info *info);

struct ds_mesi_stats {
    uint64_t hits, misses;
    uint64_t evictions[DS_MESI_NSTATES]; /* by the state of the evicted line */
    uint64_t writebacks;                 /* WB and PutM sent */
    uint64_t inv_sent, inv_received;
    uint64_t msgs_sent[DS_MESI_MSG_NTYPES], msgs_received[DS_MESI_MSG_NTYPES];
    uint64_t stale_dropped;              /* old epoch / transaction / request ids */
    uint64_t lease_expiries;             /* copies dropped because their lease ran out */
    uint64_t dirty_lost;                 /* write-back lines whose dirty data was lost */
    uint64_t busy_nacks;                 /* home: requests refused, queue full */
    uint64_t op_timeouts;
    uint64_t mem_refused;                /* home: memory writes refused (a newer version there) */
    uint64_t home_lease_refused;         /* home: home leases refused or lost to another node */
    uint64_t lines[DS_MESI_NSTATES];     /* gauge: lines by state */
    uint64_t entries, bytes;             /* gauge */
    uint64_t dir_entries;                /* gauge */
};
const struct ds_mesi_stats *ds_mesi_stats(struct ds_mesi *m);

#endif
