"""The main process of ``--workers N``: it accepts, orders and names.

:class:`MainBackend` is the mode the one
:class:`~chatd.server.factory.ChatFactory` is composed with on every
listener.  It is put together from one module per idea:

* :mod:`.handoff` admits each new connection (the single process's
  admission, counted across workers), picks a worker and hands the socket
  over; a refused connection is answered here, as a single process would;
* :mod:`.authority` is the one sequencer (every event, from whichever
  worker, gets its number here and goes to every worker in one BATCH per
  reactor turn) and the one roster (names unique across workers);
* :mod:`.supervisor` starts, retires, cuts off and replaces workers;
* :mod:`.handle` is one worker's link, with its back-pressure;
* :mod:`.resumes` is the one authority of protocol 1.2's resume (tokens,
  detached users' windows, the hand-over between workers) and answers
  replays and HISTORY from main's history, the only whole one;
* :mod:`.tally` adds the workers' counters up for the stats line, /status
  and /metrics.

A worker that dies (kill -9 included) is noticed by its link and its
process: its users are LEAVE ``error`` for the others and their names are
free again.  A worker that cannot keep up with the order is cut off (its
clients get SLOW_CONSUMER) and replaced.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from zope.interface import implementer

from chatd.cluster import link, logins
from chatd.cluster.authority import Authority, Names
from chatd.cluster.handle import WorkerHandle
from chatd.cluster.handoff import Placement, RefusedProtocol, unsupportedListeners
from chatd.cluster.resumes import ResumeAuthority
from chatd.cluster.supervisor import Supervisor
from chatd.cluster.tally import Tally
from chatd.core.history import History
from chatd.server.admission import Admission
from chatd.server.backend import BackendStatus, IBackend, Refusal
from chatd.server.config import Config
from chatd.server.errors import StartupError
from chatd.server.factory import ChatFactory
from chatd.server.protocol import ChatProtocol
from chatd.wire import ErrorCode, LeaveReason
from chatd.wire.eventcodec import decodeEvent

__all__ = ["MainBackend", "mainFactory"]

log = Logger(namespace="chatd")


@implementer(IBackend)
class MainBackend:
    """The order, the names and the workers of ``--workers`` (module doc)."""

    mode = "workers"

    def __init__(self, config: Config, reactor: Any) -> None:
        self.reactor = reactor
        self._config = config
        self.factory: ChatFactory | None = None
        self.stopping = False
        self.authority = Authority(reactor.callLater)
        self.names = Names(self.authority)
        self.sequencer = self.authority
        self.roster = self.names.roster
        self.resumes = ResumeAuthority(
            self.authority,
            self.names,
            reactor.callLater,
            lambda: self.config.resume_window,
        )
        self.supervisor = Supervisor(reactor, self, self.authority, self._seed)
        self.placement = Placement(self.supervisor)
        self.tally = Tally()
        self._connNumbers = itertools.count(1)

    @property
    def config(self) -> Config:
        """The factory's (a reload swaps it there)."""
        return self.factory.config if self.factory is not None else self._config

    def _room(self) -> Any:
        assert self.factory is not None, "the backend is not attached yet"
        return self.factory.hub

    def _admission(self) -> Admission:
        assert self.factory is not None, "the backend is not attached yet"
        return self.factory.admission

    def logins(self) -> list[bytes]:
        """LOGIN messages for a new worker: the back-off table of record."""
        return logins.tableFor(self._admission().auth)

    def _seed(self) -> bytes:
        hub = self._room()
        return self.authority.seed(hub.replica, hub.rooms)

    # -- IBackend: admission and hand-off ----------------------------------

    def attach(self, factory: ChatFactory) -> None:
        self.factory = factory
        self.placement.factory = factory
        config = factory.config
        history = History(config.history, config.history_bytes)
        factory.hub.rooms.history = self.resumes.history = history

    def buildProtocol(self, addr: object) -> protocol.Protocol:
        return self.placement.buildProtocol(next(self._connNumbers), addr)

    def ruled(self, proto: ChatProtocol) -> Refusal | None:
        """Only refused connections are served here, and the front ends
        workers do not build (IRC), admitted as anywhere."""
        if isinstance(proto, RefusedProtocol):
            return proto.refusal
        if proto.servedByMain:
            return None
        return ErrorCode.SERVER_FULL, None

    def forgotten(self, proto: ChatProtocol) -> None:
        pass

    # -- IBackend: lifecycle -------------------------------------------------

    def listening(self) -> None:
        self.supervisor.startMinimum()

    def start(self) -> None:
        pass

    def stop(self) -> Deferred[None] | None:
        return None

    def notice(self, code: str, text: str) -> int:
        payload = f"{code}.{text}".encode()
        told = 0
        for worker in tuple(self.authority.workers):  # a send may cut one off
            worker.send(link.NOTICE, payload)
            told += worker.clients
        return told

    def applyConfig(self, config: Config) -> None:
        self.supervisor.applyConfig(config)
        message = link.configPayload(config)
        for worker in tuple(self.authority.workers):  # a send may cut one off
            worker.send(link.CONFIG, message)

    def closeAll(self, reason: LeaveReason, code: ErrorCode) -> Deferred[Any]:
        """Every worker sends ERROR ``code`` to its clients and exits."""
        self.stopping = True
        self.authority.flush()
        return DeferredList(self.supervisor.stopAll())

    def abortAll(self) -> int:
        return self.supervisor.abortAll()

    # -- IBackend: the report ------------------------------------------------

    def counters(self, snap: dict[str, Any]) -> dict[str, Any]:
        return self.tally.snapshot(
            snap,
            self.supervisor.running(),
            len(self._room().replica),
            len(self.placement.clients),
        )

    def status(self) -> BackendStatus:
        running = self.supervisor.running()
        return BackendStatus(
            self.mode,
            users=self.tally.users(running, self.names),
            workers=self.tally.table(running),
            resume=self.resumes.report(),
        )

    # -- from the workers (HandleOwner) ----------------------------------------

    def workerMessage(self, handle: WorkerHandle, kind: int, payload: bytes) -> None:
        if handle.slow and kind in (link.SUBMIT, link.CLAIM):
            return  # being cut off: main already sequenced its users' LEAVEs
        if kind == link.SUBMIT:
            self.authority.submit(decodeEvent(payload), handle)
        elif kind in link.RESUME_KINDS:
            self.resumes.message(handle, kind, payload)
        elif kind == link.CLAIM:
            (req,) = link.U32.unpack_from(payload)
            self.names.claim(handle, req, payload[link.U32.size :])
        elif kind == link.RELEASE:
            (uid,) = link.U32.unpack_from(payload)
            self.names.release(handle, uid)
        elif kind == link.ADOPTED:
            (conn,) = link.U32.unpack_from(payload)
            handle.adopted(conn)
        elif kind == link.DONE:
            (conn,) = link.U32.unpack_from(payload)
            self.placement.done(conn)
        elif kind == link.LOGIN:
            others = [w.send for w in self.authority.workers if w is not handle]
            logins.relay(self._admission().auth, payload, others)
        elif kind == link.STATS:
            stats = json.loads(payload)
            if not isinstance(stats, dict):
                raise link.LinkError("STATS is not an object")
            handle.stats = stats
        else:
            raise link.LinkError(f"unknown link message {kind}")

    def tooSlow(self, handle: WorkerHandle) -> None:
        """``handle`` does not read its link: cut its clients off and replace it."""
        self.supervisor.cutOff(handle)
        self.resumes.workerGone(handle)
        self.names.forget(handle, LeaveReason.SLOW, self._room().replica)
        self.authority.drop(handle)

    def workerGone(self, handle: WorkerHandle, why: str) -> None:
        """A worker exited or died: its users leave, their names are free."""
        expected = handle.retiring or self.stopping or handle.slow
        (log.info if expected else log.warn)(
            "worker={k} pid {pid} gone ({why}): {n} users leave",
            k=handle.index,
            pid=handle.pid,
            why=why,
            n=len(handle.uids),
        )
        self.supervisor.detach(handle)
        self.placement.drop(handle)
        self.tally.departed(handle)
        self.resumes.workerGone(handle)
        self.names.forget(handle, LeaveReason.ERROR, self._room().replica)
        self.supervisor.replace(handle, expected)


def mainFactory(config: Config, reactor: Any) -> ChatFactory:
    """The main process's factory, or a StartupError naming what --workers
    cannot do yet."""
    unsupported = unsupportedListeners(config)
    if unsupported:
        raise StartupError(
            "--workers: cannot hand over connections of "
            + ", ".join(unsupported)
            + " yet (tcp:, tcp6:, ssl: and unix: listeners only); use --workers 1"
        )
    return ChatFactory(config, reactor, backend=MainBackend(config, reactor))
