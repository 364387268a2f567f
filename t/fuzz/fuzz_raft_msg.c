/* libFuzzer target: the Raft peer-message, configuration and snapshot-metadata decoders; whatever
 * decodes must encode again. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "raft/raft.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ds_raft_msg m;
    if (ds_raft_msg_decode(data, size, &m) == 0) {
        struct ds_raft_buf b = {0};
        if (ds_raft_msg_encode(&m, &b) != 0)
            abort();
        ds_raft_buf_free(&b);
        ds_raft_msg_release(&m);
    }
    struct ds_raft_membership c;
    ds_raft_conf_decode(data, size, &c);
    struct ds_raft_snapshot_meta s;
    ds_raft_snapshot_meta_decode(data, size, &s);
    return 0;
}
