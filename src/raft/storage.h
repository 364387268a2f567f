/* Raft durable storage in one data directory: term and vote, a segmented write-ahead log of
 * CRC32C-checked records, and the latest snapshot (Raft §5.1 Fig. 2 persistent state, §7 log
 * compaction). Plain POSIX file I/O, no threads, no logging: not thread-safe, one caller thread.
 *
 * Layout of <dir>:
 *   LOCK                       flock()ed while open: a second opener gets DS_RAFT_STORAGE_ELOCKED
 *   hardstate                  magic "DSHS", u32 version 1, u64 term, u64 vote, u32 CRC32C (28 bytes)
 *   snapshot                   40-byte header (magic "DSSN", u32 version 1, u64 index, u64 term,
 *                              u32 conf_len, u32 zero, u64 data_len), conf, data, u32 CRC32C of all
 *   wal/<first index>.seg      first index as 16 decimal digits; 16-byte header (magic "DSWL",
 *                              u32 version 1, u64 first index) then records:
 *                              u32 body length, u32 CRC32C (over the length field and the body),
 *                              body = u64 term, u64 index, u8 type, data
 * All integers little-endian. hardstate and snapshot are replaced atomically (temp file, fsync,
 * rename, fsync of the directory); leftover "*.tmp" files are removed at open. */
#ifndef DS_RAFT_STORAGE_H
#define DS_RAFT_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "raft/entry.h"

#define DS_RAFT_STORAGE_SEGMENT_SIZE_DEFAULT (64u << 20) /* a segment is rolled past this size */
#define DS_RAFT_STORAGE_MAX_ENTRY_DEFAULT (16u << 20)    /* largest entry data accepted */
#define DS_RAFT_STORAGE_ERRLEN 512

enum ds_raft_storage_err {
    DS_RAFT_STORAGE_OK = 0,
    DS_RAFT_STORAGE_EIO = 1,      /* a system call failed; the message names it, the file, errno */
    DS_RAFT_STORAGE_ENOMEM = 2,   /* out of memory */
    DS_RAFT_STORAGE_ECORRUPT = 3, /* bad bytes on disk not at the log's tail; message: file, offset */
    DS_RAFT_STORAGE_EGAP = 4,     /* log indexes are not contiguous (or do not reach the snapshot) */
    DS_RAFT_STORAGE_EINVAL = 5,   /* a bad argument from the caller (a programming error upstream) */
    DS_RAFT_STORAGE_ELOCKED = 6,  /* another process (or handle) has the directory open */
};

struct ds_raft_storage; /* opaque */

struct ds_raft_storage_opts {
    uint64_t segment_size;   /* roll to a new segment past this many bytes; 0 = default */
    uint32_t max_entry_size; /* longest entry data accepted and decoded; 0 = default */
    /* Zero-fill the last segment ahead of its records (up to segment_size, 1 MiB at a time), so
     * that an fdatasync writes the data without a new file size: one I/O fewer per sync.
     * Opening cuts the all-zero tail of a segment. */
    int preallocate;
    /* Called during open with one line for each repair made (torn tail dropped, temp file or
     * covered segment removed), for the caller to log; may be NULL. msg is valid during the call. */
    void (*notice)(void *arg, const char *msg);
    void *notice_arg;
};

/* A snapshot: metadata of the last entry it covers, the configuration then, and the state. */
struct ds_raft_snapshot {
    uint64_t index; /* 0 = no snapshot */
    uint64_t term;
    uint8_t *conf; /* conf_len bytes (opaque configuration), NULL when conf_len == 0 */
    uint32_t conf_len;
    uint8_t *data; /* data_len bytes (opaque state machine image), NULL when data_len == 0 */
    uint64_t data_len;
};

/* What open found on disk, to hand to the Raft core. */
struct ds_raft_storage_load {
    struct ds_raft_hard_state hard_state; /* zeros when never saved */
    struct ds_raft_snapshot snapshot;     /* index 0 when there is none */
    struct ds_raft_entry *entries;        /* n_entries entries, snapshot.index + 1 onwards */
    size_t n_entries;
};

/* Sizes for /status. */
struct ds_raft_storage_stats {
    uint64_t log_bytes;      /* bytes of all segment files */
    uint64_t snapshot_bytes; /* bytes of the snapshot file, 0 when none */
    uint64_t first_index;    /* first entry in the log files; last_index + 1 when empty */
    uint64_t last_index;     /* last entry in the log files (entries <= snapshot may remain) */
    uint64_t snapshot_index;
    uint64_t snapshot_term;
    uint32_t segments;
};

/* Opens (creating dir and dir/wal when missing; the parent must exist) and recovers the storage.
 * A torn or corrupt tail of the last segment is truncated and reported through opts->notice;
 * corruption anywhere else fails with ECORRUPT and a message naming file and offset. opts may be
 * NULL (defaults); it is copied. On success *out is owned by the caller (ds_raft_storage_close)
 * and what was loaded waits in it for ds_raft_storage_take_load. On failure *out is NULL and
 * errbuf holds the reason. */
int ds_raft_storage_open(const char *dir, const struct ds_raft_storage_opts *opts,
                         struct ds_raft_storage **out, char errbuf[DS_RAFT_STORAGE_ERRLEN]);

/* Moves what open loaded into *load (the caller frees it with ds_raft_storage_load_free); a second
 * call yields an all-zero load. */
void ds_raft_storage_take_load(struct ds_raft_storage *st, struct ds_raft_storage_load *load);

/* Frees the buffers of a load (not the struct itself) and zeroes it. */
void ds_raft_storage_load_free(struct ds_raft_storage_load *load);

/* Persists term and vote; durable when it returns 0 (Raft §5.1: before answering any RPC). */
int ds_raft_storage_set_hard_state(struct ds_raft_storage *st, const struct ds_raft_hard_state *hs);

/* Appends n entries to the log without fsync (see ds_raft_storage_sync). entries[0].index must be
 * the next index (last log index + 1, or snapshot index + 1 when the log lies behind the snapshot,
 * which then starts afresh) and indexes contiguous; types valid; len <= max_entry_size. The
 * entries stay the caller's; their data is copied. On EIO the entries before last_index + 1 are
 * stored, the rest not. */
int ds_raft_storage_append(struct ds_raft_storage *st, const struct ds_raft_entry *entries, size_t n);

/* Makes everything appended so far durable: one fdatasync of the active segment, plus one fsync of
 * wal/ when segments were created or removed since the last sync (group commit). A segment that
 * fills up is synced when the next one is started, so a crash never leaves a torn segment that is
 * not the last one. */
int ds_raft_storage_sync(struct ds_raft_storage *st);

/* The same sync split in two, for an fdatasync on another thread while appends go on.  begin:
 * *fd = a duplicate of the active segment's descriptor (the caller fdatasyncs and closes it; it
 * stays valid when the segment is closed meanwhile) and *gen names what has been appended so far;
 * or *fd = -1 when nothing is to sync or the sync was done here at once (a created segment needs
 * its directory synced, a failed write its tail cut first).  end: the fdatasync of *fd succeeded;
 * when nothing was appended since begin, the next sync has nothing to flush. */
int ds_raft_storage_sync_begin(struct ds_raft_storage *st, int *fd, uint64_t *gen);
void ds_raft_storage_sync_end(struct ds_raft_storage *st, uint64_t gen);

/* Removes entries from_index onwards (a follower overwriting a conflicting suffix, Raft §5.3);
 * durable when it returns 0. from_index past the last entry is a no-op; from_index >= 1. */
int ds_raft_storage_truncate_suffix(struct ds_raft_storage *st, uint64_t from_index);

/* Deletes the segments, other than the last one, whose entries are all <= up_to_index, which must
 * not exceed the snapshot index (§7). Not synced: a crash may bring deleted segments back, and
 * open then removes them again. */
int ds_raft_storage_compact(struct ds_raft_storage *st, uint64_t up_to_index);

/* Replaces the snapshot atomically with (index, term, conf, data); durable when it returns 0. The
 * buffers stay the caller's. index >= the current snapshot index, term >= 1. If the log lies
 * entirely before index, it is discarded (the next append is index + 1). If the log holds entry
 * `index` with another term, the caller then calls truncate_suffix(index + 1) (Raft Fig. 13 step 7);
 * should a crash come in between, open does it. */
int ds_raft_storage_save_snapshot(struct ds_raft_storage *st, uint64_t index, uint64_t term,
                                  const uint8_t *conf, uint32_t conf_len, const uint8_t *data,
                                  uint64_t data_len);

/* Reads the current snapshot into *snap (index 0 when there is none), e.g. for InstallSnapshot.
 * The caller frees it with ds_raft_snapshot_free. */
int ds_raft_storage_read_snapshot(struct ds_raft_storage *st, struct ds_raft_snapshot *snap);

/* Frees conf and data of *snap (not the struct) and zeroes it. */
void ds_raft_snapshot_free(struct ds_raft_snapshot *snap);

void ds_raft_storage_stats(const struct ds_raft_storage *st, struct ds_raft_storage_stats *out);

/* The detail of the last failure of a call on st (file, offset, errno text). */
const char *ds_raft_storage_errmsg(const struct ds_raft_storage *st);

const char *ds_raft_storage_strerror(int rv);

/* Closes files and frees st (NULL is fine). Does not sync: unsynced appends may be lost. */
void ds_raft_storage_close(struct ds_raft_storage *st);

#endif
