"""Integration: TLS verification in both directions, protocol versions, plain HTTP on the TLS port."""
import socket
import ssl
import time
import unittest
import warnings

import dsync

FAILURES = "dsyncd_tls_handshake_failures_total"


def exchange(node, ctx, host="localhost"):
    """Handshake, send GET /health and read the answer.  Returns the Response, or the exception
    that stopped it (with TLS 1.3 a refused client certificate shows only on the first read)."""
    try:
        c = node.raw(ctx=ctx, host=host, timeout=3)
    except (ssl.SSLError, OSError) as e:
        return e
    try:
        c.send(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        return c.read_response()
    except (ssl.SSLError, OSError, EOFError) as e:
        return e
    finally:
        c.close()


def wait_for_counter(node, name, above, timeout=3.0):
    """The counter's value once it exceeds `above` (the server may count a moment later)."""
    deadline = time.monotonic() + timeout
    while True:
        v = node.metrics().value(name)
        if v > above or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


class ServerVerification(dsync.TempDirCase):
    """The client's side: only the right CA and the right name are accepted."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        path, port = cls.config()
        cls.node = dsync.Node(["--config", path], port, cls.certs.ca)

    def tearDown(self):
        super().tearDown()
        self.assertTrue(self.node.alive(), self.node.stderr())

    def test_the_right_ca_is_accepted_for_localhost_and_127_0_0_1(self):
        for host in ("localhost", "127.0.0.1"):
            r = self.node.request("GET", "/health", host=host)
            self.assertEqual(r.status, 200, host)

    def test_a_client_trusting_another_ca_refuses_the_server(self):
        before = self.node.metrics().value(FAILURES)
        with self.assertRaises(ssl.SSLCertVerificationError) as cm:
            self.node.request("GET", "/health", ctx=dsync.client_context(self.certs.evil_ca))
        self.assertIn("certificate verify failed", str(cm.exception))
        self.assertGreater(wait_for_counter(self.node, FAILURES, before), before)
        self.assertEqual(self.node.request("GET", "/health").status, 200)

    def test_a_client_trusting_the_system_store_refuses_the_server(self):
        ctx = ssl.create_default_context()
        with self.assertRaises(ssl.SSLCertVerificationError):
            self.node.request("GET", "/health", ctx=ctx)


class HostnameCheck(dsync.TempDirCase):
    """A server certificate that does not carry the name the client dialled is rejected."""

    def test_a_certificate_without_the_name_is_rejected_by_the_client(self):
        path, port = self.config(tls={"cert": self.certs.noname_crt, "key": self.certs.noname_key})
        node = dsync.Node(["--config", path], port, self.certs.ca, wait=False,
                          host="elsewhere.invalid")
        # reach it by the name in its certificate (resolved to 127.0.0.1 by RawConn)
        deadline = time.monotonic() + dsync.START_TIMEOUT
        r = None
        while time.monotonic() < deadline:
            r = exchange(node, node.context(), host="elsewhere.invalid")
            if isinstance(r, dsync.Response):
                break
            time.sleep(0.05)
        self.assertIsInstance(r, dsync.Response, "%r\n%s" % (r, node.stderr()))
        self.assertEqual(r.status, 200)
        for host in ("localhost", "127.0.0.1"):
            e = exchange(node, node.context(), host=host)
            self.assertIsInstance(e, ssl.SSLCertVerificationError, host)
            self.assertIn("mismatch", str(e).lower() + " " + str(getattr(e, "verify_message", "")))
        self.assertEqual(node.stop(), 0)


class ClientCertificates(dsync.TempDirCase):
    """The server's side: with [tls] ca set, client certificates from another CA fail the handshake."""

    def start_with(self, auth):
        return self.start(tls={"ca": self.certs.ca, "client_auth": auth},
                          node_kw={"client_cert": (self.certs.client_crt, self.certs.client_key)})

    def ctx(self, which):
        if which == "right":
            return dsync.client_context(self.certs.ca, self.certs.client_crt, self.certs.client_key)
        if which == "evil":
            return dsync.client_context(self.certs.ca, self.certs.evil_crt, self.certs.evil_key)
        return dsync.client_context(self.certs.ca)

    def test_require_accepts_the_cluster_ca_and_refuses_the_evil_ca_and_no_certificate(self):
        node = self.start_with("require")
        r = exchange(node, self.ctx("right"))
        self.assertIsInstance(r, dsync.Response, r)
        self.assertEqual(r.status, 200)
        before = node.metrics().value(FAILURES)
        for which in ("evil", "none"):
            e = exchange(node, self.ctx(which))
            self.assertNotIsInstance(e, dsync.Response, "%s certificate was accepted" % which)
            self.assertIsInstance(e, (ssl.SSLError, OSError, EOFError), which)
        after = node.metrics().value(FAILURES)
        self.assertGreaterEqual(after - before, 2)
        self.assertTrue(node.alive(), node.stderr())
        self.assertEqual(node.stop(), 0)

    def test_optional_accepts_no_certificate_and_the_right_one_but_refuses_the_evil_ca(self):
        node = self.start_with("optional")
        for which in ("none", "right"):
            r = exchange(node, self.ctx(which))
            self.assertIsInstance(r, dsync.Response, "%s: %r" % (which, r))
            self.assertEqual(r.status, 200)
        e = exchange(node, self.ctx("evil"))
        self.assertNotIsInstance(e, dsync.Response, "a certificate from another CA was accepted")
        self.assertEqual(exchange(node, self.ctx("none")).status, 200)
        self.assertEqual(node.stop(), 0)

    def test_off_ignores_client_certificates(self):
        node = self.start_with("off")
        for which in ("none", "right", "evil"):
            r = exchange(node, self.ctx(which))
            self.assertIsInstance(r, dsync.Response, "%s: %r" % (which, r))
        self.assertEqual(node.stop(), 0)


class ProtocolVersions(dsync.TempDirCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        path, port = cls.config()
        cls.node = dsync.Node(["--config", path], port, cls.certs.ca)

    def old_ctx(self, version):
        ctx = dsync.client_context(self.certs.ca)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = version
            ctx.maximum_version = version
        return ctx

    def test_tls_1_1_is_refused_by_the_server(self):
        before = self.node.metrics().value(FAILURES)
        e = exchange(self.node, self.old_ctx(ssl.TLSVersion.TLSv1_1))
        self.assertIsInstance(e, ssl.SSLError)
        if "NO_PROTOCOLS_AVAILABLE" in str(e).upper():
            self.skipTest("this Python's OpenSSL cannot offer TLS 1.1 at all")
        # refused by the server with a protocol_version alert
        self.assertIn("PROTOCOL_VERSION", str(e).upper())
        self.assertGreater(wait_for_counter(self.node, FAILURES, before), before)
        self.assertEqual(self.node.request("GET", "/health").status, 200)

    def test_tls_1_2_and_1_3_are_accepted(self):
        for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = dsync.client_context(self.certs.ca)
            ctx.minimum_version = ctx.maximum_version = v
            c = self.node.raw(ctx=ctx)
            try:
                self.assertEqual(c.sock.version(), {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                                                    ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[v])
                c.send(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
                self.assertEqual(c.read_response().status, 200)
            finally:
                c.close()

    def test_min_version_1_3_refuses_tls_1_2(self):
        node = self.start(tls={"min_version": "1.3"})
        ctx = dsync.client_context(self.certs.ca)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.assertIsInstance(exchange(node, ctx), ssl.SSLError)
        self.assertEqual(node.request("GET", "/health").status, 200)
        self.assertEqual(node.stop(), 0)

    def test_plain_http_to_the_tls_port_is_closed_and_the_node_keeps_serving(self):
        before = self.node.metrics().value(FAILURES)
        with socket.create_connection(("127.0.0.1", self.node.port), timeout=3) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            data = b""
            try:
                while True:
                    d = s.recv(4096)
                    if not d:
                        break
                    data += d
            except ConnectionResetError:
                pass
            except socket.timeout:
                self.fail("plain HTTP connection left open")
        self.assertNotIn(b"HTTP/1.", data, "answered in clear text")
        self.assertNotIn(b"ok", data)
        self.assertGreater(wait_for_counter(self.node, FAILURES, before), before)
        self.assertEqual(self.node.request("GET", "/health").status, 200)

    def test_a_bogus_client_hello_is_closed_and_the_node_keeps_serving(self):
        with socket.create_connection(("127.0.0.1", self.node.port), timeout=3) as s:
            s.sendall(b"\x16\x03\x01\x00\x05hello")  # a TLS record header, a bogus body
            data = b""
            try:
                while True:
                    d = s.recv(4096)
                    if not d:
                        break
                    data += d
            except ConnectionResetError:
                pass
            except socket.timeout:
                self.fail("connection with a bogus ClientHello left open")
        self.assertNotIn(b"HTTP/1.", data)
        self.assertEqual(self.node.request("GET", "/health").status, 200)


if __name__ == "__main__":
    unittest.main(verbosity=2)
