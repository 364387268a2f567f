"""cachecheck.py (the checker of t/nemesis/run-cache) on hand-made histories: a clean one passes;
stale reads, new-old inversions, two holders at once, writes out of order, phantom values, writes
applied twice and bad final reads are caught; 503s, unacknowledged writes and reports whose
windows overlap are not taken for violations.  No root, no processes."""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cachecheck  # noqa: E402

NODES = ["node1", "node2", "node3"]


def meta(keys=("k",)):
    return {"ev": "meta", "keys": list(keys), "node_names": NODES,
            "write_policy": "write-through"}


def write(v, t0, t1, version=None, out="ok", node="node1", k="k", status=200, phase=None):
    e = {"ev": "op", "f": "write", "c": v.split("-")[0], "node": node, "k": k, "v": v,
         "t0": t0, "t1": t1, "status": status, "out": out, "version": version,
         "state": "M" if out == "ok" else None}
    if phase:
        e["phase"] = phase
    return e


def read(v, t0, t1, version=None, out="ok", node="node2", k="k", status=200, phase=None):
    e = {"ev": "op", "f": "read", "c": "r1", "node": node, "k": k, "t0": t0, "t1": t1,
         "status": status, "out": out, "v": v, "version": version,
         "state": "S" if out == "ok" else None}
    if phase:
        e["phase"] = phase
    return e


def state(node, t0, t1, st, version, valid=True, home=None, directory=None, k="k"):
    h = {"node": home or "node3"}
    if directory is not None:
        h["directory"] = directory
    return {"ev": "state", "node": node, "k": k, "t0": t0, "t1": t1,
            "line": {"state": st, "version": version, "lease_valid": valid, "present": True},
            "home": h}


def directory(owner=None, sharers=(), ready=True):
    return {"entry": True, "ready": ready, "state": "EM" if owner else "S" if sharers else "I",
            "owner": owner, "sharers": list(sharers), "version": 0, "busy": False}


def final(k="k", v="f-1", version=100, t=10000):
    """A final write of k and one read of it from every node that returns it."""
    return [write(v, t, t + 10, version, k=k, phase="final")] + [
        read(v, t + 20, t + 30, version, node=n, k=k, phase="final") for n in NODES]


def problems(*events):
    p, _ = cachecheck.check([meta()] + list(events) + final())
    return p


class CleanHistories(unittest.TestCase):
    def test_a_clean_history_with_overlaps_misses_and_unavailable_answers_passes(self):
        p, summary = cachecheck.check([
            meta(),
            read(None, 0, 5, out="miss", status=404),                 # before any write
            write("a-1", 10, 20, 3),
            write("b-1", 15, 40, 4),                                  # overlaps a-1
            read("a-1", 21, 30, 3),                                   # b-1 still running
            read("b-1", 25, 35, 4),                                   # b-1 may be done
            read(None, 36, 45, out="unknown", status=503),             # partition: 503
            write("a-2", 41, 60, None, out="unknown", status=503),    # unknown outcome
            read("b-1", 42, 50, 4),                                   # a-2 not applied yet
            read("a-2", 55, 70, 7),                                   # ...now it is
            state("node1", 71, 75, "S", 7),
            state("node3", 72, 74, "S", 7, home="node3",
                  directory=directory(sharers=["node1", "node3"])),
            state("node2", 76, 80, "S", 4, valid=False),              # expired: not a copy
            write("c-1", 80, 90, 9),
            state("node2", 91, 95, "M", 9, home="node2", directory=directory(owner="node2")),
        ] + final())
        self.assertEqual(p, [])
        self.assertIn("writes=5 (acknowledged 4, unknown 1)", summary)  # the final write too
        self.assertIn("valid copies 3", summary)

    def test_an_unacknowledged_write_never_counts_as_completed(self):
        self.assertEqual(problems(write("a-1", 0, 10, 1),
                                  write("b-1", 20, 30, None, out="unknown", status=None),
                                  read("a-1", 40, 50, 1)), [])

    def test_reports_whose_windows_overlap_may_be_ordered_either_way(self):
        self.assertEqual(problems(write("a-1", 0, 10, 1), write("b-1", 20, 65, 2),
                                  state("node1", 40, 60, "M", 2), state("node2", 50, 70, "S", 1),
                                  read("b-1", 45, 55, 2), read("a-1", 50, 65, 1)), [])

    def test_the_home_in_warm_up_or_with_an_expired_copy_is_not_judged(self):
        self.assertEqual(problems(
            state("node3", 0, 5, "M", 0, home="node3", directory=directory(ready=False)),
            state("node3", 10, 15, "M", 0, valid=False, home="node3",
                  directory=directory(owner="node1"))), [])


class StaleReads(unittest.TestCase):
    def test_a_read_that_began_after_a_completed_write_returning_an_older_value_is_flagged(self):
        p = problems(write("a-1", 0, 10, 1), write("b-1", 20, 30, 2), read("a-1", 31, 40, 1))
        self.assertEqual(len(p), 1, p)
        self.assertTrue(p[0].startswith("stale read:"), p)
        self.assertIn("'b-1'", p[0])

    def test_a_miss_after_a_completed_write_is_a_stale_read(self):
        p = problems(write("a-1", 0, 10, 1), read(None, 20, 30, out="miss", status=404))
        self.assertTrue(any(x.startswith("stale read:") for x in p), p)

    def test_a_read_older_than_a_read_that_ended_before_it_began_is_flagged(self):
        p = problems(write("a-1", 0, 10, 1), write("b-1", 5, 100, 2),
                     read("b-1", 20, 30, 2, node="node1"), read("a-1", 40, 50, 1))
        self.assertEqual(len(p), 1, p)
        self.assertTrue(p[0].startswith("stale read (new-old inversion):"), p)

    def test_a_valid_copy_older_than_a_completed_write_is_flagged(self):
        p = problems(write("a-1", 0, 10, 1), write("b-1", 20, 30, 2),
                     state("node1", 40, 45, "S", 1))
        self.assertEqual(len(p), 1, p)
        self.assertIn("node1's valid S copy (version 1", p[0])


class TwoHolders(unittest.TestCase):
    def test_a_second_writer_left_with_an_older_version_is_flagged(self):
        p = problems(write("a-1", 0, 10, 3), write("b-1", 12, 18, None, out="unknown", status=503),
                     state("node1", 20, 30, "M", 5), state("node2", 40, 50, "E", 3))
        self.assertEqual(len(p), 1, p)
        self.assertIn("node2's valid E copy (version 3", p[0])
        self.assertIn("node1's valid M copy (version 5", p[0])

    def test_the_home_holding_m_while_its_directory_names_another_owner_is_flagged(self):
        p = problems(write("a-1", 0, 10, 1),
                     state("node3", 20, 30, "M", 1, home="node3",
                           directory=directory(owner="node1")))
        self.assertEqual(len(p), 1, p)
        self.assertTrue(p[0].startswith("two holders:"), p)

    def test_the_home_holding_s_while_its_directory_has_an_owner_is_flagged(self):
        p = problems(write("a-1", 0, 10, 1),
                     state("node3", 20, 30, "S", 1, home="node3",
                           directory=directory(owner="node1")))
        self.assertEqual(len(p), 1, p)
        self.assertIn("does not list", p[0])

    def test_a_directory_with_an_owner_and_sharers_at_once_is_flagged(self):
        p = problems(state("node1", 0, 10, "I", 0, directory=dict(
            directory(owner="node1"), sharers=["node2"])))
        self.assertEqual(len(p), 1, p)
        self.assertIn("owner node1 and sharers ['node2'] at once", p[0])


class Writes(unittest.TestCase):
    def test_a_write_that_began_after_another_ended_must_get_a_higher_version(self):
        p = problems(write("a-1", 0, 10, 5), write("b-1", 20, 30, 4))
        self.assertEqual(len(p), 1, p)
        self.assertTrue(p[0].startswith("write order:"), p)

    def test_two_values_with_one_version_are_flagged(self):
        p = problems(write("a-1", 0, 10, 5), write("b-1", 5, 30, 5))
        self.assertTrue(any(x.startswith("version reused:") for x in p), p)

    def test_a_value_no_write_sent_is_flagged(self):
        p = problems(write("a-1", 0, 10, 1), read("zz-9", 20, 30, 2))
        self.assertTrue(any(x.startswith("phantom value:") for x in p), p)

    def test_a_value_seen_with_two_versions_is_flagged(self):
        p = problems(write("a-1", 0, 10, 3), read("a-1", 5, 8, 2))
        self.assertTrue(any(x.startswith("write applied twice:") for x in p), p)

    def test_a_read_of_a_write_that_began_after_it_ended_is_flagged(self):
        p = problems(read("a-1", 0, 10, 1), write("a-1", 20, 30, 1))
        self.assertTrue(any(x.startswith("read from the future:") for x in p), p)

    def test_an_unacknowledged_write_seen_below_an_earlier_completed_one_is_flagged(self):
        p = problems(write("a-1", 0, 10, 5),
                     write("b-1", 20, 30, None, out="unknown", status=503),
                     read("b-1", 25, 40, 4))
        self.assertTrue(any(x.startswith("write order:") for x in p), p)

    def test_an_answer_other_than_200_404_503_is_flagged(self):
        p = problems(write("a-1", 0, 10, None, out="error", status=500))
        self.assertTrue(any(x.startswith("unexpected answer:") for x in p), p)


class FinalReads(unittest.TestCase):
    def test_a_node_that_never_answers_after_the_heal_is_flagged(self):
        events = [meta(), write("f-1", 0, 10, 1, phase="final"),
                  read("f-1", 20, 30, 1, node="node1", phase="final"),
                  read("f-1", 20, 30, 1, node="node2", phase="final"),
                  read(None, 20, 30, out="unknown", status=503, node="node3", phase="final")]
        p, _ = cachecheck.check(events)
        self.assertEqual(len(p), 1, p)
        self.assertIn("node3 did not answer a read of k", p[0])

    def test_a_final_read_returning_an_earlier_write_is_flagged(self):
        events = [meta(), write("a-1", 0, 5, 1), write("f-1", 10, 20, 2, phase="final")] + [
            read("f-1", 30, 40, 2, node=n, phase="final") for n in NODES[:2]] + [
            read("a-1", 30, 40, 1, node="node3", phase="final")]
        p, _ = cachecheck.check(events)
        self.assertTrue(any(x.startswith("final:") and "node3" in x for x in p), p)

    def test_an_unacknowledged_write_applied_after_the_final_one_is_accepted(self):
        events = [meta(), write("f-1", 0, 50, None, out="unknown", status=503, phase="final"),
                  write("f-2", 60, 70, 2, phase="final")] + [
            read("f-1", 80, 90, 3, node=n, phase="final") for n in NODES]
        p, _ = cachecheck.check(events)
        self.assertEqual(p, [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
