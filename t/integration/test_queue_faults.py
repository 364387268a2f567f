"""Queue role under faults, with real redis-server shards (AOF, appendfsync always): kill -9 of a
shard under load, restart of the queue node, restart of every Redis, and two queue nodes sharing
housekeeping with takeover when the owner dies."""
import os
import threading
import time
import unittest

import dsync
import lockutil
import queueutil


class QueueFaultTest(queueutil.QueueCase):

    def produce_for(self, node, queue, seconds, accepted, tag):
        """Produce single keyed messages for `seconds`; record bodies answered 201."""
        c = queueutil.Client(node, timeout=10)
        end, i = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            body = {"tag": tag, "n": i}
            try:
                r = c.call("POST", "/queue/produce", {"queue": "load", "key": "k%d" % (i % 16),
                                                     "body": body})
            except lockutil.NETWORK_ERRORS:
                c = queueutil.Client(node, timeout=10)
                continue
            if r.status == 201:
                accepted.append((tag, i))
            i += 1
        c.close()

    def test_a_shard_killed_under_load_loses_nothing_answered_201(self):
        node = self.start_queue()
        c = queueutil.Client(node)
        c.consume("load", "g", "setup")  # the group exists before the first message
        accepted = []
        producer = threading.Thread(target=self.produce_for, args=(node, "load", 3.0, accepted, "a"))
        producer.start()
        time.sleep(0.8)
        victim = self.redis[0]
        victim.kill9()
        time.sleep(1.0)
        n_during = len(accepted)
        victim.start()  # same port and directory: the AOF is replayed
        producer.join(20)
        self.assertGreater(n_during, 0)
        got = self.drain(c, "load", "g")
        seen = {(m["body"]["tag"], m["body"]["n"]) for m in got}
        missing = [x for x in accepted if x not in seen]
        self.assertEqual(missing, [], "answered 201 but never consumed (%d of %d)"
                         % (len(missing), len(accepted)))
        self.assertGreater(len(accepted), 100)
        c.close()

    def test_a_restarted_queue_node_loses_nothing(self):
        port = dsync.free_port()
        node = self.start_queue(port=port)
        c = queueutil.Client(node)
        c.consume("jobs", "g", "setup")
        bodies = [{"n": i} for i in range(200)]
        for i in range(0, 200, 20):
            self.assertEqual(c.produce("jobs", [{"body": b} for b in bodies[i:i + 20]]).status, 201)
        taken = c.consume("jobs", "g", "crashes", max=50, visibility_ms=1000)
        self.assertEqual(len(taken), 50)
        c.close()
        os.kill(node.pid, 9)
        node.wait(5)
        node = self.start_queue(port=port)
        c = queueutil.Client(node)
        got = self.drain(c, "jobs", "g", idle_s=2.0)
        self.assertEqual({m["body"]["n"] for m in got}, set(range(200)))
        c.close()

    def test_restarting_every_redis_loses_nothing_acknowledged(self):
        node = self.start_queue()
        c = queueutil.Client(node)
        c.consume("durable", "g", "setup")
        for i in range(0, 300, 30):
            r = c.produce("durable", [{"body": {"n": n}, "key": "k%d" % n} for n in range(i, i + 30)])
            self.assertEqual(r.status, 201)
        for r in self.redis:
            r.kill9()
        for r in self.redis:
            r.start()
        self.wait_ready(node)
        deadline = time.monotonic() + 10
        while node.metrics().value("dsyncd_queue_shards_up") < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        got = self.drain(c, "durable", "g")
        self.assertEqual(sorted(m["body"]["n"] for m in got), list(range(300)))
        c.close()


class TwoQueueNodesTest(queueutil.QueueCase):
    """Two queue nodes gossiping (mutual TLS + HMAC); each queue is housekept by exactly one."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.node_certs = lockutil.make_certs(os.path.join(cls.tmp, "nodecerts"), ())

    def start_member(self, name, ports):
        d = os.path.join(self.tmp, name + "-" + str(ports[name]))
        os.makedirs(d, exist_ok=True)
        certs = self.node_certs
        o = self.queue_overrides(node_id=name)
        o["node"].update({"listen": "127.0.0.1:%d" % ports[name],
                          "advertise_url": "https://127.0.0.1:%d" % ports[name],
                          "data_dir": os.path.join(d, "data")})
        o["tls"] = {"cert": os.path.join(certs, name + ".crt"),
                    "key": os.path.join(certs, name + ".key"), "ca": os.path.join(certs, "ca.crt")}
        o["cluster"] = {"seeds": ",".join("https://127.0.0.1:%d" % p for p in ports.values()),
                        "mac_key_file": os.path.join(certs, "mac.key")}
        o["http"] = {"shutdown_grace_ms": 1000}
        path = dsync.write_file(os.path.join(d, "node.ini"), dsync.ini_text(o))
        node = dsync.Node(["--config", path], ports[name], os.path.join(certs, "ca.crt"))
        self.wait_ready(node)
        return node

    def status(self, node):
        return node.request("GET", "/status").json()["queue"]

    def wait_for(self, what, fn, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = fn()
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError("timed out waiting for " + what)

    def test_each_queue_is_housekept_by_one_node_and_the_other_takes_over(self):
        ports = {"node1": dsync.free_port(), "node2": dsync.free_port()}
        nodes = {n: self.start_member(n, ports) for n in ports}
        self.wait_for("both members", lambda: all(
            len(self.status(n)["members"]) == 2 for n in nodes.values()))
        c = queueutil.Client(nodes["node1"])
        queues = ["q%d" % i for i in range(12)]
        for q in queues:
            self.assertEqual(c.produce(q, [{"body": q}]).status, 201)

        def owners():
            hk = {n: set(self.status(node)["housekeeping"]) for n, node in nodes.items()}
            if set(queues) <= hk["node1"] | hk["node2"]:
                return hk
            return None

        hk = self.wait_for("every queue housekept", owners)
        self.assertEqual(hk["node1"] & hk["node2"] & set(queues), set(), hk)
        self.assertTrue(hk["node1"] & set(queues) and hk["node2"] & set(queues), hk)
        # a message of a queue node2 housekeeps is taken and never acked; node2 dies
        q = sorted(hk["node2"] & set(queues))[0]
        m = c.consume(q, "g", "dies", visibility_ms=300)
        self.assertEqual(len(m), 1)
        os.kill(nodes["node2"].pid, 9)
        nodes["node2"].wait(5)
        self.wait_for("node1 housekeeping " + q, lambda: q in self.status(nodes["node1"])["housekeeping"])
        again = self.wait_for("redelivery by node1",
                              lambda: c.consume(q, "g", "survivor", wait_ms=500))
        self.assertEqual(again[0]["id"], m[0]["id"])
        self.assertEqual(again[0]["delivery_count"], 2)
        c.close()


if __name__ == "__main__":
    unittest.main()
