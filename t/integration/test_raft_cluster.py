"""Integration: the Raft host with real processes (3 and 5 lock-role nodes on loopback, certificates
from certs/gen-certs.sh): election, failover after kill -9 and SIGSTOP, catch-up from the log and
from a snapshot, leadership transfer, membership changes, the peer route's authentication, and the
hand-over on SIGTERM.  Timings are printed, not asserted (beyond generous bounds)."""
import json
import os
import signal
import ssl
import sys
import threading
import time
import unittest

import dsync
import lockutil

GENEROUS_S = 10.0


def note(fmt, *args):
    sys.stderr.write("    [timing] " + (fmt % args) + "\n")


class RaftCluster(lockutil.ClusterCase):

    # ------------------------------------------------------------------ election and failover

    def test_three_nodes_elect_one_leader_that_every_node_names(self):
        t0 = time.monotonic()
        c = self.cluster(3)
        leader = c.wait_leader(GENEROUS_S)
        note("3 nodes: first agreed leader %.3f s after start", time.monotonic() - t0)
        st = c.statuses()
        self.assertEqual(sum(s["state"] == "leader" for s in st.values()), 1, st)
        for name, s in st.items():
            self.assertEqual(s["leader"], leader, st)
            self.assertEqual(sorted(s["voters"]), ["node1", "node2", "node3"], s)
        self.assertEqual(sorted(st[leader]["match_index"]),
                         sorted(n for n in c.names if n != leader))
        for n in c.names:  # /ready follows the known leader
            self.assertEqual(c.request(n, "GET", "/ready").status, 200)

    def test_five_nodes_elect_a_leader_and_keep_writing_with_two_of_them_killed(self):
        c = self.cluster(5)
        leader = c.wait_leader(GENEROUS_S)
        self.assertEqual(len(c.statuses()[leader]["voters"]), 5)
        c.write("five-a")
        c.kill(leader)
        follower = [n for n in c.names if n != leader][0]
        c.kill(follower)
        t0 = time.monotonic()
        new = c.wait_leader(GENEROUS_S, exclude=(leader,))
        c.write("five-b", timeout=GENEROUS_S)
        note("5 nodes: writes resumed %.3f s after the leader and a follower were killed",
             time.monotonic() - t0)
        self.assertNotIn(new, (leader, follower))

    def test_kill_9_of_the_leader_elects_a_new_leader_and_writes_resume(self):
        c = self.cluster(3)
        leader = c.wait_leader(GENEROUS_S)
        term0 = c.status(leader)["term"]
        c.write("before-kill")
        c.kill(leader)
        t0 = time.monotonic()
        new = c.wait_leader(GENEROUS_S, exclude=(leader,))
        t_leader = time.monotonic() - t0
        c.write("after-kill", timeout=GENEROUS_S)
        t_write = time.monotonic() - t0
        note("leader kill -9: new leader after %.3f s, writes resumed after %.3f s",
             t_leader, t_write)
        self.assertNotEqual(new, leader)
        self.assertGreater(c.status(new)["term"], term0)
        self.assertLess(t_write, GENEROUS_S)

    def test_kill_9_of_a_follower_lets_writes_continue_under_the_same_leader(self):
        c = self.cluster(3)
        leader = c.wait_leader(GENEROUS_S)
        term0 = c.status(leader)["term"]
        follower = [n for n in c.names if n != leader][0]
        c.kill(follower)
        t0 = time.monotonic()
        for i in range(5):
            c.write("follower-down-%d" % i)
        note("follower kill -9: 5 writes took %.3f s", time.monotonic() - t0)
        st = c.status(leader)
        self.assertEqual(st["state"], "leader")
        self.assertEqual(st["term"], term0, "losing a follower must not cause an election")

    def test_a_leader_paused_for_3_s_steps_down_and_no_acknowledged_lock_is_lost(self):
        c = self.cluster(3)
        leader = c.wait_leader(GENEROUS_S)
        others = [n for n in c.names if n != leader]
        acked = {}
        for i in range(3):
            st, j, r = c.lock(leader, "acquire", {"resource": "keep-%d" % i, "client_id": "k",
                                                  "ttl_ms": 120000})
            self.assertEqual(st, 200, r)
            acked["keep-%d" % i] = j["token"]
        terms0 = {n: s["term"] for n, s in c.statuses().items()}
        c.pause(leader)
        # a client that talks to the paused leader: whatever it is told must hold afterwards
        late = {}

        def late_client():
            try:
                late["answer"] = c.lock(leader, "acquire", {"resource": "late", "client_id": "z",
                                                            "ttl_ms": 120000}, timeout=15)
            except lockutil.NETWORK_ERRORS as e:
                late["answer"] = e
        th = threading.Thread(target=late_client, daemon=True)
        th.start()
        t0 = time.monotonic()
        new = c.wait_leader(GENEROUS_S, names=others)
        note("leader SIGSTOP: the other two agreed on %s after %.3f s", new,
             time.monotonic() - t0)
        st, j, r = c.lock(new, "acquire", {"resource": "during", "client_id": "d",
                                           "ttl_ms": 120000})
        self.assertEqual(st, 200, r)
        acked["during"] = j["token"]
        time.sleep(max(0.0, 3.0 - (time.monotonic() - t0)))
        c.resume(leader)
        t1 = time.monotonic()
        c.wait_for("the resumed leader steps down and follows %s" % new,
                   lambda: (c.status(leader) or {}).get("state") == "follower"
                   and c.agreed_leader() is not None)
        note("SIGCONT: the old leader followed again after %.3f s", time.monotonic() - t1)
        th.join(20)
        self.assertFalse(th.is_alive(), "the client of the paused leader was never answered")
        answer = late["answer"]
        if isinstance(answer, tuple):
            if answer[0] == 200:
                acked["late"] = answer[1]["token"]
            else:
                self.assertIn(answer[0], (409, 503), answer[2])
        final = c.agreed_leader()
        st = c.statuses()
        for n, s in st.items():
            self.assertGreaterEqual(s["term"], terms0[n], "a term went backwards on %s" % n)
        self.assertGreater(st[leader]["term"], terms0[leader])
        self.assertEqual(sum(s["state"] == "leader" for s in st.values()), 1, st)
        for n in c.names:
            r = c.request(n, "GET", "/lock")
            self.assertEqual(r.status, 200, r)
            held = {x["resource"]: x["token"] for x in r.json()["locks"]}
            for res, tok in acked.items():
                self.assertEqual(held.get(res), tok, "acknowledged lock %s lost (seen by %s, "
                                 "leader %s): %r" % (res, n, final, held))
        # every replica applies the same table once caught up
        commit = st[final]["commit_index"]
        c.wait_for("every replica applied up to %d" % commit,
                   lambda: all((c.status(n) or {}).get("applied_index", 0) >= commit
                               for n in c.names))
        for n in c.names:
            lk = c.request(n, "GET", "/status").json()["lock"]
            self.assertEqual(lk["held_exclusive"], len(acked), (n, lk))

    # ------------------------------------------------------------------ catch-up

    def catch_up(self, c, name):
        """Wait until `name`'s commit index reaches the leader's (no writes meanwhile)."""
        leader = c.wait_leader(GENEROUS_S)
        target = c.status(leader)["commit_index"]
        return c.wait_for("%s's commit index reaches the leader's %d" % (name, target),
                          lambda: (c.status(name) or {}).get("commit_index", 0) >= target
                          and (c.status(name) or {}).get("applied_index", 0) >= target
                          and c.status(name))

    def test_a_restarted_follower_catches_up_from_the_log(self):
        c = self.cluster(3)
        leader = c.wait_leader(GENEROUS_S)
        follower = [n for n in c.names if n != leader][0]
        c.kill(follower)
        for i in range(20):
            c.write("log-%d" % i)
        st, j, r = c.lock(leader, "acquire", {"resource": "held", "client_id": "h",
                                              "ttl_ms": 120000})
        self.assertEqual(st, 200, r)
        t0 = time.monotonic()
        c.start(follower)
        s = self.catch_up(c, follower)
        note("restart: caught up from the log in %.3f s", time.monotonic() - t0)
        self.assertEqual(s["snapshot_index"], 0, "expected catch-up from the log, not a snapshot")
        self.assertEqual(c.request(follower, "GET", "/status").json()["lock"]["held_exclusive"], 1)

    def test_a_restarted_follower_catches_up_from_a_snapshot_after_compaction(self):
        c = self.cluster(3, raft={"snapshot_entries": 16})
        leader = c.wait_leader(GENEROUS_S)
        follower = [n for n in c.names if n != leader][0]
        c.kill(follower)
        for i in range(150):  # 300 entries: the leader compacts its log past the follower's
            c.write("snap-%d" % (i % 7))
        for i in range(2):
            st, _, r = c.lock(leader, "acquire", {"resource": "kept-%d" % i, "client_id": "h",
                                                  "ttl_ms": 120000})
            self.assertEqual(st, 200, r)
        ls = c.status(leader)
        self.assertGreater(ls["snapshot_index"], 0, ls)
        self.assertGreaterEqual(ls["commit_index"], 300, ls)
        t0 = time.monotonic()
        c.start(follower)
        s = self.catch_up(c, follower)
        note("restart: caught up from a snapshot in %.3f s", time.monotonic() - t0)
        self.assertGreaterEqual(s["snapshot_index"], ls["snapshot_index"], s)
        # installed, not rebuilt: replaying ~300 entries would have taken a snapshot every 16
        self.assertLess(c.metrics(follower).value("dsyncd_raft_snapshots_total"), 3)
        lk = c.request(follower, "GET", "/status").json()["lock"]
        self.assertEqual(lk["held_exclusive"], 2, lk)
        # and it keeps replicating after the snapshot
        token = c.write("after-snapshot")
        self.assertGreater(token, 0)
        self.catch_up(c, follower)
        # a whole-cluster restart recovers from snapshot + log suffix
        for n in c.names:
            c.kill(n)
        for n in c.names:
            c.start(n, wait=False)
        for n in c.names:
            c.nodes[n].wait_healthy()
        new = c.wait_leader(GENEROUS_S)
        r = c.request(new, "GET", "/lock")
        self.assertEqual(sorted(x["resource"] for x in r.json()["locks"]), ["kept-0", "kept-1"], r)
        self.assertGreater(c.write("after-full-restart", timeout=GENEROUS_S), token)

    # ------------------------------------------------------------------ admin routes

    def test_admin_transfer_moves_leadership_to_the_named_node(self):
        c = self.cluster(3)
        leader = c.wait_leader(GENEROUS_S)
        target = [n for n in c.names if n != leader][1]
        r = c.request(leader, "POST", "/raft/transfer", {"to": target})
        self.assertEqual(r.status, 403, "no client certificate must be refused: %r" % r)
        other = [n for n in c.names if n not in (leader, target)][0]
        r = c.request(other, "POST", "/raft/transfer", {"to": target}, ctx=c.admin_ctx)
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.json()["error"]["code"], "not_leader")
        r = c.request(leader, "POST", "/raft/transfer", {"to": target, "x": 1}, ctx=c.admin_ctx)
        self.assertEqual(r.status, 400, r)
        t0 = time.monotonic()
        r = c.request(leader, "POST", "/raft/transfer", {"to": target}, ctx=c.admin_ctx)
        self.assertEqual(r.status, 202, r)
        c.wait_for("leadership moves to %s" % target, lambda: c.agreed_leader() == target)
        note("transfer: %s led after %.3f s", target, time.monotonic() - t0)
        c.write("after-transfer")

    def test_a_fourth_node_is_added_as_learner_promoted_to_voter_and_removed(self):
        c = self.cluster(3)
        leader = c.wait_leader(GENEROUS_S)
        c.write("before-join")
        c.add_name("node4")
        c.start("node4", peers=c.names)  # it knows all four; the others were started with three
        body = {"op": "add", "id": "node4", "url": c.url("node4")}
        r = c.request(leader, "POST", "/raft/members", body)
        self.assertEqual(r.status, 403, r)
        r = c.request(leader, "POST", "/raft/members", {"op": "join", "id": "node4"},
                      ctx=c.admin_ctx)
        self.assertEqual(r.status, 400, r)
        r = c.request(leader, "POST", "/raft/members", body, ctx=c.admin_ctx)
        self.assertEqual(r.status, 202, r)
        c.wait_for("node4 is a learner on the leader",
                   lambda: "node4" in (c.status(leader) or {}).get("learners", []))
        self.catch_up(c, "node4")
        r = c.request(leader, "POST", "/raft/members", {"op": "promote", "id": "node4"},
                      ctx=c.admin_ctx)
        self.assertEqual(r.status, 202, r)
        c.wait_for("node4 is a voter on every node",
                   lambda: all("node4" in (c.status(n) or {}).get("voters", [])
                               for n in c.names))
        self.assertEqual(c.agreed_leader(), leader)
        c.write("with-four")
        self.assertIn("node4", c.status(leader)["match_index"])
        r = c.request(leader, "POST", "/raft/members", {"op": "remove", "id": "node4"},
                      ctx=c.admin_ctx)
        self.assertEqual(r.status, 202, r)
        old = ["node1", "node2", "node3"]
        c.wait_for("node4 is gone from the configuration",
                   lambda: all(sorted((c.status(n) or {}).get("voters", [])) == old
                               and "node4" not in (c.status(n) or {}).get("learners", ["?"])
                               for n in old))
        c.kill("node4")
        c.write("after-removal")

    # ------------------------------------------------------------------ peer authentication

    def peer_ctx(self, cert):
        d = self.cluster_certs
        return dsync.client_context(os.path.join(d, "ca.crt"), os.path.join(d, cert + ".crt"),
                                    os.path.join(d, cert + ".key"))

    def auth_failures(self, c, name, reason):
        return c.metrics(name).value("dsyncd_peer_auth_failures_total", reason=reason)

    def test_peer_messages_without_cert_wrong_ca_bad_mac_stale_or_replayed_are_refused(self):
        c = self.cluster(3)
        leader = c.wait_leader(GENEROUS_S)
        target = [n for n in c.names if n != leader][0]
        key = lockutil.mac_key(self.cluster_certs)
        body = b"\x00\x00\x00\x00"  # an empty batch: count 0
        path = "/raft/msg"
        node1 = self.peer_ctx("node1")
        bad_mac0 = self.auth_failures(c, target, "bad_mac")
        replay0 = self.auth_failures(c, target, "replay")
        stale0 = self.auth_failures(c, target, "stale")
        # no client certificate: 403
        r = c.request(target, "POST", path, body, headers=lockutil.sign(key, "POST", path, body))
        self.assertEqual(r.status, 403, r)
        self.assertEqual(r.json()["error"]["code"], "forbidden")
        # a certificate from another CA: the handshake is refused
        evil = dsync.Certs(os.path.join(self.tmp, "evil-certs"))
        ctx = dsync.client_context(c.ca, evil.evil_crt, evil.evil_key)
        with self.assertRaises(lockutil.NETWORK_ERRORS):
            c.request(target, "POST", path, body, ctx=ctx,
                      headers=lockutil.sign(key, "POST", path, body))
        # a valid certificate, no MAC headers / a MAC made with the wrong key
        r = c.request(target, "POST", path, body, ctx=node1)
        self.assertEqual(r.status, 401, r)
        h = lockutil.sign(b"not-the-cluster-mac-key-0123456789", "POST", path, body)
        r = c.request(target, "POST", path, body, ctx=node1, headers=h)
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json()["error"]["code"], "unauthenticated")
        # the right key over another body
        h = lockutil.sign(key, "POST", path, body)
        r = c.request(target, "POST", path, b"\x00\x00\x00\x00\x00", ctx=node1, headers=h)
        self.assertEqual(r.status, 401, r)
        # a stale timestamp
        h = lockutil.sign(key, "POST", path, body, time_ms=int(time.time() * 1000) - 3600_000)
        r = c.request(target, "POST", path, body, ctx=node1, headers=h)
        self.assertEqual(r.status, 401, r)
        # a valid signed request is accepted once, refused when replayed
        h = lockutil.sign(key, "POST", path, body)
        r = c.request(target, "POST", path, body, ctx=node1, headers=h)
        self.assertEqual(r.status, 204, r)
        r = c.request(target, "POST", path, body, ctx=node1, headers=h)
        self.assertEqual(r.status, 401, r)
        self.assertIn("replay", r.json()["error"]["message"])
        self.assertEqual(self.auth_failures(c, target, "bad_mac") - bad_mac0, 2)
        self.assertEqual(self.auth_failures(c, target, "replay") - replay0, 1)
        self.assertEqual(self.auth_failures(c, target, "stale") - stale0, 1)
        self.assertGreaterEqual(self.auth_failures(c, target, "missing"), 1)
        # a signed batch that does not decode is refused without disturbing the cluster
        junk = b"\x01\x00\x00\x00\x05\x00\x00\x00hello"
        h = lockutil.sign(key, "POST", path, junk)
        r = c.request(target, "POST", path, junk, ctx=node1, headers=h)
        self.assertEqual(r.status, 400, r)
        self.assertEqual(c.agreed_leader(), leader)
        c.write("after-auth-matrix")

    # ------------------------------------------------------------------ graceful stop

    def test_sigterm_on_the_leader_hands_leadership_over_before_exit(self):
        c = self.cluster(3)
        leader = c.wait_leader(GENEROUS_S)
        c.write("before-term")
        node = c.nodes[leader]
        others = [n for n in c.names if n != leader]
        t0 = time.monotonic()
        node.send_signal(signal.SIGTERM)
        new = c.wait_leader(GENEROUS_S, names=others, exclude=(leader,))
        t_new = time.monotonic() - t0
        rc = node.wait(GENEROUS_S)
        note("SIGTERM on the leader: %s led after %.3f s; the old process exited after %.3f s",
             new, t_new, time.monotonic() - t0)
        log = node.stderr()
        self.assertEqual(rc, 0, log)
        self.assertIn("handing leadership over before exit", log)
        self.assertLess(t_new, 5.0)
        c.write("after-term", names=others)


if __name__ == "__main__":
    unittest.main(verbosity=2)
