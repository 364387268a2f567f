"""Integration: a bounded, seeded safety run of the lock role under faults.

16 client threads contend on 3 resources (mostly exclusive, some shared) of a 3-node cluster
through random nodes, with ~2 s leases and renewals, while a nemesis kill -9s, SIGSTOPs (then
SIGCONTs) and restarts random nodes, the leader included; an observer polls GET /lock.  Every
request goes into a history that lockcheck.py checks (see its docstring for what it proves).

  DSYNC_SAFETY_SECONDS  length of the faulty phase (default 40)
  DSYNC_SEED            the seed (default: random, printed); replay with the same seed
On failure the seed and the history file (kept) are printed; `python3 lockcheck.py FILE` rechecks.
"""
import json
import os
import random
import sys
import tempfile
import threading
import time
import unittest

import dsync
import lockcheck
import lockutil

SECONDS = float(os.environ.get("DSYNC_SAFETY_SECONDS", "40"))
SEED = int(os.environ.get("DSYNC_SEED", "0")) or random.SystemRandom().randrange(1, 2 ** 31)
CLIENTS = 16
RESOURCES = ["res-a", "res-b", "res-c"]
TTL_MS = 2000
RAFT = {"election_min_ms": 300, "election_max_ms": 600, "heartbeat_ms": 60}
SKEW_MS = 100
# a dead holder may be seen ttl + one election timeout + the skew bound after its last renewal;
# every leader change extends inherited leases by election_max + skew once more (EXTEND_ALL), and
# the observer's read takes time: allow a few failovers and a second of slack
BOUND_MS = 4 * (RAFT["election_max_ms"] + SKEW_MS) + 1000


def now_ms():
    return int(time.time() * 1000)


class Client(threading.Thread):
    def __init__(self, run, idx):
        super().__init__(daemon=True)
        self.run_, self.name_ = run, "client-%02d" % idx
        self.rng = random.Random(run.seed * 1000 + idx)
        self.events = []

    def log(self, **e):
        self.events.append(e)

    def post(self, op, body, timeout):
        """(status or None, json or None) through a random node; None = no answer."""
        node = self.rng.choice(self.run_.c.names)
        try:
            st, j, _ = self.run_.c.lock(node, op, body, timeout=timeout)
            return st, j
        except lockutil.NETWORK_ERRORS:
            return None, None

    def run(self):
        while not self.run_.stop.is_set():
            self.one_round()
        self.final()

    def one_round(self):
        rng = self.rng
        r = rng.choice(RESOURCES)
        m = "shared" if rng.random() < 0.25 else "exclusive"
        wait = rng.choice([0, 200, 1000, 2500])
        body = {"resource": r, "client_id": self.name_, "mode": m, "ttl_ms": TTL_MS,
                "wait_ms": wait}
        t0 = now_ms()
        st, j = self.post("acquire", body, wait / 1000 + 3)
        e = dict(ev="acquire", c=self.name_, r=r, m=m, ttl=TTL_MS, wait=wait, t0=t0, t1=now_ms())
        if st == 200:
            self.log(out="granted", tok=int(j["token"]), exp=int(j["lease_expires_at_ms"]),
                     refreshed=bool(j.get("refreshed")), **e)
            self.hold(r, int(j["token"]), int(j["lease_expires_at_ms"]))
        elif st in (400, 409):
            self.log(out="refused", code=(j or {}).get("error", {}).get("code"), **e)
            time.sleep(rng.uniform(0.0, 0.1))
        else:  # 503 / no answer: the request may or may not have been applied
            self.log(out="unknown", code=st, **e)
            time.sleep(rng.uniform(0.05, 0.3))

    def hold(self, r, tok, exp):
        """Use the lock for a while, renewing; then release it (unless the lease was lost)."""
        rng = self.rng
        until = time.monotonic() + rng.uniform(0.1, 2.5)
        while time.monotonic() < until and not self.run_.stop.is_set():
            time.sleep(min(0.5, max(0.0, until - time.monotonic())))
            if time.monotonic() >= until:
                break
            t0 = now_ms()
            if t0 > exp - 200:
                return  # the lease has (nearly) run out: stop using the lock
            st, j = self.post("renew", {"resource": r, "client_id": self.name_, "token": tok,
                                        "ttl_ms": TTL_MS}, 2)
            e = dict(ev="renew", c=self.name_, r=r, tok=tok, ttl=TTL_MS, t0=t0, t1=now_ms())
            if st == 200:
                exp = int(j["lease_expires_at_ms"])
                self.log(out="ok", exp=exp, **e)
            elif st == 409:
                self.log(out="lost", **e)
                return
            else:
                self.log(out="unknown", **e)
        if rng.random() < 0.05:
            return  # a client that "dies" holding the lock: its lease must expire
        rid = "%s-%d" % (self.name_, tok)
        for _ in range(4):
            t0 = now_ms()
            st, j = self.post("release", {"resource": r, "client_id": self.name_, "token": tok,
                                          "request_id": rid}, 2)
            e = dict(ev="release", c=self.name_, r=r, tok=tok, t0=t0, t1=now_ms())
            if st == 200:
                self.log(out="ok", **e)
                return
            if st == 409:
                self.log(out="not_holder", **e)
                return
            self.log(out="unknown", **e)
            time.sleep(0.2)

    def final(self):
        """After the faults healed: one acquire (retried while no leader answers) must be
        answered with a grant or a refusal."""
        deadline = time.monotonic() + 25
        t0 = now_ms()
        st = None
        while time.monotonic() < deadline:
            r = self.rng.choice(RESOURCES)
            body = {"resource": r, "client_id": self.name_, "ttl_ms": TTL_MS, "wait_ms": 3000,
                    "request_id": "final-" + self.name_}
            st, j = self.post("acquire", body, 8)
            if st == 200:
                self.log(ev="acquire", c=self.name_, r=r, m="exclusive", ttl=TTL_MS, wait=3000,
                         t0=t0, t1=now_ms(), out="granted", tok=int(j["token"]),
                         exp=int(j["lease_expires_at_ms"]))
                t1 = now_ms()
                st2, _ = self.post("release", {"resource": r, "client_id": self.name_,
                                               "token": int(j["token"])}, 5)
                self.log(ev="release", c=self.name_, r=r, tok=int(j["token"]), t0=t1,
                         t1=now_ms(), out={200: "ok", 409: "not_holder"}.get(st2, "unknown"))
                break
            if st in (400, 409):
                break
            time.sleep(0.3)
        self.log(ev="final", c=self.name_, t0=t0, t1=now_ms(),
                 out="answered" if st in (200, 400, 409) else "unanswered", status=st)


class Observer(threading.Thread):
    def __init__(self, run):
        super().__init__(daemon=True)
        self.run_ = run
        self.rng = random.Random(run.seed + 7)
        self.events = []

    def run(self):
        c = self.run_.c
        while not self.run_.done.is_set():
            t0 = now_ms()
            r = c.try_request(self.rng.choice(c.names), "GET", "/lock", timeout=2)
            if r is not None and r.status == 200:
                locks = [[x["resource"], x["client_id"], x["mode"], int(x["token"])]
                         for x in r.json()["locks"]]
                self.events.append(dict(ev="observe", t0=t0, t1=now_ms(), locks=locks))
            time.sleep(0.15)


class Nemesis(threading.Thread):
    """At most one node is down (killed or stopped) at a time, so a majority stays up."""

    def __init__(self, run):
        super().__init__(daemon=True)
        self.run_ = run
        self.rng = random.Random(run.seed + 13)
        self.log = []
        self.error = None

    def pick(self):
        c = self.run_.c
        if self.rng.random() < 0.5:
            leader = c.agreed_leader()
            if leader:
                return leader
        return self.rng.choice(c.names)

    def run(self):
        try:
            self.faults()
        except BaseException as e:
            self.error = e

    def faults(self):
        c, stop = self.run_.c, self.run_.stop
        while not stop.wait(self.rng.uniform(1.0, 3.0)):
            victim = self.pick()
            action = self.rng.choice(["kill", "kill", "pause"])
            down = self.rng.uniform(1.0, 3.5)
            self.log.append((time.monotonic() - self.run_.t_start, action, victim, round(down, 1)))
            if action == "kill":
                c.kill(victim)
                stop.wait(down)
                lockutil.wait_port_free(c.ports[victim])
                c.start(victim)
            else:
                c.pause(victim)
                time.sleep(down)
                c.resume(victim)


class Checker(unittest.TestCase):
    """lockcheck.py on small made-up histories: each rule can fail."""

    def grant(self, c, r, tok, start, m="exclusive", t0=None):
        return dict(ev="acquire", c=c, r=r, m=m, ttl=1000, wait=0, t0=t0 or start,
                    t1=start + 5, out="granted", tok=tok, exp=start + 1000)

    def release(self, c, r, tok, t0, out="ok"):
        return dict(ev="release", c=c, r=r, tok=tok, t0=t0, t1=t0 + 5, out=out)

    def final(self, *clients):
        return [dict(ev="final", c=c, t0=0, t1=1, out="answered", status=200) for c in clients]

    def problems(self, events):
        return lockcheck.check([dict(ev="meta", bound_ms=500)] + events)[0]

    def test_the_checker_accepts_a_clean_handover(self):
        h = [self.grant("a", "r", 1, 1000), self.release("a", "r", 1, 1400),
             self.grant("b", "r", 2, 1400), self.grant("c", "s", 3, 1000, m="shared"),
             self.grant("d", "s", 4, 1100, m="shared"),
             dict(ev="observe", t0=1450, t1=1460, locks=[["r", "b", "exclusive", 2]])]
        self.assertEqual(self.problems(h + self.final("a", "b", "c", "d")), [])

    def test_the_checker_flags_overlapping_exclusive_and_mixed_holds(self):
        h = [self.grant("a", "r", 1, 1000), self.grant("b", "r", 2, 1500),
             self.grant("c", "s", 3, 1000, m="shared"), self.grant("d", "s", 4, 1200)]
        p = self.problems(h + self.final("a", "b", "c", "d"))
        self.assertEqual(len([x for x in p if "overlapping" in x]), 2, p)

    def test_the_checker_flags_tokens_that_do_not_increase(self):
        h = [self.grant("a", "r", 5, 1000), self.release("a", "r", 5, 1100),
             self.grant("b", "r", 4, 1200)]
        p = self.problems(h + self.final("a", "b"))
        self.assertTrue(any("not above" in x for x in p), p)

    def test_the_checker_flags_grants_to_clients_that_gave_up_and_undead_holders(self):
        h = [dict(ev="acquire", c="w", r="r", m="exclusive", ttl=1000, wait=100, t0=1000,
                  t1=1100, out="refused", code="wait_timeout"),
             dict(ev="observe", t0=1200, t1=1210, locks=[["r", "w", "exclusive", 9]]),
             self.grant("a", "s", 1, 1000),
             dict(ev="observe", t0=4000, t1=4010, locks=[["s", "a", "exclusive", 1]])]
        p = self.problems(h + self.final("w"))
        self.assertTrue(any("gave up" in x for x in p), p)
        self.assertTrue(any("dead holder" in x for x in p), p)
        self.assertTrue(any("no final request" in x for x in p), p)


class LockSafety(lockutil.ClusterCase):
    def test_sixteen_clients_under_kills_and_pauses_never_see_two_holders_or_stale_tokens(self):
        sys.stderr.write("    [safety] seed %d, %.0f s; replay: DSYNC_SEED=%d\n"
                         % (SEED, SECONDS, SEED))
        self.seed = SEED
        self.c = self.cluster(3, raft=RAFT, lock={"clock_skew_ms": SKEW_MS})
        self.c.wait_leader(10)
        self.stop, self.done = threading.Event(), threading.Event()
        self.t_start = time.monotonic()
        clients = [Client(self, i) for i in range(CLIENTS)]
        observer, nemesis = Observer(self), Nemesis(self)
        for t in clients + [observer, nemesis]:
            t.start()
        time.sleep(SECONDS)
        self.stop.set()
        nemesis.join(15)
        self.c.resume_all()
        for n in self.c.names:  # heal: every node runs again
            if not self.c.alive(n):
                self.c.start(n)
        for t in clients:
            t.join(40)
        self.done.set()
        observer.join(5)
        events = [dict(ev="meta", seed=SEED, seconds=SECONDS, ttl=TTL_MS, bound_ms=BOUND_MS,
                       faults=nemesis.log)]
        for t in clients + [observer]:
            events.extend(t.events)
        fd, path = tempfile.mkstemp(prefix="dsync-lock-history-%d-" % SEED, suffix=".jsonl")
        with os.fdopen(fd, "w") as f:
            for e in events:
                f.write(json.dumps(e) + "\n")
        problems, summary = lockcheck.check(events)
        sys.stderr.write("    [safety] %s; faults: %s\n" % (summary, nemesis.log))
        stuck = [t.name_ for t in clients if t.is_alive()]
        if stuck:
            problems.append("clients never finished: %s" % stuck)
        if nemesis.error:
            problems.append("the nemesis failed: %r" % nemesis.error)
        grants = sum(1 for e in events if e["ev"] == "acquire" and e["out"] == "granted")
        if grants < CLIENTS:
            problems.append("only %d grants: the run did not exercise the locks" % grants)
        if problems:
            self.fail("seed %d (replay: DSYNC_SEED=%d), history kept in %s:\n%s\n%s"
                      % (SEED, SEED, path, "\n".join(problems[:30]), self.c.logs(1500)))
        os.unlink(path)


if __name__ == "__main__":
    unittest.main(verbosity=2)
