"""A chatd node in a Redis cluster: the room's sequencer and roster.

:class:`ClusterNode` provides :class:`~chatd.core.sequencer.ISequencer` and
:class:`~chatd.core.roster.IRoster`, so the room, sessions and fan-out work
as in one process.  It is the composition of one part per idea:

* :mod:`.redislink`: the connections to Redis, scripts by name;
* :mod:`.streamseq`: a turn's submits as one stream entry, delivery as the
  stream is read back (the same order on every node);
* :mod:`.leases`: names as ``SET NX`` leases, ids from ``INCR``;
* :mod:`.membership`: the node's lease, heartbeat, reaping, and registering
  again when Redis lost its state;
* :mod:`.who`: WHO rebuilt from the active-users snapshot after a gap;
* :mod:`.reaper`: a dead node's users leave (its resumable ones adopted);
* :mod:`.redisresumes`: protocol 1.2's tokens, windows and hand-overs in
  Redis, the history from the stream (the hub's resume seam);
* :mod:`.standing`: the lease as every part sees it.

Docs: docs/cluster.md.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from chatd.cluster.leases import LeaseRoster
from chatd.cluster.membership import Membership
from chatd.cluster.options import RedisTarget, defaultNodeName, parseRedisURL
from chatd.cluster.redislink import Connector, RedisLink, connectRedis
from chatd.cluster.redisresumes import RedisResumes
from chatd.cluster.standing import Standing
from chatd.cluster.streamseq import StreamSequencer
from chatd.cluster.who import WhoRebuilder
from chatd.core.events import Event
from chatd.core.roster import IRoster, User
from chatd.core.sequencer import IEventSink, ISequencer
from chatd.wire import ErrorCode, LeaveReason

log = Logger(namespace="chatd.cluster")


class FactoryUsers:
    """The ChatFactory's users, as the membership asks for them (no
    factory: the users the sequencer saw join)."""

    def __init__(self, seq: StreamSequencer) -> None:
        self.seq = seq
        self.factory: Any = None

    def named(self) -> list[User]:
        if self.factory is not None:
            return [user for user, _ in self.factory.named()]
        return self.seq.localUsers()

    def cut(self, lowers: set[bytes] | None, why: str) -> int:
        if self.factory is None:
            return 0
        if lowers is None:
            conns = list(self.factory.connections)
        else:
            conns = [p for u, p in self.factory.named() if u.name.lower() in lowers]
        for proto in conns:
            proto.session.close(LeaveReason.ERROR, ErrorCode.SHUTDOWN, why)
        return len(conns)


@implementer(ISequencer, IRoster)
class ClusterNode:
    """One chatd process's membership of the cluster."""

    def __init__(
        self,
        target: RedisTarget,
        name: str,
        ttl: float,
        clock: Any,
        prefix: str = "chatd:",
        connect: Connector | None = None,
    ) -> None:
        """``clock`` is the reactor; ``connect`` opens a connection to
        Redis (by default, to ``target`` through that reactor)."""
        self.target = target
        self.name = name
        self.ttl = ttl
        self.clock = clock
        self.factory: Any = None  # the ChatFactory, for cutting users
        if connect is None:
            connect = partial(connectRedis, clock, target)
        self.link = RedisLink(connect, target.display, prefix)
        self.standing = Standing(name, ttl, clock)
        self.seq = StreamSequencer(self.link, self.standing)
        self.roster = LeaseRoster(self.link, self.standing)
        self.who = WhoRebuilder(self.link, self.standing)
        self.seq.rebuildWho = self.who.soon
        self.users = FactoryUsers(self.seq)
        self.membership = Membership(
            self.link, self.standing, self.seq, self.roster, self.who, self.users
        )

    # -- wiring --------------------------------------------------------------

    def seams(self) -> dict[str, Any]:
        """ChatFactory's keyword arguments: this node is both; and what
        makes a hub's resume seam (tokens in Redis, history from the stream)."""
        return {"sequencer": self, "roster": self, "resumes": self.resumesFor}

    def resumesFor(self, hub: Any) -> Any:
        """The :class:`~chatd.cluster.redisresumes.RedisResumes` of ``hub``."""
        return RedisResumes(self, hub)

    def start(self, factory: Any) -> None:
        """Connect and join (in the background: until this node holds a
        lease, HELLO gets UNAVAILABLE)."""
        self.factory = self.users.factory = factory
        if factory is not None and self.who.replica is None:
            self.who.replica = factory.hub.replica
        self.link.open(self.membership.linkEvent)
        log.info(
            "cluster: node {node} joining through {redis}",
            node=self.name,
            redis=self.target.display,
        )
        self.membership.start()

    def whenJoined(self) -> Deferred[None]:
        """Fires once this node holds a lease (at once if it does)."""
        return self.membership.whenJoined()

    @property
    def fatal(self) -> Callable[[str], None] | None:
        """Called with a one-line reason when this node must not run."""
        return self.membership.fatal

    @fatal.setter
    def fatal(self, fatal: Callable[[str], None] | None) -> None:
        self.membership.fatal = fatal

    # -- what it reports -------------------------------------------------------

    @property
    def linkUp(self) -> bool:
        return self.link.up

    @property
    def registered(self) -> bool:
        return self.standing.registered

    @property
    def commands(self) -> int:
        return self.link.commands

    def status(self) -> dict[str, Any]:
        """What /status shows under ``cluster``."""
        replica = len(self.factory.hub.replica) if self.factory is not None else 0
        return {
            "node": self.name,
            "redis": self.target.display,
            "link": "up" if self.linkUp else "down",
            "registered": self.registered,
            "last_seq": self.seq.lastSeq,
            "stream_lag": self.seq.lag,
            "cluster_users": replica,
            "gaps": self.seq.gaps,
            "redis_resets": self.membership.resets,
            "redis_commands": self.commands,
            "events_read": self.seq.eventsRead,
        }

    # -- ISequencer, IRoster ---------------------------------------------------

    def subscribe(self, sink: IEventSink, after: int | None = None) -> None:
        self.seq.subscribe(sink, after)

    def submit(self, event: Event) -> Deferred[int]:
        return self.seq.submit(event)

    def flush(self) -> None:
        """Send this turn's events now."""
        self.seq.flush()

    def claim(self, name: bytes) -> Deferred[User | None]:
        return self.roster.claim(name)

    def release(self, user: User) -> None:
        self.roster.release(user)

    def releaseName(self, name: bytes) -> Deferred[None] | None:
        """Free ``name``; the Deferred (None when nothing was sent) fires
        once Redis has done it."""
        return self.roster.releaseName(name)

    def cutAll(self, text: str) -> int:
        """ERROR SHUTDOWN ``text`` to every connection of this node."""
        return self.users.cut(None, text)

    # -- stopping --------------------------------------------------------------

    def stop(self) -> Deferred[None]:
        """After the local users were closed: send their LEAVEs, give the
        lease up, clean up after ourselves, disconnect.  Bounded by the reply
        timeout when Redis is away (then the others reap us after the TTL)."""
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self.membership.halt()
        self.standing.cancelCalls()
        self.seq.flush()
        try:
            await self.seq.allAnswered()
            await self.membership.leave()
        except Exception as e:
            log.warn("cluster: could not leave cleanly ({e}); the others reap us", e=e)
        self.standing.token = ""
        await self.link.close()
        log.info("cluster: node {node} left", node=self.name)


def nodeFor(config: Any, clock: Any) -> ClusterNode:
    """The node that ``--redis`` and friends describe."""
    from twisted.python import usage

    from chatd.secretfile import readPassword

    target = parseRedisURL(config.redis)
    if config.redis_password_file:
        try:
            password = readPassword(config.redis_password_file)
        except ValueError as e:
            raise usage.UsageError(f"--redis-password-file: {e}") from None
        target = RedisTarget(
            target.scheme,
            target.host,
            target.port,
            target.path,
            target.db,
            target.username,
            password.decode("utf-8", "replace"),
        )
    name = config.node_name or defaultNodeName(config.listen)
    node = ClusterNode(target, name, config.node_ttl, clock)
    node.fatal = _stopReactor
    return node


def _stopReactor(why: str) -> None:
    """The node must not run: stop chatd (the reason is logged already)."""
    from twisted.internet import reactor

    reactor.stop()
