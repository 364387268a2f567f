/* Queue routing and naming: partition choice, ring and Redis keys, client message ids. */
#include "roles/queue/qroute.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ring/hash.h"

#define DLQ_SUFFIX ".dlq"
#define DLQ_SUFFIX_LEN 4u

const char *ds_qroute_strerror(int rv)
{
    switch (rv) {
    case DS_QROUTE_OK: return "ok";
    case DS_QROUTE_EINVAL: return "malformed name or id";
    case DS_QROUTE_ERANGE: return "out of range";
    default: return "unknown error";
    }
}

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
}

int ds_qroute_name_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= DS_QROUTE_NAME_MAX || !name_char(s[n]))
            return 0;
    return n > 0;
}

int ds_qroute_is_dlq(const char *queue)
{
    size_t n = strlen(queue);
    return n > DLQ_SUFFIX_LEN && memcmp(queue + n - DLQ_SUFFIX_LEN, DLQ_SUFFIX, DLQ_SUFFIX_LEN) == 0;
}

/* snprintf that reports truncation as DS_QROUTE_ERANGE */
static int fit(int n, size_t len)
{
    return n < 0 || (size_t)n >= len ? DS_QROUTE_ERANGE : DS_QROUTE_OK;
}

/* A bounded string builder for the keys made for every message (snprintf's cost showed in the
 * produce profile): appends that never write past end - 1, then done() adds the NUL. */
struct sb {
    char *p, *end;
    int over;
};

static void sb_mem(struct sb *b, const char *s, size_t n)
{
    if ((size_t)(b->end - b->p) <= n) {
        b->over = 1;
        return;
    }
    memcpy(b->p, s, n);
    b->p += n;
}

static void sb_u32(struct sb *b, uint32_t v)
{
    char t[10];
    size_t n = sizeof t;
    do
        t[--n] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    sb_mem(b, t + n, sizeof t - n);
}

static int sb_done(struct sb *b)
{
    if (b->over || b->p >= b->end)
        return DS_QROUTE_ERANGE;
    *b->p = '\0';
    return DS_QROUTE_OK;
}

int ds_qroute_dlq_name(const char *queue, char *buf, size_t len)
{
    return fit(snprintf(buf, len, "%s" DLQ_SUFFIX, queue), len);
}

uint32_t ds_qroute_partition(const char *key, size_t len, uint32_t partitions, uint64_t rr)
{
    uint64_t h = key ? ds_hash64(key, len, 0) : rr;
    return (uint32_t)(h % partitions);
}

int ds_qroute_ring_key(const char *queue, uint32_t p, char *buf, size_t len)
{
    size_t n = strlen(queue);
    if (ds_qroute_is_dlq(queue))
        n -= DLQ_SUFFIX_LEN;
    struct sb b = {buf, buf + len, 0};
    sb_mem(&b, queue, n);
    sb_mem(&b, "/", 1);
    sb_u32(&b, p);
    return sb_done(&b);
}

int ds_qroute_groups_key(const char *queue, char *buf, size_t len)
{
    struct sb b = {buf, buf + len, 0};
    sb_mem(&b, "dsq:{", 5);
    sb_mem(&b, queue, strlen(queue));
    sb_mem(&b, "}:groups", 8);
    return sb_done(&b);
}

int ds_qroute_stream_key(const char *queue, uint32_t p, char *buf, size_t len)
{
    struct sb b = {buf, buf + len, 0};
    sb_mem(&b, "dsq:{", 5);
    sb_mem(&b, queue, strlen(queue));
    sb_mem(&b, "}:", 2);
    sb_u32(&b, p);
    return sb_done(&b);
}

uint32_t ds_qroute_shard_tag(const char *addr)
{
    return (uint32_t)(ds_hash64(addr, strlen(addr), 0) >> 32);
}

static int digits(const char *s, size_t len, size_t max)
{
    if (len == 0 || len > max)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

int ds_qroute_sid_valid(const char *sid, size_t len)
{
    const char *dash = memchr(sid, '-', len);
    if (!dash)
        return 0;
    size_t a = (size_t)(dash - sid);
    return digits(sid, a, 20) && digits(dash + 1, len - a - 1, 20);
}

int ds_qroute_id_prefix(uint32_t tag, uint32_t p, char *buf, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char t[9];
    for (int i = 0; i < 8; i++)
        t[i] = hex[tag >> (28 - 4 * i) & 0xF];
    t[8] = '.';
    struct sb b = {buf, buf + len, 0};
    sb_mem(&b, t, 9);
    sb_u32(&b, p);
    sb_mem(&b, ".", 1);
    return sb_done(&b);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int ds_qroute_id_parse(const char *id, size_t len, uint32_t partitions, struct ds_qroute_id *out)
{
    if (len < 12 || len >= DS_QROUTE_ID_MAX || id[8] != '.')
        return DS_QROUTE_EINVAL;
    uint32_t tag = 0;
    for (int i = 0; i < 8; i++) {
        int v = hexval(id[i]);
        if (v < 0)
            return DS_QROUTE_EINVAL;
        tag = tag << 4 | (uint32_t)v;
    }
    const char *p = id + 9, *end = id + len;
    const char *dot = memchr(p, '.', (size_t)(end - p));
    if (!dot || !digits(p, (size_t)(dot - p), 4) || (dot - p > 1 && p[0] == '0'))
        return DS_QROUTE_EINVAL;
    uint32_t part = 0;
    for (const char *c = p; c < dot; c++)
        part = part * 10 + (uint32_t)(*c - '0');
    if (part >= partitions)
        return DS_QROUTE_ERANGE;
    size_t sl = (size_t)(end - dot - 1);
    if (!ds_qroute_sid_valid(dot + 1, sl) || sl >= DS_QROUTE_SID_MAX)
        return DS_QROUTE_EINVAL;
    out->tag = tag;
    out->partition = part;
    memcpy(out->sid, dot + 1, sl);
    out->sid[sl] = 0;
    return DS_QROUTE_OK;
}

int ds_qroute_consumer_name(const char *consumer, uint64_t visibility_ms, char *buf, size_t len)
{
    return fit(snprintf(buf, len, "%s@%" PRIu64, consumer, visibility_ms), len);
}

int ds_qroute_consumer_parse(const char *name, char *buf, size_t len, uint64_t *visibility_ms)
{
    const char *at = strrchr(name, '@');
    if (!at || at == name || !digits(at + 1, strlen(at + 1), 19))
        return DS_QROUTE_EINVAL;
    size_t n = (size_t)(at - name);
    if (n >= len)
        return DS_QROUTE_ERANGE;
    uint64_t v = 0;
    for (const char *c = at + 1; *c; c++)
        v = v * 10 + (uint64_t)(*c - '0');
    memcpy(buf, name, n);
    buf[n] = 0;
    *visibility_ms = v;
    return DS_QROUTE_OK;
}
