/* Unit tests of the MESI engine's (state, event) pairs, the races (Inv before Data, Fwd during
 * eviction, PutS crossing an Inv, Fwd before Data), leases, the home's queue, memory policies and
 * LRU, with the home on node 0 and messages delivered one by one. */
#include "check.h"
#include "mesi_harness.h"

#define DS_MESI_MSG_DS_MESI_MSG_

static struct ds_mesi_config base_cfg(void)
{
    struct ds_mesi_config c;
    ds_mesi_config_default(&c);
    c.lease_ms = 1000;
    c.margin_ms = 50;
    c.retry_ms = 100;
    c.op_timeout_ms = 3000;
    c.flush_ms = 200;
    c.max_dirty = 8;
    return c;
}

static void net(struct h_net *h, int n, struct ds_mesi_config c)
{
    h_init(h, n, 0, &c);
}

static uint64_t rd(struct h_net *h, int i, const char *k)
{
    struct ds_mesi_result res;
    uint64_t op = 0;
    int rv = h_read(h, i, k, &res, &op);
    return rv == DS_MESI_PENDING ? op : 0;
}

static uint64_t wr(struct h_net *h, int i, const char *k, const char *v)
{
    struct ds_mesi_result res;
    uint64_t op = 0;
    int rv = h_write(h, i, k, v, &res, &op);
    return rv == DS_MESI_PENDING ? op : 0;
}

/* Node i ends up holding key k in M with value v (write settled through the home). */
static void own(struct h_net *h, int i, const char *k, const char *v)
{
    wr(h, i, k, v);
    h_settle(h);
}

static struct h_mem *mem(struct h_net *h, const char *k)
{
    return h_mem_slot(h, k);
}

static struct ds_mesi_line_info line(struct h_net *h, int i, const char *k)
{
    struct ds_mesi_line_info li;
    ds_mesi_line_info(h->node[i], (const uint8_t *)k, strlen(k), h->now, &li);
    return li;
}

static void read_miss_at_idle_home_grants_exclusive(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    uint64_t op = rd(&h, 1, "a");
    REQUIRE(op);
    CHECK(h_state(&h, 1, "a") == DS_MESI_IS_D);
    h_settle(&h);
    const struct h_done *d = h_last_done(&h, op);
    REQUIRE(d);
    CHECK(d->res.rv == DS_MESI_OK && !d->res.present && d->res.version == 0);
    CHECK(h_state(&h, 1, "a") == DS_MESI_E);
    struct ds_mesi_dir_info di = h_dir(&h, 0, "a");
    CHECK(di.state == DS_MESI_DIR_EM && di.owner == 1 && di.sharers == 0);
    h_free(&h);
}

static void second_reader_downgrades_exclusive_owner_to_shared(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    rd(&h, 1, "a");
    h_settle(&h);
    uint64_t op = rd(&h, 2, "a");
    h_settle(&h);
    CHECK(h_last_done(&h, op) && h_last_done(&h, op)->res.rv == DS_MESI_OK);
    CHECK(h_state(&h, 1, "a") == DS_MESI_S);
    CHECK(h_state(&h, 2, "a") == DS_MESI_S);
    struct ds_mesi_dir_info di = h_dir(&h, 0, "a");
    CHECK(di.state == DS_MESI_DIR_S && di.sharers == 6 && di.owner == -1);
    h_free(&h);
}

static void write_on_exclusive_upgrades_silently_to_modified(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    rd(&h, 1, "a");
    h_settle(&h);
    struct ds_mesi_result res;
    uint64_t op;
    CHECK(h_write(&h, 1, "a", "x", &res, &op) == DS_MESI_OK);
    CHECK(res.version > 0 && res.state == DS_MESI_M);
    h_collect_all(&h);
    CHECK(h.npkts == 0);
    CHECK(h_read(&h, 1, "a", &res, &op) == DS_MESI_OK && res.value_len == 1 && res.value[0] == 'x');
    h_free(&h);
}

static void write_from_shared_waits_for_every_inv_ack(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    rd(&h, 1, "a");
    h_settle(&h);
    rd(&h, 2, "a");
    h_settle(&h);
    uint64_t op = wr(&h, 2, "a", "y");
    REQUIRE(op);
    CHECK(h_state(&h, 2, "a") == DS_MESI_SM_D);
    CHECK(h_deliver(&h, DS_MESI_MSG_GETM, 0));
    CHECK(h_deliver(&h, DS_MESI_MSG_INV, 1));
    CHECK(h_state(&h, 1, "a") == DS_MESI_I);
    CHECK(h_find(&h, DS_MESI_MSG_DATA, 2) < 0); /* no Data before the Inv-Ack */
    CHECK(h_state(&h, 2, "a") == DS_MESI_SM_D);
    CHECK(h_deliver(&h, DS_MESI_MSG_INV_ACK, 0));
    CHECK(h_deliver(&h, DS_MESI_MSG_DATA, 2));
    CHECK(h_state(&h, 2, "a") == DS_MESI_M);
    CHECK(h_last_done(&h, op) && h_last_done(&h, op)->res.rv == DS_MESI_OK);
    h_free(&h);
}

static void writer_proceeds_once_an_unreachable_sharers_lease_ran_out(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    rd(&h, 1, "a");
    h_settle(&h);
    rd(&h, 2, "a");
    h_settle(&h);
    uint64_t granted_at = h.now;
    uint64_t op = wr(&h, 2, "a", "y");
    int became_m_while_sharer_valid = 0;
    while (h_state(&h, 2, "a") != DS_MESI_M && h.now < granted_at + 5000) {
        long k = h_find(&h, 0, -1);
        if (k < 0)
            h_advance(&h, 1);
        else if (!h_drop(&h, DS_MESI_MSG_INV, 1)) /* node 1 is unreachable */
            h_deliver(&h, 0, -1);
        if (h_state(&h, 2, "a") == DS_MESI_M && line(&h, 1, "a").lease_valid)
            became_m_while_sharer_valid = 1;
    }
    CHECK(h_state(&h, 2, "a") == DS_MESI_M);
    CHECK(!became_m_while_sharer_valid);
    CHECK(h.now >= granted_at + h.cfg.lease_ms);
    CHECK(h_last_done(&h, op) && h_last_done(&h, op)->res.rv == DS_MESI_OK);
    h_free(&h);
}

static void inv_before_data_serves_pending_read_once_then_invalid(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    own(&h, 2, "a", "x");
    uint64_t r1 = rd(&h, 1, "a");
    CHECK(h_deliver(&h, DS_MESI_MSG_GETS, 0));
    CHECK(h_deliver(&h, DS_MESI_MSG_FWD_GETS, 2));
    CHECK(h_deliver(&h, DS_MESI_MSG_FWD_ACK, 0)); /* Data(S, "x") now in flight to node 1 */
    REQUIRE(h_find(&h, DS_MESI_MSG_DATA, 1) >= 0);
    uint64_t w = wr(&h, 2, "a", "y");
    CHECK(h_deliver(&h, DS_MESI_MSG_GETM, 0));
    CHECK(h_deliver(&h, DS_MESI_MSG_INV, 1)); /* Inv overtakes the Data */
    CHECK(h_state(&h, 1, "a") == DS_MESI_IS_D_I);
    uint64_t r2 = rd(&h, 1, "a"); /* issued after the Inv: must not see "x" */
    CHECK(h_deliver(&h, DS_MESI_MSG_DATA, 1));
    const struct h_done *d1 = h_last_done(&h, r1);
    REQUIRE(d1);
    CHECK(d1->res.rv == DS_MESI_OK && strcmp(d1->value, "x") == 0);
    CHECK(!h_last_done(&h, r2));
    h_settle(&h);
    const struct h_done *d2 = h_last_done(&h, r2);
    REQUIRE(d2 && h_last_done(&h, w));
    CHECK(d2->res.rv == DS_MESI_OK && strcmp(d2->value, "y") == 0);
    CHECK(d2->res.version > d1->res.version);
    h_free(&h);
}

static void fwd_during_eviction_hands_data_to_home_and_put_is_acked(void)
{
    struct ds_mesi_config c = base_cfg();
    c.max_entries = 1;
    struct h_net h;
    net(&h, 3, c);
    own(&h, 1, "a", "x");
    wr(&h, 1, "b", "z"); /* b's GetM makes room: a (M) is evicted with PutM */
    CHECK(h_state(&h, 1, "a") == DS_MESI_MI_A);
    uint64_t r = rd(&h, 2, "a");
    CHECK(h_deliver(&h, DS_MESI_MSG_GETS, 0)); /* the home sees the GetS before the PutM */
    CHECK(h_deliver(&h, DS_MESI_MSG_FWD_GETS, 1));
    CHECK(h_state(&h, 1, "a") == DS_MESI_II_A);
    CHECK(h_deliver(&h, DS_MESI_MSG_FWD_ACK, 0));
    CHECK(h_deliver(&h, DS_MESI_MSG_DATA, 2));
    const struct h_done *d = h_last_done(&h, r);
    REQUIRE(d);
    CHECK(d->res.rv == DS_MESI_OK && strcmp(d->value, "x") == 0);
    h_settle(&h);
    CHECK(h_state(&h, 1, "a") == DS_MESI_I);
    CHECK(mem(&h, "a")->vlen == 1 && mem(&h, "a")->value[0] == 'x');
    CHECK(ds_mesi_stats(h.node[1])->evictions[DS_MESI_M] == 1);
    h_free(&h);
}

static void puts_crossing_an_inv_ends_invalid(void)
{
    struct ds_mesi_config c = base_cfg();
    c.max_entries = 1;
    struct h_net h;
    net(&h, 3, c);
    rd(&h, 1, "a");
    h_settle(&h);
    rd(&h, 2, "a");
    h_settle(&h);
    rd(&h, 1, "b");
    CHECK(h_deliver(&h, DS_MESI_MSG_GETS, 0));
    CHECK(h_deliver(&h, DS_MESI_MSG_DATA, 1)); /* b arrives, a (S) is evicted: PutS in flight */
    CHECK(h_state(&h, 1, "a") == DS_MESI_SI_A);
    wr(&h, 2, "a", "y");
    long put = h_find(&h, DS_MESI_MSG_PUTS, 0);
    REQUIRE(put >= 0);
    struct h_pkt held = h.pkts[put];
    memmove(&h.pkts[put], &h.pkts[put + 1], (h.npkts - (size_t)put - 1) * sizeof *h.pkts);
    h.npkts--;
    CHECK(h_deliver(&h, DS_MESI_MSG_GETM, 0));
    CHECK(h_deliver(&h, DS_MESI_MSG_INV, 1));
    CHECK(h_state(&h, 1, "a") == DS_MESI_II_A);
    h_settle(&h);
    CHECK(h_state(&h, 2, "a") == DS_MESI_M);
    h.pkts[h.npkts++] = held; /* the PutS arrives late: acked although no longer a sharer */
    h_settle(&h);
    CHECK(h_state(&h, 1, "a") == DS_MESI_I);
    struct ds_mesi_dir_info di = h_dir(&h, 0, "a");
    CHECK(di.owner == 2 && di.sharers == 0);
    h_free(&h);
}

static void fwd_before_data_is_answered_after_the_data(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    uint64_t w = wr(&h, 1, "a", "x");
    CHECK(h_deliver(&h, DS_MESI_MSG_GETM, 0)); /* Data(M) to node 1 in flight */
    uint64_t r = rd(&h, 2, "a");
    CHECK(h_deliver(&h, DS_MESI_MSG_GETS, 0));
    CHECK(h_deliver(&h, DS_MESI_MSG_FWD_GETS, 1)); /* before the Data: left for retransmission */
    CHECK(h_state(&h, 1, "a") == DS_MESI_IM_D);
    CHECK(h_find(&h, DS_MESI_MSG_FWD_ACK, 0) < 0);
    CHECK(h_deliver(&h, DS_MESI_MSG_DATA, 1));
    CHECK(h_last_done(&h, w) && h_last_done(&h, w)->res.rv == DS_MESI_OK);
    h_advance(&h, h.cfg.retry_ms);
    h_settle(&h);
    const struct h_done *d = h_last_done(&h, r);
    REQUIRE(d);
    CHECK(strcmp(d->value, "x") == 0);
    CHECK(h_state(&h, 1, "a") == DS_MESI_S);
    h_free(&h);
}

static void duplicate_fwd_is_answered_again_from_the_retained_value(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    own(&h, 1, "a", "x");
    uint64_t w = wr(&h, 2, "a", "y");
    CHECK(h_deliver(&h, DS_MESI_MSG_GETM, 0));
    CHECK(h_deliver(&h, DS_MESI_MSG_FWD_GETM, 1));
    CHECK(h_drop(&h, DS_MESI_MSG_FWD_ACK, 0)); /* the answer is lost */
    CHECK(h_state(&h, 1, "a") == DS_MESI_I);
    h_advance(&h, h.cfg.retry_ms);
    h_settle(&h);
    CHECK(h_last_done(&h, w) && h_last_done(&h, w)->res.rv == DS_MESI_OK);
    CHECK(mem(&h, "a")->vlen == 1 && mem(&h, "a")->value[0] == 'x'); /* x reached memory */
    CHECK(ds_mesi_stats(h.node[1])->dirty_lost == 0);
    h_free(&h);
}

static void messages_of_another_epoch_are_dropped_and_counted(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    struct ds_mesi_msg m;
    memset(&m, 0, sizeof m);
    m.type = DS_MESI_MSG_GETS;
    m.from = 1;
    m.to = 0;
    m.epoch = 99;
    m.req = 5;
    m.key = (const uint8_t *)"a";
    m.key_len = 1;
    CHECK(ds_mesi_recv(h.node[0], &m, h.now) == DS_MESI_OK);
    CHECK(ds_mesi_stats(h.node[0])->stale_dropped == 1);
    h_collect_all(&h);
    CHECK(h.npkts == 0);
    m.to = 7; /* not addressed to this node */
    CHECK(ds_mesi_recv(h.node[0], &m, h.now) == DS_MESI_EINVAL);
    h_free(&h);
}

static void duplicate_data_is_dropped_as_stale(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    rd(&h, 1, "a");
    CHECK(h_deliver(&h, DS_MESI_MSG_GETS, 0));
    long k = h_find(&h, DS_MESI_MSG_DATA, 1);
    REQUIRE(k >= 0);
    struct h_pkt dup = h.pkts[k];
    dup.bytes = malloc(dup.len);
    REQUIRE(dup.bytes);
    memcpy(dup.bytes, h.pkts[k].bytes, dup.len);
    CHECK(h_deliver(&h, DS_MESI_MSG_DATA, 1));
    uint64_t before = ds_mesi_stats(h.node[1])->stale_dropped;
    H_PUSH(h.pkts, h.npkts, h.cappkts);
    h.pkts[h.npkts - 1] = dup;
    CHECK(h_deliver(&h, DS_MESI_MSG_DATA, 1));
    CHECK(ds_mesi_stats(h.node[1])->stale_dropped == before + 1);
    CHECK(h_state(&h, 1, "a") == DS_MESI_E);
    h_free(&h);
}

static void home_queue_beyond_its_bound_answers_busy(void)
{
    struct ds_mesi_config c = base_cfg();
    c.queue_max = 1;
    struct h_net h;
    net(&h, 4, c);
    own(&h, 1, "a", "x");
    wr(&h, 2, "a", "y");
    CHECK(h_deliver(&h, DS_MESI_MSG_GETM, 0)); /* running: waits for node 1's Fwd answer */
    rd(&h, 3, "a");
    CHECK(h_deliver(&h, DS_MESI_MSG_GETS, 0)); /* queued */
    uint64_t op = rd(&h, 0, "a");    /* the home's own request: queue full */
    const struct h_done *d = h_last_done(&h, op);
    REQUIRE(d);
    CHECK(d->res.rv == DS_MESI_EBUSY);
    CHECK(ds_mesi_stats(h.node[0])->busy_nacks == 1);
    CHECK(h_state(&h, 0, "a") == DS_MESI_I);
    h_free(&h);
}

static void a_new_home_waits_one_lease_before_granting(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    for (int i = 0; i < 3; i++)
        ds_mesi_set_epoch(h.node[i], 2, h.now);
    uint64_t start = h.now;
    uint64_t op = rd(&h, 1, "a");
    CHECK(h_deliver(&h, DS_MESI_MSG_GETS, 0));
    CHECK(h_find(&h, DS_MESI_MSG_NACK, 1) >= 0);
    while (!h_last_done(&h, op) && h.now < start + 3000) {
        h_advance(&h, 1);
        h_settle(&h);
    }
    const struct h_done *d = h_last_done(&h, op);
    REQUIRE(d);
    CHECK(d->res.rv == DS_MESI_OK);
    CHECK(h.now >= start + h.cfg.lease_ms + h.cfg.margin_ms);
    h_free(&h);
}

static void an_expired_lease_forces_a_refetch(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    rd(&h, 1, "a");
    h_settle(&h);
    struct ds_mesi_result res;
    uint64_t op;
    CHECK(h_read(&h, 1, "a", &res, &op) == DS_MESI_OK);
    h.now += h.cfg.lease_ms;
    CHECK(!line(&h, 1, "a").lease_valid);
    CHECK(h_read(&h, 1, "a", &res, &op) == DS_MESI_PENDING);
    CHECK(ds_mesi_stats(h.node[1])->lease_expiries == 1);
    CHECK(ds_mesi_stats(h.node[1])->hits == 1 && ds_mesi_stats(h.node[1])->misses == 2);
    h_settle(&h);
    CHECK(h_last_done(&h, op) && h_state(&h, 1, "a") == DS_MESI_E);
    h_free(&h);
}

static void evicting_a_modified_line_writes_it_back(void)
{
    struct ds_mesi_config c = base_cfg();
    c.max_entries = 1;
    struct h_net h;
    net(&h, 3, c);
    own(&h, 1, "a", "x");
    CHECK(mem(&h, "a")->vlen == 0);
    own(&h, 1, "b", "z");
    CHECK(h_state(&h, 1, "a") == DS_MESI_I);
    CHECK(mem(&h, "a")->vlen == 1 && mem(&h, "a")->value[0] == 'x' && mem(&h, "a")->version >= 1);
    CHECK(ds_mesi_stats(h.node[1])->writebacks >= 1);
    h_free(&h);
}

static void lru_evicts_the_least_recently_used_and_never_a_transient_line(void)
{
    struct ds_mesi_config c = base_cfg();
    c.max_entries = 2;
    struct h_net h;
    net(&h, 3, c);
    rd(&h, 1, "a");
    h_settle(&h);
    rd(&h, 1, "b");
    h_settle(&h);
    struct ds_mesi_result res;
    uint64_t op;
    CHECK(h_read(&h, 1, "a", &res, &op) == DS_MESI_OK); /* a is now the most recent */
    rd(&h, 1, "c");
    h_settle(&h);
    CHECK(h_state(&h, 1, "a") == DS_MESI_E);
    CHECK(h_state(&h, 1, "b") == DS_MESI_I);
    CHECK(h_state(&h, 1, "c") == DS_MESI_E);
    CHECK(ds_mesi_stats(h.node[1])->evictions[DS_MESI_E] == 1);
    rd(&h, 1, "d"); /* d stays IS_D: transient */
    rd(&h, 1, "e");
    CHECK(h_deliver(&h, DS_MESI_MSG_GETS, 0));
    CHECK(h_deliver(&h, DS_MESI_MSG_GETS, 0));
    CHECK(h_deliver(&h, DS_MESI_MSG_DATA, 1)); /* one arrives; the other line is still IS_D */
    h_collect_all(&h);
    int transient = (h_state(&h, 1, "d") == DS_MESI_IS_D) + (h_state(&h, 1, "e") == DS_MESI_IS_D);
    CHECK(transient == 1);
    h_settle(&h);
    CHECK(ds_mesi_stats(h.node[1])->entries <= 2);
    h_free(&h);
}

static void write_back_flushes_a_dirty_line_within_the_flush_delay(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    own(&h, 1, "a", "x");
    CHECK(line(&h, 1, "a").dirty);
    h_advance(&h, h.cfg.flush_ms + 1);
    h_settle(&h);
    CHECK(mem(&h, "a")->vlen == 1 && mem(&h, "a")->value[0] == 'x');
    CHECK(h_state(&h, 1, "a") == DS_MESI_M && !line(&h, 1, "a").dirty);
    h_free(&h);
}

static void an_owner_renews_its_lease_by_writing_back(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    own(&h, 1, "a", "x");
    for (int i = 0; i < 5; i++) {
        h_advance(&h, h.cfg.lease_ms / 2);
        h_settle(&h);
    }
    CHECK(h_state(&h, 1, "a") == DS_MESI_M && line(&h, 1, "a").lease_valid);
    CHECK(ds_mesi_stats(h.node[1])->lease_expiries == 0);
    h_free(&h);
}

static void write_through_completes_only_once_memory_has_the_write(void)
{
    struct ds_mesi_config c = base_cfg();
    c.write_policy = DS_MESI_WRITE_THROUGH;
    struct h_net h;
    net(&h, 3, c);
    uint64_t w1 = wr(&h, 1, "a", "x");
    REQUIRE(w1);
    h_settle(&h);
    const struct h_done *d = h_last_done(&h, w1);
    REQUIRE(d && d->res.rv == DS_MESI_OK);
    CHECK(mem(&h, "a")->version == d->res.version && mem(&h, "a")->value[0] == 'x');
    uint64_t w2 = wr(&h, 1, "a", "y"); /* M: a WB carries it */
    REQUIRE(w2);
    CHECK(h_find(&h, DS_MESI_MSG_WB, 0) >= 0);
    h_settle(&h);
    d = h_last_done(&h, w2);
    REQUIRE(d && d->res.rv == DS_MESI_OK);
    CHECK(mem(&h, "a")->version == d->res.version && mem(&h, "a")->value[0] == 'y');
    CHECK(!line(&h, 1, "a").dirty);
    h_free(&h);
}

static void an_operation_times_out_unavailable_when_the_home_is_unreachable(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    uint64_t op = rd(&h, 1, "a");
    for (uint64_t t = 0; t <= h.cfg.op_timeout_ms; t++) {
        while (h_drop(&h, 0, -1))
            ;
        h_advance(&h, 1);
    }
    const struct h_done *d = h_last_done(&h, op);
    REQUIRE(d);
    CHECK(d->res.rv == DS_MESI_EUNAVAIL);
    CHECK(h_state(&h, 1, "a") == DS_MESI_I);
    CHECK(ds_mesi_stats(h.node[1])->op_timeouts == 1);
    h_free(&h);
}

static void delete_makes_the_key_absent_at_a_higher_version(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    own(&h, 1, "a", "x");
    struct ds_mesi_result res;
    uint64_t op;
    CHECK(ds_mesi_delete(h.node[1], (const uint8_t *)"a", 1, h.now, &res, &op) == DS_MESI_OK);
    uint64_t v = res.version;
    uint64_t r = rd(&h, 2, "a");
    h_settle(&h);
    const struct h_done *d = h_last_done(&h, r);
    REQUIRE(d);
    CHECK(!d->res.present && d->res.version == v && d->res.version >= 2);
    h_free(&h);
}

static void a_crashed_owner_is_recalled_and_versions_skip_its_window(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    own(&h, 1, "a", "x");
    struct ds_mesi_line_info li = line(&h, 1, "a");
    ds_mesi_destroy(h.node[1]);
    h_start(&h, 1); /* restarted: knows nothing */
    uint64_t w = wr(&h, 2, "a", "y");
    h_settle(&h);
    const struct h_done *d = h_last_done(&h, w);
    REQUIRE(d && d->res.rv == DS_MESI_OK);
    CHECK(d->res.version > li.acked_base + h.cfg.max_dirty);
    CHECK(h_dir(&h, 0, "a").owner == 2);
    h_free(&h);
}

static void an_owner_cut_off_past_its_lease_reports_its_lost_writes(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    own(&h, 1, "a", "x");
    struct ds_mesi_result res;
    uint64_t op;
    CHECK(h_write(&h, 1, "a", "x2", &res, &op) == DS_MESI_OK);
    for (uint64_t t = 0; t < h.cfg.lease_ms + 10; t++) {
        while (h_drop(&h, 0, 0))
            ;
        h_advance(&h, 1);
    }
    CHECK(h_state(&h, 1, "a") == DS_MESI_I);
    REQUIRE(h.nlosts == 1);
    CHECK(h.losts[0].node == 1 && h.losts[0].to == res.version && h.losts[0].from < res.version);
    CHECK(ds_mesi_stats(h.node[1])->dirty_lost == 1);
    h_free(&h);
}

static void a_request_to_a_node_that_is_not_home_is_refused(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    struct ds_mesi_msg m;
    memset(&m, 0, sizeof m);
    m.type = DS_MESI_MSG_GETS;
    m.from = 2;
    m.to = 1;
    m.epoch = h.cfg.epoch;
    m.req = 5;
    m.key = (const uint8_t *)"a";
    m.key_len = 1;
    CHECK(ds_mesi_recv(h.node[1], &m, h.now) == DS_MESI_OK);
    long k = h_find(&h, DS_MESI_MSG_NACK, 2);
    REQUIRE(k >= 0);
    struct ds_mesi_msg out;
    REQUIRE(ds_mesi_decode(h.pkts[k].bytes, h.pkts[k].len, &out) == DS_MESI_OK);
    CHECK(out.reason == DS_MESI_NACK_WRONG_HOME && out.req == 5);
    h_free(&h);
}

static void counters_track_messages_and_line_states(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    rd(&h, 1, "a");
    h_settle(&h);
    rd(&h, 2, "a");
    h_settle(&h);
    wr(&h, 2, "a", "y");
    h_settle(&h);
    const struct ds_mesi_stats *s1 = ds_mesi_stats(h.node[1]);
    CHECK(s1->msgs_sent[DS_MESI_MSG_GETS] == 1 && s1->msgs_received[DS_MESI_MSG_DATA] == 1);
    CHECK(s1->inv_received == 1 && s1->lines[DS_MESI_I] == 0);
    const struct ds_mesi_stats *s0 = ds_mesi_stats(h.node[0]);
    CHECK(s0->inv_sent == 1 && s0->dir_entries == 1);
    const struct ds_mesi_stats *s2 = ds_mesi_stats(h.node[2]);
    CHECK(s2->lines[DS_MESI_M] == 1 && s2->entries == 1);
    CHECK(strcmp(ds_mesi_state_name(DS_MESI_IS_D_I), "IS_D_I") == 0);
    CHECK(strcmp(ds_mesi_msg_name(DS_MESI_MSG_FWD_GETM), "FwdGetM") == 0);
    CHECK(strcmp(ds_mesi_strerror(DS_MESI_EBUSY), "busy") == 0);
    h_free(&h);
}

/* Requests that carry a client write (GetM / WB with FLAG_WRITE) in node `from`'s packets so far. */
static int write_requests_delivered(struct h_net *h, int from)
{
    int carried = 0;
    for (int guard = 0; guard < 100; guard++) {
        long k = h_find(h, 0, -1);
        if (k < 0)
            break;
        struct ds_mesi_msg msg;
        if (ds_mesi_decode(h->pkts[k].bytes, h->pkts[k].len, &msg) != DS_MESI_OK)
            abort();
        carried += msg.from == from && (msg.flags & DS_MESI_FLAG_WRITE) &&
                   (msg.type == DS_MESI_MSG_GETM || msg.type == DS_MESI_MSG_WB);
        h_deliver_pkt(h, (size_t)k);
        h_collect_all(h);
        h_run_mem(h);
    }
    return carried;
}

static struct ds_mesi_config write_through_cfg(void)
{
    struct ds_mesi_config c = base_cfg();
    c.write_policy = DS_MESI_WRITE_THROUGH;
    return c;
}

static void a_write_through_write_from_invalid_reaches_the_home_once(void)
{
    struct h_net h;
    net(&h, 2, write_through_cfg());
    uint64_t w = wr(&h, 1, "a", "x");
    REQUIRE(w);
    int carried = write_requests_delivered(&h, 1);
    const struct h_done *d = h_last_done(&h, w);
    REQUIRE(d);
    CHECKF(carried == 1, "%d requests carried the write", carried);
    CHECK(d->res.rv == DS_MESI_OK && d->res.version == mem(&h, "a")->version);
    CHECK(h_state(&h, 1, "a") == DS_MESI_M && line(&h, 1, "a").pending_ops == 0);
    h_free(&h);
}

static void a_write_through_write_from_shared_reaches_the_home_once(void)
{
    struct h_net h;
    net(&h, 3, write_through_cfg());
    rd(&h, 1, "a");
    h_settle(&h);
    rd(&h, 2, "a");
    h_settle(&h);
    REQUIRE(h_state(&h, 1, "a") == DS_MESI_S);
    uint64_t w = wr(&h, 1, "a", "x");
    REQUIRE(w);
    int carried = write_requests_delivered(&h, 1);
    const struct h_done *d = h_last_done(&h, w);
    REQUIRE(d);
    CHECKF(carried == 1, "%d requests carried the write", carried);
    CHECK(d->res.rv == DS_MESI_OK && d->res.version == mem(&h, "a")->version);
    h_free(&h);
}

static void a_write_through_write_is_applied_once_when_a_fwd_overtakes_its_put_ack(void)
{
    struct h_net h;
    net(&h, 3, write_through_cfg());
    own(&h, 1, "a", "x");
    REQUIRE(h_state(&h, 1, "a") == DS_MESI_M);
    uint64_t w = wr(&h, 1, "a", "y"); /* a WB carries y */
    REQUIRE(w);
    REQUIRE(h_deliver(&h, DS_MESI_MSG_WB, 0)); /* the home applies y; its PutAck is in flight */
    uint64_t applied = mem(&h, "a")->version;
    uint64_t r = rd(&h, 2, "a");
    REQUIRE(h_deliver(&h, DS_MESI_MSG_GETS, 0));
    REQUIRE(h_deliver(&h, DS_MESI_MSG_FWD_GETS, 1)); /* the Fwd overtakes the PutAck */
    h_settle(&h);
    const struct h_done *dr = h_last_done(&h, r), *dw = h_last_done(&h, w);
    REQUIRE(dr && dw);
    CHECK(dw->res.rv == DS_MESI_OK && dr->res.rv == DS_MESI_OK);
    CHECKF(dw->res.version == applied && dr->res.version == applied,
           "y applied at %llu, write answered %llu, read %llu", (unsigned long long)applied,
           (unsigned long long)dw->res.version, (unsigned long long)dr->res.version);
    CHECK(mem(&h, "a")->version == applied);
    h_free(&h);
}

static void a_write_retried_to_a_restarted_home_is_not_applied_again(void)
{
    struct h_net h;
    net(&h, 2, write_through_cfg());
    uint64_t w = wr(&h, 1, "a", "x");
    REQUIRE(w);
    REQUIRE(h_deliver(&h, DS_MESI_MSG_GETM, 0)); /* applied and persisted */
    uint64_t applied = mem(&h, "a")->version;
    REQUIRE(h_drop(&h, DS_MESI_MSG_DATA, 1));
    ds_mesi_destroy(h.node[0]); /* the home restarts: its directory is gone */
    h_start(&h, 0);
    for (int i = 0; i < 30 && !h_last_done(&h, w); i++) {
        h_advance(&h, h.cfg.retry_ms);
        h_settle(&h);
    }
    const struct h_done *d = h_last_done(&h, w);
    REQUIRE(d);
    CHECK(d->res.rv == DS_MESI_OK);
    CHECKF(d->res.version == applied, "applied at %llu, answered %llu",
           (unsigned long long)applied, (unsigned long long)d->res.version);
    CHECK(mem(&h, "a")->version == applied && mem(&h, "a")->floor > applied); /* reloaded */
    CHECK(mem(&h, "a")->vlen == 1 && mem(&h, "a")->value[0] == 'x');
    h_free(&h);
}

/* A node restarted with the given incarnation (the harness's own are always larger). */
static void restart_with(struct h_net *h, int i, uint64_t incarnation)
{
    ds_mesi_destroy(h->node[i]);
    struct ds_mesi_config c = h->cfg;
    c.self = (uint16_t)i;
    c.incarnation = incarnation;
    c.ring = &h->ring.ops;
    if (ds_mesi_create(&c, h->now, &h->node[i]) != DS_MESI_OK)
        abort();
}

static void a_node_restarted_with_a_larger_incarnation_reads_again(void)
{
    struct h_net h;
    net(&h, 2, write_through_cfg());
    restart_with(&h, 1, 0x1234);
    uint64_t r = rd(&h, 1, "a");
    h_settle(&h);
    REQUIRE(h_last_done(&h, r) && h_last_done(&h, r)->res.rv == DS_MESI_OK);
    restart_with(&h, 1, 0x1235);
    r = rd(&h, 1, "a");
    for (int i = 0; i < 80 && !h_last_done(&h, r); i++) {
        h_advance(&h, 100);
        h_settle(&h);
    }
    const struct h_done *d = h_last_done(&h, r);
    REQUIRE(d);
    CHECK(d->res.rv == DS_MESI_OK);
    CHECK(ds_mesi_stats(h.node[0])->stale_dropped == 0);
    h_free(&h);
}

static void an_incarnation_that_does_not_fit_32_bits_is_refused(void)
{
    struct h_net h;
    net(&h, 2, base_cfg());
    struct ds_mesi_config c = h.cfg;
    c.ring = &h.ring.ops;
    c.incarnation = (uint64_t)1 << 32; /* ids keep 32 bits of it: a restart could go back */
    struct ds_mesi *m = NULL;
    CHECK(ds_mesi_create(&c, h.now, &m) == DS_MESI_EINVAL);
    c.incarnation = UINT32_MAX;
    CHECK(ds_mesi_create(&c, h.now, &m) == DS_MESI_OK);
    ds_mesi_destroy(m);
    h_free(&h);
}

static void a_write_memory_refuses_is_not_acknowledged_and_the_home_reloads(void)
{
    struct h_net h;
    net(&h, 2, write_through_cfg());
    own(&h, 1, "a", "x");
    REQUIRE(h_state(&h, 1, "a") == DS_MESI_M);
    struct h_mem *s = mem(&h, "a"); /* another home wrote a newer version meanwhile */
    s->version += 1000;
    uint64_t newer = s->version;
    memcpy(s->value, "z", 1);
    s->vlen = 1;
    uint64_t w = wr(&h, 1, "a", "y");
    REQUIRE(w);
    h_settle(&h);
    CHECK(h.mem_refused == 1);
    CHECK(ds_mesi_stats(h.node[0])->mem_refused == 1);
    const struct h_done *d = h_last_done(&h, w);
    CHECKF(!d || d->res.rv != DS_MESI_OK || d->res.version > newer,
           "acknowledged at version %llu below memory's %llu", (unsigned long long)d->res.version,
           (unsigned long long)newer);
    CHECK(!h_dir(&h, 0, "a").ready); /* the home waits one lease term */
    for (int i = 0; i < 40 && !h_last_done(&h, w); i++) {
        h_advance(&h, h.cfg.retry_ms);
        h_settle(&h);
    }
    d = h_last_done(&h, w);
    REQUIRE(d);
    CHECK(d->res.rv == DS_MESI_OK && d->res.version > newer);
    CHECK(mem(&h, "a")->version == d->res.version && mem(&h, "a")->value[0] == 'y');
    h_free(&h);
}

static struct ds_mesi_config home_lease_cfg(void)
{
    struct ds_mesi_config c = write_through_cfg();
    c.home_lease_ms = 2 * c.lease_ms;
    return c;
}

/* Node i's membership view goes its own way: another epoch, and it is the home of every key. */
static void stray(struct h_net *h, int i)
{
    h->view[i].fixed = i;
    ds_mesi_set_epoch(h->node[i], h->cfg.epoch + 100, h->now);
}

static void a_stray_home_waits_for_the_key_lease_and_a_paused_home_grants_nothing_after_its_own(void)
{
    struct h_net h;
    net(&h, 4, home_lease_cfg());
    own(&h, 1, "a", "x"); /* home 0 took the key's lease and granted copies of x to 1 and 3 */
    rd(&h, 3, "a");
    h_settle(&h);
    REQUIRE(h_state(&h, 1, "a") == DS_MESI_S && h_state(&h, 3, "a") == DS_MESI_S);
    REQUIRE(mem(&h, "a")->holder == 0);
    uint64_t vx = line(&h, 1, "a").version;
    struct ds_mesi *paused = h.node[0]; /* the home stops: no tick, no message, no memory answer */
    h.node[0] = NULL;
    stray(&h, 2);
    uint64_t w = wr(&h, 2, "a", "y");
    REQUIRE(w);
    int overlap = 0;
    for (int t = 0; t < 60 && !h_last_done(&h, w); t++) {
        h_advance(&h, 50);
        h_settle(&h);
        overlap += mem(&h, "a")->holder == 2 && line(&h, 1, "a").lease_valid;
    }
    const struct h_done *d = h_last_done(&h, w);
    REQUIRE(d);
    CHECK(overlap == 0); /* node 2 acted as home only once the copy of the old home had ended */
    CHECK(d->res.rv == DS_MESI_OK && d->res.version > vx);
    CHECK(mem(&h, "a")->value[0] == 'y' && mem(&h, "a")->version == d->res.version);
    h.node[0] = paused; /* it resumes with its old directory: x, shared by 1 and 3 */
    uint64_t r = rd(&h, 3, "a");
    REQUIRE(r);
    for (int t = 0; t < 100 && !h_last_done(&h, r); t++) {
        h_advance(&h, 50);
        h_settle(&h);
    }
    const struct h_done *dr = h_last_done(&h, r);
    REQUIRE(dr);
    CHECKF(dr->res.rv != DS_MESI_OK || (dr->value[0] == 'y' && dr->res.version == d->res.version),
           "read '%s' at version %llu after y was written at %llu", dr->value,
           (unsigned long long)dr->res.version, (unsigned long long)d->res.version);
    h_free(&h);
}

static void a_home_renews_its_lease_while_copies_it_granted_are_valid(void)
{
    struct h_net h;
    net(&h, 3, home_lease_cfg());
    uint64_t r = rd(&h, 1, "a");
    h_settle(&h);
    REQUIRE(h_last_done(&h, r));
    for (int i = 0; i < 8; i++) { /* a sharer keeps reading: the home keeps the key */
        h_advance(&h, h.cfg.lease_ms / 2);
        h_settle(&h);
        r = rd(&h, 1, "a");
        h_settle(&h);
    }
    CHECK(mem(&h, "a")->holder == 0 && mem(&h, "a")->lease_expiry > h.now);
    CHECK(ds_mesi_stats(h.node[0])->home_lease_refused == 0);
    uint64_t w = wr(&h, 2, "a", "z"); /* no round trip to memory before the recall */
    REQUIRE(h_deliver(&h, DS_MESI_MSG_GETM, 0));
    CHECK(h_find(&h, DS_MESI_MSG_INV, 1) >= 0 || h_find(&h, DS_MESI_MSG_FWD_GETM, 1) >= 0);
    h_settle(&h);
    CHECK(h_last_done(&h, w) && h_last_done(&h, w)->res.rv == DS_MESI_OK);
    h_free(&h);
}

static void bad_arguments_are_refused(void)
{
    struct h_net h;
    net(&h, 3, base_cfg());
    struct ds_mesi_result res;
    uint64_t op;
    static uint8_t big[DS_MESI_MAX_KEY + 1];
    CHECK(ds_mesi_read(h.node[1], big, 0, h.now, &res, &op) == DS_MESI_EINVAL);
    CHECK(ds_mesi_read(h.node[1], big, sizeof big, h.now, &res, &op) == DS_MESI_EINVAL);
    CHECK(ds_mesi_write(h.node[1], big, 1, big, DS_MESI_MAX_VALUE + 1, h.now, &res, &op) ==
          DS_MESI_EINVAL);
    CHECK(ds_mesi_mem_write_done(h.node[1], 12345, h.now) == DS_MESI_ENOTFOUND);
    CHECK(ds_mesi_mem_write_refused(h.node[1], 12345, h.now) == DS_MESI_ENOTFOUND);
    CHECK(ds_mesi_mem_read_refused(h.node[1], 12345, h.now) == DS_MESI_ENOTFOUND);
    CHECK(ds_mesi_mem_renew_done(h.node[1], 12345, 1, h.now) == DS_MESI_ENOTFOUND);
    CHECK(ds_mesi_mem_read_done(h.node[1], 12345, 0, NULL, 0, 0, 0, big,
                                DS_MESI_MAX_APPLIED + 1, h.now) == DS_MESI_EINVAL);
    struct ds_mesi_config c = base_cfg();
    struct ds_mesi *m;
    CHECK(ds_mesi_create(&c, 0, &m) == DS_MESI_EINVAL); /* no ring */
    c.ring = &h.ring.ops;
    c.home_lease_ms = 2 * c.lease_ms - 1; /* a home lease must outlast the copies it covers */
    CHECK(ds_mesi_create(&c, 0, &m) == DS_MESI_EINVAL);
    h_free(&h);
}

int main(void)
{
    RUN(read_miss_at_idle_home_grants_exclusive);
    RUN(second_reader_downgrades_exclusive_owner_to_shared);
    RUN(write_on_exclusive_upgrades_silently_to_modified);
    RUN(write_from_shared_waits_for_every_inv_ack);
    RUN(writer_proceeds_once_an_unreachable_sharers_lease_ran_out);
    RUN(inv_before_data_serves_pending_read_once_then_invalid);
    RUN(fwd_during_eviction_hands_data_to_home_and_put_is_acked);
    RUN(puts_crossing_an_inv_ends_invalid);
    RUN(fwd_before_data_is_answered_after_the_data);
    RUN(duplicate_fwd_is_answered_again_from_the_retained_value);
    RUN(messages_of_another_epoch_are_dropped_and_counted);
    RUN(duplicate_data_is_dropped_as_stale);
    RUN(home_queue_beyond_its_bound_answers_busy);
    RUN(a_new_home_waits_one_lease_before_granting);
    RUN(an_expired_lease_forces_a_refetch);
    RUN(evicting_a_modified_line_writes_it_back);
    RUN(lru_evicts_the_least_recently_used_and_never_a_transient_line);
    RUN(write_back_flushes_a_dirty_line_within_the_flush_delay);
    RUN(an_owner_renews_its_lease_by_writing_back);
    RUN(write_through_completes_only_once_memory_has_the_write);
    RUN(an_operation_times_out_unavailable_when_the_home_is_unreachable);
    RUN(delete_makes_the_key_absent_at_a_higher_version);
    RUN(a_crashed_owner_is_recalled_and_versions_skip_its_window);
    RUN(an_owner_cut_off_past_its_lease_reports_its_lost_writes);
    RUN(a_request_to_a_node_that_is_not_home_is_refused);
    RUN(counters_track_messages_and_line_states);
    RUN(a_write_through_write_from_invalid_reaches_the_home_once);
    RUN(a_write_through_write_from_shared_reaches_the_home_once);
    RUN(a_write_through_write_is_applied_once_when_a_fwd_overtakes_its_put_ack);
    RUN(a_write_retried_to_a_restarted_home_is_not_applied_again);
    RUN(a_node_restarted_with_a_larger_incarnation_reads_again);
    RUN(an_incarnation_that_does_not_fit_32_bits_is_refused);
    RUN(a_write_memory_refuses_is_not_acknowledged_and_the_home_reloads);
    RUN(a_stray_home_waits_for_the_key_lease_and_a_paused_home_grants_nothing_after_its_own);
    RUN(a_home_renews_its_lease_while_copies_it_granted_are_valid);
    RUN(bad_arguments_are_refused);
    return check_summary();
}
