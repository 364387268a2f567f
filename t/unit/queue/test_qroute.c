/* Tests of queue routing and naming: partitions, ring keys, Redis key names, client message ids
 * (including hostile ids) and how partitions spread and move over shards. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "core/prng.h"
#include "ring/ring.h"
#include "roles/queue/qroute.h"

static uint64_t seed;

static void a_key_always_maps_to_the_same_partition_in_range(void)
{
    for (int i = 0; i < 1000; i++) {
        char key[32];
        snprintf(key, sizeof key, "order-%d", i);
        uint32_t p = ds_qroute_partition(key, strlen(key), 8, (uint64_t)i);
        CHECK(p < 8);
        CHECK(p == ds_qroute_partition(key, strlen(key), 8, 12345));
    }
}

static void messages_without_a_key_go_round_robin(void)
{
    for (uint64_t rr = 0; rr < 32; rr++)
        CHECK(ds_qroute_partition(NULL, 0, 8, rr) == rr % 8);
}

static void keys_spread_evenly_over_partitions(void)
{
    unsigned count[16] = {0};
    for (int i = 0; i < 16000; i++) {
        char key[32];
        snprintf(key, sizeof key, "user:%d", i);
        count[ds_qroute_partition(key, strlen(key), 16, 0)]++;
    }
    for (int p = 0; p < 16; p++)
        CHECKF(count[p] > 800 && count[p] < 1200, "partition %d has %u of 16000", p, count[p]);
}

static void the_dead_letter_queue_shares_the_ring_keys_of_its_queue(void)
{
    char a[DS_QROUTE_KEY_MAX], b[DS_QROUTE_KEY_MAX], dlq[DS_QROUTE_NAME_MAX + 8];
    REQUIRE(ds_qroute_dlq_name("orders", dlq, sizeof dlq) == 0);
    CHECK(strcmp(dlq, "orders.dlq") == 0);
    CHECK(ds_qroute_is_dlq(dlq));
    CHECK(!ds_qroute_is_dlq("orders"));
    CHECK(!ds_qroute_is_dlq(".dlq"));
    REQUIRE(ds_qroute_ring_key("orders", 3, a, sizeof a) == 0);
    REQUIRE(ds_qroute_ring_key(dlq, 3, b, sizeof b) == 0);
    CHECK(strcmp(a, "orders/3") == 0);
    CHECK(strcmp(a, b) == 0);
}

static void stream_keys_follow_the_documented_naming(void)
{
    char k[DS_QROUTE_KEY_MAX];
    REQUIRE(ds_qroute_stream_key("orders", 7, k, sizeof k) == 0);
    CHECK(strcmp(k, "dsq:{orders}:7") == 0);
    REQUIRE(ds_qroute_stream_key("orders.dlq", 0, k, sizeof k) == 0);
    CHECK(strcmp(k, "dsq:{orders.dlq}:0") == 0);
    char small[8];
    CHECK(ds_qroute_stream_key("orders", 7, small, sizeof small) == DS_QROUTE_ERANGE);
}

static void names_are_letters_digits_dot_underscore_dash(void)
{
    CHECK(ds_qroute_name_valid("orders-2024_v1.x"));
    CHECK(!ds_qroute_name_valid(""));
    CHECK(!ds_qroute_name_valid("a b"));
    CHECK(!ds_qroute_name_valid("a{b}"));
    CHECK(!ds_qroute_name_valid("a@b"));
    CHECK(!ds_qroute_name_valid("~ready"));
    CHECK(!ds_qroute_name_valid("caf\xc3\xa9"));
    char longname[DS_QROUTE_NAME_MAX + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    CHECK(!ds_qroute_name_valid(longname));
    longname[DS_QROUTE_NAME_MAX] = 0;
    CHECK(ds_qroute_name_valid(longname));
}

static void ids_round_trip_through_prefix_and_parse(void)
{
    struct ds_prng r;
    ds_prng_seed(&r, seed);
    for (int i = 0; i < 2000; i++) {
        uint32_t tag = (uint32_t)ds_prng_next(&r), p = (uint32_t)ds_prng_below(&r, 1024);
        uint64_t ms = ds_prng_next(&r), sq = ds_prng_below(&r, 1000);
        char id[DS_QROUTE_ID_MAX], prefix[32];
        REQUIRE(ds_qroute_id_prefix(tag, p, prefix, sizeof prefix) == 0);
        snprintf(id, sizeof id, "%s%" PRIu64 "-%" PRIu64, prefix, ms, sq);
        struct ds_qroute_id out;
        REQUIRE(ds_qroute_id_parse(id, strlen(id), 1024, &out) == 0);
        CHECK(out.tag == tag);
        CHECK(out.partition == p);
        char sid[DS_QROUTE_SID_MAX];
        snprintf(sid, sizeof sid, "%" PRIu64 "-%" PRIu64, ms, sq);
        CHECKF(strcmp(out.sid, sid) == 0, "%s vs %s (DS_SEED=%" PRIu64 ")", out.sid, sid, seed);
    }
}

static void malformed_ids_are_refused(void)
{
    static const char *const bad[] = {
        "", ".", "a681dfaf", "a681dfaf.", "a681dfaf.2.", "a681dfaf.2.1", "a681dfaf.2.-1",
        "a681dfaf.2.1-", "A681DFAF.2.1-0", "a681dfa.2.1-0", "a681dfafx2.1-0", "a681dfaf.02.1-0",
        "a681dfaf..1-0", "a681dfaf.2.1-0 ", "a681dfaf.2.1--0", "a681dfaf.2.+1-0",
        "a681dfaf.2.1-0-0", "a681dfaf.8.1-0", "a681dfaf.99999.1-0",
        "a681dfaf.2.123456789012345678901-0", "g681dfaf.2.1-0", "a681dfaf.2.1\0-0",
    };
    struct ds_qroute_id out;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECKF(ds_qroute_id_parse(bad[i], strlen(bad[i]), 8, &out) != 0, "accepted '%s'", bad[i]);
    CHECK(ds_qroute_id_parse("a681dfaf.7.1-0", 14, 8, &out) == 0);
    CHECK(ds_qroute_id_parse("a681dfaf.2.1\0-0", 15, 8, &out) != 0);
}

static void random_bytes_never_crash_the_id_parser(void)
{
    struct ds_prng r;
    ds_prng_seed(&r, seed ^ 0x5eed);
    static const char alphabet[] = "0123456789abcdef.-xA\0 ";
    for (int i = 0; i < 200000; i++) {
        char buf[80];
        size_t len = (size_t)ds_prng_below(&r, sizeof buf);
        for (size_t j = 0; j < len; j++)
            buf[j] = alphabet[ds_prng_below(&r, sizeof alphabet - 1)];
        struct ds_qroute_id out;
        if (ds_qroute_id_parse(buf, len, 16, &out) == 0) {
            CHECK(out.partition < 16);
            CHECK(ds_qroute_sid_valid(out.sid, strlen(out.sid)));
        }
    }
}

static void consumer_names_carry_their_visibility(void)
{
    char name[DS_QROUTE_NAME_MAX + 24], back[DS_QROUTE_NAME_MAX + 1];
    uint64_t vis = 0;
    REQUIRE(ds_qroute_consumer_name("worker-1", 30000, name, sizeof name) == 0);
    CHECK(strcmp(name, "worker-1@30000") == 0);
    REQUIRE(ds_qroute_consumer_parse(name, back, sizeof back, &vis) == 0);
    CHECK(strcmp(back, "worker-1") == 0);
    CHECK(vis == 30000);
    CHECK(ds_qroute_consumer_parse(DS_QROUTE_READY, back, sizeof back, &vis) != 0);
    CHECK(ds_qroute_consumer_parse("@5", back, sizeof back, &vis) != 0);
    CHECK(ds_qroute_consumer_parse("w@", back, sizeof back, &vis) != 0);
    CHECK(ds_qroute_consumer_parse("w@5x", back, sizeof back, &vis) != 0);
    char tiny[4];
    CHECK(ds_qroute_consumer_parse("worker@5", tiny, sizeof tiny, &vis) == DS_QROUTE_ERANGE);
}

static struct ds_ring *shard_ring(int n)
{
    static const char *const addrs[] = {"10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379",
                                        "10.0.0.4:6379"};
    struct ds_ring_member m[4];
    for (int i = 0; i < n; i++)
        m[i] = (struct ds_ring_member){.id = addrs[i], .weight = 0};
    struct ds_ring *r = NULL;
    return ds_ring_build(m, (size_t)n, 0, &r) ? NULL : r;
}

static void partitions_of_many_queues_balance_and_a_new_shard_takes_about_a_quarter(void)
{
    struct ds_ring *three = shard_ring(3), *four = shard_ring(4);
    REQUIRE(three && four);
    unsigned share[3] = {0}, moved = 0, total = 0;
    for (int q = 0; q < 500; q++) {
        char queue[32];
        snprintf(queue, sizeof queue, "queue-%d", q);
        for (uint32_t p = 0; p < 8; p++) {
            char key[DS_QROUTE_KEY_MAX];
            size_t a, b;
            REQUIRE(ds_qroute_ring_key(queue, p, key, sizeof key) == 0);
            REQUIRE(ds_ring_lookup(three, key, strlen(key), &a) == 0);
            REQUIRE(ds_ring_lookup(four, key, strlen(key), &b) == 0);
            share[a]++;
            total++;
            /* members are numbered by id order; the new shard is the last id */
            if (strcmp(ds_ring_member_id(three, a), ds_ring_member_id(four, b)) != 0) {
                moved++;
                CHECK(strcmp(ds_ring_member_id(four, b), "10.0.0.4:6379") == 0);
            }
        }
    }
    for (int i = 0; i < 3; i++)
        CHECKF(share[i] > total * 28 / 100 && share[i] < total * 39 / 100,
               "shard %d holds %u of %u partitions", i, share[i], total);
    printf("# moved %.1f%% of partitions when a 4th shard joined (ideal 25%%)\n",
           100.0 * moved / total);
    CHECKF(moved > total * 18 / 100 && moved < total * 32 / 100, "moved %u of %u", moved, total);
    ds_ring_free(three);
    ds_ring_free(four);
}

static void a_down_shard_sends_its_partitions_to_the_next_live_one(void)
{
    struct ds_ring *r = shard_ring(3);
    REQUIRE(r);
    char key[DS_QROUTE_KEY_MAX];
    REQUIRE(ds_qroute_ring_key("orders", 1, key, sizeof key) == 0);
    size_t order[3], got = 0, owner;
    REQUIRE(ds_ring_lookup_n(r, key, strlen(key), 3, order, &got) == 0 && got == 3);
    ds_ring_set_live(r, order[0], false);
    REQUIRE(ds_ring_lookup_live(r, key, strlen(key), &owner) == 0);
    CHECK(owner == order[1]);
    ds_ring_free(r);
}

static void every_error_code_has_a_distinct_message(void)
{
    const char *ok = ds_qroute_strerror(DS_QROUTE_OK), *inval = ds_qroute_strerror(DS_QROUTE_EINVAL),
               *range = ds_qroute_strerror(DS_QROUTE_ERANGE), *other = ds_qroute_strerror(99);
    CHECK(strcmp(ok, inval) && strcmp(inval, range) && strcmp(range, other) && strcmp(ok, range));
}

/* Keys are built without snprintf: each fits exactly when the buffer has room for it and its NUL,
 * and is DS_QROUTE_ERANGE (nothing written past the buffer) when it has not. */
static void keys_fit_exactly_or_are_erange(void)
{
    for (size_t len = 0; len < 40; len++) {
        char ref[64], buf[64];
        memset(buf, 'x', sizeof buf);
        snprintf(ref, sizeof ref, "dsq:{%s}:%u", "orders", 1234u);
        int rv = ds_qroute_stream_key("orders", 1234, buf, len);
        CHECKF(strlen(ref) < len ? rv == 0 && strcmp(buf, ref) == 0 : rv == DS_QROUTE_ERANGE,
               "stream key in %zu bytes", len);
        CHECK(buf[len] == 'x');
        snprintf(ref, sizeof ref, "%08x.%u.", 0x0eadbeefu, 77u);
        rv = ds_qroute_id_prefix(0x0eadbeef, 77, buf, len);
        CHECKF(strlen(ref) < len ? rv == 0 && strcmp(buf, ref) == 0 : rv == DS_QROUTE_ERANGE,
               "id prefix in %zu bytes", len);
        snprintf(ref, sizeof ref, "orders/%u", 4294967295u);
        rv = ds_qroute_ring_key("orders.dlq", 4294967295u, buf, len);
        CHECKF(strlen(ref) < len ? rv == 0 && strcmp(buf, ref) == 0 : rv == DS_QROUTE_ERANGE,
               "ring key in %zu bytes", len);
        CHECK(buf[len] == 'x');
    }
}

int main(void)
{
    const char *s = getenv("DS_SEED");
    seed = s && *s ? strtoull(s, NULL, 10) : 20240601u;
    printf("# DS_SEED=%" PRIu64 " (replay: DS_SEED=%" PRIu64 " build/t/unit/queue/test_qroute)\n",
           seed, seed);
    RUN(a_key_always_maps_to_the_same_partition_in_range);
    RUN(messages_without_a_key_go_round_robin);
    RUN(keys_spread_evenly_over_partitions);
    RUN(the_dead_letter_queue_shares_the_ring_keys_of_its_queue);
    RUN(stream_keys_follow_the_documented_naming);
    RUN(keys_fit_exactly_or_are_erange);
    RUN(names_are_letters_digits_dot_underscore_dash);
    RUN(ids_round_trip_through_prefix_and_parse);
    RUN(malformed_ids_are_refused);
    RUN(random_bytes_never_crash_the_id_parser);
    RUN(consumer_names_carry_their_visibility);
    RUN(partitions_of_many_queues_balance_and_a_new_shard_takes_about_a_quarter);
    RUN(a_down_shard_sends_its_partitions_to_the_next_live_one);
    RUN(every_error_code_has_a_distinct_message);
    return check_summary();
}
