/* The lock table (roles/lock/locktable.h) as the replicated state machine of randomised 3- and
 * 5-node simulated Raft clusters (sim.c) under message loss, duplication, reordering, partitions,
 * crashes, disk stalls and skewed leader clocks: lock safety, fencing and replica agreement are
 * checked on every node after every step, lease expiry once the cluster is healed. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "roles/lock/locktable.h"
#include "sim.h"

#define CHAOS_MS 4000
#define SETTLE_MS 4000  /* stated bound: every lease and wait has ended after healing */
#define NRES 4          /* resources "r0".."r3" */
#define NCLI 6          /* clients "c0".."c5" */
#define SKEW_MS 40      /* leaders' clocks differ from true time by at most this */
#define CLOCK_BASE 1000000u
#define CLIENT_PCT 15   /* chance per ms that a client sends a command */
#define TTL_MAX 1500u
#define WAIT_MAX 1200u

/* What the test knows about one node besides the simulator: its table and its leader duties. */
struct lock_node {
    struct ds_lock_table *t;
    int64_t skew;           /* clock offset in [-SKEW_MS, SKEW_MS] */
    int dirty;              /* applied or restored since the last check */
    uint64_t led_term;      /* term in which it proposed EXTEND_ALL as leader, 0 = none */
    uint64_t extend_index;  /* that EXTEND_ALL's index */
    int extended;           /* it applied that EXTEND_ALL: it may propose EXPIRE */
    uint64_t expire_index;  /* its EXPIRE in flight, 0 = none */
    uint8_t *snap;          /* ds_lock_snapshot of t after the last check */
    size_t snap_len;
};

/* What the first replica to apply a log index saw: every other replica must see the same. */
struct index_rec {
    uint64_t result_hash, next_token, snap_hash;
    int has_snap;
};

struct lock_stats {
    uint64_t grants, waiter_grants, queued, timeouts, expired, deadlocks, replays, refused;
    uint64_t restores, snap_compares, pair_compares, extends;
};

struct sim_sm {
    struct lock_node nodes[SIM_MAX + 1];
    struct index_rec *recs; /* by log index */
    size_t cap_recs;
    uint64_t first_max;            /* highest index any replica applied */
    uint64_t max_token[NRES];      /* highest token ever granted on each resource */
    uint64_t known[NCLI][NRES][2]; /* tokens clients learnt from results: latest, previous */
    struct ds_lock_cmd retry[NCLI]; /* each client's last command with a request_id */
    int has_retry[NCLI];
    uint64_t next_request;
    struct lock_stats st;
};

static const char *const res_names[NRES] = {"r0", "r1", "r2", "r3"};
static const char *const cli_names[NCLI] = {"c0", "c1", "c2", "c3", "c4", "c5"};

static int name_index(const char *name, char first, int n)
{
    if (name[0] != first || name[1] < '0' || name[1] >= '0' + n || name[2])
        return -1;
    return name[1] - '0';
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static uint64_t fnv_u64(uint64_t h, uint64_t v)
{
    return fnv(h, &v, sizeof(v));
}

static uint64_t node_clock(const struct sim *s, const struct sim_sm *w, int id)
{
    return (uint64_t)((int64_t)(s->now + CLOCK_BASE) + w->nodes[id].skew);
}

/* ================================================================ per-index agreement */

static struct index_rec *index_rec(struct sim_sm *w, uint64_t index)
{
    if (index >= w->cap_recs) {
        size_t cap = w->cap_recs ? w->cap_recs : 1024;
        while (cap <= index)
            cap *= 2;
        struct index_rec *v = realloc(w->recs, cap * sizeof(*v));
        if (!v) {
            fprintf(stderr, "out of memory\n");
            abort();
        }
        memset(v + w->cap_recs, 0, (cap - w->cap_recs) * sizeof(*v));
        w->recs = v;
        w->cap_recs = cap;
    }
    return &w->recs[index];
}

static uint64_t hash_list(uint64_t h, const struct ds_lock_list *l)
{
    h = fnv_u64(h, l->n);
    for (size_t i = 0; i < l->n; i++) {
        const struct ds_lock_entry *e = &l->v[i];
        h = fnv(h, e->resource, strlen(e->resource) + 1);
        h = fnv(h, e->client_id, strlen(e->client_id) + 1);
        h = fnv_u64(h, (uint64_t)e->mode << 8 | e->upgrade);
        h = fnv_u64(fnv_u64(fnv_u64(fnv_u64(h, e->ttl_ms), e->token), e->deadline_ms),
                    e->since_ms);
    }
    return h;
}

static uint64_t hash_result(const struct ds_lock_result *r)
{
    uint64_t h = fnv_u64(0xcbf29ce484222325ULL, (uint64_t)r->status << 8 | (uint64_t)r->replayed);
    h = fnv_u64(fnv_u64(fnv_u64(fnv_u64(h, r->mode), r->token), r->deadline_ms), r->position);
    h = hash_list(hash_list(h, &r->holders), &r->granted);
    return hash_list(hash_list(hash_list(h, &r->timed_out), &r->expired), &r->cycle);
}

static void learn_token(struct sim_sm *w, const char *client, const char *resource,
                        uint64_t token)
{
    int c = name_index(client, 'c', NCLI), r = name_index(resource, 'r', NRES);
    if (c < 0 || r < 0 || w->known[c][r][0] == token)
        return;
    w->known[c][r][1] = w->known[c][r][0];
    w->known[c][r][0] = token;
}

/* Fencing: a new grant's token is above every token granted on its resource by earlier entries
 * (log order), whichever leader stamped them; `before` is the maximum before this entry (one
 * entry may grant several, e.g. a downgrade gets its token before the waiters it lets in). */
static void new_grant(struct sim_sm *w, struct sim *s, uint64_t index, const uint64_t *before,
                      const char *resource, uint64_t token)
{
    int r = name_index(resource, 'r', NRES);
    if (r < 0) {
        sim_fail(s, "entry %" PRIu64 " granted unknown resource %s", index, resource);
        return;
    }
    if (token <= before[r])
        sim_fail(s, "fencing: entry %" PRIu64 " grants %s token %" PRIu64 " after %" PRIu64,
                 index, resource, token, before[r]);
    if (token > w->max_token[r])
        w->max_token[r] = token;
}

/* The first replica to apply `index`: check fencing and teach clients their tokens. */
static void first_apply(struct sim_sm *w, struct sim *s, uint64_t index,
                        const struct ds_lock_cmd *c, const struct ds_lock_result *r,
                        uint64_t token_before)
{
    uint64_t before[NRES];
    if (index != w->first_max + 1)
        sim_fail(s, "index %" PRIu64 " first applied after %" PRIu64, index, w->first_max);
    w->first_max = index;
    if (!c)
        return;
    memcpy(before, w->max_token, sizeof(before));
    for (size_t i = 0; i < r->granted.n; i++) {
        const struct ds_lock_entry *g = &r->granted.v[i];
        new_grant(w, s, index, before, g->resource, g->token);
        learn_token(w, g->client_id, g->resource, g->token);
    }
    if (r->status == DS_LOCK_GRANTED) {
        if (r->token >= token_before && !r->replayed)
            new_grant(w, s, index, before, c->resource, r->token);
        learn_token(w, c->client_id, c->resource, r->token);
    }
}

/* Every replica that applies `index` gets the result and token counter the first one got. */
static void agree_on_index(struct sim_sm *w, struct sim *s, int id, uint64_t index,
                           const struct ds_lock_cmd *c, const struct ds_lock_result *r,
                           uint64_t token_before)
{
    uint64_t hash = c ? hash_result(r) : 0, next = ds_lock_next_token(w->nodes[id].t);
    if (index > w->first_max) {
        first_apply(w, s, index, c, r, token_before);
        if (index > 1 && next < index_rec(w, index - 1)->next_token)
            sim_fail(s, "token counter went back at entry %" PRIu64, index);
        struct index_rec *rec = index_rec(w, index);
        rec->result_hash = hash;
        rec->next_token = next;
        return;
    }
    const struct index_rec *rec = index_rec(w, index);
    if (rec->result_hash != hash || rec->next_token != next)
        sim_fail(s, "node %d: entry %" PRIu64 " gave another result than on the first replica", id,
                 index);
}

/* ================================================================ applying entries */

/* The waiters of every resource before a command, to judge whom it grants. */
static void collect_waiters(const struct ds_lock_table *t, struct ds_lock_list *waiters)
{
    for (int r = 0; r < NRES; r++) {
        struct ds_lock_list holders = {0};
        uint8_t mode;
        ds_lock_query(t, res_names[r], &mode, &holders, waiters);
        ds_lock_list_free(&holders);
    }
}

/* A waiter is granted only by a command stamped before its wait deadline, and only a waiter is
 * in `granted`; the timed-out ones had reached their deadline. */
static void check_grants_of_waiters(struct sim_sm *w, struct sim *s, int id, uint64_t index,
                                    const struct ds_lock_cmd *c, const struct ds_lock_result *r,
                                    const struct ds_lock_list *before)
{
    for (size_t i = 0; i < r->granted.n; i++) {
        const struct ds_lock_entry *g = &r->granted.v[i];
        size_t k = 0;
        while (k < before->n && (strcmp(before->v[k].resource, g->resource) ||
                                 strcmp(before->v[k].client_id, g->client_id)))
            k++;
        if (k == before->n)
            sim_fail(s, "node %d entry %" PRIu64 " granted %s/%s that was not waiting", id, index,
                     g->resource, g->client_id);
        else if (c->now_ms >= before->v[k].deadline_ms)
            sim_fail(s, "node %d entry %" PRIu64 " (now %" PRIu64 ") granted %s/%s whose wait "
                        "ended at %" PRIu64, id, index, c->now_ms, g->resource, g->client_id,
                     before->v[k].deadline_ms);
    }
    for (size_t i = 0; i < r->timed_out.n; i++)
        if (r->timed_out.v[i].deadline_ms > c->now_ms)
            sim_fail(s, "node %d entry %" PRIu64 " timed out %s/%s before its deadline", id, index,
                     r->timed_out.v[i].resource, r->timed_out.v[i].client_id);
    w->st.waiter_grants += r->granted.n;
    w->st.timeouts += r->timed_out.n;
}

static void count_result(struct sim_sm *w, const struct ds_lock_cmd *c,
                         const struct ds_lock_result *r)
{
    w->st.grants += r->status == DS_LOCK_GRANTED;
    w->st.queued += r->status == DS_LOCK_QUEUED;
    w->st.deadlocks += r->status == DS_LOCK_DEADLOCK;
    w->st.refused += r->status == DS_LOCK_HELD;
    w->st.replays += (uint64_t)r->replayed;
    w->st.expired += r->expired.n;
    w->st.extends += c->type == DS_LOCK_CMD_EXTEND_ALL;
}

/* Leader bookkeeping of node id (as the lock role's glue does it on apply). */
static void note_own_entries(struct lock_node *n, const struct ds_raft_entry *e,
                             const struct ds_lock_cmd *c)
{
    if (c && c->type == DS_LOCK_CMD_EXTEND_ALL && e->index == n->extend_index &&
        e->term == n->led_term)
        n->extended = 1;
    if (n->expire_index && e->index >= n->expire_index)
        n->expire_index = 0;
}

static void apply_command(struct sim_sm *w, struct sim *s, int id, const struct ds_raft_entry *e)
{
    struct lock_node *n = &w->nodes[id];
    struct ds_lock_cmd c;
    struct ds_lock_result r = {0};
    struct ds_lock_list before = {0};
    if (ds_lock_cmd_decode(e->data, e->len, &c)) {
        sim_fail(s, "node %d cannot decode entry %" PRIu64, id, e->index);
        return;
    }
    collect_waiters(n->t, &before);
    uint64_t token_before = ds_lock_next_token(n->t);
    if (ds_lock_apply(n->t, &c, &r))
        sim_fail(s, "node %d entry %" PRIu64 ": out of memory", id, e->index);
    check_grants_of_waiters(w, s, id, e->index, &c, &r, &before);
    count_result(w, &c, &r);
    agree_on_index(w, s, id, e->index, &c, &r, token_before);
    note_own_entries(n, e, &c);
    ds_lock_list_free(&before);
    ds_lock_result_free(&r);
}

static void lock_apply(struct sim_sm *w, struct sim *s, int id, const struct ds_raft_entry *e)
{
    w->nodes[id].dirty = 1;
    if (e->type == DS_RAFT_ENTRY_NORMAL) {
        apply_command(w, s, id, e);
        return;
    }
    agree_on_index(w, s, id, e->index, NULL, NULL, 0);
    note_own_entries(&w->nodes[id], e, NULL);
}

static void lock_snapshot(struct sim_sm *w, struct sim *s, int id, uint8_t **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    if (ds_lock_snapshot(w->nodes[id].t, data, len))
        sim_fail(s, "node %d snapshot: out of memory", id);
}

/* A (re)started node or one installing a snapshot: a new table, and no leader duties. */
static void lock_restore(struct sim_sm *w, struct sim *s, int id, const uint8_t *data, size_t len)
{
    struct lock_node *n = &w->nodes[id];
    int rv = 0;
    ds_lock_table_free(n->t);
    n->t = NULL;
    if (len)
        rv = ds_lock_restore(data, len, &n->t);
    else if (!(n->t = ds_lock_table_new()))
        rv = DS_LOCK_ENOMEM;
    if (rv) {
        sim_fail(s, "node %d restore: %s", id, ds_lock_strerror(rv));
        n->t = ds_lock_table_new();
    }
    n->dirty = 1;
    n->led_term = n->extend_index = n->expire_index = 0;
    n->extended = 0;
    w->st.restores++;
}

static const struct sim_sm_ops lock_ops = {lock_apply, lock_snapshot, lock_restore};

/* ================================================================ checks after every step */

static void check_group(struct sim *s, int id, const struct ds_lock_table *t,
                        const struct ds_lock_list *l, size_t from, size_t to, uint64_t max_token)
{
    uint64_t next = ds_lock_next_token(t);
    for (size_t i = from; i < to; i++) {
        const struct ds_lock_entry *h = &l->v[i];
        if (to - from > 1 && h->mode != DS_LOCK_SHARED)
            sim_fail(s, "node %d: %s held by %zu clients, %s exclusively", id, h->resource,
                     to - from, h->client_id);
        if (h->token == 0 || h->token >= next || h->token > max_token)
            sim_fail(s, "node %d: %s token %" PRIu64 " of %s not below the counter %" PRIu64
                        " or never granted", id, h->resource, h->token, h->client_id, next);
        if (!ds_lock_check(t, h->resource, h->token))
            sim_fail(s, "node %d: ds_lock_check denies holder token %" PRIu64, id, h->token);
        for (size_t j = from; j < i; j++)
            if (l->v[j].token == h->token || !strcmp(l->v[j].client_id, h->client_id))
                sim_fail(s, "node %d: %s has two holds of one token or client", id, h->resource);
    }
}

/* ds_lock_check accepts no token clients learnt unless a current holder of r has it. */
static void check_stale_tokens(struct sim_sm *w, struct sim *s, int id, int r,
                               const struct ds_lock_list *l)
{
    for (int c = 0; c < NCLI; c++)
        for (int k = 0; k < 2; k++) {
            uint64_t token = w->known[c][r][k];
            size_t i = 0;
            while (i < l->n && (l->v[i].token != token || strcmp(l->v[i].resource, res_names[r])))
                i++;
            if (token && i == l->n && ds_lock_check(w->nodes[id].t, res_names[r], token))
                sim_fail(s, "node %d: ds_lock_check accepts %s token %" PRIu64 " nobody holds",
                         id, res_names[r], token);
        }
}

/* No two incompatible holders of a resource; holders' tokens are below the counter. */
static void check_holders(struct sim_sm *w, struct sim *s, int id)
{
    struct ds_lock_list l = {0};
    const struct ds_lock_table *t = w->nodes[id].t;
    if (ds_lock_list_held(t, &l))
        sim_fail(s, "node %d list_held: out of memory", id);
    for (size_t from = 0, to; from < l.n; from = to) {
        int r = name_index(l.v[from].resource, 'r', NRES);
        for (to = from + 1; to < l.n && !strcmp(l.v[to].resource, l.v[from].resource); to++)
            ;
        if (r < 0)
            sim_fail(s, "node %d holds unknown resource %s", id, l.v[from].resource);
        else
            check_group(s, id, t, &l, from, to, w->max_token[r]);
    }
    for (int r = 0; r < NRES; r++)
        check_stale_tokens(w, s, id, r, &l);
    ds_lock_list_free(&l);
}

/* State machine safety for the real table: one snapshot per applied prefix. */
static void check_snapshot(struct sim_sm *w, struct sim *s, int id)
{
    struct lock_node *n = &w->nodes[id];
    free(n->snap);
    lock_snapshot(w, s, id, &n->snap, &n->snap_len);
    uint64_t applied = s->nodes[id].app.applied,
             hash = fnv(0xcbf29ce484222325ULL, n->snap, n->snap_len);
    struct index_rec *rec = index_rec(w, applied);
    if (rec->has_snap && rec->snap_hash != hash)
        sim_fail(s, "node %d: the table after entry %" PRIu64 " differs from another replica's",
                 id, applied);
    rec->has_snap = 1;
    rec->snap_hash = hash;
    w->st.snap_compares++;
}

static void check_pairs(struct sim_sm *w, struct sim *s)
{
    for (int a = 1; a <= s->n; a++)
        for (int b = a + 1; b <= s->n; b++) {
            const struct lock_node *x = &w->nodes[a], *y = &w->nodes[b];
            if (!s->nodes[a].up || !s->nodes[b].up ||
                s->nodes[a].app.applied != s->nodes[b].app.applied)
                continue;
            w->st.pair_compares++;
            if (x->snap_len != y->snap_len || memcmp(x->snap, y->snap, x->snap_len))
                sim_fail(s, "nodes %d and %d applied %" PRIu64 " entries but their tables differ",
                         a, b, s->nodes[a].app.applied);
        }
}

static void check_all(struct sim_sm *w, struct sim *s)
{
    int changed = 0;
    for (int id = 1; id <= s->n; id++) {
        if (!s->nodes[id].up || !w->nodes[id].dirty)
            continue;
        w->nodes[id].dirty = 0;
        changed = 1;
        check_holders(w, s, id);
        check_snapshot(w, s, id);
    }
    if (changed)
        check_pairs(w, s);
}

/* ================================================================ leaders and clients */

/* Propose c at node id, stamped with id's clock; 0 if it is not (or cannot act as) leader. */
static uint64_t propose_at(struct sim_sm *w, struct sim *s, int id, struct ds_lock_cmd *c)
{
    uint8_t *buf;
    size_t len;
    uint64_t index = 0;
    if (id < 1 || id > s->n || !s->nodes[id].up || s->nodes[id].holding)
        return 0;
    c->now_ms = node_clock(s, w, id);
    if (ds_lock_cmd_encode(c, &buf, &len)) {
        sim_fail(s, "cannot encode a command of type %d", c->type);
        return 0;
    }
    if (ds_raft_propose(s->nodes[id].r, buf, (uint32_t)len, &index, NULL) != DS_RAFT_OK)
        index = 0;
    free(buf);
    return index;
}

/* As the lock role's glue: a new leader extends inherited leases by one election timeout + the
 * skew bound, and once that is applied proposes EXPIRE whenever a deadline has passed. */
static void leader_duties(struct sim_sm *w, struct sim *s, int id)
{
    struct lock_node *n = &w->nodes[id];
    struct ds_raft_status st;
    struct ds_lock_cmd c;
    uint64_t deadline;
    if (!s->nodes[id].up || s->nodes[id].holding)
        return;
    sim_status(s, id, &st);
    if (st.role != DS_RAFT_LEADER) {
        n->led_term = 0;
        return;
    }
    if (n->led_term != st.term) {
        ds_lock_cmd_init(&c, DS_LOCK_CMD_EXTEND_ALL);
        c.extra_ms = s->opts.election_max_ms + SKEW_MS;
        n->extend_index = propose_at(w, s, id, &c);
        n->led_term = n->extend_index ? st.term : 0;
        n->extended = 0;
        n->expire_index = 0;
        return;
    }
    if (!n->extended || n->expire_index || ds_lock_next_deadline(n->t, &deadline) ||
        deadline > node_clock(s, w, id))
        return;
    ds_lock_cmd_init(&c, DS_LOCK_CMD_EXPIRE);
    n->expire_index = propose_at(w, s, id, &c);
}

static uint64_t pick_token(struct sim *s, struct sim_sm *w, int c, int r)
{
    uint64_t p = ds_prng_below(&s->prng, 10);
    if (p < 7)
        return w->known[c][r][0];
    if (p < 9)
        return w->known[c][r][1];
    return 1 + ds_prng_below(&s->prng, w->max_token[r] + 2);
}

static void fresh_request_id(struct sim_sm *w, struct ds_lock_cmd *c, int client)
{
    snprintf(c->request_id, sizeof(c->request_id), "q%" PRIu64, w->next_request++);
    w->retry[client] = *c;
    w->has_retry[client] = 1;
}

static void random_acquire(struct sim *s, struct ds_lock_cmd *c)
{
    ds_lock_cmd_init(c, DS_LOCK_CMD_ACQUIRE);
    c->mode = ds_prng_below(&s->prng, 2) ? DS_LOCK_EXCLUSIVE : DS_LOCK_SHARED;
    c->ttl_ms = DS_LOCK_TTL_MIN_MS + (uint32_t)ds_prng_below(&s->prng, TTL_MAX - 99);
    if (ds_prng_below(&s->prng, 10) >= 4)
        c->wait_ms = 1 + (uint32_t)ds_prng_below(&s->prng, WAIT_MAX);
}

/* A random client command: acquire (with or without waiting), release or renew a token the
 * client learnt (or a stale or made-up one), cancel a wait, or retry its last request_id. */
static void random_command(struct sim *s, struct sim_sm *w, struct ds_lock_cmd *c)
{
    int cl = (int)ds_prng_below(&s->prng, NCLI), r = (int)ds_prng_below(&s->prng, NRES);
    uint64_t op = ds_prng_below(&s->prng, 100);
    if (op < 5 && w->has_retry[cl]) {
        *c = w->retry[cl];
        return;
    }
    if (op < 50)
        random_acquire(s, c);
    else if (op < 70)
        ds_lock_cmd_init(c, DS_LOCK_CMD_RELEASE);
    else if (op < 88)
        ds_lock_cmd_init(c, DS_LOCK_CMD_RENEW);
    else
        ds_lock_cmd_init(c, DS_LOCK_CMD_CANCEL_WAIT);
    if (c->type == DS_LOCK_CMD_RELEASE || c->type == DS_LOCK_CMD_RENEW)
        c->token = pick_token(s, w, cl, r);
    if (c->type == DS_LOCK_CMD_RENEW)
        c->ttl_ms = DS_LOCK_TTL_MIN_MS + (uint32_t)ds_prng_below(&s->prng, TTL_MAX - 99);
    snprintf(c->resource, sizeof(c->resource), "%s", res_names[r]);
    snprintf(c->client_id, sizeof(c->client_id), "%s", cli_names[cl]);
    if ((c->type == DS_LOCK_CMD_ACQUIRE || c->type == DS_LOCK_CMD_RELEASE) &&
        ds_prng_below(&s->prng, 10) < 3)
        fresh_request_id(w, c, cl);
}

/* The client sends to a random node; a follower forwards to the leader it knows. */
static void client_sends(struct sim *s, struct sim_sm *w)
{
    struct ds_lock_cmd c;
    struct ds_raft_status st;
    random_command(s, w, &c);
    int id = 1 + (int)ds_prng_below(&s->prng, (uint64_t)s->n);
    if (!s->nodes[id].up)
        return;
    sim_status(s, id, &st);
    if (st.role != DS_RAFT_LEADER)
        id = (int)st.leader;
    propose_at(w, s, id, &c);
}

/* ================================================================ faults */

struct chaos {
    uint64_t restart_at[SIM_MAX + 1];
    uint64_t next_fault;
};

static int random_node(struct sim *s)
{
    return 1 + (int)ds_prng_below(&s->prng, (uint64_t)s->n);
}

static void random_partition(struct sim *s)
{
    int side[SIM_MAX + 1];
    for (int i = 1; i <= s->n; i++)
        side[i] = (int)ds_prng_below(&s->prng, 2);
    sim_heal(s);
    for (int i = 1; i <= s->n; i++)
        for (int j = 1; j <= s->n; j++)
            if (side[i] != side[j])
                s->cut[i][j] = 1;
}

static void crash_for_a_while(struct sim *s, struct chaos *c, int id, uint64_t max_ms)
{
    sim_crash(s, id);
    c->restart_at[id] = s->now + 100 + ds_prng_below(&s->prng, max_ms);
}

static void network_weather(struct sim *s, int bad)
{
    s->drop_pct = bad ? (unsigned)ds_prng_below(&s->prng, 30) : 0;
    s->dup_pct = bad ? (unsigned)ds_prng_below(&s->prng, 20) : 0;
    s->delay_max = bad ? 1 + (unsigned)ds_prng_below(&s->prng, 40) : 5;
}

static void fault(struct sim *s, struct sim_sm *w, struct chaos *c)
{
    int id = random_node(s), leader = sim_leader(s);
    switch (ds_prng_below(&s->prng, 10)) {
    case 0:
        sim_heal(s);
        break;
    case 1:
        random_partition(s);
        break;
    case 2:
        if (leader)
            sim_isolate(s, leader);
        break;
    case 3:
        crash_for_a_while(s, c, id, 1500);
        break;
    case 4:
        sim_stall(s, id, 20 + ds_prng_below(&s->prng, 400));
        break;
    case 5:
        network_weather(s, 1);
        break;
    case 6:
        network_weather(s, 0);
        break;
    case 7:
        if (leader && !s->nodes[leader].holding)
            ds_raft_transfer_leadership(s->nodes[leader].r, (uint64_t)id);
        break;
    case 8: /* a clock steps, within the skew bound */
        w->nodes[id].skew = (int64_t)ds_prng_below(&s->prng, 2 * SKEW_MS + 1) - SKEW_MS;
        break;
    default:
        crash_for_a_while(s, c, leader ? leader : id, 800);
        break;
    }
}

static void lock_step(struct sim *s, struct sim_sm *w, struct chaos *c, int clients)
{
    for (int id = 1; id <= s->n; id++)
        if (!s->nodes[id].up && s->now >= c->restart_at[id])
            sim_restart(s, id);
    if (clients && s->now >= c->next_fault) {
        fault(s, w, c);
        c->next_fault = s->now + 50 + ds_prng_below(&s->prng, 400);
    }
    for (int id = 1; id <= s->n; id++)
        leader_duties(w, s, id);
    if (clients && ds_prng_below(&s->prng, 100) < CLIENT_PCT)
        client_sends(s, w);
    sim_step(s);
    check_all(w, s);
}

/* Heal everything but leave a random minority down: a connected majority must expire every
 * lease and end every wait. */
static void heal_majority(struct sim *s, struct chaos *c)
{
    sim_heal(s);
    network_weather(s, 0);
    for (int id = 1; id <= s->n; id++) {
        sim_restart(s, id);
        s->nodes[id].stall_until = s->now;
        c->restart_at[id] = UINT64_MAX;
    }
    uint64_t down = ds_prng_below(&s->prng, (uint64_t)(s->n - 1) / 2 + 1);
    for (uint64_t k = 0; k < down; k++)
        sim_crash(s, random_node(s));
}

/* Liveness of expiry: after SETTLE_MS without clients every up node applied the same prefix and
 * nobody holds or waits for anything. */
static void check_settled(struct sim *s, struct sim_sm *w)
{
    uint64_t applied = 0, deadline;
    for (int id = 1; id <= s->n && !s->failed; id++) {
        if (!s->nodes[id].up)
            continue;
        if (applied && s->nodes[id].app.applied != applied)
            sim_fail(s, "not converged: node %d applied %" PRIu64 ", another %" PRIu64, id,
                     s->nodes[id].app.applied, applied);
        applied = s->nodes[id].app.applied;
        if (ds_lock_next_deadline(w->nodes[id].t, &deadline) == 0)
            sim_fail(s, "node %d still holds or waits %d ms after healing (deadline %" PRIu64
                        ", clock %" PRIu64 ")", id, SETTLE_MS, deadline, node_clock(s, w, id));
    }
}

/* ================================================================ seeds */

static struct lock_stats totals;

static void free_world(struct sim_sm *w)
{
    for (int id = 0; id <= SIM_MAX; id++) {
        ds_lock_table_free(w->nodes[id].t);
        free(w->nodes[id].snap);
    }
    free(w->recs);
    free(w);
}

static void add_totals(const struct lock_stats *a)
{
    totals.waiter_grants += a->waiter_grants;
    totals.timeouts += a->timeouts;
    totals.expired += a->expired;
    totals.deadlocks += a->deadlocks;
    totals.replays += a->replays;
    totals.pair_compares += a->pair_compares;
}

static void report(const struct sim *s, const struct sim_sm *w, uint64_t seed, int nodes)
{
    const struct lock_stats *t = &w->st;
    if (getenv("DS_VERBOSE"))
        printf("seed %" PRIu64 ": %d nodes, %" PRIu64 " committed, %lu installs; summed over "
               "replicas: %" PRIu64 " granted (%" PRIu64 " waiters), %" PRIu64 " queued, %"
               PRIu64 " refused, %" PRIu64 " wait timeouts, %" PRIu64 " expired, %" PRIu64
               " deadlocks, %" PRIu64 " replays, %" PRIu64 " extends, %" PRIu64 " restores, %"
               PRIu64 " snapshot checks, %" PRIu64 " pair compares\n",
               seed, nodes, s->max_committed, s->installs, t->grants, t->waiter_grants,
               t->queued, t->refused, t->timeouts, t->expired, t->deadlocks, t->replays,
               t->extends, t->restores, t->snap_compares, t->pair_compares);
    if (s->failed)
        fprintf(stderr, "seed %" PRIu64 " (%d nodes) failed at %" PRIu64 " ms: %s\n"
                        "  replay: DS_SEED=%" PRIu64 " build/t/unit/raft/test_raft_lock_sim\n",
                seed, nodes, s->now, s->why, seed);
}

static int run_seed(uint64_t seed)
{
    struct sim s;
    struct chaos c = {{0}, 0};
    struct ds_raft_options o;
    struct sim_sm *w = calloc(1, sizeof(*w));
    int nodes = seed % 2 ? 5 : 3;
    if (!w)
        return 1;
    ds_raft_options_default(&o);
    o.max_append_entries = 8;
    o.max_inflight = 4;
    o.snapshot_trailing = (uint32_t)(seed % 7);
    o.async_persist = (seed / 2) % 2; /* half the seeds sync entries after advance */
    sim_init(&s, seed, nodes, nodes, &o);
    sim_set_sm(&s, &lock_ops, w);
    for (int id = 1; id <= nodes; id++) {
        s.nodes[id].snap_every = 5 + ds_prng_below(&s.prng, 50);
        w->nodes[id].skew = (int64_t)ds_prng_below(&s.prng, 2 * SKEW_MS + 1) - SKEW_MS;
    }
    while (s.now < CHAOS_MS && !s.failed)
        lock_step(&s, w, &c, 1);
    heal_majority(&s, &c);
    for (uint64_t start = s.now; s.now - start < SETTLE_MS && !s.failed;)
        lock_step(&s, w, &c, 0);
    check_settled(&s, w);
    int failed = s.failed;
    report(&s, w, seed, nodes);
    add_totals(&w->st);
    sim_free(&s);
    free_world(w);
    return failed;
}

static void random_clusters_keep_locks_safe_fenced_identical_and_expiring(void)
{
    const char *one = getenv("DS_SEED");
    if (one && *one) {
        CHECK(run_seed(strtoull(one, NULL, 10)) == 0);
        return;
    }
    unsigned long n = check_seeds(1000), failures = 0, base = check_seed_base();
    for (unsigned long seed = base + 1; seed <= base + n && failures < 5; seed++)
        failures += (unsigned long)run_seed(seed);
    CHECKF(failures == 0, "%lu seeds failed", failures);
    if (n < 50)
        return;
    /* the workload reaches every path the invariants are about */
    CHECK(totals.waiter_grants > 0 && totals.timeouts > 0 && totals.expired > 0);
    CHECK(totals.deadlocks > 0 && totals.replays > 0 && totals.pair_compares > 0);
}

int main(void)
{
    RUN(random_clusters_keep_locks_safe_fenced_identical_and_expiring);
    return check_summary();
}
