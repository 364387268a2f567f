/* HTTP/1.1 request-head parser (RFC 9112): zero-copy, incremental over one contiguous buffer,
 * strict about what it accepts and answering every refusal with the status to send. */
#ifndef DS_NET_HTTP_PARSE_H
#define DS_NET_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ds_http_method {
    DS_HTTP_OTHER = 0,
    DS_HTTP_GET = 1 << 0,
    DS_HTTP_HEAD = 1 << 1,
    DS_HTTP_POST = 1 << 2,
    DS_HTTP_PUT = 1 << 3,
    DS_HTTP_DELETE = 1 << 4,
    DS_HTTP_OPTIONS = 1 << 5,
    DS_HTTP_PATCH = 1 << 6,
};

#define DS_HTTP_MAX_TARGET 8192

struct ds_http_header {
    const char *name; /* points into the parsed buffer; not NUL-terminated */
    size_t name_len;
    const char *value; /* trimmed of surrounding spaces/tabs */
    size_t value_len;
};

struct ds_http_limits {
    size_t max_head_bytes; /* request line + headers + blank line */
    size_t max_headers;    /* <= capacity of the header array given to the parser */
    uint64_t max_body;
};

struct ds_http_head {
    int method;              /* enum ds_http_method */
    const char *method_name; /* into the buffer */
    size_t method_len;
    const char *path; /* the target up to '?' (still percent-encoded) */
    size_t path_len;
    const char *query; /* after '?', or NULL */
    size_t query_len;
    int minor_version;        /* HTTP/1.minor */
    uint64_t content_length;  /* 0 when absent */
    bool keep_alive;          /* after Connection and the version default */
    bool expect_continue;
    struct ds_http_header *headers; /* caller-provided array */
    size_t nheaders;
    size_t head_len; /* bytes of the head including the blank line */
};

/* Result of ds_http_parse_head: DS_HTTP_PARSE_DONE, DS_HTTP_PARSE_AGAIN (need more bytes), or an
 * HTTP status >= 400 to answer (after which the connection must be closed). */
#define DS_HTTP_PARSE_DONE 0
#define DS_HTTP_PARSE_AGAIN 1

/* Parse the head at buf[0..len).  `headers` has room for lim->max_headers entries.  On an error
 * status, *why (if not NULL) receives a static explanation.  Pointers in h point into buf. */
int ds_http_parse_head(const char *buf, size_t len, const struct ds_http_limits *lim,
                       struct ds_http_header *headers, struct ds_http_head *h, const char **why);

struct ds_http_response_head {
    int status;
    uint64_t content_length;
    bool keep_alive;
    struct ds_http_header *headers; /* caller-provided array */
    size_t nheaders;
    size_t head_len;
};

/* Parse a response head (peer client side).  Same results as ds_http_parse_head; an error status
 * (always 502 here) means the peer's bytes are not a well-formed HTTP/1.1 response with a
 * Content-Length body. */
int ds_http_parse_response_head(const char *buf, size_t len, const struct ds_http_limits *lim,
                                struct ds_http_header *headers, struct ds_http_response_head *r,
                                const char **why);

/* Case-insensitive lookup of a header by name (NUL-terminated); NULL when absent. */
const struct ds_http_header *ds_http_find_header(const struct ds_http_head *h, const char *name);

/* Method name ("GET") of a single DS_HTTP_* bit, or "" for DS_HTTP_OTHER. */
const char *ds_http_method_name(int method);

/* Reason phrase of a status code ("Not Found"); "Unknown" for codes it does not know. */
const char *ds_http_reason(int status);

#endif
