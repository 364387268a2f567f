/* The JSON scanner: what it accepts and refuses, where values end, string decoding, and that
 * everything it accepts cJSON parses too (the property the fuzz target checks on random input). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/jscan.h"
#include "core/prng.h"

static int skip_all(const char *s)
{
    const char *end = s + strlen(s), *out;
    if (ds_js_skip(s, end, &out))
        return -1;
    return ds_js_ws(out, end) == end ? 0 : -1;
}

static void valid_values_are_accepted_and_end_where_they_end(void)
{
    static const char *const ok[] = {
        "0", "-0", "12", "-3.25", "1e5", "1E+5", "2.5e-3", "true", "false", "null", "\"\"",
        "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"", "\"\\u00e9\\ud83d\\ude00\"", "[]", "{}", "[ ]",
        "{ }", "[1,2,[3,{\"a\":[]}]]", "{\"a\" : 1 , \"b\":{\"c\":null}}", "\"\\u0000\"",
        "[\"x\",true,false,null,-1.5e10]",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        CHECKF(skip_all(ok[i]) == 0, "%s", ok[i]);
    const char *s = "{\"a\":[1,2]}  ,rest", *out;
    REQUIRE(ds_js_skip(s, s + strlen(s), &out) == DS_JS_OK);
    CHECK(out == s + 11);
    s = "123,";
    REQUIRE(ds_js_skip(s, s + 4, &out) == DS_JS_OK);
    CHECK(out == s + 3);
}

static void malformed_values_are_refused(void)
{
    static const char *const bad[] = {
        "", "01", "-", "1.", ".5", "1e", "+1", "0x10", "tru", "nul", "True", "\"abc", "\"a\nb\"",
        "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "[", "[1,]",
        "[,1]", "{\"a\"}", "{\"a\":}", "{a:1}", "{\"a\":1,}", "{,}", "[1 2]", "{\"a\":1 \"b\":2}",
        "]", "}", "\"\\", "[\"a\"", "{\"a\":1",
        ("1234567890123456789012345678901234567890" /* 70 digits: longer than cJSON reads */
         "123456789012345678901234567890"),
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECKF(skip_all(bad[i]) != 0, "'%s' accepted", bad[i]);
}

static void nesting_is_bounded(void)
{
    size_t n = DS_JS_DEPTH_MAX;
    char *s = malloc(2 * n + 3);
    REQUIRE(s);
    memset(s, '[', n);
    memset(s + n, ']', n);
    s[2 * n] = '\0';
    CHECK(skip_all(s) == 0);
    memset(s, '[', n + 1);
    memset(s + n + 1, ']', n + 1);
    s[2 * n + 2] = '\0';
    CHECK(skip_all(s) != 0);
    free(s);
}

static void strings_decode_escapes_and_report_length_and_nul(void)
{
    const char *s = "\"a\\n\\u00e9\\ud83d\\ude00z\"tail", *out;
    char buf[32];
    size_t len;
    REQUIRE(ds_js_string(s, s + strlen(s), buf, sizeof buf, &len, &out) == DS_JS_OK);
    CHECK(len == 9 && memcmp(buf, "a\n\xc3\xa9\xf0\x9f\x98\x80z", 10) == 0);
    CHECK(strcmp(out, "tail") == 0);
    CHECK(ds_js_string(s, s + strlen(s), buf, 9, &len, &out) == DS_JS_ETOOLONG);
    CHECK(len == 9 && strlen(buf) == 8 && strcmp(out, "tail") == 0);
    CHECK(ds_js_string(s, s + strlen(s), buf, 10, &len, &out) == DS_JS_OK);
    s = "\"a\\u0000b\"";
    CHECK(ds_js_string(s, s + strlen(s), buf, sizeof buf, &len, &out) == DS_JS_ENUL);
    s = "\"ab";
    CHECK(ds_js_string(s, s + strlen(s), buf, sizeof buf, &len, &out) == DS_JS_EINVAL);
    s = "x";
    CHECK(ds_js_string(s, s + 1, buf, sizeof buf, &len, &out) == DS_JS_EINVAL);
}

/* Random strings over a JSON-ish alphabet: whatever the scanner accepts cJSON parses, and a
 * decoded string equals cJSON's. */
static void accepted_inputs_parse_in_cjson_too(void)
{
    static const char alpha[] = "{}[]\":,0123-.eE+ \\untrfals/x\x01\xc3\xa9";
    struct ds_prng r;
    ds_prng_seed(&r, 42);
    unsigned accepted = 0;
    for (int i = 0; i < 200000; i++) {
        char s[24];
        size_t n = (size_t)ds_prng_below(&r, sizeof s - 1);
        for (size_t j = 0; j < n; j++)
            s[j] = alpha[ds_prng_below(&r, sizeof alpha - 1)];
        s[n] = '\0';
        const char *out;
        if (n == 0 || ds_js_skip(s, s + n, &out) || out != s + n)
            continue;
        accepted++;
        cJSON *j = cJSON_ParseWithLength(s, n);
        CHECKF(j != NULL, "cJSON refuses '%s'", s);
        if (j && cJSON_IsString(j)) {
            char buf[64];
            size_t len;
            if (ds_js_string(s, s + n, buf, sizeof buf, &len, &out) == DS_JS_OK)
                CHECKF(strcmp(buf, j->valuestring) == 0, "'%s' decodes differently", s);
        }
        cJSON_Delete(j);
    }
    CHECKF(accepted > 1000, "only %u random inputs were JSON", accepted);
}

int main(void)
{
    RUN(valid_values_are_accepted_and_end_where_they_end);
    RUN(malformed_values_are_refused);
    RUN(nesting_is_bounded);
    RUN(strings_decode_escapes_and_report_length_and_nul);
    RUN(accepted_inputs_parse_in_cjson_too);
    return check_summary();
}
