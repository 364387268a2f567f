/* HTTP request-head parser, router, JSON helpers and metrics rendering. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/json.h"
#include "core/metrics.h"
#include "net/http_parse.h"
#include "net/router.h"

static const struct ds_http_limits lim = {.max_head_bytes = 4096, .max_headers = 8,
                                          .max_body = 1000};
static struct ds_http_header hdrs[8];

static int parse(const char *s, struct ds_http_head *h)
{
    return ds_http_parse_head(s, strlen(s), &lim, hdrs, h, NULL);
}

/* ------------------------------------------------------------------ parser */

static void a_simple_get_parses_with_keep_alive(void)
{
    struct ds_http_head h;
    REQUIRE(parse("GET /health?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", &h) == DS_HTTP_PARSE_DONE);
    CHECK(h.method == DS_HTTP_GET);
    CHECK(h.path_len == 7 && memcmp(h.path, "/health", 7) == 0);
    CHECK(h.query_len == 3 && memcmp(h.query, "x=1", 3) == 0);
    CHECK(h.keep_alive);
    CHECK(h.nheaders == 1);
    CHECK(h.head_len == strlen("GET /health?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"));
    CHECK(ds_http_find_header(&h, "HOST") != NULL);
}

static void http10_closes_unless_keep_alive_is_asked(void)
{
    struct ds_http_head h;
    REQUIRE(parse("GET / HTTP/1.0\r\n\r\n", &h) == DS_HTTP_PARSE_DONE);
    CHECK(!h.keep_alive);
    REQUIRE(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &h) == DS_HTTP_PARSE_DONE);
    CHECK(h.keep_alive);
    REQUIRE(parse("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n", &h) == DS_HTTP_PARSE_DONE);
    CHECK(!h.keep_alive);
}

static void partial_heads_ask_for_more(void)
{
    struct ds_http_head h;
    const char *full = "POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
    for (size_t n = 0; n < strlen(full); n++)
        CHECKF(ds_http_parse_head(full, n, &lim, hdrs, &h, NULL) == DS_HTTP_PARSE_AGAIN, "n=%zu", n);
    CHECK(ds_http_parse_head(full, strlen(full), &lim, hdrs, &h, NULL) == DS_HTTP_PARSE_DONE);
    CHECK(h.content_length == 5);
}

static void bare_lf_line_endings_are_accepted(void)
{
    struct ds_http_head h;
    CHECK(parse("GET / HTTP/1.1\nHost: x\n\n", &h) == DS_HTTP_PARSE_DONE);
}

static void refusals_carry_the_right_status(void)
{
    struct ds_http_head h;
    CHECK(parse("GARBAGE\r\n\r\n", &h) == 400);
    CHECK(parse("G(T / HTTP/1.1\r\n\r\n", &h) == 400);
    CHECK(parse("GET x HTTP/1.1\r\n\r\n", &h) == 400);
    CHECK(parse("GET / HTTP/2.0\r\n\r\n", &h) == 505);
    CHECK(parse("GET / HTTX/1.1\r\n\r\n", &h) == 400);
    CHECK(parse("GET /\x01 HTTP/1.1\r\n\r\n", &h) == 400);
    CHECK(parse("GET /\xff HTTP/1.1\r\n\r\n", &h) == 400);
    CHECK(parse("GET / HTTP/1.1\r\n folded\r\n\r\n", &h) == 400);
    CHECK(parse("GET / HTTP/1.1\r\nNoColon\r\n\r\n", &h) == 400);
    CHECK(parse("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", &h) == 400);
    CHECK(parse("GET / HTTP/1.1\r\nX: a\x01" "b\r\n\r\n", &h) == 400);
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", &h) == 400);
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &h) == 400);
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", &h) == 400);
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", &h) == 413);
    CHECK(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &h) == 411);
    CHECK(parse("POST / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", &h) == 417);
}

static void identical_repeated_content_length_is_accepted(void)
{
    struct ds_http_head h;
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", &h) == 0);
    CHECK(h.content_length == 3);
}

static void too_many_or_too_large_headers_are_431(void)
{
    struct ds_http_head h;
    char buf[8192];
    strcpy(buf, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 9; i++)
        strcat(buf, "X: y\r\n");
    strcat(buf, "\r\n");
    CHECK(parse(buf, &h) == 431);
    memset(buf, 'a', sizeof buf);
    memcpy(buf, "GET / HTTP/1.1\r\nX: ", 19);
    CHECK(ds_http_parse_head(buf, sizeof buf, &lim, hdrs, &h, NULL) == 431);
}

static void very_long_targets_are_414(void)
{
    struct ds_http_limits big = lim;
    big.max_head_bytes = 20000;
    static char buf[20000];
    memset(buf, 'a', sizeof buf);
    memcpy(buf, "GET /", 5);
    memcpy(buf + 9000, " HTTP/1.1\r\n\r\n", 13);
    struct ds_http_head h;
    CHECK(ds_http_parse_head(buf, 9013, &big, hdrs, &h, NULL) == 414);
}

static void expect_continue_is_reported(void)
{
    struct ds_http_head h;
    REQUIRE(parse("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", &h) == 0);
    CHECK(h.expect_continue);
}

static void unknown_methods_parse_as_other(void)
{
    struct ds_http_head h;
    REQUIRE(parse("BREW /pot HTTP/1.1\r\n\r\n", &h) == 0);
    CHECK(h.method == DS_HTTP_OTHER);
    CHECK(h.method_len == 4);
}

static void random_bytes_never_crash_the_parser(void)
{
    struct ds_prng_state {
        unsigned long long x;
    } st = {88172645463325252ULL};
    char buf[512];
    struct ds_http_head h;
    for (int round = 0; round < 20000; round++) {
        size_t n = (size_t)(st.x % sizeof buf);
        for (size_t i = 0; i < n; i++) {
            st.x ^= st.x << 13;
            st.x ^= st.x >> 7;
            st.x ^= st.x << 17;
            const char alphabet[] = "GET /a HTTP/1.1\r\n:Content-Length: 0123456789\x00\xff ";
            buf[i] = (st.x & 1) ? alphabet[st.x % (sizeof alphabet - 1)] : (char)(st.x >> 8);
        }
        st.x ^= st.x << 13;
        int rv = ds_http_parse_head(buf, n, &lim, hdrs, &h, NULL);
        CHECK(rv == 0 || rv == 1 || (rv >= 400 && rv < 600));
        if (rv == 0)
            CHECK(h.head_len <= n);
    }
}

/* ------------------------------------------------------------------ router */

static void h1(struct ds_http_req *r) { (void)r; }
static void h2(struct ds_http_req *r) { (void)r; }

static struct ds_router *make_router(void)
{
    struct ds_router *r = ds_router_new();
    struct ds_route routes[] = {
        {DS_HTTP_GET, "/lock/{resource}", h1, 0, NULL},
        {DS_HTTP_POST, "/lock/acquire", h2, DS_ROUTE_MUTATING, NULL},
        {DS_HTTP_GET | DS_HTTP_PUT | DS_HTTP_DELETE, "/cache/{key}", h1, 0, NULL},
        {DS_HTTP_GET, "/cache/{key}/state", h2, 0, NULL},
        {DS_HTTP_GET, "/health", h1, 0, NULL},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        ds_router_add(r, &routes[i]);
    return r;
}

static void literal_segments_win_over_captures(void)
{
    struct ds_router *r = make_router();
    struct ds_route_match m;
    CHECK(ds_router_match(r, DS_HTTP_POST, "/lock/acquire", 13, &m) == 0 && m.route->handler == h2);
    CHECK(ds_router_match(r, DS_HTTP_GET, "/lock/acquire", 13, &m) == 0 && m.route->handler == h1);
    CHECK(m.nparams == 1 && strcmp(m.params[0], "acquire") == 0);
    ds_router_free(r);
}

static void captures_are_percent_decoded(void)
{
    struct ds_router *r = make_router();
    struct ds_route_match m;
    const char *p = "/cache/a%2Fb%20c/state";
    REQUIRE(ds_router_match(r, DS_HTTP_GET, p, strlen(p), &m) == 0);
    CHECK(strcmp(m.params[0], "a/b c") == 0);
    p = "/cache/a%2";
    CHECK(ds_router_match(r, DS_HTTP_GET, p, strlen(p), &m) == 400);
    p = "/cache/a%00b";
    CHECK(ds_router_match(r, DS_HTTP_GET, p, strlen(p), &m) == 400);
    ds_router_free(r);
}

static void wrong_method_is_405_with_the_allowed_set(void)
{
    struct ds_router *r = make_router();
    struct ds_route_match m;
    CHECK(ds_router_match(r, DS_HTTP_POST, "/cache/k", 8, &m) == 405);
    char allow[64];
    ds_router_allow_header(m.allow, allow, sizeof allow);
    CHECK(strcmp(allow, "GET, PUT, DELETE") == 0);
    CHECK(ds_router_match(r, DS_HTTP_OTHER, "/health", 7, &m) == 405);
    ds_router_free(r);
}

static void unknown_paths_are_404(void)
{
    struct ds_router *r = make_router();
    struct ds_route_match m;
    CHECK(ds_router_match(r, DS_HTTP_GET, "/", 1, &m) == 404);
    CHECK(ds_router_match(r, DS_HTTP_GET, "/health/", 8, &m) == 404);
    CHECK(ds_router_match(r, DS_HTTP_GET, "/cache//state", 13, &m) == 404);
    CHECK(ds_router_match(r, DS_HTTP_GET, "/healthz", 8, &m) == 404);
    ds_router_free(r);
}

/* ------------------------------------------------------------------ JSON helpers */

static void utf8_validation_follows_rfc3629(void)
{
    CHECK(ds_utf8_valid("plain", 5));
    CHECK(ds_utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9));
    CHECK(!ds_utf8_valid("\xc0\xaf", 2));         /* overlong */
    CHECK(!ds_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    CHECK(!ds_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    CHECK(!ds_utf8_valid("\xe2\x82", 2));         /* truncated */
    CHECK(!ds_utf8_valid("\xff", 1));
}

static void request_bodies_must_be_one_json_object(void)
{
    cJSON *o;
    char err[DS_JSON_ERR_MAX];
    CHECK(ds_json_parse_object("", 0, &o, err) == DS_JSON_EPARSE);
    CHECK(ds_json_parse_object("[1]", 3, &o, err) == DS_JSON_EPARSE && o == NULL);
    CHECK(ds_json_parse_object("{\"a\":1} x", 9, &o, err) == DS_JSON_EPARSE);
    CHECK(ds_json_parse_object("{\"a\":", 5, &o, err) == DS_JSON_EPARSE);
    CHECK(ds_json_parse_object("{\"a\":\"\xff\"}", 9, &o, err) == DS_JSON_EPARSE);
    CHECK(strstr(err, "UTF-8") != NULL);
    REQUIRE(ds_json_parse_object(" {\"a\":1}\n", 9, &o, err) == 0);
    cJSON_Delete(o);
}

static void typed_getters_name_the_field(void)
{
    cJSON *o;
    char err[DS_JSON_ERR_MAX];
    const char *body = "{\"s\":\"abc\",\"n\":42,\"big\":\"18446744073709551615\",\"b\":true,"
                       "\"f\":1.5,\"neg\":-1,\"d\":1,\"d\":2}";
    REQUIRE(ds_json_parse_object(body, strlen(body), &o, err) == 0);
    const char *s = NULL;
    uint64_t n = 0;
    bool b = false;
    CHECK(ds_json_get_str(o, "s", true, 10, &s, err) == 0 && strcmp(s, "abc") == 0);
    CHECK(ds_json_get_str(o, "s", true, 2, &s, err) == DS_JSON_EFIELD && strstr(err, "'s'"));
    CHECK(ds_json_get_str(o, "n", true, 10, &s, err) == DS_JSON_EFIELD && strstr(err, "string"));
    CHECK(ds_json_get_str(o, "missing", true, 10, &s, err) == DS_JSON_EFIELD);
    CHECK(ds_json_get_str(o, "missing", false, 10, &s, err) == 0);
    CHECK(ds_json_get_u64(o, "n", true, 0, 100, &n, err) == 0 && n == 42);
    CHECK(ds_json_get_u64(o, "n", true, 0, 10, &n, err) == DS_JSON_EFIELD);
    CHECK(ds_json_get_u64(o, "big", true, 0, UINT64_MAX, &n, err) == 0 && n == UINT64_MAX);
    CHECK(ds_json_get_u64(o, "f", true, 0, 10, &n, err) == DS_JSON_EFIELD);
    CHECK(ds_json_get_u64(o, "neg", true, 0, 10, &n, err) == DS_JSON_EFIELD);
    CHECK(ds_json_get_bool(o, "b", true, &b, err) == 0 && b);
    CHECK(ds_json_get_bool(o, "n", true, &b, err) == DS_JSON_EFIELD);
    CHECK(ds_json_get_u64(o, "d", true, 0, 10, &n, err) == DS_JSON_EFIELD && strstr(err, "twice"));
    static const char *const allowed[] = {"s", "n", "big", "b", "f", "neg", NULL};
    CHECK(ds_json_only_fields(o, allowed, err) == DS_JSON_EFIELD && strstr(err, "'d'"));
    cJSON_Delete(o);
}

static void error_bodies_are_valid_json_whatever_the_message(void)
{
    char buf[128];
    size_t n = ds_json_error_body(buf, sizeof buf, "bad_request", "quote \" slash \\ nl \n \xff");
    CHECK(n == strlen(buf));
    cJSON *o = cJSON_Parse(buf);
    REQUIRE(o != NULL);
    cJSON *e = cJSON_GetObjectItem(o, "error");
    CHECK(strcmp(cJSON_GetObjectItem(e, "code")->valuestring, "bad_request") == 0);
    cJSON_Delete(o);
    char longmsg[400];
    memset(longmsg, 'x', sizeof longmsg - 1);
    longmsg[sizeof longmsg - 1] = 0;
    ds_json_error_body(buf, sizeof buf, "c", longmsg);
    o = cJSON_Parse(buf);
    CHECK(o != NULL); /* truncated, still closed */
    cJSON_Delete(o);
}

/* ------------------------------------------------------------------ metrics */

static void metrics_render_in_prometheus_text_format(void)
{
    struct ds_metrics *m = ds_metrics_new();
    ds_metric_inc(ds_metrics_counter(m, "dsyncd_x_total", "X things", "code=\"200\""), 2);
    ds_metric_inc(ds_metrics_counter(m, "dsyncd_x_total", "X things", "code=\"404\""), 1);
    ds_metric_inc(ds_metrics_counter(m, "dsyncd_x_total", "X things", "code=\"200\""), 1);
    static const double bounds[] = {0.1, 1};
    struct ds_metric *h = ds_metrics_histogram(m, "dsyncd_lat_seconds", "Latency", "", bounds, 2);
    ds_metric_observe(h, 0.05);
    ds_metric_observe(h, 0.5);
    ds_metric_observe(h, 5);
    struct ds_buf b = {0};
    ds_metrics_render(m, &b);
    REQUIRE(b.p != NULL);
    CHECK(strstr(b.p, "# TYPE dsyncd_x_total counter\n") != NULL);
    CHECK(strstr(b.p, "dsyncd_x_total{code=\"200\"} 3\n") != NULL);
    CHECK(strstr(b.p, "dsyncd_x_total{code=\"404\"} 1\n") != NULL);
    CHECK(strstr(b.p, "dsyncd_lat_seconds_bucket{le=\"0.1\"} 1\n") != NULL);
    CHECK(strstr(b.p, "dsyncd_lat_seconds_bucket{le=\"1\"} 2\n") != NULL);
    CHECK(strstr(b.p, "dsyncd_lat_seconds_bucket{le=\"+Inf\"} 3\n") != NULL);
    CHECK(strstr(b.p, "dsyncd_lat_seconds_count 3\n") != NULL);
    const char *first = strstr(b.p, "# HELP dsyncd_x_total");
    CHECK(first && !strstr(first + 1, "# HELP dsyncd_x_total")); /* one HELP per family */
    ds_buf_free(&b);
    ds_metrics_free(m);
}

int main(void)
{
    RUN(a_simple_get_parses_with_keep_alive);
    RUN(http10_closes_unless_keep_alive_is_asked);
    RUN(partial_heads_ask_for_more);
    RUN(bare_lf_line_endings_are_accepted);
    RUN(refusals_carry_the_right_status);
    RUN(identical_repeated_content_length_is_accepted);
    RUN(too_many_or_too_large_headers_are_431);
    RUN(very_long_targets_are_414);
    RUN(expect_continue_is_reported);
    RUN(unknown_methods_parse_as_other);
    RUN(random_bytes_never_crash_the_parser);
    RUN(literal_segments_win_over_captures);
    RUN(captures_are_percent_decoded);
    RUN(wrong_method_is_405_with_the_allowed_set);
    RUN(unknown_paths_are_404);
    RUN(utf8_validation_follows_rfc3629);
    RUN(request_bodies_must_be_one_json_object);
    RUN(typed_getters_name_the_field);
    RUN(error_bodies_are_valid_json_whatever_the_message);
    RUN(metrics_render_in_prometheus_text_format);
    return check_summary();
}
