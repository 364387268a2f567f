"""Client authentication and authorisation (issue 10): bearer tokens and certificate CNs from the
tokens file, roles per route on every role (lock, queue, cache), scopes, identity-bound locks and
queue acks, forwarding keeps the caller's identity, SIGHUP reload, the failure throttle, audit."""
import json
import os
import signal
import time
import unittest

import authutil
import dsync
import lockutil
import queueutil
from authutil import bearer

OPEN, READER, WRITER, ADMIN = "open", "reader", "writer", "admin"
RANK = {OPEN: 0, READER: 1, WRITER: 2, ADMIN: 3}
IDENTITY_RANK = {"reader": 1, "alice": 2, "boss": 3}


NO_THROTTLE = {"max_failures": 1000000}  # the matrices present many bad tokens on purpose


def refused(r):
    return r.status in (401, 403)


class Matrix:
    """Checks a route x identity matrix: (method, path, body, needed role) for every identity."""

    def check(self, send, routes, tokens):
        for method, path, body, need in routes:
            r = send(method, path, body, {})
            if need == OPEN:
                self.assertEqual(r.status, 200, (path, r))
            else:
                self.assertEqual(r.status, 401, (method, path, r))
                self.assertIn("Bearer", r.header("WWW-Authenticate") or "", r)
            bad = send(method, path, body, bearer("not-a-token"))
            self.assertEqual(bad.status, 401 if need != OPEN else 200, (path, bad))
            for who, rank in IDENTITY_RANK.items():
                r = send(method, path, body, bearer(tokens[who]))
                if rank >= RANK[need]:
                    self.assertFalse(refused(r), (who, method, path, r))
                else:
                    self.assertEqual(r.status, 403, (who, method, path, r))
                    self.assertIn("'%s'" % need, r.json()["error"]["message"], r)


class LockAuthTest(lockutil.ClusterCase, Matrix):
    def setUp(self):
        super().setUp()
        self.tokens_file = os.path.join(self.tmp, "tokens-%s" % self._testMethodName)
        self.tokens = authutil.write_tokens(self.tokens_file, authutil.standard_specs())
        c = authutil.AuthCluster(self.tmp, self.cluster_certs, ["node1", "node2", "node3"],
                                 self.tokens_file, auth_conf=NO_THROTTLE)
        self.clusters.append(c)
        c.start_all()
        self.c = c
        self.leader = c.wait_leader()
        self.follower = next(n for n in c.names if n != self.leader)

    def send(self, node, who=None, ctx=None):
        def go(method, path, body, headers):
            h = dict(headers)
            if who:
                h.update(bearer(self.tokens[who]))
            return self.c.request(node, method, path, body, headers=h, ctx=ctx)
        return go

    def test_every_lock_route_needs_its_role_on_leader_and_follower(self):
        routes = [
            ("GET", "/health", None, OPEN), ("GET", "/ready", None, OPEN),
            ("GET", "/status", None, READER), ("GET", "/metrics", None, READER),
            ("GET", "/lock", None, READER), ("GET", "/lock/orders.x", None, READER),
            ("GET", "/lock/orders.x/watch?token=999999&wait_ms=0", None, READER),
            ("POST", "/lock/acquire", {"resource": "orders.x", "client_id": "m", "ttl_ms": 5000},
             WRITER),
            ("POST", "/lock/check", {"resource": "orders.x", "token": 1}, WRITER),
            ("POST", "/lock/renew", {"resource": "orders.x", "client_id": "m", "token": 99999},
             WRITER),
            ("POST", "/lock/release", {"resource": "orders.x", "client_id": "m", "token": 99999},
             WRITER),
            ("POST", "/raft/transfer", {"to": "nobody"}, ADMIN),
        ]
        for node in (self.follower, self.leader):
            self.check(self.send(node), routes, self.tokens)

    def test_a_scope_limits_a_writer_to_its_prefix(self):
        go = self.send(self.follower, "scoped")
        r = go("POST", "/lock/acquire", {"resource": "orders.1", "client_id": "s"}, {})
        self.assertEqual(r.status, 200, r)
        for method, path, body in [
                ("POST", "/lock/acquire", {"resource": "billing.1", "client_id": "s"}),
                ("POST", "/lock/release", {"resource": "billing.1", "client_id": "s", "token": 1}),
                ("POST", "/lock/check", {"resource": "billing.1", "token": 1}),
                ("GET", "/lock/billing.1", None),
                ("GET", "/lock/billing.1/watch?token=1&wait_ms=0", None)]:
            r = go(method, path, body, {})
            self.assertEqual(r.status, 403, (path, r))
            self.assertIn("orders.", r.json()["error"]["message"])
        self.assertEqual(self.send(self.leader, "alice")(
            "POST", "/lock/acquire", {"resource": "billing.2", "client_id": "a"}, {}).status, 200)
        listed = go("GET", "/lock", None, {}).json()["locks"]
        self.assertEqual([l["resource"] for l in listed], ["orders.1"], listed)

    def test_a_lock_is_bound_to_the_identity_that_took_it(self):
        alice, bob = self.send(self.follower, "alice"), self.send(self.follower, "bob")
        r = alice("POST", "/lock/acquire", {"resource": "orders.b", "client_id": "c1"}, {})
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json()["identity"], r.json()["client_id"]), ("alice", "c1"))
        token = r.json()["token"]
        held = {"resource": "orders.b", "client_id": "c1", "token": token}
        for path in ("/lock/release", "/lock/renew"):
            r = bob("POST", path, held, {})
            self.assertEqual(r.status, 403, (path, r))
        leader_bob = self.send(self.leader, "bob")
        r = leader_bob("GET", "/lock/orders.b/watch?token=%d&wait_ms=0" % token, None, {})
        self.assertEqual(r.status, 403, r)
        r = self.send(self.leader, "alice")("GET", "/lock/orders.b/watch?token=%d&wait_ms=0"
                                            % token, None, {})
        self.assertEqual((r.status, r.json()["valid"]), (200, True), r)
        r = bob("GET", "/lock/orders.b", None, {})
        self.assertEqual([(h["identity"], h["client_id"]) for h in r.json()["holders"]],
                         [("alice", "c1")], r)
        self.assertEqual(alice("POST", "/lock/renew", held, {}).status, 200)
        self.assertEqual(alice("POST", "/lock/release", held, {}).status, 200)

    def test_clients_cannot_claim_a_forwarded_identity(self):
        r = self.send(self.follower, "reader")("POST", "/lock/acquire?forwarded_for=boss",
                                               {"resource": "orders.f", "client_id": "x"}, {})
        self.assertEqual(r.status, 400, r)
        key = lockutil.mac_key(self.cluster_certs)
        path = "/lock/acquire?forwarded_for=boss"
        body = json.dumps({"resource": "orders.f", "client_id": "x"}).encode()
        signed = lockutil.sign(key, "POST", path, body)
        r = self.c.request(self.leader, "POST", path, body, headers=signed)  # no peer certificate
        self.assertEqual(r.status, 401, r)

    def test_a_certificate_cn_in_the_tokens_file_is_an_identity(self):
        r = self.c.request(self.leader, "POST", "/raft/transfer", {"to": "nobody"},
                           ctx=self.c.admin_ctx)
        self.assertFalse(refused(r), r)
        node_ctx = dsync.client_context(self.c.ca, os.path.join(self.cluster_certs, "node4.crt"),
                                        os.path.join(self.cluster_certs, "node4.key"))
        r = self.c.request(self.leader, "GET", "/status", ctx=node_ctx)
        self.assertEqual(r.status, 401, r)

    def test_accepted_and_refused_requests_are_audited_with_the_identity(self):
        self.send(self.follower, "alice")("POST", "/lock/acquire",
                                          {"resource": "orders.a", "client_id": "z"}, {})
        self.send(self.leader, "reader")("POST", "/lock/acquire",
                                         {"resource": "orders.a", "client_id": "z"}, {})
        self.send(self.leader)("GET", "/lock", None, {})

        def records():
            return authutil.audit_records(self.c.audit_path(self.leader))
        self.c.wait_for("audit records", lambda: len(records()) >= 3, timeout=5)
        got = {(r["identity"], r["path"], r["status"]) for r in records()}
        self.assertIn(("alice", "/lock/acquire", 200), got)
        self.assertIn(("reader", "/lock/acquire", 403), got)
        self.assertIn(("", "/lock", 401), got)


class SingleNodeAuthTest(dsync.TempDirCase):
    def auth_node(self, **auth):
        self.tokens_file = os.path.join(self.tmp, "tokens-" + self._testMethodName)
        self.tokens = authutil.write_tokens(self.tokens_file, authutil.standard_specs())
        a = {"tokens_file": self.tokens_file}
        a.update(auth)
        return self.start(auth=a)

    def test_sighup_reloads_tokens_and_keeps_connections(self):
        node = self.auth_node()
        conn = node.connection()
        self.assertEqual(dsync.do(conn, "GET", "/status", headers=bearer(self.tokens["alice"]))
                         .status, 200)
        specs = [s for s in authutil.standard_specs() if s[0] != "bob"]
        specs = [(n, r, sc, self.tokens.get(n)) for n, r, sc, _ in specs]
        authutil.write_tokens(self.tokens_file, specs)
        node.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while node.request("GET", "/status", headers=bearer(self.tokens["bob"])).status != 401:
            self.assertLess(time.monotonic(), deadline, "bob's token still works")
            time.sleep(0.05)
        # the connection opened before the reload still serves, with the new identities
        self.assertEqual(dsync.do(conn, "GET", "/status", headers=bearer(self.tokens["alice"]))
                         .status, 200)
        self.assertEqual(dsync.do(conn, "GET", "/status", headers=bearer(self.tokens["bob"]))
                         .status, 401)
        dsync.write_file(self.tokens_file, "alice reader\n")
        node.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "keeping the identities" not in node.stderr():
            self.assertLess(time.monotonic(), deadline, node.stderr())
            time.sleep(0.05)
        self.assertIn(":1: expected 4 fields", node.stderr())
        self.assertEqual(dsync.do(conn, "GET", "/status", headers=bearer(self.tokens["alice"]))
                         .status, 200)
        conn.close()

    def test_repeated_failures_from_one_address_get_429_in_bounded_memory(self):
        node = self.auth_node(max_failures=3, failure_decay_ms=60000, throttle_slots=8)
        ctx = node.context()
        send = lambda ip, tok, path="/status": authutil.request_from(node.port, ip, ctx, "GET",
                                                                     path, bearer(tok))
        for _ in range(3):
            self.assertEqual(send("127.0.0.2", "wrong").status, 401)
        r = send("127.0.0.2", self.tokens["alice"])
        self.assertEqual(r.status, 429, r)
        self.assertGreater(int(r.header("Retry-After")), 0)
        self.assertEqual(send("127.0.0.3", self.tokens["alice"]).status, 200)
        for i in range(1, 41):
            self.assertEqual(send("127.0.1.%d" % i, "wrong").status, 401)
        self.assertEqual(send("127.0.0.2", self.tokens["alice"]).status, 429)
        m = dsync.parse_metrics(send("127.0.0.3", self.tokens["alice"], "/metrics").body.decode())
        self.assertEqual(m.value("dsyncd_auth_throttle_addresses"), 8)
        self.assertGreaterEqual(m.value("dsyncd_client_auth_refused_total", code="429"), 2)

    def test_without_a_tokens_file_the_node_says_auth_is_off(self):
        node = self.start()
        self.assertIn("CLIENT AUTH IS OFF", node.stderr())
        self.assertEqual(node.request("GET", "/status").status, 200)

    def test_tokens_made_by_gen_tokens_work(self):
        d = os.path.join(self.tmp, "gen")
        tokens, out = authutil.gen_tokens(d)
        self.assertIn(tokens["admin"], out)
        node = self.start(auth={"tokens_file": os.path.join(d, "tokens")})
        self.assertEqual(node.request("GET", "/status", headers=bearer(tokens["reader"])).status,
                         200)
        r = node.request("POST", "/lock/acquire", b'{"resource":"r","client_id":"c"}',
                         headers=bearer(tokens["reader"]))
        self.assertEqual(r.status, 403, r)
        r = node.request("POST", "/lock/acquire", b'{"resource":"r","client_id":"c"}',
                         headers=bearer(tokens["writer"]))
        self.assertEqual(r.status, 200, r)
        _, again = authutil.gen_tokens(d)
        self.assertIn("kept", again)

    def test_cache_routes_need_their_roles_and_scope(self):
        node = self.auth_node_role("cache")
        go = lambda m, p, b, h: node.request(m, p, json.dumps(b).encode() if b else None, h)
        deadline = time.monotonic() + 10
        while go("PUT", "/cache/orders.k", {"value": 1},
                 bearer(self.tokens["alice"])).status != 200:
            self.assertLess(time.monotonic(), deadline, node.stderr()[-2000:])
            time.sleep(0.1)
        Matrix.check(self, go, [
            ("GET", "/cache/orders.k", None, READER), ("GET", "/cache/stats", None, READER),
            ("GET", "/cache/orders.k/state", None, READER),
            ("PUT", "/cache/orders.k", {"value": 2}, WRITER),
            ("DELETE", "/cache/orders.k", None, WRITER)], self.tokens)
        scoped = bearer(self.tokens["scoped"])
        self.assertEqual(go("PUT", "/cache/orders.s", {"value": 1}, scoped).status, 200)
        for m, p in (("GET", "/cache/billing.k"), ("PUT", "/cache/billing.k"),
                     ("DELETE", "/cache/billing.k"), ("GET", "/cache/billing.k/state")):
            self.assertEqual(go(m, p, {"value": 1} if m == "PUT" else None, scoped).status, 403)

    def auth_node_role(self, role, **over):
        self.tokens_file = os.path.join(self.tmp, "tokens-" + self._testMethodName)
        self.tokens = authutil.write_tokens(self.tokens_file, authutil.standard_specs())
        over.setdefault("node", {})["role"] = role
        return self.start(auth=dict(NO_THROTTLE, tokens_file=self.tokens_file), **over)


class QueueAuthTest(queueutil.QueueCase, Matrix):
    shards = 1

    def setUp(self):
        super().setUp()
        self.tokens_file = os.path.join(self.tmp, "tokens-" + self._testMethodName)
        self.tokens = authutil.write_tokens(self.tokens_file, authutil.standard_specs())
        o = self.queue_overrides()
        o["auth"] = dict(NO_THROTTLE, tokens_file=self.tokens_file)
        self.node = self.start(**o)
        self.wait_ready(self.node)

    def go(self, method, path, body, headers):
        h = {"Content-Type": "application/json"}
        h.update(headers)
        return self.node.request(method, path, json.dumps(body).encode() if body else None, h)

    def as_(self, who, method, path, body):
        return self.go(method, path, body, bearer(self.tokens[who]))

    def test_every_queue_route_needs_its_role_and_scope(self):
        self.check(self.go, [
            ("POST", "/queue/produce", {"queue": "orders.q", "body": 1}, WRITER),
            ("POST", "/queue/consume", {"queue": "orders.q", "group": "g", "consumer": "c"},
             WRITER),
            ("POST", "/queue/ack", {"queue": "orders.q", "group": "g", "ids": ["1-0"]}, WRITER),
            ("POST", "/queue/nack", {"queue": "orders.q", "group": "g", "ids": ["1-0"]}, WRITER),
            ("GET", "/queue/orders.q/stats", None, READER)], self.tokens)
        self.assertEqual(self.as_("scoped", "POST", "/queue/produce",
                                  {"queue": "orders.s", "body": 1}).status, 201)
        for method, path, body in [
                ("POST", "/queue/produce", {"queue": "billing.q", "body": 1}),
                ("POST", "/queue/consume", {"queue": "billing.q", "group": "g", "consumer": "c"}),
                ("POST", "/queue/ack", {"queue": "billing.q", "group": "g", "ids": ["1-0"]}),
                ("GET", "/queue/billing.q/stats", None)]:
            self.assertEqual(self.as_("scoped", method, path, body).status, 403, path)

    def consume_one(self, who, consumer):
        r = self.as_(who, "POST", "/queue/consume", {"queue": "orders.b", "group": "g",
                                                     "consumer": consumer, "max": 1})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.json()["messages"]), 1, r)
        return r.json()["messages"][0]["id"]

    def test_only_the_consuming_identity_or_an_admin_may_ack(self):
        r = self.as_("alice", "POST", "/queue/produce",
                     {"queue": "orders.b", "messages": [{"body": i} for i in range(3)]})
        self.assertEqual(r.status, 201, r)
        first = self.consume_one("alice", "w")
        for path in ("/queue/ack", "/queue/nack"):
            r = self.as_("bob", "POST", path, {"queue": "orders.b", "group": "g", "ids": [first]})
            self.assertEqual(r.status, 403, (path, r))
        r = self.as_("alice", "POST", "/queue/ack", {"queue": "orders.b", "group": "g",
                                                     "ids": [first]})
        self.assertEqual((r.status, r.json()["acked"]), (200, 1), r)
        second = self.consume_one("alice", "w")
        r = self.as_("boss", "POST", "/queue/ack", {"queue": "orders.b", "group": "g",
                                                    "ids": [second]})
        self.assertEqual((r.status, r.json()["acked"]), (200, 1), r)
        third = self.consume_one("bob", "w")  # same consumer name, another identity
        r = self.as_("alice", "POST", "/queue/ack", {"queue": "orders.b", "group": "g",
                                                     "ids": [third]})
        self.assertEqual(r.status, 403, r)
        r = self.as_("bob", "POST", "/queue/nack", {"queue": "orders.b", "group": "g",
                                                    "ids": [third]})
        self.assertEqual((r.status, r.json()["nacked"]), (200, 1), r)


if __name__ == "__main__":
    unittest.main(verbosity=2)
