/* Open-addressing hash map of the lock table (FNV-1a with a constant seed, linear probing). */
#include <stdlib.h>
#include <string.h>

#include "roles/lock/lock_internal.h"

uint64_t ds_lock_hash(const char *key, size_t klen)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < klen; i++) {
        h ^= (uint8_t)key[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h ^ (h >> 29);
}

static int slot_is(const struct ds_lock_map_slot *s, const char *key, size_t klen, uint64_t h)
{
    return s->hash == h && s->klen == klen && memcmp(s->key, key, klen) == 0;
}

void *ds_lock_map_get(const struct ds_lock_map *m, const char *key, size_t klen)
{
    if (m->cap == 0)
        return NULL;
    uint64_t h = ds_lock_hash(key, klen);
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        const struct ds_lock_map_slot *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (slot_is(s, key, klen, h))
            return s->val;
    }
}

static void place(struct ds_lock_map_slot *slots, size_t cap, const struct ds_lock_map_slot *src)
{
    size_t i = src->hash & (cap - 1);
    while (slots[i].key)
        i = (i + 1) & (cap - 1);
    slots[i] = *src;
}

static int grow(struct ds_lock_map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    struct ds_lock_map_slot *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return DS_LOCK_ENOMEM;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key)
            place(slots, cap, &m->slots[i]);
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

int ds_lock_map_put(struct ds_lock_map *m, const char *key, size_t klen, void *val)
{
    if ((m->n + 1) * 4 > m->cap * 3) {
        int rv = grow(m);
        if (rv)
            return rv;
    }
    struct ds_lock_map_slot s = { key, klen, ds_lock_hash(key, klen), val };
    place(m->slots, m->cap, &s);
    m->n++;
    return 0;
}

/* Backward-shift deletion: later slots of the probe run move up so lookups need no tombstones. */
void ds_lock_map_del(struct ds_lock_map *m, const char *key, size_t klen)
{
    size_t mask = m->cap - 1;
    uint64_t h = ds_lock_hash(key, klen);
    size_t i = h & mask;
    while (!slot_is(&m->slots[i], key, klen, h))
        i = (i + 1) & mask;
    for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
        size_t home = m->slots[j].hash & mask;
        /* slot j may move to the hole at i if its home is not in the cyclic range (i, j] */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = NULL;
    m->n--;
}

void ds_lock_map_free(struct ds_lock_map *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}
