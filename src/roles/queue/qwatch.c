/* Long-poll wake-ups across queue nodes (see queue_internal.h): per shard, a connection of its
 * own blocks in XREAD on the partition streams of the queues that have consumers waiting on this
 * node, so a message produced through any queue node wakes them within a round trip. */
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/node.h"
#include "roles/queue/queue_internal.h"
#include "roles/queue/redis.h"

#define WATCH_QUEUES_MAX 64u /* queues one XREAD watches; more waiting queues rely on the poll */
#define BLOCK_MAX_MS 1000u

struct qwatch {
    struct qshard *s;
    struct ds_redis *r;
    int inflight;
};

static void watch_issue(struct qwatch *w);

/* The queue of a stream key "dsq:{<queue>}:<p>" into buf, or -1. */
static int queue_of_key(const char *key, size_t len, char *buf, size_t cap)
{
    const char *open = memchr(key, '{', len), *close = memchr(key, '}', len);
    if (len < 6 || memcmp(key, "dsq:{", 5) != 0 || !open || !close || close <= open + 1 ||
        (size_t)(close - open - 1) >= cap)
        return -1;
    memcpy(buf, open + 1, (size_t)(close - open - 1));
    buf[close - open - 1] = '\0';
    return 0;
}

static void watch_cb(struct redisReply *reply, void *arg)
{
    struct qwatch *w = arg;
    struct ds_queue_role *q = w->s->q;
    w->inflight = 0;
    if (reply && reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements; i++) {
            const redisReply *e = reply->element[i];
            char queue[DS_QROUTE_NAME_MAX + 1];
            if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
                e->element[0]->type == REDIS_REPLY_STRING &&
                queue_of_key(e->element[0]->str, e->element[0]->len, queue, sizeof queue) == 0) {
                ds_metric_inc(q->m_watch_wakeups, 1);
                ds_queue_wake(q, queue);
            }
        }
    }
    /* after a transport failure the connection's state callback reissues; after an error reply
     * (a key that is not a stream) the next consume that starts waiting does */
    if (!q->stopping && reply && reply->type != REDIS_REPLY_ERROR)
        watch_issue(w);
}

/* XREAD COUNT 1 BLOCK ms STREAMS <every partition stream of every waiting queue> $ ... */
static void watch_issue(struct qwatch *w)
{
    struct ds_queue_role *q = w->s->q;
    if (w->inflight || q->stopping || !ds_redis_up(w->r))
        return;
    const char *queues[WATCH_QUEUES_MAX];
    size_t nq = ds_queue_waiting(q, queues, WATCH_QUEUES_MAX);
    if (!nq)
        return;
    size_t nkeys = nq * q->partitions, argc = 6 + 2 * nkeys;
    const char **argv = calloc(argc, sizeof *argv);
    size_t *lens = calloc(argc, sizeof *lens);
    char (*keys)[DS_QROUTE_KEY_MAX] = calloc(nkeys, sizeof *keys);
    char block[24];
    uint64_t ms = q->node->cfg->queue_redis_timeout_ms / 2;
    snprintf(block, sizeof block, "%" PRIu64, ms < BLOCK_MAX_MS ? ms : BLOCK_MAX_MS);
    if (argv && lens && keys) {
        size_t a = 0;
        argv[a++] = "XREAD";
        argv[a++] = "COUNT";
        argv[a++] = "1";
        argv[a++] = "BLOCK";
        argv[a++] = block;
        argv[a++] = "STREAMS";
        for (size_t i = 0; i < nkeys; i++) {
            ds_qroute_stream_key(queues[i / q->partitions], (uint32_t)(i % q->partitions),
                                 keys[i], sizeof keys[i]);
            argv[a++] = keys[i];
        }
        for (size_t i = 0; i < nkeys; i++)
            argv[a++] = "$";
        for (size_t i = 0; i < a; i++)
            lens[i] = strlen(argv[i]);
        w->inflight = ds_redis_command(w->r, watch_cb, w, (int)a, argv, lens) == 0;
    }
    free(argv);
    free(lens);
    free(keys);
}

static void watch_state(struct ds_redis *r, int up, void *arg)
{
    (void)r;
    if (up)
        watch_issue(arg);
}

int ds_queue_watch_start(struct ds_queue_role *q, char *err)
{
    for (size_t i = 0; i < q->nshards; i++) {
        struct qshard *s = &q->shards[i];
        struct qwatch *w = calloc(1, sizeof *w);
        if (!w) {
            snprintf(err, 512, "out of memory");
            return -1;
        }
        w->s = s;
        s->watch = w;
        /* a blocked XREAD must end before the command timeout: BLOCK is at most half of it */
        if (ds_redis_new(q->node->base, s->addr, q->node->cfg->queue_redis_timeout_ms,
                         watch_state, w, &w->r, err))
            return -1;
    }
    return 0;
}

void ds_queue_watch_kick(struct ds_queue_role *q)
{
    for (size_t i = 0; i < q->nshards; i++)
        if (q->shards[i].watch)
            watch_issue(q->shards[i].watch);
}

void ds_queue_watch_free(struct ds_queue_role *q)
{
    for (size_t i = 0; i < q->nshards; i++) {
        struct qwatch *w = q->shards[i].watch;
        if (!w)
            continue;
        ds_redis_free(w->r); /* calls watch_cb with NULL for a blocked XREAD */
        free(w);
        q->shards[i].watch = NULL;
    }
}
