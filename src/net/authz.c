/* Client authorisation: tokens-file parser, role and scope checks, and the failure throttle. */
#include "net/authz.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ds_authz {
    struct ds_authz_entry *v;
    size_t n, cap;
};

const char *ds_authz_strerror(int rv)
{
    switch (rv) {
    case DS_AUTHZ_OK: return "ok";
    case DS_AUTHZ_EINVAL: return "invalid tokens file";
    case DS_AUTHZ_EFILE: return "tokens file not readable";
    case DS_AUTHZ_ENOMEM: return "out of memory";
    default: return "unknown error";
    }
}

/* ------------------------------------------------------------------ checks */

int ds_authz_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > DS_AUTHZ_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '@' || c == '-'))
            return 0;
    }
    return 1;
}

int ds_authz_has_role(unsigned roles, unsigned need)
{
    return (roles & need) == need;
}

const char *ds_authz_role_name(unsigned role)
{
    switch (role) {
    case DS_AUTHZ_READER: return "reader";
    case DS_AUTHZ_WRITER: return "writer";
    case DS_AUTHZ_ADMIN: return "admin";
    default: return "?";
    }
}

int ds_authz_in_scope(const char *scope, const char *name)
{
    return strncmp(name, scope, strlen(scope)) == 0;
}

/* ------------------------------------------------------------------ parser */

struct parse {
    const char *file;
    int line;
    char *err;
};

static int fail(struct parse *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct parse *p, const char *fmt, ...)
{
    int n = snprintf(p->err, DS_AUTHZ_ERR_MAX, "%.300s:%d: ", p->file, p->line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + n, DS_AUTHZ_ERR_MAX - (size_t)n, fmt, ap);
    va_end(ap);
    return DS_AUTHZ_EINVAL;
}

static int parse_roles(struct parse *p, const char *s, unsigned *out)
{
    static const struct {
        const char *name;
        unsigned bits; /* the role and the roles it implies */
    } names[] = {
        {"reader", DS_AUTHZ_READER},
        {"writer", DS_AUTHZ_READER | DS_AUTHZ_WRITER},
        {"admin", DS_AUTHZ_READER | DS_AUTHZ_WRITER | DS_AUTHZ_ADMIN},
    };
    *out = 0;
    while (1) {
        size_t n = strcspn(s, ",");
        size_t i = 0;
        while (i < 3 && !(strlen(names[i].name) == n && strncmp(s, names[i].name, n) == 0))
            i++;
        if (i == 3)
            return fail(p, "unknown role '%.*s' (roles are reader, writer, admin, "
                           "comma-separated)", (int)(n > 40 ? 40 : n), s);
        *out |= names[i].bits;
        if (!s[n])
            return 0;
        s += n + 1;
    }
}

static int parse_scope(struct parse *p, const char *s, char *out)
{
    if (strcmp(s, "*") == 0) {
        out[0] = 0;
        return 0;
    }
    if (strlen(s) > DS_AUTHZ_SCOPE_MAX)
        return fail(p, "scope longer than %d bytes", DS_AUTHZ_SCOPE_MAX);
    strcpy(out, s);
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int parse_hash(struct parse *p, const char *s, struct ds_authz_entry *e)
{
    if (strcmp(s, "-") == 0)
        return 0;
    if (strlen(s) != 64)
        return fail(p, "token hash must be 64 hex digits (SHA-256) or '-', not %zu characters",
                    strlen(s));
    for (size_t i = 0; i < 32; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return fail(p, "token hash has a character that is not a hex digit");
        e->hash[i] = (uint8_t)(hi << 4 | lo);
    }
    e->has_hash = 1;
    return 0;
}

/* Split line (modified in place) into at most 5 whitespace-separated fields. */
static size_t split(char *line, char **f)
{
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(line, " \t", &save); t && n < 5; t = strtok_r(NULL, " \t", &save))
        f[n++] = t;
    return n;
}

static int check_unique(struct parse *p, const struct ds_authz *a, const struct ds_authz_entry *e)
{
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->v[i].name, e->name) == 0)
            return fail(p, "identity '%s' is defined twice (first on line %d)", e->name,
                        a->v[i].line);
        if (e->has_hash && a->v[i].has_hash && memcmp(a->v[i].hash, e->hash, 32) == 0)
            return fail(p, "same token hash as identity '%s' (line %d): every token must be "
                           "different", a->v[i].name, a->v[i].line);
    }
    return 0;
}

static int parse_line(struct parse *p, struct ds_authz *a, char *line)
{
    char *f[5];
    size_t n = split(line, f);
    if (n == 0 || f[0][0] == '#')
        return 0;
    if (n != 4)
        return fail(p, "expected 4 fields (name roles scope sha256), found %s", n < 4 ? "fewer" :
                                                                                 "more");
    struct ds_authz_entry e;
    memset(&e, 0, sizeof e);
    e.line = p->line;
    if (!ds_authz_name_ok(f[0]))
        return fail(p, "name '%.80s' must be 1..%d of A-Z a-z 0-9 . _ @ -", f[0],
                    DS_AUTHZ_NAME_MAX);
    strcpy(e.name, f[0]);
    int rv;
    if ((rv = parse_roles(p, f[1], &e.roles)) || (rv = parse_scope(p, f[2], e.scope)) ||
        (rv = parse_hash(p, f[3], &e)) || (rv = check_unique(p, a, &e)))
        return rv;
    if (a->n == DS_AUTHZ_ENTRIES_MAX)
        return fail(p, "more than %d identities", DS_AUTHZ_ENTRIES_MAX);
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        struct ds_authz_entry *nv = realloc(a->v, cap * sizeof *nv);
        if (!nv)
            return DS_AUTHZ_ENOMEM;
        a->v = nv;
        a->cap = cap;
    }
    a->v[a->n++] = e;
    return 0;
}

/* Every byte of a line must be printable ASCII or a tab. */
static int line_bytes_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != '\t' && ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e))
            return 0;
    return 1;
}

int ds_authz_parse(const char *text, size_t len, const char *file, struct ds_authz **out,
                   char *err)
{
    struct parse p = {.file = file, .line = 0, .err = err};
    struct ds_authz *a = calloc(1, sizeof *a);
    if (!a)
        return DS_AUTHZ_ENOMEM;
    int rv = 0;
    size_t pos = 0;
    char line[DS_AUTHZ_LINE_MAX + 1];
    while (pos < len) {
        p.line++;
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
        size_t m = n && text[pos + n - 1] == '\r' ? n - 1 : n;
        if (m > DS_AUTHZ_LINE_MAX) {
            rv = fail(&p, "line longer than %d bytes", DS_AUTHZ_LINE_MAX);
            goto err;
        }
        if (!line_bytes_ok(text + pos, m)) {
            rv = fail(&p, "a byte that is not printable ASCII (control character or NUL)");
            goto err;
        }
        memcpy(line, text + pos, m);
        line[m] = 0;
        if ((rv = parse_line(&p, a, line)))
            goto err;
        pos += n + (nl != NULL);
    }
    if (a->n == 0) {
        rv = fail(&p, "the file defines no identity (a line is: name roles scope sha256)");
        goto err;
    }
    *out = a;
    return 0;
err:
    if (rv == DS_AUTHZ_ENOMEM)
        snprintf(err, DS_AUTHZ_ERR_MAX, "%.300s: out of memory", file);
    ds_authz_free(a);
    return rv;
}

int ds_authz_load(const char *path, struct ds_authz **out, char *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, DS_AUTHZ_ERR_MAX, "%.300s: cannot open: %s", path, strerror(errno));
        return DS_AUTHZ_EFILE;
    }
    size_t cap = (size_t)DS_AUTHZ_ENTRIES_MAX * 300, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        snprintf(err, DS_AUTHZ_ERR_MAX, "%.300s: out of memory", path);
        return DS_AUTHZ_ENOMEM;
    }
    n = fread(buf, 1, cap, f);
    int rd_err = ferror(f), more = !rd_err && fgetc(f) != EOF;
    fclose(f);
    int rv;
    if (rd_err) {
        snprintf(err, DS_AUTHZ_ERR_MAX, "%.300s: read error", path);
        rv = DS_AUTHZ_EFILE;
    } else if (more) {
        snprintf(err, DS_AUTHZ_ERR_MAX, "%.300s: larger than %zu bytes", path, cap);
        rv = DS_AUTHZ_EINVAL;
    } else {
        rv = ds_authz_parse(buf, n, path, out, err);
    }
    free(buf);
    return rv;
}

void ds_authz_free(struct ds_authz *a)
{
    if (!a)
        return;
    free(a->v);
    free(a);
}

size_t ds_authz_count(const struct ds_authz *a)
{
    return a->n;
}

/* ------------------------------------------------------------------ lookups */

const struct ds_authz_entry *ds_authz_by_token(const struct ds_authz *a, const uint8_t digest[32])
{
    const struct ds_authz_entry *found = NULL;
    for (size_t i = 0; i < a->n; i++) {
        volatile uint8_t diff = 0;
        for (size_t j = 0; j < 32; j++)
            diff |= (uint8_t)(a->v[i].hash[j] ^ digest[j]);
        /* every entry is compared in full, whatever matched before */
        if (diff == 0 && a->v[i].has_hash)
            found = &a->v[i];
    }
    return found;
}

const struct ds_authz_entry *ds_authz_by_name(const struct ds_authz *a, const char *name)
{
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i].name, name) == 0)
            return &a->v[i];
    return NULL;
}

/* ------------------------------------------------------------------ failure throttle */

struct slot {
    char addr[DS_AUTHZ_ADDR_MAX];
    uint32_t count;
    uint64_t last_ms; /* when count was last brought up to date */
};

struct ds_authz_throttle {
    struct slot *v;
    size_t n, used;
    uint32_t limit;
    uint64_t decay_ms;
};

int ds_authz_throttle_new(size_t slots, uint32_t limit, uint64_t decay_ms,
                          struct ds_authz_throttle **out)
{
    struct ds_authz_throttle *t = calloc(1, sizeof *t);
    if (!t || !(t->v = calloc(slots ? slots : 1, sizeof *t->v))) {
        free(t);
        return DS_AUTHZ_ENOMEM;
    }
    t->n = slots ? slots : 1;
    t->limit = limit ? limit : 1;
    t->decay_ms = decay_ms ? decay_ms : 1;
    *out = t;
    return 0;
}

void ds_authz_throttle_free(struct ds_authz_throttle *t)
{
    if (!t)
        return;
    free(t->v);
    free(t);
}

size_t ds_authz_throttle_used(const struct ds_authz_throttle *t)
{
    return t->used;
}

/* Leak the failures that decayed since the slot was last touched. */
static void leak(struct ds_authz_throttle *t, struct slot *s, uint64_t now_ms)
{
    if (now_ms <= s->last_ms)
        return;
    uint64_t gone = (now_ms - s->last_ms) / t->decay_ms;
    if (gone >= s->count) {
        s->count = 0;
        s->last_ms = now_ms;
    } else {
        s->count -= (uint32_t)gone;
        s->last_ms += gone * t->decay_ms;
    }
}

static struct slot *find(struct ds_authz_throttle *t, const char *addr)
{
    for (size_t i = 0; i < t->used; i++)
        if (strcmp(t->v[i].addr, addr) == 0)
            return &t->v[i];
    return NULL;
}

void ds_authz_throttle_fail(struct ds_authz_throttle *t, const char *addr, uint64_t now_ms)
{
    struct slot *s = find(t, addr);
    if (!s && t->used < t->n) {
        s = &t->v[t->used++];
        s->count = 0;
        s->last_ms = now_ms;
    } else if (!s) { /* full: replace the address with the fewest failures left */
        for (size_t i = 0; i < t->n; i++) {
            leak(t, &t->v[i], now_ms);
            if (!s || t->v[i].count < s->count)
                s = &t->v[i];
        }
        s->count = 0;
        s->last_ms = now_ms;
    }
    snprintf(s->addr, sizeof s->addr, "%s", addr);
    leak(t, s, now_ms);
    if (s->count == 0)
        s->last_ms = now_ms;
    if (s->count < UINT32_MAX)
        s->count++;
}

int ds_authz_throttle_blocked(struct ds_authz_throttle *t, const char *addr, uint64_t now_ms,
                              uint64_t *retry_ms)
{
    struct slot *s = find(t, addr);
    if (!s)
        return 0;
    leak(t, s, now_ms);
    if (s->count < t->limit)
        return 0;
    uint64_t since = now_ms > s->last_ms ? now_ms - s->last_ms : 0;
    *retry_ms = (uint64_t)(s->count - t->limit + 1) * t->decay_ms - since;
    return 1;
}
