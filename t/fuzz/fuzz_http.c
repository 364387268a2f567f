/* libFuzzer target: the HTTP request-head and response-head parsers and the router. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "net/http_parse.h"
#include "net/router.h"

static void handler(struct ds_http_req *req)
{
    (void)req;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct ds_router *r;
    if (!r) {
        r = ds_router_new();
        struct ds_route routes[] = {
            {DS_HTTP_GET, "/lock/{resource}", handler, 0, NULL},
            {DS_HTTP_GET, "/cache/{key}/state", handler, 0, NULL},
            {DS_HTTP_POST, "/lock/acquire", handler, 0, NULL},
        };
        for (size_t i = 0; i < 3; i++)
            ds_router_add(r, &routes[i]);
    }
    static const struct ds_http_limits lim = {16384, 64, 1 << 20};
    struct ds_http_header headers[64];
    struct ds_http_head h;
    const char *buf = (const char *)data;
    if (ds_http_parse_head(buf, size, &lim, headers, &h, NULL) == DS_HTTP_PARSE_DONE) {
        struct ds_route_match m;
        ds_router_match(r, h.method, h.path, h.path_len, &m);
        ds_http_find_header(&h, "content-type");
    }
    struct ds_http_response_head rh;
    ds_http_parse_response_head(buf, size, &lim, headers, &rh, NULL);
    return 0;
}
