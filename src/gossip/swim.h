/* SWIM group membership (Das, Gupta, Motivala, "SWIM", DSN 2002) with the cheap Lifeguard
 * refinements (Dadgar et al. 2018): a pure state machine with injected time and randomness.
 *
 * The glue feeds time with ds_swim_tick(now_ms) and received bytes with ds_swim_recv(), drains
 * messages to send with ds_swim_pop_out() and membership changes with ds_swim_pop_event().  It also
 * authenticates messages (mTLS + HMAC + nonce) before handing them here: this core trusts every
 * byte string that decodes, and only checks cluster name and role.
 *
 * Protocol (section numbers of the SWIM paper):
 *  - every period one member is probed, in a shuffled round-robin order; new members are inserted at
 *    a random position (§4.3);
 *  - no ack within probe_timeout -> PING_REQ to k random members, which probe on our behalf (§3.1);
 *  - no ack (direct or relayed) by the end of the period -> the member is suspected (§4.2); it is
 *    declared dead when the suspicion timeout runs out unless it refutes with a higher incarnation;
 *    Lifeguard: the timeout is alpha * max(1, log10 n) periods and starts at beta times that,
 *    shrinking with each independent confirmation (here: our own later failed probes);
 *  - updates (alive/suspect/dead/left records) are piggybacked on pings and acks, each up to
 *    lambda * ceil(log2(n + 1)) times, fewest-sent first (§4.1); a ping to a suspect carries that
 *    suspicion first so the member can refute it (Lifeguard "buddy system");
 *  - full state push-pull (SYNC/SYNC_ACK) on join and every sync_every periods with a random known
 *    member, dead ones included, so a joiner learns the membership at once and a healed partition
 *    converges to one view.
 *
 * Incarnations are (boot << 32) | counter: `boot` comes from the glue (a persisted or boot-time
 * counter that grows across restarts), so a restarted member outranks every record of its previous
 * life, and a member declared dead that comes back with the same boot was a false positive. */
#ifndef DS_GOSSIP_SWIM_H
#define DS_GOSSIP_SWIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DS_SWIM_ID_MAX 64        /* bytes including the NUL, for member ids */
#define DS_SWIM_URL_MAX 256
#define DS_SWIM_ROLE_MAX 16
#define DS_SWIM_CLUSTER_MAX 64
#define DS_SWIM_META_MAX 8       /* metadata entries per member */
#define DS_SWIM_META_KEY_MAX 32
#define DS_SWIM_META_VAL_MAX 64
#define DS_SWIM_MEMBERS_MAX 256  /* members known, self included; records per message */
#define DS_SWIM_MSG_MAX (512u * 1024u) /* largest encoded message accepted */
#define DS_SWIM_PIGGYBACK_MAX 8  /* updates piggybacked on one ping/ack */

enum {
    DS_SWIM_OK = 0,
    DS_SWIM_EINVAL,    /* bad argument (empty or too long id/url/role/cluster, bad config) */
    DS_SWIM_ENOMEM,
    DS_SWIM_ETRUNC,    /* message ends early */
    DS_SWIM_EBADMSG,   /* bad magic, version, type, state, NUL in a string, trailing bytes */
    DS_SWIM_ETOOBIG,   /* message, string or count over its cap */
    DS_SWIM_EFOREIGN,  /* message of another cluster name or role: rejected */
    DS_SWIM_EEMPTY,    /* nothing to pop */
    DS_SWIM_ELEFT,     /* the member has left; it no longer takes part */
};

enum ds_swim_state {
    DS_SWIM_ALIVE = 0,
    DS_SWIM_SUSPECT = 1,
    DS_SWIM_DEAD = 2,
    DS_SWIM_LEFT = 3,
};

/* ---- wire ------------------------------------------------------------------------------------ */

enum ds_swim_msg_type {
    DS_SWIM_MSG_PING = 1,     /* target_id: the member the sender means to reach */
    DS_SWIM_MSG_PING_REQ = 2, /* target_id/url: please probe it for me and relay its ack */
    DS_SWIM_MSG_ACK = 3,      /* seq of the ping answered; target_id: the member that answered */
    DS_SWIM_MSG_SYNC = 4,     /* push-pull: the sender's whole table in nodes[] */
    DS_SWIM_MSG_SYNC_ACK = 5, /* the answer: the receiver's whole table */
};

struct ds_swim_meta {
    char key[DS_SWIM_META_KEY_MAX];   /* 1..31 bytes */
    char value[DS_SWIM_META_VAL_MAX]; /* 0..63 bytes */
};

/* One member's record, as gossiped and as listed by ds_swim_member(). */
struct ds_swim_node {
    char id[DS_SWIM_ID_MAX];   /* 1..63 bytes */
    char url[DS_SWIM_URL_MAX]; /* 1..255 bytes: the advertised HTTPS URL */
    uint64_t incarnation;
    uint8_t state;             /* enum ds_swim_state */
    uint8_t n_meta;
    struct ds_swim_meta meta[DS_SWIM_META_MAX];
};

/* Wire format, version 1; integers little-endian; str8 = u8 length + bytes (no NUL inside):
 *   u8 'S', u8 'W', u8 version = 1, u8 type, u32 seq,
 *   str8 cluster (1..63), str8 role (1..15), node from (the sender's own record),
 *   str8 target_id (0..63), str8 target_url (0..255), u16 n_nodes (<= DS_SWIM_MEMBERS_MAX),
 *   n_nodes x node;
 *   node = str8 id (1..63), str8 url (1..255), u64 incarnation, u8 state (0..3),
 *          u8 n_meta (<= 8), n_meta x (str8 key (1..31), str8 value (0..63)).
 * The message ends exactly after the last node and is at most DS_SWIM_MSG_MAX bytes. */
struct ds_swim_msg {
    uint8_t type;              /* enum ds_swim_msg_type */
    uint32_t seq;
    char cluster[DS_SWIM_CLUSTER_MAX];
    char role[DS_SWIM_ROLE_MAX];
    struct ds_swim_node from;
    char target_id[DS_SWIM_ID_MAX];
    char target_url[DS_SWIM_URL_MAX];
    uint16_t n_nodes;
    struct ds_swim_node *nodes; /* n_nodes records; owned by whoever filled the message */
};

/* Encodes `m` into a new buffer: on success *buf (malloc'd, the caller frees it) and *len. */
int ds_swim_msg_encode(const struct ds_swim_msg *m, uint8_t **buf, size_t *len);
/* Decodes `len` bytes at `buf` (the caller's) into *m.  On success m->nodes is malloc'd (NULL when
 * n_nodes is 0) and the caller releases it with ds_swim_msg_free; on error *m holds nothing to
 * free.  Hostile input gets ETRUNC, EBADMSG or ETOOBIG, never a crash. */
int ds_swim_msg_decode(const uint8_t *buf, size_t len, struct ds_swim_msg *m);
void ds_swim_msg_free(struct ds_swim_msg *m);

/* ---- the membership state machine ---------------------------------------------------------- */

struct ds_swim;

struct ds_swim_config {
    uint32_t period_ms;          /* protocol period T' (§3); default 1000 */
    uint32_t probe_timeout_ms;   /* wait for a direct ack before probing indirectly; default 300 */
    uint32_t indirect_k;         /* members asked to probe indirectly (§3.1); default 3 */
    uint32_t suspicion_mult;     /* Lifeguard alpha: min alpha*max(1,log10 n)*T; default 4 */
    uint32_t suspicion_max_mult; /* Lifeguard beta: the timeout starts at beta*min; default 6 */
    uint32_t retransmit_mult;    /* lambda: sends per update lambda*ceil(log2(n+1)) (§4.1); 4 */
    uint32_t sync_every;         /* periods between push-pull syncs; default 20 */
    uint32_t join_retry_ms;      /* seeds are re-sent a SYNC this often while alone; default 1000 */
};

/* Fills `c` with the defaults above. */
void ds_swim_config_default(struct ds_swim_config *c);

/* Who this node is.  Strings are copied by ds_swim_create. */
struct ds_swim_self {
    const char *id;        /* unique, stable across restarts */
    const char *url;
    const char *role;      /* members of another role are rejected */
    const char *cluster;   /* members of another cluster name are rejected */
    uint32_t boot;         /* grows with every start of this member (glue persists or derives it) */
    size_t n_meta;         /* <= DS_SWIM_META_MAX */
    const struct ds_swim_meta *meta;
};

/* A message for the glue to deliver.  `to_id` may be empty (a seed whose id is not known yet). */
struct ds_swim_out {
    char to_id[DS_SWIM_ID_MAX];
    char to_url[DS_SWIM_URL_MAX];
    uint8_t *buf;  /* encoded message; ownership passes to the caller of ds_swim_pop_out (free) */
    size_t len;
};

enum ds_swim_event_type {
    DS_SWIM_EV_UP = 1,    /* a member is new or came back from dead/left */
    DS_SWIM_EV_SUSPECT,   /* a member is suspected */
    DS_SWIM_EV_ALIVE,     /* a suspicion was refuted */
    DS_SWIM_EV_DOWN,      /* a member is declared dead */
    DS_SWIM_EV_LEFT,      /* a member left gracefully */
    DS_SWIM_EV_META,      /* a live member's metadata or URL changed */
};

struct ds_swim_event {
    uint8_t type;         /* enum ds_swim_event_type */
    char id[DS_SWIM_ID_MAX];
    uint64_t incarnation;
};

struct ds_swim_counters {
    uint64_t probes;              /* direct probes sent (§3.1) */
    uint64_t indirect_probes;     /* PING_REQs sent */
    uint64_t suspicions;          /* members this node suspected after a failed probe */
    uint64_t refutations;         /* suspicions/deaths of itself this node refuted */
    uint64_t deaths;              /* members this node declared dead (suspicion timed out) */
    uint64_t false_positive_deaths; /* members seen dead that came back without restarting */
    uint64_t rejected_foreign;    /* messages of another cluster or role */
    uint64_t rejected_malformed;  /* messages that did not decode */
    uint64_t dropped;             /* events, outbox entries or members dropped at their caps */
};

/* Creates a member; `cfg` NULL means defaults; `seed` seeds its PRNG (struct ds_prng).  On success
 * *out is new and freed with ds_swim_destroy.  It knows only itself until it joins or is joined. */
int ds_swim_create(const struct ds_swim_self *self, const struct ds_swim_config *cfg,
                   uint64_t seed, uint64_t now_ms, struct ds_swim **out);
/* Frees `s` and every undelivered message. */
void ds_swim_destroy(struct ds_swim *s);

/* Starts joining through `n` seed URLs (copied; our own URL among them is skipped): a SYNC goes
 * to each now and again every join_retry_ms while no other member is alive, without end, so the
 * node that starts first simply waits for the others. */
int ds_swim_join(struct ds_swim *s, const char *const *seed_urls, size_t n, uint64_t now_ms);
/* Graceful leave: marks itself LEFT with a higher incarnation and tells several members at once;
 * from then on it sends and answers nothing (DS_SWIM_ELEFT).  The glue should flush the outbox. */
int ds_swim_leave(struct ds_swim *s);
/* Replaces the own metadata, bumps the incarnation and gossips the change. */
int ds_swim_set_meta(struct ds_swim *s, const struct ds_swim_meta *meta, size_t n);

/* Advances the protocol to `now_ms` (monotonic; call at least every few tens of ms). */
void ds_swim_tick(struct ds_swim *s, uint64_t now_ms);
/* Handles a received message (`buf` stays the caller's).  DS_SWIM_EFOREIGN for another cluster or
 * role, a decode error for garbage (both counted and otherwise ignored). */
int ds_swim_recv(struct ds_swim *s, const uint8_t *buf, size_t len, uint64_t now_ms);
/* The same for an already decoded message. */
int ds_swim_recv_msg(struct ds_swim *s, const struct ds_swim_msg *m, uint64_t now_ms);

/* Pops the oldest message to send into *out (DS_SWIM_EEMPTY when none). */
int ds_swim_pop_out(struct ds_swim *s, struct ds_swim_out *out);
/* Pops the oldest membership event into *ev (DS_SWIM_EEMPTY when none). */
int ds_swim_pop_event(struct ds_swim *s, struct ds_swim_event *ev);

/* Introspection: member 0 is this node; records stay valid until the next call that mutates s. */
size_t ds_swim_member_count(const struct ds_swim *s);
const struct ds_swim_node *ds_swim_member(const struct ds_swim *s, size_t i);
/* The record of member `id`, or NULL. */
const struct ds_swim_node *ds_swim_find(const struct ds_swim *s, const char *id);
const char *ds_swim_role(const struct ds_swim *s);
const char *ds_swim_cluster(const struct ds_swim *s);
void ds_swim_get_counters(const struct ds_swim *s, struct ds_swim_counters *c);

const char *ds_swim_strerror(int rv);
const char *ds_swim_state_name(uint8_t state);

#endif
