/* Peer client: one persistent, pipelined HTTPS connection per peer (mutual TLS, TCP_NODELAY),
 * every request signed with the shared MAC key (net/auth.h), answers delivered in order. */
#ifndef DS_NET_PEER_H
#define DS_NET_PEER_H

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/metrics.h"
#include "net/auth.h"

struct ds_peer_pool;
struct ds_peer;

/* Called exactly once per request.  status: the HTTP status, or 0 when the request failed in
 * transport (could not connect, TLS failure, timeout, connection lost); body is valid only during
 * the call (NULL when status is 0). */
typedef void ds_peer_cb(int status, const char *body, size_t len, void *arg);

/* A pool for this node (its id signs the messages).  auth is borrowed and must outlive the pool. */
int ds_peer_pool_new(struct event_base *base, const struct ds_config *c, struct ds_auth *auth,
                     struct ds_metrics *metrics, struct ds_peer_pool **out, char *err);
/* Fails every outstanding request (status 0) and frees everything. */
void ds_peer_pool_free(struct ds_peer_pool *pool);

/* The peer at base_url ("https://host:port"), created on first use; NULL on a malformed URL or
 * allocation failure.  Owned by the pool. */
struct ds_peer *ds_peer_get(struct ds_peer_pool *pool, const char *base_url);

/* A connection to base_url with nothing outstanding, for a request that may wait long (a
 * forwarded long poll) and must not hold up the answers behind it; made when every one is busy,
 * at most DS_PEER_MAX_SPARE per URL (NULL beyond).  Owned by the pool. */
#define DS_PEER_MAX_SPARE 256
struct ds_peer *ds_peer_get_idle(struct ds_peer_pool *pool, const char *base_url);

/* Queue a request (body copied).  The connection is made on demand and re-made after failures
 * with exponential backoff (while backing off, requests fail at once with status 0).
 * Returns 0, or ENOMEM / EAGAIN (too many requests queued to this peer: cb is not called). */
int ds_peer_request(struct ds_peer *p, const char *method, const char *path, const char *ctype,
                    const void *body, size_t len, uint64_t timeout_ms, ds_peer_cb *cb, void *arg);

/* Requests queued or in flight to p. */
int ds_peer_outstanding(const struct ds_peer *p);

#endif
