/* Queue routing and naming (pure): names, partition choice, ring keys, Redis key names, and the
 * message ids handed to clients, which say which shard and partition hold the message.
 *
 * Naming (documented in README and conf/dsyncd.example.ini):
 *   stream of partition p of queue q      dsq:{q}:p
 *   dedup marker of dedup_id d of queue q  dsq:{q}:d:<d>
 *   consumer groups of queue q             dsq:{q}:groups (a set, on every shard)
 *   registry of queues stored on a shard   dsq:queues (a set)
 *   dead-letter queue of q                 q.dlq (a queue like any other)
 * Partition p of queue q lives on the shard the ring assigns to "q/p"; q.dlq uses the ring key of
 * q ("q/p"), so a message and its dead letter sit on the same shard and the move is atomic.
 * Client message ids are "<tag>.<p>.<ms>-<seq>": tag = 8 hex digits of XXH64(shard host:port),
 * p = partition, then the Redis stream id.
 *
 * Guarantees and their limits.  A message goes to the partition of its key (else of its
 * dedup_id, else round-robin); messages of one key keep their order while no shard fails.  When
 * the shard of a partition is down, producers write that partition on the next live shard of the
 * ring, and consumers read the partition's stream on every shard; so during and just after a
 * failover, messages of one key can be delivered out of order, and a dedup_id only suppresses
 * duplicates that reach the same shard within the window.  A consumer group exists from its
 * first consume on: that consume registers it in the queue's group set on every live shard, and
 * the housekeeper creates every registered group (at the oldest entry) on each stream of the
 * queue before it trims anything, so streams made later -- by produces, or on another shard by a
 * failover -- keep every entry the group has not read.  Entries are trimmed once every group has
 * acked them and they are older than DS_QUEUE_TRIM_GRACE_MS, so a shard that was down during a
 * group's first consume learns the group from its next consume first.  A group made after
 * messages were produced sees those still stored: consume once with each group before producing
 * if it must see everything. */
#ifndef DS_ROLES_QUEUE_QROUTE_H
#define DS_ROLES_QUEUE_QROUTE_H

#include <stddef.h>
#include <stdint.h>

#define DS_QROUTE_NAME_MAX 120u        /* bytes of a queue, group or consumer name */
#define DS_QROUTE_PARTITIONS_MAX 1024u
#define DS_QROUTE_KEY_MAX 192u         /* a Redis key or ring key built here, NUL included */
#define DS_QROUTE_ID_MAX 64u           /* a client message id, NUL included */
#define DS_QROUTE_SID_MAX 48u          /* a Redis stream id "ms-seq", NUL included */
#define DS_QROUTE_READY "~ready"       /* PEL owner of messages waiting for redelivery */

enum {
    DS_QROUTE_OK = 0,
    DS_QROUTE_EINVAL = 1, /* malformed name, id or argument */
    DS_QROUTE_ERANGE = 2, /* a buffer is too small or a number out of range */
};

/* A decoded client message id. */
struct ds_qroute_id {
    uint32_t tag;                  /* shard tag */
    uint32_t partition;
    char sid[DS_QROUTE_SID_MAX];   /* Redis stream id "ms-seq" */
};

/* 1 when s (NUL-terminated) is 1..DS_QROUTE_NAME_MAX bytes of [A-Za-z0-9._-], else 0. */
int ds_qroute_name_valid(const char *s);

/* 1 when queue names a dead-letter queue (ends in ".dlq" after at least one byte). */
int ds_qroute_is_dlq(const char *queue);

/* The dead-letter queue of queue ("<queue>.dlq") into buf (len bytes). */
int ds_qroute_dlq_name(const char *queue, char *buf, size_t len);

/* The partition of a message: hash of key (len bytes) modulo partitions, or rr modulo partitions
 * when key is NULL.  partitions > 0. */
uint32_t ds_qroute_partition(const char *key, size_t len, uint32_t partitions, uint64_t rr);

/* The ring key "<base>/<p>" where base is queue without a trailing ".dlq". */
int ds_qroute_ring_key(const char *queue, uint32_t p, char *buf, size_t len);

/* The key of the set of the queue's consumer groups "dsq:{<queue>}:groups". */
int ds_qroute_groups_key(const char *queue, char *buf, size_t len);

/* The stream key "dsq:{<queue>}:<p>". */
int ds_qroute_stream_key(const char *queue, uint32_t p, char *buf, size_t len);

/* The shard tag of a shard address (host:port). */
uint32_t ds_qroute_shard_tag(const char *addr);

/* 1 when sid is a Redis stream id "ms-seq" (decimal, each at most 20 digits), else 0. */
int ds_qroute_sid_valid(const char *sid, size_t len);

/* "<tag>.<p>." : the prefix of the client ids of partition p on the shard with tag. */
int ds_qroute_id_prefix(uint32_t tag, uint32_t p, char *buf, size_t len);

/* Parse a client id of len bytes (not necessarily NUL-terminated).  Refuses anything but
 * exactly 8 lowercase hex digits, '.', a partition < partitions without leading zeros, '.', a
 * valid stream id. */
int ds_qroute_id_parse(const char *id, size_t len, uint32_t partitions, struct ds_qroute_id *out);

/* The Redis consumer name "<consumer>@<visibility_ms>": the visibility timeout of a delivery
 * travels with its PEL entry, so the housekeeper knows when each message is due again. */
int ds_qroute_consumer_name(const char *consumer, uint64_t visibility_ms, char *buf, size_t len);

/* Split a Redis consumer name back into the client's consumer (copied to buf) and its visibility;
 * DS_QROUTE_EINVAL for a name this module did not make (e.g. DS_QROUTE_READY). */
int ds_qroute_consumer_parse(const char *name, char *buf, size_t len, uint64_t *visibility_ms);

const char *ds_qroute_strerror(int rv);

#endif
