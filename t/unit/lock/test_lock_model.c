/* Randomized model test of the lock table: random command sequences from 8 clients on 3 resources,
 * with invariants checked after every command and determinism checked by replay.
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
    uint8_t cancelled[NCL][NRES]; /* cancelled and not asked again since */
    uint64_t next_token;
};

struct totals {
    unsigned long deadlocks, grants_by_queue, replays, upgrades_queued;
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
        c.wait = ds_prng_below(p, 5) != 0;
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

static void track_cancels(struct model *m, const struct ds_lock_cmd *c)
{
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
    if (res.status == DS_LOCK_DEADLOCK && before) {
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
    struct view v;
    uint8_t edge[NCL][NCL];
    view_load(t, &v);
    int ok_wait = wait_for_graph(&v, edge);
    int ok = ok_wait && acyclic(edge) && check_grants(t, m, &v);
    CHECKF(ok_wait, "DS_SEED=%lu step %zu: a waiter is blocked by nobody (lost wakeup)", seed, i);
    CHECKF(!ok_wait || acyclic(edge), "DS_SEED=%lu step %zu: wait-for cycle admitted", seed, i);
    CHECKF(!ok || res.status != DS_LOCK_GRANTED || ds_lock_check(t, d.resource, res.token) ||
               res.replayed, "DS_SEED=%lu step %zu: granted token does not check", seed, i);
    CHECKF(ok, "DS_SEED=%lu step %zu: holders, tokens or cancels violated", seed, i);
    view_free(&v);
    return ok;
}

/* Replays cmds[from..n) on t and returns 1 when it ends in the same state as `want`. */
static int replay_matches(struct ds_lock_table *t, const struct ds_lock_cmd *cmds, size_t from,
                          size_t n, const struct ds_lock_table *want, const int *statuses)
{
    int same = 1;
    for (size_t i = from; i < n; i++)
        same &= run(t, &cmds[i]) == statuses[i];
    return same && same_state(t, want);
}

static void run_seed(unsigned long seed, struct ds_lock_cmd *cmds, int *statuses)
{
    struct ds_prng p;
    struct model m = { { 0 }, { { 0 } }, { { 0 } }, 1 };
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
        statuses[n] = res.status;
    }
    if (n == STEPS) {
        struct ds_lock_table *again = ds_lock_table_new();
        CHECKF(replay_matches(again, cmds, 0, n, t, statuses),
               "DS_SEED=%lu: replaying the commands gives another state", seed);
        CHECKF(mid && replay_matches(mid, cmds, STEPS / 2, n, t, statuses),
               "DS_SEED=%lu: replaying from the midway snapshot gives another state", seed);
        ds_lock_table_free(again);
    }
    ds_lock_table_free(mid);
    ds_lock_table_free(t);
}

static void random_histories_keep_every_invariant_and_replay_identically(void)
{
    static struct ds_lock_cmd cmds[STEPS];
    static int statuses[STEPS];
    const char *one = getenv("DS_SEED");
    if (one && *one) {
        run_seed(strtoul(one, NULL, 10), cmds, statuses);
        return;
    }
    unsigned long seeds = check_seeds(2000);
    for (unsigned long s = 1; s <= seeds && !check_current_failed; s++)
        run_seed(s, cmds, statuses);
    /* the histories reach the interesting paths */
    CHECK(seeds < 100 || (totals.deadlocks > 0 && totals.grants_by_queue > 0 &&
                          totals.replays > 0 && totals.upgrades_queued > 0));
    printf("# %lu seeds x %d steps: %lu deadlocks refused, %lu queued grants, %lu replays, "
           "%lu upgrades queued\n", seeds, STEPS, totals.deadlocks, totals.grants_by_queue,
           totals.replays, totals.upgrades_queued);
}

int main(void)
{
    RUN(random_histories_keep_every_invariant_and_replay_identically);
    ds_lock_result_free(&res);
    return check_summary();
}
