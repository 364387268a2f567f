"""The queue role across real containers: produce, consume and ack through queue-node-1 over the three
Redis containers, with one Redis container stopped (producers go on, nothing acknowledged is lost)
and started again (what it held comes back).  Skipped while the build has no queue role (/status
says "role_available": false)."""
import time
import unittest

import composelib as cl

GROUP = "g"


class QueueOverRedisContainers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cl.Deployment("queue")
        cls.addClassCleanup(cls.d.down)
        cls.d.up("queue-node-1", build=True)
        cls.d.wait_healthy(("queue-node-1",) + cl.REDIS)
        cls.d.fetch_certs("queue-node-1")
        if not cl.role_available(cls.d.status("queue-node-1")):
            raise unittest.SkipTest("the queue role is not in this build yet "
                                    "(queue-node-1 /status: role_available false)")

    def call(self, method, path, body=None):
        return self.d.request("queue-node-1", method, path, body, timeout=30)

    def shards_up(self):
        st = self.d.status("queue-node-1") or {}
        return {s["addr"]: s["up"] for s in (st.get("queue") or {}).get("shards", [])}

    def produce(self, queue, lo, hi):
        """Produce bodies {"n": lo..hi-1}, one key each; retry 503s for a bounded time."""
        msgs = [{"body": {"n": n}, "key": "k%d" % n} for n in range(lo, hi)]
        r = cl.wait_for("messages %d..%d are accepted" % (lo, hi - 1),
                        lambda: (lambda r: r if r.status != 503 else None)(
                            self.call("POST", "/queue/produce", {"queue": queue, "messages": msgs})))
        self.assertEqual(r.status, 201, r)
        self.assertEqual(len(r.json()["ids"]), hi - lo, r)

    def drain(self, queue, idle_s=2.0, limit_s=45.0):
        """Consume and ack until nothing comes for idle_s; the set of bodies' n."""
        got, start, last = set(), time.monotonic(), time.monotonic()
        while time.monotonic() - last < idle_s and time.monotonic() - start < limit_s:
            r = self.call("POST", "/queue/consume", {"queue": queue, "group": GROUP,
                                                     "consumer": "c1", "max": 100, "wait_ms": 200})
            self.assertEqual(r.status, 200, r)
            msgs = r.json()["messages"]
            if msgs:
                last = time.monotonic()
                got |= {m["body"]["n"] for m in msgs}
                a = self.call("POST", "/queue/ack", {"queue": queue, "group": GROUP,
                                                     "ids": [m["id"] for m in msgs]})
                self.assertEqual(a.status, 200, a)
        return got

    def test_produce_consume_ack_with_one_redis_stopped_and_started(self):
        cl.wait_for("all three shards are up", lambda: list(self.shards_up().values()) == [True] * 3)
        r = self.call("POST", "/queue/consume", {"queue": "jobs", "group": GROUP, "consumer": "c1",
                                                 "max": 1, "wait_ms": 0})
        self.assertEqual(r.status, 200, r)  # the group exists before the first message
        self.produce("jobs", 0, 40)
        redis2 = self.d.cid("redis-2")
        cl.run(["docker", "stop", "-t", "5", redis2], 60)
        cl.note("stopped redis-2")
        cl.wait_for("queue-node-1 sees redis-2 down",
                    lambda: self.shards_up().get("redis-2:6379") is False)
        self.produce("jobs", 40, 80)  # producers go on while a shard is down
        first = self.drain("jobs")
        cl.note("consumed %d of 80 with redis-2 down", len(first))
        self.assertTrue(set(range(40, 80)) <= first, sorted(set(range(40, 80)) - first))
        cl.run(["docker", "start", redis2], 60)
        cl.note("started redis-2")
        cl.wait_for("queue-node-1 sees redis-2 up again",
                    lambda: self.shards_up().get("redis-2:6379") is True)
        second = self.drain("jobs")
        missing = set(range(80)) - first - second
        self.assertEqual(missing, set(), "produced (201) but never consumed")
        cl.note("consumed %d more after redis-2 came back", len(second - first))
        self.assertEqual(self.drain("jobs", idle_s=1.0), set(), "everything was acked")


if __name__ == "__main__":
    cl.main()
