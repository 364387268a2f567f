"""Queue role API against three real redis-server shards: exactly-once delivery per group with
per-key order, dedup, nack, redelivery after the visibility timeout, dead letters, stats, metrics,
and the hostile-input matrix of every queue route."""
import json
import threading
import time
import unittest

import dsync
import queueutil


class QueueApiTest(queueutil.QueueCase):
    strict = False

    def test_every_message_is_consumed_once_per_group_in_key_order(self):
        node = self.start_queue()
        groups, producers, per_producer = ["billing", "audit"], 4, 150
        setup = queueutil.Client(node)
        for g in groups:  # the groups exist before the first message
            self.assertEqual(setup.consume("orders", g, "setup", wait_ms=0), [])
        errors = []

        def produce(t):
            c = queueutil.Client(node)
            try:
                for start in range(0, per_producer, 10):
                    batch = [{"key": "p%d-k%d" % (t, i % 5), "body": {"p": t, "seq": i}}
                             for i in range(start, start + 10)]
                    r = c.produce("orders", batch)
                    if r.status != 201:
                        errors.append(r)
            finally:
                c.close()

        total = producers * per_producer
        received = {g: [] for g in groups}
        lock = threading.Lock()

        def consume(g, name):
            c = queueutil.Client(node)
            mine = []
            deadline = time.monotonic() + 40
            try:
                while time.monotonic() < deadline:
                    with lock:
                        if len(received[g]) >= total:
                            break
                    msgs = c.consume("orders", g, name, max=25, wait_ms=300)
                    if msgs:
                        self.assertEqual(c.ack("orders", g, [m["id"] for m in msgs]), len(msgs))
                        mine.extend(msgs)
                        with lock:
                            received[g].extend(msgs)
            finally:
                c.close()
            # per key, one consumer sees the messages of a key in the order they were produced
            last = {}
            for m in mine:
                k = m["key"]
                self.assertGreater(m["body"]["seq"], last.get(k, -1), "order broken for %s" % k)
                last[k] = m["body"]["seq"]

        threads = [threading.Thread(target=produce, args=(t,)) for t in range(producers)]
        threads += [threading.Thread(target=consume, args=(g, "c%d" % i))
                    for g in groups for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        for g in groups:
            bodies = [(m["body"]["p"], m["body"]["seq"]) for m in received[g]]
            self.assertEqual(len(bodies), total, "group %s" % g)
            self.assertEqual(len(set(bodies)), total, "duplicates in group %s" % g)
            self.assertTrue(all(m["delivery_count"] == 1 for m in received[g]))
        stats = setup.stats("orders")
        self.assertTrue(stats["complete"])
        for g in groups:
            self.assertEqual(stats["groups"][g]["pending"], 0, stats)
            self.assertEqual(stats["groups"][g]["lag"], 0, stats)
        # every stream used lives on some shard; acked entries get trimmed by housekeeping
        deadline = time.monotonic() + 5
        while setup.stats("orders")["length"] > 2 * 4 * 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertLessEqual(setup.stats("orders")["length"], 2 * 4 * 3)
        m = node.metrics()
        self.assertEqual(m.value("dsyncd_queue_produced_total"), total)
        self.assertEqual(m.value("dsyncd_queue_consumed_total"), 2 * total)
        self.assertEqual(m.value("dsyncd_queue_acked_total"), 2 * total)
        self.assertGreater(m.value("dsyncd_queue_trimmed_total"), 0)
        self.assertEqual(m.value("dsyncd_queue_shards_up"), 3)
        self.assertGreater(m.value("dsyncd_queue_produce_seconds_count"), 0)
        setup.close()

    def test_a_group_sees_messages_another_group_acked_before_its_first_read_of_a_stream(self):
        # both groups consume before the produce (the stream does not exist yet), g1 reads and
        # acks everything, and housekeeping runs for longer than the trim grace: g2 must still
        # get every message (the groups are registered and created on new streams before any
        # trim).  A regression: streams made after a group's first consume lacked the group, so
        # entries acked by the other group were trimmed under it.
        node = self.start_queue(partitions=1, housekeeping_ms=100)
        c = queueutil.Client(node)
        try:
            self.assertEqual(c.consume("late", "g1", "setup"), [])
            self.assertEqual(c.consume("late", "g2", "setup"), [])
            ids = [c.produce("late", [{"body": {"n": n}}]).json()["ids"][0] for n in range(3)]
            got1 = c.consume("late", "g1", "a", max=10)
            self.assertEqual(c.ack("late", "g1", [m["id"] for m in got1]), 3)
        finally:
            c.close()
        time.sleep(5.6)  # past the 5 s trim grace, many housekeeping passes
        c = queueutil.Client(node)
        try:
            got2 = c.consume("late", "g2", "b", max=10)
        finally:
            c.close()
        self.assertEqual(sorted(m["id"] for m in got2), sorted(ids))

    def test_a_long_poll_is_woken_by_a_message_produced_through_another_node(self):
        a = self.start_queue(node_id="q1")
        b = self.start_queue(node_id="q2")
        ca, cb = queueutil.Client(a), queueutil.Client(b)
        got = {}
        try:
            self.assertEqual(ca.consume("xnode", "g", "w"), [])  # the group exists

            def wait():
                t0 = time.monotonic()
                got["msgs"] = ca.consume("xnode", "g", "w", max=1, wait_ms=8000)
                got["s"] = time.monotonic() - t0
            t = threading.Thread(target=wait)
            t.start()
            time.sleep(0.5)  # the consume is waiting, and a's XREAD is blocked on its streams
            cb.produce("xnode", [{"body": {"n": 1}}])
            t.join(10)
        finally:
            ca.close()
            cb.close()
        self.assertEqual([m["body"] for m in got.get("msgs", [])], [{"n": 1}])
        self.assertLess(got["s"], 8, "the long poll was not woken by the message")
        # a's blocking XREAD (its own connection per shard) saw the message, not only its poll
        self.assertGreaterEqual(a.metrics().value("dsyncd_queue_watch_wakeups_total"), 1)

    def test_dedup_id_suppresses_a_second_message(self):
        node = self.start_queue()
        c = queueutil.Client(node)
        first = c.call("POST", "/queue/produce", {"queue": "pay", "body": {"n": 1}, "dedup_id": "tx-1"})
        again = c.call("POST", "/queue/produce", {"queue": "pay", "body": {"n": 1}, "dedup_id": "tx-1"})
        self.assertEqual((first.status, again.status), (201, 201))
        self.assertEqual(first.json()["id"], again.json()["id"])
        self.assertEqual(again.json()["duplicates"], 1)
        msgs = c.consume("pay", "g", "w", max=10)
        self.assertEqual([m["id"] for m in msgs], [first.json()["id"]])
        self.assertEqual(node.metrics().value("dsyncd_queue_duplicates_total"), 1)
        c.close()

    def test_nack_makes_a_message_available_at_once_or_after_its_delay(self):
        node = self.start_queue()
        c = queueutil.Client(node)
        self.assertEqual(c.produce("work", [{"body": "job"}]).status, 201)
        m = c.consume("work", "g", "a")[0]
        r = c.call("POST", "/queue/nack", {"queue": "work", "group": "g", "ids": [m["id"]]})
        self.assertEqual((r.status, r.json()["nacked"]), (200, 1))
        again = c.consume("work", "g", "b")
        self.assertEqual([(x["id"], x["delivery_count"]) for x in again], [(m["id"], 2)])
        r = c.call("POST", "/queue/nack", {"queue": "work", "group": "g", "ids": [m["id"]],
                                           "delay_ms": 800})
        self.assertEqual(r.status, 200)
        t0 = time.monotonic()
        self.assertEqual(c.consume("work", "g", "b"), [])
        later = c.consume("work", "g", "b", wait_ms=3000)
        self.assertGreaterEqual(time.monotonic() - t0, 0.6)
        self.assertEqual([(x["id"], x["delivery_count"]) for x in later], [(m["id"], 3)])
        self.assertEqual(c.ack("work", "g", [m["id"]]), 1)
        self.assertEqual(c.ack("work", "g", [m["id"]]), 0)  # acks are idempotent
        c.close()

    def test_a_dead_consumers_messages_are_redelivered_then_dead_lettered(self):
        node = self.start_queue(max_deliveries=3)
        c = queueutil.Client(node)
        self.assertEqual(c.produce("jobs", [{"body": {"n": i}, "key": "k%d" % i}
                                            for i in range(5)]).status, 201)
        taken = c.consume("jobs", "g", "dies", max=10, visibility_ms=300)
        self.assertEqual(len(taken), 5)
        # the consumer dies: after its visibility timeout another consumer gets the messages
        again = []
        deadline = time.monotonic() + 10
        while len(again) < 5 and time.monotonic() < deadline:
            again += c.consume("jobs", "g", "other", max=10, wait_ms=500, visibility_ms=300)
        self.assertEqual(sorted(m["id"] for m in again), sorted(m["id"] for m in taken))
        self.assertTrue(all(m["delivery_count"] == 2 for m in again), again)
        third = []
        while len(third) < 5 and time.monotonic() < deadline:
            third += c.consume("jobs", "g", "other", max=10, wait_ms=500, visibility_ms=300)
        self.assertTrue(all(m["delivery_count"] == 3 for m in third), third)
        # the third delivery times out too: max_deliveries = 3, so they move to jobs.dlq
        dead = []
        deadline = time.monotonic() + 10
        while len(dead) < 5 and time.monotonic() < deadline:
            dead += c.consume("jobs.dlq", "ops", "inspector", max=10, wait_ms=500)
        self.assertEqual(sorted(m["original_id"] for m in dead), sorted(m["id"] for m in taken))
        for m in dead:
            self.assertEqual(m["original_delivery_count"], 3)
            self.assertEqual(m["original_group"], "g")
            self.assertIn("n", m["body"])
        self.assertEqual(c.consume("jobs", "g", "other", max=10, wait_ms=600), [])
        stats = c.stats("jobs")
        self.assertEqual(stats["dlq_depth"], 5)
        self.assertEqual(stats["groups"]["g"]["pending"], 0)
        m = node.metrics()
        self.assertEqual(m.value("dsyncd_queue_redelivered_total"), 10)
        self.assertEqual(m.value("dsyncd_queue_dead_lettered_total"), 5)
        c.close()

    def test_hostile_input_gets_a_clear_4xx_on_every_route(self):
        node = self.start_queue(http={"max_body": 65536})
        c = queueutil.Client(node)
        good = c.produce("h", [{"body": 1}]).json()["ids"][0]
        cases = [
            ("/queue/produce", b"{not json"),
            ("/queue/produce", b"[1,2]"),
            ("/queue/produce", b'{"queue":"h","body":"\xff\xfe"}'),
            ("/queue/produce", {"queue": "h"}),
            ("/queue/produce", {"queue": "h", "body": 1, "extra": 2}),
            ("/queue/produce", {"queue": "bad name", "body": 1}),
            ("/queue/produce", {"queue": "x" * 200, "body": 1}),
            ("/queue/produce", {"queue": 5, "body": 1}),
            ("/queue/produce", {"queue": "h", "messages": []}),
            ("/queue/produce", {"queue": "h", "messages": {}}),
            ("/queue/produce", {"queue": "h", "messages": [1]}),
            ("/queue/produce", {"queue": "h", "messages": [{"key": "a"}]}),
            ("/queue/produce", {"queue": "h", "messages": [{"body": 1, "x": 1}]}),
            ("/queue/produce", {"queue": "h", "messages": [{"body": 1}] * 1001}),
            ("/queue/produce", {"queue": "h", "messages": [{"body": 1}], "body": 2}),
            ("/queue/produce", {"queue": "h", "body": 1, "key": ""}),
            ("/queue/produce", {"queue": "h", "body": 1, "key": "k" * 300}),
            ("/queue/produce", {"queue": "h", "body": 1, "dedup_id": 7}),
            ("/queue/consume", {"queue": "h", "group": "g"}),
            ("/queue/consume", {"queue": "h", "group": "g", "consumer": "c", "max": 0}),
            ("/queue/consume", {"queue": "h", "group": "g", "consumer": "c", "max": 1001}),
            ("/queue/consume", {"queue": "h", "group": "g", "consumer": "c", "wait_ms": 30001}),
            ("/queue/consume", {"queue": "h", "group": "g", "consumer": "c", "wait_ms": -1}),
            ("/queue/consume", {"queue": "h", "group": "g", "consumer": "c", "visibility_ms": 5}),
            ("/queue/consume", {"queue": "h", "group": "g{x}", "consumer": "c"}),
            ("/queue/consume", {"queue": "h", "group": "g", "consumer": "a@b"}),
            ("/queue/consume", {"queue": "h", "group": "g", "consumer": "c", "max": "many"}),
            ("/queue/ack", {"queue": "h", "group": "g"}),
            ("/queue/ack", {"queue": "h", "group": "g", "ids": []}),
            ("/queue/ack", {"queue": "h", "group": "g", "ids": [1]}),
            ("/queue/ack", {"queue": "h", "group": "g", "ids": ["nope"]}),
            ("/queue/ack", {"queue": "h", "group": "g", "ids": ["00000000.0.1-0"]}),
            ("/queue/ack", {"queue": "h", "group": "g", "ids": [good[:9] + "99.1-0"]}),
            ("/queue/ack", {"queue": "h", "group": "g", "ids": [good + "x"]}),
            ("/queue/ack", {"queue": "h", "group": "g", "ids": [good] * 1001}),
            ("/queue/ack", {"queue": "h", "group": "g", "ids": [good], "delay_ms": 1}),
            ("/queue/nack", {"queue": "h", "group": "g", "ids": [good], "delay_ms": -5}),
            ("/queue/nack", {"queue": "h", "group": "g", "ids": [good], "delay_ms": 10 ** 12}),
            ("/queue/nack", {"queue": "h", "ids": [good]}),
        ]
        for path, body in cases:
            r = c.call("POST", path, body)
            self.assertJsonError(r, 400, "bad_request")
        raw = node.raw()
        body = json.dumps({"queue": "h", "body": "x" * 100000}).encode()
        raw.send_until_answered(b"POST /queue/produce HTTP/1.1\r\nHost: a\r\nContent-Length: %d"
                                b"\r\nContent-Type: application/json\r\n\r\n" % len(body) + body)
        self.assertJsonError(raw.read_response(), 413, "payload_too_large")
        raw.close()
        self.assertJsonError(c.call("GET", "/queue/produce"), 405, "method_not_allowed")
        self.assertJsonError(c.call("GET", "/queue/bad%20name/stats"), 400, "bad_request")
        self.assertJsonError(c.call("POST", "/queue/h/stats", {}), 405, "method_not_allowed")
        # nothing reached Redis but the one good message, and the node still serves
        self.assertEqual(c.stats("h")["length"], 1)
        self.assertEqual(c.produce("h", [{"body": 2}]).status, 201)
        c.close()


if __name__ == "__main__":
    unittest.main()
