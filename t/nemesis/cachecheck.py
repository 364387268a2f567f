"""Checks of a cache run's history (t/nemesis/run-cache): the clients' reads and writes, the
observers' reports of GET /cache/{key}/state, and the final reads after the heal.

Events (JSON lines, times in the runner's monotonic clock, ms):
  {"ev":"op","f":"write"|"read","c","node","k","v","t0","t1","status","out","version","state"
   [,"phase":"final"]}
      out: "ok" (200), "miss" (read: 404, the key was never written), "unknown" (503, timeout,
      no answer: a write may or may not have happened), "error" (any other answer: a violation).
      Every write attempt sends a value no other attempt sends, so a read names its write.
  {"ev":"state","node","k","t0","t1","line":{...},"home":{"node","directory"|"error"}}
      the answer of GET /cache/{k}/state on `node`: its line (state, version, lease_valid...) as
      at one instant of [t0, t1], and the home's directory entry as at one instant of the home.
  {"ev":"meta","keys":[...],"node_names":[...],"write_policy":...}

The order of the writes of a key is the order of their versions (the home's write counter; the API
returns it with every answer).  Under write-through -- the policy run-cache uses, and the one under
which an acknowledged write can never be lost -- a key behaves as a linearizable register whose
versions are the positions in its order, so for operations a and b of one key with a.t1 < b.t0 (a
ended before b began): version(a) <= version(b), and < when b is a write.  That gives:

  stale read         a read (or a valid copy an observer saw) older than a write completed before
                     it began, or than a read / valid copy that ended before it began (new-old
                     inversion);
  write order        a write whose version is not above one completed or seen before it began;
                     two values with one version; a value seen with two versions (a write applied
                     twice); a value no write sent (the initial miss excepted); a read returning a
                     write that began after the read ended.
Writes with an unknown outcome take the version reads saw them with; they can make a read's value
legitimate but never count as completed.  503s and timeouts are not violations.

Single writer / multiple readers over the observers' reports.  A report is a snapshot of one node
at one unknown instant of its polling window, and a copy can be revoked at any moment (Inv, Fwd,
eviction), so two reports of different nodes never prove that two copies existed at the same
instant.  What is certain, and checked:
  same instant       the home's own report (line and directory read in one event-loop callback,
                     after the home's warm-up): a valid M/E line here must be the directory's
                     owner, a valid S line one of its sharers (or the owner, while its upgrade is
                     being persisted); a directory entry never has an owner and sharers at once;
  across reports     a valid copy (S/SM_D/E/M with an unexpired lease) is a read that can be
                     served at that instant: the stale-read rule above applies to it, so a second
                     writer or a reader left holding an older version after a newer one was held
                     or written is caught whenever the windows do not overlap.
Final: every node answers a read of every key after the heal, and those that began after the
key's last completed write return it (or an unknown write the home applied after it).
"""

READABLE = ("S", "SM_D", "E", "M")
WRITERS = ("E", "M")
MAX_PER_KIND = 20


def _t(ms):
    return "%.1f" % ms


def _op_desc(o):
    if o["kind"] == "copy":
        return "%s's valid %s copy (version %d, polled %s..%s)" % (
            o["node"], o["state"], o["version"], _t(o["t0"]), _t(o["t1"]))
    what = "write" if o["kind"] == "write" else "read"
    val = "absent" if o["v"] is None else repr(o["v"])
    if o["kind"] == "write" and o.get("unknown"):
        span = "%s..?" % _t(o["t0"])
        what = "unacknowledged write"
    else:
        span = "%s..%s" % (_t(o["t0"]), _t(o["t1"]))
    return "%s of %s by %s on %s (%s) version %d" % (what, val, o["c"], o["node"], span,
                                                    o["version"])


class _Report:
    """Problems by kind, at most MAX_PER_KIND messages each (the rest counted)."""

    def __init__(self):
        self.items, self.counts = [], {}

    def add(self, kind, msg):
        n = self.counts.get(kind, 0)
        self.counts[kind] = n + 1
        if n < MAX_PER_KIND:
            self.items.append("%s: %s" % (kind, msg))

    def problems(self):
        out = list(self.items)
        for kind, n in sorted(self.counts.items()):
            if n > MAX_PER_KIND:
                out.append("%s: %d more like these" % (kind, n - MAX_PER_KIND))
        return out


# ---------------------------------------------------------------- values and versions

def _versions(key, ops, rep):
    """Matches reads to writes by value; returns (completed writes, unknown writes that were seen,
    reads) as dicts with kind/version/t0/t1.  Reports phantom values, values with two versions,
    versions with two values and reads of writes from the future."""
    attempts = {}
    for o in ops:
        if o["f"] == "write":
            if o["v"] in attempts:
                rep.add("history", "value %r of %s sent twice" % (o["v"], key))
            attempts[o["v"]] = o
    seen = {}  # value -> (version, first op that showed it)
    done, reads = [], []
    for o in ops:
        if o["f"] == "write" and o["out"] == "ok":
            done.append(dict(o, kind="write", version=int(o["version"])))
    for w in done:
        seen[w["v"]] = (w["version"], w)
    for o in sorted((o for o in ops if o["f"] == "read" and o["out"] in ("ok", "miss")),
                    key=lambda o: o["t0"]):
        r = dict(o, kind="read", v=None if o["out"] == "miss" else o["v"],
                 version=0 if o["out"] == "miss" else int(o["version"]))
        reads.append(r)
        if o["out"] == "miss":
            continue
        w = attempts.get(r["v"]) if isinstance(r["v"], str) else None
        if w is None:
            rep.add("phantom value", "%s returned a value no write sent" % _op_desc(r))
            continue
        if w["t0"] > r["t1"]:
            rep.add("read from the future", "%s returned the write sent at %s, after it ended"
                    % (_op_desc(r), _t(w["t0"])))
        if r["v"] in seen and seen[r["v"]][0] != r["version"]:
            rep.add("write applied twice", "%s, but %s showed it as version %d"
                    % (_op_desc(r), _op_desc(seen[r["v"]][1]), seen[r["v"]][0]))
        seen.setdefault(r["v"], (r["version"], r))
    unknown = []
    for v, (ver, first) in seen.items():
        w = attempts[v]
        if w["out"] != "ok":
            unknown.append(dict(w, kind="write", version=ver, unknown=True))
    by_version = {}
    for v, (ver, first) in sorted(seen.items(), key=lambda x: x[1][0]):
        if ver in by_version:
            rep.add("version reused", "%s: version %d given to %r and to %r"
                    % (key, ver, by_version[ver], v))
        by_version[ver] = v
    return done, unknown, reads


def _order(key, done, unknown, reads, copies, rep):
    """a.t1 < b.t0  =>  version(a) <= version(b), strictly when b is a write."""
    ends = sorted(done + reads + copies, key=lambda o: o["t1"])
    starts = sorted(done + unknown + reads + copies, key=lambda o: o["t0"])
    i, best = 0, None
    for b in starts:
        while i < len(ends) and ends[i]["t1"] < b["t0"]:
            if best is None or ends[i]["version"] > best["version"]:
                best = ends[i]
            i += 1
        if best is None:
            continue
        if b["kind"] == "write" and b["version"] <= best["version"]:
            rep.add("write order", "%s: %s is not above %s, which ended before it began"
                    % (key, _op_desc(b), _op_desc(best)))
        elif b["kind"] != "write" and b["version"] < best["version"]:
            kind = "stale read" if best["kind"] == "write" else "stale read (new-old inversion)"
            rep.add(kind, "%s: %s is older than %s, which ended before it began"
                    % (key, _op_desc(b), _op_desc(best)))


# ---------------------------------------------------------------- single writer, many readers

def _valid_copy(line):
    return bool(line and line.get("lease_valid") and line.get("state") in READABLE)


def _directory_form(e, rep):
    d = (e.get("home") or {}).get("directory")
    if not d or not d.get("entry"):
        return
    owner, sharers = d.get("owner"), d.get("sharers") or []
    if owner is not None and sharers:
        rep.add("two holders", "%s: home %s's directory (via %s at %s..%s) has owner %s and "
                "sharers %s at once" % (e["k"], e["home"]["node"], e["node"], _t(e["t0"]),
                                        _t(e["t1"]), owner, sharers))
    if (d.get("state") == "EM") != (owner is not None):
        rep.add("two holders", "%s: home %s's directory (via %s at %s..%s) is %s with owner %s"
                % (e["k"], e["home"]["node"], e["node"], _t(e["t0"]), _t(e["t1"]),
                   d.get("state"), owner))


def _same_instant(e, rep):
    """The home's own report: its line and its directory at one instant."""
    home, line = e.get("home") or {}, e.get("line")
    d = home.get("directory")
    if home.get("node") != e["node"] or d is None or not d.get("ready") or not _valid_copy(line):
        return
    me, st = e["node"], line["state"]
    owner, sharers = (d.get("owner"), d.get("sharers") or []) if d.get("entry") else (None, [])
    if st in WRITERS and owner != me:
        rep.add("two holders", "%s: home %s holds a valid %s copy (version %s) while its own "
                "directory says owner %s, sharers %s (at one instant of %s..%s)"
                % (e["k"], me, st, line.get("version"), owner, sharers, _t(e["t0"]),
                   _t(e["t1"])))
    elif st not in WRITERS and me not in sharers and owner != me:
        rep.add("two holders", "%s: home %s holds a valid %s copy (version %s) its own directory "
                "does not list (owner %s, sharers %s, at one instant of %s..%s)"
                % (e["k"], me, st, line.get("version"), owner, sharers, _t(e["t0"]),
                   _t(e["t1"])))


def _copies(states):
    out = []
    for e in states:
        line = e.get("line")
        if _valid_copy(line):
            out.append({"kind": "copy", "node": e["node"], "state": line["state"],
                        "version": int(line.get("version", 0)), "t0": e["t0"], "t1": e["t1"]})
    return out


# ---------------------------------------------------------------- final reads

def _final(meta, ops, rep):
    final = [o for o in ops if o.get("phase") == "final"]
    if not final:
        rep.add("final", "no final reads or writes in the history")
        return
    names = meta.get("node_names") or sorted({o["node"] for o in ops})
    attempts = {o["v"]: o for o in ops if o["f"] == "write"}
    for key in meta.get("keys") or sorted({o["k"] for o in ops}):
        writes = [o for o in final if o["k"] == key and o["f"] == "write" and o["out"] == "ok"]
        if not writes:
            tries = [o for o in final if o["k"] == key and o["f"] == "write"]
            rep.add("final", "%s: no final write completed after the heal (%d tries: %s)"
                    % (key, len(tries), sorted({str(o["status"]) for o in tries})))
            continue
        w = max(writes, key=lambda o: o["t1"])
        for node in names:
            reads = [o for o in final if o["k"] == key and o["f"] == "read" and
                     o["node"] == node and o["t0"] > w["t1"]]
            answered = [o for o in reads if o["out"] in ("ok", "miss")]
            if not answered:
                rep.add("final", "%s did not answer a read of %s after the heal (%d tries: %s)"
                        % (node, key, len(reads), sorted({str(o["status"]) for o in reads})))
                continue
            for r in answered:
                if r["out"] == "ok" and r["v"] == w["v"]:
                    continue
                u = attempts.get(r["v"]) if isinstance(r.get("v"), str) else None
                if r["out"] == "ok" and u is not None and u["out"] != "ok" and \
                        int(r["version"]) > int(w["version"]):
                    continue  # an unacknowledged write the home applied after the final one
                rep.add("final", "%s: %s's read at %s..%s returned %r (version %s), not the "
                        "final write %r (version %s, completed at %s)"
                        % (key, node, _t(r["t0"]), _t(r["t1"]), r.get("v"), r.get("version"),
                           w["v"], w["version"], _t(w["t1"])))


# ---------------------------------------------------------------- entry point

def check(events):
    """Returns (problems, summary line) for a run-cache history."""
    meta = next((e for e in events if e.get("ev") == "meta"), {})
    ops = [e for e in events if e.get("ev") == "op"]
    states = [e for e in events if e.get("ev") == "state"]
    rep = _Report()
    for o in ops:
        if o["out"] == "error":
            rep.add("unexpected answer", "%s %s of %s on %s at %s..%s: status %s %s"
                    % (o["f"], o.get("v"), o["k"], o["node"], _t(o["t0"]), _t(o["t1"]),
                       o.get("status"), o.get("body", "")))
    for e in states:
        _directory_form(e, rep)
        _same_instant(e, rep)
    keys = sorted({o["k"] for o in ops} | {e["k"] for e in states})
    ncopies = 0
    for key in keys:
        kops = [o for o in ops if o["k"] == key]
        done, unknown, reads = _versions(key, kops, rep)
        copies = _copies([e for e in states if e["k"] == key])
        ncopies += len(copies)
        _order(key, done, unknown, reads, copies, rep)
    _final(meta, ops, rep)
    count = lambda f, out: sum(1 for o in ops if o["f"] == f and o["out"] in out)
    summary = ("writes=%d (acknowledged %d, unknown %d) reads=%d (values %d, misses %d, "
               "unavailable %d) state reports=%d (valid copies %d) keys=%d"
               % (count("write", ("ok", "unknown", "error")), count("write", ("ok",)),
                  count("write", ("unknown",)), count("read", ("ok", "miss", "unknown", "error")),
                  count("read", ("ok",)), count("read", ("miss",)), count("read", ("unknown",)),
                  len(states), ncopies, len(keys)))
    return rep.problems(), summary
