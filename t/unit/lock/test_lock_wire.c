/* Tests of the lock command wire form and of snapshot restore against hostile bytes. */
#include <inttypes.h>

#include "check.h"
#include "core/prng.h"
#include "lock/lock_helpers.h"
#include "roles/lock/lock_internal.h" /* its byte writer builds hand-made snapshots */

/* One command of each type, with edge-case names. */
static size_t sample_commands(struct ds_lock_cmd *v)
{
    size_t n = 0;
    v[n] = mk(DS_LOCK_CMD_ACQUIRE, "res\xc3\xa9", "client-1");
    v[n].mode = SH;
    v[n].wait_ms = DS_LOCK_WAIT_MAX_MS;
    v[n].ttl_ms = DS_LOCK_TTL_MAX_MS;
    snprintf(v[n++].request_id, DS_LOCK_REQUEST_ID_MAX + 1, "req-42");
    v[n] = mk(DS_LOCK_CMD_ACQUIRE, "r", "c");
    v[n].mode = EX;
    v[n++].ttl_ms = DS_LOCK_TTL_MIN_MS;
    v[n] = mk(DS_LOCK_CMD_RELEASE, "\x01\xff", "c");
    v[n].token = UINT64_MAX;
    snprintf(v[n++].request_id, DS_LOCK_REQUEST_ID_MAX + 1, "%064d", 7);
    v[n] = mk(DS_LOCK_CMD_RENEW, "r", "c");
    v[n].token = 12345;
    v[n++].ttl_ms = 5000;
    v[n] = mk(DS_LOCK_CMD_CANCEL_WAIT, "r", "c");
    memset(v[n].resource, 'x', DS_LOCK_NAME_MAX);
    memset(v[n++].client_id, 'y', DS_LOCK_NAME_MAX);
    v[n] = mk(DS_LOCK_CMD_EXPIRE, NULL, NULL);
    v[n++].now_ms = DS_LOCK_TIME_MAX;
    v[n] = mk(DS_LOCK_CMD_EXTEND_ALL, NULL, NULL);
    v[n++].extra_ms = DS_LOCK_EXTEND_MAX_MS;
    return n;
}

static void every_command_round_trips_through_its_encoding(void)
{
    struct ds_lock_cmd v[8], d;
    size_t n = sample_commands(v);
    for (size_t i = 0; i < n; i++) {
        uint8_t *b;
        size_t len;
        REQUIRE(ds_lock_cmd_encode(&v[i], &b, &len) == 0);
        CHECKF(ds_lock_cmd_decode(b, len, &d) == 0, "type %d", v[i].type);
        CHECKF(memcmp(&d, &v[i], sizeof(d)) == 0, "type %d differs after decode", v[i].type);
        free(b);
    }
}

static void decoder_rejects_every_truncation_and_extension(void)
{
    struct ds_lock_cmd v[8], d;
    size_t n = sample_commands(v);
    for (size_t i = 0; i < n; i++) {
        uint8_t *b;
        size_t len;
        REQUIRE(ds_lock_cmd_encode(&v[i], &b, &len) == 0);
        for (size_t k = 0; k < len; k++)
            CHECKF(ds_lock_cmd_decode(b, k, &d) == DS_LOCK_EDECODE, "type %d cut at %zu",
                   v[i].type, k);
        uint8_t *longer = malloc(len + 1);
        memcpy(longer, b, len);
        longer[len] = 0;
        CHECK(ds_lock_cmd_decode(longer, len + 1, &d) == DS_LOCK_EDECODE);
        free(longer);
        free(b);
    }
}

/* Patches byte `at` of a valid ACQUIRE encoding and expects a rejection. */
static int patched_acquire_rejected(size_t at, uint8_t value)
{
    struct ds_lock_cmd c = mk(DS_LOCK_CMD_ACQUIRE, "r", "c"), d;
    c.mode = EX;
    c.ttl_ms = TTL;
    uint8_t *b;
    size_t len;
    if (ds_lock_cmd_encode(&c, &b, &len) != 0)
        return 0;
    b[at] = value;
    int rv = ds_lock_cmd_decode(b, len, &d);
    free(b);
    return rv == DS_LOCK_EDECODE;
}

/* ACQUIRE layout: 0 version, 1 type, 2..9 now, 10 mode, 11..14 wait_ms, 15..18 ttl, 19..20
 * resource length, 21 'r', 22..23 client length, 24 'c', 25..26 request id length. */
static void decoder_rejects_hostile_fields(void)
{
    CHECK(patched_acquire_rejected(0, 1));    /* version 1 (ACQUIRE without wait_ms) */
    CHECK(patched_acquire_rejected(0, 3));    /* unknown version */
    CHECK(patched_acquire_rejected(1, 0));    /* unknown type */
    CHECK(patched_acquire_rejected(1, 7));
    CHECK(patched_acquire_rejected(9, 0xff)); /* now beyond DS_LOCK_TIME_MAX */
    CHECK(patched_acquire_rejected(10, 3));   /* unknown mode */
    CHECK(patched_acquire_rejected(13, 0xff)); /* wait_ms above DS_LOCK_WAIT_MAX_MS */
    CHECK(patched_acquire_rejected(16, 0));   /* ttl below the minimum */
    CHECK(patched_acquire_rejected(18, 0xff)); /* ttl above the maximum */
    CHECK(patched_acquire_rejected(19, 0));   /* empty resource */
    CHECK(patched_acquire_rejected(20, 1));   /* resource longer than the bytes left */
    CHECK(patched_acquire_rejected(21, 0));   /* NUL inside a name */
    CHECK(patched_acquire_rejected(25, 65));  /* request id over its bound */
    struct ds_lock_cmd d;
    CHECK(ds_lock_cmd_decode(NULL, 0, &d) == DS_LOCK_EDECODE);
}

static void encoder_refuses_commands_outside_the_bounds(void)
{
    struct ds_lock_cmd c = mk(DS_LOCK_CMD_RENEW, "r", "c");
    uint8_t *b = NULL;
    size_t len = 0;
    c.ttl_ms = 1;
    CHECK(ds_lock_cmd_encode(&c, &b, &len) == DS_LOCK_EINVAL && b == NULL);
    c = mk(DS_LOCK_CMD_CANCEL_WAIT, "", "c");
    CHECK(ds_lock_cmd_encode(&c, &b, &len) == DS_LOCK_EINVAL);
    c = mk(DS_LOCK_CMD_EXTEND_ALL, NULL, NULL);
    c.extra_ms = DS_LOCK_EXTEND_MAX_MS + 1;
    CHECK(ds_lock_cmd_encode(&c, &b, &len) == DS_LOCK_EINVAL);
    c = mk(DS_LOCK_CMD_ACQUIRE, "r", "c");
    c.mode = EX;
    c.ttl_ms = TTL;
    c.wait_ms = DS_LOCK_WAIT_MAX_MS + 1;
    CHECK(ds_lock_cmd_encode(&c, &b, &len) == DS_LOCK_EINVAL);
    c.wait_ms = DS_LOCK_WAIT_MAX_MS;
    CHECK(ds_lock_cmd_encode(&c, &b, &len) == 0);
    free(b);
}

/* Random and mutated bytes never crash the decoder, and whatever it accepts is canonical. */
static void decoder_survives_random_and_mutated_bytes(void)
{
    unsigned long seeds = check_seeds(2000);
    struct ds_lock_cmd v[8], d;
    size_t n = sample_commands(v);
    for (unsigned long s = 1; s <= seeds; s++) {
        struct ds_prng p;
        ds_prng_seed(&p, s);
        uint8_t *b;
        size_t len;
        REQUIRE(ds_lock_cmd_encode(&v[ds_prng_below(&p, n)], &b, &len) == 0);
        for (int k = 0; k < 3; k++)
            b[ds_prng_below(&p, len)] = (uint8_t)ds_prng_next(&p);
        if (ds_prng_below(&p, 4) == 0)
            for (size_t k = 0; k < len; k++)
                b[k] = (uint8_t)ds_prng_next(&p);
        if (ds_lock_cmd_decode(b, len, &d) == 0) {
            uint8_t *again;
            size_t alen;
            CHECKF(ds_lock_cmd_encode(&d, &again, &alen) == 0 && alen == len &&
                   memcmp(again, b, len) == 0, "DS_SEED=%lu: accepted bytes are not canonical", s);
            free(again);
        }
        free(b);
    }
}

/* A table with every kind of state: holders of both modes, an upgrade, waiters, records. */
static struct ds_lock_table *rich_table(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    acq(t, "x", "a", SH, WAIT);
    acq(t, "x", "b", SH, WAIT);
    acq(t, "x", "a", EX, WAIT);
    acq(t, "x", "c", SH, WAIT);
    acq_full(t, "y", "c", EX, WAIT, 500, "r1");
    acq_full(t, "y", "d", SH, WAIT, 500, "r2");
    return t;
}

static void restore_rejects_every_truncation_and_survives_corruption(void)
{
    struct ds_lock_table *t = rich_table(), *u = NULL;
    size_t len;
    uint8_t *b = snap(t, &len);
    for (size_t k = 0; k < len; k++)
        CHECKF(ds_lock_restore(b, k, &u) == DS_LOCK_EDECODE, "cut at %zu", k);
    unsigned long seeds = check_seeds(2000);
    for (unsigned long s = 1; s <= seeds; s++) {
        struct ds_prng p;
        ds_prng_seed(&p, s);
        uint8_t *m = malloc(len);
        memcpy(m, b, len);
        for (int k = 0; k < 2; k++)
            m[ds_prng_below(&p, len)] ^= (uint8_t)(1u << ds_prng_below(&p, 8));
        if (ds_lock_restore(m, len, &u) == 0) { /* a valid table: it must keep working */
            struct ds_lock_table *v = clone_table(u);
            CHECKF(v && same_state(u, v), "DS_SEED=%lu: restored table does not round trip", s);
            expire_at(u, UINT64_C(1) << 62);
            acq(u, "x", "z", EX, WAIT);
            ds_lock_table_free(v);
            ds_lock_table_free(u);
        }
        free(m);
    }
    free(b);
    ds_lock_table_free(t);
}

/* Hand-built snapshots that parse but describe impossible tables. */
static void sb_str(struct ds_lock_wr *w, const char *s)
{
    ds_lock_wr_u16(w, (uint16_t)strlen(s));
    for (const char *p = s; *p; p++)
        ds_lock_wr_u8(w, (uint8_t)*p);
}

static uint32_t sb_version = 2; /* version sb_head writes */

static void sb_head(struct ds_lock_wr *w, uint64_t next_token, uint32_t nres)
{
    ds_lock_wr_u8(w, 'D');
    ds_lock_wr_u8(w, 'S');
    ds_lock_wr_u8(w, 'L');
    ds_lock_wr_u8(w, 'K');
    ds_lock_wr_u32(w, sb_version);
    ds_lock_wr_u64(w, next_token);
    ds_lock_wr_u32(w, nres);
}

static uint64_t sb_deadline = 5000;     /* deadline of the holders sb_holder writes */
static uint64_t sb_wait_deadline = 900; /* wait deadline of the waiters sb_waiter writes */

static void sb_holder(struct ds_lock_wr *w, const char *client, uint8_t mode, uint64_t token)
{
    sb_str(w, client);
    ds_lock_wr_u8(w, mode);
    ds_lock_wr_u32(w, TTL);
    ds_lock_wr_u64(w, token);
    ds_lock_wr_u64(w, sb_deadline);
}

static void sb_waiter(struct ds_lock_wr *w, const char *client, uint8_t mode, uint8_t upgrade)
{
    sb_str(w, client);
    ds_lock_wr_u8(w, mode);
    ds_lock_wr_u8(w, upgrade);
    ds_lock_wr_u32(w, TTL);
    ds_lock_wr_u64(w, 1); /* since */
    ds_lock_wr_u64(w, sb_wait_deadline);
}

/* Resource `name` with holders h1 (and h2 if mode2) and one waiter (if wmode). */
static void sb_res(struct ds_lock_wr *w, const char *name, uint8_t mode1, uint8_t mode2,
                   const char *h2, uint8_t wmode, const char *wc, uint8_t upgrade)
{
    sb_str(w, name);
    ds_lock_wr_u32(w, mode1 ? (mode2 ? 2 : 1) : 0);
    if (mode1)
        sb_holder(w, "h1", mode1, 1);
    if (mode1 && mode2)
        sb_holder(w, h2, mode2, 2);
    ds_lock_wr_u32(w, wmode ? 1 : 0);
    if (wmode)
        sb_waiter(w, wc, wmode, upgrade);
}

static int restore_rc(struct ds_lock_wr *w)
{
    struct ds_lock_table *t = NULL;
    int rv = ds_lock_restore(w->buf, w->len, &t);
    ds_lock_table_free(t);
    free(w->buf);
    memset(w, 0, sizeof(*w));
    return rv;
}

static void restore_rejects_snapshots_that_break_invariants(void)
{
    struct ds_lock_wr w = { 0 };
    sb_head(&w, 10, 1); /* a well-formed control case */
    sb_res(&w, "r", SH, SH, "h2", EX, "w", 0);
    ds_lock_wr_u32(&w, 0);
    CHECK(restore_rc(&w) == 0);
    sb_version = 1; /* the same table in version 1 (waits without deadlines): refused */
    sb_head(&w, 10, 1);
    sb_version = 2;
    sb_res(&w, "r", SH, SH, "h2", EX, "w", 0);
    ds_lock_wr_u32(&w, 0);
    CHECK(restore_rc(&w) == DS_LOCK_EDECODE);
    static const uint64_t bad_wait_ends[] = { 1, 0, DS_LOCK_TIME_MAX + DS_LOCK_WAIT_MAX_MS + 1 };
    for (size_t i = 0; i < 3; i++) { /* a wait ending at or before its since, or out of bounds */
        sb_wait_deadline = bad_wait_ends[i];
        sb_head(&w, 10, 1);
        sb_res(&w, "r", SH, SH, "h2", EX, "w", 0);
        ds_lock_wr_u32(&w, 0);
        CHECKF(restore_rc(&w) == DS_LOCK_EDECODE, "wait deadline %" PRIu64, bad_wait_ends[i]);
    }
    sb_wait_deadline = DS_LOCK_TIME_MAX + DS_LOCK_WAIT_MAX_MS; /* the largest is fine */
    sb_head(&w, 10, 1);
    sb_res(&w, "r", SH, SH, "h2", EX, "w", 0);
    ds_lock_wr_u32(&w, 0);
    CHECK(restore_rc(&w) == 0);
    sb_wait_deadline = 900;
    sb_head(&w, 10, 1); /* two exclusive holders */
    sb_res(&w, "r", EX, EX, "h2", 0, NULL, 0);
    ds_lock_wr_u32(&w, 0);
    CHECK(restore_rc(&w) == DS_LOCK_EDECODE);
    sb_head(&w, 10, 1); /* the same client holding twice */
    sb_res(&w, "r", SH, SH, "h1", 0, NULL, 0);
    ds_lock_wr_u32(&w, 0);
    CHECK(restore_rc(&w) == DS_LOCK_EDECODE);
    sb_head(&w, 2, 1); /* a token not below the counter */
    sb_res(&w, "r", SH, SH, "h2", 0, NULL, 0);
    ds_lock_wr_u32(&w, 0);
    CHECK(restore_rc(&w) == DS_LOCK_EDECODE);
    sb_head(&w, 10, 2); /* names out of order */
    sb_res(&w, "s", SH, 0, NULL, 0, NULL, 0);
    sb_res(&w, "r", SH, 0, NULL, 0, NULL, 0);
    ds_lock_wr_u32(&w, 0);
    CHECK(restore_rc(&w) == DS_LOCK_EDECODE);
    sb_head(&w, 10, 1); /* a grantable head waiter (lost wakeup) */
    sb_res(&w, "r", SH, 0, NULL, SH, "w", 0);
    ds_lock_wr_u32(&w, 0);
    CHECK(restore_rc(&w) == DS_LOCK_EDECODE);
    sb_head(&w, 10, 1); /* an upgrade by a client that does not hold */
    sb_res(&w, "r", SH, SH, "h2", EX, "w", 1);
    ds_lock_wr_u32(&w, 0);
    CHECK(restore_rc(&w) == DS_LOCK_EDECODE);
    sb_head(&w, 10, 1); /* a resource nobody holds or waits for */
    sb_res(&w, "r", 0, 0, NULL, 0, NULL, 0);
    ds_lock_wr_u32(&w, 0);
    CHECK(restore_rc(&w) == DS_LOCK_EDECODE);
    sb_head(&w, 10, 0); /* the same idempotency key twice */
    ds_lock_wr_u32(&w, 2);
    for (int i = 0; i < 2; i++) {
        sb_str(&w, "c");
        sb_str(&w, "q");
        ds_lock_wr_u8(&w, DS_LOCK_CMD_RELEASE);
        sb_str(&w, "r");
        ds_lock_wr_u8(&w, DS_LOCK_OK);
        ds_lock_wr_u8(&w, 0);
        ds_lock_wr_u64(&w, 0);
        ds_lock_wr_u64(&w, 0);
        ds_lock_wr_u32(&w, 0);
        ds_lock_wr_u64(&w, 0);
    }
    CHECK(restore_rc(&w) == DS_LOCK_EDECODE);
}

static void extend_all_saturates_deadlines_instead_of_wrapping(void)
{
    struct ds_lock_wr w = { 0 };
    struct ds_lock_table *t = NULL;
    sb_deadline = UINT64_MAX - 5;
    sb_head(&w, 10, 1);
    sb_res(&w, "r", EX, 0, NULL, 0, NULL, 0);
    ds_lock_wr_u32(&w, 0);
    sb_deadline = 5000;
    REQUIRE(ds_lock_restore(w.buf, w.len, &t) == 0);
    free(w.buf);
    struct ds_lock_cmd c = mk(DS_LOCK_CMD_EXTEND_ALL, NULL, NULL);
    c.extra_ms = 1000;
    CHECK(run(t, &c) == DS_LOCK_OK);
    uint64_t dl = 0;
    CHECK(ds_lock_next_deadline(t, &dl) == 0 && dl == UINT64_MAX);
    ds_lock_table_free(t);
}

int main(void)
{
    RUN(every_command_round_trips_through_its_encoding);
    RUN(decoder_rejects_every_truncation_and_extension);
    RUN(decoder_rejects_hostile_fields);
    RUN(encoder_refuses_commands_outside_the_bounds);
    RUN(decoder_survives_random_and_mutated_bytes);
    RUN(restore_rejects_every_truncation_and_survives_corruption);
    RUN(restore_rejects_snapshots_that_break_invariants);
    RUN(extend_all_saturates_deadlines_instead_of_wrapping);
    ds_lock_result_free(&res);
    return check_summary();
}
