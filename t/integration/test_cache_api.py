"""Cache role with real processes: three cache nodes (mutual TLS, HMAC) over a real redis-server,
or over the embedded store: MESI states seen through the API, main memory, eviction write-back,
statistics and metrics, and a matrix of hostile input."""
import os
import struct
import time
import unittest

import cacheutil
import dsync
import lockutil

NODES = ("node1", "node2", "node3")


class CacheApiTest(cacheutil.CacheCase):

    def test_a_write_on_one_node_is_read_as_shared_everywhere_and_a_write_elsewhere_invalidates(self):
        c = self.cache_cluster()
        w = cacheutil.put_retry(c, "node1", "colour", {"name": "red", "n": 1})
        self.assertEqual(w["state"], "M")
        for n in ("node2", "node3"):
            st, j = cacheutil.get_retry(c, n, "colour")
            self.assertEqual(st, 200, j)
            self.assertEqual(j["value"], {"name": "red", "n": 1})
            self.assertEqual(j["version"], w["version"])
            self.assertEqual(j["state"], "S")
        st, j = cacheutil.get_retry(c, "node1", "colour")
        self.assertEqual((st, j["state"]), (200, "S"))
        for n in NODES:
            s = c.state(n, "colour")
            self.assertEqual(s["line"]["state"], "S", s)
            self.assertTrue(s["line"]["lease_valid"], s)
            self.assertEqual(sorted(s["home"]["directory"]["sharers"]), list(NODES), s)
            self.assertEqual(s["home"]["directory"]["state"], "S", s)
        w2 = cacheutil.put_retry(c, "node3", "colour", "blue")
        self.assertGreater(w2["version"], w["version"])
        self.assertEqual(w2["state"], "M")
        for n in ("node1", "node2"):
            s = c.state(n, "colour")
            self.assertEqual(s["line"]["state"], "I", s)
            d = s["home"]["directory"]
            self.assertEqual((d["state"], d["owner"], d["sharers"]), ("EM", "node3", []), s)
        self.assertEqual(c.state("node3", "colour")["line"]["state"], "M")
        for n in NODES:
            st, j = cacheutil.get_retry(c, n, "colour")
            self.assertEqual((st, j["value"], j["version"]), (200, "blue", w2["version"]))
        self.assertGreater(sum(c.stats(n)["invalidations_received"] for n in NODES), 0)

    def test_values_of_every_json_type_round_trip_and_delete_is_seen_everywhere(self):
        c = self.cache_cluster()
        values = [None, 0, -1.5, "text with \"quotes\" and \u00e9", [1, [2, {"a": None}]],
                  {"nested": {"list": [True, False]}}, True]
        for i, v in enumerate(values):
            key = "v%d" % i
            cacheutil.put_retry(c, NODES[i % 3], key, v)
            st, j = cacheutil.get_retry(c, NODES[(i + 1) % 3], key)
            self.assertEqual((st, j["value"]), (200, v))
        st, j = cacheutil.retry(lambda: c.cache("node2", "DELETE", "v1"), "delete")
        self.assertEqual((st, j["deleted"]), (200, True))
        for n in NODES:
            st, j = cacheutil.get_retry(c, n, "v1")
            self.assertEqual(st, 404, j)
            self.assertEqual(j["error"]["code"], "not_found")
        st, j = cacheutil.get_retry(c, "node3", "never-written")
        self.assertEqual(st, 404, j)
        # POST is a write too, and the key may hold any UTF-8 (percent-encoded in the path)
        st, j = cacheutil.retry(lambda: c.cache("node1", "POST", "a/b c\u00e9", 7), "post")
        self.assertEqual(st, 200, j)
        self.assertEqual(j["key"], "a/b c\u00e9")
        st, j = cacheutil.get_retry(c, "node2", "a/b c\u00e9")
        self.assertEqual((st, j["value"]), (200, 7))

    def test_main_memory_keeps_the_value_with_its_version_in_redis(self):
        c = self.cache_cluster(write_policy="write-through")
        w = cacheutil.put_retry(c, "node2", "durable", {"x": 42})
        got = self.redis.cli("HMGET", "dsc:durable", "p", "ver", "v").split("\n")
        self.assertEqual(got[0], "1")
        self.assertEqual(int(got[1]), w["version"])
        self.assertEqual(got[2], '{"x":42}')

    def test_evicting_a_modified_line_writes_it_back(self):
        c = self.cache_cluster(max_entries=2, flush_ms=600000, lease_ms=4000)
        first = cacheutil.put_retry(c, "node1", "evict-0", "zero")
        self.assertEqual(first["state"], "M")
        # write-back with a flush far away: memory has not seen the value yet
        self.assertNotEqual(self.redis.cli("HGET", "dsc:evict-0", "v").strip(), '"zero"')
        for i in range(1, 6):
            cacheutil.put_retry(c, "node1", "evict-%d" % i, i)
        s = c.stats("node1")
        self.assertGreater(s["messages"]["PutM"]["sent"], 0, s)
        self.assertGreater(s["evictions"]["M"], 0, s)
        self.assertGreater(s["writebacks"], 0, s)
        self.assertLessEqual(s["entries"], 2, s)
        c.wait_for("evict-0 written back to Redis",
                   lambda: self.redis.cli("HGET", "dsc:evict-0", "v").strip() == '"zero"')
        st, j = cacheutil.get_retry(c, "node2", "evict-0")
        self.assertEqual((st, j["value"], j["version"]), (200, "zero", first["version"]))

    def test_stats_and_metrics_count_hits_misses_messages_and_latency(self):
        c = self.cache_cluster()
        cacheutil.put_retry(c, "node1", "hot", "x")
        for _ in range(5):
            st, _ = cacheutil.get_retry(c, "node2", "hot")
            self.assertEqual(st, 200)
        s = c.stats("node2")
        self.assertGreaterEqual(s["hits"], 4, s)
        self.assertGreaterEqual(s["misses"], 1, s)
        self.assertGreater(s["hit_ratio"], 0.5, s)
        self.assertGreaterEqual(s["lines"]["S"], 1, s)
        m = c.metrics("node2")
        self.assertGreaterEqual(m.value("dsyncd_cache_hits_total"), 4)
        self.assertGreaterEqual(m.value("dsyncd_cache_messages_total", type="GetS",
                                        direction="sent"), 1)
        self.assertGreaterEqual(m.value("dsyncd_cache_lines", state="S"), 1)
        self.assertGreaterEqual(m.value("dsyncd_cache_request_seconds_count", op="get",
                                        result="hit"), 4)
        self.assertEqual(m.types.get("dsyncd_cache_evictions_total"), "counter")
        self.assertEqual(m.value("dsyncd_cache_members"), 3)
        r = c.request("node2", "GET", "/ready")
        self.assertEqual(r.status, 200, r)
        r = c.request("node2", "GET", "/status")
        self.assertEqual(r.json()["cache"]["memory"], "redis")

    def test_the_embedded_store_serves_a_cluster_without_redis(self):
        c = self.cache_cluster(redis=False)
        cacheutil.put_retry(c, "node3", "local", [1, 2, 3])
        for n in NODES:
            st, j = cacheutil.get_retry(c, n, "local")
            self.assertEqual((st, j["value"]), (200, [1, 2, 3]))
        r = c.request("node1", "GET", "/status")
        self.assertEqual(r.json()["cache"]["memory"], "embedded")

    def test_hostile_input_gets_a_clear_4xx_and_the_node_keeps_serving(self):
        c = self.cache_cluster()
        cases = [
            ("PUT", "/cache/k", b"not json", 400, "bad_request"),
            ("PUT", "/cache/k", b"[1,2]", 400, "bad_request"),
            ("PUT", "/cache/k", b"{}", 400, "bad_request"),
            ("PUT", "/cache/k", b'{"value":1,"extra":2}', 400, "bad_request"),
            ("PUT", "/cache/k", b'{"value":"\xff\xfe"}', 400, "bad_request"),
            ("PUT", "/cache/k", b'{"value":"a\\u0000b"}', 400, "bad_request"),
            ("PUT", "/cache/k", b'{"value":1} trailing', 400, "bad_request"),
            ("PUT", "/cache/k", b"", 400, "bad_request"),
            ("GET", "/cache/" + "x" * 513, None, 400, "bad_request"),
            ("GET", "/cache/%FF%FE", None, 400, "bad_request"),
            ("GET", "/cache/%zz", None, 400, "bad_request"),
            ("PATCH", "/cache/k", b'{"value":1}', 405, "method_not_allowed"),
            ("POST", "/cache/peer/msg", b"\x00", 403, "forbidden"),
            ("GET", "/cache/peer/dir/k", None, 403, "forbidden"),
        ]
        for method, path, body, status, code in cases:
            r = c.request("node1", method, path, body,
                          headers={"Content-Type": "application/json"})
            self.assertJsonError(r, status, code)
        big = b'{"value":"' + b"x" * ((1 << 20) - 1000) + b'"}'  # under max_body, over the value cap
        r = c.request("node1", "PUT", "/cache/k", big)
        self.assertEqual(r.status, 413, r)
        # a peer with a valid certificate and MAC sending garbage frames
        key = lockutil.mac_key(self.cluster_certs)
        ctx = dsync.client_context(c.ca, os.path.join(self.cluster_certs, "node2.crt"),
                                   os.path.join(self.cluster_certs, "node2.key"))
        frames = [b"\x01", struct.pack("<I", 10) + b"abc", struct.pack("<I", 3) + b"xyz",
                  struct.pack("<I", 80) + b"\xc7\x01" + b"\xff" * 78]
        for body in frames:
            path = "/cache/peer/msg"
            r = c.request("node1", "POST", path, body, ctx=ctx,
                          headers=lockutil.sign(key, "POST", path, body, node="node2"))
            self.assertJsonError(r, 400, "bad_request")
        self.assertGreaterEqual(c.metrics("node1").value("dsyncd_cache_bad_messages_total"), 4)
        cacheutil.put_retry(c, "node1", "still", "alive")
        st, j = cacheutil.get_retry(c, "node2", "still")
        self.assertEqual((st, j["value"]), (200, "alive"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
