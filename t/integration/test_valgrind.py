"""Integration: valgrind memcheck over a node's whole life.  A lock node, and a queue node and a
cache node over a redis-server the test starts, run under valgrind: start, a little load over
HTTPS on the role's main routes (answers and errors; for lock and queue also a long poll whose
client goes away and one still waiting at the signal), SIGTERM.  The node exits 0 and valgrind
reports no errors and no definitely or indirectly lost bytes.  Exits 77 (skipped) when valgrind
is not installed or DSYNCD is an AddressSanitizer build, which valgrind cannot run."""
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import unittest

VALGRIND = shutil.which("valgrind")
if not VALGRIND:
    print("SKIP: valgrind is not installed (apt-get install valgrind); this test needs it")
    sys.exit(77)
_ldd = subprocess.run(["ldd", os.environ.get("DSYNCD", "")], stdout=subprocess.PIPE,
                      stderr=subprocess.DEVNULL, text=True).stdout
if "libasan" in _ldd:
    print("SKIP: %s is an AddressSanitizer build, which valgrind cannot run"
          % os.environ["DSYNCD"])
    sys.exit(77)
os.environ.setdefault("DSYNC_SLOW", "1")  # before dsync reads it: 30 s to answer /health

import dsync  # noqa: E402
import queueutil  # noqa: E402

VALGRIND_ARGS = ["--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
                 "--show-leak-kinds=definite,indirect", "--error-exitcode=99",
                 "--num-callers=30"]
STOP_TIMEOUT = 60  # SIGTERM to exit: the shutdown grace plus valgrind's leak search
JSON = {"Content-Type": "application/json"}


class UnderValgrind(dsync.TempDirCase):
    """Nodes of this class run as `valgrind ... dsyncd`: DSYNCD points at a wrapper script while
    the class runs, and each node's report goes to valgrind-<pid>.log."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.real = dsync.binary()
        cls.logs = os.path.join(cls.tmp, "valgrind")
        os.makedirs(cls.logs)
        wrapper = os.path.join(cls.tmp, "dsyncd-under-valgrind")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec %s %s --log-file=%s/valgrind-%%p.log %s \"$@\"\n"
                    % (VALGRIND, " ".join(VALGRIND_ARGS), cls.logs, cls.real))
        os.chmod(wrapper, stat.S_IRWXU)
        os.environ["DSYNCD"] = wrapper

    @classmethod
    def tearDownClass(cls):
        os.environ["DSYNCD"] = cls.real
        super().tearDownClass()

    def call(self, conn, method, path, body=None, expect=200):
        """One request on a keep-alive connection; asserts the status, returns the Response."""
        data = body if body is None or isinstance(body, bytes) else json.dumps(body)
        r = dsync.do(conn, method, path, data, JSON if data is not None else None)
        self.assertEqual(r.status, expect, "%s %s: %r" % (method, path, r))
        return r

    def wait_ready(self, node, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            r = node.request("GET", "/ready", timeout=10)
            if r.status == 200:
                return
            if time.monotonic() > deadline:
                self.fail("not ready after %.0f s: %r\n%s" % (timeout, r, node.stderr()[-3000:]))
            time.sleep(0.2)

    def send_long_poll(self, node, method, path, body=None):
        """Send a request that the node answers only later; returns the raw connection."""
        c = node.raw(timeout=STOP_TIMEOUT)
        data = b"" if body is None else json.dumps(body).encode()
        c.send(b"%s %s HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (method.encode(), path.encode(), len(data), data))
        return c

    def abandoned_request(self, node, method, path, body=None):
        """A long poll whose client goes away before the answer."""
        c = self.send_long_poll(node, method, path, body)
        time.sleep(0.5)
        c.close()

    def assertCleanExit(self, node):
        """SIGTERM; exit status 0 and a valgrind report without errors or lost blocks."""
        node.send_signal(signal.SIGTERM)
        rc = node.wait(STOP_TIMEOUT)
        stderr = node.stderr()
        node.kill()
        self.assertIsNotNone(rc, "dsyncd under valgrind ignored SIGTERM for %d s:\n%s"
                             % (STOP_TIMEOUT, stderr[-3000:]))
        path = os.path.join(self.logs, "valgrind-%d.log" % node.pid)
        with open(path, errors="replace") as f:
            report = f.read()
        where = "\nvalgrind report (%s):\n%s\ndsyncd stderr:\n%s" % (path, report[-12000:],
                                                                    stderr[-2000:])
        self.assertEqual(rc, 0, "exit status %s (99: valgrind found errors or leaks)%s"
                         % (rc, where))
        errors = re.search(r"ERROR SUMMARY: ([\d,]+) errors", report)
        self.assertIsNotNone(errors, "no ERROR SUMMARY in the valgrind report" + where)
        self.assertEqual(errors.group(1), "0", "valgrind found errors" + where)
        if "All heap blocks were freed" not in report:
            for kind in ("definitely", "indirectly"):
                lost = re.search(r"%s lost: ([\d,]+) bytes" % kind, report)
                self.assertIsNotNone(lost, "no LEAK SUMMARY in the valgrind report" + where)
                self.assertEqual(lost.group(1), "0", "%s lost bytes" % kind + where)


class LockNodeUnderValgrind(UnderValgrind):
    def test_a_lock_node_under_load_shuts_down_without_leaks_or_errors(self):
        node = self.start(http={"shutdown_grace_ms": 500})
        self.wait_ready(node)
        conn = node.connection(timeout=30)
        try:
            for p in ("/health", "/ready", "/status", "/metrics"):
                self.call(conn, "GET", p)
            tokens = {}
            for r in ("orders", "stock"):
                g = self.call(conn, "POST", "/lock/acquire",
                              {"resource": r, "client_id": "w1", "mode": "exclusive",
                               "ttl_ms": 30000, "request_id": "req-" + r}).json()
                tokens[r] = g["token"]
                self.call(conn, "GET", "/lock/" + r)
                self.call(conn, "POST", "/lock/renew", {"resource": r, "client_id": "w1",
                                                        "token": tokens[r], "ttl_ms": 30000})
                self.call(conn, "POST", "/lock/check", {"resource": r, "token": tokens[r]})
            for c in ("r1", "r2"):
                self.call(conn, "POST", "/lock/acquire", {"resource": "shared", "client_id": c,
                                                          "mode": "shared", "ttl_ms": 30000})
            self.call(conn, "POST", "/lock/acquire", {"resource": "orders", "client_id": "w2",
                                                      "ttl_ms": 30000}, expect=409)
            self.call(conn, "POST", "/lock/acquire", {"resource": "orders", "client_id": "w2",
                                                      "ttl_ms": 30000, "wait_ms": 300},
                      expect=409)  # wait_timeout
            self.call(conn, "GET", "/lock/orders/watch?token=%d&wait_ms=200" % tokens["orders"])
            self.call(conn, "GET", "/lock")
            self.call(conn, "POST", "/lock/release", {"resource": "stock", "client_id": "w1",
                                                      "token": tokens["stock"]})
            self.call(conn, "POST", "/lock/acquire", b"{not json", expect=400)
            self.call(conn, "POST", "/lock/acquire", {"resource": "x", "client_id": "c",
                                                      "mode": "neither"}, expect=400)
            self.call(conn, "GET", "/nope", expect=404)
            self.call(conn, "DELETE", "/lock/orders", expect=405)
            self.abandoned_request(node, "POST", "/lock/acquire",
                                   {"resource": "orders", "client_id": "w3", "ttl_ms": 30000,
                                    "wait_ms": 20000})
            self.abandoned_request(node, "GET", "/lock/orders/watch?token=%d&wait_ms=20000"
                                   % tokens["orders"])
        finally:
            conn.close()
        waiting = self.send_long_poll(node, "POST", "/lock/acquire",
                                      {"resource": "orders", "client_id": "w4",
                                       "ttl_ms": 30000, "wait_ms": 20000})
        try:
            self.assertCleanExit(node)
        finally:
            waiting.close()


class WithRedis(UnderValgrind):
    """A redis-server per test (stopped after it), for the roles that keep their data there."""

    def setUp(self):
        super().setUp()
        self.redis = queueutil.Redis(self.tmp, strict=False)

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self.redis.stop()


class QueueNodeUnderValgrind(WithRedis):
    def test_a_queue_node_under_load_shuts_down_without_leaks_or_errors(self):
        node = self.start(node={"id": "q1", "role": "queue"},
                          redis={"shards": self.redis.addr},
                          queue={"partitions": 2, "redis_timeout_ms": 5000},
                          http={"shutdown_grace_ms": 500})
        self.wait_ready(node)
        conn = node.connection(timeout=30)
        try:
            for p in ("/health", "/ready", "/status", "/metrics"):
                self.call(conn, "GET", p)
            self.call(conn, "POST", "/queue/consume", {"queue": "jobs", "group": "g",
                                                       "consumer": "c1", "wait_ms": 0})
            self.call(conn, "POST", "/queue/produce",
                      {"queue": "jobs", "messages": [{"key": "k%d" % (i % 3), "body": {"n": i}}
                                                     for i in range(10)]}, expect=201)
            self.call(conn, "POST", "/queue/produce", {"queue": "jobs", "body": "one",
                                                       "dedup_id": "d1"}, expect=201)
            got = self.call(conn, "POST", "/queue/consume",
                            {"queue": "jobs", "group": "g", "consumer": "c1", "max": 6,
                             "wait_ms": 500}).json()["messages"]
            self.assertTrue(got, "nothing to consume")
            self.call(conn, "POST", "/queue/ack", {"queue": "jobs", "group": "g",
                                                   "ids": [m["id"] for m in got[:3]]})
            self.call(conn, "POST", "/queue/nack", {"queue": "jobs", "group": "g",
                                                    "ids": [m["id"] for m in got[3:]]})
            self.call(conn, "GET", "/queue/jobs/stats")
            self.call(conn, "POST", "/queue/produce", b"[1,2", expect=400)
            self.call(conn, "POST", "/queue/consume", {"queue": "jobs"}, expect=400)
            self.call(conn, "GET", "/queue/jobs", expect=404)
            self.abandoned_request(node, "POST", "/queue/consume",
                                   {"queue": "empty", "group": "g", "consumer": "c2",
                                    "wait_ms": 20000})
        finally:
            conn.close()
        waiting = self.send_long_poll(node, "POST", "/queue/consume",
                                      {"queue": "empty", "group": "g", "consumer": "c3",
                                       "wait_ms": 20000})
        try:
            self.assertCleanExit(node)
        finally:
            waiting.close()


class CacheNodeUnderValgrind(WithRedis):
    def test_a_cache_node_under_load_shuts_down_without_leaks_or_errors(self):
        node = self.start(node={"id": "c1", "role": "cache"},
                          redis={"shards": self.redis.addr},
                          http={"shutdown_grace_ms": 500})
        self.wait_ready(node)
        conn = node.connection(timeout=30)
        try:
            for p in ("/health", "/ready", "/status", "/metrics"):
                self.call(conn, "GET", p)
            for i in range(5):
                self.call(conn, "PUT", "/cache/k%d" % i, {"value": {"n": i, "s": "x" * 100 * i}})
                self.call(conn, "GET", "/cache/k%d" % i)
            self.call(conn, "POST", "/cache/k0", {"value": [1, 2, 3]})
            self.call(conn, "HEAD", "/cache/k0")
            self.call(conn, "GET", "/cache/k1/state")
            self.call(conn, "DELETE", "/cache/k2")
            self.call(conn, "GET", "/cache/k2", expect=404)
            self.call(conn, "GET", "/cache/stats")
            self.call(conn, "PUT", "/cache/k3", b"{oops", expect=400)
            self.call(conn, "PATCH", "/cache/k3", {"value": 1}, expect=405)
        finally:
            conn.close()
        self.assertCleanExit(node)


if __name__ == "__main__":
    unittest.main(verbosity=2)
