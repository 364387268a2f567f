/* The lock table state machine (issue 4): acquire, release, renew, cancel, expire and extend
 * applied from the Raft log, wait deadlines, FIFO writer-preferring grants and idempotency
 * records.  The semantics are documented in locktable.h; the deadlock search is in
 * lock_deadlock.c. */
#include <stdlib.h>
#include <string.h>

#include "roles/lock/lock_internal.h"

/* ---------------------------------------------------------------- lists and results */

int ds_lock_list_push(struct ds_lock_list *l, const struct ds_lock_entry *e)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        struct ds_lock_entry *v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return DS_LOCK_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    struct ds_lock_entry *d = &l->v[l->n];
    *d = *e;
    d->resource = strdup(e->resource);
    d->client_id = strdup(e->client_id);
    if (!d->resource || !d->client_id) {
        free(d->resource);
        free(d->client_id);
        return DS_LOCK_ENOMEM;
    }
    l->n++;
    return 0;
}

void ds_lock_list_free(struct ds_lock_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].resource);
        free(l->v[i].client_id);
    }
    free(l->v);
    memset(l, 0, sizeof(*l));
}

void ds_lock_result_free(struct ds_lock_result *r)
{
    ds_lock_list_free(&r->holders);
    ds_lock_list_free(&r->granted);
    ds_lock_list_free(&r->expired);
    ds_lock_list_free(&r->timed_out);
    ds_lock_list_free(&r->cycle);
    memset(r, 0, sizeof(*r));
}

static int push_holder(struct ds_lock_list *l, const struct ds_lock_res *r,
                       const struct ds_lock_holder *h)
{
    struct ds_lock_entry e = { r->name, h->client, h->mode, 0, h->ttl_ms, h->token,
                               h->deadline_ms, 0 };
    return ds_lock_list_push(l, &e);
}

static int push_waiter(struct ds_lock_list *l, const struct ds_lock_res *r,
                       const struct ds_lock_waiter *w)
{
    struct ds_lock_entry e = { r->name, w->client, w->mode, w->upgrade, w->ttl_ms, 0,
                               w->wait_deadline_ms, w->since_ms };
    return ds_lock_list_push(l, &e);
}

static int push_holders(struct ds_lock_list *l, const struct ds_lock_res *r)
{
    for (size_t i = 0; i < r->nh; i++) {
        int rv = push_holder(l, r, &r->h[i]);
        if (rv)
            return rv;
    }
    return 0;
}

/* ---------------------------------------------------------------- table, resources, clients */

struct ds_lock_table *ds_lock_table_new(void)
{
    struct ds_lock_table *t = calloc(1, sizeof(*t));
    if (t) {
        t->next_token = 1;
        t->wait_min = UINT64_MAX;
    }
    return t;
}

static void res_free(struct ds_lock_res *r)
{
    for (size_t i = 0; i < r->nh; i++)
        free(r->h[i].client);
    for (size_t i = 0; i < r->nw; i++)
        free(r->w[i].client);
    free(r->h);
    free(r->w);
    free(r->name);
    free(r);
}

static void client_free(struct ds_lock_client *c)
{
    free(c->waits);
    free(c->name);
    free(c);
}

static void idem_free(struct ds_lock_idem *rec)
{
    free(rec->key);
    free(rec->resource);
    free(rec);
}

void ds_lock_table_free(struct ds_lock_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->res.cap; i++)
        if (t->res.slots[i].key)
            res_free(t->res.slots[i].val);
    for (size_t i = 0; i < t->clients.cap; i++)
        if (t->clients.slots[i].key)
            client_free(t->clients.slots[i].val);
    for (size_t i = 0; i < t->idq_n; i++)
        idem_free(t->idq[(t->idq_head + i) % t->idq_cap]);
    ds_lock_map_free(&t->res);
    ds_lock_map_free(&t->clients);
    ds_lock_map_free(&t->idem);
    free(t->idq);
    free(t);
}

static struct ds_lock_res *res_get(const struct ds_lock_table *t, const char *name)
{
    return ds_lock_map_get(&t->res, name, strlen(name));
}

struct ds_lock_res *ds_lock_res_get_or_add(struct ds_lock_table *t, const char *name)
{
    struct ds_lock_res *r = res_get(t, name);
    if (r)
        return r;
    r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->nlen = strlen(name);
    r->name = strdup(name);
    if (!r->name || ds_lock_map_put(&t->res, r->name, r->nlen, r)) {
        free(r->name);
        free(r);
        return NULL;
    }
    return r;
}

static void res_drop_if_empty(struct ds_lock_table *t, struct ds_lock_res *r)
{
    if (r->nh || r->nw)
        return;
    ds_lock_map_del(&t->res, r->name, r->nlen);
    res_free(r);
}

static int cmp_res(const void *a, const void *b)
{
    const struct ds_lock_res *x = *(struct ds_lock_res *const *)a;
    const struct ds_lock_res *y = *(struct ds_lock_res *const *)b;
    return strcmp(x->name, y->name);
}

int ds_lock_res_sorted(const struct ds_lock_table *t, struct ds_lock_res ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (t->res.n == 0)
        return 0;
    struct ds_lock_res **v = malloc(t->res.n * sizeof(*v));
    if (!v)
        return DS_LOCK_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < t->res.cap; i++)
        if (t->res.slots[i].key)
            v[k++] = t->res.slots[i].val;
    qsort(v, k, sizeof(*v), cmp_res);
    *out = v;
    *n = k;
    return 0;
}

/* `arr` (of *cap elements of `size` bytes) grown to hold at least `need`: the same or a new array,
 * or NULL when out of memory (then `arr` is untouched). */
static void *grow(void *arr, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return arr;
    size_t c = *cap ? *cap : 2;
    while (c < need)
        c *= 2;
    void *v = realloc(arr, c * size);
    if (v)
        *cap = c;
    return v;
}

static int reserve_holders(struct ds_lock_res *r, size_t need)
{
    struct ds_lock_holder *h = grow(r->h, &r->caph, need, sizeof(*h));
    if (!h)
        return DS_LOCK_ENOMEM;
    r->h = h;
    return 0;
}

static int reserve_waiters(struct ds_lock_res *r, size_t need)
{
    struct ds_lock_waiter *w = grow(r->w, &r->capw, need, sizeof(*w));
    if (!w)
        return DS_LOCK_ENOMEM;
    r->w = w;
    return 0;
}

/* Copies `h` (its client string too) to the end of the holders. */
int ds_lock_holder_add(struct ds_lock_res *r, const struct ds_lock_holder *h)
{
    char *client = strdup(h->client);
    if (!client || reserve_holders(r, r->nh + r->nw + 1)) {
        free(client);
        return DS_LOCK_ENOMEM;
    }
    r->h[r->nh] = *h;
    r->h[r->nh++].client = client;
    return 0;
}

static size_t holder_find(const struct ds_lock_res *r, const char *client)
{
    size_t i = 0;
    while (i < r->nh && strcmp(r->h[i].client, client) != 0)
        i++;
    return i;
}

size_t ds_lock_waiter_find(const struct ds_lock_res *r, const char *client)
{
    size_t i = 0;
    while (i < r->nw && strcmp(r->w[i].client, client) != 0)
        i++;
    return i;
}

static void holder_remove(struct ds_lock_res *r, size_t i)
{
    free(r->h[i].client);
    memmove(&r->h[i], &r->h[i + 1], (r->nh - i - 1) * sizeof(*r->h));
    r->nh--;
}

static int client_add_wait(struct ds_lock_table *t, const char *name, struct ds_lock_res *r)
{
    struct ds_lock_client *c = ds_lock_map_get(&t->clients, name, strlen(name));
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c || !(c->name = strdup(name))) {
            free(c);
            return DS_LOCK_ENOMEM;
        }
        c->nlen = strlen(name);
        if (ds_lock_map_put(&t->clients, c->name, c->nlen, c)) {
            client_free(c);
            return DS_LOCK_ENOMEM;
        }
    }
    struct ds_lock_res **waits = grow(c->waits, &c->capwaits, c->nwaits + 1, sizeof(*waits));
    if (!waits)
        return DS_LOCK_ENOMEM; /* an empty client left in the map is harmless: it blocks nobody */
    c->waits = waits;
    size_t at = c->nwaits;
    while (at > 0 && strcmp(c->waits[at - 1]->name, r->name) > 0)
        at--;
    memmove(&c->waits[at + 1], &c->waits[at], (c->nwaits - at) * sizeof(*c->waits));
    c->waits[at] = r;
    c->nwaits++;
    return 0;
}

static void client_del_wait(struct ds_lock_table *t, const char *name, const struct ds_lock_res *r)
{
    struct ds_lock_client *c = ds_lock_map_get(&t->clients, name, strlen(name));
    size_t i = 0;
    while (c->waits[i] != r)
        i++;
    memmove(&c->waits[i], &c->waits[i + 1], (c->nwaits - i - 1) * sizeof(*c->waits));
    if (--c->nwaits == 0) {
        ds_lock_map_del(&t->clients, c->name, c->nlen);
        client_free(c);
    }
}

int ds_lock_waiter_add(struct ds_lock_table *t, struct ds_lock_res *r, size_t at,
                       const struct ds_lock_waiter *w)
{
    char *client = strdup(w->client);
    if (!client || reserve_waiters(r, r->nw + 1) || reserve_holders(r, r->nh + r->nw + 1) ||
        client_add_wait(t, client, r)) {
        free(client);
        return DS_LOCK_ENOMEM;
    }
    memmove(&r->w[at + 1], &r->w[at], (r->nw - at) * sizeof(*r->w));
    r->w[at] = *w;
    r->w[at].client = client;
    r->nw++;
    if (w->wait_deadline_ms < t->wait_min)
        t->wait_min = w->wait_deadline_ms;
    return 0;
}

/* Removes the waiter at `i` from the queue and the client index; the caller owns its client. */
static struct ds_lock_waiter waiter_take(struct ds_lock_table *t, struct ds_lock_res *r, size_t i)
{
    struct ds_lock_waiter w = r->w[i];
    client_del_wait(t, w.client, r);
    memmove(&r->w[i], &r->w[i + 1], (r->nw - i - 1) * sizeof(*r->w));
    r->nw--;
    return w;
}

/* ---------------------------------------------------------------- grants */

static int compatible(uint8_t a, uint8_t b)
{
    return a == DS_LOCK_SHARED && b == DS_LOCK_SHARED;
}

/* 1 when every holder but `except` (may be NULL) is compatible with `mode`. */
static int holders_allow(const struct ds_lock_res *r, uint8_t mode, const char *except)
{
    for (size_t i = 0; i < r->nh; i++)
        if (!compatible(r->h[i].mode, mode) && (!except || strcmp(r->h[i].client, except) != 0))
            return 0;
    return 1;
}

int ds_lock_head_grantable(const struct ds_lock_res *r)
{
    if (r->nw == 0)
        return 0;
    const struct ds_lock_waiter *w = &r->w[0];
    if (w->upgrade)
        return r->nh == 1 && strcmp(r->h[0].client, w->client) == 0;
    return holders_allow(r, w->mode, NULL);
}

static uint64_t new_token(struct ds_lock_table *t)
{
    t->st.grants++;
    return t->next_token++;
}

/* Grants the head waiter (the caller checked it is grantable) and reports it in out->granted. */
static int grant_head(struct ds_lock_table *t, struct ds_lock_res *r, uint64_t now,
                      struct ds_lock_result *out)
{
    struct ds_lock_waiter w = waiter_take(t, r, 0);
    struct ds_lock_holder *h;
    if (w.upgrade) {
        h = &r->h[0];
        free(w.client);
        h->mode = DS_LOCK_EXCLUSIVE;
    } else {
        h = &r->h[r->nh++]; /* room reserved when the waiter queued */
        h->client = w.client;
        h->mode = w.mode;
    }
    h->ttl_ms = w.ttl_ms;
    h->deadline_ms = now + w.ttl_ms;
    h->token = new_token(t);
    return push_holder(&out->granted, r, h);
}

/* Grants the head of the queue while it is grantable: after every command no head waiter is. */
static int grant_waiters(struct ds_lock_table *t, struct ds_lock_res *r, uint64_t now,
                         struct ds_lock_result *out)
{
    while (ds_lock_head_grantable(r)) {
        int rv = grant_head(t, r, now, out);
        if (rv)
            return rv;
    }
    return 0;
}

static int answer_granted(struct ds_lock_result *out, const struct ds_lock_res *r,
                          const struct ds_lock_holder *h)
{
    out->status = DS_LOCK_GRANTED;
    out->mode = h->mode;
    out->token = h->token;
    out->deadline_ms = h->deadline_ms;
    return push_holders(&out->holders, r);
}

static int answer_held(struct ds_lock_result *out, const struct ds_lock_res *r)
{
    out->status = DS_LOCK_HELD;
    return push_holders(&out->holders, r);
}

/* ---------------------------------------------------------------- ACQUIRE */

static int grant_new(struct ds_lock_table *t, const struct ds_lock_cmd *c,
                     struct ds_lock_result *out)
{
    struct ds_lock_res *r = ds_lock_res_get_or_add(t, c->resource);
    if (!r)
        return DS_LOCK_ENOMEM;
    struct ds_lock_holder h = { (char *)c->client_id, c->mode, c->ttl_ms, t->next_token,
                                c->now_ms + c->ttl_ms };
    if (ds_lock_holder_add(r, &h)) {
        res_drop_if_empty(t, r);
        return DS_LOCK_ENOMEM;
    }
    new_token(t);
    return answer_granted(out, r, &r->h[r->nh - 1]);
}

static int enqueue(struct ds_lock_table *t, struct ds_lock_res *r, size_t at,
                   const struct ds_lock_cmd *c, uint8_t upgrade, struct ds_lock_result *out)
{
    uint8_t mode = upgrade ? DS_LOCK_EXCLUSIVE : c->mode;
    int found = 0;
    int rv = ds_lock_find_cycle(t, r, at, c->client_id, mode, &out->cycle, &found);
    if (rv)
        return rv;
    if (found) {
        out->status = DS_LOCK_DEADLOCK;
        t->st.deadlocks++;
        return 0;
    }
    struct ds_lock_waiter w = { (char *)c->client_id, mode, upgrade, c->ttl_ms, c->now_ms,
                                c->now_ms + c->wait_ms };
    rv = ds_lock_waiter_add(t, r, at, &w);
    if (rv)
        return rv;
    out->status = DS_LOCK_QUEUED;
    out->position = (uint32_t)at + 1;
    return 0;
}

/* A queued client asked again in the same mode: it keeps its place, and the retry's wait may
 * lengthen (never shorten) its wait. */
static int answer_queued_again(struct ds_lock_waiter *w, size_t i, const struct ds_lock_cmd *c,
                               struct ds_lock_result *out)
{
    uint64_t deadline = c->now_ms + c->wait_ms;
    if (deadline > w->wait_deadline_ms)
        w->wait_deadline_ms = deadline;
    out->status = DS_LOCK_QUEUED;
    out->position = (uint32_t)i + 1;
    return 0;
}

static void refresh(struct ds_lock_holder *h, const struct ds_lock_cmd *c)
{
    h->ttl_ms = c->ttl_ms;
    h->deadline_ms = c->now_ms + c->ttl_ms;
}

/* The client holds r: refresh (same mode), downgrade, or upgrade. */
static int acquire_as_holder(struct ds_lock_table *t, struct ds_lock_res *r, size_t hi,
                             const struct ds_lock_cmd *c, struct ds_lock_result *out)
{
    struct ds_lock_holder *h = &r->h[hi];
    if (h->mode == c->mode) {
        refresh(h, c);
        out->refreshed = 1;
        return answer_granted(out, r, h);
    }
    if (h->mode == DS_LOCK_EXCLUSIVE) {
        refresh(h, c);
        h->mode = DS_LOCK_SHARED;
        h->token = new_token(t);
        int rv = grant_waiters(t, r, c->now_ms, out);
        return rv ? rv : answer_granted(out, r, h);
    }
    size_t wi = ds_lock_waiter_find(r, c->client_id);
    if (wi < r->nw)
        return answer_queued_again(&r->w[wi], wi, c, out);
    if (r->nh == 1) {
        refresh(h, c);
        h->mode = DS_LOCK_EXCLUSIVE;
        h->token = new_token(t);
        return answer_granted(out, r, h);
    }
    if (!c->wait_ms)
        return answer_held(out, r);
    return enqueue(t, r, 0, c, 1, out);
}

static int do_acquire(struct ds_lock_table *t, const struct ds_lock_cmd *c,
                      struct ds_lock_result *out)
{
    struct ds_lock_res *r = res_get(t, c->resource);
    if (r) {
        size_t i = holder_find(r, c->client_id);
        if (i < r->nh)
            return acquire_as_holder(t, r, i, c, out);
        i = ds_lock_waiter_find(r, c->client_id);
        if (i < r->nw && r->w[i].mode == c->mode)
            return answer_queued_again(&r->w[i], i, c, out);
        if (i < r->nw) {
            out->status = DS_LOCK_CONFLICT;
            return 0;
        }
    }
    if (!r || (r->nw == 0 && holders_allow(r, c->mode, NULL)))
        return grant_new(t, c, out);
    if (!c->wait_ms)
        return answer_held(out, r);
    return enqueue(t, r, r->nw, c, 0, out);
}

/* ---------------------------------------------------------------- RELEASE, RENEW, CANCEL */

/* The holder index of (client, token) on `resource`, or SIZE_MAX. */
static size_t find_hold(const struct ds_lock_table *t, const struct ds_lock_cmd *c,
                        struct ds_lock_res **rp)
{
    struct ds_lock_res *r = res_get(t, c->resource);
    *rp = r;
    if (!r)
        return SIZE_MAX;
    size_t i = holder_find(r, c->client_id);
    return i < r->nh && r->h[i].token == c->token ? i : SIZE_MAX;
}

/* The client lost its hold on r: a queued upgrade of it becomes a plain exclusive request. */
static void end_hold(struct ds_lock_res *r, size_t hi)
{
    size_t wi = ds_lock_waiter_find(r, r->h[hi].client);
    if (wi < r->nw)
        r->w[wi].upgrade = 0;
    holder_remove(r, hi);
}

static int do_release(struct ds_lock_table *t, const struct ds_lock_cmd *c,
                      struct ds_lock_result *out)
{
    struct ds_lock_res *r;
    size_t i = find_hold(t, c, &r);
    if (i == SIZE_MAX) {
        out->status = DS_LOCK_NOT_HOLDER;
        return 0;
    }
    end_hold(r, i);
    t->st.releases++;
    out->status = DS_LOCK_OK;
    int rv = grant_waiters(t, r, c->now_ms, out);
    res_drop_if_empty(t, r);
    return rv;
}

static int do_renew(struct ds_lock_table *t, const struct ds_lock_cmd *c,
                    struct ds_lock_result *out)
{
    struct ds_lock_res *r;
    size_t i = find_hold(t, c, &r);
    if (i == SIZE_MAX) {
        out->status = DS_LOCK_NOT_HOLDER;
        return 0;
    }
    refresh(&r->h[i], c);
    t->st.renewals++;
    out->status = DS_LOCK_OK;
    out->mode = r->h[i].mode;
    out->token = r->h[i].token;
    out->deadline_ms = r->h[i].deadline_ms;
    return 0;
}

static int do_cancel(struct ds_lock_table *t, const struct ds_lock_cmd *c,
                     struct ds_lock_result *out)
{
    struct ds_lock_res *r = res_get(t, c->resource);
    size_t i = r ? ds_lock_waiter_find(r, c->client_id) : 0;
    if (!r || i == r->nw) {
        out->status = DS_LOCK_NOT_WAITING;
        return 0;
    }
    free(waiter_take(t, r, i).client);
    t->st.cancels++;
    out->status = DS_LOCK_OK;
    int rv = grant_waiters(t, r, c->now_ms, out);
    res_drop_if_empty(t, r);
    return rv;
}

/* ---------------------------------------------------------------- EXPIRE, EXTEND_ALL */

static int cmp_expired(const void *a, const void *b)
{
    const struct ds_lock_entry *x = a, *y = b;
    if (x->deadline_ms != y->deadline_ms)
        return x->deadline_ms < y->deadline_ms ? -1 : 1;
    int d = strcmp(x->resource, y->resource);
    return d ? d : strcmp(x->client_id, y->client_id);
}

static int expire_res(struct ds_lock_table *t, struct ds_lock_res *r, uint64_t now,
                      struct ds_lock_result *out)
{
    int rv = 0;
    for (size_t i = 0; i < r->nh && !rv;) {
        if (r->h[i].deadline_ms > now) {
            i++;
            continue;
        }
        rv = push_holder(&out->expired, r, &r->h[i]);
        end_hold(r, i);
        t->st.expiries++;
    }
    if (!rv)
        rv = grant_waiters(t, r, now, out);
    res_drop_if_empty(t, r);
    return rv;
}

static int do_expire(struct ds_lock_table *t, const struct ds_lock_cmd *c,
                     struct ds_lock_result *out)
{
    struct ds_lock_res **v;
    size_t n;
    int rv = ds_lock_res_sorted(t, &v, &n);
    for (size_t i = 0; i < n && !rv; i++)
        rv = expire_res(t, v[i], c->now_ms, out);
    free(v);
    if (out->expired.n > 1)
        qsort(out->expired.v, out->expired.n, sizeof(*out->expired.v), cmp_expired);
    out->status = DS_LOCK_OK;
    return rv;
}

static int do_extend(struct ds_lock_table *t, const struct ds_lock_cmd *c,
                     struct ds_lock_result *out)
{
    for (size_t s = 0; s < t->res.cap; s++) {
        struct ds_lock_res *r = t->res.slots[s].key ? t->res.slots[s].val : NULL;
        for (size_t i = 0; r && i < r->nh; i++) {
            uint64_t d = r->h[i].deadline_ms;
            r->h[i].deadline_ms = d > UINT64_MAX - c->extra_ms ? UINT64_MAX : d + c->extra_ms;
        }
    }
    out->status = DS_LOCK_OK;
    return 0;
}

/* ---------------------------------------------------------------- wait deadlines */

static int wait_due(const struct ds_lock_res *r, uint64_t now)
{
    for (size_t i = 0; i < r->nw; i++)
        if (r->w[i].wait_deadline_ms <= now)
            return 1;
    return 0;
}

static void lower_to_waits(const struct ds_lock_res *r, uint64_t *min)
{
    for (size_t i = 0; i < r->nw; i++)
        if (r->w[i].wait_deadline_ms < *min)
            *min = r->w[i].wait_deadline_ms;
}

/* Removes r's waiters whose wait ended by `now` (reported in out->timed_out), grants whoever that
 * unblocks, and lowers *min to the deadlines left on r. */
static int purge_res(struct ds_lock_table *t, struct ds_lock_res *r, uint64_t now,
                     struct ds_lock_result *out, uint64_t *min)
{
    int rv = 0;
    for (size_t i = 0; i < r->nw && !rv;) {
        if (r->w[i].wait_deadline_ms > now) {
            i++;
            continue;
        }
        rv = push_waiter(&out->timed_out, r, &r->w[i]);
        if (!rv) {
            free(waiter_take(t, r, i).client); /* an upgrade's shared hold stays */
            t->st.wait_timeouts++;
        }
    }
    if (!rv)
        rv = grant_waiters(t, r, now, out);
    lower_to_waits(r, min);
    res_drop_if_empty(t, r);
    return rv;
}

/* The purge every command starts with: skipped while `now` is before the table's lower bound of
 * the wait deadlines, else the resources with a due waiter are purged in name order and the bound
 * becomes exact. */
static int purge_waits(struct ds_lock_table *t, uint64_t now, struct ds_lock_result *out)
{
    if (now < t->wait_min)
        return 0;
    struct ds_lock_res **due = NULL;
    size_t n = 0, cap = 0;
    uint64_t min = UINT64_MAX;
    int rv = 0;
    for (size_t s = 0; s < t->res.cap; s++) {
        struct ds_lock_res *r = t->res.slots[s].key ? t->res.slots[s].val : NULL;
        if (!r || !wait_due(r, now)) {
            if (r)
                lower_to_waits(r, &min);
            continue;
        }
        struct ds_lock_res **v = grow(due, &cap, n + 1, sizeof(*due));
        if (!v) {
            rv = DS_LOCK_ENOMEM;
            break;
        }
        due = v;
        due[n++] = r;
    }
    if (n > 1)
        qsort(due, n, sizeof(*due), cmp_res);
    for (size_t i = 0; i < n && !rv; i++)
        rv = purge_res(t, due[i], now, out, &min);
    free(due);
    if (!rv)
        t->wait_min = min;
    return rv;
}

/* ---------------------------------------------------------------- idempotency records */

static size_t idem_key(char *buf, const char *client, const char *request_id)
{
    size_t cl = strlen(client), rl = strlen(request_id);
    memcpy(buf, client, cl + 1);
    memcpy(buf + cl + 1, request_id, rl);
    return cl + 1 + rl;
}

static void idem_evict(struct ds_lock_table *t, uint64_t now)
{
    while (t->idq_n > 0) {
        struct ds_lock_idem *rec = t->idq[t->idq_head];
        if (t->idq_n <= DS_LOCK_IDEM_MAX && rec->now_ms + DS_LOCK_IDEM_WINDOW_MS > now)
            return;
        ds_lock_map_del(&t->idem, rec->key, rec->klen);
        idem_free(rec);
        t->idq_head = (t->idq_head + 1) % t->idq_cap;
        t->idq_n--;
    }
}

static int idq_grow(struct ds_lock_table *t)
{
    size_t cap = t->idq_cap ? t->idq_cap * 2 : 16;
    struct ds_lock_idem **q = malloc(cap * sizeof(*q));
    if (!q)
        return DS_LOCK_ENOMEM;
    for (size_t i = 0; i < t->idq_n; i++)
        q[i] = t->idq[(t->idq_head + i) % t->idq_cap];
    free(t->idq);
    t->idq = q;
    t->idq_cap = cap;
    t->idq_head = 0;
    return 0;
}

int ds_lock_idem_add(struct ds_lock_table *t, const char *client, const char *request_id,
                     const struct ds_lock_idem *fields)
{
    char buf[DS_LOCK_NAME_MAX + 1 + DS_LOCK_REQUEST_ID_MAX];
    size_t klen = idem_key(buf, client, request_id);
    struct ds_lock_idem *rec = malloc(sizeof(*rec));
    if (!rec)
        return DS_LOCK_ENOMEM;
    *rec = *fields;
    rec->klen = klen;
    rec->clen = strlen(client);
    rec->key = malloc(klen);
    rec->resource = strdup(fields->resource);
    if (!rec->key || !rec->resource)
        goto err;
    memcpy(rec->key, buf, klen);
    if ((t->idq_n == t->idq_cap && idq_grow(t)) || ds_lock_map_put(&t->idem, rec->key, klen, rec))
        goto err;
    t->idq[(t->idq_head + t->idq_n++) % t->idq_cap] = rec;
    return 0;
err:
    idem_free(rec);
    return DS_LOCK_ENOMEM;
}

static int has_request_id(const struct ds_lock_cmd *c)
{
    return (c->type == DS_LOCK_CMD_ACQUIRE || c->type == DS_LOCK_CMD_RELEASE) && c->request_id[0];
}

static struct ds_lock_idem *idem_find(const struct ds_lock_table *t, const struct ds_lock_cmd *c)
{
    char buf[DS_LOCK_NAME_MAX + 1 + DS_LOCK_REQUEST_ID_MAX];
    size_t klen = idem_key(buf, c->client_id, c->request_id);
    return ds_lock_map_get(&t->idem, buf, klen);
}

static void replay(const struct ds_lock_idem *rec, const struct ds_lock_cmd *c,
                   struct ds_lock_result *out)
{
    if (rec->type != c->type || strcmp(rec->resource, c->resource) != 0) {
        out->status = DS_LOCK_CONFLICT;
        return;
    }
    out->status = rec->status;
    out->replayed = 1;
    out->mode = rec->mode;
    out->token = rec->token;
    out->deadline_ms = rec->deadline_ms;
    out->position = rec->position;
}

static int record(struct ds_lock_table *t, const struct ds_lock_cmd *c,
                  const struct ds_lock_result *out)
{
    struct ds_lock_idem f = { 0 };
    f.type = c->type;
    f.resource = (char *)c->resource;
    f.status = (uint8_t)out->status;
    f.mode = out->mode;
    f.position = out->position;
    f.token = out->token;
    f.deadline_ms = out->deadline_ms;
    f.now_ms = c->now_ms;
    int rv = ds_lock_idem_add(t, c->client_id, c->request_id, &f);
    idem_evict(t, c->now_ms);
    return rv;
}

/* ---------------------------------------------------------------- apply */

static int dispatch(struct ds_lock_table *t, const struct ds_lock_cmd *c,
                    struct ds_lock_result *out)
{
    switch (c->type) {
    case DS_LOCK_CMD_ACQUIRE:
        return do_acquire(t, c, out);
    case DS_LOCK_CMD_RELEASE:
        return do_release(t, c, out);
    case DS_LOCK_CMD_RENEW:
        return do_renew(t, c, out);
    case DS_LOCK_CMD_CANCEL_WAIT:
        return do_cancel(t, c, out);
    case DS_LOCK_CMD_EXPIRE:
        return do_expire(t, c, out);
    default:
        return do_extend(t, c, out);
    }
}

int ds_lock_apply(struct ds_lock_table *t, const struct ds_lock_cmd *c, struct ds_lock_result *out)
{
    memset(out, 0, sizeof(*out));
    if (ds_lock_cmd_check(c)) {
        out->status = DS_LOCK_INVALID;
        return 0;
    }
    idem_evict(t, c->now_ms);
    int rv = purge_waits(t, c->now_ms, out);
    if (rv)
        return rv;
    if (has_request_id(c)) {
        const struct ds_lock_idem *rec = idem_find(t, c);
        if (rec) {
            replay(rec, c, out);
            return 0;
        }
    }
    rv = dispatch(t, c, out);
    if (!rv && has_request_id(c))
        rv = record(t, c, out);
    return rv;
}

/* ---------------------------------------------------------------- queries */

int ds_lock_query(const struct ds_lock_table *t, const char *resource, uint8_t *mode,
                  struct ds_lock_list *holders, struct ds_lock_list *waiters)
{
    const struct ds_lock_res *r = res_get(t, resource);
    *mode = 0;
    if (!r)
        return DS_LOCK_ENOENT;
    *mode = r->nh ? r->h[0].mode : 0;
    int rv = push_holders(holders, r);
    for (size_t i = 0; i < r->nw && !rv; i++)
        rv = push_waiter(waiters, r, &r->w[i]);
    return rv;
}

int ds_lock_list_held(const struct ds_lock_table *t, struct ds_lock_list *out)
{
    struct ds_lock_res **v;
    size_t n;
    int rv = ds_lock_res_sorted(t, &v, &n);
    for (size_t i = 0; i < n && !rv; i++)
        rv = push_holders(out, v[i]);
    free(v);
    return rv;
}

int ds_lock_next_deadline(const struct ds_lock_table *t, uint64_t *deadline_ms)
{
    int found = 0;
    for (size_t s = 0; s < t->res.cap; s++) {
        const struct ds_lock_res *r = t->res.slots[s].key ? t->res.slots[s].val : NULL;
        for (size_t i = 0; r && i < r->nh; i++)
            if (!found++ || r->h[i].deadline_ms < *deadline_ms)
                *deadline_ms = r->h[i].deadline_ms;
        for (size_t i = 0; r && i < r->nw; i++)
            if (!found++ || r->w[i].wait_deadline_ms < *deadline_ms)
                *deadline_ms = r->w[i].wait_deadline_ms;
    }
    return found ? 0 : DS_LOCK_ENOENT;
}

int ds_lock_check(const struct ds_lock_table *t, const char *resource, uint64_t token)
{
    const struct ds_lock_res *r = res_get(t, resource);
    for (size_t i = 0; r && i < r->nh; i++)
        if (r->h[i].token == token)
            return 1;
    return 0;
}

uint64_t ds_lock_next_token(const struct ds_lock_table *t)
{
    return t->next_token;
}

void ds_lock_stats(const struct ds_lock_table *t, struct ds_lock_stats *out)
{
    *out = t->st;
    out->resources = t->res.n;
    out->idem_records = t->idq_n;
    for (size_t s = 0; s < t->res.cap; s++) {
        const struct ds_lock_res *r = t->res.slots[s].key ? t->res.slots[s].val : NULL;
        for (size_t i = 0; r && i < r->nh; i++)
            *(r->h[i].mode == DS_LOCK_EXCLUSIVE ? &out->held_exclusive : &out->held_shared) += 1;
        out->waiters += r ? r->nw : 0;
    }
}

const char *ds_lock_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "success";
    case DS_LOCK_ENOMEM:
        return "out of memory";
    case DS_LOCK_EDECODE:
        return "malformed lock command or snapshot";
    case DS_LOCK_EINVAL:
        return "lock command outside the documented bounds";
    case DS_LOCK_ENOENT:
        return "no such lock";
    default:
        return "unknown lock error";
    }
}

const char *ds_lock_status_name(int status)
{
    static const char *const names[] = { "ok", "granted", "queued", "lock_held", "deadlock",
                                          "not_holder", "not_waiting", "invalid", "conflict" };
    return status >= 0 && status <= DS_LOCK_CONFLICT ? names[status] : "unknown";
}

const char *ds_lock_mode_name(int mode)
{
    return mode == DS_LOCK_EXCLUSIVE ? "exclusive" : mode == DS_LOCK_SHARED ? "shared" : "none";
}
