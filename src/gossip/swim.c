/* SWIM membership state machine (Das et al. 2002, §3-§4) with Lifeguard suspicion timeouts. */
#include "gossip/swim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/prng.h"

#define SWIM_EVENTS_MAX 512
#define SWIM_OUTBOX_MAX 1024
#define SWIM_RELAYS_MAX 32
#define SWIM_SEEDS_MAX 16
#define SWIM_CONFIRM_MAX 8
#define SWIM_LEAVE_FANOUT 8

struct member {
    struct ds_swim_node n;
    uint64_t suspect_at;   /* when this node started its suspicion timer */
    uint32_t tx_left;      /* piggyback sends left for the current record (§4.1) */
    uint16_t n_confirm;    /* our own later failed probes of it while suspected (Lifeguard) */
};

struct probe {
    bool active, acked, indirect;
    size_t target;
    uint32_t seq;
    uint64_t sent_at;
};

/* A PING_REQ we serve: our own ping to the target, whose ack goes back to the requester. */
struct relay {
    bool used;
    uint32_t seq, orig_seq;
    char to_id[DS_SWIM_ID_MAX];
    char to_url[DS_SWIM_URL_MAX];
    char target_id[DS_SWIM_ID_MAX];
};

struct ds_swim {
    struct ds_swim_config cfg;
    char role[DS_SWIM_ROLE_MAX];
    char cluster[DS_SWIM_CLUSTER_MAX];
    struct ds_prng prng;
    struct member *members; /* [0] is this node; never removed, so indices are stable */
    size_t n_members;
    size_t order[DS_SWIM_MEMBERS_MAX]; /* shuffled round-robin probe order (§4.3) */
    size_t n_order, order_pos;
    struct probe probe;
    struct relay relays[SWIM_RELAYS_MAX];
    size_t relay_next;
    uint32_t seq;
    uint64_t next_period, periods;
    char seeds[SWIM_SEEDS_MAX][DS_SWIM_URL_MAX];
    size_t n_seeds;
    uint64_t next_join;
    bool left;
    struct ds_swim_out *outbox; /* ring of SWIM_OUTBOX_MAX */
    size_t out_head, out_len;
    struct ds_swim_event events[SWIM_EVENTS_MAX];
    size_t ev_head, ev_len;
    struct ds_swim_counters ctr;
};

/* ---- small helpers ------------------------------------------------------------------------- */

static struct ds_swim_node *self_node(struct ds_swim *s)
{
    return &s->members[0].n;
}

static bool is_up(uint8_t state)
{
    return state == DS_SWIM_ALIVE || state == DS_SWIM_SUSPECT;
}

static bool find_idx(const struct ds_swim *s, const char *id, size_t *idx)
{
    for (size_t i = 0; i < s->n_members; i++)
        if (strcmp(s->members[i].n.id, id) == 0) {
            *idx = i;
            return true;
        }
    return false;
}

static size_t up_count(const struct ds_swim *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_members; i++)
        n += is_up(s->members[i].n.state);
    return n;
}

/* lambda * ceil(log2(n + 1)) sends per update (§4.1). */
static uint32_t retransmit_limit(const struct ds_swim *s)
{
    uint32_t bits = 0;
    for (size_t n = s->n_members + 1; n > 1; n = (n + 1) / 2)
        bits++;
    return s->cfg.retransmit_mult * (bits ? bits : 1);
}

/* Lifeguard: min = alpha*max(1,log10 n)*T, max = beta*min, shrinking with confirmations c:
 * max - (max - min) * log(c + 1) / log(K + 1), never below min. */
static uint64_t suspicion_timeout(const struct ds_swim *s, const struct member *m)
{
    double n = (double)up_count(s);
    double min = s->cfg.suspicion_mult * fmax(1.0, log10(n)) * s->cfg.period_ms;
    double max = s->cfg.suspicion_max_mult * min;
    double k = s->cfg.indirect_k ? s->cfg.indirect_k : 1;
    double t = max - (max - min) * log(m->n_confirm + 1.0) / log(k + 1.0);
    return (uint64_t)fmax(min, t);
}

static void push_event(struct ds_swim *s, uint8_t type, const struct ds_swim_node *n)
{
    if (s->ev_len == SWIM_EVENTS_MAX) {
        s->ctr.dropped++;
        return;
    }
    struct ds_swim_event *ev = &s->events[(s->ev_head + s->ev_len++) % SWIM_EVENTS_MAX];
    ev->type = type;
    memcpy(ev->id, n->id, sizeof ev->id);
    ev->incarnation = n->incarnation;
}

/* Inserts member idx at a uniformly random place in the rest of this round (§4.3). */
static void order_insert(struct ds_swim *s, size_t idx)
{
    for (size_t i = s->order_pos; i < s->n_order; i++)
        if (s->order[i] == idx)
            return;
    if (s->n_order == DS_SWIM_MEMBERS_MAX)
        return;
    s->order[s->n_order++] = idx;
    size_t span = s->n_order - s->order_pos;
    size_t j = s->order_pos + (size_t)ds_prng_below(&s->prng, span);
    s->order[s->n_order - 1] = s->order[j];
    s->order[j] = idx;
}

static void shuffle(struct ds_swim *s, size_t *a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)ds_prng_below(&s->prng, i);
        size_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

/* Up to `want` random up members other than self and `skip`, into out[]; returns how many. */
static size_t pick_random(struct ds_swim *s, size_t want, size_t skip, size_t *out)
{
    size_t cand[DS_SWIM_MEMBERS_MAX], n = 0;
    for (size_t i = 1; i < s->n_members; i++)
        if (i != skip && is_up(s->members[i].n.state))
            cand[n++] = i;
    shuffle(s, cand, n);
    n = n < want ? n : want;
    memcpy(out, cand, n * sizeof *out);
    return n;
}

/* ---- sending ------------------------------------------------------------------------------- */

static void outbox_push(struct ds_swim *s, const char *to_id, const char *to_url,
                        struct ds_swim_msg *m)
{
    struct ds_swim_out o = {0};
    memcpy(m->cluster, s->cluster, sizeof m->cluster);
    memcpy(m->role, s->role, sizeof m->role);
    m->from = *self_node(s);
    if (s->out_len == SWIM_OUTBOX_MAX || ds_swim_msg_encode(m, &o.buf, &o.len) != DS_SWIM_OK) {
        s->ctr.dropped++;
        return;
    }
    snprintf(o.to_id, sizeof o.to_id, "%s", to_id);
    snprintf(o.to_url, sizeof o.to_url, "%s", to_url);
    s->outbox[(s->out_head + s->out_len++) % SWIM_OUTBOX_MAX] = o;
}

/* Chooses up to DS_SWIM_PIGGYBACK_MAX updates, fewest-sent first (§4.1); a suspected `buddy`
 * goes first so it hears of its suspicion (Lifeguard). */
static uint16_t piggyback(struct ds_swim *s, size_t buddy, struct ds_swim_node *out)
{
    uint16_t n = 0;
    bool taken[DS_SWIM_MEMBERS_MAX] = {false};
    if (buddy < s->n_members && s->members[buddy].n.state == DS_SWIM_SUSPECT) {
        out[n++] = s->members[buddy].n;
        taken[buddy] = true;
    }
    while (n < DS_SWIM_PIGGYBACK_MAX) {
        size_t best = 0;
        for (size_t i = 1; i < s->n_members; i++)
            if (!taken[i] && s->members[i].tx_left > 0 &&
                (best == 0 || s->members[i].tx_left > s->members[best].tx_left))
                best = i;
        if (best == 0)
            break;
        taken[best] = true;
        s->members[best].tx_left--;
        out[n++] = s->members[best].n;
    }
    return n;
}

/* Sends a PING, PING_REQ or ACK with piggybacked updates. */
static void send_small(struct ds_swim *s, uint8_t type, uint32_t seq, const char *to_id,
                       const char *to_url, const struct ds_swim_node *target, size_t buddy)
{
    struct ds_swim_node nodes[DS_SWIM_PIGGYBACK_MAX];
    struct ds_swim_msg m = {.type = type, .seq = seq, .nodes = nodes};
    if (target != NULL) {
        memcpy(m.target_id, target->id, sizeof m.target_id);
        if (type == DS_SWIM_MSG_PING_REQ)
            memcpy(m.target_url, target->url, sizeof m.target_url);
    }
    m.n_nodes = piggyback(s, buddy, nodes);
    outbox_push(s, to_id, to_url, &m);
}

/* Sends the whole table (push-pull): SYNC or SYNC_ACK. */
static void send_sync(struct ds_swim *s, uint8_t type, const char *to_id, const char *to_url)
{
    struct ds_swim_msg m = {.type = type};
    m.nodes = malloc(s->n_members * sizeof *m.nodes);
    if (m.nodes == NULL) {
        s->ctr.dropped++;
        return;
    }
    for (size_t i = 0; i < s->n_members; i++)
        m.nodes[i] = s->members[i].n;
    m.n_nodes = (uint16_t)s->n_members;
    outbox_push(s, to_id, to_url, &m);
    free(m.nodes);
}

/* ---- merging records (§4.2: incarnation order, then alive < suspect < dead < left) --------- */

static void bump_self(struct ds_swim *s, uint64_t above)
{
    struct ds_swim_node *me = self_node(s);
    me->incarnation = (above > me->incarnation ? above : me->incarnation) + 1;
}

/* A record about ourselves: refute suspicion, death or a stale leave with a higher incarnation. */
static void merge_self(struct ds_swim *s, const struct ds_swim_node *r)
{
    if (s->left)
        return;
    if (r->state == DS_SWIM_ALIVE) {
        if (r->incarnation > self_node(s)->incarnation)
            bump_self(s, r->incarnation);
        return;
    }
    if (r->incarnation < self_node(s)->incarnation)
        return;
    bump_self(s, r->incarnation);
    s->ctr.refutations++;
}

static void add_member(struct ds_swim *s, const struct ds_swim_node *r, uint64_t now)
{
    if (s->n_members == DS_SWIM_MEMBERS_MAX) {
        s->ctr.dropped++;
        return;
    }
    size_t idx = s->n_members++;
    struct member *m = &s->members[idx];
    memset(m, 0, sizeof *m);
    m->n = *r;
    m->tx_left = retransmit_limit(s);
    m->suspect_at = now;
    if (!is_up(r->state))
        return;
    push_event(s, DS_SWIM_EV_UP, &m->n);
    if (r->state == DS_SWIM_SUSPECT)
        push_event(s, DS_SWIM_EV_SUSPECT, &m->n);
    order_insert(s, idx);
}

static bool same_meta(const struct ds_swim_node *a, const struct ds_swim_node *b)
{
    if (strcmp(a->url, b->url) != 0 || a->n_meta != b->n_meta)
        return false;
    for (uint8_t i = 0; i < a->n_meta; i++)
        if (strcmp(a->meta[i].key, b->meta[i].key) != 0 ||
            strcmp(a->meta[i].value, b->meta[i].value) != 0)
            return false;
    return true;
}


static void emit_transition(struct ds_swim *s, size_t idx, uint8_t old, bool meta_changed)
{
    const struct ds_swim_node *n = &s->members[idx].n;
    if (!is_up(old) && is_up(n->state)) {
        push_event(s, DS_SWIM_EV_UP, n);
        order_insert(s, idx);
    }
    if (n->state == DS_SWIM_SUSPECT)
        push_event(s, DS_SWIM_EV_SUSPECT, n);
    else if (n->state == DS_SWIM_ALIVE && old == DS_SWIM_SUSPECT)
        push_event(s, DS_SWIM_EV_ALIVE, n);
    else if (n->state == DS_SWIM_DEAD && old != DS_SWIM_DEAD)
        push_event(s, DS_SWIM_EV_DOWN, n);
    else if (n->state == DS_SWIM_LEFT && old != DS_SWIM_LEFT)
        push_event(s, DS_SWIM_EV_LEFT, n);
    /* new metadata of a member that stays up, also when it arrives with a state change (e.g. the
     * record that refutes a suspicion): found by a soak seed */
    if (meta_changed && is_up(old) && is_up(n->state))
        push_event(s, DS_SWIM_EV_META, n);
}

static void apply(struct ds_swim *s, size_t idx, const struct ds_swim_node *r, uint64_t now)
{
    struct member *m = &s->members[idx];
    uint8_t old = m->n.state;
    /* Back from the dead within the same boot: it never restarted, so the death was false. */
    if (old == DS_SWIM_DEAD && is_up(r->state) && r->incarnation >> 32 == m->n.incarnation >> 32)
        s->ctr.false_positive_deaths++;
    bool meta_changed = !same_meta(&m->n, r);
    m->n = *r;
    m->tx_left = retransmit_limit(s);
    if (r->state == DS_SWIM_SUSPECT) {
        m->suspect_at = now;
        m->n_confirm = 0;
    }
    emit_transition(s, idx, old, meta_changed);
}

static void merge(struct ds_swim *s, const struct ds_swim_node *r, uint64_t now)
{
    size_t idx;
    if (strcmp(r->id, self_node(s)->id) == 0) {
        merge_self(s, r);
        return;
    }
    if (!find_idx(s, r->id, &idx)) {
        add_member(s, r, now);
        return;
    }
    struct member *m = &s->members[idx];
    if (r->incarnation < m->n.incarnation)
        return;
    if (r->incarnation == m->n.incarnation && r->state <= m->n.state)
        return;
    apply(s, idx, r, now);
}

/* ---- failure detection (§3.1, §4.2) -------------------------------------------------------- */

/* Our own failed probe: suspect an alive member; for one already suspected it is an independent
 * confirmation that shortens the timeout (Lifeguard).  Gossiped records do not say who suspected,
 * so relays of the same suspicion are not counted: they are not independent. */
static void suspect(struct ds_swim *s, size_t idx, uint64_t now)
{
    struct member *m = &s->members[idx];
    if (m->n.state == DS_SWIM_SUSPECT && m->n_confirm < SWIM_CONFIRM_MAX)
        m->n_confirm++;
    if (m->n.state != DS_SWIM_ALIVE)
        return;
    struct ds_swim_node r = m->n;
    r.state = DS_SWIM_SUSPECT;
    s->ctr.suspicions++;
    apply(s, idx, &r, now);
}

static void expire_suspicions(struct ds_swim *s, uint64_t now)
{
    for (size_t i = 1; i < s->n_members; i++) {
        struct member *m = &s->members[i];
        if (m->n.state != DS_SWIM_SUSPECT || now < m->suspect_at + suspicion_timeout(s, m))
            continue;
        struct ds_swim_node r = m->n;
        r.state = DS_SWIM_DEAD;
        s->ctr.deaths++;
        apply(s, i, &r, now);
    }
}

static bool next_target(struct ds_swim *s, size_t *idx)
{
    for (int pass = 0; pass < 2; pass++) {
        while (s->order_pos < s->n_order) {
            size_t i = s->order[s->order_pos++];
            if (i < s->n_members && is_up(s->members[i].n.state)) {
                *idx = i;
                return true;
            }
        }
        s->n_order = 0;
        s->order_pos = 0;
        for (size_t i = 1; i < s->n_members; i++)
            if (is_up(s->members[i].n.state))
                s->order[s->n_order++] = i;
        shuffle(s, s->order, s->n_order);
    }
    return false;
}

static void start_probe(struct ds_swim *s, uint64_t now)
{
    size_t t;
    s->probe.active = false;
    if (!next_target(s, &t))
        return;
    s->probe = (struct probe){.active = true, .target = t, .seq = ++s->seq, .sent_at = now};
    s->ctr.probes++;
    const struct ds_swim_node *n = &s->members[t].n;
    send_small(s, DS_SWIM_MSG_PING, s->probe.seq, n->id, n->url, n, t);
}

/* Direct ack overdue: ask k members to probe the target for us (§3.1). */
static void probe_indirectly(struct ds_swim *s)
{
    size_t via[DS_SWIM_MEMBERS_MAX];
    size_t n = pick_random(s, s->cfg.indirect_k, s->probe.target, via);
    const struct ds_swim_node *target = &s->members[s->probe.target].n;
    s->probe.indirect = true;
    for (size_t i = 0; i < n; i++) {
        const struct ds_swim_node *v = &s->members[via[i]].n;
        send_small(s, DS_SWIM_MSG_PING_REQ, s->probe.seq, v->id, v->url, target, s->probe.target);
        s->ctr.indirect_probes++;
    }
}

/* Push-pull with a random known member that has not left, dead ones included, so that the two
 * sides of a healed partition find each other. */
static void sync_random(struct ds_swim *s)
{
    size_t cand[DS_SWIM_MEMBERS_MAX], n = 0;
    for (size_t i = 1; i < s->n_members; i++)
        if (s->members[i].n.state != DS_SWIM_LEFT)
            cand[n++] = i;
    if (n == 0)
        return;
    const struct ds_swim_node *t = &s->members[cand[ds_prng_below(&s->prng, n)]].n;
    send_sync(s, DS_SWIM_MSG_SYNC, t->id, t->url);
}

static void join_round(struct ds_swim *s, uint64_t now)
{
    if (s->n_seeds == 0 || up_count(s) > 1 || now < s->next_join)
        return;
    for (size_t i = 0; i < s->n_seeds; i++)
        send_sync(s, DS_SWIM_MSG_SYNC, "", s->seeds[i]);
    s->next_join = now + s->cfg.join_retry_ms;
}

static void period(struct ds_swim *s, uint64_t now)
{
    if (s->probe.active && !s->probe.acked)
        suspect(s, s->probe.target, now);
    start_probe(s, now);
    s->periods++;
    if (s->cfg.sync_every && s->periods % s->cfg.sync_every == 0)
        sync_random(s);
    s->next_period += s->cfg.period_ms;
    if (s->next_period <= now)
        s->next_period = now + s->cfg.period_ms;
}

void ds_swim_tick(struct ds_swim *s, uint64_t now_ms)
{
    if (s->left)
        return;
    expire_suspicions(s, now_ms);
    if (s->probe.active && !s->probe.acked && !s->probe.indirect &&
        now_ms >= s->probe.sent_at + s->cfg.probe_timeout_ms)
        probe_indirectly(s);
    if (now_ms >= s->next_period)
        period(s, now_ms);
    join_round(s, now_ms);
}

/* ---- receiving ----------------------------------------------------------------------------- */

static void on_ping_req(struct ds_swim *s, const struct ds_swim_msg *m)
{
    struct relay *r = &s->relays[s->relay_next++ % SWIM_RELAYS_MAX];
    struct ds_swim_node target = {0};
    size_t idx = DS_SWIM_MEMBERS_MAX;
    if (m->target_id[0] == '\0' || m->target_url[0] == '\0')
        return;
    memcpy(target.id, m->target_id, sizeof target.id);
    memcpy(target.url, m->target_url, sizeof target.url);
    find_idx(s, target.id, &idx);
    *r = (struct relay){.used = true, .seq = ++s->seq, .orig_seq = m->seq};
    memcpy(r->to_id, m->from.id, sizeof r->to_id);
    memcpy(r->to_url, m->from.url, sizeof r->to_url);
    memcpy(r->target_id, m->target_id, sizeof r->target_id);
    send_small(s, DS_SWIM_MSG_PING, r->seq, target.id, target.url, &target, idx);
}

static void on_ack(struct ds_swim *s, const struct ds_swim_msg *m)
{
    struct probe *p = &s->probe;
    if (p->active && m->seq == p->seq && strcmp(m->target_id, s->members[p->target].n.id) == 0) {
        p->acked = true;
        return;
    }
    for (size_t i = 0; i < SWIM_RELAYS_MAX; i++) {
        struct relay *r = &s->relays[i];
        if (!r->used || r->seq != m->seq || strcmp(r->target_id, m->target_id) != 0)
            continue;
        struct ds_swim_node target = {0};
        memcpy(target.id, r->target_id, sizeof target.id);
        r->used = false;
        send_small(s, DS_SWIM_MSG_ACK, r->orig_seq, r->to_id, r->to_url, &target,
                   DS_SWIM_MEMBERS_MAX);
        return;
    }
}

static bool str_ok(const char *str, size_t cap, size_t min)
{
    size_t n = strnlen(str, cap);
    return n < cap && n >= min;
}

static bool node_ok(const struct ds_swim_node *n)
{
    return str_ok(n->id, DS_SWIM_ID_MAX, 1) && str_ok(n->url, DS_SWIM_URL_MAX, 1) &&
           n->state <= DS_SWIM_LEFT && n->n_meta <= DS_SWIM_META_MAX;
}

/* A decoded message always passes; this guards structs the glue builds itself. */
static bool msg_ok(const struct ds_swim_msg *m)
{
    if (!str_ok(m->cluster, DS_SWIM_CLUSTER_MAX, 1) || !str_ok(m->role, DS_SWIM_ROLE_MAX, 1) ||
        !node_ok(&m->from) || !str_ok(m->target_id, DS_SWIM_ID_MAX, 0) ||
        !str_ok(m->target_url, DS_SWIM_URL_MAX, 0) || m->n_nodes > DS_SWIM_MEMBERS_MAX ||
        (m->n_nodes && m->nodes == NULL))
        return false;
    for (uint16_t i = 0; i < m->n_nodes; i++)
        if (!node_ok(&m->nodes[i]))
            return false;
    return true;
}

int ds_swim_recv_msg(struct ds_swim *s, const struct ds_swim_msg *m, uint64_t now_ms)
{
    size_t from = 0;
    if (!msg_ok(m)) {
        s->ctr.rejected_malformed++;
        return DS_SWIM_EBADMSG;
    }
    if (strcmp(m->cluster, s->cluster) != 0 || strcmp(m->role, s->role) != 0) {
        s->ctr.rejected_foreign++;
        return DS_SWIM_EFOREIGN;
    }
    if (s->left)
        return DS_SWIM_ELEFT;
    if (strcmp(m->from.id, self_node(s)->id) == 0)
        return DS_SWIM_OK;
    merge(s, &m->from, now_ms);
    find_idx(s, m->from.id, &from);
    for (uint16_t i = 0; i < m->n_nodes; i++)
        merge(s, &m->nodes[i], now_ms);
    switch (m->type) {
    case DS_SWIM_MSG_PING:
        if (m->target_id[0] == '\0' || strcmp(m->target_id, self_node(s)->id) == 0)
            send_small(s, DS_SWIM_MSG_ACK, m->seq, m->from.id, m->from.url, self_node(s), from);
        break;
    case DS_SWIM_MSG_PING_REQ:
        on_ping_req(s, m);
        break;
    case DS_SWIM_MSG_ACK:
        on_ack(s, m);
        break;
    case DS_SWIM_MSG_SYNC:
        send_sync(s, DS_SWIM_MSG_SYNC_ACK, m->from.id, m->from.url);
        break;
    default:
        break;
    }
    return DS_SWIM_OK;
}

int ds_swim_recv(struct ds_swim *s, const uint8_t *buf, size_t len, uint64_t now_ms)
{
    struct ds_swim_msg m;
    int rv = ds_swim_msg_decode(buf, len, &m);
    if (rv != DS_SWIM_OK) {
        s->ctr.rejected_malformed++;
        return rv;
    }
    rv = ds_swim_recv_msg(s, &m, now_ms);
    ds_swim_msg_free(&m);
    return rv;
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

void ds_swim_config_default(struct ds_swim_config *c)
{
    *c = (struct ds_swim_config){
        .period_ms = 1000,
        .probe_timeout_ms = 300,
        .indirect_k = 3,
        .suspicion_mult = 4,
        .suspicion_max_mult = 6,
        .retransmit_mult = 4,
        .sync_every = 20,
        .join_retry_ms = 1000,
    };
}

static bool config_ok(const struct ds_swim_config *c)
{
    return c->period_ms > 0 && c->probe_timeout_ms < c->period_ms &&
           c->indirect_k < DS_SWIM_MEMBERS_MAX && c->suspicion_mult > 0 &&
           c->suspicion_max_mult >= 1 && c->retransmit_mult > 0 && c->join_retry_ms > 0;
}

static bool meta_ok(const struct ds_swim_meta *meta, size_t n)
{
    if (n > DS_SWIM_META_MAX || (n && meta == NULL))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!str_ok(meta[i].key, DS_SWIM_META_KEY_MAX, 1) ||
            !str_ok(meta[i].value, DS_SWIM_META_VAL_MAX, 0))
            return false;
    return true;
}

static bool self_ok(const struct ds_swim_self *me)
{
    return me->id && me->url && me->role && me->cluster && str_ok(me->id, DS_SWIM_ID_MAX, 1) &&
           str_ok(me->url, DS_SWIM_URL_MAX, 1) && str_ok(me->role, DS_SWIM_ROLE_MAX, 1) &&
           str_ok(me->cluster, DS_SWIM_CLUSTER_MAX, 1) && meta_ok(me->meta, me->n_meta);
}

static void set_self_meta(struct ds_swim *s, const struct ds_swim_meta *meta, size_t n)
{
    struct ds_swim_node *me = self_node(s);
    me->n_meta = (uint8_t)n;
    for (size_t i = 0; i < n; i++)
        me->meta[i] = meta[i];
}

int ds_swim_create(const struct ds_swim_self *self, const struct ds_swim_config *cfg,
                   uint64_t seed, uint64_t now_ms, struct ds_swim **out)
{
    struct ds_swim_config dflt;
    struct ds_swim *s = NULL;
    ds_swim_config_default(&dflt);
    cfg = cfg ? cfg : &dflt;
    if (!self_ok(self) || !config_ok(cfg))
        return DS_SWIM_EINVAL;
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return DS_SWIM_ENOMEM;
    s->members = calloc(DS_SWIM_MEMBERS_MAX, sizeof *s->members);
    s->outbox = calloc(SWIM_OUTBOX_MAX, sizeof *s->outbox);
    if (s->members == NULL || s->outbox == NULL)
        goto err;
    s->cfg = *cfg;
    snprintf(s->role, sizeof s->role, "%s", self->role);
    snprintf(s->cluster, sizeof s->cluster, "%s", self->cluster);
    ds_prng_seed(&s->prng, seed);
    s->n_members = 1;
    snprintf(self_node(s)->id, DS_SWIM_ID_MAX, "%s", self->id);
    snprintf(self_node(s)->url, DS_SWIM_URL_MAX, "%s", self->url);
    self_node(s)->incarnation = (uint64_t)self->boot << 32;
    set_self_meta(s, self->meta, self->n_meta);
    s->next_period = now_ms;
    *out = s;
    return DS_SWIM_OK;
err:
    ds_swim_destroy(s);
    return DS_SWIM_ENOMEM;
}

void ds_swim_destroy(struct ds_swim *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; s->outbox != NULL && i < s->out_len; i++)
        free(s->outbox[(s->out_head + i) % SWIM_OUTBOX_MAX].buf);
    free(s->outbox);
    free(s->members);
    free(s);
}

int ds_swim_join(struct ds_swim *s, const char *const *seed_urls, size_t n, uint64_t now_ms)
{
    if (s->left)
        return DS_SWIM_ELEFT;
    if (n > SWIM_SEEDS_MAX || (n && seed_urls == NULL))
        return DS_SWIM_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (seed_urls[i] == NULL || !str_ok(seed_urls[i], DS_SWIM_URL_MAX, 1))
            return DS_SWIM_EINVAL;
    s->n_seeds = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(seed_urls[i], self_node(s)->url) != 0)
            snprintf(s->seeds[s->n_seeds++], DS_SWIM_URL_MAX, "%s", seed_urls[i]);
    s->next_join = now_ms;
    join_round(s, now_ms);
    return DS_SWIM_OK;
}

int ds_swim_leave(struct ds_swim *s)
{
    size_t to[SWIM_LEAVE_FANOUT];
    if (s->left)
        return DS_SWIM_ELEFT;
    bump_self(s, 0);
    self_node(s)->state = DS_SWIM_LEFT;
    size_t n = pick_random(s, SWIM_LEAVE_FANOUT, 0, to);
    for (size_t i = 0; i < n; i++) {
        const struct ds_swim_node *t = &s->members[to[i]].n;
        send_small(s, DS_SWIM_MSG_PING, ++s->seq, t->id, t->url, t, DS_SWIM_MEMBERS_MAX);
    }
    s->left = true;
    return DS_SWIM_OK;
}

int ds_swim_set_meta(struct ds_swim *s, const struct ds_swim_meta *meta, size_t n)
{
    if (s->left)
        return DS_SWIM_ELEFT;
    if (!meta_ok(meta, n))
        return DS_SWIM_EINVAL;
    set_self_meta(s, meta, n);
    bump_self(s, 0);
    return DS_SWIM_OK;
}

/* ---- queues and introspection ---------------------------------------------------------------- */

int ds_swim_pop_out(struct ds_swim *s, struct ds_swim_out *out)
{
    if (s->out_len == 0)
        return DS_SWIM_EEMPTY;
    *out = s->outbox[s->out_head];
    s->out_head = (s->out_head + 1) % SWIM_OUTBOX_MAX;
    s->out_len--;
    return DS_SWIM_OK;
}

int ds_swim_pop_event(struct ds_swim *s, struct ds_swim_event *ev)
{
    if (s->ev_len == 0)
        return DS_SWIM_EEMPTY;
    *ev = s->events[s->ev_head];
    s->ev_head = (s->ev_head + 1) % SWIM_EVENTS_MAX;
    s->ev_len--;
    return DS_SWIM_OK;
}

size_t ds_swim_member_count(const struct ds_swim *s)
{
    return s->n_members;
}

const struct ds_swim_node *ds_swim_member(const struct ds_swim *s, size_t i)
{
    return i < s->n_members ? &s->members[i].n : NULL;
}

const struct ds_swim_node *ds_swim_find(const struct ds_swim *s, const char *id)
{
    size_t idx;
    return find_idx(s, id, &idx) ? &s->members[idx].n : NULL;
}

const char *ds_swim_role(const struct ds_swim *s)
{
    return s->role;
}

const char *ds_swim_cluster(const struct ds_swim *s)
{
    return s->cluster;
}

void ds_swim_get_counters(const struct ds_swim *s, struct ds_swim_counters *c)
{
    *c = s->ctr;
}

const char *ds_swim_strerror(int rv)
{
    static const char *const msg[] = {
        [DS_SWIM_OK] = "ok",
        [DS_SWIM_EINVAL] = "invalid argument",
        [DS_SWIM_ENOMEM] = "out of memory",
        [DS_SWIM_ETRUNC] = "truncated message",
        [DS_SWIM_EBADMSG] = "malformed message",
        [DS_SWIM_ETOOBIG] = "message, string or count too large",
        [DS_SWIM_EFOREIGN] = "member of another cluster or role",
        [DS_SWIM_EEMPTY] = "nothing queued",
        [DS_SWIM_ELEFT] = "member has left",
    };
    if (rv < 0 || (size_t)rv >= sizeof msg / sizeof msg[0])
        return "unknown swim error";
    return msg[rv];
}

const char *ds_swim_state_name(uint8_t state)
{
    static const char *const names[] = {"alive", "suspect", "dead", "left"};
    return state <= DS_SWIM_LEFT ? names[state] : "unknown";
}
