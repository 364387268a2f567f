"""The parts of the fault kit that need no namespaces: lockobs.py's checks can fail and pass, and the
fault schedule is deterministic in its seed, bounded, and covers every kind of fault."""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lockobs  # noqa: E402
import nemesis  # noqa: E402


def obs(t0, t1, *locks):
    return {"ev": "observe", "t0": t0, "t1": t1, "locks": [list(l) for l in locks]}


class Observations(unittest.TestCase):
    def test_a_clean_sequence_of_reads_passes(self):
        h = [obs(0, 10, ("r", "a", "exclusive", 1)),
             obs(20, 30, ("r", "b", "shared", 2), ("r", "c", "shared", 3)),
             obs(25, 40, ("r", "b", "shared", 2)),
             obs(50, 60, ("r", "d", "exclusive", 4), ("s", "a", "exclusive", 1))]
        self.assertEqual(lockobs.check(h), [])

    def test_two_holders_with_an_exclusive_one_are_flagged(self):
        p = lockobs.check([obs(0, 10, ("r", "a", "exclusive", 1), ("r", "b", "shared", 2))])
        self.assertEqual(len(p), 1, p)
        self.assertIn("at once", p[0])

    def test_a_read_older_than_a_finished_read_is_flagged(self):
        p = lockobs.check([obs(0, 10, ("r", "a", "exclusive", 5)),
                           obs(20, 30, ("r", "b", "exclusive", 4))])
        self.assertTrue(any("stale read" in x for x in p), p)

    def test_overlapping_reads_may_be_ordered_either_way(self):
        self.assertEqual(lockobs.check([obs(0, 30, ("r", "a", "exclusive", 5)),
                                        obs(20, 40, ("r", "b", "exclusive", 4))]), [])


class Schedule(unittest.TestCase):
    def test_the_same_seed_gives_the_same_schedule_and_another_seed_another(self):
        self.assertEqual(nemesis.make_schedule(7, 60, 5), nemesis.make_schedule(7, 60, 5))
        self.assertNotEqual(nemesis.make_schedule(7, 60, 5), nemesis.make_schedule(8, 60, 5))

    def test_epochs_stay_inside_the_run_and_do_not_overlap(self):
        for seed in range(1, 200):
            end = 0.0
            for e in nemesis.make_schedule(seed, 30, 3, max_epoch=4.0):
                self.assertGreaterEqual(e["at"], end)
                self.assertLessEqual(e["dur"], 4.0)
                self.assertTrue(e["net"] or e["proc"])
                end = e["at"] + e["dur"]
            self.assertLess(end, 30.0)

    def test_every_fault_kind_and_the_leader_are_chosen_on_three_and_five_nodes(self):
        for n in (3, 5):
            kinds, targets = set(), set()
            for seed in range(1, 100):
                for e in nemesis.make_schedule(seed, 30, n):
                    for f in (e["net"], e["proc"]):
                        if f:
                            kinds.add(f["kind"])
                            targets.add(f.get("node"))
                            for side in ("minority", "left", "right"):
                                self.assertTrue(set(f.get(side, [])) <= set(range(1, n + 1)))
            self.assertEqual(kinds, set(nemesis.NET_KINDS + nemesis.PROC_KINDS))
            self.assertTrue({"leader"} | set(range(1, n + 1)) <= targets, targets)

    def test_a_split_leaves_a_majority_and_a_bridge_has_one_middle(self):
        for seed in range(1, 300):
            for e in nemesis.make_schedule(seed, 30, 5, net_kinds=["split", "bridge"],
                                           proc_kinds=[]):
                f = e["net"]
                if f["kind"] == "split":
                    self.assertEqual(len(f["minority"]), 2)
                else:
                    self.assertEqual(len(f["left"]) + len(f["right"]), 4)
                    self.assertNotIn(f["middle"], f["left"] + f["right"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
