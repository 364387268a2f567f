/* A validating JSON scanner for hot request paths: it finds where a value ends without building
 * a tree, and decodes strings into caller buffers, so a message body can be stored as the exact
 * bytes the client sent (no parse + print round trip, no allocation per node).
 *
 * It accepts RFC 8259 JSON only: strict numbers (no leading zeros, at most DS_JS_NUMBER_MAX
 * bytes), the seven escapes and \u escapes (four hex digits, surrogates paired), whitespace of
 * space, tab, CR and LF, and values nested at most DS_JS_DEPTH_MAX deep.  Whatever it accepts
 * cJSON parses too (t/fuzz/fuzz_jscan.c checks this on every input).  UTF-8 is not checked here:
 * callers check a whole buffer once with ds_utf8_valid. */
#ifndef DS_CORE_JSCAN_H
#define DS_CORE_JSCAN_H

#include <stddef.h>

#define DS_JS_DEPTH_MAX 512
#define DS_JS_NUMBER_MAX 63

enum {
    DS_JS_OK = 0,
    DS_JS_EINVAL = 1,  /* not JSON (or nested too deep) */
    DS_JS_ETOOLONG = 2, /* a string did not fit the buffer (it was still checked) */
    DS_JS_ENUL = 3,    /* a string holds \u0000 (refused where strings become C strings) */
};

/* The first byte at or after p that is not JSON whitespace (end when there is none). */
const char *ds_js_ws(const char *p, const char *end);

/* p at the first byte of a value (no whitespace before it): on DS_JS_OK *out is one past its
 * last byte; on DS_JS_EINVAL *out is where the scan stopped. */
int ds_js_skip(const char *p, const char *end, const char **out);

/* p at the opening quote of a string: decode it into buf (cap bytes, NUL included; buf may be
 * NULL with cap 0 to only check it), *len = decoded bytes, *out = past the closing quote.  A
 * \u0000 escape is DS_JS_ENUL; a string longer than cap - 1 bytes is DS_JS_ETOOLONG (*out still
 * set). */
int ds_js_string(const char *p, const char *end, char *buf, size_t cap, size_t *len,
                 const char **out);

#endif
