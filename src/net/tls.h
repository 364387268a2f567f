/* TLS contexts and TLS bufferevents: the only place that includes OpenSSL's SSL headers. */
#ifndef DS_NET_TLS_H
#define DS_NET_TLS_H

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stddef.h>

#include "core/config.h"

struct ds_tls;

#define DS_TLS_ERR_MAX 512

/* Server context from [tls]: certificate chain + key, minimum version, and when [tls] ca is set,
 * client certificates requested (optional) or required.  On error `err` names the file and the
 * OpenSSL reason.  The caller frees *out with ds_tls_free. */
int ds_tls_server_new(const struct ds_config *c, struct ds_tls **out, char *err);
void ds_tls_free(struct ds_tls *t);

/* A bufferevent doing the server side of TLS on an accepted socket (closed with the bufferevent).
 * NULL on allocation failure (the socket is then closed). */
struct bufferevent *ds_tls_accept(struct ds_tls *t, struct event_base *base, int fd);

/* Send len bytes on an established TLS connection at once, bypassing bev's output buffer (which
 * must be empty): one TLS record, one write(2), and no write event to add and remove, where
 * bufferevent_openssl would wait for the next loop turn.  Returns the bytes sent; the caller
 * adds the rest to the (still empty) output buffer as usual.  0 means nothing was sent, or
 * OpenSSL holds a started record that bufferevent_openssl's next SSL_write of the same bytes
 * completes: either way all of them go to the output buffer.  Not for an answer that closes the connection (the write callback that frees
 * it runs only for data that went through the output buffer). */
size_t ds_tls_write_now(struct bufferevent *bev, const void *buf, size_t len);

/* Connections read ahead (one read(2) takes a whole TLS record, or several, where
 * OpenSSL would read a record's header and then its body).  bufferevent_openssl only looks for
 * decrypted bytes after a read, so records left in the read-ahead buffer would wait for the next
 * packet: call this whenever the connection's input was consumed or reading resumes, and it
 * schedules another read pass when such records are there. */
void ds_tls_read_pending(struct bufferevent *bev);

/* When the peer presented a certificate that verified against [tls] ca, copy its subject CN into
 * buf and return 1; otherwise return 0. */
int ds_tls_peer_identity(struct bufferevent *bev, char *buf, size_t len);

/* Client context for peer connections: verifies the peer against [tls] ca (the system store when
 * empty) and presents [tls] cert/key as the client certificate. */
int ds_tls_client_new(const struct ds_config *c, struct ds_tls **out, char *err);

/* A bufferevent doing the client side of TLS on a connecting socket fd, with SNI and the peer's
 * name (or IP address) checked against its certificate.  NULL on failure (fd is closed). */
struct bufferevent *ds_tls_connect(struct ds_tls *t, struct event_base *base, int fd,
                                   const char *host);

/* Make sure dir holds ca.crt, server.crt and server.key for the embedded single-node default:
 * a new P-256 CA and a server certificate for localhost / 127.0.0.1 / ::1, created when missing. */
int ds_tls_ensure_self_signed(const char *dir, char *err);

#endif
