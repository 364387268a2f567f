/* The cache role's HTTP API (DESIGN.md §3 cache): GET / PUT / POST / DELETE /cache/{key},
 * GET /cache/{key}/state (this node's line and the home's directory entry, asked over the peer
 * route GET /cache/peer/dir/{key} when the home is another node) and GET /cache/stats.
 *
 * Values are any JSON; they are stored as compact JSON text (cJSON's printing, so numbers are
 * doubles) and served by splicing that text into the answer.  EBUSY / EUNAVAIL from the engine are
 * 503 + Retry-After: a node that cannot reach a key's home serves reads only while its lease lasts. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/json.h"
#include "core/node.h"
#include "net/peer.h"
#include "net/server.h"
#include "roles/cache/cache_internal.h"

#define DIR_QUERY_TIMEOUT_MS 2000

/* A client operation the engine answers later (DS_MESI_PENDING). */
struct cache_pend {
    struct cache_pend *prev, *next;
    struct ds_cache_role *cr;
    struct ds_http_req *req; /* NULL once the client went away */
    uint64_t op_id;
    int op;                  /* enum cache_op */
    uint64_t start_ns;
    size_t klen;
    char key[];              /* NUL-terminated copy */
};

/* GET /cache/{key}/state waiting for the home's directory view. */
struct dir_query {
    struct ds_http_req *req; /* NULL once the client went away */
    cJSON *answer;           /* everything but "home"'s directory */
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void observe(struct ds_cache_role *cr, int op, int result, uint64_t start_ns)
{
    ds_metric_observe(cr->h_req[op][result], (double)(mono_ns() - start_ns) / 1e9);
}

/* ------------------------------------------------------------------ answers */

static void add_json_string(struct ds_buf *b, const char *s, size_t n)
{
    ds_buf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            ds_buf_add(b, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            ds_buf_printf(b, "\\u%04x", c);
        } else {
            ds_buf_add(b, &s[i], 1);
        }
    }
    ds_buf_add(b, "\"", 1);
}

static void reply_unavailable(struct ds_http_req *req, int rv)
{
    ds_http_add_header(req, "Retry-After", "1");
    if (rv == DS_MESI_EBUSY)
        ds_http_reply_error(req, 503, "unavailable", "too many operations wait on this key; retry");
    else
        ds_http_reply_error(req, 503, "unavailable",
                            "the key's home did not answer in time (no valid lease here); retry");
}

/* The answer of a completed operation: {"key","value"?,"version","state"[,"deleted"]}. */
static void reply_result(struct ds_cache_role *cr, struct ds_http_req *req, int op, const char *key, size_t klen,
                         const struct ds_mesi_result *res)
{
    if (res->rv == DS_MESI_EBUSY || res->rv == DS_MESI_EUNAVAIL) {
        reply_unavailable(req, res->rv);
        return;
    }
    if (res->rv != DS_MESI_OK) {
        ds_http_reply_error(req, 500, "internal", "cache engine: %s", ds_mesi_strerror(res->rv));
        return;
    }
    if (op == CACHE_OP_GET && !res->present) {
        ds_http_reply_error(req, 404, "not_found", "no such key");
        return;
    }
    struct ds_buf *out = &cr->reply; /* reused: a local hit allocates nothing once it has grown */
    out->len = 0;
    ds_buf_add(out, "{\"key\":", 7);
    add_json_string(out, key, klen);
    if (op == CACHE_OP_GET) {
        ds_buf_add(out, ",\"value\":", 9);
        ds_buf_add(out, res->value, res->value_len);
    }
    ds_buf_printf(out, ",\"version\":%" PRIu64 ",\"state\":\"%s\"%s}", res->version,
                  ds_mesi_state_name(res->state), op == CACHE_OP_DELETE ? ",\"deleted\":true" : "");
    if (out->oom)
        ds_http_reply_error(req, 503, "unavailable", "out of memory");
    else
        ds_http_reply(req, 200, "application/json", out->p, out->len);
    if (out->oom || out->cap > 65536) /* keep a small buffer, not the largest value seen */
        ds_buf_free(out);
}

/* ------------------------------------------------------------------ client operations */

static void pend_unlink(struct ds_cache_role *cr, struct cache_pend *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        cr->pend = p->next;
    if (p->next)
        p->next->prev = p->prev;
}

static void pend_abort(struct ds_http_req *req, void *arg)
{
    (void)req;
    struct cache_pend *p = arg;
    p->req = NULL;
}

void ds_cache_api_done(struct ds_cache_role *cr, const struct ds_mesi_result *res)
{
    struct cache_pend *p = cr->pend;
    while (p && p->op_id != res->op_id)
        p = p->next;
    if (!p)
        return;
    pend_unlink(cr, p);
    if (p->req) {
        p->req->on_abort = NULL;
        reply_result(cr, p->req, p->op, p->key, p->klen, res);
        observe(cr, p->op, res->rv == DS_MESI_OK ? CACHE_RES_MISS : CACHE_RES_ERROR, p->start_ns);
    }
    free(p);
}

void ds_cache_api_free(struct ds_cache_role *cr)
{
    while (cr->pend) {
        struct cache_pend *p = cr->pend;
        pend_unlink(cr, p);
        free(p);
    }
}

/* The key of /cache/{key}: 1..DS_MESI_MAX_KEY bytes of UTF-8 inside the caller's scope.  Answers
 * 400, 403 (scope) or 503 (still joining, or not joined: /ready says the same) and returns -1 if
 * not. */
static int route_key(struct ds_http_req *req, const char **key, size_t *klen)
{
    const struct ds_cache_role *cr = req->ctx;
    if (!ds_cache_serving(cr)) {
        ds_http_add_header(req, "Retry-After", "1");
        ds_http_reply_error(req, 503, "unavailable",
                            cr->mesi ? "this cache node has not joined the cluster"
                                     : "this cache node is still joining");
        return -1;
    }
    *key = req->match.params[0];
    *klen = strlen(*key);
    if (*klen > DS_MESI_MAX_KEY) {
        ds_http_reply_error(req, 400, "bad_request", "key longer than %d bytes", DS_MESI_MAX_KEY);
        return -1;
    }
    if (!ds_utf8_valid(*key, *klen)) {
        ds_http_reply_error(req, 400, "bad_request", "key is not valid UTF-8");
        return -1;
    }
    return ds_http_authorize_name(req, "key", *key);
}

/* After an engine call for op: answer now (hit, busy) or wait for its DONE. */
static void finish_call(struct ds_cache_role *cr, struct ds_http_req *req, int op, int rv,
                        const char *key, size_t klen, const struct ds_mesi_result *res,
                        uint64_t op_id, uint64_t start_ns)
{
    if (rv == DS_MESI_PENDING) {
        struct cache_pend *p = malloc(sizeof *p + klen + 1);
        if (!p) {
            /* the engine completes op_id later; nobody waits for it */
            reply_unavailable(req, DS_MESI_EBUSY);
        } else {
            *p = (struct cache_pend){.cr = cr, .req = req, .op_id = op_id, .op = op,
                                     .start_ns = start_ns, .klen = klen, .next = cr->pend};
            memcpy(p->key, key, klen + 1);
            if (cr->pend)
                cr->pend->prev = p;
            cr->pend = p;
            req->on_abort = pend_abort;
            req->abort_arg = p;
        }
    } else if (rv == DS_MESI_OK) {
        reply_result(cr, req, op, key, klen, res);
        observe(cr, op, CACHE_RES_HIT, start_ns);
    } else if (rv == DS_MESI_EBUSY || rv == DS_MESI_EUNAVAIL) {
        reply_unavailable(req, rv);
        observe(cr, op, CACHE_RES_ERROR, start_ns);
    } else if (rv == DS_MESI_EINVAL) {
        ds_http_reply_error(req, 400, "bad_request", "key or value refused by the cache");
    } else {
        ds_http_add_header(req, "Retry-After", "1");
        ds_http_reply_error(req, 503, "unavailable", "cache engine: %s", ds_mesi_strerror(rv));
    }
    ds_cache_drain(cr);
}

static void audit_key(struct ds_http_req *req, const char *key, size_t klen)
{
    struct ds_buf b = {0};
    ds_buf_add(&b, "{\"key\":", 7);
    add_json_string(&b, key, klen > 200 ? 200 : klen);
    ds_buf_add(&b, "}", 1);
    if (!b.oom && b.len < sizeof req->audit_params)
        memcpy(req->audit_params, b.p, b.len + 1);
    ds_buf_free(&b);
}

static void get_route(struct ds_http_req *req)
{
    struct ds_cache_role *cr = req->ctx;
    uint64_t t0 = mono_ns();
    const char *key;
    size_t klen;
    if (route_key(req, &key, &klen))
        return;
    struct ds_mesi_result res;
    uint64_t op_id = 0;
    int rv = ds_mesi_read(cr->mesi, (const uint8_t *)key, klen, ds_node_now_ms(), &res, &op_id);
    finish_call(cr, req, CACHE_OP_GET, rv, key, klen, &res, op_id, t0);
}

/* The compact JSON text of the body's "value" (malloc'd into *text), or an answer and -1. */
static int body_value(struct ds_cache_role *cr, struct ds_http_req *req, char **text, size_t *len)
{
    static const char *const fields[] = {"value", NULL};
    char err[DS_JSON_ERR_MAX];
    cJSON *o;
    if (ds_json_parse_object(req->body, req->body_len, &o, err) ||
        ds_json_only_fields(o, fields, err)) {
        cJSON_Delete(o);
        ds_http_reply_error(req, 400, "bad_request", "%s", err);
        return -1;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "value");
    if (!v) {
        cJSON_Delete(o);
        ds_http_reply_error(req, 400, "bad_request", "field 'value' is required");
        return -1;
    }
    *text = ds_json_print(v, len);
    cJSON_Delete(o);
    if (!*text) {
        ds_http_add_header(req, "Retry-After", "1");
        ds_http_reply_error(req, 503, "unavailable", "out of memory");
        return -1;
    }
    if (*len > cr->max_value) {
        free(*text);
        ds_http_reply_error(req, 413, "payload_too_large", "value longer than %" PRIu64 " bytes",
                            cr->max_value);
        return -1;
    }
    return 0;
}

static void put_route(struct ds_http_req *req)
{
    struct ds_cache_role *cr = req->ctx;
    uint64_t t0 = mono_ns();
    const char *key;
    size_t klen, vlen;
    char *value;
    if (route_key(req, &key, &klen))
        return;
    audit_key(req, key, klen);
    if (body_value(cr, req, &value, &vlen))
        return;
    struct ds_mesi_result res;
    uint64_t op_id = 0;
    int rv = ds_mesi_write(cr->mesi, (const uint8_t *)key, klen, (const uint8_t *)value, vlen,
                           ds_node_now_ms(), &res, &op_id);
    free(value);
    finish_call(cr, req, CACHE_OP_PUT, rv, key, klen, &res, op_id, t0);
}

static void delete_route(struct ds_http_req *req)
{
    struct ds_cache_role *cr = req->ctx;
    uint64_t t0 = mono_ns();
    const char *key;
    size_t klen;
    if (route_key(req, &key, &klen))
        return;
    audit_key(req, key, klen);
    struct ds_mesi_result res;
    uint64_t op_id = 0;
    int rv = ds_mesi_delete(cr->mesi, (const uint8_t *)key, klen, ds_node_now_ms(), &res, &op_id);
    finish_call(cr, req, CACHE_OP_DELETE, rv, key, klen, &res, op_id, t0);
}

static void key_route(struct ds_http_req *req)
{
    switch (req->head.method) {
    case DS_HTTP_GET:
    case DS_HTTP_HEAD:
        get_route(req);
        break;
    case DS_HTTP_DELETE:
        delete_route(req);
        break;
    default:
        put_route(req);
        break;
    }
}

/* ------------------------------------------------------------------ state and stats */

static cJSON *line_json(struct ds_cache_role *cr, const char *key, size_t klen)
{
    struct ds_mesi_line_info li;
    uint64_t now = ds_node_now_ms();
    cJSON *o = cJSON_CreateObject();
    if (ds_mesi_line_info(cr->mesi, (const uint8_t *)key, klen, now, &li)) {
        cJSON_AddStringToObject(o, "state", "I");
        return o;
    }
    cJSON_AddStringToObject(o, "state", ds_mesi_state_name(li.state));
    cJSON_AddNumberToObject(o, "version", (double)li.version);
    cJSON_AddBoolToObject(o, "present", li.present);
    cJSON_AddBoolToObject(o, "lease_valid", li.lease_valid);
    cJSON_AddNumberToObject(o, "lease_remaining_ms",
                            li.lease_valid && li.lease_until > now ? (double)(li.lease_until - now)
                                                                   : 0);
    cJSON_AddBoolToObject(o, "dirty", li.dirty);
    cJSON_AddNumberToObject(o, "pending_ops", li.pending_ops);
    return o;
}

static cJSON *dir_json(struct ds_cache_role *cr, const char *key, size_t klen)
{
    static const char *const names[] = {"I", "S", "EM"};
    struct ds_mesi_dir_info di;
    int rv = ds_mesi_dir_info(cr->mesi, (const uint8_t *)key, klen, ds_node_now_ms(), &di);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "state", rv ? "I" : names[di.state % 3]);
    cJSON_AddBoolToObject(o, "ready", di.ready);
    if (rv) {
        cJSON_AddBoolToObject(o, "entry", 0);
        return o;
    }
    cJSON_AddBoolToObject(o, "entry", 1);
    cJSON *sh = cJSON_AddArrayToObject(o, "sharers");
    for (int i = 0; i < DS_MESI_MAX_NODES; i++)
        if (di.sharers & ((uint64_t)1 << i))
            cJSON_AddItemToArray(sh, cJSON_CreateString(ds_cache_member_name(cr, i)));
    if (di.owner >= 0)
        cJSON_AddStringToObject(o, "owner", ds_cache_member_name(cr, di.owner));
    else
        cJSON_AddNullToObject(o, "owner");
    cJSON_AddNumberToObject(o, "version", (double)di.version);
    cJSON_AddNumberToObject(o, "floor", (double)di.floor);
    cJSON_AddBoolToObject(o, "busy", di.busy);
    cJSON_AddNumberToObject(o, "queued", di.queued);
    return o;
}

static void dir_query_done(int status, const char *body, size_t len, void *arg)
{
    struct dir_query *q = arg;
    if (q->req) {
        q->req->on_abort = NULL;
        cJSON *home = cJSON_GetObjectItemCaseSensitive(q->answer, "home");
        cJSON *dir = status == 200 ? cJSON_ParseWithLength(body, len) : NULL;
        if (dir)
            cJSON_AddItemToObject(home, "directory", dir);
        else
            cJSON_AddStringToObject(home, "error", "the home did not answer");
        ds_http_reply_json(q->req, 200, q->answer);
    }
    cJSON_Delete(q->answer);
    free(q);
}

static void dir_query_abort(struct ds_http_req *req, void *arg)
{
    (void)req;
    struct dir_query *q = arg;
    q->req = NULL;
}

/* /cache/peer/dir/<percent-encoded key> */
static int dir_path(const char *key, size_t klen, char *out, size_t cap)
{
    int n = snprintf(out, cap, "/cache/peer/dir/");
    size_t used = (size_t)n;
    for (size_t i = 0; i < klen; i++) {
        unsigned char c = (unsigned char)key[i];
        if (used + 4 > cap)
            return -1;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~')
            out[used++] = (char)c;
        else
            used += (size_t)snprintf(out + used, cap - used, "%%%02X", c);
    }
    out[used] = 0;
    return 0;
}

/* Ask the home for its directory entry; 0 when the request went out (the reply comes later). */
static int ask_home(struct ds_cache_role *cr, struct ds_http_req *req, uint16_t home, cJSON *answer,
                    const char *key, size_t klen)
{
    char path[16 + 3 * DS_MESI_MAX_KEY + 8];
    const struct cache_member *m = &cr->members[home];
    struct ds_peer *p = m->live && cr->node->peers ? ds_peer_get(cr->node->peers, m->url) : NULL;
    struct dir_query *q = p ? malloc(sizeof *q) : NULL;
    if (!q || dir_path(key, klen, path, sizeof path)) {
        free(q);
        return -1;
    }
    q->req = req;
    q->answer = answer;
    if (ds_peer_request(p, "GET", path, "application/json", "", 0, DIR_QUERY_TIMEOUT_MS,
                        dir_query_done, q)) {
        free(q);
        return -1;
    }
    req->on_abort = dir_query_abort;
    req->abort_arg = q;
    return 0;
}

static void state_route(struct ds_http_req *req)
{
    struct ds_cache_role *cr = req->ctx;
    const char *key;
    size_t klen;
    if (route_key(req, &key, &klen))
        return;
    uint16_t home = ds_cache_home(cr, (const uint8_t *)key, klen);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "key", key);
    cJSON_AddStringToObject(o, "node", cr->node->cfg->node_id);
    cJSON_AddItemToObject(o, "line", line_json(cr, key, klen));
    cJSON *h = cJSON_AddObjectToObject(o, "home");
    cJSON_AddStringToObject(h, "node", ds_cache_member_name(cr, home));
    if (home == cr->self) {
        cJSON_AddItemToObject(h, "directory", dir_json(cr, key, klen));
    } else if (ask_home(cr, req, home, o, key, klen) == 0) {
        return;
    } else {
        cJSON_AddStringToObject(h, "error", "the home is not reachable");
    }
    ds_http_reply_json(req, 200, o);
    cJSON_Delete(o);
}

static void peer_dir_route(struct ds_http_req *req)
{
    struct ds_cache_role *cr = req->ctx;
    const char *key;
    size_t klen;
    if (route_key(req, &key, &klen))
        return;
    cJSON *o = dir_json(cr, key, klen);
    ds_http_reply_json(req, 200, o);
    cJSON_Delete(o);
}

static void stats_route(struct ds_http_req *req)
{
    struct ds_cache_role *cr = req->ctx;
    if (!cr->mesi) {
        ds_http_add_header(req, "Retry-After", "1");
        ds_http_reply_error(req, 503, "unavailable", "this cache node is still joining");
        return;
    }
    const struct ds_mesi_stats *s = ds_mesi_stats(cr->mesi);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "node", cr->node->cfg->node_id);
    cJSON_AddNumberToObject(o, "hits", (double)s->hits);
    cJSON_AddNumberToObject(o, "misses", (double)s->misses);
    uint64_t total = s->hits + s->misses;
    cJSON_AddNumberToObject(o, "hit_ratio", total ? (double)s->hits / (double)total : 0);
    cJSON_AddNumberToObject(o, "entries", (double)s->entries);
    cJSON_AddNumberToObject(o, "bytes", (double)s->bytes);
    cJSON_AddNumberToObject(o, "directory_entries", (double)s->dir_entries);
    cJSON_AddNumberToObject(o, "writebacks", (double)s->writebacks);
    cJSON_AddNumberToObject(o, "invalidations_sent", (double)s->inv_sent);
    cJSON_AddNumberToObject(o, "invalidations_received", (double)s->inv_received);
    cJSON_AddNumberToObject(o, "stale_dropped", (double)s->stale_dropped);
    cJSON_AddNumberToObject(o, "lease_expiries", (double)s->lease_expiries);
    cJSON_AddNumberToObject(o, "dirty_lost", (double)s->dirty_lost);
    cJSON_AddNumberToObject(o, "busy_nacks", (double)s->busy_nacks);
    cJSON_AddNumberToObject(o, "op_timeouts", (double)s->op_timeouts);
    cJSON_AddNumberToObject(o, "memory_writes_refused", (double)s->mem_refused);
    cJSON_AddNumberToObject(o, "home_leases_refused", (double)s->home_lease_refused);
    cJSON *ev = cJSON_AddObjectToObject(o, "evictions");
    cJSON *ln = cJSON_AddObjectToObject(o, "lines");
    for (int i = 0; i < DS_MESI_NSTATES; i++) {
        cJSON_AddNumberToObject(ev, ds_mesi_state_name(i), (double)s->evictions[i]);
        cJSON_AddNumberToObject(ln, ds_mesi_state_name(i), (double)s->lines[i]);
    }
    cJSON *msgs = cJSON_AddObjectToObject(o, "messages");
    for (int t = DS_MESI_MSG_GETS; t < DS_MESI_MSG_NTYPES; t++) {
        cJSON *x = cJSON_AddObjectToObject(msgs, ds_mesi_msg_name(t));
        cJSON_AddNumberToObject(x, "sent", (double)s->msgs_sent[t]);
        cJSON_AddNumberToObject(x, "received", (double)s->msgs_received[t]);
    }
    ds_http_reply_json(req, 200, o);
    cJSON_Delete(o);
}

int ds_cache_api_routes(struct ds_cache_role *cr)
{
    static const struct {
        unsigned methods;
        const char *pattern;
        ds_route_fn *fn;
        unsigned flags;
    } routes[] = {
        {DS_HTTP_GET | DS_HTTP_HEAD, "/cache/stats", stats_route, 0},
        {DS_HTTP_GET | DS_HTTP_HEAD, "/cache/{key}", key_route, 0},
        {DS_HTTP_PUT | DS_HTTP_POST | DS_HTTP_DELETE, "/cache/{key}", key_route, DS_ROUTE_MUTATING},
        {DS_HTTP_GET, "/cache/{key}/state", state_route, 0},
        {DS_HTTP_GET, "/cache/peer/dir/{key}", peer_dir_route, DS_ROUTE_PEER},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (ds_server_route(cr->node->server, routes[i].methods, routes[i].pattern, routes[i].fn,
                            routes[i].flags, cr))
            return ENOMEM;
    return 0;
}
