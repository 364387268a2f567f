/* SWIM wire format: encode and a strict decoder for hostile input (layout in swim.h). */
#include "gossip/swim.h"

#include <stdlib.h>
#include <string.h>

#define SWIM_MAGIC0 'S'
#define SWIM_MAGIC1 'W'
#define SWIM_VERSION 1
#define NODE_MIN_BYTES 14 /* two 1-byte strings, u64, u8, u8 */

/* ---- encoding ---- */

struct wbuf {
    uint8_t *p;
    size_t len, cap;
    int err;
};

static void put(struct wbuf *w, const void *src, size_t n)
{
    if (w->err)
        return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + n)
            cap *= 2;
        uint8_t *p = realloc(w->p, cap);
        if (p == NULL) {
            w->err = DS_SWIM_ENOMEM;
            return;
        }
        w->p = p;
        w->cap = cap;
    }
    memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void put_u8(struct wbuf *w, uint8_t v)
{
    put(w, &v, 1);
}

static void put_le(struct wbuf *w, uint64_t v, int bytes)
{
    uint8_t b[8];
    for (int i = 0; i < bytes; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    put(w, b, (size_t)bytes);
}

/* A string of at least `min` and below `cap` bytes (cap includes the NUL of the C string). */
static void put_str(struct wbuf *w, const char *s, size_t min, size_t cap)
{
    size_t n = strnlen(s, cap);
    if (n < min || n >= cap) {
        w->err = w->err ? w->err : DS_SWIM_EINVAL;
        return;
    }
    put_u8(w, (uint8_t)n);
    put(w, s, n);
}

static void put_node(struct wbuf *w, const struct ds_swim_node *n)
{
    if (n->state > DS_SWIM_LEFT || n->n_meta > DS_SWIM_META_MAX) {
        w->err = w->err ? w->err : DS_SWIM_EINVAL;
        return;
    }
    put_str(w, n->id, 1, DS_SWIM_ID_MAX);
    put_str(w, n->url, 1, DS_SWIM_URL_MAX);
    put_le(w, n->incarnation, 8);
    put_u8(w, n->state);
    put_u8(w, n->n_meta);
    for (uint8_t i = 0; i < n->n_meta; i++) {
        put_str(w, n->meta[i].key, 1, DS_SWIM_META_KEY_MAX);
        put_str(w, n->meta[i].value, 0, DS_SWIM_META_VAL_MAX);
    }
}

int ds_swim_msg_encode(const struct ds_swim_msg *m, uint8_t **buf, size_t *len)
{
    struct wbuf w = {0};
    if (m->type < DS_SWIM_MSG_PING || m->type > DS_SWIM_MSG_SYNC_ACK ||
        m->n_nodes > DS_SWIM_MEMBERS_MAX)
        return DS_SWIM_EINVAL;
    put_u8(&w, SWIM_MAGIC0);
    put_u8(&w, SWIM_MAGIC1);
    put_u8(&w, SWIM_VERSION);
    put_u8(&w, m->type);
    put_le(&w, m->seq, 4);
    put_str(&w, m->cluster, 1, DS_SWIM_CLUSTER_MAX);
    put_str(&w, m->role, 1, DS_SWIM_ROLE_MAX);
    put_node(&w, &m->from);
    put_str(&w, m->target_id, 0, DS_SWIM_ID_MAX);
    put_str(&w, m->target_url, 0, DS_SWIM_URL_MAX);
    put_le(&w, m->n_nodes, 2);
    for (uint16_t i = 0; i < m->n_nodes; i++)
        put_node(&w, &m->nodes[i]);
    if (!w.err && w.len > DS_SWIM_MSG_MAX)
        w.err = DS_SWIM_ETOOBIG;
    if (w.err) {
        free(w.p);
        return w.err;
    }
    *buf = w.p;
    *len = w.len;
    return DS_SWIM_OK;
}

/* ---- decoding ---- */

struct rbuf {
    const uint8_t *p;
    size_t left;
    int err;
};

static void fail(struct rbuf *r, int err)
{
    if (!r->err)
        r->err = err;
    r->left = 0;
}

static uint64_t get_le(struct rbuf *r, int bytes)
{
    uint64_t v = 0;
    if (r->left < (size_t)bytes) {
        fail(r, DS_SWIM_ETRUNC);
        return 0;
    }
    for (int i = bytes - 1; i >= 0; i--)
        v = (v << 8) | r->p[i];
    r->p += bytes;
    r->left -= (size_t)bytes;
    return v;
}

/* Reads a str8 into dst[cap]: at least `min` bytes, below `cap`, no NUL inside. */
static void get_str(struct rbuf *r, char *dst, size_t min, size_t cap)
{
    size_t n = (size_t)get_le(r, 1);
    dst[0] = '\0';
    if (r->err)
        return;
    if (n >= cap) {
        fail(r, DS_SWIM_ETOOBIG);
        return;
    }
    if (n < min) {
        fail(r, DS_SWIM_EBADMSG);
        return;
    }
    if (r->left < n) {
        fail(r, DS_SWIM_ETRUNC);
        return;
    }
    if (memchr(r->p, '\0', n) != NULL) {
        fail(r, DS_SWIM_EBADMSG);
        return;
    }
    memcpy(dst, r->p, n);
    dst[n] = '\0';
    r->p += n;
    r->left -= n;
}

static void get_node(struct rbuf *r, struct ds_swim_node *n)
{
    memset(n, 0, sizeof *n);
    get_str(r, n->id, 1, DS_SWIM_ID_MAX);
    get_str(r, n->url, 1, DS_SWIM_URL_MAX);
    n->incarnation = get_le(r, 8);
    n->state = (uint8_t)get_le(r, 1);
    n->n_meta = (uint8_t)get_le(r, 1);
    if (r->err)
        return;
    if (n->state > DS_SWIM_LEFT) {
        fail(r, DS_SWIM_EBADMSG);
        return;
    }
    if (n->n_meta > DS_SWIM_META_MAX) {
        fail(r, DS_SWIM_ETOOBIG);
        return;
    }
    for (uint8_t i = 0; i < n->n_meta; i++) {
        get_str(r, n->meta[i].key, 1, DS_SWIM_META_KEY_MAX);
        get_str(r, n->meta[i].value, 0, DS_SWIM_META_VAL_MAX);
    }
}

static void get_header(struct rbuf *r, struct ds_swim_msg *m)
{
    uint8_t m0 = (uint8_t)get_le(r, 1), m1 = (uint8_t)get_le(r, 1);
    uint8_t version = (uint8_t)get_le(r, 1);
    m->type = (uint8_t)get_le(r, 1);
    m->seq = (uint32_t)get_le(r, 4);
    if (r->err)
        return;
    if (m0 != SWIM_MAGIC0 || m1 != SWIM_MAGIC1 || version != SWIM_VERSION ||
        m->type < DS_SWIM_MSG_PING || m->type > DS_SWIM_MSG_SYNC_ACK) {
        fail(r, DS_SWIM_EBADMSG);
        return;
    }
    get_str(r, m->cluster, 1, DS_SWIM_CLUSTER_MAX);
    get_str(r, m->role, 1, DS_SWIM_ROLE_MAX);
    get_node(r, &m->from);
    get_str(r, m->target_id, 0, DS_SWIM_ID_MAX);
    get_str(r, m->target_url, 0, DS_SWIM_URL_MAX);
}

int ds_swim_msg_decode(const uint8_t *buf, size_t len, struct ds_swim_msg *m)
{
    struct rbuf r = {buf, len, 0};
    int rv;
    memset(m, 0, sizeof *m);
    if (len > DS_SWIM_MSG_MAX)
        return DS_SWIM_ETOOBIG;
    get_header(&r, m);
    size_t n = (size_t)get_le(&r, 2);
    if (r.err)
        return r.err;
    if (n > DS_SWIM_MEMBERS_MAX)
        return DS_SWIM_ETOOBIG;
    if (n * NODE_MIN_BYTES > r.left)
        return DS_SWIM_ETRUNC;
    if (n) {
        m->nodes = calloc(n, sizeof *m->nodes);
        if (m->nodes == NULL)
            return DS_SWIM_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        get_node(&r, &m->nodes[i]);
    rv = r.err ? r.err : r.left ? DS_SWIM_EBADMSG : DS_SWIM_OK;
    if (rv != DS_SWIM_OK)
        goto err;
    m->n_nodes = (uint16_t)n;
    return DS_SWIM_OK;
err:
    free(m->nodes);
    m->nodes = NULL;
    return rv;
}

void ds_swim_msg_free(struct ds_swim_msg *m)
{
    free(m->nodes);
    m->nodes = NULL;
    m->n_nodes = 0;
}
