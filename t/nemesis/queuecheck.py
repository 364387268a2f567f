"""History checker of the queue nemesis run (run-queue); also runnable on its own:

    python3 t/nemesis/queuecheck.py HISTORY.jsonl

A history is one JSON object per line (nemesis.History).  Every produced message carries a unique
payload id `m` in its body ({"m": ..., "q": queue, "k": key or null}), so a delivery names the
attempt that stored it whatever message id the queue gave it:

  {"ev":"meta", "groups": {queue: [group, ...]}, ...}   the groups that must see each queue
  {"ev":"produce", "p", "q", "node", "t0", "t1", "msgs": [{"m", "k"}, ...],
   "out": "ok"|"refused"|"unknown", "status", "ids": [...] (ok: one id per message), "dups"}
       ok: answered 201 (Redis accepted every message); refused: a definite 4xx (nothing stored);
       unknown: no answer, or 503 (a batch may be partly stored)
  {"ev":"deliver", "c", "g", "q", "node", "t0", "t1", "msgs": [{"m", "bq", "k", "id", "dc",
   "og", "oid"}, ...]}
       a consume answer; from a dead-letter queue (q ends in ".dlq") og/oid are the original
       group and id of the message and g the group that drains the dead letters
  {"ev":"ack", "c", "g", "q", "ids": [...], "nack": bool, "out": "ok"|"refused"|"unknown", "n"}
  {"ev":"node_exit", "node", "rc", "how": "crash"|"sigterm"}   a process that died on its own,
       or did not exit 0 on SIGTERM at the end
  (nemesis and drain events are not read here)

Violations:
  1. lost: a message answered 201 that was never delivered to a group of its queue (from the
     queue itself or, after max_deliveries, from its dead-letter queue);
  2. stranded: a message delivered to a group, never acked by it (an ack whose answer was lost
     counts as acked) and never delivered again nor dead-lettered: at-least-once means an unacked
     message comes back after its visibility timeout;
  3. integrity: a delivery of a payload nobody produced, or whose produce was refused, or whose
     body names another queue or key, or whose message id a 201 gave to another payload, or of a
     dead letter whose original group does not read its queue; a 201 without one id per message;
  4. node_exit events.

Counted, not violations: duplicates (deliveries to a group beyond the first: redeliveries after a
nack, a consumer that died or a lost answer, and second copies stored by a produce retried on
another shard after a timeout), copies (payloads stored under more than one message id), unknown
produces (delivered or not), dead letters.  Per-key order is not checked: while a shard is down its
partitions are written on the next live shard and consumers read every shard, so messages of one
key produced around a failover can be delivered out of order (src/roles/queue/qroute.h).
"""
import json
import sys

DLQ = ".dlq"


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def base_queue(q):
    return q[:-len(DLQ)] if q.endswith(DLQ) and len(q) > len(DLQ) else None


class State:
    """What a history says about every payload and group (built in one pass; the run uses it to
    know when its drain is complete)."""

    def __init__(self, events):
        meta = next((e for e in events if e.get("ev") == "meta"), {})
        self.groups = {q: list(gs) for q, gs in meta.get("groups", {}).items()}
        self.problems = []
        self.produced = {}     # payload -> {"q", "k", "out", "ids": set}
        self.id_owner = {}     # (queue, message id) -> payload, from 201 answers
        self.delivered = {}    # (payload, group) -> deliveries
        self.from_dlq = set()  # (payload, group) delivered as a dead letter
        self.copies = {}       # payload -> message ids seen (201 answers and deliveries)
        self.del_ids = {}      # (queue, group, message id) -> payload
        self.settled = set()   # (payload, group) acked (or an ack whose answer was lost)
        self.counts = {"produce_ops": 0, "deliver_ops": 0, "ack_ops": 0, "deliveries": 0}
        # in three passes: a consumer may log a delivery before its producer logs the 201, and
        # an ack names message ids that deliveries give payloads
        by_ev = {}
        for e in events:
            by_ev.setdefault(e.get("ev"), []).append(e)
        for e in by_ev.get("produce", []):
            self._produce(e)
        for e in by_ev.get("deliver", []):
            self._deliver(e)
        for e in by_ev.get("ack", []):
            self._ack(e)
        self.exits = by_ev.get("node_exit", [])

    # ------------------------------------------------------------------ ingest
    def _produce(self, e):
        self.counts["produce_ops"] += 1
        out, msgs = e.get("out"), e.get("msgs", [])
        ids = e.get("ids") or []
        if out == "ok" and len(ids) != len(msgs):
            self.problems.append("integrity: produce by %s at %s answered 201 with %d ids for %d "
                                 "messages" % (e.get("p"), e.get("t0"), len(ids), len(msgs)))
            ids = []
        for i, m in enumerate(msgs):
            rec = self.produced.setdefault(m["m"], {"q": e["q"], "k": m.get("k"), "out": out,
                                                    "ids": set(), "first": e})
            rank = {"refused": 0, "unknown": 1, "ok": 2}
            if rank.get(out, 1) > rank.get(rec["out"], 1):
                rec["out"] = out
            if out == "ok" and ids:
                rec["ids"].add(ids[i])
                self.copies.setdefault(m["m"], set()).add(ids[i])
                other = self.id_owner.setdefault((e["q"], ids[i]), m["m"])
                if other != m["m"]:
                    self.problems.append("integrity: id %s of %s was answered for %s and for %s"
                                         % (ids[i], e["q"], other, m["m"]))

    def _deliver(self, e):
        self.counts["deliver_ops"] += 1
        q, g = e["q"], e["g"]
        base = base_queue(q)
        for m in e.get("msgs", []):
            self.counts["deliveries"] += 1
            p = m.get("m")
            rec = self.produced.get(p)
            where = "%s to %s/%s by %s at %s" % (m.get("id"), q, g, e.get("node"), e.get("t0"))
            if rec is None:
                self.problems.append("integrity: delivered a message nobody produced: %r (%s)"
                                     % (p, where))
                continue
            if rec["out"] == "refused":
                self.problems.append("integrity: delivered %s whose produce was refused (%s)"
                                     % (p, where))
            home = base if base is not None else q
            if rec["q"] != home or m.get("bq") != home:
                self.problems.append("integrity: %s of queue %s (body says %s) delivered from %s"
                                     % (p, rec["q"], m.get("bq"), where))
            if m.get("k") != rec["k"]:
                self.problems.append("integrity: %s produced with key %r delivered with key %r "
                                     "(%s)" % (p, rec["k"], m.get("k"), where))
            if base is not None:
                grp, mid = m.get("og"), m.get("oid")
                if grp not in self.groups.get(base, [grp]):
                    self.problems.append("integrity: dead letter %s names group %r, which does "
                                         "not read %s (%s)" % (p, grp, base, where))
                self.from_dlq.add((p, grp))
                self.settled.add((p, grp))
            else:
                grp, mid = g, m.get("id")
                self.del_ids[(q, g, mid)] = p
            if mid:
                self.copies.setdefault(p, set()).add(mid)
                owner = self.id_owner.get((home, mid))
                if owner is not None and owner != p:
                    self.problems.append("integrity: %s delivered with id %s, which a 201 gave "
                                         "to %s (%s)" % (p, mid, owner, where))
            self.delivered.setdefault((p, grp), []).append(e.get("t1"))

    def _ack(self, e):
        self.counts["ack_ops"] += 1
        if e.get("nack") or e.get("out") not in ("ok", "unknown") or base_queue(e["q"]):
            return
        for mid in e.get("ids", []):
            p = self.del_ids.get((e["q"], e["g"], mid))
            if p is not None:
                self.settled.add((p, e["g"]))

    # ------------------------------------------------------------------ questions
    def acked(self):
        """Payloads answered 201."""
        return [p for p, r in self.produced.items() if r["out"] == "ok"]

    def missing(self):
        """(payload, group) answered 201 and not yet delivered to that group, sorted."""
        out = []
        for p in self.acked():
            for g in self.groups.get(self.produced[p]["q"], []):
                if (p, g) not in self.delivered:
                    out.append((p, g))
        return sorted(out)

    def unsettled(self):
        """(payload, group) delivered but neither acked nor dead-lettered, sorted."""
        return sorted(k for k in self.delivered if k not in self.settled)

    def outstanding(self):
        return self.missing() + self.unsettled()


def describe(state, p):
    rec = state.produced.get(p, {})
    first = rec.get("first", {})
    return ("%s (queue %s, key %r, ids %s, produced via %s at %s..%s)"
            % (p, rec.get("q"), rec.get("k"), sorted(rec.get("ids", [])), first.get("node"),
               first.get("t0"), first.get("t1")))


def check(events):
    """Returns (problems, counts): the violations, and the figures of the summary."""
    s = State(events)
    problems = list(s.problems)
    for p, g in s.missing():
        problems.append("lost: %s answered 201, never delivered to group %s" % (describe(s, p), g))
    for p, g in s.unsettled():
        problems.append("stranded: %s delivered to group %s (last at %s), never acked nor "
                        "delivered again" % (describe(s, p), g, max(s.delivered[(p, g)])))
    for e in s.exits:
        if e.get("how") == "sigterm":
            problems.append("%s did not exit 0 on SIGTERM at the end (status %s)"
                            % (e.get("node"), e.get("rc")))
        else:
            problems.append("%s (pid %s) exited by itself with %s"
                            % (e.get("node"), e.get("pid"), e.get("rc")))
    acked = s.acked()
    counts = dict(s.counts)
    counts.update({
        "produced": len(acked),
        "unknown": sum(1 for r in s.produced.values() if r["out"] == "unknown"),
        "unknown_delivered": sum(1 for p, r in s.produced.items() if r["out"] == "unknown"
                                 and any((p, g) in s.delivered for g in s.groups.get(r["q"], []))),
        "refused": sum(1 for r in s.produced.values() if r["out"] == "refused"),
        "delivered": len(s.delivered),
        "duplicates": sum(len(v) - 1 for v in s.delivered.values()),
        "copies": sum(1 for ids in s.copies.values() if len(ids) > 1),
        "dlq": len(s.from_dlq),
        "lost": len(s.missing()),
        "stranded": len(s.unsettled()),
    })
    return problems, counts


def summary_text(c):
    return ("%(produced)d messages answered 201, %(unknown)d unknown (%(unknown_delivered)d of "
            "them delivered), %(refused)d refused; %(delivered)d (message, group) delivered, "
            "%(deliveries)d deliveries, %(duplicates)d duplicates, %(copies)d stored twice, "
            "%(dlq)d from a dead-letter queue; %(lost)d lost, %(stranded)d stranded" % c)


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: %s HISTORY.jsonl\n" % argv[0])
        return 2
    problems, counts = check(load(argv[1]))
    print(summary_text(counts))
    for p in problems[:50]:
        print("VIOLATION: " + p)
    if len(problems) > 50:
        print("... and %d more" % (len(problems) - 50))
    print("OK" if not problems else "%d violations" % len(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
