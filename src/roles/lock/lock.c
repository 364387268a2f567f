/* Lock role: the HTTP API of DESIGN.md §3 over the lock table (locktable.c) replicated by Raft.
 *
 * The leader stamps its wall-clock time into every command and proposes it; every replica applies
 * it; the node that holds the client's HTTP request answers once the entry is applied.  Followers
 * forward client requests to the leader over the peer transport and relay the answer.  Leases end
 * only by EXPIRE entries the leader proposes at the earliest deadline, and a new leader first
 * proposes EXTEND_ALL (one election timeout + the clock-skew bound) for the leases it inherits. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/jscan.h"
#include "core/json.h"
#include "core/log.h"
#include "core/node.h"
#include "net/authz.h"
#include "net/peer.h"
#include "net/server.h"
#include "raft/node.h"
#include "roles/lock/lock_role.h"
#include "roles/role.h"
#include "roles/lock/locktable.h"

#define MAX_WAIT_MS DS_LOCK_WAIT_MAX_MS /* longest wait_ms / watch wait */
#define FORWARD_SLACK_MS 5000u
#define ABANDON_RETRY_MS 200u

enum op { OP_ACQUIRE = 1, OP_RELEASE, OP_RENEW, OP_CANCEL, OP_EXPIRE, OP_EXTEND };

/* A proposal this node made, answered when its entry is applied. */
struct pending {
    struct pending *next;
    uint64_t index, term;
    struct ds_http_req *req; /* NULL: internal, or the client went away */
    uint8_t op;
    uint64_t wait_ms; /* ACQUIRE: how long to wait if queued */
    uint64_t started_ms;
};

/* A client waiting for a grant (its ACQUIRE was QUEUED). */
struct waiter {
    struct waiter *next;
    struct ds_lock_role *role;
    char resource[DS_LOCK_NAME_MAX + 1];
    char client[DS_LOCK_NAME_MAX + 1];
    struct ds_http_req *req; /* NULL once the client went away */
    struct event *timer;     /* fallback: wait_ms + clock-skew bound + election timeout */
    uint64_t since_ms;
};

/* A (resource, client) whose waiting client is gone: cancel its wait through the log, and release
 * a grant that reached it after it was abandoned (token >= min_token). */
struct abandoned {
    struct abandoned *next;
    char resource[DS_LOCK_NAME_MAX + 1];
    char client[DS_LOCK_NAME_MAX + 1];
    uint64_t min_token;
    uint64_t next_try_ms;
    uint64_t until_ms; /* kept until then while this node has not seen the wait (or grant) */
    int seen;          /* this node's table showed the wait or the stray grant */
};

/* A linearizable read waiting for its ReadIndex round. */
struct reader {
    struct reader *next;
    uint64_t ctx;
    struct ds_http_req *req;
    char resource[DS_LOCK_NAME_MAX + 1]; /* "" = GET /lock */
    uint64_t check_token;                /* POST /lock/check: the token asked about */
};

/* GET /lock/{resource}/watch: answered when token stops being valid, or at wait end. */
struct watch {
    struct watch *next;
    struct ds_lock_role *role;
    char resource[DS_LOCK_NAME_MAX + 1];
    uint64_t token;
    struct ds_http_req *req;
    struct event *timer;
};

/* A request forwarded to the leader. */
struct forward {
    struct ds_lock_role *role;
    struct ds_http_req *req; /* NULL once the client went away */
    int acquire_wait;        /* an ACQUIRE that may queue: cancel it if the client goes */
    char resource[DS_LOCK_NAME_MAX + 1];
    char client[DS_LOCK_NAME_MAX + 1];
};

struct ds_lock_role {
    struct ds_node *node;
    struct ds_raft_node *rn;
    struct ds_lock_table *table;
    struct pending *pending, **pending_tail;
    struct waiter *waiters;
    struct abandoned *abandoned;
    struct reader *readers;
    struct watch *watches;
    uint64_t read_seq;
    struct event *expire_timer, *housekeeping;
    int is_leader;
    uint64_t term;
    uint64_t extend_index; /* index of this term's EXTEND_ALL (0: not proposed yet) */
    int extended;          /* this term's EXTEND_ALL is applied: EXPIRE may be proposed */
    int expire_inflight;
    struct ds_metric *m_wait;
};

/* The raft node's opaque app type is this role. */
struct ds_raft_app {
    struct ds_lock_role role;
};

static uint64_t now_ns_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------------------ identity-bound locks
 *
 * With client auth on, a lock is held by (identity, client_id): the table stores
 * "<identity>:<client_id>" (identity names have no ':', net/authz.h) and answers show the two
 * apart, so another identity cannot release, renew or watch it even with the client_id and
 * token.  The mode is fixed for the life of the process (auth on iff a tokens file is set). */

static int bound_ids; /* client auth on: client ids carry their identity */

/* snprintf(dst, size, "%s", src) without the formatting machinery (hot path). */
static size_t copy_str(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src), k = n < size ? n : size - 1;
    memcpy(dst, src, k);
    dst[k] = 0;
    return n;
}

/* The client id the table uses for req's client; 400 (and -1) when it does not fit. */
static int owner_id(struct ds_http_req *req, const char *client, char *out)
{
    int n = bound_ids ? snprintf(out, DS_LOCK_NAME_MAX + 1, "%s:%s", req->identity, client)
                      : (int)copy_str(out, DS_LOCK_NAME_MAX + 1, client);
    if (n >= 0 && n <= DS_LOCK_NAME_MAX)
        return 0;
    ds_http_reply_error(req, 400, "bad_request", "field 'client_id' is too long: with the "
                        "identity '%s' it may have at most %zu bytes", req->identity,
                        DS_LOCK_NAME_MAX - strlen(req->identity) - 1);
    return -1;
}

/* "client_id" (and "identity" when bound) of a stored client id into o. */
static void add_client(cJSON *o, const char *stored)
{
    const char *colon = bound_ids ? strchr(stored, ':') : NULL;
    if (!colon) {
        cJSON_AddStringToObject(o, "client_id", stored);
        return;
    }
    char who[DS_LOCK_NAME_MAX + 1];
    snprintf(who, sizeof who, "%.*s", (int)(colon - stored), stored);
    cJSON_AddStringToObject(o, "identity", who);
    cJSON_AddStringToObject(o, "client_id", colon + 1);
}

/* The client_id part of a stored id (for messages). */
static const char *client_part(const char *stored)
{
    const char *colon = bound_ids ? strchr(stored, ':') : NULL;
    return colon ? colon + 1 : stored;
}

/* 1 when token on res is held under another identity than req's (403 answered). */
static int held_by_other(struct ds_lock_role *lr, struct ds_http_req *req, const char *res,
                         uint64_t token)
{
    if (!bound_ids)
        return 0;
    struct ds_lock_list holders = {0}, waiters = {0};
    uint8_t mode;
    int other = 0;
    size_t n = strlen(req->identity);
    if (ds_lock_query(lr->table, res, &mode, &holders, &waiters) == 0)
        for (size_t i = 0; i < holders.n; i++)
            if (holders.v[i].token == token)
                other = strncmp(holders.v[i].client_id, req->identity, n) != 0 ||
                        holders.v[i].client_id[n] != ':';
    ds_lock_list_free(&holders);
    ds_lock_list_free(&waiters);
    if (other)
        ds_http_reply_error(req, 403, "forbidden", "the lock on '%.100s' with token %" PRIu64
                            " is held by another identity than '%s'", res, token, req->identity);
    return other;
}

/* ------------------------------------------------------------------ JSON answers */

static void add_token(cJSON *o, const char *name, uint64_t token)
{
    if (token <= (1ull << 53)) {
        cJSON_AddNumberToObject(o, name, (double)token);
    } else {
        char s[24];
        snprintf(s, sizeof s, "%" PRIu64, token);
        cJSON_AddStringToObject(o, name, s);
    }
}

static cJSON *entries_json(const struct ds_lock_list *l, int holders)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < l->n; i++) {
        const struct ds_lock_entry *e = &l->v[i];
        cJSON *o = cJSON_CreateObject();
        add_client(o, e->client_id);
        cJSON_AddStringToObject(o, "mode", ds_lock_mode_name(e->mode));
        if (holders) {
            add_token(o, "token", e->token);
            cJSON_AddNumberToObject(o, "lease_expires_at_ms", (double)e->deadline_ms);
        } else {
            cJSON_AddBoolToObject(o, "upgrade", e->upgrade);
            cJSON_AddNumberToObject(o, "waiting_since_ms", (double)e->since_ms);
            cJSON_AddNumberToObject(o, "wait_ends_at_ms", (double)e->deadline_ms);
        }
        cJSON_AddItemToArray(a, o);
    }
    return a;
}

static void reply_obj(struct ds_http_req *req, int status, cJSON *o)
{
    ds_http_reply_json(req, status, o);
    cJSON_Delete(o);
}

static void reply_unavailable(struct ds_http_req *req, const char *why)
{
    ds_http_add_header(req, "Retry-After", "1");
    ds_http_reply_error(req, 503, "unavailable", "%s", why);
}

/* ---- answers on the write path, written without a cJSON tree (the same bytes as one) */

#define PUT(b, lit) ds_buf_add((b), (lit), sizeof(lit) - 1)

static void put_number(struct ds_buf *b, double d)
{
    if (ds_json_put_number(b, d))
        b->oom = 1;
}

/* sep, then what add_client adds. */
static void put_client(struct ds_buf *b, const char *sep, const char *stored)
{
    ds_buf_add(b, sep, strlen(sep));
    const char *colon = bound_ids ? strchr(stored, ':') : NULL;
    if (colon) {
        char who[DS_LOCK_NAME_MAX + 1];
        snprintf(who, sizeof who, "%.*s", (int)(colon - stored), stored);
        PUT(b, "\"identity\":");
        ds_json_put_str(b, who);
        PUT(b, ",");
        stored = colon + 1;
    }
    PUT(b, "\"client_id\":");
    ds_json_put_str(b, stored);
}

/* What add_token adds, after the quoted name and colon in key. */
static void put_token(struct ds_buf *b, const char *key, uint64_t token)
{
    ds_buf_add(b, key, strlen(key));
    if (token <= (1ull << 53)) {
        put_number(b, (double)token);
    } else {
        char s[24];
        snprintf(s, sizeof s, "%" PRIu64, token);
        ds_json_put_str(b, s);
    }
}

static void reply_buf(struct ds_http_req *req, int status, struct ds_buf *b)
{
    if (b->oom)
        ds_http_reply_error(req, 500, "internal", "out of memory");
    else
        ds_http_reply(req, status, "application/json", b->p, b->len);
    ds_buf_free(b);
}

static void reply_granted(struct ds_http_req *req, const char *resource, const char *client,
                          uint8_t mode, uint64_t token, uint64_t deadline,
                          const struct ds_lock_list *holders, int replayed, int refreshed)
{
    struct ds_buf b = {0};
    PUT(&b, "{\"granted\":true,\"resource\":");
    ds_json_put_str(&b, resource);
    put_client(&b, ",", client);
    PUT(&b, ",\"mode\":");
    ds_json_put_str(&b, ds_lock_mode_name(mode));
    put_token(&b, ",\"token\":", token);
    PUT(&b, ",\"lease_expires_at_ms\":");
    put_number(&b, (double)deadline);
    if (holders) { /* entries_json(holders, 1) */
        PUT(&b, ",\"holders\":[");
        for (size_t i = 0; i < holders->n; i++) {
            const struct ds_lock_entry *e = &holders->v[i];
            put_client(&b, i ? ",{" : "{", e->client_id);
            PUT(&b, ",\"mode\":");
            ds_json_put_str(&b, ds_lock_mode_name(e->mode));
            put_token(&b, ",\"token\":", e->token);
            PUT(&b, ",\"lease_expires_at_ms\":");
            put_number(&b, (double)e->deadline_ms);
            PUT(&b, "}");
        }
        PUT(&b, "]");
    }
    if (replayed)
        PUT(&b, ",\"replayed\":true");
    if (refreshed) /* it already held the lock: same token, lease refreshed */
        PUT(&b, ",\"refreshed\":true");
    PUT(&b, "}");
    reply_buf(req, 200, &b);
}

/* Answer the client of an applied command from its result. */
static void reply_result(struct ds_http_req *req, const struct ds_lock_cmd *c,
                         const struct ds_lock_result *r)
{
    cJSON *o;
    switch (r->status) {
    case DS_LOCK_GRANTED:
        reply_granted(req, c->resource, c->client_id, r->mode, r->token, r->deadline_ms,
                      &r->holders, r->replayed, r->refreshed);
        return;
    case DS_LOCK_HELD:
        o = cJSON_CreateObject();
        cJSON *e = cJSON_AddObjectToObject(o, "error");
        cJSON_AddStringToObject(e, "code", "lock_held");
        cJSON_AddStringToObject(e, "message", "the lock is held in an incompatible mode");
        cJSON_AddItemToObject(o, "holders", entries_json(&r->holders, 1));
        reply_obj(req, 409, o);
        return;
    case DS_LOCK_DEADLOCK:
        o = cJSON_CreateObject();
        e = cJSON_AddObjectToObject(o, "error");
        cJSON_AddStringToObject(e, "code", "deadlock");
        cJSON_AddStringToObject(e, "message", "waiting would close a cycle in the wait-for graph");
        cJSON *cyc = cJSON_AddArrayToObject(o, "cycle");
        for (size_t i = 0; i < r->cycle.n; i++) {
            cJSON *x = cJSON_CreateObject();
            add_client(x, r->cycle.v[i].client_id);
            cJSON_AddStringToObject(x, "waits_for", r->cycle.v[i].resource);
            cJSON_AddItemToArray(cyc, x);
        }
        reply_obj(req, 409, o);
        return;
    case DS_LOCK_OK: {
        struct ds_buf b = {0};
        PUT(&b, "{\"resource\":");
        ds_json_put_str(&b, c->resource);
        if (c->type == DS_LOCK_CMD_RELEASE) {
            PUT(&b, ",\"released\":true");
        } else {
            PUT(&b, ",\"renewed\":true,\"lease_expires_at_ms\":");
            put_number(&b, (double)r->deadline_ms);
        }
        PUT(&b, "}");
        reply_buf(req, 200, &b);
        return;
    }
    case DS_LOCK_NOT_HOLDER:
        ds_http_reply_error(req, 409, "not_holder",
                            "client '%.100s' does not hold '%.100s' with that token (released, "
                            "expired or superseded)", client_part(c->client_id), c->resource);
        return;
    case DS_LOCK_CONFLICT:
        ds_http_reply_error(req, 409, "conflict",
                            "request_id reused for another request, or already waiting in the "
                            "other mode");
        return;
    case DS_LOCK_INVALID:
        ds_http_reply_error(req, 400, "bad_request", "a field is outside its documented bounds");
        return;
    default:
        ds_http_reply_error(req, 500, "internal", "unexpected lock result %d", r->status);
        return;
    }
}

/* ------------------------------------------------------------------ proposals */

static struct pending *propose(struct ds_lock_role *lr, const struct ds_lock_cmd *c, int op,
                               struct ds_http_req *req, int *err)
{
    uint8_t *buf;
    size_t len;
    *err = ds_lock_cmd_encode(c, &buf, &len);
    if (*err)
        return NULL;
    uint64_t index, term;
    *err = ds_raft_node_propose(lr->rn, buf, len, &index, &term);
    free(buf);
    if (*err)
        return NULL;
    struct pending *p = calloc(1, sizeof *p);
    if (!p) {
        *err = DS_RAFT_ENOMEM; /* the entry will apply; nobody is told */
        return NULL;
    }
    p->index = index;
    p->term = term;
    p->req = req;
    p->op = (uint8_t)op;
    p->started_ms = ds_node_now_ms();
    *lr->pending_tail = p;
    lr->pending_tail = &p->next;
    return p;
}

static void pending_abort(struct ds_http_req *req, void *arg);

/* ------------------------------------------------------------------ waiters */

static struct waiter *find_waiter(struct ds_lock_role *lr, const char *res, const char *client)
{
    for (struct waiter *w = lr->waiters; w; w = w->next)
        if (strcmp(w->resource, res) == 0 && strcmp(w->client, client) == 0)
            return w;
    return NULL;
}

static void waiter_free(struct ds_lock_role *lr, struct waiter *w)
{
    for (struct waiter **pp = &lr->waiters; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    if (w->timer)
        event_free(w->timer);
    free(w);
}

static void abandon(struct ds_lock_role *lr, const char *res, const char *client)
{
    struct abandoned *a = calloc(1, sizeof *a);
    if (!a)
        return;
    snprintf(a->resource, sizeof a->resource, "%s", res);
    snprintf(a->client, sizeof a->client, "%s", client);
    a->min_token = ds_lock_next_token(lr->table);
    /* the ACQUIRE that queued the wait may not be applied here yet (a follower behind the
     * leader, a forward still in flight): the record waits for it a while before it concludes
     * that the wait never reached the log */
    a->until_ms = ds_node_now_ms() + 2 * FORWARD_SLACK_MS;
    a->next = lr->abandoned;
    lr->abandoned = a;
}


/* A new ACQUIRE from the client supersedes its abandoned wait: whatever it is granted from now on
 * is answered to that request, so housekeeping must not cancel or release it. */
static void forget_abandoned(struct ds_lock_role *lr, const char *res, const char *client)
{
    for (struct abandoned **pp = &lr->abandoned; *pp;) {
        struct abandoned *a = *pp;
        if (strcmp(a->resource, res) == 0 && strcmp(a->client, client) == 0) {
            *pp = a->next;
            free(a);
        } else {
            pp = &a->next;
        }
    }
}

static void reply_wait_timeout(struct ds_lock_role *lr, struct waiter *w)
{
    ds_metric_observe(lr->m_wait, (double)(ds_node_now_ms() - w->since_ms) / 1000.0);
    if (w->req) {
        w->req->on_abort = NULL;
        ds_http_reply_error(w->req, 409, "wait_timeout",
                            "not granted within wait_ms; the request is no longer queued");
    }
    waiter_free(lr, w);
}

/* The table ends a wait by itself (every command first drops waiters whose deadline passed, and
 * the leader proposes EXPIRE at the earliest deadline), and that is what answers the client.  This
 * timer fires only when this node has not learnt the outcome in time (no leader, or this node is
 * cut off and behind): the wait may have ended with a grant this node has not applied yet, so the
 * honest answer is "unknown" — retrying the acquire with wait_ms 0 tells the client. */
static void waiter_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct waiter *w = arg;
    struct ds_lock_role *lr = w->role;
    if (w->req) {
        w->req->on_abort = NULL;
        ds_http_add_header(w->req, "Retry-After", "1");
        ds_http_reply_error(w->req, 503, "unavailable",
                            "the end of the wait could not be confirmed by a leader; retry the "
                            "acquire (wait_ms 0) to learn whether the lock was granted");
    }
    waiter_free(lr, w);
}

static void waiter_abort(struct ds_http_req *req, void *arg)
{
    (void)req;
    struct waiter *w = arg;
    struct ds_lock_role *lr = w->role;
    abandon(lr, w->resource, w->client);
    waiter_free(lr, w);
}

static void add_waiter(struct ds_lock_role *lr, struct ds_http_req *req, const char *res,
                       const char *client, uint64_t wait_ms, uint64_t started_ms)
{
    struct waiter *w = calloc(1, sizeof *w);
    if (!w) {
        abandon(lr, res, client);
        ds_http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    w->role = lr;
    w->req = req;
    snprintf(w->resource, sizeof w->resource, "%s", res);
    snprintf(w->client, sizeof w->client, "%s", client);
    w->since_ms = ds_node_now_ms();
    w->timer = evtimer_new(lr->node->base, waiter_timeout, w);
    uint64_t spent = ds_node_now_ms() - started_ms;
    uint64_t left = (wait_ms > spent ? wait_ms - spent : 0) + lr->node->cfg->clock_skew_ms +
                    lr->node->cfg->election_max_ms;
    struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
    if (w->timer)
        evtimer_add(w->timer, &tv);
    w->next = lr->waiters;
    lr->waiters = w;
    req->on_abort = waiter_abort;
    req->abort_arg = w;
}

/* ------------------------------------------------------------------ apply */

static void notify_granted(struct ds_lock_role *lr, const struct ds_lock_list *granted)
{
    for (size_t i = 0; i < granted->n; i++) {
        const struct ds_lock_entry *e = &granted->v[i];
        struct waiter *w = find_waiter(lr, e->resource, e->client_id);
        if (!w)
            continue;
        ds_metric_observe(lr->m_wait, (double)(ds_node_now_ms() - w->since_ms) / 1000.0);
        if (w->req) {
            w->req->on_abort = NULL;
            reply_granted(w->req, e->resource, e->client_id, e->mode, e->token, e->deadline_ms,
                          NULL, 0, 0);
        }
        waiter_free(lr, w);
    }
}

/* 1 when this node has applied the grant of token (tokens come from one increasing counter): a
 * node behind the leader must not call a token it has not seen yet invalid. */
static int token_applied(const struct ds_lock_role *lr, uint64_t token)
{
    return token < ds_lock_next_token(lr->table);
}

static void check_watches(struct ds_lock_role *lr)
{
    for (struct watch **pp = &lr->watches; *pp;) {
        struct watch *w = *pp;
        if (ds_lock_check(lr->table, w->resource, w->token) || !token_applied(lr, w->token)) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        w->req->on_abort = NULL;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "resource", w->resource);
        add_token(o, "token", w->token);
        cJSON_AddBoolToObject(o, "valid", 0);
        reply_obj(w->req, 200, o);
        event_free(w->timer);
        free(w);
    }
}

static void audit_expired(struct ds_lock_role *lr, const struct ds_lock_list *expired)
{
    if (!lr->is_leader)
        return;
    for (size_t i = 0; i < expired->n; i++) {
        char params[700];
        snprintf(params, sizeof params, "{\"resource\":\"%.200s\",\"client_id\":\"%.200s\",\"token\":%" PRIu64 "}",
                 expired->v[i].resource, expired->v[i].client_id, expired->v[i].token);
        ds_audit_record("raft", "", "EXPIRE", "/lock/expire", params, 200);
    }
}

static void answer_pending(struct ds_lock_role *lr, struct pending *p, const struct ds_lock_cmd *c,
                           const struct ds_lock_result *r)
{
    struct ds_http_req *req = p->req;
    if (!req) {
        /* the client went away after proposing: do not leave a queued wait or a fresh grant */
        if (p->op == OP_ACQUIRE && (r->status == DS_LOCK_QUEUED ||
                                    (r->status == DS_LOCK_GRANTED && !r->replayed)))
            abandon(lr, c->resource, c->client_id);
        return;
    }
    req->on_abort = NULL;
    if (p->op == OP_ACQUIRE && r->status == DS_LOCK_QUEUED) {
        if (p->wait_ms)
            add_waiter(lr, req, c->resource, c->client_id, p->wait_ms, p->started_ms);
        else
            ds_http_reply_error(req, 409, "lock_held", "queued without waiting");
        return;
    }
    reply_result(req, c, r);
}

static void notify_timed_out(struct ds_lock_role *lr, const struct ds_lock_list *timed_out)
{
    for (size_t i = 0; i < timed_out->n; i++) {
        struct waiter *w = find_waiter(lr, timed_out->v[i].resource, timed_out->v[i].client_id);
        if (w)
            reply_wait_timeout(lr, w);
    }
}

static void schedule_expire(struct ds_lock_role *lr);

static void lock_apply(struct ds_raft_app *app, uint64_t index, uint64_t term,
                       const uint8_t *data, size_t len)
{
    struct ds_lock_role *lr = &app->role;
    struct ds_lock_cmd c;
    struct ds_lock_result r;
    memset(&r, 0, sizeof r);
    int rv = ds_lock_cmd_decode(data, len, &c);
    if (!rv)
        rv = ds_lock_apply(lr->table, &c, &r);
    if (rv == DS_LOCK_ENOMEM) {
        ds_log(DS_LOG_ERROR, "out of memory applying a lock command: stopping", NULL);
        exit(1);
    }
    if (!rv && c.type == DS_LOCK_CMD_ACQUIRE)
        forget_abandoned(lr, c.resource, c.client_id); /* the client asks afresh */
    /* my proposals at or before this index: answer mine, give up on overwritten ones */
    while (lr->pending && lr->pending->index <= index) {
        struct pending *p = lr->pending;
        lr->pending = p->next;
        if (!lr->pending)
            lr->pending_tail = &lr->pending;
        if (p->index == index && p->term == term && !rv)
            answer_pending(lr, p, &c, &r);
        else if (p->req) {
            p->req->on_abort = NULL;
            reply_unavailable(p->req, "leadership changed before the request committed; retry "
                                      "(with the same request_id to be safe)");
        }
        free(p);
    }
    if (!rv) {
        notify_timed_out(lr, &r.timed_out);
        notify_granted(lr, &r.granted);
        if (c.type == DS_LOCK_CMD_EXPIRE) {
            lr->expire_inflight = 0;
            audit_expired(lr, &r.expired);
        }
        if (c.type == DS_LOCK_CMD_EXTEND_ALL && index == lr->extend_index)
            lr->extended = 1;
    }
    ds_lock_result_free(&r);
}

/* Once per applied batch: answer watches whose token stopped being valid, re-arm the expiry
 * timer (both scan the table). */
static void lock_applied(struct ds_raft_app *app)
{
    check_watches(&app->role);
    schedule_expire(&app->role);
}

/* ------------------------------------------------------------------ leader duties */

static void propose_internal(struct ds_lock_role *lr, struct ds_lock_cmd *c, int op)
{
    int err;
    c->now_ms = wall_ms();
    if (!propose(lr, c, op, NULL, &err) && op == OP_EXPIRE)
        lr->expire_inflight = 0;
}

static void expire_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ds_lock_role *lr = arg;
    if (!lr->is_leader || !lr->extended || lr->expire_inflight)
        return;
    struct ds_lock_cmd c;
    ds_lock_cmd_init(&c, DS_LOCK_CMD_EXPIRE);
    lr->expire_inflight = 1;
    propose_internal(lr, &c, OP_EXPIRE);
}

static void schedule_expire(struct ds_lock_role *lr)
{
    uint64_t deadline;
    if (!lr->is_leader || !lr->extended || lr->expire_inflight ||
        ds_lock_next_deadline(lr->table, &deadline)) {
        evtimer_del(lr->expire_timer);
        return;
    }
    uint64_t now = wall_ms();
    uint64_t ms = deadline > now ? deadline - now : 0;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(lr->expire_timer, &tv);
}

static void fail_local_work(struct ds_lock_role *lr)
{
    /* proposals of a deposed leader may or may not commit: the client must retry */
    for (struct pending *p = lr->pending; p; p = p->next)
        if (p->req) {
            p->req->on_abort = NULL;
            reply_unavailable(p->req, "leadership changed before the request committed; retry "
                                      "(with the same request_id to be safe)");
            p->req = NULL;
        }
    while (lr->readers) {
        struct reader *rd = lr->readers;
        lr->readers = rd->next;
        if (rd->req) {
            rd->req->on_abort = NULL;
            reply_unavailable(rd->req, "leadership changed during the read; retry");
        }
        free(rd);
    }
}

static void lock_state_changed(struct ds_raft_app *app, int role, uint64_t term, uint64_t leader)
{
    (void)leader;
    struct ds_lock_role *lr = &app->role;
    int now_leader = role == DS_RAFT_LEADER;
    if (lr->is_leader && (!now_leader || term != lr->term))
        fail_local_work(lr);
    if (now_leader && (!lr->is_leader || term != lr->term)) {
        /* inherited leases: extend them by one election timeout + skew before expiring any */
        lr->is_leader = 1;
        lr->term = term;
        lr->extended = 0;
        lr->expire_inflight = 0;
        struct ds_lock_cmd c;
        ds_lock_cmd_init(&c, DS_LOCK_CMD_EXTEND_ALL);
        uint64_t extra = lr->node->cfg->election_max_ms + lr->node->cfg->clock_skew_ms;
        c.extra_ms = extra < DS_LOCK_EXTEND_MAX_MS ? extra : DS_LOCK_EXTEND_MAX_MS;
        int err;
        c.now_ms = wall_ms();
        struct pending *p = propose(lr, &c, OP_EXTEND, NULL, &err);
        lr->extend_index = p ? p->index : 0;
    }
    lr->is_leader = now_leader;
    lr->term = term;
    schedule_expire(lr);
}

/* ------------------------------------------------------------------ cancels of abandoned waits */

static void cancel_sent(int status, const char *body, size_t len, void *arg)
{
    (void)status;
    (void)body;
    (void)len;
    (void)arg; /* the housekeeping timer retries until the table shows the wait gone */
}

/* Leader: propose; follower: ask the leader through the peer route. */
static void propose_or_forward(struct ds_lock_role *lr, struct ds_lock_cmd *c)
{
    if (lr->is_leader) {
        propose_internal(lr, c, c->type == DS_LOCK_CMD_CANCEL_WAIT ? OP_CANCEL : OP_RELEASE);
        return;
    }
    const char *url = ds_raft_node_leader_url(lr->rn);
    struct ds_peer *peer = url && lr->node->peers ? ds_peer_get(lr->node->peers, url) : NULL;
    uint8_t *buf;
    size_t len;
    if (!peer || ds_lock_cmd_encode(c, &buf, &len))
        return;
    ds_peer_request(peer, "POST", "/lock/internal/propose", "application/octet-stream", buf, len,
                    2000, cancel_sent, NULL);
    free(buf);
}

/* Drive every abandoned (resource, client) to "neither waiting nor holding a grant it got after
 * being abandoned", retrying through whoever leads. */
static void housekeeping_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ds_lock_role *lr = arg;
    uint64_t now = ds_node_now_ms();
    for (struct abandoned **pp = &lr->abandoned; *pp;) {
        struct abandoned *a = *pp;
        struct ds_lock_list holders = {0}, waiters = {0};
        uint8_t mode;
        int waiting = 0;
        uint64_t stray_token = 0;
        if (ds_lock_query(lr->table, a->resource, &mode, &holders, &waiters) == 0) {
            for (size_t i = 0; i < waiters.n; i++)
                waiting |= strcmp(waiters.v[i].client_id, a->client) == 0;
            for (size_t i = 0; i < holders.n; i++)
                if (strcmp(holders.v[i].client_id, a->client) == 0 &&
                    holders.v[i].token >= a->min_token)
                    stray_token = holders.v[i].token;
        }
        ds_lock_list_free(&holders);
        ds_lock_list_free(&waiters);
        a->seen |= waiting || stray_token;
        if (!waiting && !stray_token) {
            if (a->seen || now >= a->until_ms) { /* done, or the wait never reached the log */
                *pp = a->next;
                free(a);
            } else {
                pp = &a->next;
            }
            continue;
        }
        if (now >= a->next_try_ms && ds_raft_node_leader_name(lr->rn)) {
            a->next_try_ms = now + ABANDON_RETRY_MS * 5;
            struct ds_lock_cmd c;
            ds_lock_cmd_init(&c, waiting ? DS_LOCK_CMD_CANCEL_WAIT : DS_LOCK_CMD_RELEASE);
            snprintf(c.resource, sizeof c.resource, "%s", a->resource);
            snprintf(c.client_id, sizeof c.client_id, "%s", a->client);
            c.token = waiting ? 0 : stray_token;
            propose_or_forward(lr, &c);
        }
        pp = &a->next;
    }
}

static void internal_propose_route(struct ds_http_req *req)
{
    struct ds_lock_role *lr = req->ctx;
    struct ds_lock_cmd c;
    if (ds_lock_cmd_decode((const uint8_t *)req->body, req->body_len, &c) ||
        (c.type != DS_LOCK_CMD_CANCEL_WAIT && c.type != DS_LOCK_CMD_RELEASE)) {
        ds_http_reply_error(req, 400, "bad_request", "not a cancel or release command");
        return;
    }
    if (!lr->is_leader) {
        reply_unavailable(req, "not the leader");
        return;
    }
    propose_internal(lr, &c, c.type == DS_LOCK_CMD_CANCEL_WAIT ? OP_CANCEL : OP_RELEASE);
    ds_http_reply(req, 202, "application/json", "{}", 2);
}

/* ------------------------------------------------------------------ forwarding to the leader */

static void forward_done(int status, const char *body, size_t len, void *arg)
{
    struct forward *f = arg;
    if (f->req) {
        f->req->on_abort = NULL;
        const char *leader = ds_raft_node_leader_name(f->role->rn);
        if (leader)
            ds_http_add_header(f->req, "X-Dsync-Leader", leader);
        if (status == 0)
            reply_unavailable(f->req, "the leader did not answer; retry");
        else
            ds_http_reply(f->req, status, "application/json", body, len);
    } else if (f->acquire_wait && status == 200) {
        abandon(f->role, f->resource, f->client);
    }
    free(f);
}

static void forward_abort(struct ds_http_req *req, void *arg)
{
    (void)req;
    struct forward *f = arg;
    f->req = NULL;
    if (f->acquire_wait)
        abandon(f->role, f->resource, f->client);
}

/* Not the leader: send the request to it and relay its answer.  Returns 1 when handled. */
static int forward(struct ds_lock_role *lr, struct ds_http_req *req, uint64_t wait_ms,
                   const char *res, const char *client)
{
    if (lr->is_leader)
        return 0;
    const char *url = ds_raft_node_leader_url(lr->rn);
    if (!url || !lr->node->peers) {
        reply_unavailable(req, "no leader is known yet");
        return 1;
    }
    struct ds_peer *peer = ds_peer_get_idle(lr->node->peers, url);
    struct forward *f = peer ? calloc(1, sizeof *f) : NULL;
    if (!f) {
        reply_unavailable(req, "too many requests forwarded to the leader");
        return 1;
    }
    f->role = lr;
    f->req = req;
    f->acquire_wait = wait_ms > 0;
    snprintf(f->resource, sizeof f->resource, "%s", res ? res : "");
    snprintf(f->client, sizeof f->client, "%s", client ? client : "");
    char target[2400];
    int n = ds_http_forward_target(req, target, sizeof target);
    if (n < 0) {
        free(f);
        ds_http_reply_error(req, 414, "uri_too_long", "the request target is too long to forward");
        return 1;
    }
    if ((size_t)n < sizeof target - 80) {
        /* the wait is measured from this node's arrival, not from when the leader reads it (a
         * request can sit in a paused leader's socket buffer); forwarded_at_ms lets the leader
         * refuse a request this node has already answered 503 for */
        uint64_t spent = (now_ns_mono() - req->start_ns) / 1000000u;
        snprintf(target + n, sizeof target - (size_t)n,
                 "&wait_until_ms=%" PRIu64 "&forwarded_at_ms=%" PRIu64,
                 wall_ms() + (wait_ms > spent ? wait_ms - spent : 0), wall_ms() - spent);
    }
    if (ds_peer_request(peer, ds_http_method_name(req->head.method), target, "application/json",
                        req->body, req->body_len, wait_ms + FORWARD_SLACK_MS, forward_done, f)) {
        free(f);
        reply_unavailable(req, "cannot reach the leader");
        return 1;
    }
    req->on_abort = forward_abort;
    req->abort_arg = f;
    return 1;
}

/* ------------------------------------------------------------------ handlers */

static void pending_abort(struct ds_http_req *req, void *arg)
{
    (void)req;
    struct pending *p = arg;
    p->req = NULL;
}

static int parse_body(struct ds_http_req *req, const char *const *fields, cJSON **o)
{
    char err[DS_JSON_ERR_MAX];
    if (ds_json_parse_object(req->body, req->body_len, o, err) ||
        ds_json_only_fields(*o, fields, err)) {
        if (*o)
            cJSON_Delete(*o);
        *o = NULL;
        ds_http_reply_error(req, 400, "bad_request", "%s", err);
        return -1;
    }
    return 0;
}

static void submit(struct ds_lock_role *lr, struct ds_http_req *req, struct ds_lock_cmd *c,
                   int op, uint64_t wait_ms)
{
    c->now_ms = wall_ms();
    int err;
    struct pending *p = propose(lr, c, op, req, &err);
    if (!p) {
        if (err == DS_RAFT_ENOTLEADER || err == DS_RAFT_EBUSY)
            reply_unavailable(req, "no leader can take the request right now; retry");
        else
            ds_http_reply_error(req, err == DS_LOCK_EINVAL ? 400 : 503,
                                err == DS_LOCK_EINVAL ? "bad_request" : "unavailable",
                                "cannot propose: %s", err == DS_LOCK_EINVAL ? "invalid field" :
                                                                              "out of memory");
        return;
    }
    p->wait_ms = wait_ms;
    req->on_abort = pending_abort;
    req->abort_arg = p;
}

/* A forwarded request the forwarding node has already given up on (it answered 503 after
 * wait + FORWARD_SLACK_MS): acting on it now would grant or renew behind the client's back.
 * Answers 503 and returns 1 then. */
static int forwarded_too_late(struct ds_lock_role *lr, struct ds_http_req *req, uint64_t wait_ms)
{
    char q[32];
    uint64_t at;
    if (ds_http_query(req, "forwarded_at_ms", q, sizeof q) != 1 || ds_parse_u64(q, &at))
        return 0;
    uint64_t limit = at + wait_ms + FORWARD_SLACK_MS;
    uint64_t skew = lr->node->cfg->clock_skew_ms;
    if (wall_ms() + skew <= limit)
        return 0;
    reply_unavailable(req, "the forwarded request arrived after the forwarding node gave up on it");
    return 1;
}

/* The audit parameters {"resource":..,"client_id":..<tail>: the client's strings JSON-escaped
 * (a quote in a resource name must not end the string or add fields) and cut at 150 bytes on a
 * character boundary. */
static void audit_params(struct ds_http_req *req, const char *res, const char *client,
                         const char *tail)
{
    struct ds_buf b = {0};
    const char *names[] = {"{\"resource\":", ",\"client_id\":"}, *vals[] = {res, client};
    for (int i = 0; i < 2; i++) {
        char cut[151];
        size_t n = strlen(vals[i]);
        if (n > 150) {
            n = 150;
            while (n && ((unsigned char)vals[i][n] & 0xC0) == 0x80)
                n--;
        }
        memcpy(cut, vals[i], n);
        cut[n] = '\0';
        ds_buf_add(&b, names[i], strlen(names[i]));
        ds_json_put_str(&b, cut);
    }
    ds_buf_add(&b, tail, strlen(tail));
    req->audit_params[0] = '\0';
    if (!b.oom && b.len < sizeof req->audit_params)
        memcpy(req->audit_params, b.p, b.len + 1);
    ds_buf_free(&b);
}

/* ---- request bodies: a fast path for the usual shape, cJSON for the rest ---- */

/* One field of a flat request object: a string decoded into buf (cap bytes with the NUL), or,
 * with buf NULL, a plain integer. */
struct fast_val {
    const char *name;
    char *buf;
    size_t cap;
    uint64_t num;
    int present;
};

/* Decodes a flat JSON object whose members are each one of vals' names, at most once, with a
 * string value of 1 to cap - 1 bytes (no NUL) for a string field or digits (no sign, fraction,
 * exponent or leading zero; at most 15, so below 2^53) for a number field.  0 on success; -1 for
 * anything else, where the caller takes the cJSON path, which names what is wrong.  Whatever it
 * accepts, the cJSON path accepts with the same values (jscan decodes strings as cJSON does:
 * t/fuzz/fuzz_jscan.c). */
static int fast_object(const char *body, size_t len, struct fast_val *vals, int n)
{
    const char *p = body, *end = body + len;
    if (!ds_utf8_valid(body, len))
        return -1;
    p = ds_js_ws(p, end);
    if (p >= end || *p != '{')
        return -1;
    p = ds_js_ws(p + 1, end);
    while (p < end && *p != '}') {
        char key[24];
        size_t klen;
        int k = 0;
        if (*p != '"' || ds_js_string(p, end, key, sizeof key, &klen, &p) != DS_JS_OK)
            return -1;
        while (k < n && strcmp(vals[k].name, key) != 0)
            k++;
        if (k == n || vals[k].present)
            return -1;
        p = ds_js_ws(p, end);
        if (p >= end || *p != ':')
            return -1;
        p = ds_js_ws(p + 1, end);
        if (p >= end)
            return -1;
        struct fast_val *v = &vals[k];
        if (v->buf) {
            size_t l;
            if (*p != '"' || ds_js_string(p, end, v->buf, v->cap, &l, &p) != DS_JS_OK || l == 0)
                return -1;
        } else {
            uint64_t x = 0;
            int digits = 0;
            if (*p == '0' && p + 1 < end && p[1] >= '0' && p[1] <= '9')
                return -1;
            for (; p < end && *p >= '0' && *p <= '9'; p++) {
                if (++digits > 15)
                    return -1;
                x = x * 10 + (uint64_t)(*p - '0');
            }
            if (!digits || (p < end && (*p == '.' || *p == 'e' || *p == 'E')))
                return -1;
            v->num = x;
        }
        v->present = 1;
        p = ds_js_ws(p, end);
        if (p < end && *p == ',') {
            p = ds_js_ws(p + 1, end);
            if (p < end && *p == '}')
                return -1; /* a trailing comma */
        } else if (p >= end || *p != '}') {
            return -1;
        }
    }
    if (p >= end)
        return -1;
    return ds_js_ws(p + 1, end) == end ? 0 : -1;
}

/* An acquire, release or renew request's fields. */
struct lock_req {
    char res[DS_LOCK_NAME_MAX + 1], client[DS_LOCK_NAME_MAX + 1], mode[17];
    char rid[DS_LOCK_REQUEST_ID_MAX + 1];
    uint64_t ttl, wait, token;
};

/* The cJSON path of acquire (acquire = 1) or of release and renew: 0 with q filled, or -1 after
 * answering 400 (fields checked in the order the route lists them, as the messages name them). */
static int slow_decode(struct ds_http_req *req, struct lock_req *q, int acquire)
{
    static const char *const acquire_fields[] = {"resource", "client_id", "mode", "ttl_ms",
                                                 "wait_ms", "request_id", NULL};
    static const char *const release_fields[] = {"resource", "client_id", "token", "ttl_ms",
                                                 "request_id", NULL};
    cJSON *o;
    if (parse_body(req, acquire ? acquire_fields : release_fields, &o))
        return -1;
    char err[DS_JSON_ERR_MAX];
    const char *res = NULL, *client = NULL, *mode = "exclusive", *rid = NULL;
    int bad = ds_json_get_str(o, "resource", true, DS_LOCK_NAME_MAX, &res, err) ||
              ds_json_get_str(o, "client_id", true, DS_LOCK_NAME_MAX, &client, err);
    if (!bad && acquire)
        bad = ds_json_get_str(o, "mode", false, 16, &mode, err);
    if (!bad && !acquire)
        bad = ds_json_get_u64(o, "token", true, 1, UINT64_MAX, &q->token, err);
    bad = bad || ds_json_get_u64(o, "ttl_ms", false, DS_LOCK_TTL_MIN_MS, DS_LOCK_TTL_MAX_MS,
                                 &q->ttl, err);
    if (!bad && acquire)
        bad = ds_json_get_u64(o, "wait_ms", false, 0, MAX_WAIT_MS, &q->wait, err);
    bad = bad || ds_json_get_str(o, "request_id", false, DS_LOCK_REQUEST_ID_MAX, &rid, err);
    if (bad) {
        ds_http_reply_error(req, 400, "bad_request", "%s", err);
        cJSON_Delete(o);
        return -1;
    }
    copy_str(q->res, sizeof q->res, res);
    copy_str(q->client, sizeof q->client, client);
    copy_str(q->mode, sizeof q->mode, mode);
    copy_str(q->rid, sizeof q->rid, rid ? rid : "");
    cJSON_Delete(o);
    return 0;
}

static int decode_acquire(struct ds_http_req *req, struct lock_req *q)
{
    q->ttl = 30000;
    q->wait = 0;
    q->rid[0] = 0;
    struct fast_val v[] = {{"resource", q->res, sizeof q->res, 0, 0},
                           {"client_id", q->client, sizeof q->client, 0, 0},
                           {"mode", q->mode, sizeof q->mode, 0, 0},
                           {"ttl_ms", NULL, 0, 0, 0},
                           {"wait_ms", NULL, 0, 0, 0},
                           {"request_id", q->rid, sizeof q->rid, 0, 0}};
    if (fast_object(req->body, req->body_len, v, 6) == 0 && v[0].present && v[1].present &&
        (!v[3].present || (v[3].num >= DS_LOCK_TTL_MIN_MS && v[3].num <= DS_LOCK_TTL_MAX_MS)) &&
        (!v[4].present || v[4].num <= MAX_WAIT_MS)) {
        if (!v[2].present)
            copy_str(q->mode, sizeof q->mode, "exclusive");
        if (v[3].present)
            q->ttl = v[3].num;
        if (v[4].present)
            q->wait = v[4].num;
        return 0;
    }
    return slow_decode(req, q, 1); /* it sets every field the fast path may have half written */
}

static void acquire_route(struct ds_http_req *req)
{
    struct ds_lock_role *lr = req->ctx;
    struct lock_req q;
    if (decode_acquire(req, &q))
        return;
    uint64_t ttl = q.ttl, wait = q.wait;
    int m = strcmp(q.mode, "exclusive") == 0 ? DS_LOCK_EXCLUSIVE
            : strcmp(q.mode, "shared") == 0  ? DS_LOCK_SHARED
                                             : 0;
    if (!m) {
        ds_http_reply_error(req, 400, "bad_request", "field 'mode' must be exclusive or shared");
        return;
    }
    char tail[96];
    snprintf(tail, sizeof tail, ",\"mode\":\"%s\",\"ttl_ms\":%" PRIu64 ",\"wait_ms\":%" PRIu64 "}",
             q.mode, ttl, wait);
    audit_params(req, q.res, q.client, tail);
    char owner[DS_LOCK_NAME_MAX + 1];
    if (ds_http_authorize_name(req, "resource", q.res) || owner_id(req, q.client, owner))
        return;
    if (!forward(lr, req, wait, q.res, owner) && !forwarded_too_late(lr, req, wait)) {
        struct ds_lock_cmd c;
        ds_lock_cmd_init(&c, DS_LOCK_CMD_ACQUIRE);
        c.mode = (uint8_t)m;
        /* the table ends the wait at the leader's now + wait_ms: give it what is left, from this
         * node's arrival or a forwarding node's (wait_until_ms, its wall clock) */
        uint64_t spent = (uint64_t)((now_ns_mono() - req->start_ns) / 1000000u);
        uint64_t left = wait > spent ? wait - spent : 0, until;
        char qs[32];
        if (ds_http_query(req, "wait_until_ms", qs, sizeof qs) == 1 && !ds_parse_u64(qs, &until)) {
            uint64_t now = wall_ms();
            left = until > now ? (until - now < left ? until - now : left) : 0;
        }
        c.wait_ms = (uint32_t)left;
        c.ttl_ms = (uint32_t)ttl;
        copy_str(c.resource, sizeof c.resource, q.res);
        copy_str(c.client_id, sizeof c.client_id, owner);
        copy_str(c.request_id, sizeof c.request_id, q.rid);
        submit(lr, req, &c, OP_ACQUIRE, c.wait_ms);
    }
}

static int decode_release(struct ds_http_req *req, struct lock_req *q)
{
    q->ttl = 30000;
    q->token = 0;
    q->rid[0] = 0;
    struct fast_val v[] = {{"resource", q->res, sizeof q->res, 0, 0},
                           {"client_id", q->client, sizeof q->client, 0, 0},
                           {"token", NULL, 0, 0, 0},
                           {"ttl_ms", NULL, 0, 0, 0},
                           {"request_id", q->rid, sizeof q->rid, 0, 0}};
    if (fast_object(req->body, req->body_len, v, 5) == 0 && v[0].present && v[1].present &&
        v[2].present && v[2].num >= 1 &&
        (!v[3].present || (v[3].num >= DS_LOCK_TTL_MIN_MS && v[3].num <= DS_LOCK_TTL_MAX_MS))) {
        q->token = v[2].num;
        if (v[3].present)
            q->ttl = v[3].num;
        return 0;
    }
    return slow_decode(req, q, 0); /* it sets every field the fast path may have half written */
}

/* release and renew: {"resource","client_id","token"[,"ttl_ms"][,"request_id"]} */
static void release_or_renew(struct ds_http_req *req, int type)
{
    struct ds_lock_role *lr = req->ctx;
    struct lock_req q;
    if (decode_release(req, &q))
        return;
    char tail[48];
    snprintf(tail, sizeof tail, ",\"token\":%" PRIu64 "}", q.token);
    audit_params(req, q.res, q.client, tail);
    char owner[DS_LOCK_NAME_MAX + 1];
    if (ds_http_authorize_name(req, "resource", q.res) || owner_id(req, q.client, owner))
        return;
    if (!forward(lr, req, 0, NULL, NULL) && !forwarded_too_late(lr, req, 0) &&
        !held_by_other(lr, req, q.res, q.token)) {
        struct ds_lock_cmd c;
        ds_lock_cmd_init(&c, type);
        c.token = q.token;
        copy_str(c.resource, sizeof c.resource, q.res);
        copy_str(c.client_id, sizeof c.client_id, owner);
        if (type == DS_LOCK_CMD_RENEW)
            c.ttl_ms = (uint32_t)q.ttl;
        else
            copy_str(c.request_id, sizeof c.request_id, q.rid);
        submit(lr, req, &c, type == DS_LOCK_CMD_RENEW ? OP_RENEW : OP_RELEASE, 0);
    }
}

static void release_route(struct ds_http_req *req)
{
    release_or_renew(req, DS_LOCK_CMD_RELEASE);
}

static void renew_route(struct ds_http_req *req)
{
    release_or_renew(req, DS_LOCK_CMD_RENEW);
}

/* ---- linearizable reads: ReadIndex on the leader, then answer from the applied table */

static void answer_read(struct ds_lock_role *lr, struct ds_http_req *req, const char *res,
                        uint64_t check_token)
{
    cJSON *o = cJSON_CreateObject();
    if (check_token) {
        cJSON_AddStringToObject(o, "resource", res);
        add_token(o, "token", check_token);
        cJSON_AddBoolToObject(o, "valid", ds_lock_check(lr->table, res, check_token));
        reply_obj(req, 200, o);
        return;
    }
    struct ds_lock_list holders = {0}, waiters = {0};
    if (res[0]) {
        uint8_t mode = 0;
        int rv = ds_lock_query(lr->table, res, &mode, &holders, &waiters);
        cJSON_AddStringToObject(o, "resource", res);
        if (rv == DS_LOCK_ENOMEM) {
            cJSON_Delete(o);
            reply_unavailable(req, "out of memory");
            return;
        }
        if (mode)
            cJSON_AddStringToObject(o, "mode", ds_lock_mode_name(mode));
        else
            cJSON_AddNullToObject(o, "mode");
        cJSON_AddItemToObject(o, "holders", entries_json(&holders, 1));
        cJSON_AddItemToObject(o, "waiters", entries_json(&waiters, 0));
    } else {
        if (ds_lock_list_held(lr->table, &holders)) {
            cJSON_Delete(o);
            reply_unavailable(req, "out of memory");
            return;
        }
        cJSON *a = cJSON_AddArrayToObject(o, "locks");
        for (size_t i = 0; i < holders.n; i++) {
            if (!ds_authz_in_scope(req->scope, holders.v[i].resource))
                continue; /* a scoped identity sees only its own names */
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "resource", holders.v[i].resource);
            add_client(x, holders.v[i].client_id);
            cJSON_AddStringToObject(x, "mode", ds_lock_mode_name(holders.v[i].mode));
            add_token(x, "token", holders.v[i].token);
            cJSON_AddNumberToObject(x, "lease_expires_at_ms", (double)holders.v[i].deadline_ms);
            cJSON_AddItemToArray(a, x);
        }
    }
    ds_lock_list_free(&holders);
    ds_lock_list_free(&waiters);
    add_token(o, "next_token", ds_lock_next_token(lr->table));
    reply_obj(req, 200, o);
}

static void reader_abort(struct ds_http_req *req, void *arg)
{
    (void)req;
    struct reader *rd = arg;
    rd->req = NULL;
}

static void start_read(struct ds_lock_role *lr, struct ds_http_req *req, const char *res,
                       uint64_t check_token)
{
    if (forward(lr, req, 0, NULL, NULL))
        return;
    struct reader *rd = calloc(1, sizeof *rd);
    if (!rd) {
        reply_unavailable(req, "out of memory");
        return;
    }
    rd->ctx = ++lr->read_seq;
    rd->req = req;
    rd->check_token = check_token;
    snprintf(rd->resource, sizeof rd->resource, "%s", res);
    if (ds_raft_node_read(lr->rn, rd->ctx)) {
        free(rd);
        reply_unavailable(req, "no leader can serve the read right now; retry");
        return;
    }
    rd->next = lr->readers;
    lr->readers = rd;
    req->on_abort = reader_abort;
    req->abort_arg = rd;
}

static void lock_read_done(struct ds_raft_app *app, uint64_t ctx, int ok)
{
    struct ds_lock_role *lr = &app->role;
    for (struct reader **pp = &lr->readers; *pp; pp = &(*pp)->next) {
        struct reader *rd = *pp;
        if (rd->ctx != ctx)
            continue;
        *pp = rd->next;
        if (rd->req) {
            rd->req->on_abort = NULL;
            if (ok)
                answer_read(lr, rd->req, rd->resource, rd->check_token);
            else
                reply_unavailable(rd->req, "leadership changed during the read; retry");
        }
        free(rd);
        return;
    }
}

static void get_one_route(struct ds_http_req *req)
{
    if (!ds_http_authorize_name(req, "resource", req->match.params[0]))
        start_read(req->ctx, req, req->match.params[0], 0);
}

static void get_all_route(struct ds_http_req *req)
{
    start_read(req->ctx, req, "", 0);
}

/* POST /lock/check {"resource","token"}: is token the current holder's?  A linearizable read
 * (ReadIndex on the leader; followers forward), so a deposed leader cannot vouch for a token. */
static void check_route(struct ds_http_req *req)
{
    struct ds_lock_role *lr = req->ctx;
    static const char *const fields[] = {"resource", "token", NULL};
    cJSON *o;
    if (parse_body(req, fields, &o))
        return;
    char err[DS_JSON_ERR_MAX];
    const char *res = NULL;
    uint64_t token = 0;
    if (ds_json_get_str(o, "resource", true, DS_LOCK_NAME_MAX, &res, err) ||
        ds_json_get_u64(o, "token", true, 1, UINT64_MAX, &token, err)) {
        ds_http_reply_error(req, 400, "bad_request", "%s", err);
        cJSON_Delete(o);
        return;
    }
    if (!ds_http_authorize_name(req, "resource", res))
        start_read(lr, req, res, token);
    cJSON_Delete(o);
}

static void watch_free(struct ds_lock_role *lr, struct watch *w)
{
    for (struct watch **pp = &lr->watches; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    if (w->timer)
        event_free(w->timer);
    free(w);
}

static void watch_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct watch *w = arg;
    struct ds_lock_role *lr = w->role;
    w->req->on_abort = NULL;
    if (!token_applied(lr, w->token)) {
        reply_unavailable(w->req, "this node has not applied the grant of this token yet");
        watch_free(lr, w);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "resource", w->resource);
    add_token(o, "token", w->token);
    cJSON_AddBoolToObject(o, "valid", ds_lock_check(lr->table, w->resource, w->token));
    reply_obj(w->req, 200, o);
    watch_free(lr, w);
}

static void watch_abort(struct ds_http_req *req, void *arg)
{
    (void)req;
    struct watch *w = arg;
    watch_free(w->role, w);
}

/* GET /lock/{resource}/watch?token=T&wait_ms=N: answers {"valid":false} as soon as this node
 * applies the entry that ends token T (release, expiry, supersession), or the current answer
 * when wait_ms runs out.  Any node serves it from its own applied state; a node that has not
 * applied T's grant yet waits for it (503 if wait_ms runs out first), never calling T invalid. */
static void watch_route(struct ds_http_req *req)
{
    struct ds_lock_role *lr = req->ctx;
    char tok[32], wait[32];
    uint64_t token = 0, wait_ms = 30000;
    if (ds_http_query(req, "token", tok, sizeof tok) != 1 || ds_parse_u64(tok, &token) ||
        token == 0) {
        ds_http_reply_error(req, 400, "bad_request", "query parameter 'token' must be a positive "
                                                     "whole number");
        return;
    }
    int has_wait = ds_http_query(req, "wait_ms", wait, sizeof wait);
    if (has_wait < 0 || (has_wait == 1 && (ds_parse_u64(wait, &wait_ms) || wait_ms > MAX_WAIT_MS))) {
        ds_http_reply_error(req, 400, "bad_request",
                            "query parameter 'wait_ms' must be 0..%u", MAX_WAIT_MS);
        return;
    }
    if (ds_http_authorize_name(req, "resource", req->match.params[0]) ||
        held_by_other(lr, req, req->match.params[0], token))
        return;
    struct watch *w = calloc(1, sizeof *w);
    if (!w) {
        reply_unavailable(req, "out of memory");
        return;
    }
    w->role = lr;
    w->req = req;
    w->token = token;
    snprintf(w->resource, sizeof w->resource, "%s", req->match.params[0]);
    w->timer = evtimer_new(lr->node->base, watch_timeout, w);
    if (!w->timer) {
        free(w);
        reply_unavailable(req, "out of memory");
        return;
    }
    w->next = lr->watches;
    lr->watches = w;
    req->on_abort = watch_abort;
    req->abort_arg = w;
    if (token_applied(lr, token) && !ds_lock_check(lr->table, w->resource, token)) {
        check_watches(lr);
        return;
    }
    struct timeval tv = {(time_t)(wait_ms / 1000), (suseconds_t)(wait_ms % 1000) * 1000};
    evtimer_add(w->timer, &tv);
}

/* ------------------------------------------------------------------ snapshots */

static int lock_snapshot(struct ds_raft_app *app, uint8_t **data, size_t *len)
{
    return ds_lock_snapshot(app->role.table, data, len) ? ENOMEM : 0;
}

static int lock_restore(struct ds_raft_app *app, const uint8_t *data, size_t len)
{
    struct ds_lock_table *t;
    if (ds_lock_restore(data, len, &t))
        return EINVAL;
    ds_lock_table_free(app->role.table);
    app->role.table = t;
    return 0;
}

static const struct ds_raft_app_ops app_ops = {
    .apply = lock_apply,
    .applied = lock_applied,
    .snapshot = lock_snapshot,
    .restore = lock_restore,
    .state_changed = lock_state_changed,
    .read_done = lock_read_done,
};

/* ------------------------------------------------------------------ metrics */

#define STAT_READER(field)                                                                        \
    static double read_##field(void *arg)                                                         \
    {                                                                                             \
        struct ds_lock_stats s;                                                                   \
        ds_lock_stats(((struct ds_lock_role *)arg)->table, &s);                                   \
        return (double)s.field;                                                                   \
    }
STAT_READER(held_exclusive)
STAT_READER(held_shared)
STAT_READER(waiters)
STAT_READER(grants)
STAT_READER(releases)
STAT_READER(expiries)
STAT_READER(deadlocks)
STAT_READER(wait_timeouts)

static int register_metrics(struct ds_lock_role *lr)
{
    static const struct {
        int counter;
        const char *name, *help, *labels;
        double (*read)(void *);
    } table[] = {
        {0, "dsyncd_lock_held", "Locks held, by mode", "mode=\"exclusive\"", read_held_exclusive},
        {0, "dsyncd_lock_held", "Locks held, by mode", "mode=\"shared\"", read_held_shared},
        {0, "dsyncd_lock_waiters", "Requests queued for a lock", "", read_waiters},
        {1, "dsyncd_lock_grants_total", "Grants applied by this replica", "", read_grants},
        {1, "dsyncd_lock_releases_total", "Releases applied by this replica", "", read_releases},
        {1, "dsyncd_lock_expiries_total", "Leases expired, applied by this replica", "",
         read_expiries},
        {1, "dsyncd_lock_deadlocks_total", "Acquires refused because they closed a cycle", "",
         read_deadlocks},
        {1, "dsyncd_lock_wait_timeouts_total", "Waits that ended without a grant", "",
         read_wait_timeouts},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        struct ds_metric *m = table[i].counter
                                  ? ds_metrics_counter(lr->node->metrics, table[i].name,
                                                       table[i].help, table[i].labels)
                                  : ds_metrics_gauge(lr->node->metrics, table[i].name,
                                                     table[i].help, table[i].labels);
        if (!m)
            return ENOMEM;
        m->read = table[i].read;
        m->read_arg = lr;
    }
    lr->m_wait = ds_metrics_histogram(lr->node->metrics, "dsyncd_lock_wait_seconds",
                                      "Time queued before a grant or a wait timeout", "",
                                      ds_metrics_latency_bounds, ds_metrics_latency_nbounds);
    return lr->m_wait ? 0 : ENOMEM;
}

/* ------------------------------------------------------------------ role plug-in */

static int lock_start(struct ds_node *node, char *err)
{
    struct ds_raft_app *app = calloc(1, sizeof *app);
    if (!app) {
        snprintf(err, 512, "out of memory");
        return ENOMEM;
    }
    struct ds_lock_role *lr = &app->role;
    node->lock = lr;
    lr->node = node;
    lr->pending_tail = &lr->pending;
    lr->table = ds_lock_table_new();
    lr->expire_timer = evtimer_new(node->base, expire_cb, lr);
    lr->housekeeping = event_new(node->base, -1, EV_PERSIST, housekeeping_cb, lr);
    struct timeval hk = {0, ABANDON_RETRY_MS * 1000};
    if (!lr->table || !lr->expire_timer || !lr->housekeeping || evtimer_add(lr->housekeeping, &hk) ||
        register_metrics(lr)) {
        snprintf(err, 512, "out of memory");
        return ENOMEM;
    }
    bound_ids = ds_server_auth_on(node->server);
    int rv = ds_raft_node_start(node, &app_ops, app, &lr->rn, err);
    if (rv)
        return rv;
    static const struct {
        unsigned methods;
        const char *pattern;
        ds_route_fn *fn;
        unsigned flags;
    } routes[] = {
        {DS_HTTP_POST, "/lock/acquire", acquire_route, DS_ROUTE_MUTATING},
        {DS_HTTP_POST, "/lock/release", release_route, DS_ROUTE_MUTATING},
        {DS_HTTP_POST, "/lock/renew", renew_route, DS_ROUTE_MUTATING},
        {DS_HTTP_POST, "/lock/check", check_route, DS_ROUTE_WRITE},
        {DS_HTTP_GET, "/lock", get_all_route, 0},
        {DS_HTTP_GET, "/lock/{resource}", get_one_route, 0},
        {DS_HTTP_GET, "/lock/{resource}/watch", watch_route, 0},
        {DS_HTTP_POST, "/lock/internal/propose", internal_propose_route, DS_ROUTE_PEER},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (ds_server_route(node->server, routes[i].methods, routes[i].pattern, routes[i].fn,
                            routes[i].flags, lr)) {
            snprintf(err, 512, "out of memory");
            return ENOMEM;
        }
    return 0;
}

static int lock_ready(struct ds_node *node, const char **reason)
{
    struct ds_lock_role *lr = node->lock;
    if (lr->is_leader || ds_raft_node_leader_name(lr->rn))
        return 1;
    *reason = "no Raft leader is known yet";
    return 0;
}

static void lock_status(struct ds_node *node, cJSON *out)
{
    struct ds_lock_role *lr = node->lock;
    cJSON *raft = cJSON_AddObjectToObject(out, "raft");
    ds_raft_node_status(lr->rn, raft);
    struct ds_lock_stats s;
    ds_lock_stats(lr->table, &s);
    cJSON_AddNumberToObject(out, "resources", (double)s.resources);
    cJSON_AddNumberToObject(out, "held_exclusive", (double)s.held_exclusive);
    cJSON_AddNumberToObject(out, "held_shared", (double)s.held_shared);
    cJSON_AddNumberToObject(out, "waiters", (double)s.waiters);
}

static void (*stop_done)(struct ds_node *);
static struct ds_node *stop_node;

static void raft_stopped(void *arg)
{
    (void)arg;
    stop_done(stop_node);
}

static void lock_stop(struct ds_node *node, void (*done)(struct ds_node *))
{
    stop_done = done;
    stop_node = node;
    ds_raft_node_stop(node->lock->rn, raft_stopped, NULL);
}

static void lock_free(struct ds_node *node)
{
    struct ds_lock_role *lr = node->lock;
    if (!lr)
        return;
    while (lr->pending) {
        struct pending *p = lr->pending;
        lr->pending = p->next;
        free(p);
    }
    while (lr->waiters)
        waiter_free(lr, lr->waiters);
    while (lr->watches)
        watch_free(lr, lr->watches);
    while (lr->abandoned) {
        struct abandoned *a = lr->abandoned;
        lr->abandoned = a->next;
        free(a);
    }
    while (lr->readers) {
        struct reader *rd = lr->readers;
        lr->readers = rd->next;
        free(rd);
    }
    ds_raft_node_free(lr->rn);
    if (lr->expire_timer)
        event_free(lr->expire_timer);
    if (lr->housekeeping)
        event_free(lr->housekeeping);
    ds_lock_table_free(lr->table);
    free((struct ds_raft_app *)lr);
    node->lock = NULL;
}

const struct ds_role_ops ds_lock_role_ops = {
    .name = "lock",
    .start = lock_start,
    .ready = lock_ready,
    .status = lock_status,
    .stop = lock_stop,
    .free = lock_free,
};
