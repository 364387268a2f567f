/* Async Redis client: hiredis 0.14 on libevent, plus timeouts, reconnect backoff and state. */
#include "roles/queue/redis.h"

#include <errno.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "core/config.h"
#include "core/log.h"

#define BACKOFF_MIN_MS 100u
#define BACKOFF_MAX_MS 2000u
#define CHECK_MS 50u

/* A command in flight: hiredis' privdata.  Replies come in order, so the list is FIFO. */
struct cmd {
    struct cmd *prev, *next;
    struct ds_redis *r;
    ds_redis_cb *cb;
    void *arg;
    uint64_t deadline_ms;
};

struct ds_redis {
    struct event_base *base;
    char addr[128];
    char ip[64];
    int port;
    uint64_t timeout_ms;
    ds_redis_state_fn *on_state;
    void *state_arg;
    redisAsyncContext *ac; /* NULL while backing off */
    int up;                /* connected and healthy */
    int broken;            /* a failure was seen on ac: refuse new commands on it */
    int freeing;
    uint64_t connect_deadline_ms;
    uint64_t backoff_ms;
    struct event *retry, *check;
    struct cmd *head, *tail;
    int npending;
    uint64_t errors;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

const char *ds_redis_strerror(int rv)
{
    switch (rv) {
    case DS_REDIS_OK: return "ok";
    case DS_REDIS_EDOWN: return "shard not connected";
    case DS_REDIS_ENOMEM: return "out of memory";
    case DS_REDIS_EADDR: return "bad shard address";
    default: return "unknown error";
    }
}

static void set_up(struct ds_redis *r, int up)
{
    if (r->up == up)
        return;
    r->up = up;
    ds_log(up ? DS_LOG_INFO : DS_LOG_WARN, up ? "redis shard up" : "redis shard down", "shard",
           r->addr, NULL);
    if (r->on_state && !r->freeing)
        r->on_state(r, up, r->state_arg);
}

static void schedule_retry(struct ds_redis *r)
{
    if (r->freeing)
        return;
    uint64_t ms = r->backoff_ms;
    r->backoff_ms = ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(r->retry, &tv);
}

static void unlink_cmd(struct ds_redis *r, struct cmd *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        r->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        r->tail = c->prev;
    r->npending--;
}

static void reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct cmd *c = privdata;
    struct ds_redis *r = c->r;
    redisReply *rep = reply;
    unlink_cmd(r, c);
    if (!rep) {
        r->broken = 1;
        r->errors++;
    } else if (rep->type == REDIS_REPLY_ERROR) {
        r->errors++;
    }
    c->cb(rep, c->arg);
    free(c);
}

static void connect_cb(const redisAsyncContext *ac, int status)
{
    struct ds_redis *r = ac->data;
    if (!r || r->ac != ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this call and fails its pending commands */
        r->ac = NULL;
        r->broken = 1;
        schedule_retry(r);
        return;
    }
    r->backoff_ms = BACKOFF_MIN_MS;
    set_up(r, 1);
}

static void disconnect_cb(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct ds_redis *r = ac->data;
    if (!r || r->ac != ac)
        return; /* we dropped it ourselves */
    r->ac = NULL;
    r->broken = 1;
    set_up(r, 0);
    schedule_retry(r);
}

static void try_connect(struct ds_redis *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->ip, r->port);
    if (!ac) {
        schedule_retry(r);
        return;
    }
    if (ac->err) {
        redisAsyncFree(ac);
        schedule_retry(r);
        return;
    }
    ac->data = r;
    if (redisLibeventAttach(ac, r->base) != REDIS_OK) {
        redisAsyncFree(ac);
        schedule_retry(r);
        return;
    }
    redisAsyncSetConnectCallback(ac, connect_cb);
    redisAsyncSetDisconnectCallback(ac, disconnect_cb);
    r->ac = ac;
    r->broken = 0;
    r->connect_deadline_ms = now_ms() + r->timeout_ms;
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ds_redis *r = arg;
    if (!r->ac)
        try_connect(r);
}

/* Drop the connection from outside any hiredis callback: pending commands get NULL. */
static void drop(struct ds_redis *r)
{
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    r->broken = 1;
    ac->data = NULL;
    redisAsyncFree(ac);
    set_up(r, 0);
    schedule_retry(r);
}

static void check_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ds_redis *r = arg;
    if (!r->ac)
        return;
    uint64_t now = now_ms();
    int overdue = (r->head && r->head->deadline_ms <= now) ||
                  (!r->up && r->connect_deadline_ms <= now);
    if (overdue || r->broken) {
        if (overdue)
            ds_log(DS_LOG_WARN, "redis shard timed out", "shard", r->addr, NULL);
        drop(r);
    }
}

static int resolve(struct ds_redis *r, const char *addr, char *err)
{
    char host[256];
    uint16_t port;
    if (ds_config_split_addr(addr, host, sizeof host, &port)) {
        snprintf(err, 512, "redis shard '%s': expected host:port", addr);
        return DS_REDIS_EADDR;
    }
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int g = getaddrinfo(host, NULL, &hints, &res);
    if (g || !res) {
        snprintf(err, 512, "redis shard '%s': %s", addr, g ? gai_strerror(g) : "no address");
        return DS_REDIS_EADDR;
    }
    int rv = getnameinfo(res->ai_addr, res->ai_addrlen, r->ip, sizeof r->ip, NULL, 0,
                         NI_NUMERICHOST);
    freeaddrinfo(res);
    if (rv) {
        snprintf(err, 512, "redis shard '%s': %s", addr, gai_strerror(rv));
        return DS_REDIS_EADDR;
    }
    r->port = port;
    snprintf(r->addr, sizeof r->addr, "%s", addr);
    return DS_REDIS_OK;
}

int ds_redis_new(struct event_base *base, const char *addr, uint64_t timeout_ms,
                 ds_redis_state_fn *on_state, void *arg, struct ds_redis **out, char *err)
{
    struct ds_redis *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, 512, "out of memory");
        return DS_REDIS_ENOMEM;
    }
    int rv = resolve(r, addr, err);
    if (rv) {
        free(r);
        return rv;
    }
    r->base = base;
    r->timeout_ms = timeout_ms;
    r->on_state = on_state;
    r->state_arg = arg;
    r->backoff_ms = BACKOFF_MIN_MS;
    r->retry = evtimer_new(base, retry_cb, r);
    r->check = event_new(base, -1, EV_PERSIST, check_cb, r);
    struct timeval tv = {0, CHECK_MS * 1000};
    if (!r->retry || !r->check || evtimer_add(r->check, &tv)) {
        snprintf(err, 512, "out of memory");
        ds_redis_free(r);
        return DS_REDIS_ENOMEM;
    }
    try_connect(r);
    *out = r;
    return DS_REDIS_OK;
}

void ds_redis_free(struct ds_redis *r)
{
    if (!r)
        return;
    r->freeing = 1;
    if (r->ac) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    if (r->retry)
        event_free(r->retry);
    if (r->check)
        event_free(r->check);
    free(r);
}

/* v in decimal at p; returns the end. */
static char *put_u64(char *p, uint64_t v)
{
    char t[20];
    int n = 0;
    do
        t[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n)
        *p++ = t[--n];
    return p;
}

int ds_redis_command(struct ds_redis *r, ds_redis_cb *cb, void *arg, int argc, const char **argv,
                     const size_t *lens)
{
    if (!r->ac || r->broken || r->freeing)
        return DS_REDIS_EDOWN;
    struct cmd *c = calloc(1, sizeof *c);
    if (!c)
        return DS_REDIS_ENOMEM;
    c->r = r;
    c->cb = cb;
    c->arg = arg;
    c->deadline_ms = now_ms() + r->timeout_ms;
    /* RESP written here in one pass (hiredis' own formatter builds it with sds printf calls,
     * a measurable share of a produce) */
    size_t total = 16;
    for (int i = 0; i < argc; i++)
        total += lens[i] + 32; /* "$", up to 20 digits, two CRLFs */
    char small[2048], *buf = total <= sizeof small ? small : malloc(total);
    if (!buf) {
        free(c);
        return DS_REDIS_ENOMEM;
    }
    char *p = buf;
    *p++ = '*';
    p = put_u64(p, (uint64_t)argc);
    for (int i = 0; i < argc; i++) {
        *p++ = '\r';
        *p++ = '\n';
        *p++ = '$';
        p = put_u64(p, lens[i]);
        *p++ = '\r';
        *p++ = '\n';
        memcpy(p, argv[i], lens[i]);
        p += lens[i];
    }
    *p++ = '\r';
    *p++ = '\n';
    int rv = redisAsyncFormattedCommand(r->ac, reply_cb, c, buf, (size_t)(p - buf));
    if (buf != small)
        free(buf);
    if (rv != REDIS_OK) {
        free(c);
        return DS_REDIS_EDOWN;
    }
    c->prev = r->tail;
    if (r->tail)
        r->tail->next = c;
    else
        r->head = c;
    r->tail = c;
    r->npending++;
    return DS_REDIS_OK;
}

int ds_redis_up(const struct ds_redis *r)
{
    return r->up && r->ac && !r->broken;
}

uint64_t ds_redis_errors(const struct ds_redis *r)
{
    return r->errors;
}

int ds_redis_pending(const struct ds_redis *r)
{
    return r->npending;
}
