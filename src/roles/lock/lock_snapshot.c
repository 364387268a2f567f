/* Snapshot and restore of the whole lock table (format in locktable.h).  Restore checks every
 * invariant the table keeps, so hostile bytes give DS_LOCK_EDECODE, never a broken table. */
#include <stdlib.h>
#include <string.h>

#include "roles/lock/lock_internal.h"

static const uint8_t magic[4] = { 'D', 'S', 'L', 'K' };
#define SNAP_VERSION 2 /* 2: waiters carry wait_deadline; 1 is refused */

static void write_res(struct ds_lock_wr *w, const struct ds_lock_res *r)
{
    ds_lock_wr_str(w, r->name);
    ds_lock_wr_u32(w, (uint32_t)r->nh);
    for (size_t i = 0; i < r->nh; i++) {
        ds_lock_wr_str(w, r->h[i].client);
        ds_lock_wr_u8(w, r->h[i].mode);
        ds_lock_wr_u32(w, r->h[i].ttl_ms);
        ds_lock_wr_u64(w, r->h[i].token);
        ds_lock_wr_u64(w, r->h[i].deadline_ms);
    }
    ds_lock_wr_u32(w, (uint32_t)r->nw);
    for (size_t i = 0; i < r->nw; i++) {
        ds_lock_wr_str(w, r->w[i].client);
        ds_lock_wr_u8(w, r->w[i].mode);
        ds_lock_wr_u8(w, r->w[i].upgrade);
        ds_lock_wr_u32(w, r->w[i].ttl_ms);
        ds_lock_wr_u64(w, r->w[i].since_ms);
        ds_lock_wr_u64(w, r->w[i].wait_deadline_ms);
    }
}

static void write_idem(struct ds_lock_wr *w, const struct ds_lock_idem *rec)
{
    ds_lock_wr_str(w, rec->key); /* the client: the key's bytes up to its NUL */
    ds_lock_wr_u16(w, (uint16_t)(rec->klen - rec->clen - 1));
    for (size_t i = rec->clen + 1; i < rec->klen; i++)
        ds_lock_wr_u8(w, (uint8_t)rec->key[i]);
    ds_lock_wr_u8(w, rec->type);
    ds_lock_wr_str(w, rec->resource);
    ds_lock_wr_u8(w, rec->status);
    ds_lock_wr_u8(w, rec->mode);
    ds_lock_wr_u64(w, rec->token);
    ds_lock_wr_u64(w, rec->deadline_ms);
    ds_lock_wr_u32(w, rec->position);
    ds_lock_wr_u64(w, rec->now_ms);
}

int ds_lock_snapshot(const struct ds_lock_table *t, uint8_t **out, size_t *len)
{
    struct ds_lock_wr w = { 0 };
    struct ds_lock_res **v;
    size_t n;
    int rv = ds_lock_res_sorted(t, &v, &n);
    if (rv)
        return rv;
    for (size_t i = 0; i < sizeof(magic); i++)
        ds_lock_wr_u8(&w, magic[i]);
    ds_lock_wr_u32(&w, SNAP_VERSION);
    ds_lock_wr_u64(&w, t->next_token);
    ds_lock_wr_u32(&w, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        write_res(&w, v[i]);
    free(v);
    ds_lock_wr_u32(&w, (uint32_t)t->idq_n);
    for (size_t i = 0; i < t->idq_n; i++)
        write_idem(&w, t->idq[(t->idq_head + i) % t->idq_cap]);
    if (w.err) {
        free(w.buf);
        return w.err;
    }
    *out = w.buf;
    *len = w.len;
    return 0;
}

/* ---------------------------------------------------------------- restore */

static int mode_ok(uint8_t m) { return m == DS_LOCK_EXCLUSIVE || m == DS_LOCK_SHARED; }

static int ttl_ok(uint32_t ttl) { return ttl >= DS_LOCK_TTL_MIN_MS && ttl <= DS_LOCK_TTL_MAX_MS; }

static size_t holder_index(const struct ds_lock_res *r, const char *client)
{
    size_t i = 0;
    while (i < r->nh && strcmp(r->h[i].client, client) != 0)
        i++;
    return i;
}

static int read_holders(struct ds_lock_rd *rd, struct ds_lock_table *t, struct ds_lock_res *r)
{
    uint32_t n = ds_lock_rd_u32(rd);
    char client[DS_LOCK_NAME_MAX + 1];
    for (uint32_t i = 0; i < n && !rd->err; i++) {
        struct ds_lock_holder h = { client, 0, 0, 0, 0 };
        ds_lock_rd_str(rd, client, 1, DS_LOCK_NAME_MAX);
        h.mode = ds_lock_rd_u8(rd);
        h.ttl_ms = ds_lock_rd_u32(rd);
        h.token = ds_lock_rd_u64(rd);
        h.deadline_ms = ds_lock_rd_u64(rd);
        if (rd->err || !mode_ok(h.mode) || !ttl_ok(h.ttl_ms) || h.token == 0 ||
            h.token >= t->next_token || holder_index(r, client) < r->nh ||
            (r->nh && (h.mode == DS_LOCK_EXCLUSIVE || r->h[0].mode == DS_LOCK_EXCLUSIVE)))
            return DS_LOCK_EDECODE;
        int rv = ds_lock_holder_add(r, &h);
        if (rv)
            return rv;
    }
    return rd->err;
}

/* A waiter must not duplicate one, hold the resource unless it is the (head) upgrade of a shared
 * hold, and an upgrade is exclusive; its wait ends after it began, within the time bounds. */
static int waiter_ok(const struct ds_lock_res *r, const struct ds_lock_waiter *w)
{
    size_t hi = holder_index(r, w->client);
    if (!mode_ok(w->mode) || w->upgrade > 1 || !ttl_ok(w->ttl_ms) ||
        w->wait_deadline_ms <= w->since_ms ||
        w->wait_deadline_ms > DS_LOCK_TIME_MAX + DS_LOCK_WAIT_MAX_MS ||
        ds_lock_waiter_find(r, w->client) < r->nw)
        return 0;
    if (!w->upgrade)
        return hi == r->nh;
    return r->nw == 0 && hi < r->nh && r->h[hi].mode == DS_LOCK_SHARED &&
           w->mode == DS_LOCK_EXCLUSIVE;
}

static int read_waiters(struct ds_lock_rd *rd, struct ds_lock_table *t, struct ds_lock_res *r)
{
    uint32_t n = ds_lock_rd_u32(rd);
    char client[DS_LOCK_NAME_MAX + 1];
    for (uint32_t i = 0; i < n && !rd->err; i++) {
        struct ds_lock_waiter w = { client, 0, 0, 0, 0, 0 };
        ds_lock_rd_str(rd, client, 1, DS_LOCK_NAME_MAX);
        w.mode = ds_lock_rd_u8(rd);
        w.upgrade = ds_lock_rd_u8(rd);
        w.ttl_ms = ds_lock_rd_u32(rd);
        w.since_ms = ds_lock_rd_u64(rd);
        w.wait_deadline_ms = ds_lock_rd_u64(rd);
        if (rd->err || !waiter_ok(r, &w))
            return DS_LOCK_EDECODE;
        int rv = ds_lock_waiter_add(t, r, r->nw, &w);
        if (rv)
            return rv;
    }
    return rd->err;
}

static int read_res(struct ds_lock_rd *rd, struct ds_lock_table *t, char *prev)
{
    char name[DS_LOCK_NAME_MAX + 1];
    ds_lock_rd_str(rd, name, 1, DS_LOCK_NAME_MAX);
    if (rd->err || (prev[0] && strcmp(prev, name) >= 0))
        return DS_LOCK_EDECODE;
    strcpy(prev, name);
    struct ds_lock_res *r = ds_lock_res_get_or_add(t, name);
    if (!r)
        return DS_LOCK_ENOMEM;
    int rv = read_holders(rd, t, r);
    if (!rv)
        rv = read_waiters(rd, t, r);
    if (!rv && ((r->nh == 0 && r->nw == 0) || ds_lock_head_grantable(r)))
        rv = DS_LOCK_EDECODE;
    return rv;
}

static int read_idem(struct ds_lock_rd *rd, struct ds_lock_table *t)
{
    char client[DS_LOCK_NAME_MAX + 1], reqid[DS_LOCK_REQUEST_ID_MAX + 1];
    char resource[DS_LOCK_NAME_MAX + 1];
    struct ds_lock_idem f = { 0 };
    ds_lock_rd_str(rd, client, 1, DS_LOCK_NAME_MAX);
    ds_lock_rd_str(rd, reqid, 1, DS_LOCK_REQUEST_ID_MAX);
    f.type = ds_lock_rd_u8(rd);
    ds_lock_rd_str(rd, resource, 1, DS_LOCK_NAME_MAX);
    f.resource = resource;
    f.status = ds_lock_rd_u8(rd);
    f.mode = ds_lock_rd_u8(rd);
    f.token = ds_lock_rd_u64(rd);
    f.deadline_ms = ds_lock_rd_u64(rd);
    f.position = ds_lock_rd_u32(rd);
    f.now_ms = ds_lock_rd_u64(rd);
    if (rd->err || (f.type != DS_LOCK_CMD_ACQUIRE && f.type != DS_LOCK_CMD_RELEASE) ||
        f.status > DS_LOCK_CONFLICT || f.mode > DS_LOCK_SHARED || f.token >= t->next_token)
        return DS_LOCK_EDECODE;
    char key[DS_LOCK_NAME_MAX + 1 + DS_LOCK_REQUEST_ID_MAX];
    size_t cl = strlen(client), rl = strlen(reqid);
    memcpy(key, client, cl + 1);
    memcpy(key + cl + 1, reqid, rl);
    if (ds_lock_map_get(&t->idem, key, cl + 1 + rl))
        return DS_LOCK_EDECODE;
    return ds_lock_idem_add(t, client, reqid, &f);
}

static int read_table(struct ds_lock_rd *rd, struct ds_lock_table *t)
{
    for (size_t i = 0; i < sizeof(magic); i++)
        if (ds_lock_rd_u8(rd) != magic[i])
            return DS_LOCK_EDECODE;
    if (ds_lock_rd_u32(rd) != SNAP_VERSION)
        return DS_LOCK_EDECODE;
    t->next_token = ds_lock_rd_u64(rd);
    if (t->next_token == 0)
        return DS_LOCK_EDECODE;
    uint32_t n = ds_lock_rd_u32(rd);
    char prev[DS_LOCK_NAME_MAX + 1] = "";
    int rv = rd->err;
    for (uint32_t i = 0; i < n && !rv; i++)
        rv = read_res(rd, t, prev);
    uint32_t m = rv ? 0 : ds_lock_rd_u32(rd);
    if (m > DS_LOCK_IDEM_MAX)
        return DS_LOCK_EDECODE;
    for (uint32_t i = 0; i < m && !rv; i++)
        rv = read_idem(rd, t);
    if (!rv && (rd->err || rd->off != rd->len))
        rv = DS_LOCK_EDECODE;
    return rv;
}

int ds_lock_restore(const uint8_t *buf, size_t len, struct ds_lock_table **out)
{
    struct ds_lock_rd rd = { buf, len, 0, 0 };
    struct ds_lock_table *t = ds_lock_table_new();
    if (!t)
        return DS_LOCK_ENOMEM;
    int rv = read_table(&rd, t);
    if (rv)
        goto err;
    *out = t;
    return 0;
err:
    ds_lock_table_free(t);
    return rv;
}
