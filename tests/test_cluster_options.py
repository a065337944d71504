"""The cluster's options: URLs, node names and TTLs, and that without
--redis nothing of the cluster (or txredisapi) is imported."""

from __future__ import annotations

from twisted.internet import defer
from twisted.python import usage
from twisted.trial import unittest

from chatd.cluster.options import RedisTarget, defaultNodeName, parseRedisURL
from chatd.server.config import build
from tests.daemon import run


class RedisURLTests(unittest.SynchronousTestCase):
    def test_tcp(self):
        self.assertEqual(
            parseRedisURL("redis://:pw@cache.example:6380/3"),
            RedisTarget("redis", "cache.example", 6380, db=3, password="pw"),
        )

    def test_defaults(self):
        target = parseRedisURL("redis://localhost")
        self.assertEqual((target.port, target.db, target.password), (6379, 0, None))

    def test_tls_and_ipv6(self):
        target = parseRedisURL("rediss://user:secret@[::1]:6390/1")
        self.assertEqual(
            (target.scheme, target.host, target.port, target.username),
            ("rediss", "::1", 6390, "user"),
        )
        self.assertEqual(target.display, "rediss://[::1]:6390/1")

    def test_unix(self):
        target = parseRedisURL("unix:///run/redis/redis.sock?db=2")
        self.assertEqual((target.path, target.db), ("/run/redis/redis.sock", 2))

    def test_password_never_shown(self):
        target = parseRedisURL("redis://:hunter2@h/0")
        self.assertNotIn("hunter2", repr(target) + target.display)

    def test_bad(self):
        for url, why in [
            ("http://h", "scheme"),
            ("redis://", "no host"),
            ("redis://h/x", "database"),
            ("redis://h:99999", "Redis URL"),
            ("unix://", "socket path"),
        ]:
            with self.assertRaises(ValueError) as e:
                parseRedisURL(url)
            self.assertIn(why, str(e.exception))

    def test_default_node_name(self):
        name = defaultNodeName(("tcp:7801:interface=127.0.0.1",))
        self.assertTrue(name.endswith(":7801"), name)


class ConfigTests(unittest.SynchronousTestCase):
    def test_options_and_environment(self):
        config = build(
            {"redis": "unix:///tmp/r.sock", "node-ttl": "4"},
            {"CHATD_NODE_NAME": "east-1"},
        )
        self.assertEqual(
            (config.redis, config.node_name, config.node_ttl),
            ("unix:///tmp/r.sock", "east-1", 4.0),
        )
        self.assertNotIn("r.sock", repr(config))  # the URL may hold a password

    def test_bad_values_name_the_option(self):
        for given, option in [
            ({"redis": "http://x"}, "--redis"),
            ({"node-ttl": "0"}, "--node-ttl"),
            ({"node-name": "a b"}, "--node-name"),
            ({"redis-password-file": "/nonexistent/pw"}, "--redis-password-file"),
        ]:
            with self.assertRaises(usage.UsageError) as e:
                build(given, {})
            self.assertTrue(str(e.exception).startswith(option + ":"), e.exception)


class NotImportedTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_nothing_imported_without_redis(self):
        script = (
            "import sys\n"
            "from chatd.server.config import build\n"
            "from chatd.server.service import ChatService\n"
            "ChatService(build({'listen': ['tcp:0']}, {}), handleSignals=False)\n"
            "print(sorted(m for m in sys.modules"
            " if m.startswith(('chatd.cluster', 'txredisapi'))))\n"
        )
        status, output = yield run(["-c", script])
        self.assertEqual((status, output.strip()), (0, "[]"))
