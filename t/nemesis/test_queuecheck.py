"""queuecheck.py on hand-made histories: a clean run passes; a message answered 201 and never
delivered to one of its groups is lost; duplicates, second copies, unknown produces and dead
letters are counted, not violations; unacked deliveries that never come back are stranded; and
deliveries that no produce explains are flagged."""
import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import queuecheck  # noqa: E402

META = {"ev": "meta", "groups": {"qa": ["g1", "g2"], "qb": ["g1"]}}


def produce(msgs, q="qa", out="ok", ids=None, t=0):
    """msgs: [(payload, key)]; ids default to one per message."""
    if out == "ok" and ids is None:
        ids = ["t.0.%d-%d" % (t, i) for i in range(len(msgs))]
    return {"ev": "produce", "p": "p0", "q": q, "node": "node1", "t0": t, "t1": t + 1,
            "msgs": [{"m": m, "k": k} for m, k in msgs], "out": out, "ids": ids}


def deliver(g, msgs, q="qa", t=10):
    """msgs: [(payload, id)] or [(payload, id, key, body_queue)]."""
    out = []
    for x in msgs:
        m, mid = x[0], x[1]
        k = x[2] if len(x) > 2 else None
        bq = x[3] if len(x) > 3 else q.replace(".dlq", "")
        out.append({"m": m, "bq": bq, "k": k, "id": mid, "dc": 1})
    return {"ev": "deliver", "c": "c0", "g": g, "q": q, "node": "node2", "t0": t, "t1": t + 1,
            "msgs": out}


def dead_letter(og, m, oid, q="qa.dlq", k=None):
    return {"ev": "deliver", "c": "c0", "g": "dlq", "q": q, "node": "node2", "t0": 20, "t1": 21,
            "msgs": [{"m": m, "bq": q[:-4], "k": k, "id": "t.0.99-0", "dc": 1, "og": og,
                      "oid": oid}]}


def ack(g, ids, q="qa", out="ok", nack=False):
    return {"ev": "ack", "c": "c0", "g": g, "q": q, "ids": ids, "nack": nack, "out": out}


def both_groups(m, mid, k=None):
    """Delivered to g1 and g2 of qa, and acked by both."""
    return [deliver("g1", [(m, mid, k)]), ack("g1", [mid]),
            deliver("g2", [(m, mid, k)]), ack("g2", [mid])]


class Clean(unittest.TestCase):
    def test_every_message_delivered_to_every_group_and_acked_passes(self):
        h = [META, produce([("a", "k1"), ("b", None)]), produce([("c", "k2")], q="qb", t=5)]
        h += both_groups("a", "t.0.0-0", "k1") + both_groups("b", "t.0.0-1")
        h += [deliver("g1", [("c", "t.0.5-0", "k2")], q="qb"), ack("g1", ["t.0.5-0"], q="qb")]
        problems, c = queuecheck.check(h)
        self.assertEqual(problems, [])
        self.assertEqual((c["produced"], c["delivered"], c["duplicates"], c["lost"]), (3, 5, 0, 0))

    def test_a_delivery_logged_before_its_201_is_fine(self):
        h = [META] + both_groups("a", "t.0.0-0") + [produce([("a", None)])]
        self.assertEqual(queuecheck.check(h)[0], [])

    def test_the_drain_knows_when_nothing_is_outstanding(self):
        h = [META, produce([("a", None)])]
        self.assertEqual(queuecheck.State(h).outstanding(), [("a", "g1"), ("a", "g2")])
        h += [deliver("g1", [("a", "t.0.0-0")])]
        self.assertEqual(queuecheck.State(h).outstanding(), [("a", "g2"), ("a", "g1")])
        h += [ack("g1", ["t.0.0-0"])] + both_groups("a", "t.0.0-0")[2:]
        self.assertEqual(queuecheck.State(h).outstanding(), [])


class Lost(unittest.TestCase):
    def test_a_201_message_never_delivered_is_lost(self):
        h = [META, produce([("a", None)], q="qb", ids=["x.1.5-0"])]
        problems, c = queuecheck.check(h)
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("lost: a", problems[0])
        self.assertIn("x.1.5-0", problems[0])
        self.assertEqual(c["lost"], 1)

    def test_a_message_one_group_never_got_is_lost_for_that_group_only(self):
        h = [META, produce([("a", None)]), deliver("g1", [("a", "t.0.0-0")]),
             ack("g1", ["t.0.0-0"])]
        problems, _ = queuecheck.check(h)
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("never delivered to group g2", problems[0])

    def test_one_message_of_a_201_batch_missing_is_lost(self):
        h = [META, produce([("a", None), ("b", None)], q="qb"),
             deliver("g1", [("a", "t.0.0-0")], q="qb"), ack("g1", ["t.0.0-0"], q="qb")]
        problems, _ = queuecheck.check(h)
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("lost: b", problems[0])

    def test_an_unknown_or_refused_produce_never_delivered_is_not_lost(self):
        h = [META, produce([("a", None)], out="unknown"), produce([("b", None)], out="refused")]
        problems, c = queuecheck.check(h)
        self.assertEqual(problems, [])
        self.assertEqual((c["unknown"], c["refused"], c["produced"]), (1, 1, 0))

    def test_a_retry_answered_201_makes_an_unknown_message_acked(self):
        h = [META, produce([("a", None)], q="qb", out="unknown"),
             produce([("a", None)], q="qb", ids=["t.0.9-0"])]
        problems, c = queuecheck.check(h)
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("lost: a", problems[0])
        self.assertEqual((c["produced"], c["unknown"]), (1, 0))


class Counted(unittest.TestCase):
    def test_redeliveries_and_second_copies_are_duplicates_not_violations(self):
        h = [META, produce([("a", None)], q="qb", ids=["s1.0.1-0"]),
             deliver("g1", [("a", "s1.0.1-0")], q="qb"),            # died with it
             deliver("g1", [("a", "s1.0.1-0")], q="qb", t=12),      # redelivered
             ack("g1", ["s1.0.1-0"], q="qb"),
             deliver("g1", [("a", "s2.0.1-0")], q="qb", t=14),      # a copy on another shard
             ack("g1", ["s2.0.1-0"], q="qb")]
        problems, c = queuecheck.check(h)
        self.assertEqual(problems, [])
        self.assertEqual((c["delivered"], c["deliveries"], c["duplicates"], c["copies"]),
                         (1, 3, 2, 1))

    def test_an_unknown_produce_that_was_stored_is_counted(self):
        h = [META, produce([("a", None)], q="qb", out="unknown"),
             deliver("g1", [("a", "t.0.1-0")], q="qb"), ack("g1", ["t.0.1-0"], q="qb")]
        problems, c = queuecheck.check(h)
        self.assertEqual(problems, [])
        self.assertEqual(c["unknown_delivered"], 1)

    def test_a_dead_letter_counts_as_delivered_to_its_original_group(self):
        h = [META, produce([("a", "k")], ids=["t.0.0-0"]),
             deliver("g1", [("a", "t.0.0-0", "k")]), ack("g1", ["t.0.0-0"]),
             deliver("g2", [("a", "t.0.0-0", "k")]),                  # never acked by g2 ...
             dead_letter("g2", "a", "t.0.0-0", k="k")]                # ... so dead-lettered
        problems, c = queuecheck.check(h)
        self.assertEqual(problems, [])
        self.assertEqual(c["dlq"], 1)

    def test_a_dead_letter_alone_delivers_a_message(self):
        h = [META, produce([("a", None)], q="qb", ids=["t.0.0-0"]),
             dead_letter("g1", "a", "t.0.0-0", q="qb.dlq")]
        self.assertEqual(queuecheck.check(h)[0], [])


class Stranded(unittest.TestCase):
    def base(self):
        return [META, produce([("a", None)], q="qb", ids=["t.0.0-0"]),
                deliver("g1", [("a", "t.0.0-0")], q="qb")]

    def test_a_delivery_never_acked_nor_repeated_is_stranded(self):
        problems, c = queuecheck.check(self.base())
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("stranded: a", problems[0])
        self.assertEqual(c["stranded"], 1)

    def test_a_nack_does_not_settle_but_an_ack_whose_answer_was_lost_does(self):
        nacked = self.base() + [ack("g1", ["t.0.0-0"], q="qb", nack=True)]
        self.assertEqual(queuecheck.check(nacked)[1]["stranded"], 1)
        lost_answer = self.base() + [ack("g1", ["t.0.0-0"], q="qb", out="unknown")]
        self.assertEqual(queuecheck.check(lost_answer)[0], [])

    def test_a_refused_ack_or_an_ack_by_another_group_does_not_settle(self):
        h = self.base() + [ack("g1", ["t.0.0-0"], q="qb", out="refused"),
                           ack("g9", ["t.0.0-0"], q="qb")]
        self.assertEqual(queuecheck.check(h)[1]["stranded"], 1)


class Integrity(unittest.TestCase):
    def one(self, h):
        problems, _ = queuecheck.check([META] + h)
        self.assertTrue(problems, "expected a violation")
        self.assertTrue(all(p.startswith("integrity") for p in problems), problems)
        return problems

    def test_a_delivery_nobody_produced_is_flagged(self):
        self.one([deliver("g1", [("ghost", "t.0.0-0")], q="qb"), ack("g1", ["t.0.0-0"], q="qb")])

    def test_a_delivery_of_a_refused_produce_is_flagged(self):
        self.one([produce([("a", None)], q="qb", out="refused"),
                  deliver("g1", [("a", "t.0.0-0")], q="qb"), ack("g1", ["t.0.0-0"], q="qb")])

    def test_a_message_of_another_queue_or_key_is_flagged(self):
        p = self.one([produce([("a", "k1")], q="qb"),
                      deliver("g1", [("a", "t.0.0-0", "k1", "qa")], q="qb"),
                      deliver("g1", [("a", "t.0.0-0", "k2")], q="qb"),
                      ack("g1", ["t.0.0-0"], q="qb")])
        self.assertEqual(len(p), 2, p)

    def test_one_id_for_two_payloads_is_flagged(self):
        self.one([produce([("a", None)], q="qb", ids=["t.0.1-0"]),
                  produce([("b", None)], q="qb", ids=["t.0.1-0"]),
                  deliver("g1", [("a", "t.0.1-0"), ("b", "t.0.2-0")], q="qb"),
                  ack("g1", ["t.0.1-0", "t.0.2-0"], q="qb")])

    def test_a_201_without_an_id_per_message_is_flagged(self):
        self.one([produce([("a", None), ("b", None)], q="qb", ids=["t.0.1-0"]),
                  deliver("g1", [("a", "t.0.1-0"), ("b", "t.0.1-1")], q="qb"),
                  ack("g1", ["t.0.1-0", "t.0.1-1"], q="qb")])

    def test_a_dead_letter_of_a_group_that_does_not_read_the_queue_is_flagged(self):
        self.one([produce([("a", None)], q="qb", ids=["t.0.0-0"]),
                  dead_letter("g1", "a", "t.0.0-0", q="qb.dlq"),
                  dead_letter("g2", "a", "t.0.0-0", q="qb.dlq")])


class Processes(unittest.TestCase):
    def test_crashes_and_bad_exits_are_violations(self):
        h = [META, {"ev": "node_exit", "node": "node2", "pid": 7, "rc": -11, "how": "crash"},
             {"ev": "node_exit", "node": "node4", "rc": 1, "how": "sigterm"}]
        problems, _ = queuecheck.check(h)
        self.assertEqual(len(problems), 2, problems)
        self.assertIn("node2 (pid 7) exited by itself with -11", problems[0])
        self.assertIn("node4 did not exit 0 on SIGTERM", problems[1])


class CommandLine(unittest.TestCase):
    def run_main(self, events):
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            f.write("".join(json.dumps(e) + "\n" for e in events))
        try:
            with open(os.devnull, "w") as null:
                saved, sys.stdout = sys.stdout, null
                try:
                    return queuecheck.main(["queuecheck.py", f.name])
                finally:
                    sys.stdout = saved
        finally:
            os.unlink(f.name)

    def test_exit_status_is_0_when_clean_and_1_with_violations(self):
        clean = [META, produce([("a", None)], q="qb"), deliver("g1", [("a", "t.0.0-0")], q="qb"),
                 ack("g1", ["t.0.0-0"], q="qb")]
        self.assertEqual(self.run_main(clean), 0)
        self.assertEqual(self.run_main(clean[:2]), 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
