/* Private structures and helpers of the lock table, shared by its source files (not an API). */
#ifndef DS_ROLES_LOCK_LOCK_INTERNAL_H
#define DS_ROLES_LOCK_LOCK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "roles/lock/locktable.h"

/* Open-addressing hash map (linear probing, backward-shift deletion) from byte strings to
 * pointers.  The key bytes belong to the value and must outlive its slot.  Iteration order is
 * never visible: listings sort by name. */
struct ds_lock_map_slot {
    const char *key; /* NULL = empty slot */
    size_t klen;
    uint64_t hash;
    void *val;
};

struct ds_lock_map {
    struct ds_lock_map_slot *slots;
    size_t cap, n; /* cap is 0 or a power of two */
};

uint64_t ds_lock_hash(const char *key, size_t klen);
void *ds_lock_map_get(const struct ds_lock_map *m, const char *key, size_t klen);
/* Adds a key that is not in the map; 0 or DS_LOCK_ENOMEM (map unchanged). */
int ds_lock_map_put(struct ds_lock_map *m, const char *key, size_t klen, void *val);
/* Removes a key that is in the map. */
void ds_lock_map_del(struct ds_lock_map *m, const char *key, size_t klen);
void ds_lock_map_free(struct ds_lock_map *m);

struct ds_lock_holder {
    char *client;
    uint8_t mode;
    uint32_t ttl_ms;
    uint64_t token, deadline_ms;
};

struct ds_lock_waiter {
    char *client;
    uint8_t mode, upgrade;
    uint32_t ttl_ms;
    uint64_t since_ms, wait_deadline_ms;
};

struct ds_lock_res {
    char *name;
    size_t nlen;
    struct ds_lock_holder *h; /* in grant order */
    size_t nh, caph;          /* caph >= nh + nw: grants from the queue never allocate */
    struct ds_lock_waiter *w; /* FIFO, head first */
    size_t nw, capw;
};

/* A client that waits somewhere: the resources it waits on, sorted by name (the deadlock search
 * walks them in that order, so replicas report the same cycle). */
struct ds_lock_client {
    char *name;
    size_t nlen;
    struct ds_lock_res **waits;
    size_t nwaits, capwaits;
    uint64_t mark; /* deadlock search: visited in search number `mark` */
};

/* The first result of (client, request_id); key = client NUL request_id. */
struct ds_lock_idem {
    char *key;
    size_t klen, clen;
    uint8_t type;
    char *resource;
    uint8_t status, mode;
    uint32_t position;
    uint64_t token, deadline_ms, now_ms;
};

struct ds_lock_table {
    uint64_t next_token;
    struct ds_lock_map res;     /* name -> struct ds_lock_res */
    struct ds_lock_map clients; /* name -> struct ds_lock_client (waiting clients only) */
    struct ds_lock_map idem;    /* key -> struct ds_lock_idem */
    struct ds_lock_idem **idq;  /* ring of records in log order */
    size_t idq_head, idq_n, idq_cap;
    uint64_t search;            /* number of the last deadlock search */
    uint64_t wait_min;          /* <= every waiter's wait_deadline_ms (UINT64_MAX: none) */
    struct ds_lock_stats st;    /* totals only; gauges are computed */
};

/* Resources sorted by name in a malloc'd array (*out, caller frees; NULL when n == 0). */
int ds_lock_res_sorted(const struct ds_lock_table *t, struct ds_lock_res ***out, size_t *n);
/* The resource `name`, created empty if absent; NULL when out of memory. */
struct ds_lock_res *ds_lock_res_get_or_add(struct ds_lock_table *t, const char *name);
int ds_lock_holder_add(struct ds_lock_res *r, const struct ds_lock_holder *h);
/* Inserts a waiter at queue index `at` and indexes it under its client. */
int ds_lock_waiter_add(struct ds_lock_table *t, struct ds_lock_res *r, size_t at,
                       const struct ds_lock_waiter *w);
/* Appends a record built from the arguments to the idempotency ring. */
int ds_lock_idem_add(struct ds_lock_table *t, const char *client, const char *request_id,
                     const struct ds_lock_idem *fields);
/* 1 when the head waiter of `r` could be granted now (the table must never leave it so). */
int ds_lock_head_grantable(const struct ds_lock_res *r);
/* Would a request of `client` in `mode`, queued at index `at` of r, close a cycle in the wait-for
 * graph?  Sets *found and, when it would, appends the cycle to `cycle`.  0 or DS_LOCK_ENOMEM. */
int ds_lock_find_cycle(struct ds_lock_table *t, struct ds_lock_res *r, size_t at,
                       const char *client, uint8_t mode, struct ds_lock_list *cycle, int *found);
/* Appends a copy of e (strings duplicated) to l; 0 or DS_LOCK_ENOMEM. */
int ds_lock_list_push(struct ds_lock_list *l, const struct ds_lock_entry *e);
/* Queue index of client's request on r, or r->nw. */
size_t ds_lock_waiter_find(const struct ds_lock_res *r, const char *client);
int ds_lock_name_ok(const char *s, size_t max, size_t min);

/* Little-endian byte writer into a growing malloc'd buffer; `err` sticks at the first failure. */
struct ds_lock_wr {
    uint8_t *buf;
    size_t len, cap;
    int err;
};

void ds_lock_wr_u8(struct ds_lock_wr *w, uint8_t v);
void ds_lock_wr_u16(struct ds_lock_wr *w, uint16_t v);
void ds_lock_wr_u32(struct ds_lock_wr *w, uint32_t v);
void ds_lock_wr_u64(struct ds_lock_wr *w, uint64_t v);
void ds_lock_wr_str(struct ds_lock_wr *w, const char *s);

/* Bounds-checked reader; `err` sticks at the first short read or bad string, later reads give 0. */
struct ds_lock_rd {
    const uint8_t *p;
    size_t len, off;
    int err;
};

uint8_t ds_lock_rd_u8(struct ds_lock_rd *r);
uint16_t ds_lock_rd_u16(struct ds_lock_rd *r);
uint32_t ds_lock_rd_u32(struct ds_lock_rd *r);
uint64_t ds_lock_rd_u64(struct ds_lock_rd *r);
/* Reads a str of min..max bytes without NUL into dst (room for max + 1), NUL-terminated. */
void ds_lock_rd_str(struct ds_lock_rd *r, char *dst, size_t min, size_t max);

#endif
