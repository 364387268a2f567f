/* Route table: (methods, path pattern, handler, flags) as data, matched segment by segment with
 * {name} captures; answers 404 / 405 (+ the Allow set) / 400 (bad percent-encoding) itself. */
#ifndef DS_NET_ROUTER_H
#define DS_NET_ROUTER_H

#include <stddef.h>

struct ds_http_req; /* defined by the server (net/server.h) */
struct ds_router;

typedef void ds_route_fn(struct ds_http_req *req);

enum ds_route_flags {
    DS_ROUTE_PEER = 1 << 0,     /* peers only: verified client certificate (and HMAC, per role) */
    DS_ROUTE_MUTATING = 1 << 1, /* changes state: one audit record per request */
    DS_ROUTE_ADMIN = 1 << 2,    /* operator only (client certificate) */
};

#define DS_ROUTE_MAX_PARAMS 4
#define DS_ROUTE_PARAM_MAX 1024

struct ds_route {
    unsigned methods;    /* DS_HTTP_* bits */
    const char *pattern; /* e.g. "/lock/{resource}"; borrowed (string literal) */
    ds_route_fn *handler;
    unsigned flags;      /* enum ds_route_flags */
    void *ctx;           /* handler's context (the role instance), handed back in the request */
};

struct ds_route_match {
    const struct ds_route *route;
    int index;                        /* position of the route in the table (for metrics) */
    unsigned allow;                   /* 405: methods the path accepts */
    int nparams;
    char params[DS_ROUTE_MAX_PARAMS][DS_ROUTE_PARAM_MAX]; /* percent-decoded, NUL-terminated */
    const char *why;                  /* static explanation on 400 */
};

enum ds_router_err { DS_ROUTER_OK = 0, DS_ROUTER_ENOMEM = 1, DS_ROUTER_EPATTERN = 2 };

struct ds_router *ds_router_new(void);
void ds_router_free(struct ds_router *r);

/* Add a route (copied).  Patterns are '/'-separated literal segments or {name} captures that match
 * one non-empty segment; at most DS_ROUTE_MAX_PARAMS captures. */
int ds_router_add(struct ds_router *r, const struct ds_route *route);

/* Match method + raw (percent-encoded) path.  Returns 0 with m->route set, or 404, 405 (m->allow
 * set) or 400 (m->why set).  A literal segment wins over a capture at the same place. */
int ds_router_match(const struct ds_router *r, int method, const char *path, size_t len,
                    struct ds_route_match *m);

/* Number of routes and the route at index i (for metrics labels). */
int ds_router_count(const struct ds_router *r);
const struct ds_route *ds_router_at(const struct ds_router *r, int i);

/* "GET, HEAD, POST" for an Allow header, into buf. */
void ds_router_allow_header(unsigned allow, char *buf, size_t len);

/* Decode %XX escapes of src[0..len) into dst (dstlen bytes, NUL-terminated).  -1 on a malformed
 * escape, an encoded NUL, or when the result does not fit. */
int ds_percent_decode(const char *src, size_t len, char *dst, size_t dstlen);

#endif
