/* Shared state of the cache role between its plug-in, membership and transport (cache.c), its HTTP
 * API (cache_api.c) and its main-memory backends (cache_store.c). */
#ifndef DS_ROLES_CACHE_CACHE_INTERNAL_H
#define DS_ROLES_CACHE_CACHE_INTERNAL_H

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/metrics.h"
#include "roles/cache/mesi.h"

#define DS_CACHE_SHARDS_MAX 64
#define DS_CACHE_NAME_MAX 64   /* member names (gossip ids) */
#define DS_CACHE_URL_MAX 256

struct ds_node;
struct ds_gossip;
struct ds_ring;
struct ds_redis;
struct ds_http_req;
struct cache_store;
struct cache_pend;

/* One cache node known to this one: its MESI id, gossip name and URL. */
struct cache_member {
    int live;                       /* in the current ring */
    char name[DS_CACHE_NAME_MAX];
    char url[DS_CACHE_URL_MAX];
};

enum cache_op { CACHE_OP_GET = 0, CACHE_OP_PUT, CACHE_OP_DELETE, CACHE_NOPS };
enum cache_result { CACHE_RES_HIT = 0, CACHE_RES_MISS, CACHE_RES_ERROR, CACHE_NRESULTS };

/* A metric read from the engine's statistics at scrape time. */
struct cache_mref {
    struct ds_cache_role *cr;
    uint16_t what; /* enum in cache.c */
    uint16_t idx;
};
#define DS_CACHE_MREFS 128

struct ds_cache_role {
    struct ds_node *node;
    struct ds_gossip *gossip;
    struct ds_mesi *mesi;            /* NULL while a scaled-out node is still claiming its id */
    struct ds_mesi_ring ring_if;     /* handed to the engine: home_of over `ring` */
    struct ds_ring *ring;            /* live cache members with a known MESI id, by name */
    uint16_t ring_ids[DS_MESI_MAX_NODES]; /* ring member index -> MESI id */
    uint16_t self;                   /* this node's MESI id (valid once mesi is running) */
    uint64_t incarnation;            /* the engine's, from the persisted boot counter */
    int claim;                       /* a node outside the seeds: the id it claims, or -1 */
    uint64_t claim_since_ms;         /* when that claim was first advertised */
    int refresh;                     /* rebuild the ring on the next tick (own id changed) */
    uint64_t epoch;                  /* hash of the ring's (name, id) pairs: the same on every node */
    uint64_t gossip_epoch;           /* ds_gossip_epoch when the ring was last rebuilt */
    struct cache_member members[DS_MESI_MAX_NODES];
    char seeds[DS_MESI_MAX_NODES][DS_CACHE_URL_MAX]; /* sorted seed URLs: id i = seeds[i] */
    size_t nseeds;
    struct event *tick, *flush;
    int flush_armed;
    struct ds_buf out[DS_MESI_MAX_NODES]; /* batched frames per destination */
    struct ds_buf reply;             /* answer being built (cache_api.c) */
    uint8_t *scratch;                /* one encoded message */
    size_t scratch_cap;
    struct cache_pend *pend;         /* client operations waiting for the engine */
    struct cache_store *store;
    uint64_t max_value;              /* bytes of a compact JSON value accepted by PUT */
    int stopping;
    uint64_t lost_versions;          /* write-back versions reported lost */
    struct cache_mref mref[DS_CACHE_MREFS];
    size_t nmref;
    struct ds_metric *h_req[CACHE_NOPS][CACHE_NRESULTS];
    struct ds_metric *m_bad_msgs;
};

/* ---- cache.c ---- */
/* Move every output of the engine to where it goes (network batches, memory, HTTP replies).
 * Call after every call into the engine. */
void ds_cache_drain(struct ds_cache_role *cr);
/* The member name of MESI id, or "" when unknown. */
const char *ds_cache_member_name(const struct ds_cache_role *cr, int id);
/* The MESI id of the key's home (the engine's view). */
uint16_t ds_cache_home(const struct ds_cache_role *cr, const uint8_t *key, size_t len);
/* 1 when the engine runs and gossip has joined: before that the node's ring holds only itself (it
 * would be the home of every key), so it serves no client operation and drops coherence
 * messages.  After joining, every ring change restarts the engine's home warm-up (mesi.h). */
int ds_cache_serving(const struct ds_cache_role *cr);

/* ---- cache_api.c ---- */
int ds_cache_api_routes(struct ds_cache_role *cr);
/* A client operation the engine finished (DS_MESI_OUT_DONE). */
void ds_cache_api_done(struct ds_cache_role *cr, const struct ds_mesi_result *res);
/* Drop every waiting operation without replying (the requests are gone at free time). */
void ds_cache_api_free(struct ds_cache_role *cr);

/* ---- cache_store.c: main memory ---- */
/* Redis when [redis] shards is set, else this node's own in-memory store.  err: 512 bytes.
 * Needs cr->incarnation. */
int ds_cache_store_new(struct ds_cache_role *cr, struct cache_store **out, char *err);
void ds_cache_store_free(struct cache_store *s);
/* Start a read / write; the completion calls ds_mesi_mem_read_done / ds_mesi_mem_write_done, or
 * ds_mesi_mem_write_refused when memory holds a newer version (then ds_cache_drain), retrying
 * failed Redis commands with backoff until they succeed or the role stops.  Buffers are copied;
 * applied_len <= DS_MESI_MAX_APPLIED. */
void ds_cache_store_read(struct cache_store *s, uint64_t id, const uint8_t *key, size_t klen);
void ds_cache_store_renew(struct cache_store *s, uint64_t id, const uint8_t *key, size_t klen);
/* The engine's home_lease_ms: 2 lease terms over Redis (the arbiter of homes, mesi.h HOME LEASES;
 * this node's token is "<node id>/<incarnation>"), 0 for the embedded store (no lease). */
uint32_t ds_cache_store_home_lease_ms(const struct cache_store *s);
void ds_cache_store_write(struct cache_store *s, uint64_t id, const uint8_t *key, size_t klen,
                          int present, const uint8_t *value, size_t vlen, uint64_t version,
                          uint64_t floor, const uint8_t *applied, size_t applied_len);
/* "redis" or "embedded"; shards up / configured (0/0 for embedded). */
const char *ds_cache_store_kind(const struct cache_store *s);
void ds_cache_store_shards(const struct cache_store *s, size_t *up, size_t *total);
/* Memory operations retried after a failure, and waiting now. */
uint64_t ds_cache_store_retries(const struct cache_store *s);
size_t ds_cache_store_pending(const struct cache_store *s);

#endif
