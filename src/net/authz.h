/* Client authorisation: the tokens file (identities with roles, a name scope and the SHA-256 of a
 * bearer token), role and scope checks, and the bounded table that slows down addresses that keep
 * presenting bad credentials.  Pure: hashing the presented token is the caller's job.
 *
 * Tokens file, one identity per line, four fields separated by spaces or tabs:
 *
 *     # name     roles            scope     sha256-of-token (64 hex digits) or -
 *     alice      reader,writer    orders/   9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
 *     ops        admin            *         -
 *
 * - name: 1..DS_AUTHZ_NAME_MAX of [A-Za-z0-9._@-], unique in the file.  A client certificate
 *   signed by the cluster CA whose subject CN equals a name gets that line's roles and scope.
 * - roles: comma-separated reader, writer, admin.  admin implies writer, writer implies reader.
 * - scope: '*' for every name, else a prefix (1..DS_AUTHZ_SCOPE_MAX printable bytes) that every
 *   resource, queue or key the identity touches must start with.
 * - token hash: lowercase or uppercase hex SHA-256 of the bearer token (the token itself is never
 *   stored), unique in the file; '-' means the identity can only present a client certificate.
 * Blank lines and lines starting with '#' are ignored. */
#ifndef DS_NET_AUTHZ_H
#define DS_NET_AUTHZ_H

#include <stddef.h>
#include <stdint.h>

#define DS_AUTHZ_NAME_MAX 64
#define DS_AUTHZ_SCOPE_MAX 128
#define DS_AUTHZ_LINE_MAX 1024
#define DS_AUTHZ_ENTRIES_MAX 10000
#define DS_AUTHZ_ERR_MAX 600
#define DS_AUTHZ_ADDR_MAX 48

enum ds_authz_err {
    DS_AUTHZ_OK = 0,
    DS_AUTHZ_EINVAL = 1, /* the file is malformed; the message names file:line */
    DS_AUTHZ_EFILE = 2,  /* the file cannot be read */
    DS_AUTHZ_ENOMEM = 3,
};

enum ds_authz_role {
    DS_AUTHZ_READER = 1 << 0,
    DS_AUTHZ_WRITER = 1 << 1,
    DS_AUTHZ_ADMIN = 1 << 2,
};

struct ds_authz_entry {
    char name[DS_AUTHZ_NAME_MAX + 1];
    unsigned roles;                     /* enum ds_authz_role bits, implied ones included */
    char scope[DS_AUTHZ_SCOPE_MAX + 1]; /* "" = every name */
    int has_hash;
    uint8_t hash[32];
    int line;
};

struct ds_authz;

/* Parse the text of a tokens file (len bytes; `file` names it in messages).  On success *out owns
 * the table (free with ds_authz_free); on error `err` (DS_AUTHZ_ERR_MAX bytes) says
 * "file:line: what is wrong". */
int ds_authz_parse(const char *text, size_t len, const char *file, struct ds_authz **out,
                   char *err);
/* Read and parse the file at path. */
int ds_authz_load(const char *path, struct ds_authz **out, char *err);
void ds_authz_free(struct ds_authz *a);
size_t ds_authz_count(const struct ds_authz *a);

/* The identity whose token hashes to digest, comparing every entry in constant time; NULL if
 * none.  The entry is borrowed from a and lives as long as a. */
const struct ds_authz_entry *ds_authz_by_token(const struct ds_authz *a, const uint8_t digest[32]);
/* The identity called name (a certificate CN or a forwarded identity); NULL if none. */
const struct ds_authz_entry *ds_authz_by_name(const struct ds_authz *a, const char *name);

/* 1 when roles (with their implications) include `need` (one enum ds_authz_role). */
int ds_authz_has_role(unsigned roles, unsigned need);
const char *ds_authz_role_name(unsigned role);
/* 1 when name is inside scope ("" = everything). */
int ds_authz_in_scope(const char *scope, const char *name);
/* 1 when s is a valid identity name. */
int ds_authz_name_ok(const char *s);
const char *ds_authz_strerror(int rv);

/* ------------------------------------------------------------------ failure throttle
 *
 * A fixed table of `slots` source addresses, each with a failure count that leaks one failure
 * every decay_ms (a leaky bucket).  An address with `limit` or more failures is blocked until
 * the count leaks below the limit.  When the table is full a new address replaces the entry with
 * the fewest failures, so memory never grows with the number of addresses. */
struct ds_authz_throttle;

int ds_authz_throttle_new(size_t slots, uint32_t limit, uint64_t decay_ms,
                          struct ds_authz_throttle **out);
void ds_authz_throttle_free(struct ds_authz_throttle *t);
/* Count one failure from addr at now_ms. */
void ds_authz_throttle_fail(struct ds_authz_throttle *t, const char *addr, uint64_t now_ms);
/* 1 when addr is blocked at now_ms (with *retry_ms: how long until it is not), else 0. */
int ds_authz_throttle_blocked(struct ds_authz_throttle *t, const char *addr, uint64_t now_ms,
                              uint64_t *retry_ms);
/* Slots in use (at most `slots`). */
size_t ds_authz_throttle_used(const struct ds_authz_throttle *t);

#endif
