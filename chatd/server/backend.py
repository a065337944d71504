"""What differs between the modes, behind one interface.

There is one :class:`~chatd.server.factory.ChatFactory`; a mode is the
:class:`IBackend` it is composed with.  One process is :class:`LocalBackend`
(this module); the main process of ``--workers``, a worker process and a
``--redis`` node are in :mod:`chatd.cluster` (``workers.MainBackend``,
``worker.WorkerBackend``, ``redisnode.RedisBackend``), built by the
composition in :mod:`chatd.server.tap`.  The service, admin and metrics see
only this interface and its typed report, :class:`BackendStatus`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface, implementer

if TYPE_CHECKING:
    from chatd.core.roster import IRoster
    from chatd.core.sequencer import ISequencer
    from chatd.server.config import Config
    from chatd.server.factory import ChatFactory
    from chatd.server.protocol import ChatProtocol
    from chatd.wire import ErrorCode, LeaveReason

#: The counters of each worker that /metrics shows and main adds to its own.
WORKER_COUNTERS = (
    "frames_in",
    "bytes_in",
    "frames_out",
    "bytes_out",
    "messages",
    "deliveries",
)

#: A fatal ERROR and its text: why a connection is refused.
Refusal = tuple["ErrorCode", "str | None"]


@dataclass(frozen=True)
class WorkerEntry:
    """One running worker as the main process knows it (its last STATS)."""

    worker: int
    pid: int | None
    users: int
    connections: int
    #: its counters (frames_in ... deliveries) and ``errors`` by code.
    counters: dict[str, Any]


@dataclass(frozen=True)
class RemoteUser:
    """A user served by a worker; the details come with its last STATS."""

    id: int
    name: str
    worker: int
    state: str | None
    peer: str | None
    since: float | None
    backlog_bytes: int | None


@dataclass(frozen=True)
class NodeStatus:
    """This ``--redis`` node's view of the cluster."""

    node: str
    redis: str
    link: str
    registered: bool
    last_seq: int
    stream_lag: int
    cluster_users: int
    gaps: int
    redis_resets: int
    redis_commands: int
    events_read: int


@dataclass(frozen=True)
class BackendStatus:
    """What admin's /status and /metrics read of the mode.

    ``users`` is None when the users are this process's own connections
    (the factory lists them); ``workers`` and ``node`` are None outside
    their modes.
    """

    mode: str
    users: tuple[RemoteUser, ...] | None = None
    workers: tuple[WorkerEntry, ...] | None = None
    node: NodeStatus | None = None
    #: /status's ``resume`` block where the mode keeps tokens and history
    #: outside this process's hub (--workers: main's ResumeAuthority).
    resume: dict[str, object] | None = None


class IBackend(Interface):
    """What a mode adds to the one factory: where the order and the names
    come from, how connections are admitted or handed off, and what the
    service's operations (notices, reload, close, status) reach beyond this
    process."""

    sequencer = Attribute("The room's ISequencer, or None for its own.")
    roster = Attribute("The room's IRoster, or None for its own.")

    def attach(factory: ChatFactory) -> None:
        """The factory this backend serves, once its room exists."""

    def buildProtocol(addr: object) -> Any:
        """A protocol of the mode's own for a new connection (a hand-off),
        or None: the factory serves it here."""

    def ruled(proto: ChatProtocol) -> Refusal | None:
        """A refusal decided already for ``proto`` (before it was built),
        or None: the factory's admission decides."""

    def forgotten(proto: ChatProtocol) -> None:
        """``proto``, admitted here, is gone."""

    def listening() -> None:
        """The factory's first listener is up."""

    def start() -> None:
        """The service has started (joining may go on in the background)."""

    def stop() -> Deferred[None] | None:
        """The service stops, after the local users were closed."""

    def notice(code: str, text: str) -> int:
        """NOTICE users beyond this process; returns how many were told."""

    def applyConfig(config: Config) -> None:
        """A reloaded configuration, for what is beyond this process."""

    def closeAll(reason: LeaveReason, code: ErrorCode) -> Deferred[Any] | None:
        """Close the connections beyond this process (None: there are none)."""

    def abortAll() -> int:
        """Abort what is still open beyond this process; returns how many."""

    def counters(snap: dict[str, Any]) -> dict[str, Any]:
        """This process's snapshot with what is beyond it added."""

    def status() -> BackendStatus:
        """The typed report for admin and metrics."""


@implementer(IBackend)
class LocalBackend:
    """One process: the room orders and names by itself; nothing beyond."""

    sequencer: ISequencer | None = None
    roster: IRoster | None = None
    mode = "local"

    def attach(self, factory: ChatFactory) -> None:
        pass

    def buildProtocol(self, addr: object) -> Any:
        return None

    def ruled(self, proto: ChatProtocol) -> Refusal | None:
        return None

    def forgotten(self, proto: ChatProtocol) -> None:
        pass

    def listening(self) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> Deferred[None] | None:
        return None

    def notice(self, code: str, text: str) -> int:
        return 0

    def applyConfig(self, config: Config) -> None:
        pass

    def closeAll(self, reason: LeaveReason, code: ErrorCode) -> Deferred[Any] | None:
        return None

    def abortAll(self) -> int:
        return 0

    def counters(self, snap: dict[str, Any]) -> dict[str, Any]:
        return snap

    def status(self) -> BackendStatus:
        return BackendStatus(self.mode)


__all__ = [
    "WORKER_COUNTERS",
    "BackendStatus",
    "IBackend",
    "LocalBackend",
    "NodeStatus",
    "Refusal",
    "RemoteUser",
    "WorkerEntry",
]
