/* Lock load generator for the benchmarks: keep-alive HTTP(S) clients doing acquire+release pairs
 * against dsyncd's lock role or etcd's v3 JSON gateway, plus probes timing leader election and
 * write resumption.  The load clients are non-blocking connections driven by one epoll loop per
 * worker thread (few wakeups, so the client takes little of the CPU the servers under test need);
 * the probes use one plain blocking thread per URL.
 *
 * usage: lockload [options] URL...
 *   load (default)   -c N clients (default 1), -d S seconds measured (default 10), -w S seconds of
 *                    warm-up (default 1), -t N / --threads N worker threads, each with its own
 *                    epoll loop, clients spread over them round-robin (default 1), --etcd for
 *                    etcd's gateway, --ttl-ms N (dsyncd lease, default 10000), --prefix STR
 *                    (resource names, default lockload-<pid>).  All clients use the first URL.
 *                    Prints one line of key=value figures.
 *   --wait-leader    polls GET /status of every URL until one says "state":"leader"
 *   --wait-write     tries acquire+release on every URL until one succeeds (dsyncd: only on a
 *                    node whose GET /status says it leads; also prints when it first said so)
 *                    (both: --since NS = CLOCK_REALTIME ns the time is counted from, default now;
 *                    --timeout S, default 30; print leader_ms= or write_ms= and the URL; exit 1 on
 *                    timeout)
 *   --cacert FILE    verify https servers against FILE (default: no verification)
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define BUF_MAX 65536
#define BODY_MAX 4096
#define REQ_MAX (BODY_MAX + 512)
#define VAL_MAX 512
#define NAME_MAX_LEN 200
#define PROBE_IO_TIMEOUT_MS 300
#define PROBE_RETRY_MS 5
#define LOAD_IO_TIMEOUT_MS 5000 /* blocking steps of a load client: connect, handshake, lease */
#define LOAD_RETRY_MS 10        /* reconnect delay after an error */
#define LOAD_DRAIN_MS 1000      /* how long calls in progress at the window's end may finish */
#define LOAD_EVENTS 64

enum mode { MODE_LOAD, MODE_WAIT_LEADER, MODE_WAIT_WRITE };

struct url {
    int tls;
    char host[64];
    char port[8];
    char hostport[80];
};

struct options {
    enum mode mode;
    int etcd;
    int clients, threads;
    double duration_s, warmup_s, timeout_s;
    unsigned ttl_ms;
    const char *cacert;
    char prefix[64];
    uint64_t since_ns;
    struct url urls[16];
    int nurls;
};

/* One keep-alive connection; buf holds bytes read but not consumed yet. */
struct conn {
    const struct url *url;
    int fd;
    SSL *ssl;
    int io_timeout_ms; /* 0: block */
    char buf[BUF_MAX];
    size_t len;
};

/* An HTTP response; body is NUL-terminated. */
struct response {
    int status;
    char body[BUF_MAX];
    size_t body_len;
};

/* Where a load client is: sending a call, waiting for its answer, waiting to reconnect after an
 * error, or finished. */
enum state { ST_SEND, ST_READ, ST_RETRY, ST_DONE };

struct worker;

/* One client (a load client or a probe's) and its results. */
struct client {
    int id;
    struct conn conn;
    struct response rsp;
    char lease[32];     /* etcd */
    char val[VAL_MAX];  /* what the pair's first answer gave: dsyncd's token, etcd's lock key */
    uint64_t *lat_ns;   /* latencies of pairs completed inside the window */
    size_t nlat, cap;
    uint64_t errors;
    char last_error[512];
    /* load clients only, owned by their worker's thread */
    struct worker *w;
    enum state state;
    int step;            /* 0: the pair's first call, 1: its second */
    uint32_t events;     /* registered with the worker's epoll; 0: not registered */
    const char *out;     /* the request being sent (unchanged until sent: OpenSSL's retry rule) */
    size_t out_len, sent;
    uint64_t t0_ns;      /* the pair's start */
    uint64_t retry_ns;   /* ST_RETRY: when to reconnect */
    char req0[REQ_MAX];  /* the pair's first request, the same for every pair */
    size_t req0_len;
    char req[REQ_MAX];   /* the pair's second request */
};

/* One load thread: an epoll loop over its clients' connections. */
struct worker {
    pthread_t thread;
    int epfd;
    struct client **cls;
    int n;
    int active;   /* clients not ST_DONE */
    int retrying; /* clients in ST_RETRY */
};

/* The two calls of a pair: the path and the field of the answer the second call needs. */
struct call {
    const char *path, *key;
};

static const struct call dsyncd_calls[2] = {{"/lock/acquire", "token"}, {"/lock/release", NULL}};
static const struct call etcd_calls[2] = {{"/v3/lock/lock", "key"}, {"/v3/lock/unlock", NULL}};

static struct options opt;
static SSL_CTX *ssl_ctx;
static pthread_barrier_t start_barrier;
static uint64_t window_start_ns, window_end_ns; /* set by main before the barrier */
static atomic_int probe_done;
static atomic_int probe_winner = -1;
static uint64_t probe_elapsed_ns;

static uint64_t now_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000u, (long)(ms % 1000u) * 1000000L};
    nanosleep(&ts, NULL);
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("lockload: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

/* ------------------------------------------------------------------ connections */

static int parse_url(const char *s, struct url *u)
{
    const char *p;
    memset(u, 0, sizeof *u);
    if (strncmp(s, "https://", 8) == 0) {
        u->tls = 1;
        p = s + 8;
    } else if (strncmp(s, "http://", 7) == 0) {
        p = s + 7;
    } else {
        return -1;
    }
    const char *colon = strrchr(p, ':');
    size_t hl = colon ? (size_t)(colon - p) : strcspn(p, "/");
    if (hl == 0 || hl >= sizeof u->host)
        return -1;
    memcpy(u->host, p, hl);
    if (colon) {
        size_t pl = strcspn(colon + 1, "/");
        if (pl == 0 || pl >= sizeof u->port)
            return -1;
        memcpy(u->port, colon + 1, pl);
    } else {
        strcpy(u->port, u->tls ? "443" : "80");
    }
    char hp[sizeof u->hostport];
    snprintf(hp, sizeof hp, "%s:%s", u->host, u->port);
    memcpy(u->hostport, hp, sizeof hp);
    return 0;
}

static void conn_close(struct conn *c)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->len = 0;
}

static void set_timeouts(int fd, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int tls_start(struct conn *c, char *err, size_t errlen)
{
    c->ssl = SSL_new(ssl_ctx);
    if (!c->ssl)
        goto fail;
    struct in6_addr a;
    int is_ip = inet_pton(AF_INET, c->url->host, &a) == 1 ||
                inet_pton(AF_INET6, c->url->host, &a) == 1;
    if (!is_ip)
        SSL_set_tlsext_host_name(c->ssl, c->url->host);
    if (opt.cacert) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
        if ((is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, c->url->host)
                   : X509_VERIFY_PARAM_set1_host(vp, c->url->host, 0)) != 1)
            goto fail;
    }
    SSL_set_fd(c->ssl, c->fd);
    if (SSL_connect(c->ssl) == 1)
        return 0;
fail:
    snprintf(err, errlen, "TLS handshake with %s: %s", c->url->hostport,
             ERR_peek_last_error() ? ERR_reason_error_string(ERR_peek_last_error()) : "failed");
    ERR_clear_error();
    return -1;
}

/* Connects c to its URL (blocking, TCP_NODELAY, TLS when https). */
static int conn_open(struct conn *c, char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(c->url->host, c->url->port, &hints, &res);
    if (gai) {
        snprintf(err, errlen, "%s: %s", c->url->hostport, gai_strerror(gai));
        return -1;
    }
    c->fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, res->ai_addr, res->ai_addrlen) != 0) {
        snprintf(err, errlen, "connect %s: %s", c->url->hostport, strerror(errno));
        freeaddrinfo(res);
        conn_close(c);
        return -1;
    }
    freeaddrinfo(res);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (c->io_timeout_ms)
        set_timeouts(c->fd, c->io_timeout_ms);
    c->len = 0;
    if (c->url->tls && tls_start(c, err, errlen)) {
        conn_close(c);
        return -1;
    }
    return 0;
}

/* What one I/O step on a connection came to: done, or it must wait until the socket is readable
 * or writable (a non-blocking socket; a blocking one only when its timeout expired), or failed. */
enum io { IO_OK, IO_WANT_READ, IO_WANT_WRITE, IO_FAIL };

static enum io ssl_io(SSL *ssl, int rv)
{
    switch (SSL_get_error(ssl, rv)) {
    case SSL_ERROR_WANT_READ:
        return IO_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return IO_WANT_WRITE;
    default:
        return IO_FAIL;
    }
}

/* Sends out[*sent, n), advancing *sent.  With TLS, a retry after IO_WANT_* must pass the same out
 * and n (OpenSSL's rule; the record is then sent whole and *sent stays 0 until IO_OK). */
static enum io conn_send(struct conn *c, const char *out, size_t n, size_t *sent)
{
    if (c->ssl) {
        size_t done = 0;
        int rv = SSL_write_ex(c->ssl, out, n, &done);
        if (rv == 1) {
            *sent = n;
            return IO_OK;
        }
        return ssl_io(c->ssl, rv);
    }
    while (*sent < n) {
        ssize_t w = send(c->fd, out + *sent, n - *sent, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return IO_WANT_WRITE;
        if (w <= 0)
            return IO_FAIL;
        *sent += (size_t)w;
    }
    return IO_OK;
}

/* One read appending to c->buf; IO_FAIL also at the end of the stream and on a full buffer. */
static enum io conn_recv(struct conn *c)
{
    if (c->len >= sizeof c->buf)
        return IO_FAIL;
    if (c->ssl) {
        size_t got = 0;
        int rv = SSL_read_ex(c->ssl, c->buf + c->len, sizeof c->buf - c->len, &got);
        if (rv == 1) {
            c->len += got;
            return IO_OK;
        }
        return ssl_io(c->ssl, rv);
    }
    ssize_t r;
    do {
        r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    } while (r < 0 && errno == EINTR);
    if (r > 0) {
        c->len += (size_t)r;
        return IO_OK;
    }
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return IO_WANT_READ;
    return IO_FAIL;
}

static int set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -1 : 0;
}

/* ------------------------------------------------------------------ HTTP/1.1 */

/* The value of header name in head (the status line and headers), or NULL. */
static const char *find_header(const char *head, size_t headlen, const char *name)
{
    size_t nl = strlen(name);
    const char *end = head + headlen;
    for (const char *p = head; p < end;) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            break;
        p = eol + 1;
        if ((size_t)(end - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':')
            return p + nl + 1;
    }
    return NULL;
}

static void consume(struct conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Decodes the chunked body at p[0, len) into r->body: the bytes it takes, 0 while p does not hold
 * all of it, -1 if it is malformed or too large. */
static long parse_chunked(const char *p, size_t len, struct response *r)
{
    size_t off = 0;
    r->body_len = 0;
    for (;;) {
        const char *eol = memmem(p + off, len - off, "\r\n", 2);
        if (!eol)
            return 0;
        if (!isxdigit((unsigned char)p[off]))
            return -1;
        unsigned long size = strtoul(p + off, NULL, 16); /* stops at the '\r' at the latest */
        size_t hdr = (size_t)(eol + 2 - (p + off));
        if (size > sizeof r->body - 1 - r->body_len)
            return -1;
        if (len - off < hdr + size + 2)
            return 0;
        memcpy(r->body + r->body_len, p + off + hdr, size);
        r->body_len += size;
        off += hdr + size + 2;
        if (size == 0) /* no trailers from the servers measured here */
            return (long)off;
    }
}

/* Parses the response (Content-Length or chunked) at the start of buf[0, len) into r, its body
 * NUL-terminated: the bytes it takes, 0 while buf does not hold all of it, -1 if it is malformed
 * or too large. */
static long parse_response(const char *buf, size_t len, struct response *r)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t headlen = (size_t)(end + 4 - buf);
    if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0)
        return -1;
    r->status = atoi(buf + 9);
    const char *te = find_header(buf, headlen, "Transfer-Encoding");
    const char *cl = find_header(buf, headlen, "Content-Length");
    long body;
    if (te && strncasecmp(te + strspn(te, " "), "chunked", 7) == 0) {
        body = parse_chunked(buf + headlen, len - headlen, r);
        if (body <= 0)
            return body;
    } else {
        size_t n = cl ? strtoul(cl, NULL, 10) : 0;
        if (n > sizeof r->body - 1)
            return -1;
        if (len - headlen < n)
            return 0;
        memcpy(r->body, buf + headlen, n);
        r->body_len = n;
        body = (long)n;
    }
    r->body[r->body_len] = '\0';
    return (long)headlen + body;
}

/* Reads one response into r (blocking). */
static int read_response(struct conn *c, struct response *r)
{
    for (;;) {
        long n = parse_response(c->buf, c->len, r);
        if (n > 0) {
            consume(c, (size_t)n);
            return 0;
        }
        if (n < 0 || conn_recv(c) != IO_OK)
            return -1;
    }
}

/* Writes a request with a JSON body (or none) into req[0, cap): its length, or -1 if too long. */
static int format_request(char *req, size_t cap, const struct url *u, const char *method,
                          const char *path, const char *body)
{
    int n = snprintf(req, cap,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, u->hostport, body ? strlen(body) : 0, body ? body : "");
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* One request/response on the keep-alive connection (blocking; opened if needed); 0 and r
 * filled, or -1 with err set and the connection closed. */
static int http_call(struct conn *c, const char *method, const char *path, const char *body,
                     struct response *r, char *err, size_t errlen)
{
    char req[REQ_MAX];
    int n = format_request(req, sizeof req, c->url, method, path, body);
    if (n < 0) {
        snprintf(err, errlen, "request too long");
        return -1;
    }
    if (c->fd < 0 && conn_open(c, err, errlen))
        return -1;
    size_t sent = 0;
    if (conn_send(c, req, (size_t)n, &sent) != IO_OK || read_response(c, r)) {
        snprintf(err, errlen, "%s %s on %s: connection failed", method, path, c->url->hostport);
        ERR_clear_error();
        conn_close(c);
        return -1;
    }
    return 0;
}

/* Copies the JSON string or number value of "key" (first occurrence) into out. */
static int json_scalar(const char *body, const char *key, char *out, size_t outlen)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(body, pat);
    if (!p)
        return -1;
    p += strlen(pat);
    p += strspn(p, " ");
    size_t n;
    if (*p == '"') {
        p++;
        n = strcspn(p, "\"");
    } else {
        n = strspn(p, "0123456789-");
    }
    if (n == 0 || n >= outlen)
        return -1;
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

static void b64(const char *in, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in, (int)strlen(in));
}

/* ------------------------------------------------------------------ one pair */

/* Requires status 200 of cl->rsp (the answer to path) and, if key, a value of key copied to val;
 * -1 with cl->last_error set otherwise. */
static int check_answer(struct client *cl, const char *path, const char *key, char *val,
                        size_t vallen)
{
    char *err = cl->last_error;
    if (cl->rsp.status != 200) {
        snprintf(err, sizeof cl->last_error, "%s: HTTP %d %.120s", path, cl->rsp.status,
                 cl->rsp.body);
        return -1;
    }
    if (key && json_scalar(cl->rsp.body, key, val, vallen)) {
        snprintf(err, sizeof cl->last_error, "%s: no %s in %.120s", path, key, cl->rsp.body);
        return -1;
    }
    return 0;
}

/* Calls (blocking) and checks the answer as check_answer does. */
static int call_ok(struct client *cl, const char *path, const char *body, const char *key,
                   char *val, size_t vallen)
{
    if (http_call(&cl->conn, "POST", path, body, &cl->rsp, cl->last_error,
                  sizeof cl->last_error))
        return -1;
    return check_answer(cl, path, key, val, vallen);
}

static const struct call *pair_calls(void)
{
    return opt.etcd ? etcd_calls : dsyncd_calls;
}

/* The body of call step (0 or 1) of cl's pair; step 1 uses cl->val from step 0's answer. */
static void pair_body(const struct client *cl, int step, char *body, size_t cap)
{
    if (opt.etcd && step == 0) {
        char name[NAME_MAX_LEN], name64[NAME_MAX_LEN * 2];
        snprintf(name, sizeof name, "%s/r%d", opt.prefix, cl->id);
        b64(name, name64);
        snprintf(body, cap, "{\"name\":\"%s\",\"lease\":\"%s\"}", name64, cl->lease);
    } else if (opt.etcd) {
        snprintf(body, cap, "{\"key\":\"%s\"}", cl->val);
    } else if (step == 0) {
        snprintf(body, cap,
                 "{\"resource\":\"%s-r%d\",\"client_id\":\"%s-c%d\",\"mode\":\"exclusive\","
                 "\"ttl_ms\":%u}",
                 opt.prefix, cl->id, opt.prefix, cl->id, opt.ttl_ms);
    } else {
        snprintf(body, cap, "{\"resource\":\"%s-r%d\",\"client_id\":\"%s-c%d\",\"token\":%s}",
                 opt.prefix, cl->id, opt.prefix, cl->id, cl->val);
    }
}

static int etcd_lease(struct client *cl)
{
    char body[128];
    snprintf(body, sizeof body, "{\"TTL\":%u}", (unsigned)(opt.warmup_s + opt.duration_s) + 60u);
    return call_ok(cl, "/v3/lease/grant", body, "ID", cl->lease, sizeof cl->lease);
}

/* One acquire+release pair, blocking (the probes). */
static int one_pair(struct client *cl)
{
    char body[BODY_MAX];
    if (opt.etcd && !cl->lease[0] && etcd_lease(cl))
        return -1;
    for (int step = 0; step < 2; step++) {
        const struct call *call = &pair_calls()[step];
        pair_body(cl, step, body, sizeof body);
        if (call_ok(cl, call->path, body, call->key, cl->val, sizeof cl->val))
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ load: one client */

static void record(struct client *cl, uint64_t ns)
{
    if (cl->nlat == cl->cap) {
        cl->cap = cl->cap ? cl->cap * 2 : 4096;
        cl->lat_ns = realloc(cl->lat_ns, cl->cap * sizeof *cl->lat_ns);
        if (!cl->lat_ns)
            die("out of memory");
    }
    cl->lat_ns[cl->nlat++] = ns;
}

static void note_error(struct client *cl)
{
    cl->errors++;
    if (cl->errors <= 3)
        fprintf(stderr, "lockload: client %d: %s\n", cl->id, cl->last_error);
}

/* Registers the events cl's connection waits for (level-triggered). */
static void want_events(struct client *cl, uint32_t events)
{
    if (cl->events == events)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = cl};
    if (epoll_ctl(cl->w->epfd, cl->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, cl->conn.fd, &ev))
        die("epoll_ctl: %s", strerror(errno));
    cl->events = events;
}

static void drop_conn(struct client *cl)
{
    if (cl->events)
        epoll_ctl(cl->w->epfd, EPOLL_CTL_DEL, cl->conn.fd, NULL);
    cl->events = 0;
    conn_close(&cl->conn);
}

static void finish(struct client *cl)
{
    if (cl->state == ST_RETRY)
        cl->w->retrying--;
    drop_conn(cl);
    cl->state = ST_DONE;
    cl->w->active--;
}

/* After an error (cl->last_error says which), counted if it happens inside the window: closes
 * the connection and reconnects after LOAD_RETRY_MS, or stops once the window is over. */
static void fail(struct client *cl)
{
    uint64_t now = now_ns(CLOCK_MONOTONIC);
    ERR_clear_error();
    if (now >= window_start_ns && now < window_end_ns)
        note_error(cl);
    if (now >= window_end_ns) {
        finish(cl);
        return;
    }
    drop_conn(cl);
    cl->state = ST_RETRY;
    cl->retry_ns = now + LOAD_RETRY_MS * 1000000ull;
    cl->w->retrying++;
}

static void call_failed(struct client *cl)
{
    snprintf(cl->last_error, sizeof cl->last_error, "POST %s on %s: connection failed",
             pair_calls()[cl->step].path, cl->conn.url->hostport);
    fail(cl);
}

static void drive(struct client *cl);

/* Starts call step of cl's pair: the first call's request is ready-made, the second carries what
 * the first answer gave. */
static void start_call(struct client *cl, int step, uint64_t now)
{
    cl->step = step;
    if (step == 0) {
        cl->t0_ns = now;
        cl->out = cl->req0;
        cl->out_len = cl->req0_len;
    } else {
        char body[BODY_MAX];
        pair_body(cl, 1, body, sizeof body);
        int n = format_request(cl->req, sizeof cl->req, cl->conn.url, "POST",
                               pair_calls()[1].path, body);
        if (n < 0) {
            snprintf(cl->last_error, sizeof cl->last_error, "request too long");
            fail(cl);
            return;
        }
        cl->out = cl->req;
        cl->out_len = (size_t)n;
    }
    cl->sent = 0;
    cl->state = ST_SEND;
    drive(cl);
}

/* A complete answer to the current call is in cl->rsp: the pair's second call, or the pair is
 * done (counted if it ends inside the window) and the next one starts unless the window is over. */
static void on_answer(struct client *cl)
{
    const struct call *call = &pair_calls()[cl->step];
    if (check_answer(cl, call->path, call->key, cl->val, sizeof cl->val)) {
        fail(cl);
        return;
    }
    uint64_t now = now_ns(CLOCK_MONOTONIC);
    if (cl->step == 0) {
        start_call(cl, 1, now);
        return;
    }
    if (now >= window_start_ns && now < window_end_ns)
        record(cl, now - cl->t0_ns);
    if (now >= window_end_ns)
        finish(cl);
    else
        start_call(cl, 0, now);
}

/* Reads until the answer is complete and TLS holds no more bytes, or the socket has no more. */
static void read_answer(struct client *cl)
{
    struct conn *c = &cl->conn;
    long used = 0;
    while (used == 0 || (c->ssl && SSL_has_pending(c->ssl))) {
        enum io st = conn_recv(c);
        if (st != IO_OK && used > 0) {
            ERR_clear_error(); /* a failure after the answer shows again at the next call */
            break;
        }
        if (st == IO_FAIL) {
            call_failed(cl);
            return;
        }
        if (st != IO_OK) {
            want_events(cl, st == IO_WANT_WRITE ? EPOLLOUT : EPOLLIN);
            return;
        }
        if (used == 0 && (used = parse_response(c->buf, c->len, &cl->rsp)) < 0) {
            call_failed(cl);
            return;
        }
    }
    consume(c, (size_t)used);
    on_answer(cl);
}

/* Moves cl on as far as its connection allows without blocking. */
static void drive(struct client *cl)
{
    if (cl->state == ST_READ) {
        read_answer(cl);
        return;
    }
    if (cl->state != ST_SEND)
        return;
    enum io st = conn_send(&cl->conn, cl->out, cl->out_len, &cl->sent);
    if (st == IO_FAIL) {
        call_failed(cl);
        return;
    }
    if (st == IO_OK)
        cl->state = ST_READ;
    want_events(cl, st == IO_WANT_WRITE ? EPOLLOUT : EPOLLIN);
}

/* Opens cl's connection (blocking) for the event loop: non-blocking once the handshake is done. */
static int load_connect(struct client *cl)
{
    if (conn_open(&cl->conn, cl->last_error, sizeof cl->last_error))
        return -1;
    if (set_nonblocking(cl->conn.fd)) {
        snprintf(cl->last_error, sizeof cl->last_error, "O_NONBLOCK: %s", strerror(errno));
        conn_close(&cl->conn);
        return -1;
    }
    want_events(cl, EPOLLIN);
    return 0;
}

static void reconnect(struct client *cl)
{
    cl->w->retrying--;
    cl->state = ST_SEND; /* no longer ST_RETRY, for fail() and finish() */
    if (now_ns(CLOCK_MONOTONIC) >= window_end_ns) {
        finish(cl);
        return;
    }
    if (load_connect(cl)) {
        fail(cl);
        return;
    }
    start_call(cl, 0, now_ns(CLOCK_MONOTONIC));
}

/* ------------------------------------------------------------------ load: the loops */

/* Reconnects the clients whose delay is over; the earliest time another one is due, or limit. */
static uint64_t retry_due(struct worker *w, uint64_t limit)
{
    uint64_t now = now_ns(CLOCK_MONOTONIC), next = limit;
    for (int i = 0; i < w->n && w->retrying > 0; i++) {
        struct client *cl = w->cls[i];
        if (cl->state == ST_RETRY && cl->retry_ns <= now)
            reconnect(cl);
        if (cl->state == ST_RETRY && cl->retry_ns < next)
            next = cl->retry_ns;
    }
    return next;
}

/* Pairs until one ends after the window; those ending inside it are counted (so the rate is not
 * biased by pairs cut at the edges).  Calls still running LOAD_DRAIN_MS after the window are
 * dropped. */
static void *worker_thread(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[LOAD_EVENTS];
    pthread_barrier_wait(&start_barrier);
    uint64_t drain_end = window_end_ns + LOAD_DRAIN_MS * 1000000ull;
    for (int i = 0; i < w->n; i++)
        start_call(w->cls[i], 0, now_ns(CLOCK_MONOTONIC));
    while (w->active > 0) {
        uint64_t wake = w->retrying ? retry_due(w, drain_end) : drain_end;
        uint64_t now = now_ns(CLOCK_MONOTONIC);
        if (now >= drain_end || w->active == 0)
            break;
        uint64_t ms = wake > now ? (wake - now + 999999u) / 1000000u : 0;
        int n = epoll_wait(w->epfd, evs, LOAD_EVENTS, ms > 60000 ? 60000 : (int)ms);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++)
            drive(evs[i].data.ptr);
    }
    for (int i = 0; i < w->n; i++)
        if (w->cls[i]->state != ST_DONE)
            finish(w->cls[i]);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static double pct_ms(const uint64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p * (double)n + 0.999999); /* nearest rank */
    i = i < 1 ? 1 : i > n ? n : i;
    return (double)v[i - 1] / 1e6;
}

static void report(struct client *cls)
{
    size_t n = 0;
    uint64_t errors = 0;
    for (int i = 0; i < opt.clients; i++) {
        n += cls[i].nlat;
        errors += cls[i].errors;
    }
    uint64_t *all = malloc((n ? n : 1) * sizeof *all);
    if (!all)
        die("out of memory");
    size_t k = 0;
    for (int i = 0; i < opt.clients; i++) {
        if (cls[i].nlat)
            memcpy(all + k, cls[i].lat_ns, cls[i].nlat * sizeof *all);
        k += cls[i].nlat;
    }
    qsort(all, n, sizeof *all, cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)all[i];
    printf("lockload target=%s url=%s://%s clients=%d duration_s=%.3f pairs=%zu errors=%" PRIu64
           " pairs_per_s=%.1f mean_ms=%.3f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f\n",
           opt.etcd ? "etcd" : "dsyncd", opt.urls[0].tls ? "https" : "http", opt.urls[0].hostport,
           opt.clients, opt.duration_s, n, errors, (double)n / opt.duration_s,
           n ? sum / (double)n / 1e6 : 0.0, pct_ms(all, n, 0.50), pct_ms(all, n, 0.90),
           pct_ms(all, n, 0.99), n ? (double)all[n - 1] / 1e6 : 0.0);
    free(all);
}

/* Best-effort clean-up so repeated runs leave little behind: the etcd leases (and so their lock
 * keys), revoked over one new blocking connection (the clients' connections are closed by now);
 * given up when that connection fails. */
static void revoke_leases(struct client *cls)
{
    struct client *admin = &cls[0];
    for (int i = 0; i < opt.clients; i++) {
        if (!cls[i].lease[0])
            continue;
        char body[64];
        snprintf(body, sizeof body, "{\"ID\":\"%s\"}", cls[i].lease);
        if (call_ok(admin, "/v3/lease/revoke", body, NULL, NULL, 0) && admin->conn.fd < 0)
            break;
    }
    conn_close(&admin->conn);
}

/* Connects client i (and gets its etcd lease) before the clock starts, for worker w. */
static void load_client_init(struct client *cl, int i, struct worker *w)
{
    cl->id = i;
    cl->w = w;
    cl->conn.url = &opt.urls[0];
    cl->conn.fd = -1;
    cl->conn.io_timeout_ms = LOAD_IO_TIMEOUT_MS;
    if (conn_open(&cl->conn, cl->last_error, sizeof cl->last_error) ||
        (opt.etcd && etcd_lease(cl)))
        die("client %d: %s", i, cl->last_error);
    char body[BODY_MAX];
    pair_body(cl, 0, body, sizeof body);
    int n = format_request(cl->req0, sizeof cl->req0, cl->conn.url, "POST", pair_calls()[0].path,
                           body);
    if (n < 0)
        die("client %d: request too long", i);
    cl->req0_len = (size_t)n;
    if (set_nonblocking(cl->conn.fd))
        die("O_NONBLOCK: %s", strerror(errno));
    want_events(cl, EPOLLIN);
    w->cls[w->n++] = cl;
    w->active++;
}

static int run_load(void)
{
    int nw = opt.threads < opt.clients ? opt.threads : opt.clients;
    struct client *cls = calloc((size_t)opt.clients, sizeof *cls);
    struct worker *ws = calloc((size_t)nw, sizeof *ws);
    if (!cls || !ws)
        die("out of memory");
    for (int k = 0; k < nw; k++) {
        ws[k].epfd = epoll_create1(EPOLL_CLOEXEC);
        ws[k].cls = calloc((size_t)(opt.clients / nw + 1), sizeof *ws[k].cls);
        if (ws[k].epfd < 0 || !ws[k].cls)
            die("epoll_create1: %s", strerror(errno));
    }
    for (int i = 0; i < opt.clients; i++)
        load_client_init(&cls[i], i, &ws[i % nw]);
    pthread_barrier_init(&start_barrier, NULL, (unsigned)nw + 1u);
    for (int k = 0; k < nw; k++)
        if (pthread_create(&ws[k].thread, NULL, worker_thread, &ws[k]))
            die("pthread_create failed");
    uint64_t t = now_ns(CLOCK_MONOTONIC);
    window_start_ns = t + (uint64_t)(opt.warmup_s * 1e9);
    window_end_ns = window_start_ns + (uint64_t)(opt.duration_s * 1e9);
    pthread_barrier_wait(&start_barrier);
    for (int k = 0; k < nw; k++)
        pthread_join(ws[k].thread, NULL);
    report(cls);
    if (opt.etcd)
        revoke_leases(cls);
    for (int i = 0; i < opt.clients; i++)
        free(cls[i].lat_ns);
    for (int k = 0; k < nw; k++) {
        close(ws[k].epfd);
        free(ws[k].cls);
    }
    free(ws);
    free(cls);
    pthread_barrier_destroy(&start_barrier);
    return 0;
}

/* ------------------------------------------------------------------ probes */

struct prober {
    pthread_t thread;
    int idx;
    struct client cl;
    uint64_t leader_ns; /* --wait-write: when this node first said it leads */
};

static int says_leader(struct client *cl)
{
    if (http_call(&cl->conn, "GET", "/status", NULL, &cl->rsp, cl->last_error,
                  sizeof cl->last_error))
        return 0;
    return cl->rsp.status == 200 && strstr(cl->rsp.body, "\"state\":\"leader\"") != NULL;
}

/* 0 once the probe succeeded.  dsyncd writes go only to a node that says it leads: a follower
 * forwards to the leader, and while the old one is dead a forwarded request can wait for the peer
 * client's reconnect backoff, which would time the forwarding path instead of the election. */
static int probe_once(struct prober *pr)
{
    if (opt.mode == MODE_WAIT_LEADER)
        return says_leader(&pr->cl) ? 0 : -1;
    if (!opt.etcd && !pr->leader_ns) {
        if (!says_leader(&pr->cl))
            return -1;
        pr->leader_ns = now_ns(CLOCK_REALTIME);
    }
    return one_pair(&pr->cl);
}

static void *probe_thread(void *arg)
{
    struct prober *pr = arg;
    uint64_t deadline = now_ns(CLOCK_MONOTONIC) + (uint64_t)(opt.timeout_s * 1e9);
    while (!atomic_load(&probe_done) && now_ns(CLOCK_MONOTONIC) < deadline) {
        if (probe_once(pr) == 0) {
            uint64_t t = now_ns(CLOCK_REALTIME);
            int expected = -1;
            if (atomic_compare_exchange_strong(&probe_winner, &expected, pr->idx)) {
                probe_elapsed_ns = t > opt.since_ns ? t - opt.since_ns : 0;
                atomic_store(&probe_done, 1);
            }
            break;
        }
        sleep_ms(PROBE_RETRY_MS);
    }
    conn_close(&pr->cl.conn);
    return NULL;
}

static int run_probe(void)
{
    struct prober *pr = calloc((size_t)opt.nurls, sizeof *pr);
    if (!pr)
        die("out of memory");
    for (int i = 0; i < opt.nurls; i++) {
        pr[i].idx = i;
        pr[i].cl.id = 0;
        pr[i].cl.conn.url = &opt.urls[i];
        pr[i].cl.conn.fd = -1;
        pr[i].cl.conn.io_timeout_ms = PROBE_IO_TIMEOUT_MS;
        if (pthread_create(&pr[i].thread, NULL, probe_thread, &pr[i]))
            die("pthread_create failed");
    }
    for (int i = 0; i < opt.nurls; i++)
        pthread_join(pr[i].thread, NULL);
    int w = atomic_load(&probe_winner);
    const char *what = opt.mode == MODE_WAIT_LEADER ? "leader_ms" : "write_ms";
    int rv = 0;
    if (w < 0) {
        printf("%s=timeout\n", what);
        rv = 1;
    } else {
        printf("%s=%.1f", what, (double)probe_elapsed_ns / 1e6);
        if (pr[w].leader_ns)
            printf(" leader_ms=%.1f", (double)(pr[w].leader_ns - opt.since_ns) / 1e6);
        printf(" url=%s://%s\n", opt.urls[w].tls ? "https" : "http", opt.urls[w].hostport);
    }
    free(pr);
    return rv;
}

/* ------------------------------------------------------------------ main */

static void usage(void)
{
    fputs("usage: lockload [-c CLIENTS] [-d SECONDS] [-w WARMUP_SECONDS] [-t|--threads N] [--etcd]\n"
          "                [--ttl-ms N] [--prefix STR] [--cacert FILE] URL\n"
          "       lockload --wait-leader|--wait-write [--since NS] [--timeout S] [--cacert FILE]\n"
          "                [--prefix STR] URL...\n"
          "  -t N: N worker threads (default 1), each an epoll loop over its share of the clients\n",
          stderr);
    exit(2);
}

static double num_arg(const char *s, double lo, double hi)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !(v >= lo && v <= hi))
        usage();
    return v;
}

static void parse_args(int argc, char **argv)
{
    opt.clients = 1;
    opt.threads = 1;
    opt.duration_s = 10;
    opt.warmup_s = 1;
    opt.timeout_s = 30;
    opt.ttl_ms = 10000;
    snprintf(opt.prefix, sizeof opt.prefix, "lockload-%ld", (long)getpid());
    opt.since_ns = now_ns(CLOCK_REALTIME);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (strcmp(a, "--etcd") == 0)
            opt.etcd = 1;
        else if (strcmp(a, "--wait-leader") == 0)
            opt.mode = MODE_WAIT_LEADER;
        else if (strcmp(a, "--wait-write") == 0)
            opt.mode = MODE_WAIT_WRITE;
        else if (strcmp(a, "-c") == 0 && more)
            opt.clients = (int)num_arg(argv[++i], 1, 4096);
        else if ((strcmp(a, "-t") == 0 || strcmp(a, "--threads") == 0) && more)
            opt.threads = (int)num_arg(argv[++i], 1, 256);
        else if (strcmp(a, "-d") == 0 && more)
            opt.duration_s = num_arg(argv[++i], 0.1, 86400);
        else if (strcmp(a, "-w") == 0 && more)
            opt.warmup_s = num_arg(argv[++i], 0, 3600);
        else if (strcmp(a, "--timeout") == 0 && more)
            opt.timeout_s = num_arg(argv[++i], 0.1, 3600);
        else if (strcmp(a, "--ttl-ms") == 0 && more)
            opt.ttl_ms = (unsigned)num_arg(argv[++i], 1, 3600000);
        else if (strcmp(a, "--since") == 0 && more)
            opt.since_ns = strtoull(argv[++i], NULL, 10);
        else if (strcmp(a, "--cacert") == 0 && more)
            opt.cacert = argv[++i];
        else if (strcmp(a, "--prefix") == 0 && more)
            snprintf(opt.prefix, sizeof opt.prefix, "%s", argv[++i]);
        else if (a[0] == '-')
            usage();
        else if (opt.nurls < 16 && parse_url(a, &opt.urls[opt.nurls]) == 0)
            opt.nurls++;
        else
            die("bad URL '%s' (http://HOST:PORT or https://HOST:PORT, at most 16)", a);
    }
    if (opt.nurls == 0)
        usage();
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN); /* a write to a server that died fails with EPIPE instead */
    ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!ssl_ctx)
        die("SSL_CTX_new failed");
    SSL_CTX_set_read_ahead(ssl_ctx, 1); /* one read(2) per answer, not header + body */
    if (opt.cacert) {
        if (SSL_CTX_load_verify_locations(ssl_ctx, opt.cacert, NULL) != 1)
            die("cannot load CA file %s", opt.cacert);
        SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER, NULL);
    }
    int rv = opt.mode == MODE_LOAD ? run_load() : run_probe();
    SSL_CTX_free(ssl_ctx);
    return rv;
}
