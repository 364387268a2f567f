"""Checks of the lock table as the observers saw it (GET /lock, a linearizable read), added to
t/integration/lockcheck.py's checks of the clients' history:

  1. no observed state has two holders of a resource unless all of them hold it shared;
  2. reads are linearizable for tokens: if observation A finished before observation B began, every
     holder of a resource that B shows and A does not must have a token above all of A's tokens of
     that resource (tokens only grow, and a hold that existed at both read points would be in A) --
     a node answering from a stale table (an old leader in a minority) breaks this.

Events are lockcheck's {"ev":"observe","t0","t1","locks":[[resource, client, mode, token], ...]}.
"""


def _by_resource(locks):
    out = {}
    for r, c, m, tok in locks:
        out.setdefault(r, []).append((c, m, int(tok)))
    return out


def check_states(observations, problems):
    for o in observations:
        for r, hs in _by_resource(o["locks"]).items():
            if len(hs) > 1 and any(m != "shared" for _, m, _ in hs):
                problems.append("observed at %d: %s held by %r at once" % (o["t0"], r, hs))


def check_read_order(observations, problems):
    obs = sorted(observations, key=lambda o: o["t0"])
    tables = [{r: {t for _, _, t in hs} for r, hs in _by_resource(o["locks"]).items()}
              for o in obs]
    by_end = sorted(range(len(obs)), key=lambda i: obs[i]["t1"])
    for j, b in enumerate(obs):
        for i in by_end:
            a = obs[i]
            if a["t1"] >= b["t0"]:
                break
            for r, toks in tables[i].items():
                fresh = tables[j].get(r, set()) - toks
                low = [t for t in fresh if t <= max(toks)]
                if low:
                    problems.append("stale read: %s token(s) %s seen at %d..%d, after a read "
                                    "ending at %d had already seen token %d"
                                    % (r, sorted(low), b["t0"], b["t1"], a["t1"], max(toks)))
                    return


def check(events):
    """Returns the list of problems found in the observations of a history."""
    observations = [e for e in events if e.get("ev") == "observe"]
    problems = []
    check_states(observations, problems)
    check_read_order(observations, problems)
    return problems
