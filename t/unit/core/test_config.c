/* Configuration: defaults, every error path of the INI loader, environment and command-line
 * precedence, and the cross-key checks of ds_config_finish. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/config.h"

static char dir[] = "/tmp/ds-test-config-XXXXXX";
static char path[600];

/* Write text to a fresh INI file and return its path. */
static const char *ini(const char *text)
{
    static int n;
    snprintf(path, sizeof path, "%s/c%d.ini", dir, n++);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

/* Load text; return the error code and leave the message in err. */
static int load(struct ds_config *c, const char *text, char *err)
{
    ds_config_defaults(c);
    err[0] = 0;
    return ds_config_load_file(c, ini(text), err);
}

static const char *fake_env_vars[16];
static const char *fake_getenv(const char *name)
{
    for (int i = 0; fake_env_vars[i]; i += 2)
        if (strcmp(fake_env_vars[i], name) == 0)
            return fake_env_vars[i + 1];
    return NULL;
}

static void defaults_are_documented_values(void)
{
    struct ds_config c;
    ds_config_defaults(&c);
    CHECK(strcmp(c.node_id, "local") == 0);
    CHECK(c.max_body == 1048576);
    CHECK(c.tls_min_version == 12);
    CHECK(c.client_auth == DS_CLIENT_AUTH_OPTIONAL);
    CHECK(strcmp(c.data_dir, "./dsyncd-data") == 0);
}

static void a_valid_file_loads_every_section(void)
{
    struct ds_config c;
    char err[DS_CONFIG_ERR_MAX];
    int rv = load(&c,
                  "; comment\n# another\n[node]\nid = node1\nrole = lock\nlisten = 0.0.0.0:8001\n"
                  "[http]\nmax_body = 2048 ; inline comment\n[log]\nlevel = debug\nformat = json\n"
                  "[cluster]\npeers = node1=https://node1:8001, node2=https://node2:8002\n"
                  "[redis]\nshards = 127.0.0.1:6379,127.0.0.1:6380\n",
                  err);
    CHECKF(rv == 0, "%s", err);
    CHECK(strcmp(c.node_id, "node1") == 0);
    CHECK(strcmp(c.role, "lock") == 0);
    CHECK(c.max_body == 2048);
    CHECK(c.log_level == DS_LOG_DEBUG);
    CHECK(c.log_format == DS_LOG_JSON);
}

static void expect_error(const char *text, int code, const char *needle1, const char *needle2)
{
    struct ds_config c;
    char err[DS_CONFIG_ERR_MAX];
    int rv = load(&c, text, err);
    CHECKF(rv == code, "rv=%d for: %s", rv, text);
    CHECKF(strstr(err, needle1) != NULL, "'%s' not in '%s'", needle1, err);
    CHECKF(!needle2 || strstr(err, needle2) != NULL, "'%s' not in '%s'", needle2, err);
    CHECKF(strstr(err, path) != NULL, "file name not in '%s'", err);
}

static void unknown_section_is_named_with_its_line(void)
{
    expect_error("[node]\nrole = lock\n[nope]\nx = 1\n", DS_CONFIG_EINVAL, ":4:", "[nope]");
}

static void unknown_key_is_named_with_its_line(void)
{
    expect_error("[node]\nrole = lock\nrolee = lock\n", DS_CONFIG_EINVAL, ":3:", "'rolee'");
}

static void bad_number_says_expected_range(void)
{
    expect_error("[http]\nmax_body = lots\n", DS_CONFIG_EINVAL, ":2:", "not a whole number");
    expect_error("[http]\nmax_body = 10\n", DS_CONFIG_EINVAL, "out of range", "allowed: 1024..");
    expect_error("[http]\nmax_body = -5\n", DS_CONFIG_EINVAL, "max_body", NULL);
    expect_error("[http]\nmax_body = 99999999999999999999999\n", DS_CONFIG_EINVAL, "max_body",
                 NULL);
}

static void bad_enum_lists_allowed_values(void)
{
    expect_error("[node]\nrole = leader\n", DS_CONFIG_EINVAL, "allowed: lock queue cache", NULL);
    expect_error("[tls]\nmin_version = 1.0\n", DS_CONFIG_EINVAL, "allowed: 1.2 1.3", NULL);
}

static void malformed_addresses_and_urls_are_refused(void)
{
    expect_error("[node]\nlisten = 8001\n", DS_CONFIG_EINVAL, "host:port", NULL);
    expect_error("[node]\nlisten = host:99999\n", DS_CONFIG_EINVAL, "host:port", NULL);
    expect_error("[node]\nadvertise_url = http://x:1\n", DS_CONFIG_EINVAL, "https://", NULL);
    expect_error("[cluster]\npeers = node1\n", DS_CONFIG_EINVAL, "id=https://", NULL);
    expect_error("[cluster]\nseeds = https://a:1,,https://b:2\n", DS_CONFIG_EINVAL, "seeds", NULL);
    expect_error("[redis]\nshards = a:1,b\n", DS_CONFIG_EINVAL, "host:port", NULL);
    expect_error("[node]\nid = no spaces\n", DS_CONFIG_EINVAL, "letters", NULL);
}

static void key_outside_a_section_is_refused(void)
{
    expect_error("role = lock\n", DS_CONFIG_EINVAL, ":1:", "outside a section");
}

static void duplicate_key_names_both_lines(void)
{
    expect_error("[node]\nrole = lock\n\nrole = cache\n", DS_CONFIG_EINVAL, ":4:",
                 "first on line 2");
}

static void syntax_error_names_the_line(void)
{
    expect_error("[node]\nrole = lock\nthis line has no equals sign\n", DS_CONFIG_EINVAL, ":3:",
                 "syntax");
}

static void overlong_line_is_refused(void)
{
    char text[600] = "[cluster]\nseeds = ";
    size_t n = strlen(text);
    memset(text + n, 'a', 300);
    text[n + 300] = '\n';
    text[n + 301] = 0;
    expect_error(text, DS_CONFIG_EINVAL, ":2:", "longer than");
}

static void missing_file_is_a_file_error(void)
{
    struct ds_config c;
    char err[DS_CONFIG_ERR_MAX];
    ds_config_defaults(&c);
    CHECK(ds_config_load_file(&c, "/nonexistent/dsyncd.ini", err) == DS_CONFIG_EFILE);
    CHECK(strstr(err, "/nonexistent/dsyncd.ini") && strstr(err, "cannot open"));
}

static void environment_overrides_file_and_cli_overrides_environment(void)
{
    struct ds_config c;
    char err[DS_CONFIG_ERR_MAX];
    REQUIRE(load(&c, "[node]\nrole = lock\nid = fromfile\nlisten = 10.0.0.1:7000\n", err) == 0);
    const char *vars[] = {"DSYNCD_NODE_ID", "fromenv", "INTERNAL_PORT", "7100",
                          "SHARED_MAC_KEY", "0123456789abcdef0123", NULL};
    memcpy(fake_env_vars, vars, sizeof vars);
    CHECKF(ds_config_load_env(&c, fake_getenv, err) == 0, "%s", err);
    CHECK(strcmp(c.node_id, "fromenv") == 0);
    CHECKF(strcmp(c.listen, "10.0.0.1:7100") == 0, "listen=%s", c.listen);
    CHECK(strcmp(c.mac_key, "0123456789abcdef0123") == 0);
    CHECK(ds_config_set_cli(&c, "node", "id", "fromcli", "--node-id", err) == 0);
    CHECK(strcmp(c.node_id, "fromcli") == 0);
    char desc[8192];
    ds_config_describe(&c, desc, sizeof desc);
    CHECK(strstr(desc, "[node] id = fromcli  (cli)") != NULL);
    CHECK(strstr(desc, "[node] role = lock  (file)") != NULL);
    CHECK(strstr(desc, "0123456789abcdef") == NULL); /* the key itself is never printed */
}

static void bad_environment_value_names_the_variable(void)
{
    struct ds_config c;
    char err[DS_CONFIG_ERR_MAX];
    ds_config_defaults(&c);
    const char *vars[] = {"DSYNCD_HTTP_MAX_BODY", "huge", NULL};
    memcpy(fake_env_vars, vars, sizeof vars);
    CHECK(ds_config_load_env(&c, fake_getenv, err) == DS_CONFIG_EINVAL);
    CHECK(strstr(err, "environment DSYNCD_HTTP_MAX_BODY") != NULL);
    const char *port[] = {"INTERNAL_PORT", "0", NULL};
    memcpy(fake_env_vars, port, sizeof port);
    CHECK(ds_config_load_env(&c, fake_getenv, err) == DS_CONFIG_EINVAL);
    CHECK(strstr(err, "INTERNAL_PORT") != NULL);
}

static void finish_requires_a_role(void)
{
    struct ds_config c;
    char err[DS_CONFIG_ERR_MAX];
    ds_config_defaults(&c);
    CHECK(ds_config_finish(&c, err) == DS_CONFIG_EINVAL);
    CHECK(strstr(err, "no role") != NULL);
}

static void finish_derives_listen_and_advertise_url_from_the_role(void)
{
    struct ds_config c;
    char err[DS_CONFIG_ERR_MAX];
    ds_config_defaults(&c);
    REQUIRE(ds_config_set_cli(&c, "node", "role", "cache", "--role", err) == 0);
    CHECKF(ds_config_finish(&c, err) == 0, "%s", err);
    CHECK(strcmp(c.listen, "127.0.0.1:10001") == 0);
    CHECK(strcmp(c.advertise_url, "https://127.0.0.1:10001") == 0);
}

static void finish_refuses_unreadable_certificate_naming_its_line(void)
{
    struct ds_config c;
    char err[DS_CONFIG_ERR_MAX];
    REQUIRE(load(&c, "[node]\nrole = lock\n[tls]\ncert = /nonexistent.crt\nkey = /nonexistent.key\n",
                 err) == 0);
    CHECK(ds_config_finish(&c, err) == DS_CONFIG_EFILE);
    CHECKF(strstr(err, ":4: [tls] cert") && strstr(err, "cannot read"), "%s", err);
}

static void finish_refuses_cert_without_key(void)
{
    struct ds_config c;
    char err[DS_CONFIG_ERR_MAX];
    REQUIRE(load(&c, "[node]\nrole = lock\n[tls]\ncert = /etc/hostname\n", err) == 0);
    CHECK(ds_config_finish(&c, err) == DS_CONFIG_EINVAL);
    CHECK(strstr(err, "together") != NULL);
}

static void finish_refuses_peers_without_a_long_enough_mac_key(void)
{
    struct ds_config c;
    char err[DS_CONFIG_ERR_MAX];
    REQUIRE(load(&c, "[node]\nrole = lock\n[cluster]\npeers = a=https://a:1\n", err) == 0);
    CHECK(ds_config_finish(&c, err) == DS_CONFIG_EINVAL);
    CHECK(strstr(err, "missing") && strstr(err, "SHARED_MAC_KEY"));
    snprintf(c.mac_key, sizeof c.mac_key, "short");
    CHECK(ds_config_finish(&c, err) == DS_CONFIG_EINVAL);
    CHECK(strstr(err, "shorter than 16") != NULL);
    snprintf(c.mac_key, sizeof c.mac_key, "0123456789abcdef");
    CHECKF(ds_config_finish(&c, err) == 0, "%s", err);
}

static void mac_key_file_is_read_and_trimmed(void)
{
    char keyfile[620];
    snprintf(keyfile, sizeof keyfile, "%s/mac.key", dir);
    FILE *f = fopen(keyfile, "w");
    fputs("abcdefghijklmnopqrstuvwxyz\n", f);
    fclose(f);
    char text[800];
    snprintf(text, sizeof text, "[node]\nrole = cache\n[cluster]\nseeds = https://a:1\nmac_key_file = %s\n",
             keyfile);
    struct ds_config c;
    char err[DS_CONFIG_ERR_MAX];
    REQUIRE(load(&c, text, err) == 0);
    CHECKF(ds_config_finish(&c, err) == 0, "%s", err);
    CHECK(strcmp(c.mac_key, "abcdefghijklmnopqrstuvwxyz") == 0);
    unlink(keyfile);
}

static void split_addr_handles_ipv4_ipv6_and_names(void)
{
    char host[64];
    uint16_t port;
    CHECK(ds_config_split_addr("127.0.0.1:80", host, sizeof host, &port) == 0 && port == 80 &&
          strcmp(host, "127.0.0.1") == 0);
    CHECK(ds_config_split_addr("[::1]:443", host, sizeof host, &port) == 0 && port == 443 &&
          strcmp(host, "::1") == 0);
    CHECK(ds_config_split_addr("cache-node-1:10001", host, sizeof host, &port) == 0);
    CHECK(ds_config_split_addr(":80", host, sizeof host, &port) != 0);
    CHECK(ds_config_split_addr("a:0", host, sizeof host, &port) != 0);
    CHECK(ds_config_split_addr("a b:1", host, sizeof host, &port) != 0);
}

static void list_items_are_split_on_commas_and_spaces_and_checked_for_length(void)
{
    const char *p = " a:1, b:2,,c:3 ";
    char item[8];
    CHECK(ds_config_list_next(&p, item, sizeof item) == 1 && strcmp(item, "a:1") == 0);
    CHECK(ds_config_list_next(&p, item, sizeof item) == 1 && strcmp(item, "b:2") == 0);
    CHECK(ds_config_list_next(&p, item, sizeof item) == 1 && strcmp(item, "c:3") == 0);
    CHECK(ds_config_list_next(&p, item, sizeof item) == 0);
    p = "toolonghost:1";
    CHECK(ds_config_list_next(&p, item, sizeof item) == -1);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(defaults_are_documented_values);
    RUN(a_valid_file_loads_every_section);
    RUN(unknown_section_is_named_with_its_line);
    RUN(unknown_key_is_named_with_its_line);
    RUN(bad_number_says_expected_range);
    RUN(bad_enum_lists_allowed_values);
    RUN(malformed_addresses_and_urls_are_refused);
    RUN(key_outside_a_section_is_refused);
    RUN(duplicate_key_names_both_lines);
    RUN(syntax_error_names_the_line);
    RUN(overlong_line_is_refused);
    RUN(missing_file_is_a_file_error);
    RUN(environment_overrides_file_and_cli_overrides_environment);
    RUN(bad_environment_value_names_the_variable);
    RUN(finish_requires_a_role);
    RUN(finish_derives_listen_and_advertise_url_from_the_role);
    RUN(finish_refuses_unreadable_certificate_naming_its_line);
    RUN(finish_refuses_cert_without_key);
    RUN(finish_refuses_peers_without_a_long_enough_mac_key);
    RUN(mac_key_file_is_read_and_trimmed);
    RUN(split_addr_handles_ipv4_ipv6_and_names);
    RUN(list_items_are_split_on_commas_and_spaces_and_checked_for_length);
    for (int i = 0; i < 64; i++) {
        char p[640];
        snprintf(p, sizeof p, "%s/c%d.ini", dir, i);
        unlink(p);
    }
    rmdir(dir);
    return check_summary();
}
