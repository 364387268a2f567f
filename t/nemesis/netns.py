"""Network namespaces for real-process fault runs: one namespace per node joined by veth pairs to a
bridge in a hub namespace, and the network faults (partitions, bridge, one-way loss, latency, heal).

    dsn-<run>-hub   br0 = 10.77.<k>.254/24, one veth port p<i> per node; the clients run here
    dsn-<run>-<i>   eth0 = 10.77.<k>.<i>/24 (the other end of p<i>), lo

Nothing is created in the caller's namespace: every link is made inside the hub (`ip -n`) and its
node end is moved straight into the node's namespace, so the only traffic a run makes is between
the namespaces it created.  Faults are iptables rules in the node namespaces (the full rule set of a
namespace is replaced atomically by one iptables-restore) and a tc qdisc on a node's eth0: netem
delay where the kernel has it, otherwise a token-bucket "slow link" (tbf), whose queueing delays
every packet.  Clients in the hub are never cut off: a partition is between nodes.

Teardown deletes the namespaces (which takes their links and rules with them) and is idempotent;
`sweep_stale()` removes what a runner that was killed with SIGKILL left behind (namespaces named
after a process id that no longer exists, and the processes inside them).
"""
import ctypes
import os
import re
import signal
import subprocess
import time

PREFIX = "dsn"
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
# dsn-<runner pid>[<letters>]-<hub|node>: the pid tells whether the run that made it is alive
_STALE_RE = re.compile(r"^%s-(\d+)[a-z]*-(hub|\d+)$" % PREFIX)


class Unsupported(Exception):
    """This machine cannot run the namespace tests (not root, no `ip netns`, no iptables)."""


class CommandError(Exception):
    pass


def sh(argv, input=None, check=True, timeout=20):
    """Run a command; returns CompletedProcess (text).  CommandError when check and it fails."""
    r = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise CommandError("%s failed (%d): %s%s" % (" ".join(argv), r.returncode, r.stdout,
                                                   r.stderr))
    return r


def _which(name):
    for d in os.environ.get("PATH", "").split(":") + ["/usr/sbin", "/sbin"]:
        p = os.path.join(d, name)
        if d and os.access(p, os.X_OK):
            return p
    return None


def preflight():
    """Raise Unsupported with a clear reason if namespaces cannot be used here."""
    if os.geteuid() != 0:
        raise Unsupported("needs root (network namespaces, iptables)")
    for tool in ("ip", "iptables-restore", "tc"):
        if not _which(tool):
            raise Unsupported("%s not found (apt-get install iproute2 iptables)" % tool)
    probe = "%s-%dp-0" % (PREFIX, os.getpid())
    r = sh(["ip", "netns", "add", probe], check=False)
    if r.returncode != 0:
        raise Unsupported("`ip netns add` failed: %s" % r.stderr.strip())
    try:
        r = sh(["ip", "netns", "exec", probe, "iptables-restore"], input="*filter\nCOMMIT\n",
               check=False)
        if r.returncode != 0:
            raise Unsupported("iptables does not work in a namespace: %s" % r.stderr.strip())
    finally:
        sh(["ip", "netns", "del", probe], check=False)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_netns_pids(ns):
    """SIGKILL every process inside namespace ns (they are ours: we made the namespace)."""
    r = sh(["ip", "netns", "pids", ns], check=False)
    for tok in r.stdout.split():
        try:
            os.kill(int(tok), signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass


def sweep_stale():
    """Delete namespaces of earlier runs whose runner process is gone.  Returns their names."""
    gone = []
    r = sh(["ip", "netns", "list"], check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _STALE_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            kill_netns_pids(name)
            sh(["ip", "netns", "del", name], check=False)
            gone.append(name)
    return gone


class _Libc:
    lib = None

    @classmethod
    def setns(cls, fd):
        if cls.lib is None:
            cls.lib = ctypes.CDLL(None, use_errno=True)
        if cls.lib.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "setns: %s" % os.strerror(e))


class Topology:
    """n nodes (numbered 1..n) around a bridge.  Use as a context manager or call create() and,
    always, teardown()."""

    def __init__(self, n, run=None, port=7001):
        if not 1 <= n <= 200:
            raise ValueError("1..200 nodes")
        self.n = n
        self.run = run or str(os.getpid())
        if not re.match(r"^\d+[a-z]*$", self.run):
            raise ValueError("run id: the runner's pid, then optional letters")
        self.port = port
        self.subnet = "10.77.%d" % (os.getpid() % 250)
        self.hub = "%s-%s-hub" % (PREFIX, self.run)
        self.created = []          # namespaces made so far (teardown deletes exactly these)
        self.netem = False         # whether `latency` uses netem (else a tbf slow link)
        self._orig_fd = None       # the caller's namespace while inside the hub
        self.rules = {}            # node -> list of iptables rule lines in force
        self.shaped = set()        # nodes with a qdisc on eth0

    # ---------------------------------------------------------------- naming
    def ns(self, i):
        return "%s-%s-%d" % (PREFIX, self.run, i)

    def ip(self, i):
        return "%s.%d" % (self.subnet, i)

    @property
    def hub_ip(self):
        return "%s.254" % self.subnet

    @property
    def nodes(self):
        return list(range(1, self.n + 1))

    def url(self, i):
        return "https://%s:%d" % (self.ip(i), self.port)

    def exec_argv(self, i, argv):
        """argv run inside node i's namespace (the exec keeps the pid: signals reach argv[0])."""
        return ["ip", "netns", "exec", self.ns(i)] + list(argv)

    # ---------------------------------------------------------------- life cycle
    def __enter__(self):
        self.create()
        return self

    def __exit__(self, *exc):
        self.teardown()

    def _add_ns(self, name):
        sh(["ip", "netns", "add", name])
        self.created.append(name)
        sh(["ip", "-n", name, "link", "set", "lo", "up"])

    def create(self):
        try:
            self._add_ns(self.hub)
            sh(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"])
            sh(["ip", "-n", self.hub, "addr", "add", self.hub_ip + "/24", "dev", "br0"])
            sh(["ip", "-n", self.hub, "link", "set", "br0", "up"])
            for i in self.nodes:
                self._add_node(i)
            self.netem = self._probe_netem()
        except BaseException:
            self.teardown()
            raise

    def _add_node(self, i):
        ns, port = self.ns(i), "p%d" % i
        self._add_ns(ns)
        sh(["ip", "-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0",
            "netns", ns])
        sh(["ip", "-n", self.hub, "link", "set", port, "master", "br0"])
        sh(["ip", "-n", self.hub, "link", "set", port, "up"])
        sh(["ip", "-n", ns, "addr", "add", self.ip(i) + "/24", "dev", "eth0"])
        sh(["ip", "-n", ns, "link", "set", "eth0", "up"])

    def _probe_netem(self):
        ns = self.ns(1)
        r = sh(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root", "netem",
                "delay", "1ms"], check=False)
        sh(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root"], check=False)
        return r.returncode == 0

    def enter_hub(self):
        """Move the calling thread (and the threads and processes it starts afterwards) into the
        hub namespace.  leave_hub() moves it back."""
        if self._orig_fd is not None:
            return
        self._orig_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open(os.path.join(NETNS_DIR, self.hub), os.O_RDONLY)
        try:
            _Libc.setns(fd)
        finally:
            os.close(fd)

    def leave_hub(self):
        if self._orig_fd is None:
            return
        try:
            _Libc.setns(self._orig_fd)
        finally:
            os.close(self._orig_fd)
            self._orig_fd = None

    def teardown(self):
        """Kill what runs inside the namespaces and delete them.  Safe to call more than once."""
        self.leave_hub()
        for ns in reversed(self.created):
            kill_netns_pids(ns)
        for ns in reversed(self.created):
            for _ in range(20):
                if sh(["ip", "netns", "del", ns], check=False).returncode == 0:
                    break
                time.sleep(0.05)
        self.created = []

    def leftovers(self):
        """Namespaces of this run that still exist (empty after teardown)."""
        r = sh(["ip", "netns", "list"], check=False)
        mine = {self.hub} | {self.ns(i) for i in self.nodes}
        return [l.split()[0] for l in r.stdout.splitlines() if l.split() and l.split()[0] in mine]

    # ---------------------------------------------------------------- rules
    def _apply(self, i, rules):
        text = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        text += "".join(r + "\n" for r in rules) + "COMMIT\n"
        sh(self.exec_argv(i, ["iptables-restore"]), input=text)
        self.rules[i] = list(rules)

    def _set_drops(self, drops):
        """drops: {(src, dst): probability}; packets from node src to node dst are dropped with
        that probability (1.0 = cut).  Applied at dst's INPUT (and, for a full cut, at src's
        OUTPUT too).  Nodes not mentioned get an empty rule set."""
        rules = {i: [] for i in self.nodes}
        for (src, dst), p in sorted(drops.items()):
            if p >= 1.0:
                rules[dst].append("-A INPUT -s %s/32 -j DROP" % self.ip(src))
                rules[src].append("-A OUTPUT -d %s/32 -j DROP" % self.ip(dst))
            elif p > 0:
                rules[dst].append("-A INPUT -s %s/32 -m statistic --mode random --probability "
                                  "%.3f -j DROP" % (self.ip(src), p))
        for i in self.nodes:
            if rules[i] or self.rules.get(i):
                self._apply(i, rules[i])

    def partition(self, groups):
        """Nodes in different groups cannot reach each other; nodes in no group are cut off
        from everyone.  groups: iterables of node numbers."""
        side = {}
        for g, members in enumerate(groups):
            for i in members:
                side[i] = g
        drops = {}
        for a in self.nodes:
            for b in self.nodes:
                if a != b and (a not in side or b not in side or side[a] != side[b]):
                    drops[(a, b)] = 1.0
        self._set_drops(drops)

    def isolate(self, i):
        self.partition([[j for j in self.nodes if j != i]])

    def bridge(self, left, middle, right):
        """left and right cannot reach each other; middle reaches both."""
        drops = {}
        for a in left:
            for b in right:
                drops[(a, b)] = drops[(b, a)] = 1.0
        self._set_drops(drops)

    def lose(self, pairs, probability):
        """One-way loss: packets from src to dst for each (src, dst) in pairs."""
        self._set_drops({pair: probability for pair in pairs})

    def latency(self, i, delay_ms, jitter_ms=0):
        """Delay what node i sends (netem), or make its link slow (tbf) without netem.  Returns
        a description of what was applied."""
        if self.netem:
            args = ["netem", "delay", "%dms" % delay_ms]
            if jitter_ms:
                args.append("%dms" % jitter_ms)
            what = "netem delay %d±%d ms" % (delay_ms, jitter_ms)
        else:
            # ~1 KiB/s per ms of delay wanted: a 1.5 KB packet queues for about delay_ms
            rate = max(16, 12000 // max(1, delay_ms))
            args = ["tbf", "rate", "%dkbit" % rate, "burst", "1600", "latency", "5s"]
            what = "tbf slow link %d kbit/s (netem unavailable)" % rate
        sh(self.exec_argv(i, ["tc", "qdisc", "replace", "dev", "eth0", "root"] + args))
        self.shaped.add(i)
        return what

    def heal(self):
        """Remove every rule and qdisc."""
        self._set_drops({})
        for i in sorted(self.shaped):
            sh(self.exec_argv(i, ["tc", "qdisc", "del", "dev", "eth0", "root"]), check=False)
        self.shaped.clear()
