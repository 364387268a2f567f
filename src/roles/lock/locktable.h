/* The lock table: the deterministic replicated state machine of the lock role (issue 4).
 *
 * Every replica applies the same Raft log entries, decoded with ds_lock_cmd_decode, through
 * ds_lock_apply; the result is a pure function of (previous table, command).  The table never reads
 * a clock: each command carries `now_ms`, the leader's wall-clock milliseconds stamped into the
 * entry, and leases end only when the leader proposes EXPIRE.  Nothing depends on pointer values or
 * hash order: listings, EXPIRE and snapshots walk resources sorted by name (bytewise).
 *
 * Semantics
 * - Modes: exclusive is compatible with nothing, shared with shared.  A request is granted at once
 *   only when the resource's wait queue is empty and it is compatible with every holder; otherwise
 *   it queues (wait_ms > 0) or is refused with DS_LOCK_HELD (wait_ms = 0).
 * - Waits end in the table: a queued request records wait_deadline_ms = now_ms + wait_ms
 *   (wait_ms in 1..DS_LOCK_WAIT_MAX_MS).  Every ds_lock_apply (whatever its type, before the
 *   command itself and before an idempotent replay) first purges the waiters whose
 *   wait_deadline_ms <= now_ms: they leave their queues (resources in name order, each queue in
 *   order), are reported in `timed_out`, and whoever their removal makes grantable is granted and
 *   reported in `granted`.  So no command whose now_ms has reached a waiter's deadline ever grants
 *   it, whichever node's glue is paused or cut off.  A timed-out upgrade only loses its queued
 *   request: the shared hold stays.  A client already queued that asks again in the same mode
 *   keeps its place and its deadline becomes max(deadline, now_ms + wait_ms) (a retry never
 *   shortens a wait).  EXTEND_ALL does not move wait deadlines (ending a wait early is safe).
 *   The table keeps a lower bound of the earliest wait deadline, so commands before it skip the
 *   purge; the purge sorts the resources, O(R log R + waiters).
 * - Writer-preferring FIFO: the queue is granted strictly from its head, a run of compatible
 *   waiters at once, so a queued exclusive request blocks every later shared one and nobody
 *   overtakes an earlier waiter.  Starvation bound: a request that queues behind k waiters while h
 *   clients hold is granted at the latest when those h holds and the holds of the k requests ahead
 *   of it have ended (released, expired, or cancelled or timed out while waiting) -- at most
 *   h + k holds, whatever arrives later (if its own wait has not ended first).  The one
 *   exception to FIFO is an upgrade (below), which only a client already holding the resource
 *   can make, so it never starts a new hold ahead of a waiter: it converts one counted above.
 * - Re-acquire by a holder in its mode is idempotent: same token, lease refreshed to now + ttl.
 * - Upgrade (shared holder asks exclusive): granted at once when it is the only holder, else queued
 *   at the head of the queue (it keeps its shared hold meanwhile) and deadlock-checked; two
 *   concurrent upgraders are a deadlock, so the second is refused.  If the upgrader loses its
 *   shared hold (release, expiry) its queued request stays as a plain exclusive waiter.  Downgrade
 *   (exclusive holder asks shared) is immediate and grants the shared waiters at the head of the
 *   queue.  Both conversions are new grants and get a new token.
 * - A client has at most one hold and at most one queued request per resource; a client waiting in
 *   one mode that asks the other mode gets DS_LOCK_CONFLICT.  A client may wait on several
 *   resources.
 * - CANCEL_WAIT removes a waiter, which is never granted afterwards; the waiters behind it may
 *   become grantable and are granted by the same command.
 * - Deadlocks: the wait-for graph has an edge from a waiting client to every client that holds an
 *   incompatible lock on the resource it waits for, or waits ahead of it in an incompatible mode. A
 *   request that would close a cycle is refused with DS_LOCK_DEADLOCK and the cycle; the request
 *   leaves the table unchanged (only the counter of refusals moves, and the idempotency record if
 *   a request_id was given; the wait purge before it may have removed waiters whose wait ended, so
 *   they are never part of a cycle).  The search is a depth-first walk from the requester's
 *   blockers, visiting each client at most once: O(waiting clients + their blockers).
 * - Fencing tokens come from one table-wide counter (first token 1) that every grant increments, so
 *   they increase strictly per resource and across resources; the counter is in the snapshot.
 * - Idempotency: an ACQUIRE or RELEASE with a non-empty request_id records its result under
 *   (client_id, request_id); a later command with the same pair returns that first result (status,
 *   token, deadline, mode, position; the lists are empty and `replayed` is set) without touching
 *   the table (apart from the wait purge that precedes it, whose timed_out and granted lists the
 *   replayed result carries).  Reusing the pair for another command type or resource gives
 *   DS_LOCK_CONFLICT.
 *   Records are dropped, oldest first in log order, once older than DS_LOCK_IDEM_WINDOW_MS (by the
 *   commands' now_ms) or when more than DS_LOCK_IDEM_MAX are kept.
 * - Leases: ttl_ms in [DS_LOCK_TTL_MIN_MS, DS_LOCK_TTL_MAX_MS]; deadline = now_ms + ttl_ms of the
 *   command that granted or renewed it.  A lease lives until an EXPIRE with now_ms >= deadline is
 *   applied, so a RENEW that the log orders before that EXPIRE still succeeds.  EXTEND_ALL adds up
 *   to DS_LOCK_EXTEND_MAX_MS to every deadline: a new leader proposes it once (one election
 *   timeout) before it may expire inherited leases.  Clock assumption: leaders' clocks differ by at
 *   most the configured skew bound, so a dead holder is released within ttl + election timeout +
 *   skew after its last renewal.
 * - Names: resource and client_id are 1..DS_LOCK_NAME_MAX bytes, any byte but NUL; request_id is
 *   0..DS_LOCK_REQUEST_ID_MAX bytes (empty = none).  now_ms <= DS_LOCK_TIME_MAX.  A command
 *   outside these bounds gets DS_LOCK_INVALID and changes nothing (not even the wait purge).
 * - Cost: ACQUIRE, RELEASE, RENEW and CANCEL_WAIT are O(holders + waiters of the resource) plus
 *   the deadlock search; EXPIRE and ds_lock_list_held sort the resources, O(R log R);
 *   ds_lock_next_deadline scans every hold and waiter, EXTEND_ALL every hold.  Resources nobody
 *   holds or waits for are deleted at once.
 *
 * Errors: functions return 0 or a DS_LOCK_E* code.  ds_lock_apply's outcome for the client is the
 * result's `status`; it returns DS_LOCK_ENOMEM only when memory ran out, after which the table
 * can still be queried, snapshotted and freed but may hold a partly applied command (a grant not
 * reported, a grantable waiter left queued): the replica must stop applying (crash and recover
 * from snapshot + log) rather than go on diverging. */
#ifndef DS_ROLES_LOCK_LOCKTABLE_H
#define DS_ROLES_LOCK_LOCKTABLE_H

#include <stddef.h>
#include <stdint.h>

#define DS_LOCK_NAME_MAX 256          /* bytes of a resource name or client id (min 1) */
#define DS_LOCK_REQUEST_ID_MAX 64     /* bytes of a request id (0 = none) */
#define DS_LOCK_TTL_MIN_MS 100u
#define DS_LOCK_TTL_MAX_MS 3600000u   /* one hour */
#define DS_LOCK_EXTEND_MAX_MS 60000u  /* largest EXTEND_ALL */
#define DS_LOCK_WAIT_MAX_MS 300000u   /* largest ACQUIRE wait_ms (five minutes) */
#define DS_LOCK_TIME_MAX (UINT64_C(1) << 62)
#define DS_LOCK_IDEM_WINDOW_MS 600000u /* idempotency records live 10 minutes ... */
#define DS_LOCK_IDEM_MAX 16384u        /* ... and at most this many are kept */

/* Return codes (0 = success). */
enum {
    DS_LOCK_ENOMEM = 1,  /* out of memory */
    DS_LOCK_EDECODE = 2, /* malformed bytes (command or snapshot) */
    DS_LOCK_EINVAL = 3,  /* a command or argument outside the documented bounds */
    DS_LOCK_ENOENT = 4,  /* no such resource / no lease */
};

/* Outcome of a command, carried in the result (snake_case names for JSON: ds_lock_status_name). */
enum ds_lock_status {
    DS_LOCK_OK = 0,          /* release, renew, cancel, expire, extend done */
    DS_LOCK_GRANTED = 1,     /* acquire granted: token, deadline_ms, holders */
    DS_LOCK_QUEUED = 2,      /* acquire queued: position (1 = head) */
    DS_LOCK_HELD = 3,        /* acquire refused, not waiting: holders */
    DS_LOCK_DEADLOCK = 4,    /* acquire refused: cycle */
    DS_LOCK_NOT_HOLDER = 5,  /* release/renew: client does not hold the resource with that token */
    DS_LOCK_NOT_WAITING = 6, /* cancel: client is not waiting on the resource */
    DS_LOCK_INVALID = 7,     /* an argument is outside the documented bounds */
    DS_LOCK_CONFLICT = 8,    /* request_id reused for another request, or waiting in another mode */
};

enum ds_lock_mode {
    DS_LOCK_EXCLUSIVE = 1,
    DS_LOCK_SHARED = 2,
};

enum ds_lock_cmd_type {
    DS_LOCK_CMD_ACQUIRE = 1,
    DS_LOCK_CMD_RELEASE = 2,
    DS_LOCK_CMD_RENEW = 3,
    DS_LOCK_CMD_CANCEL_WAIT = 4,
    DS_LOCK_CMD_EXPIRE = 5,
    DS_LOCK_CMD_EXTEND_ALL = 6,
};

/* One command.  Fields a type does not use must be zero (ds_lock_cmd_init); the strings are
 * NUL-terminated inside the struct, so a command owns no memory. */
struct ds_lock_cmd {
    uint8_t type;     /* enum ds_lock_cmd_type */
    uint8_t mode;     /* ACQUIRE: enum ds_lock_mode */
    uint32_t wait_ms; /* ACQUIRE: 0 = do not wait, else queue for at most this long */
    uint32_t ttl_ms;  /* ACQUIRE, RENEW */
    uint64_t token;   /* RELEASE, RENEW */
    uint64_t now_ms;  /* every type: the leader's time stamp */
    uint64_t extra_ms; /* EXTEND_ALL */
    char resource[DS_LOCK_NAME_MAX + 1];        /* ACQUIRE, RELEASE, RENEW, CANCEL_WAIT */
    char client_id[DS_LOCK_NAME_MAX + 1];       /* ACQUIRE, RELEASE, RENEW, CANCEL_WAIT */
    char request_id[DS_LOCK_REQUEST_ID_MAX + 1]; /* ACQUIRE, RELEASE; "" = none */
};

/* A holder, waiter, newly granted or expired holder, timed-out waiter, or one edge of a deadlock
 * cycle ("client_id
 * waits for resource, held or queued ahead by the next entry's client").  Strings are owned by the
 * list that holds the entry. */
struct ds_lock_entry {
    char *resource;
    char *client_id;
    uint8_t mode;         /* enum ds_lock_mode */
    uint8_t upgrade;      /* waiters: 1 = an upgrade of the client's shared hold */
    uint32_t ttl_ms;
    uint64_t token;       /* holders */
    uint64_t deadline_ms; /* holders: end of the lease; waiters: wait_deadline_ms */
    uint64_t since_ms;    /* waiters: now_ms of the command that queued it */
};

struct ds_lock_list {
    struct ds_lock_entry *v;
    size_t n, cap;
};

/* Frees the strings and array of `l` and empties it (safe on an empty or zeroed list). */
void ds_lock_list_free(struct ds_lock_list *l);

struct ds_lock_result {
    int status;           /* enum ds_lock_status */
    int replayed;         /* 1 = the recorded first result of this (client_id, request_id) */
    int refreshed;        /* GRANTED: the client already held it in this mode (same token) */
    uint8_t mode;         /* GRANTED */
    uint64_t token;       /* GRANTED */
    uint64_t deadline_ms; /* GRANTED, RENEW ok */
    uint32_t position;    /* QUEUED: 1 = head of the queue */
    struct ds_lock_list holders; /* GRANTED, HELD: holders of the resource afterwards */
    struct ds_lock_list granted; /* waiters this command granted: those the wait purge made
                                  * grantable (resource-name order), then the command's own */
    struct ds_lock_list timed_out; /* waiters whose wait ended (the purge): resource-name order,
                                    * then queue order; deadline_ms is the wait deadline */
    struct ds_lock_list expired; /* EXPIRE: holds that ended, by (deadline, resource, client) */
    struct ds_lock_list cycle;   /* DEADLOCK: the cycle, starting with the requester */
};

/* Frees what the result owns and zeroes it. */
void ds_lock_result_free(struct ds_lock_result *r);

struct ds_lock_table;

/* Counters for metrics: gauges computed from the table and totals since this process built or
 * restored the table (they are not in snapshots). */
struct ds_lock_stats {
    uint64_t held_exclusive, held_shared, waiters, resources, idem_records; /* gauges */
    uint64_t grants, releases, expiries, renewals, cancels, deadlocks;      /* totals */
    uint64_t wait_timeouts;                                                 /* total */
};

/* A new empty table (next token 1), or NULL when out of memory.  Free with ds_lock_table_free. */
struct ds_lock_table *ds_lock_table_new(void);
void ds_lock_table_free(struct ds_lock_table *t);

/* Sets every unused field of `c` to zero and its type. */
void ds_lock_cmd_init(struct ds_lock_cmd *c, enum ds_lock_cmd_type type);

/* Applies one command.  `out` is caller-owned, filled on return (free it with ds_lock_result_free
 * even on error).  Returns 0, or DS_LOCK_ENOMEM (see the header comment). */
int ds_lock_apply(struct ds_lock_table *t, const struct ds_lock_cmd *c, struct ds_lock_result *out);

/* Command wire form, all integers little-endian:
 *   u8 version (2), u8 type, u64 now_ms, then by type
 *   ACQUIRE      u8 mode, u32 wait_ms, u32 ttl_ms, str resource, str client_id, str request_id
 *   RELEASE      u64 token, str resource, str client_id, str request_id
 *   RENEW        u64 token, u32 ttl_ms, str resource, str client_id
 *   CANCEL_WAIT  str resource, str client_id
 *   EXPIRE       (nothing)
 *   EXTEND_ALL   u64 extra_ms
 * where str is u16 length + bytes (no NUL).  Nothing may follow.  Encodes a command that
 * ds_lock_cmd_check accepts into a malloc'd buffer that the caller owns (*out, *len); on error
 * nothing is allocated.  Returns 0, DS_LOCK_EINVAL or DS_LOCK_ENOMEM. */
int ds_lock_cmd_encode(const struct ds_lock_cmd *c, uint8_t **out, size_t *len);

/* Decodes `len` bytes (not retained) into `c`.  Rejects with DS_LOCK_EDECODE any byte string that
 * is not the encoding of a command ds_lock_cmd_check accepts. */
int ds_lock_cmd_decode(const uint8_t *buf, size_t len, struct ds_lock_cmd *c);

/* 0 when every field of `c` is within the documented bounds, else DS_LOCK_EINVAL. */
int ds_lock_cmd_check(const struct ds_lock_cmd *c);

/* Snapshot of the whole table (resources sorted by name, holders and waiters in order,
 * deadlines, token counter, idempotency records in log order) into a malloc'd buffer that the
 * caller owns.  Format: "DSLK" u32 version 2, u64 next_token, u32 n, n x resource { str name,
 * u32 nh, nh x {str client, u8 mode, u32 ttl, u64 token, u64 deadline}, u32 nw, nw x {str client,
 * u8 mode, u8 upgrade, u32 ttl, u64 since, u64 wait_deadline} }, u32 m, m x record { str client,
 * str request_id, u8 type, str resource, u8 status, u8 mode, u64 token, u64 deadline,
 * u32 position, u64 now }.
 * Returns 0 or DS_LOCK_ENOMEM. */
int ds_lock_snapshot(const struct ds_lock_table *t, uint8_t **out, size_t *len);

/* Builds a new table from snapshot bytes (not retained) into *out (caller frees).  Rejects with
 * DS_LOCK_EDECODE anything malformed or describing a table that violates the invariants
 * (incompatible holders, unsorted or duplicate names, tokens not below the counter, a grantable
 * head waiter, a wait deadline not after its since or beyond DS_LOCK_TIME_MAX +
 * DS_LOCK_WAIT_MAX_MS, ...).  Only version 2 is read: version 1 (waits without deadlines, never
 * deployed) is refused with DS_LOCK_EDECODE.  Returns 0, DS_LOCK_EDECODE or DS_LOCK_ENOMEM. */
int ds_lock_restore(const uint8_t *buf, size_t len, struct ds_lock_table **out);

/* Queries (not commands; they do not change the table). */

/* Holders and waiters (in queue order) of `resource` appended to the caller-owned lists, and its
 * mode (0 when nobody holds it).  Returns 0, DS_LOCK_ENOENT (nobody holds or waits) or
 * DS_LOCK_ENOMEM. */
int ds_lock_query(const struct ds_lock_table *t, const char *resource, uint8_t *mode,
                  struct ds_lock_list *holders, struct ds_lock_list *waiters);

/* Every hold, sorted by resource name then holder order, appended to `out`.
 * 0 or DS_LOCK_ENOMEM. */
int ds_lock_list_held(const struct ds_lock_table *t, struct ds_lock_list *out);

/* Earliest lease deadline or wait deadline into *deadline_ms: the leader proposes EXPIRE at that
 * time (an EXPIRE ends due leases and, through the wait purge every command starts with, due
 * waits).  Returns 0, or DS_LOCK_ENOENT when nothing is held and nobody waits. */
int ds_lock_next_deadline(const struct ds_lock_table *t, uint64_t *deadline_ms);

/* 1 when `token` is the token of a current holder of `resource`, else 0 (a hold is current
 * until the EXPIRE that ends it is applied; deadlines are not consulted). */
int ds_lock_check(const struct ds_lock_table *t, const char *resource, uint64_t token);

/* The next token the table will hand out. */
uint64_t ds_lock_next_token(const struct ds_lock_table *t);

void ds_lock_stats(const struct ds_lock_table *t, struct ds_lock_stats *out);

const char *ds_lock_strerror(int rc);
const char *ds_lock_status_name(int status);
const char *ds_lock_mode_name(int mode);

#endif
