"""The ``--redis`` mode: a :class:`~chatd.cluster.node.ClusterNode` behind
the backend interface.

The node is the room's sequencer and roster; it joins when the service
starts (in the background: until it holds a lease, HELLO gets UNAVAILABLE)
and leaves when it stops, after the local users were closed.  Only the
node's public methods are used here (``nodeFor``, ``seams``, ``start``,
``stop``, ``status``).  The login back-off is shared with the other nodes
through Redis too (:mod:`chatd.cluster.redislogins`).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from chatd.cluster.node import ClusterNode, nodeFor
from chatd.cluster.redislogins import RedisLogins
from chatd.server.backend import BackendStatus, IBackend, LocalBackend, NodeStatus
from chatd.server.config import Config
from chatd.server.factory import ChatFactory

__all__ = ["RedisBackend", "redisFactory"]


@implementer(IBackend)
class RedisBackend(LocalBackend):
    """One node of a cluster joined through Redis (docs/cluster.md)."""

    mode = "redis"

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        seams = node.seams()
        self.sequencer = seams["sequencer"]
        self.roster = seams["roster"]
        self.factory: ChatFactory | None = None
        self.logins: RedisLogins | None = None
        self.resumes: Any = None  # chatd.cluster.redisresumes.RedisResumes

    def attach(self, factory: ChatFactory) -> None:
        self.factory = factory
        # History from the stream, tokens and windows in Redis.
        resumesFor = self.node.seams().get("resumes")
        if resumesFor is not None:
            factory.hub.resumes = self.resumes = resumesFor(factory.hub)

    def shareLogins(self, logins: RedisLogins) -> None:
        """Check passwords through ``logins``' guard (one back-off for all
        nodes) instead of the factory's own admission alone."""
        assert self.factory is not None
        self.logins = logins
        self.factory.hub.logins = logins.guard

    def start(self) -> None:
        self.node.start(self.factory)
        if self.logins is not None:
            self.logins.start()

    def stop(self) -> Deferred[None]:
        """Sequence the local users' LEAVEs and resign."""
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        try:
            await self.node.stop()
        finally:
            if self.logins is not None:
                await self.logins.stop()

    def nodeStatus(self) -> NodeStatus:
        """The node's ``status()``, typed (its fields, no others)."""
        given: dict[str, Any] = self.node.status()
        return NodeStatus(**{f.name: given[f.name] for f in fields(NodeStatus)})

    def status(self) -> BackendStatus:
        resume = self.resumes.report() if self.resumes is not None else None
        return BackendStatus(self.mode, node=self.nodeStatus(), resume=resume)


def redisFactory(config: Config, reactor: Any) -> ChatFactory:
    """The factory of a ``--redis`` node, its login back-off shared."""
    node = nodeFor(config, reactor)
    backend = RedisBackend(node)
    factory = ChatFactory(config, reactor, backend=backend)
    backend.shareLogins(RedisLogins(factory.admission, node.name, node.target))
    return factory
