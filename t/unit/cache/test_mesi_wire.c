/* Tests of the MESI wire encoding: every field survives a round trip, and the decoder rejects
 * truncated, oversized, inconsistent and random input without crashing.
 * Replay the random part: DS_SEED=1234 build/t/unit/cache/test_mesi_wire */
#include "check.h"
#include "core/prng.h"
#include "roles/cache/mesi.h"

static struct ds_mesi_msg sample(void)
{
    struct ds_mesi_msg m;
    memset(&m, 0, sizeof m);
    m.type = DS_MESI_MSG_DATA;
    m.grant = DS_MESI_M;
    m.flags = DS_MESI_FLAG_PRESENT | DS_MESI_FLAG_DIRTY;
    m.from = 3;
    m.to = 15;
    m.epoch = 0x0102030405060708ULL;
    m.txn = 11;
    m.req = 0xfffffffffffffff0ULL;
    m.gid = 13;
    m.version = 14;
    m.floor = 15;
    m.ts = 16;
    m.lease_ms = 2000;
    m.key = (const uint8_t *)"user:42";
    m.key_len = 7;
    m.value = (const uint8_t *)"{\"a\":1}";
    m.value_len = 7;
    return m;
}

static void every_field_survives_a_round_trip(void)
{
    struct ds_mesi_msg m = sample(), d;
    uint8_t buf[256];
    size_t len = 0;
    REQUIRE(ds_mesi_encode(&m, buf, sizeof buf, &len) == DS_MESI_OK);
    CHECK(len == DS_MESI_WIRE_HEADER + 14);
    REQUIRE(ds_mesi_decode(buf, len, &d) == DS_MESI_OK);
    CHECK(d.type == m.type && d.grant == m.grant && d.flags == m.flags && d.reason == 0);
    CHECK(d.from == 3 && d.to == 15 && d.epoch == m.epoch && d.txn == 11 && d.req == m.req);
    CHECK(d.gid == 13 && d.version == 14 && d.floor == 15 && d.ts == 16 && d.lease_ms == 2000);
    CHECK(d.key_len == 7 && memcmp(d.key, "user:42", 7) == 0);
    CHECK(d.value_len == 7 && memcmp(d.value, "{\"a\":1}", 7) == 0);
}

static void the_encoder_refuses_a_small_buffer_and_bad_fields(void)
{
    struct ds_mesi_msg m = sample();
    uint8_t buf[256];
    size_t len;
    CHECK(ds_mesi_encode(&m, buf, DS_MESI_WIRE_HEADER + 13, &len) == DS_MESI_EINVAL);
    m.type = 0;
    CHECK(ds_mesi_encode(&m, buf, sizeof buf, &len) == DS_MESI_EINVAL);
    m = sample();
    m.key_len = 0;
    CHECK(ds_mesi_encode(&m, buf, sizeof buf, &len) == DS_MESI_EINVAL);
}

/* Re-encode with one header byte changed and check the decoder's verdict. */
static int decode_with(size_t off, uint8_t val)
{
    struct ds_mesi_msg m = sample(), d;
    uint8_t buf[256];
    size_t len;
    if (ds_mesi_encode(&m, buf, sizeof buf, &len) != DS_MESI_OK)
        return -1;
    buf[off] = val;
    return ds_mesi_decode(buf, len, &d);
}

static void the_decoder_rejects_each_malformed_field(void)
{
    CHECK(decode_with(0, 0x00) == DS_MESI_EDECODE);             /* magic */
    CHECK(decode_with(1, 2) == DS_MESI_EDECODE);                /* wire version */
    CHECK(decode_with(2, 0) == DS_MESI_EDECODE);                /* type 0 */
    CHECK(decode_with(2, DS_MESI_MSG_NTYPES) == DS_MESI_EDECODE);
    CHECK(decode_with(3, DS_MESI_IS_D) == DS_MESI_EDECODE);     /* grant not S/E/M */
    CHECK(decode_with(4, 0x80) == DS_MESI_EDECODE);             /* unknown flag */
    CHECK(decode_with(5, 1) == DS_MESI_EDECODE);                /* reason on a non-Nack */
    CHECK(decode_with(6, DS_MESI_MAX_NODES) == DS_MESI_EDECODE); /* from out of range */
    CHECK(decode_with(9, 1) == DS_MESI_EDECODE);                /* to = 256 + 15 */
    CHECK(decode_with(70, 0) == DS_MESI_EDECODE);               /* key_len 0 */
    CHECK(decode_with(71, 0xff) == DS_MESI_EDECODE);            /* key_len huge */
    CHECK(decode_with(75, 0x7f) == DS_MESI_EDECODE);            /* value_len huge */
    CHECK(decode_with(72, 8) == DS_MESI_EDECODE);               /* value_len disagrees */
    CHECK(decode_with(20, 0xaa) == DS_MESI_OK);                 /* a txn byte is just a number */
    struct ds_mesi_msg d;
    CHECK(ds_mesi_decode(NULL, 0, &d) == DS_MESI_EDECODE);
}

static void the_decoder_rejects_every_truncation_and_extension(void)
{
    struct ds_mesi_msg m = sample(), d;
    uint8_t buf[256];
    size_t len;
    REQUIRE(ds_mesi_encode(&m, buf, sizeof buf, &len) == DS_MESI_OK);
    int accepted = 0;
    for (size_t n = 0; n < len; n++)
        accepted += ds_mesi_decode(buf, n, &d) == DS_MESI_OK;
    CHECK(accepted == 0);
    CHECK(ds_mesi_decode(buf, len + 1, &d) == DS_MESI_EDECODE);
}

/* Random and mutated inputs: never a crash, and anything accepted is self-consistent. */
static void random_and_mutated_input_never_crashes_the_decoder(void)
{
    const char *one = getenv("DS_SEED");
    uint64_t seed = one && *one ? strtoull(one, NULL, 10) : 7;
    struct ds_prng p;
    ds_prng_seed(&p, seed);
    struct ds_mesi_msg m = sample(), d;
    uint8_t good[256], buf[300];
    size_t glen;
    REQUIRE(ds_mesi_encode(&m, good, sizeof good, &glen) == DS_MESI_OK);
    unsigned long iters = check_seeds(200000);
    int bad = 0;
    for (unsigned long i = 0; i < iters; i++) {
        size_t len;
        if (i % 2) {
            len = (size_t)ds_prng_below(&p, sizeof buf);
            for (size_t k = 0; k < len; k++)
                buf[k] = (uint8_t)ds_prng_next(&p);
            if (len > 1)
                buf[0] = 0xC7, buf[1] = 1;
        } else {
            memcpy(buf, good, glen);
            len = glen;
            for (int f = 0; f < 3; f++)
                buf[ds_prng_below(&p, glen)] ^= (uint8_t)(1u << ds_prng_below(&p, 8));
        }
        if (ds_mesi_decode(buf, len, &d) != DS_MESI_OK)
            continue;
        if (DS_MESI_WIRE_HEADER + (size_t)d.key_len + d.value_len != len || d.key != buf + 76 ||
            d.from >= DS_MESI_MAX_NODES || d.to >= DS_MESI_MAX_NODES)
            bad++;
    }
    CHECKF(bad == 0, "seed %llu: %d inconsistent decodes (DS_SEED=%llu to replay)",
           (unsigned long long)seed, bad, (unsigned long long)seed);
}

int main(void)
{
    RUN(every_field_survives_a_round_trip);
    RUN(the_encoder_refuses_a_small_buffer_and_bad_fields);
    RUN(the_decoder_rejects_each_malformed_field);
    RUN(the_decoder_rejects_every_truncation_and_extension);
    RUN(random_and_mutated_input_never_crashes_the_decoder);
    return check_summary();
}
