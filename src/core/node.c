/* The running node: event loop, server, metrics, role, common endpoints, signals, shutdown. */
#include "core/node.h"

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "net/auth.h"
#include "net/authz.h"
#include "net/peer.h"
#include <sys/random.h>

uint64_t ds_node_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------------------ common endpoints */

static void health(struct ds_http_req *req)
{
    struct ds_node *n = req->ctx;
    ds_http_reply(req, 200, "application/json", n->health_body, n->health_len);
}

static void ready(struct ds_http_req *req)
{
    struct ds_node *n = req->ctx;
    const char *reason = NULL;
    int ok = 0;
    if (!n->role->start)
        reason = "this build has no implementation of the role yet";
    else
        ok = n->role->ready(n, &reason);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ready", ok);
    if (!ok)
        cJSON_AddStringToObject(o, "reason", reason ? reason : "not ready");
    if (!ok)
        ds_http_add_header(req, "Retry-After", "1");
    ds_http_reply_json(req, ok ? 200 : 503, o);
    cJSON_Delete(o);
}

static void status(struct ds_http_req *req)
{
    struct ds_node *n = req->ctx;
    struct ds_config *c = n->cfg;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "node", c->node_id);
    cJSON_AddStringToObject(o, "role", c->role);
    cJSON_AddStringToObject(o, "version", DS_VERSION);
    cJSON_AddStringToObject(o, "cluster", c->cluster_name);
    cJSON_AddNumberToObject(o, "uptime_s", (double)(ds_node_now_ms() - n->start_ms) / 1000.0);
    cJSON_AddStringToObject(o, "listen", c->listen);
    cJSON_AddStringToObject(o, "advertise_url", c->advertise_url);
    cJSON_AddNumberToObject(o, "connections", ds_server_connections(n->server));
    cJSON_AddBoolToObject(o, "role_available", n->role->start != NULL);
    if (n->role->status) {
        cJSON *r = cJSON_AddObjectToObject(o, c->role);
        n->role->status(n, r);
    }
    ds_http_reply_json(req, 200, o);
    cJSON_Delete(o);
}

static double read_rss(void *arg)
{
    (void)arg;
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return (double)rss * (double)sysconf(_SC_PAGESIZE);
}

static double read_uptime(void *arg)
{
    const struct ds_node *n = arg;
    return (double)(ds_node_now_ms() - n->start_ms) / 1000.0;
}

static void metrics(struct ds_http_req *req)
{
    struct ds_node *n = req->ctx;
    struct ds_buf b = {0};
    ds_metrics_render(n->metrics, &b);
    if (b.oom)
        ds_http_reply_error(req, 503, "unavailable", "out of memory");
    else
        ds_http_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.p ? b.p : "", b.len);
    ds_buf_free(&b);
}

static int register_common(struct ds_node *n)
{
    static const struct {
        const char *path;
        ds_route_fn *fn;
        unsigned flags; /* probes stay open with client auth on; the rest needs reader */
    } routes[] = {
        {"/health", health, DS_ROUTE_OPEN},
        {"/ready", ready, DS_ROUTE_OPEN},
        {"/status", status, 0},
        {"/metrics", metrics, 0},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (ds_server_route(n->server, DS_HTTP_GET, routes[i].path, routes[i].fn, routes[i].flags,
                            n))
            return ENOMEM;
    char labels[160];
    snprintf(labels, sizeof labels, "version=\"%s\",role=\"%s\",node=\"%s\"", DS_VERSION,
             n->cfg->role, n->cfg->node_id);
    ds_metric_set(ds_metrics_gauge(n->metrics, "dsyncd_build_info", "Build and identity of this node",
                                   labels), 1);
    struct ds_metric *rss = ds_metrics_gauge(n->metrics, "dsyncd_process_resident_memory_bytes",
                                             "Resident set size of the process", "");
    struct ds_metric *up = ds_metrics_gauge(n->metrics, "dsyncd_uptime_seconds",
                                            "Seconds since the node started", "");
    if (!rss || !up)
        return ENOMEM;
    rss->read = read_rss;
    up->read = read_uptime;
    up->read_arg = n;
    n->health_len = (size_t)snprintf(n->health_body, sizeof n->health_body,
                                     "{\"status\":\"ok\",\"node\":\"%s\",\"role\":\"%s\"}",
                                     n->cfg->node_id, n->cfg->role);
    return 0;
}

/* ------------------------------------------------------------------ signals and shutdown */

static void drained(void *arg)
{
    struct ds_node *n = arg;
    event_base_loopexit(n->base, NULL);
}

static void role_stopped(struct ds_node *n)
{
    ds_server_shutdown(n->server, n->cfg->shutdown_grace_ms, drained, n);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct ds_node *n = arg;
    if (n->stopping++) {
        ds_log(DS_LOG_WARN, "second signal: stopping now", NULL);
        event_base_loopexit(n->base, NULL);
        return;
    }
    ds_log(DS_LOG_INFO, "shutting down", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT", NULL);
    if (n->role->stop)
        n->role->stop(n, role_stopped);
    else
        role_stopped(n);
}

/* Load the tokens file into the server.  At start a bad file stops the node; on SIGHUP it keeps
 * the identities it has (connections are untouched either way). */
static int load_tokens(struct ds_node *n, int at_start)
{
    const char *path = n->cfg->auth_tokens_file;
    if (!path[0]) {
        if (at_start)
            ds_log(DS_LOG_WARN, "CLIENT AUTH IS OFF: no [auth] tokens_file, so anyone who can "
                                "reach this port may take or release any lock, drain any queue "
                                "and overwrite the cache", NULL);
        else
            ds_log(DS_LOG_WARN, "SIGHUP: no [auth] tokens_file is configured; nothing to reload",
                   NULL);
        return 0;
    }
    struct ds_authz *a;
    char err[DS_AUTHZ_ERR_MAX];
    int rv = ds_authz_load(path, &a, err);
    if (rv) {
        ds_log(DS_LOG_ERROR, at_start ? "cannot load the tokens file"
                                      : "SIGHUP: the new tokens file is invalid; keeping the "
                                        "identities loaded before",
               "error", err, NULL);
        return rv;
    }
    char count[24];
    snprintf(count, sizeof count, "%zu", ds_authz_count(a));
    ds_server_set_authz(n->server, a);
    ds_log(DS_LOG_INFO, at_start ? "client auth is on" : "SIGHUP: tokens file reloaded", "file",
           path, "identities", count, NULL);
    return 0;
}

static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    load_tokens(arg, 0);
}

static void audit_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    ds_audit_flush();
}

static int mkdir_p(const char *path)
{
    char buf[DS_CONFIG_PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0755) && errno != EEXIST)
            return errno;
        *p = '/';
    }
    if (mkdir(buf, 0755) && errno != EEXIST)
        return errno;
    return 0;
}

static int setup(struct ds_node *n)
{
    struct ds_config *c = n->cfg;
    char err[512];
    int rv = mkdir_p(c->data_dir);
    if (rv) {
        ds_log(DS_LOG_ERROR, "cannot create the data directory", "dir", c->data_dir, "error",
               strerror(rv), NULL);
        return rv;
    }
    if (c->audit_file[0] && (rv = ds_audit_open(c->audit_file))) {
        ds_log(DS_LOG_ERROR, "cannot open the audit log", "file", c->audit_file, "error",
               strerror(rv), NULL);
        return rv;
    }
    struct event_config *ec = event_config_new();
    if (ec)
        event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    n->base = ec ? event_base_new_with_config(ec) : NULL;
    event_config_free(ec);
    n->metrics = ds_metrics_new();
    if (!n->base || !n->metrics)
        return ENOMEM;
    if ((rv = ds_server_new(n->base, c, n->metrics, &n->server, err))) {
        ds_log(DS_LOG_ERROR, "cannot start the HTTPS server", "error", err, NULL);
        return rv;
    }
    if ((rv = register_common(n)) || (rv = load_tokens(n, 1)))
        return rv;
    if (getrandom(&n->boot_id, sizeof n->boot_id, 0) != sizeof n->boot_id)
        n->boot_id = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    if (c->mac_key[0]) {
        if ((rv = ds_auth_new(c->mac_key, strlen(c->mac_key), 30000, n->boot_id, &n->auth)) ||
            (rv = ds_peer_pool_new(n->base, c, n->auth, n->metrics, &n->peers, err))) {
            ds_log(DS_LOG_ERROR, "cannot set up the peer transport", "error",
                   rv == DS_AUTH_ENOMEM ? "out of memory" : err, NULL);
            return rv;
        }
        ds_server_set_auth(n->server, n->auth);
    }
    if (n->role->start && (rv = n->role->start(n, err))) {
        ds_log(DS_LOG_ERROR, "cannot start the role", "role", c->role, "error", err, NULL);
        return rv;
    }
    n->sigterm = evsignal_new(n->base, SIGTERM, on_signal, n);
    n->sigint = evsignal_new(n->base, SIGINT, on_signal, n);
    n->sighup = evsignal_new(n->base, SIGHUP, on_sighup, n);
    n->audit_timer = event_new(n->base, -1, EV_PERSIST, audit_tick, n);
    struct timeval tick = {0, 200000};
    if (!n->sigterm || !n->sigint || !n->sighup || !n->audit_timer ||
        evsignal_add(n->sigterm, NULL) || evsignal_add(n->sigint, NULL) ||
        evsignal_add(n->sighup, NULL) || evtimer_add(n->audit_timer, &tick))
        return ENOMEM;
    return 0;
}

static void teardown(struct ds_node *n)
{
    /* the server first: closing connections tells the role about requests it still holds */
    ds_server_free(n->server);
    n->server = NULL;
    ds_peer_pool_free(n->peers); /* fails outstanding peer requests back into the role */
    n->peers = NULL;
    if (n->role && n->role->free)
        n->role->free(n);
    if (n->sigterm)
        event_free(n->sigterm);
    if (n->sigint)
        event_free(n->sigint);
    if (n->sighup)
        event_free(n->sighup);
    /* freeing the signal events restored the default actions: a late signal must not kill a
     * process that is already stopping cleanly */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    if (n->audit_timer)
        event_free(n->audit_timer);
    ds_auth_free(n->auth);
    ds_metrics_free(n->metrics);
    if (n->base)
        event_base_free(n->base);
    ds_audit_close();
}

int ds_node_run(struct ds_config *cfg)
{
    struct ds_node n = {.cfg = cfg, .start_ms = ds_node_now_ms()};
    n.role = ds_role_find(cfg->role);
    signal(SIGPIPE, SIG_IGN);
    int rv = setup(&n);
    if (rv) {
        teardown(&n);
        return 1;
    }
    if (!n.role->start)
        ds_log(DS_LOG_WARN, "this build has no implementation of the role yet: serving only "
                            "/health, /ready, /status and /metrics", "role", cfg->role, NULL);
    ds_log(DS_LOG_INFO, "listening", "addr", cfg->listen, "url", cfg->advertise_url, NULL);
    event_base_dispatch(n.base);
    ds_log(DS_LOG_INFO, "stopped", NULL);
    teardown(&n);
    return 0;
}

/* Writes "value\n" to path through tmp, with fsync of the file and of its directory; 0 or errno. */
static int write_durably(const char *path, const char *tmp, const char *dir, uint64_t value)
{
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return errno ? errno : EIO;
    int rv = dprintf(fd, "%" PRIu64 "\n", value) < 0 || fsync(fd) ? (errno ? errno : EIO) : 0;
    if (close(fd) && !rv)
        rv = errno ? errno : EIO;
    if (!rv && rename(tmp, path))
        rv = errno ? errno : EIO;
    if (rv)
        return rv;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return errno ? errno : EIO;
    rv = fsync(dfd) ? (errno ? errno : EIO) : 0;
    close(dfd);
    return rv;
}

int ds_node_next_boot(const char *data_dir, const char *name, uint64_t floor, uint64_t *out,
                      char *err)
{
    char path[DS_CONFIG_PATH_MAX + 64], tmp[DS_CONFIG_PATH_MAX + 72];
    snprintf(path, sizeof path, "%s/%s", data_dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unsigned long long stored = 0;
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%llu", &stored) != 1)
            stored = 0;
        fclose(f);
    }
    *out = (uint64_t)stored + 1 > floor ? (uint64_t)stored + 1 : floor;
    int rv = write_durably(path, tmp, data_dir, *out);
    if (rv)
        snprintf(err, 512, "cannot persist the boot counter %s: %s", path, strerror(rv));
    return rv;
}
