/* Peer client: persistent pipelined mutual-TLS connections, HMAC-signed requests, in-order answers. */
#include "net/peer.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net/http_parse.h"
#include "net/tls.h"

#define MAX_OUTSTANDING 4096
#define MAX_RESPONSE_BODY (64u << 20)
#define MAX_RESPONSE_HEADERS 64
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000

struct peer_req {
    struct peer_req *next;
    ds_peer_cb *cb;
    void *arg;
    uint64_t deadline_ms;
    struct evbuffer *wire; /* the whole request, sent once connected */
};

enum peer_state { P_IDLE, P_RESOLVING, P_CONNECTING, P_UP };

struct ds_peer {
    struct ds_peer_pool *pool;
    struct ds_peer *next;
    char url[256];
    char host[200];
    char port[8];
    enum peer_state state;
    int spare; /* from ds_peer_get_idle */
    struct bufferevent *bev;
    struct evdns_getaddrinfo_request *dns;
    struct peer_req *sent, **sent_tail;     /* written, waiting for answers (FIFO) */
    struct peer_req *queued, **queued_tail; /* waiting for the connection */
    int outstanding;
    uint64_t backoff_ms;
    uint64_t retry_at_ms;
    struct event *timer; /* request deadlines */
};

struct ds_peer_pool {
    struct event_base *base;
    struct evdns_base *dns;
    struct ds_tls *tls;
    struct ds_auth *auth;
    char node[64];
    struct ds_peer *peers;
    struct ds_metric *m_errors, *m_requests;
};

static void peer_fail_all(struct ds_peer *p);
static void peer_connect(struct ds_peer *p);
static void arm_timer(struct ds_peer *p);

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int ds_peer_pool_new(struct event_base *base, const struct ds_config *c, struct ds_auth *auth,
                     struct ds_metrics *metrics, struct ds_peer_pool **out, char *err)
{
    struct ds_peer_pool *pool = calloc(1, sizeof *pool);
    if (!pool) {
        snprintf(err, 512, "out of memory");
        return ENOMEM;
    }
    pool->base = base;
    pool->auth = auth;
    snprintf(pool->node, sizeof pool->node, "%s", c->node_id);
    int rv = ds_tls_client_new(c, &pool->tls, err);
    if (rv) {
        free(pool);
        return rv;
    }
    pool->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!pool->dns) /* no resolv.conf: names resolve through /etc/hosts only */
        pool->dns = evdns_base_new(base, 0);
    pool->m_requests = ds_metrics_counter(metrics, "dsyncd_peer_requests_total",
                                          "Requests sent to peers", "");
    pool->m_errors = ds_metrics_counter(metrics, "dsyncd_peer_request_errors_total",
                                        "Peer requests that failed in transport (connect, TLS, "
                                        "timeout, connection lost)", "");
    *out = pool;
    return 0;
}

static void peer_free(struct ds_peer *p)
{
    peer_fail_all(p);
    if (p->timer)
        event_free(p->timer);
    free(p);
}

void ds_peer_pool_free(struct ds_peer_pool *pool)
{
    if (!pool)
        return;
    while (pool->peers) {
        struct ds_peer *p = pool->peers;
        pool->peers = p->next;
        peer_free(p);
    }
    if (pool->dns)
        evdns_base_free(pool->dns, 1);
    ds_tls_free(pool->tls);
    free(pool);
}

/* ------------------------------------------------------------------ request lists */

static void req_finish(struct ds_peer *p, struct peer_req *r, int status, const char *body,
                       size_t len)
{
    p->outstanding--;
    if (status == 0)
        ds_metric_inc(p->pool->m_errors, 1);
    evbuffer_free(r->wire);
    ds_peer_cb *cb = r->cb;
    void *arg = r->arg;
    free(r);
    cb(status, body, len, arg);
}

static void close_conn(struct ds_peer *p)
{
    if (p->bev)
        bufferevent_free(p->bev);
    p->bev = NULL;
    if (p->dns)
        evdns_getaddrinfo_cancel(p->dns); /* its callback runs with EVUTIL_EAI_CANCEL */
    p->dns = NULL;
    p->state = P_IDLE;
}

/* Fail everything sent and queued; the callbacks may queue new requests (they go to a fresh list). */
static void peer_fail_all(struct ds_peer *p)
{
    close_conn(p);
    struct peer_req *list[2] = {p->sent, p->queued};
    p->sent = p->queued = NULL;
    p->sent_tail = &p->sent;
    p->queued_tail = &p->queued;
    for (int i = 0; i < 2; i++)
        while (list[i]) {
            struct peer_req *r = list[i];
            list[i] = r->next;
            req_finish(p, r, 0, NULL, 0);
        }
}

static void connection_lost(struct ds_peer *p)
{
    uint64_t now = mono_ms();
    p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (p->backoff_ms > BACKOFF_MAX_MS)
        p->backoff_ms = BACKOFF_MAX_MS;
    p->retry_at_ms = now + p->backoff_ms;
    peer_fail_all(p);
}

/* The timer wakes for the oldest request's deadline and, while disconnected with requests
 * waiting, for the next connection attempt (so callers never see their callback run inside
 * ds_peer_request). */
static void arm_timer(struct ds_peer *p)
{
    struct peer_req *oldest = p->sent ? p->sent : p->queued;
    if (!oldest) {
        evtimer_del(p->timer);
        return;
    }
    uint64_t at = oldest->deadline_ms;
    if (p->state == P_IDLE && p->queued && p->retry_at_ms < at)
        at = p->retry_at_ms;
    uint64_t now = mono_ms();
    uint64_t ms = at > now ? at - now : 0;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(p->timer, &tv);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ds_peer *p = arg;
    uint64_t now = mono_ms();
    if (p->state == P_IDLE) {
        while (p->queued && p->queued->deadline_ms <= now) {
            struct peer_req *r = p->queued;
            p->queued = r->next;
            if (!p->queued)
                p->queued_tail = &p->queued;
            req_finish(p, r, 0, NULL, 0);
        }
        if (p->state == P_IDLE && p->queued && now >= p->retry_at_ms)
            peer_connect(p);
    } else {
        struct peer_req *oldest = p->sent ? p->sent : p->queued;
        if (oldest && oldest->deadline_ms <= now)
            connection_lost(p); /* an answer is overdue: the stream cannot be resynchronised */
    }
    arm_timer(p);
}

/* Requests up to this size go out with SSL_write at once when nothing waits before them
 * (ds_tls_write_now), below libevent's write frame so that a retry is never shorter. */
#define DIRECT_MAX 8192u

static void flush_queued(struct ds_peer *p)
{
    struct evbuffer *out = bufferevent_get_output(p->bev);
    while (p->queued) {
        struct peer_req *r = p->queued;
        p->queued = r->next;
        if (!p->queued)
            p->queued_tail = &p->queued;
        size_t n = evbuffer_get_length(r->wire);
        if (n <= DIRECT_MAX && evbuffer_get_length(out) == 0) {
            const void *data = evbuffer_pullup(r->wire, -1);
            evbuffer_drain(r->wire, data ? ds_tls_write_now(p->bev, data, n) : 0);
        }
        evbuffer_add_buffer(out, r->wire); /* what was not sent at once */
        r->next = NULL;
        *p->sent_tail = r;
        p->sent_tail = &r->next;
    }
}

/* ------------------------------------------------------------------ connection */

static void read_responses(struct ds_peer *p, struct bufferevent *bev);

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct ds_peer *p = arg;
    read_responses(p, bev);
    if (p->bev == bev) /* still this connection: records left in the read-ahead buffer */
        ds_tls_read_pending(bev);
}

static void read_responses(struct ds_peer *p, struct bufferevent *bev)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    static const struct ds_http_limits lim = {65536, MAX_RESPONSE_HEADERS, MAX_RESPONSE_BODY};
    struct ds_http_header headers[MAX_RESPONSE_HEADERS];
    while (p->sent && p->bev == bev) {
        size_t avail = evbuffer_get_length(in);
        if (!avail)
            return;
        size_t look = avail < lim.max_head_bytes ? avail : lim.max_head_bytes;
        const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
        struct ds_http_response_head h;
        int rv = ds_http_parse_response_head(buf, look, &lim, headers, &h, NULL);
        if (rv == DS_HTTP_PARSE_AGAIN)
            return;
        if (rv != DS_HTTP_PARSE_DONE) {
            connection_lost(p);
            return;
        }
        size_t total = h.head_len + h.content_length;
        if (avail < total)
            return;
        char *whole = (char *)evbuffer_pullup(in, (ev_ssize_t)total);
        struct peer_req *r = p->sent;
        p->sent = r->next;
        if (!p->sent)
            p->sent_tail = &p->sent;
        /* copy the body: the callback may queue requests that touch this buffer */
        char *body = malloc(h.content_length + 1);
        if (body) {
            memcpy(body, whole + h.head_len, h.content_length);
            body[h.content_length] = 0;
        }
        evbuffer_drain(in, total);
        int keep = h.keep_alive;
        req_finish(p, r, body ? h.status : 0, body, h.content_length);
        free(body);
        if (!keep && p->bev == bev) {
            connection_lost(p);
            return;
        }
        p->backoff_ms = 0;
    }
    arm_timer(p);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct ds_peer *p = arg;
    if (bev != p->bev)
        return;
    if (what & BEV_EVENT_CONNECTED) {
        p->state = P_UP;
        flush_queued(p);
        ds_tls_read_pending(bev);
        return;
    }
    connection_lost(p);
}

static void resolved_cb(int result, struct evutil_addrinfo *ai, void *arg)
{
    struct ds_peer *p = arg;
    if (result == EVUTIL_EAI_CANCEL)
        return; /* close_conn cancelled us; p may be anything now */
    p->dns = NULL;
    if (result != 0 || !ai) {
        if (ai)
            evutil_freeaddrinfo(ai);
        connection_lost(p);
        return;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    p->bev = fd >= 0 ? ds_tls_connect(p->pool->tls, p->pool->base, fd, p->host) : NULL;
    if (!p->bev) {
        evutil_freeaddrinfo(ai);
        connection_lost(p);
        return;
    }
    p->state = P_CONNECTING;
    bufferevent_setcb(p->bev, read_cb, NULL, event_cb, p);
    bufferevent_enable(p->bev, EV_READ | EV_WRITE);
    int rv = bufferevent_socket_connect(p->bev, ai->ai_addr, (int)ai->ai_addrlen);
    evutil_freeaddrinfo(ai);
    if (rv)
        connection_lost(p);
}

static void peer_connect(struct ds_peer *p)
{
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
    p->state = P_RESOLVING;
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(p->pool->dns, p->host, p->port, &hints, resolved_cb, p);
    if (p->state == P_RESOLVING && req)
        p->dns = req; /* NULL when it completed (or failed) at once */
}

/* ------------------------------------------------------------------ API */

static struct ds_peer *peer_new(struct ds_peer_pool *pool, const char *base_url);

struct ds_peer *ds_peer_get(struct ds_peer_pool *pool, const char *base_url)
{
    for (struct ds_peer *p = pool->peers; p; p = p->next)
        if (!p->spare && strcmp(p->url, base_url) == 0)
            return p;
    return peer_new(pool, base_url);
}

struct ds_peer *ds_peer_get_idle(struct ds_peer_pool *pool, const char *base_url)
{
    int n = 0;
    for (struct ds_peer *p = pool->peers; p; p = p->next) {
        if (!p->spare || strcmp(p->url, base_url) != 0)
            continue;
        /* idle, and not backing off after a failure (a fresh connection is tried instead) */
        if (p->outstanding == 0 && (p->state != P_IDLE || mono_ms() >= p->retry_at_ms))
            return p;
        n++;
    }
    struct ds_peer *p = n < DS_PEER_MAX_SPARE ? peer_new(pool, base_url) : NULL;
    if (p)
        p->spare = 1;
    return p;
}

static struct ds_peer *peer_new(struct ds_peer_pool *pool, const char *base_url)
{
    if (strncmp(base_url, "https://", 8) != 0 || strlen(base_url) >= 256)
        return NULL;
    char hostport[256];
    snprintf(hostport, sizeof hostport, "%s", base_url + 8);
    char *slash = strchr(hostport, '/');
    if (slash)
        *slash = 0;
    uint16_t port;
    struct ds_peer *p = calloc(1, sizeof *p);
    if (!p || ds_config_split_addr(hostport, p->host, sizeof p->host, &port)) {
        free(p);
        return NULL;
    }
    snprintf(p->port, sizeof p->port, "%u", port);
    snprintf(p->url, sizeof p->url, "%s", base_url);
    p->pool = pool;
    p->sent_tail = &p->sent;
    p->queued_tail = &p->queued;
    p->timer = evtimer_new(pool->base, timer_cb, p);
    if (!p->timer) {
        free(p);
        return NULL;
    }
    p->next = pool->peers;
    pool->peers = p;
    return p;
}

int ds_peer_outstanding(const struct ds_peer *p)
{
    return p->outstanding;
}

/* Copy n bytes of s to *p and move *p past them. */
static void put(char **p, const void *s, size_t n)
{
    memcpy(*p, s, n);
    *p += n;
}

static struct evbuffer *build_request(struct ds_peer *p, const char *method, const char *path,
                                      const char *ctype, const void *body, size_t len)
{
    struct ds_auth_headers ah;
    if (ds_auth_sign(p->pool->auth, method, path, p->pool->node, wall_ms(), body, len, &ah))
        return NULL;
    char clen[24];
    snprintf(clen, sizeof clen, "%zu", len);
    const char *parts[] = {method, " ", path, " HTTP/1.1\r\nHost: ", p->host, ":", p->port,
                           "\r\nContent-Type: ", ctype, "\r\nContent-Length: ", clen,
                           "\r\nX-Dsync-Node: ", p->pool->node, "\r\nX-Dsync-Time: ", ah.time,
                           "\r\nX-Dsync-Nonce: ", ah.nonce, "\r\nX-Dsync-Mac: ", ah.mac,
                           "\r\n\r\n"};
    enum { NPARTS = sizeof parts / sizeof parts[0] };
    size_t lens[NPARTS], head = 0;
    for (size_t i = 0; i < NPARTS; i++)
        head += lens[i] = strlen(parts[i]);
    struct evbuffer *b = evbuffer_new();
    struct evbuffer_iovec vec;
    if (!b || evbuffer_reserve_space(b, (ev_ssize_t)(head + len), &vec, 1) != 1) {
        if (b)
            evbuffer_free(b);
        return NULL;
    }
    char *w = vec.iov_base;
    for (size_t i = 0; i < NPARTS; i++)
        put(&w, parts[i], lens[i]);
    if (len)
        put(&w, body, len);
    vec.iov_len = head + len;
    if (evbuffer_commit_space(b, &vec, 1)) {
        evbuffer_free(b);
        return NULL;
    }
    return b;
}

int ds_peer_request(struct ds_peer *p, const char *method, const char *path, const char *ctype,
                    const void *body, size_t len, uint64_t timeout_ms, ds_peer_cb *cb, void *arg)
{
    if (p->outstanding >= MAX_OUTSTANDING)
        return EAGAIN;
    struct peer_req *r = calloc(1, sizeof *r);
    if (!r)
        return ENOMEM;
    r->wire = build_request(p, method, path, ctype, body, len);
    if (!r->wire) {
        free(r);
        return ENOMEM;
    }
    r->cb = cb;
    r->arg = arg;
    r->deadline_ms = mono_ms() + timeout_ms;
    *p->queued_tail = r;
    p->queued_tail = &r->next;
    p->outstanding++;
    ds_metric_inc(p->pool->m_requests, 1);
    if (p->state == P_UP)
        flush_queued(p);
    else if (p->state == P_IDLE)
        arm_timer(p); /* connect from the timer, at once or when the backoff ends */
    if (!evtimer_pending(p->timer, NULL))
        arm_timer(p);
    return 0;
}
