/* Randomized model test of the lock table: random command sequences from 8 clients on 3 resources,
 * with random waits and non-decreasing time stamps, invariants checked after every command (no
 * waiter outlives its wait, none is granted at or after its deadline) and determinism checked by
 * replay.
 * Replay one seed with DS_SEED=<n> build/t/unit/lock/test_lock_model. */
#include "check.h"
#include "core/prng.h"
#include "lock/lock_helpers.h"

#define NCL 8
#define NRES 3
#define STEPS 400

struct model {
    uint64_t maxtok[NRES];       /* highest token ever granted on each resource */
    uint64_t held[NCL][NRES];    /* token each client held after the previous command */
    uint8_t cancelled[NCL][NRES]; /* cancelled or timed out and not asked again since */
    uint64_t wait_end[NCL][NRES]; /* wait deadline of each waiter after the previous command */
    uint64_t next_token;
};

struct totals {
    unsigned long deadlocks, grants_by_queue, replays, upgrades_queued, timeouts,
        timeout_grants;
};

static struct totals totals;

static int idx_of(const char *name)
{
    return name[1] - '0';
}

static struct ds_lock_cmd random_cmd(struct ds_prng *p, struct ds_lock_table *t)
{
    char cl[16], rs[16];
    snprintf(cl, sizeof(cl), "c%d", (int)ds_prng_below(p, NCL));
    snprintf(rs, sizeof(rs), "r%d", (int)ds_prng_below(p, NRES));
    now_ms += ds_prng_below(p, 300);
    uint64_t k = ds_prng_below(p, 100);
    struct ds_lock_cmd c;
    if (k < 45) {
        c = mk(DS_LOCK_CMD_ACQUIRE, rs, cl);
        c.mode = ds_prng_below(p, 2) ? EX : SH;
        uint64_t w = ds_prng_below(p, 10); /* no wait, short, long, the longest */
        c.wait_ms = w < 2   ? 0
                    : w < 6 ? (uint32_t)(1 + ds_prng_below(p, 1000))
                    : w < 9 ? (uint32_t)(1 + ds_prng_below(p, 8000))
                            : DS_LOCK_WAIT_MAX_MS;
        c.ttl_ms = (uint32_t)(DS_LOCK_TTL_MIN_MS + ds_prng_below(p, 5000));
    } else if (k < 65) {
        c = mk(DS_LOCK_CMD_RELEASE, rs, cl);
        c.token = ds_prng_below(p, 5) ? token_of(t, rs, cl) : ds_prng_below(p, 50);
    } else if (k < 70) {
        c = mk(DS_LOCK_CMD_RENEW, rs, cl);
        c.token = token_of(t, rs, cl);
        c.ttl_ms = (uint32_t)(DS_LOCK_TTL_MIN_MS + ds_prng_below(p, 5000));
    } else if (k < 85) {
        c = mk(DS_LOCK_CMD_CANCEL_WAIT, rs, cl);
    } else if (k < 97) {
        c = mk(DS_LOCK_CMD_EXPIRE, NULL, NULL);
    } else {
        c = mk(DS_LOCK_CMD_EXTEND_ALL, NULL, NULL);
        c.extra_ms = ds_prng_below(p, 2000);
    }
    int keyed = c.type == DS_LOCK_CMD_ACQUIRE || c.type == DS_LOCK_CMD_RELEASE;
    if (keyed && ds_prng_below(p, 3) == 0)
        snprintf(c.request_id, sizeof(c.request_id), "q%d", (int)ds_prng_below(p, 10));
    return c;
}

struct view {
    struct ds_lock_list h[NRES], w[NRES];
};

static void view_load(struct ds_lock_table *t, struct view *v)
{
    for (int r = 0; r < NRES; r++) {
        char rs[16];
        uint8_t mode;
        snprintf(rs, sizeof(rs), "r%d", r);
        memset(&v->h[r], 0, sizeof(v->h[r]));
        memset(&v->w[r], 0, sizeof(v->w[r]));
        ds_lock_query(t, rs, &mode, &v->h[r], &v->w[r]);
    }
}

static void view_free(struct view *v)
{
    for (int r = 0; r < NRES; r++) {
        ds_lock_list_free(&v->h[r]);
        ds_lock_list_free(&v->w[r]);
    }
}

static int compatible(uint8_t a, uint8_t b)
{
    return a == SH && b == SH;
}

/* Fills edge[a][b] = 1 when waiting client a is blocked by client b; returns 0 when some waiter
 * is blocked by nobody (a lost wakeup). */
static int wait_for_graph(const struct view *v, uint8_t edge[NCL][NCL])
{
    memset(edge, 0, NCL * NCL);
    for (int r = 0; r < NRES; r++) {
        for (size_t i = 0; i < v->w[r].n; i++) {
            const struct ds_lock_entry *w = &v->w[r].v[i];
            int a = idx_of(w->client_id), blocked = 0;
            for (size_t j = 0; j < v->h[r].n + i; j++) {
                const struct ds_lock_entry *o = j < v->h[r].n ? &v->h[r].v[j]
                                                                : &v->w[r].v[j - v->h[r].n];
                if (strcmp(o->client_id, w->client_id) != 0 && !compatible(o->mode, w->mode)) {
                    edge[a][idx_of(o->client_id)] = 1;
                    blocked = 1;
                }
            }
            if (!blocked)
                return 0;
        }
    }
    return 1;
}

static int reaches(uint8_t edge[NCL][NCL], int from, int to, uint8_t *seen)
{
    for (int b = 0; b < NCL; b++) {
        if (!edge[from][b] || seen[b])
            continue;
        if (b == to)
            return 1;
        seen[b] = 1;
        if (reaches(edge, b, to, seen))
            return 1;
    }
    return 0;
}

static int acyclic(uint8_t edge[NCL][NCL])
{
    for (int a = 0; a < NCL; a++) {
        uint8_t seen[NCL] = { 0 };
        if (reaches(edge, a, a, seen))
            return 0;
    }
    return 1;
}

static int holders_compatible(const struct ds_lock_list *h)
{
    for (size_t i = 0; i < h->n; i++)
        if (h->v[i].mode == EX && h->n != 1)
            return 0;
    return 1;
}

/* New holds must carry a token above every earlier one of their resource, and must not go to a
 * cancelled waiter.  Returns 0 on a violation. */
static int check_grants(struct ds_lock_table *t, struct model *m, const struct view *v)
{
    uint64_t now_held[NCL][NRES] = { { 0 } };
    for (int r = 0; r < NRES; r++) {
        if (!holders_compatible(&v->h[r]))
            return 0;
        for (size_t i = 0; i < v->h[r].n; i++) {
            const struct ds_lock_entry *h = &v->h[r].v[i];
            int c = idx_of(h->client_id);
            now_held[c][r] = h->token;
            if (h->token == m->held[c][r])
                continue;
            if (h->token <= m->maxtok[r] || m->cancelled[c][r])
                return 0;
            m->maxtok[r] = h->token;
        }
    }
    memcpy(m->held, now_held, sizeof(now_held));
    for (size_t i = 0; i < res.granted.n; i++) {
        const struct ds_lock_entry *g = &res.granted.v[i];
        if (m->held[idx_of(g->client_id)][idx_of(g->resource)] != g->token)
            return 0;
    }
    if (ds_lock_next_token(t) < m->next_token)
        return 0;
    m->next_token = ds_lock_next_token(t);
    return 1;
}

/* The wait purge: what it reports had ended by now_ms (and was a waiter with that deadline), no
 * grant of this command went to a waiter whose wait had ended, no waiter is left whose wait has
 * ended, and next_deadline is no later than any wait deadline.  Returns 0 on a violation. */
static int check_waits(struct ds_lock_table *t, struct model *m, const struct view *v,
                       uint64_t now)
{
    for (size_t i = 0; i < res.timed_out.n; i++) {
        const struct ds_lock_entry *e = &res.timed_out.v[i];
        int c = idx_of(e->client_id), r = idx_of(e->resource);
        if (e->deadline_ms > now || m->wait_end[c][r] != e->deadline_ms)
            return 0;
    }
    for (size_t i = 0; i < res.granted.n; i++) {
        const struct ds_lock_entry *g = &res.granted.v[i];
        if (m->wait_end[idx_of(g->client_id)][idx_of(g->resource)] <= now)
            return 0;
    }
    memset(m->wait_end, 0, sizeof(m->wait_end));
    uint64_t next = UINT64_MAX;
    int has_next = ds_lock_next_deadline(t, &next) == 0;
    for (int r = 0; r < NRES; r++)
        for (size_t i = 0; i < v->w[r].n; i++) {
            const struct ds_lock_entry *w = &v->w[r].v[i];
            if (w->deadline_ms <= now || !has_next || next > w->deadline_ms)
                return 0;
            m->wait_end[idx_of(w->client_id)][r] = w->deadline_ms;
        }
    return 1;
}

static void track_cancels(struct model *m, const struct ds_lock_cmd *c)
{
    for (size_t i = 0; i < res.timed_out.n; i++)
        m->cancelled[idx_of(res.timed_out.v[i].client_id)][idx_of(res.timed_out.v[i].resource)] = 1;
    if (c->type != DS_LOCK_CMD_ACQUIRE && c->type != DS_LOCK_CMD_CANCEL_WAIT)
        return;
    int cl = idx_of(c->client_id), r = idx_of(c->resource);
    if (c->type == DS_LOCK_CMD_CANCEL_WAIT && res.status == DS_LOCK_OK)
        m->cancelled[cl][r] = 1;
    if (c->type == DS_LOCK_CMD_ACQUIRE && !res.replayed &&
        (res.status == DS_LOCK_QUEUED || res.status == DS_LOCK_GRANTED))
        m->cancelled[cl][r] = 0;
}

/* Applies c through its wire form and checks every invariant; 0 on a violation (reported). */
static int step(struct ds_lock_table *t, struct model *m, const struct ds_lock_cmd *c,
                unsigned long seed, size_t i)
{
    uint8_t *b;
    size_t len;
    struct ds_lock_cmd d;
    if (ds_lock_cmd_encode(c, &b, &len) != 0 || ds_lock_cmd_decode(b, len, &d) != 0) {
        CHECKF(0, "DS_SEED=%lu step %zu: command does not survive its encoding", seed, i);
        return 0;
    }
    free(b);
    size_t blen = 0;
    uint8_t *before = d.type == DS_LOCK_CMD_ACQUIRE && !d.request_id[0] ? snap(t, &blen) : NULL;
    run(t, &d);
    if (res.status == DS_LOCK_DEADLOCK && before && res.timed_out.n == 0) {
        size_t alen;
        uint8_t *after = snap(t, &alen);
        CHECKF(alen == blen && memcmp(before, after, alen) == 0,
               "DS_SEED=%lu step %zu: a refused deadlock changed the table", seed, i);
        free(after);
    }
    free(before);
    track_cancels(m, &d);
    totals.deadlocks += res.status == DS_LOCK_DEADLOCK;
    totals.grants_by_queue += res.granted.n;
    totals.replays += (size_t)res.replayed;
    totals.upgrades_queued += res.status == DS_LOCK_QUEUED && token_of(t, d.resource, d.client_id);
    totals.timeouts += res.timed_out.n;
    totals.timeout_grants += res.timed_out.n && res.granted.n;
    struct view v;
    uint8_t edge[NCL][NCL];
    view_load(t, &v);
    int ok_timeouts = check_waits(t, m, &v, d.now_ms);
    CHECKF(ok_timeouts, "DS_SEED=%lu step %zu: a waiter outlived its wait or was granted after it",
           seed, i);
    int ok_wait = wait_for_graph(&v, edge);
    int ok = ok_timeouts && ok_wait && acyclic(edge) && check_grants(t, m, &v);
    CHECKF(ok_wait, "DS_SEED=%lu step %zu: a waiter is blocked by nobody (lost wakeup)", seed, i);
    CHECKF(!ok_wait || acyclic(edge), "DS_SEED=%lu step %zu: wait-for cycle admitted", seed, i);
    CHECKF(!ok || res.status != DS_LOCK_GRANTED || ds_lock_check(t, d.resource, res.token) ||
               res.replayed, "DS_SEED=%lu step %zu: granted token does not check", seed, i);
    CHECKF(ok, "DS_SEED=%lu step %zu: holders, tokens or cancels violated", seed, i);
    view_free(&v);
    return ok;
}

/* A digest of the last result: status and the clients and tokens of its lists. */
static uint64_t result_digest(void)
{
    uint64_t h = (uint64_t)res.status * 1000003u + res.token;
    const struct ds_lock_list *lists[] = { &res.granted, &res.timed_out, &res.expired };
    for (size_t l = 0; l < 3; l++)
        for (size_t i = 0; i < lists[l]->n; i++) {
            const struct ds_lock_entry *e = &lists[l]->v[i];
            h = h * 31 + e->token + e->deadline_ms + (uint64_t)idx_of(e->client_id) * 7 +
                (uint64_t)idx_of(e->resource) * 131 + l;
        }
    return h;
}

/* Replays cmds[from..n) on t and returns 1 when every result and the final state are the same as
 * the first run's. */
static int replay_matches(struct ds_lock_table *t, const struct ds_lock_cmd *cmds, size_t from,
                          size_t n, const struct ds_lock_table *want, const uint64_t *digests)
{
    int same = 1;
    for (size_t i = from; i < n; i++) {
        run(t, &cmds[i]);
        same &= result_digest() == digests[i];
    }
    return same && same_state(t, want);
}

static void run_seed(unsigned long seed, struct ds_lock_cmd *cmds, uint64_t *digests)
{
    struct ds_prng p;
    struct model m = { { 0 }, { { 0 } }, { { 0 } }, { { 0 } }, 1 };
    struct ds_lock_table *t = ds_lock_table_new(), *mid = NULL;
    ds_prng_seed(&p, seed);
    now_ms = 1000000;
    size_t n = 0;
    for (; n < STEPS; n++) {
        if (n == STEPS / 2)
            mid = clone_table(t);
        cmds[n] = random_cmd(&p, t);
        if (!step(t, &m, &cmds[n], seed, n))
            break;
        digests[n] = result_digest();
    }
    if (n == STEPS) {
        struct ds_lock_table *again = ds_lock_table_new();
        CHECKF(replay_matches(again, cmds, 0, n, t, digests),
               "DS_SEED=%lu: replaying the commands gives another state", seed);
        CHECKF(mid && replay_matches(mid, cmds, STEPS / 2, n, t, digests),
               "DS_SEED=%lu: replaying from the midway snapshot gives another state", seed);
        ds_lock_table_free(again);
    }
    ds_lock_table_free(mid);
    ds_lock_table_free(t);
}

static void random_histories_keep_every_invariant_and_replay_identically(void)
{
    static struct ds_lock_cmd cmds[STEPS];
    static uint64_t digests[STEPS];
    const char *one = getenv("DS_SEED");
    if (one && *one) {
        run_seed(strtoul(one, NULL, 10), cmds, digests);
        return;
    }
    unsigned long seeds = check_seeds(2000), base = check_seed_base();
    for (unsigned long s = base + 1; s <= base + seeds && !check_current_failed; s++)
        run_seed(s, cmds, digests);
    /* the histories reach the interesting paths */
    CHECK(seeds < 100 || (totals.deadlocks > 0 && totals.grants_by_queue > 0 &&
                          totals.replays > 0 && totals.upgrades_queued > 0 &&
                          totals.timeouts > 0 && totals.timeout_grants > 0));
    printf("# %lu seeds x %d steps: %lu deadlocks refused, %lu queued grants, %lu replays, "
           "%lu upgrades queued, %lu waits timed out, %lu purges that granted\n", seeds, STEPS,
           totals.deadlocks, totals.grants_by_queue, totals.replays, totals.upgrades_queued,
           totals.timeouts, totals.timeout_grants);
}

int main(void)
{
    RUN(random_histories_keep_every_invariant_and_replay_identically);
    ds_lock_result_free(&res);
    return check_summary();
}
