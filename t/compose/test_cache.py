"""The cache role across real containers: a write on one cache node is read on another with the
key's version and each node's line state shown, a later write elsewhere is what every node reads
next, and `compose/scale.sh cache 4` adds a fourth node that joins the members through gossip and
serves the same keys.  Skipped while the build has no cache role (/status says
"role_available": false)."""
import json
import unittest

import composelib as cl

SCALED_PORT = 10000  # the scalable cache-node service's port inside the network


def members_of(status):
    """The member list a cache node's /status shows (under "cache"), as JSON text."""
    role = (status or {}).get("cache") or {}
    return json.dumps(role.get("members", []))


class CacheNodesInContainers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cl.Deployment("cache")
        cls.addClassCleanup(cls.d.down)
        cls.d.up(*cl.CACHE_NODES, build=True)
        cls.d.wait_healthy(cl.CACHE_NODES + cl.REDIS)
        cls.d.fetch_certs("cache-node-1")
        cls.role = cl.role_available(cls.d.status("cache-node-1"))
        if cls.role:
            cl.wait_for("cache-node-1 is ready (membership joined)",
                        lambda: cls.d.request("cache-node-1", "GET", "/ready").status == 200)

    def require_role(self):
        if not self.role:
            self.skipTest("the cache role is not in this build yet "
                          "(cache-node-1 /status: role_available false)")

    def put(self, node, key, value):
        r = self.d.request(node, "PUT", "/cache/" + key, {"value": value}, timeout=20)
        self.assertIn(r.status, (200, 201), r)
        return r.json()

    def get(self, node, key):
        r = self.d.request(node, "GET", "/cache/" + key, timeout=20)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def test_1_a_write_on_one_node_is_read_on_another_with_versions_and_states(self):
        self.require_role()
        w = self.put("cache-node-1", "colour", {"rgb": "ff0000"})
        got = self.get("cache-node-2", "colour")
        self.assertEqual(got["value"], {"rgb": "ff0000"}, got)
        self.assertIn("version", got)
        self.assertIn("state", got)
        if "version" in w:
            self.assertEqual(got["version"], w["version"])
        for n in ("cache-node-1", "cache-node-2"):
            r = self.d.request(n, "GET", "/cache/colour/state", timeout=20)
            self.assertEqual(r.status, 200, r)
            cl.note("%s line state of colour: %s", n, r.body)
        w2 = self.put("cache-node-3", "colour", {"rgb": "00ff00"})
        for n in cl.CACHE_NODES:
            got2 = self.get(n, "colour")
            self.assertEqual(got2["value"], {"rgb": "00ff00"}, "%s read %r" % (n, got2))
            self.assertGreater(got2["version"], got["version"], got2)
        if "version" in w2:
            self.assertGreater(w2["version"], got["version"])

    def test_2_a_fourth_cache_node_starts_named_after_its_host_joins_and_serves_the_same_keys(self):
        if self.role:
            self.put("cache-node-1", "shape", "circle")
        self.d.scale("cache", "4")
        ids = self.d.cids("cache-node")
        self.assertEqual(len(ids), 1, ids)
        host = cl.run(["docker", "inspect", "-f", "{{.Config.Hostname}}", ids[0]], 30).stdout.strip()
        new_id = "cache-" + host
        cl.wait_for("the fourth cache container is healthy",
                    lambda: self.d.health(ids[0]) == "running healthy")
        r = self.d.exec_curl("cache-node", SCALED_PORT, "GET", "/status", cid=ids[0])
        self.assertEqual(r.status, 200, r)  # verified with the CA for its own host name
        self.assertEqual(json.loads(r.body)["node"], new_id, r)
        self.require_role()
        cl.wait_for("%s is a member on cache-node-1" % new_id,
                    lambda: new_id in members_of(self.d.status("cache-node-1")))
        r = self.d.exec_curl("cache-node", SCALED_PORT, "GET", "/cache/shape", max_time=10,
                             cid=ids[0])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(json.loads(r.body)["value"], "circle", r)


if __name__ == "__main__":
    cl.main()
