/* Shared helpers of the lock table tests: build commands, apply them, compare tables. */
#ifndef DS_T_UNIT_LOCK_HELPERS_H
#define DS_T_UNIT_LOCK_HELPERS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "roles/lock/locktable.h"

#define EX DS_LOCK_EXCLUSIVE
#define SH DS_LOCK_SHARED
#define TTL 10000u
#define WAIT 60000u /* wait_ms of the tests' waiting requests unless they need another */

static uint64_t now_ms = 1000000;
static struct ds_lock_result res; /* result of the last helper call */

static inline struct ds_lock_cmd mk(enum ds_lock_cmd_type type, const char *resource,
                                    const char *client)
{
    struct ds_lock_cmd c;
    ds_lock_cmd_init(&c, type);
    c.now_ms = now_ms;
    snprintf(c.resource, sizeof(c.resource), "%s", resource ? resource : "");
    snprintf(c.client_id, sizeof(c.client_id), "%s", client ? client : "");
    return c;
}

static inline int run(struct ds_lock_table *t, const struct ds_lock_cmd *c)
{
    ds_lock_result_free(&res);
    if (ds_lock_apply(t, c, &res) != 0) {
        fprintf(stderr, "ds_lock_apply ran out of memory\n");
        abort();
    }
    return res.status;
}

static inline int acq_full(struct ds_lock_table *t, const char *r, const char *cl, int mode,
                           uint32_t wait_ms, uint32_t ttl, const char *request_id)
{
    struct ds_lock_cmd c = mk(DS_LOCK_CMD_ACQUIRE, r, cl);
    c.mode = (uint8_t)mode;
    c.wait_ms = wait_ms;
    c.ttl_ms = ttl;
    snprintf(c.request_id, sizeof(c.request_id), "%s", request_id ? request_id : "");
    return run(t, &c);
}

static inline int acq(struct ds_lock_table *t, const char *r, const char *cl, int mode,
                      uint32_t wait_ms)
{
    return acq_full(t, r, cl, mode, wait_ms, TTL, NULL);
}

static inline int rel_full(struct ds_lock_table *t, const char *r, const char *cl,
                           uint64_t token, const char *request_id)
{
    struct ds_lock_cmd c = mk(DS_LOCK_CMD_RELEASE, r, cl);
    c.token = token;
    snprintf(c.request_id, sizeof(c.request_id), "%s", request_id ? request_id : "");
    return run(t, &c);
}

/* The token `cl` holds on `r`, 0 when it holds nothing there. */
static inline uint64_t token_of(struct ds_lock_table *t, const char *r, const char *cl)
{
    struct ds_lock_list h = { 0 }, w = { 0 };
    uint8_t mode;
    uint64_t tok = 0;
    ds_lock_query(t, r, &mode, &h, &w);
    for (size_t i = 0; i < h.n; i++)
        if (strcmp(h.v[i].client_id, cl) == 0)
            tok = h.v[i].token;
    ds_lock_list_free(&h);
    ds_lock_list_free(&w);
    return tok;
}

static inline int rel(struct ds_lock_table *t, const char *r, const char *cl)
{
    return rel_full(t, r, cl, token_of(t, r, cl), NULL);
}

static inline int cancel(struct ds_lock_table *t, const char *r, const char *cl)
{
    struct ds_lock_cmd c = mk(DS_LOCK_CMD_CANCEL_WAIT, r, cl);
    return run(t, &c);
}

static inline int expire_at(struct ds_lock_table *t, uint64_t when)
{
    struct ds_lock_cmd c = mk(DS_LOCK_CMD_EXPIRE, NULL, NULL);
    c.now_ms = when;
    return run(t, &c);
}

/* 1 when client `cl` is in list l (for resource r when r != NULL). */
static inline int in_list(const struct ds_lock_list *l, const char *r, const char *cl)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].client_id, cl) == 0 && (!r || strcmp(l->v[i].resource, r) == 0))
            return 1;
    return 0;
}

/* Number of waiters on r. */
static inline size_t nwaiters(struct ds_lock_table *t, const char *r)
{
    struct ds_lock_list h = { 0 }, w = { 0 };
    uint8_t mode;
    ds_lock_query(t, r, &mode, &h, &w);
    size_t n = w.n;
    ds_lock_list_free(&h);
    ds_lock_list_free(&w);
    return n;
}

/* Snapshot bytes of t (caller frees), aborting when out of memory. */
static inline uint8_t *snap(const struct ds_lock_table *t, size_t *len)
{
    uint8_t *b;
    if (ds_lock_snapshot(t, &b, len) != 0)
        abort();
    return b;
}

/* 1 when two tables serialize to the same bytes. */
static inline int same_state(const struct ds_lock_table *a, const struct ds_lock_table *b)
{
    size_t la, lb;
    uint8_t *x = snap(a, &la), *y = snap(b, &lb);
    int same = la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

/* A copy of t through snapshot and restore. */
static inline struct ds_lock_table *clone_table(const struct ds_lock_table *t)
{
    size_t len;
    uint8_t *b = snap(t, &len);
    struct ds_lock_table *c = NULL;
    if (ds_lock_restore(b, len, &c) != 0)
        c = NULL;
    free(b);
    return c;
}

#endif
