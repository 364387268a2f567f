/* Deterministic Raft cluster simulator used by the Raft unit tests (see sim.h). */
#include "sim.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sim_fail(struct sim *s, const char *fmt, ...)
{
    if (s->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->why, sizeof(s->why), fmt, ap);
    va_end(ap);
    s->failed = 1;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "out of memory\n");
        abort();
    }
    return q;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static uint64_t entry_hash(const struct ds_raft_entry *e)
{
    uint64_t h = fnv(0xcbf29ce484222325ULL, &e->type, 1);
    return fnv(h, e->data, e->len);
}

/* ================================================================ network */

static int msg_before(const struct sim_msg *a, const struct sim_msg *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static void heap_push(struct sim *s, struct sim_msg m)
{
    if (s->n_heap == s->cap_heap) {
        s->cap_heap = s->cap_heap ? 2 * s->cap_heap : 256;
        s->heap = xrealloc(s->heap, s->cap_heap * sizeof(*s->heap));
    }
    size_t i = s->n_heap++;
    while (i > 0 && msg_before(&m, &s->heap[(i - 1) / 2])) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = m;
}

static struct sim_msg heap_pop(struct sim *s)
{
    struct sim_msg top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->n_heap)
            break;
        if (c + 1 < s->n_heap && msg_before(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!msg_before(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->n_heap)
        s->heap[i] = last;
    return top;
}

static uint64_t delay(struct sim *s)
{
    return s->delay_min + ds_prng_below(&s->prng, s->delay_max - s->delay_min + 1);
}

static void net_send(struct sim *s, const struct ds_raft_msg *m)
{
    struct ds_raft_buf b = {0};
    int rv = ds_raft_msg_encode(m, &b);
    if (rv) {
        sim_fail(s, "encode failed: %s", ds_raft_strerror(rv));
        return;
    }
    if (m->to < 1 || m->to > (uint64_t)s->n || s->cut[m->from][m->to] ||
        ds_prng_below(&s->prng, 100) < s->drop_pct) {
        ds_raft_buf_free(&b);
        return;
    }
    if (ds_prng_below(&s->prng, 100) < s->dup_pct) {
        uint8_t *copy = xrealloc(NULL, b.len);
        memcpy(copy, b.data, b.len);
        heap_push(s, (struct sim_msg){s->now + delay(s), s->seq++, m->to, copy, b.len});
    }
    heap_push(s, (struct sim_msg){s->now + delay(s), s->seq++, m->to, b.data, b.len});
}

/* ================================================================ invariants */

static void check_term_leader(struct sim *s, int id, uint64_t term)
{
    if (term >= s->cap_terms) {
        size_t cap = s->cap_terms ? s->cap_terms : 64;
        while (cap <= term)
            cap *= 2;
        s->leader_of_term = xrealloc(s->leader_of_term, cap * sizeof(uint64_t));
        memset(s->leader_of_term + s->cap_terms, 0, (cap - s->cap_terms) * sizeof(uint64_t));
        s->cap_terms = cap;
    }
    if (s->leader_of_term[term] && s->leader_of_term[term] != (uint64_t)id)
        sim_fail(s, "election safety: nodes %llu and %d both lead term %llu",
                 (unsigned long long)s->leader_of_term[term], id, (unsigned long long)term);
    s->leader_of_term[term] = (uint64_t)id;
}

static uint64_t st_last(const struct sim_storage *st)
{
    return st->n ? st->ents[st->n - 1].index : st->snap.index;
}

static int st_term(const struct sim_storage *st, uint64_t index, uint64_t *term)
{
    if (index == st->snap.index) {
        *term = st->snap.term;
        return 1;
    }
    if (index <= st->snap.index || index > st_last(st))
        return 0;
    *term = st->ents[index - st->snap.index - 1].term;
    return 1;
}

/* Log matching (Raft §5.3): an (index, term) pair always names the same content and the same
 * previous term, which by induction makes the two logs identical up to it. */
static void check_log_record(struct sim *s, uint64_t index, uint64_t term, uint64_t prev_term,
                             uint64_t hash)
{
    if (2 * (s->n_recs + 1) > s->cap_recs) {
        struct sim_logrec *old = s->recs;
        size_t oldcap = s->cap_recs;
        s->cap_recs = oldcap ? 2 * oldcap : 1024;
        s->recs = calloc(s->cap_recs, sizeof(*s->recs));
        s->n_recs = 0;
        for (size_t i = 0; i < oldcap; i++)
            if (old[i].index)
                check_log_record(s, old[i].index, old[i].term, old[i].prev_term, old[i].hash);
        free(old);
    }
    size_t mask = s->cap_recs - 1, i = (size_t)((index * 0x9e3779b97f4a7c15ULL) ^ term) & mask;
    for (;; i = (i + 1) & mask) {
        struct sim_logrec *rec = &s->recs[i];
        if (rec->index == 0) {
            *rec = (struct sim_logrec){index, term, prev_term, hash};
            s->n_recs++;
            return;
        }
        if (rec->index == index && rec->term == term) {
            if (rec->prev_term != prev_term || rec->hash != hash)
                sim_fail(s, "log matching: entry %llu/%llu differs between logs",
                         (unsigned long long)index, (unsigned long long)term);
            return;
        }
    }
}

/* State machine safety: no two nodes apply different entries at one index. */
static void check_committed(struct sim *s, uint64_t index, uint64_t term, uint64_t hash,
                            uint64_t seen_in)
{
    if (index >= s->cap_committed) {
        size_t cap = s->cap_committed ? s->cap_committed : 256;
        while (cap <= index)
            cap *= 2;
        s->committed = xrealloc(s->committed, cap * sizeof(*s->committed));
        memset(s->committed + s->cap_committed, 0, (cap - s->cap_committed) * sizeof(*s->committed));
        s->cap_committed = cap;
    }
    struct sim_committed *c = &s->committed[index];
    if (c->term && (c->term != term || c->hash != hash))
        sim_fail(s, "state machine safety: index %llu applied as term %llu and %llu",
                 (unsigned long long)index, (unsigned long long)c->term, (unsigned long long)term);
    if (c->term == 0 || seen_in < c->seen_in)
        c->seen_in = seen_in;
    c->term = term;
    c->hash = hash;
    if (index > s->max_committed)
        s->max_committed = index;
}

/* Leader completeness (Raft §5.4): the leader of term t holds every entry committed before t
 * (an entry seen committed by a node in term t' was committed in a term <= t'). */
static void check_leader_log(struct sim *s, int id, uint64_t term)
{
    const struct sim_storage *st = &s->nodes[id].st;
    for (uint64_t i = st->snap.index + 1; i <= s->max_committed; i++) {
        uint64_t t;
        if (s->committed[i].term == 0 || s->committed[i].seen_in >= term)
            continue;
        if (!st_term(st, i, &t) || t != s->committed[i].term)
            sim_fail(s, "leader completeness: leader %d lacks committed entry %llu", id,
                     (unsigned long long)i);
    }
}

static void check_node(struct sim *s, int id)
{
    struct ds_raft_status st;
    ds_raft_status(s->nodes[id].r, &st);
    if (st.commit < s->nodes[id].last_commit)
        sim_fail(s, "node %d commit went back from %llu to %llu", id,
                 (unsigned long long)s->nodes[id].last_commit, (unsigned long long)st.commit);
    s->nodes[id].last_commit = st.commit;
}

/* ================================================================ storage and app */

static void st_drop_from(struct sim_storage *st, uint64_t index)
{
    while (st->n && st->ents[st->n - 1].index >= index)
        free(st->ents[--st->n].data);
}

/* Appends a copy of e (its data too) to the array *v of *n entries and *cap slots. */
static void ents_push(struct ds_raft_entry **v, size_t *n, size_t *cap,
                      const struct ds_raft_entry *e)
{
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        *v = xrealloc(*v, *cap * sizeof(**v));
    }
    struct ds_raft_entry *c = &(*v)[(*n)++];
    *c = *e;
    c->data = NULL;
    if (e->len) {
        c->data = xrealloc(NULL, e->len);
        memcpy(c->data, e->data, e->len);
    }
}

static void st_append(struct sim *s, int id, const struct ds_raft_entry *e)
{
    struct sim_storage *st = &s->nodes[id].st;
    uint64_t prev_term = 0;
    if (e->index != st_last(st) + 1 || !st_term(st, e->index - 1, &prev_term))
        sim_fail(s, "node %d persisted entry %llu after %llu", id, (unsigned long long)e->index,
                 (unsigned long long)st_last(st));
    check_log_record(s, e->index, e->term, prev_term, entry_hash(e));
    ents_push(&st->ents, &st->n, &st->cap, e);
}

static void st_set_snapshot(struct sim_storage *st, const struct ds_raft_snapshot_meta *m,
                            const uint8_t *data, size_t len)
{
    size_t drop = 0;
    while (drop < st->n && st->ents[drop].index <= m->index)
        free(st->ents[drop++].data);
    if (drop) {
        memmove(st->ents, st->ents + drop, (st->n - drop) * sizeof(*st->ents));
        st->n -= drop;
    }
    st->snap = *m;
    free(st->snap_data);
    st->snap_data = xrealloc(NULL, len);
    memcpy(st->snap_data, data, len);
    st->snap_len = len;
}

static void app_restore(struct sim *s, int id, const uint8_t *data, size_t len)
{
    struct sim_app *a = &s->nodes[id].app;
    int whole = len >= sizeof(*a) && (s->sm_ops || len == sizeof(*a));
    memset(a, 0, sizeof(*a));
    if (whole)
        memcpy(a, data, sizeof(*a));
    if (s->sm_ops)
        s->sm_ops->restore(s->sm, s, id, whole ? data + sizeof(*a) : NULL,
                           whole ? len - sizeof(*a) : 0);
}

static void app_apply(struct sim *s, int id, const struct ds_raft_entry *e, uint64_t term)
{
    struct sim_app *a = &s->nodes[id].app;
    if (e->index != a->applied + 1)
        sim_fail(s, "node %d applied %llu after %llu", id, (unsigned long long)e->index,
                 (unsigned long long)a->applied);
    check_committed(s, e->index, e->term, entry_hash(e), term);
    a->applied = e->index;
    if (e->type == DS_RAFT_ENTRY_NORMAL) {
        a->hash = fnv(a->hash ^ e->index, e->data, e->len);
        a->count++;
    }
    if (s->sm_ops)
        s->sm_ops->apply(s->sm, s, id, e);
}

/* ================================================================ async persistence */

static uint64_t pend_last(const struct sim_node *n)
{
    return n->n_pend ? n->pend[n->n_pend - 1].index : st_last(&n->st);
}

/* The glue wrote e to the log file; it is durable only once a sync covers it. */
static void pend_write(struct sim *s, int id, const struct ds_raft_entry *e)
{
    struct sim_node *n = &s->nodes[id];
    if (e->index != pend_last(n) + 1)
        sim_fail(s, "node %d wrote entry %llu after %llu", id, (unsigned long long)e->index,
                 (unsigned long long)pend_last(n));
    ents_push(&n->pend, &n->n_pend, &n->cap_pend, e);
}

/* Written entries up to index become durable (or, with keep == 0, are dropped). */
static void pend_settle(struct sim *s, int id, uint64_t index, int keep)
{
    struct sim_node *n = &s->nodes[id];
    size_t k = 0;
    for (; k < n->n_pend && n->pend[k].index <= index; k++) {
        if (keep)
            st_append(s, id, &n->pend[k]);
        free(n->pend[k].data);
    }
    if (k) {
        memmove(n->pend, n->pend + k, (n->n_pend - k) * sizeof(*n->pend));
        n->n_pend -= k;
    }
}

static void sync_schedule(struct sim *s, int id)
{
    struct sim_node *n = &s->nodes[id];
    if (!n->n_pend || n->sync_at)
        return;
    /* mostly a fast disk; now and then a slow sync, so that crashes find written entries */
    n->sync_at = s->now + ds_prng_below(&s->prng, ds_prng_below(&s->prng, 8) ? 4 : 40);
    if (n->sync_at < n->stall_until)
        n->sync_at = n->stall_until;
    n->sync_index = pend_last(n);
    n->sync_term = n->pend[n->n_pend - 1].term;
}

static void process_ready(struct sim *s, int id);

/* The sync in flight completed: what it covers is durable; tell the core (a stale report after a
 * truncation or a snapshot must change nothing). */
static void sync_done(struct sim *s, int id)
{
    struct sim_node *n = &s->nodes[id];
    pend_settle(s, id, n->sync_index, 1);
    n->sync_at = 0;
    s->async_syncs++;
    int rv = ds_raft_persisted(n->r, n->sync_index, n->sync_term);
    if (rv)
        sim_fail(s, "node %d persisted: %s", id, ds_raft_strerror(rv));
    sync_schedule(s, id);
    process_ready(s, id);
}

/* ================================================================ ready processing */

static void persist(struct sim *s, int id, const struct ds_raft_ready *rd)
{
    struct sim_storage *st = &s->nodes[id].st;
    if (rd->has_snapshot) {
        st_drop_from(st, 0);
        st_set_snapshot(st, &rd->snap, rd->snap_data, rd->snap_len);
        st->installed = 1;
        s->installs++;
    } else if (rd->truncate_from) {
        st_drop_from(st, rd->truncate_from);
        s->truncations++;
    }
    for (size_t i = 0; i < rd->n_entries; i++)
        st_append(s, id, &rd->entries[i]);
    if (rd->has_hard_state)
        st->hs = rd->hs;
}

static void apply_batch(struct sim *s, int id, const struct ds_raft_ready *rd)
{
    struct sim_node *n = &s->nodes[id];
    if (rd->has_snapshot) {
        app_restore(s, id, rd->snap_data, rd->snap_len);
        if (n->app.applied != rd->snap.index)
            sim_fail(s, "node %d snapshot at %llu holds state of %llu", id,
                     (unsigned long long)rd->snap.index, (unsigned long long)n->app.applied);
    }
    for (size_t i = 0; i < rd->n_committed; i++)
        app_apply(s, id, &rd->committed[i], rd->term);
    for (size_t i = 0; i < rd->n_reads; i++) {
        const struct ds_raft_read_state *rs = &rd->reads[i];
        if (rs->ctx < 64 && rs->index < s->read_floor[rs->ctx])
            sim_fail(s, "read %llu served at %llu, below the commit %llu it must see",
                     (unsigned long long)rs->ctx, (unsigned long long)rs->index,
                     (unsigned long long)s->read_floor[rs->ctx]);
        if (n->n_reads < 64)
            n->reads[n->n_reads++] = (struct sim_read){rs->ctx, rs->index};
    }
    n->since_snap += rd->n_committed;
}

/* Finish the held batch: persist, send (unless sent first), apply, advance.  With async_persist a
 * send_first batch is only written; a batch that must be durable first syncs everything written
 * before it too, and is reported after advance. */
static void finish_ready(struct sim *s, int id, const struct ds_raft_ready *rd)
{
    struct sim_node *n = &s->nodes[id];
    int async = s->opts.async_persist && rd->send_first;
    if (async) {
        for (size_t i = 0; i < rd->n_entries; i++)
            pend_write(s, id, &rd->entries[i]);
    } else {
        if (s->opts.async_persist)
            pend_settle(s, id, UINT64_MAX, 1);
        persist(s, id, rd);
    }
    if (rd->role == DS_RAFT_LEADER) {
        check_term_leader(s, id, rd->term);
        if (rd->soft_changed)
            check_leader_log(s, id, rd->term);
    }
    for (size_t i = 0; !rd->send_first && i < rd->n_msgs; i++)
        net_send(s, &rd->msgs[i]);
    apply_batch(s, id, rd);
    ds_raft_advance(n->r);
    n->holding = 0;
    if (async) {
        sync_schedule(s, id);
    } else if (s->opts.async_persist) {
        uint64_t t = 0, last = st_last(&n->st);
        st_term(&n->st, last, &t);
        int rv = last ? ds_raft_persisted(n->r, last, t) : 0;
        if (rv)
            sim_fail(s, "node %d persisted: %s", id, ds_raft_strerror(rv));
    }
}

/* The hash chain, then the plugged-in state machine's bytes; malloc'd, the caller frees. */
static uint8_t *app_snapshot(struct sim *s, int id, size_t *len)
{
    const struct sim_app *a = &s->nodes[id].app;
    uint8_t *sm_data = NULL;
    size_t sm_len = 0;
    if (s->sm_ops)
        s->sm_ops->snapshot(s->sm, s, id, &sm_data, &sm_len);
    uint8_t *data = xrealloc(NULL, sizeof(*a) + sm_len);
    memcpy(data, a, sizeof(*a));
    if (sm_len)
        memcpy(data + sizeof(*a), sm_data, sm_len);
    free(sm_data);
    *len = sizeof(*a) + sm_len;
    return data;
}

static void maybe_snapshot(struct sim *s, int id)
{
    struct sim_node *n = &s->nodes[id];
    if (!n->snap_every || n->since_snap < n->snap_every || n->app.applied == 0)
        return;
    struct ds_raft_status st;
    ds_raft_status(n->r, &st);
    if (n->app.applied <= st.snapshot_index)
        return;
    size_t len;
    uint8_t *data = app_snapshot(s, id, &len);
    struct ds_raft_snapshot_meta meta;
    int rv = ds_raft_snapshot_meta_at(n->r, n->app.applied, &meta);
    if (rv == 0) { /* the glue persists the snapshot first, then tells the core */
        st_set_snapshot(&n->st, &meta, data, len);
        pend_settle(s, id, meta.index, 0); /* written entries it covers */
    }
    if (rv == 0)
        rv = ds_raft_snapshot_taken(n->r, n->app.applied, data, len);
    if (rv)
        sim_fail(s, "node %d snapshot: %s", id, ds_raft_strerror(rv));
    free(data);
    n->since_snap = 0;
}

static void process_ready(struct sim *s, int id)
{
    struct sim_node *n = &s->nodes[id];
    if (!n->up || n->holding)
        return;
    for (int round = 0; round < 4 && ds_raft_has_ready(n->r); round++) {
        int rv = ds_raft_ready(n->r, &n->rd);
        if (rv) {
            sim_fail(s, "node %d ready: %s", id, ds_raft_strerror(rv));
            return;
        }
        n->holding = 1;
        for (size_t i = 0; n->rd.send_first && i < n->rd.n_msgs; i++)
            net_send(s, &n->rd.msgs[i]); /* before the disk write: a crash now loses it */
        if (s->now < n->stall_until && !(s->opts.async_persist && n->rd.send_first))
            return; /* disk stall: the batch waits (an async write waits in its sync) */
        finish_ready(s, id, &n->rd);
    }
    maybe_snapshot(s, id);
    check_node(s, id);
}

/* ================================================================ nodes */

static void node_start(struct sim *s, int id)
{
    struct sim_node *n = &s->nodes[id];
    struct ds_raft_options o = s->opts;
    o.id = (uint64_t)id;
    o.seed = s->seed * 31 + s->now;
    struct ds_raft_durable d = {0};
    d.hs = n->st.hs;
    d.snap = n->st.snap;
    d.snap_data = n->st.snap_data;
    d.snap_len = n->st.snap_len;
    d.entries = n->st.ents;
    d.n_entries = n->st.n;
    int rv = ds_raft_create(&o, &d, &n->r);
    if (rv) {
        sim_fail(s, "node %d create: %s", id, ds_raft_strerror(rv));
        return;
    }
    app_restore(s, id, n->st.snap_data, n->st.snap_len);
    n->app.applied = n->st.snap.index;
    n->up = 1;
    n->holding = 0;
    n->stall_until = 0;
    n->last_commit = 0;
    ds_raft_tick(n->r, s->now);
}

void sim_init(struct sim *s, uint64_t seed, int n_voters, int n_total,
              const struct ds_raft_options *o)
{
    memset(s, 0, sizeof(*s));
    s->seed = seed;
    ds_prng_seed(&s->prng, seed);
    s->n = n_total;
    s->opts = *o;
    s->delay_min = 1;
    s->delay_max = 5;
    s->now = 1;
    for (int id = 1; id <= n_total; id++) {
        struct sim_node *n = &s->nodes[id];
        if (id <= n_voters)
            for (int v = 1; v <= n_voters; v++)
                n->st.snap.conf.voters[n->st.snap.conf.n_voters++] = (uint64_t)v;
        n->st.snap_data = xrealloc(NULL, 1);
        node_start(s, id);
    }
}

void sim_set_sm(struct sim *s, const struct sim_sm_ops *ops, struct sim_sm *sm)
{
    s->sm_ops = ops;
    s->sm = sm;
    for (int id = 1; id <= s->n; id++)
        ops->restore(sm, s, id, NULL, 0);
}

void sim_crash(struct sim *s, int id)
{
    struct sim_node *n = &s->nodes[id];
    if (!n->up)
        return;
    ds_raft_destroy(n->r); /* a held batch was never persisted: it is lost */
    n->r = NULL;
    if (n->n_pend) { /* of what was written but not synced, a prefix may have reached the disk */
        size_t keep = (size_t)ds_prng_below(&s->prng, n->n_pend + 1);
        if (keep && keep < n->n_pend)
            s->torn_crashes++;
        pend_settle(s, id, keep ? n->pend[keep - 1].index : 0, 1);
        pend_settle(s, id, UINT64_MAX, 0);
    }
    n->sync_at = 0;
    n->up = 0;
    n->holding = 0;
}

void sim_restart(struct sim *s, int id)
{
    if (!s->nodes[id].up)
        node_start(s, id);
}

void sim_stall(struct sim *s, int id, uint64_t ms)
{
    s->nodes[id].stall_until = s->now + ms;
}

void sim_isolate(struct sim *s, int id)
{
    for (int j = 1; j <= SIM_MAX; j++)
        if (j != id)
            s->cut[id][j] = s->cut[j][id] = 1;
}

void sim_cut_pair(struct sim *s, int a, int b)
{
    s->cut[a][b] = s->cut[b][a] = 1;
}

void sim_heal(struct sim *s)
{
    memset(s->cut, 0, sizeof(s->cut));
}

void sim_free(struct sim *s)
{
    for (int id = 1; id <= s->n; id++) {
        struct sim_node *n = &s->nodes[id];
        sim_crash(s, id);
        for (size_t i = 0; i < n->st.n; i++)
            free(n->st.ents[i].data);
        free(n->st.ents);
        free(n->st.snap_data);
        free(n->pend);
    }
    while (s->n_heap)
        free(heap_pop(s).buf);
    free(s->heap);
    free(s->leader_of_term);
    free(s->committed);
    free(s->recs);
}

/* ================================================================ stepping */

static void deliver(struct sim *s, struct sim_msg m)
{
    struct sim_node *n = &s->nodes[m.to];
    if (!n->up) {
        free(m.buf);
        return;
    }
    if (n->holding) { /* stalled: the node takes no input until its batch is durable */
        m.at = n->stall_until > s->now ? n->stall_until : s->now + 1;
        m.seq = s->seq++;
        heap_push(s, m);
        return;
    }
    struct ds_raft_msg msg;
    int rv = ds_raft_msg_decode(m.buf, m.len, &msg);
    if (rv)
        sim_fail(s, "decode failed: %s", ds_raft_strerror(rv));
    else if (!s->cut[msg.from][m.to] && (rv = ds_raft_step(n->r, &msg)) != DS_RAFT_OK)
        sim_fail(s, "node %llu step type %d: %s", (unsigned long long)m.to, msg.type,
                 ds_raft_strerror(rv));
    ds_raft_msg_release(&msg);
    free(m.buf);
    process_ready(s, (int)m.to);
}

void sim_step(struct sim *s)
{
    s->now++;
    for (int id = 1; id <= s->n; id++) {
        struct sim_node *n = &s->nodes[id];
        if (n->up && n->holding && s->now >= n->stall_until)
            finish_ready(s, id, &n->rd);
        if (n->up && !n->holding && n->sync_at && s->now >= n->sync_at)
            sync_done(s, id);
    }
    for (int id = 1; id <= s->n; id++) {
        struct sim_node *n = &s->nodes[id];
        if (!n->up || n->holding)
            continue;
        ds_raft_tick(n->r, s->now); /* before delivery: steps see the current time */
        process_ready(s, id);
    }
    while (s->n_heap && s->heap[0].at <= s->now)
        deliver(s, heap_pop(s));
}

void sim_run(struct sim *s, uint64_t ms)
{
    for (uint64_t i = 0; i < ms && !s->failed; i++)
        sim_step(s);
}

int sim_leader(struct sim *s)
{
    int best = 0;
    uint64_t best_term = 0;
    for (int id = 1; id <= s->n; id++) {
        struct ds_raft_status st;
        if (!s->nodes[id].up)
            continue;
        ds_raft_status(s->nodes[id].r, &st);
        if (st.role == DS_RAFT_LEADER && st.term >= best_term) {
            best = id;
            best_term = st.term;
        }
    }
    return best;
}

int sim_propose(struct sim *s, int id, uint64_t value, uint64_t *index)
{
    struct sim_node *n = &s->nodes[id];
    if (!n->up || n->holding)
        return DS_RAFT_EBUSY;
    int rv = ds_raft_propose(n->r, &value, sizeof(value), index, NULL);
    process_ready(s, id);
    return rv;
}

int sim_read(struct sim *s, int id, uint64_t ctx)
{
    struct sim_node *n = &s->nodes[id];
    if (!n->up || n->holding)
        return DS_RAFT_EBUSY;
    if (ctx < 64)
        s->read_floor[ctx] = s->max_committed;
    int rv = ds_raft_read_index(n->r, ctx);
    process_ready(s, id);
    return rv;
}

/* A node must keep up if the leader's configuration lists it (without a leader: wait). */
static int listed(struct sim *s, int id)
{
    struct ds_raft_status st;
    int leader = sim_leader(s);
    if (!leader)
        return 1;
    ds_raft_status(s->nodes[leader].r, &st);
    for (uint32_t i = 0; i < st.conf.n_voters; i++)
        if (st.conf.voters[i] == (uint64_t)id)
            return 1;
    for (uint32_t i = 0; i < st.conf.n_learners; i++)
        if (st.conf.learners[i] == (uint64_t)id)
            return 1;
    return 0;
}

int sim_wait_applied(struct sim *s, uint64_t index, uint64_t max_ms)
{
    for (uint64_t t = 0; t < max_ms && !s->failed; t++) {
        int all = 1;
        for (int id = 1; id <= s->n && all; id++)
            if (s->nodes[id].up && s->nodes[id].app.applied < index && listed(s, id))
                all = 0;
        if (all)
            return 0;
        sim_step(s);
    }
    return -1;
}

void sim_status(struct sim *s, int id, struct ds_raft_status *st)
{
    ds_raft_status(s->nodes[id].r, st);
}

int sim_committed_value(struct sim *s, uint64_t index, uint64_t value)
{
    struct ds_raft_entry e = {0, index, DS_RAFT_ENTRY_NORMAL, sizeof(value), (uint8_t *)&value};
    return index <= s->max_committed && s->committed[index].hash == entry_hash(&e);
}
