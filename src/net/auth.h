/* Peer message authentication: HMAC-SHA256 with the shared MAC key over method, path, timestamp,
 * nonce and body, with a time window and replay protection.
 *
 * Headers: X-Dsync-Node (sender id), X-Dsync-Time (ms since the epoch), X-Dsync-Nonce
 * ("<boot>.<seq>": a random 64-bit boot id per process start and a counter, both hex), and
 * X-Dsync-Mac (hex HMAC-SHA256 of "METHOD\nPATH\nTIME\nNONCE\nNODE\n" followed by the body).
 * Replays are refused with a sliding window per (sender, boot id) like IPsec's anti-replay window
 * (RFC 4303 §3.4.3): O(1) memory per sender, and messages may arrive out of order across
 * connections by up to DS_AUTH_WINDOW sequence numbers. */
#ifndef DS_NET_AUTH_H
#define DS_NET_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define DS_AUTH_WINDOW 4096
#define DS_AUTH_MAC_HEX 65   /* 64 hex digits + NUL */
#define DS_AUTH_NONCE_MAX 40

struct ds_auth;

enum ds_auth_err {
    DS_AUTH_OK = 0,
    DS_AUTH_EMISSING = 1, /* a header is missing or malformed */
    DS_AUTH_EMAC = 2,     /* the MAC does not match */
    DS_AUTH_ESTALE = 3,   /* the timestamp is outside the window */
    DS_AUTH_EREPLAY = 4,  /* this nonce was seen already (or is too old for the window) */
    DS_AUTH_ENOMEM = 5,
};

/* key: the shared MAC key (copied; at least 16 bytes).  window_ms: accepted clock difference. */
int ds_auth_new(const char *key, size_t keylen, uint64_t window_ms, uint64_t boot_id,
                struct ds_auth **out);
void ds_auth_free(struct ds_auth *a);

struct ds_auth_headers {
    char time[24];
    char nonce[DS_AUTH_NONCE_MAX];
    char mac[DS_AUTH_MAC_HEX];
};

/* Fill h for an outgoing message (next sequence number). */
int ds_auth_sign(struct ds_auth *a, const char *method, const char *path, const char *node,
                 uint64_t now_ms, const void *body, size_t len, struct ds_auth_headers *h);

/* Check an incoming message; on success the nonce is recorded so a replay fails. */
int ds_auth_verify(struct ds_auth *a, const char *method, const char *path, const char *node,
                   const char *time, const char *nonce, const char *mac, uint64_t now_ms,
                   const void *body, size_t len);

const char *ds_auth_strerror(int rv);

/* SHA-256 of data into out (32 bytes): client bearer tokens are known by their digest. */
int ds_auth_sha256(const void *data, size_t len, uint8_t out[32]);

#endif
