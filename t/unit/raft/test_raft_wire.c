/* Tests of the Raft wire format: round trips of every message type, hostile input rejected. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "core/prng.h"
#include "raft/raft.h"

static struct ds_raft_membership sample_conf(void)
{
    struct ds_raft_membership c = {0};
    c.voters[c.n_voters++] = 1;
    c.voters[c.n_voters++] = 2;
    c.voters[c.n_voters++] = 0x0102030405060708ULL;
    c.learners[c.n_learners++] = 9;
    return c;
}

static struct ds_raft_msg sample_msg(int type, struct ds_raft_entry *ents, uint8_t *data)
{
    struct ds_raft_msg m;
    memset(&m, 0, sizeof(m));
    m.type = (uint8_t)type;
    m.flags = type == DS_RAFT_MSG_VOTE ? DS_RAFT_MSG_FLAG_TRANSFER : 0;
    m.reject = type == DS_RAFT_MSG_APPEND_RESP;
    m.from = 3;
    m.to = 0xfffffffffffffff1ULL;
    m.term = 77;
    m.log_term = 76;
    m.index = 1000;
    m.commit = 999;
    m.hint_index = 12;
    m.hint_term = 5;
    m.ctx = 0xabcdef;
    if (type == DS_RAFT_MSG_APPEND) {
        ents[0] = (struct ds_raft_entry){77, 1001, DS_RAFT_ENTRY_NORMAL, 5, data};
        ents[1] = (struct ds_raft_entry){77, 1002, DS_RAFT_ENTRY_NOOP, 0, NULL};
        m.n_entries = 2;
        m.entries = ents;
    }
    if (type == DS_RAFT_MSG_SNAPSHOT) {
        m.snap.index = 900;
        m.snap.term = 70;
        m.snap.conf = sample_conf();
        m.snap_len = 5;
        m.snap_data = data;
    }
    return m;
}

static int msgs_equal(const struct ds_raft_msg *a, const struct ds_raft_msg *b)
{
    if (a->type != b->type || a->flags != b->flags || a->reject != b->reject ||
        a->from != b->from || a->to != b->to || a->term != b->term || a->log_term != b->log_term ||
        a->index != b->index || a->commit != b->commit || a->hint_index != b->hint_index ||
        a->hint_term != b->hint_term || a->ctx != b->ctx || a->n_entries != b->n_entries ||
        a->snap_len != b->snap_len)
        return 0;
    for (uint32_t i = 0; i < a->n_entries; i++) {
        const struct ds_raft_entry *x = &a->entries[i], *y = &b->entries[i];
        if (x->term != y->term || x->index != y->index || x->type != y->type || x->len != y->len ||
            (x->len && memcmp(x->data, y->data, x->len)))
            return 0;
    }
    if (a->type == DS_RAFT_MSG_SNAPSHOT &&
        (a->snap.index != b->snap.index || a->snap.term != b->snap.term ||
         memcmp(&a->snap.conf, &b->snap.conf, sizeof(a->snap.conf)) ||
         memcmp(a->snap_data, b->snap_data, a->snap_len)))
        return 0;
    return 1;
}

static void every_message_type_round_trips(void)
{
    uint8_t data[5] = {1, 2, 3, 4, 5};
    for (int type = 1; type <= DS_RAFT_MSG_TYPE_MAX; type++) {
        struct ds_raft_entry ents[2];
        struct ds_raft_msg m = sample_msg(type, ents, data), d;
        struct ds_raft_buf b = {0};
        REQUIRE(ds_raft_msg_encode(&m, &b) == DS_RAFT_OK);
        CHECKF(ds_raft_msg_decode(b.data, b.len, &d) == DS_RAFT_OK, "type %d", type);
        CHECKF(msgs_equal(&m, &d), "type %d", type);
        ds_raft_msg_release(&d);
        ds_raft_buf_free(&b);
    }
}

static void every_truncation_of_a_message_is_rejected(void)
{
    uint8_t data[5] = {9, 8, 7, 6, 5};
    int types[2] = {DS_RAFT_MSG_APPEND, DS_RAFT_MSG_SNAPSHOT};
    for (int t = 0; t < 2; t++) {
        struct ds_raft_entry ents[2];
        struct ds_raft_msg m = sample_msg(types[t], ents, data), d;
        struct ds_raft_buf b = {0};
        REQUIRE(ds_raft_msg_encode(&m, &b) == DS_RAFT_OK);
        for (size_t len = 0; len < b.len; len++) {
            int rv = ds_raft_msg_decode(b.data, len, &d);
            CHECKF(rv == DS_RAFT_ETRUNC, "len %zu gave %d", len, rv);
            CHECK(d.entries == NULL);
        }
        ds_raft_buf_free(&b);
    }
}

static void trailing_bytes_bad_version_and_bad_fields_are_rejected(void)
{
    struct ds_raft_msg m = sample_msg(DS_RAFT_MSG_HEARTBEAT, NULL, NULL), d;
    struct ds_raft_buf b = {0};
    REQUIRE(ds_raft_msg_encode(&m, &b) == DS_RAFT_OK);
    uint8_t buf[256];
    REQUIRE(b.len < sizeof(buf));
    memcpy(buf, b.data, b.len);
    buf[b.len] = 0;
    CHECK(ds_raft_msg_decode(buf, b.len + 1, &d) == DS_RAFT_EFORMAT);
    buf[0] = 2;
    CHECK(ds_raft_msg_decode(buf, b.len, &d) == DS_RAFT_EVERSION);
    buf[0] = DS_RAFT_WIRE_VERSION;
    buf[1] = 0;
    CHECK(ds_raft_msg_decode(buf, b.len, &d) == DS_RAFT_EFORMAT);
    buf[1] = DS_RAFT_MSG_TYPE_MAX + 1;
    CHECK(ds_raft_msg_decode(buf, b.len, &d) == DS_RAFT_EFORMAT);
    buf[1] = DS_RAFT_MSG_HEARTBEAT;
    buf[3] = 2; /* reject must be 0 or 1 */
    CHECK(ds_raft_msg_decode(buf, b.len, &d) == DS_RAFT_EFORMAT);
    buf[3] = 0;
    buf[2] = 0x80; /* unknown flag */
    CHECK(ds_raft_msg_decode(buf, b.len, &d) == DS_RAFT_EFORMAT);
    ds_raft_buf_free(&b);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void oversized_counts_are_rejected_before_allocating(void)
{
    uint8_t data[5] = {0};
    struct ds_raft_entry ents[2];
    struct ds_raft_msg m = sample_msg(DS_RAFT_MSG_APPEND, ents, data), d;
    struct ds_raft_buf b = {0};
    REQUIRE(ds_raft_msg_encode(&m, &b) == DS_RAFT_OK);
    size_t count_at = 4 + 9 * 8;
    put_le32(b.data + count_at, 0xffffffffu);
    CHECK(ds_raft_msg_decode(b.data, b.len, &d) == DS_RAFT_ETOOBIG);
    put_le32(b.data + count_at, DS_RAFT_WIRE_MAX_ENTRIES);
    CHECK(ds_raft_msg_decode(b.data, b.len, &d) == DS_RAFT_ETRUNC);
    put_le32(b.data + count_at, 2);
    put_le32(b.data + count_at + 4 + 17, 0xfffffff0u); /* first entry's len */
    CHECK(ds_raft_msg_decode(b.data, b.len, &d) == DS_RAFT_ETOOBIG);
    put_le32(b.data + count_at + 4 + 17, 5);
    b.data[count_at + 4 + 16] = 7; /* entry type */
    CHECK(ds_raft_msg_decode(b.data, b.len, &d) == DS_RAFT_EFORMAT);
    ds_raft_buf_free(&b);

    m = sample_msg(DS_RAFT_MSG_SNAPSHOT, ents, data);
    REQUIRE(ds_raft_msg_encode(&m, &b) == DS_RAFT_OK);
    put_le32(b.data + b.len - 5 - 4, 0xffffffffu);
    CHECK(ds_raft_msg_decode(b.data, b.len, &d) == DS_RAFT_ETOOBIG);
    put_le32(b.data + b.len - 5 - 4, 6);
    CHECK(ds_raft_msg_decode(b.data, b.len, &d) == DS_RAFT_ETRUNC);
    ds_raft_buf_free(&b);
}

static void random_garbage_never_crashes_the_decoder(void)
{
    struct ds_prng p;
    ds_prng_seed(&p, 42);
    uint8_t buf[512];
    uint8_t data[5] = {1, 2, 3, 4, 5};
    struct ds_raft_entry ents[2];
    struct ds_raft_msg m = sample_msg(DS_RAFT_MSG_SNAPSHOT, ents, data), d;
    struct ds_raft_buf b = {0};
    REQUIRE(ds_raft_msg_encode(&m, &b) == DS_RAFT_OK);
    unsigned long n = check_seeds(20000);
    for (unsigned long i = 0; i < n; i++) {
        size_t len = (size_t)ds_prng_below(&p, sizeof(buf));
        if (i % 2 && len >= b.len) { /* mutate a valid message */
            memcpy(buf, b.data, b.len);
            len = b.len;
            buf[ds_prng_below(&p, len)] ^= (uint8_t)(1 + ds_prng_below(&p, 255));
        } else {
            for (size_t k = 0; k < len; k++)
                buf[k] = (uint8_t)ds_prng_next(&p);
            if (len)
                buf[0] = DS_RAFT_WIRE_VERSION;
        }
        if (ds_raft_msg_decode(buf, len, &d) == DS_RAFT_OK)
            ds_raft_msg_release(&d);
    }
    ds_raft_buf_free(&b);
}

static void configurations_round_trip_and_bad_ones_are_rejected(void)
{
    struct ds_raft_membership c = sample_conf(), d;
    struct ds_raft_buf b = {0};
    REQUIRE(ds_raft_conf_encode(&c, &b) == DS_RAFT_OK);
    CHECK(ds_raft_conf_decode(b.data, b.len, &d) == DS_RAFT_OK);
    CHECK(memcmp(&c, &d, sizeof(c)) == 0);
    CHECK(ds_raft_conf_decode(b.data, b.len - 1, &d) == DS_RAFT_ETRUNC);
    b.data[1] = DS_RAFT_MAX_NODES;
    CHECK(ds_raft_conf_decode(b.data, b.len, &d) == DS_RAFT_ETOOBIG);
    b.data[1] = 3;
    memcpy(b.data + 3 + 8, b.data + 3, 8); /* duplicate id */
    CHECK(ds_raft_conf_decode(b.data, b.len, &d) == DS_RAFT_EFORMAT);
    memset(b.data + 3, 0, 8); /* zero id */
    CHECK(ds_raft_conf_decode(b.data, b.len, &d) == DS_RAFT_EFORMAT);
    ds_raft_buf_free(&b);

    struct ds_raft_membership big = {0};
    big.n_voters = DS_RAFT_MAX_NODES;
    big.n_learners = 1;
    CHECK(ds_raft_conf_encode(&big, &b) == DS_RAFT_ETOOBIG);

    struct ds_raft_snapshot_meta s = {55, 4, sample_conf()}, t;
    REQUIRE(ds_raft_snapshot_meta_encode(&s, &b) == DS_RAFT_OK);
    CHECK(ds_raft_snapshot_meta_decode(b.data, b.len, &t) == DS_RAFT_OK);
    CHECK(t.index == 55 && t.term == 4 && memcmp(&t.conf, &s.conf, sizeof(s.conf)) == 0);
    CHECK(ds_raft_snapshot_meta_decode(b.data, b.len - 1, &t) == DS_RAFT_ETRUNC);
    ds_raft_buf_free(&b);
}

static void every_error_code_has_a_name(void)
{
    for (int e = DS_RAFT_OK; e <= DS_RAFT_EFORMAT; e++)
        CHECK(strcmp(ds_raft_strerror(e), "unknown error") != 0);
    CHECK(strcmp(ds_raft_strerror(-1), "unknown error") == 0);
    CHECK(strcmp(ds_raft_role_name(DS_RAFT_LEADER), "leader") == 0);
    CHECK(strcmp(ds_raft_role_name(9), "unknown") == 0);
}

int main(void)
{
    RUN(every_message_type_round_trips);
    RUN(every_truncation_of_a_message_is_rejected);
    RUN(trailing_bytes_bad_version_and_bad_fields_are_rejected);
    RUN(oversized_counts_are_rejected_before_allocating);
    RUN(random_garbage_never_crashes_the_decoder);
    RUN(configurations_round_trip_and_bad_ones_are_rejected);
    RUN(every_error_code_has_a_name);
    return check_summary();
}
