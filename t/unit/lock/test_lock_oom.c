/* Allocation-failure tests of the lock table: every allocation of apply, snapshot, restore and
 * encode is made to fail in turn; the call must report DS_LOCK_ENOMEM and leave a table that can
 * still be snapshotted and freed (ASan checks for leaks and bad accesses).  Linked with
 * -Wl,--wrap for malloc, calloc, realloc and strdup. */
#include "check.h"
#include "lock/lock_helpers.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);

static long fail_at = -1; /* allocation number that fails, -1 = none */
static long allocations;

static int fails(void)
{
    return fail_at >= 0 && allocations++ == fail_at;
}

void *__wrap_malloc(size_t n) { return fails() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t size) { return fails() ? NULL : __real_calloc(n, size); }
void *__wrap_realloc(void *p, size_t n) { return fails() ? NULL : __real_realloc(p, n); }
char *__wrap_strdup(const char *s) { return fails() ? NULL : __real_strdup(s); }

static void arm(long k)
{
    fail_at = k;
    allocations = 0;
}

/* Did the armed failure happen?  Disarms. */
static int disarm(void)
{
    int hit = fail_at >= 0 && allocations > fail_at;
    fail_at = -1;
    return hit;
}

/* A table where x is read by a and b with c queued, y is written by d with e and f queued, w is
 * read by g with h (whose wait ends first) and i queued. */
static struct ds_lock_table *base_table(void)
{
    struct ds_lock_table *t = ds_lock_table_new();
    acq(t, "x", "a", SH, WAIT);
    acq(t, "x", "b", SH, WAIT);
    acq(t, "x", "c", EX, WAIT);
    acq_full(t, "y", "d", EX, WAIT, 200, "id");
    acq(t, "y", "e", SH, WAIT);
    acq(t, "y", "f", SH, WAIT);
    acq(t, "w", "g", SH, 0);
    acq(t, "w", "h", EX, WAIT / 2);
    acq(t, "w", "i", SH, WAIT);
    return t;
}

static size_t commands(struct ds_lock_table *t, struct ds_lock_cmd *v)
{
    size_t n = 0;
    v[n] = mk(DS_LOCK_CMD_ACQUIRE, "new", "z"); /* new resource, recorded */
    v[n].mode = EX;
    v[n].ttl_ms = TTL;
    snprintf(v[n++].request_id, 8, "q1");
    v[n] = mk(DS_LOCK_CMD_ACQUIRE, "x", "z"); /* queued behind c */
    v[n].mode = SH;
    v[n].wait_ms = WAIT;
    v[n++].ttl_ms = TTL;
    v[n] = v[n - 1]; /* upgrade by a, queued at the head */
    snprintf(v[n].client_id, 4, "a");
    v[n++].mode = EX;
    v[n] = mk(DS_LOCK_CMD_ACQUIRE, "x", "d"); /* d, holding y, waits for x */
    v[n].mode = EX;
    v[n].wait_ms = WAIT;
    v[n++].ttl_ms = TTL;
    v[n] = mk(DS_LOCK_CMD_RELEASE, "y", "d"); /* grants e and f */
    v[n++].token = token_of(t, "y", "d");
    v[n] = mk(DS_LOCK_CMD_RELEASE, "x", "a"); /* grants nobody: b still reads */
    v[n++].token = token_of(t, "x", "a");
    v[n++] = mk(DS_LOCK_CMD_CANCEL_WAIT, "x", "c"); /* the client index shrinks */
    v[n] = mk(DS_LOCK_CMD_EXPIRE, NULL, NULL); /* expires d, grants e and f */
    v[n++].now_ms = now_ms + 1000;
    v[n] = mk(DS_LOCK_CMD_RENEW, "x", "a"); /* h's wait ends: i is granted */
    v[n].token = token_of(t, "x", "a");
    v[n].ttl_ms = TTL;
    v[n++].now_ms = now_ms + WAIT / 2;
    v[n] = mk(DS_LOCK_CMD_EXPIRE, NULL, NULL); /* every wait and lease ends */
    v[n++].now_ms = now_ms + WAIT;
    return n;
}

static void apply_fails_cleanly_at_every_allocation(void)
{
    struct ds_lock_table *base = base_table();
    struct ds_lock_cmd v[16];
    size_t n = commands(base, v);
    for (size_t i = 0; i < n; i++) {
        for (long k = 0;; k++) {
            struct ds_lock_table *t = clone_table(base);
            struct ds_lock_result r;
            REQUIRE(t);
            arm(k);
            int rv = ds_lock_apply(t, &v[i], &r);
            int hit = disarm();
            CHECKF(hit ? rv == DS_LOCK_ENOMEM : rv == 0, "command %zu allocation %ld: rv %d", i,
                   k, rv);
            size_t len;
            free(snap(t, &len));
            ds_lock_result_free(&r);
            ds_lock_table_free(t);
            if (!hit)
                break;
        }
    }
    ds_lock_table_free(base);
}

static void deadlock_search_fails_cleanly_at_every_allocation(void)
{
    for (long k = 0;; k++) {
        struct ds_lock_table *t = ds_lock_table_new();
        char r[16], c[16];
        for (int i = 0; i < 12; i++) { /* a chain c0 -> c1 -> ... -> c11 */
            snprintf(r, sizeof(r), "r%d", i);
            snprintf(c, sizeof(c), "c%d", i);
            acq(t, r, c, EX, WAIT);
            if (i > 0) {
                snprintf(c, sizeof(c), "c%d", i - 1);
                acq(t, r, c, EX, WAIT);
            }
        }
        struct ds_lock_cmd cmd = mk(DS_LOCK_CMD_ACQUIRE, "r0", "c11");
        struct ds_lock_result res2;
        cmd.mode = EX;
        cmd.wait_ms = WAIT;
        cmd.ttl_ms = TTL;
        arm(k);
        int rv = ds_lock_apply(t, &cmd, &res2);
        int hit = disarm();
        CHECK(hit ? rv == DS_LOCK_ENOMEM : rv == 0 && res2.status == DS_LOCK_DEADLOCK);
        CHECK(hit || res2.cycle.n == 12);
        ds_lock_result_free(&res2);
        ds_lock_table_free(t);
        if (!hit)
            break;
    }
}

static void snapshot_restore_and_encode_fail_cleanly_at_every_allocation(void)
{
    struct ds_lock_table *base = base_table();
    size_t len;
    uint8_t *good = snap(base, &len);
    for (long k = 0;; k++) {
        uint8_t *b = NULL, *e = NULL;
        size_t blen, elen;
        struct ds_lock_table *u = NULL;
        struct ds_lock_cmd c = mk(DS_LOCK_CMD_RELEASE, "x", "a");
        arm(k);
        int rs = ds_lock_snapshot(base, &b, &blen);
        int rr = ds_lock_restore(good, len, &u);
        int re = ds_lock_cmd_encode(&c, &e, &elen);
        struct ds_lock_table *fresh = ds_lock_table_new();
        struct ds_lock_list l = { 0 };
        int rl = ds_lock_list_held(base, &l);
        int hit = disarm();
        CHECK(rs == 0 || rs == DS_LOCK_ENOMEM);
        CHECK(rr == 0 || rr == DS_LOCK_ENOMEM);
        CHECK(re == 0 || re == DS_LOCK_ENOMEM);
        CHECK(rl == 0 || rl == DS_LOCK_ENOMEM);
        CHECK(hit || (rs == 0 && rr == 0 && re == 0 && rl == 0 && fresh));
        CHECK(rr != 0 || same_state(u, base));
        free(b);
        free(e);
        ds_lock_list_free(&l);
        ds_lock_table_free(u);
        ds_lock_table_free(fresh);
        if (!hit)
            break;
    }
    free(good);
    ds_lock_table_free(base);
}

int main(void)
{
    RUN(apply_fails_cleanly_at_every_allocation);
    RUN(deadlock_search_fails_cleanly_at_every_allocation);
    RUN(snapshot_restore_and_encode_fail_cleanly_at_every_allocation);
    ds_lock_result_free(&res);
    return check_summary();
}
