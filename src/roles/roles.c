/* The table of roles this binary can run. */
#include "roles/role.h"

#include <string.h>

static const struct ds_role_ops roles[] = {
    {.name = "lock"},
    {.name = "queue"},
    {.name = "cache"},
};

const struct ds_role_ops *ds_role_find(const char *name)
{
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (strcmp(roles[i].name, name) == 0)
            return &roles[i];
    return NULL;
}
