/* SWIM wire format: round trips of every message type, and a decoder that refuses truncated,
 * oversized and garbage input with an error instead of crashing. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "core/prng.h"
#include "gossip/swim.h"

static void fill_node(struct ds_swim_node *n, int i, uint8_t n_meta)
{
    memset(n, 0, sizeof *n);
    snprintf(n->id, sizeof n->id, "node-%d", i);
    snprintf(n->url, sizeof n->url, "https://10.0.0.%d:9443", i);
    n->incarnation = ((uint64_t)i << 32) | 7u;
    n->state = (uint8_t)(i % 4);
    n->n_meta = n_meta;
    for (uint8_t k = 0; k < n_meta; k++) {
        snprintf(n->meta[k].key, sizeof n->meta[k].key, "k%u", k);
        snprintf(n->meta[k].value, sizeof n->meta[k].value, "value-%u", k * 13u);
    }
}

static void fill_msg(struct ds_swim_msg *m, uint8_t type, struct ds_swim_node *nodes, uint16_t n)
{
    memset(m, 0, sizeof *m);
    m->type = type;
    m->seq = 0xA1B2C3D4u;
    snprintf(m->cluster, sizeof m->cluster, "prod-eu");
    snprintf(m->role, sizeof m->role, "cache");
    fill_node(&m->from, 99, 2);
    m->from.state = DS_SWIM_ALIVE;
    snprintf(m->target_id, sizeof m->target_id, "node-3");
    snprintf(m->target_url, sizeof m->target_url, "https://10.0.0.3:9443");
    for (uint16_t i = 0; i < n; i++)
        fill_node(&nodes[i], i, (uint8_t)(i % (DS_SWIM_META_MAX + 1)));
    m->nodes = nodes;
    m->n_nodes = n;
}

static int node_eq(const struct ds_swim_node *a, const struct ds_swim_node *b)
{
    if (strcmp(a->id, b->id) || strcmp(a->url, b->url) || a->incarnation != b->incarnation ||
        a->state != b->state || a->n_meta != b->n_meta)
        return 0;
    for (uint8_t k = 0; k < a->n_meta; k++)
        if (strcmp(a->meta[k].key, b->meta[k].key) || strcmp(a->meta[k].value, b->meta[k].value))
            return 0;
    return 1;
}

static uint8_t *encoded(uint8_t type, uint16_t n, size_t *len)
{
    static struct ds_swim_node nodes[DS_SWIM_MEMBERS_MAX];
    struct ds_swim_msg m;
    uint8_t *buf = NULL;
    fill_msg(&m, type, nodes, n);
    if (ds_swim_msg_encode(&m, &buf, len) != DS_SWIM_OK)
        return NULL;
    return buf;
}

static void every_message_type_round_trips(void)
{
    static struct ds_swim_node nodes[DS_SWIM_MEMBERS_MAX];
    static const uint16_t counts[] = {0, 1, 9, DS_SWIM_MEMBERS_MAX};
    for (uint8_t type = DS_SWIM_MSG_PING; type <= DS_SWIM_MSG_SYNC_ACK; type++)
        for (size_t c = 0; c < 4; c++) {
            struct ds_swim_msg m, d;
            uint8_t *buf = NULL;
            size_t len = 0;
            fill_msg(&m, type, nodes, counts[c]);
            REQUIRE(ds_swim_msg_encode(&m, &buf, &len) == DS_SWIM_OK);
            REQUIRE(ds_swim_msg_decode(buf, len, &d) == DS_SWIM_OK);
            CHECK(d.type == type && d.seq == m.seq && d.n_nodes == m.n_nodes);
            CHECK(strcmp(d.cluster, "prod-eu") == 0 && strcmp(d.role, "cache") == 0);
            CHECK(strcmp(d.target_id, m.target_id) == 0);
            CHECK(strcmp(d.target_url, m.target_url) == 0);
            CHECK(node_eq(&d.from, &m.from));
            for (uint16_t i = 0; i < d.n_nodes; i++)
                CHECK(node_eq(&d.nodes[i], &m.nodes[i]));
            ds_swim_msg_free(&d);
            free(buf);
        }
}

static void header_layout_is_as_documented(void)
{
    size_t len;
    uint8_t *buf = encoded(DS_SWIM_MSG_ACK, 0, &len);
    REQUIRE(buf != NULL);
    CHECK(buf[0] == 'S' && buf[1] == 'W' && buf[2] == 1 && buf[3] == DS_SWIM_MSG_ACK);
    CHECK(buf[4] == 0xD4 && buf[5] == 0xC3 && buf[6] == 0xB2 && buf[7] == 0xA1);
    CHECK(buf[8] == 7 && memcmp(buf + 9, "prod-eu", 7) == 0);
    CHECK(buf[len - 2] == 0 && buf[len - 1] == 0); /* n_nodes = 0 ends the message */
    free(buf);
}

static void every_truncation_is_refused(void)
{
    size_t len;
    uint8_t *buf = encoded(DS_SWIM_MSG_SYNC, 5, &len);
    REQUIRE(buf != NULL);
    for (size_t cut = 0; cut < len; cut++) {
        struct ds_swim_msg d;
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, buf, cut);
        int rv = ds_swim_msg_decode(copy, cut, &d);
        CHECKF(rv == DS_SWIM_ETRUNC, "cut at %zu of %zu: %s", cut, len, ds_swim_strerror(rv));
        free(copy);
    }
    free(buf);
}

static void trailing_bytes_and_bad_header_are_refused(void)
{
    size_t len;
    struct ds_swim_msg d;
    uint8_t *buf = encoded(DS_SWIM_MSG_PING, 2, &len);
    REQUIRE(buf != NULL);
    uint8_t *longer = calloc(1, len + 1);
    memcpy(longer, buf, len);
    CHECK(ds_swim_msg_decode(longer, len + 1, &d) == DS_SWIM_EBADMSG);
    static const size_t offsets[] = {0, 1, 2, 3};
    static const uint8_t bad[] = {'X', 'X', 2, 9};
    for (size_t i = 0; i < 4; i++) {
        uint8_t keep = buf[offsets[i]];
        buf[offsets[i]] = bad[i];
        CHECK(ds_swim_msg_decode(buf, len, &d) == DS_SWIM_EBADMSG);
        buf[offsets[i]] = keep;
    }
    buf[3] = 0;
    CHECK(ds_swim_msg_decode(buf, len, &d) == DS_SWIM_EBADMSG);
    free(longer);
    free(buf);
}

/* In a message built by fill_msg without nodes: returns where the `from` record starts and sets
 * the offsets of its state byte and of n_nodes. */
static size_t field_offsets(const uint8_t *buf, size_t *from_state, size_t *count_at)
{
    size_t o = 8;
    o += 1 + buf[o];                      /* cluster */
    o += 1 + buf[o];                      /* role */
    size_t from = o;
    o += 1 + buf[o];                      /* from.id */
    o += 1 + buf[o];                      /* from.url */
    *from_state = o + 8;
    o += 8 + 1;
    uint8_t n_meta = buf[o++];
    for (uint8_t k = 0; k < 2 * n_meta; k++)
        o += 1 + buf[o];
    o += 1 + buf[o];                      /* target_id */
    o += 1 + buf[o];                      /* target_url */
    *count_at = o;
    return from;
}

static void hostile_fields_are_refused(void)
{
    size_t len, from_state, count_at;
    struct ds_swim_msg d;
    uint8_t *buf = encoded(DS_SWIM_MSG_PING, 0, &len);
    REQUIRE(buf != NULL);
    size_t from = field_offsets(buf, &from_state, &count_at);
    REQUIRE(count_at + 2 == len);

    buf[from_state] = 4;                  /* unknown state */
    CHECK(ds_swim_msg_decode(buf, len, &d) == DS_SWIM_EBADMSG);
    buf[from_state] = DS_SWIM_ALIVE;
    buf[from_state + 1] = DS_SWIM_META_MAX + 1; /* too many metadata entries */
    CHECK(ds_swim_msg_decode(buf, len, &d) == DS_SWIM_ETOOBIG);
    buf[from_state + 1] = 2;
    buf[from] = DS_SWIM_ID_MAX;           /* id longer than the cap */
    CHECK(ds_swim_msg_decode(buf, len, &d) == DS_SWIM_ETOOBIG);
    buf[from + 1] = '\0';                 /* NUL inside a string (length restored below) */
    buf[from] = 7;
    CHECK(ds_swim_msg_decode(buf, len, &d) == DS_SWIM_EBADMSG);
    buf[from + 1] = 'n';
    buf[from] = 0;                        /* empty id */
    CHECK(ds_swim_msg_decode(buf, len, &d) != DS_SWIM_OK);
    buf[from] = 7;
    CHECK(ds_swim_msg_decode(buf, len, &d) == DS_SWIM_OK);

    buf[count_at] = 0xFF;                 /* 65535 records claimed */
    buf[count_at + 1] = 0xFF;
    CHECK(ds_swim_msg_decode(buf, len, &d) == DS_SWIM_ETOOBIG);
    buf[count_at] = 200;                  /* 200 records claimed, none present */
    buf[count_at + 1] = 0;
    CHECK(ds_swim_msg_decode(buf, len, &d) == DS_SWIM_ETRUNC);
    free(buf);

    uint8_t *huge = calloc(1, DS_SWIM_MSG_MAX + 1);
    CHECK(ds_swim_msg_decode(huge, DS_SWIM_MSG_MAX + 1, &d) == DS_SWIM_ETOOBIG);
    free(huge);
}

static void random_garbage_and_bit_flips_never_crash(void)
{
    struct ds_prng rng;
    size_t len;
    uint8_t *good = encoded(DS_SWIM_MSG_SYNC, 6, &len);
    REQUIRE(good != NULL);
    ds_prng_seed(&rng, 42);
    unsigned long rounds = check_seeds(20000);
    for (unsigned long i = 0; i < rounds; i++) {
        struct ds_swim_msg d;
        uint8_t *buf = malloc(len);
        size_t n = len;
        memcpy(buf, good, len);
        if (i % 3 == 0) {
            n = (size_t)ds_prng_below(&rng, len);
            for (size_t k = 0; k < n; k++)
                buf[k] = (uint8_t)ds_prng_next(&rng);
        } else {
            for (int f = 0; f < 1 + (int)(i % 4); f++)
                buf[ds_prng_below(&rng, len)] ^= (uint8_t)(1u << ds_prng_below(&rng, 8));
        }
        if (ds_swim_msg_decode(buf, n, &d) == DS_SWIM_OK) {
            uint8_t *again = NULL;
            size_t alen = 0;
            CHECK(ds_swim_msg_encode(&d, &again, &alen) == DS_SWIM_OK);
            CHECK(alen == n && memcmp(again, buf, n) == 0);
            free(again);
            ds_swim_msg_free(&d);
        }
        free(buf);
    }
    free(good);
}

static void encoder_refuses_invalid_records(void)
{
    struct ds_swim_node nodes[1];
    struct ds_swim_msg m;
    uint8_t *buf = NULL;
    size_t len;
    fill_msg(&m, DS_SWIM_MSG_PING, nodes, 1);
    nodes[0].state = 9;
    CHECK(ds_swim_msg_encode(&m, &buf, &len) == DS_SWIM_EINVAL);
    nodes[0].state = DS_SWIM_ALIVE;
    nodes[0].id[0] = '\0';
    CHECK(ds_swim_msg_encode(&m, &buf, &len) == DS_SWIM_EINVAL);
    fill_msg(&m, 0, nodes, 1);
    CHECK(ds_swim_msg_encode(&m, &buf, &len) == DS_SWIM_EINVAL);
    CHECK(buf == NULL);
    CHECK(strcmp(ds_swim_strerror(DS_SWIM_ETRUNC), "truncated message") == 0);
    CHECK(strcmp(ds_swim_strerror(-1), "unknown swim error") == 0);
    CHECK(strcmp(ds_swim_state_name(DS_SWIM_SUSPECT), "suspect") == 0);
    CHECK(strcmp(ds_swim_state_name(7), "unknown") == 0);
}

int main(void)
{
    RUN(every_message_type_round_trips);
    RUN(header_layout_is_as_documented);
    RUN(every_truncation_is_refused);
    RUN(trailing_bytes_and_bad_header_are_refused);
    RUN(hostile_fields_are_refused);
    RUN(random_garbage_and_bit_flips_never_crash);
    RUN(encoder_refuses_invalid_records);
    return check_summary();
}
