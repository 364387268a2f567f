/* HTTPS server on libevent bufferevents: HTTP/1.1 keep-alive and pipelining over TLS, the route
 * table, limits with JSON errors, per-route metrics, audit records and graceful shutdown.
 *
 * libevent's evhttp is not used: in 2.1 it answers its own errors (413, 400, 431) with HTML bodies
 * and no hook to change them, and its per-request allocations cap it well below nginx on this
 * machine (notes/http.md).  The parser (http_parse.c) is pure and fuzzed separately. */
#include "net/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/json.h"
#include "core/log.h"
#include "net/auth.h"
#include "net/authz.h"
#include "net/tls.h"

#define MAX_CODES 12
#define OUTPUT_HIGH_WATER (1u << 20)
#define PEER_MAX_BODY (256u << 20)

struct route_stats {
    struct {
        int status;
        struct ds_metric *m;
    } codes[MAX_CODES];
    int ncodes;
    struct ds_metric *latency;
};

struct ds_conn {
    struct ds_server *s;
    struct bufferevent *bev;
    struct event *deadline; /* the head and body of a request must arrive within header_timeout */
    struct ds_conn *prev, *next;
    char addr[64];
    char identity[128];
    int handshaken;
    int busy;          /* a request is with its handler */
    int in_process;    /* process_input is on the stack */
    int close_after;   /* close once the output is written */
    int sent_continue; /* "100 Continue" sent for the request being read */
    struct ds_http_req req;
    struct ds_http_header *headers;
    char *reqbuf;
    size_t reqcap;
    char extra[512]; /* extra response headers for the current request */
    size_t extra_len;
};

struct ds_server {
    struct event_base *base;
    const struct ds_config *cfg;
    struct ds_tls *tls;
    struct evconnlistener *listener;
    struct ds_router *router;
    struct ds_metrics *metrics;
    struct ds_http_limits lim;
    struct ds_http_limits peer_lim; /* connections with a verified client certificate */
    struct timeval idle_tv, head_tv;
    struct ds_conn *conns;
    int nconns;
    int shutting_down;
    struct event *grace;
    void (*done)(void *);
    void *done_arg;
    struct route_stats *rstats; /* [0] = requests that matched no route, [i+1] = route i */
    int nrstats;
    struct ds_metric *m_open, *m_accepted, *m_refused, *m_tls_fail, *m_read_paused;
    struct ds_auth *auth; /* peer routes: HMAC check (NULL: peer routes refuse everything) */
    struct ds_metric *m_auth_fail[6];
    struct ds_authz *authz;                /* client identities; NULL = client auth off */
    struct ds_authz_throttle *throttle;    /* failures per source address */
    struct ds_metric *m_client_refused[3]; /* 401, 403, 429 */
    time_t date_sec;
    char date[40];
    time_t accept_err_logged;
    struct event *resume; /* re-enables accepting after an accept error */
};

static void process_input(struct ds_conn *c);
static void pace_reading(struct ds_conn *c);
static void conn_free(struct ds_conn *c);

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static const char *http_date(struct ds_server *s)
{
    time_t t = time(NULL);
    if (t != s->date_sec) {
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(s->date, sizeof s->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        s->date_sec = t;
    }
    return s->date;
}

/* ------------------------------------------------------------------ metrics */

static struct route_stats *stats_for(struct ds_server *s, int route_index)
{
    int i = route_index + 1;
    return i >= 0 && i < s->nrstats ? &s->rstats[i] : &s->rstats[0];
}

static void count_request(struct ds_server *s, int route_index, int status, uint64_t start_ns)
{
    struct route_stats *rs = stats_for(s, route_index);
    struct ds_metric *m = NULL;
    for (int i = 0; i < rs->ncodes; i++)
        if (rs->codes[i].status == status)
            m = rs->codes[i].m;
    if (!m) {
        const struct ds_route *rt = ds_router_at(s->router, route_index);
        char labels[160];
        snprintf(labels, sizeof labels, "route=\"%s\",code=\"%d\"", rt ? rt->pattern : "(none)",
                 status);
        m = ds_metrics_counter(s->metrics, "dsyncd_http_requests_total",
                               "HTTP requests answered, by route pattern and status", labels);
        if (rs->ncodes < MAX_CODES) {
            rs->codes[rs->ncodes].status = status;
            rs->codes[rs->ncodes++].m = m;
        }
    }
    ds_metric_inc(m, 1);
    ds_metric_observe(rs->latency, (double)(now_ns() - start_ns) / 1e9);
}

static int add_route_stats(struct ds_server *s, const char *pattern)
{
    struct route_stats *n = realloc(s->rstats, (size_t)(s->nrstats + 1) * sizeof *n);
    if (!n)
        return ENOMEM;
    s->rstats = n;
    struct route_stats *rs = &n[s->nrstats++];
    memset(rs, 0, sizeof *rs);
    char labels[160];
    snprintf(labels, sizeof labels, "route=\"%s\"", pattern);
    rs->latency = ds_metrics_histogram(s->metrics, "dsyncd_http_request_duration_seconds",
                                       "Time from a request's arrival to its answer",
                                       labels, ds_metrics_latency_bounds,
                                       ds_metrics_latency_nbounds);
    return rs->latency ? 0 : ENOMEM;
}

/* ------------------------------------------------------------------ responses */

/* The head of an answer into buf (cap bytes), built by copying (snprintf showed in the lock
 * path's profile); 0 when it does not fit. */
static size_t response_head(struct ds_conn *c, int status, const char *ctype, size_t len,
                            char *buf, size_t cap)
{
    const char *reason = ds_http_reason(status), *date = http_date(c->s);
    size_t rl = strlen(reason), dl = strlen(date), cl = strlen(ctype), nl = 0;
    char num[20];
    do
        num[sizeof num - ++nl] = (char)('0' + len % 10);
    while ((len /= 10) != 0);
    if (status < 100 || status > 999 ||
        9 + 4 + rl + 24 + dl + 16 + cl + 18 + nl + 2 + c->extra_len + 19 + 2 > cap)
        return 0;
    char *p = buf;
#define PUT(s, n) (memcpy(p, (s), (n)), p += (n))
    PUT("HTTP/1.1 ", 9);
    *p++ = (char)('0' + status / 100);
    *p++ = (char)('0' + status / 10 % 10);
    *p++ = (char)('0' + status % 10);
    *p++ = ' ';
    PUT(reason, rl);
    PUT("\r\nServer: dsyncd\r\nDate: ", 24);
    PUT(date, dl);
    PUT("\r\nContent-Type: ", 16);
    PUT(ctype, cl);
    PUT("\r\nContent-Length: ", 18);
    PUT(num + sizeof num - nl, nl);
    PUT("\r\n", 2);
    PUT(c->extra, c->extra_len);
    if (c->close_after)
        PUT("Connection: close\r\n", 19);
    PUT("\r\n", 2);
#undef PUT
    return (size_t)(p - buf);
}

static void write_response(struct ds_conn *c, int status, const char *ctype, const void *body,
                           size_t len, int head_only)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    char buf[4096];
    size_t hl = response_head(c, status, ctype, len, buf, sizeof buf);
    if (!hl) {
        static const char fallback[] = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0"
                                       "\r\nConnection: close\r\n\r\n";
        hl = sizeof fallback - 1;
        memcpy(buf, fallback, hl);
        len = 0;
        c->close_after = 1;
    }
    if (head_only)
        len = 0;
    if (hl + len <= sizeof buf) { /* one write, one TLS record: at once when nothing waits */
        memcpy(buf + hl, body, len);
        size_t sent = c->close_after ? 0 : ds_tls_write_now(c->bev, buf, hl + len);
        if (sent < hl + len)
            evbuffer_add(out, buf + sent, hl + len - sent);
    } else {
        evbuffer_add(out, buf, hl);
        evbuffer_add(out, body, len);
    }
    c->extra_len = 0;
}

/* Bytes of a JSON error body, for answers given before any handler runs. */
static void send_error(struct ds_conn *c, int status, const char *code, const char *message)
{
    char body[512];
    size_t n = ds_json_error_body(body, sizeof body, code, message);
    write_response(c, status, "application/json", body, n, 0);
}

static const char *code_for_status(int status)
{
    switch (status) {
    case 400: return "bad_request";
    case 401: return "unauthenticated";
    case 403: return "forbidden";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 408: return "request_timeout";
    case 409: return "conflict";
    case 411: return "length_required";
    case 413: return "payload_too_large";
    case 414: return "uri_too_long";
    case 417: return "expectation_failed";
    case 429: return "too_many_requests";
    case 431: return "headers_too_large";
    case 503: return "unavailable";
    case 505: return "http_version_not_supported";
    default: return status >= 500 ? "internal" : "bad_request";
    }
}

/* Refuse the request being read and close the connection after the answer. */
static void refuse(struct ds_conn *c, int status, const char *why)
{
    c->close_after = 1;
    send_error(c, status, code_for_status(status), why);
    count_request(c->s, -1, status, now_ns());
    bufferevent_disable(c->bev, EV_READ);
    evtimer_del(c->deadline);
}

static void finish_request(struct ds_conn *c, int status)
{
    struct ds_http_req *req = &c->req;
    count_request(c->s, req->match.index, status, req->start_ns);
    int refused = status == 401 || status == 403 || status == 429;
    if (refused && !(req->match.route && (req->match.route->flags & DS_ROUTE_PEER)))
        ds_metric_inc(c->s->m_client_refused[status == 401 ? 0 : status == 403 ? 1 : 2], 1);
    if ((req->match.route && (req->match.route->flags & DS_ROUTE_MUTATING)) || refused) {
        char path[1024];
        snprintf(path, sizeof path, "%.*s", (int)req->head.path_len, req->head.path);
        ds_audit_record(c->addr, req->identity, ds_http_method_name(req->head.method), path,
                        req->audit_params[0] ? req->audit_params : NULL, status);
    }
    c->busy = 0;
    req->on_abort = NULL;
    if (c->s->shutting_down)
        c->close_after = 1;
    if (c->close_after) {
        bufferevent_disable(c->bev, EV_READ);
        return;
    }
    bufferevent_set_timeouts(c->bev, &c->s->idle_tv, &c->s->idle_tv);
    if (!c->in_process)
        process_input(c); /* the next pipelined request; it also resumes reading */
}

void ds_http_reply(struct ds_http_req *req, int status, const char *content_type, const void *body,
                   size_t len)
{
    struct ds_conn *c = req->conn;
    if (!req->head.keep_alive)
        c->close_after = 1;
    write_response(c, status, content_type, body, len, req->head.method == DS_HTTP_HEAD);
    finish_request(c, status);
}

void ds_http_reply_json(struct ds_http_req *req, int status, const cJSON *obj)
{
    size_t len = 0;
    char *s = ds_json_print(obj, &len);
    if (!s) {
        ds_http_reply_error(req, 500, "internal", "out of memory");
        return;
    }
    ds_http_reply(req, status, "application/json", s, len);
    free(s);
}

void ds_http_reply_error(struct ds_http_req *req, int status, const char *code, const char *fmt,
                         ...)
{
    char msg[400], body[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t n = ds_json_error_body(body, sizeof body, code, msg);
    ds_http_reply(req, status, "application/json", body, n);
}

void ds_http_add_header(struct ds_http_req *req, const char *name, const char *value)
{
    struct ds_conn *c = req->conn;
    int n = snprintf(c->extra + c->extra_len, sizeof c->extra - c->extra_len, "%s: %s\r\n", name,
                     value);
    if (n > 0 && (size_t)n < sizeof c->extra - c->extra_len)
        c->extra_len += (size_t)n;
    else
        c->extra[c->extra_len] = 0;
}

int ds_http_query(const struct ds_http_req *req, const char *name, char *buf, size_t len)
{
    const char *q = req->head.query, *end = q + req->head.query_len;
    size_t nl = strlen(name);
    while (q && q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(pe - q));
        const char *ke = eq ? eq : pe;
        if ((size_t)(ke - q) == nl && memcmp(q, name, nl) == 0) {
            const char *v = eq ? eq + 1 : pe;
            return ds_percent_decode(v, (size_t)(pe - v), buf, len) ? -1 : 1;
        }
        q = amp ? amp + 1 : end;
    }
    return 0;
}

/* ------------------------------------------------------------------ dispatch */

/* Copy header `name` into buf (NUL-terminated); NULL when absent or too long. */
static const char *header_str(const struct ds_http_req *req, const char *name, char *buf,
                              size_t len)
{
    const struct ds_http_header *h = ds_http_find_header(&req->head, name);
    if (!h || h->value_len >= len)
        return NULL;
    memcpy(buf, h->value, h->value_len);
    buf[h->value_len] = 0;
    return buf;
}

/* Peer routes: the HMAC of net/auth.h, fresh and not replayed; else 401 (and counted). */
static int verify_peer(struct ds_conn *c, struct ds_http_req *req)
{
    struct ds_server *s = c->s;
    char node[64], time[32], nonce[DS_AUTH_NONCE_MAX], mac[DS_AUTH_MAC_HEX + 1], path[2400];
    int rv = DS_AUTH_EMISSING;
    if (s->auth && req->head.path_len + (req->head.query ? req->head.query_len + 1 : 0) <
                       sizeof path) {
        snprintf(path, sizeof path, "%.*s%s%.*s", (int)req->head.path_len, req->head.path,
                 req->head.query ? "?" : "", (int)req->head.query_len,
                 req->head.query ? req->head.query : "");
        char method[16];
        snprintf(method, sizeof method, "%.*s", (int)req->head.method_len, req->head.method_name);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t now = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
        rv = ds_auth_verify(s->auth, method, path, header_str(req, "X-Dsync-Node", node, sizeof node),
                            header_str(req, "X-Dsync-Time", time, sizeof time),
                            header_str(req, "X-Dsync-Nonce", nonce, sizeof nonce),
                            header_str(req, "X-Dsync-Mac", mac, sizeof mac), now, req->body,
                            req->body_len);
    }
    if (rv == DS_AUTH_OK)
        return 0;
    ds_metric_inc(s->m_auth_fail[rv < 6 ? rv : 0], 1);
    ds_http_reply_error(req, 401, "unauthenticated", "peer message refused: %s",
                        ds_auth_strerror(rv));
    return -1;
}

void ds_server_set_auth(struct ds_server *s, struct ds_auth *auth)
{
    static const char *const reasons[] = {"other", "missing", "bad_mac", "stale", "replay",
                                          "other"};
    s->auth = auth;
    for (int i = 0; i < 6; i++) {
        char labels[64];
        snprintf(labels, sizeof labels, "reason=\"%s\"", reasons[i]);
        s->m_auth_fail[i] = ds_metrics_counter(s->metrics, "dsyncd_peer_auth_failures_total",
                                               "Peer messages refused with 401, by reason", labels);
    }
}

/* ------------------------------------------------------------------ client authentication */

#define FORWARDED_FOR "forwarded_for"
#define ALL_ROLES (DS_AUTHZ_READER | DS_AUTHZ_WRITER | DS_AUTHZ_ADMIN)

static uint64_t mono_ms(void)
{
    return now_ns() / 1000000u;
}

/* The role a client route needs (see ds_server_set_authz). */
static unsigned route_needs(const struct ds_route *rt)
{
    if (rt->flags & DS_ROUTE_ADMIN)
        return DS_AUTHZ_ADMIN;
    if (rt->flags & (DS_ROUTE_MUTATING | DS_ROUTE_WRITE))
        return DS_AUTHZ_WRITER;
    return DS_AUTHZ_READER;
}

/* The source address without its port: the unit of the failure throttle. */
static void addr_host(const char *addr, char *buf, size_t len)
{
    const char *colon = strrchr(addr, ':');
    size_t n = colon ? (size_t)(colon - addr) : strlen(addr);
    snprintf(buf, len, "%.*s", (int)n, addr);
}

static void reply_unauthenticated(struct ds_http_req *req, int bad_token, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reply_unauthenticated(struct ds_http_req *req, int bad_token, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ds_http_add_header(req, "WWW-Authenticate", bad_token ? "Bearer realm=\"dsyncd\", "
                                                            "error=\"invalid_token\""
                                                          : "Bearer realm=\"dsyncd\"");
    ds_http_reply_error(req, 401, "unauthenticated", "%s", msg);
}

/* A follower forwards a client's request to its leader over the peer transport, signed (net/auth.h:
 * the MAC covers the path with its query) and naming the client's identity in ?forwarded_for=.
 * That identity is believed only here: a verified peer certificate and a valid MAC.  0 = taken. */
static int take_forwarded(struct ds_conn *c, struct ds_http_req *req)
{
    if (!c->identity[0]) {
        reply_unauthenticated(req, 0, "a forwarded request needs a peer certificate");
        return -1;
    }
    if (verify_peer(c, req))
        return -1;
    char who[sizeof req->identity];
    int rv = ds_http_query(req, FORWARDED_FOR, who, sizeof who);
    if (rv < 0) {
        ds_http_reply_error(req, 400, "bad_request", "malformed " FORWARDED_FOR);
        return -1;
    }
    if (rv == 1)
        memcpy(req->identity, who, sizeof who);
    return 0;
}

/* "Authorization: Bearer <token>" into its identity (NULL when unknown); -1 when malformed. */
static int bearer_identity(struct ds_server *s, const struct ds_http_header *h,
                           const struct ds_authz_entry **e)
{
    *e = NULL;
    if (h->value_len < 8 || strncasecmp(h->value, "Bearer ", 7) != 0)
        return -1;
    const char *tok = h->value + 7;
    size_t n = h->value_len - 7;
    while (n && *tok == ' ') {
        tok++;
        n--;
    }
    uint8_t md[32];
    if (n == 0 || ds_auth_sha256(tok, n, md))
        return -1;
    *e = ds_authz_by_token(s->authz, md);
    return 0;
}

/* Who is asking, from the tokens file: a forwarded identity, a bearer token or a client
 * certificate's CN, in that order.  Answers 401 (and counts a failure when credentials were
 * presented and wrong) when there is none. */
static int identify(struct ds_conn *c, struct ds_http_req *req, int forwarded,
                    const struct ds_authz_entry **e)
{
    struct ds_server *s = c->s;
    const struct ds_http_header *h = ds_http_find_header(&req->head, "Authorization");
    if (forwarded) {
        *e = ds_authz_by_name(s->authz, req->identity);
        if (!*e)
            reply_unauthenticated(req, 0, "forwarded identity '%.64s' is not in this node's "
                                          "tokens file", req->identity);
        return *e ? 0 : -1;
    }
    const char *why = NULL;
    if (h) {
        if (bearer_identity(s, h, e))
            why = "malformed Authorization header: expected 'Bearer <token>'";
        else if (!*e)
            why = "unknown bearer token";
    } else if (c->identity[0]) {
        *e = ds_authz_by_name(s->authz, c->identity);
        if (!*e)
            why = "client certificate CN is not in the tokens file";
    } else {
        reply_unauthenticated(req, 0, "credentials needed: Authorization: Bearer <token>, or a "
                                      "client certificate whose CN is in the tokens file");
        return -1;
    }
    if (!why)
        return 0;
    char host[DS_AUTHZ_ADDR_MAX];
    addr_host(c->addr, host, sizeof host);
    ds_authz_throttle_fail(s->throttle, host, mono_ms());
    reply_unauthenticated(req, h != NULL, "%s", why);
    return -1;
}

/* An address with too many recent failures gets 429 (whatever it presents now). */
static int throttled(struct ds_conn *c, struct ds_http_req *req)
{
    char host[DS_AUTHZ_ADDR_MAX];
    uint64_t retry_ms;
    addr_host(c->addr, host, sizeof host);
    if (!ds_authz_throttle_blocked(c->s->throttle, host, mono_ms(), &retry_ms))
        return 0;
    char ra[24];
    snprintf(ra, sizeof ra, "%llu", (unsigned long long)(retry_ms + 999) / 1000);
    ds_http_add_header(req, "Retry-After", ra);
    ds_http_reply_error(req, 429, "too_many_requests",
                        "too many failed authentications from this address; retry later");
    return 1;
}

/* Client routes: identity, roles and scope into req, or an answer (401, 403, 429).  0 = go on. */
static int authenticate(struct ds_conn *c, struct ds_http_req *req)
{
    struct ds_server *s = c->s;
    const struct ds_route *rt = req->match.route;
    int forwarded = ds_http_find_header(&req->head, "X-Dsync-Mac") != NULL;
    char tmp[8];
    if (!forwarded && ds_http_query(req, FORWARDED_FOR, tmp, sizeof tmp) != 0) {
        ds_http_reply_error(req, 400, "bad_request", "query parameter '" FORWARDED_FOR
                                                     "' is reserved for peers");
        return -1;
    }
    if (forwarded && take_forwarded(c, req))
        return -1;
    if (!s->authz) { /* client auth off: the certificate, if any, names the caller */
        req->roles = ALL_ROLES;
        if ((rt->flags & DS_ROUTE_ADMIN) && !c->identity[0]) {
            ds_http_reply_error(req, 403, "forbidden",
                                "this endpoint needs a client certificate signed by the cluster CA");
            return -1;
        }
        return 0;
    }
    if (rt->flags & DS_ROUTE_OPEN)
        return 0;
    const struct ds_authz_entry *e;
    if ((!forwarded && throttled(c, req)) || identify(c, req, forwarded, &e))
        return -1;
    snprintf(req->identity, sizeof req->identity, "%s", e->name);
    req->roles = e->roles;
    memcpy(req->scope, e->scope, sizeof req->scope);
    unsigned need = route_needs(rt);
    if (!ds_authz_has_role(e->roles, need)) {
        ds_http_reply_error(req, 403, "forbidden", "identity '%s' lacks the role '%s' that this "
                                                   "endpoint needs", e->name,
                            ds_authz_role_name(need));
        return -1;
    }
    return 0;
}

int ds_http_authorize_name(struct ds_http_req *req, const char *what, const char *name)
{
    if (ds_authz_in_scope(req->scope, name))
        return 0;
    ds_http_reply_error(req, 403, "forbidden",
                        "identity '%s' is limited to names starting with '%.128s': %s '%.100s' is "
                        "outside its scope", req->identity, req->scope, what, name);
    return -1;
}

int ds_http_has_role(const struct ds_http_req *req, unsigned role)
{
    return ds_authz_has_role(req->roles, role);
}

/* Percent-encode every byte but the unreserved ones (RFC 3986 §2.3). */
static size_t percent_encode(const char *src, char *dst, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)src; *p && o + 4 < len; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~", *p)) {
            dst[o++] = (char)*p;
        } else {
            dst[o++] = '%';
            dst[o++] = hex[*p >> 4];
            dst[o++] = hex[*p & 15];
        }
    }
    dst[o] = 0;
    return o;
}

int ds_http_forward_target(const struct ds_http_req *req, char *buf, size_t len)
{
    char who[3 * sizeof req->identity + 1];
    percent_encode(req->identity, who, sizeof who);
    int n = snprintf(buf, len, "%.*s?" FORWARDED_FOR "=%s%s%.*s", (int)req->head.path_len,
                     req->head.path, who, req->head.query ? "&" : "",
                     (int)req->head.query_len, req->head.query ? req->head.query : "");
    return n < 0 || (size_t)n >= len ? -1 : n;
}

void ds_server_set_authz(struct ds_server *s, struct ds_authz *authz)
{
    ds_authz_free(s->authz);
    s->authz = authz;
}

int ds_server_auth_on(const struct ds_server *s)
{
    return s->authz != NULL;
}

size_t ds_server_throttle_used(const struct ds_server *s)
{
    return ds_authz_throttle_used(s->throttle);
}

static double read_throttle_used(void *arg)
{
    return (double)ds_server_throttle_used(arg);
}

static int auth_metrics(struct ds_server *s)
{
    static const char *const codes[] = {"401", "403", "429"};
    for (int i = 0; i < 3; i++) {
        char labels[32];
        snprintf(labels, sizeof labels, "code=\"%s\"", codes[i]);
        s->m_client_refused[i] = ds_metrics_counter(s->metrics, "dsyncd_client_auth_refused_total",
                                                    "Client requests refused by authentication "
                                                    "or authorisation, by status", labels);
        if (!s->m_client_refused[i])
            return ENOMEM;
    }
    struct ds_metric *m = ds_metrics_gauge(s->metrics, "dsyncd_auth_throttle_addresses",
                                           "Source addresses in the failed-authentication table",
                                           "");
    if (!m)
        return ENOMEM;
    m->read = read_throttle_used;
    m->read_arg = s;
    return 0;
}

static void dispatch(struct ds_conn *c)
{
    struct ds_http_req *req = &c->req;
    int method = req->head.method == DS_HTTP_HEAD ? DS_HTTP_GET : req->head.method;
    int rv = ds_router_match(c->s->router, method, req->head.path, req->head.path_len, &req->match);
    if (rv == 405 && req->head.method == DS_HTTP_OPTIONS) {
        char allow[96];
        unsigned a = req->match.allow | DS_HTTP_OPTIONS;
        if (a & DS_HTTP_GET)
            a |= DS_HTTP_HEAD;
        ds_router_allow_header(a, allow, sizeof allow);
        ds_http_add_header(req, "Allow", allow);
        ds_http_reply(req, 204, "application/json", "", 0);
        return;
    }
    if (rv == 405) {
        char allow[96];
        unsigned a = req->match.allow;
        if (a & DS_HTTP_GET)
            a |= DS_HTTP_HEAD;
        ds_router_allow_header(a, allow, sizeof allow);
        ds_http_add_header(req, "Allow", allow);
        ds_http_reply_error(req, 405, "method_not_allowed", "%.*s is not allowed here; allowed: %s",
                            (int)req->head.method_len, req->head.method_name, allow);
        return;
    }
    if (rv == 404) {
        ds_http_reply_error(req, 404, "not_found", "no such endpoint: %.*s",
                            (int)(req->head.path_len > 200 ? 200 : req->head.path_len),
                            req->head.path);
        return;
    }
    if (rv == 400) {
        ds_http_reply_error(req, 400, "bad_request", "%s", req->match.why);
        return;
    }
    const struct ds_route *rt = req->match.route;
    if (rt->flags & DS_ROUTE_PEER) {
        if (!c->identity[0]) {
            ds_http_reply_error(req, 403, "forbidden",
                                "this endpoint needs a client certificate signed by the cluster CA");
            return;
        }
        if (verify_peer(c, req))
            return;
    } else if (authenticate(c, req)) {
        return;
    }
    req->ctx = rt->ctx;
    rt->handler(req);
}

/* The limits of a connection: peers (a verified client certificate) may send larger bodies. */
static const struct ds_http_limits *conn_limits(const struct ds_conn *c)
{
    return c->identity[0] ? &c->s->peer_lim : &c->s->lim;
}

/* Backpressure: a connection is read only while its unparsed input is short of one whole
 * request.  Input stops being taken while a handler has the request or while more than
 * OUTPUT_HIGH_WATER of answers wait for a client that does not read them (process_input), so
 * the input, and with it what a connection holds, stays bounded whatever its client does
 * (README, "Limits").  Reading resumes once process_input has taken the input.  Called only
 * after libevent has handed over all that OpenSSL decrypted (libevent 2.1 does not look for it
 * when reading is enabled again), so nothing is stranded in the TLS layer while reading is off;
 * records OpenSSL read ahead but did not decrypt get a read pass when reading resumes
 * (ds_tls_read_pending). */
static void pace_reading(struct ds_conn *c)
{
    if (c->close_after)
        return; /* reading is off, or drops what arrives (read_cb) */
    const struct ds_http_limits *lim = conn_limits(c);
    int full = evbuffer_get_length(bufferevent_get_input(c->bev)) >=
               lim->max_head_bytes + lim->max_body;
    int reading = (bufferevent_get_enabled(c->bev) & EV_READ) != 0;
    if (full && reading) {
        bufferevent_disable(c->bev, EV_READ);
        ds_metric_inc(c->s->m_read_paused, 1);
    } else if (!full && !reading) {
        bufferevent_enable(c->bev, EV_READ);
        ds_tls_read_pending(c->bev); /* records read ahead while reading was off */
    }
}

/* Copy head + body out of the input buffer so that the request survives further reads. */
static int take_request(struct ds_conn *c, struct evbuffer *in, size_t total)
{
    if (total + 1 > c->reqcap) {
        size_t cap = c->reqcap ? c->reqcap : 1024;
        while (cap < total + 1)
            cap *= 2;
        char *nb = realloc(c->reqbuf, cap);
        if (!nb)
            return ENOMEM;
        c->reqbuf = nb;
        c->reqcap = cap;
    }
    evbuffer_remove(in, c->reqbuf, total);
    c->reqbuf[total] = 0;
    return 0;
}

/* Parse and dispatch every complete request in the input, one at a time. */
static void process_input(struct ds_conn *c)
{
    struct ds_server *s = c->s;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    c->in_process = 1;
    while (!c->busy && !c->close_after) {
        size_t avail = evbuffer_get_length(in);
        if (avail == 0)
            break;
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) > OUTPUT_HIGH_WATER)
            break; /* the client is not reading its answers: wait for the output to drain */
        if (!evtimer_pending(c->deadline, NULL))
            evtimer_add(c->deadline, &s->head_tv);
        const struct ds_http_limits *lim = conn_limits(c);
        size_t look = avail < lim->max_head_bytes ? avail : lim->max_head_bytes;
        const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
        struct ds_http_head head;
        const char *why = "bad request";
        int rv = ds_http_parse_head(buf, look, lim, c->headers, &head, &why);
        if (rv == DS_HTTP_PARSE_AGAIN)
            break;
        if (rv != DS_HTTP_PARSE_DONE) {
            refuse(c, rv, why);
            break;
        }
        size_t total = head.head_len + head.content_length;
        if (avail < total) {
            if (head.expect_continue && !c->sent_continue) {
                evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
                c->sent_continue = 1;
            }
            break;
        }
        evtimer_del(c->deadline);
        c->sent_continue = 0;
        const char *old = buf;
        if (take_request(c, in, total)) {
            refuse(c, 503, "out of memory");
            break;
        }
        /* rebase the parsed pointers onto the copy */
        ptrdiff_t shift = c->reqbuf - old;
        head.method_name += shift;
        head.path += shift;
        if (head.query)
            head.query += shift;
        for (size_t i = 0; i < head.nheaders; i++) {
            c->headers[i].name += shift;
            c->headers[i].value += shift;
        }
        struct ds_http_req *req = &c->req;
        memset(req, 0, offsetof(struct ds_http_req, match));
        req->conn = c;
        req->server = s;
        req->head = head;
        req->body = c->reqbuf + head.head_len;
        req->body_len = head.content_length;
        req->peer_addr = c->addr;
        memcpy(req->identity, c->identity, sizeof req->identity);
        req->roles = 0;
        req->scope[0] = 0;
        req->audit_params[0] = 0;
        req->on_abort = NULL;
        req->start_ns = now_ns();
        c->busy = 1;
        /* no read timeout while the handler works; answers still waiting must drain */
        bufferevent_set_timeouts(c->bev, NULL, &s->idle_tv);
        dispatch(c);
    }
    c->in_process = 0;
    pace_reading(c);
}

/* ------------------------------------------------------------------ connection events */

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct ds_conn *c = arg;
    if (c->close_after) { /* shutting down: drop what still arrives (see ds_server_shutdown) */
        struct evbuffer *in = bufferevent_get_input(bev);
        evbuffer_drain(in, evbuffer_get_length(in));
    } else if (c->busy) {
        pace_reading(c); /* the handler has the request: only watch the input's size */
    } else {
        process_input(c);
    }
    ds_tls_read_pending(bev); /* more records in the read-ahead buffer */
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct ds_conn *c = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) != 0)
        return;
    if (c->close_after && !c->busy) {
        conn_free(c);
        return;
    }
    if (!c->busy && !c->in_process)
        process_input(c); /* resume after a full output buffer */
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct ds_conn *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        c->handshaken = 1;
        ds_tls_peer_identity(bev, c->identity, sizeof c->identity);
        /* from now on the request deadline timer bounds slow requests; the read timeout only
         * closes idle connections (a shorter one would race the 408 answer), the write timeout
         * those whose client stopped reading its answers */
        bufferevent_set_timeouts(bev, &c->s->idle_tv, &c->s->idle_tv);
        ds_tls_read_pending(bev); /* a request that came with the handshake's last flight */
        return;
    }
    if (!c->handshaken && (what & BEV_EVENT_ERROR))
        ds_metric_inc(c->s->m_tls_fail, 1);
    conn_free(c);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ds_conn *c = arg;
    if (c->busy)
        return;
    refuse(c, 408, "the request did not arrive in time");
}

static void conn_free(struct ds_conn *c)
{
    struct ds_server *s = c->s;
    if (c->busy && c->req.on_abort) {
        void (*abort_fn)(struct ds_http_req *, void *) = c->req.on_abort;
        c->req.on_abort = NULL;
        abort_fn(&c->req, c->req.abort_arg);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    ds_metric_set(s->m_open, s->nconns);
    bufferevent_free(c->bev);
    event_free(c->deadline);
    free(c->headers);
    free(c->reqbuf);
    free(c);
    if (s->shutting_down && s->nconns == 0 && s->done) {
        void (*done)(void *) = s->done;
        s->done = NULL;
        done(s->done_arg);
    }
}

static void format_addr(const struct sockaddr *sa, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        port = ntohs(in->sin_port);
        snprintf(buf, len, "%s:%u", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        port = ntohs(in6->sin6_port);
        snprintf(buf, len, "[%s]:%u", ip, port);
    } else {
        snprintf(buf, len, "unknown");
    }
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    (void)l;
    (void)salen;
    struct ds_server *s = arg;
    if (s->shutting_down || (uint64_t)s->nconns >= s->cfg->max_connections) {
        ds_metric_inc(s->m_refused, 1);
        close(fd);
        return;
    }
    struct ds_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->s = s;
    c->headers = calloc(s->lim.max_headers, sizeof *c->headers);
    c->deadline = evtimer_new(s->base, deadline_cb, c);
    c->bev = c->headers && c->deadline ? ds_tls_accept(s->tls, s->base, fd) : NULL;
    if (!c->bev) {
        if (!c->headers || !c->deadline)
            close(fd);
        free(c->headers);
        if (c->deadline)
            event_free(c->deadline);
        free(c);
        return;
    }
    format_addr(sa, c->addr, sizeof c->addr);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    ds_metric_inc(s->m_accepted, 1);
    ds_metric_set(s->m_open, s->nconns);
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_set_timeouts(c->bev, &s->head_tv, &s->head_tv); /* the handshake too */
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void resume_accept(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ds_server *s = arg;
    if (!s->shutting_down)
        evconnlistener_enable(s->listener);
}

/* Out of descriptors (or another accept failure): pause accepting for a moment instead of
 * spinning on a listener that stays readable, and log at most once a second. */
static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct ds_server *s = arg;
    int e = EVUTIL_SOCKET_ERROR();
    time_t now = time(NULL);
    if (now != s->accept_err_logged) {
        s->accept_err_logged = now;
        ds_log(DS_LOG_WARN, "accept failed; pausing new connections for 100 ms", "error",
               evutil_socket_error_to_string(e), NULL);
    }
    ds_metric_inc(s->m_refused, 1);
    evconnlistener_disable(l);
    struct timeval tv = {0, 100000};
    if (s->resume)
        evtimer_add(s->resume, &tv);
}

/* ------------------------------------------------------------------ lifecycle */

static int listen_socket(const char *addr, char *err)
{
    char host[128];
    uint16_t port;
    if (ds_config_split_addr(addr, host, sizeof host, &port)) {
        snprintf(err, 512, "bad listen address '%s'", addr);
        return -1;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        sl = sizeof *in;
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        sl = sizeof *in6;
    } else if (strcmp(host, "localhost") == 0) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof *in;
    } else {
        snprintf(err, 512, "listen address '%s': the host must be an IP address", addr);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) ||
        bind(fd, (struct sockaddr *)&ss, sl) || listen(fd, 1024)) {
        snprintf(err, 512, "listen on %s: %s", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

int ds_server_new(struct event_base *base, const struct ds_config *c, struct ds_metrics *metrics,
                  struct ds_server **out, char *err)
{
    struct ds_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, 512, "out of memory");
        return ENOMEM;
    }
    s->base = base;
    s->cfg = c;
    s->metrics = metrics;
    s->lim.max_head_bytes = c->max_header_bytes;
    s->lim.max_headers = c->max_headers;
    s->lim.max_body = c->max_body;
    s->peer_lim = s->lim;
    if (s->peer_lim.max_body < PEER_MAX_BODY)
        s->peer_lim.max_body = PEER_MAX_BODY; /* Raft snapshots and batches */
    s->idle_tv.tv_sec = (time_t)(c->idle_timeout_ms / 1000);
    s->idle_tv.tv_usec = (suseconds_t)(c->idle_timeout_ms % 1000) * 1000;
    s->head_tv.tv_sec = (time_t)(c->header_timeout_ms / 1000);
    s->head_tv.tv_usec = (suseconds_t)(c->header_timeout_ms % 1000) * 1000;
    s->router = ds_router_new();
    s->m_open = ds_metrics_gauge(metrics, "dsyncd_http_connections_open", "Open client connections", "");
    s->m_accepted = ds_metrics_counter(metrics, "dsyncd_http_connections_accepted_total",
                                       "Connections accepted", "");
    s->m_refused = ds_metrics_counter(metrics, "dsyncd_http_connections_refused_total",
                                      "Connections closed at once: over max_connections or shutting down", "");
    s->m_tls_fail = ds_metrics_counter(metrics, "dsyncd_tls_handshake_failures_total",
                                       "TLS handshakes that failed (bad certificate, plain HTTP, ...)", "");
    s->m_read_paused = ds_metrics_counter(metrics, "dsyncd_http_read_paused_total",
                                          "Times a connection stopped being read: a whole "
                                          "request waited while its client did not read the "
                                          "answers or a handler had the previous one", "");
    int rv = ENOMEM;
    if (!s->router || add_route_stats(s, "(none)") || auth_metrics(s) ||
        ds_authz_throttle_new((size_t)c->auth_throttle_slots, (uint32_t)c->auth_max_failures,
                              c->auth_failure_decay_ms, &s->throttle)) {
        snprintf(err, 512, "out of memory");
        goto fail;
    }
    if ((rv = ds_tls_server_new(c, &s->tls, err)))
        goto fail;
    int fd = listen_socket(c->listen, err);
    if (fd < 0) {
        rv = EADDRINUSE;
        goto fail;
    }
    s->listener = evconnlistener_new(base, accept_cb, s, LEV_OPT_CLOSE_ON_FREE, -1, fd);
    if (!s->listener) {
        close(fd);
        snprintf(err, 512, "listener: out of memory");
        rv = ENOMEM;
        goto fail;
    }
    evconnlistener_set_error_cb(s->listener, accept_error_cb);
    s->resume = evtimer_new(base, resume_accept, s);
    if (!s->resume) {
        snprintf(err, 512, "out of memory");
        rv = ENOMEM;
        goto fail;
    }
    *out = s;
    return 0;
fail:
    ds_server_free(s);
    return rv;
}

int ds_server_route(struct ds_server *s, unsigned methods, const char *pattern, ds_route_fn *fn,
                    unsigned flags, void *ctx)
{
    struct ds_route r = {methods, pattern, fn, flags, ctx};
    int rv = ds_router_add(s->router, &r);
    if (rv)
        return rv;
    return add_route_stats(s, pattern);
}

int ds_server_connections(const struct ds_server *s)
{
    return s->nconns;
}

static void grace_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ds_server *s = arg;
    if (s->done) {
        void (*done)(void *) = s->done;
        s->done = NULL;
        done(s->done_arg);
    }
}

void ds_server_shutdown(struct ds_server *s, uint64_t grace_ms, void (*done)(void *), void *arg)
{
    if (s->shutting_down)
        return;
    s->shutting_down = 1;
    s->done = done;
    s->done_arg = arg;
    if (s->listener)
        evconnlistener_disable(s->listener);
    for (struct ds_conn *c = s->conns, *n; c; c = n) {
        n = c->next;
        if (c->busy || evbuffer_get_length(bufferevent_get_output(c->bev)) != 0) {
            /* close after its answer is out, reading (and dropping) what the client still
             * sends meanwhile: closing with unread input would reset the connection, and the
             * client would lose the answers still in flight */
            if (!c->close_after)
                bufferevent_enable(c->bev, EV_READ);
            c->close_after = 1;
        } else {
            conn_free(c); /* idle, or only part of a request: nothing in flight */
        }
    }
    if (s->nconns == 0) {
        if (s->done) {
            s->done = NULL;
            done(arg);
        }
        return;
    }
    struct timeval tv = {(time_t)(grace_ms / 1000), (suseconds_t)(grace_ms % 1000) * 1000};
    s->grace = evtimer_new(s->base, grace_cb, s);
    if (s->grace)
        evtimer_add(s->grace, &tv);
}

void ds_server_free(struct ds_server *s)
{
    if (!s)
        return;
    s->done = NULL;
    while (s->conns)
        conn_free(s->conns);
    if (s->listener)
        evconnlistener_free(s->listener);
    if (s->grace)
        event_free(s->grace);
    if (s->resume)
        event_free(s->resume);
    ds_tls_free(s->tls);
    ds_router_free(s->router);
    ds_authz_free(s->authz);
    ds_authz_throttle_free(s->throttle);
    free(s->rstats);
    free(s);
}
