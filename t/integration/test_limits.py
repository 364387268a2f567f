"""Integration: resource limits.  Under a flood of connections, pipelined requests whose answers
are never read, and many bodies at and over max_body at once, a node keeps answering /health on a
connection of its own, and its peak resident memory (VmHWM) stays under the bound that README's
limits section states:

    peak RSS <= idle RSS + 16 MiB
                + max_connections * (2 * (max_header_bytes + max_body) + 1 MiB + 128 KiB)

Per connection: the unparsed input (the server stops reading once it holds one whole request) and
the copy of the request being handled; the answers queued for a client that does not read them
(the server stops reading above 1 MiB; one answer may cross it: 64 KiB allowed, /metrics is about
30 KiB); the TLS and bufferevent state (64 KiB allowed, about 32 KiB measured).  The test with the
connection limit itself is in test_hostile.py."""
import collections
import http.client
import select
import socket
import ssl
import subprocess
import threading
import time
import unittest

import dsync

KIB, MIB = 1024, 1024 * 1024
OUTPUT_HIGH_WATER = 1 * MIB  # src/net/server.c: reading stops while more answers than this wait
ANSWER_MAX = 64 * KIB        # the largest single answer of the routes used here
TLS_CONN = 64 * KIB          # OpenSSL, bufferevent and connection state
SLACK = 16 * MIB             # allocator arenas and caches beyond the idle RSS
MAX_HEADER_BYTES = 16384     # the default


def per_connection(max_body):
    """The bound's share of one connection, in bytes."""
    return 2 * (MAX_HEADER_BYTES + max_body) + OUTPUT_HIGH_WATER + ANSWER_MAX + TLS_CONN


def proc_memory(pid):
    """{"VmRSS": bytes, "VmHWM": bytes} of a process, from /proc/<pid>/status."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * KIB
    return out


def mib(n):
    return "%.1f MiB" % (n / MIB)


def asan_build():
    """True for an AddressSanitizer build: its shadow memory and quarantine of freed blocks make
    its resident size say nothing about the server's buffers."""
    r = subprocess.run(["ldd", dsync.binary()], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       text=True)
    return "libasan" in r.stdout


class HealthProbe(threading.Thread):
    """GET /health on a fresh connection every `interval` seconds during an attack; keeps the
    longest time /health went unanswered (from the start, between answers, and to the end)."""

    def __init__(self, node, interval=0.1, timeout=3.0):
        super().__init__(daemon=True)
        self.node, self.interval, self.timeout = node, interval, timeout
        self.halt = threading.Event()
        self.answers, self.failures, self.longest_gap = 0, collections.Counter(), 0.0
        self.last_ok = time.monotonic()

    def run(self):
        while not self.halt.is_set():
            try:
                r = self.node.request("GET", "/health", timeout=self.timeout)
                ok = r.status == 200
                if not ok:
                    self.failures["status %d" % r.status] += 1
            except (OSError, ssl.SSLError, http.client.HTTPException) as e:
                ok = False
                self.failures[type(e).__name__] += 1
            if ok:
                now = time.monotonic()
                self.longest_gap = max(self.longest_gap, now - self.last_ok)
                self.last_ok = now
                self.answers += 1
            self.halt.wait(self.interval)

    def finish(self):
        self.halt.set()
        self.join(self.timeout + 5)
        self.longest_gap = max(self.longest_gap, time.monotonic() - self.last_ok)
        return self

    def describe(self):
        return "%d answers, longest gap %.2f s, failures %s" % (
            self.answers, self.longest_gap, dict(self.failures))


class LimitsCase(dsync.TempDirCase):
    """One node per class with these [http] limits; `bound` is README's memory bound for it."""
    MAX_CONNECTIONS = 16
    MAX_BODY = 65536
    HEADER_TIMEOUT_MS = 1000
    IDLE_TIMEOUT_MS = 2000

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        path, port = cls.config(http={"max_connections": cls.MAX_CONNECTIONS,
                                      "max_body": cls.MAX_BODY,
                                      "max_header_bytes": MAX_HEADER_BYTES,
                                      "header_timeout_ms": cls.HEADER_TIMEOUT_MS,
                                      "idle_timeout_ms": cls.IDLE_TIMEOUT_MS})
        cls.node = dsync.Node(["--config", path], port, cls.certs.ca)
        for p in ("/health", "/status", "/metrics") * 3:  # warm up the routes used here
            cls.node.request("GET", p)
        cls.idle = proc_memory(cls.node.pid)["VmHWM"]
        cls.asan = asan_build()
        cls.bound = cls.idle + SLACK + cls.MAX_CONNECTIONS * per_connection(cls.MAX_BODY)

    @classmethod
    def tearDownClass(cls):
        alive, log = cls.node.alive(), cls.node.stderr()
        super().tearDownClass()  # also: exits 0 on SIGTERM
        if not alive:
            raise AssertionError("dsyncd died under the attacks:\n" + log)

    def assertMemoryBounded(self, what):
        if self.asan:
            print("\nnote: AddressSanitizer build: the memory bound is not checked (%s)" % what)
            return
        mem = proc_memory(self.node.pid)
        self.assertLessEqual(
            mem["VmHWM"], self.bound,
            "%s: peak RSS %s (now %s) is over the bound %s (idle %s + 16 MiB + %d connections "
            "x %s)" % (what, mib(mem["VmHWM"]), mib(mem["VmRSS"]), mib(self.bound),
                       mib(self.idle), self.MAX_CONNECTIONS, mib(per_connection(self.MAX_BODY))))

    def assertHealthKept(self, probe, longest, what):
        self.assertTrue(self.node.alive(), "dsyncd died: " + self.node.stderr()[-3000:])
        self.assertGreater(probe.answers, 0, "%s: /health never answered (%s)"
                           % (what, probe.describe()))
        self.assertLess(probe.longest_gap, longest, "%s: /health went unanswered too long (%s)"
                        % (what, probe.describe()))

    def metrics(self, timeout=5.0):
        """GET /metrics, retried while the connection limit refuses the connection."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.node.metrics()
            except (OSError, ssl.SSLError, http.client.HTTPException):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def wait_connections_closed(self, limit_s, what):
        """The node closes the attack's connections on its own (only the metrics request's
        own connection stays open) within limit_s."""
        deadline = time.monotonic() + limit_s
        while True:
            open_now = self.metrics().value("dsyncd_http_connections_open")
            if open_now <= 1:
                return
            if time.monotonic() > deadline:
                self.fail("%s: %d connections still open after %.1f s: the node did not close "
                          "them" % (what, open_now, limit_s))
            time.sleep(0.1)


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


class ConnectionFlood(LimitsCase):
    MAX_CONNECTIONS = 256
    FLOOD = 1000

    def test_a_flood_of_connections_past_max_connections_keeps_health_and_memory_bounded(self):
        before = self.metrics().value("dsyncd_http_connections_refused_total")
        probe = HealthProbe(self.node)
        held, outcomes = [], collections.Counter()
        probe.start()
        try:
            start = time.monotonic()
            for i in range(self.FLOOD):
                kind = ("silent before TLS", "half a request", "connect and close")[i % 3]
                try:
                    if kind == "silent before TLS":
                        held.append(socket.create_connection(("127.0.0.1", self.node.port), 3))
                    elif kind == "half a request":
                        c = self.node.raw(timeout=3)
                        held.append(c.sock)
                        c.send(b"GET /health HTTP/1.1\r\nHost: a\r\nX-Stall: ")
                    else:
                        socket.create_connection(("127.0.0.1", self.node.port), 3).close()
                    outcomes[kind] += 1
                except (OSError, ssl.SSLError):
                    outcomes[kind + ": refused"] += 1
            flood_s = time.monotonic() - start
            # the node closes silent and stalled connections after header_timeout_ms, even
            # though the attacker keeps them open
            self.wait_connections_closed(self.HEADER_TIMEOUT_MS / 1000 + 3, "flood")
        finally:
            probe.finish()
            close_all(held)
        what = "flood of %d connections (%s) over %.1f s" % (self.FLOOD, dict(outcomes), flood_s)
        # every slot can be taken by a connection inside its header timeout: /health waits at
        # most for the flood to stop and one header timeout
        self.assertHealthKept(probe, flood_s + self.HEADER_TIMEOUT_MS / 1000 + 2.0, what)
        self.assertMemoryBounded(what)
        refused = self.metrics().value("dsyncd_http_connections_refused_total") - before
        self.assertGreater(refused, 0, "%s: nothing was refused past max_connections" % what)
        self.assertEqual(self.node.request("GET", "/health").status, 200)


class Pipeliner(threading.Thread):
    """Sends `unit` over and over on one TLS connection and never reads, until `limit` bytes are
    sent ("limit"), a send stays blocked for `stall` seconds ("blocked": the node stopped
    reading) or the connection fails ("closed")."""

    def __init__(self, node, unit, limit, stall=1.0):
        super().__init__(daemon=True)
        self.conn = node.raw(timeout=stall)
        self.batch = unit * max(1, (256 * KIB) // len(unit))
        self.limit, self.sent, self.outcome = limit, 0, None

    def run(self):
        try:
            while self.sent < self.limit:
                self.conn.sock.sendall(self.batch)
                self.sent += len(self.batch)
            self.outcome = "limit"
        except (socket.timeout, TimeoutError):
            self.outcome = "blocked"
        except (OSError, ssl.SSLError):
            self.outcome = "closed"

    def describe(self):
        return "%s after %s" % (self.outcome, mib(self.sent))


class PipelinedRequests(LimitsCase):
    MAX_CONNECTIONS = 8
    LIMIT = 96 * MIB  # per connection: far more than the bound, so a node that buffers it fails

    def post(self, path, n):
        return (b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % (path, n)) + b"x" * n

    def test_pipelined_requests_whose_answers_are_never_read_do_not_grow_the_node(self):
        gets = [Pipeliner(self.node, b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n", self.LIMIT),
                Pipeliner(self.node, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", self.LIMIT)]
        posts = [Pipeliner(self.node, self.post(b"/health", self.MAX_BODY - 64), 32 * MIB)
                 for _ in range(2)]
        try:
            self.attack_with(gets, posts)
        finally:
            for p in gets + posts:
                p.conn.close()

    def attack_with(self, gets, posts):
        before = self.metrics().value("dsyncd_http_read_paused_total")
        probe = HealthProbe(self.node)
        probe.start()
        try:
            for p in gets + posts:
                p.start()
            for p in gets + posts:
                p.join(60)
        finally:
            probe.finish()
        what = "pipeliners (GET: %s; POST: %s)" % (", ".join(p.describe() for p in gets),
                                                   ", ".join(p.describe() for p in posts))
        self.assertHealthKept(probe, 3.0, what)
        self.assertMemoryBounded(what)
        for p in gets:
            self.assertNotEqual(p.outcome, "limit", "%s: the node took every pipelined request "
                                "although their answers were not read" % what)
            self.assertIsNotNone(p.outcome, "%s: a pipeliner hung" % what)
        paused = self.metrics().value("dsyncd_http_read_paused_total") - before
        self.assertGreater(paused, 0, "%s: dsyncd_http_read_paused_total did not move" % what)
        # the pipeliners keep their connections open and unread: the node closes them once no
        # answer could be written for idle_timeout_ms
        self.wait_connections_closed(self.IDLE_TIMEOUT_MS / 1000 + 3, what)

    def test_a_backed_up_pipeline_is_answered_in_full_and_in_order_once_the_client_reads(self):
        """200 x GET /metrics (6 MiB of answers) then 200 bodies near max_body (13 MiB): the
        node stops reading on its full output and its full input, and resumes as the client
        reads; every request gets its answer, in order."""
        n_get, n_post = 200, 200
        data = (b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n" * n_get +
                self.post(b"/health", self.MAX_BODY - 64) * n_post)
        expect = [200] * n_get + [405] * n_post
        before = self.metrics().value("dsyncd_http_read_paused_total")
        c = self.node.raw()
        sock = c.sock
        sock.setblocking(False)
        sent, buf, statuses = 0, bytearray(), []
        start = time.monotonic()
        read_from = start + 1.0  # let the node's output and input back up first
        deadline = start + 30
        try:
            while len(statuses) < len(expect) and time.monotonic() < deadline:
                reading = time.monotonic() >= read_from
                want_w = [sock] if sent < len(data) else []
                select.select([sock] if reading else [], want_w, [], 0.05)
                if sent < len(data):
                    try:
                        sent += sock.send(data[sent:sent + 64 * KIB])
                    except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                        pass
                if reading:
                    self.read_available(sock, buf, statuses)
        finally:
            c.close()
        self.assertEqual(len(statuses), len(expect),
                         "%d of %d answers after 30 s (%d of %d bytes sent): the pipeline "
                         "stalled" % (len(statuses), len(expect), sent, len(data)))
        self.assertEqual(statuses, expect, "answers out of order or wrong")
        paused = self.metrics().value("dsyncd_http_read_paused_total") - before
        self.assertGreater(paused, 0, "the node never stopped reading: the test did not back "
                           "the pipeline up")

    @staticmethod
    def read_available(sock, buf, statuses):
        """Read what is there and append the status of every complete answer in buf."""
        while True:
            try:
                d = sock.recv(1 << 20)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if not d:
                raise AssertionError("the node closed the connection after %d answers"
                                     % len(statuses))
            buf += d
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            length = [int(h.split(":", 1)[1]) for h in head
                      if h.lower().startswith("content-length:")][0]
            if len(buf) < end + 4 + length:
                return
            statuses.append(int(head[0].split()[1]))
            del buf[:end + 4 + length]


class LargeBodies(LimitsCase):
    MAX_CONNECTIONS = 64
    MAX_BODY = 256 * KIB
    CLIENTS = 48  # at once, three rounds each

    def one_client(self, kind, results):
        head = b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        try:
            for _ in range(3):
                c = self.node.raw(timeout=10)
                try:
                    if kind == "at max_body":
                        c.send(head + b"Content-Length: %d\r\n\r\n" % self.MAX_BODY +
                               b"x" * self.MAX_BODY)
                    elif kind == "over max_body, head only":
                        c.send(head + b"Content-Length: %d\r\n\r\n" % (self.MAX_BODY + 1))
                    else:
                        c.send_until_answered(head + b"Content-Length: %d\r\n\r\n"
                                              % (4 * self.MAX_BODY) + b"x" * 4 * self.MAX_BODY,
                                              chunk=64 * KIB)
                    results[kind].append(c.read_response().status)
                finally:
                    c.close()
        except (OSError, ssl.SSLError, EOFError) as e:
            results[kind].append(type(e).__name__)

    def test_many_bodies_at_and_over_max_body_at_once_keep_health_and_memory_bounded(self):
        kinds = ["at max_body", "over max_body, head only", "over max_body, sent anyway"]
        results = {k: [] for k in kinds}
        threads = [threading.Thread(target=self.one_client, args=(kinds[i % 3], results),
                                    daemon=True) for i in range(self.CLIENTS)]
        probe = HealthProbe(self.node)
        probe.start()
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        finally:
            probe.finish()
        what = "%d clients x 3 bodies at and over max_body (%s)" % (
            self.CLIENTS, {k: dict(collections.Counter(v)) for k, v in results.items()})
        self.assertHealthKept(probe, 3.0, what)
        self.assertMemoryBounded(what)
        per_kind = self.CLIENTS // 3 * 3  # clients of a kind x 3 rounds
        self.assertEqual(results["at max_body"], [405] * per_kind, what)
        self.assertEqual(results["over max_body, head only"], [413] * per_kind, what)
        self.assertEqual(results["over max_body, sent anyway"], [413] * per_kind, what)


if __name__ == "__main__":
    unittest.main(verbosity=2)
