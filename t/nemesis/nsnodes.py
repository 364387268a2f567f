"""dsyncd processes inside the namespaces of a netns.Topology: certificates with the nodes' namespace
IPs in their subjectAltNames (openssl CLI), INI files, start / kill -9 / SIGSTOP / SIGCONT / restart,
and an HTTPS client for the hub namespace.  Role-neutral: the caller gives the role's INI sections.

Each node's stderr is appended to RUN_DIR/<name>.log across restarts; a process that exits without
the nemesis having killed it is remembered in `unexpected` (a crash is a finding).
"""
import http.client
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from dsync import ini_text  # noqa: E402  (one INI writer for every test)

NETWORK_ERRORS = (OSError, ssl.SSLError, http.client.HTTPException, EOFError, ValueError)


def _openssl(args, cwd):
    r = subprocess.run(["openssl"] + args, cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), r.stderr))


def make_certs(dir, nodes):
    """A CA, one serverAuth+clientAuth certificate per node with SANs DNS:<name>, IP:<ip>, and the
    shared MAC key, in dir.  nodes: {name: ip}.  Returns dir."""
    os.makedirs(dir, exist_ok=True)
    ec = ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"]
    _openssl(ec + ["ca.key"], dir)
    _openssl(["req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "2", "-subj",
              "/O=dsync nemesis/CN=nemesis CA", "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", "ca.crt"], dir)
    for name, ip in nodes.items():
        _openssl(ec + [name + ".key"], dir)
        _openssl(["req", "-new", "-key", name + ".key", "-subj", "/O=dsync nemesis/CN=" + name,
                  "-out", name + ".csr"], dir)
        with open(os.path.join(dir, name + ".ext"), "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n"
                    "subjectAltName=DNS:%s,IP:%s\n" % (name, ip))
        _openssl(["x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                  "-CAcreateserial", "-days", "2", "-sha256", "-extfile", name + ".ext",
                  "-out", name + ".crt"], dir)
    with open(os.path.join(dir, "mac.key"), "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return dir


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body.decode("utf-8"))


class Nodes:
    """Nodes node1..nodeN of a role, node i in topology namespace i.

    extra: {section: {key: value}} merged into every node's INI (e.g. raft timings); per_node(i)
    may return more sections for node i."""

    def __init__(self, topo, run_dir, binary, role, extra=None, per_node=None):
        self.topo, self.dir, self.binary, self.role = topo, run_dir, binary, role
        self.names = ["node%d" % i for i in topo.nodes]
        self.index = {n: i for n, i in zip(self.names, topo.nodes)}
        self.certs = make_certs(os.path.join(run_dir, "certs"),
                                {n: topo.ip(i) for n, i in self.index.items()})
        self.ca = os.path.join(self.certs, "ca.crt")
        self.ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        self.extra, self.per_node = extra or {}, per_node
        self.procs = {}          # name -> Popen of the current process
        self.paused = set()
        self.expected_dead = set()
        self.unexpected = []     # (name, pid, returncode) of processes that died on their own
        self.starts = 0
        self.lock = threading.Lock()

    def url(self, name):
        return self.topo.url(self.index[name])

    def log_path(self, name):
        return os.path.join(self.dir, name + ".log")

    def config(self, name):
        i = self.index[name]
        peers = ",".join("%s=%s" % (n, self.url(n)) for n in self.names)
        sections = {
            "node": {"id": name, "role": self.role,
                     "listen": "%s:%d" % (self.topo.ip(i), self.topo.port),
                     "advertise_url": self.url(name),
                     "data_dir": os.path.join(self.dir, name + "-data")},
            "tls": {"cert": os.path.join(self.certs, name + ".crt"),
                    "key": os.path.join(self.certs, name + ".key"), "ca": self.ca},
            "http": {"shutdown_grace_ms": 1000},
            "log": {"level": "info", "audit_file": os.path.join(self.dir, name + ".audit.log")},
            "cluster": {"peers": peers, "mac_key_file": os.path.join(self.certs, "mac.key")},
        }
        for more in (self.extra, self.per_node(i) if self.per_node else {}):
            for sec, keys in more.items():
                sections.setdefault(sec, {}).update(keys)
        path = os.path.join(self.dir, name + ".ini")
        with open(path, "w") as f:
            f.write(ini_text(sections))
        return path

    # ---------------------------------------------------------------- processes
    def _reap_check(self, name):
        """Record the current process of name as an unexpected death if it exited by itself."""
        p = self.procs.get(name)
        if p is not None and p.poll() is not None and name not in self.expected_dead:
            self.unexpected.append((name, p.pid, p.returncode))
            self.expected_dead.add(name)

    def check_deaths(self):
        with self.lock:
            for n in self.names:
                self._reap_check(n)
        return list(self.unexpected)

    def start(self, name):
        with self.lock:
            p = self.procs.get(name)
            if p is not None and p.poll() is None:
                raise RuntimeError("%s is still running" % name)
            self._reap_check(name)
            env = {k: v for k, v in os.environ.items() if not k.startswith("DSYNCD_")}
            with open(self.log_path(name), "ab") as log:
                log.write(b"\n--- start %d\n" % int(time.time() * 1000))
                log.flush()
                self.procs[name] = subprocess.Popen(
                    self.topo.exec_argv(self.index[name], [self.binary, "--config",
                                                           self.config(name)]),
                    env=env, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            self.expected_dead.discard(name)
            self.paused.discard(name)
            self.starts += 1

    def start_all(self):
        for n in self.names:
            self.start(n)

    def alive(self, name):
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def running(self):
        return [n for n in self.names if self.alive(n) and n not in self.paused]

    def kill(self, name):
        """kill -9 (resuming a paused process first is not needed: SIGKILL ends it)."""
        with self.lock:
            self._reap_check(name)
            p = self.procs.get(name)
            self.expected_dead.add(name)
            self.paused.discard(name)
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)

    def pause(self, name):
        with self.lock:
            p = self.procs.get(name)
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGSTOP)
                self.paused.add(name)

    def resume(self, name):
        with self.lock:
            p = self.procs.get(name)
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)
            self.paused.discard(name)

    def heal(self, wait=10.0):
        """Resume every paused node and start every dead one; returns the names that did not
        answer /health within `wait` seconds."""
        for n in list(self.paused):
            self.resume(n)
        for n in self.names:
            if not self.alive(n):
                self.start(n)
        return [n for n in self.names if not self.wait_healthy(n, wait)]

    def stop_all(self, timeout=10.0):
        """SIGCONT + SIGTERM every node; returns [(name, returncode)] of those that did not exit
        0 by themselves (killed after `timeout`: returncode None)."""
        bad = []
        self.check_deaths()
        for n in self.names:
            p = self.procs.get(n)
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
        for n in self.names:
            p = self.procs.get(n)
            if p is None or n in self.expected_dead:
                continue
            try:
                rc = p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
                rc = None
            if rc != 0:
                bad.append((n, rc))
        return bad

    def kill_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(5)

    # ---------------------------------------------------------------- HTTPS (from the hub)
    def request(self, name, method, path, body=None, timeout=5.0):
        """One HTTPS request to node `name` on a fresh connection.  Raises NETWORK_ERRORS."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        conn = http.client.HTTPSConnection(self.topo.ip(self.index[name]), self.topo.port,
                                           timeout=timeout, context=self.ctx)
        try:
            conn.request(method, path, body=body,
                         headers={"Content-Type": "application/json"} if body else {})
            r = conn.getresponse()
            return Response(r.status, r.getheaders(), r.read())
        finally:
            conn.close()

    def try_request(self, name, method, path, body=None, timeout=5.0):
        try:
            return self.request(name, method, path, body, timeout)
        except NETWORK_ERRORS:
            return None

    def wait_healthy(self, name, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive(name):
                return False
            r = self.try_request(name, "GET", "/health", timeout=1.0)
            if r is not None and r.status == 200:
                return True
            time.sleep(0.1)
        return False

    def logs(self, tail=2000):
        out = []
        for n in self.names:
            try:
                with open(self.log_path(n), "rb") as f:
                    out.append("--- %s:\n%s" % (n, f.read()[-tail:].decode("utf-8", "replace")))
            except OSError:
                pass
        return "\n".join(out)
