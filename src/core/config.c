/* Node configuration: the key table, the INI loader (inih), environment and command-line overrides
 * and the cross-key validation done once at start. */
#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum key_type { T_STR, T_UINT, T_ENUM, T_PATH, T_ADDR, T_URL, T_PEERS, T_URLS, T_ADDRS };

struct key {
    const char *section;
    const char *name;
    enum key_type type;
    size_t offset;
    size_t size;        /* of the char array (strings) */
    uint64_t min, max;  /* T_UINT bounds */
    const char *const *choices; /* T_ENUM: NULL-terminated names; value = index (or enum_values) */
    const int *enum_values;
    const char *dflt;
};

static const char *const roles[] = {"lock", "queue", "cache", NULL};
static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const formats[] = {"logfmt", "json", NULL};
static const char *const tls_versions[] = {"1.2", "1.3", NULL};
static const int tls_version_values[] = {12, 13};
static const char *const client_auths[] = {"off", "optional", "require", NULL};
static const char *const write_policies[] = {"write-back", "write-through", NULL};

#define S(sec, nm, fld, t, d) {sec, nm, t, offsetof(struct ds_config, fld), \
                               sizeof(((struct ds_config *)0)->fld), 0, 0, NULL, NULL, d}
#define U(sec, nm, fld, lo, hi, d) {sec, nm, T_UINT, offsetof(struct ds_config, fld), 0, lo, hi, \
                                    NULL, NULL, d}
#define E(sec, nm, fld, ch, vals, d) {sec, nm, T_ENUM, offsetof(struct ds_config, fld), 0, 0, 0, \
                                      ch, vals, d}

/* The one table of keys.  dsyncd.example.ini in conf/ documents each of them. */
static const struct key keys[] = {
    S("node", "id", node_id, T_STR, "local"),
    E("node", "role", role, roles, NULL, ""),
    S("node", "listen", listen, T_ADDR, ""),
    S("node", "advertise_url", advertise_url, T_URL, ""),
    S("node", "data_dir", data_dir, T_PATH, "./dsyncd-data"),
    S("node", "cluster_name", cluster_name, T_STR, "dsyncd"),
    S("tls", "cert", tls_cert, T_PATH, ""),
    S("tls", "key", tls_key, T_PATH, ""),
    S("tls", "ca", tls_ca, T_PATH, ""),
    E("tls", "min_version", tls_min_version, tls_versions, tls_version_values, "1.2"),
    E("tls", "client_auth", client_auth, client_auths, NULL, "optional"),
    U("http", "max_body", max_body, 1024, 64ull << 20, "1048576"),
    U("http", "max_header_bytes", max_header_bytes, 1024, 1 << 20, "16384"),
    U("http", "max_headers", max_headers, 8, 1000, "64"),
    U("http", "max_connections", max_connections, 1, 1000000, "4096"),
    U("http", "idle_timeout_ms", idle_timeout_ms, 100, 3600000, "60000"),
    U("http", "header_timeout_ms", header_timeout_ms, 100, 600000, "10000"),
    U("http", "shutdown_grace_ms", shutdown_grace_ms, 0, 600000, "5000"),
    E("log", "level", log_level, levels, NULL, "info"),
    E("log", "format", log_format, formats, NULL, "logfmt"),
    S("log", "audit_file", audit_file, T_PATH, ""),
    S("auth", "tokens_file", auth_tokens_file, T_PATH, ""),
    U("auth", "max_failures", auth_max_failures, 1, 1000000, "10"),
    U("auth", "failure_decay_ms", auth_failure_decay_ms, 1, 3600000, "1000"),
    U("auth", "throttle_slots", auth_throttle_slots, 1, 1000000, "1024"),
    S("cluster", "peers", peers, T_PEERS, ""),
    S("cluster", "seeds", seeds, T_URLS, ""),
    S("cluster", "mac_key_file", mac_key_file, T_PATH, ""),
    U("raft", "election_min_ms", election_min_ms, 50, 60000, "300"),
    U("raft", "election_max_ms", election_max_ms, 50, 120000, "600"),
    U("raft", "heartbeat_ms", heartbeat_ms, 5, 10000, "60"),
    U("raft", "snapshot_entries", snapshot_entries, 16, 100000000, "20000"),
    U("lock", "clock_skew_ms", clock_skew_ms, 0, 60000, "100"),
    S("redis", "shards", redis_shards, T_ADDRS, ""),
    U("queue", "partitions", queue_partitions, 1, 1024, "8"),
    U("queue", "max_deliveries", queue_max_deliveries, 1, 1000, "5"),
    U("queue", "visibility_ms", queue_visibility_ms, 100, 43200000, "30000"),
    U("queue", "dedup_window_ms", queue_dedup_window_ms, 1000, 86400000, "300000"),
    U("queue", "housekeeping_ms", queue_housekeeping_ms, 50, 60000, "1000"),
    U("queue", "redis_timeout_ms", queue_redis_timeout_ms, 50, 60000, "2000"),
    U("cache", "lease_ms", cache_lease_ms, 200, 600000, "2000"),
    U("cache", "max_entries", cache_max_entries, 1, 100000000, "4096"),
    U("cache", "max_bytes", cache_max_bytes, 4096, 1ull << 40, "67108864"),
    E("cache", "write_policy", cache_write_policy, write_policies, NULL, "write-back"),
    U("cache", "flush_ms", cache_flush_ms, 10, 600000, "500"),
    U("cache", "op_timeout_ms", cache_op_timeout_ms, 100, 600000, "5000"),
    U("cache", "redis_timeout_ms", cache_redis_timeout_ms, 50, 60000, "2000"),
};
#define NKEYS (sizeof keys / sizeof keys[0])

_Static_assert(sizeof keys / sizeof keys[0] <= DS_CONFIG_KEYS_MAX, "raise DS_CONFIG_KEYS_MAX");

static const char *const source_names[] = {"default", "file", "env", "cli"};

const char *ds_config_strerror(int rv)
{
    switch (rv) {
    case DS_CONFIG_OK: return "ok";
    case DS_CONFIG_EINVAL: return "invalid configuration";
    case DS_CONFIG_EFILE: return "file not readable";
    default: return "unknown error";
    }
}

/* ------------------------------------------------------------------ value parsing */

static int parse_uint(const char *v, uint64_t *out)
{
    if (!isdigit((unsigned char)v[0]))
        return -1;
    errno = 0;
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end)
        return -1;
    *out = x;
    return 0;
}

int ds_config_list_next(const char **p, char *item, size_t len)
{
    const char *s = *p;
    while (*s == ' ' || *s == ',')
        s++;
    size_t n = strcspn(s, ", ");
    *p = s + n;
    if (n == 0)
        return 0;
    if (n >= len)
        return -1;
    memcpy(item, s, n);
    item[n] = 0;
    return 1;
}

int ds_config_split_addr(const char *addr, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr)
        return -1;
    size_t hl = (size_t)(colon - addr);
    if (addr[0] == '[') { /* [v6]:port */
        if (hl < 3 || addr[hl - 1] != ']')
            return -1;
        addr++;
        hl -= 2;
    }
    if (hl >= hostlen)
        return -1;
    uint64_t p;
    if (parse_uint(colon + 1, &p) || p == 0 || p > 65535)
        return -1;
    for (size_t i = 0; i < hl; i++)
        if (!(isalnum((unsigned char)addr[i]) || strchr(".-_:", addr[i])))
            return -1;
    memcpy(host, addr, hl);
    host[hl] = 0;
    *port = (uint16_t)p;
    return 0;
}

static int check_addr(const char *v)
{
    char host[256];
    uint16_t port;
    return ds_config_split_addr(v, host, sizeof host, &port);
}

/* https://host:port with nothing after but an optional "/" */
static int check_url(const char *v)
{
    if (strncmp(v, "https://", 8) != 0)
        return -1;
    char buf[256];
    size_t n = strlen(v + 8);
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, v + 8, n + 1);
    if (buf[n - 1] == '/')
        buf[n - 1] = 0;
    return check_addr(buf);
}

/* Comma-separated list; each item checked by `check` (items may be padded with spaces). */
static int check_list(const char *v, int (*check)(const char *), const char **bad)
{
    char item[300];
    const char *p = v;
    while (*p) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m && p[m - 1] == ' ')
            m--;
        if (m == 0 || m >= sizeof item) {
            *bad = p;
            return -1;
        }
        memcpy(item, p, m);
        item[m] = 0;
        if (check(item)) {
            *bad = p;
            return -1;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    return 0;
}

/* id=https://host:port */
static int check_peer(const char *v)
{
    const char *eq = strchr(v, '=');
    if (!eq || eq == v || (size_t)(eq - v) >= 64)
        return -1;
    for (const char *p = v; p < eq; p++)
        if (!(isalnum((unsigned char)*p) || strchr("-_.", *p)))
            return -1;
    return check_url(eq + 1);
}

static int check_id(const char *v)
{
    if (!*v)
        return -1;
    for (const char *p = v; *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr("-_.", *p)))
            return -1;
    return 0;
}

/* Set key k from value v.  why receives the reason on failure. */
static int set_value(struct ds_config *c, const struct key *k, const char *v, const char **why)
{
    char *base = (char *)c + k->offset;
    const char *bad = NULL;
    switch (k->type) {
    case T_UINT: {
        uint64_t x;
        if (parse_uint(v, &x)) {
            *why = "not a whole number";
            return -1;
        }
        if (x < k->min || x > k->max) {
            *why = "out of range";
            return -1;
        }
        *(uint64_t *)(void *)base = x;
        return 0;
    }
    case T_ENUM:
        for (int i = 0; k->choices[i]; i++) {
            if (strcmp(v, k->choices[i]) == 0) {
                if (k->offset == offsetof(struct ds_config, role)) {
                    snprintf(c->role, sizeof c->role, "%s", v);
                } else {
                    *(int *)(void *)base = k->enum_values ? k->enum_values[i] : i;
                }
                return 0;
            }
        }
        if (!*v && k->offset == offsetof(struct ds_config, role)) {
            c->role[0] = 0;
            return 0;
        }
        *why = "not one of the allowed values";
        return -1;
    default:
        break;
    }
    if (strlen(v) >= k->size) {
        *why = "too long";
        return -1;
    }
    if (*v) {
        int bad_value = 0;
        switch (k->type) {
        case T_ADDR: bad_value = check_addr(v); break;
        case T_URL: bad_value = check_url(v); break;
        case T_PEERS: bad_value = check_list(v, check_peer, &bad); break;
        case T_URLS: bad_value = check_list(v, check_url, &bad); break;
        case T_ADDRS: bad_value = check_list(v, check_addr, &bad); break;
        case T_STR:
            bad_value = (k->offset == offsetof(struct ds_config, node_id) ||
                         k->offset == offsetof(struct ds_config, cluster_name)) && check_id(v);
            break;
        default: break;
        }
        if (bad_value) {
            switch (k->type) {
            case T_ADDR: *why = "expected host:port"; break;
            case T_URL: *why = "expected https://host:port"; break;
            case T_PEERS: *why = "expected id=https://host:port,... (comma-separated)"; break;
            case T_URLS: *why = "expected https://host:port,... (comma-separated)"; break;
            case T_ADDRS: *why = "expected host:port,... (comma-separated)"; break;
            default: *why = "only letters, digits, '-', '_' and '.' are allowed"; break;
            }
            return -1;
        }
    }
    memcpy(base, v, strlen(v) + 1);
    return 0;
}

static const struct key *find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static int section_known(const char *section)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].section, section) == 0)
            return 1;
    return 0;
}

static void format_allowed(const struct key *k, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = 0;
    if (k->type == T_UINT) {
        snprintf(buf, len, " (allowed: %" PRIu64 "..%" PRIu64 ")", k->min, k->max);
        return;
    }
    if (k->type != T_ENUM)
        return;
    used += (size_t)snprintf(buf, len, " (allowed:");
    for (int i = 0; k->choices[i] && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, " %s", k->choices[i]);
    if (used < len)
        snprintf(buf + used, len - used, ")");
}

void ds_config_defaults(struct ds_config *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NKEYS; i++) {
        const char *why;
        int rv = set_value(c, &keys[i], keys[i].dflt, &why);
        (void)rv;
        /* Defaults are part of the program: a bad one is a programmer error. */
        if (rv) {
            fprintf(stderr, "bad default for [%s] %s\n", keys[i].section, keys[i].name);
            abort();
        }
    }
}

/* Common path for every source: find the key, set it, record its source; message on failure. */
static int set_from(struct ds_config *c, const char *section, const char *name, const char *value,
                    enum ds_config_source src, const char *where, int line, char *err)
{
    const struct key *k = find_key(section, name);
    if (!k) {
        if (!section_known(section))
            snprintf(err, DS_CONFIG_ERR_MAX, "%s: unknown section [%s]", where, section);
        else
            snprintf(err, DS_CONFIG_ERR_MAX, "%s: unknown key '%s' in section [%s]", where, name,
                     section);
        return DS_CONFIG_EINVAL;
    }
    const char *why = "invalid";
    if (set_value(c, k, value, &why)) {
        char allowed[160];
        format_allowed(k, allowed, sizeof allowed);
        snprintf(err, DS_CONFIG_ERR_MAX, "%s: [%s] %s = '%.200s': %s%s", where, section, name,
                 value, why, allowed);
        return DS_CONFIG_EINVAL;
    }
    size_t idx = (size_t)(k - keys);
    c->source[idx] = (unsigned char)src;
    c->line[idx] = line;
    return DS_CONFIG_OK;
}

/* ------------------------------------------------------------------ INI file */

struct ini_ctx {
    struct ds_config *c;
    FILE *f;
    int lineno;
    int rv;
    char *err;
    char seen[DS_CONFIG_KEYS_MAX];
};

static char *read_line(char *str, int num, void *stream)
{
    struct ini_ctx *x = stream;
    char *r = fgets(str, num, x->f);
    if (r) {
        size_t n = strlen(r);
        if (n && r[n - 1] == '\n')
            x->lineno++;
        else if (!feof(x->f) && x->rv == DS_CONFIG_OK) {
            snprintf(x->err, DS_CONFIG_ERR_MAX, "%s:%d: line longer than %d characters",
                     x->c->file, x->lineno + 1, num - 2);
            x->rv = DS_CONFIG_EINVAL;
        }
    }
    return r;
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    struct ini_ctx *x = user;
    if (x->rv != DS_CONFIG_OK)
        return 0;
    char where[DS_CONFIG_PATH_MAX + 32];
    snprintf(where, sizeof where, "%s:%d", x->c->file, x->lineno);
    if (!*section) {
        snprintf(x->err, DS_CONFIG_ERR_MAX, "%s: key '%s' outside a section", where, name);
        x->rv = DS_CONFIG_EINVAL;
        return 0;
    }
    const struct key *k = find_key(section, name);
    if (k && x->seen[k - keys]) {
        snprintf(x->err, DS_CONFIG_ERR_MAX, "%s: [%s] %s given twice (first on line %d)", where,
                 section, name, x->c->line[k - keys]);
        x->rv = DS_CONFIG_EINVAL;
        return 0;
    }
    x->rv = set_from(x->c, section, name, value, DS_SRC_FILE, where, x->lineno, x->err);
    if (x->rv == DS_CONFIG_OK && k)
        x->seen[k - keys] = 1;
    return x->rv == DS_CONFIG_OK;
}

int ds_config_load_file(struct ds_config *c, const char *path, char *err)
{
    if (strlen(path) >= sizeof c->file) {
        snprintf(err, DS_CONFIG_ERR_MAX, "%.100s...: path too long", path);
        return DS_CONFIG_EFILE;
    }
    snprintf(c->file, sizeof c->file, "%s", path);
    struct ini_ctx x = {.c = c, .err = err, .rv = DS_CONFIG_OK};
    x.f = fopen(path, "r");
    if (!x.f) {
        snprintf(err, DS_CONFIG_ERR_MAX, "%s: cannot open: %s", path, strerror(errno));
        return DS_CONFIG_EFILE;
    }
    int line = ini_parse_stream(read_line, &x, on_key, &x);
    fclose(x.f);
    if (x.rv != DS_CONFIG_OK)
        return x.rv;
    if (line != 0) {
        snprintf(err, DS_CONFIG_ERR_MAX, "%s:%d: syntax error (expected [section] or key = value)",
                 path, line);
        return DS_CONFIG_EINVAL;
    }
    return DS_CONFIG_OK;
}

/* ------------------------------------------------------------------ environment, command line */

int ds_config_load_env(struct ds_config *c, const char *(*getenv_fn)(const char *), char *err)
{
    char name[96];
    for (size_t i = 0; i < NKEYS; i++) {
        int n = snprintf(name, sizeof name, "DSYNCD_%s_%s", keys[i].section, keys[i].name);
        for (int j = 0; j < n; j++)
            name[j] = (char)toupper((unsigned char)name[j]);
        const char *v = getenv_fn(name);
        if (!v)
            continue;
        char where[128];
        snprintf(where, sizeof where, "environment %s", name);
        int rv = set_from(c, keys[i].section, keys[i].name, v, DS_SRC_ENV, where, 0, err);
        if (rv)
            return rv;
    }
    const char *port = getenv_fn("INTERNAL_PORT");
    if (port && *port) {
        char host[128] = "0.0.0.0", addr[160];
        uint16_t old;
        if (c->listen[0])
            ds_config_split_addr(c->listen, host, sizeof host, &old);
        snprintf(addr, sizeof addr, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
        int rv = set_from(c, "node", "listen", addr, DS_SRC_ENV, "environment INTERNAL_PORT", 0,
                          err);
        if (rv)
            return rv;
    }
    const char *key = getenv_fn("SHARED_MAC_KEY");
    if (key && *key) {
        if (strlen(key) >= sizeof c->mac_key) {
            snprintf(err, DS_CONFIG_ERR_MAX, "environment SHARED_MAC_KEY: longer than %zu bytes",
                     sizeof c->mac_key - 1);
            return DS_CONFIG_EINVAL;
        }
        snprintf(c->mac_key, sizeof c->mac_key, "%s", key);
    }
    return DS_CONFIG_OK;
}

int ds_config_set_cli(struct ds_config *c, const char *section, const char *key,
                      const char *value, const char *opt, char *err)
{
    return set_from(c, section, key, value, DS_SRC_CLI, opt, 0, err);
}

/* ------------------------------------------------------------------ validation */

void ds_config_where(const struct ds_config *c, const char *section, const char *name, char *buf,
                     size_t len)
{
    const struct key *k = find_key(section, name);
    size_t i = (size_t)(k - keys);
    if (c->source[i] == DS_SRC_FILE)
        snprintf(buf, len, "%s:%d: [%s] %s", c->file, c->line[i], section, name);
    else
        snprintf(buf, len, "[%s] %s (from %s)", section, name, source_names[c->source[i]]);
}

static int check_readable(const struct ds_config *c, const char *section, const char *name,
                          const char *path, char *err)
{
    if (!*path || access(path, R_OK) == 0)
        return DS_CONFIG_OK;
    char where[DS_CONFIG_PATH_MAX + 64];
    ds_config_where(c, section, name, where, sizeof where);
    snprintf(err, DS_CONFIG_ERR_MAX, "%s = '%s': cannot read: %s", where, path, strerror(errno));
    return DS_CONFIG_EFILE;
}

static int read_mac_key_file(struct ds_config *c, char *err)
{
    char where[DS_CONFIG_PATH_MAX + 64];
    ds_config_where(c, "cluster", "mac_key_file", where, sizeof where);
    FILE *f = fopen(c->mac_key_file, "r");
    if (!f) {
        snprintf(err, DS_CONFIG_ERR_MAX, "%s = '%s': cannot read: %s", where, c->mac_key_file,
                 strerror(errno));
        return DS_CONFIG_EFILE;
    }
    size_t n = fread(c->mac_key, 1, sizeof c->mac_key - 1, f);
    int more = fgetc(f) != EOF;
    fclose(f);
    if (more) {
        snprintf(err, DS_CONFIG_ERR_MAX, "%s = '%s': key longer than %zu bytes", where,
                 c->mac_key_file, sizeof c->mac_key - 1);
        return DS_CONFIG_EINVAL;
    }
    while (n && (c->mac_key[n - 1] == '\n' || c->mac_key[n - 1] == '\r'))
        n--;
    c->mac_key[n] = 0;
    return DS_CONFIG_OK;
}

static const uint16_t default_ports[] = {8001, 9101, 10001};

int ds_config_finish(struct ds_config *c, char *err)
{
    const char *in = c->file[0] ? c->file : "command line";
    int role = -1;
    for (int i = 0; roles[i]; i++)
        if (strcmp(c->role, roles[i]) == 0)
            role = i;
    if (role < 0) {
        snprintf(err, DS_CONFIG_ERR_MAX,
                 "%s: no role: set [node] role = lock|queue|cache or pass --role", in);
        return DS_CONFIG_EINVAL;
    }
    if (!c->listen[0])
        snprintf(c->listen, sizeof c->listen, "127.0.0.1:%u", default_ports[role]);
    if (!c->advertise_url[0]) {
        char host[128];
        uint16_t port;
        ds_config_split_addr(c->listen, host, sizeof host, &port);
        if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
            snprintf(host, sizeof host, "localhost");
        snprintf(c->advertise_url, sizeof c->advertise_url,
                 strchr(host, ':') ? "https://[%s]:%u" : "https://%s:%u", host, port);
    }
    if (!c->tls_cert[0] != !c->tls_key[0]) {
        char where[DS_CONFIG_PATH_MAX + 64];
        ds_config_where(c, "tls", c->tls_cert[0] ? "cert" : "key", where, sizeof where);
        snprintf(err, DS_CONFIG_ERR_MAX, "%s: [tls] cert and key must be given together", where);
        return DS_CONFIG_EINVAL;
    }
    int rv;
    if ((rv = check_readable(c, "tls", "cert", c->tls_cert, err)) ||
        (rv = check_readable(c, "tls", "key", c->tls_key, err)) ||
        (rv = check_readable(c, "tls", "ca", c->tls_ca, err)) ||
        (rv = check_readable(c, "auth", "tokens_file", c->auth_tokens_file, err)))
        return rv;
    if (c->client_auth == DS_CLIENT_AUTH_REQUIRE && !c->tls_ca[0]) {
        char where[DS_CONFIG_PATH_MAX + 64];
        ds_config_where(c, "tls", "client_auth", where, sizeof where);
        snprintf(err, DS_CONFIG_ERR_MAX, "%s = require needs [tls] ca", where);
        return DS_CONFIG_EINVAL;
    }
    if (c->election_max_ms < c->election_min_ms || c->heartbeat_ms * 2 > c->election_min_ms) {
        char where[DS_CONFIG_PATH_MAX + 64];
        ds_config_where(c, "raft", "election_min_ms", where, sizeof where);
        snprintf(err, DS_CONFIG_ERR_MAX,
                 "%s: [raft] needs heartbeat_ms * 2 <= election_min_ms <= election_max_ms "
                 "(have %llu, %llu, %llu)",
                 where, (unsigned long long)c->heartbeat_ms, (unsigned long long)c->election_min_ms,
                 (unsigned long long)c->election_max_ms);
        return DS_CONFIG_EINVAL;
    }
    if (c->mac_key_file[0] && !c->mac_key[0] && (rv = read_mac_key_file(c, err)))
        return rv;
    if ((c->peers[0] || c->seeds[0]) && strlen(c->mac_key) < 16) {
        char where[DS_CONFIG_PATH_MAX + 64];
        ds_config_where(c, "cluster", c->peers[0] ? "peers" : "seeds", where, sizeof where);
        snprintf(err, DS_CONFIG_ERR_MAX,
                 "%s is set but the shared MAC key is %s: set SHARED_MAC_KEY (at least 16 "
                 "bytes) or [cluster] mac_key_file",
                 where, c->mac_key[0] ? "shorter than 16 bytes" : "missing");
        return DS_CONFIG_EINVAL;
    }
    return DS_CONFIG_OK;
}

size_t ds_config_describe(const struct ds_config *c, char *buf, size_t len)
{
    size_t used = 0;
#define OUT(...)                                                                     \
    do {                                                                             \
        int n_ = snprintf(buf + (used < len ? used : len), used < len ? len - used : 0, \
                          __VA_ARGS__);                                              \
        used += n_ > 0 ? (size_t)n_ : 0;                                             \
    } while (0)
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        const char *base = (const char *)c + k->offset;
        OUT("[%s] %s = ", k->section, k->name);
        if (k->type == T_UINT) {
            OUT("%" PRIu64, *(const uint64_t *)(const void *)base);
        } else if (k->type == T_ENUM && k->offset != offsetof(struct ds_config, role)) {
            int v = *(const int *)(const void *)base;
            for (int j = 0; k->choices[j]; j++)
                if ((k->enum_values ? k->enum_values[j] : j) == v)
                    OUT("%s", k->choices[j]);
        } else {
            OUT("%s", base);
        }
        OUT("  (%s)\n", source_names[c->source[i]]);
    }
    OUT("shared MAC key: %s\n", c->mac_key[0] ? "set" : "not set");
#undef OUT
    return used;
}
