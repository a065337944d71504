"""The login back-off shared across --redis nodes (chatd.cluster.redislogins):
the publish/subscribe glue with fakes, then two guards on a real Redis,
through a restart of it."""

from __future__ import annotations

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from chatd.cluster import link
from chatd.cluster.options import parseRedisURL
from chatd.cluster.redislink import connectRedis
from chatd.cluster.redislogins import RedisLogins, channelFor
from chatd.server.admission import Admission, parseNetworks
from chatd.server.config import Config
from tests.redisserver import skipUnlessRedis, startRedis

CONFIG = Config(auth_backoff=0.5, limit_exempt=parseNetworks("none"))
TARGET = parseRedisURL("redis://127.0.0.1:1/3")


class Conn:
    host, peer = "10.0.0.7", "10.0.0.7:4000"


class FakeFactory:
    size = 1


class FakeHandler:
    """What RedisLogins uses of its RedisConnection."""

    def __init__(self) -> None:
        self._factory = FakeFactory()
        self.sent: list[tuple[object, ...]] = []

    @property
    def connected(self) -> bool:
        return bool(self._factory.size)

    def execute_command(self, *args: object) -> defer.Deferred:
        self.sent.append(args)
        return defer.succeed(0)


class GlueTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.admission = Admission(CONFIG, self.clock)
        self.logins = RedisLogins(self.admission, "node-a", TARGET)
        self.pub = self.logins._pub = FakeHandler()

    def test_a_verdict_is_published_under_the_node_name(self) -> None:
        self.assertEqual(self.logins.channel, "chatd:logins:3")
        self.assertEqual(self.logins.guard.failed(Conn()), 0.5)
        payload = link.loginPayload("10.0.0.7", 1, 0.5)
        self.assertEqual(
            self.pub.sent, [("PUBLISH", "chatd:logins:3", b"node-a " + payload)]
        )
        self.clock.advance(0.5)
        self.logins.guard.succeeded(Conn())  # trusted again: told too
        self.assertEqual(
            self.pub.sent[-1][2], b"node-a " + link.loginPayload(Conn.host, 0, 0)
        )

    def test_redis_away_keeps_the_verdict_here(self) -> None:
        self.pub._factory.size = 0
        self.assertEqual(self.logins.guard.failed(Conn()), 0.5)
        self.assertEqual((self.pub.sent, self.logins.kept), ([], 1))
        self.assertIsNotNone(self.logins.guard.locked(Conn()))

    def test_others_are_learned_its_own_and_bad_ones_ignored(self) -> None:
        payload = link.loginPayload("10.0.0.7", 3, 2.0)
        self.logins.received(b"node-a " + payload)  # its own: already counted
        self.assertIsNone(self.logins.guard.locked(Conn()))
        self.logins.received(b"node-b \x00")  # short: logged, ignored
        self.logins.received(b"node-b " + payload)
        self.assertIn("retry in 2 s", self.logins.guard.locked(Conn()) or "")
        self.assertEqual(self.admission.auth.failures("10.0.0.7"), 3)


@skipUnlessRedis
class SharedThroughRedisTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):  # type: ignore[no-untyped-def]
        self.redis = yield startRedis(self)
        self.target = parseRedisURL(self.redis.url)
        self.a, self.b = self.guard("node-a"), self.guard("node-b")
        yield self.subscribers(2)

    def guard(self, name: str) -> RedisLogins:
        logins = RedisLogins(Admission(CONFIG, reactor), name, self.target)
        logins.start()
        self.addCleanup(logins.stop)
        return logins

    @defer.inlineCallbacks
    def subscribers(self, n: int):  # type: ignore[no-untyped-def]
        """Wait (at most 10 s) until Redis counts ``n`` subscribers and both
        guards can publish: nothing tells a client when another connection
        subscribed."""
        conn = connectRedis(reactor, self.target, 5)
        try:
            deadline = reactor.seconds() + 10
            while True:
                try:
                    yield conn.handler._factory.deferred
                    reply = yield conn.execute_command(
                        "PUBSUB", "NUMSUB", channelFor(self.target)
                    )
                    ready = self.a._pub.connected and self.b._pub.connected
                    if int(reply[1]) == n and ready:
                        return
                except Exception:
                    pass  # Redis is still starting
                self.assertLess(reactor.seconds(), deadline)
                yield task.deferLater(reactor, 0.05, lambda: None)
        finally:
            yield conn.disconnect()

    def learnedBy(self, logins: RedisLogins) -> defer.Deferred:
        """Fires with the next payload ``logins`` learns from another node."""
        d: defer.Deferred = defer.Deferred()
        learned = logins.guard.learned

        def once(payload: bytes) -> None:
            logins.guard.learned = learned  # type: ignore[method-assign]
            learned(payload)
            d.callback(payload)

        logins.guard.learned = once  # type: ignore[method-assign]
        return d

    @defer.inlineCallbacks
    def test_a_lock_reaches_the_other_node_also_after_a_restart(self):  # type: ignore[no-untyped-def]
        learned = self.learnedBy(self.b)
        self.a.guard.failed(Conn())
        yield learned
        self.assertIn("password not checked", self.b.guard.locked(Conn()) or "")
        yield self.redis.stop()
        yield self.redis.start()
        yield self.subscribers(2)  # both subscribed again by themselves
        learned = self.learnedBy(self.a)
        self.b.guard.failed(Conn())  # b's second failure in a row
        yield learned
        self.assertEqual(self.a.guard.admission.auth.failures("10.0.0.7"), 2)


class WiringTests(unittest.SynchronousTestCase):
    def test_a_redis_node_checks_passwords_through_the_shared_guard(self) -> None:
        from dataclasses import replace

        from chatd.cluster.redisnode import redisFactory

        config = replace(CONFIG, redis="redis://127.0.0.1:1/0", node_name="n1")
        factory = redisFactory(config, task.Clock())
        logins = factory.backend.logins  # type: ignore[attr-defined]
        self.assertIs(factory.hub.logins, logins.guard)
        self.assertIs(logins.guard.admission, factory.admission)
        self.assertEqual((logins.name, logins.channel), (b"n1", "chatd:logins:0"))
        self.assertEqual(factory.admission.auth.first, 0.5)  # from the config
