/* The lock role's plug-in (lock.c): HTTP API over the Raft-replicated lock table. */
#ifndef DS_ROLES_LOCK_LOCK_ROLE_H
#define DS_ROLES_LOCK_LOCK_ROLE_H

#include "roles/role.h"

extern const struct ds_role_ops ds_lock_role_ops;

#endif
