/* The queue role's plug-in (queue.c): named queues over Redis Streams on consistent-hashed shards. */
#ifndef DS_ROLES_QUEUE_QUEUE_ROLE_H
#define DS_ROLES_QUEUE_QUEUE_ROLE_H

#include "roles/role.h"

extern const struct ds_role_ops ds_queue_role_ops;

#endif
