"""Helpers of the compose suite: one Docker Compose project per test file, built from
compose/Dockerfile and compose/docker-compose.yml exactly as a user runs them, and removed with
`down -v` whatever happens (failure, SIGTERM from meson's timeout, interpreter exit).

Only the Python 3 standard library, the docker CLI and docker compose (plugin or docker-compose) are
used.  Without a Docker daemon every test file exits 77, which meson counts as skipped.
"""
import atexit
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

SKIP = 77
TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
COMPOSE_FILE = os.path.join(TOP, "compose", "docker-compose.yml")
ENV_EXAMPLE = os.path.join(TOP, "compose", ".env.example")
BASE_SCRIPT = os.path.join(TOP, "compose", "build-base-image.sh")
SCALE_SCRIPT = os.path.join(TOP, "compose", "scale.sh")
PREFIX = "dsyncct"            # project names: dsyncct-<file>-<pid>-<random>
PROFILES = ("node4", "more-cache", "more-queue")
BASE_IMAGE = "debian:bookworm-slim"
OFFICIAL_REDIS = "redis:7-bookworm"
GENEROUS = 60.0               # seconds: a bound, not a timing assertion
# host ports of the deployment (compose/.env.example) and the container ports behind them
PORTS = {"node1": ("NODE1_PORT", 8001), "node2": ("NODE2_PORT", 8002),
         "node3": ("NODE3_PORT", 8003), "node4": ("NODE4_PORT", 8004),
         "queue-node-1": ("QUEUE_NODE1_PORT", 9101),
         "cache-node-1": ("CACHE_NODE1_PORT", 10001), "cache-node-2": ("CACHE_NODE2_PORT", 10002),
         "cache-node-3": ("CACHE_NODE3_PORT", 10003)}
LOCK_NODES = ("node1", "node2", "node3")
CACHE_NODES = ("cache-node-1", "cache-node-2", "cache-node-3")
REDIS = ("redis-1", "redis-2", "redis-3")
ALL_SERVICES = LOCK_NODES + ("queue-node-1",) + CACHE_NODES + REDIS

_t0 = time.monotonic()


def note(fmt, *args):
    print("[%6.1fs] %s" % (time.monotonic() - _t0, fmt % args if args else fmt), file=sys.stderr,
          flush=True)


def run(cmd, timeout=120, check=True, **kw):
    """Run a command, capture its output; raise with both streams when check and it failed."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError("%s: exit %d\n%s\n%s" % (" ".join(cmd), p.returncode,
                                                       p.stdout[-3000:], p.stderr[-3000:]))
    return p


def skip(why):
    print("SKIP: %s" % why, flush=True)
    sys.exit(SKIP)


def compose_tool():
    """The compose command: the docker CLI plugin if present, else docker-compose."""
    if shutil.which("docker"):
        try:
            if run(["docker", "compose", "version"], 20, check=False).returncode == 0:
                return ["docker", "compose"]
        except subprocess.TimeoutExpired:
            pass
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def require_docker():
    """Exit 77 (skip) unless a Docker daemon answers and a compose tool exists."""
    if not shutil.which("docker"):
        skip("no docker CLI on this machine: the compose suite needs a Docker daemon")
    try:
        p = run(["docker", "info", "--format", "{{.ServerVersion}}"], 30, check=False)
    except subprocess.TimeoutExpired:
        skip("docker info did not answer in 30 s: no Docker daemon")
    if p.returncode != 0 or not p.stdout.strip():
        skip("no Docker daemon answers (docker info: %s)" % p.stderr.strip()[:200])
    tool = compose_tool()
    if tool is None:
        skip("neither `docker compose` nor docker-compose is installed")
    return tool


def have_image(ref):
    return run(["docker", "image", "inspect", ref], 30, check=False).returncode == 0


def ensure_base_images():
    """The images a user would pull; built locally by compose/build-base-image.sh where no registry
    is reachable.  Returns the Redis image to run."""
    if have_image(OFFICIAL_REDIS) and have_image(BASE_IMAGE):
        return OFFICIAL_REDIS
    if not (have_image(BASE_IMAGE) and have_image("dsyncd-redis:bookworm")):
        note("building the local base images (%s)", BASE_SCRIPT)
        t = time.monotonic()
        p = run([BASE_SCRIPT], 900, check=False)
        if p.returncode != 0:
            raise AssertionError("build-base-image.sh failed:\n" + p.stderr[-3000:])
        note("base images built in %.1f s", time.monotonic() - t)
    return "dsyncd-redis:bookworm"


def port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def host_ports():
    """The documented host ports when all are free, else free ones (a local cluster may hold them)."""
    if all(port_free(p) for _, p in PORTS.values()):
        return {svc: p for svc, (_, p) in PORTS.items()}
    note("default host ports busy: publishing on free ports instead")
    return {svc: free_port() for svc in PORTS}


# ------------------------------------------------------------------ leftovers of killed runs

def _project_resources(project):
    label = "label=com.docker.compose.project=%s" % project
    out = {}
    for kind, cmd in (("containers", ["docker", "ps", "-aq", "--filter", label]),
                      ("volumes", ["docker", "volume", "ls", "-q", "--filter", label]),
                      ("networks", ["docker", "network", "ls", "-q", "--filter", label])):
        out[kind] = run(cmd, 60, check=False).stdout.split()
    return out


def _force_remove(project):
    res = _project_resources(project)
    if res["containers"]:
        run(["docker", "rm", "-f", "-v"] + res["containers"], 120, check=False)
    if res["volumes"]:
        run(["docker", "volume", "rm", "-f"] + res["volumes"], 60, check=False)
    if res["networks"]:
        run(["docker", "network", "rm"] + res["networks"], 60, check=False)


def remove_stale_projects():
    """Projects of earlier runs whose test process is gone (killed by a timeout): remove them."""
    p = run(["docker", "ps", "-a", "--format",
             '{{.Label "com.docker.compose.project"}}'], 60, check=False)
    p2 = run(["docker", "volume", "ls", "--format",
              '{{.Label "com.docker.compose.project"}}'], 60, check=False)
    for project in set(p.stdout.split()) | set(p2.stdout.split()):
        m = re.fullmatch(PREFIX + r"-[a-z]+-(\d+)-[0-9a-f]+", project)
        if m and not os.path.exists("/proc/%s" % m.group(1)):
            note("removing %s, left by a test run that was killed", project)
            _force_remove(project)


# ------------------------------------------------------------------ HTTPS

class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<%s %s>" % (self.status, self.body[:400])


def https(port, method, path, body=None, ctx=None, timeout=10.0, token=None):
    """One HTTPS request to localhost:port verified against ctx (with a bearer token when given);
    raises OSError if unreachable."""
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body)
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        if token:
            hdrs["Authorization"] = "Bearer " + token
        conn.request(method, path, data, hdrs)
        r = conn.getresponse()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()},
                        r.read().decode("utf-8", "replace"))
    finally:
        conn.close()


def wait_for(what, fn, timeout=GENEROUS, every=0.5):
    """Call fn until it returns something true; return that, or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except (OSError, ValueError, http.client.HTTPException) as e:
            last = e
        time.sleep(every)
    raise AssertionError("gave up after %.0f s waiting until %s (last error: %r)"
                         % (timeout, what, last))


# ------------------------------------------------------------------ the deployment

_live = []


def _cleanup_all(*_):
    while _live:
        _live.pop().down()


def _on_signal(signum, _frame):
    note("signal %d: removing the compose project(s) before exiting", signum)
    _cleanup_all()
    os._exit(1)


atexit.register(_cleanup_all)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


class Deployment:
    """One compose project from compose/docker-compose.yml with an .env made from .env.example."""

    def __init__(self, name):
        self.tool = require_docker()
        remove_stale_projects()
        self.redis_image = ensure_base_images()
        self.project = "%s-%s-%d-%s" % (PREFIX, name, os.getpid(), secrets.token_hex(3))
        self.tmp = tempfile.mkdtemp(prefix="dsync-compose-")
        self.ports = host_ports()
        self.env_file = os.path.join(self.tmp, "env")
        self._write_env()
        self.cmd = self.tool + ["-p", self.project, "--env-file", self.env_file, "-f", COMPOSE_FILE]
        self.certs = os.path.join(self.tmp, "certs")
        self.ctx = self.admin_ctx = self.token = None
        self._down = False
        _live.append(self)
        note("compose project %s", self.project)

    def _write_env(self):
        """.env as a user makes it: the example with a random key, plus this run's ports/image."""
        with open(ENV_EXAMPLE) as f:
            text = f.read()
        key = secrets.token_hex(32)
        text, n = re.subn(r"(?m)^SHARED_MAC_KEY=.*$", "SHARED_MAC_KEY=" + key, text)
        assert n == 1, ".env.example must have one SHARED_MAC_KEY= line"
        self.mac_key = key
        extra = ["REDIS_IMAGE=" + self.redis_image]
        extra += ["%s=%d" % (PORTS[svc][0], port) for svc, port in self.ports.items()]
        with open(self.env_file, "w") as f:
            f.write(text + "\n" + "\n".join(extra) + "\n")

    def compose(self, *args, timeout=300, check=True, env=None):
        e = dict(os.environ)
        e.pop("SHARED_MAC_KEY", None)  # the .env file is the only source of the key
        e.update(env or {})
        return run(self.cmd + list(args), timeout, check, env=e)

    def up(self, *services, build=False):
        """up -d; build=True adds --build unless DSYNC_COMPOSE_BUILD=0 (reuse the image as is)."""
        build = build and os.environ.get("DSYNC_COMPOSE_BUILD", "1") != "0"
        t = time.monotonic()
        self.compose("up", "-d", *(["--build"] if build else []), *services, timeout=900)
        note("up %s%s: %.1f s", "--build " if build else "", " ".join(services) or "(all)",
             time.monotonic() - t)

    def cids(self, service):
        """The container ids of a service's replicas (profiles or not), not of `run` containers."""
        return run(["docker", "ps", "-a", "-q",
                    "--filter", "label=com.docker.compose.project=%s" % self.project,
                    "--filter", "label=com.docker.compose.service=%s" % service,
                    "--filter", "label=com.docker.compose.oneoff=False"], 60).stdout.split()

    def cid(self, service):
        ids = self.cids(service)
        if not ids:
            raise AssertionError("no container for service %s" % service)
        return ids[0]

    def health(self, cid):
        p = run(["docker", "inspect", "-f", "{{.State.Status}} {{if .State.Health}}"
                 "{{.State.Health.Status}}{{end}}", cid], 30, check=False)
        return p.stdout.strip()

    def wait_healthy(self, services, timeout=120):
        t = time.monotonic()
        ids = {s: self.cid(s) for s in services}
        wait_for("%s are healthy" % ", ".join(services),
                 lambda: all(self.health(c) == "running healthy" for c in ids.values()),
                 timeout)
        note("healthy: %s after %.1f s", " ".join(services), time.monotonic() - t)

    def fetch_certs(self, service="node1"):
        """Copy the certs volume out of a node and make the CA-verifying client contexts."""
        if os.path.isdir(self.certs):
            shutil.rmtree(self.certs)
        run(["docker", "cp", self.cid(service) + ":/certs/.", self.certs], 60)
        ca = os.path.join(self.certs, "ca.crt")
        self.ctx = ssl.create_default_context(cafile=ca)
        self.admin_ctx = ssl.create_default_context(cafile=ca)
        self.admin_ctx.load_cert_chain(os.path.join(self.certs, "admin.crt"),
                                       os.path.join(self.certs, "admin.key"))
        # client auth is on in the deployment: the tests act as the admin identity
        with open(os.path.join(self.certs, "admin.token")) as f:
            self.token = f.read().strip()

    def request(self, service, method, path, body=None, admin=False, timeout=10.0):
        """HTTPS from the host through the service's published port, verified with the CA."""
        return https(self.ports[service], method, path, body,
                     self.admin_ctx if admin else self.ctx, timeout, token=self.token)

    def status(self, service):
        r = self.request(service, "GET", "/status", timeout=5)
        return r.json() if r.status == 200 else None

    def exec_curl(self, service, port, method, path, body=None, max_time=5, cid=None):
        """HTTPS from inside a service's container (or container cid) to its own port, verified
        with the CA: works while the container is cut off the network."""
        cmd = ["docker", "exec", cid or self.cid(service), "curl", "-sS", "--max-time", str(max_time),
               "--cacert", "/certs/ca.crt", "-o", "-", "-w", "\n%{http_code}", "-X", method,
               "-H", "Authorization: Bearer " + self.token,
               "https://localhost:%d%s" % (port, path)]
        if body is not None:
            cmd[-1:-1] = ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        p = run(cmd, max_time + 30, check=False)
        text, _, code = p.stdout.rpartition("\n")
        return Response(int(code) if code.isdigit() else 0, {}, text)

    def network(self):
        return "%s_dsync" % self.project

    def scale(self, *args, timeout=180):
        env = dict(os.environ, DSYNC_COMPOSE=" ".join(self.cmd), DSYNC_SCALE_TIMEOUT="90")
        t = time.monotonic()
        p = run([SCALE_SCRIPT] + list(args), timeout, env=env)
        note("scale.sh %s: %.1f s", " ".join(args), time.monotonic() - t)
        return p

    def leftovers(self):
        return {k: v for k, v in _project_resources(self.project).items() if v}

    def down(self):
        """docker compose down -v (every profile, orphans too), then anything left by force."""
        if self._down:
            return
        self._down = True
        if self in _live:
            _live.remove(self)
        t = time.monotonic()
        args = []
        for p in PROFILES:
            args += ["--profile", p]
        try:
            self.compose(*args, "down", "-v", "--remove-orphans", "-t", "5", timeout=180,
                         check=False)
        finally:
            _force_remove(self.project)
            shutil.rmtree(self.tmp, ignore_errors=True)
        note("down -v: %.1f s", time.monotonic() - t)


def role_available(status):
    return bool(status and status.get("role_available"))


def main():
    """unittest's main, mapping "every test skipped" to exit 77 so that meson reports SKIP."""
    prog = unittest.main(exit=False, verbosity=2)
    r = prog.result
    if not r.wasSuccessful():
        sys.exit(1)
    if r.skipped and len(r.skipped) >= r.testsRun:
        sys.exit(SKIP)
    sys.exit(0)
