"""The fault kit's network commands do what they say, measured with real packets between the
namespaces: full mesh, isolate, split, bridge, one-way loss, latency, heal, teardown and the sweep
of a dead runner's namespaces.  Needs root (exit 77 otherwise).

Each node namespace runs a small agent: TCP :9000 answers with the JSON count of UDP datagrams
received on :9001 per source address, TCP :9002 sends 16 KiB.  A probe run inside a node's
namespace reports which nodes it can connect to and sends UDP datagrams to each.
"""
import json
import os
import socket
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import netns  # noqa: E402

AGENT = r"""
import json, socket, sys, threading
ip = sys.argv[1]
counts = {}
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((ip, 9001))
def udp():
    while True:
        d, a = u.recvfrom(100)
        counts[a[0]] = counts.get(a[0], 0) + 1
threading.Thread(target=udp, daemon=True).start()
def serve(port, payload):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port)); s.listen(64)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(payload())
        except OSError:
            pass
        c.close()
threading.Thread(target=serve, args=(9002, lambda: b"x" * 16384), daemon=True).start()
print("ready", flush=True)
serve(9000, lambda: json.dumps(counts).encode())
"""

PROBE = r"""
import json, socket, sys
src, targets, n = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
out = {}
for t in targets:
    c = socket.socket(); c.settimeout(0.6)
    try:
        c.bind((src, 0)); c.connect((t, 9000)); c.recv(1000); out[t] = True
    except OSError:
        out[t] = False
    c.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((src, 0))
    for _ in range(n):
        try:
            u.sendto(b"p", (t, 9001))
        except OSError:  # EPERM: dropped by an OUTPUT rule of this namespace
            pass
    u.close()
print(json.dumps(out))
"""


class Network(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.topo = netns.Topology(3)
        cls.topo.create()
        cls.agents = []
        try:
            for i in cls.topo.nodes:
                p = subprocess.Popen(cls.topo.exec_argv(i, [sys.executable, "-c", AGENT,
                                                            cls.topo.ip(i)]),
                                     stdout=subprocess.PIPE, text=True)
                cls.agents.append(p)
                if p.stdout.readline().strip() != "ready":
                    raise RuntimeError("agent in node %d did not start" % i)
            cls.topo.enter_hub()
        except BaseException:
            cls.topo.teardown()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.topo.teardown()
        for p in cls.agents:
            p.wait(5)

    def tearDown(self):
        self.topo.heal()

    def reach(self, a, n=0):
        """{b: can a connect to b} for every other node b; sends n UDP datagrams to each."""
        others = [self.topo.ip(b) for b in self.topo.nodes if b != a]
        r = subprocess.run(self.topo.exec_argv(a, [sys.executable, "-c", PROBE, self.topo.ip(a),
                                                   ",".join(others), str(n)]),
                           stdout=subprocess.PIPE, text=True, timeout=30, check=True)
        got = json.loads(r.stdout)
        return {b: got[self.topo.ip(b)] for b in self.topo.nodes if b != a}

    def links(self):
        """The set of (a, b) pairs where a can connect to b."""
        return {(a, b) for a in self.topo.nodes for b, ok in self.reach(a).items() if ok}

    def received(self, at, src):
        with socket.create_connection((self.topo.ip(at), 9000), timeout=2) as c:
            data = b""
            while True:
                d = c.recv(4096)
                if not d:
                    break
                data += d
        return json.loads(data).get(self.topo.ip(src), 0)

    def everyone(self):
        return {(a, b) for a in self.topo.nodes for b in self.topo.nodes if a != b}

    def test_every_node_reaches_every_node_and_the_hub_reaches_them_all(self):
        self.assertEqual(self.links(), self.everyone())
        for i in self.topo.nodes:
            socket.create_connection((self.topo.ip(i), 9000), timeout=2).close()

    def test_an_isolated_node_reaches_no_node_but_clients_still_reach_it(self):
        self.topo.isolate(2)
        self.assertEqual(self.links(), {(1, 3), (3, 1)})
        socket.create_connection((self.topo.ip(2), 9000), timeout=2).close()

    def test_a_split_cuts_between_the_sides_only(self):
        self.topo.partition([[1], [2, 3]])
        self.assertEqual(self.links(), {(2, 3), (3, 2)})

    def test_a_bridge_node_sees_both_sides_that_do_not_see_each_other(self):
        self.topo.bridge([1], 2, [3])
        self.assertEqual(self.links(), self.everyone() - {(1, 3), (3, 1)})

    def test_one_way_loss_drops_one_direction_only(self):
        before = (self.received(2, 1), self.received(1, 2))
        self.topo.lose([(1, 2)], 1.0)
        self.reach(1, n=40)
        self.reach(2, n=40)
        time.sleep(0.2)
        self.assertEqual(self.received(2, 1) - before[0], 0, "1 -> 2 should be cut")
        self.assertEqual(self.received(1, 2) - before[1], 40, "2 -> 1 should pass")

    def test_partial_loss_drops_some_packets(self):
        before = self.received(3, 1)
        self.topo.lose([(1, 3)], 0.5)
        self.reach(1, n=60)
        time.sleep(0.2)
        got = self.received(3, 1) - before
        self.assertTrue(8 <= got <= 52, "%d of 60 arrived with 50%% loss" % got)

    def fetch_seconds(self, i):
        t = time.monotonic()
        with socket.create_connection((self.topo.ip(i), 9002), timeout=30) as c:
            n = 0
            while n < 16384:
                d = c.recv(65536)
                if not d:
                    break
                n += len(d)
        self.assertEqual(n, 16384)
        return time.monotonic() - t

    def test_latency_slows_what_a_node_sends_and_heal_removes_it(self):
        fast = self.fetch_seconds(3)
        what = self.topo.latency(3, 150)
        slow = self.fetch_seconds(3)
        self.assertGreater(slow, 0.14, "%s: 16 KiB took %.3f s" % (what, slow))
        self.topo.heal()
        self.assertLess(self.fetch_seconds(3), max(0.1, fast * 5))

    def test_heal_restores_the_full_mesh(self):
        self.topo.partition([[1], [2], [3]])
        self.assertEqual(self.links(), set())
        self.topo.heal()
        self.assertEqual(self.links(), self.everyone())


class Lifecycle(unittest.TestCase):
    def test_teardown_removes_every_namespace_and_link_even_with_processes_inside(self):
        topo = netns.Topology(2, run="%dt" % os.getpid())
        topo.create()
        p = subprocess.Popen(topo.exec_argv(1, ["sleep", "60"]))
        topo.enter_hub()
        topo.teardown()
        self.assertEqual(topo.leftovers(), [])
        self.assertIsNotNone(p.wait(5), "the process inside was not killed")
        topo.teardown()  # idempotent

    def test_a_failure_while_creating_leaves_nothing(self):
        topo = netns.Topology(2, run="%du" % os.getpid())
        topo._add_node = lambda i: (_ for _ in ()).throw(netns.CommandError("boom"))
        with self.assertRaises(netns.CommandError):
            topo.create()
        self.assertEqual(topo.leftovers(), [])

    def test_the_sweep_removes_namespaces_of_dead_runners_only(self):
        dead = 4194000
        while netns._pid_alive(dead):
            dead -= 1
        stale = "%s-%d-1" % (netns.PREFIX, dead)
        mine = "%s-%dv-7" % (netns.PREFIX, os.getpid())
        for ns in (stale, mine):
            netns.sh(["ip", "netns", "add", ns])
        try:
            self.assertIn(stale, netns.sweep_stale())
            listed = netns.sh(["ip", "netns", "list"]).stdout
            self.assertNotIn(stale, listed)
            self.assertIn(mine, listed)
        finally:
            for ns in (stale, mine):
                netns.sh(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    try:
        netns.preflight()
    except netns.Unsupported as e:
        print("SKIP: %s" % e)
        sys.exit(77)
    unittest.main(verbosity=2)
