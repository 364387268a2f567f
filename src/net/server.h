/* HTTPS server: HTTP/1.1 keep-alive over TLS bufferevents, the route table, limits, JSON errors,
 * per-route metrics, audit records and graceful shutdown. */
#ifndef DS_NET_SERVER_H
#define DS_NET_SERVER_H

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <stdint.h>

#include "core/config.h"
#include "core/metrics.h"
#include "net/authz.h"
#include "net/http_parse.h"
#include "net/router.h"

struct ds_server;
struct ds_conn;

/* Route flags beyond enum ds_route_flags (net/router.h), for client authorisation. */
enum ds_server_route_flags {
    DS_ROUTE_OPEN = 1 << 3,  /* no credentials needed, even with client auth on (/health) */
    DS_ROUTE_WRITE = 1 << 4, /* needs the writer role although it changes nothing */
};

/* One request.  It lives until the handler replies (or until on_abort is called when the client
 * goes away first); every pointer in it is valid until then. */
struct ds_http_req {
    struct ds_conn *conn;
    struct ds_server *server;
    struct ds_http_head head;    /* method, path, query, headers (point into the request copy) */
    const char *body;            /* NUL-terminated copy of the body, body_len bytes */
    size_t body_len;
    struct ds_route_match match; /* route, decoded {params} */
    void *ctx;                   /* the route's ctx */
    const char *peer_addr;       /* "ip:port" of the client */
    /* Who asks: with client auth on (a tokens file), the identity's name, roles and scope from
     * the tokens file (a bearer token, a client certificate's CN, or the identity a peer
     * forwarded); with it off, the verified client certificate CN (or "") and every role. */
    char identity[128];
    unsigned roles;                     /* enum ds_authz_role bits */
    char scope[DS_AUTHZ_SCOPE_MAX + 1]; /* "" = every name */
    char audit_params[512];      /* handler-filled JSON object text for the audit record */
    /* Set by a handler that answers later: called (instead of a reply) if the client goes away. */
    void (*on_abort)(struct ds_http_req *req, void *arg);
    void *abort_arg;
    uint64_t start_ns;
};

/* Create the server on `base` with the limits of c and listen on c->listen (TCP_NODELAY, which
 * accepted sockets inherit).  On error `err` (512 bytes) says what failed. */
int ds_server_new(struct event_base *base, const struct ds_config *c, struct ds_metrics *metrics,
                  struct ds_server **out, char *err);
void ds_server_free(struct ds_server *s);

struct ds_auth;
/* Peer routes (DS_ROUTE_PEER) then also need a valid HMAC (net/auth.h); borrowed. */
void ds_server_set_auth(struct ds_server *s, struct ds_auth *auth);

/* Client authentication and authorisation (net/authz.h): the identities of the tokens file, owned
 * by the server from now on (the previous table is freed; requests in flight keep their copied
 * identity).  NULL turns client auth off: every client has every role.  A route then needs:
 * nothing (DS_ROUTE_OPEN), peer mTLS + HMAC (DS_ROUTE_PEER), admin (DS_ROUTE_ADMIN), writer
 * (DS_ROUTE_MUTATING or DS_ROUTE_WRITE) or reader (any other).  No or unknown credentials: 401
 * with WWW-Authenticate: Bearer; a missing role: 403 naming it; an address with too many recent
 * failures: 429 with Retry-After.  Refusals are audited. */
void ds_server_set_authz(struct ds_server *s, struct ds_authz *authz);
int ds_server_auth_on(const struct ds_server *s);
/* Source addresses in the failure throttle (bounded by [auth] throttle_slots). */
size_t ds_server_throttle_used(const struct ds_server *s);

/* Routes are added before the loop runs (roles register theirs at start). */
int ds_server_route(struct ds_server *s, unsigned methods, const char *pattern, ds_route_fn *fn,
                    unsigned flags, void *ctx);

/* Stop accepting, close idle connections, let in-flight requests finish, then call done(arg) once
 * every connection is gone or grace_ms has passed. */
void ds_server_shutdown(struct ds_server *s, uint64_t grace_ms, void (*done)(void *), void *arg);

int ds_server_connections(const struct ds_server *s);

/* Replies.  Exactly one reply per request; after it `req` is gone. */
void ds_http_reply(struct ds_http_req *req, int status, const char *content_type, const void *body,
                   size_t len);
void ds_http_reply_json(struct ds_http_req *req, int status, const cJSON *obj);
void ds_http_reply_error(struct ds_http_req *req, int status, const char *code, const char *fmt,
                         ...) __attribute__((format(printf, 4, 5)));
/* Extra response header for the next reply of req (e.g. Retry-After, Location); copied. */
void ds_http_add_header(struct ds_http_req *req, const char *name, const char *value);

/* Scope check for a name a handler acts on (resource, queue, group, key): 0 when the identity may
 * touch it; otherwise the request is answered 403 and -1 returned. */
int ds_http_authorize_name(struct ds_http_req *req, const char *what, const char *name);
/* 1 when the request's identity has role (enum ds_authz_role). */
int ds_http_has_role(const struct ds_http_req *req, unsigned role);

/* The target (path and query) under which a node forwards req to a peer over the peer transport:
 * the caller's identity first, as ?forwarded_for=, then the original query.  The receiving server
 * believes that identity only on a request signed by a peer (net/auth.h) over a connection with a
 * verified certificate; clients may not send the parameter.  Length, or -1 when it does not fit. */
int ds_http_forward_target(const struct ds_http_req *req, char *buf, size_t len);

/* Value of query parameter `name`, percent-decoded into buf; 1 if present, 0 if absent, -1 if
 * malformed or too long. */
int ds_http_query(const struct ds_http_req *req, const char *name, char *buf, size_t len);

#endif
