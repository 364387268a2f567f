/* Gossip host: SWIM on the event loop, messages over the authenticated peer transport,
 * GET /cluster/members, metrics. */
#include "gossip/node.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/node.h"
#include "net/peer.h"
#include "net/server.h"

#define TICK_MS 50
#define SEND_TIMEOUT_MS 1000
#define MAX_SEEDS 64

struct ds_gossip {
    struct ds_node *node;
    struct ds_swim *swim;
    ds_gossip_change_fn *on_change;
    struct event *tick;
    uint64_t epoch;
    int has_other_seed;
    uint64_t last_counters[9];
};

static void sent_cb(int status, const char *body, size_t len, void *arg)
{
    (void)status;
    (void)body;
    (void)len;
    (void)arg; /* SWIM treats a lost message like any other loss: no ack, indirect probe */
}

static void flush(struct ds_gossip *g)
{
    struct ds_swim_out out;
    while (ds_swim_pop_out(g->swim, &out) == DS_SWIM_OK) {
        struct ds_peer *p = ds_peer_get(g->node->peers, out.to_url);
        if (p)
            ds_peer_request(p, "POST", "/gossip/msg", "application/octet-stream", out.buf, out.len,
                            SEND_TIMEOUT_MS, sent_cb, g);
        free(out.buf);
    }
    struct ds_swim_event ev;
    while (ds_swim_pop_event(g->swim, &ev) == DS_SWIM_OK) {
        static const char *const names[] = {"", "member up", "member suspected",
                                            "member refuted suspicion", "member down",
                                            "member left", "member metadata changed"};
        char inc[24];
        snprintf(inc, sizeof inc, "%llu", (unsigned long long)ev.incarnation);
        ds_log(ev.type == DS_SWIM_EV_META ? DS_LOG_DEBUG : DS_LOG_INFO,
               ev.type < 7 ? names[ev.type] : "member event", "member", ev.id, "incarnation", inc,
               NULL);
        g->epoch++;
        if (g->on_change)
            g->on_change(g->node, &ev);
    }
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ds_gossip *g = arg;
    ds_swim_tick(g->swim, ds_node_now_ms());
    flush(g);
}

static void msg_route(struct ds_http_req *req)
{
    struct ds_gossip *g = req->ctx;
    int rv = ds_swim_recv(g->swim, (const uint8_t *)req->body, req->body_len, ds_node_now_ms());
    flush(g);
    if (rv == DS_SWIM_OK)
        ds_http_reply(req, 204, "application/json", "", 0);
    else
        ds_http_reply_error(req, rv == DS_SWIM_EFOREIGN ? 403 : 400,
                            rv == DS_SWIM_EFOREIGN ? "forbidden" : "bad_request",
                            "gossip message refused: %s", ds_swim_strerror(rv));
}

static void members_route(struct ds_http_req *req)
{
    struct ds_gossip *g = req->ctx;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "cluster", ds_swim_cluster(g->swim));
    cJSON_AddStringToObject(o, "role", ds_swim_role(g->swim));
    cJSON_AddNumberToObject(o, "epoch", (double)g->epoch);
    cJSON *a = cJSON_AddArrayToObject(o, "members");
    size_t n = ds_swim_member_count(g->swim);
    for (size_t i = 0; i < n; i++) {
        const struct ds_swim_node *m = ds_swim_member(g->swim, i);
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "id", m->id);
        cJSON_AddStringToObject(x, "url", m->url);
        cJSON_AddStringToObject(x, "state", ds_swim_state_name(m->state));
        cJSON_AddNumberToObject(x, "incarnation", (double)m->incarnation);
        cJSON_AddBoolToObject(x, "self", i == 0);
        cJSON *meta = cJSON_AddObjectToObject(x, "meta");
        for (size_t j = 0; j < m->n_meta; j++)
            cJSON_AddStringToObject(meta, m->meta[j].key, m->meta[j].value);
        cJSON_AddItemToArray(a, x);
    }
    ds_http_reply_json(req, 200, o);
    cJSON_Delete(o);
}

/* ------------------------------------------------------------------ metrics */

#define COUNTER_READER(field)                                                                     \
    static double read_##field(void *arg)                                                         \
    {                                                                                             \
        struct ds_swim_counters c;                                                                \
        ds_swim_get_counters(((struct ds_gossip *)arg)->swim, &c);                                \
        return (double)c.field;                                                                   \
    }
COUNTER_READER(probes)
COUNTER_READER(indirect_probes)
COUNTER_READER(suspicions)
COUNTER_READER(refutations)
COUNTER_READER(deaths)
COUNTER_READER(false_positive_deaths)
COUNTER_READER(rejected_foreign)
COUNTER_READER(rejected_malformed)

static double count_state(const struct ds_gossip *g, uint8_t state)
{
    size_t n = ds_swim_member_count(g->swim), k = 0;
    for (size_t i = 0; i < n; i++)
        k += ds_swim_member(g->swim, i)->state == state;
    return (double)k;
}

#define STATE_READER(name, state)                                                                 \
    static double read_##name(void *arg)                                                          \
    {                                                                                             \
        return count_state(arg, state);                                                           \
    }
STATE_READER(alive, DS_SWIM_ALIVE)
STATE_READER(suspect, DS_SWIM_SUSPECT)
STATE_READER(dead, DS_SWIM_DEAD)
STATE_READER(left, DS_SWIM_LEFT)

static int register_metrics(struct ds_gossip *g)
{
    static const struct {
        int counter;
        const char *name, *help, *labels;
        double (*read)(void *);
    } t[] = {
        {0, "dsyncd_gossip_members", "Members known, by state", "state=\"alive\"", read_alive},
        {0, "dsyncd_gossip_members", "Members known, by state", "state=\"suspect\"", read_suspect},
        {0, "dsyncd_gossip_members", "Members known, by state", "state=\"dead\"", read_dead},
        {0, "dsyncd_gossip_members", "Members known, by state", "state=\"left\"", read_left},
        {1, "dsyncd_gossip_probes_total", "Direct probes sent", "", read_probes},
        {1, "dsyncd_gossip_indirect_probes_total", "Indirect probes requested", "",
         read_indirect_probes},
        {1, "dsyncd_gossip_suspicions_total", "Members this node suspected", "", read_suspicions},
        {1, "dsyncd_gossip_refutations_total", "Suspicions of this node it refuted", "",
         read_refutations},
        {1, "dsyncd_gossip_deaths_total", "Members this node declared dead", "", read_deaths},
        {1, "dsyncd_gossip_false_positive_deaths_total",
         "Members seen dead that came back without restarting", "", read_false_positive_deaths},
        {1, "dsyncd_gossip_rejected_total", "Gossip messages rejected", "reason=\"foreign\"",
         read_rejected_foreign},
        {1, "dsyncd_gossip_rejected_total", "Gossip messages rejected", "reason=\"malformed\"",
         read_rejected_malformed},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct ds_metric *m =
            t[i].counter ? ds_metrics_counter(g->node->metrics, t[i].name, t[i].help, t[i].labels)
                         : ds_metrics_gauge(g->node->metrics, t[i].name, t[i].help, t[i].labels);
        if (!m)
            return ENOMEM;
        m->read = t[i].read;
        m->read_arg = g;
    }
    return 0;
}

/* ------------------------------------------------------------------ start / stop */

/* The boot counter of <data_dir>/gossip.boot (a restart gets a higher incarnation).  A counter
 * that cannot be persisted is logged; the node still starts, with the value it computed. */
static uint32_t next_boot(const char *data_dir)
{
    uint64_t boot = 1;
    char err[512];
    if (ds_node_next_boot(data_dir, "gossip.boot", 0, &boot, err))
        ds_log(DS_LOG_WARN, "gossip incarnation not persisted", "error", err, NULL);
    return (uint32_t)boot;
}

int ds_gossip_start(struct ds_node *node, ds_gossip_change_fn *on_change,
                    struct ds_gossip **out, char *err)
{
    const struct ds_config *c = node->cfg;
    if (c->seeds[0] && !node->peers) {
        snprintf(err, 512, "gossip needs the shared MAC key (SHARED_MAC_KEY)");
        return EINVAL;
    }
    struct ds_gossip *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, 512, "out of memory");
        return ENOMEM;
    }
    g->node = node;
    g->on_change = on_change;
    struct ds_swim_self self = {.id = c->node_id, .url = c->advertise_url, .role = c->role,
                                .cluster = c->cluster_name, .boot = next_boot(c->data_dir)};
    int rv = ds_swim_create(&self, NULL, node->boot_id, ds_node_now_ms(), &g->swim);
    if (rv) {
        snprintf(err, 512, "gossip: %s", ds_swim_strerror(rv));
        free(g);
        return EINVAL;
    }
    /* seeds: comma-separated URLs */
    char list[DS_CONFIG_LIST_MAX];
    const char *seeds[MAX_SEEDS];
    size_t n = 0;
    snprintf(list, sizeof list, "%s", c->seeds);
    char *save = NULL;
    for (char *s = strtok_r(list, ", ", &save); s && n < MAX_SEEDS; s = strtok_r(NULL, ", ", &save)) {
        seeds[n++] = s;
        g->has_other_seed |= strcmp(s, c->advertise_url) != 0;
    }
    if (n)
        ds_swim_join(g->swim, seeds, n, ds_node_now_ms());
    g->tick = event_new(node->base, -1, EV_PERSIST, tick_cb, g);
    struct timeval tv = {0, TICK_MS * 1000};
    if (!g->tick || evtimer_add(g->tick, &tv) || register_metrics(g) ||
        ds_server_route(node->server, DS_HTTP_POST, "/gossip/msg", msg_route, DS_ROUTE_PEER, g) ||
        ds_server_route(node->server, DS_HTTP_GET, "/cluster/members", members_route, 0, g)) {
        snprintf(err, 512, "out of memory");
        ds_gossip_free(g);
        return ENOMEM;
    }
    flush(g);
    *out = g;
    return 0;
}

void ds_gossip_leave(struct ds_gossip *g)
{
    if (ds_swim_leave(g->swim) == DS_SWIM_OK)
        flush(g);
}

void ds_gossip_free(struct ds_gossip *g)
{
    if (!g)
        return;
    if (g->tick)
        event_free(g->tick);
    ds_swim_destroy(g->swim);
    free(g);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

size_t ds_gossip_live(const struct ds_gossip *g, const char **ids, const char **urls, size_t max)
{
    size_t n = ds_swim_member_count(g->swim), k = 0;
    const struct ds_swim_node *live[DS_SWIM_MEMBERS_MAX];
    for (size_t i = 0; i < n && k < DS_SWIM_MEMBERS_MAX; i++) {
        const struct ds_swim_node *m = ds_swim_member(g->swim, i);
        if (m->state == DS_SWIM_ALIVE || m->state == DS_SWIM_SUSPECT)
            live[k++] = m;
    }
    /* sort by id: every node derives the same order from the same membership */
    const char *sorted[DS_SWIM_MEMBERS_MAX];
    for (size_t i = 0; i < k; i++)
        sorted[i] = live[i]->id;
    qsort(sorted, k, sizeof sorted[0], cmp_str);
    size_t out = k < max ? k : max;
    for (size_t i = 0; i < out; i++) {
        ids[i] = sorted[i];
        if (urls)
            urls[i] = ds_swim_find(g->swim, sorted[i])->url;
    }
    return out;
}

uint64_t ds_gossip_epoch(const struct ds_gossip *g)
{
    return g->epoch;
}

int ds_gossip_joined(const struct ds_gossip *g)
{
    if (!g->has_other_seed)
        return 1;
    const char *ids[2];
    return ds_gossip_live(g, ids, NULL, 2) >= 2;
}

int ds_gossip_set_meta(struct ds_gossip *g, const struct ds_swim_meta *meta, size_t n)
{
    int rv = ds_swim_set_meta(g->swim, meta, n);
    flush(g);
    return rv;
}

const char *ds_gossip_meta(const struct ds_gossip *g, const char *id, const char *key)
{
    const struct ds_swim_node *m = ds_swim_find(g->swim, id);
    for (size_t i = 0; m && i < m->n_meta; i++)
        if (strcmp(m->meta[i].key, key) == 0)
            return m->meta[i].value;
    return NULL;
}
