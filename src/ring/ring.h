/* Consistent-hash ring with weighted virtual nodes (Karger et al. 1997), shared by queue and cache.
 *
 * Each member owns `vnodes * weight / 100` points at XXH64(id, seed = point number); a key belongs
 * to the member owning the first point at or after XXH64(key, 0), wrapping around.  Members are
 * sorted by id and points by (hash, member index), so every node with the same member list (in any
 * order) computes the same mapping.  Lookups binary-search the sorted point array: O(log points).
 *
 * Why a ring and not Maglev: a ring moves only keys to or from the changed member (Maglev moves
 * some keys between survivors too), and lookup_n "next distinct member in ring order" is what
 * failover needs.  Balance is the ring's weak point: with 160 points per member the busiest of 10
 * members carries 12-20% over the mean (t/unit/ring prints the figures), so the default is
 * DS_RING_VNODES_DEFAULT = 1000 (about 5%), which costs 16 KB per member and ~14 comparisons. */
#ifndef DS_RING_RING_H
#define DS_RING_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DS_RING_VNODES_DEFAULT 1000u   /* points per member at weight 100 */
#define DS_RING_VNODES_MAX 10000u      /* cap on points per member at weight 100 */
#define DS_RING_WEIGHT_DEFAULT 100u    /* weight in percent of the default share */
#define DS_RING_WEIGHT_MAX 1000u
#define DS_RING_MEMBERS_MAX 1024u
#define DS_RING_ID_MAX 128u            /* bytes of a member id including the NUL */

enum {
    DS_RING_OK = 0,
    DS_RING_EINVAL,    /* bad argument: empty/too long id, weight or vnodes out of range */
    DS_RING_EDUP,      /* the same member id twice */
    DS_RING_ENOMEM,
    DS_RING_EEMPTY,    /* no member (or no live member) to answer a lookup */
    DS_RING_ENOTFOUND, /* no member with that id */
};

struct ds_ring;

struct ds_ring_member {
    const char *id;   /* NUL-terminated, 1..DS_RING_ID_MAX-1 bytes; copied by ds_ring_build */
    uint32_t weight;  /* 1..DS_RING_WEIGHT_MAX, 0 means DS_RING_WEIGHT_DEFAULT */
};

/* Builds a ring of `n` members (0 < n <= DS_RING_MEMBERS_MAX) with `vnodes` points per member at
 * weight 100 (0 = DS_RING_VNODES_DEFAULT).  On success *out is a new ring the caller frees with
 * ds_ring_free; the ids are copied, `members` stays the caller's.  On error *out is untouched. */
int ds_ring_build(const struct ds_ring_member *members, size_t n, uint32_t vnodes,
                  struct ds_ring **out);
void ds_ring_free(struct ds_ring *r);

/* Members are numbered 0..count-1 in byte order of their ids. */
size_t ds_ring_count(const struct ds_ring *r);
/* The id of member `idx` (< count), owned by the ring. */
const char *ds_ring_member_id(const struct ds_ring *r, size_t idx);
/* Index of the member with `id`, or DS_RING_ENOTFOUND. */
int ds_ring_find(const struct ds_ring *r, const char *id, size_t *idx);

/* Marks member `idx` down (live = false) or up; all members start up.  Only the *_live lookups
 * look at it. */
void ds_ring_set_live(struct ds_ring *r, size_t idx, bool live);
bool ds_ring_is_live(const struct ds_ring *r, size_t idx);

/* The owner of `key` (len bytes) in *owner.  Never fails on a built ring (it has a member). */
int ds_ring_lookup(const struct ds_ring *r, const void *key, size_t len, size_t *owner);
/* The first `want` DISTINCT members in ring order from the key's point (owner first) into
 * out[0..*got-1]; *got = min(want, count).  O(log points + points walked). */
int ds_ring_lookup_n(const struct ds_ring *r, const void *key, size_t len, size_t want,
                     size_t *out, size_t *got);
/* The same two skipping members marked down: the "next live member" for failover.
 * DS_RING_EEMPTY when no member is live. */
int ds_ring_lookup_live(const struct ds_ring *r, const void *key, size_t len, size_t *owner);
int ds_ring_lookup_n_live(const struct ds_ring *r, const void *key, size_t len, size_t want,
                          size_t *out, size_t *got);

const char *ds_ring_strerror(int rv);

#endif
