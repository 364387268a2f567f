"""Helpers for the queue role's integration tests: real redis-server shards on free ports, queue
nodes over them, and a small JSON client for the queue API."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import dsync

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


class Redis:
    """A redis-server on 127.0.0.1:<free port> with its data in its own directory.
    strict: AOF with appendfsync always (the documented strict profile)."""

    def __init__(self, root, strict=True):
        self.port = dsync.free_port()
        self.dir = tempfile.mkdtemp(prefix="redis-%d-" % self.port, dir=root)
        self.strict = strict
        self.proc = None
        self.start()

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        args = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--protected-mode", "no", "--loglevel", "warning",
                "--logfile", os.path.join(self.dir, "redis.log")]
        if self.strict:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.cli("PING").strip() == "PONG":
                return
            time.sleep(0.05)
        raise AssertionError("redis-server on port %d did not start" % self.port)

    def cli(self, *args):
        r = subprocess.run(["redis-cli", "-p", str(self.port)] + [str(a) for a in args],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=10)
        return r.stdout

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()


class Client:
    """A keep-alive HTTPS connection to one queue node speaking the queue API."""

    def __init__(self, node, timeout=40.0):
        self.node = node
        self.conn = node.connection(timeout=timeout)

    def call(self, method, path, body=None):
        data = None if body is None else (body if isinstance(body, (bytes, str)) else json.dumps(body))
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        try:
            r = dsync.do(self.conn, method, path, data, hdrs)
        except Exception:
            self.conn.close()
            raise
        return r

    def produce(self, queue, messages):
        return self.call("POST", "/queue/produce", {"queue": queue, "messages": messages})

    def consume(self, queue, group, consumer, max=10, wait_ms=0, visibility_ms=None):
        body = {"queue": queue, "group": group, "consumer": consumer, "max": max,
                "wait_ms": wait_ms}
        if visibility_ms is not None:
            body["visibility_ms"] = visibility_ms
        r = self.call("POST", "/queue/consume", body)
        if r.status != 200:
            raise AssertionError("consume: %r %r" % (r.status, r.body[:300]))
        return r.json()["messages"]

    def ack(self, queue, group, ids):
        r = self.call("POST", "/queue/ack", {"queue": queue, "group": group, "ids": ids})
        if r.status != 200:
            raise AssertionError("ack: %r %r" % (r.status, r.body[:300]))
        return r.json()["acked"]

    def stats(self, queue):
        r = self.call("GET", "/queue/%s/stats" % queue)
        if r.status != 200:
            raise AssertionError("stats: %r %r" % (r.status, r.body[:300]))
        return r.json()

    def close(self):
        self.conn.close()


class QueueCase(dsync.TempDirCase):
    """Starts `shards` redis-servers per test (stopped after it) and queue nodes over them."""

    shards = 3
    strict = True

    def setUp(self):
        super().setUp()
        self.redis = [Redis(self.tmp, self.strict) for _ in range(self.shards)]

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            for r in self.redis:
                r.stop()

    def queue_overrides(self, node_id="q1", http=None, **queue):
        q = {"partitions": 4, "housekeeping_ms": 100, "redis_timeout_ms": 1000}
        q.update(queue)
        o = {"node": {"id": node_id, "role": "queue"},
             "redis": {"shards": ",".join(r.addr for r in self.redis)},
             "queue": q}
        if http:
            o["http"] = http
        return o

    def start_queue(self, port=None, node_id="q1", env=None, http=None, **queue):
        """A single queue node over this test's shards; queue: [queue] keys."""
        node = self.start(port=port, env=env, **self.queue_overrides(node_id, http, **queue))
        self.wait_ready(node)
        return node

    def wait_ready(self, node, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = node.request("GET", "/ready")
            if r.status == 200:
                return
            time.sleep(0.05)
        raise AssertionError("queue node not ready: %s" % node.stderr()[-2000:])

    def drain(self, client, queue, group, consumer="drainer", idle_s=1.5, limit_s=30.0, ack=True):
        """Consume until nothing came for idle_s; returns the messages (acked if ack)."""
        got, last, start = [], time.monotonic(), time.monotonic()
        while time.monotonic() - last < idle_s and time.monotonic() - start < limit_s:
            msgs = client.consume(queue, group, consumer, max=100, wait_ms=200)
            if msgs:
                last = time.monotonic()
                got.extend(msgs)
                if ack:
                    client.ack(queue, group, [m["id"] for m in msgs])
        return got
