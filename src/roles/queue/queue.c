/* Queue role: named queues with consumer groups on Redis Streams spread over shards by the
 * consistent-hash ring (DESIGN.md §3).  This file holds the plug-in, the shards and their ring,
 * the queue registry, and housekeeping: redelivery after the visibility timeout, dead letters and
 * trimming, done for each queue by the one live queue node the ring over gossip members picks. */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/node.h"
#include "gossip/node.h"
#include "ring/hash.h"
#include "ring/ring.h"
#include "roles/queue/qlua.h"
#include "roles/queue/queue_internal.h"
#include "roles/queue/queue_role.h"
#include "roles/queue/redis.h"

#define REAP_BUDGET "2000" /* PEL entries a housekeeping pass looks at per group and stream */
#define MIN_VISIBILITY "100"

/* ------------------------------------------------------------------ shards and routing */

struct qshard *ds_queue_shard_by_tag(struct ds_queue_role *q, uint32_t tag)
{
    for (size_t i = 0; i < q->nshards; i++)
        if (q->shards[i].tag == tag)
            return &q->shards[i];
    return NULL;
}

static struct qshard *shard_of_ring_idx(struct ds_queue_role *q, size_t idx)
{
    for (size_t i = 0; i < q->nshards; i++)
        if (q->shards[i].ring_idx == idx)
            return &q->shards[i];
    return NULL;
}

struct qshard *ds_queue_route(struct ds_queue_role *q, const char *queue, uint32_t p,
                              uint64_t tried)
{
    char key[DS_QROUTE_KEY_MAX];
    size_t order[DS_QUEUE_SHARDS_MAX], got = 0;
    if (ds_qroute_ring_key(queue, p, key, sizeof key) ||
        ds_ring_lookup_n_live(q->ring, key, strlen(key), q->nshards, order, &got))
        return NULL;
    for (size_t i = 0; i < got; i++) {
        struct qshard *s = shard_of_ring_idx(q, order[i]);
        if (s && !(tried & (1ull << (s - q->shards))) && ds_redis_up(s->r))
            return s;
    }
    return NULL;
}

static void shard_state(struct ds_redis *r, int up, void *arg)
{
    (void)r;
    struct qshard *s = arg;
    ds_ring_set_live(s->q->ring, s->ring_idx, up != 0);
    if (up) /* a shard that comes back may have lost its registry: register again */
        memset(s->q->seen, 0, sizeof s->q->seen);
}

static void ignore_reply(struct redisReply *reply, void *arg)
{
    (void)reply;
    (void)arg;
}

void ds_queue_register(struct ds_queue_role *q, struct qshard *s, const char *queue)
{
    uint64_t h = ds_hash64(queue, strlen(queue), (uint64_t)(s - q->shards) + 1) | 1;
    uint64_t *slot = &q->seen[h % DS_QUEUE_SEEN_SLOTS];
    if (*slot == h)
        return;
    const char *argv[] = {"SADD", DS_QUEUE_REGISTRY, queue};
    size_t lens[] = {4, strlen(DS_QUEUE_REGISTRY), strlen(queue)};
    if (ds_redis_command(s->r, ignore_reply, NULL, 3, argv, lens) == 0)
        *slot = h;
}

static int start_shards(struct ds_queue_role *q, char *err)
{
    const char *list = q->node->cfg->redis_shards;
    struct ds_ring_member members[DS_QUEUE_SHARDS_MAX];
    char addr[sizeof q->shards[0].addr];
    int got;
    for (const char *p = list; (got = ds_config_list_next(&p, addr, sizeof addr)) != 0;) {
        if (got < 0 || q->nshards == DS_QUEUE_SHARDS_MAX) {
            snprintf(err, 512, "[redis] shards: at most %d shards of < 128 bytes",
                     DS_QUEUE_SHARDS_MAX);
            return EINVAL;
        }
        struct qshard *s = &q->shards[q->nshards];
        memcpy(s->addr, addr, sizeof addr);
        s->q = q;
        s->tag = ds_qroute_shard_tag(s->addr);
        for (size_t i = 0; i < q->nshards; i++)
            if (q->shards[i].tag == s->tag) {
                snprintf(err, 512, "[redis] shards: '%s' is listed twice", s->addr);
                return EINVAL;
            }
        members[q->nshards] = (struct ds_ring_member){.id = s->addr, .weight = 0};
        q->nshards++;
    }
    if (!q->nshards) {
        snprintf(err, 512, "the queue role needs [redis] shards = host:port,...");
        return EINVAL;
    }
    int rv = ds_ring_build(members, q->nshards, 0, &q->ring);
    if (rv) {
        snprintf(err, 512, "shard ring: %s", ds_ring_strerror(rv));
        return EINVAL;
    }
    for (size_t i = 0; i < q->nshards; i++) {
        struct qshard *s = &q->shards[i];
        ds_ring_find(q->ring, s->addr, &s->ring_idx);
        ds_ring_set_live(q->ring, s->ring_idx, false);
        rv = ds_redis_new(q->node->base, s->addr, q->node->cfg->queue_redis_timeout_ms,
                          shard_state, s, &s->r, err);
        if (rv)
            return EINVAL;
    }
    return 0;
}

/* ------------------------------------------------------------------ housekeeping */

/* Rebuild the ring of live queue nodes when membership moved. */
static void refresh_members(struct ds_queue_role *q)
{
    uint64_t epoch = ds_gossip_epoch(q->gossip);
    if (q->members && epoch == q->members_epoch)
        return;
    const char *ids[DS_SWIM_MEMBERS_MAX];
    size_t n = ds_gossip_live(q->gossip, ids, NULL, DS_SWIM_MEMBERS_MAX);
    struct ds_ring_member m[DS_SWIM_MEMBERS_MAX];
    for (size_t i = 0; i < n; i++)
        m[i] = (struct ds_ring_member){.id = ids[i], .weight = 0};
    struct ds_ring *r;
    if (n == 0 || ds_ring_build(m, n, 0, &r))
        return;
    ds_ring_free(q->members);
    q->members = r;
    q->members_epoch = epoch;
}

static int owns(struct ds_queue_role *q, const char *queue)
{
    size_t idx;
    if (!q->members || ds_ring_lookup(q->members, queue, strlen(queue), &idx))
        return 0;
    return strcmp(ds_ring_member_id(q->members, idx), q->node->cfg->node_id) == 0;
}

static void hk_done_one(struct ds_queue_role *q)
{
    if (--q->hk_inflight > 0)
        return;
    memcpy(q->hk_last, q->hk_cur, sizeof q->hk_cur);
    q->hk_nlast = q->hk_ncur;
    q->hk_ncur = 0;
}

static void hk_note(struct ds_queue_role *q, const char *queue)
{
    for (size_t i = 0; i < q->hk_ncur; i++)
        if (strcmp(q->hk_cur[i], queue) == 0)
            return;
    if (q->hk_ncur < DS_QUEUE_HK_NAMES_MAX)
        snprintf(q->hk_cur[q->hk_ncur++], sizeof q->hk_cur[0], "%s", queue);
}

static void reap_cb(struct redisReply *reply, void *arg)
{
    struct ds_queue_role *q = arg;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3) {
        ds_metric_inc(q->m_redelivered, (double)reply->element[0]->integer);
        ds_metric_inc(q->m_dead, (double)reply->element[1]->integer);
        ds_metric_inc(q->m_trimmed, (double)reply->element[2]->integer);
    } else if (reply && reply->type == REDIS_REPLY_ERROR) {
        ds_log(DS_LOG_WARN, "housekeeping script failed", "error", reply->str, NULL);
    }
    hk_done_one(q);
}

static void reap(struct ds_queue_role *q, struct qshard *s, const char *queue)
{
    char dlq[DS_QROUTE_NAME_MAX + 8];
    int isdlq = ds_qroute_is_dlq(queue);
    if (ds_qroute_dlq_name(queue, dlq, sizeof dlq))
        return;
    char max[24];
    snprintf(max, sizeof max, "%" PRIu64, q->max_deliveries);
    for (uint32_t p = 0; p < q->partitions; p++) {
        char key[DS_QROUTE_KEY_MAX], dkey[DS_QROUTE_KEY_MAX], gkey[DS_QROUTE_KEY_MAX];
        char prefix[32];
        ds_qroute_stream_key(queue, p, key, sizeof key);
        ds_qroute_stream_key(dlq, p, dkey, sizeof dkey);
        ds_qroute_groups_key(queue, gkey, sizeof gkey);
        ds_qroute_id_prefix(s->tag, p, prefix, sizeof prefix);
        const char *argv[] = {"EVAL", ds_qlua_reap, "4", key, dkey, DS_QUEUE_REGISTRY, gkey,
                              max, DS_QUEUE_BIG_IDLE, isdlq ? "1" : "0", dlq, prefix,
                              REAP_BUDGET, MIN_VISIBILITY, DS_QUEUE_TRIM_GRACE_MS};
        enum { ARGC = sizeof argv / sizeof argv[0] };
        size_t lens[ARGC];
        for (int i = 0; i < ARGC; i++)
            lens[i] = strlen(argv[i]);
        if (ds_redis_command(s->r, reap_cb, q, ARGC, argv, lens) == 0)
            q->hk_inflight++;
    }
}

struct registry_read {
    struct ds_queue_role *q;
    struct qshard *s;
};

static void registry_cb(struct redisReply *reply, void *arg)
{
    struct registry_read *rr = arg;
    struct ds_queue_role *q = rr->q;
    if (reply && reply->type == REDIS_REPLY_ARRAY && !q->stopping) {
        for (size_t i = 0; i < reply->elements; i++) {
            const redisReply *e = reply->element[i];
            if (e->type != REDIS_REPLY_STRING || !ds_qroute_name_valid(e->str) ||
                !owns(q, e->str))
                continue;
            hk_note(q, e->str);
            reap(q, rr->s, e->str);
        }
    }
    free(rr);
    hk_done_one(q);
}

static void hk_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ds_queue_role *q = arg;
    if (q->hk_inflight || q->stopping)
        return;
    refresh_members(q);
    q->hk_inflight = 1; /* held until every shard's registry is asked */
    for (size_t i = 0; i < q->nshards; i++) {
        struct qshard *s = &q->shards[i];
        struct registry_read *rr = malloc(sizeof *rr);
        if (!rr)
            break;
        rr->q = q;
        rr->s = s;
        const char *argv[] = {"SMEMBERS", DS_QUEUE_REGISTRY};
        size_t lens[] = {8, strlen(DS_QUEUE_REGISTRY)};
        if (ds_redis_command(s->r, registry_cb, rr, 2, argv, lens) == 0)
            q->hk_inflight++;
        else
            free(rr);
    }
    hk_done_one(q);
}

/* ------------------------------------------------------------------ metrics */

static double read_shards_up(void *arg)
{
    struct ds_queue_role *q = arg;
    double n = 0;
    for (size_t i = 0; i < q->nshards; i++)
        n += ds_redis_up(q->shards[i].r);
    return n;
}

static double read_redis_errors(void *arg)
{
    struct ds_queue_role *q = arg;
    double n = 0;
    for (size_t i = 0; i < q->nshards; i++)
        n += (double)ds_redis_errors(q->shards[i].r);
    return n;
}

static int register_metrics(struct ds_queue_role *q)
{
    struct ds_metrics *m = q->node->metrics;
    static const struct {
        size_t off;
        const char *name, *help;
    } counters[] = {
        {offsetof(struct ds_queue_role, m_produced), "dsyncd_queue_produced_total",
         "Messages accepted by Redis"},
        {offsetof(struct ds_queue_role, m_duplicates), "dsyncd_queue_duplicates_total",
         "Messages suppressed by their dedup_id"},
        {offsetof(struct ds_queue_role, m_consumed), "dsyncd_queue_consumed_total",
         "Messages delivered to consumers"},
        {offsetof(struct ds_queue_role, m_acked), "dsyncd_queue_acked_total", "Messages acked"},
        {offsetof(struct ds_queue_role, m_nacked), "dsyncd_queue_nacked_total",
         "Messages released by a nack"},
        {offsetof(struct ds_queue_role, m_redelivered), "dsyncd_queue_redelivered_total",
         "Messages released for redelivery after their visibility timeout (by this node)"},
        {offsetof(struct ds_queue_role, m_dead), "dsyncd_queue_dead_lettered_total",
         "Messages moved to a dead-letter queue (by this node)"},
        {offsetof(struct ds_queue_role, m_trimmed), "dsyncd_queue_trimmed_total",
         "Acked stream entries trimmed (by this node)"},
        {offsetof(struct ds_queue_role, m_watch_wakeups), "dsyncd_queue_watch_wakeups_total",
         "Streams in which a blocking XREAD saw new messages for waiting consumers"},
    };
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++) {
        struct ds_metric **slot = (struct ds_metric **)(void *)((char *)q + counters[i].off);
        if (!(*slot = ds_metrics_counter(m, counters[i].name, counters[i].help, "")))
            return ENOMEM;
    }
    struct ds_metric *up = ds_metrics_gauge(m, "dsyncd_queue_shards_up",
                                            "Redis shards connected", "");
    struct ds_metric *errs = ds_metrics_counter(m, "dsyncd_queue_redis_errors_total",
                                                "Redis commands that failed or timed out", "");
    if (!up || !errs)
        return ENOMEM;
    up->read = read_shards_up;
    up->read_arg = q;
    errs->read = read_redis_errors;
    errs->read_arg = q;
    q->h_produce = ds_metrics_histogram(m, "dsyncd_queue_produce_seconds",
                                        "Produce requests, until Redis accepted every message", "",
                                        ds_metrics_latency_bounds, ds_metrics_latency_nbounds);
    q->h_consume = ds_metrics_histogram(m, "dsyncd_queue_consume_seconds",
                                        "Consume requests, long-poll wait included", "",
                                        ds_metrics_latency_bounds, ds_metrics_latency_nbounds);
    q->h_ack = ds_metrics_histogram(m, "dsyncd_queue_ack_seconds", "Ack and nack requests", "",
                                    ds_metrics_latency_bounds, ds_metrics_latency_nbounds);
    return q->h_produce && q->h_consume && q->h_ack ? 0 : ENOMEM;
}

/* ------------------------------------------------------------------ role plug-in */

static int queue_start(struct ds_node *node, char *err)
{
    struct ds_queue_role *q = calloc(1, sizeof *q);
    if (!q) {
        snprintf(err, 512, "out of memory");
        return ENOMEM;
    }
    node->queue = q;
    q->node = node;
    const struct ds_config *c = node->cfg;
    q->partitions = (uint32_t)c->queue_partitions;
    q->max_deliveries = c->queue_max_deliveries;
    q->visibility_ms = c->queue_visibility_ms;
    q->dedup_window_ms = c->queue_dedup_window_ms;
    int rv;
    if ((rv = register_metrics(q))) {
        snprintf(err, 512, "out of memory");
        return rv;
    }
    if ((rv = start_shards(q, err)) || ds_queue_watch_start(q, err) ||
        (rv = ds_gossip_start(node, NULL, &q->gossip, err)))
        return rv ? rv : EINVAL;
    q->hk_timer = event_new(node->base, -1, EV_PERSIST, hk_tick, q);
    uint64_t ms = c->queue_housekeeping_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    if (!q->hk_timer || evtimer_add(q->hk_timer, &tv) || ds_queue_api_routes(q)) {
        snprintf(err, 512, "out of memory");
        return ENOMEM;
    }
    return 0;
}

static int queue_ready(struct ds_node *node, const char **reason)
{
    if (read_shards_up(node->queue) > 0)
        return 1;
    *reason = "no Redis shard is reachable";
    return 0;
}

static void queue_status(struct ds_node *node, cJSON *out)
{
    struct ds_queue_role *q = node->queue;
    cJSON_AddNumberToObject(out, "partitions", q->partitions);
    cJSON_AddNumberToObject(out, "max_deliveries", (double)q->max_deliveries);
    cJSON *sh = cJSON_AddArrayToObject(out, "shards");
    for (size_t i = 0; i < q->nshards; i++) {
        cJSON *x = cJSON_CreateObject();
        char tag[16];
        snprintf(tag, sizeof tag, "%08" PRIx32, q->shards[i].tag);
        cJSON_AddStringToObject(x, "addr", q->shards[i].addr);
        cJSON_AddStringToObject(x, "tag", tag);
        cJSON_AddBoolToObject(x, "up", ds_redis_up(q->shards[i].r));
        cJSON_AddNumberToObject(x, "in_flight", ds_redis_pending(q->shards[i].r));
        cJSON_AddItemToArray(sh, x);
    }
    cJSON *mem = cJSON_AddArrayToObject(out, "members");
    for (size_t i = 0; q->members && i < ds_ring_count(q->members); i++)
        cJSON_AddItemToArray(mem, cJSON_CreateString(ds_ring_member_id(q->members, i)));
    cJSON *hk = cJSON_AddArrayToObject(out, "housekeeping");
    for (size_t i = 0; i < q->hk_nlast; i++)
        cJSON_AddItemToArray(hk, cJSON_CreateString(q->hk_last[i]));
}

static void queue_stop(struct ds_node *node, void (*done)(struct ds_node *node))
{
    struct ds_queue_role *q = node->queue;
    q->stopping = 1;
    if (q->gossip)
        ds_gossip_leave(q->gossip);
    ds_queue_api_stop(q);
    done(node);
}

static void queue_free(struct ds_node *node)
{
    struct ds_queue_role *q = node->queue;
    if (!q)
        return;
    q->stopping = 1;
    ds_queue_watch_free(q);
    for (size_t i = 0; i < q->nshards; i++)
        ds_redis_free(q->shards[i].r); /* fails every command still in flight */
    ds_queue_api_free(q);
    if (q->hk_timer)
        event_free(q->hk_timer);
    ds_gossip_free(q->gossip);
    ds_ring_free(q->ring);
    ds_ring_free(q->members);
    free(q);
    node->queue = NULL;
}

const struct ds_role_ops ds_queue_role_ops = {
    .name = "queue",
    .start = queue_start,
    .ready = queue_ready,
    .status = queue_status,
    .stop = queue_stop,
    .free = queue_free,
};
