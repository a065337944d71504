"""A worker process: ``python -m chatd.cluster.worker --index K --fd N``.

Started by the main process (:mod:`chatd.cluster.main`) with its end of the
link as descriptor N.  It serves the clients whose sockets the main process
hands it (ADOPT), with the ordinary :class:`~chatd.server.factory.ChatFactory`
whose sequencer and roster are the main process's
(:mod:`chatd.cluster.remote`), so its fan-out writes the one total order to
its own clients.  Its log lines go to stdout, one event per line, and the
main process logs them tagged ``worker=K``.  When the link closes (the main
process is gone, even by kill -9) it sends ERROR SHUTDOWN to its clients and
exits: no orphans.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import sys
from collections import deque
from typing import Any
from weakref import WeakKeyDictionary

from twisted.internet import protocol
from twisted.internet.interfaces import IFileDescriptorReceiver
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, Logger, formatEvent, globalLogBeginner
from zope.interface import implementer

from chatd.cluster import link
from chatd.cluster.logins import SharedLogins
from chatd.cluster.remote import RemoteRoster, RemoteSequencer
from chatd.cluster.resumelink import RemoteResumes
from chatd.cluster.workertls import tlsFactories
from chatd.server.backend import IBackend, LocalBackend
from chatd.server.factory import ChatFactory
from chatd.server.internals import leanPolling
from chatd.server.protocol import ChatProtocol
from chatd.wire import ErrorCode, LeaveReason

log = Logger(namespace="chatd")

_FAMILIES = {0: socket.AF_INET, 1: socket.AF_INET6, 2: socket.AF_UNIX}
_NO_LINGER = struct.pack("ii", 0, 0)
STATS_INTERVAL = 1.0
#: How long an exiting worker waits for its last words to reach main.
LINK_CLOSE_TIMEOUT = 2.0


@implementer(IBackend)
class WorkerBackend(LocalBackend):
    """A worker's mode: the main process admitted its clients, orders and
    names (:mod:`chatd.cluster.remote`); it is told when each connection
    ends (DONE), so it can admit more."""

    mode = "worker"
    #: main's number of the connection being adopted now.
    adopting = 0

    def __init__(self, send: link.Link) -> None:
        self.link = send
        self.sequencer = self.remoteSequencer = RemoteSequencer(send.send)
        self.roster = self.remoteRoster = RemoteRoster(send.send)
        self.resumes = RemoteResumes(send.send)
        self.factory: ChatFactory | None = None
        #: a connection here -> main's number for it (weak: one this
        #: worker refused itself is never forgotten, only collected).
        self.mainConns: WeakKeyDictionary[ChatProtocol, int] = WeakKeyDictionary()

    def attach(self, factory: ChatFactory) -> None:
        self.factory = factory
        # One back-off for all workers (chatd.cluster.logins).
        self.logins = SharedLogins(factory.admission, self.link.send)
        factory.hub.logins = self.logins
        factory.hub.resumes = self.resumes  # main keeps tokens and history

    def buildProtocol(self, addr: object) -> ChatProtocol:
        assert self.factory is not None
        proto = self.factory.newProtocol()
        self.mainConns[proto] = self.adopting
        return proto

    def forgotten(self, proto: ChatProtocol) -> None:
        conn = self.mainConns.pop(proto, None)
        if conn is not None and self.link.connected:
            self.link.send(link.DONE, link.U32.pack(conn))


def workerFactory(config: Any, clock: Any, send: link.Link) -> ChatFactory:
    """A worker's factory: the one ChatFactory, composed with its link."""
    return ChatFactory(config, clock, backend=WorkerBackend(send))


@implementer(IFileDescriptorReceiver)
class WorkerLink(link.Link):
    """The worker's end of the link."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.fds: deque[int] = deque()

    def fileDescriptorReceived(self, descriptor: int) -> None:
        self.fds.append(descriptor)

    def messageReceived(self, kind: int, payload: bytes) -> None:
        worker = self.worker
        if kind == link.BATCH:
            own, blob = link.parseBatch(payload)
            worker.backend.remoteSequencer.batchReceived(own, blob)
        elif kind == link.ADOPT:
            conn, family, tls, port = link.ADOPT_HEAD.unpack_from(payload)
            if not self.fds:
                raise link.LinkError("ADOPT without a descriptor")
            worker.adopt(self.fds.popleft(), conn, family, tls, port)
        elif kind in (link.HANDOVER, link.EXPIRE, link.ANSWER):
            worker.backend.resumes.message(kind, payload)
        elif kind == link.NAMED:
            worker.backend.remoteRoster.answered(payload)
        elif kind == link.LOGIN:
            worker.backend.logins.learned(payload)
        elif kind == link.CONFIG:
            worker.configure(link.configFrom(payload))
        elif kind == link.NOTICE:
            code, _, text = payload.decode("utf-8", "replace").partition(".")
            if worker.factory is not None:
                worker.factory.notice(code, text)
        elif kind == link.STOP:
            worker.stop("the main process stops")
        elif kind == link.ABORT:
            if worker.factory is not None:
                worker.factory.abortAll()
        else:
            raise link.LinkError(f"unknown link message {kind}")

    def connectionLost(self, reason: Any = None) -> None:
        self.connected = False  # Twisted leaves it set
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        self.worker.linkLost()


class Worker:
    """One worker process's state: its factory, once configured."""

    factory: ChatFactory | None = None
    stopping = False
    exiting = False
    #: ssl: listener port -> the factory that wraps its connections in TLS.
    tls: dict[int, Any] = {}

    def __init__(self, reactor: Any, index: int) -> None:
        self.reactor = reactor
        self.index = index
        self.link: WorkerLink | None = None
        self._stats = LoopingCall(self.sendStats)
        self._stats.clock = reactor

    @property
    def backend(self) -> WorkerBackend:
        """The configured factory's backend (after the first CONFIG)."""
        assert self.factory is not None, "not configured yet"
        backend = self.factory.backend
        assert isinstance(backend, WorkerBackend)
        return backend

    def configure(self, config: Any) -> None:
        if self.factory is None:
            assert self.link is not None
            self.factory = workerFactory(config, self.reactor, self.link)
            self._stats.start(STATS_INTERVAL, now=False)
            log.info("ready, pid {pid}", pid=os.getpid())
        else:
            self.factory.applyConfig(config)
        self.tls = tlsFactories(config.listen, self.factory)

    def adopt(self, fd: int, conn: int, family: int, tls: int, port: int) -> None:
        """A client's socket from the main process: ours from now on.  One
        that cannot be served is closed and given back at once (DONE)."""
        adopted = False
        try:
            if self.factory is None or family not in _FAMILIES:
                raise link.LinkError(f"cannot adopt conn {conn} (family {family})")
            factory: Any = self.factory
            if tls:
                # By the listener's port; with one ssl: listener, that one.
                only = list(self.tls.values()) if len(self.tls) == 1 else []
                found = self.tls.get(port) or (only[0] if only else None)
                if found is None:
                    log.error(
                        "conn {conn}: no TLS settings for port {port}",
                        conn=conn,
                        port=port,
                    )
                    return
                factory = found
            sock = socket.socket(fileno=os.dup(fd))
            try:
                # The main process aborted its copy (SO_LINGER 0 is set on the
                # socket itself): a close of ours must stay an orderly FIN.
                if family != 2:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _NO_LINGER)
                sock.setblocking(False)
                self.backend.adopting = conn
                self.reactor.adoptStreamConnection(
                    sock.fileno(), _FAMILIES[family], factory
                )
                adopted = True
            finally:
                sock.close()
        except OSError as e:  # out of descriptors, a socket already gone
            log.error("conn {conn}: cannot adopt: {e}", conn=conn, e=e)
        finally:
            os.close(fd)
            if self.link is not None and self.link.connected:
                self.link.send(link.ADOPTED, link.U32.pack(conn))
                if not adopted:
                    self.link.send(link.DONE, link.U32.pack(conn))

    def sendStats(self) -> None:
        if self.factory is not None and self.link is not None and self.link.connected:
            snap = self.factory.snapshot()
            snap["pid"] = os.getpid()
            # Main knows who holds which name; the connection details of
            # each user (for /status) are known only here.
            fanout = self.factory.fanout
            snap["users"] = [
                {
                    "id": user.id,
                    "state": proto.session.state.value,
                    "peer": proto.peer,
                    "since": proto.since,
                    "backlog_bytes": fanout.backlog(proto.session),
                }
                for user, proto in self.factory.named()
            ]
            self.link.send(link.STATS, link.jsonPayload(snap))

    def stop(
        self,
        why: str,
        reason: LeaveReason = LeaveReason.SHUTDOWN,
        code: ErrorCode = ErrorCode.SHUTDOWN,
    ) -> None:
        """ERROR ``code`` to every client (within --shutdown-grace), then exit."""
        if self.stopping:
            return
        self.stopping = True
        if self._stats.running:
            self._stats.stop()
        factory = self.factory
        if factory is None:
            self.exit()
            return
        log.info(
            "stopping ({why}): closing {n} connections",
            why=why,
            n=len(factory.connections),
        )
        factory.refusal = ErrorCode.SHUTDOWN
        grace = self.reactor.callLater(factory.config.shutdown_grace, factory.abortAll)
        d = factory.closeAll(reason, code)

        def done(_: object) -> None:
            if grace.active():
                grace.cancel()
            link = self.link
            if link is None or not link.connected:
                self.exit()
                return
            # The final counts for main's totals, written out before we go:
            # the reactor does not flush a connection when it stops.
            self.sendStats()
            self.exiting = True
            link.transport.loseConnection()
            self.reactor.callLater(LINK_CLOSE_TIMEOUT, self.exit)

        d.addBoth(done)

    def exit(self) -> None:
        if self.reactor.running:
            self.reactor.stop()

    def linkLost(self) -> None:
        if self.exiting:
            self.exit()
            return
        why = "the main process is gone"
        if self.factory is not None:
            self.backend.remoteSequencer.linkLost(why)
            self.backend.remoteRoster.linkLost(why)
            self.backend.resumes.linkLost(why)
        if not self.stopping:
            log.warn("link to the main process closed: shutting down")
        self.stop(why)


@implementer(ILogObserver)
class _LineObserver:
    """Log events as plain lines on stdout for the main process to tag;
    a closed pipe (the main process died) is not an error here."""

    def __call__(self, event: dict) -> None:
        text = formatEvent(event)
        level = event.get("log_level")
        name = getattr(level, "name", "info")
        failure = event.get("log_failure")
        if failure is not None:
            text += " | " + failure.getErrorMessage()
        try:
            sys.stdout.write(f"{name} {text}\n".replace("\n", " ").rstrip() + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chatd.cluster.worker")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args(argv)

    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([_LineObserver()], redirectStandardIO=False)
    worker = Worker(reactor, args.index)
    sock = socket.socket(fileno=args.fd)
    sock.setblocking(False)
    workerLink = worker.link = WorkerLink(worker)
    factory = protocol.Factory.forProtocol(lambda: workerLink)
    reactor.adoptStreamConnection(sock.fileno(), socket.AF_UNIX, factory)  # type: ignore[attr-defined]
    sock.close()

    # Ctrl-C in a terminal reaches the whole process group: the main process
    # decides.  SIGTERM (the main process, or an operator) stops gracefully.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(
        signal.SIGTERM,
        lambda *_: reactor.callFromThread(worker.stop, "SIGTERM"),  # type: ignore[attr-defined]
    )
    # The main process found this worker too slow to follow the order.
    signal.signal(
        signal.SIGUSR1,
        lambda *_: reactor.callFromThread(  # type: ignore[attr-defined]
            worker.stop, "too slow", LeaveReason.SLOW, ErrorCode.SLOW_CONSUMER
        ),
    )
    leanPolling(reactor)
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]


if __name__ == "__main__":
    main()
