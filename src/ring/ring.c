/* Consistent-hash ring with weighted virtual nodes: build, lookup, distinct-successor lookup. */
#include "ring/ring.h"

#include <stdlib.h>
#include <string.h>

#include "ring/hash.h"

struct ring_point {
    uint64_t hash;
    uint32_t member;
};

struct ds_ring {
    size_t n_members;
    char **ids;          /* sorted by strcmp */
    bool *live;
    size_t n_points;
    struct ring_point *points; /* sorted by (hash, member) */
};

static int cmp_id(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_point(const void *a, const void *b)
{
    const struct ring_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return (x->member > y->member) - (x->member < y->member);
}

static int check_members(const struct ds_ring_member *m, size_t n, uint32_t vnodes)
{
    if (m == NULL || n == 0 || n > DS_RING_MEMBERS_MAX || vnodes > DS_RING_VNODES_MAX)
        return DS_RING_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (m[i].id == NULL || m[i].id[0] == '\0' || strlen(m[i].id) >= DS_RING_ID_MAX)
            return DS_RING_EINVAL;
        if (m[i].weight > DS_RING_WEIGHT_MAX)
            return DS_RING_EINVAL;
    }
    return DS_RING_OK;
}

static uint32_t weight_of(const struct ds_ring_member *m, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(m[i].id, id) == 0)
            return m[i].weight ? m[i].weight : DS_RING_WEIGHT_DEFAULT;
    return DS_RING_WEIGHT_DEFAULT;
}

static uint32_t points_of(uint32_t vnodes, uint32_t weight)
{
    uint64_t p = (uint64_t)vnodes * weight / 100;
    return p ? (uint32_t)p : 1;
}

/* Copies and sorts the ids; DS_RING_EDUP when one repeats. */
static int copy_ids(struct ds_ring *r, const struct ds_ring_member *m, size_t n)
{
    r->ids = calloc(n, sizeof *r->ids);
    r->live = calloc(n, sizeof *r->live);
    if (r->ids == NULL || r->live == NULL)
        return DS_RING_ENOMEM;
    r->n_members = n;
    for (size_t i = 0; i < n; i++) {
        r->ids[i] = strdup(m[i].id);
        if (r->ids[i] == NULL)
            return DS_RING_ENOMEM;
        r->live[i] = true;
    }
    qsort(r->ids, n, sizeof *r->ids, cmp_id);
    for (size_t i = 1; i < n; i++)
        if (strcmp(r->ids[i - 1], r->ids[i]) == 0)
            return DS_RING_EDUP;
    return DS_RING_OK;
}

static int place_points(struct ds_ring *r, const struct ds_ring_member *m, uint32_t vnodes)
{
    size_t total = 0;
    for (size_t i = 0; i < r->n_members; i++)
        total += points_of(vnodes, weight_of(m, r->n_members, r->ids[i]));
    r->points = malloc(total * sizeof *r->points);
    if (r->points == NULL)
        return DS_RING_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < r->n_members; i++) {
        uint32_t np = points_of(vnodes, weight_of(m, r->n_members, r->ids[i]));
        size_t idlen = strlen(r->ids[i]);
        for (uint32_t v = 0; v < np; v++) {
            r->points[k].hash = ds_hash64(r->ids[i], idlen, v);
            r->points[k].member = (uint32_t)i;
            k++;
        }
    }
    r->n_points = total;
    qsort(r->points, total, sizeof *r->points, cmp_point);
    return DS_RING_OK;
}

int ds_ring_build(const struct ds_ring_member *members, size_t n, uint32_t vnodes,
                  struct ds_ring **out)
{
    struct ds_ring *r = NULL;
    int rv = check_members(members, n, vnodes);
    if (rv != DS_RING_OK)
        return rv;
    r = calloc(1, sizeof *r);
    if (r == NULL)
        return DS_RING_ENOMEM;
    rv = copy_ids(r, members, n);
    if (rv != DS_RING_OK)
        goto err;
    rv = place_points(r, members, vnodes ? vnodes : DS_RING_VNODES_DEFAULT);
    if (rv != DS_RING_OK)
        goto err;
    *out = r;
    return DS_RING_OK;
err:
    ds_ring_free(r);
    return rv;
}

void ds_ring_free(struct ds_ring *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n_members && r->ids != NULL; i++)
        free(r->ids[i]);
    free(r->ids);
    free(r->live);
    free(r->points);
    free(r);
}

size_t ds_ring_count(const struct ds_ring *r)
{
    return r->n_members;
}

const char *ds_ring_member_id(const struct ds_ring *r, size_t idx)
{
    return idx < r->n_members ? r->ids[idx] : NULL;
}

int ds_ring_find(const struct ds_ring *r, const char *id, size_t *idx)
{
    char *const *hit = bsearch(&id, r->ids, r->n_members, sizeof *r->ids, cmp_id);
    if (hit == NULL)
        return DS_RING_ENOTFOUND;
    *idx = (size_t)(hit - r->ids);
    return DS_RING_OK;
}

void ds_ring_set_live(struct ds_ring *r, size_t idx, bool live)
{
    if (idx < r->n_members)
        r->live[idx] = live;
}

bool ds_ring_is_live(const struct ds_ring *r, size_t idx)
{
    return idx < r->n_members && r->live[idx];
}

/* Index of the first point with hash >= h (n_points when past the last: the caller wraps). */
static size_t first_point(const struct ds_ring *r, uint64_t h)
{
    size_t lo = 0, hi = r->n_points;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->points[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool already(const size_t *out, size_t got, size_t m)
{
    for (size_t i = 0; i < got; i++)
        if (out[i] == m)
            return true;
    return false;
}

/* Walks the ring from the key's point collecting distinct (and, if live_only, live) members. */
static void walk(const struct ds_ring *r, const void *key, size_t len, size_t want, bool live_only,
                 size_t *out, size_t *got)
{
    size_t start = first_point(r, ds_hash64(key, len, 0));
    size_t n = 0;
    for (size_t step = 0; step < r->n_points && n < want; step++) {
        size_t m = r->points[(start + step) % r->n_points].member;
        if (live_only && !r->live[m])
            continue;
        if (!already(out, n, m))
            out[n++] = m;
    }
    *got = n;
}

int ds_ring_lookup(const struct ds_ring *r, const void *key, size_t len, size_t *owner)
{
    size_t got;
    walk(r, key, len, 1, false, owner, &got);
    return got ? DS_RING_OK : DS_RING_EEMPTY;
}

int ds_ring_lookup_n(const struct ds_ring *r, const void *key, size_t len, size_t want,
                     size_t *out, size_t *got)
{
    walk(r, key, len, want, false, out, got);
    return *got || want == 0 ? DS_RING_OK : DS_RING_EEMPTY;
}

int ds_ring_lookup_live(const struct ds_ring *r, const void *key, size_t len, size_t *owner)
{
    size_t got;
    walk(r, key, len, 1, true, owner, &got);
    return got ? DS_RING_OK : DS_RING_EEMPTY;
}

int ds_ring_lookup_n_live(const struct ds_ring *r, const void *key, size_t len, size_t want,
                          size_t *out, size_t *got)
{
    walk(r, key, len, want, true, out, got);
    return *got || want == 0 ? DS_RING_OK : DS_RING_EEMPTY;
}

const char *ds_ring_strerror(int rv)
{
    static const char *const msg[] = {
        [DS_RING_OK] = "ok",
        [DS_RING_EINVAL] = "invalid argument",
        [DS_RING_EDUP] = "duplicate member id",
        [DS_RING_ENOMEM] = "out of memory",
        [DS_RING_EEMPTY] = "no member to answer",
        [DS_RING_ENOTFOUND] = "no such member",
    };
    if (rv < 0 || (size_t)rv >= sizeof msg / sizeof msg[0])
        return "unknown ring error";
    return msg[rv];
}
