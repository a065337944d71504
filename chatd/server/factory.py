"""The factory every binary front-end connection of one process shares.

:class:`ChatFactory` owns the process's :class:`~chatd.core.hub.Hub` and
admits new connections (--max-clients, the per-address limits of
:mod:`chatd.server.admission`, maintenance and shutdown); the service asks it
for notices, kicks, counts and the graceful close of everyone.  It is the
same class in every mode: what a mode changes (the order and the names, a
hand-off of connections, what lies beyond this process) is the
:class:`~chatd.server.backend.IBackend` it is composed with.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredList

from chatd.core.hub import Hub
from chatd.core.roster import IRoster, Roster
from chatd.core.sequencer import ISequencer, LocalSequencer
from chatd.core.session import ACTIVE, CLOSED, Session
from chatd.server.admission import Admission, addressKey
from chatd.server.backend import BackendStatus, IBackend, LocalBackend, Refusal
from chatd.server.binary import BINARY
from chatd.server.historystore import PersistentHistory, openStore
from chatd.server.logsummary import keepRotated
from chatd.server.protocol import ChatProtocol
from chatd.server.resumejournal import restore
from chatd.wire import ErrorCode, LeaveReason

if TYPE_CHECKING:
    from chatd.core.roster import User
    from chatd.server.config import Config


class ChatFactory(protocol.Factory):
    """What every connection of one chatd process shares: the room, and the
    admission of new connections (--max-clients, --max-per-ip, maintenance)."""

    noisy = False

    def __init__(
        self,
        config: Config,
        clock: Any = None,
        sequencer: ISequencer | None = None,
        roster: IRoster | None = None,
        backend: IBackend | None = None,
    ) -> None:
        """``backend`` is the mode (one process if None); ``sequencer`` and
        ``roster``, if given, replace the backend's (tests)."""
        if clock is None:
            from twisted.internet import reactor as clock
        self.backend: IBackend = backend if backend is not None else LocalBackend()
        self.config = config
        self.clock = clock
        if sequencer is None:
            sequencer = self.backend.sequencer
        if roster is None:
            roster = self.backend.roster
        # One process keeps its history; a --redis node too (from the
        # stream), its tokens in Redis (chatd.cluster.redisresumes).
        resumable = getattr(self.backend, "mode", "") in ("local", "redis")
        #: --history-db's store, read back before the sequencer starts.
        self.historyStore: PersistentHistory | None = None
        if resumable and config.history_db and sequencer is None:
            self.historyStore = store = openStore(config, clock)
            sequencer = LocalSequencer(after=store.lastSeq)
            if roster is None:
                roster = Roster(after=store.lastUserId)
        self.hub = Hub(
            config,
            clock,
            sequencer,
            roster,
            codec=BINARY,
            resumable=resumable,
            history=self.historyStore,
        )
        if self.historyStore is not None:
            # Users a crash did not end are detached again (tokens kept).
            restore(self.hub, self.historyStore, BINARY)
        self.stats = self.hub.stats
        self.fanout = self.hub.fanout
        self.connections: dict[ChatProtocol, None] = {}
        # Connections that have sent everything and their FIN, and linger
        # only to read what the client still sends: not counted in limits.
        self._released: set[ChatProtocol] = set()
        # Abuse limits and bounded logging (chatd.server.admission): the room
        # asks it about logins, and protocol errors are summarised through it.
        self.admission = Admission(config, clock)
        self.perAddress = self.admission.perAddress
        self.hub.logins = self.admission
        self.hub.errorLog.emit = self._logError
        #: When set (MAINTENANCE, SHUTDOWN), new connections get this error.
        self.refusal: ErrorCode | None = None
        self._numbers = itertools.count(1)
        self.backend.attach(self)

    def closeHistory(self) -> None:
        """Write --history-db's last events and close it (a graceful stop)."""
        if self.historyStore is not None:
            self.historyStore.close()

    def historyReport(self) -> dict[str, object] | None:
        """--history-db for /status: the file, events written, in how many
        transactions, and lost to failed writes (None: off)."""
        store = self.historyStore
        if store is None:
            return None
        return {
            "path": store.db.path,
            "events_written": store.written,
            "transactions": store.transactions,
            "events_lost": store.lost,
        }

    def startFactory(self) -> None:
        self.backend.listening()

    def stopFactory(self) -> None:
        # No longer listening: write the pending log summaries now.
        self.admission.logs.flushAll()

    def buildProtocol(self, addr: object) -> ChatProtocol:
        proto = self.backend.buildProtocol(addr)
        return self.newProtocol() if proto is None else proto

    def newProtocol(self) -> ChatProtocol:
        """A connection served here, numbered in this process."""
        return ChatProtocol(self, self.connectionNumber())

    def connectionNumber(self) -> int:
        """The next connection number of this process (any front end)."""
        return next(self._numbers)

    def admit(self, proto: ChatProtocol) -> Refusal | None:
        """Count a new connection in, or say which fatal error refuses it."""
        ruled = self.backend.ruled(proto)
        if ruled is not None:  # decided (and counted) before it was built
            return ruled
        self.stats.connectionsTotal += 1
        # State, --max-clients and the per-address limits: chatd.server.admission.
        refusal = self.admission.admit(
            proto.host,
            proto.peer,
            self.refusal,
            len(self.connections) - len(self._released),
        )
        if refusal is None:
            self.connections[proto] = None
        return refusal

    def release(self, proto: ChatProtocol) -> bool:
        """``proto`` has sent all it will: it no longer counts against
        --max-clients and --max-per-ip while it lingers.

        Returns False when ``max_clients`` connections linger already: then
        it should close at once, so that clients which leave and keep their
        sockets open cannot hold descriptors without bound.
        """
        if proto not in self.connections:
            return False
        if proto not in self._released:
            if len(self._released) >= self.config.max_clients:
                return False
            self._released.add(proto)
            self.admission.release(proto.host)
        return True

    def forget(self, proto: ChatProtocol) -> None:
        if proto in self.connections:
            del self.connections[proto]
            if proto in self._released:
                self._released.discard(proto)
            else:
                self.admission.release(proto.host)
            self.backend.forgotten(proto)

    def _logError(self, session: Session, code: ErrorCode) -> None:
        """A protocol error a client's input caused: the first few of each
        code are logged, then one summary line per interval, however many
        connections or addresses send them."""
        conn = session.conn
        self.admission.logs.event(
            "protocol errors " + code.name + " from {addresses}",
            addressKey(conn.host),
            "error conn={conn} peer={peer} code={code}",
            conn=conn.number,
            peer=conn.peer,
            code=code.name,
        )

    def applyConfig(self, config: Config) -> None:
        """Take a reloaded configuration; connections read it at use."""
        self.config = config
        self.hub.applyConfig(config)
        self.admission.applyConfig(config)
        keepRotated(config.log_keep)
        self.backend.applyConfig(config)

    def closeAll(self, reason: LeaveReason, code: ErrorCode) -> Deferred:
        """Close every connection with ERROR ``code`` (all local users go at
        once: none of them gets a LEAVE of the others), and those beyond this
        process.  Fires once every connection is gone; :meth:`abortAll`
        hurries the stragglers."""
        beyond = self.backend.closeAll(reason, code)
        conns = list(self.connections)
        closed = []
        for proto in conns:
            proto.onClosed = Deferred()
            closed.append(proto.onClosed)
        self.fanout.removeAll()
        for proto in conns:
            proto.session.close(reason, code)
        for session in list(self.hub.detached):
            session.close(reason)
        here = DeferredList(closed).addCallback(lambda _: len(conns))
        if beyond is None:
            return here
        return DeferredList([here, beyond]).addCallback(lambda _: len(conns))

    def abortAll(self) -> int:
        """Abort every connection still open; returns how many."""
        left = list(self.connections)
        for proto in left:
            proto.transport.abortConnection()
        return len(left) + self.backend.abortAll()

    def named(self) -> list[tuple[User, ChatProtocol]]:
        """This process's connections that hold a name, oldest first."""
        return [
            (p.session.user, p)
            for p in self.connections
            if p.session.user is not None and p.session.state is not CLOSED
        ]

    def frontEnds(self) -> dict[str, dict[str, int]]:
        """Connections and active users per front end (tcp, tls, unix,
        websocket), for /status and /metrics."""
        counts: dict[str, dict[str, int]] = {}
        for proto in self.connections:
            entry = counts.setdefault(
                proto.frontEnd, {"connections": 0, "active_users": 0}
            )
            entry["connections"] += 1
            entry["active_users"] += proto.session.state is ACTIVE
        return counts

    def snapshot(self) -> dict:
        """The counters of the stats line, /status and /metrics (with
        --workers, the workers' added)."""
        return self.backend.counters(
            self.stats.snapshot(
                connections=len(self.connections),
                active=len(self.fanout),
                deliveries=self.fanout.deliveries,
                broadcastBytes=self.fanout.bytesOut,
            )
        )

    def status(self) -> BackendStatus:
        """The mode's typed report (workers, cluster node)."""
        return self.backend.status()

    def notice(self, code: str, text: str) -> int:
        """NOTICE ``code.text`` to every open connection (maintenance,
        resumed), mid-handshake ones too: they may still finish it.

        Sent as a reply, so it follows what each was already sent.
        Returns how many connections got it.
        """
        told = 0
        for proto in list(self.connections):
            if proto.session.state is not CLOSED:
                proto.session.notice(code, text)
                told += 1
        return told + self.backend.notice(code, text)

    def kick(self, name: str) -> bool:
        """An operator removes user ``name``: ERROR KICKED, LEAVE kicked."""
        return self.hub.kick(name)

    def setTopic(self, room: str, topic: str | None, locked: bool | None) -> bool:
        """The operator sets or locks a 1.2 room's topic."""
        return self.hub.setTopic(room, topic, locked)

    def kickFromRoom(self, name: str, room: str) -> bool:
        """An operator removes user ``name`` from 1.2 room ``room``."""
        return self.hub.kickFromRoom(name, room)
