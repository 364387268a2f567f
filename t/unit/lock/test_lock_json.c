/* The lock role's JSON answers (ds_json_print, and the ds_json_put_* writers of the write path)
 * print byte for byte as cJSON_PrintUnformatted prints them, for hand-picked edge cases and
 * random trees.
 * Replay one seed with DS_SEED=<n> build/t/unit/lock/test_lock_json. */
#include <float.h>
#include <math.h>
#include <stdint.h>

#include "check.h"
#include "core/buf.h"
#include "core/json.h"
#include "core/prng.h"

#define SEEDS 2000

/* 1 when ds_json_put_number writes d as cJSON prints a number item of d. */
static int put_number_same_as_cjson(double d)
{
    cJSON *n = cJSON_CreateNumber(d);
    char *want = cJSON_PrintUnformatted(n);
    struct ds_buf b = {0};
    int ok = ds_json_put_number(&b, d) == 0 && want && strcmp(b.p, want) == 0;
    if (!ok)
        fprintf(stderr, "number %.17g: cJSON %s, ours %s\n", d, want, b.p ? b.p : "(null)");
    ds_buf_free(&b);
    cJSON_free(want);
    cJSON_Delete(n);
    return ok;
}

/* 1 when both printers give the same text (or both fail); prints the two otherwise. */
static int same_as_cjson(const cJSON *v, const char *what, unsigned long seed)
{
    char *want = cJSON_PrintUnformatted(v);
    size_t len = 0;
    char *got = ds_json_print(v, &len);
    int ok = (!want && !got) ||
             (want && got && strcmp(want, got) == 0 && len == strlen(want));
    if (!ok)
        fprintf(stderr, "%s (DS_SEED=%lu):\n  cJSON: %s\n  ours:  %s\n", what, seed,
                want ? want : "(null)", got ? got : "(null)");
    cJSON_free(want);
    free(got);
    return ok;
}

static void whole_numbers_print_as_cjson_prints_them(void)
{
    static const double v[] = {0, -0.0, 1, -1, 42, 2147483647.0, 2147483648.0, -2147483648.0,
                               -2147483649.0, 1764149234123.0, 999999999999999.0, 1e15, -1e15,
                               1e15 + 1, 9007199254740992.0, 9007199254740993.0, 1e17, 1e300,
                               -123456789012345.0, 4294967296.0};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        cJSON *n = cJSON_CreateNumber(v[i]);
        CHECKF(same_as_cjson(n, "whole number", 0), "value %.17g", v[i]);
        CHECK(put_number_same_as_cjson(v[i]));
        cJSON_Delete(n);
    }
}

static void fractions_and_non_finite_numbers_print_as_cjson_prints_them(void)
{
    const double v[] = {0.5, -0.1, 1.0 / 3, 3.14159265358979, 1e-300, DBL_MIN, DBL_MAX,
                        123456.789, 0.1 + 0.2, 1e15 + 0.5, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        cJSON *n = cJSON_CreateNumber(v[i]);
        CHECKF(same_as_cjson(n, "number", 0), "value %.17g", v[i]);
        CHECK(put_number_same_as_cjson(v[i]));
        cJSON_Delete(n);
    }
}

static void strings_escape_as_cjson_escapes_them(void)
{
    const char *v[] = {"", "plain", "quote\" back\\slash", "\b\f\n\r\t", "\x01\x1f\x7f",
                       "caf\xc3\xa9 \xe2\x82\xac \xff", "/slash/", "end\\"};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, v[i], v[i]);
        CHECKF(same_as_cjson(o, "string", 0), "string %zu", i);
        cJSON_Delete(o);
        cJSON *str = cJSON_CreateString(v[i]);
        char *want = cJSON_PrintUnformatted(str);
        struct ds_buf b = {0};
        ds_json_put_str(&b, v[i]);
        CHECKF(want && b.p && strcmp(want, b.p) == 0, "ds_json_put_str of string %zu", i);
        ds_buf_free(&b);
        cJSON_free(want);
        cJSON_Delete(str);
    }
}

static void odd_items_print_or_fail_as_cjson_does(void)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "raw", cJSON_CreateRaw("{\"x\":[1,2]}"));
    cJSON_AddItemToObject(o, "empty_obj", cJSON_CreateObject());
    cJSON_AddItemToObject(o, "empty_arr", cJSON_CreateArray());
    cJSON_AddNullToObject(o, "null");
    cJSON_AddItemReferenceToObject(o, "ref", cJSON_GetObjectItem(o, "raw"));
    CHECK(same_as_cjson(o, "odd items", 0));
    cJSON *s = cJSON_CreateString("x");
    free(s->valuestring);
    s->valuestring = NULL; /* a string without text prints as "" */
    CHECK(same_as_cjson(s, "string without text", 0));
    cJSON_Delete(s);
    cJSON *bad = cJSON_CreateRaw("r");
    free(bad->valuestring);
    bad->valuestring = NULL; /* raw without text: both fail */
    cJSON_AddItemToObject(o, "bad", bad);
    CHECK(same_as_cjson(o, "raw without text", 0));
    cJSON_Delete(o);
}

static cJSON *random_value(struct ds_prng *p, int depth)
{
    static const char alphabet[] = "ab\"\\/\n\t\x01\x1f \xc3\xa9{}:,0";
    char s[16];
    size_t n = (size_t)ds_prng_below(p, sizeof s);
    for (size_t i = 0; i < n; i++)
        s[i] = alphabet[ds_prng_below(p, sizeof alphabet - 1)];
    s[n] = 0;
    switch (ds_prng_below(p, depth > 3 ? 6 : 8)) {
    case 0:
        return cJSON_CreateNull();
    case 1:
        return cJSON_CreateBool(ds_prng_below(p, 2));
    case 2:
        return cJSON_CreateNumber((double)(int64_t)ds_prng_next(p) /
                                  (double)(1ull << ds_prng_below(p, 64)));
    case 3:
        return cJSON_CreateNumber((double)(ds_prng_next(p) >> ds_prng_below(p, 64)));
    case 4:
        return cJSON_CreateNumber(-(double)(ds_prng_next(p) >> (11 + ds_prng_below(p, 53))));
    case 5:
        return cJSON_CreateString(s);
    default: {
        int object = ds_prng_below(p, 2) == 0;
        cJSON *c = object ? cJSON_CreateObject() : cJSON_CreateArray();
        uint64_t k = ds_prng_below(p, 5);
        for (uint64_t i = 0; i < k; i++) {
            if (object)
                cJSON_AddItemToObject(c, s, random_value(p, depth + 1));
            else
                cJSON_AddItemToArray(c, random_value(p, depth + 1));
        }
        return c;
    }
    }
}

static void random_trees_print_as_cjson_prints_them(void)
{
    const char *env = getenv("DS_SEED");
    unsigned long first = env ? strtoul(env, NULL, 10) : 1, last = env ? first : SEEDS;
    for (unsigned long seed = first; seed <= last; seed++) {
        struct ds_prng p;
        ds_prng_seed(&p, seed);
        cJSON *v = random_value(&p, 0);
        int ok = same_as_cjson(v, "random tree", seed);
        cJSON_Delete(v);
        REQUIRE(ok);
    }
}

int main(void)
{
    RUN(whole_numbers_print_as_cjson_prints_them);
    RUN(fractions_and_non_finite_numbers_print_as_cjson_prints_them);
    RUN(strings_escape_as_cjson_escapes_them);
    RUN(odd_items_print_or_fail_as_cjson_does);
    RUN(random_trees_print_as_cjson_prints_them);
    return check_summary();
}
