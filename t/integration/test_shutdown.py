"""Integration: graceful shutdown on SIGTERM and SIGINT, bounded by [http] shutdown_grace_ms."""
import os
import signal
import socket
import ssl
import struct
import time
import unittest

import dsync

GRACE_MS = 1500


def dsyncd_pids_under(path):
    """Pids of running processes whose command line mentions `path` (our temp dir)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read()
            with open("/proc/%s/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if path.encode() in cmd and state != "Z":
            pids.append(int(pid))
    return pids


class Shutdown(dsync.TempDirCase):
    def start_node(self):
        return self.start(http={"shutdown_grace_ms": GRACE_MS})

    def assertGone(self, node):
        self.assertIsNotNone(node.proc.poll(), "still running")
        with self.assertRaises(ProcessLookupError):
            os.kill(node.pid, 0)

    def stop_timed(self, node, sig):
        start = time.monotonic()
        node.send_signal(sig)
        rc = node.wait(GRACE_MS / 1000 + 5)
        return rc, time.monotonic() - start

    def test_sigterm_exits_0_promptly_when_idle(self):
        node = self.start_node()
        self.assertEqual(node.request("GET", "/health").status, 200)
        rc, elapsed = self.stop_timed(node, signal.SIGTERM)
        self.assertEqual(rc, 0, node.stderr())
        self.assertLess(elapsed, GRACE_MS / 1000, "an idle node waited for the grace period")
        log = node.stderr()
        self.assertIn("shutting down", log)
        self.assertIn("SIGTERM", log)
        self.assertIn("stopped", log)
        self.assertGone(node)
        node.kill()

    def test_sigint_exits_0_promptly_when_idle(self):
        node = self.start_node()
        rc, elapsed = self.stop_timed(node, signal.SIGINT)
        self.assertEqual(rc, 0, node.stderr())
        self.assertLess(elapsed, GRACE_MS / 1000)
        self.assertIn("SIGINT", node.stderr())
        self.assertGone(node)
        node.kill()

    def test_idle_keep_alive_connections_are_closed_at_shutdown(self):
        node = self.start_node()
        c = node.raw()
        try:
            c.send(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertEqual(c.read_response().status, 200)
            rc, elapsed = self.stop_timed(node, signal.SIGTERM)
            self.assertEqual(rc, 0, node.stderr())
            self.assertLess(elapsed, GRACE_MS / 1000, "an idle connection held the shutdown")
            self.assertTrue(c.closed_by_peer(1))
        finally:
            c.close()
        node.kill()

    def test_a_half_sent_request_does_not_hold_the_shutdown(self):
        node = self.start_node()
        c = node.raw()
        try:
            c.send(b"GET /health HTTP/1.1\r\nHost: a\r\nX-Partial: ")
            time.sleep(0.1)
            rc, elapsed = self.stop_timed(node, signal.SIGTERM)
            self.assertEqual(rc, 0, node.stderr())
            self.assertLess(elapsed, GRACE_MS / 1000 + 0.5)
        finally:
            c.close()
        node.kill()

    def test_a_client_that_does_not_read_cannot_keep_it_alive_past_the_grace_period(self):
        node = self.start_node()
        c = node.raw()
        try:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            # many pipelined requests whose answers are never read: the node's output fills up
            c.sock.settimeout(0.5)
            try:
                for _ in range(400):
                    c.sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n" * 50)
            except (socket.timeout, TimeoutError, ssl.SSLError, OSError):
                pass
            time.sleep(0.3)
            start = time.monotonic()
            node.send_signal(signal.SIGTERM)
            # while draining it accepts no new clients
            time.sleep(0.2)
            refused = False
            try:
                other = node.raw(timeout=0.5)
                other.send(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
                other.read_response()
                other.close()
            except (ssl.SSLError, OSError, EOFError):
                refused = True
            self.assertTrue(refused, "a new connection was served during shutdown")
            rc = node.wait(GRACE_MS / 1000 + 5)
            elapsed = time.monotonic() - start
            self.assertEqual(rc, 0, node.stderr())
            self.assertGreater(elapsed, GRACE_MS / 1000 * 0.8,
                               "exited before the grace period while an answer was pending")
            self.assertLess(elapsed, GRACE_MS / 1000 + 1.5, "grace period not enforced")
        finally:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        node.kill()

    def test_an_answer_in_flight_is_delivered_before_exit(self):
        node = self.start_node()
        c = node.raw()
        try:
            # many pipelined requests: the node is still writing answers when the signal arrives
            c.send(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n" * 1000)
            self.assertEqual(c.read_response().status, 200)
            node.send_signal(signal.SIGTERM)
            got = 1
            try:
                while True:
                    r = c.read_response()
                    self.assertEqual(r.status, 200)
                    self.assertTrue(r.body.endswith(b"\n"), "a truncated answer")
                    got += 1
            except EOFError:
                pass
            self.assertGreater(got, 1, "no answer delivered after the signal")
            self.assertEqual(c.buf, b"", "a partial response was left on the wire")
            self.assertEqual(node.wait(GRACE_MS / 1000 + 5), 0, node.stderr())
        finally:
            c.close()
        node.kill()

    def test_more_signals_during_shutdown_do_not_change_the_exit_status(self):
        node = self.start_node()
        node.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_MS / 1000 + 5
        while node.proc.poll() is None and time.monotonic() < deadline:
            node.send_signal(signal.SIGINT)  # an impatient operator pressing Ctrl-C
            time.sleep(0.001)
        self.assertEqual(node.wait(1), 0, node.stderr())
        node.kill()

    def test_the_port_is_free_again_after_exit(self):
        node = self.start_node()
        port = node.port
        self.assertEqual(node.stop(), 0)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))

    def test_no_dsyncd_process_is_left_behind(self):
        nodes = [self.start_node() for _ in range(3)]
        for n in nodes:
            self.assertEqual(n.stop(), 0)
        self.assertEqual(dsyncd_pids_under(self.tmp), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
