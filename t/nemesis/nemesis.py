"""The seeded fault schedule of a run and the thread that plays it, plus the history file.

A schedule is made up front from the seed (so the same seed gives the same faults at the same
offsets): epochs of 1-4 s, each with a network fault, a process fault or both, separated by healed
gaps.  Targets are node numbers or "leader", which the player resolves when the epoch starts with a
role-supplied function (roles without a leader pass None and get a random node instead; the
resolved victim is written to the history, so a replay can be compared).

Network faults: isolate, split (minority / majority, the leader in the minority half of the time),
bridge (one node sees both sides), loss (one-way, some or all packets from one node to the others
or to it), latency.  Process faults: kill (kill -9, restarted at the end of the epoch), pause
(SIGSTOP, SIGCONT at the end).  Every epoch ends with a full heal.
"""
import json
import random
import threading
import time

NET_KINDS = ["isolate", "split", "bridge", "loss", "latency"]
PROC_KINDS = ["kill", "pause"]


def now_ms():
    return int(time.time() * 1000)


class History:
    """A JSON-lines history written as it happens (flushed per event), shared by threads."""

    def __init__(self, path):
        self.path = path
        self.f = open(path, "w")
        self.lock = threading.Lock()
        self.counts = {}

    def write(self, **e):
        line = json.dumps(e, sort_keys=True)
        with self.lock:
            self.f.write(line + "\n")
            self.f.flush()
            self.counts[e["ev"]] = self.counts.get(e["ev"], 0) + 1

    def close(self):
        with self.lock:
            self.f.close()

    def events(self):
        with open(self.path) as f:
            return [json.loads(l) for l in f if l.strip()]


def make_schedule(seed, duration, n, net_kinds=None, proc_kinds=None, max_epoch=4.0):
    """The list of epochs [{"at","dur","net":{...}|None,"proc":{...}|None}] for a run of
    `duration` seconds on nodes 1..n; deterministic in (seed, duration, n, kinds)."""
    rng = random.Random("schedule-%d" % seed)
    net_kinds = NET_KINDS if net_kinds is None else net_kinds
    proc_kinds = PROC_KINDS if proc_kinds is None else proc_kinds
    nodes = list(range(1, n + 1))
    target = lambda: "leader" if rng.random() < 0.4 else rng.choice(nodes)
    out, t = [], rng.uniform(1.0, 2.0)
    while t + 1.5 < duration:
        dur = round(min(rng.uniform(1.0, max_epoch), duration - t - 0.5), 2)
        r = rng.random()
        net = proc = None
        if net_kinds and (r < 0.75 or not proc_kinds):
            net = _net_fault(rng, rng.choice(net_kinds), nodes, target)
        if proc_kinds and (r >= 0.45 or net is None):
            proc = {"kind": rng.choice(proc_kinds), "node": target()}
        out.append({"at": round(t, 2), "dur": dur, "net": net, "proc": proc})
        t += dur + rng.uniform(0.5, 2.0)
    return out


def _net_fault(rng, kind, nodes, target):
    n = len(nodes)
    if kind == "isolate":
        return {"kind": kind, "node": target()}
    if kind == "split":
        order = rng.sample(nodes, n)
        return {"kind": kind, "minority": order[:(n - 1) // 2] or order[:1],
                "leader_in_minority": rng.random() < 0.5}
    if kind == "bridge":
        order = rng.sample(nodes, n)
        half = (n - 1) // 2
        return {"kind": kind, "left": order[:half], "middle": order[half],
                "right": order[half + 1:]}
    if kind == "loss":
        return {"kind": kind, "node": target(), "direction": rng.choice(["in", "out"]),
                "p": rng.choice([0.3, 0.6, 1.0])}
    if kind == "latency":
        return {"kind": kind, "node": target(), "ms": rng.choice([50, 150, 400]),
                "jitter": rng.choice([0, 20])}
    raise ValueError(kind)


class Player(threading.Thread):
    """Plays a schedule against a netns.Topology and nsnodes.Nodes.

    leader(): the node number every running node names as leader, or None."""

    def __init__(self, schedule, topo, nodes, history, leader=None, seed=0):
        super().__init__(daemon=True, name="nemesis")
        self.schedule, self.topo, self.nodes, self.history = schedule, topo, nodes, history
        self.leader_fn = leader
        self.rng = random.Random("player-%d" % seed)
        self.stop = threading.Event()
        self.t0 = None
        self.faults = 0
        self.problems = []   # restarts that failed, unexpected exits, errors of the player

    def resolve(self, target):
        if target != "leader":
            return target
        leader = self.leader_fn() if self.leader_fn else None
        return leader if leader is not None else self.rng.choice(self.topo.nodes)

    def run(self):
        self.t0 = time.monotonic()
        try:
            for epoch in self.schedule:
                if self.stop.wait(max(0.0, self.t0 + epoch["at"] - time.monotonic())):
                    break
                self.play(epoch)
        except BaseException as e:  # reported as a run problem, never silently lost
            self.problems.append("nemesis error: %r" % e)
        finally:
            self.end_epoch({}, None)

    def play(self, epoch):
        applied, killed = {}, None
        net, proc = epoch["net"], epoch["proc"]
        if net:
            applied["net"] = self.apply_net(net)
        if proc:
            victim = self.resolve(proc["node"])
            name = "node%d" % victim
            if proc["kind"] == "kill":
                self.nodes.kill(name)
                killed = name
            else:
                self.nodes.pause(name)
            applied["proc"] = {"kind": proc["kind"], "node": victim}
        self.faults += len(applied)
        self.history.write(ev="nemesis", what="start", at_ms=now_ms(), epoch=epoch, applied=applied)
        self.stop.wait(epoch["dur"])
        self.end_epoch(applied, killed)

    def apply_net(self, f):
        k, topo = f["kind"], self.topo
        if k == "isolate":
            v = self.resolve(f["node"])
            topo.isolate(v)
            return {"kind": k, "node": v}
        if k == "split":
            minority = list(f["minority"])
            leader = self.leader_fn() if self.leader_fn else None
            if leader is not None and f["leader_in_minority"] and leader not in minority:
                minority[0] = leader
            elif leader is not None and not f["leader_in_minority"] and leader in minority:
                minority[minority.index(leader)] = next(
                    i for i in topo.nodes if i not in minority)
            majority = [i for i in topo.nodes if i not in minority]
            topo.partition([minority, majority])
            return {"kind": k, "minority": minority, "majority": majority}
        if k == "bridge":
            topo.bridge(f["left"], f["middle"], f["right"])
            return dict(f)
        if k == "loss":
            v = self.resolve(f["node"])
            others = [i for i in topo.nodes if i != v]
            pairs = [(v, o) for o in others] if f["direction"] == "out" else \
                [(o, v) for o in others]
            topo.lose(pairs, f["p"])
            return {"kind": k, "node": v, "direction": f["direction"], "p": f["p"]}
        if k == "latency":
            v = self.resolve(f["node"])
            return {"kind": k, "node": v, "how": topo.latency(v, f["ms"], f["jitter"])}
        raise ValueError(k)

    def end_epoch(self, applied, killed):
        """Heal the network, resume paused nodes, restart the killed one."""
        self.topo.heal()
        for n in list(self.nodes.paused):
            self.nodes.resume(n)
        for name, pid, rc in self.nodes.check_deaths():
            msg = "%s (pid %d) exited by itself with %s" % (name, pid, rc)
            if msg not in self.problems:
                self.problems.append(msg)
        failed = []
        for n in self.nodes.names:
            if not self.nodes.alive(n):
                self.nodes.start(n)
                if not self.nodes.wait_healthy(n, 15.0):
                    failed.append(n)
        if failed:
            self.problems.append("restarted nodes did not answer /health: %s" % failed)
        if applied:
            self.history.write(ev="nemesis", what="heal", at_ms=now_ms(), restart_failed=failed)
