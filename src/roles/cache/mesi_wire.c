/* Compact binary encoding of MESI coherence messages with a decoder that rejects hostile input
 * (layout documented in mesi.h next to DS_MESI_WIRE_HEADER). */
#include "roles/cache/mesi.h"

#include <string.h>

#define WIRE_MAGIC 0xC7u
#define WIRE_VERSION 1u

static uint8_t *put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    return p + 2;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 4;
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 8;
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Field ranges shared by the encoder (programmer errors) and the decoder (hostile input). */
static int msg_valid(const struct ds_mesi_msg *m)
{
    if (m->type < DS_MESI_MSG_GETS || m->type >= DS_MESI_MSG_NTYPES)
        return 0;
    if (m->from >= DS_MESI_MAX_NODES || m->to >= DS_MESI_MAX_NODES)
        return 0;
    if (m->key_len == 0 || m->key_len > DS_MESI_MAX_KEY || m->value_len > DS_MESI_MAX_VALUE)
        return 0;
    if (m->flags & ~(DS_MESI_FLAG_PRESENT | DS_MESI_FLAG_DIRTY | DS_MESI_FLAG_NOCOPY |
                     DS_MESI_FLAG_WRITE))
        return 0;
    if (m->type == DS_MESI_MSG_DATA && m->grant != DS_MESI_S && m->grant != DS_MESI_E &&
        m->grant != DS_MESI_M)
        return 0;
    if (m->type != DS_MESI_MSG_DATA && m->grant != 0)
        return 0;
    if (m->type == DS_MESI_MSG_NACK &&
        (m->reason < DS_MESI_NACK_BUSY || m->reason > DS_MESI_NACK_NOT_OWNER))
        return 0;
    if (m->type != DS_MESI_MSG_NACK && m->reason != 0)
        return 0;
    return 1;
}

int ds_mesi_encode(const struct ds_mesi_msg *msg, uint8_t *buf, size_t cap, size_t *len)
{
    size_t need = DS_MESI_WIRE_HEADER + (size_t)msg->key_len + msg->value_len;
    if (!msg_valid(msg) || cap < need)
        return DS_MESI_EINVAL;
    uint8_t *p = buf;
    *p++ = WIRE_MAGIC;
    *p++ = WIRE_VERSION;
    *p++ = msg->type;
    *p++ = msg->grant;
    *p++ = msg->flags;
    *p++ = msg->reason;
    p = put_u16(p, msg->from);
    p = put_u16(p, msg->to);
    p = put_u64(p, msg->epoch);
    p = put_u64(p, msg->txn);
    p = put_u64(p, msg->req);
    p = put_u64(p, msg->gid);
    p = put_u64(p, msg->version);
    p = put_u64(p, msg->floor);
    p = put_u64(p, msg->ts);
    p = put_u32(p, msg->lease_ms);
    p = put_u16(p, msg->key_len);
    p = put_u32(p, msg->value_len);
    memcpy(p, msg->key, msg->key_len);
    p += msg->key_len;
    if (msg->value_len)
        memcpy(p, msg->value, msg->value_len);
    *len = need;
    return DS_MESI_OK;
}

int ds_mesi_decode(const uint8_t *buf, size_t len, struct ds_mesi_msg *msg)
{
    if (!buf || len < DS_MESI_WIRE_HEADER || buf[0] != WIRE_MAGIC || buf[1] != WIRE_VERSION)
        return DS_MESI_EDECODE;
    struct ds_mesi_msg m;
    memset(&m, 0, sizeof m);
    const uint8_t *p = buf + 2;
    m.type = *p++;
    m.grant = *p++;
    m.flags = *p++;
    m.reason = *p++;
    m.from = get_u16(p), p += 2;
    m.to = get_u16(p), p += 2;
    m.epoch = get_u64(p), p += 8;
    m.txn = get_u64(p), p += 8;
    m.req = get_u64(p), p += 8;
    m.gid = get_u64(p), p += 8;
    m.version = get_u64(p), p += 8;
    m.floor = get_u64(p), p += 8;
    m.ts = get_u64(p), p += 8;
    m.lease_ms = get_u32(p), p += 4;
    m.key_len = get_u16(p), p += 2;
    m.value_len = get_u32(p), p += 4;
    if (!msg_valid(&m))
        return DS_MESI_EDECODE;
    if (len - DS_MESI_WIRE_HEADER != (size_t)m.key_len + m.value_len)
        return DS_MESI_EDECODE;
    m.key = p;
    m.value = m.value_len ? p + m.key_len : NULL;
    *msg = m;
    return DS_MESI_OK;
}
