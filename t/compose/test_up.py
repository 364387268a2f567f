"""The whole deployment from the checkout: `docker compose up --build -d` with an .env made from
compose/.env.example becomes healthy, every node answers /health over HTTPS verified with the CA the
certs service made, Redis keeps an AOF in its volume, nodes run as a non-root user, the certs service
is idempotent, a node refuses a short or missing MAC key, and `down -v` leaves nothing behind."""
import os
import ssl
import time
import unittest

import composelib as cl


class WholeDeployment(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cl.Deployment("up")
        cls.addClassCleanup(cls.d.down)
        t = time.monotonic()
        cls.d.up(build=True)
        cls.d.wait_healthy(cl.ALL_SERVICES, timeout=180)
        cl.note("up --build -d to every service healthy: %.1f s", time.monotonic() - t)
        cls.d.fetch_certs()

    def test_1_the_certs_service_ran_once_and_succeeded(self):
        p = cl.run(["docker", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}",
                    self.d.cid("certs")], 30)
        self.assertEqual(p.stdout.strip(), "exited 0")

    def test_2_every_node_answers_health_over_https_verified_with_the_generated_ca(self):
        for svc in cl.PORTS:
            if svc == "node4":
                continue
            r = self.d.request(svc, "GET", "/health")
            self.assertEqual(r.status, 200, "%s: %r" % (svc, r))
            self.assertEqual(r.json()["node"], svc, r)
        # the verification is real: a client trusting another CA is refused
        other = ssl.create_default_context()  # the system's CAs only
        with self.assertRaises(ssl.SSLError):
            cl.https(self.d.ports["node1"], "GET", "/health", ctx=other)

    def test_3_the_lock_nodes_elect_one_leader(self):
        leaders = cl.wait_for("node1..3 agree on a leader", lambda: self.agreed_leader())
        self.assertIn(leaders, cl.LOCK_NODES)

    def agreed_leader(self):
        seen = {(self.d.status(n) or {}).get("lock", {}).get("raft", {}).get("leader")
                for n in cl.LOCK_NODES}
        return seen.pop() if len(seen) == 1 and None not in seen and "none" not in seen else None

    def test_4_every_redis_writes_an_append_only_file_in_its_volume(self):
        for svc in cl.REDIS:
            cid = self.d.cid(svc)
            p = cl.run(["docker", "exec", cid, "redis-cli", "config", "get", "appendonly"], 30)
            self.assertEqual(p.stdout.split()[-1], "yes", svc)
            p = cl.run(["docker", "exec", cid, "redis-cli", "config", "get", "dir"], 30)
            self.assertEqual(p.stdout.split()[-1], "/data", svc)
            p = cl.run(["docker", "inspect", "-f",
                        '{{range .Mounts}}{{if eq .Destination "/data"}}{{.Name}}{{end}}{{end}}',
                        cid], 30)
            self.assertEqual(p.stdout.strip(), "%s_%s-data" % (self.d.project, svc))

    def test_5_nodes_run_as_a_non_root_user(self):
        for svc in ("node1", "queue-node-1", "cache-node-1"):
            p = cl.run(["docker", "exec", self.d.cid(svc), "id", "-u"], 30)
            self.assertNotEqual(p.stdout.strip(), "0", svc)

    def test_6_the_certs_service_keeps_valid_certificates(self):
        before = self.ca_pem()
        p = self.d.compose("run", "--rm", "certs", timeout=120)
        self.assertIn("nothing to do", p.stdout)
        self.d.fetch_certs()
        self.assertEqual(self.ca_pem(), before)

    def ca_pem(self):
        with open(os.path.join(self.d.certs, "ca.crt")) as f:
            return f.read()

    def test_7_a_node_refuses_a_short_or_missing_mac_key_and_says_so(self):
        for key, says in (("0123456789", "shorter than 16 bytes"), ("", "missing")):
            p = self.d.compose("run", "--rm", "--no-deps", "-e", "SHARED_MAC_KEY=" + key, "node1",
                               timeout=120, check=False)
            self.assertEqual(p.returncode, 2, "key %r: %s %s" % (key, p.stdout, p.stderr))
            self.assertIn(says, p.stdout + p.stderr)
            self.assertIn("SHARED_MAC_KEY", p.stdout + p.stderr)

    def test_8_down_v_leaves_nothing_behind(self):
        self.assertEqual(self.d.leftovers().keys(), {"containers", "volumes", "networks"})
        self.d.down()
        self.assertEqual(self.d.leftovers(), {})


if __name__ == "__main__":
    cl.main()
