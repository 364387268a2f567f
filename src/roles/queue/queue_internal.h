/* Shared state of the queue role between its plug-in and housekeeping (queue.c) and its HTTP API
 * (queue_api.c). */
#ifndef DS_ROLES_QUEUE_QUEUE_INTERNAL_H
#define DS_ROLES_QUEUE_QUEUE_INTERNAL_H

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

#include "core/metrics.h"
#include "roles/queue/qroute.h"

#define DS_QUEUE_SHARDS_MAX 64
#define DS_QUEUE_SEEN_SLOTS 4096     /* (shard, queue) pairs known to be in a shard's registry */
#define DS_QUEUE_HK_NAMES_MAX 256    /* queues listed in /status as housekept by this node */
#define DS_QUEUE_BIG_IDLE "100000000000" /* idle of a message released for redelivery (ms) */
#define DS_QUEUE_BIG_IDLE_MS UINT64_C(100000000000)
#define DS_QUEUE_REGISTRY "dsq:queues"
#define DS_QUEUE_TRIM_GRACE_MS "5000" /* acked entries are kept at least this long */

struct ds_node;
struct ds_redis;
struct ds_ring;
struct ds_gossip;
struct qconsume;

struct qwatch;

struct qshard {
    struct ds_queue_role *q;
    char addr[128];
    uint32_t tag;
    size_t ring_idx;
    struct ds_redis *r;
    struct qwatch *watch; /* qwatch.c */
};

struct ds_queue_role {
    struct ds_node *node;
    uint32_t partitions;
    uint64_t max_deliveries, visibility_ms, dedup_window_ms;
    struct qshard shards[DS_QUEUE_SHARDS_MAX];
    size_t nshards;
    struct ds_ring *ring; /* over shard addresses */
    struct ds_gossip *gossip;
    struct ds_ring *members; /* live queue nodes, for housekeeping ownership */
    uint64_t members_epoch;
    uint64_t rr;
    uint64_t seen[DS_QUEUE_SEEN_SLOTS];
    struct qconsume *waiters;
    struct event *hk_timer;
    int hk_inflight;
    char hk_cur[DS_QUEUE_HK_NAMES_MAX][DS_QROUTE_NAME_MAX + 1];
    size_t hk_ncur;
    char hk_last[DS_QUEUE_HK_NAMES_MAX][DS_QROUTE_NAME_MAX + 1];
    size_t hk_nlast;
    int stopping;
    struct ds_metric *m_produced, *m_duplicates, *m_consumed, *m_acked, *m_nacked;
    struct ds_metric *m_redelivered, *m_dead, *m_trimmed, *m_watch_wakeups;
    struct ds_metric *h_produce, *h_consume, *h_ack;
};

/* Register the HTTP routes of the API (queue_api.c). */
int ds_queue_api_routes(struct ds_queue_role *q);

/* Answer every long poll at once (stop), and free the waiters (free). */
void ds_queue_api_stop(struct ds_queue_role *q);
void ds_queue_api_free(struct ds_queue_role *q);

/* Long-poll wake-ups (queue_api.c): wake the consumers waiting on queue, and list the distinct
 * queues consumers wait on (at most max, borrowed until the next change of the waiters). */
void ds_queue_wake(struct ds_queue_role *q, const char *queue);
size_t ds_queue_waiting(struct ds_queue_role *q, const char **out, size_t max);

/* Blocking reads on connections of their own (qwatch.c): per shard, one XREAD BLOCK on the
 * partition streams of the queues consumers wait on here, so a produce through any queue node
 * wakes them within a round trip (one through this node wakes them directly).  Consumers still
 * look again every poll interval for redeliveries and nacks, which XREAD does not see, and for a
 * queue that began waiting while the XREAD in flight did not cover it (it is reissued within
 * min(1 s, [queue] redis_timeout_ms / 2)).  start: connect (err: 512 bytes); kick: issue where
 * idle; free: close. */
int ds_queue_watch_start(struct ds_queue_role *q, char *err);
void ds_queue_watch_kick(struct ds_queue_role *q);
void ds_queue_watch_free(struct ds_queue_role *q);

/* The shard with this tag, or NULL. */
struct qshard *ds_queue_shard_by_tag(struct ds_queue_role *q, uint32_t tag);

/* The first live shard for partition p of queue whose bit is not set in tried, or NULL. */
struct qshard *ds_queue_route(struct ds_queue_role *q, const char *queue, uint32_t p,
                              uint64_t tried);

/* Make sure queue is in the registry of shard s (for housekeeping). */
void ds_queue_register(struct ds_queue_role *q, struct qshard *s, const char *queue);

#endif
