/* Deterministic simulation of a SWIM cluster (3..20 members) on a virtual clock with message loss,
 * delay, one-way link cuts and partitions.  Each test runs many seeds; a failure prints the seed:
 * replay it with DS_SEED=<seed> build/t/unit/gossip/test_swim_sim (DS_SEEDS sets the count). */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "core/prng.h"
#include "gossip/swim.h"

#define MAXN 20
#define STEP_MS 5
#define PERIOD_MS 1000

struct sim_node {
    struct ds_swim *s;
    char id[16], url[32];
    bool up;
    uint32_t boot;
    uint64_t events[MAXN + 1][DS_SWIM_EV_META + 1]; /* [about member][type] */
};

struct sim_msg {
    uint64_t at;
    int to;
    uint8_t *buf;
    size_t len;
};

struct sim {
    struct sim_node nodes[MAXN + 1]; /* [MAXN] is a stranger from another cluster */
    int n;
    uint64_t seed, now;
    struct ds_prng rng;
    struct sim_msg *q;
    size_t nq, capq;
    double loss;
    int group[MAXN + 1];             /* partition: messages cross no group boundary */
    bool cut[MAXN + 1][MAXN + 1];    /* one-way link from -> to drops everything */
};

static uint64_t seed_now;
static const char *test_now;

static void report_seed(void)
{
    fprintf(stderr, "  failing seed %" PRIu64 " in %s: replay with DS_SEED=%" PRIu64
            " build/t/unit/gossip/test_swim_sim\n", seed_now, test_now, seed_now);
}

/* ---- the simulated world -------------------------------------------------------------------- */

static void node_start(struct sim *w, int i, const char *cluster)
{
    struct sim_node *nd = &w->nodes[i];
    struct ds_swim_config cfg;
    struct ds_swim_meta meta = {"capacity", "1024"};
    ds_swim_config_default(&cfg);
    struct ds_swim_self me = {nd->id, nd->url, "cache", cluster, nd->boot, 1, &meta};
    int rv = ds_swim_create(&me, &cfg, w->seed * 131 + (uint64_t)i * 7 + nd->boot, w->now, &nd->s);
    if (rv != DS_SWIM_OK)
        abort();
    const char *seeds[2] = {w->nodes[0].url, w->nodes[1].url};
    ds_swim_join(nd->s, seeds, 2, w->now);
    nd->up = true;
}

static void sim_init(struct sim *w, int n, uint64_t seed, double loss)
{
    memset(w, 0, sizeof *w);
    w->n = n;
    w->seed = seed;
    w->loss = loss;
    ds_prng_seed(&w->rng, seed);
    for (int i = 0; i <= MAXN; i++) {
        snprintf(w->nodes[i].id, sizeof w->nodes[i].id, "n%d", i);
        snprintf(w->nodes[i].url, sizeof w->nodes[i].url, "https://n%d:9443", i);
        w->nodes[i].boot = 1;
    }
    for (int i = 0; i < n; i++)
        node_start(w, i, "prod");
}

static void sim_free(struct sim *w)
{
    for (int i = 0; i <= MAXN; i++)
        ds_swim_destroy(w->nodes[i].s);
    for (size_t k = 0; k < w->nq; k++)
        free(w->q[k].buf);
    free(w->q);
}

static int node_by_url(const struct sim *w, const char *url)
{
    for (int i = 0; i <= MAXN; i++)
        if (strcmp(w->nodes[i].url, url) == 0)
            return i;
    return -1;
}

static void enqueue(struct sim *w, int from, const struct ds_swim_out *o)
{
    int to = node_by_url(w, o->to_url);
    bool lost = ds_prng_below(&w->rng, 1000000) < (uint64_t)(w->loss * 1000000);
    if (to < 0 || lost || w->group[from] != w->group[to] || w->cut[from][to]) {
        free(o->buf);
        return;
    }
    if (w->nq == w->capq) {
        w->capq = w->capq ? 2 * w->capq : 256;
        w->q = realloc(w->q, w->capq * sizeof *w->q);
    }
    uint64_t delay = 1 + ds_prng_below(&w->rng, 40); /* 1..40 ms, so messages reorder */
    w->q[w->nq++] = (struct sim_msg){w->now + delay, to, o->buf, o->len};
}

static void drain(struct sim *w, int i)
{
    struct sim_node *nd = &w->nodes[i];
    struct ds_swim_out o;
    struct ds_swim_event ev;
    while (ds_swim_pop_out(nd->s, &o) == DS_SWIM_OK)
        enqueue(w, i, &o);
    while (ds_swim_pop_event(nd->s, &ev) == DS_SWIM_OK)
        nd->events[atoi(ev.id + 1)][ev.type]++;
}

static void deliver_due(struct sim *w)
{
    size_t keep = 0;
    for (size_t k = 0; k < w->nq; k++) {
        struct sim_msg m = w->q[k];
        if (m.at > w->now) {
            w->q[keep++] = m;
            continue;
        }
        if (w->nodes[m.to].up)
            ds_swim_recv(w->nodes[m.to].s, m.buf, m.len, w->now);
        free(m.buf);
    }
    w->nq = keep;
}

static void sim_step(struct sim *w)
{
    w->now += STEP_MS;
    deliver_due(w);
    for (int i = 0; i <= MAXN; i++) {
        if (!w->nodes[i].up)
            continue;
        ds_swim_tick(w->nodes[i].s, w->now);
        drain(w, i);
    }
}

static void sim_run(struct sim *w, uint64_t ms)
{
    for (uint64_t end = w->now + ms; w->now < end;)
        sim_step(w);
}

/* Crash: the process vanishes, undelivered outbox and all. */
static void sim_crash(struct sim *w, int i)
{
    ds_swim_destroy(w->nodes[i].s);
    w->nodes[i].s = NULL;
    w->nodes[i].up = false;
}

static void sim_restart(struct sim *w, int i)
{
    w->nodes[i].boot++;
    node_start(w, i, "prod");
}

/* State of `target` in the view of `obs`, or -1 when unknown. */
static int view(const struct sim *w, int obs, int target)
{
    const struct ds_swim_node *n = ds_swim_find(w->nodes[obs].s, w->nodes[target].id);
    return n ? n->state : -1;
}

/* Every up member sees `target` in state `st`. */
static bool all_see(const struct sim *w, int target, int st)
{
    for (int i = 0; i < w->n; i++)
        if (w->nodes[i].up && i != target && view(w, i, target) != st)
            return false;
    return true;
}

/* Every up member sees every other up member alive. */
static bool converged(const struct sim *w)
{
    for (int t = 0; t < w->n; t++)
        if (w->nodes[t].up && !all_see(w, t, DS_SWIM_ALIVE))
            return false;
    return true;
}

/* No member holds any other as dead. */
static bool nobody_dead(const struct sim *w)
{
    for (int t = 0; t < w->n; t++)
        for (int i = 0; i < w->n; i++)
            if (i != t && view(w, i, t) == DS_SWIM_DEAD)
                return false;
    return true;
}

/* Runs until `done` holds or `limit_ms` passes; returns the time taken or UINT64_MAX. */
static uint64_t run_until(struct sim *w, bool (*done)(const struct sim *, int), int arg,
                          uint64_t limit_ms)
{
    uint64_t start = w->now;
    while (w->now - start <= limit_ms) {
        if (done(w, arg))
            return w->now - start;
        sim_step(w);
    }
    return UINT64_MAX;
}

static bool is_converged(const struct sim *w, int unused)
{
    (void)unused;
    return converged(w);
}

static bool all_see_dead(const struct sim *w, int t)
{
    return all_see(w, t, DS_SWIM_DEAD);
}

static bool all_see_left(const struct sim *w, int t)
{
    return all_see(w, t, DS_SWIM_LEFT);
}

static void sum_counters(const struct sim *w, struct ds_swim_counters *sum)
{
    memset(sum, 0, sizeof *sum);
    for (int i = 0; i < w->n; i++) {
        struct ds_swim_counters c;
        if (!w->nodes[i].up)
            continue;
        ds_swim_get_counters(w->nodes[i].s, &c);
        sum->probes += c.probes;
        sum->indirect_probes += c.indirect_probes;
        sum->suspicions += c.suspicions;
        sum->refutations += c.refutations;
        sum->deaths += c.deaths;
        sum->false_positive_deaths += c.false_positive_deaths;
        sum->rejected_foreign += c.rejected_foreign;
        sum->dropped += c.dropped;
    }
}

/* Runs `body` for every seed (or only $DS_SEED); prints the failing seed. */
static void for_seeds(const char *name, unsigned long dflt, void (*body)(uint64_t))
{
    const char *one = getenv("DS_SEED");
    unsigned long n = one && *one ? 1 : check_seeds(dflt);
    test_now = name;
    for (unsigned long k = 0; k < n; k++) {
        int before = check_current_failed;
        check_current_failed = 0;
        seed_now = one && *one ? strtoull(one, NULL, 10) : 1000 + check_seed_base() + k;
        body(seed_now);
        if (check_current_failed) {
            report_seed();
            return;
        }
        check_current_failed = before;
    }
}

static int size_for(uint64_t seed)
{
    return 3 + (int)(seed % (MAXN - 2)); /* 3..20 members */
}

/* Crash detection bound, in periods: every live member probes the crashed one within two shuffled
 * rounds (2n), the suspicion times out within beta*alpha*max(1,log10 n) periods, and the death
 * reaches everybody by gossip or, at the latest, by the next push-pull (sync_every = 20). */
static uint64_t crash_bound_ms(int n)
{
    double log10n = n >= 10 ? 1.0 + (n >= 20 ? 0.302 : 0.0) : 1.0;
    return (uint64_t)((2.0 * n + 6 * 4 * log10n + 20 + 2) * PERIOD_MS);
}

/* ---- tests --------------------------------------------------------------------------------- */

static uint64_t worst_join, worst_crash[MAXN + 1];

static void join_body(uint64_t seed)
{
    struct sim w;
    int n = size_for(seed);
    sim_init(&w, n, seed, 0.05);
    uint64_t t = run_until(&w, is_converged, 0, 30000);
    CHECKF(t != UINT64_MAX, "%d members did not converge in 30 s", n);
    worst_join = t != UINT64_MAX && t > worst_join ? t : worst_join;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            CHECK(i == j || w.nodes[i].events[j][DS_SWIM_EV_UP] >= 1);
    sim_free(&w);
}

static void members_join_through_seeds_and_agree(void)
{
    worst_join = 0;
    for_seeds(__func__, 200, join_body);
    printf("# join: 3..20 members, 5%% loss: all agree within %.1f s (worst seed)\n",
           worst_join / 1000.0);
}

static void first_node_waits_for_the_others_body(uint64_t seed)
{
    struct sim w;
    sim_init(&w, 1, seed, 0.0);
    w.n = 4;
    sim_run(&w, 20000); /* alone for 20 s, retrying the other seed */
    struct ds_swim_counters c;
    ds_swim_get_counters(w.nodes[0].s, &c);
    CHECK(ds_swim_member_count(w.nodes[0].s) == 1 && c.deaths == 0);
    for (int i = 1; i < 4; i++)
        node_start(&w, i, "prod");
    CHECK(run_until(&w, is_converged, 0, 10000) != UINT64_MAX);
    sim_free(&w);
}

static void first_node_waits_for_the_others(void)
{
    for_seeds(__func__, 10, first_node_waits_for_the_others_body);
}

static void crash_body(uint64_t seed)
{
    struct sim w;
    int n = size_for(seed);
    sim_init(&w, n, seed, 0.05);
    REQUIRE(run_until(&w, is_converged, 0, 30000) != UINT64_MAX);
    sim_run(&w, ds_prng_below(&w.rng, 5000));
    int victim = (int)ds_prng_below(&w.rng, (uint64_t)n);
    sim_crash(&w, victim);
    uint64_t t = run_until(&w, all_see_dead, victim, crash_bound_ms(n));
    CHECKF(t != UINT64_MAX, "n=%d: crash of n%d not known to all within %.0f s", n, victim,
           crash_bound_ms(n) / 1000.0);
    if (t != UINT64_MAX && t > worst_crash[n])
        worst_crash[n] = t;
    for (int i = 0; i < n; i++)
        if (i != victim)
            CHECK(w.nodes[i].events[victim][DS_SWIM_EV_DOWN] >= 1);
    sim_free(&w);
}

static void every_live_member_learns_of_a_crash_within_bound(void)
{
    memset(worst_crash, 0, sizeof worst_crash);
    for_seeds(__func__, 300, crash_body);
    for (int n = 3; n <= MAXN; n++)
        if (worst_crash[n])
            printf("# crash detection n=%-2d 5%% loss: worst %.1f s, bound %.0f s\n", n,
                   worst_crash[n] / 1000.0, crash_bound_ms(n) / 1000.0);
}

static uint64_t slow_suspicions, slow_refutations;

static void slow_body(uint64_t seed)
{
    struct sim w;
    int n = 6 + (int)(seed % 10);
    sim_init(&w, n, seed, 0.0);
    REQUIRE(run_until(&w, is_converged, 0, 30000) != UINT64_MAX);
    int slow = (int)ds_prng_below(&w.rng, (uint64_t)n);
    /* Its direct answers to a third of the members are lost; relays still reach it. */
    for (int i = 0; i < n; i++)
        w.cut[slow][i] = i != slow && i % 3 == 0;
    for (int k = 0; k < 120000 / STEP_MS; k++) {
        sim_step(&w);
        for (int i = 0; i < n; i++)
            if (view(&w, i, slow) == DS_SWIM_DEAD) {
                CHECKF(false, "n%d declared slow n%d dead at %" PRIu64 " ms", i, slow, w.now);
                sim_free(&w);
                return;
            }
    }
    struct ds_swim_counters c;
    sum_counters(&w, &c);
    slow_suspicions += c.suspicions;
    slow_refutations += c.refutations;
    CHECK(c.deaths == 0);
    sim_free(&w);
}

static void member_with_lost_direct_acks_is_not_declared_dead(void)
{
    slow_suspicions = slow_refutations = 0;
    for_seeds(__func__, 100, slow_body);
    printf("# slow member: %" PRIu64 " suspicions, %" PRIu64 " refutations, 0 deaths\n",
           slow_suspicions, slow_refutations);
}

static void partition_body(uint64_t seed)
{
    struct sim w;
    int n = 4 + (int)(seed % 12);
    sim_init(&w, n, seed, 0.02);
    REQUIRE(run_until(&w, is_converged, 0, 30000) != UINT64_MAX);
    for (int i = 0; i < n; i++)
        w.group[i] = i < n / 2 ? 0 : 1;
    sim_run(&w, 80000);
    /* each side has declared the other dead */
    CHECK(view(&w, 0, n - 1) == DS_SWIM_DEAD && view(&w, n - 1, 0) == DS_SWIM_DEAD);
    memset(w.group, 0, sizeof w.group);
    uint64_t t = run_until(&w, is_converged, 0, 120000);
    CHECKF(t != UINT64_MAX, "n=%d: partition did not heal into one view in 120 s", n);
    sim_free(&w);
}

static void partition_heals_into_one_view(void)
{
    for_seeds(__func__, 100, partition_body);
}

static void leave_body(uint64_t seed)
{
    struct sim w;
    int n = size_for(seed);
    sim_init(&w, n, seed, 0.05);
    REQUIRE(run_until(&w, is_converged, 0, 30000) != UINT64_MAX);
    int leaver = (int)ds_prng_below(&w.rng, (uint64_t)n);
    REQUIRE(ds_swim_leave(w.nodes[leaver].s) == DS_SWIM_OK);
    CHECK(ds_swim_leave(w.nodes[leaver].s) == DS_SWIM_ELEFT);
    drain(&w, leaver);
    CHECK(ds_swim_member(w.nodes[leaver].s, 0)->state == DS_SWIM_LEFT);
    CHECKF(run_until(&w, all_see_left, leaver, 30000) != UINT64_MAX, "leave of n%d not known",
           leaver);
    sim_run(&w, 30000); /* LEFT is final: nobody suspects or buries it afterwards */
    CHECK(all_see(&w, leaver, DS_SWIM_LEFT));
    for (int i = 0; i < n; i++)
        if (i != leaver)
            CHECK(w.nodes[i].events[leaver][DS_SWIM_EV_LEFT] == 1 &&
                  w.nodes[i].events[leaver][DS_SWIM_EV_DOWN] == 0);
    sim_free(&w);
}

static void graceful_leave_propagates(void)
{
    for_seeds(__func__, 100, leave_body);
}

static void restart_body(uint64_t seed)
{
    struct sim w;
    int n = 3 + (int)(seed % 8);
    sim_init(&w, n, seed, 0.05);
    REQUIRE(run_until(&w, is_converged, 0, 30000) != UINT64_MAX);
    int victim = (int)ds_prng_below(&w.rng, (uint64_t)n);
    uint64_t old_inc = ds_swim_member(w.nodes[victim].s, 0)->incarnation;
    sim_crash(&w, victim);
    REQUIRE(run_until(&w, all_see_dead, victim, crash_bound_ms(n)) != UINT64_MAX);
    sim_restart(&w, victim);
    CHECKF(run_until(&w, is_converged, 0, 30000) != UINT64_MAX, "n%d not back", victim);
    for (int i = 0; i < n; i++) {
        const struct ds_swim_node *r = ds_swim_find(w.nodes[i].s, w.nodes[victim].id);
        if (i == victim || r == NULL)
            continue;
        CHECK(r->incarnation > old_inc && r->incarnation >> 32 == w.nodes[victim].boot);
        CHECK(w.nodes[i].events[victim][DS_SWIM_EV_UP] >= 2); /* at join and on return */
    }
    struct ds_swim_counters c;
    sum_counters(&w, &c);
    CHECK(c.false_positive_deaths == 0); /* it came back with a new boot: a true death */
    sim_free(&w);
}

static void restarted_member_is_alive_again_with_higher_incarnation(void)
{
    for_seeds(__func__, 100, restart_body);
}

static void foreign_body(uint64_t seed)
{
    struct sim w;
    sim_init(&w, 4, seed, 0.0);
    node_start(&w, MAXN, "staging"); /* same role, another cluster name, seeds n0 and n1 */
    sim_run(&w, 20000);
    CHECK(converged(&w));
    for (int i = 0; i < 4; i++)
        CHECK(ds_swim_find(w.nodes[i].s, w.nodes[MAXN].id) == NULL);
    CHECK(ds_swim_member_count(w.nodes[MAXN].s) == 1);
    struct ds_swim_counters c;
    sum_counters(&w, &c);
    CHECK(c.rejected_foreign > 0);
    sim_free(&w);
}

static void member_of_another_cluster_is_rejected(void)
{
    for_seeds(__func__, 5, foreign_body);
}

static void other_role_is_rejected_and_counted(void)
{
    struct ds_swim *a = NULL, *b = NULL;
    struct ds_swim_self sa = {"a", "https://a", "cache", "prod", 1, 0, NULL};
    struct ds_swim_self sb = {"b", "https://b", "queue", "prod", 1, 0, NULL};
    struct ds_swim_out o;
    struct ds_swim_counters c;
    const char *seed[1] = {"https://a"};
    REQUIRE(ds_swim_create(&sa, NULL, 1, 0, &a) == DS_SWIM_OK);
    REQUIRE(ds_swim_create(&sb, NULL, 2, 0, &b) == DS_SWIM_OK);
    REQUIRE(ds_swim_join(b, seed, 1, 0) == DS_SWIM_OK);
    REQUIRE(ds_swim_pop_out(b, &o) == DS_SWIM_OK);
    CHECK(strcmp(o.to_url, "https://a") == 0 && o.to_id[0] == '\0');
    CHECK(ds_swim_recv(a, o.buf, o.len, 5) == DS_SWIM_EFOREIGN);
    CHECK(ds_swim_recv(a, o.buf, 3, 5) == DS_SWIM_ETRUNC);
    ds_swim_get_counters(a, &c);
    CHECK(c.rejected_foreign == 1 && c.rejected_malformed == 1);
    CHECK(ds_swim_member_count(a) == 1 && ds_swim_pop_out(a, &o) != DS_SWIM_OK);
    CHECK(strcmp(ds_swim_role(b), "queue") == 0 && strcmp(ds_swim_cluster(b), "prod") == 0);
    free(o.buf);
    ds_swim_destroy(a);
    ds_swim_destroy(b);
}

static void metadata_change_reaches_every_member_body(uint64_t seed)
{
    struct sim w;
    int n = size_for(seed);
    sim_init(&w, n, seed, 0.05);
    REQUIRE(run_until(&w, is_converged, 0, 30000) != UINT64_MAX);
    struct ds_swim_meta meta[2] = {{"capacity", "2048"}, {"shard", "redis-2:down"}};
    int who = (int)ds_prng_below(&w.rng, (uint64_t)n);
    REQUIRE(ds_swim_set_meta(w.nodes[who].s, meta, 2) == DS_SWIM_OK);
    sim_run(&w, 30000);
    for (int i = 0; i < n; i++) {
        const struct ds_swim_node *r = ds_swim_find(w.nodes[i].s, w.nodes[who].id);
        if (i == who)
            continue;
        CHECKF(r && r->n_meta == 2 && strcmp(r->meta[1].value, "redis-2:down") == 0,
               "n%d has no new metadata of n%d", i, who);
        CHECK(w.nodes[i].events[who][DS_SWIM_EV_META] >= 1);
    }
    sim_free(&w);
}

static void metadata_change_reaches_every_member(void)
{
    for_seeds(__func__, 60, metadata_change_reaches_every_member_body);
}

/* Hand-made messages to one member, for rules the simulation cannot force. */
static void deliver(struct ds_swim *s, uint8_t type, const char *from, uint64_t from_inc,
                    const struct ds_swim_node *nodes, uint16_t n)
{
    struct ds_swim_msg m = {.type = type, .seq = 1, .n_nodes = n};
    m.nodes = (struct ds_swim_node *)nodes;
    snprintf(m.cluster, sizeof m.cluster, "prod");
    snprintf(m.role, sizeof m.role, "cache");
    snprintf(m.from.id, sizeof m.from.id, "%s", from);
    snprintf(m.from.url, sizeof m.from.url, "https://%s", from);
    m.from.incarnation = from_inc;
    CHECK(ds_swim_recv_msg(s, &m, 10) == DS_SWIM_OK);
}

static struct ds_swim_node record(const char *id, uint64_t inc, uint8_t state)
{
    struct ds_swim_node r = {.incarnation = inc, .state = state};
    snprintf(r.id, sizeof r.id, "%s", id);
    snprintf(r.url, sizeof r.url, "https://%s", id);
    return r;
}

static void revival_within_the_same_boot_counts_as_false_positive_death(void)
{
    struct ds_swim *a = NULL;
    struct ds_swim_self me = {"a", "https://a", "cache", "prod", 1, 0, NULL};
    struct ds_swim_counters c;
    const uint64_t boot1 = 1ull << 32, boot2 = 2ull << 32;
    REQUIRE(ds_swim_create(&me, NULL, 3, 0, &a) == DS_SWIM_OK);
    struct ds_swim_node dead[2] = {record("b", boot1 + 4, DS_SWIM_DEAD),
                                   record("d", boot1 + 4, DS_SWIM_DEAD)};
    deliver(a, DS_SWIM_MSG_SYNC, "c", boot1, dead, 2);
    CHECK(ds_swim_find(a, "b")->state == DS_SWIM_DEAD);
    deliver(a, DS_SWIM_MSG_PING, "b", boot1 + 5, NULL, 0); /* b refutes: same boot */
    deliver(a, DS_SWIM_MSG_PING, "d", boot2, NULL, 0);     /* d restarted: new boot */
    ds_swim_get_counters(a, &c);
    CHECK(c.false_positive_deaths == 1);
    CHECK(ds_swim_find(a, "b")->state == DS_SWIM_ALIVE);
    CHECK(ds_swim_find(a, "d")->state == DS_SWIM_ALIVE);
    ds_swim_destroy(a);
}

static void suspicion_of_itself_is_refuted_with_higher_incarnation(void)
{
    struct ds_swim *a = NULL;
    struct ds_swim_self me = {"a", "https://a", "cache", "prod", 7, 0, NULL};
    struct ds_swim_counters c;
    struct ds_swim_out o;
    struct ds_swim_msg ack;
    REQUIRE(ds_swim_create(&me, NULL, 3, 0, &a) == DS_SWIM_OK);
    uint64_t inc = ds_swim_member(a, 0)->incarnation;
    CHECK(inc == 7ull << 32);
    struct ds_swim_node sus = record("a", inc, DS_SWIM_SUSPECT);
    deliver(a, DS_SWIM_MSG_PING, "b", 1ull << 32, &sus, 1);
    ds_swim_get_counters(a, &c);
    CHECK(c.refutations == 1 && ds_swim_member(a, 0)->incarnation == inc + 1);
    /* the ack tells the prober the new incarnation */
    REQUIRE(ds_swim_pop_out(a, &o) == DS_SWIM_OK);
    REQUIRE(ds_swim_msg_decode(o.buf, o.len, &ack) == DS_SWIM_OK);
    CHECK(ack.type == DS_SWIM_MSG_ACK && ack.from.incarnation == inc + 1);
    CHECK(strcmp(o.to_id, "b") == 0 && strcmp(ack.target_id, "a") == 0);
    ds_swim_msg_free(&ack);
    free(o.buf);
    sus.incarnation = inc; /* a stale suspicion changes nothing */
    deliver(a, DS_SWIM_MSG_PING, "b", 1ull << 32, &sus, 1);
    ds_swim_get_counters(a, &c);
    CHECK(c.refutations == 1);
    ds_swim_destroy(a);
}

static struct ds_swim_counters fp_total;
static uint64_t fp_member_seconds;

static void false_positive_body(uint64_t seed)
{
    struct sim w;
    struct ds_swim_counters c;
    int n = 10 + (int)(seed % 11);
    sim_init(&w, n, seed, 0.10);
    REQUIRE(run_until(&w, is_converged, 0, 30000) != UINT64_MAX);
    struct ds_swim_counters before;
    sum_counters(&w, &before);
    sim_run(&w, 300000);
    sum_counters(&w, &c);
    fp_total.probes += c.probes - before.probes;
    fp_total.indirect_probes += c.indirect_probes - before.indirect_probes;
    fp_total.suspicions += c.suspicions - before.suspicions;
    fp_total.refutations += c.refutations - before.refutations;
    fp_total.deaths += c.deaths - before.deaths;
    fp_total.false_positive_deaths += c.false_positive_deaths - before.false_positive_deaths;
    fp_member_seconds += (uint64_t)n * 300;
    /* Nobody crashed, so every death declared was false; the core must have noticed them. */
    CHECK(c.deaths == before.deaths || c.false_positive_deaths > before.false_positive_deaths);
    CHECK(nobody_dead(&w) || c.deaths > before.deaths);
    sim_free(&w);
}

static void false_positive_rate_under_ten_percent_loss_is_small(void)
{
    memset(&fp_total, 0, sizeof fp_total);
    fp_member_seconds = 0;
    for_seeds(__func__, 40, false_positive_body);
    double per_probe = fp_total.probes ? (double)fp_total.deaths / (double)fp_total.probes : 0;
    printf("# 10%% loss, 10..20 members, %" PRIu64 " member-seconds: %" PRIu64 " probes, %" PRIu64
           " indirect, %" PRIu64 " suspicions, %" PRIu64 " refutations, %" PRIu64
           " false deaths (%.2e per probe), %" PRIu64 " seen revived\n",
           fp_member_seconds, fp_total.probes, fp_total.indirect_probes, fp_total.suspicions,
           fp_total.refutations, fp_total.deaths, per_probe, fp_total.false_positive_deaths);
    CHECKF(per_probe < 1e-3, "false deaths per probe %.2e", per_probe);
}

int main(void)
{
    RUN(members_join_through_seeds_and_agree);
    RUN(first_node_waits_for_the_others);
    RUN(every_live_member_learns_of_a_crash_within_bound);
    RUN(member_with_lost_direct_acks_is_not_declared_dead);
    RUN(partition_heals_into_one_view);
    RUN(graceful_leave_propagates);
    RUN(restarted_member_is_alive_again_with_higher_incarnation);
    RUN(member_of_another_cluster_is_rejected);
    RUN(other_role_is_rejected_and_counted);
    RUN(metadata_change_reaches_every_member);
    RUN(revival_within_the_same_boot_counts_as_false_positive_death);
    RUN(suspicion_of_itself_is_refuted_with_higher_incarnation);
    RUN(false_positive_rate_under_ten_percent_loss_is_small);
    return check_summary();
}
