"""Helpers for the dsyncd integration tests: certificates, INI files, nodes and HTTPS clients.

Only the Python 3 standard library and the `openssl` command-line tool are used.  Every process a
test starts is registered here and killed on teardown (and at interpreter exit), whatever happens.
"""
import atexit
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import http.client

ROLE = "lock"  # the role the foundation tests run; any role serves the common endpoints
# seconds a node gets to answer /health after exec; DSYNC_SLOW=1 for very slow builds (valgrind)
START_TIMEOUT = 30.0 if os.environ.get("DSYNC_SLOW") else 10.0

_running = []  # every Node started and not yet reaped


def binary():
    """Path of the dsyncd executable: meson's test environment sets DSYNCD."""
    path = os.environ.get("DSYNCD", "")
    if not path or not os.access(path, os.X_OK):
        raise RuntimeError("set DSYNCD to the dsyncd executable (meson test does it); got %r" % path)
    return path


def clean_env(extra=None):
    """The test runner's environment without anything dsyncd would read, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DSYNCD_") and k not in ("SHARED_MAC_KEY", "INTERNAL_PORT")}
    env.update(extra or {})
    return env


_given_ports = set()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now, chosen below the kernel's
    ephemeral range (ip_local_port_range, 32768+ by default): a port the kernel hands to outgoing
    connections (the nodes' own peer connections among them) could be taken between this check
    and the node's bind.  Ports are not handed out twice by one test process."""
    lo, hi = 20000, 32000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            eph = int(f.read().split()[0])
        hi = min(hi, eph - 1)
    except (OSError, ValueError, IndexError):
        pass
    rng = random.Random()
    for _ in range(1000):
        port = rng.randint(lo, hi)
        if port in _given_ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given_ports.add(port)
        return port
    raise RuntimeError("no free port in %d..%d" % (lo, hi))


_scratch = []


def scratch_dir():
    """The working directory of dsyncd processes started without one: a temp dir removed at exit,
    so that a default ./dsyncd-data never lands in the source tree."""
    if not _scratch:
        _scratch.append(tempfile.mkdtemp(prefix="dsync-it-cwd-"))
        atexit.register(shutil.rmtree, _scratch[0], True)
    return _scratch[0]


def run(args, env=None, cwd=None, timeout=10):
    """Run dsyncd to completion (for --help, --check-config, config errors)."""
    return subprocess.run([binary()] + list(args), env=clean_env(env), cwd=cwd or scratch_dir(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          text=True, errors="replace")


# ---------------------------------------------------------------------------------- certificates

def _openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr))


class Certs:
    """A CA with a server and a client certificate, a certificate without our host names, and a
    second ("evil") CA with a client certificate of its own, all made in `dir` with the openssl CLI.
    Attributes are file paths: ca, server_crt, server_key, client_crt, client_key, noname_crt,
    noname_key, evil_ca, evil_crt, evil_key."""

    def __init__(self, dir):
        self.dir = dir
        os.makedirs(dir, exist_ok=True)
        self._ca("ca", "dsync test CA")
        self._ca("evil-ca", "evil test CA")
        self._leaf("server", "ca", "localhost", "DNS:localhost,IP:127.0.0.1", "serverAuth")
        self._leaf("noname", "ca", "elsewhere.invalid", "DNS:elsewhere.invalid", "serverAuth")
        self._leaf("client", "ca", "test-client", None, "clientAuth")
        self._leaf("evil-client", "evil-ca", "evil-client", None, "clientAuth")
        p = lambda n: os.path.join(dir, n)
        self.ca, self.evil_ca = p("ca.crt"), p("evil-ca.crt")
        self.server_crt, self.server_key = p("server.crt"), p("server.key")
        self.noname_crt, self.noname_key = p("noname.crt"), p("noname.key")
        self.client_crt, self.client_key = p("client.crt"), p("client.key")
        self.evil_crt, self.evil_key = p("evil-client.crt"), p("evil-client.key")

    def _key(self, name):
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-out", name + ".key", cwd=self.dir)

    def _ca(self, name, cn):
        self._key(name)
        _openssl("req", "-x509", "-new", "-key", name + ".key", "-sha256", "-days", "2",
                 "-subj", "/O=dsync tests/CN=" + cn, "-out", name + ".crt",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=self.dir)

    def _leaf(self, name, ca, cn, san, eku):
        self._key(name)
        _openssl("req", "-new", "-key", name + ".key", "-subj", "/O=dsync tests/CN=" + cn,
                 "-out", name + ".csr", cwd=self.dir)
        ext = ["basicConstraints=critical,CA:FALSE",
               "keyUsage=critical,digitalSignature,keyEncipherment",
               "extendedKeyUsage=" + eku]
        if san:
            ext.append("subjectAltName=" + san)
        with open(os.path.join(self.dir, name + ".ext"), "w") as f:
            f.write("\n".join(ext) + "\n")
        _openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
                 "-CAcreateserial", "-days", "2", "-sha256", "-extfile", name + ".ext",
                 "-out", name + ".crt", cwd=self.dir)


# ---------------------------------------------------------------------------------- INI files

def ini_text(sections):
    """INI text from {section: {key: value}} (dicts keep their order)."""
    out = []
    for sec, keys in sections.items():
        out.append("[%s]" % sec)
        out.extend("%s = %s" % (k, v) for k, v in keys.items())
        out.append("")
    return "\n".join(out)


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def base_config(dir, certs, port, **overrides):
    """A single-node configuration in `dir` listening on 127.0.0.1:port with the test certificates.
    overrides: {"section": {key: value}}; a value of None removes the key."""
    sections = {
        "node": {"id": "n1", "role": ROLE, "listen": "127.0.0.1:%d" % port,
                 "data_dir": os.path.join(dir, "data")},
        "tls": {"cert": certs.server_crt, "key": certs.server_key},
        "http": {"idle_timeout_ms": 5000, "header_timeout_ms": 3000, "shutdown_grace_ms": 1000},
        "log": {"level": "info"},
    }
    for sec, keys in overrides.items():
        sections.setdefault(sec, {})
        for k, v in keys.items():
            if v is None:
                sections[sec].pop(k, None)
            else:
                sections[sec][k] = v
    return {s: k for s, k in sections.items() if k}


# ---------------------------------------------------------------------------------- TLS clients

def client_context(ca, cert=None, key=None, check_hostname=True):
    """An SSL context that verifies the server against `ca` (and presents cert/key if given)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.check_hostname = check_hostname
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


class Response:
    def __init__(self, status, reason, headers, body):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<%d %s %r>" % (self.status, self.reason, self.body[:200])


class RawConn:
    """A TLS socket for hand-written bytes, with a response reader that keeps what it over-reads
    (pipelining)."""

    def __init__(self, port, ctx, host="localhost", timeout=5.0):
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def send_until_answered(self, data, chunk=4096):
        """Send `data` in chunks, stopping early when the server answers or closes.  Returns the
        number of bytes sent."""
        sent = 0
        while sent < len(data):
            try:
                self.sock.sendall(data[sent:sent + chunk])
            except (OSError, ssl.SSLError):
                break
            sent += min(chunk, len(data) - sent)
            if self._answered():
                break
        return sent

    def _answered(self):
        """True when application data (or EOF) arrived; TLS 1.3 session tickets do not count."""
        if not self.sock.pending() and not select.select([self.sock], [], [], 0)[0]:
            return False
        timeout = self.sock.gettimeout()
        self.sock.settimeout(0)
        try:
            d = self.sock.recv(65536)
            self.buf += d
            return True
        except (ssl.SSLWantReadError, BlockingIOError):
            return False
        except (OSError, ssl.SSLError):
            return True
        finally:
            self.sock.settimeout(timeout)

    def _fill(self):
        try:
            d = self.sock.recv(65536)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ConnectionResetError):
            d = b""
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def read_response(self, head_request=False):
        """Read one HTTP/1.1 response (Content-Length framed).  EOFError if the server closes."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.1 (\d{3}) (.*)$", lines[0])
        if not m:
            raise AssertionError("bad status line %r" % lines[0])
        headers = [tuple(x.strip() for x in l.split(":", 1)) for l in lines[1:]]
        r = Response(int(m.group(1)), m.group(2), headers, b"")
        n = 0 if head_request or r.status in (100, 204) else int(r.header("Content-Length"))
        while len(self.buf) < n:
            self._fill()
        r.body, self.buf = self.buf[:n], self.buf[n:]
        return r

    def closed_by_peer(self, timeout=3.0):
        """True when the server closes the connection within `timeout` (nothing more to read)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError):
            return False
        except ssl.SSLError:
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------------- nodes

class Node:
    """A running dsyncd.  stderr goes to a file read back for failure messages."""

    def __init__(self, args, port, ca, env=None, cwd=None, wait=True, host="localhost",
                 client_cert=None, max_files=None):
        """client_cert: (cert, key) this node's clients present (for client_auth = require).
        max_files: RLIMIT_NOFILE of the process."""
        self.port, self.ca, self.host, self.client_cert = port, ca, host, client_cert
        self.status_seen = False
        self.log = tempfile.NamedTemporaryFile(prefix="dsyncd-stderr-", suffix=".log", delete=False)
        limit = None
        if max_files:
            limit = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, max_files))
        self.proc = subprocess.Popen([binary()] + list(args), env=clean_env(env),
                                     cwd=cwd or scratch_dir(), preexec_fn=limit,
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        _running.append(self)
        if wait:
            self.wait_healthy()

    @property
    def pid(self):
        return self.proc.pid

    def stderr(self):
        with open(self.log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def context(self):
        cert, key = self.client_cert or (None, None)
        return client_context(self.ca, cert, key)

    def wait_healthy(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("dsyncd exited with %s before answering /health:\n%s"
                                     % (self.proc.returncode, self.stderr()))
            try:
                r = self.request("GET", "/health", timeout=1.0)
                if r.status == 200:
                    return
                last = r
            except (OSError, ssl.SSLError, http.client.HTTPException) as e:
                last = e
            time.sleep(0.05)
        raise AssertionError("dsyncd did not answer /health within %.0f s (last: %r):\n%s"
                             % (timeout, last, self.stderr()))

    def connection(self, ctx=None, host=None, timeout=5.0):
        """A keep-alive http.client connection (connects on first use)."""
        return http.client.HTTPSConnection(host or self.host, self.port, timeout=timeout,
                                           context=ctx or self.context())

    def request(self, method, path, body=None, headers=None, ctx=None, host=None, timeout=5.0):
        """One request on a fresh connection; returns a Response."""
        conn = self.connection(ctx, host, timeout)
        try:
            return do(conn, method, path, body, headers)
        finally:
            conn.close()

    def raw(self, ctx=None, host=None, timeout=5.0):
        return RawConn(self.port, ctx or self.context(), host or self.host, timeout)

    def metrics(self):
        r = self.request("GET", "/metrics")
        if r.status != 200:
            raise AssertionError("GET /metrics: %r" % r)
        return parse_metrics(r.body.decode())

    def alive(self):
        return self.proc.poll() is None

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        """Exit status, or None if still running after `timeout` seconds."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.status_seen = True  # the test has the exit status: finish() need not report it
        return rc

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        """Signal, wait, and kill if needed.  Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.wait(timeout)
        if rc is None:
            self.kill()
            raise AssertionError("dsyncd ignored %s for %.0f s:\n%s" % (sig, timeout, self.stderr()))
        self._reap()
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._reap()

    def _reap(self):
        if self in _running:
            _running.remove(self)
        try:
            os.unlink(self.log.name)
        except OSError:
            pass
        self.log.close()


def kill_all():
    """Kill every node still running; returns how many there were."""
    left = list(_running)
    for n in left:
        n.kill()
    return len(left)


def finish(nodes):
    """Stop `nodes` with SIGTERM (killing any that hang) and return a failure description for each
    that did not exit 0: a sanitizer report or a crash shows up here."""
    problems = []
    for n in nodes:
        if n.status_seen:
            n.kill()
            continue
        if n.proc.poll() is None:
            n.proc.send_signal(signal.SIGTERM)
        rc = n.wait(10)
        log = n.stderr()
        n.kill()
        if rc != 0:
            problems.append("dsyncd (pid %d) exited with %s:\n%s" % (n.pid, rc, log[-4000:]))
    return problems


atexit.register(kill_all)


def do(conn, method, path, body=None, headers=None):
    """A request on an http.client connection; returns a Response (body read, HEAD-aware)."""
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    body = r.read()
    return Response(r.status, r.reason, r.getheaders(), body)


# ---------------------------------------------------------------------------------- metrics

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})?'
                     r' (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$')


class Metrics:
    """Parsed Prometheus text: samples {(name, frozenset(labels.items())): value}, types {name: type}."""

    def __init__(self, samples, types, text):
        self.samples, self.types, self.text = samples, types, text

    def get(self, name, **labels):
        return self.samples.get((name, frozenset(labels.items())))

    def value(self, name, **labels):
        v = self.get(name, **labels)
        return 0.0 if v is None else v

    def series(self, name):
        return {k[1]: v for k, v in self.samples.items() if k[0] == name}


def parse_metrics(text):
    """Parse and check Prometheus text exposition (raises AssertionError on a malformed line)."""
    samples, types = {}, {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            if typ not in ("counter", "gauge", "histogram", "summary", "untyped"):
                raise AssertionError("bad metric type line %r" % line)
            types[name] = typ
            continue
        if line.startswith("# HELP "):
            continue
        if line.startswith("#"):
            raise AssertionError("bad comment line %r" % line)
        m = _SAMPLE.match(line)
        if not m:
            raise AssertionError("malformed metrics line %r" % line)
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        key = (m.group(1), frozenset(labels.items()))
        if key in samples:
            raise AssertionError("duplicate series %r" % line)
        samples[key] = float(m.group(4))
    return Metrics(samples, types, text)


# ---------------------------------------------------------------------------------- test bases

class TempDirCase(unittest.TestCase):
    """A per-class temp dir with certificates; nodes started by a test are killed after it."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="dsync-it-")
        cls.certs = Certs(os.path.join(cls.tmp, "certs"))

    @classmethod
    def tearDownClass(cls):
        problems = finish(list(_running))
        shutil.rmtree(cls.tmp, ignore_errors=True)
        if problems:
            raise AssertionError("\n".join(problems))

    def setUp(self):
        self._before = list(_running)

    def tearDown(self):
        problems = finish([n for n in _running if n not in self._before])
        if problems:
            self.fail("\n".join(problems))

    @classmethod
    def config(cls, name="node.ini", port=None, **overrides):
        """Write a base configuration in a fresh directory; returns (path, port)."""
        port = port or free_port()
        d = tempfile.mkdtemp(dir=cls.tmp)
        path = os.path.join(d, name)
        write_file(path, ini_text(base_config(d, cls.certs, port, **overrides)))
        return path, port

    def start(self, port=None, args=(), env=None, node_kw=None, **overrides):
        """Start a node from a base configuration (plus overrides); returns the Node."""
        path, port = self.config(port=port, **overrides)
        return Node(["--config", path] + list(args), port, self.certs.ca, env=env,
                    **(node_kw or {}))

    def assertJsonError(self, r, status, code):
        self.assertEqual(r.status, status, r)
        self.assertTrue((r.header("Content-Type") or "").startswith("application/json"), r.headers)
        e = r.json().get("error")
        self.assertIsInstance(e, dict, r)
        self.assertEqual(e.get("code"), code, r)
        self.assertIsInstance(e.get("message"), str, r)
        self.assertTrue(e["message"], r)
