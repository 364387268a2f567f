/* The running node: event loop, HTTPS server, metrics, the role, the common endpoints (/health,
 * /ready, /status, /metrics), signals (SIGTERM/SIGINT drain, SIGHUP reloads the tokens file) and
 * graceful shutdown. */
#ifndef DS_CORE_NODE_H
#define DS_CORE_NODE_H

#include <event2/event.h>
#include <stdint.h>

#include "core/config.h"
#include "core/metrics.h"
#include "net/server.h"
#include "roles/role.h"

struct ds_auth;
struct ds_peer_pool;
struct ds_lock_role;
struct ds_queue_role;
struct ds_cache_role;

struct ds_node {
    struct ds_config *cfg;
    uint64_t boot_id;            /* random per process start */
    struct ds_auth *auth;        /* peer HMAC; NULL without a MAC key (single node) */
    struct ds_peer_pool *peers;  /* NULL without a MAC key */
    struct ds_lock_role *lock;   /* the running role's state (one of them) */
    struct ds_queue_role *queue;
    struct ds_cache_role *cache;
    struct event_base *base;
    struct ds_server *server;
    struct ds_metrics *metrics;
    const struct ds_role_ops *role;
    uint64_t start_ms;   /* monotonic */
    int stopping;
    struct event *sigterm, *sigint, *sighup, *audit_timer; /* SIGHUP reloads the tokens file */
    char health_body[256];
    size_t health_len;
};

/* Build and run the node until SIGTERM/SIGINT has drained it.  Returns the process exit code:
 * 0 after a clean shutdown, 1 when something failed at start (already logged). */
int ds_node_run(struct ds_config *cfg);

/* Monotonic milliseconds (the node's clock for timers and uptime). */
uint64_t ds_node_now_ms(void);

/* The next value of the boot counter kept in <data_dir>/<name>: max(stored + 1, floor), made
 * durable (temporary file, fsync, rename, fsync of the directory) before it is returned, so every
 * start gets a larger value than every earlier one.  0, or an errno with err (512 bytes) naming
 * the file (*out then holds the value that could not be persisted). */
int ds_node_next_boot(const char *data_dir, const char *name, uint64_t floor, uint64_t *out,
                      char *err);

#endif
