"""Helpers for the Raft and lock integration tests: a cluster of lock-role dsyncd processes on free
loopback ports with certificates made by certs/gen-certs.sh, fault injection (kill -9, SIGSTOP,
restart), /status polling, HMAC-signed peer requests and a small JSON client.

Every process goes through dsync.Node, so dsync kills it on teardown and at interpreter exit.
"""
import hashlib
import hmac
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import dsync

HERE = os.path.dirname(os.path.abspath(__file__))
GEN_CERTS = os.path.join(HERE, "..", "..", "certs", "gen-certs.sh")
NETWORK_ERRORS = (OSError, ssl.SSLError, http.client.HTTPException, EOFError, ValueError)


def make_certs(dir, extra_names=("node4", "node5")):
    """Run certs/gen-certs.sh into dir (CA, node1..3 + extra_names, admin, mac.key)."""
    r = subprocess.run(["bash", GEN_CERTS, dir] + list(extra_names), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError("gen-certs.sh failed: %s%s" % (r.stdout, r.stderr))
    return dir


def mac_key(certs_dir):
    """The shared MAC key as dsyncd reads it (the file's bytes without trailing newlines)."""
    with open(os.path.join(certs_dir, "mac.key"), "rb") as f:
        return f.read().rstrip(b"\r\n")


def sign(key, method, path, body, node="node1", time_ms=None, nonce=None):
    """The X-Dsync-* headers of net/auth.h for one peer request."""
    t = str(int(time.time() * 1000) if time_ms is None else time_ms)
    nonce = nonce or "%x.%x" % (secrets.randbits(63) | 1, 1)
    msg = "\n".join([method, path, t, nonce, node]).encode() + b"\n" + body
    return {"X-Dsync-Node": node, "X-Dsync-Time": t, "X-Dsync-Nonce": nonce,
            "X-Dsync-Mac": hmac.new(key, msg, hashlib.sha256).hexdigest()}


class Cluster:
    """Lock-role nodes named node1..nodeN on 127.0.0.1.  The [cluster] peers list of each node is
    `peers` (default: every name), so a joining node can be configured differently."""

    def __init__(self, base_dir, certs_dir, names, raft=None, lock=None, log_level="info"):
        self.dir = tempfile.mkdtemp(prefix="cluster-", dir=base_dir)
        self.certs = certs_dir
        self.ca = os.path.join(certs_dir, "ca.crt")
        self.names = list(names)
        self.ports = {n: dsync.free_port() for n in self.names}
        self.raft = dict(raft or {})
        self.lock_conf = dict(lock or {})
        self.log_level = log_level
        self.nodes = {}     # name -> dsync.Node (the current process)
        self.stopped = set()  # names under SIGSTOP
        self.old = []       # earlier processes of restarted nodes (their logs)
        self.ctx = dsync.client_context(self.ca)
        self.admin_ctx = dsync.client_context(self.ca, os.path.join(certs_dir, "admin.crt"),
                                              os.path.join(certs_dir, "admin.key"))

    def url(self, name):
        return "https://127.0.0.1:%d" % self.ports[name]

    def add_name(self, name):
        self.names.append(name)
        self.ports[name] = dsync.free_port()

    def peers_text(self, names):
        return ",".join("%s=%s" % (n, self.url(n)) for n in names)

    def audit_path(self, name):
        return os.path.join(self.dir, name + ".audit.log")

    def config_path(self, name, peers=None):
        path = os.path.join(self.dir, name + ".ini")
        sections = {
            "node": {"id": name, "role": "lock", "listen": "127.0.0.1:%d" % self.ports[name],
                     "advertise_url": self.url(name),
                     "data_dir": os.path.join(self.dir, name + "-data")},
            "tls": {"cert": os.path.join(self.certs, name + ".crt"),
                    "key": os.path.join(self.certs, name + ".key"), "ca": self.ca},
            "http": {"shutdown_grace_ms": 1000},
            "log": {"level": self.log_level, "audit_file": self.audit_path(name)},
            "cluster": {"peers": self.peers_text(peers or self.names),
                        "mac_key_file": os.path.join(self.certs, "mac.key")},
        }
        if self.raft:
            sections["raft"] = dict(self.raft)
        if self.lock_conf:
            sections["lock"] = dict(self.lock_conf)
        dsync.write_file(path, dsync.ini_text(sections))
        return path

    # ------------------------------------------------------------------ processes

    def start(self, name, peers=None, wait=True):
        old = self.nodes.get(name)
        if old is not None and old.alive():
            raise AssertionError("%s is still running" % name)
        if old is not None:
            self.old.append(old)
        node = dsync.Node(["--config", self.config_path(name, peers)], self.ports[name], self.ca,
                          wait=wait)
        self.nodes[name] = node
        self.stopped.discard(name)
        return node

    def start_all(self, names=None):
        for n in names or self.names:
            self.start(n, wait=False)
        for n in names or self.names:
            self.nodes[n].wait_healthy()

    def alive(self, name):
        n = self.nodes.get(name)
        return n is not None and n.alive()

    def running(self):
        """Names of live processes that are not stopped."""
        return [n for n in self.names if self.alive(n) and n not in self.stopped]

    def kill(self, name):
        """kill -9 (the log stays readable: the process object is kept in self.old)."""
        node = self.nodes[name]
        if node.alive():
            os.kill(node.pid, signal.SIGKILL)
            node.proc.wait(5)
        node.status_seen = True
        self.stopped.discard(name)

    def pause(self, name):
        os.kill(self.nodes[name].pid, signal.SIGSTOP)
        self.stopped.add(name)

    def resume(self, name):
        if self.alive(name):
            os.kill(self.nodes[name].pid, signal.SIGCONT)
        self.stopped.discard(name)

    def restart(self, name, peers=None, wait=True):
        self.kill(name)
        return self.start(name, peers, wait)

    def resume_all(self):
        for n in list(self.stopped):
            self.resume(n)

    def logs(self, tail=3000):
        out = []
        for n in self.old + list(self.nodes.values()):
            try:
                out.append("--- dsyncd pid %d (port %d):\n%s" % (n.pid, n.port, n.stderr()[-tail:]))
            except OSError:
                pass
        return "\n".join(out)

    # ------------------------------------------------------------------ requests

    def request(self, name, method, path, body=None, ctx=None, timeout=5.0, headers=None):
        """One HTTPS request to node `name`; body: a dict (sent as JSON), bytes or None."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        h = {"Content-Type": "application/json"} if body is not None else {}
        h.update(headers or {})
        conn = http.client.HTTPSConnection("127.0.0.1", self.ports[name], timeout=timeout,
                                           context=ctx or self.ctx)
        try:
            return dsync.do(conn, method, path, body, h)
        finally:
            conn.close()

    def try_request(self, name, method, path, body=None, **kw):
        """Like request, or None when the node does not answer."""
        try:
            return self.request(name, method, path, body, **kw)
        except NETWORK_ERRORS:
            return None

    def status(self, name, timeout=1.0):
        """The node's /status "raft" object, or None."""
        if not self.alive(name) or name in self.stopped:
            return None
        r = self.try_request(name, "GET", "/status", timeout=timeout)
        if r is None or r.status != 200:
            return None
        try:
            return r.json()["lock"]["raft"]
        except (ValueError, KeyError, TypeError):
            return None

    def statuses(self, names=None):
        return {n: self.status(n) for n in (names or self.running())}

    def metrics(self, name):
        r = self.request(name, "GET", "/metrics")
        if r.status != 200:
            raise AssertionError("GET /metrics: %r" % r)
        return dsync.parse_metrics(r.body.decode())

    def agreed_leader(self, names=None):
        """The leader every one of `names` (default: running nodes) names, which itself says it
        leads; None if they do not agree yet."""
        st = self.statuses(names)
        if not st or any(s is None for s in st.values()):
            return None
        leaders = {s.get("leader") for s in st.values()}
        if len(leaders) != 1:
            return None
        leader = leaders.pop()
        if leader is None or leader not in st or st[leader].get("state") != "leader":
            return None
        return leader

    def wait_leader(self, timeout=10.0, names=None, exclude=()):
        """Wait until `names` (default: running nodes) agree on a leader not in `exclude`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.agreed_leader(names)
            if leader is not None and leader not in exclude:
                return leader
            time.sleep(0.05)
        raise AssertionError("no agreed leader within %.0f s: %r\n%s"
                             % (timeout, self.statuses(names), self.logs()))

    def wait_for(self, what, pred, timeout=10.0, interval=0.05):
        """Poll pred() until it returns something true; AssertionError naming `what` otherwise."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = pred()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError("%s: not within %.0f s (last: %r)\n%s"
                             % (what, timeout, last, self.logs()))

    # ------------------------------------------------------------------ lock client

    def lock(self, name, op, body, timeout=5.0):
        """POST /lock/<op> to node `name`; returns (status, json or None, Response)."""
        r = self.request(name, "POST", "/lock/" + op, body, timeout=timeout)
        try:
            j = r.json()
        except ValueError:
            j = None
        return r.status, j, r

    def write(self, resource, client="writer", timeout=10.0, names=None):
        """Acquire+release of an exclusive lock through any running node, retried on 503 and on
        network errors until it succeeds.  Returns the grant's token."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            for n in names or self.running():
                try:
                    st, j, r = self.lock(n, "acquire", {"resource": resource, "client_id": client,
                                                        "ttl_ms": 5000}, timeout=2.0)
                    last = r
                    if st != 200:
                        continue
                    st2, _, r2 = self.lock(n, "release", {"resource": resource, "client_id": client,
                                                          "token": j["token"]}, timeout=2.0)
                    last = r2
                    if st2 == 200:
                        return j["token"]
                except NETWORK_ERRORS as e:
                    last = e
            time.sleep(0.05)
        raise AssertionError("write of %r did not succeed within %.0f s (last: %r)\n%s"
                             % (resource, timeout, last, self.logs()))


class ClusterCase(dsync.TempDirCase):
    """A test class with gen-certs.sh certificates (self.cluster_certs) and a cluster per test,
    made by self.cluster(); stopped processes are resumed before dsync's teardown stops them all
    with SIGTERM and checks that they exit 0."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cluster_certs = make_certs(os.path.join(cls.tmp, "cluster-certs"))

    def setUp(self):
        super().setUp()
        self.clusters = []

    def cluster(self, n=3, start=True, **kw):
        c = Cluster(self.tmp, self.cluster_certs, ["node%d" % i for i in range(1, n + 1)], **kw)
        self.clusters.append(c)
        if start:
            c.start_all()
        return c

    def tearDown(self):
        for c in self.clusters:
            c.resume_all()
        super().tearDown()
        for c in self.clusters:
            shutil.rmtree(c.dir, ignore_errors=True)


def wait_port_free(port, timeout=5.0):
    """Wait until nothing accepts on 127.0.0.1:port (a killed node's socket is gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return
        time.sleep(0.05)
