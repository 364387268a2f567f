"""Integration: the hostile-input matrix.  Each case gets a clear JSON 4xx/5xx or a closed
connection, and after each one the node still answers /health."""
import socket
import ssl
import struct
import time
import unittest

import dsync

HEADER_TIMEOUT_MS = 1000
IDLE_TIMEOUT_MS = 700


class HostileInput(dsync.TempDirCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        path, port = cls.config(http={"header_timeout_ms": HEADER_TIMEOUT_MS,
                                           "idle_timeout_ms": IDLE_TIMEOUT_MS})
        cls.node = dsync.Node(["--config", path], port, cls.certs.ca)

    @classmethod
    def tearDownClass(cls):
        alive = cls.node.alive()
        log = cls.node.stderr()
        super().tearDownClass()  # also: exits 0 on SIGTERM after the whole matrix
        if not alive:
            raise AssertionError("dsyncd died during the hostile-input matrix:\n" + log)

    def tearDown(self):
        super().tearDown()
        self.assertStillServing()

    def assertStillServing(self):
        self.assertTrue(self.node.alive(), "dsyncd died:\n" + self.node.stderr())
        r = self.node.request("GET", "/health", timeout=3)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["status"], "ok")

    def refused(self, data, status, code, closes=True):
        """Send `data`, expect one JSON error `status`/`code`, then (if `closes`) a closed
        connection.  Returns the response."""
        c = self.node.raw(timeout=5)
        try:
            c.send_until_answered(data)
            try:
                r = c.read_response()
            except EOFError:
                self.fail("connection closed without an answer to %r" % data[:80])
            if isinstance(status, tuple):
                self.assertIn(r.status, status, r)
                status = r.status
            self.assertJsonError(r, status, code if isinstance(code, str) else code[status])
            if closes:
                self.assertEqual((r.header("Connection") or "").lower(), "close", r.headers)
                self.assertTrue(c.closed_by_peer(), "connection left open after %d" % r.status)
            return r
        finally:
            c.close()

    # ---- request line

    def test_a_malformed_request_line_is_400(self):
        self.refused(b"GARBAGE\r\n\r\n", 400, "bad_request")

    def test_a_request_line_without_a_version_is_400(self):
        self.refused(b"GET /health\r\nHost: a\r\n\r\n", 400, "bad_request")

    def test_a_request_line_with_a_double_space_is_400(self):
        self.refused(b"GET  /health HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request")

    def test_bad_characters_in_the_method_are_400(self):
        for m in (b"G{T", b"GE\x00T", b"G\xc3\xa9T", b"GET\t"):
            self.refused(m + b" /health HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request")

    def test_an_unknown_but_well_formed_method_gets_a_json_error(self):
        r = self.refused(b"get /health HTTP/1.1\r\nHost: a\r\n\r\n", (400, 405, 501),
                         {400: "bad_request", 405: "method_not_allowed", 501: "not_implemented"},
                         closes=False)
        self.assertIsNotNone(r)

    def test_http_2_0_request_line_is_505(self):
        self.refused(b"GET /health HTTP/2.0\r\nHost: a\r\n\r\n", 505, "http_version_not_supported")

    def test_the_http2_preface_is_refused(self):
        self.refused(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", (400, 505),
                     {400: "bad_request", 505: "http_version_not_supported"})

    def test_a_malformed_version_is_400(self):
        for v in (b"HTTP/1.1x", b"HTTP/1", b"HTTP/a.b", b"http/1.1", b"HTTP/11.1"):
            self.refused(b"GET /health " + v + b"\r\nHost: a\r\n\r\n", 400, "bad_request")

    def test_a_target_that_is_not_an_absolute_path_is_400(self):
        self.refused(b"GET health HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request")

    def test_bad_utf8_in_the_target_is_400(self):
        self.refused(b"GET /\xff\xfe\xc3( HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request")

    def test_a_nul_byte_in_the_target_is_400(self):
        self.refused(b"GET /hea\x00lth HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request")

    def test_control_bytes_in_the_target_are_400(self):
        for b in (b"\x01", b"\x1b", b"\x7f", b"\r"):
            self.refused(b"GET /a" + b + b"b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request")

    def test_a_flood_of_blank_lines_is_400(self):
        self.refused(b"\r\n" * 5000, (400, 431), {400: "bad_request", 431: "headers_too_large"})

    def test_a_9_kib_url_is_414(self):
        self.refused(b"GET /" + b"a" * 9 * 1024 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414,
                     "uri_too_long")

    def test_a_20_kib_url_is_414(self):
        self.refused(b"GET /" + b"a" * 20 * 1024 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414,
                     "uri_too_long")

    # ---- headers

    def test_ten_thousand_headers_are_431(self):
        head = b"GET /health HTTP/1.1\r\nHost: a\r\n" + b"".join(
            b"X-H%d: v\r\n" % i for i in range(10000)) + b"\r\n"
        self.refused(head, 431, "headers_too_large")

    def test_a_100_kib_header_line_is_431(self):
        self.refused(b"GET /health HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 100 * 1024 +
                     b"\r\n\r\n", 431, "headers_too_large")

    def test_obsolete_header_folding_is_400(self):
        self.refused(b"GET /health HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  c\r\n\r\n", 400,
                     "bad_request")

    def test_a_header_without_a_colon_is_400(self):
        self.refused(b"GET /health HTTP/1.1\r\nHost a\r\n\r\n", 400, "bad_request")

    def test_a_space_in_a_header_name_is_400(self):
        self.refused(b"GET /health HTTP/1.1\r\nHost : a\r\n\r\n", 400, "bad_request")

    def test_nul_and_control_bytes_in_a_header_value_are_400(self):
        for b in (b"\x00", b"\x01", b"\x1b"):
            self.refused(b"GET /health HTTP/1.1\r\nHost: a\r\nX-A: a" + b + b"b\r\n\r\n", 400,
                         "bad_request")

    def test_a_bare_cr_in_a_header_is_400(self):
        self.refused(b"GET /health HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n", 400, "bad_request")

    def test_conflicting_content_lengths_are_400(self):
        self.refused(b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                     b"Content-Length: 6\r\n\r\nhello!", 400, "bad_request")

    def test_malformed_content_lengths_are_400(self):
        for v in (b"-1", b"+5", b"5 5", b"0x10", b"abc", b"99999999999999999999999", b"5,5", b""):
            self.refused(b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Length: " + v +
                         b"\r\n\r\nhello", 400, "bad_request")

    def test_transfer_encoding_chunked_is_411(self):
        self.refused(b"POST /health HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n0\r\n\r\n", 411, "length_required")

    def test_transfer_encoding_with_content_length_is_refused(self):
        r = self.refused(b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", (400, 411),
                         {400: "bad_request", 411: "length_required"})
        self.assertIsNotNone(r)

    def test_an_unknown_expectation_is_417(self):
        self.refused(b"POST /health HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n"
                     b"Content-Length: 2\r\n\r\n{}", 417, "expectation_failed")

    # ---- bodies

    def test_a_2_mib_body_is_413_before_the_body_is_sent(self):
        c = self.node.raw()
        try:
            c.send(b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % (2 << 20))
            r = c.read_response()  # answered without a single body byte
            self.assertJsonError(r, 413, "payload_too_large")
            self.assertTrue(c.closed_by_peer(), "connection left open after 413")
        finally:
            c.close()

    def test_a_2_mib_body_sent_anyway_is_413_and_closed(self):
        self.refused(b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (2 << 20)
                     + b"{" * (2 << 20), 413, "payload_too_large")

    def test_expect_100_continue_over_the_limit_is_413_without_continue(self):
        c = self.node.raw()
        try:
            c.send(b"POST /health HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                   b"Content-Length: %d\r\n\r\n" % (2 << 20))
            r = c.read_response()
            self.assertJsonError(r, 413, "payload_too_large")
        finally:
            c.close()

    def test_expect_100_continue_within_the_limit_gets_continue_then_the_answer(self):
        c = self.node.raw()
        try:
            c.send(b"POST /health HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                   b"Content-Length: 2\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 100)
            c.send(b"{}")
            self.assertJsonError(c.read_response(), 405, "method_not_allowed")
        finally:
            c.close()

    def test_a_half_sent_body_then_disconnect_leaves_the_node_serving(self):
        c = self.node.raw()
        c.send(b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
        time.sleep(0.1)
        c.close()

    def test_a_half_sent_head_then_reset_leaves_the_node_serving(self):
        c = self.node.raw()
        c.send(b"GET /health HTTP/1.1\r\nHost: a\r\nX-")
        time.sleep(0.1)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()  # RST instead of FIN

    # ---- slow and idle clients, connection count

    def test_slowloris_head_one_byte_per_200ms_is_408_and_closed(self):
        head = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"z" * 40 + b"\r\n\r\n"
        c = self.node.raw()
        try:
            start = time.monotonic()
            answered = False
            for i in range(len(head)):
                try:
                    c.send(head[i:i + 1])
                except (OSError, ssl.SSLError):
                    break
                c.sock.settimeout(0.2)
                try:
                    c.buf += c.sock.recv(65536)
                    answered = True
                    break
                except (socket.timeout, TimeoutError):
                    pass
            self.assertTrue(answered, "the whole slow head was accepted without a timeout")
            c.sock.settimeout(3)
            r = c.read_response()
            elapsed = time.monotonic() - start
            self.assertJsonError(r, 408, "request_timeout")
            self.assertLess(elapsed, HEADER_TIMEOUT_MS / 1000 + 2.0)
            self.assertGreater(elapsed, HEADER_TIMEOUT_MS / 1000 * 0.8)
            self.assertTrue(c.closed_by_peer(), "connection left open after 408")
        finally:
            c.close()

    def test_a_connection_that_never_handshakes_is_closed(self):
        with socket.create_connection(("127.0.0.1", self.node.port), timeout=5) as s:
            start = time.monotonic()
            try:
                self.assertEqual(s.recv(1), b"")
            except ConnectionResetError:
                pass
            except socket.timeout:
                self.fail("a silent connection was kept open for 5 s")
            self.assertGreater(time.monotonic() - start, HEADER_TIMEOUT_MS / 1000 * 0.8)

    def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(self):
        c = self.node.raw()
        try:
            c.send(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertEqual(c.read_response().status, 200)
            start = time.monotonic()
            self.assertTrue(c.closed_by_peer(timeout=IDLE_TIMEOUT_MS / 1000 + 3),
                            "idle connection kept open")
            elapsed = time.monotonic() - start
            self.assertGreater(elapsed, IDLE_TIMEOUT_MS / 1000 * 0.8)
        finally:
            c.close()

    def test_a_connection_in_use_outlives_the_idle_timeout(self):
        c = self.node.raw()
        try:
            start = time.monotonic()
            while time.monotonic() - start < IDLE_TIMEOUT_MS / 1000 * 2:
                c.send(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
                self.assertEqual(c.read_response().status, 200)
                time.sleep(IDLE_TIMEOUT_MS / 1000 / 3)
        finally:
            c.close()

    def test_a_client_that_never_reads_its_answers_does_not_hurt_the_node(self):
        c = self.node.raw()
        try:
            c.send_until_answered(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n" * 3000, chunk=1 << 16)
            self.assertStillServing()
        finally:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()

    def test_a_body_that_looks_like_a_request_is_not_parsed_as_one(self):
        smuggled = b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"
        c = self.node.raw()
        try:
            c.send(b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s"
                   b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n" % (len(smuggled), smuggled))
            self.assertJsonError(c.read_response(), 405, "method_not_allowed")
            r = c.read_response()
            self.assertEqual(r.status, 200, "the body was taken for a request: %r" % r)
            self.assertIn("uptime_s", r.json())
        finally:
            c.close()

    def test_a_bad_request_after_good_pipelined_ones_is_answered_in_order_then_closed(self):
        c = self.node.raw()
        try:
            c.send(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n" * 2 + b"BAD\r\n\r\n" +
                   b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertEqual(c.read_response().status, 200)
            self.assertEqual(c.read_response().status, 200)
            self.assertJsonError(c.read_response(), 400, "bad_request")
            self.assertTrue(c.closed_by_peer(), "the request after a bad one was served")
            self.assertEqual(c.buf, b"")
        finally:
            c.close()

    def test_a_404_keeps_the_connection_usable(self):
        c = self.node.raw()
        try:
            c.send(b"GET /missing HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertJsonError(c.read_response(), 404, "not_found")
            c.send(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertEqual(c.read_response().status, 200)
        finally:
            c.close()


class StalledRequests(dsync.TempDirCase):
    """A request whose head or body stops arriving is answered 408 (not silently dropped), every
    time: each case is tried several times with a short header timeout."""
    TIMEOUT_MS = 200
    TRIES = 8

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        path, port = cls.config(http={"header_timeout_ms": cls.TIMEOUT_MS})
        cls.node = dsync.Node(["--config", path], port, cls.certs.ca)

    def always_408(self, data):
        outcomes = []
        for _ in range(self.TRIES):
            c = self.node.raw()
            try:
                start = time.monotonic()
                c.send(data)
                try:
                    r = c.read_response()
                except EOFError:
                    outcomes.append("closed without an answer")
                    continue
                elapsed = time.monotonic() - start
                self.assertJsonError(r, 408, "request_timeout")
                self.assertGreater(elapsed, self.TIMEOUT_MS / 1000 * 0.8)
                self.assertLess(elapsed, self.TIMEOUT_MS / 1000 + 2.0)
                self.assertTrue(c.closed_by_peer(), "connection left open after 408")
                outcomes.append(408)
            finally:
                c.close()
        self.assertEqual(outcomes, [408] * self.TRIES)
        self.assertEqual(self.node.request("GET", "/health").status, 200)

    def test_a_stalled_body_is_408_after_the_header_timeout(self):
        self.always_408(b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")

    def test_a_head_sent_in_one_piece_but_never_finished_is_408(self):
        self.always_408(b"GET /health HTTP/1.1\r\nHost: a\r\n")


class ConnectionLimit(dsync.TempDirCase):
    def served_connection(self, node):
        """A connection that got an answer; retried while the server has yet to notice that
        an earlier connection went away (its slot is freed a moment after the client closes)."""
        deadline = time.monotonic() + 3
        while True:
            try:
                c = node.raw(timeout=3)
                c.send(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
                self.assertEqual(c.read_response().status, 200)
                return c
            except (ssl.SSLError, OSError, EOFError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def test_max_connections_is_enforced_and_freed_slots_are_reused(self):
        node = self.start(http={"max_connections": 3})
        before = node.metrics().value("dsyncd_http_connections_refused_total")
        held = []
        try:
            for _ in range(3):
                held.append(self.served_connection(node))
            with self.assertRaises((ssl.SSLError, OSError, EOFError)):
                extra = node.raw(timeout=3)
                try:
                    extra.send(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
                    extra.read_response()
                finally:
                    extra.close()
            held.pop().close()
            c = self.served_connection(node)
            c.send(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
            m = dsync.parse_metrics(c.read_response().body.decode())
            c.close()
            self.assertGreater(m.value("dsyncd_http_connections_refused_total"), before)
            self.assertLessEqual(m.value("dsyncd_http_connections_open"), 3)
        finally:
            for c in held:
                c.close()
        self.assertTrue(node.alive())
        self.assertEqual(node.stop(), 0)


class FileDescriptorExhaustion(dsync.TempDirCase):
    def test_running_out_of_file_descriptors_neither_floods_the_log_nor_kills_the_node(self):
        node = self.start(node_kw={"max_files": 48})
        socks = []
        try:
            for _ in range(80):  # more than the node can accept
                socks.append(socket.create_connection(("127.0.0.1", node.port), timeout=3))
            time.sleep(0.3)
            before = len(node.stderr())
            time.sleep(1.0)
            grown = len(node.stderr()) - before
            self.assertLess(grown, 16 * 1024, "the log grew by %d bytes in 1 s while out of file "
                            "descriptors:\n%s" % (grown, node.stderr()[-600:]))
        finally:
            for s in socks:
                s.close()
        deadline = time.monotonic() + 5
        while True:  # the node recovers once the connections are gone
            try:
                self.assertEqual(node.request("GET", "/health", timeout=2).status, 200)
                break
            except (ssl.SSLError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.assertEqual(node.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
