/* Raft durable storage: hard state, a segmented CRC32C write-ahead log and snapshots (Raft §5.1
 * Fig. 2, §7); the on-disk format is described in storage.h. */
#include "raft/storage.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/crc32c.h"

#define HS_SIZE 28u
#define SNAP_HDR 40u
#define SNAP_MIN (SNAP_HDR + 4u)
#define SEG_HDR 16u
#define REC_HDR 8u
#define REC_BODY_MIN 17u /* term, index, type */
#define REC_MIN (REC_HDR + REC_BODY_MIN)
#define FORMAT_VERSION 1u
#define FLUSH_AT (1u << 20) /* write the encode buffer out once it holds this much */
/* With opts.preallocate the active segment is zero-filled this far ahead of its records: an
 * fdatasync then writes only the data, not the inode's new size (one I/O fewer per sync;
 * fallocate's unwritten extents would need their conversion written instead). */
#define PREALLOC_CHUNK (1u << 20)
#define SEG_NAME_LEN 20     /* 16 digits + ".seg" */

struct seg {
    uint64_t first; /* index in the file name and header */
    uint64_t last;  /* last record's index, first - 1 when empty */
    uint64_t size;  /* bytes of valid content */
};

struct ds_raft_storage {
    char *dir;
    int lock_fd;
    int active_fd;   /* the last segment, open for writing, or -1 */
    int active_dirty; /* appended to since the last fdatasync */
    uint64_t gen;     /* counts writes to the active segment (ds_raft_storage_sync_begin) */
    uint64_t zeroed;  /* the active segment's file holds zeros from its size up to here */
    int tail_dirty;  /* a failed write may have left bytes past segs[last].size */
    int wal_dirty;   /* segments created or removed since the last fsync of wal/ */
    int conflict;    /* open found the snapshot's index in the log with another term */
    struct seg *segs;
    size_t nsegs, segs_cap;
    uint64_t snap_index, snap_term, snap_bytes;
    struct ds_raft_storage_opts opts;
    uint8_t *buf;
    size_t buf_len, buf_cap;
    uint64_t buf_last; /* index of the last record in buf */
    struct ds_raft_storage_load load;
    size_t load_cap;
    char err[DS_RAFT_STORAGE_ERRLEN];
};

struct rec {
    uint64_t term, index;
    uint8_t type;
    const uint8_t *data;
    uint32_t len;
    size_t size; /* header + body */
};

/* ---- bytes ---------------------------------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* ---- errors and notices --------------------------------------------------------------------- */

static int fail(struct ds_raft_storage *st, int rv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->err, sizeof st->err, fmt, ap);
    va_end(ap);
    return rv;
}

static int fail_errno(struct ds_raft_storage *st, const char *what, const char *path)
{
    int e = errno;
    return fail(st, DS_RAFT_STORAGE_EIO, "%s %s: %s", what, path, strerror(e));
}

static void notice(struct ds_raft_storage *st, const char *fmt, ...)
{
    char msg[DS_RAFT_STORAGE_ERRLEN];
    va_list ap;
    if (!st->opts.notice)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    st->opts.notice(st->opts.notice_arg, msg);
}

/* ---- paths and files ------------------------------------------------------------------------ */

/* out = "<dir>/<name>" */
static int path_of(struct ds_raft_storage *st, char out[PATH_MAX], const char *name)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", st->dir, name);
    if (n < 0 || n >= PATH_MAX)
        return fail(st, DS_RAFT_STORAGE_EINVAL, "path too long: %s/%s", st->dir, name);
    return 0;
}

static int seg_path(struct ds_raft_storage *st, char out[PATH_MAX], uint64_t first)
{
    char name[32];
    snprintf(name, sizeof name, "wal/%016" PRIu64 ".seg", first);
    return path_of(st, out, name);
}

static int pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

static int fsync_dir(struct ds_raft_storage *st, const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return fail_errno(st, "open", path);
    if (fsync(fd) != 0) {
        int rv = fail_errno(st, "fsync", path);
        close(fd);
        return rv;
    }
    close(fd);
    return 0;
}

static int fsync_wal(struct ds_raft_storage *st)
{
    char path[PATH_MAX];
    int rv = path_of(st, path, "wal");
    if (rv == 0)
        rv = fsync_dir(st, path);
    if (rv == 0)
        st->wal_dirty = 0;
    return rv;
}

/* Reads a whole file into a new buffer (*buf owned by the caller; NULL when empty). A missing
 * file gives *exists = 0 and 0. */
static int read_file(struct ds_raft_storage *st, const char *path, uint8_t **buf, size_t *len,
                     int *exists)
{
    struct stat sb;
    size_t got = 0;
    int rv = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    *buf = NULL;
    *len = 0;
    *exists = fd >= 0;
    if (fd < 0)
        return errno == ENOENT ? 0 : fail_errno(st, "open", path);
    if (fstat(fd, &sb) != 0) {
        rv = fail_errno(st, "fstat", path);
        goto err;
    }
    if (sb.st_size > 0 && !(*buf = malloc((size_t)sb.st_size))) {
        rv = fail(st, DS_RAFT_STORAGE_ENOMEM, "no memory to read %s", path);
        goto err;
    }
    while (got < (size_t)sb.st_size) {
        ssize_t r = read(fd, *buf + got, (size_t)sb.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rv = r < 0 ? fail_errno(st, "read", path) : fail(st, DS_RAFT_STORAGE_EIO, "read %s: short", path);
            goto err;
        }
        got += (size_t)r;
    }
    *len = got;
    close(fd);
    return 0;
err:
    close(fd);
    free(*buf);
    *buf = NULL;
    return rv;
}

/* Replaces <dir>/<name> atomically: write <name>.tmp, fsync, rename, fsync dir. */
static int write_atomic(struct ds_raft_storage *st, const char *name, const struct iovec *iov,
                        int niov)
{
    char tmp_name[64], tmp[PATH_MAX], dst[PATH_MAX];
    uint64_t off = 0;
    int fd = -1, rv;

    snprintf(tmp_name, sizeof tmp_name, "%s.tmp", name);
    if ((rv = path_of(st, tmp, tmp_name)) != 0 || (rv = path_of(st, dst, name)) != 0)
        return rv;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return fail_errno(st, "open", tmp);
    for (int i = 0; i < niov; i++) {
        if (pwrite_all(fd, iov[i].iov_base, iov[i].iov_len, off) != 0) {
            rv = fail_errno(st, "write", tmp);
            goto err;
        }
        off += iov[i].iov_len;
    }
    if (fsync(fd) != 0) {
        rv = fail_errno(st, "fsync", tmp);
        goto err;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, dst) != 0) {
        rv = fail_errno(st, "rename", tmp);
        goto err;
    }
    return fsync_dir(st, st->dir);
err:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return rv;
}

/* ---- hard state ----------------------------------------------------------------------------- */

static void hs_encode(uint8_t out[HS_SIZE], const struct ds_raft_hard_state *hs)
{
    memcpy(out, "DSHS", 4);
    put32(out + 4, FORMAT_VERSION);
    put64(out + 8, hs->term);
    put64(out + 16, hs->vote);
    put32(out + 24, ds_crc32c(0, out, 24));
}

static int hs_decode(struct ds_raft_storage *st, const uint8_t *p, size_t len,
                     struct ds_raft_hard_state *hs)
{
    if (len != HS_SIZE || memcmp(p, "DSHS", 4) != 0 || get32(p + 4) != FORMAT_VERSION ||
        get32(p + 24) != ds_crc32c(0, p, 24))
        return fail(st, DS_RAFT_STORAGE_ECORRUPT, "%s/hardstate: corrupt (size %zu, bad magic, "
                    "version or CRC)", st->dir, len);
    hs->term = get64(p + 8);
    hs->vote = get64(p + 16);
    return 0;
}

static int hs_load(struct ds_raft_storage *st)
{
    char path[PATH_MAX];
    uint8_t *buf;
    size_t len;
    int exists, rv;

    if ((rv = path_of(st, path, "hardstate")) != 0 || (rv = read_file(st, path, &buf, &len, &exists)))
        return rv;
    if (exists)
        rv = hs_decode(st, buf, len, &st->load.hard_state);
    free(buf);
    return rv;
}

int ds_raft_storage_set_hard_state(struct ds_raft_storage *st, const struct ds_raft_hard_state *hs)
{
    uint8_t rec[HS_SIZE];
    struct iovec iov = {.iov_base = rec, .iov_len = sizeof rec};

    hs_encode(rec, hs);
    return write_atomic(st, "hardstate", &iov, 1);
}

/* ---- snapshot ------------------------------------------------------------------------------- */

static int dup_bytes(struct ds_raft_storage *st, uint8_t **out, const uint8_t *p, uint64_t len)
{
    *out = NULL;
    if (len == 0)
        return 0;
    if (!(*out = malloc((size_t)len)))
        return fail(st, DS_RAFT_STORAGE_ENOMEM, "no memory for %" PRIu64 " bytes", len);
    memcpy(*out, p, (size_t)len);
    return 0;
}

static int snap_decode(struct ds_raft_storage *st, const uint8_t *p, size_t len,
                       struct ds_raft_snapshot *snap)
{
    uint64_t conf_len, data_len;
    int rv;

    if (len < SNAP_MIN || memcmp(p, "DSSN", 4) != 0 || get32(p + 4) != FORMAT_VERSION)
        return fail(st, DS_RAFT_STORAGE_ECORRUPT, "%s/snapshot: bad size or header", st->dir);
    conf_len = get32(p + 24);
    data_len = get64(p + 32);
    if (get64(p + 8) == 0 || get64(p + 16) == 0 || get32(p + 28) != 0 ||
        conf_len > len - SNAP_MIN || data_len != len - SNAP_MIN - conf_len)
        return fail(st, DS_RAFT_STORAGE_ECORRUPT, "%s/snapshot: bad header fields", st->dir);
    if (get32(p + len - 4) != ds_crc32c(0, p, len - 4))
        return fail(st, DS_RAFT_STORAGE_ECORRUPT, "%s/snapshot: CRC mismatch", st->dir);
    snap->index = get64(p + 8);
    snap->term = get64(p + 16);
    snap->conf_len = (uint32_t)conf_len;
    snap->data_len = data_len;
    if ((rv = dup_bytes(st, &snap->conf, p + SNAP_HDR, conf_len)) != 0 ||
        (rv = dup_bytes(st, &snap->data, p + SNAP_HDR + conf_len, data_len)) != 0)
        ds_raft_snapshot_free(snap);
    return rv;
}

/* Reads <dir>/snapshot into *snap (zeros when there is none). */
static int snap_read(struct ds_raft_storage *st, struct ds_raft_snapshot *snap, uint64_t *bytes)
{
    char path[PATH_MAX];
    uint8_t *buf;
    size_t len;
    int exists, rv;

    memset(snap, 0, sizeof *snap);
    if ((rv = path_of(st, path, "snapshot")) != 0 || (rv = read_file(st, path, &buf, &len, &exists)))
        return rv;
    if (exists)
        rv = snap_decode(st, buf, len, snap);
    free(buf);
    *bytes = len;
    return rv;
}

int ds_raft_storage_read_snapshot(struct ds_raft_storage *st, struct ds_raft_snapshot *snap)
{
    uint64_t bytes;
    return snap_read(st, snap, &bytes);
}

void ds_raft_snapshot_free(struct ds_raft_snapshot *snap)
{
    free(snap->conf);
    free(snap->data);
    memset(snap, 0, sizeof *snap);
}

/* ---- records -------------------------------------------------------------------------------- */

static uint32_t rec_crc(const uint8_t *p, uint32_t body_len)
{
    return ds_crc32c(ds_crc32c(0, p, 4), p + REC_HDR, body_len);
}

/* Decodes the record at p (avail bytes readable); returns NULL or why it is not a record. */
static const char *rec_decode(const struct ds_raft_storage *st, const uint8_t *p, size_t avail,
                              struct rec *r)
{
    uint32_t body;

    if (avail < REC_HDR)
        return "truncated record header";
    body = get32(p);
    if (body < REC_BODY_MIN || body - REC_BODY_MIN > st->opts.max_entry_size)
        return "record length out of range";
    if (body > avail - REC_HDR)
        return "truncated record";
    if (get32(p + 4) != rec_crc(p, body))
        return "CRC mismatch";
    r->term = get64(p + 8);
    r->index = get64(p + 16);
    r->type = p[24];
    r->len = body - REC_BODY_MIN;
    r->data = p + REC_MIN;
    r->size = REC_HDR + (size_t)body;
    if (r->type < DS_RAFT_ENTRY_NORMAL || r->type > DS_RAFT_ENTRY_CONFIG)
        return "bad entry type";
    return NULL;
}

/* Looks for a valid record at or after `from` whose index follows `last` (and could fit in the
 * bytes left): finding one means the damage before it is not a torn tail. */
static int rec_resync(const struct ds_raft_storage *st, const uint8_t *buf, size_t len, size_t from,
                      uint64_t last, size_t *found)
{
    uint64_t max_index = last + 1 + (len - from) / REC_MIN;
    struct rec r;

    for (size_t off = from; off + REC_MIN <= len; off++) {
        uint64_t index = get64(buf + off + 16);
        if (index <= last || index > max_index)
            continue;
        if (!rec_decode(st, buf + off, len - off, &r)) {
            *found = off;
            return 1;
        }
    }
    return 0;
}

static int buf_reserve(struct ds_raft_storage *st, size_t more)
{
    size_t cap = st->buf_cap ? st->buf_cap : 4096;
    uint8_t *nb;

    if (st->buf_len + more <= st->buf_cap)
        return 0;
    while (cap < st->buf_len + more)
        cap *= 2;
    if (!(nb = realloc(st->buf, cap)))
        return fail(st, DS_RAFT_STORAGE_ENOMEM, "no memory for a %zu-byte write buffer", cap);
    st->buf = nb;
    st->buf_cap = cap;
    return 0;
}

static int rec_encode(struct ds_raft_storage *st, const struct ds_raft_entry *e)
{
    uint8_t *p;
    int rv = buf_reserve(st, REC_MIN + (size_t)e->len);

    if (rv)
        return rv;
    p = st->buf + st->buf_len;
    put32(p, REC_BODY_MIN + e->len);
    put64(p + 8, e->term);
    put64(p + 16, e->index);
    p[24] = e->type;
    if (e->len)
        memcpy(p + REC_MIN, e->data, e->len);
    put32(p + 4, rec_crc(p, REC_BODY_MIN + e->len));
    st->buf_len += REC_MIN + (size_t)e->len;
    st->buf_last = e->index;
    return 0;
}

/* ---- segment list --------------------------------------------------------------------------- */

static struct seg *seg_last(struct ds_raft_storage *st)
{
    return st->nsegs ? &st->segs[st->nsegs - 1] : NULL;
}

static uint64_t next_index(const struct ds_raft_storage *st)
{
    return st->nsegs ? st->segs[st->nsegs - 1].last + 1 : st->snap_index + 1;
}

static int seg_push(struct ds_raft_storage *st, uint64_t first, uint64_t size)
{
    if (st->nsegs == st->segs_cap) {
        size_t cap = st->segs_cap ? st->segs_cap * 2 : 8;
        struct seg *ns = realloc(st->segs, cap * sizeof *ns);
        if (!ns)
            return fail(st, DS_RAFT_STORAGE_ENOMEM, "no memory for the segment list");
        st->segs = ns;
        st->segs_cap = cap;
    }
    st->segs[st->nsegs++] = (struct seg){.first = first, .last = first - 1, .size = size};
    return 0;
}

static void active_close(struct ds_raft_storage *st)
{
    if (st->active_fd >= 0)
        close(st->active_fd);
    st->active_fd = -1;
    st->active_dirty = 0;
    st->tail_dirty = 0;
    st->zeroed = 0;
}

static int active_open(struct ds_raft_storage *st)
{
    char path[PATH_MAX];
    int rv;

    if (st->active_fd >= 0 || st->nsegs == 0)
        return 0;
    if ((rv = seg_path(st, path, seg_last(st)->first)) != 0)
        return rv;
    st->active_fd = open(path, O_WRONLY | O_CLOEXEC);
    return st->active_fd < 0 ? fail_errno(st, "open", path) : 0;
}

/* Deletes segment i from disk and from the list. */
static int seg_remove(struct ds_raft_storage *st, size_t i)
{
    char path[PATH_MAX];
    int rv;

    if (i == st->nsegs - 1)
        active_close(st);
    if ((rv = seg_path(st, path, st->segs[i].first)) != 0)
        return rv;
    if (unlink(path) != 0)
        return fail_errno(st, "unlink", path);
    memmove(&st->segs[i], &st->segs[i + 1], (st->nsegs - i - 1) * sizeof *st->segs);
    st->nsegs--;
    st->wal_dirty = 1;
    return 0;
}

/* Keeps the invariant: the log is empty or reaches the snapshot (otherwise it is all covered). */
static int drop_if_behind(struct ds_raft_storage *st)
{
    int rv = 0;
    if (st->nsegs && seg_last(st)->last < st->snap_index)
        while (rv == 0 && st->nsegs)
            rv = seg_remove(st, st->nsegs - 1);
    return rv;
}

/* ---- open: recovery ------------------------------------------------------------------------- */

static int seg_name_parse(const char *name, uint64_t *first)
{
    uint64_t v = 0;

    if (strlen(name) != SEG_NAME_LEN || strcmp(name + 16, ".seg") != 0)
        return 0;
    for (int i = 0; i < 16; i++) {
        if (name[i] < '0' || name[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *first = v;
    return v > 0;
}

static int seg_cmp(const void *a, const void *b)
{
    const struct seg *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

static int segs_list(struct ds_raft_storage *st)
{
    char path[PATH_MAX];
    struct dirent *de;
    uint64_t first;
    int rv;
    DIR *d;

    if ((rv = path_of(st, path, "wal")) != 0)
        return rv;
    if (!(d = opendir(path)))
        return fail_errno(st, "opendir", path);
    while ((de = readdir(d)) != NULL)
        if (seg_name_parse(de->d_name, &first) && (rv = seg_push(st, first, 0)) != 0)
            break;
    closedir(d);
    if (rv == 0 && st->nsegs > 1)
        qsort(st->segs, st->nsegs, sizeof *st->segs, seg_cmp);
    return rv;
}

/* Removes the segments before the last one starting at or before snapshot + 1: all they hold is
 * covered by the snapshot (they may be back after a crash undid an unsynced compaction). */
static int segs_drop_covered(struct ds_raft_storage *st)
{
    size_t base = 0;
    int rv;

    if (st->nsegs == 0)
        return 0;
    if (st->segs[0].first > st->snap_index + 1)
        return fail(st, DS_RAFT_STORAGE_EGAP, "%s/wal/%016" PRIu64 ".seg: the log starts at index %"
                    PRIu64 " but the snapshot ends at %" PRIu64, st->dir, st->segs[0].first,
                    st->segs[0].first, st->snap_index);
    for (size_t i = 0; i < st->nsegs; i++)
        if (st->segs[i].first <= st->snap_index + 1)
            base = i;
    for (size_t i = 0; i < base; i++) {
        if ((rv = seg_remove(st, 0)) != 0)
            return rv;
        notice(st, "removed a log segment covered by the snapshot at index %" PRIu64, st->snap_index);
    }
    return 0;
}

/* Adds a record read at open to the load (entries after the snapshot only; Fig. 13 step 7). */
static int load_collect(struct ds_raft_storage *st, const struct rec *r)
{
    struct ds_raft_storage_load *l = &st->load;
    struct ds_raft_entry *e;

    if (r->index == st->snap_index && r->term != st->snap_term)
        st->conflict = 1;
    if (r->index <= st->snap_index || st->conflict)
        return 0;
    if (l->n_entries == st->load_cap) {
        size_t cap = st->load_cap ? st->load_cap * 2 : 256;
        struct ds_raft_entry *ne = realloc(l->entries, cap * sizeof *ne);
        if (!ne)
            return fail(st, DS_RAFT_STORAGE_ENOMEM, "no memory for %zu loaded entries", cap);
        l->entries = ne;
        st->load_cap = cap;
    }
    e = &l->entries[l->n_entries];
    *e = (struct ds_raft_entry){.term = r->term, .index = r->index, .type = r->type, .len = r->len};
    if (dup_bytes(st, &e->data, r->data, r->len) != 0)
        return DS_RAFT_STORAGE_ENOMEM;
    l->n_entries++;
    return 0;
}

static int seg_header_ok(const uint8_t *buf, size_t len, uint64_t first)
{
    return len >= SEG_HDR && memcmp(buf, "DSWL", 4) == 0 && get32(buf + 4) == FORMAT_VERSION &&
           get64(buf + 8) == first;
}

static int seg_cut(struct ds_raft_storage *st, const char *path, uint64_t size)
{
    int rv = 0, fd = open(path, O_WRONLY | O_CLOEXEC);

    if (fd < 0)
        return fail_errno(st, "open", path);
    if (ftruncate(fd, (off_t)size) != 0)
        rv = fail_errno(st, "ftruncate", path);
    else if (fdatasync(fd) != 0)
        rv = fail_errno(st, "fdatasync", path);
    close(fd);
    return rv;
}

/* The last segment has a bad header: torn at creation (removed) unless valid records follow. */
static int seg_bad_header(struct ds_raft_storage *st, const char *path, const uint8_t *buf,
                          size_t len)
{
    size_t found;

    if (rec_resync(st, buf, len, 0, seg_last(st)->first - 1, &found))
        return fail(st, DS_RAFT_STORAGE_ECORRUPT, "%s offset 0: bad segment header before a valid "
                    "record at offset %zu", path, found);
    notice(st, "%s: removed a segment torn at creation (%zu bytes)", path, len);
    return seg_remove(st, st->nsegs - 1);
}

/* A bad record at `off`: corruption unless it is the torn tail of the last segment. */
static int seg_bad_record(struct ds_raft_storage *st, size_t i, const char *path,
                          const uint8_t *buf, size_t len, size_t off, const char *why)
{
    size_t found;

    if (i + 1 < st->nsegs)
        return fail(st, DS_RAFT_STORAGE_ECORRUPT, "%s offset %zu: %s (in a segment before the last)",
                    path, off, why);
    if (rec_resync(st, buf, len, off + 1, st->segs[i].last, &found))
        return fail(st, DS_RAFT_STORAGE_ECORRUPT, "%s offset %zu: %s, followed by a valid record at "
                    "offset %zu", path, off, why, found);
    notice(st, "%s: dropped %zu bytes of torn or corrupt tail at offset %zu (%s)", path, len - off,
           off, why);
    return seg_cut(st, path, off);
}

static int all_zero(const uint8_t *p, size_t n)
{
    while (n && !*p)
        p++, n--;
    return n == 0;
}

static int seg_parse(struct ds_raft_storage *st, size_t i, const char *path, const uint8_t *buf,
                     size_t len)
{
    struct seg *s = &st->segs[i];
    size_t off = SEG_HDR;
    const char *why = NULL;
    struct rec r;
    int rv;

    while (off < len && !(why = rec_decode(st, buf + off, len - off, &r))) {
        if (r.index != s->last + 1)
            return fail(st, DS_RAFT_STORAGE_EGAP, "%s offset %zu: entry index %" PRIu64
                        ", expected %" PRIu64, path, off, r.index, s->last + 1);
        if ((rv = load_collect(st, &r)) != 0)
            return rv;
        s->last = r.index;
        off += r.size;
    }
    s->size = off;
    if (off < len && all_zero(buf + off, len - off)) { /* preallocated (or never written back) */
        if ((rv = seg_cut(st, path, off)) != 0)
            return rv;
    } else if (off < len && (rv = seg_bad_record(st, i, path, buf, len, off, why)) != 0) {
        return rv;
    }
    if (i + 1 < st->nsegs && s->last < s->first)
        return fail(st, DS_RAFT_STORAGE_ECORRUPT, "%s: empty segment before the last", path);
    return 0;
}

static int seg_load(struct ds_raft_storage *st, size_t i)
{
    char path[PATH_MAX];
    uint8_t *buf;
    size_t len;
    int exists, rv;

    if (i > 0 && st->segs[i].first != st->segs[i - 1].last + 1)
        return fail(st, DS_RAFT_STORAGE_EGAP, "%s/wal/%016" PRIu64 ".seg: starts at index %" PRIu64
                    ", expected %" PRIu64, st->dir, st->segs[i].first, st->segs[i].first,
                    st->segs[i - 1].last + 1);
    if ((rv = seg_path(st, path, st->segs[i].first)) != 0 ||
        (rv = read_file(st, path, &buf, &len, &exists)) != 0)
        return rv;
    if (!seg_header_ok(buf, len, st->segs[i].first))
        rv = i + 1 < st->nsegs ? fail(st, DS_RAFT_STORAGE_ECORRUPT, "%s offset 0: bad segment header",
                                      path)
                               : seg_bad_header(st, path, buf, len);
    else
        rv = seg_parse(st, i, path, buf, len);
    free(buf);
    return rv;
}

static int segs_load(struct ds_raft_storage *st)
{
    int rv;

    if ((rv = segs_list(st)) != 0 || (rv = segs_drop_covered(st)) != 0)
        return rv;
    for (size_t i = 0; i < st->nsegs; i++)
        if ((rv = seg_load(st, i)) != 0)
            return rv;
    if ((rv = drop_if_behind(st)) != 0 || (rv = active_open(st)) != 0)
        return rv;
    if (st->conflict) {
        notice(st, "the log disagrees with the snapshot at index %" PRIu64 ": dropped the entries "
               "after it", st->snap_index);
        return ds_raft_storage_truncate_suffix(st, st->snap_index + 1);
    }
    return 0;
}

/* ---- open: directory ------------------------------------------------------------------------ */

/* Creates path if missing and makes its entry durable in parent. */
static int mkdir_durable(struct ds_raft_storage *st, const char *path, const char *parent)
{
    if (mkdir(path, 0700) != 0)
        return errno == EEXIST ? 0 : fail_errno(st, "mkdir", path);
    return fsync_dir(st, parent);
}

static int dirs_create(struct ds_raft_storage *st)
{
    char parent[PATH_MAX], wal[PATH_MAX];
    char *slash;
    int rv;

    snprintf(parent, sizeof parent, "%s", st->dir);
    slash = strrchr(parent, '/');
    if (!slash)
        snprintf(parent, sizeof parent, ".");
    else if (slash == parent)
        parent[1] = '\0'; /* "/x": the parent is "/" */
    else
        *slash = '\0';
    if ((rv = mkdir_durable(st, st->dir, parent)) != 0 || (rv = path_of(st, wal, "wal")) != 0)
        return rv;
    return mkdir_durable(st, wal, st->dir);
}

static int lock_take(struct ds_raft_storage *st)
{
    char path[PATH_MAX];
    int rv;

    if ((rv = path_of(st, path, "LOCK")) != 0)
        return rv;
    st->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (st->lock_fd < 0)
        return fail_errno(st, "open", path);
    if (flock(st->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return errno == EWOULDBLOCK
                   ? fail(st, DS_RAFT_STORAGE_ELOCKED, "%s is in use by another process", st->dir)
                   : fail_errno(st, "flock", path);
    return 0;
}

static int temps_remove(struct ds_raft_storage *st)
{
    static const char *const names[] = {"hardstate.tmp", "snapshot.tmp"};
    char path[PATH_MAX];
    int rv;

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if ((rv = path_of(st, path, names[i])) != 0)
            return rv;
        if (unlink(path) == 0)
            notice(st, "%s: removed a leftover temporary file (interrupted write)", path);
        else if (errno != ENOENT)
            return fail_errno(st, "unlink", path);
    }
    return 0;
}

static int opts_apply(struct ds_raft_storage *st, const struct ds_raft_storage_opts *opts)
{
    if (opts)
        st->opts = *opts;
    if (st->opts.segment_size == 0)
        st->opts.segment_size = DS_RAFT_STORAGE_SEGMENT_SIZE_DEFAULT;
    if (st->opts.max_entry_size == 0)
        st->opts.max_entry_size = DS_RAFT_STORAGE_MAX_ENTRY_DEFAULT;
    if (st->opts.max_entry_size > UINT32_MAX - REC_MIN)
        return fail(st, DS_RAFT_STORAGE_EINVAL, "max_entry_size %" PRIu32 " too large",
                    st->opts.max_entry_size);
    return 0;
}

static int storage_load(struct ds_raft_storage *st)
{
    int rv;

    if ((rv = dirs_create(st)) != 0 || (rv = lock_take(st)) != 0 || (rv = temps_remove(st)) != 0 ||
        (rv = hs_load(st)) != 0 || (rv = snap_read(st, &st->load.snapshot, &st->snap_bytes)) != 0)
        return rv;
    st->snap_index = st->load.snapshot.index;
    st->snap_term = st->load.snapshot.term;
    return segs_load(st);
}

int ds_raft_storage_open(const char *dir, const struct ds_raft_storage_opts *opts,
                         struct ds_raft_storage **out, char errbuf[DS_RAFT_STORAGE_ERRLEN])
{
    struct ds_raft_storage *st = calloc(1, sizeof *st);
    int rv;

    *out = NULL;
    if (!st || !(st->dir = strdup(dir))) {
        free(st);
        if (errbuf)
            snprintf(errbuf, DS_RAFT_STORAGE_ERRLEN, "no memory to open %s", dir);
        return DS_RAFT_STORAGE_ENOMEM;
    }
    st->lock_fd = st->active_fd = -1;
    if ((rv = opts_apply(st, opts)) != 0 || (rv = storage_load(st)) != 0) {
        if (errbuf)
            snprintf(errbuf, DS_RAFT_STORAGE_ERRLEN, "%s", st->err);
        ds_raft_storage_close(st);
        return rv;
    }
    *out = st;
    return 0;
}

void ds_raft_storage_take_load(struct ds_raft_storage *st, struct ds_raft_storage_load *load)
{
    *load = st->load;
    memset(&st->load, 0, sizeof st->load);
    st->load_cap = 0;
}

void ds_raft_storage_load_free(struct ds_raft_storage_load *load)
{
    for (size_t i = 0; i < load->n_entries; i++)
        free(load->entries[i].data);
    free(load->entries);
    ds_raft_snapshot_free(&load->snapshot);
    memset(load, 0, sizeof *load);
}

void ds_raft_storage_close(struct ds_raft_storage *st)
{
    if (!st)
        return;
    active_close(st);
    if (st->lock_fd >= 0)
        close(st->lock_fd);
    ds_raft_storage_load_free(&st->load);
    free(st->segs);
    free(st->buf);
    free(st->dir);
    free(st);
}

/* ---- append and sync ------------------------------------------------------------------------ */

static int append_check(struct ds_raft_storage *st, const struct ds_raft_entry *entries, size_t n)
{
    uint64_t next = next_index(st);

    for (size_t i = 0; i < n; i++) {
        const struct ds_raft_entry *e = &entries[i];
        if (e->index != next + i)
            return fail(st, DS_RAFT_STORAGE_EINVAL, "append: entry %zu has index %" PRIu64
                        ", expected %" PRIu64, i, e->index, next + i);
        if (e->term == 0 || e->type < DS_RAFT_ENTRY_NORMAL || e->type > DS_RAFT_ENTRY_CONFIG ||
            e->len > st->opts.max_entry_size || (e->len && !e->data))
            return fail(st, DS_RAFT_STORAGE_EINVAL, "append: entry %" PRIu64 " has a bad term, "
                        "type, length or data", e->index);
    }
    return 0;
}

/* Cuts off what a failed write may have left past the end of the active segment. */
static int tail_repair(struct ds_raft_storage *st)
{
    if (!st->tail_dirty)
        return 0;
    if (ftruncate(st->active_fd, (off_t)seg_last(st)->size) != 0)
        return fail(st, DS_RAFT_STORAGE_EIO, "ftruncate of the active segment: %s", strerror(errno));
    st->tail_dirty = 0;
    st->zeroed = 0;
    return 0;
}

/* Zero-fills the active segment's file past end (where the records being written end), up to
 * the segment size.  Best effort: without the space the records are appended as they are. */
static void prealloc(struct ds_raft_storage *st, uint64_t end)
{
    static const uint8_t zeros[64 * 1024];
    uint64_t from = st->zeroed > seg_last(st)->size ? st->zeroed : seg_last(st)->size;
    uint64_t to = (end / PREALLOC_CHUNK + 1) * PREALLOC_CHUNK;

    if (to > st->opts.segment_size)
        to = st->opts.segment_size;
    st->zeroed = to > end ? to : end;
    while (from < to) {
        size_t n = to - from < sizeof zeros ? (size_t)(to - from) : sizeof zeros;
        if (pwrite_all(st->active_fd, zeros, n, from) != 0) {
            st->zeroed = st->opts.segment_size; /* no further attempt in this segment */
            return;
        }
        from += n;
    }
}

static int flush(struct ds_raft_storage *st)
{
    struct seg *s = seg_last(st);
    int rv;

    if (st->buf_len == 0)
        return 0;
    if ((rv = tail_repair(st)) != 0)
        return rv;
    if (st->opts.preallocate && s->size + st->buf_len > st->zeroed)
        prealloc(st, s->size + st->buf_len);
    if (pwrite_all(st->active_fd, st->buf, st->buf_len, s->size) != 0) {
        st->tail_dirty = 1;
        st->buf_len = 0;
        return fail(st, DS_RAFT_STORAGE_EIO, "write of segment %016" PRIu64 ".seg: %s", s->first,
                    strerror(errno));
    }
    s->size += st->buf_len;
    s->last = st->buf_last;
    st->buf_len = 0;
    st->active_dirty = 1;
    st->gen++;
    return 0;
}

int ds_raft_storage_sync(struct ds_raft_storage *st)
{
    int rv;

    if ((rv = tail_repair(st)) != 0)
        return rv;
    if (st->active_dirty && fdatasync(st->active_fd) != 0)
        return fail(st, DS_RAFT_STORAGE_EIO, "fdatasync of the active segment: %s", strerror(errno));
    st->active_dirty = 0;
    return st->wal_dirty ? fsync_wal(st) : 0;
}

int ds_raft_storage_sync_begin(struct ds_raft_storage *st, int *fd, uint64_t *gen)
{
    *fd = -1;
    *gen = st->gen;
    if (st->tail_dirty || st->wal_dirty)
        return ds_raft_storage_sync(st);
    if (!st->active_dirty)
        return 0;
    if ((*fd = fcntl(st->active_fd, F_DUPFD_CLOEXEC, 0)) < 0)
        return fail(st, DS_RAFT_STORAGE_EIO, "dup of the active segment: %s", strerror(errno));
    return 0;
}

void ds_raft_storage_sync_end(struct ds_raft_storage *st, uint64_t gen)
{
    if (gen == st->gen)
        st->active_dirty = 0;
}

/* Starts segment `first`, after making the full one durable (a crash must never tear a segment
 * that is not the last). */
static int roll(struct ds_raft_storage *st, uint64_t first)
{
    uint8_t hdr[SEG_HDR];
    char path[PATH_MAX];
    int rv, fd;

    if (st->active_fd >= 0 && st->zeroed > seg_last(st)->size) { /* only the last has zeros */
        if (ftruncate(st->active_fd, (off_t)seg_last(st)->size) != 0)
            return fail(st, DS_RAFT_STORAGE_EIO, "ftruncate of the full segment: %s",
                        strerror(errno));
        st->active_dirty = 1;
    }
    if ((rv = ds_raft_storage_sync(st)) != 0 || (rv = seg_path(st, path, first)) != 0)
        return rv;
    active_close(st);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return fail_errno(st, "create", path);
    memcpy(hdr, "DSWL", 4);
    put32(hdr + 4, FORMAT_VERSION);
    put64(hdr + 8, first);
    if (pwrite_all(fd, hdr, sizeof hdr, 0) != 0 || (rv = seg_push(st, first, SEG_HDR)) != 0) {
        rv = rv ? rv : fail_errno(st, "write", path);
        close(fd);
        unlink(path);
        return rv;
    }
    st->active_fd = fd;
    st->active_dirty = 1;
    st->wal_dirty = 1;
    st->gen++;
    return 0;
}

static int needs_roll(const struct ds_raft_storage *st, size_t rec_size)
{
    const struct seg *s = st->nsegs ? &st->segs[st->nsegs - 1] : NULL;
    uint64_t used;

    if (!s)
        return 1;
    used = s->size + st->buf_len;
    return used > SEG_HDR && used + rec_size > st->opts.segment_size;
}

int ds_raft_storage_append(struct ds_raft_storage *st, const struct ds_raft_entry *entries, size_t n)
{
    int rv;

    if ((rv = append_check(st, entries, n)) != 0)
        return rv;
    st->buf_len = 0;
    for (size_t i = 0; i < n; i++) {
        if (needs_roll(st, REC_MIN + (size_t)entries[i].len) &&
            ((rv = flush(st)) != 0 || (rv = roll(st, entries[i].index)) != 0))
            return rv;
        if ((rv = rec_encode(st, &entries[i])) != 0)
            return rv;
        if (st->buf_len >= FLUSH_AT && (rv = flush(st)) != 0)
            return rv;
    }
    return flush(st);
}

/* ---- truncation, compaction, snapshots ------------------------------------------------------ */

/* Finds the offset of entry `index` in the last segment. */
static int seg_locate(struct ds_raft_storage *st, uint64_t index, uint64_t *off_out)
{
    char path[PATH_MAX];
    const char *why = NULL;
    uint8_t *buf;
    size_t len, off = SEG_HDR;
    struct rec r;
    int exists, rv;

    if ((rv = seg_path(st, path, seg_last(st)->first)) != 0 ||
        (rv = read_file(st, path, &buf, &len, &exists)) != 0)
        return rv;
    if (len > seg_last(st)->size)
        len = (size_t)seg_last(st)->size;
    while (off < len && !(why = rec_decode(st, buf + off, len - off, &r)) && r.index < index)
        off += r.size;
    free(buf);
    if (off >= len || why || r.index != index)
        return fail(st, DS_RAFT_STORAGE_ECORRUPT, "%s offset %zu: entry %" PRIu64 " not found (%s)",
                    path, off, index, why ? why : "index mismatch");
    *off_out = off;
    return 0;
}

static int seg_shorten(struct ds_raft_storage *st, uint64_t from_index)
{
    uint64_t off;
    int rv;

    if ((rv = seg_locate(st, from_index, &off)) != 0 || (rv = active_open(st)) != 0)
        return rv;
    if (ftruncate(st->active_fd, (off_t)off) != 0 || fdatasync(st->active_fd) != 0)
        return fail(st, DS_RAFT_STORAGE_EIO, "truncating segment %016" PRIu64 ".seg: %s",
                    seg_last(st)->first, strerror(errno));
    seg_last(st)->size = off;
    seg_last(st)->last = from_index - 1;
    st->active_dirty = 0;
    st->tail_dirty = 0;
    st->zeroed = 0;
    return 0;
}

int ds_raft_storage_truncate_suffix(struct ds_raft_storage *st, uint64_t from_index)
{
    int rv = 0;

    if (from_index == 0)
        return fail(st, DS_RAFT_STORAGE_EINVAL, "truncate_suffix: index 0");
    if (st->nsegs == 0 || from_index > seg_last(st)->last)
        return 0;
    while (rv == 0 && st->nsegs && seg_last(st)->first >= from_index)
        rv = seg_remove(st, st->nsegs - 1);
    if (rv == 0 && st->nsegs && seg_last(st)->last >= from_index)
        rv = seg_shorten(st, from_index);
    if (rv == 0)
        rv = drop_if_behind(st);
    if (rv == 0)
        rv = active_open(st);
    if (rv == 0 && st->wal_dirty)
        rv = fsync_wal(st);
    return rv;
}

int ds_raft_storage_compact(struct ds_raft_storage *st, uint64_t up_to_index)
{
    int rv = 0;

    if (up_to_index > st->snap_index)
        return fail(st, DS_RAFT_STORAGE_EINVAL, "compact: index %" PRIu64 " is past the snapshot "
                    "at %" PRIu64, up_to_index, st->snap_index);
    while (rv == 0 && st->nsegs > 1 && st->segs[0].last <= up_to_index)
        rv = seg_remove(st, 0);
    return rv;
}

int ds_raft_storage_save_snapshot(struct ds_raft_storage *st, uint64_t index, uint64_t term,
                                  const uint8_t *conf, uint32_t conf_len, const uint8_t *data,
                                  uint64_t data_len)
{
    uint8_t hdr[SNAP_HDR], crc[4];
    struct iovec iov[4];
    uint32_t c;
    int rv;

    if (index == 0 || term == 0 || index < st->snap_index || (conf_len && !conf) ||
        (data_len && !data))
        return fail(st, DS_RAFT_STORAGE_EINVAL, "save_snapshot: bad index %" PRIu64 " (current %"
                    PRIu64 "), term or buffers", index, st->snap_index);
    memcpy(hdr, "DSSN", 4);
    put32(hdr + 4, FORMAT_VERSION);
    put64(hdr + 8, index);
    put64(hdr + 16, term);
    put32(hdr + 24, conf_len);
    put32(hdr + 28, 0);
    put64(hdr + 32, data_len);
    c = ds_crc32c(ds_crc32c(ds_crc32c(0, hdr, SNAP_HDR), conf, conf_len), data, (size_t)data_len);
    put32(crc, c);
    iov[0] = (struct iovec){.iov_base = hdr, .iov_len = SNAP_HDR};
    iov[1] = (struct iovec){.iov_base = (void *)conf, .iov_len = conf_len};
    iov[2] = (struct iovec){.iov_base = (void *)data, .iov_len = (size_t)data_len};
    iov[3] = (struct iovec){.iov_base = crc, .iov_len = sizeof crc};
    if ((rv = write_atomic(st, "snapshot", iov, 4)) != 0)
        return rv;
    st->snap_index = index;
    st->snap_term = term;
    st->snap_bytes = SNAP_MIN + conf_len + data_len;
    return drop_if_behind(st);
}

/* ---- status --------------------------------------------------------------------------------- */

void ds_raft_storage_stats(const struct ds_raft_storage *st, struct ds_raft_storage_stats *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < st->nsegs; i++)
        out->log_bytes += st->segs[i].size;
    out->snapshot_bytes = st->snap_bytes;
    out->first_index = st->nsegs ? st->segs[0].first : next_index(st);
    out->last_index = next_index(st) - 1;
    out->snapshot_index = st->snap_index;
    out->snapshot_term = st->snap_term;
    out->segments = (uint32_t)st->nsegs;
}

const char *ds_raft_storage_errmsg(const struct ds_raft_storage *st)
{
    return st->err;
}

const char *ds_raft_storage_strerror(int rv)
{
    static const char *const names[] = {
        [DS_RAFT_STORAGE_OK] = "ok",
        [DS_RAFT_STORAGE_EIO] = "i/o error",
        [DS_RAFT_STORAGE_ENOMEM] = "out of memory",
        [DS_RAFT_STORAGE_ECORRUPT] = "corrupt data on disk",
        [DS_RAFT_STORAGE_EGAP] = "gap in the log indexes",
        [DS_RAFT_STORAGE_EINVAL] = "invalid argument",
        [DS_RAFT_STORAGE_ELOCKED] = "directory in use",
    };
    if (rv < 0 || (size_t)rv >= sizeof names / sizeof names[0])
        return "unknown error";
    return names[rv];
}
