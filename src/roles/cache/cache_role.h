/* The cache role's plug-in (cache.c): a coherent key/value cache over several nodes (directory
 * MESI with leases, mesi.h) with Redis or the home's own store as main memory. */
#ifndef DS_ROLES_CACHE_CACHE_ROLE_H
#define DS_ROLES_CACHE_CACHE_ROLE_H

#include "roles/role.h"

extern const struct ds_role_ops ds_cache_role_ops;

#endif
