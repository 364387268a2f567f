"""Integration: the common endpoints, routing errors, keep-alive, pipelining and the embedded default."""
import os
import re
import socket
import ssl
import tempfile
import time
import unittest

import dsync


class CommonEndpoints(dsync.TempDirCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        d = tempfile.mkdtemp(dir=cls.tmp)
        cls.port = dsync.free_port()
        cls.audit = os.path.join(d, "audit", "audit.jsonl")
        os.makedirs(os.path.dirname(cls.audit))
        path = dsync.write_file(os.path.join(d, "node.ini"), dsync.ini_text(dsync.base_config(
            d, cls.certs, cls.port, node={"id": "alpha-1", "cluster_name": "itest"},
            log={"audit_file": cls.audit})))
        cls.node = dsync.Node(["--config", path], cls.port, cls.certs.ca)

    def tearDown(self):
        super().tearDown()
        self.assertTrue(self.node.alive(), "dsyncd died:\n" + self.node.stderr())

    def test_health_answers_ok_with_node_and_role(self):
        r = self.node.request("GET", "/health")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("Content-Type").startswith("application/json"))
        self.assertEqual(r.json(), {"status": "ok", "node": "alpha-1", "role": dsync.ROLE})

    def test_ready_is_503_with_retry_after_until_the_role_is_ready(self):
        status = self.node.request("GET", "/status").json()
        r = self.node.request("GET", "/ready")
        body = r.json()
        self.assertIsInstance(body.get("ready"), bool, r)
        if r.status == 200:
            self.assertTrue(status["role_available"], "ready without a role implementation")
            self.assertTrue(body["ready"])
        else:
            self.assertEqual(r.status, 503, r)
            self.assertFalse(body["ready"])
            self.assertTrue(body.get("reason"), r)
            self.assertRegex(r.header("Retry-After") or "", r"^\d+$", r.headers)
        if not status["role_available"]:
            self.assertEqual(r.status, 503, "no role implementation but /ready said %r" % r)

    def test_status_describes_the_node(self):
        r = self.node.request("GET", "/status")
        self.assertEqual(r.status, 200, r)
        s = r.json()
        self.assertEqual(s["node"], "alpha-1")
        self.assertEqual(s["role"], dsync.ROLE)
        self.assertEqual(s["cluster"], "itest")
        self.assertEqual(s["listen"], "127.0.0.1:%d" % self.port)
        self.assertEqual(s["advertise_url"], "https://127.0.0.1:%d" % self.port)
        self.assertEqual(s["version"], dsync.run(["--version"]).stdout.split()[-1])
        self.assertGreaterEqual(s["uptime_s"], 0)
        self.assertGreaterEqual(s["connections"], 1)
        self.assertIsInstance(s["role_available"], bool)

    def test_uptime_grows(self):
        a = self.node.request("GET", "/status").json()["uptime_s"]
        time.sleep(0.3)
        b = self.node.request("GET", "/status").json()["uptime_s"]
        self.assertGreaterEqual(b - a, 0.25)

    def test_metrics_are_prometheus_text_with_dsyncd_names(self):
        r = self.node.request("GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("Content-Type").startswith("text/plain; version=0.0.4"), r.headers)
        m = dsync.parse_metrics(r.body.decode())
        names = {k[0] for k in m.samples}
        for n in names:
            self.assertTrue(n.startswith("dsyncd_"), n)
        for base in m.types:
            self.assertTrue(any(n == base or n.startswith(base + "_") for n in names), base)
        for n in names:
            base = re.sub(r"_(bucket|sum|count)$", "", n) if n not in m.types else n
            self.assertIn(base, m.types, "%s has no # TYPE line" % n)
        for needed in ("dsyncd_http_requests_total", "dsyncd_http_request_duration_seconds",
                       "dsyncd_http_connections_open", "dsyncd_tls_handshake_failures_total",
                       "dsyncd_build_info", "dsyncd_process_resident_memory_bytes",
                       "dsyncd_uptime_seconds"):
            self.assertIn(needed, m.types, needed)
        self.assertEqual(m.types["dsyncd_http_requests_total"], "counter")
        self.assertEqual(m.types["dsyncd_http_request_duration_seconds"], "histogram")
        version = dsync.run(["--version"]).stdout.split()[-1]
        self.assertEqual(m.get("dsyncd_build_info", version=version, role=dsync.ROLE,
                               node="alpha-1"), 1, m.series("dsyncd_build_info"))
        self.assertGreater(m.value("dsyncd_process_resident_memory_bytes"), 1 << 20)
        self.assertGreaterEqual(m.value("dsyncd_http_connections_open"), 1)

    def test_metrics_count_requests_by_route_and_status(self):
        before = self.node.metrics()
        for _ in range(3):
            self.assertEqual(self.node.request("GET", "/health").status, 200)
        self.assertEqual(self.node.request("GET", "/no/such/thing").status, 404)
        after = self.node.metrics()
        self.assertEqual(after.value("dsyncd_http_requests_total", route="/health", code="200")
                         - before.value("dsyncd_http_requests_total", route="/health", code="200"), 3)
        self.assertEqual(after.value("dsyncd_http_requests_total", route="(none)", code="404")
                         - before.value("dsyncd_http_requests_total", route="(none)", code="404"), 1)
        self.assertGreaterEqual(after.value("dsyncd_http_request_duration_seconds_count",
                                            route="/health")
                                - before.value("dsyncd_http_request_duration_seconds_count",
                                               route="/health"), 3)

    def test_latency_histogram_buckets_are_cumulative_and_end_with_the_count(self):
        self.node.request("GET", "/health")
        m = self.node.metrics()
        buckets = {}
        for labels, v in m.series("dsyncd_http_request_duration_seconds_bucket").items():
            d = dict(labels)
            le = d.pop("le")
            buckets.setdefault(frozenset(d.items()), []).append(
                (float("inf") if le == "+Inf" else float(le), v))
        self.assertIn(frozenset({("route", "/health")}), buckets)
        for labels, bs in buckets.items():
            bs.sort()
            counts = [v for _, v in bs]
            self.assertEqual(counts, sorted(counts), labels)
            self.assertEqual(bs[-1][0], float("inf"), labels)
            self.assertEqual(bs[-1][1], m.get("dsyncd_http_request_duration_seconds_count",
                                              **dict(labels)), labels)
        self.assertGreaterEqual(m.value("dsyncd_http_request_duration_seconds_count",
                                        route="/health"), 1)

    def test_a_query_string_does_not_change_the_route(self):
        r = self.node.request("GET", "/health?verbose=1&x=%20")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["status"], "ok")

    def test_unknown_path_is_404_json(self):
        r = self.node.request("GET", "/nope")
        self.assertJsonError(r, 404, "not_found")

    def test_wrong_method_is_405_json_with_allow(self):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            r = self.node.request(method, "/health", body=b"{}" if method != "DELETE" else None)
            self.assertJsonError(r, 405, "method_not_allowed")
            allow = [x.strip() for x in (r.header("Allow") or "").split(",")]
            self.assertIn("GET", allow, r.headers)
            self.assertIn("HEAD", allow, r.headers)
            self.assertNotIn(method, allow)

    def test_head_has_the_headers_of_get_and_no_body(self):
        conn = self.node.connection()
        try:
            g = dsync.do(conn, "GET", "/health")
            h = dsync.do(conn, "HEAD", "/health")
            self.assertEqual(h.status, 200)
            self.assertEqual(h.body, b"")
            self.assertEqual(h.header("Content-Length"), g.header("Content-Length"))
            self.assertEqual(h.header("Content-Type"), g.header("Content-Type"))
            # the connection is still in sync after a HEAD: no stray body bytes
            self.assertEqual(dsync.do(conn, "GET", "/health").body, g.body)
        finally:
            conn.close()

    def test_options_lists_the_allowed_methods(self):
        r = self.node.request("OPTIONS", "/health")
        self.assertIn(r.status, (200, 204), r)
        allow = [x.strip() for x in (r.header("Allow") or "").split(",")]
        for m in ("GET", "HEAD", "OPTIONS"):
            self.assertIn(m, allow, r.headers)
        self.assertNotIn("POST", allow)
        self.assertJsonError(self.node.request("OPTIONS", "/nope"), 404, "not_found")

    def test_unknown_method_is_refused_with_json(self):
        r = self.node.request("BREW", "/health")
        self.assertIn(r.status, (400, 405, 501), r)
        self.assertIn("error", r.json())

    def test_keep_alive_serves_many_requests_on_one_connection(self):
        conn = self.node.connection()
        try:
            first = dsync.parse_metrics(dsync.do(conn, "GET", "/metrics").body.decode())
            sock = conn.sock
            for i in range(50):
                r = dsync.do(conn, "GET", "/health" if i % 2 else "/status")
                self.assertEqual(r.status, 200, r)
                self.assertIsNone(r.header("Connection"), "server asked to close: %r" % r.headers)
            last = dsync.parse_metrics(dsync.do(conn, "GET", "/metrics").body.decode())
            self.assertIs(conn.sock, sock, "http.client had to reconnect")
        finally:
            conn.close()
        self.assertEqual(last.value("dsyncd_http_connections_accepted_total"),
                         first.value("dsyncd_http_connections_accepted_total"),
                         "other connections were accepted meanwhile")
        self.assertEqual(last.value("dsyncd_http_requests_total", route="/health", code="200")
                         - first.value("dsyncd_http_requests_total", route="/health", code="200"),
                         25)

    def test_connection_close_is_honoured(self):
        c = self.node.raw()
        try:
            c.send(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertEqual((r.header("Connection") or "").lower(), "close")
            self.assertTrue(c.closed_by_peer(), "connection left open after Connection: close")
        finally:
            c.close()

    def test_http_1_0_gets_an_answer_and_a_close(self):
        c = self.node.raw()
        try:
            c.send(b"GET /health HTTP/1.0\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertTrue(c.closed_by_peer(), "HTTP/1.0 without keep-alive left open")
        finally:
            c.close()

    def test_pipelined_requests_are_answered_in_order(self):
        paths = ["/health", "/nope", "/status", "/ready", "/health", "/metrics", "/x/y"] * 3
        c = self.node.raw()
        try:
            c.send(b"".join(b"GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % p.encode()
                            for p in paths))
            got = [c.read_response() for _ in paths]
        finally:
            c.close()
        for p, r in zip(paths, got):
            if p == "/health":
                self.assertEqual(r.status, 200)
                self.assertEqual(r.json()["status"], "ok")
            elif p == "/status":
                self.assertEqual(r.json()["node"], "alpha-1")
            elif p == "/ready":
                self.assertIn("ready", r.json())
            elif p == "/metrics":
                self.assertIn(b"# TYPE dsyncd_", r.body)
            else:
                self.assertJsonError(r, 404, "not_found")
                self.assertIn(p, r.json()["error"]["message"])

    def test_requests_in_separate_tls_records_sent_back_to_back_are_all_answered(self):
        # the server reads ahead: one read(2) can take several TLS records, and each one must
        # still be decrypted and answered without waiting for another packet
        c = self.node.raw()
        try:
            for i in range(30):
                c.sock.send(b"GET /health?i=%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % i)
            got = [c.read_response() for _ in range(30)]
        finally:
            c.close()
        self.assertEqual([r.status for r in got], [200] * 30)

    def test_a_request_sent_with_the_handshakes_last_flight_is_answered(self):
        # TLS 1.3: the client's Finished and its first request leave in one packet, so the
        # server's last handshake read also takes the request
        ctx = self.node.context()
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
        sock = socket.create_connection(("127.0.0.1", self.node.port), timeout=5)
        try:
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    sock.sendall(outgoing.read())
                    data = sock.recv(65536)
                    self.assertTrue(data, "server closed during the handshake")
                    incoming.write(data)
            obj.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            sock.sendall(outgoing.read())  # Finished + request together
            answer = b""
            deadline = time.monotonic() + 5
            while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
                try:
                    answer += obj.read(65536)
                except ssl.SSLWantReadError:
                    data = sock.recv(65536)
                    self.assertTrue(data, "server closed instead of answering")
                    incoming.write(data)
        except socket.timeout:
            self.fail("no answer to a request sent with the handshake's last flight")
        finally:
            sock.close()
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:80])

    def test_pipelined_head_and_get_keep_framing(self):
        c = self.node.raw()
        try:
            c.send(b"HEAD /health HTTP/1.1\r\nHost: a\r\n\r\nGET /status HTTP/1.1\r\nHost: a\r\n\r\n")
            h = c.read_response(head_request=True)
            g = c.read_response()
        finally:
            c.close()
        self.assertEqual(h.status, 200)
        self.assertEqual(g.json()["node"], "alpha-1")

    def test_audit_file_is_created(self):
        self.assertTrue(os.path.isfile(self.audit), self.node.stderr())

    def test_stderr_log_lines_name_the_node_and_role(self):
        log = self.node.stderr()
        self.assertIn("alpha-1", log)
        self.assertIn(dsync.ROLE, log)
        self.assertIn("listening", log)


class EmbeddedDefault(dsync.TempDirCase):
    """`dsyncd --role=lock` with no configuration at all."""

    def test_embedded_default_serves_health_verified_by_its_own_ca(self):
        cwd = tempfile.mkdtemp(dir=self.tmp)
        port = dsync.free_port()
        ca = os.path.join(cwd, "dsyncd-data", "certs", "ca.crt")
        node = dsync.Node(["--role=" + dsync.ROLE, "--listen", "127.0.0.1:%d" % port], port, ca,
                          cwd=cwd, wait=False)
        deadline = time.monotonic() + dsync.START_TIMEOUT
        while not os.path.exists(ca) and time.monotonic() < deadline and node.alive():
            time.sleep(0.05)
        node.wait_healthy()
        for host in ("localhost", "127.0.0.1"):
            r = node.request("GET", "/health", host=host)
            self.assertEqual(r.status, 200, host)
            self.assertEqual(r.json()["role"], dsync.ROLE)
        log = node.stderr()
        self.assertIn("curl --cacert", log)
        self.assertIn("dsyncd-data/certs/ca.crt", log)
        self.assertIn("https://127.0.0.1:%d/health" % port, log)
        self.assertEqual(node.stop(), 0)
        # a restart reuses the certificates made the first time
        with open(ca, "rb") as f:
            first = f.read()
        node = dsync.Node(["--role=" + dsync.ROLE, "--listen", "127.0.0.1:%d" % port], port, ca,
                          cwd=cwd)
        with open(ca, "rb") as f:
            self.assertEqual(f.read(), first, "the CA was made again on restart")
        self.assertEqual(node.request("GET", "/health").status, 200)
        self.assertEqual(node.stop(), 0)

    def test_embedded_default_certificate_is_not_trusted_by_another_ca(self):
        cwd = tempfile.mkdtemp(dir=self.tmp)
        port = dsync.free_port()
        ca = os.path.join(cwd, "dsyncd-data", "certs", "ca.crt")
        node = dsync.Node(["--role=" + dsync.ROLE, "--listen", "127.0.0.1:%d" % port], port, ca,
                          cwd=cwd)
        with self.assertRaises(dsync.ssl.SSLCertVerificationError):
            node.request("GET", "/health", ctx=dsync.client_context(self.certs.ca))
        self.assertEqual(node.stop(), 0)

    def test_a_config_without_tls_cert_makes_certificates_in_its_data_dir(self):
        path, port = self.config(tls={"cert": None, "key": None})
        data = os.path.join(os.path.dirname(path), "data")
        ca = os.path.join(data, "certs", "ca.crt")
        node = dsync.Node(["--config", path], port, ca, wait=False)
        deadline = time.monotonic() + dsync.START_TIMEOUT
        while not os.path.exists(ca) and time.monotonic() < deadline and node.alive():
            time.sleep(0.05)
        node.wait_healthy()
        self.assertEqual(node.request("GET", "/health").status, 200)
        self.assertEqual(node.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
