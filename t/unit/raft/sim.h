/* Deterministic Raft cluster simulator: virtual clock, lossy network, partitions, crashes with
 * simulated storage, disk stalls, a hash-chain state machine, and safety invariants checked after
 * every step. */
#ifndef DS_T_RAFT_SIM_H
#define DS_T_RAFT_SIM_H

#include <stdint.h>

#include "core/prng.h"
#include "raft/raft.h"

#define SIM_MAX 7 /* node ids 1..SIM_MAX */

struct sim_storage {
    struct ds_raft_hard_state hs;
    struct ds_raft_snapshot_meta snap;
    uint8_t *snap_data;
    size_t snap_len;
    struct ds_raft_entry *ents; /* owned copies, indexes snap.index + 1 .. */
    size_t n, cap;
    int installed; /* a snapshot came from the leader (InstallSnapshot) */
};

/* The replicated state machine: a hash chain over applied NORMAL entries. */
struct sim_app {
    uint64_t applied, hash, count;
};

struct sim_read {
    uint64_t ctx, index;
};

struct sim_node {
    int up;
    struct ds_raft *r;
    struct sim_storage st;
    struct sim_app app;
    uint64_t stall_until;
    int holding; /* rd is a batch not yet advanced */
    struct ds_raft_ready rd;
    uint64_t last_commit;
    uint64_t snap_every, since_snap;
    struct sim_read reads[64];
    unsigned n_reads;
    /* opts.async_persist: entries written but not yet synced (a crash keeps a random prefix),
     * and the sync in flight, which completes at sync_at and covers up to sync_index. */
    struct ds_raft_entry *pend;
    size_t n_pend, cap_pend;
    uint64_t sync_at, sync_index, sync_term;
};

struct sim;
struct sim_sm; /* defined by a test that plugs in its own state machine */

/* An optional state machine applied beside the hash chain (sim_set_sm).  Snapshots then hold
 * struct sim_app followed by the bytes snapshot() returns. */
struct sim_sm_ops {
    /* Node id applies committed entry e (every entry type), after the simulator's checks. */
    void (*apply)(struct sim_sm *sm, struct sim *s, int id, const struct ds_raft_entry *e);
    /* Node id's state into a malloc'd buffer the simulator then owns (NULL, 0 after sim_fail). */
    void (*snapshot)(struct sim_sm *sm, struct sim *s, int id, uint8_t **data, size_t *len);
    /* Node id's state replaced by snapshot bytes (borrowed; len 0: the initial empty state). */
    void (*restore)(struct sim_sm *sm, struct sim *s, int id, const uint8_t *data, size_t len);
};

struct sim_msg {
    uint64_t at, seq, to;
    uint8_t *buf;
    size_t len;
};

struct sim_committed {
    uint64_t term, hash, seen_in; /* seen_in: lowest term of a node that applied it */
};

struct sim_logrec {
    uint64_t index, term, prev_term, hash; /* index 0 = empty slot */
};

struct sim {
    struct ds_prng prng;
    uint64_t seed, now, seq;
    int n; /* nodes 1..n exist */
    struct ds_raft_options opts;
    struct sim_node nodes[SIM_MAX + 1];
    int cut[SIM_MAX + 1][SIM_MAX + 1]; /* cut[a][b]: a's messages to b are lost */
    struct sim_msg *heap;
    size_t n_heap, cap_heap;
    unsigned drop_pct, dup_pct, delay_min, delay_max;
    uint64_t *leader_of_term;
    size_t cap_terms;
    struct sim_committed *committed; /* by index */
    size_t cap_committed;
    uint64_t max_committed;
    struct sim_logrec *recs; /* (index, term) -> prev term and content */
    size_t cap_recs, n_recs;
    uint64_t read_floor[64]; /* read ctx -> highest committed index when it was asked */
    unsigned long truncations, installs; /* coverage statistics */
    unsigned long async_syncs, torn_crashes; /* async_persist coverage */
    const struct sim_sm_ops *sm_ops; /* NULL: the hash chain only */
    struct sim_sm *sm;
    int failed;
    char why[256];
};

/* n voters with ids 1..n (n_total - n more nodes start empty, to join as learners). */
void sim_init(struct sim *s, uint64_t seed, int n_voters, int n_total,
              const struct ds_raft_options *o);
void sim_free(struct sim *s);
/* Plug in a state machine (ops and sm borrowed; call right after sim_init): every node's is
 * restored from its initial snapshot at once. */
void sim_set_sm(struct sim *s, const struct sim_sm_ops *ops, struct sim_sm *sm);
/* Advance the virtual clock by ms, 1 ms at a time. */
void sim_run(struct sim *s, uint64_t ms);
/* One virtual millisecond: deliver, tick, process Ready batches. */
void sim_step(struct sim *s);
void sim_crash(struct sim *s, int id);
void sim_restart(struct sim *s, int id);
void sim_stall(struct sim *s, int id, uint64_t ms);
void sim_isolate(struct sim *s, int id);
void sim_cut_pair(struct sim *s, int a, int b);
void sim_heal(struct sim *s);
/* The leader of the highest term among up nodes, 0 if none. */
int sim_leader(struct sim *s);
/* Propose an 8-byte value at node id; returns the ds_raft code. */
int sim_propose(struct sim *s, int id, uint64_t value, uint64_t *index);
/* Run until every up node applied index (0 on success, -1 after max_ms). */
int sim_wait_applied(struct sim *s, uint64_t index, uint64_t max_ms);
int sim_read(struct sim *s, int id, uint64_t ctx);
/* 1 if the entry committed at index is the NORMAL entry proposed with value. */
int sim_committed_value(struct sim *s, uint64_t index, uint64_t value);
void sim_status(struct sim *s, int id, struct ds_raft_status *st);
void sim_fail(struct sim *s, const char *fmt, ...);

#endif
