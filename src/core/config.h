/* Node configuration: one table of keys (section, name, type, default, validator) filled from
 * defaults, the INI file, the environment and the command line, in that order of precedence. */
#ifndef DS_CORE_CONFIG_H
#define DS_CORE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define DS_CONFIG_PATH_MAX 512
#define DS_CONFIG_LIST_MAX 1024
#define DS_CONFIG_ERR_MAX 512
#define DS_CONFIG_KEYS_MAX 64

enum ds_config_err {
    DS_CONFIG_OK = 0,
    DS_CONFIG_EINVAL = 1, /* a value, key or section is wrong; the message says which */
    DS_CONFIG_EFILE = 2,  /* the file (or a file it names) cannot be read */
};

enum ds_log_level { DS_LOG_DEBUG = 0, DS_LOG_INFO, DS_LOG_WARN, DS_LOG_ERROR };
enum ds_log_format { DS_LOG_LOGFMT = 0, DS_LOG_JSON };
enum ds_client_auth { DS_CLIENT_AUTH_OFF = 0, DS_CLIENT_AUTH_OPTIONAL, DS_CLIENT_AUTH_REQUIRE };
enum ds_cache_write_policy { DS_CACHE_WRITE_BACK = 0, DS_CACHE_WRITE_THROUGH };

struct ds_config {
    char file[DS_CONFIG_PATH_MAX]; /* INI file the values came from, "" for the embedded default */

    /* [node] */
    char node_id[64];
    char role[16];
    char listen[128];        /* host:port */
    char advertise_url[256]; /* how peers reach this node; derived from listen when empty */
    char data_dir[DS_CONFIG_PATH_MAX];
    char cluster_name[64];

    /* [tls] */
    char tls_cert[DS_CONFIG_PATH_MAX];
    char tls_key[DS_CONFIG_PATH_MAX];
    char tls_ca[DS_CONFIG_PATH_MAX];
    int tls_min_version; /* 12 or 13 */
    int client_auth;     /* enum ds_client_auth */

    /* [http] */
    uint64_t max_body;
    uint64_t max_header_bytes;
    uint64_t max_headers;
    uint64_t max_connections;
    uint64_t idle_timeout_ms;
    uint64_t header_timeout_ms;
    uint64_t shutdown_grace_ms;

    /* [log] */
    int log_level;  /* enum ds_log_level */
    int log_format; /* enum ds_log_format */
    char audit_file[DS_CONFIG_PATH_MAX];

    /* [auth] client authentication (net/authz.h) */
    char auth_tokens_file[DS_CONFIG_PATH_MAX]; /* "" = client auth off */
    uint64_t auth_max_failures;     /* failures from one address before it gets 429 */
    uint64_t auth_failure_decay_ms; /* one failure is forgiven per this many ms */
    uint64_t auth_throttle_slots;   /* addresses the failure throttle remembers */

    /* [cluster] */
    char peers[DS_CONFIG_LIST_MAX]; /* id=https://host:port,... (lock role: Raft voters) */
    char seeds[DS_CONFIG_LIST_MAX]; /* https://host:port,... (queue/cache roles: gossip seeds) */
    char mac_key_file[DS_CONFIG_PATH_MAX];
    char mac_key[256]; /* from SHARED_MAC_KEY or mac_key_file; never from the INI file itself */

    /* [raft] (lock role) */
    uint64_t election_min_ms;
    uint64_t election_max_ms;
    uint64_t heartbeat_ms;
    uint64_t snapshot_entries;

    /* [lock] */
    uint64_t clock_skew_ms;

    /* [redis] */
    char redis_shards[DS_CONFIG_LIST_MAX]; /* host:port,... */

    /* [queue] */
    uint64_t queue_partitions;      /* partitions per queue */
    uint64_t queue_max_deliveries;  /* deliveries before a message moves to <queue>.dlq */
    uint64_t queue_visibility_ms;   /* default visibility timeout of a consume */
    uint64_t queue_dedup_window_ms; /* how long a dedup_id suppresses duplicates */
    uint64_t queue_housekeeping_ms; /* period of redelivery, dead-lettering and trimming */
    uint64_t queue_redis_timeout_ms; /* bound on every Redis command and connection attempt */

    /* [cache] */
    uint64_t cache_lease_ms;       /* lease term of every copy (MESI + leases) */
    uint64_t cache_max_entries;    /* LRU: lines per node */
    uint64_t cache_max_bytes;      /* LRU: key + value bytes per node */
    int cache_write_policy;        /* enum ds_cache_write_policy */
    uint64_t cache_flush_ms;       /* write-back: dirty lines are flushed at most this late */
    uint64_t cache_op_timeout_ms;  /* a client operation answers 503 after this long */
    uint64_t cache_redis_timeout_ms; /* bound on every Redis command (main memory) */

    /* per key of the table: where its value came from and its INI line (0 if not from the file) */
    unsigned char source[DS_CONFIG_KEYS_MAX];
    int line[DS_CONFIG_KEYS_MAX];
};

/* Where a value came from, for error messages and --check-config. */
enum ds_config_source { DS_SRC_DEFAULT = 0, DS_SRC_FILE, DS_SRC_ENV, DS_SRC_CLI };

/* Reset `c` to the built-in defaults (never fails). */
void ds_config_defaults(struct ds_config *c);

/* Load the INI file at `path` over `c`.  Unknown sections or keys, bad values and lines outside a
 * section are errors.  On error `err` (DS_CONFIG_ERR_MAX bytes) names file, line, key and reason. */
int ds_config_load_file(struct ds_config *c, const char *path, char *err);

/* Apply the environment: DSYNCD_<SECTION>_<KEY> for every key, plus the deployment's names
 * SHARED_MAC_KEY (the MAC key) and INTERNAL_PORT (the port of [node] listen).  `getenv_fn` is
 * injected so tests can pass a fake environment (use getenv in production). */
int ds_config_load_env(struct ds_config *c, const char *(*getenv_fn)(const char *), char *err);

/* Set one key from the command line (`opt` names the option in error messages). */
int ds_config_set_cli(struct ds_config *c, const char *section, const char *key,
                      const char *value, const char *opt, char *err);

/* Cross-key checks and file checks once every source is applied: role present, certificate/key
 * readable and paired, MAC key present and >= 16 bytes when peers or seeds are set, derived values
 * (advertise_url).  Reads mac_key_file into mac_key. */
int ds_config_finish(struct ds_config *c, char *err);

/* Write every key as "[section] key = value (source)" lines into buf (for --check-config); the MAC
 * key is shown as its length only.  Returns bytes that would be written, like snprintf. */
size_t ds_config_describe(const struct ds_config *c, char *buf, size_t len);

/* "file:line: [section] key" when the key came from the INI file, else "[section] key (from
 * env|cli|default)", into buf: where to point a user at in an error about that key's value. */
void ds_config_where(const struct ds_config *c, const char *section, const char *name, char *buf,
                     size_t len);

/* Next item of a list value such as [redis] shards ("a:1, b:2"): copies it into item (len bytes)
 * and advances *p past it.  Returns 1 with an item, 0 at the end, -1 when the item does not fit. */
int ds_config_list_next(const char **p, char *item, size_t len);

/* Port of "host:port" (0 when malformed) and the host part copied into host (hostlen bytes). */
int ds_config_split_addr(const char *addr, char *host, size_t hostlen, uint16_t *port);

const char *ds_config_strerror(int rv);

#endif
