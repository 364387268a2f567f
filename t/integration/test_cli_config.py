"""Integration: the command line, the INI configuration and its error messages, env overrides."""
import os
import re
import socket
import tempfile
import unittest

import dsync

EXIT_CONFIG = 2


class CommandLine(dsync.TempDirCase):
    def test_version_prints_the_version_and_exits_0(self):
        r = dsync.run(["--version"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout.strip(), r"^dsyncd \d+\.\d+\.\d+\S*$")
        expected = os.environ.get("DSYNC_EXPECT_VERSION")
        if expected:
            self.assertEqual(r.stdout.split()[-1], expected)
        self.assertEqual(dsync.run(["-V"]).stdout, r.stdout)

    def test_help_lists_every_option_and_exits_0(self):
        r = dsync.run(["--help"])
        self.assertEqual(r.returncode, 0, r.stderr)
        for opt in ("--config", "--role", "--node-id", "--listen", "--data-dir", "--check-config",
                    "--help", "--version", "lock", "queue", "cache", "SHARED_MAC_KEY",
                    "INTERNAL_PORT"):
            self.assertIn(opt, r.stdout)

    def test_unknown_option_exits_2_with_usage(self):
        r = dsync.run(["--frobnicate"])
        self.assertEqual(r.returncode, EXIT_CONFIG)
        self.assertIn("frobnicate", r.stderr)
        self.assertIn("usage:", r.stderr)

    def test_stray_argument_exits_2(self):
        r = dsync.run(["--role", "lock", "extra"])
        self.assertEqual(r.returncode, EXIT_CONFIG)
        self.assertIn("extra", r.stderr)

    def test_no_role_anywhere_exits_2_and_says_how_to_set_one(self):
        r = dsync.run(["--check-config"])
        self.assertEqual(r.returncode, EXIT_CONFIG, r.stdout)
        self.assertIn("role", r.stderr)
        self.assertIn("--role", r.stderr)

    def test_bad_role_on_the_command_line_exits_2_naming_the_option(self):
        r = dsync.run(["--role", "boss", "--check-config"])
        self.assertEqual(r.returncode, EXIT_CONFIG)
        self.assertIn("--role", r.stderr)
        self.assertIn("boss", r.stderr)
        self.assertIn("lock", r.stderr)

    def test_check_config_accepts_a_good_file_and_prints_every_key_with_its_source(self):
        path, port = self.config()
        r = dsync.run(["--config", path, "--check-config"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(path + ": configuration ok", r.stdout)
        self.assertIn("[node] listen = 127.0.0.1:%d  (file)" % port, r.stdout)
        self.assertIn("[http] max_body = 1048576  (default)", r.stdout)
        self.assertIn("[node] role = %s  (file)" % dsync.ROLE, r.stdout)
        self.assertIn("shared MAC key: not set", r.stdout)

    def test_check_config_does_not_start_a_server(self):
        path, port = self.config()
        r = dsync.run(["--config", path, "--check-config"], timeout=5)
        self.assertEqual(r.returncode, 0, r.stderr)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()

    def test_a_port_in_use_is_an_error_at_start(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            path, _ = self.config(port=port)
            r = dsync.run(["--config", path], timeout=5)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("127.0.0.1:%d" % port, r.stderr)
        self.assertIn("in use", r.stderr)


class ConfigErrors(dsync.TempDirCase):
    """Every configuration error exits 2 and names the file, the line, the key and the reason."""

    def write(self, text):
        d = tempfile.mkdtemp(dir=self.tmp)
        return dsync.write_file(os.path.join(d, "bad.ini"), text)

    def check_error(self, text, line, needles, env=None, args=()):
        path = self.write(text)
        r = dsync.run(["--config", path, "--check-config"] + list(args), env=env)
        self.assertEqual(r.returncode, EXIT_CONFIG, "stdout=%r stderr=%r" % (r.stdout, r.stderr))
        self.assertEqual(r.stdout, "")
        msg = r.stderr
        self.assertEqual(len(msg.strip().splitlines()), 1, "one clear line expected: %r" % msg)
        if line is None:
            self.assertIn(path, msg)
        else:
            self.assertIn("%s:%d" % (path, line), msg)
        for n in needles:
            self.assertIn(n, msg)
        return msg

    def good_lines(self):
        return "[node]\nrole = %s\nid = n1\n" % dsync.ROLE

    def test_missing_file(self):
        path = os.path.join(self.tmp, "does-not-exist.ini")
        r = dsync.run(["--config", path])
        self.assertEqual(r.returncode, EXIT_CONFIG)
        self.assertIn(path, r.stderr)
        self.assertIn("No such file", r.stderr)

    def test_unknown_section(self):
        self.check_error(self.good_lines() + "[nodes]\nid = x\n", 5, ["[nodes]", "unknown section"])

    def test_unknown_key(self):
        self.check_error(self.good_lines() + "colour = blue\n", 4,
                         ["colour", "[node]", "unknown key"])

    def test_bad_number(self):
        self.check_error(self.good_lines() + "[http]\nmax_body = lots\n", 5,
                         ["[http] max_body", "lots", "not a whole number"])

    def test_negative_and_suffixed_numbers_are_bad_numbers(self):
        for v in ("-1", "10k", "1e6", " 5x"):
            self.check_error(self.good_lines() + "[http]\nmax_connections = %s\n" % v, 5,
                             ["[http] max_connections", "not a whole number"])

    def test_out_of_range(self):
        self.check_error(self.good_lines() + "[http]\nmax_body = 10\n", 5,
                         ["[http] max_body", "out of range", "1024"])

    def test_number_too_big_for_64_bits(self):
        self.check_error(self.good_lines() + "[http]\nidle_timeout_ms = 99999999999999999999999\n",
                         5, ["[http] idle_timeout_ms"])

    def test_bad_enum(self):
        self.check_error(self.good_lines() + "[log]\nlevel = loud\n", 5,
                         ["[log] level", "loud", "debug", "info", "warn", "error"])

    def test_bad_role_in_the_file(self):
        self.check_error("[node]\nid = n1\nrole = boss\n", 3, ["[node] role", "boss", "lock"])

    def test_bad_listen_address(self):
        for v in ("nowhere", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", ":80", "a b:1"):
            self.check_error(self.good_lines() + "listen = %s\n" % v, 4,
                             ["[node] listen", "host:port"])

    def test_bad_node_id(self):
        self.check_error("[node]\nrole = lock\nid = a/b\n", 3, ["[node] id", "a/b"])

    def test_key_outside_a_section(self):
        self.check_error("role = lock\n" + self.good_lines(), 1, ["role", "outside a section"])

    def test_duplicate_key(self):
        self.check_error(self.good_lines() + "id = n2\n", 4, ["[node] id", "twice", "line 3"])

    def test_syntax_error(self):
        self.check_error(self.good_lines() + "this line is not ini\n", 4, ["syntax"])

    def test_cert_without_key(self):
        self.check_error(self.good_lines() + "[tls]\ncert = %s\n" % self.certs.server_crt, 5,
                         ["[tls] cert", "key"])

    def test_unreadable_cert(self):
        missing = os.path.join(self.tmp, "nope.crt")
        self.check_error(self.good_lines() + "[tls]\ncert = %s\nkey = %s\n"
                         % (missing, self.certs.server_key), 5,
                         ["[tls] cert", missing, "No such file"])

    def test_unreadable_ca(self):
        missing = os.path.join(self.tmp, "nope-ca.crt")
        self.check_error(self.good_lines() + "[tls]\ncert = %s\nkey = %s\nca = %s\n"
                         % (self.certs.server_crt, self.certs.server_key, missing), 7,
                         ["[tls] ca", missing])

    def test_a_cert_file_that_is_not_a_certificate(self):
        junk = dsync.write_file(os.path.join(self.tmp, "junk.crt"), "not a certificate\n")
        text = self.good_lines() + "listen = 127.0.0.1:%d\ndata_dir = %s\n[tls]\ncert = %s\n" \
            "key = %s\n" % (dsync.free_port(), os.path.join(self.tmp, "junk-data"), junk,
                             self.certs.server_key)
        path = self.write(text)
        r = dsync.run(["--config", path], timeout=10)
        self.assertEqual(r.returncode, EXIT_CONFIG, r.stderr)
        self.assertIn("%s:7" % path, r.stderr)
        self.assertIn("[tls] cert", r.stderr)
        self.assertIn(junk, r.stderr)

    def test_require_client_auth_without_ca(self):
        self.check_error(self.good_lines() + "[tls]\ncert = %s\nkey = %s\nclient_auth = require\n"
                         % (self.certs.server_crt, self.certs.server_key), 7,
                         ["[tls] client_auth", "[tls] ca"])

    def test_peers_without_mac_key(self):
        self.check_error(self.good_lines() + "[cluster]\npeers = n2=https://127.0.0.1:8002\n", 5,
                         ["[cluster] peers", "SHARED_MAC_KEY"])

    def test_bad_peer_list(self):
        self.check_error(self.good_lines() + "[cluster]\npeers = n2=http://127.0.0.1:8002\n", 5,
                         ["[cluster] peers", "id=https://host:port"])

    def test_short_shared_mac_key(self):
        path = self.write(self.good_lines() + "[cluster]\npeers = n2=https://127.0.0.1:8002\n")
        r = dsync.run(["--config", path, "--check-config"], env={"SHARED_MAC_KEY": "tooshort"})
        self.assertEqual(r.returncode, EXIT_CONFIG, r.stdout)
        self.assertIn("SHARED_MAC_KEY", r.stderr)
        self.assertIn("16", r.stderr)
        r = dsync.run(["--config", path, "--check-config"],
                      env={"SHARED_MAC_KEY": "0123456789abcdef"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("shared MAC key: set", r.stdout)
        self.assertNotIn("0123456789abcdef", r.stdout, "the secret itself was printed")

    def test_missing_mac_key_file(self):
        missing = os.path.join(self.tmp, "nope.key")
        self.check_error(self.good_lines() + "[cluster]\npeers = n2=https://127.0.0.1:8002\n"
                         "mac_key_file = %s\n" % missing, 6, ["[cluster] mac_key_file", missing])

    def test_mac_key_file_is_read(self):
        keyfile = dsync.write_file(os.path.join(self.tmp, "mac.key"), "0123456789abcdef0123\n")
        path = self.write(self.good_lines() + "[cluster]\npeers = n2=https://127.0.0.1:8002\n"
                          "mac_key_file = %s\n" % keyfile)
        r = dsync.run(["--config", path, "--check-config"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("shared MAC key: set", r.stdout)

    def test_bad_value_from_the_environment_names_the_variable(self):
        path = self.write(self.good_lines())
        r = dsync.run(["--config", path, "--check-config"], env={"DSYNCD_HTTP_MAX_BODY": "lots"})
        self.assertEqual(r.returncode, EXIT_CONFIG)
        self.assertIn("DSYNCD_HTTP_MAX_BODY", r.stderr)
        self.assertIn("not a whole number", r.stderr)

    def test_bad_internal_port(self):
        path = self.write(self.good_lines())
        for v in ("99999", "http", "0"):
            r = dsync.run(["--config", path, "--check-config"], env={"INTERNAL_PORT": v})
            self.assertEqual(r.returncode, EXIT_CONFIG, v)
            self.assertIn("INTERNAL_PORT", r.stderr)


class Precedence(dsync.TempDirCase):
    def described(self, r, key):
        self.assertEqual(r.returncode, 0, r.stderr)
        m = re.search(r"^%s = (.*)  \((\w+)\)$" % re.escape(key), r.stdout, re.M)
        self.assertIsNotNone(m, r.stdout)
        return m.group(1), m.group(2)

    def test_environment_beats_the_file(self):
        path, _ = self.config(http={"max_body": 2048})
        r = dsync.run(["--config", path, "--check-config"],
                      env={"DSYNCD_NODE_ID": "from-env", "DSYNCD_HTTP_MAX_BODY": "4096"})
        self.assertEqual(self.described(r, "[node] id"), ("from-env", "env"))
        self.assertEqual(self.described(r, "[http] max_body"), ("4096", "env"))
        r = dsync.run(["--config", path, "--check-config"])
        self.assertEqual(self.described(r, "[node] id"), ("n1", "file"))
        self.assertEqual(self.described(r, "[http] max_body"), ("2048", "file"))

    def test_command_line_beats_the_environment(self):
        path, _ = self.config()
        r = dsync.run(["--config", path, "--check-config", "--node-id", "from-cli",
                       "--role", "cache", "--listen", "127.0.0.1:4444", "--data-dir", "/tmp/x"],
                      env={"DSYNCD_NODE_ID": "from-env", "DSYNCD_NODE_ROLE": "queue",
                           "DSYNCD_NODE_LISTEN": "127.0.0.1:5555"})
        self.assertEqual(self.described(r, "[node] id"), ("from-cli", "cli"))
        self.assertEqual(self.described(r, "[node] role"), ("cache", "cli"))
        self.assertEqual(self.described(r, "[node] listen"), ("127.0.0.1:4444", "cli"))
        self.assertEqual(self.described(r, "[node] data_dir"), ("/tmp/x", "cli"))

    def test_environment_override_is_used_by_the_running_node(self):
        path, port = self.config()
        node = dsync.Node(["--config", path], port, self.certs.ca,
                          env={"DSYNCD_NODE_ID": "env-node", "DSYNCD_HTTP_MAX_BODY": "2048"})
        self.assertEqual(node.request("GET", "/status").json()["node"], "env-node")
        c = node.raw()
        try:
            c.send(b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Length: 4096\r\n\r\n")
            self.assertEqual(c.read_response().status, 413)
        finally:
            c.close()
        self.assertEqual(node.stop(), 0)

    def test_internal_port_changes_the_port(self):
        path, file_port = self.config()
        port = dsync.free_port()
        node = dsync.Node(["--config", path], port, self.certs.ca, env={"INTERNAL_PORT": str(port)})
        self.assertEqual(node.request("GET", "/status").json()["listen"], "127.0.0.1:%d" % port)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", file_port), timeout=1).close()
        self.assertEqual(node.stop(), 0)

    def test_listen_on_the_command_line_beats_internal_port(self):
        path, _ = self.config()
        port = dsync.free_port()
        r = dsync.run(["--config", path, "--check-config", "--listen", "127.0.0.1:%d" % port],
                      env={"INTERNAL_PORT": "4321"})
        self.assertEqual(self.described(r, "[node] listen"), ("127.0.0.1:%d" % port, "cli"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
