"""The lock role across real containers: an acquire through a follower is granted by the leader;
`docker kill` of the leader elects a new one and the locks survive; a lock node cut off the network
with `docker network disconnect` grants nothing while the majority keeps granting, and heals when
reconnected; a fourth node joins through the Raft membership API (compose/scale.sh) and leaves."""
import time
import unittest

import composelib as cl

PORT = {"node1": 8001, "node2": 8002, "node3": 8003, "node4": 8004}
TTL_MS = 600000  # leases outlive the test: every lock seen must be one the test still holds


class LockNodesInContainers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cl.Deployment("lock")
        cls.addClassCleanup(cls.d.down)
        cls.d.up(*cl.LOCK_NODES, build=True)
        cls.d.wait_healthy(cl.LOCK_NODES)
        cls.d.fetch_certs()
        cls.cid = {n: cls.d.cid(n) for n in cl.LOCK_NODES}

    # ------------------------------------------------------------------ helpers

    def raft(self, node):
        return ((self.d.status(node) or {}).get("lock") or {}).get("raft") or {}

    def agreed_leader(self, nodes=cl.LOCK_NODES):
        """The leader every node of `nodes` names, if they agree on one of them."""
        seen = {self.raft(n).get("leader") for n in nodes}
        if len(seen) == 1:
            leader = seen.pop()
            return leader if leader in nodes else None
        return None

    def wait_leader(self, nodes=cl.LOCK_NODES):
        """Wait until the nodes agree on a leader among themselves (not a dead or cut-off one)."""
        t = time.monotonic()
        leader = cl.wait_for("%s agree on a leader among them" % ", ".join(nodes),
                             lambda: self.agreed_leader(nodes))
        cl.note("leader %s, agreed by %s after %.1f s", leader, " ".join(nodes),
                time.monotonic() - t)
        return leader

    def acquire(self, node, resource, client):
        return self.d.request(node, "POST", "/lock/acquire",
                              {"resource": resource, "client_id": client, "ttl_ms": TTL_MS},
                              timeout=15)

    def acquire_soon(self, node, resource, client):
        """Acquire through node, retrying 503s (no leader yet) for a bounded time."""
        def attempt():
            r = self.acquire(node, resource, client)
            if r.status == 503:
                return None
            return r
        return cl.wait_for("%s grants %s" % (node, resource), attempt)

    def holders(self, node, resource):
        r = self.d.request(node, "GET", "/lock/" + resource, timeout=15)
        self.assertEqual(r.status, 200, r)
        return {(h["client_id"], h["token"]) for h in r.json()["holders"]}

    # ------------------------------------------------------------------ tests

    def test_1_a_lock_acquired_through_a_follower_is_granted_by_the_leader(self):
        leader = self.wait_leader()
        follower = [n for n in cl.LOCK_NODES if n != leader][0]
        r = self.acquire_soon(follower, "orders", "worker-1")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json()["granted"], r)
        self.assertEqual(r.headers.get("x-dsync-leader"), leader, r.headers)
        other = [n for n in cl.LOCK_NODES if n not in (leader, follower)][0]
        self.assertEqual(self.holders(other, "orders"), {("worker-1", r.json()["token"])})
        r2 = self.acquire(other, "orders", "worker-2")
        self.assertEqual(r2.status, 409, r2)
        self.assertEqual(r2.json()["error"]["code"], "lock_held", r2)

    def test_2_killing_the_leader_elects_a_new_one_and_the_locks_survive(self):
        leader = self.wait_leader()
        r = self.acquire_soon(leader, "kill-test", "worker-k")
        self.assertEqual(r.status, 200, r)
        token = r.json()["token"]
        cl.run(["docker", "kill", self.cid[leader]], 60)
        cl.note("killed %s (the leader)", leader)
        rest = tuple(n for n in cl.LOCK_NODES if n != leader)
        new = self.wait_leader(rest)
        for n in rest:
            self.assertEqual(self.holders(n, "kill-test"), {("worker-k", token)})
        r = self.acquire(new, "kill-test", "worker-other")
        self.assertEqual(r.status, 409, r)
        r = self.acquire_soon(rest[0], "after-kill", "worker-k")
        self.assertEqual(r.status, 200, r)
        # the killed node comes back (restart: unless-stopped does not restart a killed container)
        cl.run(["docker", "start", self.cid[leader]], 60)
        self.d.wait_healthy([leader])
        cl.wait_for("%s follows %s again" % (leader, new),
                    lambda: self.raft(leader).get("leader") == new)
        self.assertEqual(self.holders(leader, "kill-test"), {("worker-k", token)})

    def test_3_a_cut_off_node_grants_nothing_the_majority_works_and_reconnect_heals(self):
        victim = self.wait_leader()  # cut off the leader: the hardest minority
        rest = tuple(n for n in cl.LOCK_NODES if n != victim)
        cl.run(["docker", "network", "disconnect", self.d.network(), self.cid[victim]], 60)
        cl.note("disconnected %s (the leader) from %s", victim, self.d.network())
        try:
            # the majority elects a leader among itself and keeps granting
            self.wait_leader(rest)
            r = self.acquire_soon(rest[0], "majority", "worker-m")
            self.assertEqual(r.status, 200, r)
            token = r.json()["token"]
            # the minority grants nothing, on a fresh resource or on one the majority holds
            for res in ("minority-only", "majority"):
                r = self.d.exec_curl(victim, PORT[victim], "POST", "/lock/acquire",
                                     {"resource": res, "client_id": "worker-x", "ttl_ms": TTL_MS},
                                     max_time=6)
                self.assertNotEqual(r.status, 200, "the cut-off %s granted %s: %r" % (victim, res, r))
                cl.note("cut-off %s answered %s for %s", victim, r.status or "nothing", res)
        finally:
            cl.run(["docker", "network", "connect", "--alias", victim, self.d.network(),
                    self.cid[victim]], 60)
            cl.note("reconnected %s", victim)
        cl.wait_for("%s follows the majority's leader" % victim,
                    lambda: self.agreed_leader() in rest)
        self.assertEqual(self.holders(victim, "majority"), {("worker-m", token)})
        r = self.d.request(victim, "GET", "/lock/minority-only", timeout=15)
        self.assertFalse(r.status == 200 and r.json().get("holders"), r)
        r = self.acquire_soon(victim, "after-heal", "worker-h")
        self.assertEqual(r.status, 200, r)
        self.assertIn(r.headers.get("x-dsync-leader"), rest, r.headers)

    def test_4_a_fourth_node_joins_through_the_membership_api_and_leaves(self):
        self.wait_leader()
        self.d.scale("lock", "add")
        leader = self.wait_leader(cl.LOCK_NODES + ("node4",))
        self.assertIn("node4", self.raft(leader)["voters"])
        self.assertEqual(self.holders("node4", "orders"), self.holders(leader, "orders"))
        r = self.acquire_soon("node4", "with-four", "worker-4")
        self.assertEqual(r.status, 200, r)
        self.d.scale("lock", "remove")
        leader = self.wait_leader()
        self.assertEqual(sorted(self.raft(leader)["voters"]), list(cl.LOCK_NODES))
        r = self.acquire_soon(leader, "after-four", "worker-4")
        self.assertEqual(r.status, 200, r)


if __name__ == "__main__":
    cl.main()
