/* Async Redis client for one shard: hiredis 0.14's async API on the node's libevent loop, with
 * what 0.14 lacks added here: command timeouts (a libevent timer drops a connection whose oldest
 * command is overdue), reconnection with exponential backoff, and a state callback so routing
 * knows which shards are up.  The host name is resolved once, at creation: hiredis connects to
 * the IP literal, so nothing blocks the loop afterwards. */
#ifndef DS_ROLES_QUEUE_REDIS_H
#define DS_ROLES_QUEUE_REDIS_H

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

struct redisReply;
struct ds_redis;

enum {
    DS_REDIS_OK = 0,
    DS_REDIS_EDOWN = 1,   /* not connected (backing off, or the connection just failed) */
    DS_REDIS_ENOMEM = 2,
    DS_REDIS_EADDR = 3,   /* the address does not resolve or is malformed */
};

/* Called exactly once per queued command.  reply is NULL when the command failed in transport
 * (connection lost, timeout, client freed); it is hiredis' reply otherwise (possibly of type
 * REDIS_REPLY_ERROR), valid only during the call. */
typedef void ds_redis_cb(struct redisReply *reply, void *arg);

/* Called when the shard comes up (a connection is established) or goes down. */
typedef void ds_redis_state_fn(struct ds_redis *r, int up, void *arg);

/* Connect to addr ("host:port"), resolving host now.  timeout_ms bounds every command and the
 * connection attempt.  On error err (512 bytes) says why. */
int ds_redis_new(struct event_base *base, const char *addr, uint64_t timeout_ms,
                 ds_redis_state_fn *on_state, void *arg, struct ds_redis **out, char *err);

/* Every pending callback is called with NULL, then everything is freed. */
void ds_redis_free(struct ds_redis *r);

/* Queue a command (argv copied; binary-safe).  0: cb will be called exactly once.  Otherwise
 * DS_REDIS_EDOWN or DS_REDIS_ENOMEM and cb is not called. */
int ds_redis_command(struct ds_redis *r, ds_redis_cb *cb, void *arg, int argc, const char **argv,
                     const size_t *lens);

/* 1 while a connection is established and healthy. */
int ds_redis_up(const struct ds_redis *r);

/* Commands that failed in transport or with an error reply since creation. */
uint64_t ds_redis_errors(const struct ds_redis *r);

/* Commands queued and not answered yet. */
int ds_redis_pending(const struct ds_redis *r);

const char *ds_redis_strerror(int rv);

#endif
