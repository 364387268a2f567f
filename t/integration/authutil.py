"""Helpers for the client-auth integration tests: tokens files (made by hand or by
certs/gen-tokens.sh), lock clusters and single nodes with [auth] on, bearer headers, requests
from a chosen loopback source address, and audit-log reading."""
import hashlib
import http.client
import json
import os
import secrets
import subprocess

import dsync
import lockutil

HERE = os.path.dirname(os.path.abspath(__file__))
GEN_TOKENS = os.path.join(HERE, "..", "..", "certs", "gen-tokens.sh")


def bearer(token):
    return {"Authorization": "Bearer " + token}


def write_tokens(path, specs):
    """specs: [(name, roles, scope, token or None)]; writes the tokens file (hashes only) and
    returns {name: token}."""
    lines, tokens = ["# test identities"], {}
    for name, roles, scope, token in specs:
        digest = hashlib.sha256(token.encode()).hexdigest() if token else "-"
        lines.append("%s %s %s %s" % (name, roles, scope, digest))
        if token:
            tokens[name] = token
    dsync.write_file(path, "\n".join(lines) + "\n")
    return tokens


def standard_specs():
    """reader, writer, admin, a writer scoped to 'orders.', a second writer, and the admin
    certificate's CN (gen-certs.sh: CN=admin) as a certificate-only admin."""
    t = lambda: secrets.token_hex(16)
    return [("reader", "reader", "*", t()), ("alice", "writer", "*", t()),
            ("bob", "writer", "*", t()), ("scoped", "writer", "orders.", t()),
            ("boss", "admin", "*", t()), ("admin", "admin", "*", None)]


def gen_tokens(dir):
    """Run certs/gen-tokens.sh into dir; returns {name: token} read back from <name>.token."""
    r = subprocess.run(["bash", GEN_TOKENS, dir], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("gen-tokens.sh failed: %s%s" % (r.stdout, r.stderr))
    out = {}
    for n in ("admin", "writer", "reader"):
        with open(os.path.join(dir, n + ".token")) as f:
            out[n] = f.read().strip()
    return out, r.stdout


class AuthCluster(lockutil.Cluster):
    """A lock cluster whose nodes read `tokens_file` ([auth] plus extra keys in auth_conf)."""

    def __init__(self, base_dir, certs_dir, names, tokens_file, auth_conf=None, **kw):
        super().__init__(base_dir, certs_dir, names, **kw)
        self.auth = {"tokens_file": tokens_file}
        self.auth.update(auth_conf or {})

    def status(self, name, timeout=1.0):
        """/status "raft" object read with the admin certificate (CN admin must be in the
        tokens file), or None."""
        if not self.alive(name) or name in self.stopped:
            return None
        r = self.try_request(name, "GET", "/status", timeout=timeout, ctx=self.admin_ctx)
        if r is None or r.status != 200:
            return None
        return r.json()["lock"]["raft"]

    def config_path(self, name, peers=None):
        path = super().config_path(name, peers)
        with open(path, "a") as f:
            f.write("\n" + dsync.ini_text({"auth": self.auth}))
        return path


def request_from(port, source_ip, ctx, method, path, headers=None, body=None, timeout=5.0):
    """One request to 127.0.0.1:port from source_ip (any 127.0.0.0/8 address)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx,
                                       source_address=(source_ip, 0))
    try:
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        return dsync.do(conn, method, path, body, headers)
    finally:
        conn.close()


def audit_records(path):
    """The audit log's records (flushed every 200 ms by the node)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
