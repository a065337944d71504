"""Main's side of a client under ``--workers``: admitted here, served by a worker.

:class:`Placement` runs the single process's admission for each new
connection, picks a worker with room (:mod:`chatd.cluster.dispatch`,
starting one if need be) and counts the client against it until the worker
says DONE.  :class:`Handoff` is the admitted connection in main: it only
passes its socket; :class:`RefusedProtocol` answers a refused one here, as a
single process would.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from twisted.internet import protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol

from chatd.cluster.supervisor import NoWorker, Supervisor
from chatd.server.backend import Refusal
from chatd.server.protocol import ChatProtocol
from chatd.wire import ErrorCode

if TYPE_CHECKING:
    from chatd.cluster.handle import WorkerHandle
    from chatd.server.config import Config
    from chatd.server.factory import ChatFactory

log = Logger(namespace="chatd")

_FAMILY = {socket.AF_INET: 0, socket.AF_INET6: 1, socket.AF_UNIX: 2}
_HANDED = ("tcp", "tcp6", "unix", "ssl")


def unsupportedListeners(config: Config) -> list[str]:
    """Listeners --workers cannot hand over yet (the PROXY protocol...)."""
    return [
        d for d in config.listen if d.split(":", 1)[0].strip().lower() not in _HANDED
    ]


class Handoff(protocol.Protocol):
    """An admitted client's connection in main: it only passes the socket.

    Main's copy is closed with an abort (an orderly close would shut the
    socket down for the worker too); only once it is closed, so the worker
    can undo the abort's SO_LINGER without a race, is the duplicate sent.
    """

    transport: Any = None

    def __init__(self, placement: Placement, conn: int) -> None:
        self.placement = placement
        self.conn = conn
        self.fd: int | None = None
        self.family = 0
        self.tls = False
        self.port = 0

    def connectionMade(self) -> None:
        transport = self.transport
        # An ssl: listener: TLS has not begun (nothing is read before
        # connectionMade), so the TCP connection underneath is handed over.
        self.tls = isinstance(transport, TLSMemoryBIOProtocol)
        if self.tls:
            transport = transport.transport
        try:
            sock = transport.getHandle()
            self.family = _FAMILY[sock.family]
            self.port = int(getattr(transport.getHost(), "port", 0))
            self.fd = os.dup(sock.fileno())
        except (OSError, KeyError) as e:
            log.error("conn={conn}: cannot hand over: {e}", conn=self.conn, e=e)
        self.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.placement.handOff(self.conn, self.fd, self.family, self.tls, self.port)


class RefusedProtocol(ChatProtocol):
    """A connection main refuses itself, with the fatal ERROR it chose."""

    refusal: Refusal = (ErrorCode.SERVER_FULL, None)


class Placement:
    """Which worker serves which of main's connections (module doc)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.factory: ChatFactory | None = None
        #: main's conn number -> (worker, peer host), until DONE.
        self.clients: dict[int, tuple[WorkerHandle, str]] = {}

    def _factory(self) -> ChatFactory:
        assert self.factory is not None, "the backend is not attached yet"
        return self.factory

    def buildProtocol(self, conn: int, addr: object) -> protocol.Protocol:
        """Hand the connection off, or refuse it here."""
        host = str(getattr(addr, "host", "unix"))
        port = getattr(addr, "port", None)
        peer = host if port is None else f"{host}:{port}"
        refusal = self.admit(conn, host, peer)
        if refusal is None:
            return Handoff(self, conn)
        proto = RefusedProtocol(self._factory(), conn)
        proto.refusal = refusal
        return proto

    def admit(self, conn: int, host: str, peer: str) -> Refusal | None:
        """The single process's admission (chatd.server.admission: state,
        --max-clients, --max-per-ip, --connect-rate, --limit-exempt), then
        a worker with room."""
        factory = self._factory()
        factory.stats.connectionsTotal += 1
        admission = factory.admission
        refusal = admission.admit(host, peer, factory.refusal, len(self.clients))
        if refusal is not None:
            return refusal
        try:
            worker = self.supervisor.dispatcher.choose()
        except NoWorker as e:
            admission.release(host)
            log.error("conn={conn}: no worker can start: {e}", conn=conn, e=e)
            return ErrorCode.SERVER_FULL, "no worker can start"
        if worker is None:
            admission.release(host)
            return ErrorCode.SERVER_FULL, "every worker is full"
        worker.clients += 1
        worker.cancelIdle()
        self.clients[conn] = (worker, host)
        return None

    def handOff(
        self, conn: int, fd: int | None, family: int, tls: bool, port: int
    ) -> None:
        """Main's copy of ``conn`` is closed: send the duplicate ``fd``."""
        entry = self.clients.get(conn)
        if fd is not None:
            if entry is not None and entry[0].handOff(conn, fd, family, tls, port):
                return
            if entry is None:
                os.close(fd)
        self.done(conn)

    def done(self, conn: int) -> None:
        """``conn`` has ended (DONE, or never handed over)."""
        entry = self.clients.pop(conn, None)
        if entry is None:
            return
        handle, host = entry
        handle.clients -= 1
        self._factory().admission.release(host)
        if handle.clients == 0 and not handle.dead:
            self.supervisor.armIdle(handle)

    def drop(self, handle: WorkerHandle) -> None:
        """``handle`` is gone: its clients no longer count."""
        admission = self._factory().admission
        for conn, (owner, host) in list(self.clients.items()):
            if owner is handle:
                del self.clients[conn]
                admission.release(host)
        handle.clients = 0
