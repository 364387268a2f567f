"""Integration: the lock role's HTTP API on a real 3-node cluster (leader and followers): grants,
conflicts, waiting, deadlocks, shared/exclusive and writer preference, upgrade/downgrade,
idempotency, renew, check and watch, expiry, reads from followers, abandoned waiters, the
hostile-input matrix of every lock route, and the audit log."""
import json
import os
import socket
import threading
import time
import unittest

import dsync
import lockutil


class Async:
    """Run fn() in a thread; .result() joins and returns its value (or raises its exception)."""

    def __init__(self, fn):
        self.value, self.error = None, None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        try:
            self.value = fn()
        except BaseException as e:  # handed to the test thread
            self.error = e

    def done(self):
        return not self.thread.is_alive()

    def result(self, timeout=15):
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError("request not answered within %.0f s" % timeout)
        if self.error:
            raise self.error
        return self.value


class LockApi(dsync.TempDirCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        certs = lockutil.make_certs(os.path.join(cls.tmp, "cluster-certs"))
        cls.c = lockutil.Cluster(cls.tmp, certs, ["node1", "node2", "node3"])
        cls.c.start_all()
        cls.leader = cls.c.wait_leader(10)
        cls.followers = [n for n in cls.c.names if n != cls.leader]

    def setUp(self):
        super().setUp()
        self.res = self.id().rsplit(".", 1)[1][5:45]  # a resource name per test
        self.assertEqual(self.c.agreed_leader(), self.leader, "leadership moved during the run")

    # ------------------------------------------------------------------ helpers

    def cid(self, client):
        """Client ids are per test (the wait-for graph spans resources): "<resource>.<name>"."""
        return self.res + "." + client

    def short(self, client_id):
        return client_id[len(self.res) + 1:] if client_id.startswith(self.res + ".") else client_id

    def acquire(self, client, res=None, node=None, **kw):
        body = {"resource": res or self.res, "client_id": self.cid(client)}
        body.update(kw)
        return self.c.lock(node or self.followers[0], "acquire", body,
                           timeout=kw.get("wait_ms", 0) / 1000 + 10)

    def granted(self, client, res=None, node=None, **kw):
        st, j, r = self.acquire(client, res, node, **kw)
        self.assertEqual(st, 200, r)
        self.assertIs(j["granted"], True, r)
        self.assertIsInstance(j["token"], int, "tokens are JSON numbers: %r" % r)
        return j

    def release(self, client, token, res=None, node=None, expect=200):
        st, j, r = self.c.lock(node or self.followers[1], "release",
                               {"resource": res or self.res, "client_id": self.cid(client),
                                "token": token})
        self.assertEqual(st, expect, r)
        return j

    def state(self, res=None, node=None):
        r = self.c.request(node or self.leader, "GET", "/lock/" + (res or self.res))
        self.assertEqual(r.status, 200, r)
        j = r.json()
        for x in j["holders"] + j["waiters"]:
            x["client_id"] = self.short(x["client_id"])
        return j

    def holders(self, res=None):
        return {h["client_id"]: h for h in self.state(res)["holders"]}

    def wait_queued(self, client, res=None):
        self.c.wait_for("%s queued on %s" % (client, res or self.res),
                        lambda: client in [w["client_id"] for w in self.state(res)["waiters"]])

    def assertError(self, resp, status, code):
        st, j, r = resp
        self.assertEqual(st, status, r)
        self.assertEqual((j or {}).get("error", {}).get("code"), code, r)
        return j

    # ------------------------------------------------------------------ basic grants

    def test_request_bodies_mean_the_same_in_any_valid_json_shape(self):
        # the usual shape is decoded by a fast path, anything else by cJSON: same meaning
        res = self.res + r"-\u00e9\"q"  # as JSON text; decoded: -é"q
        shapes = [
            ('{"resource":"%s","client_id":"%s","ttl_ms":20000}', '{"resource":"%s",'
             '"client_id":"%s","token":%s}'),
            (' {\n "client_id" : "%s" ,\t"ttl_ms" : 2e4, "resource" : "%s" } ',
             '{"token":"%s","client_id":"%s","resource":"%s"}'),
        ]
        name = self.res + '-\u00e9"q'
        for i, (acq, rel) in enumerate(shapes):
            cid = self.cid("s%d" % i)
            body = (acq % (res, cid) if i == 0 else acq % (cid, res)).encode()
            st, j, r = self.c.lock(self.leader, "acquire", body)
            self.assertEqual(st, 200, r)
            self.assertEqual(j["resource"], name, r)
            self.assertEqual(j["client_id"], cid, r)
            left = j["lease_expires_at_ms"] - time.time() * 1000
            self.assertTrue(15000 < left <= 20500, r)
            body = (rel % (res, cid, j["token"]) if i == 0 else rel % (j["token"], cid, res))
            st, _, r = self.c.lock(self.leader, "release", body.encode())
            self.assertEqual(st, 200, r)
        for bad, why in [
                ('{"resource":"%s","client_id":"x","client_id":"y"}' % res, "given twice"),
                ('{"resource":"%s","client_id":"x",}' % res, "malformed"),
                ('{"resource":"%s","client_id":"x","ttl_ms":99}' % res, "ttl_ms"),
                ('{"resource":"%s","client_id":"x","ttl_ms":1.5}' % res, "ttl_ms"),
                ('{"resource":"","client_id":"x"}', "resource"),
                ('{"resource":"%s","client_id":"x","nope":1}' % res, "nope")]:
            self.assertError(self.c.lock(self.leader, "acquire", bad.encode()), 400, "bad_request")
            st, j, r = self.c.lock(self.leader, "acquire", bad.encode())
            self.assertIn(why, j["error"]["message"], r)

    def test_an_exclusive_grant_has_a_numeric_token_and_another_client_gets_lock_held(self):
        g = self.granted("a", ttl_ms=10000)
        self.assertEqual(g["mode"], "exclusive")
        self.assertGreater(g["token"], 0)
        self.assertGreater(g["lease_expires_at_ms"], time.time() * 1000)
        j = self.assertError(self.acquire("b"), 409, "lock_held")
        self.assertEqual([self.short(h["client_id"]) for h in j["holders"]], ["a"])
        self.assertEqual(j["holders"][0]["token"], g["token"])
        self.release("a", g["token"])
        self.assertEqual(self.state()["holders"], [])
        self.assertGreater(self.granted("b")["token"], g["token"])

    def test_a_waiter_is_granted_when_the_holder_releases(self):
        g = self.granted("a")
        w = Async(lambda: self.acquire("b", wait_ms=10000, node=self.followers[1]))
        self.wait_queued("b")
        self.assertFalse(w.done())
        self.release("a", g["token"])
        st, j, r = w.result()
        self.assertEqual(st, 200, r)
        self.assertGreater(j["token"], g["token"])
        self.assertEqual(list(self.holders()), ["b"])

    def test_a_waiter_gets_wait_timeout_and_leaves_the_queue(self):
        self.granted("a")
        t0 = time.monotonic()
        self.assertError(self.acquire("b", wait_ms=400), 409, "wait_timeout")
        self.assertGreaterEqual(time.monotonic() - t0, 0.35)
        self.assertEqual(self.state()["waiters"], [])

    def test_two_clients_crossing_on_two_resources_get_deadlock_and_the_other_proceeds(self):
        r1, r2 = self.res + "-1", self.res + "-2"
        ga = self.granted("a", res=r1)
        gb = self.granted("b", res=r2)
        wa = Async(lambda: self.acquire("a", res=r2, wait_ms=10000))
        self.wait_queued("a", r2)
        j = self.assertError(self.acquire("b", res=r1, wait_ms=10000), 409, "deadlock")
        self.assertEqual(sorted(self.short(x["client_id"]) for x in j["cycle"]), ["a", "b"], j)
        self.assertEqual(self.state(r1)["waiters"], [], "a refused request must change nothing")
        self.assertFalse(wa.done())
        self.release("b", gb["token"], res=r2)
        st, ja, r = wa.result()
        self.assertEqual(st, 200, r)
        self.release("a", ja["token"], res=r2)
        self.release("a", ga["token"], res=r1)

    # ------------------------------------------------------------------ shared / exclusive

    def test_shared_holders_coexist_and_a_queued_writer_blocks_later_readers(self):
        s1 = self.granted("s1", mode="shared")
        s2 = self.granted("s2", mode="shared")
        self.assertEqual(sorted(self.holders()), ["s1", "s2"])
        wx = Async(lambda: self.acquire("w", mode="exclusive", wait_ms=10000))
        self.wait_queued("w")
        self.assertError(self.acquire("s3", mode="shared"), 409, "lock_held")
        w3 = Async(lambda: self.acquire("s3", mode="shared", wait_ms=10000))
        self.wait_queued("s3")
        self.assertEqual([w["client_id"] for w in self.state()["waiters"]], ["w", "s3"])
        self.release("s1", s1["token"])
        self.assertFalse(wx.done())
        self.release("s2", s2["token"])
        st, jw, r = wx.result()
        self.assertEqual(st, 200, r)
        self.assertFalse(w3.done(), "a reader overtook the writer")
        self.assertEqual(list(self.holders()), ["w"])
        self.release("w", jw["token"])
        st, j3, r = w3.result()
        self.assertEqual((st, j3["mode"]), (200, "shared"), r)
        self.assertGreater(j3["token"], jw["token"])

    def test_a_sole_reader_upgrades_at_once_and_a_writer_downgrades_at_once(self):
        s = self.granted("a", mode="shared")
        x = self.granted("a", mode="exclusive")
        self.assertEqual(x["mode"], "exclusive")
        self.assertGreater(x["token"], s["token"], "an upgrade is a new grant")
        wb = Async(lambda: self.acquire("b", mode="shared", wait_ms=10000))
        self.wait_queued("b")
        d = self.granted("a", mode="shared")
        self.assertGreater(d["token"], x["token"], "a downgrade is a new grant")
        st, jb, r = wb.result()
        self.assertEqual((st, jb["mode"]), (200, "shared"), r)
        self.assertEqual(sorted(self.holders()), ["a", "b"])
        self.assertEqual({h["mode"] for h in self.holders().values()}, {"shared"})

    def test_an_upgrade_waits_for_the_other_readers_and_a_second_upgrade_is_a_deadlock(self):
        a = self.granted("a", mode="shared")
        b = self.granted("b", mode="shared")
        ua = Async(lambda: self.acquire("a", mode="exclusive", wait_ms=10000))
        c = self.c
        c.wait_for("a's upgrade queued",
                   lambda: any(w["client_id"] == "a" and w["upgrade"]
                               for w in self.state()["waiters"]))
        self.assertError(self.acquire("b", mode="exclusive", wait_ms=10000), 409, "deadlock")
        self.assertIn("a", self.holders(), "the upgrader keeps its shared hold while waiting")
        self.release("b", b["token"])
        st, j, r = ua.result()
        self.assertEqual((st, j["mode"]), (200, "exclusive"), r)
        self.assertGreater(j["token"], a["token"])

    # ------------------------------------------------------------------ idempotency, renew, check

    def test_a_retried_acquire_or_release_with_the_same_request_id_returns_the_first_answer(self):
        g1 = self.granted("a", request_id="r-1", ttl_ms=5000)
        g2 = self.granted("a", request_id="r-1", ttl_ms=5000, node=self.leader)
        self.assertEqual(g2["token"], g1["token"])
        self.assertIs(g2.get("replayed"), True, g2)
        again = self.granted("a", ttl_ms=5000)  # re-acquire by the holder: same token
        self.assertEqual(again["token"], g1["token"])
        self.assertGreaterEqual(again["lease_expires_at_ms"], g1["lease_expires_at_ms"])
        body = {"resource": self.res, "client_id": self.cid("a"), "token": g1["token"],
                "request_id": "x"}
        st, _, r = self.c.lock(self.leader, "release", body)
        self.assertEqual(st, 200, r)
        st, _, r = self.c.lock(self.followers[0], "release", body)
        self.assertEqual(st, 200, "a retried release must return the first answer: %r" % r)
        self.assertError(self.acquire("a", request_id="x"), 409, "conflict")

    def test_renew_extends_the_lease_and_strangers_or_stale_tokens_get_not_holder(self):
        g = self.granted("a", ttl_ms=2000)
        body = {"resource": self.res, "client_id": self.cid("a"), "token": g["token"],
                "ttl_ms": 60000}
        st, j, r = self.c.lock(self.followers[0], "renew", body)
        self.assertEqual(st, 200, r)
        self.assertIs(j["renewed"], True)
        self.assertGreater(j["lease_expires_at_ms"], g["lease_expires_at_ms"] + 50000)
        self.assertEqual(self.holders()["a"]["lease_expires_at_ms"], j["lease_expires_at_ms"])
        self.assertError(self.c.lock(self.leader, "renew", dict(body, client_id=self.cid("b"))), 409,
                         "not_holder")
        self.assertError(self.c.lock(self.leader, "renew", dict(body, token=g["token"] + 1000)),
                         409, "not_holder")
        self.release("b", g["token"], expect=409)
        self.release("a", g["token"])
        self.assertError(self.c.lock(self.leader, "renew", body), 409, "not_holder")
        self.release("a", g["token"], expect=409)

    def test_check_says_valid_while_held_and_invalid_after_release_on_every_node(self):
        g = self.granted("a")
        for n in self.c.names:
            r = self.c.request(n, "POST", "/lock/check", {"resource": self.res, "token": g["token"]})
            self.assertEqual(r.status, 200, r)
            self.assertIs(r.json()["valid"], True, (n, r))
        self.release("a", g["token"])
        for n in self.c.names:
            r = self.c.request(n, "POST", "/lock/check", {"resource": self.res, "token": g["token"]})
            self.assertIs(r.json()["valid"], False, (n, r))

    def test_watch_answers_valid_false_when_the_token_is_released(self):
        g = self.granted("a")
        path = "/lock/%s/watch?token=%d&wait_ms=20000" % (self.res, g["token"])
        w = Async(lambda: self.c.request(self.followers[0], "GET", path, timeout=25))
        time.sleep(0.3)
        self.assertFalse(w.done(), "the watch answered while the token was valid")
        t0 = time.monotonic()
        self.release("a", g["token"])
        r = w.result()
        self.assertEqual(r.status, 200, r)
        self.assertIs(r.json()["valid"], False)
        self.assertLess(time.monotonic() - t0, 5)
        r = self.c.request(self.leader, "GET", path)  # already invalid: answered at once
        self.assertIs(r.json()["valid"], False)
        r = self.c.request(self.leader, "GET", "/lock/%s/watch?token=%d&wait_ms=100"
                           % (self.res, self.granted("b")["token"]))
        self.assertIs(r.json()["valid"], True, "wait_ms ends with the current answer")

    def test_watch_never_calls_a_token_invalid_before_the_node_applied_its_grant(self):
        # a token above every grant this node applied may be granted a moment later (a follower
        # is behind the leader): the watch waits for it and, if wait_ms ends first, says 503
        g = self.granted("a")
        ahead = g["token"] + 1000
        for n in self.c.names:
            r = self.c.request(n, "GET", "/lock/%s/watch?token=%d&wait_ms=200" % (self.res, ahead))
            self.assertEqual(r.status, 503, (n, r))
        self.release("a", g["token"])

    def test_watch_answers_valid_false_when_the_lease_expires(self):
        g = self.granted("a", ttl_ms=600)
        path = "/lock/%s/watch?token=%d&wait_ms=20000" % (self.res, g["token"])
        t0 = time.monotonic()
        r = self.c.request(self.followers[1], "GET", path, timeout=25)
        self.assertIs(r.json()["valid"], False, r)
        self.assertLess(time.monotonic() - t0, 10)

    # ------------------------------------------------------------------ expiry

    def test_an_expired_holder_is_released_and_its_waiter_granted(self):
        g = self.granted("dead", ttl_ms=500)
        t0 = time.monotonic()
        st, j, r = self.acquire("b", wait_ms=15000)
        waited = time.monotonic() - t0
        self.assertEqual(st, 200, r)
        self.assertGreater(j["token"], g["token"])
        sys_note = "    [timing] expiry of a 500 ms lease granted the waiter after %.3f s\n" % waited
        os.write(2, sys_note.encode())
        self.assertGreaterEqual(waited, 0.3)
        body = {"resource": self.res, "client_id": self.cid("dead"), "token": g["token"],
                "ttl_ms": 5000}
        self.assertError(self.c.lock(self.leader, "renew", body), 409, "not_holder")
        self.assertGreaterEqual(self.c.metrics(self.leader).value("dsyncd_lock_expiries_total"), 1)

    # ------------------------------------------------------------------ reads

    def test_get_lock_and_get_one_resource_answer_the_same_from_followers_and_the_leader(self):
        g = self.granted("a", ttl_ms=60000)
        Async(lambda: self.acquire("b", wait_ms=3000))
        self.wait_queued("b")
        views = []
        for n in self.c.names:
            r = self.c.request(n, "GET", "/lock/" + self.res)
            self.assertEqual(r.status, 200, r)
            if n != self.leader:
                self.assertEqual(r.header("X-Dsync-Leader"), self.leader, r.headers)
            j = r.json()
            views.append((j["mode"], j["holders"], [self.short(w["client_id"]) for w in j["waiters"]]))
            r = self.c.request(n, "GET", "/lock")
            self.assertEqual(r.status, 200, r)
            mine = [x for x in r.json()["locks"] if x["resource"] == self.res]
            self.assertEqual([(self.short(x["client_id"]), x["token"]) for x in mine], [("a", g["token"])])
        self.assertEqual(views[0][0], "exclusive")
        self.assertEqual(views[0][2], ["b"])
        for v in views[1:]:
            self.assertEqual(v, views[0])
        r = self.c.request(self.followers[0], "GET", "/lock/nobody-holds-this")
        self.assertEqual(r.json()["holders"], [])
        self.assertIsNone(r.json()["mode"])

    # ------------------------------------------------------------------ abandoned waiters

    def abandon_waiter(self, node, client, res=None):
        """Queue `client` on node with a raw connection, then close it without reading."""
        body = json.dumps({"resource": res or self.res, "client_id": self.cid(client),
                           "wait_ms": 20000}).encode()
        conn = self.c.nodes[node].raw(ctx=self.c.ctx, host="127.0.0.1")
        conn.send(b"POST /lock/acquire HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.wait_queued(client, res)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()

    def assertNeverHolds(self, client, seconds, res=None):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.assertNotIn(client, self.holders(res), "an abandoned waiter was granted")
            time.sleep(0.05)

    def check_abandoned_waiter(self, node):
        g = self.granted("a")
        self.abandon_waiter(node, "gone")
        self.c.wait_for("the abandoned wait is removed through the log",
                        lambda: self.state()["waiters"] == [])
        self.release("a", g["token"])
        self.assertNeverHolds("gone", 1.0)
        self.assertEqual(self.state()["holders"], [])

    def test_a_waiter_that_disconnected_from_the_leader_is_never_granted(self):
        self.check_abandoned_waiter(self.leader)

    def test_a_waiter_that_disconnected_from_a_follower_is_never_granted(self):
        self.check_abandoned_waiter(self.followers[0])

    def test_a_release_racing_an_abandoned_wait_leaves_the_lock_to_the_next_real_waiter(self):
        g = self.granted("a")
        self.abandon_waiter(self.followers[1], "gone")
        real = Async(lambda: self.acquire("real", wait_ms=15000, node=self.followers[0]))
        self.wait_queued("real")
        self.release("a", g["token"])  # at once: the cancel may still be on its way
        st, j, r = real.result()
        self.assertEqual(st, 200, r)
        self.c.wait_for("only the real waiter holds",
                        lambda: list(self.holders()) == ["real"] and self.state()["waiters"] == [])

    def test_a_client_retrying_after_an_abandoned_wait_keeps_the_grant_it_is_told_about(self):
        g = self.granted("a", ttl_ms=30000, node=self.leader)
        self.abandon_waiter(self.leader, "b")
        self.release("a", g["token"], node=self.leader)  # may grant the abandoned wait first
        retry = self.granted("b", ttl_ms=30000, node=self.leader)  # b never saw an answer
        self.assertGreater(retry["lease_expires_at_ms"], time.time() * 1000 + 25000)
        time.sleep(2.5)  # housekeeping of abandoned waits runs every 200 ms
        self.assertEqual([(h["client_id"], h["token"]) for h in self.state()["holders"]],
                         [("b", retry["token"])],
                         "an acknowledged 30 s grant was released behind its holder's back")

    # ------------------------------------------------------------------ hostile input

    def assertBadRequest(self, node, path, body, method="POST"):
        r = self.c.request(node, method, path, body)
        self.assertEqual(r.status, 400, "%s %s %r -> %r" % (method, path, body, r))
        self.assertTrue((r.header("Content-Type") or "").startswith("application/json"), r)
        self.assertEqual(r.json()["error"]["code"], "bad_request", r)

    def test_hostile_bodies_get_400_json_on_every_lock_route_and_the_nodes_keep_serving(self):
        ok = {"acquire": {"resource": "h", "client_id": "c", "mode": "shared", "ttl_ms": 1000,
                          "wait_ms": 0, "request_id": "q"},
              "release": {"resource": "h", "client_id": "c", "token": 1, "request_id": "q"},
              "renew": {"resource": "h", "client_id": "c", "token": 1, "ttl_ms": 1000},
              "check": {"resource": "h", "token": 1}}
        raw = [b"", b"{", b"{\"resource\":", b"[]", b"null", b"42", b"\"str\"", b"{}x",
               b"{\"resource\":\"a\xff\xfe\",\"client_id\":\"c\",\"token\":1}",
               b"{\"resource\":\"\xc0\xaf\",\"client_id\":\"c\",\"token\":1}",
               b"\xef\xbb\xbf{}", b"{\"a\":1,\"a\":1}"]
        cases = 0
        for route, good in ok.items():
            path = "/lock/" + route
            bodies = list(raw)
            for field in good:
                if field in ("resource", "client_id", "token"):
                    bodies.append(json.dumps({k: v for k, v in good.items() if k != field}))
                for bad in (None, True, [], {}, -1, 1.5, "", "x" * 300, 2 ** 64, "\u0000"):
                    bodies.append(json.dumps(dict(good, **{field: bad})))
            bodies.append(json.dumps(dict(good, unknown=1)))
            bodies.append(json.dumps(dict(good, resource="r" * 257)))
            if "ttl_ms" in good:
                for ttl in (0, 99, 3600001, "soon"):
                    bodies.append(json.dumps(dict(good, ttl_ms=ttl)))
            if route == "acquire":
                for extra in ({"mode": "both"}, {"wait_ms": 300001}, {"client_id": "c" * 257},
                              {"request_id": "q" * 65}):
                    bodies.append(json.dumps(dict(good, **extra)))
            if "token" in good:
                for tok in (0, "0x10", "-1", "18446744073709551616"):
                    bodies.append(json.dumps(dict(good, token=tok)))
            for node in (self.leader, self.followers[0]):
                for b in bodies:
                    self.assertBadRequest(node, path, b if isinstance(b, bytes) else b.encode())
                    cases += 1
        for n in self.c.names:
            self.assertTrue(self.c.alive(n), self.c.logs())
            self.assertEqual(self.c.request(n, "GET", "/health").status, 200)
        g = self.granted("after-matrix")
        self.release("after-matrix", g["token"])
        os.write(2, ("    [matrix] %d hostile requests answered 400\n" % cases).encode())

    def test_watch_refuses_malformed_token_and_wait_ms_query_parameters(self):
        for q in ("", "?token=abc", "?token=0", "?token=1&wait_ms=x", "?token=1&wait_ms=300001",
                  "?token=1&wait_ms=-5", "?wait_ms=10", "?token=18446744073709551616",
                  "?token=-1", "?token=+1", "?token=%201"):
            self.assertBadRequest(self.followers[1], "/lock/h/watch" + q, None, method="GET")

    def test_names_with_an_embedded_nul_are_refused_rather_than_truncated(self):
        # "a\0b" would otherwise name the lock "a": two distinct names, one lock
        for route, body in (("acquire", {"resource": "nul\u0000x", "client_id": self.cid("c")}),
                            ("acquire", {"resource": self.res, "client_id": "c\u0000x"}),
                            ("check", {"resource": "nul\u0000x", "token": 1})):
            self.assertBadRequest(self.followers[0], "/lock/" + route, json.dumps(body).encode())
        self.assertEqual(self.state("nul")["holders"], [])

    def test_wrong_methods_and_unknown_lock_paths_get_json_errors(self):
        for method, path, status in (("DELETE", "/lock", 405), ("PUT", "/lock/acquire", 405),
                                     ("PUT", "/lock/x/watch", 405),
                                     ("POST", "/lock/x/y/z", 404)):
            r = self.c.request(self.followers[0], method, path, b"{}")
            self.assertEqual(r.status, status, r)
            self.assertIn("code", r.json()["error"])

    # ------------------------------------------------------------------ audit

    def test_acquire_and_release_write_audit_lines_with_their_parameters(self):
        g = self.granted("auditor", node=self.leader)
        self.release("auditor", g["token"], node=self.leader)

        def lines():
            try:
                with open(self.c.audit_path(self.leader)) as f:
                    recs = [json.loads(x) for x in f if x.strip()]
            except OSError:
                return None
            mine = [x for x in recs if (x.get("params") or {}).get("client_id") == self.cid("auditor")
                    and (x.get("params") or {}).get("resource") == self.res]
            paths = [x["path"] for x in mine]
            return mine if "/lock/acquire" in paths and "/lock/release" in paths else None
        recs = self.c.wait_for("audit lines for acquire and release", lines, timeout=10)
        for x in recs:
            self.assertEqual(x["status"], 200, x)
            self.assertIn("time", x)
            self.assertEqual(x["method"], "POST")
        rel = [x for x in recs if x["path"] == "/lock/release"][0]
        self.assertEqual(rel["params"]["token"], g["token"])


    def test_audit_parameters_escape_what_the_client_sent(self):
        # a quote or a newline in a resource name must neither break the JSON line nor add fields
        res = self.res + '",\n"forged":"x'
        g = self.granted("esc", res=res, node=self.leader)
        self.release("esc", g["token"], res=res, node=self.leader)

        def line():
            try:
                with open(self.c.audit_path(self.leader)) as f:
                    recs = [json.loads(x) for x in f if x.strip()]  # every line parses
            except OSError:
                return None
            mine = [x for x in recs if (x.get("params") or {}).get("resource") == res]
            return mine if len(mine) >= 2 else None
        recs = self.c.wait_for("audit lines with the escaped resource", line, timeout=10)
        for x in recs:
            self.assertNotIn("forged", x["params"], x)
            self.assertEqual(x["params"]["client_id"], self.cid("esc"))

class NoQuorum(lockutil.ClusterCase):
    def test_a_node_without_a_leader_answers_503_with_retry_after(self):
        c = self.cluster(3)
        leader = c.wait_leader(10)
        others = [n for n in c.names if n != leader]
        c.kill(others[0])
        c.kill(others[1])
        c.wait_for("the lone node gives up leadership",
                   lambda: (c.status(leader) or {}).get("state") != "leader", timeout=10)
        st, j, r = c.lock(leader, "acquire", {"resource": "q", "client_id": "a"})
        self.assertEqual(st, 503, r)
        self.assertIsNotNone(r.header("Retry-After"), r.headers)
        self.assertEqual(j["error"]["code"], "unavailable")
        r = c.request(leader, "GET", "/lock/q")
        self.assertEqual(r.status, 503, r)
        self.assertEqual(c.request(leader, "GET", "/ready").status, 503)


if __name__ == "__main__":
    unittest.main(verbosity=2)
