/* Validating JSON scanner: see jscan.h. */
#include "core/jscan.h"

#include <stdint.h>
#include <string.h>

const char *ds_js_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

static int hex4(const char *p, const char *end, uint32_t *out)
{
    if (end - p < 4)
        return -1;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        uint32_t d;
        if (c >= '0' && c <= '9')
            d = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (uint32_t)(c - 'A' + 10);
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

/* Append n bytes to buf if they fit (leaving room for the NUL); *toolong otherwise. */
static void emit(char *buf, size_t cap, size_t *n, const char *s, size_t k, int *toolong)
{
    if (*n + k < cap)
        memcpy(buf + *n, s, k);
    else
        *toolong = 1;
    *n += k;
}

/* One \u escape (four hex digits, or a surrogate pair of them) at p (at the 'u'): its UTF-8
 * into u8, *p advanced. */
static int unicode_escape(const char **pp, const char *end, char *u8, size_t *k, uint32_t *cpo)
{
    const char *p = *pp + 1;
    uint32_t cp, lo;
    if (hex4(p, end, &cp))
        return -1;
    p += 4;
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return -1;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, end, &lo) || lo < 0xDC00 ||
            lo > 0xDFFF)
            return -1;
        p += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (cp < 0x80) {
        u8[0] = (char)cp;
        *k = 1;
    } else if (cp < 0x800) {
        u8[0] = (char)(0xC0 | cp >> 6);
        u8[1] = (char)(0x80 | (cp & 0x3F));
        *k = 2;
    } else if (cp < 0x10000) {
        u8[0] = (char)(0xE0 | cp >> 12);
        u8[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        u8[2] = (char)(0x80 | (cp & 0x3F));
        *k = 3;
    } else {
        u8[0] = (char)(0xF0 | cp >> 18);
        u8[1] = (char)(0x80 | (cp >> 12 & 0x3F));
        u8[2] = (char)(0x80 | (cp >> 6 & 0x3F));
        u8[3] = (char)(0x80 | (cp & 0x3F));
        *k = 4;
    }
    *cpo = cp;
    *pp = p;
    return 0;
}

int ds_js_string(const char *p, const char *end, char *buf, size_t cap, size_t *len,
                 const char **out)
{
    size_t n = 0;
    int toolong = 0, nul = 0;
    if (p >= end || *p != '"')
        goto bad;
    p++;
    while (p < end) {
        const char *run = p;
        while (p < end && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
            p++;
        if (p > run)
            emit(buf, cap, &n, run, (size_t)(p - run), &toolong);
        if (p >= end || (unsigned char)*p < 0x20)
            goto bad;
        if (*p == '"') {
            if (cap)
                buf[n < cap ? n : cap - 1] = '\0';
            *len = n;
            *out = p + 1;
            return nul ? DS_JS_ENUL : toolong ? DS_JS_ETOOLONG : DS_JS_OK;
        }
        if (end - p < 2)
            goto bad;
        char c;
        switch (p[1]) {
        case '"': c = '"'; break;
        case '\\': c = '\\'; break;
        case '/': c = '/'; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u': {
            char u8[4];
            size_t k;
            uint32_t cp;
            p++;
            if (unicode_escape(&p, end, u8, &k, &cp))
                goto bad;
            nul |= cp == 0;
            emit(buf, cap, &n, u8, k, &toolong);
            continue;
        }
        default: goto bad;
        }
        emit(buf, cap, &n, &c, 1, &toolong);
        p += 2;
    }
bad:
    *out = p;
    return DS_JS_EINVAL;
}

static int literal(const char **pp, const char *end, const char *word, size_t n)
{
    if ((size_t)(end - *pp) < n || memcmp(*pp, word, n) != 0)
        return -1;
    *pp += n;
    return 0;
}

static int digits(const char **pp, const char *end)
{
    const char *p = *pp;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    if (p == *pp)
        return -1;
    *pp = p;
    return 0;
}

static int number(const char **pp, const char *end)
{
    const char *p = *pp, *start = p;
    if (*p == '-')
        p++;
    if (p < end && *p == '0')
        p++;
    else if (digits(&p, end))
        return -1;
    if (p < end && *p == '.') {
        p++;
        if (digits(&p, end))
            return -1;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (digits(&p, end))
            return -1;
    }
    if (p - start > DS_JS_NUMBER_MAX)
        return -1;
    *pp = p;
    return 0;
}

int ds_js_skip(const char *p, const char *end, const char **out)
{
    char stack[DS_JS_DEPTH_MAX]; /* '{' or '[' of each open container */
    size_t depth = 0, len;
    for (;;) {
        /* a value at p */
        if (p >= end)
            goto bad;
        switch (*p) {
        case '{':
        case '[':
            if (depth == DS_JS_DEPTH_MAX)
                goto bad;
            stack[depth++] = *p;
            p = ds_js_ws(p + 1, end);
            if (p < end && *p == (stack[depth - 1] == '{' ? '}' : ']')) {
                p++;
                depth--;
                break;
            }
            if (stack[depth - 1] == '[')
                continue;
            goto member;
        case '"':
            if (ds_js_string(p, end, NULL, 0, &len, &p) == DS_JS_EINVAL)
                goto bad;
            break;
        case 't':
            if (literal(&p, end, "true", 4))
                goto bad;
            break;
        case 'f':
            if (literal(&p, end, "false", 5))
                goto bad;
            break;
        case 'n':
            if (literal(&p, end, "null", 4))
                goto bad;
            break;
        default:
            if ((*p != '-' && (*p < '0' || *p > '9')) || number(&p, end))
                goto bad;
            break;
        }
        /* after a value: the end, a separator or the close of its container */
        for (;;) {
            if (depth == 0) {
                *out = p;
                return DS_JS_OK;
            }
            p = ds_js_ws(p, end);
            if (p >= end)
                goto bad;
            if (*p == ',') {
                p = ds_js_ws(p + 1, end);
                if (stack[depth - 1] == '[')
                    break;
                goto member;
            }
            if (*p != (stack[depth - 1] == '{' ? '}' : ']'))
                goto bad;
            p++;
            depth--;
        }
        continue;
    member:
        if (ds_js_string(p, end, NULL, 0, &len, &p) == DS_JS_EINVAL)
            goto bad;
        p = ds_js_ws(p, end);
        if (p >= end || *p != ':')
            goto bad;
        p = ds_js_ws(p + 1, end);
    }
bad:
    *out = p;
    return DS_JS_EINVAL;
}
