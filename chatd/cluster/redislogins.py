"""The login back-off shared by the nodes of ``--redis``.

Each node checks passwords with the single process's rules
(:class:`~chatd.server.admission.Admission`).  Alone, each node would keep
its own table, and a guesser spreading connections over N nodes would get
N guesses per delay.  So the node's guard is the workers' one
(:class:`~chatd.cluster.logins.SharedLogins`), whose verdicts go out on a
Redis channel instead of the link: a message is the sending node's name, a
space, and the LOGIN payload of :mod:`chatd.cluster.link` (a node ignores
its own).  Every node subscribes on a connection of its own, so an address
locked on one node is locked on all within one Redis hop.

Pub/sub is fire and forget: while Redis is away, verdicts stay on the node
that reached them (that node still slows the guesser), and a node that
starts later does not learn the verdicts reached before it subscribed.
Both connections reconnect like the node's others, and the subscription
is made again on every connection.  Channels are not per database in
Redis, so the channel names the database: two clusters on one Redis in
different databases do not share their back-off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.cluster.link import LinkError
from chatd.cluster.logins import SharedLogins
from chatd.cluster.options import RedisTarget
from chatd.cluster.redislink import REPLY_TIMEOUT, connectRedis, redisEndpoint
from chatd.server.admission import Admission

__all__ = ["RedisLogins", "channelFor", "subscribe"]

log = Logger(namespace="chatd.cluster")


def channelFor(target: RedisTarget, prefix: str = "chatd:") -> str:
    """The channel of the cluster on ``target``'s database."""
    return f"{prefix}logins:{target.db or 0}"


class RedisLogins:
    """A node's login guard (:attr:`guard`), shared through Redis."""

    def __init__(
        self,
        admission: Admission,
        name: str,
        target: RedisTarget,
        prefix: str = "chatd:",
    ) -> None:
        self.name = name.encode()
        self.target = target
        self.channel = channelFor(target, prefix)
        self.guard = SharedLogins(admission, self.publish)
        self.published = 0  # verdicts sent to the others
        self.kept = 0  # verdicts kept here: Redis was away
        self._pub: Any = None  # a RedisConnection
        self._sub: Any = None  # a txredisapi SubscriberFactory

    def start(self) -> None:
        from twisted.internet import reactor

        self._pub = connectRedis(reactor, self.target, REPLY_TIMEOUT)
        self._sub = subscribe(self.target, self.channel, self.received)

    def publish(self, kind: int, payload: bytes) -> None:
        """SharedLogins' send: ``payload`` to the other nodes, if Redis is
        there (a command given now would wait for the reconnection)."""
        pub = self._pub
        if pub is None or not pub.connected:
            self.kept += 1
            return
        self.published += 1
        d = pub.execute_command("PUBLISH", self.channel, self.name + b" " + payload)
        d.addErrback(_warn, "could not share a login verdict")

    def received(self, message: bytes) -> None:
        """A message on the channel: another node's verdict."""
        sender, _, payload = message.partition(b" ")
        if sender == self.name:
            return
        try:
            self.guard.learned(payload)
        except (LinkError, UnicodeDecodeError):
            log.warn(
                "cluster: bad login verdict from {sender} ignored",
                sender=sender.decode("ascii", "replace"),
            )

    def stop(self) -> Deferred[None]:
        """Disconnect both connections (they reconnect no more)."""
        conns = [self._pub.handler._factory if self._pub else None, self._sub]
        self._pub = self._sub = None
        return defer.gatherResults(
            [c.disconnect() for c in conns if c is not None], consumeErrors=True
        ).addCallbacks(lambda _: None, lambda f: None)


def subscribe(
    target: RedisTarget, channel: str, received: Callable[[bytes], None]
) -> Any:
    """A SubscriberFactory, reconnecting, that subscribes to ``channel`` on
    every connection and gives each message (bytes) to ``received``."""
    import txredisapi
    from twisted.internet import reactor

    class Subscriber(txredisapi.SubscriberProtocol):
        def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
            received(message)

    factory = txredisapi.SubscriberFactory(isLazy=True)
    factory.protocol = Subscriber
    # What connectRedis gives its RedisFactory: bytes, the same credentials
    # and back-off (the database does not matter to pub/sub).
    factory.charset = None
    factory.convertNumbers = False
    factory.password = target.password
    factory.username = target.username
    factory.initialDelay = 0.5
    factory.maxDelay = 2
    added = factory.addConnection

    def addConnection(conn: Any) -> None:
        added(conn)
        if conn in factory.pool:
            conn.subscribe(channel).addErrback(_warn, "could not subscribe")

    factory.addConnection = addConnection
    factory.startConnecting(redisEndpoint(reactor, target))
    return factory


def _warn(failure: Failure, what: str) -> None:
    log.warn("cluster: {what}: {why}", what=what, why=failure.getErrorMessage())
