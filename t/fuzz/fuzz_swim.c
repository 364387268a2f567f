/* libFuzzer target: SWIM gossip messages, decoded and fed to a member. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "gossip/swim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct ds_swim *s;
    static uint64_t now = 1000;
    if (!s) {
        struct ds_swim_self self = {.id = "fuzz", .url = "https://127.0.0.1:1", .role = "cache",
                                    .cluster = "dsyncd", .boot = 1};
        ds_swim_create(&self, NULL, 1, now, &s);
    }
    struct ds_swim_msg m;
    if (ds_swim_msg_decode(data, size, &m) == 0)
        ds_swim_msg_free(&m);
    ds_swim_recv(s, data, size, now);
    now += 10;
    ds_swim_tick(s, now);
    struct ds_swim_out out;
    while (ds_swim_pop_out(s, &out) == 0)
        free(out.buf);
    struct ds_swim_event ev;
    while (ds_swim_pop_event(s, &ev) == 0)
        ;
    return 0;
}
