/* Binary form of lock commands for Raft entries, and the byte reader/writer it shares with
 * snapshots.  Decoders treat every byte as hostile. */
#include <stdlib.h>
#include <string.h>

#include "roles/lock/lock_internal.h"

#define WIRE_VERSION 2

static void wr_need(struct ds_lock_wr *w, size_t n)
{
    if (w->err || w->len + n <= w->cap)
        return;
    size_t cap = w->cap ? w->cap : 64;
    while (cap < w->len + n)
        cap *= 2;
    uint8_t *b = realloc(w->buf, cap);
    if (!b) {
        w->err = DS_LOCK_ENOMEM;
        return;
    }
    w->buf = b;
    w->cap = cap;
}

static void wr_le(struct ds_lock_wr *w, uint64_t v, size_t n)
{
    wr_need(w, n);
    if (w->err)
        return;
    for (size_t i = 0; i < n; i++)
        w->buf[w->len++] = (uint8_t)(v >> (8 * i));
}

void ds_lock_wr_u8(struct ds_lock_wr *w, uint8_t v) { wr_le(w, v, 1); }
void ds_lock_wr_u16(struct ds_lock_wr *w, uint16_t v) { wr_le(w, v, 2); }
void ds_lock_wr_u32(struct ds_lock_wr *w, uint32_t v) { wr_le(w, v, 4); }
void ds_lock_wr_u64(struct ds_lock_wr *w, uint64_t v) { wr_le(w, v, 8); }

void ds_lock_wr_str(struct ds_lock_wr *w, const char *s)
{
    size_t n = strlen(s);
    ds_lock_wr_u16(w, (uint16_t)n);
    wr_need(w, n);
    if (w->err)
        return;
    memcpy(w->buf + w->len, s, n);
    w->len += n;
}

static uint64_t rd_le(struct ds_lock_rd *r, size_t n)
{
    if (r->err || r->len - r->off < n) {
        r->err = DS_LOCK_EDECODE;
        return 0;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)r->p[r->off + i] << (8 * i);
    r->off += n;
    return v;
}

uint8_t ds_lock_rd_u8(struct ds_lock_rd *r) { return (uint8_t)rd_le(r, 1); }
uint16_t ds_lock_rd_u16(struct ds_lock_rd *r) { return (uint16_t)rd_le(r, 2); }
uint32_t ds_lock_rd_u32(struct ds_lock_rd *r) { return (uint32_t)rd_le(r, 4); }
uint64_t ds_lock_rd_u64(struct ds_lock_rd *r) { return rd_le(r, 8); }

void ds_lock_rd_str(struct ds_lock_rd *r, char *dst, size_t min, size_t max)
{
    size_t n = ds_lock_rd_u16(r);
    dst[0] = '\0';
    if (r->err)
        return;
    if (n < min || n > max || r->len - r->off < n || memchr(r->p + r->off, 0, n)) {
        r->err = DS_LOCK_EDECODE;
        return;
    }
    memcpy(dst, r->p + r->off, n);
    dst[n] = '\0';
    r->off += n;
}

/* 1 when s is min..max bytes long before its NUL (max + 1 bytes are readable). */
int ds_lock_name_ok(const char *s, size_t max, size_t min)
{
    size_t n = strnlen(s, max + 1);
    return n >= min && n <= max;
}

void ds_lock_cmd_init(struct ds_lock_cmd *c, enum ds_lock_cmd_type type)
{
    memset(c, 0, sizeof(*c));
    c->type = (uint8_t)type;
}

static int names_ok(const struct ds_lock_cmd *c)
{
    return ds_lock_name_ok(c->resource, DS_LOCK_NAME_MAX, 1) &&
           ds_lock_name_ok(c->client_id, DS_LOCK_NAME_MAX, 1);
}

static int ttl_ok(uint32_t ttl) { return ttl >= DS_LOCK_TTL_MIN_MS && ttl <= DS_LOCK_TTL_MAX_MS; }

int ds_lock_cmd_check(const struct ds_lock_cmd *c)
{
    int ok = c->now_ms <= DS_LOCK_TIME_MAX;
    switch (c->type) {
    case DS_LOCK_CMD_ACQUIRE:
        ok = ok && names_ok(c) && ttl_ok(c->ttl_ms) && c->wait_ms <= DS_LOCK_WAIT_MAX_MS &&
             (c->mode == DS_LOCK_EXCLUSIVE || c->mode == DS_LOCK_SHARED) &&
             ds_lock_name_ok(c->request_id, DS_LOCK_REQUEST_ID_MAX, 0);
        break;
    case DS_LOCK_CMD_RELEASE:
        ok = ok && names_ok(c) && ds_lock_name_ok(c->request_id, DS_LOCK_REQUEST_ID_MAX, 0);
        break;
    case DS_LOCK_CMD_RENEW:
        ok = ok && names_ok(c) && ttl_ok(c->ttl_ms);
        break;
    case DS_LOCK_CMD_CANCEL_WAIT:
        ok = ok && names_ok(c);
        break;
    case DS_LOCK_CMD_EXPIRE:
        break;
    case DS_LOCK_CMD_EXTEND_ALL:
        ok = ok && c->extra_ms <= DS_LOCK_EXTEND_MAX_MS;
        break;
    default:
        ok = 0;
    }
    return ok ? 0 : DS_LOCK_EINVAL;
}

static void encode_body(struct ds_lock_wr *w, const struct ds_lock_cmd *c)
{
    switch (c->type) {
    case DS_LOCK_CMD_ACQUIRE:
        ds_lock_wr_u8(w, c->mode);
        ds_lock_wr_u32(w, c->wait_ms);
        ds_lock_wr_u32(w, c->ttl_ms);
        ds_lock_wr_str(w, c->resource);
        ds_lock_wr_str(w, c->client_id);
        ds_lock_wr_str(w, c->request_id);
        break;
    case DS_LOCK_CMD_RELEASE:
        ds_lock_wr_u64(w, c->token);
        ds_lock_wr_str(w, c->resource);
        ds_lock_wr_str(w, c->client_id);
        ds_lock_wr_str(w, c->request_id);
        break;
    case DS_LOCK_CMD_RENEW:
        ds_lock_wr_u64(w, c->token);
        ds_lock_wr_u32(w, c->ttl_ms);
        ds_lock_wr_str(w, c->resource);
        ds_lock_wr_str(w, c->client_id);
        break;
    case DS_LOCK_CMD_CANCEL_WAIT:
        ds_lock_wr_str(w, c->resource);
        ds_lock_wr_str(w, c->client_id);
        break;
    case DS_LOCK_CMD_EXTEND_ALL:
        ds_lock_wr_u64(w, c->extra_ms);
        break;
    default: /* EXPIRE: no body */
        break;
    }
}

int ds_lock_cmd_encode(const struct ds_lock_cmd *c, uint8_t **out, size_t *len)
{
    int rv = ds_lock_cmd_check(c);
    if (rv)
        return rv;
    struct ds_lock_wr w = { 0 };
    ds_lock_wr_u8(&w, WIRE_VERSION);
    ds_lock_wr_u8(&w, c->type);
    ds_lock_wr_u64(&w, c->now_ms);
    encode_body(&w, c);
    if (w.err) {
        free(w.buf);
        return w.err;
    }
    *out = w.buf;
    *len = w.len;
    return 0;
}

static void decode_names(struct ds_lock_rd *r, struct ds_lock_cmd *c)
{
    ds_lock_rd_str(r, c->resource, 1, DS_LOCK_NAME_MAX);
    ds_lock_rd_str(r, c->client_id, 1, DS_LOCK_NAME_MAX);
}

static void decode_body(struct ds_lock_rd *r, struct ds_lock_cmd *c)
{
    switch (c->type) {
    case DS_LOCK_CMD_ACQUIRE:
        c->mode = ds_lock_rd_u8(r);
        c->wait_ms = ds_lock_rd_u32(r);
        c->ttl_ms = ds_lock_rd_u32(r);
        decode_names(r, c);
        ds_lock_rd_str(r, c->request_id, 0, DS_LOCK_REQUEST_ID_MAX);
        break;
    case DS_LOCK_CMD_RELEASE:
        c->token = ds_lock_rd_u64(r);
        decode_names(r, c);
        ds_lock_rd_str(r, c->request_id, 0, DS_LOCK_REQUEST_ID_MAX);
        break;
    case DS_LOCK_CMD_RENEW:
        c->token = ds_lock_rd_u64(r);
        c->ttl_ms = ds_lock_rd_u32(r);
        decode_names(r, c);
        break;
    case DS_LOCK_CMD_CANCEL_WAIT:
        decode_names(r, c);
        break;
    case DS_LOCK_CMD_EXTEND_ALL:
        c->extra_ms = ds_lock_rd_u64(r);
        break;
    case DS_LOCK_CMD_EXPIRE:
        break;
    default:
        r->err = DS_LOCK_EDECODE;
    }
}

int ds_lock_cmd_decode(const uint8_t *buf, size_t len, struct ds_lock_cmd *c)
{
    struct ds_lock_rd r = { buf, len, 0, 0 };
    ds_lock_cmd_init(c, 0);
    if (ds_lock_rd_u8(&r) != WIRE_VERSION)
        return DS_LOCK_EDECODE;
    c->type = ds_lock_rd_u8(&r);
    c->now_ms = ds_lock_rd_u64(&r);
    decode_body(&r, c);
    if (r.err || r.off != r.len || ds_lock_cmd_check(c)) {
        ds_lock_cmd_init(c, 0);
        return DS_LOCK_EDECODE;
    }
    return 0;
}
