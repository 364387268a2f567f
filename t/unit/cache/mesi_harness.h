/* Test harness for the MESI engine: a few engines on one virtual clock, a network of wire-encoded
 * messages the test delivers, drops or delays, and a main memory shared by every home (like Redis:
 * it refuses writes that go back, and keeps the homes' leases when cfg.home_lease_ms is set). */
#ifndef DS_T_MESI_HARNESS_H
#define DS_T_MESI_HARNESS_H

#include "roles/cache/mesi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define H_MAXN 8
#define H_MAXMEM 16

struct h_net;

struct h_ring {
    struct ds_mesi_ring ops;
    int n;
    int fixed; /* >= 0: every key lives there; < 0: hashed over n */
};

static inline uint16_t h_home_of(const struct ds_mesi_ring *ring, const uint8_t *key, size_t len)
{
    const struct h_ring *r = (const struct h_ring *)(const void *)ring;
    if (r->fixed >= 0)
        return (uint16_t)r->fixed;
    unsigned h = 7;
    for (size_t i = 0; i < len; i++)
        h = h * 31 + key[i];
    return (uint16_t)(h % (unsigned)r->n);
}

struct h_pkt {
    uint8_t *bytes;
    size_t len;
    int to, from;
    uint8_t type;
    uint64_t at; /* deliver at (virtual ms) */
};

struct h_memop {
    int node;
    int kind; /* DS_MESI_OUT_MEM_READ / WRITE / RENEW */
    uint64_t id, at;
    char key[64];
    uint8_t *value;
    uint32_t vlen;
    int present;
    uint64_t version, floor;
    uint64_t incarnation;
    uint8_t applied[DS_MESI_MAX_APPLIED];
    uint32_t applied_len;
};

struct h_mem {
    char key[64];
    int present;
    uint8_t value[256];
    uint32_t vlen;
    uint64_t version, floor;
    uint8_t applied[DS_MESI_MAX_APPLIED];
    uint32_t applied_len;
    int holder;               /* home lease: node, incarnation and expiry (virtual ms) */
    uint64_t holder_inc, lease_expiry;
    int used;
};

struct h_done {
    int node;
    struct ds_mesi_result res;
    char value[256];
    char key[64];
};

struct h_lost {
    int node;
    char key[64];
    uint64_t from, to;
};

typedef uint64_t (*h_delay_fn)(struct h_net *h, int from, int to);
/* Called for every write main memory stores. */
typedef void (*h_mem_fn)(struct h_net *h, const struct h_memop *op);

struct h_net {
    h_delay_fn delay; /* packet delay; UINT64_MAX = lost; NULL = 0 */
    int n;
    struct ds_mesi *node[H_MAXN];
    uint64_t incarnation[H_MAXN];
    struct ds_mesi_config cfg;
    struct h_ring ring;          /* the membership every node agrees on... */
    struct h_ring view[H_MAXN];  /* ...and each node's own view of it (a test may skew one) */
    uint64_t now;
    struct h_pkt *pkts;
    size_t npkts, cappkts;
    struct h_memop *memops;
    size_t nmemops, capmemops;
    struct h_mem mem[H_MAXMEM];
    int mem_delay; /* 0: memory answers at once */
    int mem_regress; /* set when memory saw a version or floor go backwards */
    uint64_t mem_refused; /* writes refused: a lower version (or floor), as Redis's script does */
    h_mem_fn on_mem_write;
    struct h_done *dones;
    size_t ndones, capdones;
    struct h_lost *losts;
    size_t nlosts, caplosts;
};

#define H_PUSH(arr, n, cap)                                                   \
    do {                                                                      \
        if ((n) == (cap)) {                                                   \
            (cap) = (cap) ? (cap) * 2 : 64;                                   \
            (arr) = realloc((arr), (cap) * sizeof *(arr));                    \
            if (!(arr))                                                       \
                abort();                                                      \
        }                                                                     \
        memset(&(arr)[(n)], 0, sizeof *(arr));                                \
        (n)++;                                                                \
    } while (0)

static inline void h_start(struct h_net *h, int i)
{
    struct ds_mesi_config c = h->cfg;
    c.self = (uint16_t)i;
    c.incarnation = (uint64_t)(i + 1) << 16 | ++h->incarnation[i]; /* ids unique across nodes */
    h->view[i] = h->ring;
    c.ring = &h->view[i].ops;
    if (ds_mesi_create(&c, h->now, &h->node[i]) != DS_MESI_OK)
        abort();
}

/* n nodes; home = fixed node (>= 0) or hashed (-1).  The clock starts after the homes' warm-up. */
static inline void h_init(struct h_net *h, int n, int home, const struct ds_mesi_config *cfg)
{
    memset(h, 0, sizeof *h);
    h->n = n;
    h->ring.ops.home_of = h_home_of;
    h->ring.n = n;
    h->ring.fixed = home;
    if (cfg)
        h->cfg = *cfg;
    else
        ds_mesi_config_default(&h->cfg);
    h->now = 1000;
    for (int i = 0; i < n; i++)
        h_start(h, i);
    h->now += h->cfg.lease_ms + h->cfg.margin_ms;
}

static inline void h_free(struct h_net *h)
{
    for (int i = 0; i < h->n; i++)
        ds_mesi_destroy(h->node[i]);
    for (size_t i = 0; i < h->npkts; i++)
        free(h->pkts[i].bytes);
    for (size_t i = 0; i < h->nmemops; i++)
        free(h->memops[i].value);
    free(h->pkts);
    free(h->memops);
    free(h->dones);
    free(h->losts);
}

static inline struct h_mem *h_mem_slot(struct h_net *h, const char *key)
{
    for (int i = 0; i < H_MAXMEM; i++)
        if (h->mem[i].used && strcmp(h->mem[i].key, key) == 0)
            return &h->mem[i];
    for (int i = 0; i < H_MAXMEM; i++)
        if (!h->mem[i].used) {
            h->mem[i].used = 1;
            snprintf(h->mem[i].key, sizeof h->mem[i].key, "%s", key);
            return &h->mem[i];
        }
    abort();
}

static inline void h_copy_key(char *dst, const uint8_t *k, size_t n)
{
    size_t m = n < 63 ? n : 63;
    memcpy(dst, k, m);
    dst[m] = 0;
}

/* Home leases: does op's node hold the key's lease (take = also when free, for a MEM_READ)? */
static inline int h_lease(struct h_net *h, struct h_mem *s, const struct h_memop *op, int take)
{
    if (!h->cfg.home_lease_ms)
        return 1;
    int mine = s->lease_expiry > h->now && s->holder == op->node &&
               s->holder_inc == op->incarnation;
    if (!mine && !(take && s->lease_expiry <= h->now))
        return 0;
    if (op->kind != DS_MESI_OUT_MEM_WRITE) {
        s->holder = op->node;
        s->holder_inc = op->incarnation;
        s->lease_expiry = h->now + h->cfg.home_lease_ms;
    }
    return 1;
}

static inline void h_mem_complete(struct h_net *h, struct h_memop *op)
{
    struct h_mem *s = h_mem_slot(h, op->key);
    int held = h_lease(h, s, op, op->kind == DS_MESI_OUT_MEM_READ);
    if (getenv("DS_TRACE"))
        fprintf(stderr, "%llu: memory %s %s from %d v=%llu fl=%llu lease %s (%d until %llu)\n",
                (unsigned long long)h->now,
                op->kind == DS_MESI_OUT_MEM_READ    ? "read"
                : op->kind == DS_MESI_OUT_MEM_WRITE ? "write"
                                                    : "renew",
                op->key, op->node, (unsigned long long)op->version, (unsigned long long)op->floor,
                held ? "held" : "refused", s->holder, (unsigned long long)s->lease_expiry);
    int refused = op->kind == DS_MESI_OUT_MEM_WRITE &&
                  (!held || op->version < s->version ||
                   (op->version == s->version && op->floor < s->floor));
    if (op->kind == DS_MESI_OUT_MEM_WRITE && held &&
        (op->version < s->version || op->floor < s->floor))
        h->mem_regress = 1;
    h->mem_refused += (uint64_t)refused;
    if (op->kind == DS_MESI_OUT_MEM_WRITE && !refused) {
        if (h->on_mem_write)
            h->on_mem_write(h, op);
        s->present = op->present;
        s->vlen = op->vlen < sizeof s->value ? op->vlen : (uint32_t)sizeof s->value;
        if (s->vlen)
            memcpy(s->value, op->value, s->vlen);
        s->version = op->version;
        s->floor = op->floor;
        memcpy(s->applied, op->applied, op->applied_len);
        s->applied_len = op->applied_len;
    }
    /* The completion reaches only the incarnation that asked. */
    if (!h->node[op->node] || h->incarnation[op->node] != op->incarnation)
        return;
    if (op->kind == DS_MESI_OUT_MEM_READ && !held)
        ds_mesi_mem_read_refused(h->node[op->node], op->id, h->now);
    else if (op->kind == DS_MESI_OUT_MEM_READ)
        ds_mesi_mem_read_done(h->node[op->node], op->id, s->present, s->value, s->vlen, s->version,
                              s->floor, s->applied, s->applied_len, h->now);
    else if (op->kind == DS_MESI_OUT_MEM_RENEW)
        ds_mesi_mem_renew_done(h->node[op->node], op->id, held, h->now);
    else if (refused)
        ds_mesi_mem_write_refused(h->node[op->node], op->id, h->now);
    else
        ds_mesi_mem_write_done(h->node[op->node], op->id, h->now);
}

/* Moves node i's outputs into the network (h->delay decides delay or loss), memory and logs. */
static inline void h_collect(struct h_net *h, int i)
{
    h_delay_fn delay = h->delay;
    struct ds_mesi_out o;
    while (h->node[i] && ds_mesi_poll(h->node[i], &o)) {
        if (o.kind == DS_MESI_OUT_SEND) {
            uint64_t d = delay ? delay(h, i, o.msg.to) : 0;
            if (d == UINT64_MAX)
                continue;
            H_PUSH(h->pkts, h->npkts, h->cappkts);
            struct h_pkt *p = &h->pkts[h->npkts - 1];
            p->bytes = malloc(DS_MESI_WIRE_HEADER + o.msg.key_len + o.msg.value_len);
            if (!p->bytes || ds_mesi_encode(&o.msg, p->bytes, DS_MESI_WIRE_HEADER + o.msg.key_len +
                                            o.msg.value_len, &p->len) != DS_MESI_OK)
                abort();
            p->to = o.msg.to;
            p->from = i;
            p->type = o.msg.type;
            p->at = h->now + d;
        } else if (o.kind == DS_MESI_OUT_MEM_READ || o.kind == DS_MESI_OUT_MEM_WRITE ||
                   o.kind == DS_MESI_OUT_MEM_RENEW) {
            H_PUSH(h->memops, h->nmemops, h->capmemops);
            struct h_memop *op = &h->memops[h->nmemops - 1];
            op->node = i;
            op->kind = o.kind;
            op->id = o.id;
            op->incarnation = h->incarnation[i];
            h_copy_key(op->key, o.key, o.key_len);
            op->value = malloc(o.value_len + 1);
            if (!op->value)
                abort();
            memcpy(op->value, o.value ? o.value : (const uint8_t *)"", o.value_len);
            op->vlen = o.value_len;
            op->present = o.present;
            op->version = o.version;
            op->floor = o.floor;
            memcpy(op->applied, o.applied, o.applied_len);
            op->applied_len = o.applied_len;
            op->at = h->now + (h->mem_delay ? (uint64_t)(h->now % (unsigned)h->mem_delay) : 0);
        } else if (o.kind == DS_MESI_OUT_DONE) {
            H_PUSH(h->dones, h->ndones, h->capdones);
            struct h_done *d = &h->dones[h->ndones - 1];
            d->node = i;
            d->res = o.res;
            h_copy_key(d->key, o.key, o.key_len);
            size_t vl = o.res.value_len < 255 ? o.res.value_len : 255;
            if (vl)
                memcpy(d->value, o.res.value, vl);
            d->value[vl] = 0;
            d->res.value = NULL;
        } else {
            H_PUSH(h->losts, h->nlosts, h->caplosts);
            struct h_lost *l = &h->losts[h->nlosts - 1];
            l->node = i;
            h_copy_key(l->key, o.key, o.key_len);
            l->from = o.lost_from;
            l->to = o.lost_to;
        }
    }
}

static inline void h_collect_all(struct h_net *h)
{
    for (int i = 0; i < h->n; i++)
        h_collect(h, i);
}

static inline void h_deliver_pkt(struct h_net *h, size_t k)
{
    struct h_pkt p = h->pkts[k];
    memmove(&h->pkts[k], &h->pkts[k + 1], (h->npkts - k - 1) * sizeof *h->pkts);
    h->npkts--;
    struct ds_mesi_msg msg;
    if (ds_mesi_decode(p.bytes, p.len, &msg) != DS_MESI_OK)
        abort();
    if (getenv("DS_TRACE"))
        fprintf(stderr, "%llu: %d->%d %s %.*s txn=%llx req=%llx gid=%llx v=%llu fl=%llu g=%d f=%x r=%d%s\n",
                (unsigned long long)h->now, p.from, p.to, ds_mesi_msg_name(msg.type),
                (int)msg.key_len, (const char *)msg.key, (unsigned long long)msg.txn,
                (unsigned long long)msg.req, (unsigned long long)msg.gid,
                (unsigned long long)msg.version, (unsigned long long)msg.floor, msg.grant,
                msg.flags, msg.reason, h->node[p.to] ? "" : " (dead)");
    if (h->node[p.to])
        ds_mesi_recv(h->node[p.to], &msg, h->now);
    free(p.bytes);
}

/* Completes due memory operations (all of them when mem_delay == 0). */
static inline void h_run_mem(struct h_net *h)
{
    size_t k = 0;
    while (k < h->nmemops) {
        if (h->memops[k].at > h->now) {
            k++;
            continue;
        }
        struct h_memop op = h->memops[k];
        memmove(&h->memops[k], &h->memops[k + 1], (h->nmemops - k - 1) * sizeof *h->memops);
        h->nmemops--;
        h_mem_complete(h, &op);
        free(op.value);
        h_collect_all(h);
        k = 0;
    }
}

/* Index of the first packet of `type` (0 = any) to node `to` (-1 = any), or -1. */
static inline long h_find(struct h_net *h, int type, int to)
{
    h_collect_all(h);
    for (size_t k = 0; k < h->npkts; k++)
        if ((!type || h->pkts[k].type == type) && (to < 0 || h->pkts[k].to == to))
            return (long)k;
    return -1;
}

/* Unit tests: deliver the first packet of that type to that node; 1 if there was one. */
static inline int h_deliver(struct h_net *h, int type, int to)
{
    h_collect_all(h);
    h_run_mem(h);
    long k = h_find(h, type, to);
    if (k < 0)
        return 0;
    h_deliver_pkt(h, (size_t)k);
    h_collect_all(h);
    h_run_mem(h);
    return 1;
}

static inline int h_drop(struct h_net *h, int type, int to)
{
    h_collect_all(h);
    long k = h_find(h, type, to);
    if (k < 0)
        return 0;
    free(h->pkts[k].bytes);
    memmove(&h->pkts[k], &h->pkts[k + 1], (h->npkts - (size_t)k - 1) * sizeof *h->pkts);
    h->npkts--;
    return 1;
}

/* Delivers everything in order until the network is quiet (bounded). */
static inline void h_settle(struct h_net *h)
{
    for (int guard = 0; guard < 10000 && h_deliver(h, 0, -1); guard++)
        ;
}

static inline void h_advance(struct h_net *h, uint64_t ms)
{
    for (uint64_t t = 0; t < ms; t++) {
        h->now++;
        for (int i = 0; i < h->n; i++)
            if (h->node[i])
                ds_mesi_tick(h->node[i], h->now);
        h_collect_all(h);
        h_run_mem(h);
    }
}

static inline const struct h_done *h_last_done(struct h_net *h, uint64_t op_id)
{
    h_collect_all(h);
    for (size_t i = 0; i < h->ndones; i++)
        if (h->dones[i].res.op_id == op_id)
            return &h->dones[i];
    return NULL;
}

static inline int h_read(struct h_net *h, int i, const char *key, struct ds_mesi_result *res, uint64_t *op)
{
    int rv = ds_mesi_read(h->node[i], (const uint8_t *)key, strlen(key), h->now, res, op);
    return rv;
}

static inline int h_write(struct h_net *h, int i, const char *key, const char *val,
                   struct ds_mesi_result *res, uint64_t *op)
{
    return ds_mesi_write(h->node[i], (const uint8_t *)key, strlen(key), (const uint8_t *)val,
                         strlen(val), h->now, res, op);
}

static inline int h_state(struct h_net *h, int i, const char *key)
{
    struct ds_mesi_line_info li;
    if (ds_mesi_line_info(h->node[i], (const uint8_t *)key, strlen(key), h->now, &li) != DS_MESI_OK)
        return DS_MESI_I;
    return li.state;
}

static inline struct ds_mesi_dir_info h_dir(struct h_net *h, int i, const char *key)
{
    struct ds_mesi_dir_info di;
    ds_mesi_dir_info(h->node[i], (const uint8_t *)key, strlen(key), h->now, &di);
    return di;
}

#endif
