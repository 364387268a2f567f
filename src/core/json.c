/* JSON helpers: strict request-body parsing and typed field access with errors that name the field. */
#include "core/json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

bool ds_utf8_valid(const char *buf, size_t len)
{
    const unsigned char *s = (const unsigned char *)buf, *end = s + len;
    while (s < end) {
        uint64_t w; /* eight ASCII bytes at a time */
        if (end - s >= 8 && (memcpy(&w, s, 8), (w & UINT64_C(0x8080808080808080)) == 0)) {
            s += 8;
            continue;
        }
        unsigned char c = *s;
        if (c < 0x80) {
            s++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if ((size_t)(end - s) <= n)
            return false;
        for (size_t i = 1; i <= n; i++) {
            if ((s[i] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        s += n + 1;
    }
    return true;
}

/* 1 when a JSON string in buf holds the escape \u0000: cJSON would hand out a C string cut at
 * that point, so "a\u0000b" and "a" would name the same thing. */
static int has_nul_escape(const char *buf, size_t len)
{
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        if (!in_string) {
            in_string = buf[i] == '"';
        } else if (buf[i] == '"') {
            in_string = 0;
        } else if (buf[i] == '\\' && i + 1 < len) {
            if (buf[i + 1] == 'u' && i + 5 < len && memcmp(buf + i + 2, "0000", 4) == 0)
                return 1;
            i++; /* skip the escaped character */
        }
    }
    return 0;
}

int ds_parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 0;
}

int ds_json_parse_object(const char *body, size_t len, cJSON **out, char *err)
{
    *out = NULL;
    if (len == 0) {
        snprintf(err, DS_JSON_ERR_MAX, "request body is empty: a JSON object is expected");
        return DS_JSON_EPARSE;
    }
    if (!ds_utf8_valid(body, len)) {
        snprintf(err, DS_JSON_ERR_MAX, "request body is not valid UTF-8");
        return DS_JSON_EPARSE;
    }
    if (has_nul_escape(body, len)) {
        snprintf(err, DS_JSON_ERR_MAX, "strings must not contain NUL (\\u0000)");
        return DS_JSON_EPARSE;
    }
    const char *end = NULL;
    cJSON *obj = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (!obj) {
        size_t at = end && end >= body ? (size_t)(end - body) : 0;
        snprintf(err, DS_JSON_ERR_MAX, "malformed JSON near byte %zu", at);
        return DS_JSON_EPARSE;
    }
    while (end < body + len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t'))
        end++;
    if (end != body + len) {
        cJSON_Delete(obj);
        snprintf(err, DS_JSON_ERR_MAX, "trailing data after the JSON value at byte %zu",
                 (size_t)(end - body));
        return DS_JSON_EPARSE;
    }
    if (!cJSON_IsObject(obj)) {
        cJSON_Delete(obj);
        snprintf(err, DS_JSON_ERR_MAX, "request body must be a JSON object");
        return DS_JSON_EPARSE;
    }
    *out = obj;
    return DS_JSON_OK;
}

int ds_json_only_fields(const cJSON *obj, const char *const *allowed, char *err)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, obj) {
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = it->string && strcmp(it->string, *a) == 0;
        if (!ok) {
            snprintf(err, DS_JSON_ERR_MAX, "unknown field '%.64s'", it->string ? it->string : "");
            return DS_JSON_EFIELD;
        }
    }
    return DS_JSON_OK;
}

/* The member called name; a duplicate member is an error (cJSON keeps both). */
static int member(const cJSON *obj, const char *name, bool required, const cJSON **out, char *err)
{
    const cJSON *found = NULL, *it;
    cJSON_ArrayForEach(it, obj) {
        if (it->string && strcmp(it->string, name) == 0) {
            if (found) {
                snprintf(err, DS_JSON_ERR_MAX, "field '%s' given twice", name);
                return DS_JSON_EFIELD;
            }
            found = it;
        }
    }
    if (!found && required) {
        snprintf(err, DS_JSON_ERR_MAX, "field '%s' is required", name);
        return DS_JSON_EFIELD;
    }
    *out = found;
    return DS_JSON_OK;
}

int ds_json_get_str(const cJSON *obj, const char *name, bool required, size_t maxlen,
                    const char **out, char *err)
{
    const cJSON *m;
    int rv = member(obj, name, required, &m, err);
    if (rv || !m)
        return rv;
    if (!cJSON_IsString(m)) {
        snprintf(err, DS_JSON_ERR_MAX, "field '%s' must be a string", name);
        return DS_JSON_EFIELD;
    }
    size_t n = strlen(m->valuestring);
    if (n == 0 || n > maxlen) {
        snprintf(err, DS_JSON_ERR_MAX, "field '%s' must be 1 to %zu bytes long", name, maxlen);
        return DS_JSON_EFIELD;
    }
    *out = m->valuestring;
    return DS_JSON_OK;
}

int ds_json_get_u64(const cJSON *obj, const char *name, bool required, uint64_t min, uint64_t max,
                    uint64_t *out, char *err)
{
    const cJSON *m;
    int rv = member(obj, name, required, &m, err);
    if (rv || !m)
        return rv;
    uint64_t v;
    if (cJSON_IsNumber(m)) {
        double d = m->valuedouble;
        if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(uint64_t)d)
            goto bad;
        v = (uint64_t)d;
    } else if (cJSON_IsString(m)) {
        if (ds_parse_u64(m->valuestring, &v))
            goto bad;
    } else {
        goto bad;
    }
    if (v < min || v > max) {
        snprintf(err, DS_JSON_ERR_MAX, "field '%s' must be between %" PRIu64 " and %" PRIu64, name,
                 min, max);
        return DS_JSON_EFIELD;
    }
    *out = v;
    return DS_JSON_OK;
bad:
    snprintf(err, DS_JSON_ERR_MAX, "field '%s' must be a non-negative whole number", name);
    return DS_JSON_EFIELD;
}

int ds_json_get_bool(const cJSON *obj, const char *name, bool required, bool *out, char *err)
{
    const cJSON *m;
    int rv = member(obj, name, required, &m, err);
    if (rv || !m)
        return rv;
    if (!cJSON_IsBool(m)) {
        snprintf(err, DS_JSON_ERR_MAX, "field '%s' must be true or false", name);
        return DS_JSON_EFIELD;
    }
    *out = cJSON_IsTrue(m);
    return DS_JSON_OK;
}

/* ------------------------------------------------------------------ printing
 *
 * The same bytes as cJSON_PrintUnformatted (t/unit/lock/test_lock_json.c compares them), without
 * its sprintf + sscanf round trip for whole numbers, which is most of what answers carry. */

/* Whole numbers below 10^15 print as their digits under every cJSON version ("%d" or "%1.15g");
 * zero only when positive (-0.0 prints as "-0" or "0" depending on the version). */
#define PRINT_WHOLE_MAX 1e15

static void print_u64(struct ds_buf *b, uint64_t v)
{
    char d[20];
    size_t n = 0;
    do {
        d[sizeof d - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    ds_buf_add(b, d + sizeof d - n, n);
}

/* Whole numbers directly; anything else (fractions, large, -0.0, NaN) as cJSON prints item, or a
 * number item made for d when item is NULL. */
static int print_number(struct ds_buf *b, double d, const cJSON *item)
{
    if (d > -PRINT_WHOLE_MAX && d < PRINT_WHOLE_MAX && d == (double)(int64_t)d &&
        !(d == 0 && signbit(d))) {
        if (d < 0)
            ds_buf_add(b, "-", 1);
        print_u64(b, (uint64_t)(d < 0 ? -d : d));
        return 0;
    }
    cJSON *own = item ? NULL : cJSON_CreateNumber(d);
    char *s = cJSON_PrintUnformatted(item ? item : own); /* a number prints without siblings */
    cJSON_Delete(own);
    if (!s)
        return -1;
    ds_buf_add(b, s, strlen(s));
    cJSON_free(s);
    return 0;
}

int ds_json_put_number(struct ds_buf *b, double d)
{
    return print_number(b, d, NULL);
}

/* cJSON's print_string_ptr: NULL prints as "", control characters are escaped, bytes >= 0x80
 * pass through. */
void ds_json_put_str(struct ds_buf *b, const char *s)
{
    ds_buf_add(b, "\"", 1);
    if (s) {
        const unsigned char *p = (const unsigned char *)s, *run = p;
        for (; *p; p++) {
            if (*p >= 0x20 && *p != '"' && *p != '\\')
                continue;
            ds_buf_add(b, run, (size_t)(p - run));
            run = p + 1;
            static const char hex[] = "0123456789abcdef";
            char out[6] = {'\\', (char)*p};
            size_t n = 2;
            switch (*p) {
            case '\b': out[1] = 'b'; break;
            case '\f': out[1] = 'f'; break;
            case '\n': out[1] = 'n'; break;
            case '\r': out[1] = 'r'; break;
            case '\t': out[1] = 't'; break;
            case '"': case '\\': break;
            default:
                memcpy(out + 1, "u00", 3);
                out[4] = hex[*p >> 4];
                out[5] = hex[*p & 15];
                n = 6;
            }
            ds_buf_add(b, out, n);
        }
        ds_buf_add(b, run, (size_t)(p - run));
    }
    ds_buf_add(b, "\"", 1);
}

/* cJSON's print_value, unformatted; -1 where cJSON fails (invalid type, raw without text). */
static int print_value(struct ds_buf *b, const cJSON *item)
{
    switch (item->type & 0xFF) {
    case cJSON_NULL:
        ds_buf_add(b, "null", 4);
        return 0;
    case cJSON_False:
        ds_buf_add(b, "false", 5);
        return 0;
    case cJSON_True:
        ds_buf_add(b, "true", 4);
        return 0;
    case cJSON_Number:
        return print_number(b, item->valuedouble, item);
    case cJSON_Raw:
        if (!item->valuestring)
            return -1;
        ds_buf_add(b, item->valuestring, strlen(item->valuestring));
        return 0;
    case cJSON_String:
        ds_json_put_str(b, item->valuestring);
        return 0;
    case cJSON_Array:
    case cJSON_Object: {
        int object = (item->type & 0xFF) == cJSON_Object;
        ds_buf_add(b, object ? "{" : "[", 1);
        for (const cJSON *c = item->child; c; c = c->next) {
            if (object) {
                ds_json_put_str(b, c->string);
                ds_buf_add(b, ":", 1);
            }
            if (print_value(b, c))
                return -1;
            if (c->next)
                ds_buf_add(b, ",", 1);
        }
        ds_buf_add(b, object ? "}" : "]", 1);
        return 0;
    }
    default:
        return -1;
    }
}

char *ds_json_print(const cJSON *obj, size_t *len)
{
    struct ds_buf b = {0};
    if (!obj || print_value(&b, obj) || b.oom) {
        ds_buf_free(&b);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.p;
}

size_t ds_json_error_body(char *buf, size_t buflen, const char *code, const char *message)
{
    size_t used = (size_t)snprintf(buf, buflen, "{\"error\":{\"code\":\"%s\",\"message\":\"", code);
    for (const unsigned char *p = (const unsigned char *)message; *p && used + 8 < buflen; p++) {
        if (*p == '"' || *p == '\\') {
            buf[used++] = '\\';
            buf[used++] = (char)*p;
        } else if (*p < 0x20 || *p >= 0x7f) { /* keep the body ASCII whatever the message */
            used += (size_t)snprintf(buf + used, buflen - used, "\\u%04x", *p);
        } else {
            buf[used++] = (char)*p;
        }
    }
    if (used + 4 > buflen)
        used = buflen - 4;
    memcpy(buf + used, "\"}}", 4);
    return used + 3;
}
