/* Tokens file parser (every error names file:line), role and scope checks, token lookup, and the
 * bounded failure throttle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "net/authz.h"

/* any 64 hex digits stand for a token's SHA-256 here */
#define H1 "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define H2 "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"

static int parse(const char *text, struct ds_authz **out, char *err)
{
    return ds_authz_parse(text, strlen(text), "tokens", out, err);
}

/* The text must be refused with a message that starts with "tokens:<line>: " and contains want. */
static void refused(const char *text, int line, const char *want)
{
    struct ds_authz *a = NULL;
    char err[DS_AUTHZ_ERR_MAX] = "";
    char where[32];
    snprintf(where, sizeof where, "tokens:%d: ", line);
    CHECKF(parse(text, &a, err) == DS_AUTHZ_EINVAL, "accepted: %s", text);
    CHECKF(strncmp(err, where, strlen(where)) == 0, "'%s' does not start with '%s'", err, where);
    CHECKF(strstr(err, want) != NULL, "'%s' does not say '%s'", err, want);
    CHECK(a == NULL);
}

static void a_valid_file_gives_names_roles_scopes_and_hashes(void)
{
    struct ds_authz *a = NULL;
    char err[DS_AUTHZ_ERR_MAX];
    const char *text = "# name roles scope hash\n"
                       "\n"
                       "alice reader,writer orders/ " H1 "\r\n"
                       "ops\tadmin\t*\t-\n"
                       "  bob   reader   *   " H2;
    REQUIRE(parse(text, &a, err) == 0);
    CHECK(ds_authz_count(a) == 3);
    const struct ds_authz_entry *e = ds_authz_by_name(a, "alice");
    REQUIRE(e != NULL);
    CHECK(e->line == 3 && e->has_hash && strcmp(e->scope, "orders/") == 0);
    CHECK(e->hash[0] == 0x9f && e->hash[31] == 0x08);
    CHECK(ds_authz_has_role(e->roles, DS_AUTHZ_WRITER) && ds_authz_has_role(e->roles,
                                                                            DS_AUTHZ_READER));
    CHECK(!ds_authz_has_role(e->roles, DS_AUTHZ_ADMIN));
    e = ds_authz_by_name(a, "ops");
    REQUIRE(e != NULL);
    CHECK(!e->has_hash && e->scope[0] == 0);
    CHECK(ds_authz_has_role(e->roles, DS_AUTHZ_ADMIN) && ds_authz_has_role(e->roles, DS_AUTHZ_READER));
    CHECK(ds_authz_by_name(a, "carol") == NULL);
    ds_authz_free(a);
}

static void a_token_digest_finds_its_identity_and_nothing_else(void)
{
    struct ds_authz *a = NULL;
    char err[DS_AUTHZ_ERR_MAX];
    REQUIRE(parse("alice reader * " H1 "\nops admin * -\nbob reader * " H2 "\n", &a, err) == 0);
    uint8_t d[32];
    const struct ds_authz_entry *alice = ds_authz_by_name(a, "alice");
    memcpy(d, alice->hash, 32);
    CHECK(ds_authz_by_token(a, d) == alice);
    d[31] ^= 1;
    CHECK(ds_authz_by_token(a, d) == NULL);
    memset(d, 0, sizeof d); /* a certificate-only line's zero hash never matches */
    CHECK(ds_authz_by_token(a, d) == NULL);
    ds_authz_free(a);
}

static void roles_imply_the_lesser_ones_and_scopes_are_prefixes(void)
{
    struct ds_authz *a = NULL;
    char err[DS_AUTHZ_ERR_MAX];
    REQUIRE(parse("r reader * -\nw writer * -\n", &a, err) == 0);
    unsigned r = ds_authz_by_name(a, "r")->roles, w = ds_authz_by_name(a, "w")->roles;
    CHECK(ds_authz_has_role(r, DS_AUTHZ_READER) && !ds_authz_has_role(r, DS_AUTHZ_WRITER));
    CHECK(ds_authz_has_role(w, DS_AUTHZ_READER) && !ds_authz_has_role(w, DS_AUTHZ_ADMIN));
    CHECK(strcmp(ds_authz_role_name(DS_AUTHZ_WRITER), "writer") == 0);
    CHECK(strcmp(ds_authz_role_name(DS_AUTHZ_ADMIN), "admin") == 0);
    CHECK(strcmp(ds_authz_role_name(DS_AUTHZ_READER), "reader") == 0);
    CHECK(strcmp(ds_authz_role_name(0), "?") == 0);
    CHECK(ds_authz_in_scope("", "anything"));
    CHECK(ds_authz_in_scope("orders/", "orders/1"));
    CHECK(!ds_authz_in_scope("orders/", "orders"));
    CHECK(!ds_authz_in_scope("orders/", "billing/1"));
    ds_authz_free(a);
}

static void every_malformed_line_is_refused_with_its_line_number(void)
{
    refused("alice reader *\n", 1, "expected 4 fields");
    refused("# ok\nalice reader * - extra\n", 2, "expected 4 fields");
    refused("al/ice reader * -\n", 1, "name 'al/ice'");
    refused("a:b reader * -\n", 1, "name 'a:b'");
    refused("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa reader * -\n", 1,
            "must be 1..64");
    refused("alice root * -\n", 1, "unknown role 'root'");
    refused("alice reader, * -\n", 1, "unknown role ''");
    refused("alice reader,,writer * -\n", 1, "unknown role ''");
    char longscope[300];
    snprintf(longscope, sizeof longscope, "alice reader %0129d -\n", 0);
    refused(longscope, 1, "scope longer than 128");
    refused("alice reader * abc\n", 1, "64 hex digits");
    refused("alice reader * " "zz" H1 "\n" , 1, "64 hex digits");
    refused("alice reader * g" "f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n", 1,
            "not a hex digit");
    refused("alice reader * -\nalice writer * -\n", 2, "defined twice (first on line 1)");
    refused("alice reader * " H1 "\nbob reader * " H1 "\n", 2, "same token hash as identity "
                                                              "'alice' (line 1)");
    refused("alice reader * -\x01\n", 1, "not printable");
    refused("# only comments\n\n", 2, "defines no identity");
    refused("", 0, "defines no identity");
    char nul[] = "alice reader * -\nbob\0reader * -\n";
    struct ds_authz *a = NULL;
    char err[DS_AUTHZ_ERR_MAX];
    CHECK(ds_authz_parse(nul, sizeof nul - 1, "tokens", &a, err) == DS_AUTHZ_EINVAL);
    CHECKF(strstr(err, "tokens:2: ") == err, "%s", err);
    char *big = malloc(DS_AUTHZ_LINE_MAX + 40);
    REQUIRE(big);
    memset(big, 'a', DS_AUTHZ_LINE_MAX + 30);
    memcpy(big, "x reader * ", 11);
    big[DS_AUTHZ_LINE_MAX + 30] = 0;
    refused(big, 1, "line longer than 1024");
    free(big);
}

static void more_identities_than_the_limit_are_refused(void)
{
    size_t cap = (size_t)(DS_AUTHZ_ENTRIES_MAX + 1) * 24, n = 0;
    char *text = malloc(cap);
    REQUIRE(text);
    for (int i = 0; i <= DS_AUTHZ_ENTRIES_MAX; i++)
        n += (size_t)snprintf(text + n, cap - n, "u%d reader * -\n", i);
    struct ds_authz *a = NULL;
    char err[DS_AUTHZ_ERR_MAX];
    CHECK(ds_authz_parse(text, n, "tokens", &a, err) == DS_AUTHZ_EINVAL);
    CHECKF(strstr(err, "more than 10000 identities") != NULL, "%s", err);
    free(text);
}

static void load_reads_a_file_and_names_a_missing_one(void)
{
    char path[] = "/tmp/test_authz.XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    const char *text = "alice reader * -\nbob reader x\n";
    REQUIRE(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    struct ds_authz *a = NULL;
    char err[DS_AUTHZ_ERR_MAX], want[64];
    CHECK(ds_authz_load(path, &a, err) == DS_AUTHZ_EINVAL);
    snprintf(want, sizeof want, "%s:2: ", path);
    CHECKF(strncmp(err, want, strlen(want)) == 0, "%s", err);
    unlink(path);
    CHECK(ds_authz_load(path, &a, err) == DS_AUTHZ_EFILE);
    CHECKF(strstr(err, "cannot open") != NULL, "%s", err);
    CHECK(strcmp(ds_authz_strerror(DS_AUTHZ_EINVAL), "invalid tokens file") == 0);
    CHECK(ds_authz_name_ok("node-1.example@x") && !ds_authz_name_ok(""));
}

static void the_throttle_blocks_after_the_limit_and_forgives_with_time(void)
{
    struct ds_authz_throttle *t = NULL;
    REQUIRE(ds_authz_throttle_new(4, 3, 1000, &t) == 0);
    uint64_t retry = 0;
    for (int i = 0; i < 2; i++)
        ds_authz_throttle_fail(t, "10.0.0.1", 5000);
    CHECK(!ds_authz_throttle_blocked(t, "10.0.0.1", 5000, &retry));
    ds_authz_throttle_fail(t, "10.0.0.1", 5000);
    CHECK(ds_authz_throttle_blocked(t, "10.0.0.1", 5000, &retry));
    CHECKF(retry == 1000, "retry %llu", (unsigned long long)retry);
    CHECK(ds_authz_throttle_blocked(t, "10.0.0.1", 5400, &retry) && retry == 600);
    CHECK(!ds_authz_throttle_blocked(t, "10.0.0.2", 5400, &retry));
    CHECK(!ds_authz_throttle_blocked(t, "10.0.0.1", 6000, &retry));
    ds_authz_throttle_fail(t, "10.0.0.1", 6000); /* back at the limit */
    CHECK(ds_authz_throttle_blocked(t, "10.0.0.1", 6000, &retry));
    CHECK(!ds_authz_throttle_blocked(t, "10.0.0.1", 9000, &retry));
    ds_authz_throttle_free(t);
}

static void the_throttle_never_holds_more_addresses_than_its_slots(void)
{
    struct ds_authz_throttle *t = NULL;
    REQUIRE(ds_authz_throttle_new(8, 2, 1000, &t) == 0);
    ds_authz_throttle_fail(t, "attacker", 0);
    ds_authz_throttle_fail(t, "attacker", 0);
    ds_authz_throttle_fail(t, "attacker", 0);
    char addr[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(addr, sizeof addr, "10.1.%d.%d", i / 256, i % 256);
        ds_authz_throttle_fail(t, addr, 10);
        CHECK(ds_authz_throttle_used(t) <= 8);
    }
    uint64_t retry;
    /* the one with the most failures kept its slot: single failures were evicted first */
    CHECK(ds_authz_throttle_blocked(t, "attacker", 10, &retry));
    ds_authz_throttle_free(t);
}

int main(void)
{
    RUN(a_valid_file_gives_names_roles_scopes_and_hashes);
    RUN(a_token_digest_finds_its_identity_and_nothing_else);
    RUN(roles_imply_the_lesser_ones_and_scopes_are_prefixes);
    RUN(every_malformed_line_is_refused_with_its_line_number);
    RUN(more_identities_than_the_limit_are_refused);
    RUN(load_reads_a_file_and_names_a_missing_one);
    RUN(the_throttle_blocks_after_the_limit_and_forgives_with_time);
    RUN(the_throttle_never_holds_more_addresses_than_its_slots);
    return check_summary();
}
