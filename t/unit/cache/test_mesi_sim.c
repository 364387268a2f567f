/* Randomised deterministic simulation of 3-6 MESI nodes with message delay, reordering, loss,
 * duplication, partitions and crashes, and (with home leases) nodes whose membership view goes
 * astray for a while, so that they take themselves for the home of every key; SWMR, data-value,
 * directory and version invariants are checked after every virtual millisecond, liveness once the
 * network heals.
 * Replay one seed: DS_SEED=1234 build/t/unit/cache/test_mesi_sim; more seeds: DS_SEEDS=5000. */
#include "check.h"
#include "core/prng.h"
#include "mesi_harness.h"

#define NKEYS_MAX 3
#define MAXPEND 256
#define MAXLOG 4096

static const char *const keys[NKEYS_MAX] = {"k0", "k1", "k2"};

struct vrec {
    uint64_t version;
    int present;
    char value[32];
};

struct comp {
    uint64_t version;
    uint64_t seq;
};

struct range {
    uint64_t from, to;
};

struct keylog {
    struct vrec vals[MAXLOG];
    int nvals;
    struct comp comps[MAXLOG];
    int ncomps;
    struct range lost[MAXLOG];
    int nlost;
    char issued[MAXLOG][32];
    int nissued;
};

struct pend {
    int node, key, kind, present;
    uint64_t op, start_seq, start_ms;
    char value[32];
};

struct sim {
    struct h_net h; /* first: the delay callback gets &h */
    struct ds_prng rng;
    uint64_t seed;
    int nkeys;
    int chaos;
    unsigned loss_pct;
    uint64_t cut_until[H_MAXN][H_MAXN];
    uint64_t restart_at[H_MAXN];
    uint64_t skew_until[H_MAXN];  /* the node's view is its own (it is every key's home) */
    uint64_t skew_seen;           /* the last skew ended then: homes' directories may lag */
    struct pend pend[MAXPEND];
    int npend;
    struct keylog log[NKEYS_MAX];
    uint64_t last_seen[H_MAXN][NKEYS_MAX];
    uint64_t seq;
    unsigned counter;
    size_t dones_seen, losts_seen;
    char err[512];
    uint64_t completed_ok, reads_ok, failed;
};

static unsigned rnd(struct sim *s, unsigned n)
{
    return (unsigned)ds_prng_below(&s->rng, n);
}

static void fail(struct sim *s, const char *what)
{
    if (!s->err[0])
        snprintf(s->err, sizeof s->err, "t=%llu: %s", (unsigned long long)s->h.now, what);
}

static uint64_t sim_delay(struct h_net *h, int from, int to)
{
    struct sim *s = (struct sim *)(void *)h;
    if (s->chaos && (rnd(s, 100) < s->loss_pct || s->cut_until[from][to] > h->now))
        return UINT64_MAX;
    return 1 + rnd(s, 30);
}

static int key_index(const char *k)
{
    for (int i = 0; i < NKEYS_MAX; i++)
        if (strcmp(keys[i], k) == 0)
            return i;
    return -1;
}

static int lost_allowed(const struct keylog *kl, uint64_t v)
{
    for (int i = 0; i < kl->nlost; i++)
        if (v > kl->lost[i].from && v <= kl->lost[i].to)
            return 1;
    return 0;
}

/* version -> value is a function: the first sighting records it, every later one must agree.
 * Every write has a value of its own, so value -> version is one too: a client write is applied
 * at most once. */
static void check_value(struct sim *s, struct keylog *kl, uint64_t v, int present, const char *val)
{
    char msg[200];
    if (v == 0 && present) {
        fail(s, "version 0 with a value");
        return;
    }
    for (int i = 0; i < kl->nvals; i++) {
        if (kl->vals[i].version != v)
            continue;
        if (kl->vals[i].present != present || strcmp(kl->vals[i].value, val) != 0) {
            snprintf(msg, sizeof msg, "version %llu seen as '%s'(%d) and '%s'(%d)",
                     (unsigned long long)v, kl->vals[i].value, kl->vals[i].present, val, present);
            fail(s, msg);
        }
        return;
    }
    for (int i = 0; present && i < kl->nvals; i++)
        if (kl->vals[i].present && strcmp(kl->vals[i].value, val) == 0) {
            snprintf(msg, sizeof msg, "write '%s' applied twice: versions %llu and %llu", val,
                     (unsigned long long)kl->vals[i].version, (unsigned long long)v);
            fail(s, msg);
        }
    if (kl->nvals < MAXLOG) {
        struct vrec *r = &kl->vals[kl->nvals++];
        r->version = v;
        r->present = present;
        snprintf(r->value, sizeof r->value, "%s", val);
    }
}

/* Main memory stores what a home applied: it takes part in both functions above. */
static void on_mem_write(struct h_net *h, const struct h_memop *op)
{
    struct sim *s = (struct sim *)(void *)h;
    int k = key_index(op->key);
    char val[33];
    size_t n = op->vlen < 32 ? op->vlen : 32;
    memcpy(val, op->value, n);
    val[n] = 0;
    if (k >= 0)
        check_value(s, &s->log[k], op->version, op->present, op->present ? val : "");
}

static void observe(struct sim *s, int node, int key, uint64_t v)
{
    if (v < s->last_seen[node][key]) {
        char msg[120];
        snprintf(msg, sizeof msg, "node %d saw %s version go back %llu -> %llu", node, keys[key],
                 (unsigned long long)s->last_seen[node][key], (unsigned long long)v);
        fail(s, msg);
    }
    s->last_seen[node][key] = v;
}

static void record_comp(struct sim *s, struct keylog *kl, uint64_t v)
{
    if (kl->ncomps < MAXLOG) {
        kl->comps[kl->ncomps].version = v;
        kl->comps[kl->ncomps++].seq = ++s->seq;
    }
}

/* Data-value: a read returns a written value, and nothing older than what completed (and was not
 * legitimately lost in the write-back window) before the read started. */
static void check_read(struct sim *s, int node, int key, uint64_t start_seq, uint64_t v, int present,
                       const char *val)
{
    struct keylog *kl = &s->log[key];
    char msg[200];
    if (present) {
        int found = 0;
        for (int i = 0; i < kl->nissued && !found; i++)
            found = strcmp(kl->issued[i], val) == 0;
        if (!found) {
            snprintf(msg, sizeof msg, "read of %s returned a value never written: '%s'", keys[key],
                     val);
            fail(s, msg);
        }
    } else if (val[0]) {
        fail(s, "absent key with a value");
    }
    check_value(s, kl, v, present, val);
    uint64_t w = 0;
    for (int i = 0; i < kl->ncomps; i++)
        if (kl->comps[i].seq < start_seq && kl->comps[i].version > w &&
            !lost_allowed(kl, kl->comps[i].version))
            w = kl->comps[i].version;
    if (v < w) {
        snprintf(msg, sizeof msg, "node %d read stale %s: version %llu < %llu completed before",
                 node, keys[key], (unsigned long long)v, (unsigned long long)w);
        fail(s, msg);
    }
    observe(s, node, key, v);
    record_comp(s, kl, v);
    s->reads_ok++;
}

static void complete(struct sim *s, struct pend *p, const struct ds_mesi_result *res, const char *val)
{
    if (res->rv != DS_MESI_OK) {
        s->failed++;
        if (getenv("DS_TRACE"))
            fprintf(stderr, "FAIL node %d key %d kind %d rv %d t=%llu started %llu\n", p->node, p->key, p->kind, res->rv, (unsigned long long)s->h.now, (unsigned long long)p->start_ms);
        return;
    }
    s->completed_ok++;
    if (p->kind == 0) {
        check_read(s, p->node, p->key, p->start_seq, res->version, res->present, val);
        return;
    }
    struct keylog *kl = &s->log[p->key];
    check_value(s, kl, res->version, p->present, p->present ? p->value : "");
    observe(s, p->node, p->key, res->version);
    record_comp(s, kl, res->version);
}

static void process_events(struct sim *s)
{
    struct h_net *h = &s->h;
    h_collect_all(h);
    for (; s->losts_seen < h->nlosts; s->losts_seen++) {
        struct h_lost *l = &h->losts[s->losts_seen];
        int k = key_index(l->key);
        if (h->cfg.write_policy == DS_MESI_WRITE_THROUGH)
            fail(s, "write-through lost an acknowledged write");
        if (k >= 0 && s->log[k].nlost < MAXLOG) {
            s->log[k].lost[s->log[k].nlost].from = l->from;
            s->log[k].lost[s->log[k].nlost++].to = l->to;
            s->last_seen[l->node][k] = 0;
        }
    }
    for (; s->dones_seen < h->ndones; s->dones_seen++) {
        struct h_done *d = &h->dones[s->dones_seen];
        for (int i = 0; i < s->npend; i++) {
            if (s->pend[i].node != d->node || s->pend[i].op != d->res.op_id)
                continue;
            struct pend p = s->pend[i];
            s->pend[i] = s->pend[--s->npend];
            complete(s, &p, &d->res, d->value);
            break;
        }
    }
}

static void issue_op(struct sim *s, int node, int key, int kind)
{
    struct h_net *h = &s->h;
    process_events(s);
    int outstanding = 0;
    for (int i = 0; i < s->npend; i++)
        outstanding += s->pend[i].node == node && s->pend[i].key == key;
    if (outstanding >= 2 || s->npend >= MAXPEND)
        return;
    struct pend p;
    memset(&p, 0, sizeof p);
    p.node = node;
    p.key = key;
    p.kind = kind;
    p.present = kind != 2;
    p.start_seq = ++s->seq;
    p.start_ms = h->now;
    struct ds_mesi_result res;
    int rv;
    const uint8_t *k = (const uint8_t *)keys[key];
    if (kind == 0) {
        rv = ds_mesi_read(h->node[node], k, 2, h->now, &res, &p.op);
    } else {
        snprintf(p.value, sizeof p.value, "n%d.%u", node, ++s->counter);
        struct keylog *kl = &s->log[key];
        if (kl->nissued < MAXLOG)
            snprintf(kl->issued[kl->nissued++], 32, "%s", p.value);
        if (kind == 1)
            rv = ds_mesi_write(h->node[node], k, 2, (const uint8_t *)p.value, strlen(p.value),
                               h->now, &res, &p.op);
        else
            rv = ds_mesi_delete(h->node[node], k, 2, h->now, &res, &p.op);
    }
    if (rv == DS_MESI_PENDING) {
        s->pend[s->npend++] = p;
    } else if (rv == DS_MESI_OK) {
        char val[256] = "";
        if (kind == 0) {
            size_t n = res.value_len < 255 ? res.value_len : 255;
            if (n)
                memcpy(val, res.value, n);
            val[n] = 0;
            struct ds_mesi_line_info li;
            ds_mesi_line_info(h->node[node], k, 2, h->now, &li);
            if (!li.lease_valid)
                fail(s, "read hit served from a copy whose lease ended");
        }
        complete(s, &p, &res, val);
    }
    process_events(s);
}

static void crash(struct sim *s, int i)
{
    struct h_net *h = &s->h;
    process_events(s);
    for (int k = 0; k < s->nkeys; k++) {
        struct ds_mesi_line_info li;
        if (ds_mesi_line_info(h->node[i], (const uint8_t *)keys[k], 2, h->now, &li) != DS_MESI_OK)
            continue;
        if (li.version > li.unflushed_from && s->log[k].nlost < MAXLOG) {
            if (h->cfg.write_policy == DS_MESI_WRITE_THROUGH)
                fail(s, "write-through node held unflushed versions");
            s->log[k].lost[s->log[k].nlost].from = li.unflushed_from;
            s->log[k].lost[s->log[k].nlost++].to = li.version;
        }
        s->last_seen[i][k] = 0;
    }
    for (int j = 0; j < s->npend; j++)
        if (s->pend[j].node == i)
            s->pend[j--] = s->pend[--s->npend];
    ds_mesi_destroy(h->node[i]);
    h->node[i] = NULL;
    s->restart_at[i] = h->now + 100 + rnd(s, 600);
}

static void deliver_due(struct sim *s)
{
    struct h_net *h = &s->h;
    for (;;) {
        size_t due = 0, pick = SIZE_MAX;
        for (size_t k = 0; k < h->npkts; k++)
            if (h->pkts[k].at <= h->now && rnd(s, ++due) == 0)
                pick = k;
        if (pick == SIZE_MAX)
            return;
        if (s->chaos && rnd(s, 100) < 2) { /* duplicate, delivered again later */
            struct h_pkt dup = h->pkts[pick];
            dup.bytes = malloc(dup.len);
            if (!dup.bytes)
                abort();
            memcpy(dup.bytes, h->pkts[pick].bytes, dup.len);
            dup.at = h->now + 1 + rnd(s, 60);
            H_PUSH(h->pkts, h->npkts, h->cappkts);
            h->pkts[h->npkts - 1] = dup;
        }
        h_deliver_pkt(h, pick);
        process_events(s);
    }
}

/* SWMR over copies whose lease is valid now, and the directory's view covers them. */
static void check_invariants(struct sim *s)
{
    struct h_net *h = &s->h;
    char msg[200];
    if (h->mem_regress)
        fail(s, "main memory version or floor went backwards");
    for (int k = 0; k < s->nkeys; k++) {
        const uint8_t *key = (const uint8_t *)keys[k];
        int writers = 0, readers = 0;
        uint64_t rbits = 0;
        int wnode = -1;
        for (int i = 0; i < h->n; i++) {
            struct ds_mesi_line_info li;
            if (!h->node[i] || ds_mesi_line_info(h->node[i], key, 2, h->now, &li) != DS_MESI_OK ||
                !li.lease_valid)
                continue;
            if (li.state == DS_MESI_E || li.state == DS_MESI_M)
                writers++, wnode = i;
            if (li.state == DS_MESI_S || li.state == DS_MESI_SM_D)
                readers++, rbits |= (uint64_t)1 << i;
            if (li.state == DS_MESI_S || li.state == DS_MESI_SM_D || li.state == DS_MESI_E) {
                char val[256] = "";
                size_t n = li.value_len < 255 ? li.value_len : 255;
                if (n)
                    memcpy(val, li.value, n);
                check_value(s, &s->log[k], li.version, li.present, val);
            }
        }
        if (writers > 1 || (writers == 1 && readers > 0)) {
            snprintf(msg, sizeof msg, "SWMR violated on %s: %d writers, %d readers", keys[k],
                     writers, readers);
            fail(s, msg);
        }
        int home = h_home_of(&h->ring.ops, key, 2);
        if (!h->node[home] || h->now < s->skew_seen)
            continue; /* copies granted by a stray home are in no directory of the ring's home */
        struct ds_mesi_dir_info di;
        int rv = ds_mesi_dir_info(h->node[home], key, 2, h->now, &di);
        if (!di.ready)
            continue;
        uint64_t covered = rv == DS_MESI_OK ? di.sharers | (di.owner >= 0 ? (uint64_t)1 << di.owner : 0)
                                            : 0;
        if ((rbits & ~covered) || (wnode >= 0 && (rv != DS_MESI_OK || di.owner != wnode))) {
            snprintf(msg, sizeof msg, "directory of %s misses holders: readers %llx covered %llx "
                     "writer %d owner %d", keys[k], (unsigned long long)rbits,
                     (unsigned long long)covered, wnode, di.owner);
            fail(s, msg);
        }
    }
}

/* Node i sees itself alone for a while: another epoch (its messages and the others' are dropped)
 * and every key homed on itself.  Main memory's home leases keep it from acting beside the real
 * homes. */
static void skew_end(struct sim *s)
{
    struct h_net *h = &s->h;
    int active = 0;
    for (int i = 0; i < h->n; i++) {
        if (!s->skew_until[i])
            continue;
        if (h->node[i] && s->skew_until[i] > h->now) {
            active = 1;
            continue;
        }
        s->skew_until[i] = 0;
        h->view[i].fixed = h->ring.fixed;
        if (h->node[i])
            ds_mesi_set_epoch(h->node[i], h->cfg.epoch, h->now);
    }
    if (!active && s->skew_seen == UINT64_MAX)
        s->skew_seen = h->now + 2 * h->cfg.lease_ms + h->cfg.home_lease_ms;
}

static void skew_step(struct sim *s)
{
    struct h_net *h = &s->h;
    int i = (int)rnd(s, (unsigned)h->n);
    if (!h->cfg.home_lease_ms || !h->node[i] || s->skew_until[i] || rnd(s, 3000) != 0)
        return;
    s->skew_until[i] = h->now + 200 + rnd(s, 800);
    s->skew_seen = UINT64_MAX;
    h->view[i].fixed = i;
    ds_mesi_set_epoch(h->node[i], h->cfg.epoch + 1 + (uint64_t)i, h->now);
}

static void chaos_step(struct sim *s)
{
    struct h_net *h = &s->h;
    skew_step(s);
    if (rnd(s, 1000) == 0) {
        int a = (int)rnd(s, (unsigned)h->n), b = (int)rnd(s, (unsigned)h->n);
        s->cut_until[a][b] = s->cut_until[b][a] = h->now + 100 + rnd(s, 500);
    }
    for (int i = 0; i < h->n; i++)
        if (h->node[i] && rnd(s, 4000) == 0)
            crash(s, i);
}

static void step(struct sim *s, int ops)
{
    struct h_net *h = &s->h;
    h->now++;
    for (int i = 0; i < h->n; i++)
        if (!h->node[i] && (!s->chaos || s->restart_at[i] <= h->now)) {
            h_start(h, i);
            s->last_seen[i][0] = s->last_seen[i][1] = s->last_seen[i][2] = 0;
        }
    skew_end(s);
    if (s->chaos)
        chaos_step(s);
    deliver_due(s);
    h_run_mem(h);
    process_events(s);
    for (int i = 0; i < h->n; i++)
        if (h->node[i])
            ds_mesi_tick(h->node[i], h->now);
    process_events(s);
    h_run_mem(h);
    process_events(s);
    for (int i = 0; ops && i < h->n; i++)
        if (h->node[i] && rnd(s, 100) < 3) {
            unsigned r = rnd(s, 100);
            issue_op(s, i, (int)rnd(s, (unsigned)s->nkeys), r < 55 ? 0 : r < 90 ? 1 : 2);
        }
    check_invariants(s);
}

/* After the network heals, every operation completes, and succeeds. */
static void liveness(struct sim *s)
{
    struct h_net *h = &s->h;
    uint64_t drain = h->cfg.op_timeout_ms + 2 * h->cfg.lease_ms;
    for (uint64_t t = 0; t < drain && !s->err[0]; t++)
        step(s, 0);
    if (s->npend)
        fail(s, "operations still pending after the network healed");
    for (int k = 0; k < s->nkeys && !s->err[0]; k++)
        for (int i = 0; i < h->n && !s->err[0]; i++)
            for (int kind = 1; kind >= 0 && !s->err[0]; kind--) {
                uint64_t before = s->completed_ok;
                issue_op(s, i, k, kind);
                for (uint64_t t = 0; t < h->cfg.op_timeout_ms && s->npend && !s->err[0]; t++)
                    step(s, 0);
                if (s->completed_ok != before + 1) {
                    char msg[120];
                    snprintf(msg, sizeof msg, "after healing, op %d on %s at node %d failed",
                             kind, keys[k], i);
                    fail(s, msg);
                }
            }
}

static int run_seed(uint64_t seed, int verbose)
{
    static struct sim s;
    memset(&s, 0, sizeof s);
    s.seed = seed;
    ds_prng_seed(&s.rng, seed);
    struct ds_mesi_config cfg;
    ds_mesi_config_default(&cfg);
    cfg.lease_ms = 300;
    cfg.margin_ms = 20;
    cfg.retry_ms = 25;
    cfg.op_timeout_ms = 1200;
    cfg.flush_ms = 60;
    cfg.max_dirty = 3;
    cfg.queue_max = 2 + (uint32_t)(seed % 5);
    cfg.ops_max = 4;
    cfg.max_entries = seed % 3 == 0 ? 1 : 64;
    cfg.write_policy = seed % 2 ? DS_MESI_WRITE_THROUGH : DS_MESI_WRITE_BACK;
    cfg.home_lease_ms = seed / 2 % 2 ? cfg.lease_ms * (2 + (uint32_t)(seed % 3)) : 0;
    int n = 3 + (int)(seed % 4);
    s.nkeys = 2 + (int)(seed / 4 % 2);
    s.loss_pct = (unsigned)(seed % 5 * 2);
    h_init(&s.h, n, -1, &cfg);
    s.h.mem_delay = 7;
    s.h.delay = sim_delay;
    s.h.on_mem_write = on_mem_write;
    s.chaos = 1;
    for (int t = 0; t < 4000 && !s.err[0]; t++)
        step(&s, 1);
    s.chaos = 0;
    if (!s.err[0])
        liveness(&s);
    if (verbose || s.err[0])
        printf("seed %llu: n=%d keys=%d %s%s loss=%u%%: %llu ops ok (%llu reads), %llu failed %s\n",
               (unsigned long long)seed, n, s.nkeys,
               cfg.write_policy ? "write-through" : "write-back",
               cfg.home_lease_ms ? " home-leases" : "", s.loss_pct,
               (unsigned long long)s.completed_ok, (unsigned long long)s.reads_ok,
               (unsigned long long)s.failed, s.err[0] ? s.err : "");
    int bad = s.err[0] != 0;
    h_free(&s.h);
    return bad;
}

static void coherence_holds_over_many_seeds(void)
{
    const char *one = getenv("DS_SEED");
    if (one && *one) {
        CHECK(run_seed(strtoull(one, NULL, 10), 1) == 0);
        return;
    }
    unsigned long n = check_seeds(1000), base = check_seed_base();
    for (unsigned long seed = base + 1; seed <= base + n; seed++)
        if (run_seed(seed, 0)) {
            fprintf(stderr, "replay: DS_SEED=%lu build/t/unit/cache/test_mesi_sim\n", seed);
            CHECK(!"simulation invariant violated");
            return;
        }
}

int main(void)
{
    RUN(coherence_holds_over_many_seeds);
    return check_summary();
}
