/* The Lua scripts the queue role runs on a shard (EVAL): each is one atomic step on the streams of
 * one shard, so claims, dead-lettering and dedup cannot race between queue nodes. */
#ifndef DS_ROLES_QUEUE_QLUA_H
#define DS_ROLES_QUEUE_QLUA_H

/* KEYS: streams of the partitions to read, then the queue's group registry; ARGV: group, redis
 * consumer, max, big idle, then the partition number of each stream.  Adds the group to the
 * registry, creates it (at 0) on a stream that lacks it, claims messages released for
 * redelivery (idle >= big), then reads new ones.  Returns
 * [[partition, id, delivery count, [field, value, ...]], ...]. */
extern const char ds_qlua_consume[];

/* KEYS: stream, dead-letter stream, registry; ARGV: group, max deliveries, idle to set, is-dlq,
 * dlq name, id prefix, ids...  Releases each pending id for redelivery (idle set so it becomes
 * claimable after the nack delay), or dead-letters it at max deliveries.  Returns [nacked, dead]. */
extern const char ds_qlua_nack[];

/* KEYS: stream, dead-letter stream, registry, the queue's group registry; ARGV: max deliveries,
 * big idle, is-dlq, dlq name, id prefix, scan budget, min visibility, trim grace ms.  First
 * creates (at 0) every registered group the stream lacks, so a stream made after a group's
 * first consume (by a produce, or on another shard by a failover) keeps what that group has
 * not read.  For every group: releases messages idle past the visibility of their consumer (or
 * dead-letters them), then trims entries below the smallest pending or last delivered id of
 * every group and older than the grace.  Returns [redelivered, dead, trimmed]. */
extern const char ds_qlua_reap[];

/* KEYS: stream, dedup key; ARGV: window ms, id prefix, field, value, ...  Adds the message
 * unless the dedup key exists.  Returns [1, id] when added, [0, first id] for a duplicate. */
extern const char ds_qlua_produce_dedup[];

/* KEYS: P streams then their P dead-letter streams; ARGV: the partition numbers.  Returns
 * [[partition, length, dlq length, [[group, pending, lag or -1, [[consumer, pending, idle]]]]]]
 * for each partition stream that exists. */
extern const char ds_qlua_stats[];

#endif
