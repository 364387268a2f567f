/* Raft core: elections (§5.2, pre-vote §9.6, check-quorum), replication (§5.3), commitment
 * (§5.4.2), ReadIndex (§6.4), transfer (§3.10), membership (§4.1), snapshots (§5), Ready batches. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "core/prng.h"
#include "raft/raft.h"

enum pr_state { PR_PROBE = 0, PR_REPLICATE = 1, PR_SNAPSHOT = 2 };

/* The leader's view of one follower (etcd calls it Progress). */
struct progress {
    uint64_t id;
    uint64_t match, next;
    uint8_t state;
    uint8_t probe_sent; /* PROBE: one AppendEntries is out, wait for its answer */
    uint8_t active;     /* heard from since the last check-quorum round */
    uint64_t pending_snap, snap_sent_at;
    uint64_t read_ack; /* highest ReadIndex round this follower confirmed */
    uint64_t commit_sent; /* leader commit index in the last AppendEntries sent */
    uint32_t n_inflight, inflight_head;
    uint64_t inflight[DS_RAFT_MAX_INFLIGHT]; /* last index of each pipelined AppendEntries */
};

struct pending_read {
    uint64_t ctx, index, seq; /* seq 0: waiting for the leader's first commit in its term */
};

struct ds_raft {
    struct ds_raft_options o;
    struct ds_prng prng;
    uint64_t id;
    /* durable */
    uint64_t term, vote;
    /* log: log[i] has index first + i; snapshot covers up to snap.index (>= first - 1) */
    struct ds_raft_entry *log;
    size_t log_len, log_cap;
    uint64_t first;
    struct ds_raft_snapshot_meta snap;
    uint8_t *snap_data;
    size_t snap_len;
    struct ds_raft_membership conf;
    uint64_t conf_index;
    /* volatile */
    int role;
    uint64_t leader, commit, applied, now;
    uint64_t election_deadline, heartbeat_deadline, quorum_deadline, last_leader_contact;
    uint64_t granted[DS_RAFT_MAX_NODES], rejected[DS_RAFT_MAX_NODES];
    uint32_t n_granted, n_rejected;
    struct progress prs[DS_RAFT_MAX_NODES];
    uint32_t n_prs;
    uint64_t transferee, transfer_deadline;
    struct pending_read *reads;
    size_t n_reads, cap_reads;
    uint64_t read_seq;
    int bcast_pending;
    /* ready bookkeeping */
    int in_ready;
    struct ds_raft_hard_state persisted_hs;
    uint64_t unstable, truncate_from;
    /* async_persist: the log up to durable is on disk and equal to the log in memory; an
     * accepted APPEND_RESP for entries above it waits in ack_* until ds_raft_persisted(). */
    uint64_t durable;
    uint64_t ack_to, ack_term, ack_index, ack_sent;
    int snap_pending;
    int last_role;
    uint64_t last_leader;
    struct ds_raft_msg *out;
    size_t n_out, cap_out;
    struct ds_raft_read_state *done_reads;
    size_t n_done_reads, cap_done_reads;
    void **garbage; /* freed at advance: buffers outgoing messages may still point to */
    size_t n_garbage, cap_garbage;
    uint64_t alloc_failures; /* messages dropped or buffers leaked for want of memory */
    uint64_t elections_started, leader_changes;
};

/* ================================================================ errors and names */

const char *ds_raft_strerror(int err)
{
    static const char *const names[] = {
        [DS_RAFT_OK] = "ok",
        [DS_RAFT_ENOMEM] = "out of memory",
        [DS_RAFT_EINVAL] = "invalid argument",
        [DS_RAFT_ENOTLEADER] = "not the leader",
        [DS_RAFT_EBUSY] = "busy (unadvanced batch, transfer or config change pending)",
        [DS_RAFT_ECATCHUP] = "learner has not caught up",
        [DS_RAFT_EBADMSG] = "message contradicts the protocol",
        [DS_RAFT_ETRUNC] = "truncated input",
        [DS_RAFT_EVERSION] = "unknown format version",
        [DS_RAFT_ETOOBIG] = "count or size above limit",
        [DS_RAFT_EFORMAT] = "malformed input",
    };
    if (err < 0 || (size_t)err >= sizeof(names) / sizeof(names[0]))
        return "unknown error";
    return names[err];
}

const char *ds_raft_role_name(int role)
{
    static const char *const names[] = {"follower", "precandidate", "candidate", "leader"};
    return role >= 0 && role <= DS_RAFT_LEADER ? names[role] : "unknown";
}

void ds_raft_options_default(struct ds_raft_options *o)
{
    memset(o, 0, sizeof(*o));
    o->election_min_ms = 150;
    o->election_max_ms = 300;
    o->heartbeat_ms = 50;
    o->max_append_entries = 64;
    o->max_append_bytes = 1u << 20;
    o->max_inflight = 8;
    o->snapshot_trailing = 128;
    o->pre_vote = 1;
    o->check_quorum = 1;
}

/* ================================================================ small helpers */

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return DS_RAFT_OK;
    size_t n = *cap ? *cap * 2 : 16;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return DS_RAFT_ENOMEM;
    *p = q;
    *cap = n;
    return DS_RAFT_OK;
}

static void trash(struct ds_raft *r, void *p)
{
    if (!p)
        return;
    if (grow((void **)&r->garbage, &r->cap_garbage, r->n_garbage + 1, sizeof(void *))) {
        if (r->n_out == 0) { /* no queued message can point to it */
            free(p);
            return;
        }
        r->alloc_failures++; /* leak rather than leave a dangling pointer in the outbox */
        return;
    }
    r->garbage[r->n_garbage++] = p;
}

static int ids_has(const uint64_t *ids, uint32_t n, uint64_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

static int is_voter(const struct ds_raft *r, uint64_t id)
{
    return ids_has(r->conf.voters, r->conf.n_voters, id);
}

static int is_member(const struct ds_raft *r, uint64_t id)
{
    return is_voter(r, id) || ids_has(r->conf.learners, r->conf.n_learners, id);
}

static uint32_t quorum(const struct ds_raft *r)
{
    return r->conf.n_voters / 2 + 1;
}

static uint64_t last_index(const struct ds_raft *r)
{
    return r->log_len ? r->first + r->log_len - 1 : r->snap.index;
}

static struct ds_raft_entry *entry_at(const struct ds_raft *r, uint64_t index)
{
    if (index < r->first || index >= r->first + r->log_len)
        return NULL;
    return &r->log[index - r->first];
}

/* Term of the entry at index; 0 if unknown (compacted or beyond the log). */
static int term_at(const struct ds_raft *r, uint64_t index, uint64_t *term)
{
    const struct ds_raft_entry *e = entry_at(r, index);
    if (e)
        *term = e->term;
    else if (index == r->snap.index)
        *term = r->snap.term;
    else
        return 0;
    return 1;
}

static uint64_t last_term(const struct ds_raft *r)
{
    uint64_t t = 0;
    term_at(r, last_index(r), &t);
    return t;
}

static void reset_election_timer(struct ds_raft *r)
{
    uint64_t span = r->o.election_max_ms - r->o.election_min_ms + 1;
    r->election_deadline = r->now + r->o.election_min_ms + ds_prng_below(&r->prng, span);
}

static struct progress *progress_of(struct ds_raft *r, uint64_t id)
{
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id == id)
            return &r->prs[i];
    return NULL;
}

/* ================================================================ outbox */

static struct ds_raft_msg *msg_new(struct ds_raft *r, int type, uint64_t to)
{
    if (grow((void **)&r->out, &r->cap_out, r->n_out + 1, sizeof(*r->out))) {
        r->alloc_failures++;
        return NULL;
    }
    struct ds_raft_msg *m = &r->out[r->n_out++];
    memset(m, 0, sizeof(*m));
    m->type = (uint8_t)type;
    m->from = r->id;
    m->to = to;
    m->term = r->term;
    return m;
}

static void reply(struct ds_raft *r, const struct ds_raft_msg *in, int type, uint64_t term,
                  int reject)
{
    struct ds_raft_msg *m = msg_new(r, type, in->from);
    if (!m)
        return;
    m->term = term;
    m->reject = (uint8_t)reject;
}

/* ================================================================ configuration (§4.1) */

/* Track the configuration of the latest CONFIG entry in the log, else the snapshot's (a config
 * takes effect as soon as it is in the log, dissertation §4.1). */
static void conf_recompute(struct ds_raft *r)
{
    r->conf = r->snap.conf;
    r->conf_index = r->snap.index;
    for (uint64_t i = r->snap.index + 1; i <= last_index(r); i++) {
        const struct ds_raft_entry *e = entry_at(r, i);
        struct ds_raft_membership c;
        if (e->type == DS_RAFT_ENTRY_CONFIG && ds_raft_conf_decode(e->data, e->len, &c) == 0) {
            r->conf = c;
            r->conf_index = i;
        }
    }
}

static void progress_init(struct ds_raft *r, struct progress *pr, uint64_t id)
{
    memset(pr, 0, sizeof(*pr));
    pr->id = id;
    pr->next = last_index(r) + 1;
    pr->state = PR_PROBE;
    pr->active = 1;
}

/* Leader: one progress per member other than self. */
static void progress_sync(struct ds_raft *r)
{
    uint32_t j = 0;
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (is_member(r, r->prs[i].id))
            r->prs[j++] = r->prs[i];
    r->n_prs = j;
    const uint64_t *lists[2] = {r->conf.voters, r->conf.learners};
    uint32_t counts[2] = {r->conf.n_voters, r->conf.n_learners};
    for (int l = 0; l < 2; l++)
        for (uint32_t i = 0; i < counts[l]; i++)
            if (lists[l][i] != r->id && !progress_of(r, lists[l][i]))
                progress_init(r, &r->prs[r->n_prs++], lists[l][i]);
    if (r->transferee && !is_voter(r, r->transferee))
        r->transferee = 0;
}

static void conf_changed(struct ds_raft *r)
{
    if (r->role == DS_RAFT_LEADER)
        progress_sync(r);
}

/* ================================================================ log */

static int log_append(struct ds_raft *r, uint64_t term, int type, const void *data, uint32_t len)
{
    if (grow((void **)&r->log, &r->log_cap, r->log_len + 1, sizeof(*r->log)))
        return DS_RAFT_ENOMEM;
    uint8_t *copy = NULL;
    if (len) {
        copy = malloc(len);
        if (!copy)
            return DS_RAFT_ENOMEM;
        memcpy(copy, data, len);
    }
    struct ds_raft_entry *e = &r->log[r->log_len];
    e->term = term;
    e->index = last_index(r) + 1;
    e->type = (uint8_t)type;
    e->len = len;
    e->data = copy;
    r->log_len++;
    if (type == DS_RAFT_ENTRY_CONFIG) {
        struct ds_raft_membership c;
        if (ds_raft_conf_decode(copy, len, &c) == 0) {
            r->conf = c;
            r->conf_index = e->index;
            conf_changed(r);
        }
    }
    return DS_RAFT_OK;
}

/* Drop entries >= from (a follower overwriting a conflicting suffix, §5.3). */
static void log_truncate(struct ds_raft *r, uint64_t from)
{
    while (last_index(r) >= from && r->log_len) {
        trash(r, r->log[r->log_len - 1].data);
        r->log_len--;
    }
    if (r->durable >= from)
        r->durable = from - 1;
    r->ack_index = r->ack_sent = 0; /* what was acknowledged may be gone */
    if (from < r->unstable) {
        r->unstable = from;
        if (r->truncate_from == 0 || from < r->truncate_from)
            r->truncate_from = from;
    }
    if (r->conf_index >= from) {
        conf_recompute(r);
        conf_changed(r);
    }
}

/* Drop in-memory entries < keep_from. */
static void log_compact(struct ds_raft *r, uint64_t keep_from)
{
    if (keep_from <= r->first)
        return;
    size_t n = (size_t)(keep_from - r->first);
    if (n > r->log_len)
        n = r->log_len;
    r->first = keep_from;
    if (n == 0)
        return;
    for (size_t i = 0; i < n; i++)
        trash(r, r->log[i].data);
    memmove(r->log, r->log + n, (r->log_len - n) * sizeof(*r->log));
    r->log_len -= n;
}

/* Largest index <= index whose term <= term, for fast back-off (etcd's findConflictByTerm). */
static uint64_t conflict_by_term(const struct ds_raft *r, uint64_t index, uint64_t term)
{
    uint64_t t;
    while (index > 0 && term_at(r, index, &t) && t > term)
        index--;
    return index;
}

/* ================================================================ role changes */

static void set_leader(struct ds_raft *r, uint64_t leader)
{
    if (leader && leader != r->leader)
        r->leader_changes++;
    r->leader = leader;
}

static void drop_reads(struct ds_raft *r)
{
    r->n_reads = 0; /* a deposed leader never reports them (§6.4) */
}

static void become_follower(struct ds_raft *r, uint64_t term, uint64_t leader)
{
    if (term > r->term) {
        r->term = term;
        r->vote = 0;
    }
    if (r->role == DS_RAFT_LEADER)
        drop_reads(r);
    r->role = DS_RAFT_FOLLOWER;
    r->transferee = 0;
    r->n_prs = 0;
    set_leader(r, leader);
    if (leader)
        r->last_leader_contact = r->now;
    reset_election_timer(r);
}

static void send_append_all(struct ds_raft *r, int send_empty);
static void maybe_commit(struct ds_raft *r);

static void become_leader(struct ds_raft *r)
{
    r->role = DS_RAFT_LEADER;
    set_leader(r, r->id);
    r->n_prs = 0;
    progress_sync(r);
    r->read_seq++;
    r->heartbeat_deadline = r->now + r->o.heartbeat_ms;
    r->quorum_deadline = r->now + r->o.election_min_ms;
    r->last_leader_contact = r->now;
    if (log_append(r, r->term, DS_RAFT_ENTRY_NOOP, NULL, 0)) /* Raft §8; else the first */
        r->alloc_failures++;                                 /* proposal commits the term */
    r->bcast_pending = 1;
    maybe_commit(r);
}

static void tally_reset(struct ds_raft *r)
{
    r->n_granted = r->n_rejected = 0;
}

static void send_votes(struct ds_raft *r, int type, uint64_t term, int force)
{
    for (uint32_t i = 0; i < r->conf.n_voters; i++) {
        if (r->conf.voters[i] == r->id)
            continue;
        struct ds_raft_msg *m = msg_new(r, type, r->conf.voters[i]);
        if (!m)
            return;
        m->term = term;
        m->log_term = last_term(r);
        m->index = last_index(r);
        m->flags = force ? DS_RAFT_MSG_FLAG_TRANSFER : 0;
    }
}

/* Start an election (§5.2); with pre-vote, first ask whether we could win (§9.6). */
static void campaign(struct ds_raft *r, int pre, int force)
{
    if (!is_voter(r, r->id)) {
        reset_election_timer(r);
        return;
    }
    if (r->role == DS_RAFT_LEADER)
        drop_reads(r);
    tally_reset(r);
    r->granted[r->n_granted++] = r->id;
    set_leader(r, 0);
    r->transferee = 0;
    r->n_prs = 0;
    reset_election_timer(r);
    if (pre) {
        r->role = DS_RAFT_PRECANDIDATE;
        if (r->n_granted >= quorum(r)) {
            campaign(r, 0, force);
            return;
        }
        send_votes(r, DS_RAFT_MSG_PREVOTE, r->term + 1, force);
        return;
    }
    r->role = DS_RAFT_CANDIDATE;
    r->term++;
    r->vote = r->id;
    r->elections_started++;
    if (r->n_granted >= quorum(r)) {
        become_leader(r);
        return;
    }
    send_votes(r, DS_RAFT_MSG_VOTE, r->term, force);
}

/* ================================================================ replication (§5.3) */

static int pr_paused(const struct progress *pr, uint32_t max_inflight)
{
    switch (pr->state) {
    case PR_PROBE:
        return pr->probe_sent;
    case PR_REPLICATE:
        return pr->n_inflight >= max_inflight;
    default:
        return 1;
    }
}

static void inflight_add(struct progress *pr, uint64_t last)
{
    pr->inflight[(pr->inflight_head + pr->n_inflight) % DS_RAFT_MAX_INFLIGHT] = last;
    pr->n_inflight++;
}

static void inflight_free_to(struct progress *pr, uint64_t index)
{
    while (pr->n_inflight && pr->inflight[pr->inflight_head] <= index) {
        pr->inflight_head = (pr->inflight_head + 1) % DS_RAFT_MAX_INFLIGHT;
        pr->n_inflight--;
    }
}

static void pr_become(struct progress *pr, int state)
{
    pr->state = (uint8_t)state;
    pr->probe_sent = 0;
    pr->n_inflight = pr->inflight_head = 0;
    pr->pending_snap = 0;
    pr->next = pr->match + 1;
}

/* InstallSnapshot to a follower whose next entry is compacted (dissertation §5.3). */
static int send_snapshot(struct ds_raft *r, struct progress *pr)
{
    if (r->snap.index == 0)
        return 0;
    struct ds_raft_msg *m = msg_new(r, DS_RAFT_MSG_SNAPSHOT, pr->id);
    if (!m)
        return 0;
    m->snap = r->snap;
    m->snap_data = r->snap_data;
    m->snap_len = (uint32_t)r->snap_len;
    pr_become(pr, PR_SNAPSHOT);
    pr->pending_snap = r->snap.index;
    pr->snap_sent_at = r->now;
    return 1;
}

static uint32_t batch_count(const struct ds_raft *r, uint64_t next)
{
    uint64_t last = last_index(r);
    uint32_t n = 0;
    uint64_t bytes = 0;
    while (next + n <= last && n < r->o.max_append_entries) {
        bytes += entry_at(r, next + n)->len;
        if (n > 0 && bytes > r->o.max_append_bytes)
            break;
        n++;
    }
    return n;
}

/* Send the follower what it misses, if it is not paused; 1 if something was sent. */
static int send_append(struct ds_raft *r, struct progress *pr, int send_empty)
{
    uint64_t prev_term;
    if (pr_paused(pr, r->o.max_inflight))
        return 0;
    uint64_t prev = pr->next - 1;
    int have = term_at(r, prev, &prev_term) && (pr->next > last_index(r) || entry_at(r, pr->next));
    if (!have)
        return send_snapshot(r, pr);
    uint32_t n = batch_count(r, pr->next);
    if (n == 0 && !send_empty && pr->state == PR_REPLICATE)
        return 0;
    struct ds_raft_entry *copy = NULL;
    if (n) {
        copy = malloc(n * sizeof(*copy));
        if (!copy) {
            r->alloc_failures++;
            return 0;
        }
        memcpy(copy, entry_at(r, pr->next), n * sizeof(*copy));
    }
    struct ds_raft_msg *m = msg_new(r, DS_RAFT_MSG_APPEND, pr->id);
    if (!m) {
        free(copy);
        return 0;
    }
    m->index = prev;
    m->log_term = prev_term;
    m->commit = pr->commit_sent = r->commit;
    m->n_entries = n;
    m->entries = copy;
    if (pr->state == PR_PROBE)
        pr->probe_sent = 1;
    else if (n) {
        pr->next += n;
        inflight_add(pr, pr->next - 1);
    }
    return 1;
}

static void send_append_all(struct ds_raft *r, int send_empty)
{
    for (uint32_t i = 0; i < r->n_prs; i++) {
        int empty = send_empty;
        while (send_append(r, &r->prs[i], empty) && r->prs[i].state == PR_REPLICATE)
            empty = 0;
    }
}

static void send_heartbeats(struct ds_raft *r)
{
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct progress *pr = &r->prs[i];
        struct ds_raft_msg *m = msg_new(r, DS_RAFT_MSG_HEARTBEAT, pr->id);
        if (!m)
            return;
        m->commit = pr->match < r->commit ? pr->match : r->commit;
        m->ctx = r->read_seq;
    }
}

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void reads_on_commit(struct ds_raft *r);

/* Commit the highest index a majority of voters stores, if it is of this term (§5.4.2). */
static void maybe_commit(struct ds_raft *r)
{
    uint64_t match[DS_RAFT_MAX_NODES];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->conf.n_voters; i++) {
        uint64_t id = r->conf.voters[i];
        const struct progress *pr = progress_of(r, id);
        uint64_t self = r->o.async_persist ? r->durable : last_index(r);
        match[n++] = id == r->id ? self : pr ? pr->match : 0;
    }
    if (n == 0)
        return;
    qsort(match, n, sizeof(match[0]), cmp_desc);
    uint64_t idx = match[quorum(r) - 1], t = 0;
    if (idx <= r->commit || !term_at(r, idx, &t) || t != r->term)
        return;
    r->commit = idx;
    r->bcast_pending = 2;
    reads_on_commit(r);
    if (!is_voter(r, r->id) && r->conf_index <= r->commit) /* removed leader steps down, §4.2.2 */
        become_follower(r, r->term, 0);
}

static void commit_to(struct ds_raft *r, uint64_t index)
{
    if (index > r->commit)
        r->commit = index;
}

/* ================================================================ ReadIndex (§6.4) */

static int read_confirmed(const struct ds_raft *r, uint64_t seq)
{
    uint32_t acks = 0;
    for (uint32_t i = 0; i < r->conf.n_voters; i++) {
        uint64_t id = r->conf.voters[i];
        const struct progress *pr = progress_of((struct ds_raft *)r, id);
        if (id == r->id || (pr && pr->read_ack >= seq))
            acks++;
    }
    return acks >= quorum(r);
}

static void reads_release(struct ds_raft *r)
{
    size_t k = 0;
    while (k < r->n_reads && r->reads[k].seq && read_confirmed(r, r->reads[k].seq)) {
        if (grow((void **)&r->done_reads, &r->cap_done_reads, r->n_done_reads + 1,
                 sizeof(*r->done_reads))) {
            r->alloc_failures++;
            break;
        }
        struct ds_raft_read_state *d = &r->done_reads[r->n_done_reads++];
        d->ctx = r->reads[k].ctx;
        d->index = r->reads[k].index;
        k++;
    }
    if (k == 0)
        return;
    memmove(r->reads, r->reads + k, (r->n_reads - k) * sizeof(*r->reads));
    r->n_reads -= k;
}

/* Reads that waited for the first commit of this term get their index and a heartbeat round. */
static void reads_on_commit(struct ds_raft *r)
{
    int started = 0;
    for (size_t i = 0; i < r->n_reads; i++)
        if (r->reads[i].seq == 0) {
            r->reads[i].index = r->commit;
            r->reads[i].seq = ++r->read_seq;
            started = 1;
        }
    if (started) {
        send_heartbeats(r);
        reads_release(r);
    }
}

static int committed_in_term(const struct ds_raft *r)
{
    uint64_t t = 0;
    return term_at(r, r->commit, &t) && t == r->term;
}

int ds_raft_read_index(struct ds_raft *r, uint64_t ctx)
{
    if (r->in_ready)
        return DS_RAFT_EBUSY;
    if (r->role != DS_RAFT_LEADER)
        return DS_RAFT_ENOTLEADER;
    if (grow((void **)&r->reads, &r->cap_reads, r->n_reads + 1, sizeof(*r->reads)))
        return DS_RAFT_ENOMEM;
    struct pending_read *p = &r->reads[r->n_reads++];
    p->ctx = ctx;
    p->index = 0;
    p->seq = 0;
    if (committed_in_term(r))
        reads_on_commit(r);
    return DS_RAFT_OK;
}

/* ================================================================ leader message handling */

static void maybe_send_timeout_now(struct ds_raft *r, struct progress *pr)
{
    if (r->transferee == pr->id && pr->match == last_index(r))
        msg_new(r, DS_RAFT_MSG_TIMEOUT_NOW, pr->id);
}

/* A rejection: back off next (fast back-off with the follower's hint). 1 if next changed. */
static int pr_decrease(struct ds_raft *r, struct progress *pr, const struct ds_raft_msg *m)
{
    if (pr->state == PR_REPLICATE) {
        if (m->index <= pr->match)
            return 0; /* stale */
        pr_become(pr, PR_PROBE);
        return 1;
    }
    if (pr->state != PR_PROBE || pr->next - 1 != m->index)
        return 0; /* stale or snapshot in flight */
    uint64_t hint = m->hint_index;
    if (m->hint_term)
        hint = conflict_by_term(r, hint, m->hint_term);
    uint64_t next = m->index < hint + 1 ? m->index : hint + 1;
    pr->next = next > pr->match + 1 ? next : pr->match + 1;
    pr->probe_sent = 0;
    return 1;
}

static void leader_on_append_resp(struct ds_raft *r, struct progress *pr,
                                  const struct ds_raft_msg *m)
{
    if (m->reject) {
        if (pr_decrease(r, pr, m))
            send_append(r, pr, 1);
        return;
    }
    if (m->index <= pr->match && pr->state != PR_PROBE)
        return;
    if (m->index > pr->match)
        pr->match = m->index;
    if (pr->next < pr->match + 1)
        pr->next = pr->match + 1;
    if (pr->state == PR_PROBE || (pr->state == PR_SNAPSHOT && pr->match >= pr->pending_snap)) {
        pr_become(pr, PR_REPLICATE);
    } else if (pr->state == PR_REPLICATE) {
        inflight_free_to(pr, m->index);
    }
    maybe_commit(r);
    if (r->role != DS_RAFT_LEADER)
        return;
    while (send_append(r, pr, 0) && pr->state == PR_REPLICATE)
        ;
    if (pr->commit_sent < r->commit) /* it was paused when the commit index last moved */
        send_append(r, pr, 1);
    maybe_send_timeout_now(r, pr);
}

static void leader_on_heartbeat_resp(struct ds_raft *r, struct progress *pr,
                                     const struct ds_raft_msg *m)
{
    if (m->ctx > pr->read_ack)
        pr->read_ack = m->ctx;
    reads_release(r);
    if (pr->state == PR_REPLICATE && pr->n_inflight >= r->o.max_inflight) {
        pr->inflight_head = (pr->inflight_head + 1) % DS_RAFT_MAX_INFLIGHT;
        pr->n_inflight--;
    }
    if (pr->state == PR_PROBE)
        pr->probe_sent = 0;
    if (pr->state == PR_SNAPSHOT && r->now >= pr->snap_sent_at + r->o.election_min_ms)
        pr_become(pr, PR_PROBE); /* the snapshot was lost: try again */
    if (pr->match < last_index(r))
        send_append(r, pr, 1);
}

static void step_leader(struct ds_raft *r, const struct ds_raft_msg *m)
{
    struct progress *pr = progress_of(r, m->from);
    if (!pr)
        return;
    pr->active = 1;
    if (m->type == DS_RAFT_MSG_APPEND_RESP)
        leader_on_append_resp(r, pr, m);
    else if (m->type == DS_RAFT_MSG_HEARTBEAT_RESP)
        leader_on_heartbeat_resp(r, pr, m);
}

/* ================================================================ follower message handling */

static void append_resp(struct ds_raft *r, const struct ds_raft_msg *in, uint64_t index)
{
    struct ds_raft_msg *m = msg_new(r, DS_RAFT_MSG_APPEND_RESP, in->from);
    if (m)
        m->index = index;
}

/* Accept the leader's log up to index.  The answer says "stored here": with async_persist it
 * waits until ds_raft_persisted() covers index (ack_flush). */
static void ack_append(struct ds_raft *r, const struct ds_raft_msg *in, uint64_t index)
{
    if (!r->o.async_persist || index <= r->durable) {
        append_resp(r, in, index);
        return;
    }
    if (r->ack_to != in->from || r->ack_term != r->term) {
        r->ack_to = in->from;
        r->ack_term = r->term;
        r->ack_index = r->ack_sent = 0;
    }
    if (index > r->ack_index)
        r->ack_index = index;
}

/* Answer the waiting acceptance as far as the disk now covers it.  The log up to ack_index
 * matched the leader's when it was accepted and has not been truncated since (log_truncate
 * drops the acceptance), so any prefix of it that is durable may be acknowledged. */
static void ack_flush(struct ds_raft *r)
{
    if (!r->ack_index)
        return;
    if (r->ack_term != r->term || r->role != DS_RAFT_FOLLOWER) {
        r->ack_index = r->ack_sent = 0;
        return;
    }
    uint64_t index = r->durable < r->ack_index ? r->durable : r->ack_index;
    if (index > r->ack_sent) {
        struct ds_raft_msg *m = msg_new(r, DS_RAFT_MSG_APPEND_RESP, r->ack_to);
        if (!m)
            return; /* like a lost message: the leader probes again */
        m->index = index;
        r->ack_sent = index;
    }
    if (index == r->ack_index)
        r->ack_index = r->ack_sent = 0;
}

static int follower_append_entries(struct ds_raft *r, const struct ds_raft_msg *m)
{
    for (uint32_t k = 0; k < m->n_entries; k++) {
        const struct ds_raft_entry *e = &m->entries[k];
        uint64_t t;
        if (term_at(r, e->index, &t) && e->index <= last_index(r)) {
            if (t == e->term)
                continue;
            log_truncate(r, e->index); /* above commit: m->index >= commit was checked */
        }
        if (log_append(r, e->term, e->type, e->data, e->len))
            return DS_RAFT_ENOMEM;
    }
    return DS_RAFT_OK;
}

/* AppendEntries receiver (Raft §5.3, Fig. 2), answering a mismatch with the conflicting term's
 * first index so the leader skips a whole term per round trip (Raft §5.3, last paragraphs). */
static int follower_on_append(struct ds_raft *r, const struct ds_raft_msg *m)
{
    uint64_t t;
    if (m->index < r->commit) {
        ack_append(r, m, r->commit);
        return DS_RAFT_OK;
    }
    if (!term_at(r, m->index, &t) || t != m->log_term) {
        struct ds_raft_msg *o = msg_new(r, DS_RAFT_MSG_APPEND_RESP, m->from);
        if (!o)
            return DS_RAFT_ENOMEM;
        uint64_t last = last_index(r);
        o->reject = 1;
        o->index = m->index;
        o->hint_index = conflict_by_term(r, m->index < last ? m->index : last, m->log_term);
        term_at(r, o->hint_index, &o->hint_term);
        return DS_RAFT_OK;
    }
    int rv = follower_append_entries(r, m);
    if (rv)
        return rv;
    uint64_t last_new = m->index + m->n_entries;
    commit_to(r, m->commit < last_new ? m->commit : last_new);
    ack_append(r, m, last_new);
    return DS_RAFT_OK;
}

static void follower_on_heartbeat(struct ds_raft *r, const struct ds_raft_msg *m)
{
    uint64_t last = last_index(r);
    commit_to(r, m->commit < last ? m->commit : last);
    struct ds_raft_msg *o = msg_new(r, DS_RAFT_MSG_HEARTBEAT_RESP, m->from);
    if (o)
        o->ctx = m->ctx;
}

/* InstallSnapshot receiver (dissertation §5.3): replace the whole log unless it already agrees. */
static int follower_on_snapshot(struct ds_raft *r, const struct ds_raft_msg *m)
{
    uint64_t t;
    if (m->snap.index <= r->commit) {
        ack_append(r, m, r->commit);
        return DS_RAFT_OK;
    }
    if (term_at(r, m->snap.index, &t) && t == m->snap.term) {
        commit_to(r, m->snap.index);
        ack_append(r, m, m->snap.index);
        return DS_RAFT_OK;
    }
    uint8_t *copy = malloc(m->snap_len ? m->snap_len : 1);
    if (!copy)
        return DS_RAFT_ENOMEM;
    if (m->snap_len)
        memcpy(copy, m->snap_data, m->snap_len);
    log_compact(r, last_index(r) + 1);
    trash(r, r->snap_data);
    r->snap = m->snap;
    r->snap_data = copy;
    r->snap_len = m->snap_len;
    r->first = m->snap.index + 1;
    r->unstable = r->first;
    r->truncate_from = 0;
    r->snap_pending = 1;
    r->commit = m->snap.index;
    r->durable = 0; /* until the snapshot is stored */
    r->ack_index = r->ack_sent = 0;
    conf_recompute(r);
    ack_append(r, m, m->snap.index);
    return DS_RAFT_OK;
}

static int step_follower(struct ds_raft *r, const struct ds_raft_msg *m)
{
    switch (m->type) {
    case DS_RAFT_MSG_APPEND:
    case DS_RAFT_MSG_HEARTBEAT:
    case DS_RAFT_MSG_SNAPSHOT:
        set_leader(r, m->from);
        r->last_leader_contact = r->now;
        reset_election_timer(r);
        if (m->type == DS_RAFT_MSG_APPEND)
            return follower_on_append(r, m);
        if (m->type == DS_RAFT_MSG_SNAPSHOT)
            return follower_on_snapshot(r, m);
        follower_on_heartbeat(r, m);
        return DS_RAFT_OK;
    case DS_RAFT_MSG_TIMEOUT_NOW:
        campaign(r, 0, 1); /* §3.10: start an election at once, leases ignored */
        return DS_RAFT_OK;
    default:
        return DS_RAFT_OK;
    }
}

/* ================================================================ votes (§5.2, §9.6) */

/* Election restriction (Raft §5.4.1): the candidate's log is at least as up to date as ours. */
static int log_up_to_date(const struct ds_raft *r, uint64_t term, uint64_t index)
{
    uint64_t lt = last_term(r);
    return term > lt || (term == lt && index >= last_index(r));
}

/* RequestVote receiver (Raft §5.2, Fig. 2); a pre-vote grant changes neither term nor vote. */
static void on_vote_request(struct ds_raft *r, const struct ds_raft_msg *m)
{
    int pre = m->type == DS_RAFT_MSG_PREVOTE;
    int resp = pre ? DS_RAFT_MSG_PREVOTE_RESP : DS_RAFT_MSG_VOTE_RESP;
    int can = r->vote == m->from || (r->vote == 0 && r->leader == 0) || (pre && m->term > r->term);
    if (can && log_up_to_date(r, m->log_term, m->index)) {
        reply(r, m, resp, m->term, 0);
        if (!pre) {
            r->vote = m->from;
            reset_election_timer(r);
        }
    } else {
        reply(r, m, resp, r->term, 1);
    }
}

static void on_vote_response(struct ds_raft *r, const struct ds_raft_msg *m)
{
    int want = r->role == DS_RAFT_PRECANDIDATE ? DS_RAFT_MSG_PREVOTE_RESP : DS_RAFT_MSG_VOTE_RESP;
    if (m->type != want || !is_voter(r, m->from) || ids_has(r->granted, r->n_granted, m->from) ||
        ids_has(r->rejected, r->n_rejected, m->from))
        return;
    if (m->reject)
        r->rejected[r->n_rejected++] = m->from;
    else
        r->granted[r->n_granted++] = m->from;
    if (r->n_granted >= quorum(r)) {
        if (r->role == DS_RAFT_PRECANDIDATE)
            campaign(r, 0, 0);
        else
            become_leader(r);
    } else if (r->n_rejected >= quorum(r)) {
        become_follower(r, r->term, 0);
    }
}

/* ================================================================ step */

/* Disruptive servers (dissertation §4.2.3): while a leader was heard from within the minimum
 * election timeout, (pre)vote requests are ignored. */
static int in_lease(const struct ds_raft *r)
{
    return r->o.check_quorum && r->leader != 0 &&
           r->now < r->last_leader_contact + r->o.election_min_ms;
}

/* A message from a higher term (§5.1).  0: go on handling it; 1: drop it. */
static int step_higher_term(struct ds_raft *r, const struct ds_raft_msg *m)
{
    int vote = m->type == DS_RAFT_MSG_VOTE || m->type == DS_RAFT_MSG_PREVOTE;
    if (vote && !(m->flags & DS_RAFT_MSG_FLAG_TRANSFER) && in_lease(r))
        return 1; /* a healthy leader exists: do not let a rejoining node depose it */
    if (m->type == DS_RAFT_MSG_PREVOTE || (m->type == DS_RAFT_MSG_PREVOTE_RESP && !m->reject))
        return 0; /* pre-votes never change our term */
    int from_leader = m->type == DS_RAFT_MSG_APPEND || m->type == DS_RAFT_MSG_HEARTBEAT ||
                      m->type == DS_RAFT_MSG_SNAPSHOT;
    become_follower(r, m->term, from_leader ? m->from : 0);
    return 0;
}

static void step_lower_term(struct ds_raft *r, const struct ds_raft_msg *m)
{
    if ((r->o.check_quorum || r->o.pre_vote) &&
        (m->type == DS_RAFT_MSG_APPEND || m->type == DS_RAFT_MSG_HEARTBEAT))
        msg_new(r, DS_RAFT_MSG_APPEND_RESP, m->from); /* tells a stale leader our term */
    else if (m->type == DS_RAFT_MSG_PREVOTE)
        reply(r, m, DS_RAFT_MSG_PREVOTE_RESP, r->term, 1);
}

static int msg_valid(const struct ds_raft *r, const struct ds_raft_msg *m)
{
    if (m->to != r->id || m->from == 0 || m->from == r->id || m->type < 1 ||
        m->type > DS_RAFT_MSG_TYPE_MAX)
        return 0;
    for (uint32_t k = 0; k < m->n_entries; k++) {
        const struct ds_raft_entry *e = &m->entries[k];
        struct ds_raft_membership c;
        if (e->index != m->index + 1 + k || e->term > m->term || e->term == 0 ||
            e->type < DS_RAFT_ENTRY_NORMAL || e->type > DS_RAFT_ENTRY_CONFIG ||
            (k && e->term < m->entries[k - 1].term) || (e->len && !e->data))
            return 0;
        if (e->type == DS_RAFT_ENTRY_CONFIG && ds_raft_conf_decode(e->data, e->len, &c))
            return 0;
    }
    if (m->n_entries && m->entries[0].term < m->log_term)
        return 0;
    if (m->type != DS_RAFT_MSG_SNAPSHOT)
        return 1;
    const struct ds_raft_membership *c = &m->snap.conf;
    return m->snap.index > 0 && m->snap.term <= m->term && (m->snap_data || !m->snap_len) &&
           c->n_voters + c->n_learners <= DS_RAFT_MAX_NODES &&
           c->n_voters <= DS_RAFT_MAX_NODES && c->n_learners <= DS_RAFT_MAX_NODES;
}

int ds_raft_step(struct ds_raft *r, const struct ds_raft_msg *m)
{
    if (r->in_ready)
        return DS_RAFT_EBUSY;
    if (!msg_valid(r, m))
        return DS_RAFT_EBADMSG;
    if (m->term > r->term) {
        if (step_higher_term(r, m))
            return DS_RAFT_OK;
    } else if (m->term < r->term) {
        step_lower_term(r, m);
        return DS_RAFT_OK;
    }
    if (m->type == DS_RAFT_MSG_VOTE || m->type == DS_RAFT_MSG_PREVOTE) {
        on_vote_request(r, m);
        return DS_RAFT_OK;
    }
    switch (r->role) {
    case DS_RAFT_LEADER:
        step_leader(r, m);
        return DS_RAFT_OK;
    case DS_RAFT_PRECANDIDATE:
    case DS_RAFT_CANDIDATE:
        if (m->type == DS_RAFT_MSG_APPEND || m->type == DS_RAFT_MSG_HEARTBEAT ||
            m->type == DS_RAFT_MSG_SNAPSHOT) {
            become_follower(r, m->term, m->from);
            return step_follower(r, m);
        }
        on_vote_response(r, m);
        return DS_RAFT_OK;
    default:
        return step_follower(r, m);
    }
}

/* ================================================================ tick */

/* Check-quorum (dissertation §6.2): a leader that heard from no majority of voters within an
 * election timeout steps down, so clients find the real leader. */
static void leader_check_quorum(struct ds_raft *r)
{
    uint32_t active = 0;
    for (uint32_t i = 0; i < r->conf.n_voters; i++) {
        const struct progress *pr = progress_of(r, r->conf.voters[i]);
        if (r->conf.voters[i] == r->id || (pr && pr->active))
            active++;
    }
    for (uint32_t i = 0; i < r->n_prs; i++)
        r->prs[i].active = 0;
    r->quorum_deadline = r->now + r->o.election_min_ms;
    if (active < quorum(r)) {
        become_follower(r, r->term, 0);
        return;
    }
    r->last_leader_contact = r->now;
}

int ds_raft_tick(struct ds_raft *r, uint64_t now_ms)
{
    if (r->in_ready)
        return DS_RAFT_EBUSY;
    if (now_ms > r->now)
        r->now = now_ms;
    if (r->role != DS_RAFT_LEADER) {
        if (r->now >= r->election_deadline)
            campaign(r, r->o.pre_vote, 0);
        return DS_RAFT_OK;
    }
    if (r->transferee && r->now >= r->transfer_deadline)
        r->transferee = 0; /* §3.10: abort after an election timeout */
    if (r->o.check_quorum && r->now >= r->quorum_deadline) {
        leader_check_quorum(r);
        if (r->role != DS_RAFT_LEADER)
            return DS_RAFT_OK;
    }
    if (r->now >= r->heartbeat_deadline) {
        send_heartbeats(r);
        r->heartbeat_deadline = r->now + r->o.heartbeat_ms;
    }
    return DS_RAFT_OK;
}

/* ================================================================ requests */

int ds_raft_propose(struct ds_raft *r, const void *data, uint32_t len, uint64_t *index,
                    uint64_t *leader)
{
    if (leader)
        *leader = r->leader;
    if (r->in_ready)
        return DS_RAFT_EBUSY;
    if (r->role != DS_RAFT_LEADER)
        return DS_RAFT_ENOTLEADER;
    if (r->transferee)
        return DS_RAFT_EBUSY;
    if (len > DS_RAFT_WIRE_MAX_ENTRY_BYTES || (len && !data))
        return DS_RAFT_EINVAL;
    int rv = log_append(r, r->term, DS_RAFT_ENTRY_NORMAL, data, len);
    if (rv)
        return rv;
    if (index)
        *index = last_index(r);
    if (!r->bcast_pending)
        r->bcast_pending = 1;
    maybe_commit(r);
    return DS_RAFT_OK;
}

int ds_raft_transfer_leadership(struct ds_raft *r, uint64_t target)
{
    if (r->in_ready)
        return DS_RAFT_EBUSY;
    if (r->role != DS_RAFT_LEADER)
        return DS_RAFT_ENOTLEADER;
    if (target == r->id || !is_voter(r, target))
        return DS_RAFT_EINVAL;
    if (r->transferee)
        return DS_RAFT_EBUSY;
    r->transferee = target;
    r->transfer_deadline = r->now + r->o.election_min_ms;
    struct progress *pr = progress_of(r, target);
    if (pr->match == last_index(r))
        maybe_send_timeout_now(r, pr);
    else
        send_append(r, pr, 1);
    return DS_RAFT_OK;
}

static int conf_apply_op(const struct ds_raft *r, int op, uint64_t id,
                         struct ds_raft_membership *c)
{
    *c = r->conf;
    int voter = ids_has(c->voters, c->n_voters, id);
    int learner = ids_has(c->learners, c->n_learners, id);
    switch (op) {
    case DS_RAFT_CONF_ADD_LEARNER:
        if (voter || learner || c->n_voters + c->n_learners >= DS_RAFT_MAX_NODES)
            return DS_RAFT_EINVAL;
        c->learners[c->n_learners++] = id;
        return DS_RAFT_OK;
    case DS_RAFT_CONF_PROMOTE: {
        const struct progress *pr = progress_of((struct ds_raft *)r, id);
        if (!learner)
            return DS_RAFT_EINVAL;
        if (!pr || pr->match < r->commit)
            return DS_RAFT_ECATCHUP;
        break;
    }
    case DS_RAFT_CONF_REMOVE:
        if (!(voter || learner) || (voter && c->n_voters == 1))
            return DS_RAFT_EINVAL;
        break;
    default:
        return DS_RAFT_EINVAL;
    }
    uint32_t nl = 0, nv = 0;
    for (uint32_t i = 0; i < c->n_learners; i++)
        if (c->learners[i] != id)
            c->learners[nl++] = c->learners[i];
    for (uint32_t i = 0; i < c->n_voters; i++)
        if (c->voters[i] != id)
            c->voters[nv++] = c->voters[i];
    c->n_learners = nl;
    c->n_voters = nv;
    if (op == DS_RAFT_CONF_PROMOTE)
        c->voters[c->n_voters++] = id;
    return DS_RAFT_OK;
}

int ds_raft_change_membership(struct ds_raft *r, int op, uint64_t id, uint64_t *index)
{
    struct ds_raft_membership c;
    struct ds_raft_buf b = {0};
    int rv;
    if (r->in_ready)
        return DS_RAFT_EBUSY;
    if (r->role != DS_RAFT_LEADER)
        return DS_RAFT_ENOTLEADER;
    if (id == 0)
        return DS_RAFT_EINVAL;
    if (r->transferee || r->conf_index > r->commit || !committed_in_term(r))
        return DS_RAFT_EBUSY; /* one uncommitted change at a time, §4.1 */
    if ((rv = conf_apply_op(r, op, id, &c)) || (rv = ds_raft_conf_encode(&c, &b)))
        goto err;
    if ((rv = log_append(r, r->term, DS_RAFT_ENTRY_CONFIG, b.data, (uint32_t)b.len)))
        goto err;
    if (index)
        *index = last_index(r);
    if (!r->bcast_pending)
        r->bcast_pending = 1;
    maybe_commit(r);
err:
    ds_raft_buf_free(&b);
    return rv;
}

/* Membership as of index (> snap.index): the snapshot's, then CONFIG entries up to index. */
static void conf_at(const struct ds_raft *r, uint64_t index, struct ds_raft_membership *c)
{
    *c = r->snap.conf;
    for (uint64_t i = r->snap.index + 1; i <= index; i++) {
        const struct ds_raft_entry *e = entry_at(r, i);
        struct ds_raft_membership d;
        if (e->type == DS_RAFT_ENTRY_CONFIG && ds_raft_conf_decode(e->data, e->len, &d) == 0)
            *c = d;
    }
}

int ds_raft_snapshot_meta_at(const struct ds_raft *r, uint64_t index,
                             struct ds_raft_snapshot_meta *m)
{
    if (index <= r->snap.index || index > r->applied)
        return DS_RAFT_EINVAL;
    m->index = index;
    term_at(r, index, &m->term);
    conf_at(r, index, &m->conf);
    return DS_RAFT_OK;
}

int ds_raft_snapshot_taken(struct ds_raft *r, uint64_t index, const void *data, size_t len)
{
    struct ds_raft_snapshot_meta s;
    if (r->in_ready)
        return DS_RAFT_EBUSY;
    if (ds_raft_snapshot_meta_at(r, index, &s) || len > DS_RAFT_WIRE_MAX_SNAPSHOT_BYTES ||
        (len && !data))
        return DS_RAFT_EINVAL;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return DS_RAFT_ENOMEM;
    if (len)
        memcpy(copy, data, len);
    trash(r, r->snap_data);
    r->snap = s;
    r->snap_data = copy;
    r->snap_len = len;
    if (index >= r->o.snapshot_trailing)
        log_compact(r, index + 1 - r->o.snapshot_trailing);
    if (r->durable < index) /* the stored snapshot covers the log up to index */
        r->durable = index;
    return DS_RAFT_OK;
}

int ds_raft_persisted(struct ds_raft *r, uint64_t index, uint64_t term)
{
    uint64_t t;
    if (r->in_ready)
        return DS_RAFT_EBUSY;
    if (!r->o.async_persist)
        return DS_RAFT_EINVAL;
    /* Stale reports (the log was truncated or replaced meanwhile) change nothing: an entry with
     * this index and term is the one that was written, and so is the log before it (§5.3). */
    if (index <= r->durable || index >= r->unstable || !term_at(r, index, &t) || t != term)
        return DS_RAFT_OK;
    r->durable = index;
    if (r->role == DS_RAFT_LEADER)
        maybe_commit(r);
    else
        ack_flush(r);
    return DS_RAFT_OK;
}

/* ================================================================ ready / advance */

int ds_raft_has_ready(const struct ds_raft *r)
{
    return !r->in_ready &&
           (r->bcast_pending || r->term != r->persisted_hs.term ||
            r->vote != r->persisted_hs.vote || r->unstable <= last_index(r) ||
            r->truncate_from || r->snap_pending || r->n_out || r->commit > r->applied ||
            r->n_done_reads || r->role != r->last_role || r->leader != r->last_leader);
}

/* 1 when no message of the outbox needs this node's batch on disk first: what a leader sends to
 * replicate (entries, heartbeats, snapshots, TimeoutNow) and refusals.  An accepted
 * APPEND_RESP or a granted vote speaks for this node's disk. */
static int msgs_need_no_disk(const struct ds_raft *r)
{
    for (size_t i = 0; i < r->n_out; i++) {
        const struct ds_raft_msg *m = &r->out[i];
        if (m->type != DS_RAFT_MSG_APPEND && m->type != DS_RAFT_MSG_HEARTBEAT &&
            m->type != DS_RAFT_MSG_SNAPSHOT && m->type != DS_RAFT_MSG_TIMEOUT_NOW && !m->reject)
            return 0;
    }
    return 1;
}

int ds_raft_ready(struct ds_raft *r, struct ds_raft_ready *rd)
{
    if (r->in_ready)
        return DS_RAFT_EBUSY;
    if (r->bcast_pending && r->role == DS_RAFT_LEADER)
        send_append_all(r, r->bcast_pending == 2);
    r->bcast_pending = 0;
    memset(rd, 0, sizeof(*rd));
    rd->hs.term = r->term;
    rd->hs.vote = r->vote;
    rd->has_hard_state = r->term != r->persisted_hs.term || r->vote != r->persisted_hs.vote;
    rd->truncate_from = r->truncate_from;
    if (r->unstable <= last_index(r)) {
        rd->entries = entry_at(r, r->unstable);
        rd->n_entries = (size_t)(last_index(r) - r->unstable + 1);
    }
    if (r->snap_pending) {
        rd->has_snapshot = 1;
        rd->snap = r->snap;
        rd->snap_data = r->snap_data;
        rd->snap_len = r->snap_len;
    }
    rd->msgs = r->out;
    rd->n_msgs = r->n_out;
    uint64_t from = (r->snap_pending ? r->snap.index : r->applied) + 1;
    if (r->commit >= from) {
        rd->committed = entry_at(r, from);
        rd->n_committed = (size_t)(r->commit - from + 1);
    }
    rd->reads = r->done_reads;
    rd->n_reads = r->n_done_reads;
    if (r->o.async_persist) /* no message speaks for entries that are not durable */
        rd->send_first = !rd->has_hard_state && !rd->has_snapshot && !rd->truncate_from;
    else
        rd->send_first = r->role == DS_RAFT_LEADER && !rd->has_hard_state &&
                         !rd->has_snapshot && !rd->truncate_from && msgs_need_no_disk(r);
    rd->soft_changed = r->role != r->last_role || r->leader != r->last_leader;
    rd->role = r->role;
    rd->term = r->term;
    rd->leader = r->leader;
    rd->commit = r->commit;
    r->in_ready = 1;
    return DS_RAFT_OK;
}

int ds_raft_advance(struct ds_raft *r)
{
    if (!r->in_ready)
        return DS_RAFT_EINVAL;
    r->persisted_hs.term = r->term;
    r->persisted_hs.vote = r->vote;
    r->unstable = last_index(r) + 1;
    r->truncate_from = 0;
    if (!r->o.async_persist)
        r->durable = last_index(r);
    if (r->snap_pending && r->applied < r->snap.index)
        r->applied = r->snap.index;
    r->snap_pending = 0;
    if (r->commit > r->applied)
        r->applied = r->commit;
    for (size_t i = 0; i < r->n_out; i++)
        free(r->out[i].entries);
    r->n_out = 0;
    r->n_done_reads = 0;
    for (size_t i = 0; i < r->n_garbage; i++)
        free(r->garbage[i]);
    r->n_garbage = 0;
    r->last_role = r->role;
    r->last_leader = r->leader;
    r->in_ready = 0;
    return DS_RAFT_OK;
}

/* ================================================================ create / destroy / status */

static int options_valid(const struct ds_raft_options *o)
{
    return o->id != 0 && o->election_min_ms > 0 && o->election_max_ms >= o->election_min_ms &&
           o->heartbeat_ms > 0 && o->heartbeat_ms < o->election_min_ms &&
           o->max_append_entries > 0 && o->max_inflight > 0 &&
           o->max_inflight <= DS_RAFT_MAX_INFLIGHT;
}

static int durable_valid(const struct ds_raft_durable *d)
{
    const struct ds_raft_membership *c = &d->snap.conf;
    if (c->n_voters + c->n_learners > DS_RAFT_MAX_NODES || (d->snap_len && !d->snap_data))
        return 0;
    for (size_t i = 0; i < d->n_entries; i++) {
        const struct ds_raft_entry *e = &d->entries[i];
        if (e->index != d->snap.index + 1 + i || (e->len && !e->data) ||
            e->term < (i ? d->entries[i - 1].term : d->snap.term))
            return 0;
    }
    return 1;
}

int ds_raft_create(const struct ds_raft_options *o, const struct ds_raft_durable *d,
                   struct ds_raft **out)
{
    int rv = DS_RAFT_EINVAL;
    if (!options_valid(o) || !durable_valid(d))
        return rv;
    struct ds_raft *r = calloc(1, sizeof(*r));
    if (!r)
        return DS_RAFT_ENOMEM;
    r->o = *o;
    r->id = o->id;
    ds_prng_seed(&r->prng, o->seed ^ o->id);
    r->term = r->persisted_hs.term = d->hs.term;
    r->vote = r->persisted_hs.vote = d->hs.vote;
    r->snap = d->snap;
    r->snap_len = d->snap_len;
    rv = DS_RAFT_ENOMEM;
    if (!(r->snap_data = malloc(d->snap_len ? d->snap_len : 1)))
        goto err;
    if (d->snap_len)
        memcpy(r->snap_data, d->snap_data, d->snap_len);
    r->first = d->snap.index + 1;
    r->commit = r->applied = d->snap.index;
    for (size_t i = 0; i < d->n_entries; i++) {
        const struct ds_raft_entry *e = &d->entries[i];
        if ((rv = log_append(r, e->term, e->type, e->data, e->len)))
            goto err;
    }
    r->durable = last_index(r);
    r->unstable = r->durable + 1;
    conf_recompute(r);
    reset_election_timer(r);
    *out = r;
    return DS_RAFT_OK;
err:
    ds_raft_destroy(r);
    return rv;
}

void ds_raft_destroy(struct ds_raft *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->log_len; i++)
        free(r->log[i].data);
    for (size_t i = 0; i < r->n_out; i++)
        free(r->out[i].entries);
    for (size_t i = 0; i < r->n_garbage; i++)
        free(r->garbage[i]);
    free(r->log);
    free(r->snap_data);
    free(r->out);
    free(r->reads);
    free(r->done_reads);
    free(r->garbage);
    free(r);
}

void ds_raft_status(const struct ds_raft *r, struct ds_raft_status *s)
{
    memset(s, 0, sizeof(*s));
    s->id = r->id;
    s->role = r->role;
    s->term = r->term;
    s->vote = r->vote;
    s->leader = r->leader;
    s->commit = r->commit;
    s->applied = r->applied;
    s->first_index = r->first;
    s->last_index = last_index(r);
    s->snapshot_index = r->snap.index;
    s->snapshot_term = r->snap.term;
    s->transferee = r->transferee;
    s->conf = r->conf;
    s->elections_started = r->elections_started;
    s->leader_changes = r->leader_changes;
    s->alloc_failures = r->alloc_failures;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct ds_raft_peer_status *p = &s->peers[s->n_peers++];
        p->id = r->prs[i].id;
        p->match = r->prs[i].match;
        p->next = r->prs[i].next;
        p->voter = (uint8_t)is_voter(r, p->id);
        p->state = r->prs[i].state;
    }
}
