/* Raft host: the pure core on the event loop, durable storage with group commit, batched peer
 * messages over mutual TLS + HMAC, and the role's state machine.
 *
 * Entries are written on the loop and made durable after the batch (the core's async_persist,
 * raft.h): on the leader by a syncer thread, while the loop keeps reading requests, sending
 * AppendEntries and answering clients; on a follower by the loop itself (sync_kick says why).
 * Each sync covers everything written before it started.  A batch that changes term, vote or
 * snapshot, or truncates the log, is made durable on the loop before its messages go out, as the
 * core asks.
 *
 * Every NORMAL entry's data starts with a kind byte: KIND_APP (the role's command follows) or
 * KIND_ADDR (an address-book record "name\nurl": how to reach a member added at run time). */
#include "raft/node.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/json.h"
#include "core/log.h"
#include "core/node.h"
#include "net/peer.h"
#include "net/server.h"
#include "raft/storage.h"

#define KIND_APP 0
#define KIND_ADDR 1
#define TICK_MS 10
#define MAX_BATCH_MSGS 4096
/* One AppendEntries in flight per follower: what is proposed meanwhile goes out in one request
 * when the answer comes, so each peer exchange (HMAC, TLS record, follower fsync) carries a
 * round trip's worth of entries instead of one loop iteration's. */
#define MAX_INFLIGHT 1

struct member {
    uint64_t id;
    char name[64];
    char url[256];
    struct ds_peer *peer;
};

struct ds_raft_node {
    struct ds_node *node;
    const struct ds_raft_app_ops *ops;
    struct ds_raft_app *app;
    struct ds_raft *raft;
    struct ds_raft_storage *st;
    uint64_t id;
    struct member members[2 * DS_RAFT_MAX_NODES];
    int nmembers;
    struct event *tick, *process;
    uint64_t applied, snap_index;
    int role;
    uint64_t term, leader;
    void (*stop_done)(void *);
    void *stop_arg;
    struct event *stop_timer;
    struct ds_metric *m_term, *m_commit, *m_applied, *m_leader_changes, *m_is_leader;
    struct ds_metric *m_fsync, *m_batch, *m_msgs_in, *m_msgs_bad, *m_snapshots;
    /* While a peer's batch is handled, messages back to that peer go into the HTTP answer
     * instead of a POST of their own: one exchange per round trip instead of two. */
    uint64_t reply_to;
    struct ds_http_req *reply_req;
    struct ds_raft_buf reply;
    uint32_t reply_count;
    /* Written to the log file so far (what the next sync will cover). */
    uint64_t written_index, written_term, written_entries;
    /* The syncer thread: the loop hands it one descriptor at a time (job_fd, under mu) and
     * learns of the end through done_fd (an eventfd). */
    pthread_t syncer;
    int syncer_up, quit, job_fd, job_errno;
    double job_seconds;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done_fd;
    struct event *done_ev;
    /* loop side of the sync in flight */
    int sync_busy;
    uint64_t sync_gen, sync_index, sync_term, sync_entries;
    uint64_t report_index, report_term; /* synced at once inside a batch: reported after it */
};

static void schedule(struct ds_raft_node *rn);

uint64_t ds_raft_node_id(const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    return h ? h : 1;
}

static uint64_t mono_ms(void)
{
    return ds_node_now_ms();
}

static struct member *member_by_id(struct ds_raft_node *rn, uint64_t id)
{
    for (int i = 0; i < rn->nmembers; i++)
        if (rn->members[i].id == id)
            return &rn->members[i];
    return NULL;
}

static struct member *add_member(struct ds_raft_node *rn, const char *name, const char *url)
{
    uint64_t id = ds_raft_node_id(name);
    struct member *m = member_by_id(rn, id);
    if (!m) {
        if (rn->nmembers == (int)(sizeof rn->members / sizeof rn->members[0]))
            return NULL;
        m = &rn->members[rn->nmembers++];
        m->id = id;
    }
    snprintf(m->name, sizeof m->name, "%s", name);
    if (strcmp(m->url, url) != 0) {
        snprintf(m->url, sizeof m->url, "%s", url);
        m->peer = NULL;
    }
    return m;
}

/* ------------------------------------------------------------------ Ready processing */

static void fatal_storage(struct ds_raft_node *rn, const char *what, int rv)
{
    ds_log(DS_LOG_ERROR, "raft storage failed: stopping so that this replica cannot diverge",
           "op", what, "error", ds_raft_storage_strerror(rv), "detail",
           ds_raft_storage_errmsg(rn->st), NULL);
    exit(1);
}

static int encode_conf(const struct ds_raft_membership *conf, struct ds_raft_buf *b)
{
    return ds_raft_conf_encode(conf, b);
}

/* One fdatasync of everything written so far, on the loop. */
static void sync_here(struct ds_raft_node *rn)
{
    struct timespec a, b;
    int rv;
    clock_gettime(CLOCK_MONOTONIC, &a);
    if ((rv = ds_raft_storage_sync(rn->st)))
        fatal_storage(rn, "fsync", rv);
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (rn->written_entries) {
        ds_metric_observe(rn->m_fsync, (double)(b.tv_sec - a.tv_sec) +
                                           (double)(b.tv_nsec - a.tv_nsec) / 1e9);
        ds_metric_observe(rn->m_batch, (double)rn->written_entries);
        rn->written_entries = 0;
    }
}

/* Appends the batch's entries to the log file (the page cache); a sync makes them durable. */
static void write_entries(struct ds_raft_node *rn, const struct ds_raft_ready *rd)
{
    int rv;
    if (!rd->n_entries)
        return;
    if ((rv = ds_raft_storage_append(rn->st, rd->entries, rd->n_entries)))
        fatal_storage(rn, "append", rv);
    rn->written_index = rd->entries[rd->n_entries - 1].index;
    rn->written_term = rd->entries[rd->n_entries - 1].term;
    rn->written_entries += rd->n_entries;
}

/* A batch that must be durable before its messages go out (raft.h): written and synced here. */
static void persist(struct ds_raft_node *rn, const struct ds_raft_ready *rd)
{
    int rv;
    if (rd->has_snapshot) {
        struct ds_raft_buf conf = {0};
        if (encode_conf(&rd->snap.conf, &conf))
            fatal_storage(rn, "encode snapshot configuration", DS_RAFT_STORAGE_ENOMEM);
        rv = ds_raft_storage_save_snapshot(rn->st, rd->snap.index, rd->snap.term, conf.data,
                                           (uint32_t)conf.len, rd->snap_data, rd->snap_len);
        ds_raft_buf_free(&conf);
        if (rv)
            fatal_storage(rn, "save snapshot", rv);
        if ((rv = ds_raft_storage_truncate_suffix(rn->st, rd->snap.index + 1)) ||
            (rv = ds_raft_storage_compact(rn->st, rd->snap.index)))
            fatal_storage(rn, "drop the log behind a snapshot", rv);
        rn->written_index = rd->snap.index;
        rn->written_term = rd->snap.term;
    } else if (rd->truncate_from) {
        if ((rv = ds_raft_storage_truncate_suffix(rn->st, rd->truncate_from)))
            fatal_storage(rn, "truncate", rv);
        if (rn->written_index >= rd->truncate_from)
            rn->written_index = rn->written_term = 0; /* reported again with the next entries */
    }
    write_entries(rn, rd);
    if (rd->has_hard_state && (rv = ds_raft_storage_set_hard_state(rn->st, &rd->hs)))
        fatal_storage(rn, "save term and vote", rv);
    sync_here(rn); /* covers this batch and whatever earlier batches wrote */
}

/* ------------------------------------------------------------------ syncer thread */

static void *syncer_main(void *arg)
{
    struct ds_raft_node *rn = arg;
    pthread_mutex_lock(&rn->mu);
    for (;;) {
        while (!rn->quit && rn->job_fd < 0)
            pthread_cond_wait(&rn->cv, &rn->mu);
        if (rn->job_fd < 0)
            break;
        int fd = rn->job_fd;
        pthread_mutex_unlock(&rn->mu);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        int err = fdatasync(fd) ? errno : 0;
        clock_gettime(CLOCK_MONOTONIC, &b);
        close(fd);
        pthread_mutex_lock(&rn->mu);
        rn->job_fd = -1;
        rn->job_errno = err;
        rn->job_seconds = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
        uint64_t one = 1;
        ssize_t w = write(rn->done_fd, &one, sizeof one); /* fails only at 2^64 - 1 unread */
        (void)w;
    }
    pthread_mutex_unlock(&rn->mu);
    return NULL;
}

static void report_durable(struct ds_raft_node *rn, uint64_t index, uint64_t term)
{
    if (index && ds_raft_persisted(rn->raft, index, term) == 0)
        schedule(rn);
}

/* Start a sync of what has been written, unless one is in flight (its end starts the next).
 * Called inside a batch too (right after its write, so that the disk starts at once): a sync
 * done here at once is reported after the batch (report_index). */
static void sync_kick(struct ds_raft_node *rn)
{
    if (rn->sync_busy || !rn->written_entries)
        return;
    /* A follower syncs on the loop: the leader keeps one AppendEntries in flight to it, so no
     * replication waits meanwhile (only its own clients, for one sync), and it saves the two
     * thread hand-offs of a round.  The leader goes on serving while its disk flushes. */
    if (rn->role != DS_RAFT_LEADER) {
        sync_here(rn);
        rn->report_index = rn->written_index;
        rn->report_term = rn->written_term;
        schedule(rn);
        return;
    }
    int fd, rv;
    uint64_t gen;
    if ((rv = ds_raft_storage_sync_begin(rn->st, &fd, &gen)))
        fatal_storage(rn, "fsync", rv);
    if (fd < 0) { /* synced here already */
        ds_metric_observe(rn->m_batch, (double)rn->written_entries);
        rn->written_entries = 0;
        rn->report_index = rn->written_index;
        rn->report_term = rn->written_term;
        schedule(rn);
        return;
    }
    rn->sync_busy = 1;
    rn->sync_gen = gen;
    rn->sync_index = rn->written_index;
    rn->sync_term = rn->written_term;
    rn->sync_entries = rn->written_entries;
    rn->written_entries = 0;
    pthread_mutex_lock(&rn->mu);
    rn->job_fd = fd;
    pthread_cond_signal(&rn->cv);
    pthread_mutex_unlock(&rn->mu);
}

static void sync_done_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct ds_raft_node *rn = arg;
    uint64_t n;
    if (read(fd, &n, sizeof n) != sizeof n || !rn->sync_busy)
        return;
    pthread_mutex_lock(&rn->mu);
    int err = rn->job_errno;
    double seconds = rn->job_seconds;
    pthread_mutex_unlock(&rn->mu);
    rn->sync_busy = 0;
    if (err) {
        ds_log(DS_LOG_ERROR, "raft storage failed: stopping so that this replica cannot diverge",
               "op", "fdatasync", "error", strerror(err), NULL);
        exit(1);
    }
    ds_raft_storage_sync_end(rn->st, rn->sync_gen);
    ds_metric_observe(rn->m_fsync, seconds);
    ds_metric_observe(rn->m_batch, (double)rn->sync_entries);
    report_durable(rn, rn->sync_index, rn->sync_term);
    sync_kick(rn);
}

static int syncer_start(struct ds_raft_node *rn)
{
    rn->job_fd = -1;
    if ((rn->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        return errno;
    rn->done_ev = event_new(rn->node->base, rn->done_fd, EV_READ | EV_PERSIST, sync_done_cb, rn);
    if (!rn->done_ev || event_add(rn->done_ev, NULL))
        return ENOMEM;
    if (pthread_mutex_init(&rn->mu, NULL))
        return ENOMEM;
    if (pthread_cond_init(&rn->cv, NULL)) {
        pthread_mutex_destroy(&rn->mu);
        return ENOMEM;
    }
    int rv = pthread_create(&rn->syncer, NULL, syncer_main, rn);
    if (rv) {
        pthread_cond_destroy(&rn->cv);
        pthread_mutex_destroy(&rn->mu);
        return rv;
    }
    rn->syncer_up = 1;
    return 0;
}

/* Waits for the sync in flight, stops the thread. */
static void syncer_stop(struct ds_raft_node *rn)
{
    if (rn->syncer_up) {
        pthread_mutex_lock(&rn->mu);
        rn->quit = 1;
        pthread_cond_signal(&rn->cv);
        pthread_mutex_unlock(&rn->mu);
        pthread_join(rn->syncer, NULL);
        pthread_cond_destroy(&rn->cv);
        pthread_mutex_destroy(&rn->mu);
        rn->syncer_up = 0;
    }
    if (rn->done_ev)
        event_free(rn->done_ev);
    rn->done_ev = NULL;
    if (rn->done_fd >= 0)
        close(rn->done_fd);
    rn->done_fd = -1;
}

static uint32_t step_batch(struct ds_raft_node *rn, const uint8_t *p, size_t n, uint32_t *bad,
                           uint64_t *from);

/* The answer to a batch carries the peer's messages back (200), or nothing (204).  Failures need
 * no handling: Raft retries on its own (heartbeats, probes); the pool counts them. */
static void sent_cb(int status, const char *body, size_t len, void *arg)
{
    struct ds_raft_node *rn = arg;
    if (status != 200 || !rn->raft)
        return;
    uint32_t bad;
    uint64_t from;
    step_batch(rn, (const uint8_t *)body, len, &bad, &from);
    schedule(rn);
}

static int buf_reserve(struct ds_raft_buf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* One POST /raft/msg per destination and batch: u32 count, then count x (u32 length, encoded
 * message).  Raft recovers from lost batches by itself (probes, heartbeats). */
static void send_msgs(struct ds_raft_node *rn, const struct ds_raft_ready *rd)
{
    static uint8_t done[MAX_BATCH_MSGS];
    size_t n = rd->n_msgs < MAX_BATCH_MSGS ? rd->n_msgs : MAX_BATCH_MSGS;
    memset(done, 0, n);
    struct ds_raft_buf body = {0}, one = {0};
    for (size_t i = 0; i < n; i++) {
        if (done[i])
            continue;
        uint64_t to = rd->msgs[i].to;
        uint32_t count = 0;
        body.len = 0;
        if (buf_reserve(&body, 4))
            break;
        body.len = 4;
        for (size_t j = i; j < n; j++) {
            if (done[j] || rd->msgs[j].to != to)
                continue;
            done[j] = 1;
            one.len = 0;
            if (ds_raft_msg_encode(&rd->msgs[j], &one) || buf_reserve(&body, 4 + one.len))
                continue;
            put_le32(body.data + body.len, (uint32_t)one.len);
            memcpy(body.data + body.len + 4, one.data, one.len);
            body.len += 4 + one.len;
            count++;
        }
        put_le32(body.data, count);
        if (to == rn->reply_to && count) { /* rides on the answer to that peer's request */
            if (rn->reply.len == 0 && buf_reserve(&rn->reply, 4) == 0)
                rn->reply.len = 4;
            if (rn->reply.len && buf_reserve(&rn->reply, body.len - 4) == 0) {
                memcpy(rn->reply.data + rn->reply.len, body.data + 4, body.len - 4);
                rn->reply.len += body.len - 4;
                rn->reply_count += count;
            }
            continue;
        }
        struct member *m = member_by_id(rn, to);
        if (!m || !count)
            continue;
        if (!m->peer)
            m->peer = ds_peer_get(rn->node->peers, m->url);
        if (m->peer)
            ds_peer_request(m->peer, "POST", "/raft/msg", "application/octet-stream", body.data,
                            body.len, rn->node->cfg->election_min_ms, sent_cb, rn);
    }
    ds_raft_buf_free(&body);
    ds_raft_buf_free(&one);
}

static void apply_addr(struct ds_raft_node *rn, const uint8_t *p, size_t len)
{
    char rec[400];
    if (len >= sizeof rec)
        return;
    memcpy(rec, p, len);
    rec[len] = 0;
    char *nl = strchr(rec, '\n');
    if (!nl)
        return;
    *nl = 0;
    add_member(rn, rec, nl + 1);
}

static void apply_committed(struct ds_raft_node *rn, const struct ds_raft_ready *rd)
{
    int any = 0;
    for (size_t i = 0; i < rd->n_committed; i++) {
        const struct ds_raft_entry *e = &rd->committed[i];
        if (e->index <= rn->applied)
            continue;
        rn->applied = e->index;
        if (e->type != DS_RAFT_ENTRY_NORMAL || e->len == 0)
            continue;
        if (e->data[0] == KIND_APP) {
            rn->ops->apply(rn->app, e->index, e->term, e->data + 1, e->len - 1);
            any = 1;
        } else if (e->data[0] == KIND_ADDR) {
            apply_addr(rn, e->data + 1, e->len - 1);
        }
    }
    if (any && rn->ops->applied)
        rn->ops->applied(rn->app);
    ds_metric_set(rn->m_applied, (double)rn->applied);
}

static void maybe_snapshot(struct ds_raft_node *rn)
{
    if (rn->applied < rn->snap_index + rn->node->cfg->snapshot_entries)
        return;
    uint8_t *data = NULL;
    size_t len = 0;
    struct ds_raft_snapshot_meta meta;
    if (rn->ops->snapshot(rn->app, &data, &len) ||
        ds_raft_snapshot_meta_at(rn->raft, rn->applied, &meta)) {
        free(data);
        return;
    }
    struct ds_raft_buf conf = {0};
    int rv = encode_conf(&meta.conf, &conf);
    if (!rv)
        rv = ds_raft_storage_save_snapshot(rn->st, meta.index, meta.term, conf.data,
                                           (uint32_t)conf.len, data, len);
    ds_raft_buf_free(&conf);
    if (rv)
        fatal_storage(rn, "save snapshot", rv);
    ds_raft_snapshot_taken(rn->raft, meta.index, data, len);
    free(data);
    ds_raft_storage_compact(rn->st, meta.index);
    rn->snap_index = meta.index;
    ds_metric_inc(rn->m_snapshots, 1);
}

static void state_changed(struct ds_raft_node *rn, const struct ds_raft_ready *rd)
{
    int was_leader = rn->role == DS_RAFT_LEADER;
    uint64_t old_leader = rn->leader;
    rn->role = rd->role;
    rn->term = rd->term;
    rn->leader = rd->leader;
    ds_metric_set(rn->m_term, (double)rd->term);
    ds_metric_set(rn->m_is_leader, rd->role == DS_RAFT_LEADER);
    if (old_leader != rd->leader) {
        ds_metric_inc(rn->m_leader_changes, 1);
        struct member *m = member_by_id(rn, rd->leader);
        char term[24];
        snprintf(term, sizeof term, "%llu", (unsigned long long)rd->term);
        ds_log(DS_LOG_INFO, rd->role == DS_RAFT_LEADER ? "became leader" : "leader changed",
               "term", term, "leader", m ? m->name : "none", NULL);
    } else if (was_leader && rd->role != DS_RAFT_LEADER) {
        ds_log(DS_LOG_INFO, "stepped down", NULL);
    }
    if (rn->ops->state_changed)
        rn->ops->state_changed(rn->app, rd->role, rd->term, rd->leader);
}

/* Reports a sync done at once inside a batch (sync_kick), now that the batch is advanced. */
static void report_pending(struct ds_raft_node *rn)
{
    uint64_t index = rn->report_index;
    rn->report_index = 0;
    report_durable(rn, index, rn->report_term);
}

/* Answers the peer request being handled (raft_msg_route) with what rides on it, or 204. */
static void reply_flush(struct ds_raft_node *rn)
{
    struct ds_http_req *req = rn->reply_req;
    if (!req)
        return;
    rn->reply_req = NULL;
    rn->reply_to = 0;
    if (!rn->reply_count) {
        ds_http_reply(req, 204, "application/octet-stream", "", 0);
        return;
    }
    put_le32(rn->reply.data, rn->reply_count);
    ds_http_reply(req, 200, "application/octet-stream", rn->reply.data, rn->reply.len);
    rn->reply_count = 0;
    rn->reply.len = 0;
}

static void process_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ds_raft_node *rn = arg;
    report_pending(rn);
    while (ds_raft_has_ready(rn->raft)) {
        struct ds_raft_ready rd;
        if (ds_raft_ready(rn->raft, &rd))
            break;
        /* send_first: the followers write while this node does (raft.h).  The messages and the
         * disk go first; applying (answering clients) comes after, off the replication path. */
        if (rd.send_first) {
            send_msgs(rn, &rd);
            if (rn->reply_count)
                reply_flush(rn);
            write_entries(rn, &rd);
            sync_kick(rn);
        } else {
            persist(rn, &rd);
            send_msgs(rn, &rd);
            if (rn->reply_count)
                reply_flush(rn);
        }
        if (rd.has_snapshot) {
            if (rn->ops->restore(rn->app, rd.snap_data, rd.snap_len)) {
                ds_log(DS_LOG_ERROR, "cannot restore the snapshot received from the leader", NULL);
                exit(1);
            }
            rn->applied = rd.snap.index;
            rn->snap_index = rd.snap.index;
        }
        apply_committed(rn, &rd);
        ds_metric_set(rn->m_commit, (double)rd.commit);
        for (size_t i = 0; i < rd.n_reads; i++)
            rn->ops->read_done(rn->app, rd.reads[i].ctx, 1);
        int changed = rd.soft_changed;
        ds_raft_advance(rn->raft);
        if (!rd.send_first)
            report_durable(rn, rn->written_index, rn->written_term);
        report_pending(rn);
        if (changed)
            state_changed(rn, &rd);
        maybe_snapshot(rn);
    }
}

static void schedule(struct ds_raft_node *rn)
{
    event_active(rn->process, EV_TIMEOUT, 0);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ds_raft_node *rn = arg;
    ds_raft_tick(rn->raft, mono_ms());
    schedule(rn);
    if (rn->stop_done && rn->role != DS_RAFT_LEADER) {
        void (*done)(void *) = rn->stop_done;
        rn->stop_done = NULL;
        done(rn->stop_arg);
    }
}

/* ------------------------------------------------------------------ peer route */

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Step every message of a batch (u32 count, count x (u32 length, message)).  Returns the count;
 * *bad counts messages that did not decode or were not for this node; *from is the sender. */
static uint32_t step_batch(struct ds_raft_node *rn, const uint8_t *p, size_t n, uint32_t *bad,
                           uint64_t *from)
{
    const uint8_t *end = p + n;
    *bad = 0;
    if (n < 4) {
        *bad = 1;
        return 0;
    }
    uint32_t count = le32(p);
    p += 4;
    for (uint32_t i = 0; i < count; i++) {
        if (end - p < 4 || (uint64_t)(end - p - 4) < le32(p)) {
            (*bad)++;
            break;
        }
        uint32_t len = le32(p);
        struct ds_raft_msg m;
        if (ds_raft_msg_decode(p + 4, len, &m) == 0) {
            if (m.to == rn->id) {
                ds_raft_step(rn->raft, &m);
                *from = m.from;
            } else {
                (*bad)++;
            }
            ds_raft_msg_release(&m);
        } else {
            (*bad)++;
        }
        p += 4 + len;
    }
    ds_metric_inc(rn->m_msgs_in, count);
    ds_metric_inc(rn->m_msgs_bad, *bad);
    return count;
}

static void raft_msg_route(struct ds_http_req *req)
{
    struct ds_raft_node *rn = req->ctx;
    uint32_t bad;
    uint64_t from = 0;
    uint32_t count = step_batch(rn, (const uint8_t *)req->body, req->body_len, &bad, &from);
    if (bad) {
        schedule(rn);
        ds_http_reply_error(req, 400, "bad_request", "%u of %u messages refused", bad, count);
        return;
    }
    /* handle the batch now, so that what goes back to the sender rides on this answer (sent as
     * soon as a batch has it, before that batch's entries are applied) */
    rn->reply_to = from;
    rn->reply_req = req;
    rn->reply.len = 0;
    rn->reply_count = 0;
    process_cb(-1, 0, rn);
    reply_flush(rn);
}

/* ------------------------------------------------------------------ admin routes */

static void transfer_route(struct ds_http_req *req)
{
    struct ds_raft_node *rn = req->ctx;
    cJSON *o;
    char err[DS_JSON_ERR_MAX];
    const char *to = NULL;
    static const char *const fields[] = {"to", NULL};
    if (ds_json_parse_object(req->body, req->body_len, &o, err) ||
        (ds_json_only_fields(o, fields, err) || ds_json_get_str(o, "to", true, 63, &to, err))) {
        if (o)
            cJSON_Delete(o);
        ds_http_reply_error(req, 400, "bad_request", "%s", err);
        return;
    }
    snprintf(req->audit_params, sizeof req->audit_params, "{\"to\":\"%.60s\"}", to);
    int rv = ds_raft_transfer_leadership(rn->raft, ds_raft_node_id(to));
    cJSON_Delete(o);
    schedule(rn);
    if (rv == DS_RAFT_ENOTLEADER) {
        ds_http_add_header(req, "Retry-After", "1");
        ds_http_reply_error(req, 503, "not_leader", "this node is not the leader (leader: %s)",
                            ds_raft_node_leader_name(rn) ? ds_raft_node_leader_name(rn) : "none");
    } else if (rv) {
        ds_http_reply_error(req, 409, "conflict", "transfer refused: %s", ds_raft_strerror(rv));
    } else {
        ds_http_reply(req, 202, "application/json", "{\"transfer\":\"started\"}", 23);
    }
}

static void members_route(struct ds_http_req *req)
{
    struct ds_raft_node *rn = req->ctx;
    cJSON *o;
    char err[DS_JSON_ERR_MAX];
    const char *op = NULL, *name = NULL, *url = NULL;
    static const char *const fields[] = {"op", "id", "url", NULL};
    if (ds_json_parse_object(req->body, req->body_len, &o, err) ||
        ds_json_only_fields(o, fields, err) || ds_json_get_str(o, "op", true, 16, &op, err) ||
        ds_json_get_str(o, "id", true, 63, &name, err) ||
        ds_json_get_str(o, "url", false, 255, &url, err)) {
        if (o)
            cJSON_Delete(o);
        ds_http_reply_error(req, 400, "bad_request", "%s", err);
        return;
    }
    snprintf(req->audit_params, sizeof req->audit_params, "{\"op\":\"%.16s\",\"id\":\"%.60s\"}",
             op, name);
    int kind = strcmp(op, "add") == 0       ? DS_RAFT_CONF_ADD_LEARNER
               : strcmp(op, "promote") == 0 ? DS_RAFT_CONF_PROMOTE
               : strcmp(op, "remove") == 0  ? DS_RAFT_CONF_REMOVE
                                            : 0;
    int rv = DS_RAFT_EINVAL;
    uint64_t index = 0, term = 0;
    if (!kind) {
        snprintf(err, sizeof err, "field 'op' must be add, promote or remove");
    } else if (kind == DS_RAFT_CONF_ADD_LEARNER && (!url || strncmp(url, "https://", 8) != 0)) {
        snprintf(err, sizeof err, "field 'url' (https://host:port) is required to add a member");
    } else {
        rv = 0;
        if (kind == DS_RAFT_CONF_ADD_LEARNER) { /* the address first, so every member learns it */
            char rec[400];
            int n = snprintf(rec, sizeof rec, "%c%s\n%s", KIND_ADDR, name, url);
            rv = ds_raft_propose(rn->raft, rec, (uint32_t)n, &index, &term);
        }
        if (!rv)
            rv = ds_raft_change_membership(rn->raft, kind, ds_raft_node_id(name), &index);
    }
    cJSON_Delete(o);
    schedule(rn);
    if (rv == DS_RAFT_EINVAL)
        ds_http_reply_error(req, 400, "bad_request", "%s", err);
    else if (rv == DS_RAFT_ENOTLEADER)
        ds_http_reply_error(req, 503, "not_leader", "this node is not the leader (leader: %s)",
                            ds_raft_node_leader_name(rn) ? ds_raft_node_leader_name(rn) : "none");
    else if (rv)
        ds_http_reply_error(req, 409, "conflict", "membership change refused: %s",
                            ds_raft_strerror(rv));
    else
        ds_http_reply(req, 202, "application/json", "{\"change\":\"proposed\"}", 21);
}

/* ------------------------------------------------------------------ start / stop */

static void notice(void *arg, const char *msg)
{
    (void)arg;
    ds_log(DS_LOG_WARN, "raft storage repaired", "detail", msg, NULL);
}

/* [cluster] peers: "name=url,name=url"; the bootstrap configuration is all of them. */
static int parse_peers(struct ds_raft_node *rn, struct ds_raft_membership *conf, char *err)
{
    const struct ds_config *c = rn->node->cfg;
    char list[DS_CONFIG_LIST_MAX];
    snprintf(list, sizeof list, "%s", c->peers);
    char *save = NULL;
    for (char *item = strtok_r(list, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        while (*item == ' ')
            item++;
        char *eq = strchr(item, '=');
        if (!eq)
            continue;
        *eq = 0;
        char *url = eq + 1, *sp = url + strlen(url);
        while (sp > url && sp[-1] == ' ')
            *--sp = 0;
        if (conf->n_voters == DS_RAFT_MAX_NODES || !add_member(rn, item, url)) {
            snprintf(err, 512, "[cluster] peers: more than %d members", DS_RAFT_MAX_NODES);
            return EINVAL;
        }
        conf->voters[conf->n_voters++] = ds_raft_node_id(item);
    }
    if (!member_by_id(rn, rn->id)) {
        if (conf->n_voters == 0) { /* single node: itself */
            add_member(rn, c->node_id, c->advertise_url);
            conf->voters[conf->n_voters++] = rn->id;
        } else {
            snprintf(err, 512, "[cluster] peers does not name this node ('%s')", c->node_id);
            return EINVAL;
        }
    }
    return 0;
}

static int open_storage(struct ds_raft_node *rn, struct ds_raft_membership *boot,
                        struct ds_raft **raft, char *err)
{
    char dir[DS_CONFIG_PATH_MAX + 8];
    snprintf(dir, sizeof dir, "%s/raft", rn->node->cfg->data_dir);
    struct ds_raft_storage_opts so = {.notice = notice, .preallocate = 1};
    char serr[DS_RAFT_STORAGE_ERRLEN];
    int rv = ds_raft_storage_open(dir, &so, &rn->st, serr);
    if (rv) {
        snprintf(err, 512, "raft storage %s: %s", dir, serr);
        return EIO;
    }
    struct ds_raft_storage_load ld;
    ds_raft_storage_take_load(rn->st, &ld);
    struct ds_raft_durable d = {.hs = ld.hard_state, .entries = ld.entries,
                                .n_entries = ld.n_entries};
    d.snap.conf = *boot;
    if (ld.snapshot.index) {
        d.snap.index = ld.snapshot.index;
        d.snap.term = ld.snapshot.term;
        if (ds_raft_conf_decode(ld.snapshot.conf, ld.snapshot.conf_len, &d.snap.conf) ||
            rn->ops->restore(rn->app, ld.snapshot.data, ld.snapshot.data_len)) {
            ds_raft_storage_load_free(&ld);
            snprintf(err, 512, "raft snapshot in %s cannot be restored", dir);
            return EIO;
        }
        d.snap_data = ld.snapshot.data;
        d.snap_len = ld.snapshot.data_len;
        rn->applied = rn->snap_index = ld.snapshot.index;
    }
    struct ds_raft_options o;
    ds_raft_options_default(&o);
    const struct ds_config *c = rn->node->cfg;
    o.id = rn->id;
    o.election_min_ms = (uint32_t)c->election_min_ms;
    o.election_max_ms = (uint32_t)c->election_max_ms;
    o.heartbeat_ms = (uint32_t)c->heartbeat_ms;
    o.max_inflight = MAX_INFLIGHT;
    o.async_persist = 1;
    o.seed = rn->node->boot_id ^ rn->id;
    rv = ds_raft_create(&o, &d, raft);
    ds_raft_storage_load_free(&ld);
    if (rv) {
        snprintf(err, 512, "raft: %s", ds_raft_strerror(rv));
        return EINVAL;
    }
    return 0;
}

static double read_elections(void *arg)
{
    struct ds_raft_status st;
    ds_raft_status(((struct ds_raft_node *)arg)->raft, &st);
    return (double)st.elections_started;
}

static double read_commit_lag(void *arg)
{
    struct ds_raft_status st;
    ds_raft_status(((struct ds_raft_node *)arg)->raft, &st);
    return (double)(st.last_index > st.commit ? st.last_index - st.commit : 0);
}

static void register_metrics(struct ds_raft_node *rn)
{
    struct ds_metrics *m = rn->node->metrics;
    rn->m_term = ds_metrics_gauge(m, "dsyncd_raft_term", "Current Raft term", "");
    rn->m_commit = ds_metrics_gauge(m, "dsyncd_raft_commit_index", "Raft commit index", "");
    rn->m_applied = ds_metrics_gauge(m, "dsyncd_raft_applied_index", "Last applied index", "");
    rn->m_is_leader = ds_metrics_gauge(m, "dsyncd_raft_is_leader", "1 on the leader", "");
    rn->m_leader_changes = ds_metrics_counter(m, "dsyncd_raft_leader_changes_total",
                                              "Leader changes seen", "");
    rn->m_fsync = ds_metrics_histogram(m, "dsyncd_raft_fsync_seconds",
                                       "Time of one group-commit fsync of the Raft log", "",
                                       ds_metrics_latency_bounds, ds_metrics_latency_nbounds);
    static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
    rn->m_batch = ds_metrics_histogram(m, "dsyncd_raft_append_batch_entries",
                                       "Entries made durable by one fsync", "", batch_bounds, 11);
    rn->m_msgs_in = ds_metrics_counter(m, "dsyncd_raft_messages_received_total",
                                       "Raft messages received from peers", "");
    rn->m_msgs_bad = ds_metrics_counter(m, "dsyncd_raft_messages_refused_total",
                                        "Raft messages that did not decode or were not for us", "");
    rn->m_snapshots = ds_metrics_counter(m, "dsyncd_raft_snapshots_total",
                                         "Snapshots taken by this node", "");
    struct ds_metric *e = ds_metrics_counter(m, "dsyncd_raft_elections_total",
                                             "Elections this node started", "");
    struct ds_metric *lag = ds_metrics_gauge(m, "dsyncd_raft_commit_lag_entries",
                                             "Entries in this node's log not yet committed", "");
    if (e) {
        e->read = read_elections;
        e->read_arg = rn;
    }
    if (lag) {
        lag->read = read_commit_lag;
        lag->read_arg = rn;
    }
}

int ds_raft_node_start(struct ds_node *node, const struct ds_raft_app_ops *ops,
                       struct ds_raft_app *app, struct ds_raft_node **out, char *err)
{
    struct ds_raft_node *rn = calloc(1, sizeof *rn);
    if (!rn) {
        snprintf(err, 512, "out of memory");
        return ENOMEM;
    }
    rn->done_fd = -1;
    rn->node = node;
    rn->ops = ops;
    rn->app = app;
    rn->id = ds_raft_node_id(node->cfg->node_id);
    struct ds_raft_membership boot = {0};
    int rv = parse_peers(rn, &boot, err);
    if (!rv && boot.n_voters > 1 && !node->peers) {
        snprintf(err, 512, "a Raft cluster needs the shared MAC key (SHARED_MAC_KEY)");
        rv = EINVAL;
    }
    if (!rv)
        rv = open_storage(rn, &boot, &rn->raft, err);
    if (rv) {
        ds_raft_node_free(rn);
        return rv;
    }
    register_metrics(rn);
    if ((rv = syncer_start(rn))) {
        snprintf(err, 512, "raft: cannot start the log syncer: %s", strerror(rv));
        ds_raft_node_free(rn);
        return rv;
    }
    rn->process = event_new(node->base, -1, 0, process_cb, rn);
    rn->tick = event_new(node->base, -1, EV_PERSIST, tick_cb, rn);
    struct timeval tv = {0, TICK_MS * 1000};
    if (!rn->process || !rn->tick || evtimer_add(rn->tick, &tv) ||
        ds_server_route(node->server, DS_HTTP_POST, "/raft/msg", raft_msg_route, DS_ROUTE_PEER,
                        rn) ||
        ds_server_route(node->server, DS_HTTP_POST, "/raft/transfer", transfer_route,
                        DS_ROUTE_ADMIN | DS_ROUTE_MUTATING, rn) ||
        ds_server_route(node->server, DS_HTTP_POST, "/raft/members", members_route,
                        DS_ROUTE_ADMIN | DS_ROUTE_MUTATING, rn)) {
        snprintf(err, 512, "out of memory");
        ds_raft_node_free(rn);
        return ENOMEM;
    }
    ds_raft_tick(rn->raft, mono_ms());
    schedule(rn);
    *out = rn;
    return 0;
}

static void stop_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ds_raft_node *rn = arg;
    if (rn->stop_done) {
        void (*done)(void *) = rn->stop_done;
        rn->stop_done = NULL;
        done(rn->stop_arg);
    }
}

void ds_raft_node_stop(struct ds_raft_node *rn, void (*done)(void *), void *arg)
{
    if (rn->role != DS_RAFT_LEADER) {
        done(arg);
        return;
    }
    struct ds_raft_status s;
    ds_raft_status(rn->raft, &s);
    uint64_t best = 0, best_match = 0;
    for (size_t i = 0; i < s.n_peers; i++)
        if (s.peers[i].id != rn->id && s.peers[i].voter && s.peers[i].match >= best_match) {
            best = s.peers[i].id;
            best_match = s.peers[i].match;
        }
    if (!best || ds_raft_transfer_leadership(rn->raft, best)) {
        done(arg);
        return;
    }
    ds_log(DS_LOG_INFO, "handing leadership over before exit", "to",
           member_by_id(rn, best) ? member_by_id(rn, best)->name : "?", NULL);
    rn->stop_done = done;
    rn->stop_arg = arg;
    rn->stop_timer = evtimer_new(rn->node->base, stop_timeout, rn);
    uint64_t ms = rn->node->cfg->election_max_ms * 2;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    if (rn->stop_timer)
        evtimer_add(rn->stop_timer, &tv);
    schedule(rn);
}

void ds_raft_node_free(struct ds_raft_node *rn)
{
    if (!rn)
        return;
    if (rn->tick)
        event_free(rn->tick);
    if (rn->process)
        event_free(rn->process);
    if (rn->stop_timer)
        event_free(rn->stop_timer);
    syncer_stop(rn);
    ds_raft_destroy(rn->raft);
    rn->raft = NULL;
    ds_raft_buf_free(&rn->reply);
    if (rn->st)
        ds_raft_storage_sync(rn->st);
    ds_raft_storage_close(rn->st);
    free(rn);
}

/* ------------------------------------------------------------------ API */

int ds_raft_node_propose(struct ds_raft_node *rn, const void *data, size_t len, uint64_t *index,
                         uint64_t *term)
{
    uint8_t stack[1024];
    uint8_t *buf = len + 1 <= sizeof stack ? stack : malloc(len + 1);
    if (!buf)
        return DS_RAFT_ENOMEM;
    buf[0] = KIND_APP;
    memcpy(buf + 1, data, len);
    uint64_t leader;
    int rv = ds_raft_propose(rn->raft, buf, (uint32_t)(len + 1), index, &leader);
    if (buf != stack)
        free(buf);
    if (!rv) {
        *term = rn->term;
        schedule(rn);
    }
    return rv;
}

int ds_raft_node_read(struct ds_raft_node *rn, uint64_t ctx)
{
    int rv = ds_raft_read_index(rn->raft, ctx);
    if (!rv)
        schedule(rn);
    return rv;
}

int ds_raft_node_is_leader(const struct ds_raft_node *rn)
{
    return rn->role == DS_RAFT_LEADER;
}

uint64_t ds_raft_node_term(const struct ds_raft_node *rn)
{
    return rn->term;
}

uint64_t ds_raft_node_applied(const struct ds_raft_node *rn)
{
    return rn->applied;
}

const char *ds_raft_node_leader_url(const struct ds_raft_node *rn)
{
    if (!rn->leader || rn->leader == rn->id)
        return NULL;
    const struct member *m = member_by_id((struct ds_raft_node *)rn, rn->leader);
    return m ? m->url : NULL;
}

const char *ds_raft_node_leader_name(const struct ds_raft_node *rn)
{
    const struct member *m = member_by_id((struct ds_raft_node *)rn, rn->leader);
    return rn->leader && m ? m->name : NULL;
}

void ds_raft_node_status(const struct ds_raft_node *rn, cJSON *out)
{
    struct ds_raft_status s;
    ds_raft_status(rn->raft, &s);
    struct ds_raft_storage_stats st;
    ds_raft_storage_stats(rn->st, &st);
    struct ds_raft_node *m = (struct ds_raft_node *)rn;
    cJSON_AddStringToObject(out, "state", ds_raft_role_name(s.role));
    cJSON_AddNumberToObject(out, "term", (double)s.term);
    const char *leader = ds_raft_node_leader_name(rn);
    if (leader)
        cJSON_AddStringToObject(out, "leader", leader);
    else
        cJSON_AddNullToObject(out, "leader");
    cJSON_AddNumberToObject(out, "commit_index", (double)s.commit);
    cJSON_AddNumberToObject(out, "applied_index", (double)rn->applied);
    cJSON_AddNumberToObject(out, "last_index", (double)s.last_index);
    cJSON_AddNumberToObject(out, "snapshot_index", (double)s.snapshot_index);
    cJSON_AddNumberToObject(out, "log_bytes", (double)st.log_bytes);
    cJSON *voters = cJSON_AddArrayToObject(out, "voters");
    for (uint32_t i = 0; i < s.conf.n_voters; i++) {
        struct member *mm = member_by_id(m, s.conf.voters[i]);
        cJSON_AddItemToArray(voters, cJSON_CreateString(mm ? mm->name : "?"));
    }
    cJSON *learners = cJSON_AddArrayToObject(out, "learners");
    for (uint32_t i = 0; i < s.conf.n_learners; i++) {
        struct member *mm = member_by_id(m, s.conf.learners[i]);
        cJSON_AddItemToArray(learners, cJSON_CreateString(mm ? mm->name : "?"));
    }
    if (s.role == DS_RAFT_LEADER) {
        cJSON *peers = cJSON_AddObjectToObject(out, "match_index");
        for (size_t i = 0; i < s.n_peers; i++) {
            struct member *mm = member_by_id(m, s.peers[i].id);
            cJSON_AddNumberToObject(peers, mm ? mm->name : "?", (double)s.peers[i].match);
        }
    }
}
