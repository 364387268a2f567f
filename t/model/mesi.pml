/* Promela model of dsyncd's home-centric directory MESI protocol with leases (the engine in
 * src/roles/cache/mesi.c), checked exhaustively by t/model/check-mesi.sh for SWMR, the data-value
 * invariant, the directory covering every copy, and freedom from deadlock.
 *
 * Scope: N = 3 caches and one home, K = 1 key (-DK=2 for two keys), an UNORDERED network (a bag of
 * messages, any of which may be delivered next), a budget of REQ requests per cache and key and of
 * MAXV versions so the state space is finite.  Not modelled: message loss and retransmission (a
 * Fwd that arrives before its Data is simply not deliverable yet, which is what the engine's
 * "drop, the home retransmits" amounts to), crashes, the busy Nack, write-through, the M lease
 * (an M copy never expires here, so no write is lost).  Leases of clean copies (S, E) are modelled
 * by their consequence under the clock assumption of mesi.h: a holder may drop its copy at any time
 * ("expire"), and the home may stop waiting for a sharer only once that sharer holds no copy of the
 * grant it is waiting for.
 *
 * Side by side with the engine (mesi.c):
 *   model                         engine
 *   CI CS CE CM                   DS_MESI_I S E M
 *   CIS_D CIS_D_I CIM_D CSM_D     DS_MESI_IS_D IS_D_I IM_D SM_D
 *   CMI_A CEI_A CSI_A CII_A       DS_MESI_MI_A EI_A SI_A II_A
 *   creq / cgid                   line.req / line.gid  (per-node increasing request ids)
 *   want                          line.ops (one pending client operation)
 *   rdmin                         the sim's "completed before the read started" floor
 *   home_take                     home_on_request + dir_start + dir_begin
 *   home_ack                      home_on_ack
 *   home_expire                   dir_expire (lease of an unreachable sharer ran out)
 *   home_finish                   dir_apply + dir_send_reply
 *   abandon                       line_timeouts -> abandon_request (client op timed out)
 *   expire                        line_check_lease on S / E / SM_D
 *   Fwd to a cache with an older S copy drops it (on_fwd "superseded"); Inv drops copies with
 *   gid <= the Inv's (on_inv); Inv on IS_D for the awaited grant -> CIS_D_I. */

#ifndef K
#define K 1
#endif
#define N 3
#ifndef REQ
#define REQ 2
#endif
#ifndef MAXV
#define MAXV 3
#endif
#define MAXMSG 9
#define NONE 255

#define CI 0
#define CS 1
#define CE 2
#define CM 3
#define CIS_D 4
#define CIS_D_I 5
#define CIM_D 6
#define CSM_D 7
#define CMI_A 8
#define CEI_A 9
#define CSI_A 10
#define CII_A 11

mtype = { GETS, GETM, PUTS, PUTE, PUTM, FWDS, FWDM, INV, DATA, INVACK, FWDACK, PUTACK };

typedef Msg {
    bit used;
    mtype t;
    byte k;      /* key */
    byte c;      /* the cache: sender of requests / acks, receiver of the home's messages */
    byte req;    /* request id (requests, DATA, PUTACK) */
    byte gid;    /* grant id the message is about */
    byte txn;    /* home transaction (INV, FWD*, acks) */
    byte ver;    /* value = version */
    byte grant;  /* DATA: CS / CE / CM */
    bit nocopy;  /* FWDACK */
    bit expired  /* DATA whose lease the home already gave up on */
};
Msg bag[MAXMSG];

/* cache side, index c*K+k */
byte cst[N*K], creq[N*K], cgid[N*K], cver[N*K], nid[N*K], want[N*K], rdmin[N*K];

/* home side, per key */
byte hst[K], hsh[K], hown[K], hver[K], htxn[K], hwait[K];
byte hgid[N*K];
bit hbusy[K];
mtype hcur_t[K];
byte hcur_c[K], hcur_req[K], hcur_gid[K], hcur_ver[K];

byte latest[K]; /* version of the last completed write */

/* scratch variables of the inlines (always reset to 0, so they do not split states) */
byte s_i, cx, ty, tj, hc, ac, fc, g, sa, sb;
Msg tmp;

/* The bag is kept sorted (used messages first, then by content), so that the same multiset of
 * messages in flight is one state whatever the order it was sent in. */
#define MKEY(m) ((m.used << 30) | (m.t << 26) | (m.k << 25) | (m.c << 23) | (m.req << 20) | \
    (m.gid << 17) | (m.txn << 11) | (m.ver << 7) | (m.grant << 3) | (m.nocopy << 2) | \
    (m.expired << 1))
#define MCOPY(d, s_) d.used = s_.used; d.t = s_.t; d.k = s_.k; d.c = s_.c; d.req = s_.req; \
    d.gid = s_.gid; d.txn = s_.txn; d.ver = s_.ver; d.grant = s_.grant; d.nocopy = s_.nocopy; \
    d.expired = s_.expired

inline sort_bag() {
    d_step {
        sa = 0;
        do
        :: sa < MAXMSG - 1 ->
            sb = 0;
            do
            :: sb < MAXMSG - 1 - sa ->
                if
                :: MKEY(bag[sb]) < MKEY(bag[sb + 1]) ->
                    MCOPY(tmp, bag[sb]); MCOPY(bag[sb], bag[sb + 1]); MCOPY(bag[sb + 1], tmp)
                :: else -> skip
                fi;
                sb++
            :: else -> break
            od;
            sa++
        :: else -> break
        od;
        sa = 0; sb = 0;
        tmp.used = 0; tmp.t = 0; tmp.k = 0; tmp.c = 0; tmp.req = 0; tmp.gid = 0; tmp.txn = 0;
        tmp.ver = 0; tmp.grant = 0; tmp.nocopy = 0; tmp.expired = 0
    }
}

inline send(T, KK, C, RQ, G, TX, V, GR, NC) {
    s_i = 0;
    do
    :: s_i < MAXMSG && bag[s_i].used -> s_i++
    :: s_i < MAXMSG && !bag[s_i].used -> break
    :: s_i == MAXMSG -> assert(false) /* MAXMSG too small */
    od;
    bag[s_i].used = 1; bag[s_i].t = T; bag[s_i].k = KK; bag[s_i].c = C; bag[s_i].req = RQ;
    bag[s_i].gid = G; bag[s_i].txn = TX; bag[s_i].ver = V; bag[s_i].grant = GR;
    bag[s_i].nocopy = NC; bag[s_i].expired = 0;
    s_i = 0
}

inline consume(i) {
    bag[i].used = 0; bag[i].t = 0; bag[i].k = 0; bag[i].c = 0; bag[i].req = 0; bag[i].gid = 0;
    bag[i].txn = 0; bag[i].ver = 0; bag[i].grant = 0; bag[i].nocopy = 0; bag[i].expired = 0
}

#define L(c, k) ((c) * K + (k))
#define HASCOPY(x) (cst[x] == CS || cst[x] == CE || cst[x] == CM || cst[x] == CSM_D)
#define WRITER(x) (cst[x] == CE || cst[x] == CM)
#define READER(x) (cst[x] == CS || cst[x] == CSM_D)
#define BIT(c) (1 << (c))

/* ---------------------------------------------------------------- invariants */

#define SWMR(k) ((WRITER(L(0,k)) + WRITER(L(1,k)) + WRITER(L(2,k)) <= 1) && \
    !((WRITER(L(0,k)) || WRITER(L(1,k)) || WRITER(L(2,k))) && \
      (READER(L(0,k)) || READER(L(1,k)) || READER(L(2,k)))))
#define FRESH(x, k) (!HASCOPY(x) || cver[x] == latest[k])
#define DATAVALUE(k) (FRESH(L(0,k), k) && FRESH(L(1,k), k) && FRESH(L(2,k), k))
#define COVERED(c, k) (!HASCOPY(L(c,k)) || hown[k] == c || \
    (READER(L(c,k)) && (hsh[k] & BIT(c))))
#define DIRECTORY(k) (COVERED(0,k) && COVERED(1,k) && COVERED(2,k))
/* No deadlock: with nothing in flight, no cache waits for an answer and the home waits for no
 * owner (sharers it waits for can be expired; a finished wait is granted next). */
#define TRANSIENT(x) (cst[x] >= CIS_D)
#define BAGEMPTY (!bag[0].used && !bag[1].used && !bag[2].used && !bag[3].used && !bag[4].used && \
    !bag[5].used && !bag[6].used && !bag[7].used && !bag[8].used)
#define NOSTUCK(k) (!BAGEMPTY || \
    (hbusy[k] && hwait[k] == 0) || \
    (hbusy[k] && hown[k] != NONE && !(hwait[k] & BIT(hown[k]))) || \
    (hbusy[k] && hown[k] == NONE) || \
    (!hbusy[k] && !TRANSIENT(L(0,k)) && !TRANSIENT(L(1,k)) && !TRANSIENT(L(2,k))))
#define INV_K(k) (SWMR(k) && DATAVALUE(k) && DIRECTORY(k) && NOSTUCK(k))
#if K == 1
#define INVARIANT INV_K(0)
#else
#define INVARIANT (INV_K(0) && INV_K(1))
#endif

active proctype monitor() {
end:
    atomic { !(INVARIANT) -> assert(INVARIANT) }
}

/* ---------------------------------------------------------------- cache: client side */

inline new_request(x, T, k, c) {
    nid[x]++;
    creq[x] = nid[x];
    send(T, k, c, creq[x], cgid[x], 0, 0, 0, 0)
}

inline client(c, k) {
    cx = L(c, k);
    if
    /* read: a hit must see the last completed write (checked by the monitor as DATAVALUE) */
    :: want[cx] == 0 && HASCOPY(cx) -> assert(cver[cx] == latest[k])
    :: want[cx] == 0 && cst[cx] == CI && nid[cx] < REQ ->
        want[cx] = 1; rdmin[cx] = latest[k]; cst[cx] = CIS_D; new_request(cx, GETS, k, c)
    /* write */
    :: want[cx] == 0 && WRITER(cx) && latest[k] < MAXV ->
        cst[cx] = CM; cver[cx] = cver[cx] + 1; latest[k] = cver[cx]
    :: want[cx] == 0 && cst[cx] == CS && nid[cx] < REQ && latest[k] < MAXV ->
        want[cx] = 2; cst[cx] = CSM_D; new_request(cx, GETM, k, c)
    :: want[cx] == 0 && cst[cx] == CI && nid[cx] < REQ && latest[k] < MAXV ->
        want[cx] = 2; cst[cx] = CIM_D; new_request(cx, GETM, k, c)
    /* eviction (LRU victim) */
    :: want[cx] == 0 && cst[cx] == CS && nid[cx] < REQ -> cst[cx] = CSI_A; new_request(cx, PUTS, k, c)
    :: want[cx] == 0 && cst[cx] == CE && nid[cx] < REQ -> cst[cx] = CEI_A; new_request(cx, PUTE, k, c)
    :: want[cx] == 0 && cst[cx] == CM && nid[cx] < REQ ->
        cst[cx] = CMI_A; nid[cx]++; creq[cx] = nid[cx];
        send(PUTM, k, c, creq[cx], cgid[cx], 0, cver[cx], 0, 0)
    /* lease of a clean copy runs out */
    :: cst[cx] == CS || cst[cx] == CE -> cst[cx] = CI
    :: cst[cx] == CSM_D -> cst[cx] = CIM_D
    /* client operation times out: the request is abandoned */
    :: cst[cx] == CIS_D || cst[cx] == CIS_D_I || cst[cx] == CIM_D -> cst[cx] = CI; creq[cx] = 0; want[cx] = 0
    :: cst[cx] == CSM_D -> cst[cx] = CS; creq[cx] = 0; want[cx] = 0
    :: else -> skip
    fi;
    cx = 0
}

/* ---------------------------------------------------------------- cache: messages */

inline on_data(i, x, k) {
    if
    :: creq[x] != bag[i].req || !(cst[x] == CIS_D || cst[x] == CIS_D_I || cst[x] == CIM_D ||
                                  cst[x] == CSM_D) -> skip /* stale */
    :: else ->
        creq[x] = 0;
        if
        :: bag[i].expired -> cst[x] = CI; want[x] = 0 /* arrived after its lease */
        :: !bag[i].expired && cst[x] == CIS_D_I ->
            assert(bag[i].ver >= rdmin[x]); cst[x] = CI; want[x] = 0
        :: !bag[i].expired && cst[x] != CIS_D_I ->
            cst[x] = bag[i].grant; cgid[x] = bag[i].req; cver[x] = bag[i].ver;
            if
            :: want[x] == 1 -> assert(cver[x] >= rdmin[x]); want[x] = 0
            :: want[x] == 2 && cst[x] == CM && latest[k] < MAXV ->
                cver[x] = cver[x] + 1; latest[k] = cver[x]; want[x] = 0
            :: want[x] == 2 && (cst[x] != CM || latest[k] >= MAXV) -> want[x] = 0
            :: want[x] == 0 -> skip
            fi
        fi
    fi
}

inline on_inv(i, x, k, c) {
    if
    :: (cst[x] == CS || cst[x] == CSM_D || cst[x] == CSI_A) && cgid[x] <= bag[i].gid ->
        if
        :: cst[x] == CS -> cst[x] = CI
        :: cst[x] == CSM_D -> cst[x] = CIM_D
        :: cst[x] == CSI_A -> cst[x] = CII_A
        fi
    :: cst[x] == CIS_D && creq[x] == bag[i].gid -> cst[x] = CIS_D_I
    :: else -> skip
    fi;
    send(INVACK, k, c, 0, bag[i].gid, bag[i].txn, 0, 0, 0)
}

/* Deliverable unless it names the grant whose Data has not arrived yet. */
#define FWD_READY(i, x) (!(creq[x] == bag[i].gid && \
    (cst[x] == CIS_D || cst[x] == CIS_D_I || cst[x] == CIM_D || cst[x] == CSM_D)))

inline on_fwd(i, x, k, c) {
    if
    :: (cst[x] == CE || cst[x] == CM || cst[x] == CMI_A || cst[x] == CEI_A) &&
       cgid[x] == bag[i].gid ->
        send(FWDACK, k, c, 0, bag[i].gid, bag[i].txn, cver[x], 0, 0);
        if
        :: cst[x] == CMI_A || cst[x] == CEI_A -> cst[x] = CII_A
        :: cst[x] == CE || cst[x] == CM ->
            if
            :: bag[i].t == FWDS -> cst[x] = CS
            :: else -> cst[x] = CI
            fi
        fi
    :: else ->
        if
        :: cgid[x] <= bag[i].gid && cst[x] == CS -> cst[x] = CI   /* superseded S copy */
        :: cgid[x] <= bag[i].gid && cst[x] == CSM_D -> cst[x] = CIM_D
        :: else -> skip
        fi;
        send(FWDACK, k, c, 0, bag[i].gid, bag[i].txn, 0, 0, 1)
    fi
}

inline on_putack(i, x) {
    if
    :: creq[x] == bag[i].req && (cst[x] == CMI_A || cst[x] == CEI_A || cst[x] == CSI_A ||
                                 cst[x] == CII_A) -> cst[x] = CI; creq[x] = 0
    :: else -> skip
    fi
}

/* ---------------------------------------------------------------- home */

inline recall(k, y, T) {
    send(T, k, y, 0, hgid[L(y, k)], htxn[k], 0, 0, 0)
}

inline home_take(i, k) {
    hc = bag[i].c;
    if
    :: bag[i].req <= hgid[L(hc, k)] -> skip /* stale: already granted, or a newer grant */
    :: else ->
        hbusy[k] = 1; htxn[k]++; hcur_t[k] = bag[i].t; hcur_c[k] = hc; hcur_req[k] = bag[i].req;
        hcur_gid[k] = bag[i].gid; hcur_ver[k] = bag[i].ver; hwait[k] = 0;
        if
        :: (hcur_t[k] == GETS || hcur_t[k] == GETM) && hown[k] == hc -> hown[k] = NONE
        :: else -> skip
        fi;
        if
        :: hcur_t[k] == GETS && hown[k] != NONE ->
            hwait[k] = BIT(hown[k]); recall(k, hown[k], FWDS)
        :: hcur_t[k] == GETM ->
            ty = 0;
            do
            :: ty < N && ty == hown[k] -> hwait[k] = hwait[k] | BIT(ty); recall(k, ty, FWDM); ty++
            :: ty < N && ty != hown[k] && ty != hc && (hsh[k] & BIT(ty)) ->
                hwait[k] = hwait[k] | BIT(ty); recall(k, ty, INV); ty++
            :: ty < N && ty != hown[k] && !(ty != hc && (hsh[k] & BIT(ty))) -> ty++
            :: ty == N -> break
            od;
            ty = 0
        :: else -> skip
        fi
    fi;
    hc = 0
}

inline home_ack(i, k) {
    ac = bag[i].c;
    if
    :: hbusy[k] && bag[i].txn == htxn[k] && (hwait[k] & BIT(ac)) && bag[i].gid == hgid[L(ac, k)] ->
        hwait[k] = hwait[k] & ~BIT(ac);
        if
        :: bag[i].t == INVACK -> hsh[k] = hsh[k] & ~BIT(ac)
        :: bag[i].t == FWDACK && bag[i].nocopy -> hown[k] = NONE; hsh[k] = hsh[k] & ~BIT(ac)
        :: bag[i].t == FWDACK && !bag[i].nocopy ->
            if
            :: bag[i].ver > hver[k] -> hver[k] = bag[i].ver
            :: else -> skip
            fi;
            hown[k] = NONE;
            if
            :: hcur_t[k] == GETS -> hsh[k] = hsh[k] | BIT(ac)
            :: else -> skip
            fi
        fi
    :: else -> skip /* stale */
    fi;
    ac = 0
}

/* The sharer's lease ran out: by the clock assumption its copy is already gone; a Data still in
 * flight for that grant arrives expired. */
inline home_expire(k, y) {
    hwait[k] = hwait[k] & ~BIT(y);
    hsh[k] = hsh[k] & ~BIT(y);
    tj = 0;
    do
    :: tj < MAXMSG && bag[tj].used && bag[tj].t == DATA && bag[tj].c == y && bag[tj].k == k &&
       bag[tj].req == hgid[L(y, k)] -> bag[tj].expired = 1; tj++
    :: tj < MAXMSG && !(bag[tj].used && bag[tj].t == DATA && bag[tj].c == y && bag[tj].k == k &&
       bag[tj].req == hgid[L(y, k)]) -> tj++
    :: tj == MAXMSG -> break
    od;
    tj = 0
}

inline home_finish(k) {
    fc = hcur_c[k];
    if
    :: hcur_t[k] == GETS || hcur_t[k] == GETM ->
        if
        :: hcur_t[k] == GETM -> g = CM; hsh[k] = 0; hown[k] = fc
        :: hcur_t[k] == GETS && hown[k] == NONE && (hsh[k] & ~BIT(fc)) == 0 ->
            g = CE; hsh[k] = 0; hown[k] = fc
        :: hcur_t[k] == GETS && !(hown[k] == NONE && (hsh[k] & ~BIT(fc)) == 0) ->
            g = CS; hsh[k] = hsh[k] | BIT(fc)
        fi;
        hgid[L(fc, k)] = hcur_req[k];
        send(DATA, k, fc, hcur_req[k], 0, 0, hver[k], g, 0);
        g = 0
    :: hcur_t[k] == PUTS ->
        if
        :: hgid[L(fc, k)] == hcur_gid[k] -> hsh[k] = hsh[k] & ~BIT(fc)
        :: else -> skip
        fi;
        send(PUTACK, k, fc, hcur_req[k], 0, 0, 0, 0, 0)
    :: hcur_t[k] == PUTE || hcur_t[k] == PUTM ->
        if
        :: hgid[L(fc, k)] == hcur_gid[k] && hown[k] == fc ->
            if
            :: hcur_t[k] == PUTM && hcur_ver[k] > hver[k] -> hver[k] = hcur_ver[k]
            :: else -> skip
            fi;
            hown[k] = NONE
        :: else -> skip
        fi;
        send(PUTACK, k, fc, hcur_req[k], 0, 0, 0, 0, 0)
    fi;
    hbusy[k] = 0; hcur_t[k] = 0; hcur_c[k] = 0; hcur_req[k] = 0; hcur_gid[k] = 0; hcur_ver[k] = 0;
    fc = 0
}

#define ISREQ(t) (t == GETS || t == GETM || t == PUTS || t == PUTE || t == PUTM)

active proctype system() {
    byte i, c, k, y;
    byte x;
    for (k : 0 .. K - 1) { hown[k] = NONE }
end:
    do
    /* a client operation, eviction, lease expiry or timeout at cache c on key k */
    :: atomic { select(c : 0 .. N - 1); select(k : 0 .. K - 1); client(c, k); c = 0; k = 0;
                sort_bag() }
    /* deliver any message (unordered network) */
    :: atomic {
        select(i : 0 .. MAXMSG - 1);
        k = bag[i].k; c = bag[i].c; x = L(c, k);
        if
        :: !bag[i].used -> skip
        :: bag[i].used && ISREQ(bag[i].t) && !hbusy[k] -> home_take(i, k); consume(i)
        :: bag[i].used && (bag[i].t == INVACK || bag[i].t == FWDACK) -> home_ack(i, k); consume(i)
        :: bag[i].used && bag[i].t == DATA -> on_data(i, x, k); consume(i)
        :: bag[i].used && bag[i].t == INV -> on_inv(i, x, k, c); consume(i)
        :: bag[i].used && (bag[i].t == FWDS || bag[i].t == FWDM) && FWD_READY(i, x) ->
            on_fwd(i, x, k, c); consume(i)
        :: bag[i].used && bag[i].t == PUTACK -> on_putack(i, x); consume(i)
        :: else -> skip /* not deliverable yet (home busy, or Fwd before its Data) */
        fi;
        i = 0; k = 0; c = 0; x = 0;
        sort_bag()
    }
    /* the home gives up on a sharer whose lease ran out (it holds no copy of that grant) */
    :: atomic {
        select(k : 0 .. K - 1); select(y : 0 .. N - 1);
        if
        :: hbusy[k] && (hwait[k] & BIT(y)) && hown[k] != y &&
           !(HASCOPY(L(y, k)) && cgid[L(y, k)] == hgid[L(y, k)]) && cst[L(y, k)] != CSI_A ->
            home_expire(k, y)
        :: else -> skip
        fi;
        k = 0; y = 0;
        sort_bag()
    }
    /* every awaited answer is in: grant and reply */
    :: atomic {
        select(k : 0 .. K - 1);
        if
        :: hbusy[k] && hwait[k] == 0 -> home_finish(k)
        :: else -> skip
        fi;
        k = 0;
        sort_bag()
    }
    od
}
