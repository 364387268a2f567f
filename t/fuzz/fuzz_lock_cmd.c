/* libFuzzer target: lock commands (decode, then apply to a table) and lock-table snapshots. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "roles/lock/locktable.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct ds_lock_table *t;
    if (!t)
        t = ds_lock_table_new();
    struct ds_lock_cmd c;
    if (ds_lock_cmd_decode(data, size, &c) == 0) {
        struct ds_lock_result r;
        ds_lock_apply(t, &c, &r);
        ds_lock_result_free(&r);
    }
    struct ds_lock_table *restored;
    if (ds_lock_restore(data, size, &restored) == 0)
        ds_lock_table_free(restored);
    return 0;
}
