/* Unit tests of the Raft durable storage (src/raft/storage.c) and CRC32C: round trips, crash and
 * corruption recovery, snapshots, truncation and compaction, on a temporary directory. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "core/crc32c.h"
#include "core/prng.h"
#include "raft/storage.h"

#define SEG_HDR 16
#define REC_MIN 25

static char test_root[512];
static char test_dir[600];
static int notices;
static char notice_text[4096]; /* all notices since fresh_dir, one a line */

/* ---- fixture ------------------------------------------------------------------------------- */

static void count_notice(void *arg, const char *msg)
{
    (void)arg;
    notices++;
    if (strlen(notice_text) + strlen(msg) + 2 < sizeof notice_text)
        strcat(strcat(notice_text, msg), "\n");
}

static struct ds_raft_storage_opts small_opts(void)
{
    struct ds_raft_storage_opts o = {.segment_size = 2048, .max_entry_size = 4096,
                                     .notice = count_notice};
    return o;
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    char sub[1024];

    if (!d) {
        unlink(path);
        return;
    }
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
        remove_tree(sub);
    }
    closedir(d);
    rmdir(path);
}

/* A fresh, empty data directory path (the storage creates it). */
static const char *fresh_dir(const char *name)
{
    snprintf(test_dir, sizeof test_dir, "%s/%s", test_root, name);
    remove_tree(test_dir);
    notices = 0;
    notice_text[0] = '\0';
    return test_dir;
}

static struct ds_raft_storage *open_ok(const char *dir, const struct ds_raft_storage_opts *o)
{
    struct ds_raft_storage *st = NULL;
    char err[DS_RAFT_STORAGE_ERRLEN] = "";
    int rv = ds_raft_storage_open(dir, o, &st, err);
    CHECKF(rv == 0, "open %s: %s: %s", dir, ds_raft_storage_strerror(rv), err);
    return st;
}

/* Entry `index` of a deterministic history: data derived from (index, term), length 0..300. */
static struct ds_raft_entry make_entry(uint64_t index, uint64_t term, uint8_t *buf)
{
    struct ds_prng p;
    struct ds_raft_entry e = {.term = term, .index = index, .type = DS_RAFT_ENTRY_NORMAL};

    ds_prng_seed(&p, index * 1000003u + term);
    e.len = (uint32_t)ds_prng_below(&p, 301);
    if (index % 17 == 0)
        e.type = DS_RAFT_ENTRY_CONFIG;
    for (uint32_t i = 0; i < e.len; i++)
        buf[i] = (uint8_t)ds_prng_next(&p);
    e.data = e.len ? buf : NULL;
    return e;
}

static int entry_is(const struct ds_raft_entry *e, uint64_t index, uint64_t term)
{
    uint8_t buf[512];
    struct ds_raft_entry want = make_entry(index, term, buf);

    return e->index == index && e->term == term && e->type == want.type && e->len == want.len &&
           (e->len == 0 || memcmp(e->data, want.data, e->len) == 0);
}

/* Appends entries first..last of `term` in batches of `batch`, syncing after each batch. */
static int append_range(struct ds_raft_storage *st, uint64_t first, uint64_t last, uint64_t term,
                        size_t batch)
{
    struct ds_raft_entry es[64];
    static uint8_t bufs[64][512];
    int rv = 0;

    for (uint64_t i = first; i <= last && rv == 0;) {
        size_t n = 0;
        for (; n < batch && n < 64 && i <= last; n++, i++)
            es[n] = make_entry(i, term, bufs[n]);
        rv = ds_raft_storage_append(st, es, n);
        if (rv == 0)
            rv = ds_raft_storage_sync(st);
    }
    return rv;
}

/* Checks the load holds entries first..last, with terms from term_of. */
static int load_has(const struct ds_raft_storage_load *l, uint64_t first, uint64_t last,
                    uint64_t (*term_of)(uint64_t))
{
    if (l->n_entries != last + 1 - first) {
        fprintf(stderr, "loaded %zu entries, expected %" PRIu64 "\n", l->n_entries, last + 1 - first);
        return 0;
    }
    for (uint64_t i = first; i <= last; i++)
        if (!entry_is(&l->entries[i - first], i, term_of(i))) {
            fprintf(stderr, "entry %" PRIu64 " differs\n", i);
            return 0;
        }
    return 1;
}

static uint64_t term_one(uint64_t index)
{
    (void)index;
    return 1;
}

static int reopen_has(const char *dir, uint64_t first, uint64_t last)
{
    struct ds_raft_storage_opts o = small_opts();
    struct ds_raft_storage *st = open_ok(dir, &o);
    struct ds_raft_storage_load l;
    int ok;

    if (!st)
        return 0;
    ds_raft_storage_take_load(st, &l);
    ok = load_has(&l, first, last, term_one);
    ds_raft_storage_load_free(&l);
    ds_raft_storage_close(st);
    return ok;
}

/* ---- files --------------------------------------------------------------------------------- */

static int name_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Names of the segment files, sorted (up to max); returns how many. */
static int segment_files(const char *dir, char names[][32], int max)
{
    char wal[700];
    struct dirent *de;
    int n = 0;
    DIR *d;

    snprintf(wal, sizeof wal, "%s/wal", dir);
    if (!(d = opendir(wal)))
        return 0;
    while ((de = readdir(d)) != NULL)
        if (strstr(de->d_name, ".seg") && strlen(de->d_name) < 32 && n < max)
            memcpy(names[n++], de->d_name, strlen(de->d_name) + 1);
    closedir(d);
    qsort(names, (size_t)n, 32, name_cmp);
    return n;
}

/* Path of the k-th segment (k < 0 counts from the end). */
static const char *segment_path(const char *dir, int k)
{
    static char path[800];
    char names[256][32];
    int n = segment_files(dir, names, 256);

    if (k < 0)
        k += n;
    if (k < 0 || k >= n)
        return NULL;
    snprintf(path, sizeof path, "%s/wal/%s", dir, names[k]);
    return path;
}

static long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

/* Offsets of the records in a segment file (ends[i]: where record i ends, going by its length
 * field, which may be past the end of the file); returns how many. */
static int record_ends(const char *path, long *offs, long *ends, int max)
{
    FILE *f = fopen(path, "rb");
    uint8_t h[4];
    long off = SEG_HDR;
    int n = 0;

    if (!f)
        return 0;
    while (n < max && fseek(f, off, SEEK_SET) == 0 && fread(h, 1, 4, f) == 4) {
        offs[n] = off;
        off += 8 + (long)((uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 |
                          (uint32_t)h[3] << 24);
        ends[n++] = off;
    }
    fclose(f);
    return n;
}

static int record_offsets(const char *path, long *offs, int max)
{
    long ends[1024];
    return record_ends(path, offs, ends, max < 1024 ? max : 1024);
}

static void write_at(const char *path, long off, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, p, n, off) == (ssize_t)n);
    if (fd >= 0)
        close(fd);
}

static void flip_bit(const char *path, long off, int bit)
{
    uint8_t b = 0;
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0 && pread(fd, &b, 1, off) == 1);
    b ^= (uint8_t)(1u << bit);
    CHECK(fd >= 0 && pwrite(fd, &b, 1, off) == 1);
    if (fd >= 0)
        close(fd);
}

static void copy_file(const char *from, const char *to)
{
    static uint8_t buf[1 << 16];
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    size_t n;

    CHECK(in && out);
    while (in && out && (n = fread(buf, 1, sizeof buf, in)) > 0)
        CHECK(fwrite(buf, 1, n, out) == n);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
}

/* A valid record (correct CRC) for index/term with a 3-byte body; returns its size. */
static size_t forge_record(uint8_t *p, uint64_t index, uint64_t term)
{
    uint32_t body = 17 + 3;
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(body >> (8 * i));
    for (int i = 0; i < 8; i++) {
        p[8 + i] = (uint8_t)(term >> (8 * i));
        p[16 + i] = (uint8_t)(index >> (8 * i));
    }
    p[24] = DS_RAFT_ENTRY_NORMAL;
    memcpy(p + 25, "abc", 3);
    uint32_t c = ds_crc32c(ds_crc32c(0, p, 4), p + 8, body);
    for (int i = 0; i < 4; i++)
        p[4 + i] = (uint8_t)(c >> (8 * i));
    return 8 + body;
}

/* Opens, expecting failure rv; returns the error text. */
static const char *open_fails(const char *dir, int want)
{
    static char err[DS_RAFT_STORAGE_ERRLEN];
    struct ds_raft_storage_opts o = small_opts();
    struct ds_raft_storage *st = NULL;
    int rv = ds_raft_storage_open(dir, &o, &st, err);

    CHECKF(rv == want, "open gave %d (%s), wanted %d", rv, err, want);
    CHECK(st == NULL);
    ds_raft_storage_close(st);
    return err;
}

/* A directory holding entries 1..n of term 1, synced and closed. */
static const char *dir_with_log(const char *name, uint64_t n)
{
    const char *dir = fresh_dir(name);
    struct ds_raft_storage_opts o = small_opts();
    struct ds_raft_storage *st = open_ok(dir, &o);

    if (st) {
        CHECK(append_range(st, 1, n, 1, 7) == 0);
        ds_raft_storage_close(st);
    }
    return dir;
}

/* ---- CRC32C -------------------------------------------------------------------------------- */

static uint32_t crc32c_bitwise(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
    }
    return ~c;
}

static void crc32c_matches_the_standard_test_vectors(void)
{
    uint8_t b[32];

    CHECK(ds_crc32c(0, "123456789", 9) == 0xE3069283u);
    memset(b, 0, sizeof b);
    CHECK(ds_crc32c(0, b, 32) == 0x8A9136AAu); /* RFC 3720 B.4 */
    memset(b, 0xff, sizeof b);
    CHECK(ds_crc32c(0, b, 32) == 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)i;
    CHECK(ds_crc32c(0, b, 32) == 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)(31 - i);
    CHECK(ds_crc32c(0, b, 32) == 0x113FDB5Cu);
    CHECK(ds_crc32c(0, b, 0) == 0);
}

static void crc32c_chains_and_agrees_with_the_bitwise_definition(void)
{
    static uint8_t buf[1000];
    struct ds_prng p;

    ds_prng_seed(&p, 42);
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)ds_prng_next(&p);
    for (int t = 0; t < 200; t++) {
        size_t off = ds_prng_below(&p, 16), len = ds_prng_below(&p, sizeof buf - 16);
        size_t cut = len ? ds_prng_below(&p, len) : 0;
        uint32_t whole = ds_crc32c(0, buf + off, len);
        CHECK(whole == crc32c_bitwise(buf + off, len));
        CHECK(ds_crc32c(ds_crc32c(0, buf + off, cut), buf + off + cut, len - cut) == whole);
    }
}

/* ---- round trips --------------------------------------------------------------------------- */

static void fresh_directory_opens_empty(void)
{
    struct ds_raft_storage_opts o = small_opts();
    struct ds_raft_storage *st = open_ok(fresh_dir("fresh"), &o);
    struct ds_raft_storage_stats s;
    struct ds_raft_storage_load l;

    REQUIRE(st);
    ds_raft_storage_take_load(st, &l);
    CHECK(l.n_entries == 0 && l.snapshot.index == 0 && l.hard_state.term == 0 && l.hard_state.vote == 0);
    ds_raft_storage_stats(st, &s);
    CHECK(s.first_index == 1 && s.last_index == 0 && s.log_bytes == 0 && s.segments == 0);
    CHECK(notices == 0);
    ds_raft_storage_load_free(&l);
    ds_raft_storage_close(st);
}

static void appended_entries_survive_reopen_across_several_segments(void)
{
    struct ds_raft_storage_opts o = small_opts();
    const char *dir = fresh_dir("roundtrip");
    struct ds_raft_storage *st = open_ok(dir, &o);
    struct ds_raft_storage_stats s;
    char names[64][32];

    REQUIRE(st);
    CHECK(append_range(st, 1, 200, 1, 13) == 0);
    ds_raft_storage_stats(st, &s);
    CHECK(s.first_index == 1 && s.last_index == 200 && s.segments >= 3);
    CHECK(s.segments == (uint32_t)segment_files(dir, names, 64));
    CHECK(!strcmp(names[0], "0000000000000001.seg"));
    ds_raft_storage_close(st);
    CHECK(reopen_has(dir, 1, 200));
    CHECK(notices == 0);
}

static void unsynced_appends_are_readable_after_a_clean_close(void)
{
    struct ds_raft_storage_opts o = small_opts();
    const char *dir = fresh_dir("nosync");
    struct ds_raft_storage *st = open_ok(dir, &o);
    struct ds_raft_entry es[40];
    static uint8_t bufs[40][512];

    REQUIRE(st);
    for (int i = 0; i < 40; i++)
        es[i] = make_entry((uint64_t)i + 1, 1, bufs[i]);
    CHECK(ds_raft_storage_append(st, es, 40) == 0);
    ds_raft_storage_close(st);
    CHECK(reopen_has(dir, 1, 40));
}

/* The split sync: a descriptor to fdatasync elsewhere while appends go on; a new segment is
 * synced at once (its directory entry too); the descriptor outlives the segment's closing. */
static void split_sync_hands_out_a_descriptor_that_outlives_a_segment_roll(void)
{
    struct ds_raft_storage_opts o = small_opts();
    const char *dir = fresh_dir("splitsync");
    struct ds_raft_storage *st = open_ok(dir, &o);
    struct ds_raft_entry e;
    uint8_t buf[512];
    uint64_t gen, gen2;
    int fd = 0, fd2 = 0;

    REQUIRE(st);
    CHECK(ds_raft_storage_sync_begin(st, &fd, &gen) == 0 && fd == -1); /* nothing written */
    e = make_entry(1, 1, buf);
    CHECK(ds_raft_storage_append(st, &e, 1) == 0);
    CHECK(ds_raft_storage_sync_begin(st, &fd, &gen) == 0 && fd == -1); /* new segment: done here */
    e = make_entry(2, 1, buf);
    CHECK(ds_raft_storage_append(st, &e, 1) == 0);
    CHECK(ds_raft_storage_sync_begin(st, &fd, &gen) == 0 && fd >= 0);
    e = make_entry(3, 1, buf); /* appended while the sync of fd runs: gen moves on */
    CHECK(ds_raft_storage_append(st, &e, 1) == 0);
    CHECK(append_range(st, 4, 60, 1, 7) == 0); /* rolls: the segment of fd is closed */
    CHECK(fd >= 0 && fdatasync(fd) == 0);
    if (fd >= 0)
        close(fd);
    ds_raft_storage_sync_end(st, gen); /* stale: entries came after it */
    e = make_entry(61, 1, buf);
    CHECK(ds_raft_storage_append(st, &e, 1) == 0);
    CHECK(ds_raft_storage_sync_begin(st, &fd2, &gen2) == 0 && fd2 >= 0 && gen2 != gen);
    CHECK(fd2 >= 0 && fdatasync(fd2) == 0);
    if (fd2 >= 0)
        close(fd2);
    ds_raft_storage_sync_end(st, gen2);
    CHECK(ds_raft_storage_sync_begin(st, &fd, &gen) == 0 && fd == -1); /* all durable */
    ds_raft_storage_close(st);
    CHECK(reopen_has(dir, 1, 61));
    CHECK(notices == 0);
}

static void hard_state_round_trips_and_is_replaced(void)
{
    struct ds_raft_storage_opts o = small_opts();
    const char *dir = fresh_dir("hardstate");
    struct ds_raft_storage *st = open_ok(dir, &o);
    struct ds_raft_hard_state hs = {.term = 7, .vote = 3};
    struct ds_raft_storage_load l;

    REQUIRE(st);
    CHECK(ds_raft_storage_set_hard_state(st, &hs) == 0);
    hs = (struct ds_raft_hard_state){.term = UINT64_MAX, .vote = 0};
    CHECK(ds_raft_storage_set_hard_state(st, &hs) == 0);
    ds_raft_storage_close(st);
    st = open_ok(dir, &o);
    REQUIRE(st);
    ds_raft_storage_take_load(st, &l);
    CHECK(l.hard_state.term == UINT64_MAX && l.hard_state.vote == 0);
    ds_raft_storage_close(st);
}

static void second_open_of_a_directory_is_refused(void)
{
    struct ds_raft_storage_opts o = small_opts();
    const char *dir = fresh_dir("locked");
    struct ds_raft_storage *st = open_ok(dir, &o);

    REQUIRE(st);
    open_fails(dir, DS_RAFT_STORAGE_ELOCKED);
    ds_raft_storage_close(st);
    ds_raft_storage_close(open_ok(dir, &o));
}

static void append_rejects_bad_entries(void)
{
    struct ds_raft_storage_opts o = small_opts();
    struct ds_raft_storage *st = open_ok(fresh_dir("badappend"), &o);
    uint8_t buf[512];
    struct ds_raft_entry e = make_entry(2, 1, buf);

    REQUIRE(st);
    CHECK(ds_raft_storage_append(st, &e, 1) == DS_RAFT_STORAGE_EINVAL); /* gap: log is empty */
    CHECK(strstr(ds_raft_storage_errmsg(st), "expected 1"));
    e = make_entry(1, 1, buf);
    e.type = 0;
    CHECK(ds_raft_storage_append(st, &e, 1) == DS_RAFT_STORAGE_EINVAL);
    e = make_entry(1, 0, buf);
    CHECK(ds_raft_storage_append(st, &e, 1) == DS_RAFT_STORAGE_EINVAL);
    e = make_entry(1, 1, buf);
    e.len = o.max_entry_size + 1;
    CHECK(ds_raft_storage_append(st, &e, 1) == DS_RAFT_STORAGE_EINVAL);
    e = make_entry(1, 1, buf);
    CHECK(ds_raft_storage_append(st, &e, 0) == 0);
    CHECK(ds_raft_storage_append(st, &e, 1) == 0);
    CHECK(ds_raft_storage_append(st, &e, 1) == DS_RAFT_STORAGE_EINVAL); /* index 1 again */
    ds_raft_storage_close(st);
}

/* ---- torn and corrupt logs ----------------------------------------------------------------- */

static void torn_tail_is_dropped_on_reopen(void)
{
    const char *dir = dir_with_log("torn", 100);
    const char *last = segment_path(dir, -1);
    long offs[256];
    int n;

    REQUIRE(last);
    n = record_offsets(last, offs, 256);
    REQUIRE(n > 1);
    CHECK(truncate(last, offs[n - 1] + 11) == 0); /* mid-record */
    CHECK(reopen_has(dir, 1, 99));
    CHECK(notices == 1 && strstr(notice_text, "torn"));
    CHECK(file_size(last) == offs[n - 1]);
    CHECK(reopen_has(dir, 1, 99) && notices == 1); /* repaired: no further notice */
}

static void torn_record_header_is_dropped_on_reopen(void)
{
    const char *dir = dir_with_log("tornhdr", 60);
    const char *last = segment_path(dir, -1);
    long offs[256];
    int n;

    REQUIRE(last);
    n = record_offsets(last, offs, 256);
    REQUIRE(n > 1);
    CHECK(truncate(last, offs[n - 1] + 5) == 0);
    CHECK(reopen_has(dir, 1, 59));
}

/* Zeros after the last record: a preallocated segment (or a filesystem that extended the size
 * but not the data).  Cut at open, without a notice: it is no damage. */
static void zero_filled_tail_is_dropped_on_reopen(void)
{
    const char *dir = dir_with_log("zeros", 50);
    const char *last = segment_path(dir, -1);
    static const uint8_t zeros[4096];
    long size;

    REQUIRE(last);
    size = file_size(last);
    write_at(last, size, zeros, sizeof zeros);
    CHECK(reopen_has(dir, 1, 50));
    CHECK(notices == 0 && file_size(last) == size);
}

static void bit_flip_in_the_last_record_drops_it(void)
{
    const char *dir = dir_with_log("fliplast", 80);
    const char *last = segment_path(dir, -1);
    long offs[256];
    int n;

    REQUIRE(last);
    n = record_offsets(last, offs, 256);
    REQUIRE(n > 1);
    flip_bit(last, offs[n - 1] + 20, 3); /* inside the index field */
    CHECK(reopen_has(dir, 1, 79));
    CHECK(notices == 1 && strstr(notice_text, "CRC mismatch"));
}

static void bit_flip_in_a_middle_record_refuses_open_naming_the_file(void)
{
    const char *dir = dir_with_log("flipmid", 80);
    const char *last = segment_path(dir, -1);
    const char *err;
    long offs[256];
    int n;

    REQUIRE(last);
    n = record_offsets(last, offs, 256);
    REQUIRE(n > 2);
    flip_bit(last, offs[n - 2] + REC_MIN - 1, 0); /* the type byte */
    err = open_fails(dir, DS_RAFT_STORAGE_ECORRUPT);
    CHECKF(strstr(err, last) && strstr(err, "offset") && strstr(err, "followed by a valid record"),
           "%s", err);
}

static void bit_flip_in_an_earlier_segment_refuses_open(void)
{
    const char *dir = dir_with_log("flipearly", 120);
    char first[800];
    const char *err;
    long offs[256];
    int n;

    REQUIRE(segment_path(dir, 0));
    snprintf(first, sizeof first, "%s", segment_path(dir, 0));
    REQUIRE(segment_path(dir, 1));
    n = record_offsets(first, offs, 256);
    REQUIRE(n > 0);
    flip_bit(first, offs[n - 1] + 30, 6); /* the last record of a full segment */
    err = open_fails(dir, DS_RAFT_STORAGE_ECORRUPT);
    CHECKF(strstr(err, first) && strstr(err, "before the last"), "%s", err);
}

static void hostile_record_lengths_are_bounded(void)
{
    static const uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff}, negative[4] = {0, 0, 0, 0x80},
                         tiny[4] = {3, 0, 0, 0};
    const char *dir = dir_with_log("hostile", 60);
    const char *last = segment_path(dir, -1);
    char path[800];
    long offs[256];
    int n;

    REQUIRE(last);
    snprintf(path, sizeof path, "%s", last);
    n = record_offsets(path, offs, 256);
    REQUIRE(n > 3);
    write_at(path, offs[n - 1], huge, 4); /* at the tail: a torn record */
    CHECK(reopen_has(dir, 1, 59));
    write_at(path, offs[n - 3], negative, 4); /* before valid records: corruption */
    CHECK(strstr(open_fails(dir, DS_RAFT_STORAGE_ECORRUPT), "length out of range"));
    write_at(path, offs[n - 3], tiny, 4);
    CHECK(strstr(open_fails(dir, DS_RAFT_STORAGE_ECORRUPT), "length out of range"));
}

static void index_gap_inside_a_segment_refuses_open(void)
{
    const char *dir = dir_with_log("gaprec", 30);
    const char *last = segment_path(dir, -1);
    uint8_t rec[64];
    size_t n = forge_record(rec, 32, 1); /* 31 is missing */

    REQUIRE(last);
    write_at(last, file_size(last), rec, n);
    CHECK(strstr(open_fails(dir, DS_RAFT_STORAGE_EGAP), "expected 31"));
}

static void missing_middle_segment_refuses_open(void)
{
    const char *dir = dir_with_log("gapseg", 150);
    const char *mid = segment_path(dir, 1);

    REQUIRE(segment_path(dir, 2));
    CHECK(unlink(mid) == 0);
    CHECK(strstr(open_fails(dir, DS_RAFT_STORAGE_EGAP), "expected"));
}

static void log_starting_after_index_one_without_snapshot_refuses_open(void)
{
    const char *dir = dir_with_log("gapstart", 150);

    CHECK(unlink(segment_path(dir, 0)) == 0);
    CHECK(strstr(open_fails(dir, DS_RAFT_STORAGE_EGAP), "the log starts at index"));
}

static void segment_torn_at_creation_is_removed(void)
{
    const char *dir = dir_with_log("torncreate", 20);
    char path[800];
    static const uint8_t junk[5] = {'D', 'S', 0, 0, 0};

    snprintf(path, sizeof path, "%s/wal/0000000000000021.seg", dir);
    int fd = creat(path, 0600);

    CHECK(fd >= 0 && write(fd, junk, sizeof junk) == (ssize_t)sizeof junk);
    if (fd >= 0)
        close(fd);
    CHECK(reopen_has(dir, 1, 20));
    CHECK(notices == 1 && file_size(path) == -1);
}

static void segment_with_bad_header_before_valid_records_refuses_open(void)
{
    const char *dir = dir_with_log("badheader", 20);
    const char *last = segment_path(dir, -1);

    REQUIRE(last);
    flip_bit(last, 1, 0);
    CHECK(strstr(open_fails(dir, DS_RAFT_STORAGE_ECORRUPT), "bad segment header"));
}

static void corrupt_hard_state_refuses_open(void)
{
    const char *dir = fresh_dir("badhs");
    struct ds_raft_storage_opts o = small_opts();
    struct ds_raft_storage *st = open_ok(dir, &o);
    struct ds_raft_hard_state hs = {.term = 2, .vote = 1};
    char path[800];

    REQUIRE(st);
    CHECK(ds_raft_storage_set_hard_state(st, &hs) == 0);
    ds_raft_storage_close(st);
    snprintf(path, sizeof path, "%s/hardstate", dir);
    flip_bit(path, 9, 1);
    CHECK(strstr(open_fails(dir, DS_RAFT_STORAGE_ECORRUPT), "hardstate"));
    CHECK(truncate(path, 27) == 0);
    CHECK(strstr(open_fails(dir, DS_RAFT_STORAGE_ECORRUPT), "size 27"));
}

static void failed_write_leaves_a_consistent_log(void)
{
    struct ds_raft_storage_opts o = small_opts();
    const char *dir = fresh_dir("efbig");
    struct ds_raft_storage *st;
    struct rlimit old, lim;
    struct ds_raft_entry es[8];
    static uint8_t bufs[8][4096];

    o.segment_size = 1 << 20;
    st = open_ok(dir, &o);
    REQUIRE(st);
    CHECK(append_range(st, 1, 10, 1, 10) == 0);
    for (int i = 0; i < 8; i++) {
        es[i] = (struct ds_raft_entry){.term = 1, .index = 11 + (uint64_t)i,
                                       .type = DS_RAFT_ENTRY_NORMAL, .len = 4096, .data = bufs[i]};
        memset(bufs[i], i + 1, 4096);
    }
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
    lim = old;
    lim.rlim_cur = (rlim_t)file_size(segment_path(dir, -1)) + 5000; /* room for one entry */
    signal(SIGXFSZ, SIG_IGN);
    REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    CHECK(ds_raft_storage_append(st, es, 8) == DS_RAFT_STORAGE_EIO);
    CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
    CHECK(strstr(ds_raft_storage_errmsg(st), "write"));
    CHECK(ds_raft_storage_append(st, es, 8) == 0); /* nothing was stored: retry from 11 */
    CHECK(ds_raft_storage_sync(st) == 0);
    ds_raft_storage_close(st);
    st = open_ok(dir, &o);
    REQUIRE(st);
    struct ds_raft_storage_load l;
    ds_raft_storage_take_load(st, &l);
    CHECK(l.n_entries == 18 && l.entries[17].index == 18 && l.entries[17].len == 4096 &&
          l.entries[17].data[4095] == 8);
    CHECK(notices == 0);
    ds_raft_storage_load_free(&l);
    ds_raft_storage_close(st);
}

/* ---- truncation, snapshots, compaction ----------------------------------------------------- */

static uint64_t term_after_29_is_two(uint64_t index)
{
    return index < 30 ? 1 : 2;
}

static void truncated_suffix_is_replaced_by_new_entries(void)
{
    struct ds_raft_storage_opts o = small_opts();
    const char *dir = fresh_dir("truncate");
    struct ds_raft_storage *st = open_ok(dir, &o);
    struct ds_raft_storage_load l;
    struct ds_raft_storage_stats s;

    REQUIRE(st);
    CHECK(append_range(st, 1, 120, 1, 9) == 0);
    CHECK(ds_raft_storage_truncate_suffix(st, 0) == DS_RAFT_STORAGE_EINVAL);
    CHECK(ds_raft_storage_truncate_suffix(st, 121) == 0);
    CHECK(ds_raft_storage_truncate_suffix(st, 30) == 0); /* spans segments */
    ds_raft_storage_stats(st, &s);
    CHECK(s.last_index == 29);
    CHECK(append_range(st, 30, 45, 2, 4) == 0);
    ds_raft_storage_close(st);
    st = open_ok(dir, &o);
    REQUIRE(st);
    ds_raft_storage_take_load(st, &l);
    CHECK(load_has(&l, 1, 45, term_after_29_is_two));
    ds_raft_storage_load_free(&l);
    CHECK(ds_raft_storage_truncate_suffix(st, 1) == 0);
    ds_raft_storage_stats(st, &s);
    CHECK(s.segments == 0 && s.last_index == 0);
    CHECK(append_range(st, 1, 5, 3, 5) == 0);
    ds_raft_storage_close(st);
    st = open_ok(dir, &o);
    REQUIRE(st);
    ds_raft_storage_take_load(st, &l);
    CHECK(l.n_entries == 5 && entry_is(&l.entries[4], 5, 3));
    ds_raft_storage_load_free(&l);
    ds_raft_storage_close(st);
}

static void restart_loads_snapshot_and_log_suffix(void)
{
    struct ds_raft_storage_opts o = small_opts();
    const char *dir = fresh_dir("snaprestart");
    struct ds_raft_storage *st = open_ok(dir, &o);
    struct ds_raft_storage_load l;
    struct ds_raft_snapshot snap;

    REQUIRE(st);
    CHECK(append_range(st, 1, 100, 1, 10) == 0);
    CHECK(ds_raft_storage_save_snapshot(st, 60, 1, (const uint8_t *)"conf", 4,
                                        (const uint8_t *)"state@60", 8) == 0);
    CHECK(ds_raft_storage_read_snapshot(st, &snap) == 0);
    CHECK(snap.index == 60 && snap.data_len == 8 && !memcmp(snap.data, "state@60", 8));
    ds_raft_snapshot_free(&snap);
    ds_raft_storage_close(st);
    st = open_ok(dir, &o);
    REQUIRE(st);
    ds_raft_storage_take_load(st, &l);
    CHECK(l.snapshot.index == 60 && l.snapshot.term == 1 && l.snapshot.conf_len == 4 &&
          !memcmp(l.snapshot.conf, "conf", 4) && l.snapshot.data_len == 8 &&
          !memcmp(l.snapshot.data, "state@60", 8));
    CHECK(load_has(&l, 61, 100, term_one));
    ds_raft_storage_load_free(&l);
    CHECK(append_range(st, 101, 110, 1, 10) == 0);
    ds_raft_storage_close(st);
    st = open_ok(dir, &o);
    REQUIRE(st);
    ds_raft_storage_take_load(st, &l);
    CHECK(l.snapshot.index == 60 && load_has(&l, 61, 110, term_one));
    ds_raft_storage_load_free(&l);
    ds_raft_storage_close(st);
}

static void crash_before_snapshot_rename_keeps_the_old_snapshot(void)
{
    struct ds_raft_storage_opts o = small_opts();
    char dir[600], newer[600], tmp[700];
    struct ds_raft_storage *st;
    struct ds_raft_storage_load l;

    snprintf(newer, sizeof newer, "%s", dir_with_log("snapnewer", 40));
    st = open_ok(newer, &o);
    REQUIRE(st);
    CHECK(ds_raft_storage_save_snapshot(st, 40, 1, NULL, 0, (const uint8_t *)"new", 3) == 0);
    ds_raft_storage_close(st);
    snprintf(dir, sizeof dir, "%s", dir_with_log("snapcrash", 40));
    st = open_ok(dir, &o);
    REQUIRE(st);
    CHECK(ds_raft_storage_save_snapshot(st, 20, 1, NULL, 0, (const uint8_t *)"old", 3) == 0);
    ds_raft_storage_close(st);
    /* The crash: the new snapshot was written in full as snapshot.tmp, never renamed. */
    snprintf(tmp, sizeof tmp, "%s/snapshot.tmp", dir);
    snprintf(newer + strlen(newer), sizeof newer - strlen(newer), "/snapshot");
    copy_file(newer, tmp);
    notices = 0;
    notice_text[0] = '\0';
    st = open_ok(dir, &o);
    REQUIRE(st);
    ds_raft_storage_take_load(st, &l);
    CHECK(l.snapshot.index == 20 && l.snapshot.data_len == 3 && !memcmp(l.snapshot.data, "old", 3));
    CHECK(load_has(&l, 21, 40, term_one));
    CHECK(strstr(notice_text, "snapshot.tmp") && file_size(tmp) == -1);
    ds_raft_storage_load_free(&l);
    ds_raft_storage_close(st);
}

static void corrupt_snapshot_refuses_open(void)
{
    struct ds_raft_storage_opts o = small_opts();
    const char *dir = dir_with_log("snapbad", 10);
    struct ds_raft_storage *st = open_ok(dir, &o);
    char path[800];

    REQUIRE(st);
    CHECK(ds_raft_storage_save_snapshot(st, 5, 1, (const uint8_t *)"c", 1, (const uint8_t *)"d", 1) == 0);
    ds_raft_storage_close(st);
    snprintf(path, sizeof path, "%s/snapshot", dir);
    flip_bit(path, 41, 2);
    CHECK(strstr(open_fails(dir, DS_RAFT_STORAGE_ECORRUPT), "CRC mismatch"));
    flip_bit(path, 41, 2);
    flip_bit(path, 24, 7); /* conf_len past the end of the file */
    CHECK(strstr(open_fails(dir, DS_RAFT_STORAGE_ECORRUPT), "bad header fields"));
    CHECK(truncate(path, 10) == 0);
    CHECK(strstr(open_fails(dir, DS_RAFT_STORAGE_ECORRUPT), "bad size or header"));
}

static void compaction_deletes_only_fully_covered_segments(void)
{
    struct ds_raft_storage_opts o = small_opts();
    const char *dir = fresh_dir("compact");
    struct ds_raft_storage *st = open_ok(dir, &o);
    struct ds_raft_storage_stats before, after;
    struct ds_raft_storage_load l;
    long offs[256];
    uint64_t second_first;

    REQUIRE(st);
    CHECK(append_range(st, 1, 150, 1, 10) == 0);
    ds_raft_storage_stats(st, &before);
    REQUIRE(before.segments >= 4);
    second_first = strtoull(strrchr(segment_path(dir, 1), '/') + 1, NULL, 10);
    /* The snapshot ends one entry into the second segment: only the first is covered. */
    CHECK(ds_raft_storage_compact(st, 1) == DS_RAFT_STORAGE_EINVAL);
    CHECK(ds_raft_storage_save_snapshot(st, second_first, 1, NULL, 0, NULL, 0) == 0);
    CHECK(ds_raft_storage_compact(st, second_first + 1) == DS_RAFT_STORAGE_EINVAL);
    CHECK(ds_raft_storage_compact(st, second_first) == 0);
    CHECK(ds_raft_storage_sync(st) == 0);
    ds_raft_storage_stats(st, &after);
    CHECK(after.segments == before.segments - 1 && after.first_index == second_first);
    CHECK(after.log_bytes < before.log_bytes && after.last_index == 150);
    CHECK(record_offsets(segment_path(dir, 0), offs, 256) > 1);
    /* Everything: the last segment stays. */
    CHECK(ds_raft_storage_save_snapshot(st, 150, 1, NULL, 0, NULL, 0) == 0);
    CHECK(ds_raft_storage_compact(st, 150) == 0);
    ds_raft_storage_stats(st, &after);
    CHECK(after.segments == 1 && after.last_index == 150 && after.snapshot_index == 150);
    ds_raft_storage_close(st);
    st = open_ok(dir, &o);
    REQUIRE(st);
    ds_raft_storage_take_load(st, &l);
    CHECK(l.snapshot.index == 150 && l.n_entries == 0);
    ds_raft_storage_load_free(&l);
    CHECK(append_range(st, 151, 152, 1, 2) == 0);
    ds_raft_storage_close(st);
    CHECK(reopen_has(dir, 151, 152));
}

static void segments_brought_back_by_a_crash_after_compaction_are_removed(void)
{
    struct ds_raft_storage_opts o = small_opts();
    char dir[600], saved[800], first[800];
    struct ds_raft_storage *st;
    uint64_t third_first;

    snprintf(dir, sizeof dir, "%s", dir_with_log("uncompact", 150));
    REQUIRE(segment_path(dir, 3));
    snprintf(first, sizeof first, "%s", segment_path(dir, 0));
    snprintf(saved, sizeof saved, "%s/saved", test_root);
    copy_file(first, saved);
    third_first = strtoull(strrchr(segment_path(dir, 2), '/') + 1, NULL, 10);
    st = open_ok(dir, &o);
    REQUIRE(st);
    CHECK(ds_raft_storage_save_snapshot(st, third_first, 1, NULL, 0, NULL, 0) == 0);
    CHECK(ds_raft_storage_compact(st, third_first) == 0);
    ds_raft_storage_close(st);
    rename(saved, first); /* the first unlink did not reach the disk, the second did */
    notices = 0;
    notice_text[0] = '\0';
    CHECK(reopen_has(dir, third_first + 1, 150));
    CHECK(notices == 1 && strstr(notice_text, "covered by the snapshot") && file_size(first) == -1);
}

static void snapshot_beyond_the_log_discards_it(void)
{
    struct ds_raft_storage_opts o = small_opts();
    const char *dir = dir_with_log("snapahead", 30);
    struct ds_raft_storage *st = open_ok(dir, &o);
    struct ds_raft_storage_stats s;
    uint8_t buf[512];
    struct ds_raft_entry e = make_entry(31, 1, buf);

    REQUIRE(st);
    CHECK(ds_raft_storage_save_snapshot(st, 500, 4, NULL, 0, (const uint8_t *)"x", 1) == 0);
    CHECK(ds_raft_storage_save_snapshot(st, 499, 4, NULL, 0, NULL, 0) == DS_RAFT_STORAGE_EINVAL);
    ds_raft_storage_stats(st, &s);
    CHECK(s.segments == 0 && s.log_bytes == 0 && s.first_index == 501 && s.last_index == 500);
    CHECK(ds_raft_storage_append(st, &e, 1) == DS_RAFT_STORAGE_EINVAL);
    CHECK(append_range(st, 501, 520, 1, 6) == 0);
    ds_raft_storage_close(st);
    CHECK(reopen_has(dir, 501, 520));
}

static void log_disagreeing_with_the_snapshot_is_dropped_at_open(void)
{
    struct ds_raft_storage_opts o = small_opts();
    const char *dir = dir_with_log("snapconflict", 40);
    struct ds_raft_storage *st = open_ok(dir, &o);
    struct ds_raft_storage_stats s;
    struct ds_raft_storage_load l;

    REQUIRE(st);
    /* An InstallSnapshot at 25 from a term-2 leader; the crash came before truncate_suffix. */
    CHECK(ds_raft_storage_save_snapshot(st, 25, 2, NULL, 0, NULL, 0) == 0);
    ds_raft_storage_close(st);
    notices = 0;
    notice_text[0] = '\0';
    st = open_ok(dir, &o);
    REQUIRE(st);
    ds_raft_storage_take_load(st, &l);
    CHECK(l.snapshot.index == 25 && l.n_entries == 0);
    CHECK(strstr(notice_text, "disagrees"));
    ds_raft_storage_stats(st, &s);
    CHECK(s.last_index == 25);
    ds_raft_storage_load_free(&l);
    ds_raft_storage_close(st);
}

/* ---- preallocation ------------------------------------------------------------------------- */

static struct ds_raft_storage_opts prealloc_opts(void)
{
    struct ds_raft_storage_opts o = small_opts();
    o.preallocate = 1;
    return o;
}

/* Where the records of a segment file written by the storage end (zeros follow, or nothing). */
static long content_end(const char *path)
{
    long offs[1024], ends[1024];
    int n = record_ends(path, offs, ends, 1024);
    long end = SEG_HDR;
    for (int i = 0; i < n && ends[i] - offs[i] > 8 + 16 && ends[i] <= file_size(path); i++)
        end = ends[i];
    return end;
}

static void preallocated_segments_hold_zeros_only_at_the_end_of_the_last(void)
{
    struct ds_raft_storage_opts o = prealloc_opts();
    const char *dir = fresh_dir("prealloc");
    struct ds_raft_storage *st = open_ok(dir, &o);
    char names[64][32];
    int n;

    REQUIRE(st);
    CHECK(append_range(st, 1, 120, 1, 9) == 0);
    n = segment_files(dir, names, 64);
    CHECK(n >= 3);
    for (int k = 0; k < n - 1; k++) /* a full segment is cut to its records when the next starts */
        CHECK(file_size(segment_path(dir, k)) == content_end(segment_path(dir, k)));
    CHECK(file_size(segment_path(dir, -1)) == (long)o.segment_size); /* zero-filled ahead */
    CHECK(content_end(segment_path(dir, -1)) < (long)o.segment_size);
    CHECK(ds_raft_storage_truncate_suffix(st, 100) == 0);
    CHECK(append_range(st, 100, 130, 2, 4) == 0);
    ds_raft_storage_close(st);
    {
        struct ds_raft_storage_load l;
        st = open_ok(dir, &o);
        REQUIRE(st);
        ds_raft_storage_take_load(st, &l);
        CHECK(l.n_entries == 130 && entry_is(&l.entries[98], 99, 1) &&
              entry_is(&l.entries[99], 100, 2) && entry_is(&l.entries[129], 130, 2));
        ds_raft_storage_load_free(&l);
        ds_raft_storage_close(st);
    }
    CHECK(notices == 0);
    CHECK(file_size(segment_path(dir, -1)) == content_end(segment_path(dir, -1)));
}

/* A crash in a preallocated segment: a record half written before the zeros is a torn tail. */
static void torn_record_before_preallocated_zeros_is_dropped(void)
{
    struct ds_raft_storage_opts o = prealloc_opts();
    const char *dir = fresh_dir("prealloc-torn");
    struct ds_raft_storage *st = open_ok(dir, &o);
    static const uint8_t zeros[64];
    const char *last;
    long offs[256];
    int n;

    REQUIRE(st);
    CHECK(append_range(st, 1, 40, 1, 40) == 0);
    ds_raft_storage_close(st);
    last = segment_path(dir, -1);
    REQUIRE(last);
    n = record_offsets(last, offs, 256);
    REQUIRE(n > 2);
    long end = content_end(last);
    /* the last record's tail never reached the disk */
    int k = 0;
    while (k < n && offs[k] < end)
        k++;
    REQUIRE(k > 1);
    write_at(last, offs[k - 1] + 10, zeros, sizeof zeros);
    CHECK(file_size(last) > end);
    struct ds_raft_storage_opts so = small_opts();
    st = open_ok(dir, &so);
    REQUIRE(st);
    struct ds_raft_storage_load l;
    ds_raft_storage_take_load(st, &l);
    CHECK(load_has(&l, 1, 39, term_one)); /* all but the torn one */
    ds_raft_storage_load_free(&l);
    ds_raft_storage_close(st);
    CHECK(notices == 1 && strstr(notice_text, "torn"));
}

/* ---- random histories ---------------------------------------------------------------------- */

static int history_prealloc; /* random histories with opts.preallocate */

/* What the log must hold: entries snap+1..last with these terms. */
struct model {
    uint64_t terms[4096];
    uint64_t last, snap, term;
};

/* Closes and reopens *st, then compares what it loads with the model. */
static int reopen_matches(struct ds_raft_storage **st, const char *dir, const struct model *m)
{
    struct ds_raft_storage_opts o = history_prealloc ? prealloc_opts() : small_opts();
    struct ds_raft_storage_load l;
    int ok;

    ds_raft_storage_close(*st);
    if (!(*st = open_ok(dir, &o)))
        return 0;
    ds_raft_storage_take_load(*st, &l);
    ok = l.snapshot.index == m->snap && l.n_entries == m->last - m->snap;
    for (size_t i = 0; ok && i < l.n_entries; i++)
        ok = entry_is(&l.entries[i], m->snap + 1 + i, m->terms[m->snap + 1 + i]);
    ds_raft_storage_load_free(&l);
    return ok;
}

/* Records of a segment file that end at or before `cut`. */
static uint64_t complete_records(const char *path, long cut)
{
    long offs[1024], ends[1024];
    int n = record_ends(path, offs, ends, 1024);
    uint64_t k = 0;

    for (int i = 0; i < n; i++)
        if (ends[i] <= cut)
            k++;
    return k;
}

/* Records of a segment file that end at or before `cut`, or whose bytes past it are zeros
 * already (zeroing them changes nothing). */
static uint64_t records_surviving_zeros(const char *path, long cut)
{
    long offs[1024], ends[1024];
    int n = record_ends(path, offs, ends, 1024);
    uint64_t k = complete_records(path, cut);
    FILE *f = fopen(path, "rb");
    int c = 0;

    for (int i = 0; f && i < n; i++) {
        if (offs[i] >= cut || ends[i] <= cut)
            continue;
        if (fseek(f, cut, SEEK_SET) != 0)
            break;
        long off = cut;
        while (off < ends[i] && (c = fgetc(f)) == 0)
            off++;
        if (off == ends[i])
            k++;
    }
    if (f)
        fclose(f);
    return k;
}

/* Appends n entries without sync, then "crashes": the last segment loses a random part of what
 * was written since its last sync, and may gain zeros (a filesystem that extended the size but
 * not the data); preallocated, the part lost reads as zeros.  Updates the model with the entries
 * that survive. */
static int crash_during_append(struct ds_raft_storage *st, const char *dir, struct model *m,
                               struct ds_prng *p, uint64_t n)
{
    static const uint8_t zeros[300];
    static uint8_t bufs[64][512];
    struct ds_raft_entry es[64];
    char before[800] = "", after[800];
    long synced = 0, size, cut;
    uint64_t from = m->last + 1, survive = 0;

    if (segment_path(dir, -1)) {
        snprintf(before, sizeof before, "%s", segment_path(dir, -1));
        synced = history_prealloc ? content_end(before) : file_size(before);
    }
    m->term += ds_prng_below(p, 2);
    for (uint64_t i = 0; i < n; i++)
        es[i] = make_entry(from + i, m->term, bufs[i]);
    if (ds_raft_storage_append(st, es, n) != 0)
        return 0;
    snprintf(after, sizeof after, "%s", segment_path(dir, -1));
    if (strcmp(before, after) != 0)
        synced = 0; /* a new segment: all of it is unsynced */
    size = history_prealloc ? content_end(after) : file_size(after);
    cut = synced + (long)ds_prng_below(p, (uint64_t)(size - synced) + 1);
    if (history_prealloc) {
        survive = records_surviving_zeros(after, cut);
        for (long off = cut; off < size; off += (long)sizeof zeros)
            write_at(after, off, zeros, (size_t)(size - off) < sizeof zeros ? (size_t)(size - off)
                                                                            : sizeof zeros);
    } else {
        if (truncate(after, cut) != 0)
            return 0;
        if (ds_prng_below(p, 3) == 0)
            write_at(after, cut, zeros, 1 + ds_prng_below(p, sizeof zeros));
    }
    for (uint64_t i = 0; i < n; i++)
        m->terms[from + i] = m->term;
    if (!history_prealloc)
        survive = complete_records(after, cut);
    m->last = strtoull(strrchr(after, '/') + 1, NULL, 10) - 1 + survive;
    if (m->last < from - 1)
        m->last = from - 1;
    return 1;
}

/* Random appends, truncations, snapshots, compactions, crashes and reopens against a model. */
static int random_history_matches_model(uint64_t seed)
{
    struct ds_raft_storage_opts o = history_prealloc ? prealloc_opts() : small_opts();
    const char *dir = fresh_dir("random");
    struct ds_raft_storage *st = open_ok(dir, &o);
    static struct model m;
    struct ds_prng p;
    int ok = 1;

    memset(&m, 0, sizeof m);
    m.term = 1;
    ds_prng_seed(&p, seed);
    for (int step = 0; step < 60 && st && ok && m.last < 4000; step++) {
        uint64_t r = ds_prng_below(&p, 10), n = 1 + ds_prng_below(&p, 30);
        if (r < 4) {
            m.term += ds_prng_below(&p, 2);
            ok = append_range(st, m.last + 1, m.last + n, m.term, n) == 0; /* one sync */
            for (uint64_t i = m.last + 1; i <= m.last + n; i++)
                m.terms[i] = m.term;
            m.last += n;
        } else if (r < 6 && m.last > m.snap) {
            uint64_t cut = m.snap + 1 + ds_prng_below(&p, m.last - m.snap);
            ok = ds_raft_storage_truncate_suffix(st, cut) == 0;
            m.last = cut - 1;
        } else if (r < 7 && m.last > m.snap) {
            m.snap += 1 + ds_prng_below(&p, m.last - m.snap);
            ok = ds_raft_storage_save_snapshot(st, m.snap, m.terms[m.snap], NULL, 0, NULL, 0) == 0 &&
                 ds_raft_storage_compact(st, m.snap - ds_prng_below(&p, m.snap)) == 0;
        } else if (r < 9) {
            ok = crash_during_append(st, dir, &m, &p, n) && reopen_matches(&st, dir, &m);
        } else {
            ok = reopen_matches(&st, dir, &m);
        }
    }
    if (!st || !ok)
        fprintf(stderr, "seed %" PRIu64 ": mismatch (last %" PRIu64 ", snapshot %" PRIu64 "): %s\n",
                seed, m.last, m.snap, st ? ds_raft_storage_errmsg(st) : "open failed");
    ds_raft_storage_close(st);
    return st && ok;
}

static void random_histories_reload_exactly_what_was_written(void)
{
    unsigned long seeds = check_seeds(10);
    const char *env = getenv("DS_SEED");
    uint64_t base = env && *env ? strtoull(env, NULL, 10) : 1;

    for (history_prealloc = 0; history_prealloc < 2; history_prealloc++)
        for (unsigned long i = 0; i < (env && *env ? 1ul : seeds); i++)
            CHECKF(random_history_matches_model(base + i),
                   "replay: DS_SEED=%" PRIu64 " build/t/unit/raft/test_storage (%s)", base + i,
                   history_prealloc ? "preallocated" : "appended");
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");

    snprintf(test_root, sizeof test_root, "%s/dsync-storage-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(test_root)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(crc32c_matches_the_standard_test_vectors);
    RUN(crc32c_chains_and_agrees_with_the_bitwise_definition);
    RUN(fresh_directory_opens_empty);
    RUN(appended_entries_survive_reopen_across_several_segments);
    RUN(unsynced_appends_are_readable_after_a_clean_close);
    RUN(split_sync_hands_out_a_descriptor_that_outlives_a_segment_roll);
    RUN(preallocated_segments_hold_zeros_only_at_the_end_of_the_last);
    RUN(torn_record_before_preallocated_zeros_is_dropped);
    RUN(hard_state_round_trips_and_is_replaced);
    RUN(second_open_of_a_directory_is_refused);
    RUN(append_rejects_bad_entries);
    RUN(torn_tail_is_dropped_on_reopen);
    RUN(torn_record_header_is_dropped_on_reopen);
    RUN(zero_filled_tail_is_dropped_on_reopen);
    RUN(bit_flip_in_the_last_record_drops_it);
    RUN(bit_flip_in_a_middle_record_refuses_open_naming_the_file);
    RUN(bit_flip_in_an_earlier_segment_refuses_open);
    RUN(hostile_record_lengths_are_bounded);
    RUN(index_gap_inside_a_segment_refuses_open);
    RUN(missing_middle_segment_refuses_open);
    RUN(log_starting_after_index_one_without_snapshot_refuses_open);
    RUN(segment_torn_at_creation_is_removed);
    RUN(segment_with_bad_header_before_valid_records_refuses_open);
    RUN(corrupt_hard_state_refuses_open);
    RUN(failed_write_leaves_a_consistent_log);
    RUN(truncated_suffix_is_replaced_by_new_entries);
    RUN(restart_loads_snapshot_and_log_suffix);
    RUN(crash_before_snapshot_rename_keeps_the_old_snapshot);
    RUN(corrupt_snapshot_refuses_open);
    RUN(compaction_deletes_only_fully_covered_segments);
    RUN(segments_brought_back_by_a_crash_after_compaction_are_removed);
    RUN(snapshot_beyond_the_log_discards_it);
    RUN(log_disagreeing_with_the_snapshot_is_dropped_at_open);
    RUN(random_histories_reload_exactly_what_was_written);
    remove_tree(test_root);
    return check_summary();
}
