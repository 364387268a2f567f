/* TLS contexts and TLS bufferevents over OpenSSL 3 (the one file that includes its SSL headers). */
#include "net/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct ds_tls {
    SSL_CTX *ctx;
};

static void ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "unknown TLS error");
    ERR_clear_error();
}

/* TLS 1.3 suites, preferred first: OpenSSL's default set with AES-128-GCM ahead of AES-256-GCM
 * (as Go and most web servers order them).  Small records are what this server sends, and there
 * the 128-bit key's shorter schedule shows: ~4% more lock pairs per second (t/bench/lock.sh);
 * ChaCha20-Poly1305 was 20% slower on this hardware. */
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

int ds_tls_server_new(const struct ds_config *c, struct ds_tls **out, char *err)
{
    char why[256];
    struct ds_tls *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, DS_TLS_ERR_MAX, "out of memory");
        return ENOMEM;
    }
    t->ctx = SSL_CTX_new(TLS_server_method());
    if (!t->ctx)
        goto ssl_err;
    SSL_CTX_set_min_proto_version(t->ctx,
                                  c->tls_min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_options(t->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_set_ciphersuites(t->ctx, TLS13_SUITES) != 1)
        goto ssl_err;
    char where[DS_CONFIG_PATH_MAX + 64];
    if (SSL_CTX_use_certificate_chain_file(t->ctx, c->tls_cert) != 1) {
        ssl_reason(why, sizeof why);
        ds_config_where(c, "tls", "cert", where, sizeof where);
        snprintf(err, DS_TLS_ERR_MAX, "%s = '%s': not a usable certificate: %s", where,
                 c->tls_cert, why);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(t->ctx, c->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(t->ctx) != 1) {
        ssl_reason(why, sizeof why);
        ds_config_where(c, "tls", "key", where, sizeof where);
        snprintf(err, DS_TLS_ERR_MAX, "%s = '%s': not the private key of [tls] cert: %s", where,
                 c->tls_key, why);
        goto fail;
    }
    if (c->tls_ca[0] && c->client_auth != DS_CLIENT_AUTH_OFF) {
        if (SSL_CTX_load_verify_locations(t->ctx, c->tls_ca, NULL) != 1) {
            ssl_reason(why, sizeof why);
            ds_config_where(c, "tls", "ca", where, sizeof where);
            snprintf(err, DS_TLS_ERR_MAX, "%s = '%s': no usable CA certificate: %s", where,
                     c->tls_ca, why);
            goto fail;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c->tls_ca);
        if (names)
            SSL_CTX_set_client_CA_list(t->ctx, names);
        int mode = SSL_VERIFY_PEER;
        if (c->client_auth == DS_CLIENT_AUTH_REQUIRE)
            mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(t->ctx, mode, NULL);
        static const unsigned char sid[] = "dsyncd";
        SSL_CTX_set_session_id_context(t->ctx, sid, sizeof sid - 1);
    }
    *out = t;
    return 0;
ssl_err:
    ssl_reason(why, sizeof why);
    snprintf(err, DS_TLS_ERR_MAX, "TLS setup: %s", why);
fail:
    ds_tls_free(t);
    return EINVAL;
}

int ds_tls_client_new(const struct ds_config *c, struct ds_tls **out, char *err)
{
    char why[256];
    struct ds_tls *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, DS_TLS_ERR_MAX, "out of memory");
        return ENOMEM;
    }
    t->ctx = SSL_CTX_new(TLS_client_method());
    if (!t->ctx)
        goto ssl_err;
    SSL_CTX_set_min_proto_version(t->ctx,
                                  c->tls_min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    if (SSL_CTX_set_ciphersuites(t->ctx, TLS13_SUITES) != 1)
        goto ssl_err;
    int ok = c->tls_ca[0] ? SSL_CTX_load_verify_locations(t->ctx, c->tls_ca, NULL)
                          : SSL_CTX_set_default_verify_paths(t->ctx);
    if (ok != 1) {
        ssl_reason(why, sizeof why);
        snprintf(err, DS_TLS_ERR_MAX, "[tls] ca '%s': %s", c->tls_ca, why);
        goto fail;
    }
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
    if (c->tls_cert[0] && (SSL_CTX_use_certificate_chain_file(t->ctx, c->tls_cert) != 1 ||
                           SSL_CTX_use_PrivateKey_file(t->ctx, c->tls_key, SSL_FILETYPE_PEM) != 1)) {
        ssl_reason(why, sizeof why);
        snprintf(err, DS_TLS_ERR_MAX, "[tls] cert/key as client certificate: %s", why);
        goto fail;
    }
    *out = t;
    return 0;
ssl_err:
    ssl_reason(why, sizeof why);
    snprintf(err, DS_TLS_ERR_MAX, "TLS client setup: %s", why);
fail:
    ds_tls_free(t);
    return EINVAL;
}

struct bufferevent *ds_tls_connect(struct ds_tls *t, struct event_base *base, int fd,
                                   const char *host)
{
    SSL *ssl = SSL_new(t->ctx);
    if (!ssl)
        goto fail;
    struct in6_addr a6;
    struct in_addr a4;
    int is_ip = inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
    if (is_ip) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1)
            goto fail;
    } else if (SSL_set_tlsext_host_name(ssl, host) != 1 || SSL_set1_host(ssl, host) != 1) {
        goto fail;
    }
    SSL_set_read_ahead(ssl, 1); /* see ds_tls_read_pending */
    struct bufferevent *bev = bufferevent_openssl_socket_new(base, fd, ssl,
                                                             BUFFEREVENT_SSL_CONNECTING,
                                                             BEV_OPT_CLOSE_ON_FREE);
    if (!bev)
        goto fail;
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
fail:
    ERR_clear_error();
    SSL_free(ssl);
    close(fd);
    return NULL;
}

void ds_tls_free(struct ds_tls *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}

struct bufferevent *ds_tls_accept(struct ds_tls *t, struct event_base *base, int fd)
{
    SSL *ssl = SSL_new(t->ctx);
    if (!ssl) {
        ERR_clear_error();
        close(fd);
        return NULL;
    }
    SSL_set_read_ahead(ssl, 1); /* see ds_tls_read_pending */
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

void ds_tls_read_pending(struct bufferevent *bev)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    /* ev_read is the bufferevent's own read event (event2/bufferevent_struct.h): activating it
     * runs bufferevent_openssl's read pass, which decrypts what the buffer holds */
    if (ssl && SSL_has_pending(ssl) && (bufferevent_get_enabled(bev) & EV_READ))
        event_active(&bev->ev_read, EV_READ, 1);
}

size_t ds_tls_write_now(struct bufferevent *bev, const void *buf, size_t len)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    if (!ssl || !SSL_is_init_finished(ssl) || len == 0 || len > INT_MAX ||
        evbuffer_get_length(bufferevent_get_output(bev)) != 0)
        return 0;
    ERR_clear_error();
    int n = SSL_write(ssl, buf, (int)len);
    if (n > 0)
        return (size_t)n;
    ERR_clear_error(); /* bufferevent_openssl retries and sees the connection's state itself */
    return 0;
}

int ds_tls_peer_identity(struct bufferevent *bev, char *buf, size_t len)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    if (!ssl)
        return 0;
    X509 *cert = SSL_get0_peer_certificate(ssl);
    if (!cert || SSL_get_verify_result(ssl) != X509_V_OK)
        return 0;
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, (int)len) < 0)
        snprintf(buf, len, "(no CN)");
    return 1;
}

/* ------------------------------------------------------------------ embedded self-signed set */

static EVP_PKEY *new_key(void)
{
    return EVP_EC_gen("P-256");
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!ext)
        return -1;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* A certificate for `cn` with key `key`, signed by (issuer, issuer_key) or self-signed. */
static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                       int is_ca, long serial)
{
    X509 *x = X509_new();
    if (!x)
        return NULL;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 60L * 60 * 24 * 825);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"dsyncd", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509 *iss = issuer ? issuer : x;
    int bad = 0;
    if (is_ca) {
        bad |= add_ext(x, iss, NID_basic_constraints, "critical,CA:TRUE");
        bad |= add_ext(x, iss, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        bad |= add_ext(x, iss, NID_basic_constraints, "critical,CA:FALSE");
        bad |= add_ext(x, iss, NID_key_usage, "critical,digitalSignature,keyEncipherment");
        bad |= add_ext(x, iss, NID_ext_key_usage, "serverAuth,clientAuth");
        bad |= add_ext(x, iss, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1");
    }
    bad |= add_ext(x, iss, NID_subject_key_identifier, "hash");
    if (bad || !X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256())) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static int write_pem(const char *path, X509 *cert, EVP_PKEY *key, char *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, key ? 0600 : 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        snprintf(err, DS_TLS_ERR_MAX, "%s: cannot write: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return EIO;
    }
    int ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
                 : PEM_write_X509(f, cert);
    if (fclose(f) != 0 || !ok) {
        snprintf(err, DS_TLS_ERR_MAX, "%s: write failed", path);
        return EIO;
    }
    return 0;
}

int ds_tls_ensure_self_signed(const char *dir, char *err)
{
    char ca_crt[600], srv_crt[600], srv_key[600];
    snprintf(ca_crt, sizeof ca_crt, "%s/ca.crt", dir);
    snprintf(srv_crt, sizeof srv_crt, "%s/server.crt", dir);
    snprintf(srv_key, sizeof srv_key, "%s/server.key", dir);
    if (access(ca_crt, R_OK) == 0 && access(srv_crt, R_OK) == 0 && access(srv_key, R_OK) == 0)
        return 0;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, DS_TLS_ERR_MAX, "%s: cannot create: %s", dir, strerror(errno));
        return EIO;
    }
    int rv = EIO;
    EVP_PKEY *ca_key = new_key(), *key = new_key();
    X509 *ca = ca_key ? make_cert("dsyncd embedded CA", ca_key, NULL, NULL, 1, 1) : NULL;
    X509 *srv = ca && key ? make_cert("localhost", key, ca, ca_key, 0, 2) : NULL;
    if (!srv) {
        char why[256];
        ssl_reason(why, sizeof why);
        snprintf(err, DS_TLS_ERR_MAX, "creating the embedded certificates: %s", why);
        goto out;
    }
    /* The CA key is not kept: nothing else will ever be signed with it. */
    if ((rv = write_pem(srv_key, NULL, key, err)) || (rv = write_pem(srv_crt, srv, NULL, err)) ||
        (rv = write_pem(ca_crt, ca, NULL, err)))
        goto out;
    rv = 0;
out:
    X509_free(srv);
    X509_free(ca);
    EVP_PKEY_free(key);
    EVP_PKEY_free(ca_key);
    return rv;
}
