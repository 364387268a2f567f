/* Directory-MESI engine with leases: cache controller (requester side) and home (directory +
 * memory controller) of one node.  Primer (Nagarajan et al. 2020) ch. 8 for the directory protocol,
 * Gray & Cheriton 1989 for leases; see mesi.h for the clock, retransmission and loss-window rules.
 *
 * Side-by-side map with the Promela model (t/model/mesi.pml, which carries the same table):
 *   engine (this file)                        model
 *   line.st I/S/E/M                           cst[] = CI / CS / CE / CM
 *   IS_D, IS_D_I, IM_D, SM_D                  CIS_D, CIS_D_I, CIM_D, CSM_D
 *   MI_A, EI_A, SI_A, II_A                    CMI_A, CEI_A, CSI_A, CII_A
 *   line.req / line.gid                       creq[] / cgid[] (per-node increasing ids)
 *   line.ops (pending client operations)      want[] (one pending operation)
 *   home_on_request + dir_start + dir_begin   home_take
 *   home_on_ack                               home_ack
 *   dir_expire (an unreachable sharer's lease) home_expire (only once it holds no copy)
 *   dir_apply + dir_send_reply                home_finish
 *   line_timeouts -> abandon_request          "client operation times out" branch of client
 *   line_check_lease on S / E / SM_D          "lease of a clean copy runs out" branch
 *   on_inv: drops copies with gid <= Inv's    on_inv (same rule), IS_D -> CIS_D_I
 *   on_fwd: owner answers; older S dropped    on_fwd (same rules); FWD_READY = Fwd before Data
 * Not in the model: loss/retransmission, crashes, busy Nack, write-through (and its write ids), M
 * lease expiry, home leases. */
#include "roles/cache/mesi.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define BIT(n) ((uint64_t)1 << (n))
#define MAX64(a, b) ((a) > (b) ? (a) : (b))

/* ------------------------------------------------------------------ data structures */

enum op_kind { OP_READ = 1, OP_WRITE = 2 };

struct op {
    struct op *next;
    uint64_t id;
    uint64_t deadline;
    int kind;
    int present;
    uint8_t *value;
    uint32_t vlen;
};

struct line {
    int st;
    uint64_t gid;          /* grant id of the copy held (S/E/M and the transients that keep it) */
    uint64_t req;          /* outstanding request id, 0 = none */
    int req_type;
    uint64_t req_op;       /* write-through: the client write this request carries, 0 = none */
    uint64_t req_last;     /* last (re)transmission */
    uint64_t lease_until;  /* holder deadline */
    uint64_t version, floor, acked_base;
    uint64_t dirty_since;
    int present;
    uint8_t *value;
    uint32_t vlen;
    uint64_t ans_txn;      /* last Fwd answered from this line (resent on a duplicate Fwd) */
    uint64_t ans_from;     /* acked_base when it answered: (ans_from, version] went with it */
    struct op *ops, *ops_tail;
    uint32_t nops;
    uint32_t inv_ops;      /* IS_D_I: operations that were pending when the Inv came */
    struct ds_mesi_lru_node lru;
    int resident;          /* counted in entries/bytes and linked in the policy */
    size_t counted_bytes;
};

struct hreq {
    uint8_t type;
    uint8_t flags;
    uint16_t from;
    uint64_t req, gid, ts, version;
    uint64_t wid;          /* FLAG_WRITE: the client write's id (msg.txn) */
    uint8_t *value;
    uint32_t vlen;
};

enum dir_phase { PH_IDLE = 0, PH_LOAD, PH_RENEW, PH_BEGIN, PH_RECALL, PH_PERSIST };

struct dir {
    int st;
    uint64_t sharers;
    int owner;
    uint64_t gid[DS_MESI_MAX_NODES];
    uint64_t until[DS_MESI_MAX_NODES];
    uint8_t gtype[DS_MESI_MAX_NODES];
    uint64_t wid[DS_MESI_MAX_NODES];  /* last client write applied for each node (its id)... */
    uint64_t wver[DS_MESI_MAX_NODES]; /* ...and the version it was applied at */
    uint64_t version, floor, owner_base;
    int present;
    uint8_t *value;
    uint32_t vlen;
    int loaded;
    int persist;
    int phase;
    struct hreq cur;
    uint64_t txn;
    uint64_t awaiting;
    uint64_t last_send;
    uint64_t mem_op;
    uint64_t lease_sent;      /* home lease: when the MEM_READ / MEM_RENEW in use was issued */
    uint64_t lease_until;     /* home lease: this home may grant until then (its clock) */
    uint64_t renew_op;        /* MEM_RENEW in flight, 0 = none */
    struct ds_mesi_msg reply; /* computed by dir_apply, sent after the memory write */
    struct hreq *q;
    uint32_t qhead, qlen;
};

struct rec {
    struct rec *next;
    uint64_t hash;
    uint8_t *key;
    uint16_t klen;
    struct line line;
    struct dir *dir;
};

struct outq {
    struct ds_mesi_out *items;
    size_t head, len, cap;
};

struct selfmsg {
    struct ds_mesi_msg msg;
    uint8_t *key, *value;
};

struct ds_mesi {
    struct ds_mesi_config cfg;
    uint64_t epoch;
    uint64_t ready_at;
    uint64_t next_id;
    struct rec **tab;
    size_t nbuckets, nrecs;
    struct outq out;
    struct ds_mesi_out polled; /* buffers handed out by the last poll, freed on the next call */
    struct selfmsg *selfq;
    size_t selfq_len, selfq_cap;
    struct ds_mesi_lru lru;
    struct ds_mesi_policy *policy;
    struct ds_mesi_stats st;
    size_t selfq_head;
};

static void dir_step(struct ds_mesi *m, struct rec *r, uint64_t now);
static void line_kick(struct ds_mesi *m, struct rec *r, uint64_t now);

/* ------------------------------------------------------------------ names */

const char *ds_mesi_strerror(int rv)
{
    static const char *const names[] = {"ok", "pending", "busy", "unavailable", "invalid argument",
                                        "out of memory", "not found", "malformed message"};
    return rv >= 0 && rv <= DS_MESI_EDECODE ? names[rv] : "unknown error";
}

const char *ds_mesi_state_name(int state)
{
    static const char *const names[] = {"I", "S", "E", "M", "IS_D", "IS_D_I",
                                        "IM_D", "SM_D", "MI_A", "EI_A", "SI_A", "II_A"};
    return state >= 0 && state < DS_MESI_NSTATES ? names[state] : "?";
}

const char *ds_mesi_msg_name(int type)
{
    static const char *const names[] = {"?", "GetS", "GetM", "PutS", "PutE", "PutM", "WB",
                                        "FwdGetS", "FwdGetM", "Inv", "Data", "InvAck", "FwdAck",
                                        "PutAck", "Nack"};
    return type > 0 && type < DS_MESI_MSG_NTYPES ? names[type] : "?";
}

void ds_mesi_config_default(struct ds_mesi_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->lease_ms = 2000;
    cfg->margin_ms = 50;
    cfg->retry_ms = 100;
    cfg->op_timeout_ms = 5000;
    cfg->flush_ms = 500;
    cfg->max_dirty = 64;
    cfg->queue_max = 16;
    cfg->ops_max = 32;
    cfg->max_entries = 4096;
    cfg->max_bytes = (size_t)64 << 20;
    cfg->write_policy = DS_MESI_WRITE_BACK;
}

/* ------------------------------------------------------------------ small helpers */

static uint8_t *dup_bytes(const uint8_t *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    if (d && n)
        memcpy(d, p, n);
    return d;
}

static uint64_t hash_key(const uint8_t *k, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ k[i]) * 1099511628211ULL;
    return h;
}

static uint64_t next_id(struct ds_mesi *m)
{
    return (m->cfg.incarnation << 32) | (m->next_id++ & 0xffffffffULL);
}

static uint16_t home_of(struct ds_mesi *m, const struct rec *r)
{
    return m->cfg.ring->home_of(m->cfg.ring, r->key, r->klen);
}

static int lease_valid(const struct line *l, uint64_t now)
{
    return now < l->lease_until;
}

/* Replace a line's value (copy).  Returns DS_MESI_ENOMEM and leaves the old value on failure. */
static int line_set_value(struct line *l, const uint8_t *v, uint32_t n, int present)
{
    uint8_t *d = dup_bytes(v, n);
    if (!d)
        return DS_MESI_ENOMEM;
    free(l->value);
    l->value = d;
    l->vlen = n;
    l->present = present;
    l->ans_txn = 0;
    return DS_MESI_OK;
}

static void line_drop_value(struct line *l)
{
    free(l->value);
    l->value = NULL;
    l->vlen = 0;
    l->present = 0;
    l->ans_txn = 0;
}

/* ------------------------------------------------------------------ record table */

static struct rec *rec_find(struct ds_mesi *m, const uint8_t *key, size_t klen)
{
    uint64_t h = hash_key(key, klen);
    for (struct rec *r = m->tab[h & (m->nbuckets - 1)]; r; r = r->next)
        if (r->hash == h && r->klen == klen && memcmp(r->key, key, klen) == 0)
            return r;
    return NULL;
}

static int tab_grow(struct ds_mesi *m)
{
    size_t nb = m->nbuckets * 2;
    struct rec **t = calloc(nb, sizeof *t);
    if (!t)
        return DS_MESI_ENOMEM;
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct rec *r = m->tab[i], *nx;
        for (; r; r = nx) {
            nx = r->next;
            r->next = t[r->hash & (nb - 1)];
            t[r->hash & (nb - 1)] = r;
        }
    }
    free(m->tab);
    m->tab = t;
    m->nbuckets = nb;
    return DS_MESI_OK;
}

static struct rec *rec_get(struct ds_mesi *m, const uint8_t *key, size_t klen)
{
    struct rec *r = rec_find(m, key, klen);
    if (r)
        return r;
    if (m->nrecs >= m->nbuckets * 2 && tab_grow(m) != DS_MESI_OK)
        return NULL;
    r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->key = dup_bytes(key, klen);
    if (!r->key) {
        free(r);
        return NULL;
    }
    r->klen = (uint16_t)klen;
    r->hash = hash_key(key, klen);
    r->next = m->tab[r->hash & (m->nbuckets - 1)];
    m->tab[r->hash & (m->nbuckets - 1)] = r;
    m->nrecs++;
    return r;
}

static void dir_free(struct dir *d, uint32_t qmax)
{
    if (!d)
        return;
    free(d->value);
    free(d->cur.value);
    for (uint32_t i = 0; i < d->qlen; i++)
        free(d->q[(d->qhead + i) % qmax].value);
    free(d->q);
    free(d);
}

static void rec_free(struct ds_mesi *m, struct rec *r)
{
    if (r->line.resident)
        m->policy->remove(m->policy, &r->line.lru);
    for (struct op *o = r->line.ops, *nx; o; o = nx) {
        nx = o->next;
        free(o->value);
        free(o);
    }
    free(r->line.value);
    dir_free(r->dir, m->cfg.queue_max);
    free(r->key);
    free(r);
}

static int rec_dead(const struct rec *r)
{
    const struct line *l = &r->line;
    return !r->dir && l->st == DS_MESI_I && !l->value && !l->ops && !l->req;
}

/* Accounting of resident lines (entries, bytes, policy membership). */
static void line_account(struct ds_mesi *m, struct rec *r)
{
    struct line *l = &r->line;
    int res = l->st != DS_MESI_I || l->value != NULL;
    size_t bytes = res ? (size_t)r->klen + l->vlen : 0;
    if (res && !l->resident) {
        m->policy->insert(m->policy, &l->lru);
        m->st.entries++;
    } else if (!res && l->resident) {
        m->policy->remove(m->policy, &l->lru);
        m->st.entries--;
    }
    m->st.bytes = m->st.bytes - l->counted_bytes + bytes;
    l->counted_bytes = bytes;
    l->resident = res;
}

/* ------------------------------------------------------------------ outbox */

static struct ds_mesi_out *out_new(struct ds_mesi *m)
{
    struct outq *q = &m->out;
    if (q->head == q->len)
        q->head = q->len = 0;
    if (q->len == q->cap) {
        size_t nc = q->cap ? q->cap * 2 : 64;
        struct ds_mesi_out *it = realloc(q->items, nc * sizeof *it);
        if (!it)
            abort(); /* outbox growth failure: the engine cannot keep its promises */
        q->items = it;
        q->cap = nc;
    }
    struct ds_mesi_out *o = &q->items[q->len++];
    memset(o, 0, sizeof *o);
    return o;
}

/* Copies key and value into the output item (it owns them until polled and released). */
static void out_set_kv(struct ds_mesi_out *o, const uint8_t *k, uint16_t kl, const uint8_t *v,
                       uint32_t vl)
{
    uint8_t *kc = dup_bytes(k, kl);
    uint8_t *vc = vl ? dup_bytes(v, vl) : NULL;
    if (!kc || (vl && !vc))
        abort();
    o->key = kc;
    o->key_len = kl;
    o->value = vc;
    o->value_len = vl;
}

static void release_polled(struct ds_mesi *m)
{
    free((void *)m->polled.key);
    free((void *)m->polled.value);
    memset(&m->polled, 0, sizeof m->polled);
}

int ds_mesi_poll(struct ds_mesi *m, struct ds_mesi_out *out)
{
    release_polled(m);
    if (m->out.head == m->out.len)
        return 0;
    m->polled = m->out.items[m->out.head++];
    *out = m->polled;
    if (out->kind == DS_MESI_OUT_SEND) {
        out->msg.key = out->key;
        out->msg.value = out->value;
    } else if (out->kind == DS_MESI_OUT_DONE) {
        out->res.value = out->value;
    }
    return 1;
}

/* ------------------------------------------------------------------ sending */

static void send_msg(struct ds_mesi *m, struct rec *r, struct ds_mesi_msg *msg, const uint8_t *value,
                     uint32_t vlen)
{
    msg->from = m->cfg.self;
    msg->epoch = m->epoch;
    msg->key_len = r->klen;
    msg->value_len = vlen;
    m->st.msgs_sent[msg->type]++;
    if (msg->type == DS_MESI_MSG_INV)
        m->st.inv_sent++;
    if (msg->to == m->cfg.self) {
        if (m->selfq_len == m->selfq_cap) {
            size_t nc = m->selfq_cap ? m->selfq_cap * 2 : 16;
            struct selfmsg *q = realloc(m->selfq, nc * sizeof *q);
            if (!q)
                abort();
            m->selfq = q;
            m->selfq_cap = nc;
        }
        struct selfmsg *s = &m->selfq[m->selfq_len++];
        s->msg = *msg;
        s->key = dup_bytes(r->key, r->klen);
        s->value = vlen ? dup_bytes(value, vlen) : NULL;
        if (!s->key || (vlen && !s->value))
            abort();
        return;
    }
    struct ds_mesi_out *o = out_new(m);
    o->kind = DS_MESI_OUT_SEND;
    o->msg = *msg;
    out_set_kv(o, r->key, r->klen, value, vlen);
}

static void recv_one(struct ds_mesi *m, const struct ds_mesi_msg *msg, uint64_t now);

/* Messages a node sends to itself (it is the home of its own request) are delivered in order after
 * the current event, never recursively. */
static void drain_self(struct ds_mesi *m, uint64_t now)
{
    while (m->selfq_head < m->selfq_len) {
        struct selfmsg s = m->selfq[m->selfq_head++];
        s.msg.key = s.key;
        s.msg.value = s.value;
        recv_one(m, &s.msg, now);
        free(s.key);
        free(s.value);
    }
    m->selfq_head = m->selfq_len = 0;
}

/* ------------------------------------------------------------------ client operation completion */

static void op_done(struct ds_mesi *m, struct rec *r, struct op *o, int rv, uint64_t version)
{
    struct line *l = &r->line;
    struct ds_mesi_out *out = out_new(m);
    out->kind = DS_MESI_OUT_DONE;
    int give_value = rv == DS_MESI_OK && o->kind == OP_READ;
    out_set_kv(out, r->key, r->klen, give_value ? l->value : NULL, give_value ? l->vlen : 0);
    out->res.rv = rv;
    out->res.op_id = o->id;
    out->res.version = version;
    out->res.present = o->kind == OP_READ ? l->present : o->present;
    out->res.state = l->st;
    out->res.value_len = out->value_len;
    free(o->value);
    free(o);
}

static struct op *op_pop(struct line *l)
{
    struct op *o = l->ops;
    l->ops = o->next;
    if (!l->ops)
        l->ops_tail = NULL;
    l->nops--;
    return o;
}

static void fail_all_ops(struct ds_mesi *m, struct rec *r, int rv)
{
    while (r->line.ops)
        op_done(m, r, op_pop(&r->line), rv, r->line.version);
}

/* ------------------------------------------------------------------ requester side */

static void req_clear(struct line *l)
{
    l->req = 0;
    l->req_op = 0;
}

static void req_transmit(struct ds_mesi *m, struct rec *r, uint64_t now)
{
    struct line *l = &r->line;
    struct ds_mesi_msg msg;
    memset(&msg, 0, sizeof msg);
    msg.type = (uint8_t)l->req_type;
    msg.to = home_of(m, r);
    msg.req = l->req;
    msg.gid = l->gid;
    msg.ts = now;
    l->req_last = now;
    const uint8_t *v = NULL;
    uint32_t vl = 0;
    if (l->req_op) {
        /* write-through: the client's write travels with the GetM / WB */
        assert(l->ops && l->ops->id == l->req_op);
        msg.version = l->req_type == DS_MESI_MSG_WB ? MAX64(l->version, l->floor) + 1 : 0;
        v = l->ops->value;
        vl = l->ops->vlen;
        msg.flags = (uint8_t)(DS_MESI_FLAG_WRITE | (l->ops->present ? DS_MESI_FLAG_PRESENT : 0));
        msg.txn = l->req_op; /* the same on every retry: the home applies the write once */
    } else if (l->req_type == DS_MESI_MSG_PUTM || l->req_type == DS_MESI_MSG_WB) {
        msg.version = l->version;
        v = l->value;
        vl = l->vlen;
        msg.flags = l->present ? DS_MESI_FLAG_PRESENT : 0;
    }
    send_msg(m, r, &msg, v, vl);
}

static void req_start(struct ds_mesi *m, struct rec *r, int type, uint64_t now)
{
    struct line *l = &r->line;
    l->req = next_id(m);
    l->req_type = type;
    l->req_op = 0;
    if (m->cfg.write_policy == DS_MESI_WRITE_THROUGH && l->ops && l->ops->kind == OP_WRITE &&
        (type == DS_MESI_MSG_GETM || type == DS_MESI_MSG_WB))
        l->req_op = l->ops->id;
    m->st.writebacks += type == DS_MESI_MSG_PUTM || type == DS_MESI_MSG_WB;
    req_transmit(m, r, now);
}

/* The line gives up dirty versions (from, to] that may never have reached the home. */
static void emit_lost(struct ds_mesi *m, struct rec *r, uint64_t from, uint64_t to)
{
    if (to <= from)
        return;
    struct ds_mesi_out *o = out_new(m);
    o->kind = DS_MESI_OUT_LOST;
    out_set_kv(o, r->key, r->klen, NULL, 0);
    o->lost_from = from;
    o->lost_to = to;
    m->st.dirty_lost++;
}

static void line_lost(struct ds_mesi *m, struct rec *r)
{
    emit_lost(m, r, r->line.acked_base, r->line.version);
}

/* A Fwd answer kept for retransmission is given up: if it carried dirty data the home may not have
 * received it. */
static void drop_answer(struct ds_mesi *m, struct rec *r)
{
    struct line *l = &r->line;
    if (l->ans_txn)
        emit_lost(m, r, l->ans_from, l->version);
    l->ans_txn = 0;
}

static void line_to_i(struct ds_mesi *m, struct rec *r)
{
    drop_answer(m, r);
    r->line.st = DS_MESI_I;
    line_drop_value(&r->line);
    line_account(m, r);
}

/* Gray & Cheriton §2: a copy is used only during its term; an expired one is gone. */
static void line_check_lease(struct ds_mesi *m, struct rec *r, uint64_t now)
{
    struct line *l = &r->line;
    if (lease_valid(l, now))
        return;
    if (l->ans_txn) {
        drop_answer(m, r);
        if (l->st == DS_MESI_I)
            line_to_i(m, r);
    }
    switch (l->st) {
    case DS_MESI_M:
    case DS_MESI_MI_A:
        line_lost(m, r);
        /* fall through */
    case DS_MESI_S:
    case DS_MESI_E:
    case DS_MESI_EI_A:
    case DS_MESI_SI_A:
    case DS_MESI_II_A:
        m->st.lease_expiries++;
        req_clear(l);
        line_to_i(m, r);
        break;
    case DS_MESI_SM_D:
        m->st.lease_expiries++;
        l->st = DS_MESI_IM_D;
        line_drop_value(l);
        line_account(m, r);
        break;
    default:
        break;
    }
}

static int readable(const struct line *l, uint64_t now)
{
    return (l->st == DS_MESI_S || l->st == DS_MESI_E || l->st == DS_MESI_M ||
            l->st == DS_MESI_SM_D) &&
           lease_valid(l, now);
}

static void complete_read(struct ds_mesi *m, struct rec *r)
{
    op_done(m, r, op_pop(&r->line), DS_MESI_OK, r->line.version);
}

/* Write-back: apply the head write to the M line (E upgrades silently). */
static void apply_local_write(struct ds_mesi *m, struct rec *r, uint64_t now)
{
    struct line *l = &r->line;
    struct op *o = l->ops;
    if (line_set_value(l, o->value, o->vlen, o->present) != DS_MESI_OK) {
        op_done(m, r, op_pop(l), DS_MESI_ENOMEM, l->version);
        return;
    }
    if (l->version <= l->acked_base)
        l->dirty_since = now;
    l->version = MAX64(l->version, l->floor) + 1;
    l->st = DS_MESI_M;
    line_account(m, r);
    op_done(m, r, op_pop(l), DS_MESI_OK, l->version);
}

/* Head write on a line that may write (E/M, lease valid).  Returns 1 if it completed. */
static int try_write(struct ds_mesi *m, struct rec *r, uint64_t now)
{
    struct line *l = &r->line;
    if (m->cfg.write_policy == DS_MESI_WRITE_THROUGH) {
        l->st = DS_MESI_M;
        if (!l->req)
            req_start(m, r, DS_MESI_MSG_WB, now);
        return 0;
    }
    if (MAX64(l->version, l->floor) + 1 > l->acked_base + m->cfg.max_dirty) {
        if (!l->req)
            req_start(m, r, DS_MESI_MSG_WB, now);
        return 0;
    }
    apply_local_write(m, r, now);
    return 1;
}

/* Runs the pending client operations of a line as far as its state allows (Primer Table 8.3,
 * "load"/"store" columns; a request in flight stalls them, except reads and write-back writes on an
 * M line whose only request is a WB). */
static void line_kick(struct ds_mesi *m, struct rec *r, uint64_t now)
{
    struct line *l = &r->line;
    line_check_lease(m, r, now);
    while (l->ops) {
        int wb_only = l->req && l->req_type == DS_MESI_MSG_WB && l->st == DS_MESI_M;
        if (l->req && !wb_only)
            return;
        if (l->ops->kind == OP_READ) {
            if (!readable(l, now)) {
                if (l->st == DS_MESI_I) {
                    l->st = DS_MESI_IS_D;
                    req_start(m, r, DS_MESI_MSG_GETS, now);
                }
                line_account(m, r);
                return;
            }
            complete_read(m, r);
            continue;
        }
        if ((l->st == DS_MESI_E || l->st == DS_MESI_M) && lease_valid(l, now)) {
            if (!try_write(m, r, now))
                return;
            continue;
        }
        if ((l->st == DS_MESI_S || l->st == DS_MESI_I) && !l->req) {
            l->st = l->st == DS_MESI_S ? DS_MESI_SM_D : DS_MESI_IM_D;
            req_start(m, r, DS_MESI_MSG_GETM, now);
        }
        line_account(m, r);
        return;
    }
}

static int enqueue_op(struct ds_mesi *m, struct rec *r, int kind, const uint8_t *v, size_t vlen,
                      int present, uint64_t now, uint64_t *op_id)
{
    struct line *l = &r->line;
    if (l->nops >= m->cfg.ops_max)
        return DS_MESI_EBUSY;
    struct op *o = calloc(1, sizeof *o);
    if (!o)
        return DS_MESI_ENOMEM;
    if (kind == OP_WRITE && !(o->value = dup_bytes(v, vlen))) {
        free(o);
        return DS_MESI_ENOMEM;
    }
    o->vlen = (uint32_t)vlen;
    o->kind = kind;
    o->present = present;
    o->id = next_id(m);
    o->deadline = now + m->cfg.op_timeout_ms;
    if (l->ops_tail)
        l->ops_tail->next = o;
    else
        l->ops = o;
    l->ops_tail = o;
    l->nops++;
    *op_id = o->id;
    return DS_MESI_OK;
}

static void fill_hit(struct ds_mesi *m, struct rec *r, struct ds_mesi_result *res)
{
    const struct line *l = &r->line;
    memset(res, 0, sizeof *res);
    res->rv = DS_MESI_OK;
    res->version = l->version;
    res->present = l->present;
    res->state = l->st;
    res->value = l->value;
    res->value_len = l->vlen;
    m->st.hits++;
    if (l->resident)
        m->policy->touch(m->policy, &r->line.lru);
}

static void evict_if_needed(struct ds_mesi *m, struct rec *keep, uint64_t now);

int ds_mesi_read(struct ds_mesi *m, const uint8_t *key, size_t klen, uint64_t now,
                 struct ds_mesi_result *res, uint64_t *op_id)
{
    release_polled(m);
    if (klen == 0 || klen > DS_MESI_MAX_KEY)
        return DS_MESI_EINVAL;
    struct rec *r = rec_get(m, key, klen);
    if (!r)
        return DS_MESI_ENOMEM;
    line_check_lease(m, r, now);
    if (!r->line.ops && readable(&r->line, now)) {
        fill_hit(m, r, res);
        return DS_MESI_OK;
    }
    int rv = enqueue_op(m, r, OP_READ, NULL, 0, 1, now, op_id);
    if (rv != DS_MESI_OK)
        return rv;
    m->st.misses++;
    line_kick(m, r, now);
    drain_self(m, now);
    return DS_MESI_PENDING;
}

static int do_write(struct ds_mesi *m, const uint8_t *key, size_t klen, const uint8_t *value,
                    size_t vlen, int present, uint64_t now, struct ds_mesi_result *res,
                    uint64_t *op_id)
{
    release_polled(m);
    if (klen == 0 || klen > DS_MESI_MAX_KEY || vlen > DS_MESI_MAX_VALUE)
        return DS_MESI_EINVAL;
    struct rec *r = rec_get(m, key, klen);
    if (!r)
        return DS_MESI_ENOMEM;
    int rv = enqueue_op(m, r, OP_WRITE, value, vlen, present, now, op_id);
    if (rv != DS_MESI_OK)
        return rv;
    struct line *l = &r->line;
    if (l->ops == l->ops_tail)
        m->st.hits += (l->st == DS_MESI_M || l->st == DS_MESI_E) && lease_valid(l, now);
    line_kick(m, r, now);
    /* A write that completed inside the kick (it was the last op) produced the last output:
     * report it directly instead. */
    struct outq *q = &m->out;
    rv = DS_MESI_PENDING;
    if (q->len > q->head && q->items[q->len - 1].kind == DS_MESI_OUT_DONE &&
        q->items[q->len - 1].res.op_id == *op_id) {
        struct ds_mesi_out *last = &q->items[--q->len];
        *res = last->res;
        res->value = NULL;
        free((void *)last->key);
        rv = res->rv;
    }
    evict_if_needed(m, r, now);
    drain_self(m, now);
    return rv;
}

int ds_mesi_write(struct ds_mesi *m, const uint8_t *key, size_t klen, const uint8_t *value,
                  size_t vlen, uint64_t now, struct ds_mesi_result *res, uint64_t *op_id)
{
    return do_write(m, key, klen, value, vlen, 1, now, res, op_id);
}

int ds_mesi_delete(struct ds_mesi *m, const uint8_t *key, size_t klen, uint64_t now,
                   struct ds_mesi_result *res, uint64_t *op_id)
{
    return do_write(m, key, klen, NULL, 0, 0, now, res, op_id);
}

/* ------------------------------------------------------------------ replacement */

static int evictable(const struct line *l)
{
    return !l->req && !l->ops &&
           (l->st == DS_MESI_S || l->st == DS_MESI_E || l->st == DS_MESI_M || l->st == DS_MESI_I);
}

/* Evicts one line: S -> PutS (SI_A), E -> PutE (EI_A), M -> PutM with data (MI_A), I -> drop. */
static void evict_line(struct ds_mesi *m, struct rec *r, uint64_t now)
{
    struct line *l = &r->line;
    m->st.evictions[l->st]++;
    static const struct {
        int to, msg;
    } put[] = {[DS_MESI_S] = {DS_MESI_SI_A, DS_MESI_MSG_PUTS},
               [DS_MESI_E] = {DS_MESI_EI_A, DS_MESI_MSG_PUTE},
               [DS_MESI_M] = {DS_MESI_MI_A, DS_MESI_MSG_PUTM}};
    if (l->st == DS_MESI_I) {
        line_to_i(m, r);
        return;
    }
    int from = l->st;
    l->st = put[from].to;
    req_start(m, r, put[from].msg, now);
}

static struct rec *rec_of_lru(struct ds_mesi_lru_node *n)
{
    return (struct rec *)(void *)((char *)n - offsetof(struct rec, line) - offsetof(struct line, lru));
}

/* LRU by entries and bytes; lines in transient states and `keep` are never victims. */
static void evict_if_needed(struct ds_mesi *m, struct rec *keep, uint64_t now)
{
    size_t entries = m->st.entries, bytes = m->st.bytes;
    while (entries > m->cfg.max_entries || bytes > m->cfg.max_bytes) {
        struct rec *victim = NULL;
        for (struct ds_mesi_lru_node *n = m->policy->victim(m->policy, NULL); n && !victim;
             n = m->policy->victim(m->policy, n)) {
            struct rec *r = rec_of_lru(n);
            if (r != keep && evictable(&r->line))
                victim = r;
        }
        if (!victim)
            return;
        entries--;
        bytes -= victim->line.counted_bytes;
        line_check_lease(m, victim, now);
        if (victim->line.resident)
            evict_line(m, victim, now);
    }
}

/* ------------------------------------------------------------------ requester: receiving */

static int line_waits_data(const struct line *l)
{
    return l->st == DS_MESI_IS_D || l->st == DS_MESI_IS_D_I || l->st == DS_MESI_IM_D ||
           l->st == DS_MESI_SM_D;
}

/* CLOCK ASSUMPTION (mesi.h): timed from our request, margin_ms early.  A home near the end of its
 * own lease may grant less than margin_ms: such a copy is never valid. */
static uint64_t holder_deadline(const struct ds_mesi *m, const struct ds_mesi_msg *msg)
{
    uint64_t end = msg->ts + msg->lease_ms;
    return end > m->cfg.margin_ms ? end - m->cfg.margin_ms : 0;
}

static void on_data(struct ds_mesi *m, struct rec *r, const struct ds_mesi_msg *msg, uint64_t now)
{
    struct line *l = &r->line;
    if (!l->req || msg->req != l->req || !line_waits_data(l)) {
        m->st.stale_dropped++;
        return;
    }
    if (line_set_value(l, msg->value, msg->value_len, !!(msg->flags & DS_MESI_FLAG_PRESENT)))
        return; /* out of memory: the retransmitted request brings the Data again */
    uint64_t carried = l->req_op;
    req_clear(l);
    l->version = msg->version;
    l->acked_base = MAX64(msg->version, msg->floor);
    l->lease_until = holder_deadline(m, msg);
    if (l->st == DS_MESI_IS_D_I) {
        /* Inv overtook this Data: the value was current when the home granted it, within the
         * intervals of the reads pending at the Inv, so it serves those once and is then dropped
         * (gem5 IS_I); later reads must wait for a new copy. */
        l->st = DS_MESI_S;
        for (uint32_t i = 0; i < l->inv_ops && l->ops && l->ops->kind == OP_READ &&
                            lease_valid(l, now); i++)
            complete_read(m, r);
        line_to_i(m, r);
    } else {
        l->st = msg->grant;
        l->gid = msg->req;
        l->floor = msg->floor;
        line_account(m, r);
        /* the home applied our write-through write (now or on an earlier try) at version txn */
        if (carried && msg->grant == DS_MESI_M && (msg->flags & DS_MESI_FLAG_WRITE) && l->ops &&
            l->ops->id == carried)
            op_done(m, r, op_pop(l), DS_MESI_OK, msg->txn);
    }
    line_kick(m, r, now);
    evict_if_needed(m, r, now);
}

static void on_put_ack(struct ds_mesi *m, struct rec *r, const struct ds_mesi_msg *msg, uint64_t now)
{
    struct line *l = &r->line;
    if (!l->req || msg->req != l->req) {
        m->st.stale_dropped++;
        return;
    }
    int wt = l->req_op != 0;
    struct op *o = l->ops;
    if (wt && (!o || o->id != l->req_op || msg->version != MAX64(l->version, l->floor) + 1)) {
        m->st.stale_dropped++;
        return;
    }
    req_clear(l);
    if (l->req_type != DS_MESI_MSG_WB) {
        line_to_i(m, r);
        line_kick(m, r, now);
        return;
    }
    l->lease_until = holder_deadline(m, msg);
    if (wt) {
        if (line_set_value(l, o->value, o->vlen, o->present) == DS_MESI_OK) {
            l->version = msg->version;
            op_done(m, r, op_pop(l), DS_MESI_OK, l->version);
        }
        line_account(m, r);
    }
    l->acked_base = MAX64(l->acked_base, msg->version);
    if (l->version > l->acked_base)
        l->dirty_since = now;
    line_kick(m, r, now);
}

static void abandon_request(struct ds_mesi *m, struct rec *r)
{
    struct line *l = &r->line;
    req_clear(l);
    if (l->st == DS_MESI_SM_D)
        l->st = DS_MESI_S;
    else if (l->st == DS_MESI_IS_D || l->st == DS_MESI_IS_D_I || l->st == DS_MESI_IM_D)
        l->st = DS_MESI_I;
    line_account(m, r);
}

static void on_nack(struct ds_mesi *m, struct rec *r, const struct ds_mesi_msg *msg, uint64_t now)
{
    struct line *l = &r->line;
    if (!l->req || msg->req != l->req) {
        m->st.stale_dropped++;
        return;
    }
    if (msg->reason == DS_MESI_NACK_BUSY && line_waits_data(l)) {
        abandon_request(m, r);
        fail_all_ops(m, r, DS_MESI_EBUSY);
    } else if (msg->reason == DS_MESI_NACK_NOT_OWNER) {
        /* The home no longer counts us as owner (its lease on us ran out): the copy is gone. */
        req_clear(l);
        if (l->st == DS_MESI_M || l->st == DS_MESI_E) {
            line_lost(m, r);
            line_to_i(m, r);
        }
    }
    /* NOT_READY, WRONG_HOME, BUSY on a Put: keep the request, it is retransmitted. */
    line_kick(m, r, now);
}

static void reply_to_home(struct ds_mesi *m, struct rec *r, const struct ds_mesi_msg *in, int type,
                          int with_value)
{
    struct line *l = &r->line;
    struct ds_mesi_msg msg;
    memset(&msg, 0, sizeof msg);
    msg.type = (uint8_t)type;
    msg.to = in->from;
    msg.txn = in->txn;
    msg.gid = in->gid;
    if (with_value) {
        msg.version = l->version;
        msg.flags = (uint8_t)((l->present ? DS_MESI_FLAG_PRESENT : 0) |
                              (l->version > l->acked_base ? DS_MESI_FLAG_DIRTY : 0));
    } else if (type == DS_MESI_MSG_FWD_ACK) {
        msg.flags = DS_MESI_FLAG_NOCOPY;
    }
    send_msg(m, r, &msg, with_value ? l->value : NULL, with_value ? l->vlen : 0);
}

/* Inv (Primer Table 8.3 "Inv" column plus the IS_D race): always acknowledged; the copy named by
 * the grant id, or an older one (a newer grant whose Data we dropped supersedes it), is dropped; an
 * Inv for the grant still in flight turns IS_D into IS_D_I. */
static void on_inv(struct ds_mesi *m, struct rec *r, const struct ds_mesi_msg *msg, uint64_t now)
{
    struct line *l = &r->line;
    m->st.inv_received++;
    if (l->gid <= msg->gid &&
        (l->st == DS_MESI_S || l->st == DS_MESI_SM_D || l->st == DS_MESI_SI_A)) {
        if (l->st == DS_MESI_S)
            l->st = DS_MESI_I;
        else
            l->st = l->st == DS_MESI_SM_D ? DS_MESI_IM_D : DS_MESI_II_A;
        line_drop_value(l);
        line_account(m, r);
    } else if (l->st == DS_MESI_IS_D && l->req == msg->gid) {
        l->st = DS_MESI_IS_D_I;
        l->inv_ops = l->nops; /* reads issued after this Inv may not use the old value */
    }
    reply_to_home(m, r, msg, DS_MESI_MSG_INV_ACK, 0);
    line_kick(m, r, now);
}

/* Fwd-GetS / Fwd-GetM: the owner (also while evicting: MI_A/EI_A) answers the home with its
 * value and goes to S / I (II_A when a Put is pending).  A duplicate Fwd is answered again from the
 * retained value; a Fwd for a grant whose Data has not arrived yet is left to be retransmitted. */
static void on_fwd(struct ds_mesi *m, struct rec *r, const struct ds_mesi_msg *msg, uint64_t now)
{
    struct line *l = &r->line;
    int owner = l->st == DS_MESI_E || l->st == DS_MESI_M || l->st == DS_MESI_MI_A ||
                l->st == DS_MESI_EI_A;
    if (owner && l->gid == msg->gid) {
        reply_to_home(m, r, msg, DS_MESI_MSG_FWD_ACK, 1);
        /* A write-through WB in flight may already have made the home's value newer than ours:
         * then we cannot stay a sharer. */
        int stale = l->req && l->req_type == DS_MESI_MSG_WB && l->req_op;
        if (l->req_type == DS_MESI_MSG_WB && l->req)
            req_clear(l); /* the WB is superseded by this answer */
        if (l->st == DS_MESI_MI_A || l->st == DS_MESI_EI_A)
            l->st = DS_MESI_II_A;
        else
            l->st = msg->type == DS_MESI_MSG_FWD_GETS && !stale ? DS_MESI_S : DS_MESI_I;
        l->ans_from = l->acked_base;
        l->acked_base = l->version;
        l->ans_txn = msg->txn;
        line_account(m, r);
    } else if (l->ans_txn && l->ans_txn == msg->txn && l->value) {
        reply_to_home(m, r, msg, DS_MESI_MSG_FWD_ACK, 1);
    } else if (l->req == msg->gid && line_waits_data(l)) {
        m->st.stale_dropped++; /* Fwd before Data: the home retransmits it */
        return;
    } else {
        if (l->gid <= msg->gid && (l->st == DS_MESI_S || l->st == DS_MESI_SM_D)) {
            /* the home granted us ownership in a Data we dropped: our older S copy is superseded */
            l->st = l->st == DS_MESI_S ? DS_MESI_I : DS_MESI_IM_D;
            line_drop_value(l);
            line_account(m, r);
        }
        reply_to_home(m, r, msg, DS_MESI_MSG_FWD_ACK, 0);
    }
    line_kick(m, r, now);
}

/* ------------------------------------------------------------------ home side */

static struct dir *dir_new(struct ds_mesi *m)
{
    struct dir *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->q = calloc(m->cfg.queue_max ? m->cfg.queue_max : 1, sizeof *d->q);
    if (!d->q) {
        free(d);
        return NULL;
    }
    d->owner = -1;
    m->st.dir_entries++;
    return d;
}

/* The entry is forgotten: requesters retransmit, and the next one reloads the key from memory. */
static void dir_drop(struct ds_mesi *m, struct rec *r)
{
    dir_free(r->dir, m->cfg.queue_max);
    r->dir = NULL;
    m->st.dir_entries--;
}

/* ---- home leases (mesi.h HOME LEASES): the home may grant only while it holds the key's lease */

static uint64_t home_margin(const struct ds_mesi *m)
{
    return (uint64_t)m->cfg.margin_ms * m->cfg.home_lease_ms / m->cfg.lease_ms + 1;
}

/* Its lease is over (by this home's clock): every copy it granted has ended too. */
static int home_lapsed(const struct ds_mesi *m, const struct dir *d, uint64_t now)
{
    return m->cfg.home_lease_ms && d->loaded && now >= d->lease_until;
}

static void lease_taken(struct ds_mesi *m, struct dir *d)
{
    d->lease_until = d->lease_sent + m->cfg.home_lease_ms - home_margin(m);
}

static void renew_start(struct ds_mesi *m, struct rec *r, uint64_t now)
{
    struct dir *d = r->dir;
    struct ds_mesi_out *o = out_new(m);
    o->kind = DS_MESI_OUT_MEM_RENEW;
    o->id = d->renew_op = next_id(m);
    out_set_kv(o, r->key, r->klen, NULL, 0);
    d->lease_sent = now;
}

/* The lease term a copy granted now may have: it ends with the home's lease at the latest. */
static uint32_t grant_lease(const struct ds_mesi *m, const struct dir *d, uint64_t now)
{
    if (!m->cfg.home_lease_ms)
        return m->cfg.lease_ms;
    uint64_t left = d->lease_until > now ? d->lease_until - now : 0;
    return left < m->cfg.lease_ms ? (uint32_t)left : m->cfg.lease_ms;
}

static void home_send(struct ds_mesi *m, struct rec *r, struct ds_mesi_msg *msg, const uint8_t *v,
                      uint32_t vl)
{
    send_msg(m, r, msg, v, vl);
}

static void home_nack(struct ds_mesi *m, struct rec *r, const struct ds_mesi_msg *in, int reason)
{
    struct ds_mesi_msg msg;
    memset(&msg, 0, sizeof msg);
    msg.type = DS_MESI_MSG_NACK;
    msg.to = in->from;
    msg.req = in->req;
    msg.reason = (uint8_t)reason;
    home_send(m, r, &msg, NULL, 0);
}

/* The owner left without handing its data back (no answer before its lease ended, or it reported no
 * copy): its unflushed versions may have been seen, so the next writer starts above them. */
static void owner_lost(struct ds_mesi *m, struct dir *d, int y)
{
    d->floor = MAX64(d->floor, d->owner_base + m->cfg.max_dirty);
    d->persist = 1;
    d->owner = -1;
    d->sharers &= ~BIT(y);
}

static void dir_recompute(struct dir *d)
{
    d->st = d->owner >= 0 ? DS_MESI_DIR_EM : d->sharers ? DS_MESI_DIR_S : DS_MESI_DIR_I;
}

static void send_recall(struct ds_mesi *m, struct rec *r, int y, uint64_t now)
{
    struct dir *d = r->dir;
    struct ds_mesi_msg msg;
    memset(&msg, 0, sizeof msg);
    if (y == d->owner)
        msg.type = d->cur.type == DS_MESI_MSG_GETS ? DS_MESI_MSG_FWD_GETS : DS_MESI_MSG_FWD_GETM;
    else
        msg.type = DS_MESI_MSG_INV;
    msg.to = (uint16_t)y;
    msg.txn = d->txn;
    msg.gid = d->gid[y];
    d->last_send = now;
    home_send(m, r, &msg, NULL, 0);
}

/* Primer Table 8.2: GetS recalls the owner (Fwd-GetS); GetM invalidates every sharer and recalls the
 * owner (Fwd-GetM).  A requester that the directory still counts as owner has lost its copy. */
static void dir_begin(struct ds_mesi *m, struct rec *r, uint64_t now)
{
    struct dir *d = r->dir;
    int x = d->cur.from;
    uint64_t targets = 0;
    if ((d->cur.type == DS_MESI_MSG_GETS || d->cur.type == DS_MESI_MSG_GETM) && d->owner == x)
        owner_lost(m, d, x);
    if (d->cur.type == DS_MESI_MSG_GETS && d->owner >= 0)
        targets = BIT(d->owner);
    if (d->cur.type == DS_MESI_MSG_GETM)
        targets = (d->sharers & ~BIT(x)) | (d->owner >= 0 ? BIT(d->owner) : 0);
    d->awaiting = targets;
    for (int y = 0; y < DS_MESI_MAX_NODES; y++)
        if (targets & BIT(y))
            send_recall(m, r, y, now);
    d->phase = PH_RECALL;
}

/* Gray & Cheriton §2: a holder that does not answer is treated as gone once its lease has ended. */
static void dir_expire(struct ds_mesi *m, struct dir *d, uint64_t now)
{
    for (int y = 0; y < DS_MESI_MAX_NODES; y++) {
        if (!(d->awaiting & BIT(y)) || now < d->until[y])
            continue;
        if (y == d->owner)
            owner_lost(m, d, y);
        d->sharers &= ~BIT(y);
        d->awaiting &= ~BIT(y);
    }
}

static void dir_take_value(struct dir *d, uint64_t version, const uint8_t *v, uint32_t vl,
                           int present)
{
    if (version <= d->version)
        return;
    uint8_t *c = dup_bytes(v, vl);
    if (!c)
        abort();
    free(d->value);
    d->value = c;
    d->vlen = vl;
    d->present = present;
    d->version = version;
    d->persist = 1;
}

static void set_reply(struct dir *d, int type)
{
    memset(&d->reply, 0, sizeof d->reply);
    d->reply.type = (uint8_t)type;
    d->reply.to = d->cur.from;
    d->reply.req = d->cur.req;
    d->reply.ts = d->cur.ts;
}

/* Write-through: the home applies a client write once.  A write whose id it recorded for that node
 * (retried after a Fwd overtook the answer to its WB, or after a lost Data) is not applied again:
 * the answer names the version of its first application.  A node's writes reach the home one at a
 * time, in increasing ids: a late copy of an older one never replaces the record. */
static void apply_write(struct dir *d, uint64_t version)
{
    const struct hreq *c = &d->cur;
    if (c->wid && c->wid == d->wid[c->from])
        return;
    dir_take_value(d, version, c->value, c->vlen, !!(c->flags & DS_MESI_FLAG_PRESENT));
    if (c->wid < d->wid[c->from])
        return;
    d->wid[c->from] = c->wid;
    d->wver[c->from] = version;
    d->persist = 1;
}

/* The applied-writes record kept in main memory: per node with one, u8 node | u64 write id |
 * u64 version, little-endian. */
#define APPLIED_ENTRY 17

static uint32_t applied_encode(const struct dir *d, uint8_t *out)
{
    uint32_t n = 0;
    for (int x = 0; x < DS_MESI_MAX_NODES; x++) {
        if (!d->wid[x])
            continue;
        out[n] = (uint8_t)x;
        for (int i = 0; i < 8; i++) {
            out[n + 1 + i] = (uint8_t)(d->wid[x] >> (8 * i));
            out[n + 9 + i] = (uint8_t)(d->wver[x] >> (8 * i));
        }
        n += APPLIED_ENTRY;
    }
    return n;
}

/* Entries with a node id out of range, and a partial last entry, are ignored. */
static void applied_decode(struct dir *d, const uint8_t *p, size_t len)
{
    for (size_t k = 0; k + APPLIED_ENTRY <= len; k += APPLIED_ENTRY) {
        if (p[k] >= DS_MESI_MAX_NODES)
            continue;
        uint64_t w = 0, v = 0;
        for (int i = 7; i >= 0; i--) {
            w = (w << 8) | p[k + 1 + i];
            v = (v << 8) | p[k + 9 + i];
        }
        d->wid[p[k]] = w;
        d->wver[p[k]] = v;
    }
}

/* The Data answering a GetM that carries a client write: FLAG_WRITE, and txn = the version the
 * home applied that write at. */
static void reply_applied(struct dir *d, int x)
{
    d->reply.flags = DS_MESI_FLAG_WRITE;
    d->reply.txn = d->wver[x];
}

static void apply_get(struct ds_mesi *m, struct dir *d)
{
    int x = d->cur.from;
    set_reply(d, DS_MESI_MSG_DATA);
    if (d->cur.flags & DS_MESI_FLAG_WRITE) { /* write-through GetM: the home applies the write */
        apply_write(d, MAX64(d->version, d->floor) + 1);
        reply_applied(d, x);
    }
    if (d->cur.type == DS_MESI_MSG_GETM || (d->owner < 0 && !(d->sharers & ~BIT(x)))) {
        d->reply.grant = d->cur.type == DS_MESI_MSG_GETM ? DS_MESI_M : DS_MESI_E;
        d->sharers = 0;
        d->owner = x;
        d->owner_base = MAX64(d->version, d->floor);
    } else {
        d->reply.grant = DS_MESI_S;
        d->sharers |= BIT(x);
    }
    d->gid[x] = d->cur.req;
    d->gtype[x] = d->reply.grant;
    d->reply.lease_ms = m->cfg.lease_ms;
}

static void apply_put(struct dir *d)
{
    int x = d->cur.from;
    const struct hreq *c = &d->cur;
    int holds = d->gid[x] == c->gid;
    set_reply(d, DS_MESI_MSG_PUT_ACK);
    if (c->type == DS_MESI_MSG_PUTS && holds)
        d->sharers &= ~BIT(x);
    if ((c->type == DS_MESI_MSG_PUTE || c->type == DS_MESI_MSG_PUTM) && holds && d->owner == x) {
        if (c->type == DS_MESI_MSG_PUTM)
            dir_take_value(d, c->version, c->value, c->vlen, !!(c->flags & DS_MESI_FLAG_PRESENT));
        d->owner = -1;
    }
}

/* WB: the owner flushes (write-back) or writes through; the answer renews its lease. */
static void apply_wb(struct ds_mesi *m, struct dir *d)
{
    int x = d->cur.from;
    const struct hreq *c = &d->cur;
    if (d->owner != x || d->gid[x] != c->gid) {
        set_reply(d, DS_MESI_MSG_NACK);
        d->reply.reason = DS_MESI_NACK_NOT_OWNER;
        return;
    }
    if (c->flags & DS_MESI_FLAG_WRITE)
        apply_write(d, c->version);
    else
        dir_take_value(d, c->version, c->value, c->vlen, !!(c->flags & DS_MESI_FLAG_PRESENT));
    d->owner_base = MAX64(d->owner_base, c->version);
    set_reply(d, DS_MESI_MSG_PUT_ACK);
    d->reply.version = c->version;
    d->reply.lease_ms = m->cfg.lease_ms;
}

static void dir_send_reply(struct ds_mesi *m, struct rec *r, uint64_t now)
{
    struct dir *d = r->dir;
    struct ds_mesi_msg msg = d->reply;
    const uint8_t *v = NULL;
    uint32_t vl = 0;
    if (msg.type == DS_MESI_MSG_DATA) {
        msg.version = d->version;
        msg.floor = d->floor;
        msg.flags = (uint8_t)((d->present ? DS_MESI_FLAG_PRESENT : 0) |
                              (msg.flags & DS_MESI_FLAG_WRITE));
        v = d->value;
        vl = d->vlen;
    }
    if (msg.lease_ms) {
        msg.lease_ms = grant_lease(m, d, now);
        d->until[msg.to] = now + msg.lease_ms + m->cfg.margin_ms;
    }
    home_send(m, r, &msg, v, vl);
}

static void dir_finish(struct ds_mesi *m, struct rec *r, uint64_t now)
{
    struct dir *d = r->dir;
    dir_send_reply(m, r, now);
    free(d->cur.value);
    memset(&d->cur, 0, sizeof d->cur);
    d->phase = PH_IDLE;
}

static void dir_apply(struct ds_mesi *m, struct rec *r, uint64_t now)
{
    struct dir *d = r->dir;
    switch (d->cur.type) {
    case DS_MESI_MSG_GETS:
    case DS_MESI_MSG_GETM:
        apply_get(m, d);
        break;
    case DS_MESI_MSG_WB:
        apply_wb(m, d);
        break;
    default:
        apply_put(d);
        break;
    }
    dir_recompute(d);
    if (!d->persist) {
        dir_finish(m, r, now);
        return;
    }
    struct ds_mesi_out *o = out_new(m);
    o->kind = DS_MESI_OUT_MEM_WRITE;
    o->id = d->mem_op = next_id(m);
    out_set_kv(o, r->key, r->klen, d->value, d->vlen);
    o->present = d->present;
    o->version = d->version;
    o->floor = d->floor;
    o->applied_len = applied_encode(d, o->applied);
    d->phase = PH_PERSIST;
}

static void dir_start(struct ds_mesi *m, struct rec *r, uint64_t now)
{
    struct dir *d = r->dir;
    d->cur = d->q[d->qhead];
    d->q[d->qhead].value = NULL;
    d->qhead = (d->qhead + 1) % m->cfg.queue_max;
    d->qlen--;
    if (d->cur.req <= d->gid[d->cur.from]) { /* a grant went out while it waited */
        m->st.stale_dropped++;
        free(d->cur.value);
        memset(&d->cur, 0, sizeof d->cur);
        return;
    }
    d->txn = next_id(m);
    if (d->loaded) {
        /* a grant is worth half a lease at least: else the home renews its own lease first */
        int renew = m->cfg.home_lease_ms && d->lease_until < now + m->cfg.lease_ms / 2;
        if (renew && !d->renew_op)
            renew_start(m, r, now);
        d->phase = renew ? PH_RENEW : PH_BEGIN;
        return;
    }
    struct ds_mesi_out *o = out_new(m);
    o->kind = DS_MESI_OUT_MEM_READ;
    o->id = d->mem_op = next_id(m);
    out_set_kv(o, r->key, r->klen, NULL, 0);
    d->lease_sent = now;
    d->phase = PH_LOAD;
}

/* One transaction per key at a time (Primer §8.2 blocking directory): start the next queued request
 * when idle, advance the running one as far as it can go. */
static void dir_step(struct ds_mesi *m, struct rec *r, uint64_t now)
{
    struct dir *d = r->dir;
    for (;;) {
        if (home_lapsed(m, d, now))
            return; /* the next tick drops the entry */
        switch (d->phase) {
        case PH_IDLE:
            if (!d->qlen)
                return;
            dir_start(m, r, now);
            break;
        case PH_BEGIN:
            dir_begin(m, r, now);
            break;
        case PH_RECALL:
            dir_expire(m, d, now);
            if (d->awaiting)
                return;
            dir_apply(m, r, now);
            break;
        default: /* PH_LOAD, PH_RENEW, PH_PERSIST: waiting for main memory */
            return;
        }
    }
}

static int hreq_is_dup(const struct dir *d, uint32_t qmax, const struct ds_mesi_msg *msg)
{
    if (d->phase != PH_IDLE && d->cur.from == msg->from && d->cur.req == msg->req)
        return 1;
    for (uint32_t i = 0; i < d->qlen; i++) {
        const struct hreq *h = &d->q[(d->qhead + i) % qmax];
        if (h->from == msg->from && h->req == msg->req)
            return 1;
    }
    return 0;
}

static int holds_grant(const struct dir *d, int x, uint64_t gid)
{
    return d->gid[x] == gid && (d->owner == x || (d->sharers & BIT(x)));
}

/* A retransmitted Get whose grant the directory still records: send the Data again. */
static void resend_grant(struct ds_mesi *m, struct rec *r, const struct ds_mesi_msg *msg, uint64_t now)
{
    struct dir *d = r->dir;
    struct ds_mesi_msg save = d->reply;
    memset(&d->reply, 0, sizeof d->reply);
    d->reply.type = DS_MESI_MSG_DATA;
    d->reply.to = msg->from;
    d->reply.req = msg->req;
    d->reply.ts = msg->ts;
    d->reply.grant = d->gtype[msg->from];
    d->reply.lease_ms = m->cfg.lease_ms;
    if ((msg->flags & DS_MESI_FLAG_WRITE) && msg->txn == d->wid[msg->from])
        reply_applied(d, msg->from);
    dir_send_reply(m, r, now);
    d->reply = save;
}

static void home_on_request(struct ds_mesi *m, struct rec *r, const struct ds_mesi_msg *msg,
                            uint64_t now)
{
    if (home_of(m, r) != m->cfg.self) {
        home_nack(m, r, msg, DS_MESI_NACK_WRONG_HOME);
        return;
    }
    if (now < m->ready_at) {
        home_nack(m, r, msg, DS_MESI_NACK_NOT_READY);
        return;
    }
    if (r->dir && home_lapsed(m, r->dir, now))
        dir_drop(m, r);
    if (!r->dir && !(r->dir = dir_new(m)))
        return; /* out of memory: the request is retransmitted */
    struct dir *d = r->dir;
    int x = msg->from;
    if (msg->req == d->gid[x] && holds_grant(d, x, msg->req)) {
        if (d->phase == PH_IDLE) /* a retransmitted Get whose Data was lost */
            resend_grant(m, r, msg, now);
        return;
    }
    if (msg->req <= d->gid[x] || hreq_is_dup(d, m->cfg.queue_max, msg)) {
        m->st.stale_dropped++; /* granted already (and revoked since), or older than a grant */
        return;
    }
    if (d->qlen >= m->cfg.queue_max) {
        m->st.busy_nacks++;
        home_nack(m, r, msg, DS_MESI_NACK_BUSY);
        return;
    }
    struct hreq *h = &d->q[(d->qhead + d->qlen) % m->cfg.queue_max];
    memset(h, 0, sizeof *h);
    if (msg->value_len && !(h->value = dup_bytes(msg->value, msg->value_len)))
        return;
    h->type = msg->type;
    h->flags = msg->flags;
    h->from = msg->from;
    h->req = msg->req;
    h->gid = msg->gid;
    h->ts = msg->ts;
    h->version = msg->version;
    h->wid = msg->flags & DS_MESI_FLAG_WRITE ? msg->txn : 0;
    h->vlen = msg->value_len;
    d->qlen++;
    dir_step(m, r, now);
}

static void home_on_ack(struct ds_mesi *m, struct rec *r, const struct ds_mesi_msg *msg, uint64_t now)
{
    struct dir *d = r->dir;
    int y = msg->from;
    if (!d || d->phase != PH_RECALL || msg->txn != d->txn || !(d->awaiting & BIT(y)) ||
        msg->gid != d->gid[y]) {
        m->st.stale_dropped++;
        return;
    }
    d->awaiting &= ~BIT(y);
    if (msg->type == DS_MESI_MSG_INV_ACK) {
        d->sharers &= ~BIT(y);
    } else if (msg->flags & DS_MESI_FLAG_NOCOPY) {
        owner_lost(m, d, y);
    } else {
        dir_take_value(d, msg->version, msg->value, msg->value_len,
                       !!(msg->flags & DS_MESI_FLAG_PRESENT));
        d->owner = -1;
        if (d->cur.type == DS_MESI_MSG_GETS) {
            d->sharers |= BIT(y);
            d->gtype[y] = DS_MESI_S;
        }
    }
    dir_step(m, r, now);
}

/* ------------------------------------------------------------------ dispatch */

static void recv_one(struct ds_mesi *m, const struct ds_mesi_msg *msg, uint64_t now)
{
    m->st.msgs_received[msg->type]++;
    if (msg->epoch != m->epoch) {
        m->st.stale_dropped++;
        return;
    }
    struct rec *r = rec_get(m, msg->key, msg->key_len);
    if (!r)
        return; /* out of memory: retransmission brings the message again */
    line_check_lease(m, r, now);
    switch (msg->type) {
    case DS_MESI_MSG_GETS:
    case DS_MESI_MSG_GETM:
    case DS_MESI_MSG_PUTS:
    case DS_MESI_MSG_PUTE:
    case DS_MESI_MSG_PUTM:
    case DS_MESI_MSG_WB:
        home_on_request(m, r, msg, now);
        break;
    case DS_MESI_MSG_INV_ACK:
    case DS_MESI_MSG_FWD_ACK:
        home_on_ack(m, r, msg, now);
        break;
    case DS_MESI_MSG_INV:
        on_inv(m, r, msg, now);
        break;
    case DS_MESI_MSG_FWD_GETS:
    case DS_MESI_MSG_FWD_GETM:
        on_fwd(m, r, msg, now);
        break;
    case DS_MESI_MSG_DATA:
        on_data(m, r, msg, now);
        break;
    case DS_MESI_MSG_PUT_ACK:
        on_put_ack(m, r, msg, now);
        break;
    default:
        on_nack(m, r, msg, now);
        break;
    }
}

int ds_mesi_recv(struct ds_mesi *m, const struct ds_mesi_msg *msg, uint64_t now)
{
    release_polled(m);
    if (!msg || msg->type < DS_MESI_MSG_GETS || msg->type >= DS_MESI_MSG_NTYPES ||
        msg->from >= DS_MESI_MAX_NODES || msg->to != m->cfg.self || msg->key_len == 0 ||
        msg->key_len > DS_MESI_MAX_KEY || msg->value_len > DS_MESI_MAX_VALUE ||
        (msg->value_len && !msg->value) || !msg->key)
        return DS_MESI_EINVAL;
    recv_one(m, msg, now);
    drain_self(m, now);
    return DS_MESI_OK;
}

/* ------------------------------------------------------------------ main memory completions */

static struct rec *find_mem_op(struct ds_mesi *m, uint64_t id, int phase)
{
    for (size_t i = 0; i < m->nbuckets; i++)
        for (struct rec *r = m->tab[i]; r; r = r->next)
            if (r->dir && r->dir->phase == phase && r->dir->mem_op == id)
                return r;
    return NULL;
}

int ds_mesi_mem_read_done(struct ds_mesi *m, uint64_t id, int present, const uint8_t *value,
                          size_t vlen, uint64_t version, uint64_t floor, const uint8_t *applied,
                          size_t applied_len, uint64_t now)
{
    release_polled(m);
    if (vlen > DS_MESI_MAX_VALUE || (vlen && !value) || applied_len > DS_MESI_MAX_APPLIED ||
        (applied_len && !applied))
        return DS_MESI_EINVAL;
    struct rec *r = find_mem_op(m, id, PH_LOAD);
    if (!r)
        return DS_MESI_ENOTFOUND;
    struct dir *d = r->dir;
    uint8_t *c = dup_bytes(value, vlen);
    if (!c)
        return DS_MESI_ENOMEM;
    free(d->value);
    d->value = c;
    d->vlen = (uint32_t)vlen;
    d->present = present;
    d->version = version;
    applied_decode(d, applied, applied_len);
    /* A previous home may have granted write permission beyond memory's version: start above it. */
    d->floor = MAX64(floor, version) + m->cfg.max_dirty;
    d->persist = 1;
    d->loaded = 1;
    lease_taken(m, d);
    d->phase = PH_BEGIN;
    dir_step(m, r, now);
    drain_self(m, now);
    return DS_MESI_OK;
}

int ds_mesi_mem_read_refused(struct ds_mesi *m, uint64_t id, uint64_t now)
{
    release_polled(m);
    struct rec *r = find_mem_op(m, id, PH_LOAD);
    if (!r)
        return DS_MESI_ENOTFOUND;
    m->st.home_lease_refused++;
    dir_drop(m, r);
    drain_self(m, now);
    return DS_MESI_OK;
}

int ds_mesi_mem_renew_done(struct ds_mesi *m, uint64_t id, int held, uint64_t now)
{
    release_polled(m);
    struct rec *r = NULL;
    for (size_t i = 0; i < m->nbuckets && !r; i++)
        for (r = m->tab[i]; r && !(r->dir && r->dir->renew_op == id); r = r->next)
            ;
    if (!r)
        return DS_MESI_ENOTFOUND;
    struct dir *d = r->dir;
    d->renew_op = 0;
    if (!held) {
        m->st.home_lease_refused++;
        dir_drop(m, r);
    } else {
        lease_taken(m, d);
        if (d->phase == PH_RENEW)
            d->phase = PH_BEGIN;
        dir_step(m, r, now);
    }
    drain_self(m, now);
    return DS_MESI_OK;
}

int ds_mesi_mem_write_done(struct ds_mesi *m, uint64_t id, uint64_t now)
{
    release_polled(m);
    struct rec *r = find_mem_op(m, id, PH_PERSIST);
    if (!r)
        return DS_MESI_ENOTFOUND;
    r->dir->persist = 0;
    dir_finish(m, r, now);
    dir_step(m, r, now);
    drain_self(m, now);
    return DS_MESI_OK;
}

/* Memory holds a newer version of the key than this home: another node has acted as its home.
 * This entry is stale, so nothing it decided is answered (a write-through write stays
 * unacknowledged), it is dropped, and the home waits one lease term before granting again (so
 * that every copy it granted has expired); the next request reloads the key from memory. */
int ds_mesi_mem_write_refused(struct ds_mesi *m, uint64_t id, uint64_t now)
{
    release_polled(m);
    struct rec *r = find_mem_op(m, id, PH_PERSIST);
    if (!r)
        return DS_MESI_ENOTFOUND;
    dir_drop(m, r);
    m->st.mem_refused++;
    m->ready_at = MAX64(m->ready_at, now + m->cfg.lease_ms + m->cfg.margin_ms);
    drain_self(m, now);
    return DS_MESI_OK;
}

/* ------------------------------------------------------------------ time */

/* Client operations past their deadline complete with EUNAVAIL; a request nobody waits for any more
 * is abandoned (a late Data is then dropped as stale; the home's extra sharer/owner is harmless). */
static void line_timeouts(struct ds_mesi *m, struct rec *r, uint64_t now)
{
    struct line *l = &r->line;
    struct op **pp = &l->ops, *prev = NULL;
    while (*pp) {
        struct op *o = *pp;
        if (now < o->deadline) {
            prev = o;
            pp = &o->next;
            continue;
        }
        *pp = o->next;
        l->nops--;
        m->st.op_timeouts++;
        op_done(m, r, o, DS_MESI_EUNAVAIL, l->version);
    }
    l->ops_tail = prev;
    if (l->req && l->req_op && (!l->ops || l->ops->id != l->req_op)) {
        /* The carried write timed out; it may or may not be at the home.  A WB's line is
         * forgotten (the home recalls it as "no copy"); a GetM is abandoned. */
        l->req_op = 0;
        if (l->req_type == DS_MESI_MSG_WB) {
            req_clear(l);
            line_to_i(m, r);
        } else {
            abandon_request(m, r);
        }
    }
    if (!l->ops && l->req && line_waits_data(l))
        abandon_request(m, r);
}

static void line_tick(struct ds_mesi *m, struct rec *r, uint64_t now)
{
    struct line *l = &r->line;
    line_check_lease(m, r, now);
    line_timeouts(m, r, now);
    if (l->req && now - l->req_last >= m->cfg.retry_ms) {
        req_transmit(m, r, now);
    } else if (!l->req && l->st == DS_MESI_M && m->cfg.write_policy == DS_MESI_WRITE_BACK) {
        int flush = l->version > l->acked_base && now - l->dirty_since >= m->cfg.flush_ms;
        int renew = l->lease_until - now < m->cfg.lease_ms / 2;
        if (flush || renew)
            req_start(m, r, DS_MESI_MSG_WB, now);
    }
    line_kick(m, r, now);
}

/* A copy granted by this home may still be valid. */
static int dir_granted(const struct dir *d, uint64_t now)
{
    for (int y = 0; y < DS_MESI_MAX_NODES; y++)
        if (((d->sharers | (d->owner >= 0 ? BIT(d->owner) : 0)) & BIT(y)) && now < d->until[y])
            return 1;
    return 0;
}

static void dir_tick(struct ds_mesi *m, struct rec *r, uint64_t now)
{
    struct dir *d = r->dir;
    if (home_lapsed(m, d, now)) {
        dir_drop(m, r);
        return;
    }
    /* keep the lease of a key in use, so that grants need no round trip to memory */
    if (m->cfg.home_lease_ms && d->loaded && !d->renew_op &&
        d->lease_until < now + m->cfg.home_lease_ms / 2 &&
        (d->qlen || d->phase != PH_IDLE || dir_granted(d, now)))
        renew_start(m, r, now);
    if (d->phase == PH_RECALL && now - d->last_send >= m->cfg.retry_ms)
        for (int y = 0; y < DS_MESI_MAX_NODES; y++)
            if (d->awaiting & BIT(y))
                send_recall(m, r, y, now);
    dir_step(m, r, now);
}

void ds_mesi_tick(struct ds_mesi *m, uint64_t now)
{
    release_polled(m);
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct rec **pp = &m->tab[i];
        while (*pp) {
            struct rec *r = *pp;
            line_tick(m, r, now);
            if (r->dir)
                dir_tick(m, r, now);
            if (rec_dead(r)) {
                *pp = r->next;
                m->nrecs--;
                rec_free(m, r);
                continue;
            }
            pp = &r->next;
        }
    }
    evict_if_needed(m, NULL, now);
    drain_self(m, now);
}

/* New membership: entries no longer homed here are dropped, and the home waits one lease term
 * before granting again (copies granted under the old membership expire meanwhile). */
void ds_mesi_set_epoch(struct ds_mesi *m, uint64_t epoch, uint64_t now)
{
    release_polled(m);
    m->epoch = epoch;
    m->ready_at = now + m->cfg.lease_ms + m->cfg.margin_ms;
    for (size_t i = 0; i < m->nbuckets; i++)
        for (struct rec *r = m->tab[i]; r; r = r->next)
            if (r->dir && home_of(m, r) != m->cfg.self)
                dir_drop(m, r);
}

/* ------------------------------------------------------------------ life cycle */

int ds_mesi_create(const struct ds_mesi_config *cfg, uint64_t now, struct ds_mesi **out)
{
    if (!cfg || !cfg->ring || cfg->self >= DS_MESI_MAX_NODES || cfg->incarnation > UINT32_MAX ||
        !cfg->queue_max ||
        !cfg->lease_ms || cfg->margin_ms >= cfg->lease_ms / 2 || !cfg->retry_ms || !cfg->ops_max ||
        cfg->max_dirty == 0 || (cfg->home_lease_ms && cfg->home_lease_ms < 2 * cfg->lease_ms))
        return DS_MESI_EINVAL;
    struct ds_mesi *m = calloc(1, sizeof *m);
    if (!m)
        return DS_MESI_ENOMEM;
    m->cfg = *cfg;
    m->epoch = cfg->epoch;
    m->ready_at = now + cfg->lease_ms + cfg->margin_ms;
    m->next_id = 1;
    m->nbuckets = 64;
    m->tab = calloc(m->nbuckets, sizeof *m->tab);
    if (!m->tab) {
        free(m);
        return DS_MESI_ENOMEM;
    }
    ds_mesi_lru_init(&m->lru);
    m->policy = cfg->policy ? cfg->policy : &m->lru.ops;
    *out = m;
    return DS_MESI_OK;
}

void ds_mesi_destroy(struct ds_mesi *m)
{
    if (!m)
        return;
    release_polled(m);
    for (size_t i = 0; i < m->nbuckets; i++)
        for (struct rec *r = m->tab[i], *nx; r; r = nx) {
            nx = r->next;
            rec_free(m, r);
        }
    free(m->tab);
    for (size_t i = m->out.head; i < m->out.len; i++) {
        free((void *)m->out.items[i].key);
        free((void *)m->out.items[i].value);
    }
    free(m->out.items);
    for (size_t i = m->selfq_head; i < m->selfq_len; i++) {
        free(m->selfq[i].key);
        free(m->selfq[i].value);
    }
    free(m->selfq);
    free(m);
}

/* ------------------------------------------------------------------ introspection */

int ds_mesi_line_info(struct ds_mesi *m, const uint8_t *key, size_t klen, uint64_t now,
                      struct ds_mesi_line_info *info)
{
    release_polled(m);
    struct rec *r = rec_find(m, key, klen);
    memset(info, 0, sizeof *info);
    if (!r)
        return DS_MESI_ENOTFOUND;
    const struct line *l = &r->line;
    info->state = l->st;
    info->version = l->version;
    info->lease_until = l->lease_until;
    info->lease_valid = lease_valid(l, now);
    info->present = l->present;
    info->dirty = l->version > l->acked_base;
    info->acked_base = l->acked_base;
    info->unflushed_from = l->ans_txn && l->ans_from < l->acked_base ? l->ans_from : l->acked_base;
    info->gid = l->gid;
    info->value = l->value;
    info->value_len = l->vlen;
    info->pending_ops = l->nops;
    return DS_MESI_OK;
}

int ds_mesi_dir_info(struct ds_mesi *m, const uint8_t *key, size_t klen, uint64_t now,
                     struct ds_mesi_dir_info *info)
{
    release_polled(m);
    struct rec *r = rec_find(m, key, klen);
    memset(info, 0, sizeof *info);
    info->owner = -1;
    info->ready = now >= m->ready_at;
    if (!r || !r->dir)
        return DS_MESI_ENOTFOUND;
    const struct dir *d = r->dir;
    info->state = d->st;
    info->sharers = d->sharers;
    info->owner = d->owner;
    info->version = d->version;
    info->floor = d->floor;
    info->busy = d->phase != PH_IDLE;
    info->queued = d->qlen;
    return DS_MESI_OK;
}

const struct ds_mesi_stats *ds_mesi_stats(struct ds_mesi *m)
{
    memset(m->st.lines, 0, sizeof m->st.lines);
    for (size_t i = 0; i < m->nbuckets; i++)
        for (struct rec *r = m->tab[i]; r; r = r->next)
            if (r->line.resident)
                m->st.lines[r->line.st]++;
    return &m->st;
}
