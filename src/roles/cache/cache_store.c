/* Main memory of the cache role: the engine's MEM_READ / MEM_WRITE outputs served by Redis (the
 * async client of roles/queue/redis.h, key -> shard by the ring over [redis] shards) or, without
 * Redis, by this node's own in-memory table (lost when the process ends).
 *
 * Redis layout: one hash per key, "dsc:<key>" {p: 0|1, ver: version, floor: floor, v: value,
 * w: the engine's applied-writes record}, and the key's home lease "dsl:<key>" (on the same shard):
 * the holder's token "<node id>/<incarnation>" with a PX expiry (mesi.h HOME LEASES).  A read takes
 * the lease (or refuses when another holds it), a renewal extends it if still held, and a write
 * refuses unless the writer holds it or when it would go back (a lower version, or the same version
 * with a lower floor): so a home that lost its lease, or a late write of a previous home, is never
 * acknowledged.  Versions stay below 2^53 (Lua numbers).  The embedded store has no lease. */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "core/node.h"
#include "ring/hash.h"
#include "ring/ring.h"
#include "roles/cache/cache_internal.h"
#include "roles/queue/redis.h"

#define KEY_PREFIX "dsc:"
#define LEASE_PREFIX "dsl:"
#define TOKEN_MAX 96
#define RETRY_MIN_MS 50u
#define RETRY_MAX_MS 1000u
#define TABLE_MIN 1024u

static const char read_script[] =
    "local h = redis.call('GET', KEYS[2])\n"
    "if h and h ~= ARGV[1] then return {0} end\n"
    "redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])\n"
    "local r = redis.call('HMGET', KEYS[1], 'p', 'ver', 'floor', 'v', 'w')\n"
    "return {1, r[1], r[2], r[3], r[4], r[5]}\n";

static const char renew_script[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "return 1\n";

static const char write_script[] =
    "if redis.call('GET', KEYS[2]) ~= ARGV[6] then return 0 end\n"
    "local cur = redis.call('HMGET', KEYS[1], 'ver', 'floor')\n"
    "local v, f = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local cv, cf = tonumber(cur[1] or '0'), tonumber(cur[2] or '0')\n"
    "if v < cv or (v == cv and f < cf) then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'p', ARGV[1], 'ver', ARGV[2], 'floor', ARGV[3], 'v', ARGV[4],\n"
    "           'w', ARGV[5])\n"
    "return 1\n";

/* One key of the embedded store. */
struct item {
    struct item *next;
    uint64_t hash;
    int present;
    uint64_t version, floor;
    uint8_t *key, *value;
    uint16_t klen;
    uint32_t vlen;
    uint8_t applied[DS_MESI_MAX_APPLIED];
    uint32_t applied_len;
};

/* A memory operation in flight (Redis) or waiting for its retry. */
struct memop {
    struct memop *prev, *next;
    struct cache_store *s;
    uint64_t id;
    int kind; /* DS_MESI_OUT_MEM_READ / WRITE / RENEW */
    int present;
    uint64_t version, floor;
    uint8_t *key, *value;
    size_t klen, vlen;
    uint8_t applied[DS_MESI_MAX_APPLIED];
    size_t applied_len;
    uint64_t backoff_ms;
    struct event *timer;
};

struct shard {
    char addr[128];
    size_t ring_idx;
    struct ds_redis *r;
};

struct cache_store {
    struct ds_cache_role *cr;
    /* embedded */
    struct item **tab;
    size_t nbuckets, nitems;
    /* redis */
    struct shard shards[DS_CACHE_SHARDS_MAX];
    size_t nshards;
    struct ds_ring *ring;
    struct memop *ops;
    size_t nops;
    uint64_t retries;
    char token[TOKEN_MAX];       /* this node's home lease token */
    uint64_t lease_ms;
    int freeing;
};

/* ------------------------------------------------------------------ embedded table */

static struct item *item_find(struct cache_store *s, const uint8_t *key, size_t klen, uint64_t h)
{
    for (struct item *it = s->tab[h % s->nbuckets]; it; it = it->next)
        if (it->hash == h && it->klen == klen && memcmp(it->key, key, klen) == 0)
            return it;
    return NULL;
}

static void table_grow(struct cache_store *s)
{
    size_t n = s->nbuckets * 2;
    struct item **t = calloc(n, sizeof *t);
    if (!t)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < s->nbuckets; i++)
        for (struct item *it = s->tab[i], *nx; it; it = nx) {
            nx = it->next;
            it->next = t[it->hash % n];
            t[it->hash % n] = it;
        }
    free(s->tab);
    s->tab = t;
    s->nbuckets = n;
}

/* Returns 0, EEXIST when the table holds a newer version (the write is refused, as Redis's
 * script does), or ENOMEM (the engine's write then waits and the glue retries). */
static int table_put(struct cache_store *s, const struct memop *op)
{
    uint64_t h = ds_hash64(op->key, op->klen, 0);
    struct item *it = item_find(s, op->key, op->klen, h);
    if (it && (op->version < it->version || (op->version == it->version && op->floor < it->floor)))
        return EEXIST;
    uint8_t *v = op->vlen ? malloc(op->vlen) : NULL;
    if (op->vlen && !v)
        return ENOMEM;
    if (!it) {
        it = calloc(1, sizeof *it);
        uint8_t *k = it ? malloc(op->klen) : NULL;
        if (!k) {
            free(it);
            free(v);
            return ENOMEM;
        }
        memcpy(k, op->key, op->klen);
        it->key = k;
        it->klen = (uint16_t)op->klen;
        it->hash = h;
        it->next = s->tab[h % s->nbuckets];
        s->tab[h % s->nbuckets] = it;
        if (++s->nitems > s->nbuckets)
            table_grow(s);
    }
    if (op->vlen)
        memcpy(v, op->value, op->vlen);
    free(it->value);
    it->value = v;
    it->vlen = (uint32_t)op->vlen;
    it->present = op->present;
    it->version = op->version;
    it->floor = op->floor;
    memcpy(it->applied, op->applied, op->applied_len);
    it->applied_len = (uint32_t)op->applied_len;
    return 0;
}

/* ------------------------------------------------------------------ operations */

static void op_free(struct memop *op)
{
    struct cache_store *s = op->s;
    if (op->prev)
        op->prev->next = op->next;
    else
        s->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    s->nops--;
    if (op->timer)
        event_free(op->timer);
    free(op->key);
    free(op->value);
    free(op);
}

static void op_start(struct memop *op);

/* The operation's timer: its first start (the next event-loop turn, as the engine is in the middle
 * of its outbox when it asks) and every retry. */
static void start_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    op_start(arg);
}

/* The operation failed: try again after a growing delay (the engine's client deadlines bound what
 * a client waits meanwhile). */
static void op_retry(struct memop *op)
{
    struct cache_store *s = op->s;
    if (s->freeing || s->cr->stopping) {
        op_free(op);
        return;
    }
    s->retries++;
    op->backoff_ms = op->backoff_ms ? op->backoff_ms * 2 : RETRY_MIN_MS;
    if (op->backoff_ms > RETRY_MAX_MS)
        op->backoff_ms = RETRY_MAX_MS;
    if (!op->timer)
        op->timer = evtimer_new(s->cr->node->base, start_cb, op);
    struct timeval tv = {(time_t)(op->backoff_ms / 1000), (suseconds_t)(op->backoff_ms % 1000) * 1000};
    if (!op->timer || evtimer_add(op->timer, &tv)) {
        ds_log(DS_LOG_ERROR, "cache memory operation dropped: out of memory", NULL);
        op_free(op);
    }
}

static void complete_read(struct memop *op, int present, const uint8_t *v, size_t vlen,
                          uint64_t version, uint64_t floor, const uint8_t *applied,
                          size_t applied_len)
{
    struct ds_cache_role *cr = op->s->cr;
    uint64_t id = op->id;
    op_free(op);
    ds_mesi_mem_read_done(cr->mesi, id, present, v, vlen, version, floor, applied, applied_len,
                          ds_node_now_ms());
    ds_cache_drain(cr);
}

/* Another node holds the key's home lease: the engine drops the entry (requesters retry). */
static void complete_read_refused(struct memop *op)
{
    struct ds_cache_role *cr = op->s->cr;
    uint64_t id = op->id;
    op_free(op);
    ds_mesi_mem_read_refused(cr->mesi, id, ds_node_now_ms());
    ds_cache_drain(cr);
}

static void complete_renew(struct memop *op, int held)
{
    struct ds_cache_role *cr = op->s->cr;
    uint64_t id = op->id;
    op_free(op);
    if (!held)
        ds_log(DS_LOG_WARN, "cache: a home lease was lost (another node holds the key's lease)",
               NULL);
    ds_mesi_mem_renew_done(cr->mesi, id, held, ds_node_now_ms());
    ds_cache_drain(cr);
}

/* stored = 0: memory refused the write (a newer version there, or the home lease is another
 * node's): the engine must not answer. */
static void complete_write(struct memop *op, int stored)
{
    struct ds_cache_role *cr = op->s->cr;
    uint64_t id = op->id;
    char v[24];
    snprintf(v, sizeof v, "%" PRIu64, op->version);
    op_free(op);
    if (stored) {
        ds_mesi_mem_write_done(cr->mesi, id, ds_node_now_ms());
    } else {
        ds_log(DS_LOG_WARN, "cache: main memory refused a write (it holds a newer version, or this "
               "node lost the key's home lease)", "version", v, NULL);
        ds_mesi_mem_write_refused(cr->mesi, id, ds_node_now_ms());
    }
    ds_cache_drain(cr);
}

/* A whole number field of HMGET's answer (nil = 0); -1 when malformed. */
static int reply_u64(const redisReply *e, uint64_t *out)
{
    *out = 0;
    if (e->type == REDIS_REPLY_NIL)
        return 0;
    if (e->type != REDIS_REPLY_STRING || e->len > 20)
        return -1;
    char buf[24];
    memcpy(buf, e->str, e->len);
    buf[e->len] = 0;
    return ds_parse_u64(buf, out);
}

/* A string or nil field of HMGET's answer. */
static int reply_bytes(const redisReply *e)
{
    return e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_NIL;
}

/* The read script answers {0} (another node holds the lease) or {1, p, ver, floor, v, w}. */
static void read_cb(struct redisReply *reply, void *arg)
{
    struct memop *op = arg;
    uint64_t present, version, floor;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
        reply->element[0]->type == REDIS_REPLY_INTEGER && reply->element[0]->integer == 0) {
        complete_read_refused(op);
        return;
    }
    redisReply **e = reply && reply->type == REDIS_REPLY_ARRAY ? reply->element : NULL;
    if (!e || reply->elements != 6 || e[0]->type != REDIS_REPLY_INTEGER || e[0]->integer != 1 ||
        reply_u64(e[1], &present) || reply_u64(e[2], &version) || reply_u64(e[3], &floor) ||
        present > 1 || !reply_bytes(e[4]) || e[4]->len > DS_MESI_MAX_VALUE || !reply_bytes(e[5]) ||
        e[5]->len > DS_MESI_MAX_APPLIED) {
        if (reply)
            ds_log(DS_LOG_WARN, "cache: unexpected Redis answer to a read", NULL);
        op_retry(op);
        return;
    }
    const redisReply *v = e[4], *w = e[5];
    complete_read(op, (int)present, v->type == REDIS_REPLY_STRING ? (const uint8_t *)v->str : NULL,
                  v->type == REDIS_REPLY_STRING ? v->len : 0, version, floor,
                  w->type == REDIS_REPLY_STRING ? (const uint8_t *)w->str : NULL,
                  w->type == REDIS_REPLY_STRING ? w->len : 0);
}

/* The write and renew scripts answer 1 (done) or 0 (refused: a newer version, or the lease is not
 * this node's). */
static void write_cb(struct redisReply *reply, void *arg)
{
    struct memop *op = arg;
    if (!reply || reply->type != REDIS_REPLY_INTEGER || reply->integer < 0 || reply->integer > 1) {
        if (reply && reply->type == REDIS_REPLY_ERROR)
            ds_log(DS_LOG_WARN, "cache: Redis refused a script", "error", reply->str, NULL);
        op_retry(op);
        return;
    }
    if (op->kind == DS_MESI_OUT_MEM_RENEW)
        complete_renew(op, reply->integer == 1);
    else
        complete_write(op, reply->integer == 1);
}

static struct shard *shard_of(struct cache_store *s, const uint8_t *key, size_t klen)
{
    size_t idx;
    if (ds_ring_lookup(s->ring, key, klen, &idx))
        return NULL;
    for (size_t i = 0; i < s->nshards; i++)
        if (s->shards[i].ring_idx == idx)
            return &s->shards[i];
    return NULL;
}

/* "<prefix><key>" (malloc'd, *len bytes, not NUL-terminated), or NULL. */
static char *redis_key(const char *prefix, const struct memop *op, size_t *len)
{
    size_t pn = strlen(prefix);
    char *k = malloc(pn + op->klen);
    if (k) {
        memcpy(k, prefix, pn);
        memcpy(k + pn, op->key, op->klen);
    }
    *len = pn + op->klen;
    return k;
}

static int redis_send(struct cache_store *s, struct shard *sh, struct memop *op, const char *rkey,
                      size_t kn, const char *lkey, size_t ln)
{
    char lease[24];
    snprintf(lease, sizeof lease, "%" PRIu64, s->lease_ms);
    const char *tok = s->token;
    if (op->kind == DS_MESI_OUT_MEM_READ) {
        const char *argv[] = {"EVAL", read_script, "2", rkey, lkey, tok, lease};
        size_t lens[] = {4, strlen(read_script), 1, kn, ln, strlen(tok), strlen(lease)};
        return ds_redis_command(sh->r, read_cb, op, 7, argv, lens);
    }
    if (op->kind == DS_MESI_OUT_MEM_RENEW) {
        const char *argv[] = {"EVAL", renew_script, "1", lkey, tok, lease};
        size_t lens[] = {4, strlen(renew_script), 1, ln, strlen(tok), strlen(lease)};
        return ds_redis_command(sh->r, write_cb, op, 6, argv, lens);
    }
    char ver[24], floor[24];
    snprintf(ver, sizeof ver, "%" PRIu64, op->version);
    snprintf(floor, sizeof floor, "%" PRIu64, op->floor);
    const char *argv[] = {"EVAL", write_script, "2", rkey, lkey, op->present ? "1" : "0", ver,
                          floor, op->value ? (const char *)op->value : "",
                          (const char *)op->applied, tok};
    size_t lens[] = {4, strlen(write_script), 1, kn, ln, 1, strlen(ver), strlen(floor), op->vlen,
                     op->applied_len, strlen(tok)};
    return ds_redis_command(sh->r, write_cb, op, 11, argv, lens);
}

static void redis_start(struct memop *op)
{
    struct cache_store *s = op->s;
    struct shard *sh = shard_of(s, op->key, op->klen);
    size_t kn, ln;
    char *rkey = redis_key(KEY_PREFIX, op, &kn), *lkey = redis_key(LEASE_PREFIX, op, &ln);
    int rv = !sh || !rkey || !lkey || redis_send(s, sh, op, rkey, kn, lkey, ln);
    free(rkey);
    free(lkey);
    if (rv)
        op_retry(op);
}

static void op_start(struct memop *op)
{
    struct cache_store *s = op->s;
    if (s->nshards) {
        redis_start(op);
        return;
    }
    if (op->kind == DS_MESI_OUT_MEM_RENEW) { /* no lease here: the engine runs without them */
        complete_renew(op, 1);
        return;
    }
    if (op->kind == DS_MESI_OUT_MEM_WRITE) {
        int rv = table_put(s, op);
        if (rv == ENOMEM) {
            op_retry(op);
            return;
        }
        complete_write(op, rv == 0);
        return;
    }
    uint64_t h = ds_hash64(op->key, op->klen, 0);
    const struct item *it = item_find(s, op->key, op->klen, h);
    if (it)
        complete_read(op, it->present, it->value, it->vlen, it->version, it->floor, it->applied,
                      it->applied_len);
    else
        complete_read(op, 0, NULL, 0, 0, 0, NULL, 0);
}

static struct memop *op_new(struct cache_store *s, uint64_t id, int kind, const uint8_t *key,
                            size_t klen, const uint8_t *value, size_t vlen)
{
    struct memop *op = calloc(1, sizeof *op);
    uint8_t *k = op ? malloc(klen) : NULL;
    uint8_t *v = op && vlen ? malloc(vlen) : NULL;
    if (!op || !k || (vlen && !v)) {
        free(op);
        free(k);
        free(v);
        ds_log(DS_LOG_ERROR, "cache memory operation dropped: out of memory", NULL);
        return NULL;
    }
    memcpy(k, key, klen);
    if (vlen)
        memcpy(v, value, vlen);
    op->s = s;
    op->id = id;
    op->kind = kind;
    op->key = k;
    op->klen = klen;
    op->value = v;
    op->vlen = vlen;
    op->next = s->ops;
    if (s->ops)
        s->ops->prev = op;
    s->ops = op;
    s->nops++;
    return op;
}

static void op_launch(struct memop *op)
{
    if (!op)
        return;
    op->timer = evtimer_new(op->s->cr->node->base, start_cb, op);
    if (!op->timer) {
        op_retry(op);
        return;
    }
    event_active(op->timer, EV_TIMEOUT, 0);
}

void ds_cache_store_read(struct cache_store *s, uint64_t id, const uint8_t *key, size_t klen)
{
    op_launch(op_new(s, id, DS_MESI_OUT_MEM_READ, key, klen, NULL, 0));
}

void ds_cache_store_renew(struct cache_store *s, uint64_t id, const uint8_t *key, size_t klen)
{
    op_launch(op_new(s, id, DS_MESI_OUT_MEM_RENEW, key, klen, NULL, 0));
}

void ds_cache_store_write(struct cache_store *s, uint64_t id, const uint8_t *key, size_t klen,
                          int present, const uint8_t *value, size_t vlen, uint64_t version,
                          uint64_t floor, const uint8_t *applied, size_t applied_len)
{
    struct memop *op = op_new(s, id, DS_MESI_OUT_MEM_WRITE, key, klen, value, vlen);
    if (!op)
        return;
    op->present = present;
    op->version = version;
    op->floor = floor;
    memcpy(op->applied, applied, applied_len);
    op->applied_len = applied_len;
    op_launch(op);
}

/* ------------------------------------------------------------------ life cycle */

static int start_shards(struct cache_store *s, const char *list, char *err)
{
    struct ds_ring_member members[DS_CACHE_SHARDS_MAX];
    char addr[sizeof s->shards[0].addr];
    int got;
    for (const char *p = list; (got = ds_config_list_next(&p, addr, sizeof addr)) != 0;) {
        if (got < 0 || s->nshards == DS_CACHE_SHARDS_MAX) {
            snprintf(err, 512, "[redis] shards: at most %d shards of < 128 bytes",
                     DS_CACHE_SHARDS_MAX);
            return EINVAL;
        }
        struct shard *sh = &s->shards[s->nshards];
        memcpy(sh->addr, addr, sizeof addr);
        members[s->nshards] = (struct ds_ring_member){.id = sh->addr, .weight = 0};
        s->nshards++;
    }
    if (!s->nshards)
        return 0;
    int rv = ds_ring_build(members, s->nshards, 0, &s->ring);
    if (rv) {
        snprintf(err, 512, "[redis] shards: %s", ds_ring_strerror(rv));
        return EINVAL;
    }
    for (size_t i = 0; i < s->nshards; i++) {
        struct shard *sh = &s->shards[i];
        ds_ring_find(s->ring, sh->addr, &sh->ring_idx);
        if (ds_redis_new(s->cr->node->base, sh->addr, s->cr->node->cfg->cache_redis_timeout_ms,
                         NULL, NULL, &sh->r, err))
            return EINVAL;
    }
    return 0;
}

int ds_cache_store_new(struct ds_cache_role *cr, struct cache_store **out, char *err)
{
    struct cache_store *s = calloc(1, sizeof *s);
    if (s) {
        s->nbuckets = TABLE_MIN;
        s->tab = calloc(s->nbuckets, sizeof *s->tab);
    }
    if (!s || !s->tab) {
        free(s);
        snprintf(err, 512, "out of memory");
        return ENOMEM;
    }
    s->cr = cr;
    *out = s;
    snprintf(s->token, sizeof s->token, "%s/%" PRIu64, cr->node->cfg->node_id, cr->incarnation);
    int rv = start_shards(s, cr->node->cfg->redis_shards, err);
    s->lease_ms = s->nshards ? 2 * (uint64_t)cr->node->cfg->cache_lease_ms : 0;
    return rv;
}

uint32_t ds_cache_store_home_lease_ms(const struct cache_store *s)
{
    return (uint32_t)s->lease_ms;
}

void ds_cache_store_free(struct cache_store *s)
{
    if (!s)
        return;
    s->freeing = 1;
    for (size_t i = 0; i < s->nshards; i++)
        ds_redis_free(s->shards[i].r); /* fails every command in flight: op_retry frees them */
    while (s->ops)
        op_free(s->ops);
    for (size_t i = 0; i < s->nbuckets; i++)
        for (struct item *it = s->tab[i], *nx; it; it = nx) {
            nx = it->next;
            free(it->key);
            free(it->value);
            free(it);
        }
    free(s->tab);
    ds_ring_free(s->ring);
    free(s);
}

const char *ds_cache_store_kind(const struct cache_store *s)
{
    return s->nshards ? "redis" : "embedded";
}

void ds_cache_store_shards(const struct cache_store *s, size_t *up, size_t *total)
{
    *up = 0;
    for (size_t i = 0; i < s->nshards; i++)
        *up += ds_redis_up(s->shards[i].r) != 0;
    *total = s->nshards;
}

uint64_t ds_cache_store_retries(const struct cache_store *s)
{
    return s->retries;
}

size_t ds_cache_store_pending(const struct cache_store *s)
{
    return s->nops;
}
