/* Raft host: runs the pure core (raft.c) on the node's event loop with durable storage
 * (storage.c, one fsync per Ready batch: group commit), the peer transport (POST /raft/msg, mutual
 * TLS + HMAC) and a role's replicated state machine. */
#ifndef DS_RAFT_NODE_H
#define DS_RAFT_NODE_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "raft/raft.h"

struct ds_node;
struct ds_raft_app; /* the role's state machine, defined by the role */
struct ds_raft_node;

struct ds_raft_app_ops {
    /* A committed command (in log order, exactly once per process lifetime and index); term is
     * the entry's, so a proposer can tell whether the entry at its index is its own. */
    void (*apply)(struct ds_raft_app *app, uint64_t index, uint64_t term, const uint8_t *data,
                  size_t len);
    /* Optional: after the apply() calls of one batch (work due once per batch, not per entry). */
    void (*applied)(struct ds_raft_app *app);
    /* The whole state as a malloc'd image the caller frees; 0 or an errno. */
    int (*snapshot)(struct ds_raft_app *app, uint8_t **data, size_t *len);
    /* Replace the state with an image made by snapshot(); 0 or an errno. */
    int (*restore)(struct ds_raft_app *app, const uint8_t *data, size_t len);
    /* Role, term or leader changed (after the batch that changed them is applied). */
    void (*state_changed)(struct ds_raft_app *app, int role, uint64_t term, uint64_t leader);
    /* A ReadIndex round ctx finished: ok = 1 when the state machine is now at least as new as
     * the read index (serve the read), 0 when leadership was lost (retry elsewhere). */
    void (*read_done)(struct ds_raft_app *app, uint64_t ctx, int ok);
};

/* Open storage under <data_dir>/raft, restore the snapshot into the app, create the core from
 * [cluster] peers ([node] id must be one of them) and register the peer and admin routes.
 * On error err (512 bytes) says why. */
int ds_raft_node_start(struct ds_node *node, const struct ds_raft_app_ops *ops,
                       struct ds_raft_app *app, struct ds_raft_node **out, char *err);

/* Graceful stop: a leader hands leadership to the most up-to-date follower first (bounded wait). */
void ds_raft_node_stop(struct ds_raft_node *rn, void (*done)(void *), void *arg);
void ds_raft_node_free(struct ds_raft_node *rn);

/* Leader: append a command.  Returns 0 with its index and term, or DS_RAFT_ENOTLEADER /
 * DS_RAFT_EBUSY (transfer in progress) / DS_RAFT_ENOMEM. */
int ds_raft_node_propose(struct ds_raft_node *rn, const void *data, size_t len, uint64_t *index,
                         uint64_t *term);

/* Leader: start a linearizable read; read_done(ctx) follows. */
int ds_raft_node_read(struct ds_raft_node *rn, uint64_t ctx);

int ds_raft_node_is_leader(const struct ds_raft_node *rn);
uint64_t ds_raft_node_term(const struct ds_raft_node *rn);
/* The leader's name and URL, or NULL when no leader is known (or it is this node). */
const char *ds_raft_node_leader_url(const struct ds_raft_node *rn);
const char *ds_raft_node_leader_name(const struct ds_raft_node *rn);
/* The index of the last applied command. */
uint64_t ds_raft_node_applied(const struct ds_raft_node *rn);

/* Raft details for /status. */
void ds_raft_node_status(const struct ds_raft_node *rn, cJSON *out);

/* The 64-bit Raft id of a node name (FNV-1a, never 0): every node derives the same id. */
uint64_t ds_raft_node_id(const char *name);

#endif
