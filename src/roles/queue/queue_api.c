/* Queue role HTTP API (DESIGN.md §3): produce, consume (long poll), ack, nack and stats over the
 * partition streams of every shard. */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/jscan.h"
#include "core/json.h"
#include "core/node.h"
#include "net/server.h"
#include "roles/queue/qlua.h"
#include "roles/queue/queue_internal.h"
#include "roles/queue/redis.h"

#define BATCH_MAX 1000u        /* messages per produce, ids per ack/nack, max per consume */
#define MSG_KEY_MAX 256u       /* bytes of a message key */
#define DEDUP_MAX 128u         /* bytes of a dedup_id */
#define WAIT_MAX_MS 30000u     /* longest consume long poll */
#define VISIBILITY_MAX_MS 43200000u
#define DELAY_MAX_MS 43200000u
#define POLL_MS 100u /* a long poll looks again this often (at once on a produce, qwatch.c) */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double since_s(uint64_t start_ns)
{
    return (double)(now_ns() - start_ns) / 1e9;
}

static void reply_obj(struct ds_http_req *req, int status, cJSON *o)
{
    if (o)
        ds_http_reply_json(req, status, o);
    else
        ds_http_reply_error(req, 503, "unavailable", "out of memory");
    cJSON_Delete(o);
}

static void reply_unavailable(struct ds_http_req *req, const char *why)
{
    ds_http_add_header(req, "Retry-After", "1");
    ds_http_reply_error(req, 503, "unavailable", "%s", why);
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

/* A name (queue, group, consumer) must be 1..DS_QROUTE_NAME_MAX of [A-Za-z0-9._-] (a queue's
 * keeps room for ".dlq"), and the caller must be allowed the queue. */
static int check_name(struct ds_http_req *req, const char *field, const char *name)
{
    int queue = strcmp(field, "queue") == 0;
    if (!ds_qroute_name_valid(name) || (queue && strlen(name) + 4 > DS_QROUTE_NAME_MAX)) {
        ds_http_reply_error(req, 400, "bad_request",
                            "field '%s' must be 1..%u bytes of letters, digits, '.', '_' or '-'%s",
                            field, DS_QROUTE_NAME_MAX - (queue ? 4 : 0),
                            queue ? " (room is kept for '.dlq')" : "");
        return -1;
    }
    return queue && ds_http_authorize_name(req, "queue", name) ? -1 : 0;
}

/* A required name field of a cJSON-decoded request. */
static int get_name(struct ds_http_req *req, const cJSON *o, const char *field, const char **out)
{
    char err[DS_JSON_ERR_MAX];
    if (ds_json_get_str(o, field, true, DS_QROUTE_NAME_MAX, out, err)) {
        ds_http_reply_error(req, 400, "bad_request", "%s", err);
        return -1;
    }
    return check_name(req, field, *out);
}

/* ------------------------------------------------------------------ identity-bound deliveries
 *
 * With client auth on, a consumer's Redis name is "<identity>~<consumer>@<visibility>" (identity
 * names have no '~', consumer names neither), and an ack or nack of an id that is pending for
 * another identity's consumer is refused (403) unless the caller is admin: the check runs in the
 * same script as the XACK / nack, per stream, so it cannot race a redelivery. */

/* Lua: 1 when an id from ARGV[first] on is pending in group g of k for a consumer whose name does
 * not start with own. */
#define FOREIGN_FN                                                                         \
    "local function foreign(k, g, own, first)\n"                                            \
    "  for i = first, #ARGV do\n"                                                          \
    "    local p = redis.pcall('XPENDING', k, g, ARGV[i], ARGV[i], 1)\n"                    \
    "    if type(p) == 'table' and not p.err and #p == 1 and\n"                             \
    "       string.sub(p[1][2], 1, #own) ~= own then return true end\n"                     \
    "  end\n"                                                                              \
    "  return false\n"                                                                     \
    "end\n"

/* KEYS: stream, owner prefix; ARGV: group, ids...  -1 when an id is another identity's. */
static const char ack_owned_lua[] =
    FOREIGN_FN
    "if foreign(KEYS[1], ARGV[1], KEYS[2], 2) then return -1 end\n"
    "return redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))\n";

/* The nack script of qlua.c behind the same check (owner prefix as KEYS[4]). */
static const char *nack_owned_lua(void)
{
    static char buf[16384];
    if (!buf[0])
        snprintf(buf, sizeof buf, "%s%s%s", FOREIGN_FN,
                 "if foreign(KEYS[1], ARGV[1], KEYS[4], 7) then return -1 end\n", ds_qlua_nack);
    return buf;
}

/* 1 when acks of req must be checked against the consumer's identity. */
static int owner_checked(const struct ds_queue_role *q, const struct ds_http_req *req)
{
    return ds_server_auth_on(q->node->server) && !ds_http_has_role(req, DS_AUTHZ_ADMIN);
}

static void send_argv(struct qshard *s, ds_redis_cb *cb, void *arg, int argc, const char **argv,
                      size_t *lens, int *rv)
{
    for (int i = 0; i < argc; i++)
        if (!lens[i] && argv[i])
            lens[i] = strlen(argv[i]);
    *rv = ds_redis_command(s->r, cb, arg, argc, argv, lens);
}

/* ================================================================== produce
 *
 * The service's hot path.  A produce request is decoded by the JSON scanner (core/jscan.h), not
 * into a cJSON tree: each message body is stored in Redis as the exact JSON text the client sent
 * (checked), with no tree, print or allocation per message, and the answer is written directly. */

struct pmsg {
    struct produce_op *op;
    uint32_t p;
    const char *body;        /* the body's JSON text, in op->text */
    size_t body_len;
    const char *key, *dedup; /* decoded and NUL-terminated in op->text; NULL when absent */
    uint64_t tried;
    struct qshard *shard;
    char id[DS_QROUTE_ID_MAX];
    int dup, ok;
};

struct produce_op {
    struct ds_queue_role *q;
    struct ds_http_req *req; /* NULL once the client went away */
    char *text;              /* a copy of the request body, then its decoded strings */
    char queue[DS_QROUTE_NAME_MAX + 1];
    size_t n, left;
    int single;
    uint64_t start_ns;
    struct pmsg m[];
};

static int send_msg(struct pmsg *m);

static void produce_free(struct produce_op *op)
{
    free(op->text);
    free(op);
}

/* The 201 answer: {"queue":..,["id":..,]"ids":[..],"duplicates":N}.  Queue names and ids are
 * made of characters JSON needs no escape for (ds_qroute_name_valid, ds_qroute_id_parse). */
static void produce_answer(struct produce_op *op, size_t dups)
{
    size_t qlen = strlen(op->queue), cap = qlen + 64 + (op->n + 1) * (DS_QROUTE_ID_MAX + 3);
    char small[4096], *b = cap <= sizeof small ? small : malloc(cap);
    if (!b) {
        reply_unavailable(op->req, "out of memory (the messages were stored)");
        return;
    }
    size_t k = 0;
#define PUT(s, n) (memcpy(b + k, (s), (n)), k += (n))
    PUT("{\"queue\":\"", 10);
    PUT(op->queue, qlen);
    if (op->single) {
        PUT("\",\"id\":\"", 8);
        PUT(op->m[0].id, strlen(op->m[0].id));
    }
    PUT("\",\"ids\":[", 9);
    for (size_t i = 0; i < op->n; i++) {
        if (i)
            PUT(",", 1);
        PUT("\"", 1);
        PUT(op->m[i].id, strlen(op->m[i].id));
        PUT("\"", 1);
    }
#undef PUT
    k += (size_t)snprintf(b + k, cap - k, "],\"duplicates\":%zu}", dups);
    ds_http_reply(op->req, 201, "application/json", b, k);
    if (b != small)
        free(b);
}

static void produce_finish(struct produce_op *op)
{
    struct ds_queue_role *q = op->q;
    size_t failed = 0, dups = 0;
    for (size_t i = 0; i < op->n; i++) {
        failed += !op->m[i].ok;
        dups += op->m[i].dup;
    }
    ds_metric_inc(q->m_produced, (double)(op->n - failed - dups));
    ds_metric_inc(q->m_duplicates, (double)dups);
    ds_metric_observe(q->h_produce, since_s(op->start_ns));
    if (failed < op->n)
        ds_queue_wake(q, op->queue);
    if (op->req) {
        op->req->on_abort = NULL;
        if (failed)
            reply_unavailable(op->req, failed == op->n
                                           ? "no Redis shard accepted the messages"
                                           : "some messages were not accepted by Redis; retry "
                                             "the batch (with dedup_id to be safe)");
        else
            produce_answer(op, dups);
    }
    produce_free(op);
}

static int take_reply(struct pmsg *m, const redisReply *r)
{
    struct ds_qroute_id parsed;
    if (!r)
        return -1;
    if (!m->dedup) {
        if (r->type != REDIS_REPLY_STRING || !ds_qroute_sid_valid(r->str, r->len))
            return -1;
        if (ds_qroute_id_prefix(m->shard->tag, m->p, m->id, sizeof m->id))
            return -1;
        size_t pl = strlen(m->id);
        if (pl + r->len >= sizeof m->id)
            return -1;
        memcpy(m->id + pl, r->str, r->len + 1);
        return 0;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_STRING ||
        r->element[1]->len >= sizeof m->id ||
        ds_qroute_id_parse(r->element[1]->str, r->element[1]->len, m->op->q->partitions, &parsed))
        return -1;
    memcpy(m->id, r->element[1]->str, r->element[1]->len + 1);
    m->dup = r->element[0]->integer == 0;
    return 0;
}

static void produce_cb(struct redisReply *reply, void *arg)
{
    struct pmsg *m = arg;
    struct produce_op *op = m->op;
    if (take_reply(m, reply) == 0) {
        m->ok = 1;
    } else if (!op->q->stopping) {
        /* the shard failed or refused: the next live shard on the ring takes the message */
        m->tried |= 1ull << (m->shard - op->q->shards);
        if (send_msg(m) == 0)
            return;
    }
    if (--op->left == 0)
        produce_finish(op);
}

static int send_msg(struct pmsg *m)
{
    struct produce_op *op = m->op;
    struct ds_queue_role *q = op->q;
    char key[DS_QROUTE_KEY_MAX], dkey[DS_QROUTE_KEY_MAX + DEDUP_MAX + 8], win[24], prefix[32];
    ds_qroute_stream_key(op->queue, m->p, key, sizeof key);
    for (;;) {
        struct qshard *s = ds_queue_route(q, op->queue, m->p, m->tried);
        if (!s)
            return -1;
        m->shard = s;
        ds_queue_register(q, s, op->queue);
        const char *argv[12];
        size_t lens[12] = {0};
        int argc = 0, rv;
        if (m->dedup) {
            snprintf(dkey, sizeof dkey, "dsq:{%s}:d:%s", op->queue, m->dedup);
            snprintf(win, sizeof win, "%" PRIu64, q->dedup_window_ms);
            ds_qroute_id_prefix(s->tag, m->p, prefix, sizeof prefix);
            argv[argc++] = "EVAL";
            argv[argc++] = ds_qlua_produce_dedup;
            argv[argc++] = "2";
            argv[argc++] = key;
            argv[argc++] = dkey;
            argv[argc++] = win;
            argv[argc++] = prefix;
        } else {
            argv[argc++] = "XADD";
            argv[argc++] = key;
            argv[argc++] = "*";
        }
        argv[argc++] = "b";
        lens[argc] = m->body_len;
        argv[argc++] = m->body;
        if (m->key) {
            argv[argc++] = "k";
            argv[argc++] = m->key;
        }
        send_argv(s, produce_cb, m, argc, argv, lens, &rv);
        if (rv == 0)
            return 0;
        m->tried |= 1ull << (s - q->shards);
    }
}

static void produce_abort(struct ds_http_req *req, void *arg)
{
    (void)req;
    struct produce_op *op = arg;
    op->req = NULL;
}

/* Decoding of one produce request: the scan position in the body's copy, and where the next
 * decoded string goes (decoded strings are never longer than their JSON text, so the copy's
 * length is room enough for all of them). */
struct pparse {
    struct ds_http_req *req;
    const char *start, *p, *end;
    char *strs;
    size_t room;
};

static int malformed(struct pparse *x)
{
    ds_http_reply_error(x->req, 400, "bad_request", "malformed JSON near byte %zu",
                        (size_t)(x->p - x->start));
    return -1;
}

/* A value that is well-formed but of the wrong kind gets msg; a malformed one says so. */
static int wrong_kind(struct pparse *x, const char *msg)
{
    const char *e;
    if (ds_js_skip(x->p, x->end, &e)) {
        x->p = e;
        return malformed(x);
    }
    ds_http_reply_error(x->req, 400, "bad_request", "%s", msg);
    return -1;
}

/* A member name and its ':' into name (cap bytes); "" for a name no field has. */
static int pname(struct pparse *x, char *name, size_t cap)
{
    size_t len;
    int rv = ds_js_string(x->p, x->end, name, cap, &len, &x->p);
    if (rv == DS_JS_EINVAL)
        return malformed(x);
    if (rv != DS_JS_OK)
        name[0] = '\0';
    x->p = ds_js_ws(x->p, x->end);
    if (x->p >= x->end || *x->p != ':')
        return malformed(x);
    x->p = ds_js_ws(x->p + 1, x->end);
    return 0;
}

/* After a member: ',' (1, at the next name), the container's close (0, past it) or -1. */
static int pnext(struct pparse *x, char close)
{
    x->p = ds_js_ws(x->p, x->end);
    if (x->p < x->end && *x->p == ',') {
        x->p = ds_js_ws(x->p + 1, x->end);
        return 1;
    }
    if (x->p < x->end && *x->p == close) {
        x->p++;
        return 0;
    }
    return malformed(x);
}

/* A string field of 1..maxlen bytes, decoded into the copy. */
static int pstr(struct pparse *x, const char *field, size_t maxlen, const char **out)
{
    char msg[96];
    if (*out) {
        ds_http_reply_error(x->req, 400, "bad_request", "field '%s' given twice", field);
        return -1;
    }
    if (x->p >= x->end || *x->p != '"') {
        snprintf(msg, sizeof msg, "field '%s' must be a string", field);
        return wrong_kind(x, msg);
    }
    size_t len;
    int rv = ds_js_string(x->p, x->end, x->strs, x->room, &len, &x->p);
    if (rv == DS_JS_ENUL) {
        ds_http_reply_error(x->req, 400, "bad_request", "strings must not contain NUL (\\u0000)");
        return -1;
    }
    if (rv != DS_JS_OK)
        return malformed(x);
    if (len == 0 || len > maxlen) {
        ds_http_reply_error(x->req, 400, "bad_request", "field '%s' must be 1 to %zu bytes long",
                            field, maxlen);
        return -1;
    }
    *out = x->strs;
    x->strs += len + 1;
    x->room -= len + 1;
    return 0;
}

static int pbody(struct pparse *x, struct pmsg *m)
{
    const char *e;
    if (m->body) {
        ds_http_reply_error(x->req, 400, "bad_request", "field 'body' given twice");
        return -1;
    }
    if (x->p >= x->end || ds_js_skip(x->p, x->end, &e)) {
        x->p = x->p < x->end ? e : x->p;
        return malformed(x);
    }
    m->body = x->p;
    m->body_len = (size_t)(e - x->p);
    x->p = e;
    return 0;
}

/* One member of a message (or of the single-form request) named name into m; 1 when name is
 * not a message field. */
static int pmsg_field(struct pparse *x, const char *name, struct pmsg *m)
{
    if (strcmp(name, "body") == 0)
        return pbody(x, m);
    if (strcmp(name, "key") == 0)
        return pstr(x, "key", MSG_KEY_MAX, &m->key);
    if (strcmp(name, "dedup_id") == 0)
        return pstr(x, "dedup_id", DEDUP_MAX, &m->dedup);
    return 1;
}

static const char messages_error[] =
    "field 'messages' must be an array of 1..1000 message objects (and then body, key and "
    "dedup_id belong inside them)";
_Static_assert(BATCH_MAX == 1000, "messages_error names the batch limit");
static const char message_error[] =
    "each message must be an object with body, key and dedup_id only";

/* The messages array into *v (realloc'd), *n messages. */
static int pmessages(struct pparse *x, struct pmsg **v, size_t *n)
{
    size_t cap = 0;
    if (x->p >= x->end || *x->p != '[')
        return wrong_kind(x, messages_error);
    x->p = ds_js_ws(x->p + 1, x->end);
    if (x->p < x->end && *x->p == ']')
        return wrong_kind(x, messages_error);
    for (;;) {
        if (*n == BATCH_MAX) {
            ds_http_reply_error(x->req, 400, "bad_request", "%s", messages_error);
            return -1;
        }
        if (x->p >= x->end || *x->p != '{')
            return wrong_kind(x, message_error);
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            struct pmsg *nv = realloc(*v, cap * sizeof **v);
            if (!nv) {
                reply_unavailable(x->req, "out of memory");
                return -1;
            }
            *v = nv;
        }
        struct pmsg *m = &(*v)[(*n)++];
        memset(m, 0, sizeof *m);
        x->p = ds_js_ws(x->p + 1, x->end);
        if (x->p < x->end && *x->p != '}') {
            for (int more = 1; more;) {
                char name[16];
                int rv;
                if (pname(x, name, sizeof name) || (rv = pmsg_field(x, name, m)) < 0)
                    return -1;
                if (rv > 0) {
                    ds_http_reply_error(x->req, 400, "bad_request", "%s", message_error);
                    return -1;
                }
                if ((more = pnext(x, '}')) < 0)
                    return -1;
            }
        } else if (x->p < x->end) {
            x->p++;
        }
        if (!m->body) {
            ds_http_reply_error(x->req, 400, "bad_request", "field 'body' is required");
            return -1;
        }
        int more = pnext(x, ']');
        if (more <= 0)
            return more;
    }
}

static struct produce_op *produce_parse(struct ds_queue_role *q, struct ds_http_req *req)
{
    size_t len = req->body_len;
    if (len == 0) {
        ds_http_reply_error(req, 400, "bad_request", "request body is empty: a JSON object is "
                                                     "expected");
        return NULL;
    }
    if (!ds_utf8_valid(req->body, len)) {
        ds_http_reply_error(req, 400, "bad_request", "request body is not valid UTF-8");
        return NULL;
    }
    char *text = malloc(2 * len + 1);
    struct pmsg top = {0}, *v = NULL;
    size_t n = 0;
    const char *queue = NULL;
    int have_msgs = 0;
    if (!text) {
        reply_unavailable(req, "out of memory");
        return NULL;
    }
    memcpy(text, req->body, len);
    text[len] = '\0';
    struct pparse x = {.req = req, .start = text, .end = text + len, .strs = text + len + 1,
                       .room = len};
    x.p = ds_js_ws(text, x.end);
    if (x.p >= x.end || *x.p != '{') {
        wrong_kind(&x, "request body must be a JSON object");
        goto fail;
    }
    x.p = ds_js_ws(x.p + 1, x.end);
    if (x.p < x.end && *x.p == '}') {
        x.p++;
    } else {
        for (int more = 1; more;) {
            char name[72];
            int rv;
            if (pname(&x, name, sizeof name))
                goto fail;
            if (strcmp(name, "queue") == 0) {
                rv = pstr(&x, "queue", DS_QROUTE_NAME_MAX, &queue);
            } else if (strcmp(name, "messages") == 0) {
                if (have_msgs) {
                    ds_http_reply_error(req, 400, "bad_request", "field 'messages' given twice");
                    goto fail;
                }
                have_msgs = 1;
                rv = pmessages(&x, &v, &n);
            } else if ((rv = pmsg_field(&x, name, &top)) > 0) {
                ds_http_reply_error(req, 400, "bad_request", "unknown field '%.64s'", name);
                goto fail;
            }
            if (rv || (more = pnext(&x, '}')) < 0)
                goto fail;
        }
    }
    x.p = ds_js_ws(x.p, x.end);
    if (x.p != x.end) {
        ds_http_reply_error(req, 400, "bad_request", "trailing data after the JSON value at "
                                                     "byte %zu", (size_t)(x.p - text));
        goto fail;
    }
    if (!queue) {
        ds_http_reply_error(req, 400, "bad_request", "field 'queue' is required");
        goto fail;
    }
    if (check_name(req, "queue", queue))
        goto fail;
    if (have_msgs && (top.body || top.key || top.dedup)) {
        ds_http_reply_error(req, 400, "bad_request", "%s", messages_error);
        goto fail;
    }
    if (!have_msgs && !top.body) {
        ds_http_reply_error(req, 400, "bad_request", "field 'body' is required");
        goto fail;
    }
    size_t count = have_msgs ? n : 1;
    struct produce_op *op = calloc(1, sizeof *op + count * sizeof op->m[0]);
    if (!op) {
        reply_unavailable(req, "out of memory");
        goto fail;
    }
    op->q = q;
    op->text = text;
    op->n = count;
    op->single = !have_msgs;
    snprintf(op->queue, sizeof op->queue, "%s", queue);
    memcpy(op->m, have_msgs ? v : &top, count * sizeof op->m[0]);
    free(v);
    for (size_t i = 0; i < count; i++) {
        struct pmsg *m = &op->m[i];
        m->op = op;
        /* by key; else by dedup_id, so a retried duplicate finds the first one's shard */
        const char *route = m->key ? m->key : m->dedup;
        m->p = ds_qroute_partition(route, route ? strlen(route) : 0, q->partitions, q->rr++);
    }
    return op;
fail:
    free(v);
    free(text);
    return NULL;
}

static void produce_route(struct ds_http_req *req)
{
    struct ds_queue_role *q = req->ctx;
    struct produce_op *op = produce_parse(q, req);
    if (!op)
        return;
    snprintf(req->audit_params, sizeof req->audit_params, "{\"queue\":\"%s\",\"messages\":%zu}",
             op->queue, op->n);
    op->req = req;
    op->start_ns = now_ns();
    op->left = op->n;
    req->on_abort = produce_abort;
    req->abort_arg = op;
    size_t unsent = 0;
    for (size_t i = 0; i < op->n; i++)
        unsent += send_msg(&op->m[i]) != 0;
    /* messages no shard took are finished now; the rest finish in produce_cb */
    if (unsent && (op->left -= unsent) == 0)
        produce_finish(op);
}

/* ================================================================== consume */

struct qconsume {
    struct qconsume *next; /* in q->waiters while it waits */
    struct ds_queue_role *q;
    struct ds_http_req *req; /* NULL once the client went away */
    char queue[DS_QROUTE_NAME_MAX + 1];
    char group[DS_QROUTE_NAME_MAX + 1];
    char rname[DS_AUTHZ_NAME_MAX + DS_QROUTE_NAME_MAX + 26]; /* [identity~]consumer@visibility */
    uint64_t max, got;
    uint64_t deadline_ms;
    uint64_t start_ns;
    size_t first_shard, seen; /* the scan in progress: shards looked at */
    struct qshard *cur;
    cJSON *out;
    struct event *timer;
    int scanning, waiting;
};

static void scan_next(struct qconsume *c);

static void consume_free(struct qconsume *c)
{
    struct ds_queue_role *q = c->q;
    if (c->waiting)
        for (struct qconsume **pp = &q->waiters; *pp; pp = &(*pp)->next)
            if (*pp == c) {
                *pp = c->next;
                break;
            }
    if (c->timer)
        event_free(c->timer);
    cJSON_Delete(c->out);
    free(c);
}

static void consume_reply(struct qconsume *c)
{
    struct ds_http_req *req = c->req;
    ds_metric_observe(c->q->h_consume, since_s(c->start_ns));
    ds_metric_inc(c->q->m_consumed, (double)c->got);
    req->on_abort = NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "queue", c->queue);
    cJSON_AddStringToObject(o, "group", c->group);
    cJSON_AddItemToObject(o, "messages", c->out);
    c->out = NULL;
    reply_obj(req, 200, o);
    consume_free(c);
}

static void add_field(cJSON *msg, const char *f, size_t flen, const redisReply *v)
{
    if (flen == 1 && f[0] == 'b') {
        /* the JSON text produce stored, passed through verbatim once checked (an entry written
         * by something else that is not one JSON value reads as null) */
        const char *e;
        if (v->len && ds_js_skip(v->str, v->str + v->len, &e) == DS_JS_OK &&
            e == v->str + v->len && strlen(v->str) == v->len)
            cJSON_AddRawToObject(msg, "body", v->str);
        else
            cJSON_AddNullToObject(msg, "body");
    } else if (flen == 1 && f[0] == 'k') {
        cJSON_AddStringToObject(msg, "key", v->str);
    } else if (flen == 3 && memcmp(f, "oid", 3) == 0) {
        cJSON_AddStringToObject(msg, "original_id", v->str);
    } else if (flen == 2 && memcmp(f, "dc", 2) == 0) {
        cJSON_AddNumberToObject(msg, "original_delivery_count", strtod(v->str, NULL));
    } else if (flen == 2 && memcmp(f, "og", 2) == 0) {
        cJSON_AddStringToObject(msg, "original_group", v->str);
    }
}

/* One [partition, id, count, fields] entry of the consume script into c->out. */
static void take_entry(struct qconsume *c, const redisReply *e)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 4 ||
        e->element[0]->type != REDIS_REPLY_INTEGER || e->element[1]->type != REDIS_REPLY_STRING ||
        e->element[2]->type != REDIS_REPLY_INTEGER || e->element[3]->type != REDIS_REPLY_ARRAY ||
        e->element[0]->integer < 0 || e->element[0]->integer >= (long long)c->q->partitions)
        return;
    char prefix[32];
    ds_qroute_id_prefix(c->cur->tag, (uint32_t)e->element[0]->integer, prefix, sizeof prefix);
    cJSON *msg = cJSON_CreateObject();
    char id[DS_QROUTE_ID_MAX];
    snprintf(id, sizeof id, "%s%s", prefix, e->element[1]->str);
    cJSON_AddStringToObject(msg, "id", id);
    const redisReply *f = e->element[3];
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (f->element[i]->type == REDIS_REPLY_STRING && f->element[i + 1]->type == REDIS_REPLY_STRING)
            add_field(msg, f->element[i]->str, f->element[i]->len, f->element[i + 1]);
    if (!cJSON_GetObjectItemCaseSensitive(msg, "body"))
        cJSON_AddNullToObject(msg, "body");
    cJSON_AddNumberToObject(msg, "delivery_count", (double)e->element[2]->integer);
    cJSON_AddNumberToObject(msg, "partition", (double)e->element[0]->integer);
    cJSON_AddItemToArray(c->out, msg);
    c->got++;
}

static void consume_cb(struct redisReply *reply, void *arg)
{
    struct qconsume *c = arg;
    c->scanning = 0;
    if (reply && reply->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < reply->elements && c->got < c->max; i++)
            take_entry(c, reply->element[i]);
    if (!c->req) { /* the client went away: what it was given comes back after visibility */
        consume_free(c);
        return;
    }
    scan_next(c);
}

static int send_consume(struct qconsume *c, struct qshard *s)
{
    struct ds_queue_role *q = c->q;
    uint32_t P = q->partitions, off = (uint32_t)(q->rr++ % P);
    size_t argc = 9 + 2 * (size_t)P;
    const char **argv = calloc(argc, sizeof *argv);
    size_t *lens = calloc(argc, sizeof *lens);
    char (*keys)[DS_QROUTE_KEY_MAX] = calloc(P, sizeof *keys);
    char (*parts)[12] = calloc(P, sizeof *parts);
    char nkeys[12], max[24], gkey[DS_QROUTE_KEY_MAX];
    int rv = DS_REDIS_ENOMEM;
    if (!argv || !lens || !keys || !parts)
        goto out;
    snprintf(nkeys, sizeof nkeys, "%" PRIu32, P + 1);
    ds_qroute_groups_key(c->queue, gkey, sizeof gkey);
    snprintf(max, sizeof max, "%" PRIu64, c->max - c->got);
    size_t a = 0;
    argv[a++] = "EVAL";
    argv[a++] = ds_qlua_consume;
    argv[a++] = nkeys;
    for (uint32_t i = 0; i < P; i++) {
        uint32_t p = (off + i) % P;
        ds_qroute_stream_key(c->queue, p, keys[i], sizeof keys[i]);
        snprintf(parts[i], sizeof parts[i], "%" PRIu32, p);
        argv[a++] = keys[i];
    }
    argv[a++] = gkey;
    argv[a++] = c->group;
    argv[a++] = c->rname;
    argv[a++] = max;
    argv[a++] = DS_QUEUE_BIG_IDLE;
    for (uint32_t i = 0; i < P; i++)
        argv[a++] = parts[i];
    c->cur = s;
    send_argv(s, consume_cb, c, (int)a, argv, lens, &rv);
out:
    free(argv);
    free(lens);
    free(keys);
    free(parts);
    return rv;
}

static void consume_timer(evutil_socket_t fd, short what, void *arg);

static void scan_done(struct qconsume *c)
{
    struct ds_queue_role *q = c->q;
    uint64_t now = ds_node_now_ms();
    if (c->got || now >= c->deadline_ms || q->stopping) {
        consume_reply(c);
        return;
    }
    if (!c->waiting) {
        c->waiting = 1;
        c->next = q->waiters;
        q->waiters = c;
        ds_queue_watch_kick(q);
    }
    uint64_t ms = c->deadline_ms - now < POLL_MS ? c->deadline_ms - now : POLL_MS;
    struct timeval tv = {0, (suseconds_t)ms * 1000};
    evtimer_add(c->timer, &tv);
}

/* Look at the next shard of this scan (every shard may hold a partition after a failover). */
static void scan_next(struct qconsume *c)
{
    struct ds_queue_role *q = c->q;
    while (c->seen < q->nshards && c->got < c->max && !q->stopping) {
        struct qshard *s = &q->shards[(c->first_shard + c->seen++) % q->nshards];
        if (ds_redis_up(s->r) && send_consume(c, s) == 0) {
            c->scanning = 1;
            return;
        }
    }
    scan_done(c);
}

static void scan_start(struct qconsume *c)
{
    c->first_shard = (size_t)(c->q->rr++ % c->q->nshards);
    c->seen = 0;
    scan_next(c);
}

static void consume_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct qconsume *c = arg;
    if (!c->scanning)
        scan_start(c);
}

size_t ds_queue_waiting(struct ds_queue_role *q, const char **out, size_t max)
{
    size_t n = 0;
    for (struct qconsume *c = q->waiters; c && n < max; c = c->next) {
        size_t i = 0;
        while (i < n && strcmp(out[i], c->queue) != 0)
            i++;
        if (i == n)
            out[n++] = c->queue;
    }
    return n;
}

void ds_queue_wake(struct ds_queue_role *q, const char *queue)
{
    for (struct qconsume *c = q->waiters; c; c = c->next)
        if (!c->scanning && strcmp(c->queue, queue) == 0)
            event_active(c->timer, EV_TIMEOUT, 0);
}

static void consume_abort(struct ds_http_req *req, void *arg)
{
    (void)req;
    struct qconsume *c = arg;
    c->req = NULL;
    if (!c->scanning)
        consume_free(c);
}

static int consume_parse(struct ds_queue_role *q, struct ds_http_req *req, struct qconsume *c)
{
    static const char *const fields[] = {"queue", "group", "consumer", "max", "wait_ms",
                                         "visibility_ms", NULL};
    cJSON *o;
    const char *queue, *group, *consumer;
    uint64_t wait_ms = 0, vis = q->visibility_ms;
    char err[DS_JSON_ERR_MAX];
    c->max = 1;
    if (parse_body(req, fields, &o))
        return -1;
    int rv = -1;
    if (get_name(req, o, "queue", &queue) || get_name(req, o, "group", &group) ||
        get_name(req, o, "consumer", &consumer))
        goto out;
    if (ds_json_get_u64(o, "max", false, 1, BATCH_MAX, &c->max, err) ||
        ds_json_get_u64(o, "wait_ms", false, 0, WAIT_MAX_MS, &wait_ms, err) ||
        ds_json_get_u64(o, "visibility_ms", false, 100, VISIBILITY_MAX_MS, &vis, err)) {
        ds_http_reply_error(req, 400, "bad_request", "%s", err);
        goto out;
    }
    snprintf(c->queue, sizeof c->queue, "%s", queue);
    snprintf(c->group, sizeof c->group, "%s", group);
    char owned[DS_AUTHZ_NAME_MAX + DS_QROUTE_NAME_MAX + 2];
    snprintf(owned, sizeof owned, "%s%s%s", ds_server_auth_on(q->node->server) ? req->identity : "",
             ds_server_auth_on(q->node->server) ? "~" : "", consumer);
    ds_qroute_consumer_name(owned, vis, c->rname, sizeof c->rname);
    c->deadline_ms = ds_node_now_ms() + wait_ms;
    snprintf(req->audit_params, sizeof req->audit_params,
             "{\"queue\":\"%s\",\"group\":\"%s\",\"consumer\":\"%s\"}", queue, group, consumer);
    rv = 0;
out:
    cJSON_Delete(o);
    return rv;
}

static void consume_route(struct ds_http_req *req)
{
    struct ds_queue_role *q = req->ctx;
    struct qconsume *c = calloc(1, sizeof *c);
    if (!c) {
        reply_unavailable(req, "out of memory");
        return;
    }
    c->q = q;
    if (consume_parse(q, req, c)) {
        free(c);
        return;
    }
    c->out = cJSON_CreateArray();
    c->timer = evtimer_new(q->node->base, consume_timer, c);
    if (!c->out || !c->timer) {
        consume_free(c);
        reply_unavailable(req, "out of memory");
        return;
    }
    if (!ds_queue_route(q, c->queue, 0, 0)) {
        consume_free(c);
        reply_unavailable(req, "no Redis shard is reachable");
        return;
    }
    c->req = req;
    c->start_ns = now_ns();
    req->on_abort = consume_abort;
    req->abort_arg = c;
    scan_start(c);
}

/* ================================================================== ack and nack */

/* The ids of one (shard, partition) stream, sent as one XACK or one nack script. */
struct idgroup {
    struct qshard *s;
    uint32_t p;
    size_t n;
    const char **sids;
};

struct ack_op {
    struct ds_queue_role *q;
    struct ds_http_req *req;
    int nack;
    size_t left;
    long long done, dead;
    int failed;
    int foreign; /* an id was pending for another identity's consumer */
    uint64_t start_ns;
};

static void ack_finish(struct ack_op *op)
{
    struct ds_queue_role *q = op->q;
    ds_metric_observe(q->h_ack, since_s(op->start_ns));
    ds_metric_inc(op->nack ? q->m_nacked : q->m_acked, (double)op->done);
    ds_metric_inc(q->m_dead, (double)op->dead);
    if (op->req) {
        op->req->on_abort = NULL;
        if (op->foreign) {
            ds_http_reply_error(op->req, 403, "forbidden",
                                "some ids were delivered to another identity's consumer; only "
                                "that identity (or an admin) may %s them (ids on other shards "
                                "may have been %sed)", op->nack ? "nack" : "ack",
                                op->nack ? "nack" : "ack");
        } else if (op->failed) {
            reply_unavailable(op->req, "a shard holding some of the ids failed; retry (acks "
                                       "and nacks are idempotent)");
        } else {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, op->nack ? "nacked" : "acked", (double)op->done);
            if (op->nack)
                cJSON_AddNumberToObject(o, "dead_lettered", (double)op->dead);
            reply_obj(op->req, 200, o);
        }
    }
    free(op);
}

static void ack_cb(struct redisReply *reply, void *arg)
{
    struct ack_op *op = arg;
    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer < 0)
        op->foreign = 1;
    else if (reply && reply->type == REDIS_REPLY_INTEGER && !op->nack)
        op->done += reply->integer;
    else if (reply && reply->type == REDIS_REPLY_ARRAY && op->nack && reply->elements == 2) {
        op->done += reply->element[0]->integer;
        op->dead += reply->element[1]->integer;
    } else
        op->failed = 1;
    if (--op->left == 0)
        ack_finish(op);
}

static void ack_abort(struct ds_http_req *req, void *arg)
{
    (void)req;
    struct ack_op *op = arg;
    op->req = NULL;
}

/* Parse ids into groups (one per shard and partition).  *groups and each sids are malloc'd,
 * sids point into o; on failure the request is answered. */
static int parse_ids(struct ds_queue_role *q, struct ds_http_req *req, const cJSON *ids,
                     struct ds_qroute_id *parsed, struct idgroup *groups, size_t *ngroups)
{
    size_t n = (size_t)cJSON_GetArraySize(ids), i = 0;
    const cJSON *it;
    *ngroups = 0;
    cJSON_ArrayForEach(it, ids) {
        struct ds_qroute_id *id = &parsed[i];
        struct qshard *s;
        if (!cJSON_IsString(it) ||
            ds_qroute_id_parse(it->valuestring, strlen(it->valuestring), q->partitions, id) ||
            !(s = ds_queue_shard_by_tag(q, id->tag))) {
            ds_http_reply_error(req, 400, "bad_request",
                                "ids[%zu] is not a message id of this queue service", i);
            return -1;
        }
        size_t g = 0;
        while (g < *ngroups && (groups[g].s != s || groups[g].p != id->partition))
            g++;
        if (g == *ngroups) {
            groups[g] = (struct idgroup){.s = s, .p = id->partition, .sids = calloc(n, sizeof(char *))};
            (*ngroups)++;
            if (!groups[g].sids) {
                reply_unavailable(req, "out of memory");
                return -1;
            }
        }
        groups[g].sids[groups[g].n++] = id->sid;
        i++;
    }
    return 0;
}

/* owner: the consumer-name prefix the ids must be pending for ("identity~"), or NULL. */
static int send_ack_group(struct ack_op *op, const char *queue, const char *group,
                          const struct idgroup *g, uint64_t delay_ms, const char *owner)
{
    struct ds_queue_role *q = op->q;
    char key[DS_QROUTE_KEY_MAX], dkey[DS_QROUTE_KEY_MAX], dlq[DS_QROUTE_NAME_MAX + 8];
    char max[24], idle[24], prefix[32];
    size_t argc = g->n + 13;
    const char **argv = calloc(argc, sizeof *argv);
    size_t *lens = calloc(argc, sizeof *lens);
    int rv = DS_REDIS_ENOMEM;
    if (!argv || !lens)
        goto out;
    ds_qroute_stream_key(queue, g->p, key, sizeof key);
    size_t a = 0;
    if (op->nack) {
        ds_qroute_dlq_name(queue, dlq, sizeof dlq);
        ds_qroute_stream_key(dlq, g->p, dkey, sizeof dkey);
        ds_qroute_id_prefix(g->s->tag, g->p, prefix, sizeof prefix);
        snprintf(max, sizeof max, "%" PRIu64, q->max_deliveries);
        snprintf(idle, sizeof idle, "%" PRIu64, DS_QUEUE_BIG_IDLE_MS - delay_ms);
        const char *head[] = {"EVAL", owner ? nack_owned_lua() : ds_qlua_nack, owner ? "4" : "3",
                              key, dkey, DS_QUEUE_REGISTRY};
        for (size_t i = 0; i < 6; i++)
            argv[a++] = head[i];
        if (owner)
            argv[a++] = owner;
        const char *tail[] = {group, max, idle, ds_qroute_is_dlq(queue) ? "1" : "0", dlq, prefix};
        for (size_t i = 0; i < 6; i++)
            argv[a++] = tail[i];
    } else if (owner) {
        const char *head[] = {"EVAL", ack_owned_lua, "2", key, owner, group};
        for (size_t i = 0; i < 6; i++)
            argv[a++] = head[i];
    } else {
        argv[a++] = "XACK";
        argv[a++] = key;
        argv[a++] = group;
    }
    for (size_t i = 0; i < g->n; i++)
        argv[a++] = g->sids[i];
    send_argv(g->s, ack_cb, op, (int)a, argv, lens, &rv);
out:
    free(argv);
    free(lens);
    return rv;
}

static void ack_route_common(struct ds_http_req *req, int nack)
{
    struct ds_queue_role *q = req->ctx;
    static const char *const ack_fields[] = {"queue", "group", "ids", NULL};
    static const char *const nack_fields[] = {"queue", "group", "ids", "delay_ms", NULL};
    cJSON *o;
    const char *queue, *group;
    uint64_t delay = 0;
    char err[DS_JSON_ERR_MAX];
    if (parse_body(req, nack ? nack_fields : ack_fields, &o))
        return;
    struct ds_qroute_id *parsed = NULL;
    struct idgroup *groups = NULL;
    size_t ngroups = 0;
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(o, "ids");
    if (get_name(req, o, "queue", &queue) || get_name(req, o, "group", &group))
        goto out;
    if (ds_json_get_u64(o, "delay_ms", false, 0, DELAY_MAX_MS, &delay, err)) {
        ds_http_reply_error(req, 400, "bad_request", "%s", err);
        goto out;
    }
    if (!cJSON_IsArray(ids) || cJSON_GetArraySize(ids) < 1 ||
        cJSON_GetArraySize(ids) > (int)BATCH_MAX) {
        ds_http_reply_error(req, 400, "bad_request",
                            "field 'ids' must be an array of 1..%u message ids", BATCH_MAX);
        goto out;
    }
    size_t n = (size_t)cJSON_GetArraySize(ids);
    parsed = calloc(n, sizeof *parsed);
    groups = calloc(n, sizeof *groups);
    if (!parsed || !groups) {
        reply_unavailable(req, "out of memory");
        goto out;
    }
    if (parse_ids(q, req, ids, parsed, groups, &ngroups))
        goto out;
    snprintf(req->audit_params, sizeof req->audit_params,
             "{\"queue\":\"%s\",\"group\":\"%s\",\"ids\":%zu}", queue, group, n);
    struct ack_op *op = calloc(1, sizeof *op);
    if (!op) {
        reply_unavailable(req, "out of memory");
        goto out;
    }
    *op = (struct ack_op){.q = q, .req = req, .nack = nack, .left = ngroups, .start_ns = now_ns()};
    req->on_abort = ack_abort;
    req->abort_arg = op;
    char owner[DS_AUTHZ_NAME_MAX + 2];
    snprintf(owner, sizeof owner, "%s~", req->identity);
    size_t unsent = 0;
    for (size_t g = 0; g < ngroups; g++)
        unsent += send_ack_group(op, queue, group, &groups[g], delay,
                                 owner_checked(q, req) ? owner : NULL) != 0;
    if (unsent) {
        op->failed = 1;
        if ((op->left -= unsent) == 0)
            ack_finish(op);
    }
out:
    for (size_t g = 0; groups && g < ngroups; g++)
        free(groups[g].sids);
    free(groups);
    free(parsed);
    cJSON_Delete(o);
}

static void ack_route(struct ds_http_req *req)
{
    ack_route_common(req, 0);
}

static void nack_route(struct ds_http_req *req)
{
    ack_route_common(req, 1);
}

/* ================================================================== stats */

struct stats_op {
    struct ds_queue_role *q;
    struct ds_http_req *req;
    char queue[DS_QROUTE_NAME_MAX + 1];
    size_t left;
    int incomplete;
    double length, dlq_depth;
    cJSON *streams, *groups, *shards;
    struct qshard *cur[DS_QUEUE_SHARDS_MAX];
};

struct stats_call {
    struct stats_op *op;
    struct qshard *s;
};

static cJSON *obj_child(cJSON *parent, const char *name)
{
    cJSON *x = cJSON_GetObjectItemCaseSensitive(parent, name);
    return x ? x : cJSON_AddObjectToObject(parent, name);
}

static void num_add(cJSON *o, const char *name, double v)
{
    cJSON *x = cJSON_GetObjectItemCaseSensitive(o, name);
    if (x)
        cJSON_SetNumberValue(x, x->valuedouble + v);
    else
        cJSON_AddNumberToObject(o, name, v);
}

/* One consumer [name, pending, idle] of a group into the group's totals. */
static void stats_consumer(cJSON *g, const redisReply *c)
{
    if (c->type != REDIS_REPLY_ARRAY || c->elements != 3 ||
        c->element[0]->type != REDIS_REPLY_STRING)
        return;
    long long pending = c->element[1]->integer, idle = c->element[2]->integer;
    if (strcmp(c->element[0]->str, DS_QROUTE_READY) == 0) {
        num_add(g, "awaiting_redelivery", (double)pending);
        return;
    }
    char name[DS_QROUTE_NAME_MAX + 1];
    uint64_t vis;
    if (ds_qroute_consumer_parse(c->element[0]->str, name, sizeof name, &vis))
        snprintf(name, sizeof name, "%.*s", (int)DS_QROUTE_NAME_MAX, c->element[0]->str);
    cJSON *x = obj_child(obj_child(g, "consumers"), name);
    num_add(x, "pending", (double)pending);
    cJSON *i = cJSON_GetObjectItemCaseSensitive(x, "idle_ms");
    if (!i)
        cJSON_AddNumberToObject(x, "idle_ms", (double)idle);
    else if ((double)idle < i->valuedouble)
        cJSON_SetNumberValue(i, (double)idle);
}

/* One [partition, length, dlq length, groups] entry of the stats script. */
static void stats_entry(struct stats_op *op, struct qshard *s, const redisReply *e)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 4 || e->element[3]->type != REDIS_REPLY_ARRAY)
        return;
    cJSON *st = cJSON_CreateObject();
    cJSON_AddNumberToObject(st, "partition", (double)e->element[0]->integer);
    cJSON_AddStringToObject(st, "shard", s->addr);
    cJSON_AddNumberToObject(st, "length", (double)e->element[1]->integer);
    cJSON_AddNumberToObject(st, "dlq_length", (double)e->element[2]->integer);
    op->length += (double)e->element[1]->integer;
    op->dlq_depth += (double)e->element[2]->integer;
    cJSON *sg = cJSON_AddObjectToObject(st, "groups");
    const redisReply *gs = e->element[3];
    for (size_t i = 0; i < gs->elements; i++) {
        const redisReply *g = gs->element[i];
        if (g->type != REDIS_REPLY_ARRAY || g->elements != 4 ||
            g->element[0]->type != REDIS_REPLY_STRING || g->element[3]->type != REDIS_REPLY_ARRAY)
            continue;
        double pending = (double)g->element[1]->integer, lag = (double)g->element[2]->integer;
        cJSON *x = cJSON_AddObjectToObject(sg, g->element[0]->str);
        cJSON_AddNumberToObject(x, "pending", pending);
        cJSON *total = obj_child(op->groups, g->element[0]->str);
        num_add(total, "pending", pending);
        if (lag >= 0) {
            cJSON_AddNumberToObject(x, "lag", lag);
            num_add(total, "lag", lag);
        }
        obj_child(total, "consumers");
        for (size_t j = 0; j < g->element[3]->elements; j++)
            stats_consumer(total, g->element[3]->element[j]);
    }
    cJSON_AddItemToArray(op->streams, st);
}

static void stats_finish(struct stats_op *op)
{
    if (op->req) {
        op->req->on_abort = NULL;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "queue", op->queue);
        cJSON_AddNumberToObject(o, "partitions", op->q->partitions);
        cJSON_AddBoolToObject(o, "complete", !op->incomplete);
        cJSON_AddNumberToObject(o, "length", op->length);
        cJSON_AddNumberToObject(o, "dlq_depth", op->dlq_depth);
        cJSON_AddItemToObject(o, "groups", op->groups);
        cJSON_AddItemToObject(o, "streams", op->streams);
        cJSON_AddItemToObject(o, "shards", op->shards);
        op->groups = op->streams = op->shards = NULL;
        reply_obj(op->req, 200, o);
    }
    cJSON_Delete(op->groups);
    cJSON_Delete(op->streams);
    cJSON_Delete(op->shards);
    free(op);
}

static void stats_cb(struct redisReply *reply, void *arg)
{
    struct stats_call *call = arg;
    struct stats_op *op = call->op;
    if (reply && reply->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < reply->elements; i++)
            stats_entry(op, call->s, reply->element[i]);
    else
        op->incomplete = 1;
    free(call);
    if (--op->left == 0)
        stats_finish(op);
}

static int send_stats(struct stats_op *op, struct qshard *s)
{
    uint32_t P = op->q->partitions;
    char dlq[DS_QROUTE_NAME_MAX + 8], nkeys[12];
    size_t argc = 3 + 3 * (size_t)P;
    const char **argv = calloc(argc, sizeof *argv);
    size_t *lens = calloc(argc, sizeof *lens);
    char (*keys)[DS_QROUTE_KEY_MAX] = calloc(2 * (size_t)P, sizeof *keys);
    char (*parts)[12] = calloc(P, sizeof *parts);
    struct stats_call *call = malloc(sizeof *call);
    int rv = DS_REDIS_ENOMEM;
    if (!argv || !lens || !keys || !parts || !call)
        goto out;
    ds_qroute_dlq_name(op->queue, dlq, sizeof dlq);
    snprintf(nkeys, sizeof nkeys, "%" PRIu32, 2 * P);
    size_t a = 0;
    argv[a++] = "EVAL";
    argv[a++] = ds_qlua_stats;
    argv[a++] = nkeys;
    for (uint32_t p = 0; p < P; p++) {
        ds_qroute_stream_key(op->queue, p, keys[p], sizeof keys[p]);
        ds_qroute_stream_key(dlq, p, keys[P + p], sizeof keys[P + p]);
        snprintf(parts[p], sizeof parts[p], "%" PRIu32, p);
    }
    for (uint32_t p = 0; p < 2 * P; p++)
        argv[a++] = keys[p];
    for (uint32_t p = 0; p < P; p++)
        argv[a++] = parts[p];
    *call = (struct stats_call){.op = op, .s = s};
    send_argv(s, stats_cb, call, (int)a, argv, lens, &rv);
out:
    if (rv)
        free(call);
    free(argv);
    free(lens);
    free(keys);
    free(parts);
    return rv;
}

static void stats_abort(struct ds_http_req *req, void *arg)
{
    (void)req;
    struct stats_op *op = arg;
    op->req = NULL;
}

static void stats_route(struct ds_http_req *req)
{
    struct ds_queue_role *q = req->ctx;
    const char *queue = req->match.params[0];
    if (!ds_qroute_name_valid(queue)) {
        ds_http_reply_error(req, 400, "bad_request", "not a queue name");
        return;
    }
    if (ds_http_authorize_name(req, "queue", queue))
        return;
    struct stats_op *op = calloc(1, sizeof *op);
    if (!op || !(op->streams = cJSON_CreateArray()) || !(op->groups = cJSON_CreateObject()) ||
        !(op->shards = cJSON_CreateArray())) {
        if (op) {
            cJSON_Delete(op->streams);
            cJSON_Delete(op->groups);
        }
        free(op);
        reply_unavailable(req, "out of memory");
        return;
    }
    op->q = q;
    op->req = req;
    snprintf(op->queue, sizeof op->queue, "%s", queue);
    op->left = 1; /* held while sending */
    req->on_abort = stats_abort;
    req->abort_arg = op;
    size_t sent = 0;
    for (size_t i = 0; i < q->nshards; i++) {
        struct qshard *s = &q->shards[i];
        int up = ds_redis_up(s->r);
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "addr", s->addr);
        cJSON_AddBoolToObject(x, "up", up);
        cJSON_AddItemToArray(op->shards, x);
        int rv = up ? send_stats(op, s) : DS_REDIS_EDOWN;
        if (rv == 0) {
            op->left++;
            sent++;
        } else {
            cJSON_AddStringToObject(x, "error", ds_redis_strerror(rv));
            op->incomplete = 1;
        }
    }
    if (!sent) {
        req->on_abort = NULL;
        op->req = NULL;
        reply_unavailable(req, "no Redis shard is reachable");
    }
    if (--op->left == 0)
        stats_finish(op);
}

/* ================================================================== plumbing */

int ds_queue_api_routes(struct ds_queue_role *q)
{
    static const struct {
        unsigned methods;
        const char *pattern;
        ds_route_fn *fn;
        unsigned flags;
    } routes[] = {
        {DS_HTTP_POST, "/queue/produce", produce_route, DS_ROUTE_MUTATING},
        {DS_HTTP_POST, "/queue/consume", consume_route, DS_ROUTE_MUTATING},
        {DS_HTTP_POST, "/queue/ack", ack_route, DS_ROUTE_MUTATING},
        {DS_HTTP_POST, "/queue/nack", nack_route, DS_ROUTE_MUTATING},
        {DS_HTTP_GET, "/queue/{queue}/stats", stats_route, 0},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (ds_server_route(q->node->server, routes[i].methods, routes[i].pattern, routes[i].fn,
                            routes[i].flags, q))
            return ENOMEM;
    return 0;
}

void ds_queue_api_stop(struct ds_queue_role *q)
{
    /* long polls answer now with what they have, so the drain does not wait for them */
    for (struct qconsume *c = q->waiters, *next; c; c = next) {
        next = c->next;
        if (!c->scanning && c->req)
            consume_reply(c);
    }
}

void ds_queue_api_free(struct ds_queue_role *q)
{
    while (q->waiters)
        consume_free(q->waiters);
}
