"""Helpers for the cache role's integration tests: a cluster of cache-role dsyncd processes (the
lock tests' Cluster with cache configurations: every node lists every node in [cluster] seeds), an
optional redis-server as main memory, a JSON client of the cache API and a history checker."""
import json
import os
import time
import urllib.parse

import dsync
import lockutil
import queueutil


NO_BODY = object()


class CacheCluster(lockutil.Cluster):
    """Cache nodes node1..nodeN over `redis` (a queueutil.Redis, or None for the embedded store).
    cache: [cache] keys."""

    def __init__(self, base_dir, certs_dir, names, redis=None, cache=None, log_level="info"):
        super().__init__(base_dir, certs_dir, names, log_level=log_level)
        self.redis = redis
        self.cache_conf = dict(cache or {})

    def config_path(self, name, peers=None):
        path = os.path.join(self.dir, name + ".ini")
        sections = {
            "node": {"id": name, "role": "cache", "listen": "127.0.0.1:%d" % self.ports[name],
                     "advertise_url": self.url(name),
                     "data_dir": os.path.join(self.dir, name + "-data")},
            "tls": {"cert": os.path.join(self.certs, name + ".crt"),
                    "key": os.path.join(self.certs, name + ".key"), "ca": self.ca},
            "http": {"shutdown_grace_ms": 1000},
            "log": {"level": self.log_level, "audit_file": self.audit_path(name)},
            "cluster": {"seeds": ",".join(self.url(n) for n in (peers or self.names)),
                        "mac_key_file": os.path.join(self.certs, "mac.key")},
        }
        if self.redis:
            sections["redis"] = {"shards": self.redis.addr}
        if self.cache_conf:
            sections["cache"] = dict(self.cache_conf)
        dsync.write_file(path, dsync.ini_text(sections))
        return path

    # ------------------------------------------------------------------ readiness

    def members(self, name):
        """The live cache members node `name` puts in its ring (from /status), or None."""
        r = self.try_request(name, "GET", "/status", timeout=2.0)
        if r is None or r.status != 200:
            return None
        return sorted(m["name"] for m in r.json()["cache"]["members"])

    def wait_converged(self, names=None, timeout=20.0):
        """Every node of `names` (default: running) has exactly `names` in its ring, and writes go
        through (the homes' warm-up term is over)."""
        names = sorted(names or self.running())
        self.wait_for("ring of %s" % names,
                      lambda: all(self.members(n) == names for n in names), timeout=timeout)
        key = "converged-probe-%d" % int(time.monotonic() * 1000)
        for n in names:
            put_retry(self, n, key, n, timeout=timeout)

    # ------------------------------------------------------------------ cache client

    def cache(self, name, method, key, value=NO_BODY, suffix="", timeout=10.0):
        """One cache API call (value: the JSON value to write); returns (status, json or None)."""
        path = "/cache/" + urllib.parse.quote(key, safe="") + suffix
        body = None if value is NO_BODY else json.dumps({"value": value}).encode()
        r = self.request(name, method, path, body, timeout=timeout)
        try:
            j = r.json()
        except ValueError:
            j = None
        return r.status, j

    def get(self, name, key):
        return self.cache(name, "GET", key)

    def put(self, name, key, value):
        return self.cache(name, "PUT", key, value)

    def state(self, name, key):
        st, j = self.cache(name, "GET", key, suffix="/state")
        if st != 200:
            raise AssertionError("state of %r on %s: %r %r" % (key, name, st, j))
        return j

    def stats(self, name):
        r = self.request(name, "GET", "/cache/stats")
        if r.status != 200:
            raise AssertionError("stats: %r" % r)
        return r.json()


def retry(fn, what, timeout=15.0):
    """Call fn() until it returns (status, json) with status != 503; network errors retried."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last[0] != 503:
                return last
        except lockutil.NETWORK_ERRORS as e:
            last = e
        time.sleep(0.05)
    raise AssertionError("%s: still unavailable after %.0f s (last: %r)" % (what, timeout, last))


def put_retry(c, name, key, value, timeout=15.0):
    st, j = retry(lambda: c.put(name, key, value), "PUT %s on %s" % (key, name), timeout)
    if st != 200:
        raise AssertionError("PUT %s on %s: %r %r" % (key, name, st, j))
    return j


def get_retry(c, name, key, timeout=15.0):
    return retry(lambda: c.get(name, key), "GET %s on %s" % (key, name), timeout)


class CacheCase(lockutil.ClusterCase):
    """One redis-server per test (when `with_redis`) and cache clusters over it."""

    with_redis = True

    def setUp(self):
        super().setUp()
        self.redis = queueutil.Redis(self.tmp, strict=False) if self.with_redis else None

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            if self.redis:
                self.redis.stop()

    def cache_cluster(self, n=3, start=True, redis=True, **cache):
        c = CacheCluster(self.tmp, self.cluster_certs, ["node%d" % i for i in range(1, n + 1)],
                         redis=self.redis if redis else None, cache=cache)
        self.clusters.append(c)
        if start:
            c.start_all()
            c.wait_converged()
        return c


def check_history(history):
    """history: per key, a list of (start, end, kind, value, version) with kind "w" (completed
    write) or "r" (read; value None = not found).  Checks that versions of completed writes are
    distinct and ordered like real time (a write that ended before another began has a smaller
    version), and that every read returns a write that is not older than the last write completed
    before the read began, nor newer than the read itself (it began before the read ended).
    Returns a list of violations."""
    bad = []
    writes = sorted((h for h in history if h[2] == "w"), key=lambda h: h[4])
    by_version = {}
    for w in writes:
        if w[4] in by_version:
            bad.append("two writes got version %d: %r and %r" % (w[4], by_version[w[4]], w))
        by_version[w[4]] = w
    for a in writes:
        for b in writes:
            if a[1] < b[0] and a[4] >= b[4]:
                bad.append("write %r ended before %r began but has a version >= it" % (a, b))
    for r in (h for h in history if h[2] == "r"):
        before = [w for w in writes if w[1] < r[0]]
        floor = max((w[4] for w in before), default=0)
        if r[4] < floor:
            bad.append("read %r is older than version %d, completed before it began" % (r, floor))
        if r[4] and r[4] in by_version:
            w = by_version[r[4]]
            if w[3] != r[3]:
                bad.append("read %r returns a value other than its version's write %r" % (r, w))
            if w[0] > r[1]:
                bad.append("read %r returns a write that began after it ended: %r" % (r, w))
    return bad


def to_json(x):
    return json.dumps(x, sort_keys=True)
