/* Pure Raft consensus core (Ongaro's dissertation) in the etcd "Ready" style: time, messages and
 * requests come in as calls; persistence, messages and applies go out as one batch per ready(). */
#ifndef DS_RAFT_RAFT_H
#define DS_RAFT_RAFT_H

#include <stddef.h>
#include <stdint.h>

#include "raft/entry.h"

#define DS_RAFT_MAX_NODES 16    /* voters + learners of one configuration */
#define DS_RAFT_MAX_INFLIGHT 64 /* upper bound of options.max_inflight */

enum ds_raft_err {
    DS_RAFT_OK = 0,
    DS_RAFT_ENOMEM = 1,  /* allocation failed; the core is unchanged */
    DS_RAFT_EINVAL,      /* bad argument or option */
    DS_RAFT_ENOTLEADER,  /* only the leader does this; the known leader is reported */
    DS_RAFT_EBUSY,       /* a batch is not advanced, a transfer or a config change is pending */
    DS_RAFT_ECATCHUP,    /* the learner has not caught up with the commit index yet */
    DS_RAFT_EBADMSG,     /* a message contradicts the protocol (e.g. overwrites committed entries) */
    DS_RAFT_ETRUNC,      /* decoder: input ends early */
    DS_RAFT_EVERSION,    /* decoder: unknown format version */
    DS_RAFT_ETOOBIG,     /* decoder/encoder: a count or a size is above its cap */
    DS_RAFT_EFORMAT,     /* decoder: a field has an invalid value or bytes trail */
};

const char *ds_raft_strerror(int err);

enum ds_raft_role {
    DS_RAFT_FOLLOWER = 0,
    DS_RAFT_PRECANDIDATE = 1, /* pre-vote phase, term not yet increased (dissertation §9.6) */
    DS_RAFT_CANDIDATE = 2,
    DS_RAFT_LEADER = 3,
};

const char *ds_raft_role_name(int role);

/* A configuration (dissertation §4): voters decide, learners only receive the log. */
struct ds_raft_membership {
    uint32_t n_voters;
    uint32_t n_learners;
    uint64_t voters[DS_RAFT_MAX_NODES];
    uint64_t learners[DS_RAFT_MAX_NODES];
};

/* What a snapshot covers: the state after applying every entry up to index. */
struct ds_raft_snapshot_meta {
    uint64_t index;
    uint64_t term;
    struct ds_raft_membership conf; /* the configuration in effect at index */
};

struct ds_raft_options {
    uint64_t id;                  /* this node, nonzero */
    uint32_t election_min_ms;     /* randomised election timeout in [min, max] (Raft §5.2) */
    uint32_t election_max_ms;
    uint32_t heartbeat_ms;        /* leader heartbeat interval, < election_min_ms */
    uint32_t max_append_entries;  /* entries per AppendEntries, >= 1 */
    uint32_t max_append_bytes;    /* payload bytes per AppendEntries (one entry always fits) */
    uint32_t max_inflight;        /* pipelined AppendEntries per follower, 1..DS_RAFT_MAX_INFLIGHT */
    uint32_t snapshot_trailing;   /* entries kept in memory behind a snapshot */
    uint8_t pre_vote;             /* dissertation §9.6 */
    uint8_t check_quorum;         /* leader steps down without a majority; leases block votes */
    uint8_t async_persist;        /* entries become durable after advance (ds_raft_persisted) */
    uint64_t seed;                /* seeds the struct ds_prng of the randomised timeouts */
};

/* Sensible defaults for a LAN cluster (150-300 ms elections, 50 ms heartbeats, pre-vote and
 * check-quorum on); the caller still sets id and seed. */
void ds_raft_options_default(struct ds_raft_options *o);

/* What the glue loaded from storage.  A fresh node passes zeroes except snap.conf = the bootstrap
 * configuration (identical on every node and every start; empty for a node that will join as a
 * learner).  entries are those after snap.index, contiguous. */
struct ds_raft_durable {
    struct ds_raft_hard_state hs;
    struct ds_raft_snapshot_meta snap;
    const uint8_t *snap_data; /* borrowed; the core copies it */
    size_t snap_len;
    const struct ds_raft_entry *entries; /* borrowed; the core copies them */
    size_t n_entries;
};

enum ds_raft_msg_type {
    DS_RAFT_MSG_APPEND = 1,      /* AppendEntries (Raft §5.3) */
    DS_RAFT_MSG_APPEND_RESP = 2,
    DS_RAFT_MSG_VOTE = 3,        /* RequestVote (Raft §5.2) */
    DS_RAFT_MSG_VOTE_RESP = 4,
    DS_RAFT_MSG_PREVOTE = 5,     /* dissertation §9.6 */
    DS_RAFT_MSG_PREVOTE_RESP = 6,
    DS_RAFT_MSG_HEARTBEAT = 7,   /* empty AppendEntries that carries the ReadIndex context */
    DS_RAFT_MSG_HEARTBEAT_RESP = 8,
    DS_RAFT_MSG_SNAPSHOT = 9,    /* InstallSnapshot (dissertation §5.3), whole snapshot */
    DS_RAFT_MSG_TIMEOUT_NOW = 10, /* leadership transfer (dissertation §3.10) */
};
#define DS_RAFT_MSG_TYPE_MAX 10

#define DS_RAFT_MSG_FLAG_TRANSFER 0x01 /* vote request caused by TimeoutNow: ignore leases */

struct ds_raft_msg {
    uint8_t type;   /* enum ds_raft_msg_type */
    uint8_t flags;  /* DS_RAFT_MSG_FLAG_* */
    uint8_t reject; /* responses: 1 = rejected */
    uint64_t from, to, term;
    uint64_t log_term;   /* APPEND: prev log term; VOTE/PREVOTE: last log term */
    uint64_t index;      /* APPEND: prev log index; VOTE: last index; APPEND_RESP: last/rejected */
    uint64_t commit;     /* APPEND/HEARTBEAT: leader commit */
    uint64_t hint_index; /* rejected APPEND_RESP: index to retry from (fast back-off) */
    uint64_t hint_term;  /* rejected APPEND_RESP: the follower's term at hint_index */
    uint64_t ctx;        /* HEARTBEAT(_RESP): ReadIndex round */
    uint32_t n_entries;
    struct ds_raft_entry *entries; /* APPEND */
    struct ds_raft_snapshot_meta snap; /* SNAPSHOT */
    uint32_t snap_len;
    const uint8_t *snap_data;      /* SNAPSHOT */
};

/* ReadIndex result (dissertation §6.4): serve the read with context ctx once applied >= index. */
struct ds_raft_read_state {
    uint64_t ctx;
    uint64_t index;
};

/* One batch of work.  Every pointer is owned by the core and valid until ds_raft_advance().
 * The glue, in this order: (1) if has_snapshot, persist snapshot (meta + data) and drop its whole
 * log; else if truncate_from != 0, drop stored entries >= truncate_from; (2) append entries;
 * (3) if has_hard_state, persist hs; one fsync covers (1)-(3); (4) send msgs; (5) restore the
 * snapshot into the state machine if has_snapshot, then apply committed; (6) serve reads;
 * (7) ds_raft_advance().  Between ready() and advance() the core accepts no input (EBUSY).
 *
 * When send_first is set, (4) may come before (1)-(3): the batch is a leader's, changes no term,
 * vote, snapshot or truncation, and its messages claim nothing about this node's disk (they are
 * AppendEntries, heartbeats, snapshots, TimeoutNow or refusals).  The followers then write the
 * entries while the leader does (dissertation §10.2.1).  The leader counts its own log towards a
 * commit (§5.4.2) only through answers it steps after advance(), so only once the entries it
 * sent are durable here too.
 *
 * With options.async_persist, entries need not be durable at (7): the glue may write them, call
 * advance() and have them synced meanwhile (another thread), then report the synced prefix with
 * ds_raft_persisted().  The core counts the leader's own log towards a commit, and a follower
 * answers an AppendEntries as accepted, only up to what is reported durable.  send_first is then
 * set on every batch that changes no term, vote, snapshot or truncation; a batch that does is
 * handled as above ((1)-(3) durable before (4)), and its entries are reported after advance(). */
struct ds_raft_ready {
    int has_hard_state;
    struct ds_raft_hard_state hs;
    uint64_t truncate_from;
    size_t n_entries;
    const struct ds_raft_entry *entries;
    int has_snapshot;
    struct ds_raft_snapshot_meta snap;
    const uint8_t *snap_data;
    size_t snap_len;
    size_t n_msgs;
    const struct ds_raft_msg *msgs;
    size_t n_committed;
    const struct ds_raft_entry *committed;
    size_t n_reads;
    const struct ds_raft_read_state *reads;
    int send_first;   /* msgs may be sent before persisting (see above) */
    int soft_changed; /* role or leader changed since the last batch */
    int role;
    uint64_t term, leader, commit;
};

struct ds_raft_peer_status {
    uint64_t id;
    uint64_t match, next;
    uint8_t voter;
    uint8_t state; /* 0 probe, 1 replicate, 2 snapshot */
};

struct ds_raft_status {
    uint64_t id;
    int role;
    uint64_t term, vote, leader, commit, applied;
    uint64_t first_index, last_index, snapshot_index, snapshot_term;
    uint64_t transferee;
    struct ds_raft_membership conf;
    size_t n_peers; /* leader only */
    struct ds_raft_peer_status peers[DS_RAFT_MAX_NODES];
    uint64_t elections_started, leader_changes;
    uint64_t alloc_failures; /* messages dropped (like network loss) for want of memory */
};

struct ds_raft;

/* Create a core from options and durable state (both borrowed, copied).  On success *out is
 * owned by the caller (ds_raft_destroy). */
int ds_raft_create(const struct ds_raft_options *o, const struct ds_raft_durable *d,
                   struct ds_raft **out);
void ds_raft_destroy(struct ds_raft *r);

/* Feed the monotonic time in ms; fires election, heartbeat, check-quorum and transfer timers. */
int ds_raft_tick(struct ds_raft *r, uint64_t now_ms);

/* Feed one message (borrowed; entries and snapshot data are copied). */
int ds_raft_step(struct ds_raft *r, const struct ds_raft_msg *m);

/* Leader: append data (borrowed, copied) as a NORMAL entry and report its index.  Not leader:
 * DS_RAFT_ENOTLEADER with *leader = known leader id (0 if none).  Transfer pending: EBUSY. */
int ds_raft_propose(struct ds_raft *r, const void *data, uint32_t len, uint64_t *index,
                    uint64_t *leader);

/* Leader: start a ReadIndex round (dissertation §6.4); (ctx, index) appears in a later batch's
 * reads once a majority confirmed the leadership.  A deposed leader never reports it. */
int ds_raft_read_index(struct ds_raft *r, uint64_t ctx);

/* Leader: hand leadership to voter target (dissertation §3.10); proposals get EBUSY until the
 * transfer ends; it is abandoned after election_min_ms. */
int ds_raft_transfer_leadership(struct ds_raft *r, uint64_t target);

enum ds_raft_conf_op {
    DS_RAFT_CONF_ADD_LEARNER = 1,
    DS_RAFT_CONF_PROMOTE = 2, /* learner -> voter, once caught up (ECATCHUP before) */
    DS_RAFT_CONF_REMOVE = 3,  /* voter or learner */
};

/* Leader: propose a single-server membership change (dissertation §4.1).  One uncommitted change
 * at a time (EBUSY), and only after the leader committed an entry of its term. */
int ds_raft_change_membership(struct ds_raft *r, int op, uint64_t id, uint64_t *index);

/* The application took a snapshot of its state at index (<= applied).  data is copied; the glue
 * persists the snapshot itself before calling.  The in-memory log keeps snapshot_trailing entries
 * behind index; followers further behind get InstallSnapshot. */
int ds_raft_snapshot_taken(struct ds_raft *r, uint64_t index, const void *data, size_t len);

/* The metadata (term, configuration) a snapshot at index (snapshot index < index <= applied)
 * must be stored with; the glue calls it to write the snapshot, then ds_raft_snapshot_taken(). */
int ds_raft_snapshot_meta_at(const struct ds_raft *r, uint64_t index,
                             struct ds_raft_snapshot_meta *m);

/* async_persist: the log up to index, whose entry there has term, is durable (every entry the
 * glue wrote before the sync it reports; a snapshot the glue stored covers its index without a
 * report).  Reports the log has since outgrown, truncated or replaced change nothing.  EINVAL
 * without async_persist, EBUSY between ready() and advance(). */
int ds_raft_persisted(struct ds_raft *r, uint64_t index, uint64_t term);

/* 1 if ds_raft_ready() has work, else 0. */
int ds_raft_has_ready(const struct ds_raft *r);
/* Fill *rd with the next batch (see struct ds_raft_ready; it may be empty); ds_raft_advance()
 * is then due before any other input.  EBUSY if the previous batch is not advanced. */
int ds_raft_ready(struct ds_raft *r, struct ds_raft_ready *rd);
/* The batch is durable, sent and applied: release its buffers, record applied = the last
 * committed entry handed out, and accept input again.  EINVAL without an outstanding batch. */
int ds_raft_advance(struct ds_raft *r);

void ds_raft_status(const struct ds_raft *r, struct ds_raft_status *s);

/* ---- wire format (raft_wire.c) ----
 * All integers little-endian.  Message: u8 version (1), u8 type, u8 flags, u8 reject, u64 from,
 * to, term, log_term, index, commit, hint_index, hint_term, ctx, u32 n_entries, n_entries x
 * (u64 term, u64 index, u8 type, u32 len, len bytes); type SNAPSHOT then adds the snapshot meta
 * (below) and u32 snap_len + snap_len bytes.  Nothing may trail.
 * Membership: u8 version (1), u8 n_voters, u8 n_learners, then n_voters + n_learners u64 ids.
 * Snapshot meta: u64 index, u64 term, membership. */
#define DS_RAFT_WIRE_VERSION 1
#define DS_RAFT_WIRE_MAX_ENTRIES 65536
#define DS_RAFT_WIRE_MAX_ENTRY_BYTES (16u << 20)
#define DS_RAFT_WIRE_MAX_SNAPSHOT_BYTES (1u << 30)

/* Growable byte buffer; data is malloc'd and owned by whoever holds the struct (ds_raft_buf_free).
 * Encoders append to it. */
struct ds_raft_buf {
    uint8_t *data;
    size_t len, cap;
};
void ds_raft_buf_free(struct ds_raft_buf *b);

int ds_raft_msg_encode(const struct ds_raft_msg *m, struct ds_raft_buf *b);
/* Decode buf[0..len) into *m.  On success m->entries is a malloc'd array (release with
 * ds_raft_msg_release) whose data pointers, like m->snap_data, borrow from buf. */
int ds_raft_msg_decode(const uint8_t *buf, size_t len, struct ds_raft_msg *m);
void ds_raft_msg_release(struct ds_raft_msg *m);

int ds_raft_conf_encode(const struct ds_raft_membership *c, struct ds_raft_buf *b);
/* Rejects unknown versions, counts above DS_RAFT_MAX_NODES, zero or duplicate ids. */
int ds_raft_conf_decode(const uint8_t *buf, size_t len, struct ds_raft_membership *c);
int ds_raft_snapshot_meta_encode(const struct ds_raft_snapshot_meta *s, struct ds_raft_buf *b);
int ds_raft_snapshot_meta_decode(const uint8_t *buf, size_t len, struct ds_raft_snapshot_meta *s);

#endif
