/* Randomised deterministic simulation of 3- and 5-node Raft clusters under message loss,
 * duplication, reordering, partitions, crashes and disk stalls; safety invariants are checked
 * after every step by the simulator (sim.c), liveness once the cluster is healed. */
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "sim.h"

#define CHAOS_MS 4000
#define LIVENESS_MS 3000 /* stated bound: leader elected and a proposal committed everywhere */

struct chaos {
    uint64_t restart_at[SIM_MAX + 1];
    uint64_t next_fault, next_value, reads, conf_changes;
};

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

static int random_node(struct sim *s)
{
    return 1 + (int)ds_prng_below(&s->prng, (uint64_t)s->n);
}

static int in_list(const uint64_t *ids, uint32_t n, int id)
{
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == (uint64_t)id)
            return 1;
    return 0;
}

/* One single-server change (dissertation §4.1): re-add a removed node as a learner, promote a
 * learner, or remove a voter (the leader itself included) while at least 3 voters remain. */
static void change_membership(struct sim *s, struct chaos *c, int leader, int id)
{
    struct ds_raft_status st;
    if (!leader || s->nodes[leader].holding)
        return;
    sim_status(s, leader, &st);
    int op = DS_RAFT_CONF_REMOVE;
    if (in_list(st.conf.learners, st.conf.n_learners, id))
        op = DS_RAFT_CONF_PROMOTE;
    else if (!in_list(st.conf.voters, st.conf.n_voters, id))
        op = DS_RAFT_CONF_ADD_LEARNER;
    else if (st.conf.n_voters < 3)
        return;
    if (ds_raft_change_membership(s->nodes[leader].r, op, (uint64_t)id, NULL) == DS_RAFT_OK)
        c->conf_changes++;
}

static void fault(struct sim *s, struct chaos *c)
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
        sim_crash(s, id);
        c->restart_at[id] = s->now + 100 + ds_prng_below(&s->prng, 1500);
        break;
    case 4:
        sim_stall(s, id, 20 + ds_prng_below(&s->prng, 400));
        break;
    case 5:
        s->drop_pct = (unsigned)ds_prng_below(&s->prng, 30);
        s->dup_pct = (unsigned)ds_prng_below(&s->prng, 20);
        s->delay_max = 1 + (unsigned)ds_prng_below(&s->prng, 40);
        break;
    case 6:
        s->drop_pct = s->dup_pct = 0;
        s->delay_max = 5;
        break;
    case 7:
        if (leader && s->nodes[leader].up && !s->nodes[leader].holding)
            ds_raft_transfer_leadership(s->nodes[leader].r, (uint64_t)id);
        break;
    case 8:
        change_membership(s, c, leader, id);
        break;
    default:
        sim_crash(s, leader ? leader : id);
        c->restart_at[leader ? leader : id] = s->now + 100 + ds_prng_below(&s->prng, 800);
        break;
    }
}

static void chaos_step(struct sim *s, struct chaos *c)
{
    for (int id = 1; id <= s->n; id++)
        if (!s->nodes[id].up && s->now >= c->restart_at[id])
            sim_restart(s, id);
    if (s->now >= c->next_fault) {
        fault(s, c);
        c->next_fault = s->now + 50 + ds_prng_below(&s->prng, 400);
    }
    if (ds_prng_below(&s->prng, 100) < 10) { /* a client proposes at a random node */
        uint64_t leader = 0;
        int id = random_node(s);
        if (s->nodes[id].up && !s->nodes[id].holding &&
            ds_raft_propose(s->nodes[id].r, &c->next_value, 8, NULL, &leader) ==
                DS_RAFT_ENOTLEADER &&
            leader)
            sim_propose(s, (int)leader, c->next_value, NULL); /* retried at the leader */
        c->next_value++;
    }
    if (ds_prng_below(&s->prng, 1000) < 5 && c->reads < 64) {
        int leader = sim_leader(s);
        if (leader && sim_read(s, leader, c->reads) == DS_RAFT_OK)
            c->reads++;
    }
    sim_step(s);
}

/* Heal the network and disks; restart every node but, when the configuration is still the
 * initial one, leave a random minority down: a connected majority must be enough. */
static void heal_majority(struct sim *s, const struct chaos *c)
{
    sim_heal(s);
    s->drop_pct = s->dup_pct = 0;
    s->delay_max = 5;
    for (int id = 1; id <= s->n; id++) {
        sim_restart(s, id);
        s->nodes[id].stall_until = s->now;
    }
    if (c->conf_changes)
        return;
    uint64_t down = ds_prng_below(&s->prng, (uint64_t)(s->n - 1) / 2 + 1);
    for (uint64_t k = 0; k < down; k++)
        sim_crash(s, random_node(s));
}

/* Liveness: once healed, a leader is elected and a proposal commits on every node in time.  A
 * proposal made to a leader that is then deposed may be lost: it is retried. */
static void check_liveness(struct sim *s)
{
    uint64_t start = s->now, value = 0xfeedULL << 32;
    while (s->now - start < LIVENESS_MS && !s->failed) {
        uint64_t index;
        int leader = sim_leader(s);
        if (leader && sim_propose(s, leader, value, &index) == DS_RAFT_OK &&
            sim_wait_applied(s, index, 300) == 0 && sim_committed_value(s, index, value))
            return;
        value++;
        sim_step(s);
    }
    if (!s->failed)
        sim_fail(s, "liveness: no proposal committed within %d ms of healing", LIVENESS_MS);
}

static int run_seed(uint64_t seed)
{
    struct sim s;
    struct chaos c = {0};
    struct ds_raft_options o;
    int nodes = seed % 2 ? 5 : 3;
    ds_raft_options_default(&o);
    o.max_append_entries = 8;
    o.max_inflight = 4;
    o.snapshot_trailing = (uint32_t)(seed % 7);
    o.async_persist = (seed / 2) % 2; /* half the seeds sync entries after advance */
    sim_init(&s, seed, nodes, nodes, &o);
    for (int id = 1; id <= nodes; id++)
        s.nodes[id].snap_every = 5 + ds_prng_below(&s.prng, 50);
    c.next_value = seed << 20;
    while (s.now < CHAOS_MS && !s.failed)
        chaos_step(&s, &c);
    heal_majority(&s, &c);
    check_liveness(&s);
    int failed = s.failed;
    if (getenv("DS_VERBOSE"))
        printf("seed %llu: %d nodes%s, %llu committed, %lu truncations, %lu snapshot installs, "
               "%llu membership changes, %llu reads, %lu async syncs, %lu torn crashes\n",
               (unsigned long long)seed, nodes, o.async_persist ? " (async persist)" : "",
               (unsigned long long)s.max_committed, s.truncations, s.installs,
               (unsigned long long)c.conf_changes, (unsigned long long)c.reads, s.async_syncs,
               s.torn_crashes);
    if (failed)
        fprintf(stderr, "seed %llu (%d nodes) failed at %llu ms: %s\n"
                        "  replay: DS_SEED=%llu build/t/unit/raft/test_raft_sim\n",
                (unsigned long long)seed, nodes, (unsigned long long)s.now, s.why,
                (unsigned long long)seed);
    sim_free(&s);
    return failed;
}

static void random_clusters_of_3_and_5_keep_every_safety_invariant_and_recover(void)
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
}

int main(void)
{
    RUN(random_clusters_of_3_and_5_keep_every_safety_invariant_and_recover);
    return check_summary();
}
