/* Lock load generator for the benchmarks: keep-alive HTTP(S) clients doing acquire+release pairs
 * against dsyncd's lock role or etcd's v3 JSON gateway, plus probes timing leader election and
 * write resumption.  One blocking thread per client (the clients spend their time waiting for the
 * servers, so a thread each costs little and keeps the code plain).
 *
 * usage: lockload [options] URL...
 *   load (default)   -c N clients (default 1), -d S seconds measured (default 10), -w S seconds of
 *                    warm-up (default 1), --etcd for etcd's gateway, --ttl-ms N (dsyncd lease,
 *                    default 10000), --prefix STR (resource names, default lockload-<pid>).
 *                    All clients use the first URL.  Prints one line of key=value figures.
 *   --wait-leader    polls GET /status of every URL until one says "state":"leader"
 *   --wait-write     tries acquire+release on every URL until one succeeds (dsyncd: only on a
 *                    node whose GET /status says it leads; also prints when it first said so)
 *                    (both: --since NS = CLOCK_REALTIME ns the time is counted from, default now;
 *                    --timeout S, default 30; print leader_ms= or write_ms= and the URL; exit 1 on
 *                    timeout)
 *   --cacert FILE    verify https servers against FILE (default: no verification)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define BUF_MAX 65536
#define BODY_MAX 4096
#define NAME_MAX_LEN 200
#define PROBE_IO_TIMEOUT_MS 300
#define PROBE_RETRY_MS 5

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
    int clients;
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

/* An HTTP response; body points into a buffer the caller owns. */
struct response {
    int status;
    char body[BUF_MAX];
    size_t body_len;
};

/* One load client's work and results. */
struct client {
    int id;
    pthread_t thread;
    struct conn conn;
    struct response rsp;
    char lease[32];     /* etcd */
    uint64_t *lat_ns;   /* latencies of pairs completed inside the window */
    size_t nlat, cap;
    uint64_t errors;
    char last_error[512];
};

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

/* Connects c to its URL (TCP_NODELAY, TLS when https). */
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

static int conn_write(struct conn *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w;
        if (c->ssl) {
            size_t done = 0;
            w = SSL_write_ex(c->ssl, p, n, &done) == 1 ? (ssize_t)done : -1;
        } else {
            w = send(c->fd, p, n, MSG_NOSIGNAL);
        }
        if (w <= 0) {
            if (w < 0 && !c->ssl && errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads more bytes into c->buf; -1 on error, end of stream or a full buffer. */
static int conn_fill(struct conn *c)
{
    if (c->len >= sizeof c->buf)
        return -1;
    ssize_t r;
    if (c->ssl) {
        size_t got = 0;
        int ok = SSL_read_ex(c->ssl, c->buf + c->len, sizeof c->buf - c->len, &got);
        r = ok == 1 ? (ssize_t)got : -1;
    } else {
        do {
            r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
        } while (r < 0 && errno == EINTR);
    }
    if (r <= 0)
        return -1;
    c->len += (size_t)r;
    return 0;
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

/* Waits until c->buf holds at least n bytes. */
static int need(struct conn *c, size_t n)
{
    while (c->len < n)
        if (conn_fill(c))
            return -1;
    return 0;
}

static void consume(struct conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Decodes a chunked body that starts at c->buf[0] into r->body, consuming it. */
static int read_chunked(struct conn *c, struct response *r)
{
    r->body_len = 0;
    for (;;) {
        char *eol;
        while (!(eol = memmem(c->buf, c->len, "\r\n", 2)))
            if (conn_fill(c))
                return -1;
        unsigned long size = strtoul(c->buf, NULL, 16);
        size_t hdr = (size_t)(eol + 2 - c->buf);
        if (size > sizeof r->body - 1 - r->body_len || need(c, hdr + size + 2))
            return -1;
        memcpy(r->body + r->body_len, c->buf + hdr, size);
        r->body_len += size;
        consume(c, hdr + size + 2);
        if (size == 0)
            return 0; /* no trailers from the servers measured here */
    }
}

/* Reads one response (Content-Length or chunked) into r. */
static int read_response(struct conn *c, struct response *r)
{
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
        if (conn_fill(c))
            return -1;
    size_t headlen = (size_t)(end + 4 - c->buf);
    if (c->len < 12 || strncmp(c->buf, "HTTP/1.", 7) != 0)
        return -1;
    r->status = atoi(c->buf + 9);
    const char *te = find_header(c->buf, headlen, "Transfer-Encoding");
    const char *cl = find_header(c->buf, headlen, "Content-Length");
    int chunked = te && strncasecmp(te + strspn(te, " "), "chunked", 7) == 0;
    size_t len = cl ? strtoul(cl, NULL, 10) : 0;
    consume(c, headlen);
    if (chunked)
        return read_chunked(c, r);
    if (len > sizeof r->body - 1 || need(c, len))
        return -1;
    memcpy(r->body, c->buf, len);
    r->body_len = len;
    r->body[len] = '\0';
    consume(c, len);
    return 0;
}

/* One request/response on the keep-alive connection (opened if needed); 0 and r filled, or -1
 * with err set and the connection closed. */
static int http_call(struct conn *c, const char *method, const char *path, const char *body,
                     struct response *r, char *err, size_t errlen)
{
    char req[BODY_MAX + 512];
    size_t blen = body ? strlen(body) : 0;
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, c->url->hostport, blen, body ? body : "");
    if (n < 0 || (size_t)n >= sizeof req) {
        snprintf(err, errlen, "request too long");
        return -1;
    }
    if (c->fd < 0 && conn_open(c, err, errlen))
        return -1;
    if (conn_write(c, req, (size_t)n) || read_response(c, r)) {
        snprintf(err, errlen, "%s %s on %s: connection failed", method, path, c->url->hostport);
        ERR_clear_error();
        conn_close(c);
        return -1;
    }
    r->body[r->body_len] = '\0';
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

/* Calls and requires status 200 and, if key, a value of key copied to val. */
static int call_ok(struct client *cl, const char *path, const char *body, const char *key,
                   char *val, size_t vallen)
{
    char *err = cl->last_error;
    if (http_call(&cl->conn, "POST", path, body, &cl->rsp, err, sizeof cl->last_error))
        return -1;
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

static int dsyncd_pair(struct client *cl)
{
    char body[BODY_MAX], token[32];
    snprintf(body, sizeof body,
             "{\"resource\":\"%s-r%d\",\"client_id\":\"%s-c%d\",\"mode\":\"exclusive\","
             "\"ttl_ms\":%u}",
             opt.prefix, cl->id, opt.prefix, cl->id, opt.ttl_ms);
    if (call_ok(cl, "/lock/acquire", body, "token", token, sizeof token))
        return -1;
    snprintf(body, sizeof body, "{\"resource\":\"%s-r%d\",\"client_id\":\"%s-c%d\",\"token\":%s}",
             opt.prefix, cl->id, opt.prefix, cl->id, token);
    return call_ok(cl, "/lock/release", body, NULL, NULL, 0);
}

static int etcd_lease(struct client *cl)
{
    char body[128];
    snprintf(body, sizeof body, "{\"TTL\":%u}", (unsigned)(opt.warmup_s + opt.duration_s) + 60u);
    return call_ok(cl, "/v3/lease/grant", body, "ID", cl->lease, sizeof cl->lease);
}

static int etcd_pair(struct client *cl)
{
    char name[NAME_MAX_LEN], name64[NAME_MAX_LEN * 2], key[512], body[BODY_MAX];
    if (!cl->lease[0] && etcd_lease(cl))
        return -1;
    snprintf(name, sizeof name, "%s/r%d", opt.prefix, cl->id);
    b64(name, name64);
    snprintf(body, sizeof body, "{\"name\":\"%s\",\"lease\":\"%s\"}", name64, cl->lease);
    if (call_ok(cl, "/v3/lock/lock", body, "key", key, sizeof key))
        return -1;
    snprintf(body, sizeof body, "{\"key\":\"%s\"}", key);
    return call_ok(cl, "/v3/lock/unlock", body, NULL, NULL, 0);
}

static int one_pair(struct client *cl)
{
    return opt.etcd ? etcd_pair(cl) : dsyncd_pair(cl);
}

/* ------------------------------------------------------------------ load */

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
    sleep_ms(10); /* do not spin on a failing server */
}

/* Pairs until one ends after the window; those ending inside it are counted (so the rate is not
 * biased by pairs cut at the edges). */
static void *load_thread(void *arg)
{
    struct client *cl = arg;
    pthread_barrier_wait(&start_barrier);
    for (;;) {
        uint64_t t0 = now_ns(CLOCK_MONOTONIC);
        int rv = one_pair(cl);
        uint64_t t1 = now_ns(CLOCK_MONOTONIC);
        int inside = t1 >= window_start_ns && t1 < window_end_ns;
        if (rv == 0 && inside)
            record(cl, t1 - t0);
        else if (rv != 0 && inside)
            note_error(cl);
        else if (rv != 0)
            sleep_ms(10);
        if (t1 >= window_end_ns)
            break;
    }
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

/* Best-effort clean-up so repeated runs leave little behind (etcd leases, their lock keys). */
static void cleanup_client(struct client *cl)
{
    if (opt.etcd && cl->lease[0]) {
        char body[64];
        snprintf(body, sizeof body, "{\"ID\":\"%s\"}", cl->lease);
        call_ok(cl, "/v3/lease/revoke", body, NULL, NULL, 0);
    }
    conn_close(&cl->conn);
    free(cl->lat_ns);
}

static int run_load(void)
{
    struct client *cls = calloc((size_t)opt.clients, sizeof *cls);
    if (!cls)
        die("out of memory");
    for (int i = 0; i < opt.clients; i++) {
        struct client *cl = &cls[i];
        cl->id = i;
        cl->conn.url = &opt.urls[0];
        cl->conn.fd = -1;
        /* connect (and get the etcd lease) before the clock starts */
        if (conn_open(&cl->conn, cl->last_error, sizeof cl->last_error) ||
            (opt.etcd && etcd_lease(cl)))
            die("client %d: %s", i, cl->last_error);
    }
    pthread_barrier_init(&start_barrier, NULL, (unsigned)opt.clients + 1u);
    for (int i = 0; i < opt.clients; i++)
        if (pthread_create(&cls[i].thread, NULL, load_thread, &cls[i]))
            die("pthread_create failed");
    uint64_t t = now_ns(CLOCK_MONOTONIC);
    window_start_ns = t + (uint64_t)(opt.warmup_s * 1e9);
    window_end_ns = window_start_ns + (uint64_t)(opt.duration_s * 1e9);
    pthread_barrier_wait(&start_barrier);
    for (int i = 0; i < opt.clients; i++)
        pthread_join(cls[i].thread, NULL);
    report(cls);
    for (int i = 0; i < opt.clients; i++)
        cleanup_client(&cls[i]);
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
    struct prober pr[16];
    for (int i = 0; i < opt.nurls; i++) {
        memset(&pr[i], 0, sizeof pr[i]);
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
    if (w < 0) {
        printf("%s=timeout\n", what);
        return 1;
    }
    printf("%s=%.1f", what, (double)probe_elapsed_ns / 1e6);
    if (pr[w].leader_ns)
        printf(" leader_ms=%.1f", (double)(pr[w].leader_ns - opt.since_ns) / 1e6);
    printf(" url=%s://%s\n", opt.urls[w].tls ? "https" : "http", opt.urls[w].hostport);
    return 0;
}

/* ------------------------------------------------------------------ main */

static void usage(void)
{
    fputs("usage: lockload [-c CLIENTS] [-d SECONDS] [-w WARMUP_SECONDS] [--etcd] [--ttl-ms N]\n"
          "                [--prefix STR] [--cacert FILE] URL\n"
          "       lockload --wait-leader|--wait-write [--since NS] [--timeout S] [--cacert FILE]\n"
          "                [--prefix STR] URL...\n",
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
