"""History checker for the lock safety run (test_lock_safety.py); also runnable on its own:

    python3 t/integration/lockcheck.py HISTORY.jsonl

A history is one JSON object per line; times are wall-clock milliseconds of the one machine every
client and node runs on (the server stamps its wall clock into each grant):

  {"ev":"meta", "seed":S, "bound_ms":B, ...}            B: how long after its last renewal a dead
                                                       holder may still be seen (election timeout
                                                       + clock-skew bound + observation slack)
  {"ev":"acquire", "c", "r", "m", "ttl", "wait", "t0", "t1", "out": "granted"|"refused"|"unknown",
   "code", "tok", "exp"}                              exp: the server's lease_expires_at_ms
  {"ev":"renew", "c", "r", "tok", "ttl", "t0", "t1", "out": "ok"|"lost"|"unknown", "exp"}
  {"ev":"release", "c", "r", "tok", "t0", "t1", "out": "ok"|"not_holder"|"unknown"}
  {"ev":"observe", "t0", "t1", "locks": [[resource, client, mode, token], ...]}   (GET /lock)
  {"ev":"final", "c", "t0", "t1", "out": "answered"|"unanswered", "status"}

t0/t1: when the client sent the request / got the answer.  A hold starts at the server's grant time
(exp - ttl of the granting answer) and ends at the earlier of the last lease end the server
reported and the moment the client sent its release: that is the interval in which the client
may use the lock, and the checker proves:

  1. no two exclusive holds of a resource overlap, and no shared hold overlaps an exclusive one;
  2. fencing tokens strictly increase per resource in grant order;
  3. every hold seen by an observer (GET /lock) belongs to a grant its client was told about, or
     to an acquire whose answer the client never got (a network error) -- so nothing is granted
     to a waiter whose client gave up (409 wait_timeout) or never asked;
  4. no observed hold outlives its acknowledged release, and none outlives its last renewal (or,
     unacknowledged, its acquire) by more than ttl + bound_ms: dead holders are released;
  5. every client's last request, made after the faults healed, was answered.
"""
import json
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class Hold:
    def __init__(self, c, r, m, tok, start, lease_end, ttl):
        self.c, self.r, self.m, self.tok = c, r, m, tok
        self.start, self.lease_end, self.ttl = start, lease_end, ttl
        self.release_sent = None   # first release attempt (the client stopped using it)
        self.release_acked = None  # an acknowledged release
        self.last_renew_sent = start
        self.renew_ttl = ttl
        self.superseded = None     # a later grant to the same client converted it (up/downgrade)
        self.start_unknown = False # first seen as a refresh of a hold granted out of sight

    @property
    def end(self):
        end = self.lease_end
        if self.release_sent is not None:
            end = min(end, self.release_sent)
        if self.superseded is not None:
            end = min(end, self.superseded)
        return end

    def __repr__(self):
        return "%s(%s %s tok %d: %d..%d)" % (self.c, self.r, self.m, self.tok, self.start, self.end)


def build_holds(events):
    holds = {}  # (resource, token) -> Hold
    for e in events:
        if e["ev"] == "acquire" and e["out"] == "granted":
            key = (e["r"], e["tok"])
            start = e["exp"] - e["ttl"]
            h = holds.get(key)
            if h is None:
                h = holds[key] = Hold(e["c"], e["r"], e["m"], e["tok"], start, e["exp"], e["ttl"])
                # the client already held it (an earlier grant whose answer it never saw): the
                # hold started before `start`, at a time this history does not know
                h.start_unknown = bool(e.get("refreshed"))
            else:  # an idempotent re-grant of the same token: the lease was refreshed
                h.lease_end = max(h.lease_end, e["exp"])
                h.last_renew_sent = max(h.last_renew_sent, e["t0"])
    for e in events:
        h = holds.get((e.get("r"), e.get("tok")))
        if h is None:
            continue
        if e["ev"] == "renew":
            h.last_renew_sent = max(h.last_renew_sent, e["t0"])
            h.renew_ttl = max(h.renew_ttl, e["ttl"])
            if e["out"] == "ok":
                h.lease_end = max(h.lease_end, e["exp"])
        elif e["ev"] == "release":
            if h.release_sent is None or e["t0"] < h.release_sent:
                h.release_sent = e["t0"]
            if e["out"] == "ok" and (h.release_acked is None or e["t1"] < h.release_acked):
                h.release_acked = e["t1"]
    # An upgrade (shared -> exclusive) or downgrade is a new grant with a new token to a client
    # that already holds the resource: the old hold ends where the new one starts.
    mine = {}
    for h in holds.values():
        mine.setdefault((h.c, h.r), []).append(h)
    for hs in mine.values():
        hs.sort(key=lambda h: (h.start, h.tok))
        for a, b in zip(hs, hs[1:]):
            if b.tok > a.tok and b.start < a.end and a.m != b.m:
                a.superseded = b.start
    return holds


def check_overlaps(holds, problems):
    by_res = {}
    for h in holds.values():
        by_res.setdefault(h.r, []).append(h)
    for r, hs in by_res.items():
        hs.sort(key=lambda h: (h.start, h.tok))
        for i, a in enumerate(hs):
            for b in hs[i + 1:]:
                if b.start >= a.end:
                    break  # sorted by start: no later hold overlaps a either
                if a.m == "shared" and b.m == "shared":
                    continue
                if a.start < b.end and b.start < a.end:
                    problems.append("overlapping holds on %s: %r and %r" % (r, a, b))
        # tokens strictly increase with the grant time
        best, group_start, group_best = 0, None, 0
        for h in hs:
            if h.start_unknown:
                continue  # its real grant time is unknown: no place in the grant order
            if h.start != group_start:
                best = max(best, group_best)
                group_start, group_best = h.start, 0
            if h.tok <= best:
                problems.append("token %d on %s granted at %d is not above an earlier grant's %d"
                                % (h.tok, r, h.start, best))
            group_best = max(group_best, h.tok)


def check_observations(events, holds, bound_ms, problems):
    unknown = {}  # (client, resource) -> acquires with no answer
    for e in events:
        if e["ev"] == "acquire" and e["out"] == "unknown":
            unknown.setdefault((e["c"], e["r"]), []).append(e)
    for o in (e for e in events if e["ev"] == "observe"):
        for r, c, m, tok in o["locks"]:
            h = holds.get((r, tok))
            if h is not None:
                if h.c != c:
                    problems.append("token %d on %s was granted to %s but %s holds it"
                                    % (tok, r, h.c, c))
                if h.release_acked is not None and o["t0"] > h.release_acked:
                    problems.append("%r still held at %d after its release was acknowledged at %d"
                                    % (h, o["t0"], h.release_acked))
                limit = h.last_renew_sent + h.renew_ttl + bound_ms
                if o["t0"] > limit:
                    problems.append("dead holder %r still held at %d, %d ms after its last "
                                    "renewal could have ended" % (h, o["t0"], o["t0"] - limit))
                continue
            why = [u for u in unknown.get((c, r), []) if u["t0"] <= o["t1"]]
            if not why:
                problems.append("%s holds %s (token %d, seen at %d) but was never told it was "
                                "granted and has no unanswered acquire: a grant to a waiter "
                                "that gave up, or to nobody" % (c, r, tok, o["t0"]))
                continue
            limit = max(u["t1"] + u["wait"] + u["ttl"] for u in why) + bound_ms
            if o["t0"] > limit:
                problems.append("%s's unacknowledged grant of %s (token %d) still held at %d, %d "
                                "ms past its lease" % (c, r, tok, o["t0"], o["t0"] - limit))


def check_final(events, problems):
    clients = {e["c"] for e in events if e["ev"] in ("acquire", "final")}
    final = {e["c"]: e for e in events if e["ev"] == "final"}
    for c in sorted(clients):
        f = final.get(c)
        if f is None:
            problems.append("client %s made no final request after the faults healed" % c)
        elif f["out"] != "answered":
            problems.append("client %s's final request was not answered: %r" % (c, f))


def check(events):
    """Returns (problems, summary)."""
    meta = next((e for e in events if e["ev"] == "meta"), {})
    bound_ms = meta.get("bound_ms", 2000)
    holds = build_holds(events)
    problems = []
    check_overlaps(holds, problems)
    check_observations(events, holds, bound_ms, problems)
    check_final(events, problems)
    count = lambda ev, out=None: sum(1 for e in events if e["ev"] == ev
                                     and (out is None or e.get("out") == out))
    summary = ("%d grants (%d exclusive), %d refused, %d unknown; %d renewals (%d lost); "
               "%d releases; %d observations; %d final answers"
               % (len(holds), sum(h.m == "exclusive" for h in holds.values()),
                  count("acquire", "refused"), count("acquire", "unknown"), count("renew"),
                  count("renew", "lost"), count("release", "ok"), count("observe"),
                  count("final", "answered")))
    return problems, summary


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: %s HISTORY.jsonl\n" % argv[0])
        return 2
    problems, summary = check(load(argv[1]))
    print(summary)
    for p in problems[:50]:
        print("VIOLATION: " + p)
    if len(problems) > 50:
        print("... and %d more" % (len(problems) - 50))
    print("OK" if not problems else "%d violations" % len(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
