/* Cache role: the directory-MESI engine (mesi.c) running over the network (DESIGN.md §3 cache).
 *
 * Choices this glue makes (the protocol itself is mesi.h's):
 * - Node ids.  The engine wants small ids agreed by every node.  Every cache node is listed in
 *   [cluster] seeds (the same list on every node, as conf/ does); the seed URLs sorted bytewise give
 *   ids 0..n-1 and a member's id is the index of its advertised URL: no negotiation, no clash.
 *   A node outside the seeds (scaled out) claims the lowest id no member uses: it advertises the
 *   claim in its gossip metadata ("mesi_claim"), yields to a claim of the same id by a member with
 *   a smaller name, and after CLAIM_MS without a clash starts its engine and advertises the id
 *   ("mesi_id"); until then it is not on the ring and answers 503.  At most DS_MESI_MAX_NODES.
 * - Home and epoch.  The ring (ring/ring.h) over the live cache members (gossip: alive or suspect)
 *   by name gives ds_mesi_ring.home_of.  The membership epoch carried by every message must be equal
 *   on every node, so it is not gossip's local event counter but XXH64 of the sorted (name, id)
 *   pairs of the ring: nodes with the same view agree, and while views differ messages are dropped
 *   as stale and retransmitted until gossip converges.  A change rebuilds the ring and calls
 *   ds_mesi_set_epoch (the home then waits one lease term before granting).
 * - Transport.  Coherence messages are POST /cache/peer/msg (a peer route: mutual TLS + HMAC) whose
 *   body is frames of u32 little-endian length + the engine's binary encoding.  Messages for one
 *   destination are batched until the end of the event-loop turn (or a batch fills) and the
 *   receiver answers 204 before handing them to the engine: they are one-way, the engine
 *   retransmits what gets lost.
 * - Main memory: cache_store.c (Redis when [redis] shards is set, else the home's own table, lost on
 *   restart or when a key moves to another home).  Over Redis the engine runs with home leases of
 *   two lease terms (mesi.h HOME LEASES): Redis decides which node acts as a key's home while the
 *   nodes' views differ.
 * - Joining.  Until gossip has joined, the ring holds only this node: it serves no client operation
 *   and drops coherence messages (ds_cache_serving), as /ready says.
 * - Incarnation: a boot counter in <data_dir>/cache.boot (next_incarnation), so that the ids of a
 *   restarted node are larger than those of its previous life.
 * - Time: ds_node_now_ms (monotonic); the engine is ticked every TICK_MS. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/node.h"
#include "gossip/node.h"
#include "net/peer.h"
#include "net/server.h"
#include "ring/hash.h"
#include "ring/ring.h"
#include "roles/cache/cache_internal.h"
#include "roles/cache/cache_role.h"

#define TICK_MS 10
#define SEND_TIMEOUT_MS 2000
#define BATCH_MAX (256u * 1024u) /* bytes of frames sent in one request */
#define FRAME_HEADER 4
#define CLAIM_MS 3000 /* a claimed id is taken once no clash was seen for this long (gossip) */

/* ------------------------------------------------------------------ ids and membership */

static int cmp_url(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Copy url without a trailing '/' into out; -1 when it does not fit. */
static int norm_url(const char *url, char *out)
{
    size_t n = strlen(url);
    if (n && url[n - 1] == '/')
        n--;
    if (n == 0 || n >= DS_CACHE_URL_MAX)
        return -1;
    memcpy(out, url, n);
    out[n] = 0;
    return 0;
}

/* MESI id of the member advertising url, or -1 when it is not a seed. */
static int id_of_url(const struct ds_cache_role *cr, const char *url)
{
    char u[DS_CACHE_URL_MAX];
    if (norm_url(url, u))
        return -1;
    for (size_t i = 0; i < cr->nseeds; i++)
        if (strcmp(cr->seeds[i], u) == 0)
            return (int)i;
    return -1;
}

static int load_seeds(struct ds_cache_role *cr, char *err)
{
    const struct ds_config *c = cr->node->cfg;
    char list[DS_CONFIG_LIST_MAX];
    snprintf(list, sizeof list, "%s", c->seeds);
    char *save = NULL;
    for (char *s = strtok_r(list, ", ", &save); s; s = strtok_r(NULL, ", ", &save)) {
        if (cr->nseeds == DS_MESI_MAX_NODES) {
            snprintf(err, 512, "[cluster] seeds: the cache role takes at most %d nodes",
                     DS_MESI_MAX_NODES);
            return EINVAL;
        }
        if (norm_url(s, cr->seeds[cr->nseeds])) {
            snprintf(err, 512, "[cluster] seeds: URL too long");
            return EINVAL;
        }
        for (size_t i = 0; i < cr->nseeds; i++)
            if (strcmp(cr->seeds[i], cr->seeds[cr->nseeds]) == 0) {
                snprintf(err, 512, "[cluster] seeds: '%s' is listed twice", s);
                return EINVAL;
            }
        cr->nseeds++;
    }
    qsort(cr->seeds, cr->nseeds, sizeof cr->seeds[0], cmp_url);
    if (cr->nseeds == 0) { /* a single node on its own */
        norm_url(c->advertise_url, cr->seeds[0]);
        cr->nseeds = 1;
    }
    int self = id_of_url(cr, c->advertise_url);
    cr->claim = -1;
    cr->self = self < 0 ? UINT16_MAX : (uint16_t)self; /* outside the seeds: claimed later */
    return 0;
}

/* MESI id of a member: its place in the seeds, else the id it advertises; -1 when none. */
static int member_id(const struct ds_cache_role *cr, const char *name, const char *url)
{
    int id = id_of_url(cr, url);
    if (id >= 0)
        return id;
    const char *v = ds_gossip_meta(cr->gossip, name, "mesi_id");
    char *end;
    long x = v ? strtol(v, &end, 10) : -1;
    if (!v || !*v || *end || x < (long)cr->nseeds || x >= DS_MESI_MAX_NODES)
        return -1;
    return (int)x;
}

static uint16_t home_of(const struct ds_mesi_ring *ring, const uint8_t *key, size_t len)
{
    const struct ds_cache_role *cr =
        (const struct ds_cache_role *)(const void *)((const char *)ring -
                                                     offsetof(struct ds_cache_role, ring_if));
    return ds_cache_home(cr, key, len);
}

uint16_t ds_cache_home(const struct ds_cache_role *cr, const uint8_t *key, size_t len)
{
    size_t idx;
    if (!cr->ring || ds_ring_lookup(cr->ring, key, len, &idx))
        return cr->self;
    return cr->ring_ids[idx];
}

const char *ds_cache_member_name(const struct ds_cache_role *cr, int id)
{
    return id >= 0 && id < DS_MESI_MAX_NODES ? cr->members[id].name : "";
}

/* Rebuild the ring from gossip's live members when membership moved; a new (name, id) set gets a
 * new epoch. */
static void refresh_members(struct ds_cache_role *cr)
{
    uint64_t gepoch = ds_gossip_epoch(cr->gossip);
    if (cr->ring && gepoch == cr->gossip_epoch && !cr->refresh)
        return;
    cr->refresh = 0;
    const char *ids[DS_SWIM_MEMBERS_MAX], *urls[DS_SWIM_MEMBERS_MAX];
    size_t n = ds_gossip_live(cr->gossip, ids, urls, DS_SWIM_MEMBERS_MAX);
    struct ds_ring_member rm[DS_MESI_MAX_NODES];
    int mid[DS_MESI_MAX_NODES];
    size_t k = 0;
    uint64_t epoch = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n && k < DS_MESI_MAX_NODES; i++) { /* ids[] is sorted by name */
        int id = member_id(cr, ids[i], urls[i]);
        if (id < 0)
            continue; /* no id yet (a node still claiming one): never a home */
        rm[k] = (struct ds_ring_member){.id = ids[i], .weight = 0};
        mid[k++] = id;
        epoch = ds_hash64(ids[i], strlen(ids[i]), epoch ^ (uint64_t)id);
    }
    struct ds_ring *ring;
    if (k == 0 || ds_ring_build(rm, k, 0, &ring))
        return; /* keep the old ring; retried on the next tick */
    for (int i = 0; i < DS_MESI_MAX_NODES; i++)
        cr->members[i].live = 0;
    for (size_t i = 0; i < k; i++) {
        size_t idx;
        ds_ring_find(ring, rm[i].id, &idx);
        cr->ring_ids[idx] = (uint16_t)mid[i];
        struct cache_member *m = &cr->members[mid[i]];
        m->live = 1;
        snprintf(m->name, sizeof m->name, "%s", rm[i].id);
        for (size_t j = 0; j < n; j++)
            if (ids[j] == rm[i].id)
                snprintf(m->url, sizeof m->url, "%s", urls[j]);
    }
    ds_ring_free(cr->ring);
    cr->ring = ring;
    cr->gossip_epoch = gepoch;
    if (epoch == cr->epoch)
        return;
    cr->epoch = epoch;
    char e[24], nm[8];
    snprintf(e, sizeof e, "%016" PRIx64, epoch);
    snprintf(nm, sizeof nm, "%zu", k);
    ds_log(DS_LOG_INFO, "cache membership changed", "epoch", e, "members", nm, NULL);
    if (cr->mesi) {
        ds_mesi_set_epoch(cr->mesi, epoch, ds_node_now_ms());
        ds_cache_drain(cr);
    }
}

/* ------------------------------------------------------------------ transport */

static void sent_cb(int status, const char *body, size_t len, void *arg)
{
    (void)status;
    (void)body;
    (void)len;
    (void)arg; /* one-way: the engine retransmits requests and recalls that are not answered */
}

static void send_batch(struct ds_cache_role *cr, int to)
{
    struct ds_buf *b = &cr->out[to];
    if (b->len == 0)
        return;
    const struct cache_member *m = &cr->members[to];
    struct ds_peer *p = m->live && cr->node->peers ? ds_peer_get(cr->node->peers, m->url) : NULL;
    if (p)
        ds_peer_request(p, "POST", "/cache/peer/msg", "application/octet-stream", b->p, b->len,
                        SEND_TIMEOUT_MS, sent_cb, cr);
    b->len = 0;
    if (b->cap > 4 * BATCH_MAX) /* give back what one large value made it grow to */
        ds_buf_free(b);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ds_cache_role *cr = arg;
    cr->flush_armed = 0;
    for (int i = 0; i < DS_MESI_MAX_NODES; i++)
        send_batch(cr, i);
}

static void queue_msg(struct ds_cache_role *cr, const struct ds_mesi_msg *msg)
{
    size_t len;
    if (msg->to >= DS_MESI_MAX_NODES || msg->to == cr->self ||
        ds_mesi_encode(msg, cr->scratch + FRAME_HEADER, cr->scratch_cap - FRAME_HEADER, &len))
        return;
    for (int i = 0; i < FRAME_HEADER; i++)
        cr->scratch[i] = (uint8_t)(len >> (8 * i));
    struct ds_buf *b = &cr->out[msg->to];
    if (b->len && b->len + FRAME_HEADER + len > BATCH_MAX)
        send_batch(cr, msg->to);
    ds_buf_add(b, cr->scratch, FRAME_HEADER + len);
    if (b->oom) {
        ds_buf_free(b);
        return;
    }
    if (!cr->flush_armed) {
        cr->flush_armed = 1;
        event_active(cr->flush, EV_TIMEOUT, 0);
    }
}

/* Walk a batch of frames: with recv 0 only check that every frame decodes (0) or not (-1);
 * else hand each message to the engine (the batch was checked first). */
static int walk_batch(struct ds_cache_role *cr, const uint8_t *p, size_t len, int recv)
{
    uint64_t now = ds_node_now_ms();
    while (len) {
        struct ds_mesi_msg msg;
        if (len < FRAME_HEADER)
            return -1;
        uint32_t fl = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                      (uint32_t)p[3] << 24;
        if (fl > len - FRAME_HEADER || ds_mesi_decode(p + FRAME_HEADER, fl, &msg))
            return -1;
        if (recv && ds_mesi_recv(cr->mesi, &msg, now))
            ds_metric_inc(cr->m_bad_msgs, 1); /* addressed to another id: views differ */
        p += FRAME_HEADER + fl;
        len -= FRAME_HEADER + fl;
    }
    return 0;
}

/* POST /cache/peer/msg: every frame must decode, or the whole body is refused. */
static void msg_route(struct ds_http_req *req)
{
    struct ds_cache_role *cr = req->ctx;
    const uint8_t *body = (const uint8_t *)req->body;
    if (req->body_len == 0 || walk_batch(cr, body, req->body_len, 0)) {
        ds_metric_inc(cr->m_bad_msgs, 1);
        ds_http_reply_error(req, 400, "bad_request", "malformed coherence message batch");
        return;
    }
    if (ds_cache_serving(cr)) /* else dropped (claiming an id, not joined): senders retransmit */
        walk_batch(cr, body, req->body_len, 1); /* messages point into the body: before the reply */
    ds_http_reply(req, 204, "application/octet-stream", "", 0);
    ds_cache_drain(cr);
}

/* ------------------------------------------------------------------ the engine's outputs */

static void on_lost(struct ds_cache_role *cr, const struct ds_mesi_out *o)
{
    char from[24], to[24];
    snprintf(from, sizeof from, "%" PRIu64, o->lost_from);
    snprintf(to, sizeof to, "%" PRIu64, o->lost_to);
    cr->lost_versions += o->lost_to - o->lost_from;
    ds_log(DS_LOG_WARN, "cache: write-back data lost (versions after 'from' up to 'to')", "from",
           from, "to", to, NULL);
}

void ds_cache_drain(struct ds_cache_role *cr)
{
    struct ds_mesi_out o;
    while (cr->mesi && ds_mesi_poll(cr->mesi, &o)) {
        switch (o.kind) {
        case DS_MESI_OUT_SEND:
            queue_msg(cr, &o.msg);
            break;
        case DS_MESI_OUT_MEM_READ:
            ds_cache_store_read(cr->store, o.id, o.key, o.key_len);
            break;
        case DS_MESI_OUT_MEM_RENEW:
            ds_cache_store_renew(cr->store, o.id, o.key, o.key_len);
            break;
        case DS_MESI_OUT_MEM_WRITE:
            ds_cache_store_write(cr->store, o.id, o.key, o.key_len, o.present, o.value,
                                 o.value_len, o.version, o.floor, o.applied, o.applied_len);
            break;
        case DS_MESI_OUT_DONE:
            ds_cache_api_done(cr, &o.res);
            break;
        case DS_MESI_OUT_LOST:
            on_lost(cr, &o);
            break;
        default:
            break;
        }
    }
}

static int start_engine(struct ds_cache_role *cr, char *err);

static void advertise(struct ds_cache_role *cr, const char *key, int id)
{
    struct ds_swim_meta m;
    memset(&m, 0, sizeof m);
    snprintf(m.key, sizeof m.key, "%s", key);
    snprintf(m.value, sizeof m.value, "%d", id);
    ds_gossip_set_meta(cr->gossip, &m, 1);
}

/* A node outside the seeds: claim the lowest free id, start the engine once the claim held for
 * CLAIM_MS (see the header comment). */
static void claim_id(struct ds_cache_role *cr)
{
    if (!ds_gossip_joined(cr->gossip))
        return;
    const char *me = cr->node->cfg->node_id;
    const char *ids[DS_SWIM_MEMBERS_MAX], *urls[DS_SWIM_MEMBERS_MAX];
    size_t n = ds_gossip_live(cr->gossip, ids, urls, DS_SWIM_MEMBERS_MAX);
    int used[DS_MESI_MAX_NODES] = {0};
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ids[i], me) == 0)
            continue;
        int id = member_id(cr, ids[i], urls[i]);
        if (id >= 0)
            used[id] = 1;
        const char *c = ds_gossip_meta(cr->gossip, ids[i], "mesi_claim");
        char *end;
        long x = c && *c ? strtol(c, &end, 10) : -1;
        if (c && *c && !*end && x >= 0 && x < DS_MESI_MAX_NODES && strcmp(ids[i], me) < 0)
            used[x] = 1; /* a smaller name's claim wins */
    }
    uint64_t now = ds_node_now_ms();
    if (cr->claim >= 0 && !used[cr->claim]) {
        if (now - cr->claim_since_ms < CLAIM_MS)
            return;
        char err[512];
        cr->self = (uint16_t)cr->claim;
        if (start_engine(cr, err)) {
            ds_log(DS_LOG_ERROR, "cache: cannot start the engine", "error", err, NULL);
            return;
        }
        if (cr->epoch)
            ds_mesi_set_epoch(cr->mesi, cr->epoch, now);
        advertise(cr, "mesi_id", cr->claim);
        cr->refresh = 1; /* our own metadata raises no gossip event here */
        char v[8];
        snprintf(v, sizeof v, "%d", cr->claim);
        ds_log(DS_LOG_INFO, "cache: joined with a claimed node id", "id", v, NULL);
        return;
    }
    int pick = -1;
    for (int i = (int)cr->nseeds; i < DS_MESI_MAX_NODES && pick < 0; i++)
        if (!used[i])
            pick = i;
    if (pick < 0) {
        if (cr->claim != -2)
            ds_log(DS_LOG_ERROR, "cache: every node id is taken; this node cannot join", NULL);
        cr->claim = -2;
        return;
    }
    cr->claim = pick;
    cr->claim_since_ms = now;
    advertise(cr, "mesi_claim", pick);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ds_cache_role *cr = arg;
    if (!cr->mesi)
        claim_id(cr);
    refresh_members(cr);
    if (cr->mesi)
        ds_mesi_tick(cr->mesi, ds_node_now_ms());
    ds_cache_drain(cr);
}

/* ------------------------------------------------------------------ metrics */

enum mwhat {
    MW_HITS, MW_MISSES, MW_EVICTIONS, MW_WRITEBACKS, MW_INV_SENT, MW_INV_RECEIVED, MW_MSG_SENT,
    MW_MSG_RECEIVED, MW_STALE, MW_LEASE, MW_DIRTY_LOST, MW_BUSY, MW_TIMEOUTS, MW_LINES, MW_ENTRIES,
    MW_BYTES, MW_DIR, MW_EPOCH_MEMBERS, MW_MEM_RETRIES, MW_MEM_PENDING, MW_LOST_VERSIONS,
};

static double read_stat(void *arg)
{
    const struct cache_mref *r = arg;
    if (!r->cr->mesi)
        return 0;
    const struct ds_mesi_stats *s = ds_mesi_stats(r->cr->mesi);
    switch (r->what) {
    case MW_HITS: return (double)s->hits;
    case MW_MISSES: return (double)s->misses;
    case MW_EVICTIONS: return (double)s->evictions[r->idx];
    case MW_WRITEBACKS: return (double)s->writebacks;
    case MW_INV_SENT: return (double)s->inv_sent;
    case MW_INV_RECEIVED: return (double)s->inv_received;
    case MW_MSG_SENT: return (double)s->msgs_sent[r->idx];
    case MW_MSG_RECEIVED: return (double)s->msgs_received[r->idx];
    case MW_STALE: return (double)s->stale_dropped;
    case MW_LEASE: return (double)s->lease_expiries;
    case MW_DIRTY_LOST: return (double)s->dirty_lost;
    case MW_BUSY: return (double)s->busy_nacks;
    case MW_TIMEOUTS: return (double)s->op_timeouts;
    case MW_LINES: return (double)s->lines[r->idx];
    case MW_ENTRIES: return (double)s->entries;
    case MW_BYTES: return (double)s->bytes;
    case MW_DIR: return (double)s->dir_entries;
    case MW_MEM_RETRIES: return (double)ds_cache_store_retries(r->cr->store);
    case MW_MEM_PENDING: return (double)ds_cache_store_pending(r->cr->store);
    case MW_LOST_VERSIONS: return (double)r->cr->lost_versions;
    default: {
        double n = 0;
        for (int i = 0; i < DS_MESI_MAX_NODES; i++)
            n += r->cr->members[i].live;
        return n;
    }
    }
}

static int add_stat(struct ds_cache_role *cr, int counter, const char *name, const char *help,
                    const char *labels, int what, int idx)
{
    if (cr->nmref == DS_CACHE_MREFS)
        return ENOMEM;
    struct cache_mref *r = &cr->mref[cr->nmref++];
    *r = (struct cache_mref){.cr = cr, .what = (uint16_t)what, .idx = (uint16_t)idx};
    struct ds_metrics *m = cr->node->metrics;
    struct ds_metric *x = counter ? ds_metrics_counter(m, name, help, labels)
                                  : ds_metrics_gauge(m, name, help, labels);
    if (!x)
        return ENOMEM;
    x->read = read_stat;
    x->read_arg = r;
    return 0;
}

static int register_series(struct ds_cache_role *cr)
{
    static const struct {
        int counter, what;
        const char *name, *help;
    } t[] = {
        {1, MW_HITS, "dsyncd_cache_hits_total", "Reads served from this node's copy"},
        {1, MW_MISSES, "dsyncd_cache_misses_total", "Reads and writes that needed the home"},
        {1, MW_WRITEBACKS, "dsyncd_cache_writebacks_total", "Dirty lines written back (WB, PutM)"},
        {1, MW_STALE, "dsyncd_cache_stale_dropped_total",
         "Coherence messages dropped as stale (old epoch, transaction or request)"},
        {1, MW_LEASE, "dsyncd_cache_lease_expiries_total", "Copies dropped when their lease ran out"},
        {1, MW_DIRTY_LOST, "dsyncd_cache_dirty_lost_total", "Write-back lines whose dirty data was lost"},
        {1, MW_LOST_VERSIONS, "dsyncd_cache_lost_versions_total",
         "Write-back versions reported lost by this node"},
        {1, MW_BUSY, "dsyncd_cache_busy_nacks_total", "Requests a home refused: its key queue was full"},
        {1, MW_TIMEOUTS, "dsyncd_cache_op_timeouts_total", "Client operations that timed out (503)"},
        {1, MW_MEM_RETRIES, "dsyncd_cache_memory_retries_total", "Main-memory operations retried"},
        {0, MW_MEM_PENDING, "dsyncd_cache_memory_pending", "Main-memory operations in flight"},
        {0, MW_ENTRIES, "dsyncd_cache_entries", "Lines resident on this node"},
        {0, MW_BYTES, "dsyncd_cache_bytes", "Key and value bytes resident on this node"},
        {0, MW_DIR, "dsyncd_cache_directory_entries", "Directory entries this node keeps as home"},
        {0, MW_EPOCH_MEMBERS, "dsyncd_cache_members", "Cache nodes in the current ring"},
    };
    int rv = 0;
    for (size_t i = 0; !rv && i < sizeof t / sizeof t[0]; i++)
        rv = add_stat(cr, t[i].counter, t[i].name, t[i].help, "", t[i].what, 0);
    rv = rv ? rv : add_stat(cr, 1, "dsyncd_cache_invalidations_total", "Invalidations",
                            "direction=\"sent\"", MW_INV_SENT, 0);
    rv = rv ? rv : add_stat(cr, 1, "dsyncd_cache_invalidations_total", "Invalidations",
                            "direction=\"received\"", MW_INV_RECEIVED, 0);
    char l[160];
    for (int s = 0; !rv && s < DS_MESI_NSTATES; s++) {
        snprintf(l, sizeof l, "state=\"%s\"", ds_mesi_state_name(s));
        rv = add_stat(cr, 1, "dsyncd_cache_evictions_total", "Lines evicted, by their state", l,
                      MW_EVICTIONS, s);
        rv = rv ? rv : add_stat(cr, 0, "dsyncd_cache_lines", "Lines by state", l, MW_LINES, s);
    }
    for (int ty = DS_MESI_MSG_GETS; !rv && ty < DS_MESI_MSG_NTYPES; ty++)
        for (int dir = 0; !rv && dir < 2; dir++) {
            snprintf(l, sizeof l, "type=\"%s\",direction=\"%s\"", ds_mesi_msg_name(ty),
                     dir ? "received" : "sent");
            rv = add_stat(cr, 1, "dsyncd_cache_messages_total", "Coherence messages", l,
                          dir ? MW_MSG_RECEIVED : MW_MSG_SENT, ty);
        }
    return rv;
}

static int register_metrics(struct ds_cache_role *cr)
{
    static const char *const ops[] = {"get", "put", "delete"};
    static const char *const res[] = {"hit", "miss", "error"};
    cr->m_bad_msgs = ds_metrics_counter(cr->node->metrics, "dsyncd_cache_bad_messages_total",
                                        "Coherence messages refused (malformed or misaddressed)",
                                        "");
    if (!cr->m_bad_msgs)
        return ENOMEM;
    for (int o = 0; o < CACHE_NOPS; o++)
        for (int r = 0; r < CACHE_NRESULTS; r++) {
            char l[160];
            snprintf(l, sizeof l, "op=\"%s\",result=\"%s\"", ops[o], res[r]);
            cr->h_req[o][r] = ds_metrics_histogram(
                cr->node->metrics, "dsyncd_cache_request_seconds",
                "Client operations: hit (served locally), miss (coherence traffic), error (503)", l,
                ds_metrics_latency_bounds, ds_metrics_latency_nbounds);
            if (!cr->h_req[o][r])
                return ENOMEM;
        }
    return register_series(cr);
}

/* ------------------------------------------------------------------ role plug-in */

static int start_engine(struct ds_cache_role *cr, char *err)
{
    const struct ds_config *c = cr->node->cfg;
    struct ds_mesi_config mc;
    ds_mesi_config_default(&mc);
    mc.self = cr->self;
    mc.incarnation = cr->incarnation;
    mc.epoch = 0;
    mc.lease_ms = (uint32_t)c->cache_lease_ms;
    mc.margin_ms = mc.lease_ms / 40 > 50 ? mc.lease_ms / 40 : 50;
    mc.op_timeout_ms = (uint32_t)c->cache_op_timeout_ms;
    mc.flush_ms = (uint32_t)c->cache_flush_ms;
    mc.max_entries = (size_t)c->cache_max_entries;
    mc.max_bytes = (size_t)c->cache_max_bytes;
    mc.write_policy = c->cache_write_policy == DS_CACHE_WRITE_THROUGH ? DS_MESI_WRITE_THROUGH
                                                                      : DS_MESI_WRITE_BACK;
    mc.home_lease_ms = ds_cache_store_home_lease_ms(cr->store);
    cr->ring_if.home_of = home_of;
    mc.ring = &cr->ring_if;
    int rv = ds_mesi_create(&mc, ds_node_now_ms(), &cr->mesi);
    if (rv) {
        snprintf(err, 512, "cache engine: %s", ds_mesi_strerror(rv));
        return EINVAL;
    }
    /* a frame must fit one peer request; a PUT body carries the value plus a little JSON */
    cr->max_value = c->max_body > 4096 ? c->max_body - 4096 : 0;
    if (cr->max_value > DS_MESI_MAX_VALUE)
        cr->max_value = DS_MESI_MAX_VALUE;
    cr->scratch_cap = FRAME_HEADER + DS_MESI_WIRE_HEADER + DS_MESI_MAX_KEY + DS_MESI_MAX_VALUE;
    cr->scratch = malloc(cr->scratch_cap);
    if (!cr->scratch) {
        snprintf(err, 512, "out of memory");
        return ENOMEM;
    }
    return 0;
}

/* The engine's incarnation, larger on every start (mesi.h): a boot counter kept in
 * <data_dir>/cache.boot and made durable before the engine sends anything, and never below the
 * wall clock in seconds, so that a node whose data directory was lost still comes back larger
 * (when its restarts are more than a second apart).  The counter alone keeps it increasing when
 * the clock steps back. */
static int next_incarnation(const char *data_dir, uint64_t *out, char *err)
{
    int rv = ds_node_next_boot(data_dir, "cache.boot", (uint64_t)time(NULL), out, err);
    if (rv)
        return rv;
    if (*out > UINT32_MAX) {
        snprintf(err, 512, "%s/cache.boot: boot counter %" PRIu64 " does not fit 32 bits",
                 data_dir, *out);
        return EINVAL;
    }
    char v[24];
    snprintf(v, sizeof v, "%" PRIu64, *out);
    ds_log(DS_LOG_INFO, "cache engine incarnation", "incarnation", v, NULL);
    return 0;
}

static int cache_start(struct ds_node *node, char *err)
{
    struct ds_cache_role *cr = calloc(1, sizeof *cr);
    if (!cr) {
        snprintf(err, 512, "out of memory");
        return ENOMEM;
    }
    node->cache = cr;
    cr->node = node;
    int rv;
    if ((rv = load_seeds(cr, err)) ||
        (rv = next_incarnation(node->cfg->data_dir, &cr->incarnation, err)) ||
        (rv = ds_cache_store_new(cr, &cr->store, err)) ||
        (cr->self != UINT16_MAX && (rv = start_engine(cr, err))) ||
        (rv = ds_gossip_start(node, NULL, &cr->gossip, err)))
        return rv;
    cr->tick = event_new(node->base, -1, EV_PERSIST, tick_cb, cr);
    cr->flush = event_new(node->base, -1, 0, flush_cb, cr);
    struct timeval tv = {0, TICK_MS * 1000};
    if (!cr->tick || !cr->flush || evtimer_add(cr->tick, &tv) || register_metrics(cr) ||
        ds_server_route(node->server, DS_HTTP_POST, "/cache/peer/msg", msg_route, DS_ROUTE_PEER,
                        cr) ||
        ds_cache_api_routes(cr)) {
        snprintf(err, 512, "out of memory");
        return ENOMEM;
    }
    refresh_members(cr);
    return 0;
}

int ds_cache_serving(const struct ds_cache_role *cr)
{
    return cr->mesi && ds_gossip_joined(cr->gossip);
}

static int cache_ready(struct ds_node *node, const char **reason)
{
    if (!node->cache->mesi) {
        *reason = "this node is claiming its cache node id";
        return 0;
    }
    if (ds_cache_serving(node->cache))
        return 1;
    *reason = "no other cache node is known yet (gossip has not joined)";
    return 0;
}

static void cache_status(struct ds_node *node, cJSON *out)
{
    struct ds_cache_role *cr = node->cache;
    char e[24];
    snprintf(e, sizeof e, "%016" PRIx64, cr->epoch);
    if (cr->mesi)
        cJSON_AddNumberToObject(out, "node_id", cr->self);
    else
        cJSON_AddNullToObject(out, "node_id");
    cJSON_AddStringToObject(out, "epoch", e);
    cJSON_AddStringToObject(out, "memory", ds_cache_store_kind(cr->store));
    cJSON_AddStringToObject(out, "write_policy",
                            node->cfg->cache_write_policy == DS_CACHE_WRITE_THROUGH
                                ? "write-through" : "write-back");
    cJSON_AddNumberToObject(out, "lease_ms", (double)node->cfg->cache_lease_ms);
    size_t up, total;
    ds_cache_store_shards(cr->store, &up, &total);
    cJSON_AddNumberToObject(out, "shards", (double)total);
    cJSON_AddNumberToObject(out, "shards_up", (double)up);
    cJSON *a = cJSON_AddArrayToObject(out, "members");
    for (int i = 0; i < DS_MESI_MAX_NODES; i++) {
        if (!cr->members[i].live)
            continue;
        cJSON *m = cJSON_CreateObject();
        cJSON_AddNumberToObject(m, "id", i);
        cJSON_AddStringToObject(m, "name", cr->members[i].name);
        cJSON_AddStringToObject(m, "url", cr->members[i].url);
        cJSON_AddItemToArray(a, m);
    }
}

static void cache_stop(struct ds_node *node, void (*done)(struct ds_node *node))
{
    struct ds_cache_role *cr = node->cache;
    if (cr->gossip)
        ds_gossip_leave(cr->gossip);
    done(node);
}

static void cache_free(struct ds_node *node)
{
    struct ds_cache_role *cr = node->cache;
    if (!cr)
        return;
    cr->stopping = 1;
    ds_cache_api_free(cr);
    ds_cache_store_free(cr->store);
    if (cr->tick)
        event_free(cr->tick);
    if (cr->flush)
        event_free(cr->flush);
    ds_gossip_free(cr->gossip);
    ds_mesi_destroy(cr->mesi);
    ds_ring_free(cr->ring);
    for (int i = 0; i < DS_MESI_MAX_NODES; i++)
        ds_buf_free(&cr->out[i]);
    ds_buf_free(&cr->reply);
    free(cr->scratch);
    free(cr);
    node->cache = NULL;
}

const struct ds_role_ops ds_cache_role_ops = {
    .name = "cache",
    .start = cache_start,
    .ready = cache_ready,
    .status = cache_status,
    .stop = cache_stop,
    .free = cache_free,
};
