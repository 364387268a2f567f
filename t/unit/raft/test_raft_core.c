/* Targeted Raft scenarios on the simulated cluster (sim.c checks every safety invariant after
 * each step): pre-vote and check-quorum, transfer, membership, ReadIndex, InstallSnapshot. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "sim.h"

#define SEED 7 /* scenarios are deterministic; the seed only fixes timeouts and delays */

static void options(struct ds_raft_options *o)
{
    ds_raft_options_default(o);
    o->max_append_entries = 4;
    o->max_inflight = 2;
    o->snapshot_trailing = 3;
}

/* Run until a leader exists (at most max_ms); returns it or 0. */
static int wait_leader(struct sim *s, uint64_t max_ms)
{
    for (uint64_t t = 0; t < max_ms && !s->failed; t++) {
        int l = sim_leader(s);
        if (l)
            return l;
        sim_step(s);
    }
    return 0;
}

static int role_of(struct sim *s, int id)
{
    struct ds_raft_status st;
    sim_status(s, id, &st);
    return st.role;
}

static uint64_t term_of(struct sim *s, int id)
{
    struct ds_raft_status st;
    sim_status(s, id, &st);
    return st.term;
}

/* Propose n values at the leader and wait until every member applied them. */
static int commit_values(struct sim *s, int leader, int n)
{
    uint64_t index = 0;
    for (int i = 0; i < n; i++)
        if (sim_propose(s, leader, 1000 + (uint64_t)i, &index) != DS_RAFT_OK)
            return -1;
    return sim_wait_applied(s, index, 2000);
}

static int report(struct sim *s)
{
    if (s->failed)
        fprintf(stderr, "simulation failed at %llu ms: %s\n", (unsigned long long)s->now, s->why);
    return s->failed;
}

static void a_single_node_cluster_elects_itself_and_commits(void)
{
    struct sim s;
    struct ds_raft_options o;
    options(&o);
    sim_init(&s, SEED, 1, 1, &o);
    CHECK(wait_leader(&s, 400) == 1);
    CHECK(commit_values(&s, 1, 3) == 0);
    CHECK(s.nodes[1].app.count == 3);
    CHECK(report(&s) == 0);
    sim_free(&s);
}

static void clusters_of_3_and_5_elect_one_leader_and_commit(void)
{
    for (int n = 3; n <= 5; n += 2) {
        struct sim s;
        struct ds_raft_options o;
        options(&o);
        sim_init(&s, SEED, n, n, &o);
        int l = wait_leader(&s, 1000);
        CHECKF(l != 0, "%d nodes", n);
        if (l)
            CHECK(commit_values(&s, l, 20) == 0);
        sim_run(&s, 100);
        for (int id = 1; id <= n; id++)
            CHECK(s.nodes[id].app.hash == s.nodes[l].app.hash);
        struct ds_raft_status st;
        sim_status(&s, l, &st);
        CHECK(st.n_peers == (size_t)n - 1 && st.commit == st.last_index && st.applied == st.commit);
        for (size_t i = 0; i < st.n_peers; i++)
            CHECK(st.peers[i].voter && st.peers[i].match == st.last_index &&
                  st.peers[i].next == st.last_index + 1 && st.peers[i].state == 1);
        CHECK(st.elections_started == 1 && st.leader_changes == 1 && st.alloc_failures == 0);
        CHECK(report(&s) == 0);
        sim_free(&s);
    }
}

static void a_proposal_at_a_follower_names_the_leader(void)
{
    struct sim s;
    struct ds_raft_options o;
    options(&o);
    sim_init(&s, SEED, 3, 3, &o);
    int l = wait_leader(&s, 1000);
    REQUIRE(l != 0);
    sim_run(&s, 100);
    int f = l % 3 + 1;
    uint64_t leader = 0, index;
    CHECK(ds_raft_propose(s.nodes[f].r, "x", 1, &index, &leader) == DS_RAFT_ENOTLEADER);
    CHECK(leader == (uint64_t)l);
    CHECK(ds_raft_read_index(s.nodes[f].r, 1) == DS_RAFT_ENOTLEADER);
    CHECK(ds_raft_transfer_leadership(s.nodes[f].r, (uint64_t)l) == DS_RAFT_ENOTLEADER);
    sim_free(&s);
}

static void a_partitioned_follower_rejoining_does_not_depose_the_leader(void)
{
    struct sim s;
    struct ds_raft_options o;
    options(&o);
    sim_init(&s, SEED, 5, 5, &o);
    int l = wait_leader(&s, 1000);
    REQUIRE(l != 0);
    CHECK(commit_values(&s, l, 5) == 0);
    uint64_t term = term_of(&s, l);
    int f = l % 5 + 1;
    sim_isolate(&s, f);
    sim_run(&s, 2000); /* f keeps pre-voting, never wins, never raises its term */
    CHECK(term_of(&s, f) == term);
    struct ds_raft_status st;
    sim_status(&s, f, &st);
    CHECK(st.elections_started == 0 && st.role == DS_RAFT_PRECANDIDATE);
    sim_heal(&s);
    sim_run(&s, 1000);
    CHECK(sim_leader(&s) == l);
    CHECK(term_of(&s, l) == term);
    CHECK(commit_values(&s, l, 5) == 0);
    CHECK(report(&s) == 0);
    sim_free(&s);
}

static void a_leader_in_the_minority_steps_down_and_the_majority_moves_on(void)
{
    struct sim s;
    struct ds_raft_options o;
    options(&o);
    sim_init(&s, SEED, 5, 5, &o);
    int l = wait_leader(&s, 1000);
    REQUIRE(l != 0);
    int buddy = l % 5 + 1;
    for (int i = 1; i <= 5; i++)
        for (int j = 1; j <= 5; j++)
            if ((i == l || i == buddy) != (j == l || j == buddy))
                sim_cut_pair(&s, i, j);
    sim_run(&s, 1000);
    CHECK(role_of(&s, l) != DS_RAFT_LEADER); /* check-quorum */
    int nl = sim_leader(&s);
    CHECK(nl != 0 && nl != l && nl != buddy);
    uint64_t leader = 0;
    CHECK(ds_raft_propose(s.nodes[l].r, "x", 1, NULL, &leader) == DS_RAFT_ENOTLEADER);
    sim_heal(&s);
    if (nl)
        CHECK(commit_values(&s, nl, 3) == 0);
    CHECK(s.nodes[l].app.hash == s.nodes[nl].app.hash);
    CHECK(report(&s) == 0);
    sim_free(&s);
}

static void leadership_transfer_hands_over_and_blocks_proposals_meanwhile(void)
{
    struct sim s;
    struct ds_raft_options o;
    options(&o);
    sim_init(&s, SEED, 3, 3, &o);
    int l = wait_leader(&s, 1000);
    REQUIRE(l != 0);
    CHECK(commit_values(&s, l, 5) == 0);
    int t = l % 3 + 1;
    CHECK(ds_raft_transfer_leadership(s.nodes[l].r, (uint64_t)l) == DS_RAFT_EINVAL);
    CHECK(ds_raft_transfer_leadership(s.nodes[l].r, (uint64_t)t) == DS_RAFT_OK);
    CHECK(ds_raft_transfer_leadership(s.nodes[l].r, (uint64_t)t) == DS_RAFT_EBUSY);
    CHECK(ds_raft_propose(s.nodes[l].r, "x", 1, NULL, NULL) == DS_RAFT_EBUSY);
    sim_run(&s, 100); /* far less than an election timeout: TimeoutNow, not a timeout */
    CHECK(sim_leader(&s) == t);
    CHECK(role_of(&s, l) == DS_RAFT_FOLLOWER);
    CHECK(commit_values(&s, t, 3) == 0);
    CHECK(report(&s) == 0);
    sim_free(&s);
}

static void a_transfer_to_an_unreachable_target_aborts_after_an_election_timeout(void)
{
    struct sim s;
    struct ds_raft_options o;
    options(&o);
    sim_init(&s, SEED, 3, 3, &o);
    int l = wait_leader(&s, 1000);
    REQUIRE(l != 0);
    CHECK(commit_values(&s, l, 2) == 0);
    int t = l % 3 + 1;
    sim_isolate(&s, t);
    CHECK(sim_propose(&s, l, 77, NULL) == DS_RAFT_OK); /* t lags behind */
    CHECK(ds_raft_transfer_leadership(s.nodes[l].r, (uint64_t)t) == DS_RAFT_OK);
    sim_run(&s, o.election_min_ms - 20);
    struct ds_raft_status st;
    sim_status(&s, l, &st);
    CHECK(st.transferee == (uint64_t)t);
    CHECK(sim_propose(&s, l, 78, NULL) == DS_RAFT_EBUSY);
    sim_run(&s, 40);
    sim_status(&s, l, &st);
    CHECK(st.transferee == 0);
    CHECK(st.role == DS_RAFT_LEADER);
    CHECK(sim_propose(&s, l, 79, NULL) == DS_RAFT_OK);
    sim_heal(&s);
    CHECK(commit_values(&s, l, 1) == 0);
    CHECK(report(&s) == 0);
    sim_free(&s);
}

static int until_ok(struct sim *s, int leader, int op, uint64_t id, uint64_t *index)
{
    int rv = DS_RAFT_EBUSY;
    for (int t = 0; t < 2000 && rv != DS_RAFT_OK; t++) {
        rv = ds_raft_change_membership(s->nodes[leader].r, op, id, index);
        if (rv != DS_RAFT_OK)
            sim_step(s);
    }
    return rv;
}

static void a_learner_catches_up_by_snapshot_is_promoted_and_a_removed_leader_steps_down(void)
{
    struct sim s;
    struct ds_raft_options o;
    uint64_t index;
    options(&o);
    sim_init(&s, SEED, 3, 4, &o);
    for (int id = 1; id <= 4; id++)
        s.nodes[id].snap_every = 10;
    int l = wait_leader(&s, 1000);
    REQUIRE(l != 0);
    CHECK(commit_values(&s, l, 60) == 0);
    sim_crash(&s, 4);
    struct ds_raft *lr = s.nodes[l].r;
    CHECK(ds_raft_change_membership(lr, DS_RAFT_CONF_PROMOTE, 4, &index) == DS_RAFT_EINVAL);
    CHECK(ds_raft_change_membership(lr, DS_RAFT_CONF_ADD_LEARNER, 4, &index) == DS_RAFT_OK);
    CHECK(ds_raft_change_membership(lr, DS_RAFT_CONF_PROMOTE, 4, &index) == DS_RAFT_EBUSY);
    CHECK(sim_wait_applied(&s, index, 1000) == 0);
    CHECK(ds_raft_change_membership(lr, DS_RAFT_CONF_PROMOTE, 4, &index) == DS_RAFT_ECATCHUP);
    sim_restart(&s, 4);
    CHECK(sim_wait_applied(&s, index, 2000) == 0);
    CHECK(s.nodes[4].st.installed); /* caught up by InstallSnapshot: the log was compacted */
    CHECK(until_ok(&s, l, DS_RAFT_CONF_PROMOTE, 4, &index) == DS_RAFT_OK);
    CHECK(sim_wait_applied(&s, index, 1000) == 0);
    CHECK(until_ok(&s, l, DS_RAFT_CONF_REMOVE, (uint64_t)l, &index) == DS_RAFT_OK);
    CHECK(sim_wait_applied(&s, index, 1000) == 0);
    sim_run(&s, 50);
    CHECK(role_of(&s, l) != DS_RAFT_LEADER); /* stepped down after committing its removal */
    sim_crash(&s, l);
    int nl = wait_leader(&s, 2000);
    CHECK(nl != 0 && nl != l);
    if (nl) {
        struct ds_raft_status st;
        sim_status(&s, nl, &st);
        CHECK(st.conf.n_voters == 3 && st.conf.n_learners == 0);
        CHECK(commit_values(&s, nl, 5) == 0);
        CHECK(s.nodes[4].app.hash == s.nodes[nl].app.hash);
    }
    CHECK(report(&s) == 0);
    sim_free(&s);
}

static void read_index_is_reported_only_after_a_heartbeat_quorum(void)
{
    struct sim s;
    struct ds_raft_options o;
    options(&o);
    o.check_quorum = 0; /* keep the unanswered leader in office to show the read waits */
    o.election_min_ms = 400;
    o.election_max_ms = 800;
    sim_init(&s, SEED, 3, 3, &o);
    int l = wait_leader(&s, 2000);
    REQUIRE(l != 0);
    CHECK(commit_values(&s, l, 3) == 0);
    for (int id = 1; id <= 3; id++)
        if (id != l)
            sim_stall(&s, id, 150); /* followers answer heartbeats only after 150 ms */
    CHECK(sim_read(&s, l, 7) == DS_RAFT_OK);
    sim_run(&s, 140);
    CHECK(s.nodes[l].n_reads == 0);
    sim_run(&s, 100);
    REQUIRE(role_of(&s, l) == DS_RAFT_LEADER);
    CHECK(s.nodes[l].n_reads == 1);
    CHECK(s.nodes[l].reads[0].ctx == 7 && s.nodes[l].reads[0].index == s.max_committed);
    CHECK(report(&s) == 0);
    sim_free(&s);
}

static void a_read_index_from_a_deposed_leader_is_never_reported(void)
{
    struct sim s;
    struct ds_raft_options o;
    options(&o);
    sim_init(&s, SEED, 5, 5, &o);
    int l = wait_leader(&s, 1000);
    REQUIRE(l != 0);
    CHECK(commit_values(&s, l, 3) == 0);
    sim_isolate(&s, l);
    CHECK(sim_read(&s, l, 9) == DS_RAFT_OK);
    sim_run(&s, 1000);
    CHECK(role_of(&s, l) != DS_RAFT_LEADER);
    int nl = sim_leader(&s);
    CHECK(nl != 0 && nl != l);
    sim_heal(&s);
    sim_run(&s, 1000);
    CHECK(s.nodes[l].n_reads == 0);
    if (nl) { /* the new leader serves reads once it committed in its term */
        CHECK(sim_read(&s, nl, 10) == DS_RAFT_OK);
        sim_run(&s, 200);
        CHECK(s.nodes[nl].n_reads == 1);
    }
    CHECK(report(&s) == 0);
    sim_free(&s);
}

static void install_snapshot_brings_a_far_behind_follower_up_to_date(void)
{
    struct sim s;
    struct ds_raft_options o;
    options(&o);
    sim_init(&s, SEED, 3, 3, &o);
    for (int id = 1; id <= 3; id++)
        s.nodes[id].snap_every = 10;
    int l = wait_leader(&s, 1000);
    REQUIRE(l != 0);
    int f = l % 3 + 1;
    sim_crash(&s, f);
    CHECK(commit_values(&s, l, 100) == 0);
    struct ds_raft_status st;
    sim_status(&s, l, &st);
    CHECK(st.first_index > 50); /* compacted behind the snapshot */
    sim_restart(&s, f);
    CHECK(sim_wait_applied(&s, st.last_index, 2000) == 0);
    CHECK(s.nodes[f].st.installed);
    CHECK(s.nodes[f].app.hash == s.nodes[l].app.hash);
    CHECK(s.nodes[f].app.count == 100);
    CHECK(report(&s) == 0);
    sim_free(&s);
}

static void a_stalled_disk_delays_but_loses_nothing_acknowledged(void)
{
    struct sim s;
    struct ds_raft_options o;
    options(&o);
    sim_init(&s, SEED, 3, 3, &o);
    int l = wait_leader(&s, 1000);
    REQUIRE(l != 0);
    uint64_t index;
    CHECK(sim_propose(&s, l, 5, &index) == DS_RAFT_OK);
    sim_stall(&s, l, 100);
    CHECK(sim_propose(&s, l, 6, &index) == DS_RAFT_OK);
    sim_run(&s, 50);
    CHECK(s.nodes[l].holding); /* the batch waits for the disk */
    sim_crash(&s, l);          /* ... and is lost with the crash */
    sim_restart(&s, l);
    int nl = wait_leader(&s, 2000);
    REQUIRE(nl != 0);
    CHECK(commit_values(&s, nl, 2) == 0);
    CHECK(report(&s) == 0);
    sim_free(&s);
}

/* Dissertation §10.2.1: the followers write while the leader's disk is slow, but nothing
 * commits before the leader's own write is done, and a crash before it loses only that. */
static void a_leader_replicates_before_its_own_write_but_commits_only_after_it(void)
{
    struct sim s;
    struct ds_raft_options o;
    options(&o);
    sim_init(&s, SEED, 3, 3, &o);
    int l = wait_leader(&s, 1000);
    REQUIRE(l != 0);
    uint64_t index;
    sim_run(&s, 20);
    sim_stall(&s, l, 100);
    REQUIRE(sim_propose(&s, l, 7, &index) == DS_RAFT_OK);
    sim_run(&s, 50);
    REQUIRE(s.nodes[l].holding && s.nodes[l].rd.send_first);
    int on_followers = 0;
    for (int id = 1; id <= 3; id++) {
        struct sim_storage *st = &s.nodes[id].st;
        if (id != l && st->n && st->ents[st->n - 1].index == index)
            on_followers++;
        CHECKF(s.nodes[id].app.applied < index, "node %d applied %llu before the leader's write",
               id, (unsigned long long)index);
    }
    CHECK(on_followers == 2);
    sim_run(&s, 100); /* the write ends: the answers are stepped, the entry commits */
    CHECK(sim_wait_applied(&s, index, 500) == 0 && sim_committed_value(&s, index, 7));
    sim_stall(&s, l, 100);
    REQUIRE(sim_propose(&s, l, 8, &index) == DS_RAFT_OK);
    sim_run(&s, 50);
    sim_crash(&s, l); /* the followers hold what the leader never wrote: either outcome is safe */
    sim_restart(&s, l);
    int nl = wait_leader(&s, 2000);
    REQUIRE(nl != 0);
    CHECK(commit_values(&s, nl, 2) == 0);
    CHECK(report(&s) == 0);
    sim_free(&s);
}

static void the_core_takes_no_input_between_ready_and_advance(void)
{
    struct ds_raft_options o;
    struct ds_raft_durable d = {0};
    struct ds_raft *r;
    struct ds_raft_ready rd;
    options(&o);
    d.snap.conf.voters[d.snap.conf.n_voters++] = 1;
    CHECK(ds_raft_create(&o, &d, &r) == DS_RAFT_EINVAL); /* id 0 */
    o.id = 1;
    REQUIRE(ds_raft_create(&o, &d, &r) == DS_RAFT_OK);
    CHECK(ds_raft_advance(r) == DS_RAFT_EINVAL);
    CHECK(ds_raft_tick(r, 1000) == DS_RAFT_OK);
    CHECK(ds_raft_has_ready(r));
    CHECK(ds_raft_ready(r, &rd) == DS_RAFT_OK);
    CHECK(rd.role == DS_RAFT_LEADER && rd.has_hard_state && rd.hs.vote == 1);
    CHECK(rd.n_entries == 1 && rd.entries[0].type == DS_RAFT_ENTRY_NOOP);
    CHECK(rd.n_committed == 1);
    CHECK(!ds_raft_has_ready(r));
    CHECK(ds_raft_ready(r, &rd) == DS_RAFT_EBUSY);
    CHECK(ds_raft_propose(r, "x", 1, NULL, NULL) == DS_RAFT_EBUSY);
    CHECK(ds_raft_tick(r, 1001) == DS_RAFT_EBUSY);
    CHECK(ds_raft_read_index(r, 1) == DS_RAFT_EBUSY);
    CHECK(ds_raft_snapshot_taken(r, 1, "s", 1) == DS_RAFT_EBUSY);
    struct ds_raft_msg m = {.type = DS_RAFT_MSG_HEARTBEAT, .from = 2, .to = 1, .term = 1};
    CHECK(ds_raft_step(r, &m) == DS_RAFT_EBUSY);
    CHECK(ds_raft_advance(r) == DS_RAFT_OK);
    CHECK(!ds_raft_has_ready(r));
    CHECK(ds_raft_snapshot_taken(r, 2, "s", 1) == DS_RAFT_EINVAL); /* beyond applied */
    CHECK(ds_raft_snapshot_taken(r, 1, "s", 1) == DS_RAFT_OK);
    m.to = 3;
    CHECK(ds_raft_step(r, &m) == DS_RAFT_EBADMSG);
    ds_raft_destroy(r);
}

static void malformed_append_messages_are_refused(void)
{
    struct ds_raft_options o;
    struct ds_raft_durable d = {0};
    struct ds_raft *r;
    struct ds_raft_ready rd;
    options(&o);
    o.id = 2;
    for (uint64_t v = 1; v <= 3; v++)
        d.snap.conf.voters[d.snap.conf.n_voters++] = v;
    REQUIRE(ds_raft_create(&o, &d, &r) == DS_RAFT_OK);
    struct ds_raft_entry e = {1, 1, DS_RAFT_ENTRY_NOOP, 0, NULL};
    struct ds_raft_msg m = {.type = DS_RAFT_MSG_APPEND, .from = 1, .to = 2, .term = 1,
                            .commit = 1, .n_entries = 1, .entries = &e};
    CHECK(ds_raft_step(r, &m) == DS_RAFT_OK);
    CHECK(ds_raft_ready(r, &rd) == DS_RAFT_OK && rd.n_committed == 1);
    CHECK(ds_raft_advance(r) == DS_RAFT_OK);
    e.term = 2; /* a "leader" of term 2 rewriting committed index 1 */
    m.term = 2;
    CHECK(ds_raft_step(r, &m) == DS_RAFT_OK); /* prev index 0 < commit: acknowledged, ignored */
    CHECK(ds_raft_ready(r, &rd) == DS_RAFT_OK);
    CHECK(rd.n_entries == 0 && rd.truncate_from == 0 && rd.n_msgs == 1);
    CHECK(rd.msgs[0].type == DS_RAFT_MSG_APPEND_RESP && rd.msgs[0].index == 1);
    CHECK(ds_raft_advance(r) == DS_RAFT_OK);
    m.index = 1;
    m.log_term = 1;
    e.index = 3; /* not contiguous with prev index 1 */
    CHECK(ds_raft_step(r, &m) == DS_RAFT_EBADMSG);
    e.index = 2;
    e.term = 3; /* newer than the message's term */
    CHECK(ds_raft_step(r, &m) == DS_RAFT_EBADMSG);
    ds_raft_destroy(r);
}

int main(void)
{
    RUN(a_single_node_cluster_elects_itself_and_commits);
    RUN(clusters_of_3_and_5_elect_one_leader_and_commit);
    RUN(a_proposal_at_a_follower_names_the_leader);
    RUN(a_partitioned_follower_rejoining_does_not_depose_the_leader);
    RUN(a_leader_in_the_minority_steps_down_and_the_majority_moves_on);
    RUN(leadership_transfer_hands_over_and_blocks_proposals_meanwhile);
    RUN(a_transfer_to_an_unreachable_target_aborts_after_an_election_timeout);
    RUN(a_learner_catches_up_by_snapshot_is_promoted_and_a_removed_leader_steps_down);
    RUN(read_index_is_reported_only_after_a_heartbeat_quorum);
    RUN(a_read_index_from_a_deposed_leader_is_never_reported);
    RUN(install_snapshot_brings_a_far_behind_follower_up_to_date);
    RUN(a_stalled_disk_delays_but_loses_nothing_acknowledged);
    RUN(a_leader_replicates_before_its_own_write_but_commits_only_after_it);
    RUN(the_core_takes_no_input_between_ready_and_advance);
    RUN(malformed_append_messages_are_refused);
    return check_summary();
}
