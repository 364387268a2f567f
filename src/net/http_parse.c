/* HTTP/1.1 request-head parser (RFC 9112 §2-§6): zero-copy and strict; refusals carry a status. */
#include "net/http_parse.h"

#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    size_t len;
    int method;
} methods[] = {
    {"GET", 3, DS_HTTP_GET},       {"HEAD", 4, DS_HTTP_HEAD},       {"POST", 4, DS_HTTP_POST},
    {"PUT", 3, DS_HTTP_PUT},       {"DELETE", 6, DS_HTTP_DELETE},   {"OPTIONS", 7, DS_HTTP_OPTIONS},
    {"PATCH", 5, DS_HTTP_PATCH},
};

const char *ds_http_method_name(int method)
{
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (methods[i].method == method)
            return methods[i].name;
    return "";
}

/* RFC 9110 §5.6.2 tchar */
static bool is_tchar(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return true;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Next line [*start, end-of-line) ending in LF (optionally preceded by CR).  Returns the length
 * of the line without its terminator and sets *next past it; -1 when no LF in buf yet. */
static long next_line(const char *buf, size_t len, size_t from, size_t *next)
{
    const char *lf = memchr(buf + from, '\n', len - from);
    if (!lf)
        return -1;
    size_t end = (size_t)(lf - buf);
    *next = end + 1;
    if (end > from && buf[end - 1] == '\r')
        end--;
    return (long)(end - from);
}

static bool token_eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

static int parse_request_line(const char *s, size_t n, struct ds_http_head *h, const char **why)
{
    const char *sp1 = memchr(s, ' ', n);
    if (!sp1 || sp1 == s) {
        *why = "malformed request line";
        return 400;
    }
    h->method_name = s;
    h->method_len = (size_t)(sp1 - s);
    for (size_t i = 0; i < h->method_len; i++)
        if (!is_tchar((unsigned char)s[i])) {
            *why = "malformed method";
            return 400;
        }
    h->method = DS_HTTP_OTHER;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (methods[i].len == h->method_len && memcmp(methods[i].name, s, h->method_len) == 0)
            h->method = methods[i].method;
    const char *t = sp1 + 1, *end = s + n;
    const char *sp2 = memchr(t, ' ', (size_t)(end - t));
    if (!sp2) {
        *why = "malformed request line";
        return 400;
    }
    size_t tlen = (size_t)(sp2 - t);
    if (tlen > DS_HTTP_MAX_TARGET) {
        *why = "request target too long";
        return 414;
    }
    if (tlen == 0 || t[0] != '/') {
        *why = "request target must be an absolute path";
        return 400;
    }
    for (size_t i = 0; i < tlen; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c <= 0x20 || c >= 0x7f) {
            *why = "invalid character in request target";
            return 400;
        }
    }
    const char *q = memchr(t, '?', tlen);
    h->path = t;
    h->path_len = q ? (size_t)(q - t) : tlen;
    h->query = q ? q + 1 : NULL;
    h->query_len = q ? tlen - h->path_len - 1 : 0;
    const char *v = sp2 + 1;
    size_t vlen = (size_t)(end - v);
    if (vlen != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' || v[5] < '0' || v[5] > '9' ||
        v[7] < '0' || v[7] > '9') {
        *why = "malformed HTTP version";
        return 400;
    }
    if (v[5] != '1') {
        *why = "only HTTP/1.x is supported";
        return 505;
    }
    h->minor_version = v[7] - '0';
    h->keep_alive = h->minor_version >= 1;
    return DS_HTTP_PARSE_DONE;
}

static int parse_content_length(const char *v, size_t n, uint64_t *out)
{
    if (n == 0 || n > 19)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return 0;
}

/* Connection: a comma-separated list of tokens */
static void parse_connection(const char *v, size_t n, struct ds_http_head *h)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t j = i;
        while (j < n && v[j] != ',' && v[j] != ' ' && v[j] != '\t')
            j++;
        if (token_eq(v + i, j - i, "close"))
            h->keep_alive = false;
        else if (token_eq(v + i, j - i, "keep-alive"))
            h->keep_alive = true;
        i = j;
    }
}

static int parse_header(const char *s, size_t n, struct ds_http_head *h, bool *seen_cl,
                        const char **why)
{
    if (s[0] == ' ' || s[0] == '\t') {
        *why = "obsolete header line folding";
        return 400;
    }
    const char *colon = memchr(s, ':', n);
    if (!colon || colon == s) {
        *why = "malformed header line";
        return 400;
    }
    size_t nl = (size_t)(colon - s);
    for (size_t i = 0; i < nl; i++)
        if (!is_tchar((unsigned char)s[i])) {
            *why = "malformed header name";
            return 400;
        }
    const char *v = colon + 1, *end = s + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    for (const char *p = v; p < end; p++)
        if ((unsigned char)*p < 0x20 && *p != '\t') {
            *why = "control character in header value";
            return 400;
        }
    size_t vl = (size_t)(end - v);
    struct ds_http_header *hd = &h->headers[h->nheaders++];
    hd->name = s;
    hd->name_len = nl;
    hd->value = v;
    hd->value_len = vl;
    if (token_eq(s, nl, "content-length")) {
        uint64_t cl;
        if (parse_content_length(v, vl, &cl) || (*seen_cl && cl != h->content_length)) {
            *why = "invalid Content-Length";
            return 400;
        }
        *seen_cl = true;
        h->content_length = cl;
    } else if (token_eq(s, nl, "transfer-encoding")) {
        *why = "Transfer-Encoding is not accepted: send the body with Content-Length";
        return 411;
    } else if (token_eq(s, nl, "connection")) {
        parse_connection(v, vl, h);
    } else if (token_eq(s, nl, "expect")) {
        if (!token_eq(v, vl, "100-continue")) {
            *why = "unsupported Expect";
            return 417;
        }
        h->expect_continue = true;
    }
    return DS_HTTP_PARSE_DONE;
}

int ds_http_parse_head(const char *buf, size_t len, const struct ds_http_limits *lim,
                       struct ds_http_header *headers, struct ds_http_head *h, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    memset(h, 0, sizeof *h);
    h->headers = headers;
    size_t scan = len < lim->max_head_bytes ? len : lim->max_head_bytes;
    size_t pos = 0, next;
    /* RFC 9112 §2.2: ignore at least one empty line before the request line */
    long n = next_line(buf, scan, pos, &next);
    if (n == 0) {
        pos = next;
        n = next_line(buf, scan, pos, &next);
    }
    if (n < 0)
        goto need_more;
    int rv = parse_request_line(buf + pos, (size_t)n, h, why);
    if (rv)
        return rv;
    pos = next;
    bool seen_cl = false;
    for (;;) {
        n = next_line(buf, scan, pos, &next);
        if (n < 0)
            goto need_more;
        if (n == 0)
            break;
        if (h->nheaders >= lim->max_headers) {
            *why = "too many header fields";
            return 431;
        }
        rv = parse_header(buf + pos, (size_t)n, h, &seen_cl, why);
        if (rv)
            return rv;
        pos = next;
    }
    h->head_len = next;
    if (h->content_length > lim->max_body) {
        *why = "request body larger than the limit";
        return 413;
    }
    return DS_HTTP_PARSE_DONE;
need_more:
    if (len >= lim->max_head_bytes) {
        if (!h->method_name) { /* the request line alone is over the limit: its target is */
            *why = "request target too long";
            return 414;
        }
        *why = "request head larger than the limit";
        return 431;
    }
    return DS_HTTP_PARSE_AGAIN;
}

int ds_http_parse_response_head(const char *buf, size_t len, const struct ds_http_limits *lim,
                                struct ds_http_header *headers, struct ds_http_response_head *r,
                                const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    memset(r, 0, sizeof *r);
    r->headers = headers;
    size_t scan = len < lim->max_head_bytes ? len : lim->max_head_bytes;
    size_t pos = 0, next;
    long n = next_line(buf, scan, pos, &next);
    if (n < 0)
        goto need_more;
    /* HTTP/1.1 SP 3DIGIT SP reason */
    if (n < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ' || buf[9] < '1' ||
        buf[9] > '5' || buf[10] < '0' || buf[10] > '9' || buf[11] < '0' || buf[11] > '9' ||
        (n > 12 && buf[12] != ' ')) {
        *why = "malformed status line";
        return 502;
    }
    r->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    struct ds_http_head h; /* reuse the header-line parser */
    memset(&h, 0, sizeof h);
    h.headers = headers;
    h.keep_alive = buf[7] == '1';
    bool seen_cl = false;
    pos = next;
    for (;;) {
        n = next_line(buf, scan, pos, &next);
        if (n < 0)
            goto need_more;
        if (n == 0)
            break;
        if (h.nheaders >= lim->max_headers) {
            *why = "too many header fields";
            return 502;
        }
        if (parse_header(buf + pos, (size_t)n, &h, &seen_cl, why))
            return 502;
        pos = next;
    }
    if (!seen_cl && r->status != 204 && r->status != 304 && r->status >= 200) {
        *why = "response without Content-Length";
        return 502;
    }
    if (h.content_length > lim->max_body) {
        *why = "response body larger than the limit";
        return 502;
    }
    r->content_length = h.content_length;
    r->keep_alive = h.keep_alive;
    r->nheaders = h.nheaders;
    r->head_len = next;
    return DS_HTTP_PARSE_DONE;
need_more:
    if (len >= lim->max_head_bytes) {
        *why = "response head larger than the limit";
        return 502;
    }
    return DS_HTTP_PARSE_AGAIN;
}

const struct ds_http_header *ds_http_find_header(const struct ds_http_head *h, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < h->nheaders; i++)
        if (h->headers[i].name_len == nl && strncasecmp(h->headers[i].name, name, nl) == 0)
            return &h->headers[i];
    return NULL;
}

const char *ds_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 307: return "Temporary Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}
