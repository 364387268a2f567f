/* Peer message authentication: HMAC-SHA256 (OpenSSL EVP_MAC) and an anti-replay window. */
#include "net/auth.h"

#include <inttypes.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SENDERS 64

struct replay_window {
    char node[64];
    uint64_t boot;
    uint64_t top;                       /* highest sequence number seen */
    uint64_t bits[DS_AUTH_WINDOW / 64]; /* bit (seq % WINDOW) set: seen, for top-WINDOW < seq <= top */
    uint64_t last_used_ms;
};

struct ds_auth {
    EVP_MAC *mac;
    EVP_MAC_CTX *proto; /* keyed once; duplicated per message */
    uint64_t window_ms;
    uint64_t boot;
    uint64_t seq;
    struct replay_window senders[MAX_SENDERS];
};

const char *ds_auth_strerror(int rv)
{
    switch (rv) {
    case DS_AUTH_OK: return "ok";
    case DS_AUTH_EMISSING: return "authentication headers missing or malformed";
    case DS_AUTH_EMAC: return "message authentication code does not match";
    case DS_AUTH_ESTALE: return "timestamp outside the accepted window";
    case DS_AUTH_EREPLAY: return "replayed message";
    case DS_AUTH_ENOMEM: return "out of memory";
    default: return "unknown error";
    }
}

int ds_auth_new(const char *key, size_t keylen, uint64_t window_ms, uint64_t boot_id,
                struct ds_auth **out)
{
    struct ds_auth *a = calloc(1, sizeof *a);
    if (!a)
        return DS_AUTH_ENOMEM;
    a->window_ms = window_ms;
    a->boot = boot_id;
    a->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    a->proto = a->mac ? EVP_MAC_CTX_new(a->mac) : NULL;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    if (!a->proto || !EVP_MAC_init(a->proto, (const unsigned char *)key, keylen, params)) {
        ds_auth_free(a);
        return DS_AUTH_ENOMEM;
    }
    *out = a;
    return DS_AUTH_OK;
}

void ds_auth_free(struct ds_auth *a)
{
    if (!a)
        return;
    EVP_MAC_CTX_free(a->proto);
    EVP_MAC_free(a->mac);
    free(a);
}

static int compute(struct ds_auth *a, const char *method, const char *path, const char *time,
                   const char *nonce, const char *node, const void *body, size_t len,
                   char hex[DS_AUTH_MAC_HEX])
{
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_dup(a->proto);
    if (!ctx)
        return DS_AUTH_ENOMEM;
    const char *parts[] = {method, path, time, nonce, node};
    int ok = 1;
    for (size_t i = 0; i < 5; i++) {
        ok &= EVP_MAC_update(ctx, (const unsigned char *)parts[i], strlen(parts[i]));
        ok &= EVP_MAC_update(ctx, (const unsigned char *)"\n", 1);
    }
    if (len)
        ok &= EVP_MAC_update(ctx, body, len);
    unsigned char md[32];
    size_t mdlen = 0;
    ok &= EVP_MAC_final(ctx, md, &mdlen, sizeof md);
    EVP_MAC_CTX_free(ctx);
    if (!ok || mdlen != sizeof md)
        return DS_AUTH_ENOMEM;
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof md; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 0xF];
    }
    hex[2 * sizeof md] = '\0';
    return DS_AUTH_OK;
}

int ds_auth_sign(struct ds_auth *a, const char *method, const char *path, const char *node,
                 uint64_t now_ms, const void *body, size_t len, struct ds_auth_headers *h)
{
    snprintf(h->time, sizeof h->time, "%" PRIu64, now_ms);
    snprintf(h->nonce, sizeof h->nonce, "%" PRIx64 ".%" PRIx64, a->boot, ++a->seq);
    return compute(a, method, path, h->time, h->nonce, node, body, len, h->mac);
}

static int parse_u64(const char *s, int base, uint64_t *out)
{
    if (!*s)
        return -1;
    char *end;
    unsigned long long v = strtoull(s, &end, base);
    if (*end || s[0] == '-' || s[0] == '+' || s[0] == ' ')
        return -1;
    *out = v;
    return 0;
}

static struct replay_window *window_for(struct ds_auth *a, const char *node, uint64_t boot,
                                        uint64_t now_ms)
{
    struct replay_window *oldest = &a->senders[0];
    for (int i = 0; i < MAX_SENDERS; i++) {
        struct replay_window *w = &a->senders[i];
        if (w->last_used_ms && w->boot == boot && strcmp(w->node, node) == 0)
            return w;
        if (w->last_used_ms < oldest->last_used_ms)
            oldest = w;
    }
    /* A new (sender, boot): take the least recently used slot.  An evicted slot's messages are
     * older than this one's by construction, and the time window bounds how long they live. */
    memset(oldest, 0, sizeof *oldest);
    snprintf(oldest->node, sizeof oldest->node, "%s", node);
    oldest->boot = boot;
    oldest->last_used_ms = now_ms ? now_ms : 1;
    return oldest;
}

/* RFC 4303 §3.4.3 sliding window; 0 = fresh (and now recorded), -1 = replay or too old. */
static int window_check(struct replay_window *w, uint64_t seq)
{
    if (seq == 0)
        return -1;
    if (seq > w->top) {
        uint64_t shift = seq - w->top;
        if (shift >= DS_AUTH_WINDOW) {
            memset(w->bits, 0, sizeof w->bits);
        } else {
            for (uint64_t s = w->top + 1; s <= seq; s++)
                w->bits[(s % DS_AUTH_WINDOW) / 64] &= ~(1ull << (s % 64));
        }
        w->top = seq;
    } else if (w->top - seq >= DS_AUTH_WINDOW) {
        return -1;
    }
    uint64_t *word = &w->bits[(seq % DS_AUTH_WINDOW) / 64];
    uint64_t bit = 1ull << (seq % 64);
    if (*word & bit)
        return -1;
    *word |= bit;
    return 0;
}

int ds_auth_verify(struct ds_auth *a, const char *method, const char *path, const char *node,
                   const char *time, const char *nonce, const char *mac, uint64_t now_ms,
                   const void *body, size_t len)
{
    uint64_t ts, boot, seq;
    char nb[DS_AUTH_NONCE_MAX];
    if (!node || !*node || strlen(node) >= 64 || !time || !nonce || !mac ||
        strlen(mac) != DS_AUTH_MAC_HEX - 1 || strlen(nonce) >= sizeof nb || parse_u64(time, 10, &ts))
        return DS_AUTH_EMISSING;
    memcpy(nb, nonce, strlen(nonce) + 1);
    char *dot = strchr(nb, '.');
    if (!dot)
        return DS_AUTH_EMISSING;
    *dot = 0;
    if (parse_u64(nb, 16, &boot) || parse_u64(dot + 1, 16, &seq))
        return DS_AUTH_EMISSING;
    char want[DS_AUTH_MAC_HEX];
    int rv = compute(a, method, path, time, nonce, node, body, len, want);
    if (rv)
        return rv;
    if (CRYPTO_memcmp(want, mac, DS_AUTH_MAC_HEX - 1) != 0)
        return DS_AUTH_EMAC;
    if (ts + a->window_ms < now_ms || ts > now_ms + a->window_ms)
        return DS_AUTH_ESTALE;
    struct replay_window *w = window_for(a, node, boot, now_ms);
    if (window_check(w, seq))
        return DS_AUTH_EREPLAY;
    w->last_used_ms = now_ms;
    return DS_AUTH_OK;
}

int ds_auth_sha256(const void *data, size_t len, uint8_t out[32])
{
    unsigned n = 0;
    return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) && n == 32 ? 0 : DS_AUTH_ENOMEM;
}
