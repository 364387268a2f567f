/* Binary wire format of Raft messages, configurations and snapshot metadata (see raft.h). */
#include <stdlib.h>
#include <string.h>

#include "raft/raft.h"

#define MSG_HEADER_BYTES (4 + 9 * 8 + 4)
#define ENTRY_HEADER_BYTES (8 + 8 + 1 + 4)

void ds_raft_buf_free(struct ds_raft_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static int buf_reserve(struct ds_raft_buf *b, size_t more)
{
    if (b->cap - b->len >= more)
        return DS_RAFT_OK;
    size_t cap = b->cap ? b->cap : 128;
    while (cap - b->len < more)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return DS_RAFT_ENOMEM;
    b->data = p;
    b->cap = cap;
    return DS_RAFT_OK;
}

static void put_u8(struct ds_raft_buf *b, uint8_t v)
{
    b->data[b->len++] = v;
}

static void put_u32(struct ds_raft_buf *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b->data[b->len++] = (uint8_t)(v >> (8 * i));
}

static void put_u64(struct ds_raft_buf *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b->data[b->len++] = (uint8_t)(v >> (8 * i));
}

static void put_bytes(struct ds_raft_buf *b, const uint8_t *p, size_t n)
{
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* A bounds-checked reader over untrusted bytes. */
struct rd {
    const uint8_t *p;
    size_t left;
};

static int get_u8(struct rd *r, uint8_t *v)
{
    if (r->left < 1)
        return DS_RAFT_ETRUNC;
    *v = r->p[0];
    r->p++;
    r->left--;
    return DS_RAFT_OK;
}

static int get_u32(struct rd *r, uint32_t *v)
{
    if (r->left < 4)
        return DS_RAFT_ETRUNC;
    *v = 0;
    for (int i = 0; i < 4; i++)
        *v |= (uint32_t)r->p[i] << (8 * i);
    r->p += 4;
    r->left -= 4;
    return DS_RAFT_OK;
}

static int get_u64(struct rd *r, uint64_t *v)
{
    if (r->left < 8)
        return DS_RAFT_ETRUNC;
    *v = 0;
    for (int i = 0; i < 8; i++)
        *v |= (uint64_t)r->p[i] << (8 * i);
    r->p += 8;
    r->left -= 8;
    return DS_RAFT_OK;
}

static int get_bytes(struct rd *r, size_t n, const uint8_t **out)
{
    if (r->left < n)
        return DS_RAFT_ETRUNC;
    *out = n ? r->p : NULL;
    r->p += n;
    r->left -= n;
    return DS_RAFT_OK;
}

/* ---- membership ---- */

static size_t conf_size(const struct ds_raft_membership *c)
{
    return 3 + 8 * ((size_t)c->n_voters + c->n_learners);
}

static void conf_put(struct ds_raft_buf *b, const struct ds_raft_membership *c)
{
    put_u8(b, DS_RAFT_WIRE_VERSION);
    put_u8(b, (uint8_t)c->n_voters);
    put_u8(b, (uint8_t)c->n_learners);
    for (uint32_t i = 0; i < c->n_voters; i++)
        put_u64(b, c->voters[i]);
    for (uint32_t i = 0; i < c->n_learners; i++)
        put_u64(b, c->learners[i]);
}

int ds_raft_conf_encode(const struct ds_raft_membership *c, struct ds_raft_buf *b)
{
    if (c->n_voters > DS_RAFT_MAX_NODES || c->n_learners > DS_RAFT_MAX_NODES ||
        c->n_voters + c->n_learners > DS_RAFT_MAX_NODES)
        return DS_RAFT_ETOOBIG;
    int rv = buf_reserve(b, conf_size(c));
    if (rv)
        return rv;
    conf_put(b, c);
    return DS_RAFT_OK;
}

static int conf_id_seen(const uint64_t *ids, uint32_t n, uint64_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

static int conf_get(struct rd *r, struct ds_raft_membership *c)
{
    uint8_t ver, nv, nl;
    uint64_t all[2 * DS_RAFT_MAX_NODES];
    int rv;
    if ((rv = get_u8(r, &ver)) || (rv = get_u8(r, &nv)) || (rv = get_u8(r, &nl)))
        return rv;
    if (ver != DS_RAFT_WIRE_VERSION)
        return DS_RAFT_EVERSION;
    if ((uint32_t)nv + nl > DS_RAFT_MAX_NODES)
        return DS_RAFT_ETOOBIG;
    memset(c, 0, sizeof(*c));
    for (uint32_t i = 0; i < (uint32_t)nv + nl; i++) {
        if ((rv = get_u64(r, &all[i])))
            return rv;
        if (all[i] == 0 || conf_id_seen(all, i, all[i]))
            return DS_RAFT_EFORMAT;
        if (i < nv)
            c->voters[c->n_voters++] = all[i];
        else
            c->learners[c->n_learners++] = all[i];
    }
    return DS_RAFT_OK;
}

int ds_raft_conf_decode(const uint8_t *buf, size_t len, struct ds_raft_membership *c)
{
    struct rd r = {buf, len};
    int rv = conf_get(&r, c);
    if (rv)
        return rv;
    return r.left ? DS_RAFT_EFORMAT : DS_RAFT_OK;
}

/* ---- snapshot metadata ---- */

int ds_raft_snapshot_meta_encode(const struct ds_raft_snapshot_meta *s, struct ds_raft_buf *b)
{
    int rv = buf_reserve(b, 16);
    if (rv)
        return rv;
    put_u64(b, s->index);
    put_u64(b, s->term);
    return ds_raft_conf_encode(&s->conf, b);
}

static int meta_get(struct rd *r, struct ds_raft_snapshot_meta *s)
{
    int rv;
    if ((rv = get_u64(r, &s->index)) || (rv = get_u64(r, &s->term)))
        return rv;
    return conf_get(r, &s->conf);
}

int ds_raft_snapshot_meta_decode(const uint8_t *buf, size_t len, struct ds_raft_snapshot_meta *s)
{
    struct rd r = {buf, len};
    int rv = meta_get(&r, s);
    if (rv)
        return rv;
    return r.left ? DS_RAFT_EFORMAT : DS_RAFT_OK;
}

/* ---- messages ---- */

static size_t msg_size(const struct ds_raft_msg *m)
{
    size_t n = MSG_HEADER_BYTES;
    for (uint32_t i = 0; i < m->n_entries; i++)
        n += ENTRY_HEADER_BYTES + m->entries[i].len;
    if (m->type == DS_RAFT_MSG_SNAPSHOT)
        n += 16 + conf_size(&m->snap.conf) + 4 + m->snap_len;
    return n;
}

static int msg_check_caps(const struct ds_raft_msg *m)
{
    if (m->type < 1 || m->type > DS_RAFT_MSG_TYPE_MAX || m->reject > 1)
        return DS_RAFT_EFORMAT;
    if (m->n_entries > DS_RAFT_WIRE_MAX_ENTRIES || m->snap_len > DS_RAFT_WIRE_MAX_SNAPSHOT_BYTES)
        return DS_RAFT_ETOOBIG;
    for (uint32_t i = 0; i < m->n_entries; i++)
        if (m->entries[i].len > DS_RAFT_WIRE_MAX_ENTRY_BYTES)
            return DS_RAFT_ETOOBIG;
    if (m->snap.conf.n_voters + m->snap.conf.n_learners > DS_RAFT_MAX_NODES)
        return DS_RAFT_ETOOBIG;
    return DS_RAFT_OK;
}

int ds_raft_msg_encode(const struct ds_raft_msg *m, struct ds_raft_buf *b)
{
    int rv = msg_check_caps(m);
    if (rv || (rv = buf_reserve(b, msg_size(m))))
        return rv;
    put_u8(b, DS_RAFT_WIRE_VERSION);
    put_u8(b, m->type);
    put_u8(b, m->flags);
    put_u8(b, m->reject);
    const uint64_t f[9] = {m->from,   m->to,         m->term,      m->log_term, m->index,
                           m->commit, m->hint_index, m->hint_term, m->ctx};
    for (int i = 0; i < 9; i++)
        put_u64(b, f[i]);
    put_u32(b, m->n_entries);
    for (uint32_t i = 0; i < m->n_entries; i++) {
        const struct ds_raft_entry *e = &m->entries[i];
        put_u64(b, e->term);
        put_u64(b, e->index);
        put_u8(b, e->type);
        put_u32(b, e->len);
        put_bytes(b, e->data, e->len);
    }
    if (m->type == DS_RAFT_MSG_SNAPSHOT) {
        put_u64(b, m->snap.index);
        put_u64(b, m->snap.term);
        conf_put(b, &m->snap.conf);
        put_u32(b, m->snap_len);
        put_bytes(b, m->snap_data, m->snap_len);
    }
    return DS_RAFT_OK;
}

static int msg_get_header(struct rd *r, struct ds_raft_msg *m)
{
    uint8_t ver;
    int rv;
    if ((rv = get_u8(r, &ver)))
        return rv;
    if (ver != DS_RAFT_WIRE_VERSION)
        return DS_RAFT_EVERSION;
    if ((rv = get_u8(r, &m->type)) || (rv = get_u8(r, &m->flags)) || (rv = get_u8(r, &m->reject)))
        return rv;
    if (m->type < 1 || m->type > DS_RAFT_MSG_TYPE_MAX || m->reject > 1 ||
        (m->flags & ~DS_RAFT_MSG_FLAG_TRANSFER))
        return DS_RAFT_EFORMAT;
    uint64_t *f[9] = {&m->from,   &m->to,         &m->term,      &m->log_term, &m->index,
                      &m->commit, &m->hint_index, &m->hint_term, &m->ctx};
    for (int i = 0; i < 9; i++)
        if ((rv = get_u64(r, f[i])))
            return rv;
    return get_u32(r, &m->n_entries);
}

static int msg_get_entries(struct rd *r, struct ds_raft_msg *m)
{
    if (m->n_entries == 0)
        return DS_RAFT_OK;
    if (m->n_entries > DS_RAFT_WIRE_MAX_ENTRIES)
        return DS_RAFT_ETOOBIG;
    if (r->left / ENTRY_HEADER_BYTES < m->n_entries)
        return DS_RAFT_ETRUNC; /* checked before allocating: no unbounded allocation */
    m->entries = calloc(m->n_entries, sizeof(*m->entries));
    if (!m->entries)
        return DS_RAFT_ENOMEM;
    for (uint32_t i = 0; i < m->n_entries; i++) {
        struct ds_raft_entry *e = &m->entries[i];
        const uint8_t *p;
        int rv;
        if ((rv = get_u64(r, &e->term)) || (rv = get_u64(r, &e->index)) ||
            (rv = get_u8(r, &e->type)) || (rv = get_u32(r, &e->len)))
            return rv;
        if (e->type < DS_RAFT_ENTRY_NORMAL || e->type > DS_RAFT_ENTRY_CONFIG)
            return DS_RAFT_EFORMAT;
        if (e->len > DS_RAFT_WIRE_MAX_ENTRY_BYTES)
            return DS_RAFT_ETOOBIG;
        if ((rv = get_bytes(r, e->len, &p)))
            return rv;
        e->data = (uint8_t *)p;
    }
    return DS_RAFT_OK;
}

static int msg_get_snapshot(struct rd *r, struct ds_raft_msg *m)
{
    int rv;
    if (m->type != DS_RAFT_MSG_SNAPSHOT)
        return DS_RAFT_OK;
    if ((rv = meta_get(r, &m->snap)) || (rv = get_u32(r, &m->snap_len)))
        return rv;
    if (m->snap_len > DS_RAFT_WIRE_MAX_SNAPSHOT_BYTES)
        return DS_RAFT_ETOOBIG;
    return get_bytes(r, m->snap_len, &m->snap_data);
}

int ds_raft_msg_decode(const uint8_t *buf, size_t len, struct ds_raft_msg *m)
{
    struct rd r = {buf, len};
    int rv;
    memset(m, 0, sizeof(*m));
    if ((rv = msg_get_header(&r, m)) || (rv = msg_get_entries(&r, m)) ||
        (rv = msg_get_snapshot(&r, m)))
        goto err;
    if (r.left) {
        rv = DS_RAFT_EFORMAT;
        goto err;
    }
    return DS_RAFT_OK;
err:
    ds_raft_msg_release(m);
    return rv;
}

void ds_raft_msg_release(struct ds_raft_msg *m)
{
    free(m->entries);
    m->entries = NULL;
    m->n_entries = 0;
}
