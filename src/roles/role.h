/* The shape every role plugs into: start (register routes, start timers), readiness, status
 * details and stop.  main.c picks one by name; the node runs it. */
#ifndef DS_ROLES_ROLE_H
#define DS_ROLES_ROLE_H

#include <cjson/cJSON.h>

struct ds_node;

struct ds_role_ops {
    const char *name;
    /* Register routes and start the role; err (512 bytes) on failure.  NULL when this build has
     * no implementation of the role yet: the node then serves only the common endpoints. */
    int (*start)(struct ds_node *node, char *err);
    /* Ready to serve its API (lock: leader known; queue: a shard reachable; cache: joined). */
    int (*ready)(struct ds_node *node, const char **reason);
    /* Add the role's details (Raft state, ring, members...) to /status. */
    void (*status)(struct ds_node *node, cJSON *out);
    /* Begin a graceful stop (e.g. hand Raft leadership over); call done(node) once the node may
     * stop serving (it may be at once).  NULL: nothing to do. */
    void (*stop)(struct ds_node *node, void (*done)(struct ds_node *node));
    /* Free everything the role holds, after the event loop ended (also after a failed start). */
    void (*free)(struct ds_node *node);
};

/* The role called name, or NULL. */
const struct ds_role_ops *ds_role_find(const char *name);

#endif
