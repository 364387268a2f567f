/* Route table matching: literal and {capture} segments, 404/405/400 decided here. */
#include "net/router.h"

#include <stdlib.h>
#include <string.h>

#include "net/http_parse.h"

struct ds_router {
    struct ds_route *routes;
    int n, cap;
};

struct ds_router *ds_router_new(void)
{
    return calloc(1, sizeof(struct ds_router));
}

void ds_router_free(struct ds_router *r)
{
    if (!r)
        return;
    free(r->routes);
    free(r);
}

int ds_router_add(struct ds_router *r, const struct ds_route *route)
{
    int captures = 0;
    if (route->pattern[0] != '/')
        return DS_ROUTER_EPATTERN;
    for (const char *p = route->pattern; *p; p++)
        captures += *p == '{';
    if (captures > DS_ROUTE_MAX_PARAMS)
        return DS_ROUTER_EPATTERN;
    if (r->n == r->cap) {
        int cap = r->cap ? r->cap * 2 : 16;
        struct ds_route *nr = realloc(r->routes, (size_t)cap * sizeof *nr);
        if (!nr)
            return DS_ROUTER_ENOMEM;
        r->routes = nr;
        r->cap = cap;
    }
    r->routes[r->n++] = *route;
    return DS_ROUTER_OK;
}

int ds_router_count(const struct ds_router *r)
{
    return r->n;
}

const struct ds_route *ds_router_at(const struct ds_router *r, int i)
{
    return i >= 0 && i < r->n ? &r->routes[i] : NULL;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int ds_percent_decode(const char *src, size_t len, char *dst, size_t dstlen)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (c == '%') {
            if (i + 2 >= len)
                return -1;
            int hi = hexval(src[i + 1]), lo = hexval(src[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (o + 1 >= dstlen)
            return -1;
        dst[o++] = c;
    }
    dst[o] = 0;
    return 0;
}

/* Score of route against the path's segments: -1 no match, else number of literal segments
 * (higher is more specific).  Captures are decoded into m when `capture` is set. */
static int match_one(const struct ds_route *rt, const char *path, size_t len,
                     struct ds_route_match *m, int capture)
{
    const char *p = rt->pattern, *s = path, *end = path + len;
    int literals = 0, np = 0;
    while (*p) {
        if (*p != '/' || s >= end || *s != '/')
            return -1;
        p++;
        s++;
        const char *pe = strchr(p, '/');
        size_t pl = pe ? (size_t)(pe - p) : strlen(p);
        const char *se = memchr(s, '/', (size_t)(end - s));
        size_t sl = se ? (size_t)(se - s) : (size_t)(end - s);
        if (pl >= 2 && p[0] == '{' && p[pl - 1] == '}') {
            if (sl == 0)
                return -1;
            if (capture && ds_percent_decode(s, sl, m->params[np], DS_ROUTE_PARAM_MAX))
                return -2;
            np++;
        } else {
            if (pl != sl || memcmp(p, s, sl) != 0)
                return -1;
            literals++;
        }
        p += pl;
        s += sl;
    }
    if (s != end)
        return -1;
    if (capture)
        m->nparams = np;
    return literals;
}

int ds_router_match(const struct ds_router *r, int method, const char *path, size_t len,
                    struct ds_route_match *m)
{
    m->route = NULL;
    m->index = -1;
    m->allow = 0;
    m->nparams = 0;
    m->why = NULL;
    int best = -1, best_score = -1;
    for (int i = 0; i < r->n; i++) {
        int score = match_one(&r->routes[i], path, len, m, 0);
        if (score < 0)
            continue;
        m->allow |= r->routes[i].methods;
        if (method && (r->routes[i].methods & (unsigned)method) && score > best_score) {
            best = i;
            best_score = score;
        }
    }
    if (best < 0)
        return m->allow ? 405 : 404;
    if (match_one(&r->routes[best], path, len, m, 1) == -2) {
        m->why = "malformed percent-encoding in path";
        return 400;
    }
    m->route = &r->routes[best];
    m->index = best;
    return 0;
}

void ds_router_allow_header(unsigned allow, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = 0;
    for (unsigned bit = 1; bit <= DS_HTTP_PATCH; bit <<= 1) {
        if (!(allow & bit))
            continue;
        const char *name = ds_http_method_name((int)bit);
        size_t n = strlen(name);
        if (used + n + 3 > len)
            break;
        if (used) {
            memcpy(buf + used, ", ", 2);
            used += 2;
        }
        memcpy(buf + used, name, n);
        used += n;
        buf[used] = 0;
    }
}
