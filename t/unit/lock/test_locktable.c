/* Unit tests of the lock table state machine: modes, fairness, conversions, deadlocks, leases,
 * idempotency, snapshots. */
#include "check.h"
#include "core/prng.h"
#include "lock/lock_helpers.h"
#include "roles/lock/lock_internal.h" /* the hash map is tested directly */

static void compatibility_matrix_grants_only_shared_with_shared(void)
{
    static const struct { int held, asked, granted; } m[] = {
        { SH, SH, 1 }, { SH, EX, 0 }, { EX, SH, 0 }, { EX, EX, 0 },
    };
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        struct ds_lock_table *t = ds_lock_table_new();
        REQUIRE(t);
        CHECK(acq(t, "r", "a", m[i].held, 0) == DS_LOCK_GRANTED);
        int st = acq(t, "r", "b", m[i].asked, 0);
        CHECKF(st == (m[i].granted ? DS_LOCK_GRANTED : DS_LOCK_HELD), "held %d asked %d got %s",
               m[i].held, m[i].asked, ds_lock_status_name(st));
        CHECK(res.holders.n == (m[i].granted ? 2u : 1u));
        CHECK(in_list(&res.holders, "r", "a"));
        ds_lock_table_free(t);
    }
}

static void queued_exclusive_blocks_later_shared_requests(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    CHECK(acq(t, "r", "s1", SH, WAIT) == DS_LOCK_GRANTED);
    CHECK(acq(t, "r", "w", EX, WAIT) == DS_LOCK_QUEUED && res.position == 1);
    CHECK(acq(t, "r", "s2", SH, WAIT) == DS_LOCK_QUEUED && res.position == 2);
    CHECK(acq(t, "r", "s3", SH, 0) == DS_LOCK_HELD);
    CHECK(rel(t, "r", "s1") == DS_LOCK_OK);
    CHECK(res.granted.n == 1 && in_list(&res.granted, "r", "w"));
    CHECK(rel(t, "r", "w") == DS_LOCK_OK);
    CHECK(res.granted.n == 1 && in_list(&res.granted, "r", "s2"));
    ds_lock_table_free(t);
}

static void waiters_are_granted_in_fifo_order_with_runs_of_readers(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    CHECK(acq(t, "r", "e1", EX, WAIT) == DS_LOCK_GRANTED);
    CHECK(acq(t, "r", "s1", SH, WAIT) == DS_LOCK_QUEUED);
    CHECK(acq(t, "r", "s2", SH, WAIT) == DS_LOCK_QUEUED);
    CHECK(acq(t, "r", "e2", EX, WAIT) == DS_LOCK_QUEUED);
    CHECK(acq(t, "r", "s3", SH, WAIT) == DS_LOCK_QUEUED && res.position == 4);
    CHECK(rel(t, "r", "e1") == DS_LOCK_OK);
    CHECK(res.granted.n == 2 && strcmp(res.granted.v[0].client_id, "s1") == 0 &&
          strcmp(res.granted.v[1].client_id, "s2") == 0);
    CHECK(rel(t, "r", "s1") == DS_LOCK_OK && res.granted.n == 0);
    CHECK(rel(t, "r", "s2") == DS_LOCK_OK && res.granted.n == 1 &&
          in_list(&res.granted, "r", "e2"));
    CHECK(rel(t, "r", "e2") == DS_LOCK_OK && res.granted.n == 1 &&
          in_list(&res.granted, "r", "s3"));
    ds_lock_table_free(t);
}

/* The bound: a request queued behind k waiters while h clients hold is granted once those h + k
 * holds end, however many requests arrive after it. */
static void starvation_bound_holds_under_a_stream_of_later_requests(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    char name[32];
    CHECK(acq(t, "r", "h1", SH, WAIT) == DS_LOCK_GRANTED);
    CHECK(acq(t, "r", "h2", SH, WAIT) == DS_LOCK_GRANTED);
    CHECK(acq(t, "r", "w", EX, WAIT) == DS_LOCK_QUEUED);  /* h = 2, k = 0 */
    CHECK(acq(t, "r", "x", SH, WAIT) == DS_LOCK_QUEUED);  /* h = 2, k = 1 */
    for (int i = 0; i < 20; i++) {                     /* a stream of later requests */
        snprintf(name, sizeof(name), "late%d", i);
        CHECK(acq(t, "r", name, i % 3 ? SH : EX, WAIT) == DS_LOCK_QUEUED);
    }
    CHECK(rel(t, "r", "h1") == DS_LOCK_OK && res.granted.n == 0);
    CHECK(rel(t, "r", "h2") == DS_LOCK_OK && in_list(&res.granted, "r", "w")); /* 2 holds */
    CHECK(res.granted.n == 1);
    CHECK(rel(t, "r", "w") == DS_LOCK_OK && in_list(&res.granted, "r", "x")); /* 2 + 1 holds */
    ds_lock_table_free(t);
}

static void reacquire_in_the_same_mode_keeps_the_token_and_refreshes_the_lease(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    CHECK(acq(t, "r", "a", EX, 0) == DS_LOCK_GRANTED && !res.refreshed);
    uint64_t tok = res.token, d1 = res.deadline_ms;
    now_ms += 500;
    CHECK(acq_full(t, "r", "a", EX, 0, 20000, NULL) == DS_LOCK_GRANTED && res.refreshed);
    CHECK(res.token == tok && res.deadline_ms == now_ms + 20000 && res.deadline_ms > d1);
    CHECK(ds_lock_next_token(t) == tok + 1);
    ds_lock_table_free(t);
}

static void upgrade_of_a_lone_reader_is_immediate_with_a_new_token(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    CHECK(acq(t, "r", "a", SH, 0) == DS_LOCK_GRANTED);
    uint64_t tok = res.token;
    CHECK(acq(t, "r", "a", EX, 0) == DS_LOCK_GRANTED && res.mode == EX && res.token > tok);
    CHECK(!ds_lock_check(t, "r", tok) && ds_lock_check(t, "r", res.token));
    ds_lock_table_free(t);
}

static void upgrade_waits_for_the_other_readers_ahead_of_earlier_writers(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    CHECK(acq(t, "r", "a", SH, WAIT) == DS_LOCK_GRANTED);
    CHECK(acq(t, "r", "b", SH, WAIT) == DS_LOCK_GRANTED);
    CHECK(acq(t, "r", "w", EX, WAIT) == DS_LOCK_QUEUED);
    CHECK(acq(t, "r", "a", EX, 0) == DS_LOCK_HELD);
    CHECK(acq(t, "r", "a", EX, WAIT) == DS_LOCK_QUEUED && res.position == 1);
    CHECK(acq(t, "r", "a", EX, WAIT) == DS_LOCK_QUEUED && res.position == 1); /* retry */
    CHECK(ds_lock_check(t, "r", token_of(t, "r", "a"))); /* still reads meanwhile */
    CHECK(rel(t, "r", "b") == DS_LOCK_OK);
    CHECK(res.granted.n == 1 && in_list(&res.granted, "r", "a") && res.granted.v[0].mode == EX);
    CHECK(rel(t, "r", "a") == DS_LOCK_OK && in_list(&res.granted, "r", "w"));
    ds_lock_table_free(t);
}

static void upgrader_that_loses_its_read_hold_stays_queued_for_exclusive(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    CHECK(acq(t, "r", "a", SH, WAIT) == DS_LOCK_GRANTED);
    CHECK(acq(t, "r", "b", SH, WAIT) == DS_LOCK_GRANTED);
    CHECK(acq(t, "r", "a", EX, WAIT) == DS_LOCK_QUEUED);
    CHECK(rel(t, "r", "a") == DS_LOCK_OK && res.granted.n == 0);
    CHECK(acq(t, "r", "a", SH, WAIT) == DS_LOCK_CONFLICT);
    CHECK(rel(t, "r", "b") == DS_LOCK_OK && in_list(&res.granted, "r", "a"));
    CHECK(res.granted.v[0].mode == EX);
    ds_lock_table_free(t);
}

static void downgrade_is_immediate_and_grants_queued_readers(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    CHECK(acq(t, "r", "a", EX, WAIT) == DS_LOCK_GRANTED);
    uint64_t tok = res.token;
    CHECK(acq(t, "r", "s1", SH, WAIT) == DS_LOCK_QUEUED);
    CHECK(acq(t, "r", "s2", SH, WAIT) == DS_LOCK_QUEUED);
    CHECK(acq(t, "r", "w", EX, WAIT) == DS_LOCK_QUEUED);
    CHECK(acq(t, "r", "s3", SH, WAIT) == DS_LOCK_QUEUED);
    CHECK(acq(t, "r", "a", SH, WAIT) == DS_LOCK_GRANTED && res.mode == SH && res.token > tok);
    CHECK(res.granted.n == 2 && in_list(&res.granted, "r", "s1") &&
          in_list(&res.granted, "r", "s2"));
    CHECK(res.holders.n == 3 && nwaiters(t, "r") == 2);
    ds_lock_table_free(t);
}

/* Clients c0..c(n-1): ci holds ri exclusively and waits for r(i+1); c(n-1) asking for r0 closes a
 * cycle of length n. */
static void deadlock_cycles_of_length_2_to_5_are_refused_and_change_nothing(void)
{
    for (int n = 2; n <= 5; n++) {
        struct ds_lock_table *t = ds_lock_table_new();
        char r[16], c[16], r2[16];
        for (int i = 0; i < n; i++) {
            snprintf(r, sizeof(r), "r%d", i);
            snprintf(c, sizeof(c), "c%d", i);
            CHECK(acq(t, r, c, EX, WAIT) == DS_LOCK_GRANTED);
        }
        for (int i = 0; i < n - 1; i++) {
            snprintf(r, sizeof(r), "r%d", i + 1);
            snprintf(c, sizeof(c), "c%d", i);
            CHECK(acq(t, r, c, i % 2 ? SH : EX, WAIT) == DS_LOCK_QUEUED);
        }
        struct ds_lock_table *before = clone_table(t);
        snprintf(c, sizeof(c), "c%d", n - 1);
        CHECKF(acq(t, "r0", c, EX, WAIT) == DS_LOCK_DEADLOCK, "n=%d", n);
        REQUIRE(res.cycle.n == (size_t)n);
        for (int i = 0; i < n; i++) { /* requester first, then c0 .. c(n-2) */
            snprintf(c, sizeof(c), "c%d", (i + n - 1) % n);
            snprintf(r2, sizeof(r2), "r%d", i % n);
            CHECKF(strcmp(res.cycle.v[i].client_id, c) == 0 &&
                   strcmp(res.cycle.v[i].resource, r2) == 0,
                   "n=%d edge %d: %s waits %s", n, i, res.cycle.v[i].client_id,
                   res.cycle.v[i].resource);
        }
        CHECK(same_state(t, before));
        CHECK(acq(t, "r0", "outsider", EX, WAIT) == DS_LOCK_QUEUED); /* no cycle: queued */
        ds_lock_table_free(before);
        ds_lock_table_free(t);
    }
}

static void two_readers_upgrading_together_are_a_deadlock(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    CHECK(acq(t, "r", "a", SH, WAIT) == DS_LOCK_GRANTED);
    CHECK(acq(t, "r", "b", SH, WAIT) == DS_LOCK_GRANTED);
    CHECK(acq(t, "r", "a", EX, WAIT) == DS_LOCK_QUEUED);
    struct ds_lock_table *before = clone_table(t);
    CHECK(acq(t, "r", "b", EX, WAIT) == DS_LOCK_DEADLOCK);
    CHECK(res.cycle.n == 2 && strcmp(res.cycle.v[0].client_id, "b") == 0 &&
          strcmp(res.cycle.v[1].client_id, "a") == 0);
    CHECK(same_state(t, before));
    ds_lock_table_free(before);
    ds_lock_table_free(t);
}

/* a and b read x; a holds z, c holds y; b waits for y, c for z; a's upgrade of x closes
 * a -> b -> c -> a. */
static void upgrade_closing_a_cycle_across_resources_is_refused(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    CHECK(acq(t, "x", "a", SH, WAIT) == DS_LOCK_GRANTED);
    CHECK(acq(t, "x", "b", SH, WAIT) == DS_LOCK_GRANTED);
    CHECK(acq(t, "y", "c", EX, WAIT) == DS_LOCK_GRANTED);
    CHECK(acq(t, "z", "a", EX, WAIT) == DS_LOCK_GRANTED);
    CHECK(acq(t, "y", "b", SH, WAIT) == DS_LOCK_QUEUED);
    CHECK(acq(t, "z", "c", EX, WAIT) == DS_LOCK_QUEUED);
    struct ds_lock_table *before = clone_table(t);
    CHECK(acq(t, "x", "a", EX, WAIT) == DS_LOCK_DEADLOCK);
    CHECK(res.cycle.n == 3 && strcmp(res.cycle.v[0].client_id, "a") == 0 &&
          strcmp(res.cycle.v[1].client_id, "b") == 0 &&
          strcmp(res.cycle.v[2].client_id, "c") == 0);
    CHECK(strcmp(res.cycle.v[0].resource, "x") == 0 && strcmp(res.cycle.v[1].resource, "y") == 0 &&
          strcmp(res.cycle.v[2].resource, "z") == 0);
    CHECK(same_state(t, before));
    struct ds_lock_stats st;
    ds_lock_stats(t, &st);
    CHECK(st.deadlocks == 1);
    ds_lock_table_free(before);
    ds_lock_table_free(t);
}

static void release_needs_the_current_token(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    CHECK(acq(t, "r", "a", EX, WAIT) == DS_LOCK_GRANTED);
    uint64_t tok = res.token;
    CHECK(rel_full(t, "r", "a", tok + 1, NULL) == DS_LOCK_NOT_HOLDER);
    CHECK(rel_full(t, "r", "b", tok, NULL) == DS_LOCK_NOT_HOLDER);
    CHECK(rel_full(t, "r", "a", tok, NULL) == DS_LOCK_OK);
    CHECK(rel_full(t, "r", "a", tok, NULL) == DS_LOCK_NOT_HOLDER);
    CHECK(!ds_lock_check(t, "r", tok));
    ds_lock_table_free(t);
}

static void cancelled_waiter_is_never_granted_and_unblocks_those_behind(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    CHECK(acq(t, "r", "s0", SH, WAIT) == DS_LOCK_GRANTED);
    CHECK(acq(t, "r", "w", EX, WAIT) == DS_LOCK_QUEUED);
    CHECK(acq(t, "r", "s1", SH, WAIT) == DS_LOCK_QUEUED);
    CHECK(cancel(t, "r", "w") == DS_LOCK_OK);
    CHECK(res.granted.n == 1 && in_list(&res.granted, "r", "s1"));
    CHECK(cancel(t, "r", "w") == DS_LOCK_NOT_WAITING);
    CHECK(rel(t, "r", "s0") == DS_LOCK_OK && rel(t, "r", "s1") == DS_LOCK_OK);
    CHECK(!in_list(&res.granted, "r", "w") && token_of(t, "r", "w") == 0);
    CHECK(expire_at(t, now_ms + 10 * TTL) == DS_LOCK_OK && res.granted.n == 0);
    struct ds_lock_stats st;
    ds_lock_stats(t, &st);
    CHECK(st.resources == 0 && st.waiters == 0 && st.cancels == 1);
    ds_lock_table_free(t);
}

static void expire_ends_due_leases_in_deadline_order_and_grants_waiters(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    uint64_t t0 = now_ms;
    CHECK(acq_full(t, "b", "late", EX, WAIT, 3000, NULL) == DS_LOCK_GRANTED);
    CHECK(acq_full(t, "a", "mid", EX, WAIT, 2000, NULL) == DS_LOCK_GRANTED);
    CHECK(acq_full(t, "c", "early", SH, WAIT, 1000, NULL) == DS_LOCK_GRANTED);
    CHECK(acq_full(t, "d", "keep", SH, WAIT, 9000, NULL) == DS_LOCK_GRANTED);
    CHECK(acq(t, "a", "next", EX, WAIT) == DS_LOCK_QUEUED);
    uint64_t dl = 0;
    CHECK(ds_lock_next_deadline(t, &dl) == 0 && dl == t0 + 1000);
    CHECK(expire_at(t, t0 + 999) == DS_LOCK_OK && res.expired.n == 0);
    now_ms = t0 + 3000;
    CHECK(expire_at(t, now_ms) == DS_LOCK_OK);
    REQUIRE(res.expired.n == 3);
    CHECK(strcmp(res.expired.v[0].client_id, "early") == 0);
    CHECK(strcmp(res.expired.v[1].client_id, "mid") == 0);
    CHECK(strcmp(res.expired.v[2].client_id, "late") == 0);
    CHECK(res.granted.n == 1 && in_list(&res.granted, "a", "next"));
    CHECK(res.granted.v[0].deadline_ms == now_ms + TTL);
    CHECK(token_of(t, "d", "keep") != 0);
    CHECK(ds_lock_next_deadline(t, &dl) == 0 && dl == t0 + 9000);
    now_ms = t0;
    ds_lock_table_free(t);
}

static void renew_and_extend_all_move_deadlines(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    CHECK(acq(t, "r", "a", EX, 0) == DS_LOCK_GRANTED);
    uint64_t tok = res.token;
    struct ds_lock_cmd c = mk(DS_LOCK_CMD_RENEW, "r", "a");
    c.token = tok;
    c.ttl_ms = 50000;
    CHECK(run(t, &c) == DS_LOCK_OK && res.deadline_ms == now_ms + 50000);
    c.token = tok + 7;
    CHECK(run(t, &c) == DS_LOCK_NOT_HOLDER);
    c = mk(DS_LOCK_CMD_EXTEND_ALL, NULL, NULL);
    c.extra_ms = 1500;
    CHECK(run(t, &c) == DS_LOCK_OK);
    uint64_t dl = 0;
    CHECK(ds_lock_next_deadline(t, &dl) == 0 && dl == now_ms + 51500);
    c.extra_ms = DS_LOCK_EXTEND_MAX_MS + 1;
    CHECK(run(t, &c) == DS_LOCK_INVALID);
    CHECK(expire_at(t, now_ms + 51499) == DS_LOCK_OK && res.expired.n == 0);
    CHECK(expire_at(t, now_ms + 51500) == DS_LOCK_OK && res.expired.n == 1);
    CHECK(ds_lock_next_deadline(t, &dl) == DS_LOCK_ENOENT);
    ds_lock_table_free(t);
}

static void retried_requests_with_a_request_id_return_the_first_result(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    CHECK(acq_full(t, "r", "a", EX, WAIT, TTL, "req-1") == DS_LOCK_GRANTED);
    uint64_t tok = res.token;
    CHECK(acq_full(t, "r", "b", EX, WAIT, TTL, "req-1") == DS_LOCK_QUEUED); /* other client */
    CHECK(rel_full(t, "r", "a", tok, "req-2") == DS_LOCK_OK && !res.replayed);
    CHECK(in_list(&res.granted, "r", "b"));
    struct ds_lock_table *before = clone_table(t);
    CHECK(rel_full(t, "r", "a", tok, "req-2") == DS_LOCK_OK && res.replayed);
    CHECK(acq_full(t, "r", "a", EX, WAIT, TTL, "req-1") == DS_LOCK_GRANTED && res.replayed);
    CHECK(res.token == tok);
    CHECK(acq_full(t, "r", "b", EX, WAIT, TTL, "req-1") == DS_LOCK_QUEUED && res.position == 1);
    CHECK(same_state(t, before));
    CHECK(acq_full(t, "other", "a", EX, WAIT, TTL, "req-1") == DS_LOCK_CONFLICT);
    CHECK(rel_full(t, "r", "a", tok, "req-1") == DS_LOCK_CONFLICT);
    ds_lock_table_free(before);
    ds_lock_table_free(t);
}

static void idempotency_records_are_dropped_after_the_window(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    uint64_t t0 = now_ms;
    CHECK(acq_full(t, "r", "a", SH, WAIT, TTL, "q") == DS_LOCK_GRANTED);
    uint64_t tok = res.token;
    CHECK(rel_full(t, "r", "a", tok, NULL) == DS_LOCK_OK);
    now_ms = t0 + DS_LOCK_IDEM_WINDOW_MS - 1;
    CHECK(acq_full(t, "r", "a", SH, WAIT, TTL, "q") == DS_LOCK_GRANTED && res.replayed);
    now_ms = t0 + DS_LOCK_IDEM_WINDOW_MS;
    CHECK(acq_full(t, "r", "a", SH, WAIT, TTL, "q") == DS_LOCK_GRANTED && !res.replayed);
    CHECK(res.token > tok);
    struct ds_lock_stats st;
    for (unsigned i = 0; i < DS_LOCK_IDEM_MAX + 10; i++) {
        char id[32];
        snprintf(id, sizeof(id), "n%u", i);
        acq_full(t, "r", "a", SH, WAIT, TTL, id);
    }
    ds_lock_stats(t, &st);
    CHECK(st.idem_records == DS_LOCK_IDEM_MAX);
    CHECK(acq_full(t, "r", "a", SH, WAIT, TTL, "n0") == DS_LOCK_GRANTED && !res.replayed);
    now_ms = t0;
    ds_lock_table_free(t);
}

static void tokens_keep_increasing_across_snapshot_and_restore(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    CHECK(acq(t, "r", "a", EX, WAIT) == DS_LOCK_GRANTED);
    CHECK(rel(t, "r", "a") == DS_LOCK_OK);
    CHECK(acq(t, "r", "a", EX, WAIT) == DS_LOCK_GRANTED);
    uint64_t tok = res.token;
    CHECK(rel(t, "r", "a") == DS_LOCK_OK);
    struct ds_lock_table *u = clone_table(t);
    REQUIRE(u);
    CHECK(acq(u, "r", "b", EX, WAIT) == DS_LOCK_GRANTED && res.token > tok);
    CHECK(acq(u, "s", "b", EX, WAIT) == DS_LOCK_GRANTED && res.token > tok + 1);
    ds_lock_table_free(u);
    ds_lock_table_free(t);
}

static void snapshot_round_trip_gives_an_identical_table(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    acq(t, "x", "a", SH, WAIT);
    acq(t, "x", "b", SH, WAIT);
    acq(t, "x", "a", EX, WAIT); /* upgrade queued */
    acq(t, "x", "c", EX, WAIT);
    acq_full(t, "y", "c", EX, WAIT, 777, "rq");
    acq(t, "y", "d", SH, WAIT);
    acq(t, "z\xff\x01 name", "e", EX, WAIT);
    struct ds_lock_table *u = clone_table(t);
    REQUIRE(u);
    CHECK(same_state(t, u));
    /* the copy behaves identically */
    struct ds_lock_result r1, r2;
    struct ds_lock_cmd c = mk(DS_LOCK_CMD_RELEASE, "x", "b");
    c.token = token_of(t, "x", "b");
    CHECK(ds_lock_apply(t, &c, &r1) == 0 && ds_lock_apply(u, &c, &r2) == 0);
    CHECK(r1.granted.n == 1 && r2.granted.n == 1 && r1.granted.v[0].token == r2.granted.v[0].token);
    CHECK(same_state(t, u));
    ds_lock_result_free(&r1);
    ds_lock_result_free(&r2);
    CHECK(acq_full(u, "y", "c", EX, WAIT, 777, "rq") == DS_LOCK_GRANTED && res.replayed);
    ds_lock_table_free(u);
    ds_lock_table_free(t);
}

static void arguments_outside_the_bounds_are_invalid(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    char longname[DS_LOCK_NAME_MAX + 2];
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    CHECK(acq_full(t, "r", "a", EX, WAIT, DS_LOCK_TTL_MIN_MS - 1, NULL) == DS_LOCK_INVALID);
    CHECK(acq_full(t, "r", "a", EX, WAIT, DS_LOCK_TTL_MAX_MS + 1, NULL) == DS_LOCK_INVALID);
    CHECK(acq_full(t, "r", "a", EX, WAIT, DS_LOCK_TTL_MAX_MS, NULL) == DS_LOCK_GRANTED);
    CHECK(acq(t, "", "a", EX, WAIT) == DS_LOCK_INVALID);
    CHECK(acq(t, "r", "", EX, WAIT) == DS_LOCK_INVALID);
    CHECK(acq(t, "r", "a", 3, WAIT) == DS_LOCK_INVALID);
    struct ds_lock_cmd c = mk(DS_LOCK_CMD_ACQUIRE, "r", "a");
    memcpy(c.resource, longname, DS_LOCK_NAME_MAX + 1); /* no NUL within the bound */
    c.mode = EX;
    c.ttl_ms = TTL;
    CHECK(run(t, &c) == DS_LOCK_INVALID);
    c = mk(DS_LOCK_CMD_EXPIRE, NULL, NULL);
    c.now_ms = DS_LOCK_TIME_MAX + 1;
    CHECK(run(t, &c) == DS_LOCK_INVALID);
    c.type = 99;
    CHECK(run(t, &c) == DS_LOCK_INVALID);
    ds_lock_table_free(t);
}

static void listing_is_sorted_by_resource_name(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    static const char *names[] = { "m", "b", "zz", "a", "q", "c" };
    for (size_t i = 0; i < 6; i++)
        CHECK(acq(t, names[i], "x", SH, 0) == DS_LOCK_GRANTED);
    struct ds_lock_list l = { 0 };
    CHECK(ds_lock_list_held(t, &l) == 0 && l.n == 6);
    for (size_t i = 1; i < l.n; i++)
        CHECK(strcmp(l.v[i - 1].resource, l.v[i].resource) < 0);
    ds_lock_list_free(&l);
    uint8_t mode;
    struct ds_lock_list h = { 0 }, w = { 0 };
    CHECK(ds_lock_query(t, "nope", &mode, &h, &w) == DS_LOCK_ENOENT && mode == 0);
    CHECK(ds_lock_query(t, "m", &mode, &h, &w) == 0 && mode == SH && h.n == 1 && w.n == 0);
    ds_lock_list_free(&h);
    ds_lock_list_free(&w);
    ds_lock_table_free(t);
}

static void stats_count_holds_waiters_and_events(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    acq(t, "r", "a", EX, WAIT);
    acq(t, "r", "b", SH, WAIT);
    acq(t, "s", "b", SH, WAIT);
    acq(t, "s", "c", SH, WAIT);
    rel(t, "s", "c");
    struct ds_lock_stats st;
    ds_lock_stats(t, &st);
    CHECK(st.held_exclusive == 1 && st.held_shared == 1 && st.waiters == 1);
    CHECK(st.grants == 3 && st.releases == 1 && st.resources == 2);
    expire_at(t, now_ms + TTL);
    ds_lock_stats(t, &st);
    CHECK(st.expiries == 2 && st.grants == 4 && st.held_shared == 1 && st.waiters == 0);
    CHECK(strcmp(ds_lock_status_name(DS_LOCK_HELD), "lock_held") == 0);
    CHECK(strcmp(ds_lock_status_name(42), "unknown") == 0);
    CHECK(strcmp(ds_lock_mode_name(SH), "shared") == 0);
    CHECK(strcmp(ds_lock_strerror(DS_LOCK_EDECODE), "malformed lock command or snapshot") == 0);
    ds_lock_table_free(t);
}

/* ---------------------------------------------------------------- wait deadlines */

/* The waiter the tests below look at: `cl` is the only entry of res.timed_out. */
static int timed_out_alone(const char *r, const char *cl, uint64_t since, uint64_t deadline)
{
    return res.timed_out.n == 1 && strcmp(res.timed_out.v[0].resource, r) == 0 &&
           strcmp(res.timed_out.v[0].client_id, cl) == 0 &&
           res.timed_out.v[0].since_ms == since && res.timed_out.v[0].deadline_ms == deadline;
}

/* b waits 1000 ms for a's lock; a releases 1 ms before b's wait ends, or right when it ends. */
static void waiter_is_never_granted_by_a_command_at_or_after_its_deadline(void)
{
    uint64_t t0 = now_ms;
    for (int late = 0; late <= 2; late++) {
        struct ds_lock_table *t = ds_lock_table_new();
        CHECK(acq(t, "r", "a", EX, 0) == DS_LOCK_GRANTED);
        uint64_t tok = res.token;
        CHECK(acq(t, "r", "b", EX, 1000) == DS_LOCK_QUEUED);
        now_ms = t0 + 999 + (uint64_t)late;
        CHECK(rel_full(t, "r", "a", tok, NULL) == DS_LOCK_OK);
        if (late) {
            CHECKF(res.granted.n == 0 && timed_out_alone("r", "b", t0, t0 + 1000), "late %d",
                   late);
            CHECK(res.timed_out.v[0].mode == EX && res.timed_out.v[0].upgrade == 0);
        } else {
            CHECK(res.timed_out.n == 0 && in_list(&res.granted, "r", "b"));
        }
        CHECKF((token_of(t, "r", "b") == 0) == (late > 0), "late %d", late);
        struct ds_lock_stats st;
        ds_lock_stats(t, &st);
        CHECK(st.wait_timeouts == (late ? 1u : 0u) && st.waiters == 0);
        CHECK(st.resources == (late ? 0u : 1u));
        now_ms = t0;
        ds_lock_table_free(t);
    }
}

/* Whatever command comes first at or after the deadline ends the wait, before its own work. */
static void any_command_type_times_out_due_waiters_first(void)
{
    static const enum ds_lock_cmd_type types[] = {
        DS_LOCK_CMD_ACQUIRE, DS_LOCK_CMD_RELEASE, DS_LOCK_CMD_RENEW, DS_LOCK_CMD_CANCEL_WAIT,
        DS_LOCK_CMD_EXPIRE, DS_LOCK_CMD_EXTEND_ALL,
    };
    uint64_t t0 = now_ms;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        struct ds_lock_table *t = ds_lock_table_new();
        CHECK(acq(t, "r", "a", EX, 0) == DS_LOCK_GRANTED);
        CHECK(acq(t, "r", "b", SH, 250) == DS_LOCK_QUEUED);
        now_ms = t0 + 250;
        struct ds_lock_cmd c = mk(types[i], "other", "x"); /* unrelated to r */
        c.mode = EX;
        c.ttl_ms = TTL;
        CHECKF(run(t, &c) != DS_LOCK_INVALID, "type %d", types[i]);
        CHECKF(timed_out_alone("r", "b", t0, t0 + 250) && nwaiters(t, "r") == 0, "type %d",
               types[i]);
        CHECK(token_of(t, "r", "a") != 0);
        now_ms = t0;
        ds_lock_table_free(t);
    }
}

static void expire_at_a_wait_deadline_times_the_waiter_out_and_grants_the_next(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    uint64_t t0 = now_ms, dl = 0;
    CHECK(acq(t, "r", "a", SH, 0) == DS_LOCK_GRANTED);
    CHECK(acq(t, "r", "w", EX, 500) == DS_LOCK_QUEUED);
    CHECK(acq(t, "r", "s", SH, 5000) == DS_LOCK_QUEUED && res.position == 2);
    CHECK(ds_lock_next_deadline(t, &dl) == 0 && dl == t0 + 500);
    CHECK(expire_at(t, t0 + 499) == DS_LOCK_OK && res.timed_out.n == 0 && res.granted.n == 0);
    CHECK(ds_lock_next_deadline(t, &dl) == 0 && dl == t0 + 500);
    CHECK(expire_at(t, t0 + 500) == DS_LOCK_OK && timed_out_alone("r", "w", t0, t0 + 500));
    CHECK(res.expired.n == 0 && res.granted.n == 1 && in_list(&res.granted, "r", "s"));
    CHECK(res.granted.v[0].deadline_ms == t0 + 500 + TTL && res.granted.v[0].mode == SH);
    CHECK(ds_lock_check(t, "r", res.granted.v[0].token) && nwaiters(t, "r") == 0);
    CHECK(ds_lock_next_deadline(t, &dl) == 0 && dl == t0 + TTL); /* a's lease */
    ds_lock_table_free(t);
}

static void next_deadline_is_the_earliest_lease_or_wait_and_extend_all_moves_only_leases(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    uint64_t t0 = now_ms, dl = 0;
    CHECK(acq(t, "r", "a", EX, 0) == DS_LOCK_GRANTED); /* lease ends at t0 + TTL */
    CHECK(acq(t, "r", "late", EX, 2 * TTL) == DS_LOCK_QUEUED);
    CHECK(ds_lock_next_deadline(t, &dl) == 0 && dl == t0 + TTL);
    CHECK(acq(t, "r", "soon", EX, 3000) == DS_LOCK_QUEUED);
    CHECK(ds_lock_next_deadline(t, &dl) == 0 && dl == t0 + 3000);
    struct ds_lock_cmd c = mk(DS_LOCK_CMD_EXTEND_ALL, NULL, NULL);
    c.extra_ms = 1500;
    CHECK(run(t, &c) == DS_LOCK_OK);
    CHECK(ds_lock_next_deadline(t, &dl) == 0 && dl == t0 + 3000);
    CHECK(cancel(t, "r", "soon") == DS_LOCK_OK);
    CHECK(ds_lock_next_deadline(t, &dl) == 0 && dl == t0 + TTL + 1500);
    CHECK(expire_at(t, t0 + TTL + 1500) == DS_LOCK_OK && in_list(&res.granted, "r", "late"));
    CHECK(ds_lock_next_deadline(t, &dl) == 0 && dl == t0 + TTL + 1500 + TTL);
    ds_lock_table_free(t);
}

static void upgrade_that_times_out_keeps_the_shared_hold(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    uint64_t t0 = now_ms;
    CHECK(acq(t, "r", "a", SH, 0) == DS_LOCK_GRANTED);
    uint64_t ta = res.token;
    CHECK(acq(t, "r", "b", SH, 0) == DS_LOCK_GRANTED);
    CHECK(acq(t, "r", "a", EX, 300) == DS_LOCK_QUEUED && res.position == 1);
    CHECK(acq(t, "r", "s", SH, WAIT) == DS_LOCK_QUEUED && res.position == 2);
    now_ms = t0 + 300;
    struct ds_lock_cmd c = mk(DS_LOCK_CMD_RENEW, "r", "b");
    c.token = token_of(t, "r", "b");
    c.ttl_ms = TTL;
    CHECK(run(t, &c) == DS_LOCK_OK && timed_out_alone("r", "a", t0, t0 + 300));
    CHECK(res.timed_out.v[0].upgrade == 1 && res.timed_out.v[0].mode == EX);
    CHECK(res.granted.n == 1 && in_list(&res.granted, "r", "s")); /* the upgrade blocked s */
    CHECK(token_of(t, "r", "a") == ta && ds_lock_check(t, "r", ta));
    uint8_t mode;
    struct ds_lock_list h = { 0 }, w = { 0 };
    CHECK(ds_lock_query(t, "r", &mode, &h, &w) == 0 && mode == SH && h.n == 3 && w.n == 0);
    ds_lock_list_free(&h);
    ds_lock_list_free(&w);
    CHECK(acq(t, "r", "a", EX, 300) == DS_LOCK_QUEUED); /* it may ask again */
    now_ms = t0;
    ds_lock_table_free(t);
}

static void a_retry_while_queued_lengthens_the_wait_but_never_shortens_it(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    uint64_t t0 = now_ms;
    CHECK(acq(t, "r", "a", EX, 0) == DS_LOCK_GRANTED);
    CHECK(acq(t, "r", "b", EX, 1000) == DS_LOCK_QUEUED);
    now_ms = t0 + 500;
    CHECK(acq(t, "r", "b", EX, 2000) == DS_LOCK_QUEUED && res.position == 1);
    now_ms = t0 + 600;
    CHECK(acq(t, "r", "b", EX, 100) == DS_LOCK_QUEUED);
    CHECK(acq(t, "r", "b", EX, 0) == DS_LOCK_QUEUED);
    CHECK(expire_at(t, t0 + 2499) == DS_LOCK_OK && res.timed_out.n == 0);
    CHECK(expire_at(t, t0 + 2500) == DS_LOCK_OK && timed_out_alone("r", "b", t0, t0 + 2500));
    now_ms = t0;
    ds_lock_table_free(t);
}

static void an_idempotent_replay_still_times_out_due_waiters(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    uint64_t t0 = now_ms;
    CHECK(acq_full(t, "r", "a", EX, 0, TTL, "q") == DS_LOCK_GRANTED);
    uint64_t tok = res.token;
    CHECK(acq(t, "r", "b", EX, 100) == DS_LOCK_QUEUED);
    now_ms = t0 + 100;
    CHECK(acq_full(t, "r", "a", EX, 0, TTL, "q") == DS_LOCK_GRANTED && res.replayed);
    CHECK(res.token == tok && timed_out_alone("r", "b", t0, t0 + 100));
    CHECK(nwaiters(t, "r") == 0);
    now_ms = t0;
    ds_lock_table_free(t);
}

static void wait_bounds_are_checked_and_an_invalid_command_purges_nothing(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    uint64_t t0 = now_ms;
    CHECK(acq(t, "r", "a", EX, 0) == DS_LOCK_GRANTED);
    CHECK(acq(t, "r", "b", EX, DS_LOCK_WAIT_MAX_MS + 1) == DS_LOCK_INVALID);
    CHECK(acq(t, "r", "b", EX, DS_LOCK_WAIT_MAX_MS) == DS_LOCK_QUEUED);
    CHECK(acq(t, "r", "c", EX, 1) == DS_LOCK_QUEUED);
    uint64_t dl = 0;
    CHECK(ds_lock_next_deadline(t, &dl) == 0 && dl == t0 + 1);
    now_ms = t0 + DS_LOCK_WAIT_MAX_MS;
    CHECK(acq(t, "r", "d", 3, WAIT) == DS_LOCK_INVALID && res.timed_out.n == 0);
    CHECK(nwaiters(t, "r") == 2);
    CHECK(expire_at(t, now_ms) == DS_LOCK_OK && res.timed_out.n == 2);
    CHECK(strcmp(res.timed_out.v[0].client_id, "b") == 0 &&
          res.timed_out.v[0].deadline_ms == t0 + DS_LOCK_WAIT_MAX_MS);
    now_ms = t0;
    ds_lock_table_free(t);
}

static void timeouts_are_reported_by_resource_name_then_queue_order(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    uint64_t t0 = now_ms;
    static const char *const res_names[] = { "m", "b", "z" };
    for (size_t i = 0; i < 3; i++) {
        CHECK(acq(t, res_names[i], "h", EX, 0) == DS_LOCK_GRANTED);
        CHECK(acq(t, res_names[i], "w2", EX, 900) == DS_LOCK_QUEUED);
        CHECK(acq(t, res_names[i], "w1", SH, 800) == DS_LOCK_QUEUED);
    }
    CHECK(expire_at(t, t0 + 900) == DS_LOCK_OK);
    static const char *const want[][2] = { { "b", "w2" }, { "b", "w1" }, { "m", "w2" },
                                           { "m", "w1" }, { "z", "w2" }, { "z", "w1" } };
    REQUIRE(res.timed_out.n == 6);
    for (size_t i = 0; i < 6; i++)
        CHECKF(strcmp(res.timed_out.v[i].resource, want[i][0]) == 0 &&
               strcmp(res.timed_out.v[i].client_id, want[i][1]) == 0, "entry %zu: %s %s", i,
               res.timed_out.v[i].resource, res.timed_out.v[i].client_id);
    now_ms = t0;
    ds_lock_table_free(t);
}

static void snapshot_round_trip_keeps_wait_deadlines(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    uint64_t t0 = now_ms;
    CHECK(acq(t, "r", "a", EX, 0) == DS_LOCK_GRANTED);
    CHECK(acq(t, "r", "b", EX, 700) == DS_LOCK_QUEUED);
    CHECK(acq(t, "r", "c", SH, 1500) == DS_LOCK_QUEUED);
    now_ms = t0 + 100;
    CHECK(acq(t, "r", "d", SH, 200) == DS_LOCK_QUEUED);
    struct ds_lock_table *u = clone_table(t);
    REQUIRE(u);
    CHECK(same_state(t, u));
    static const uint64_t ends[] = { 700, 1500, 300 };
    uint8_t mode;
    struct ds_lock_list h = { 0 }, w = { 0 };
    CHECK(ds_lock_query(u, "r", &mode, &h, &w) == 0 && w.n == 3);
    for (size_t i = 0; i < w.n && i < 3; i++)
        CHECKF(w.v[i].deadline_ms == t0 + ends[i], "waiter %zu", i);
    ds_lock_list_free(&h);
    ds_lock_list_free(&w);
    uint64_t d1 = 0, d2 = 0;
    CHECK(ds_lock_next_deadline(u, &d2) == 0 && ds_lock_next_deadline(t, &d1) == 0);
    CHECK(d1 == t0 + 300 && d2 == d1);
    CHECK(expire_at(u, t0 + 700) == DS_LOCK_OK && res.timed_out.n == 2);
    CHECK(strcmp(res.timed_out.v[0].client_id, "b") == 0 &&
          strcmp(res.timed_out.v[1].client_id, "d") == 0);
    CHECK(expire_at(t, t0 + 700) == DS_LOCK_OK && res.timed_out.n == 2);
    CHECK(same_state(t, u) && nwaiters(u, "r") == 1);
    now_ms = t0;
    ds_lock_table_free(u);
    ds_lock_table_free(t);
}

/* A summary of the last result: status, token and the lists' clients, tokens and deadlines. */
static void summarize(char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "%d/%d/%llu", res.status, res.replayed,
                                (unsigned long long)res.token);
    const struct ds_lock_list *lists[] = { &res.granted, &res.timed_out, &res.expired };
    for (size_t l = 0; l < 3 && n < cap; l++)
        for (size_t i = 0; i < lists[l]->n && n < cap; i++)
            n += (size_t)snprintf(buf + n, cap - n, " %zu:%s@%s:%llu:%llu", l,
                                  lists[l]->v[i].client_id, lists[l]->v[i].resource,
                                  (unsigned long long)lists[l]->v[i].token,
                                  (unsigned long long)lists[l]->v[i].deadline_ms);
}

/* Commands with waits that end on the way; the table snapshotted midway and the rest replayed on
 * the copy gives the same results and the same final table. */
static void replay_from_a_midway_snapshot_stays_identical(void)
{
    enum { N = 14, MID = 6 };
    static const struct {
        int type;
        const char *r, *cl;
        int mode;
        uint32_t wait, dt; /* wait_ms, time since the previous command */
    } plan[N] = {
        { DS_LOCK_CMD_ACQUIRE, "x", "a", SH, 0, 0 },
        { DS_LOCK_CMD_ACQUIRE, "x", "b", SH, 0, 10 },
        { DS_LOCK_CMD_ACQUIRE, "x", "a", EX, 400, 10 },
        { DS_LOCK_CMD_ACQUIRE, "x", "c", SH, 900, 10 },
        { DS_LOCK_CMD_ACQUIRE, "y", "c", EX, 0, 10 },
        { DS_LOCK_CMD_ACQUIRE, "y", "d", EX, 300, 10 },
        { DS_LOCK_CMD_ACQUIRE, "y", "e", SH, 2000, 50 },
        { DS_LOCK_CMD_EXPIRE, NULL, NULL, 0, 0, 300 },
        { DS_LOCK_CMD_ACQUIRE, "x", "f", EX, 100, 50 },
        { DS_LOCK_CMD_CANCEL_WAIT, "y", "e", 0, 0, 10 },
        { DS_LOCK_CMD_ACQUIRE, "y", "e", SH, 600, 10 },
        { DS_LOCK_CMD_EXPIRE, NULL, NULL, 0, 0, 500 },
        { DS_LOCK_CMD_EXPIRE, NULL, NULL, 0, 0, TTL },
        { DS_LOCK_CMD_EXPIRE, NULL, NULL, 0, 0, TTL },
    };
    static char first[N][512], again[N][512];
    uint64_t t0 = now_ms;
    struct ds_lock_cmd cmds[N];
    struct ds_lock_table *t = ds_lock_table_new(), *mid = NULL;
    unsigned long timeouts = 0;
    for (size_t i = 0; i < N; i++) {
        if (i == MID)
            mid = clone_table(t);
        now_ms += plan[i].dt;
        cmds[i] = mk((enum ds_lock_cmd_type)plan[i].type, plan[i].r, plan[i].cl);
        cmds[i].mode = (uint8_t)plan[i].mode;
        cmds[i].wait_ms = plan[i].wait;
        cmds[i].ttl_ms = plan[i].type == DS_LOCK_CMD_ACQUIRE ? TTL : 0;
        CHECKF(run(t, &cmds[i]) != DS_LOCK_INVALID, "command %zu", i);
        timeouts += res.timed_out.n;
        summarize(first[i], sizeof(first[i]));
    }
    REQUIRE(mid);
    for (size_t i = MID; i < N; i++) {
        run(mid, &cmds[i]);
        summarize(again[i], sizeof(again[i]));
        CHECKF(strcmp(first[i], again[i]) == 0, "command %zu: %s vs %s", i, first[i], again[i]);
    }
    CHECK(same_state(t, mid));
    CHECKF(timeouts >= 4, "only %lu waits timed out: the plan misses its purpose", timeouts);
    now_ms = t0;
    ds_lock_table_free(mid);
    ds_lock_table_free(t);
}

static void hash_map_finds_every_key_through_random_inserts_and_deletes(void)
{
    enum { N = 2000 };
    static char keys[N][12];
    static int present[N];
    struct ds_lock_map m = { 0 };
    struct ds_prng p;
    ds_prng_seed(&p, 7);
    memset(present, 0, sizeof(present));
    for (int i = 0; i < N; i++)
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
    for (int round = 0; round < 20000; round++) {
        int i = (int)ds_prng_below(&p, N);
        if (present[i])
            ds_lock_map_del(&m, keys[i], strlen(keys[i]));
        else
            REQUIRE(ds_lock_map_put(&m, keys[i], strlen(keys[i]), keys[i]) == 0);
        present[i] = !present[i];
    }
    size_t n = 0;
    for (int i = 0; i < N; i++) {
        void *v = ds_lock_map_get(&m, keys[i], strlen(keys[i]));
        CHECKF(present[i] ? v == keys[i] : v == NULL, "key %s", keys[i]);
        n += (size_t)present[i];
    }
    CHECK(m.n == n);
    ds_lock_map_free(&m);
}

static void every_return_code_has_a_message(void)
{
    CHECK(strcmp(ds_lock_strerror(0), "success") == 0);
    for (int rc = DS_LOCK_ENOMEM; rc <= DS_LOCK_ENOENT; rc++)
        CHECK(strcmp(ds_lock_strerror(rc), "unknown lock error") != 0);
    CHECK(strcmp(ds_lock_strerror(99), "unknown lock error") == 0);
    for (int st = DS_LOCK_OK; st <= DS_LOCK_CONFLICT; st++)
        CHECK(strcmp(ds_lock_status_name(st), "unknown") != 0);
    CHECK(strcmp(ds_lock_mode_name(EX), "exclusive") == 0);
    CHECK(strcmp(ds_lock_mode_name(0), "none") == 0);
}

int main(void)
{
    RUN(compatibility_matrix_grants_only_shared_with_shared);
    RUN(queued_exclusive_blocks_later_shared_requests);
    RUN(waiters_are_granted_in_fifo_order_with_runs_of_readers);
    RUN(starvation_bound_holds_under_a_stream_of_later_requests);
    RUN(reacquire_in_the_same_mode_keeps_the_token_and_refreshes_the_lease);
    RUN(upgrade_of_a_lone_reader_is_immediate_with_a_new_token);
    RUN(upgrade_waits_for_the_other_readers_ahead_of_earlier_writers);
    RUN(upgrader_that_loses_its_read_hold_stays_queued_for_exclusive);
    RUN(downgrade_is_immediate_and_grants_queued_readers);
    RUN(deadlock_cycles_of_length_2_to_5_are_refused_and_change_nothing);
    RUN(two_readers_upgrading_together_are_a_deadlock);
    RUN(upgrade_closing_a_cycle_across_resources_is_refused);
    RUN(release_needs_the_current_token);
    RUN(cancelled_waiter_is_never_granted_and_unblocks_those_behind);
    RUN(expire_ends_due_leases_in_deadline_order_and_grants_waiters);
    RUN(renew_and_extend_all_move_deadlines);
    RUN(retried_requests_with_a_request_id_return_the_first_result);
    RUN(idempotency_records_are_dropped_after_the_window);
    RUN(tokens_keep_increasing_across_snapshot_and_restore);
    RUN(snapshot_round_trip_gives_an_identical_table);
    RUN(arguments_outside_the_bounds_are_invalid);
    RUN(listing_is_sorted_by_resource_name);
    RUN(stats_count_holds_waiters_and_events);
    RUN(waiter_is_never_granted_by_a_command_at_or_after_its_deadline);
    RUN(any_command_type_times_out_due_waiters_first);
    RUN(expire_at_a_wait_deadline_times_the_waiter_out_and_grants_the_next);
    RUN(next_deadline_is_the_earliest_lease_or_wait_and_extend_all_moves_only_leases);
    RUN(upgrade_that_times_out_keeps_the_shared_hold);
    RUN(a_retry_while_queued_lengthens_the_wait_but_never_shortens_it);
    RUN(an_idempotent_replay_still_times_out_due_waiters);
    RUN(wait_bounds_are_checked_and_an_invalid_command_purges_nothing);
    RUN(timeouts_are_reported_by_resource_name_then_queue_order);
    RUN(snapshot_round_trip_keeps_wait_deadlines);
    RUN(replay_from_a_midway_snapshot_stays_identical);
    RUN(hash_map_finds_every_key_through_random_inserts_and_deletes);
    RUN(every_return_code_has_a_message);
    ds_lock_result_free(&res);
    return check_summary();
}
