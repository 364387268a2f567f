/* Gossip host: runs the SWIM core (swim.c) on the node's event loop, carries its messages over the
 * peer transport (POST /gossip/msg: mutual TLS + HMAC, so forged or replayed messages are refused
 * before SWIM sees them) and serves GET /cluster/members. */
#ifndef DS_GOSSIP_NODE_H
#define DS_GOSSIP_NODE_H

#include <stddef.h>
#include <stdint.h>

#include "gossip/swim.h"

struct ds_node;
struct ds_gossip;

/* Called after membership events (one call per event, in order). */
typedef void ds_gossip_change_fn(struct ds_node *node, const struct ds_swim_event *ev);

/* Start SWIM for this node's role: identity from [node], seeds from [cluster] seeds; the boot
 * counter is kept in <data_dir>/gossip.boot so a restart comes back with a higher incarnation.
 * On error err (512 bytes) says why. */
int ds_gossip_start(struct ds_node *node, ds_gossip_change_fn *on_change,
                    struct ds_gossip **out, char *err);

/* Graceful leave (tells peers), then free on ds_gossip_free. */
void ds_gossip_leave(struct ds_gossip *g);
void ds_gossip_free(struct ds_gossip *g);

/* Live members (alive or suspect), this node included, sorted by id: ids[i] point into the SWIM
 * table and stay valid until the next event-loop turn.  Returns how many (<= max). */
size_t ds_gossip_live(const struct ds_gossip *g, const char **ids, const char **urls, size_t max);

/* Bumped by every membership change: roles rebuild their ring when it moves. */
uint64_t ds_gossip_epoch(const struct ds_gossip *g);

/* 1 once this node knows another live member, or when no seed other than itself is configured. */
int ds_gossip_joined(const struct ds_gossip *g);

/* Metadata value `key` of member `id` (alive or not), or NULL; valid until the next loop turn. */
const char *ds_gossip_meta(const struct ds_gossip *g, const char *id, const char *key);

/* Replace this node's metadata (gossiped to every member). */
int ds_gossip_set_meta(struct ds_gossip *g, const struct ds_swim_meta *meta, size_t n);

#endif
