/* Raft log entry and persistent-state types shared by the Raft core (raft.c), its storage
 * (storage.c) and the glue that connects them. */
#ifndef DS_RAFT_ENTRY_H
#define DS_RAFT_ENTRY_H

#include <stdint.h>

enum ds_raft_entry_type {
    DS_RAFT_ENTRY_NORMAL = 1, /* a command for the role's state machine */
    DS_RAFT_ENTRY_NOOP = 2,   /* appended by a new leader (Raft §8) */
    DS_RAFT_ENTRY_CONFIG = 3, /* a membership configuration (dissertation §4.1) */
};

struct ds_raft_entry {
    uint64_t term;
    uint64_t index;
    uint8_t type;  /* enum ds_raft_entry_type */
    uint32_t len;
    uint8_t *data; /* len bytes, owned by the holder of the entry (array); NULL when len == 0 */
};

/* Term and vote: persisted before any message that depends on them leaves (Raft §5.1, Fig. 2). */
struct ds_raft_hard_state {
    uint64_t term;
    uint64_t vote; /* node id voted for in `term`, 0 = none */
};

#endif
