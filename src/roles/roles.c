/* The table of roles this binary can run. */
#include "roles/role.h"

#include <string.h>

#include "roles/cache/cache_role.h"
#include "roles/lock/lock_role.h"
#include "roles/queue/queue_role.h"

static const struct ds_role_ops *const roles[] = {
    &ds_lock_role_ops,
    &ds_queue_role_ops,
    &ds_cache_role_ops,
};

const struct ds_role_ops *ds_role_find(const char *name)
{
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (strcmp(roles[i]->name, name) == 0)
            return roles[i];
    return NULL;
}
