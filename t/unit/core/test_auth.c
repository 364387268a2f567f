/* Peer message authentication: HMAC over method/path/time/nonce/node/body, time window, replays. */
#include <string.h>

#include "check.h"
#include "net/auth.h"

static const char key[] = "0123456789abcdef-shared";
static const uint64_t now = 1700000000000ull;

static struct ds_auth *make(uint64_t boot)
{
    struct ds_auth *a = NULL;
    ds_auth_new(key, strlen(key), 30000, boot, &a);
    return a;
}

static int verify(struct ds_auth *rx, const struct ds_auth_headers *h, const char *body,
                  uint64_t at)
{
    return ds_auth_verify(rx, "POST", "/raft/msg", "node1", h->time, h->nonce, h->mac, at, body,
                          strlen(body));
}

static void a_signed_message_verifies_once(void)
{
    struct ds_auth *tx = make(7), *rx = make(9);
    struct ds_auth_headers h;
    REQUIRE(ds_auth_sign(tx, "POST", "/raft/msg", "node1", now, "body", 4, &h) == 0);
    CHECK(verify(rx, &h, "body", now) == DS_AUTH_OK);
    CHECK(verify(rx, &h, "body", now) == DS_AUTH_EREPLAY);
    ds_auth_free(tx);
    ds_auth_free(rx);
}

static void any_change_breaks_the_mac(void)
{
    struct ds_auth *tx = make(7), *rx = make(9);
    struct ds_auth_headers h;
    REQUIRE(ds_auth_sign(tx, "POST", "/raft/msg", "node1", now, "body", 4, &h) == 0);
    CHECK(verify(rx, &h, "bodY", now) == DS_AUTH_EMAC);
    CHECK(ds_auth_verify(rx, "PUT", "/raft/msg", "node1", h.time, h.nonce, h.mac, now, "body", 4) ==
          DS_AUTH_EMAC);
    CHECK(ds_auth_verify(rx, "POST", "/raft/msh", "node1", h.time, h.nonce, h.mac, now, "body", 4) ==
          DS_AUTH_EMAC);
    CHECK(ds_auth_verify(rx, "POST", "/raft/msg", "node2", h.time, h.nonce, h.mac, now, "body", 4) ==
          DS_AUTH_EMAC);
    struct ds_auth *other = NULL;
    ds_auth_new("another-key-of-16+bytes", 23, 30000, 1, &other);
    CHECK(verify(other, &h, "body", now) == DS_AUTH_EMAC);
    CHECK(verify(rx, &h, "body", now) == DS_AUTH_OK); /* the failures recorded nothing */
    ds_auth_free(other);
    ds_auth_free(tx);
    ds_auth_free(rx);
}

static void messages_outside_the_time_window_are_stale(void)
{
    struct ds_auth *tx = make(7), *rx = make(9);
    struct ds_auth_headers h;
    ds_auth_sign(tx, "POST", "/raft/msg", "node1", now, "", 0, &h);
    CHECK(verify(rx, &h, "", now + 30001) == DS_AUTH_ESTALE);
    CHECK(verify(rx, &h, "", now - 30001) == DS_AUTH_ESTALE);
    CHECK(verify(rx, &h, "", now + 29999) == DS_AUTH_OK);
    ds_auth_free(tx);
    ds_auth_free(rx);
}

static void out_of_order_messages_within_the_window_are_accepted(void)
{
    struct ds_auth *tx = make(7), *rx = make(9);
    static struct ds_auth_headers h[DS_AUTH_WINDOW + 10];
    for (int i = 0; i < DS_AUTH_WINDOW + 10; i++)
        ds_auth_sign(tx, "POST", "/raft/msg", "node1", now, "", 0, &h[i]);
    CHECK(verify(rx, &h[20], "", now) == DS_AUTH_OK);
    CHECK(verify(rx, &h[5], "", now) == DS_AUTH_OK);
    CHECK(verify(rx, &h[19], "", now) == DS_AUTH_OK);
    CHECK(verify(rx, &h[5], "", now) == DS_AUTH_EREPLAY);
    CHECK(verify(rx, &h[DS_AUTH_WINDOW + 9], "", now) == DS_AUTH_OK);
    CHECK(verify(rx, &h[6], "", now) == DS_AUTH_EREPLAY); /* fell out of the window */
    CHECK(verify(rx, &h[DS_AUTH_WINDOW + 8], "", now) == DS_AUTH_OK);
    ds_auth_free(tx);
    ds_auth_free(rx);
}

static void a_restarted_sender_with_a_new_boot_id_is_accepted(void)
{
    struct ds_auth *tx1 = make(7), *tx2 = make(8), *rx = make(9);
    struct ds_auth_headers a, b;
    ds_auth_sign(tx1, "POST", "/p", "node1", now, "", 0, &a);
    ds_auth_sign(tx2, "POST", "/p", "node1", now, "", 0, &b);
    CHECK(ds_auth_verify(rx, "POST", "/p", "node1", a.time, a.nonce, a.mac, now, "", 0) == 0);
    CHECK(ds_auth_verify(rx, "POST", "/p", "node1", b.time, b.nonce, b.mac, now, "", 0) == 0);
    CHECK(ds_auth_verify(rx, "POST", "/p", "node1", a.time, a.nonce, a.mac, now, "", 0) ==
          DS_AUTH_EREPLAY);
    ds_auth_free(tx1);
    ds_auth_free(tx2);
    ds_auth_free(rx);
}

static void malformed_headers_are_refused(void)
{
    struct ds_auth *rx = make(9);
    char mac[65];
    memset(mac, 'a', 64);
    mac[64] = 0;
    CHECK(ds_auth_verify(rx, "POST", "/p", NULL, "1", "1.1", mac, now, "", 0) == DS_AUTH_EMISSING);
    CHECK(ds_auth_verify(rx, "POST", "/p", "n", NULL, "1.1", mac, now, "", 0) == DS_AUTH_EMISSING);
    CHECK(ds_auth_verify(rx, "POST", "/p", "n", "x", "1.1", mac, now, "", 0) == DS_AUTH_EMISSING);
    CHECK(ds_auth_verify(rx, "POST", "/p", "n", "1", "11", mac, now, "", 0) == DS_AUTH_EMISSING);
    CHECK(ds_auth_verify(rx, "POST", "/p", "n", "1", "1.z", mac, now, "", 0) == DS_AUTH_EMISSING);
    CHECK(ds_auth_verify(rx, "POST", "/p", "n", "1", "1.1", "abc", now, "", 0) == DS_AUTH_EMISSING);
    CHECK(ds_auth_verify(rx, "POST", "/p", "n", "1", "1.1", mac, now, "", 0) == DS_AUTH_EMAC);
    ds_auth_free(rx);
}

int main(void)
{
    RUN(a_signed_message_verifies_once);
    RUN(any_change_breaks_the_mac);
    RUN(messages_outside_the_time_window_are_stale);
    RUN(out_of_order_messages_within_the_window_are_accepted);
    RUN(a_restarted_sender_with_a_new_boot_id_is_accepted);
    RUN(malformed_headers_are_refused);
    return check_summary();
}
