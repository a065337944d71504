"""One worker process as the main process of ``--workers`` sees it.

:class:`WorkerHandle` is the worker's slot in the dispatcher and main's end
of its link, with the link's back-pressure: once main holds more than
:data:`LINK_BACKLOGS` times --max-backlog for a worker that does not read,
its owner is told that the worker is too slow.  :class:`MainLink` is the
link's protocol, :class:`WorkerProcess` the process's stdout and stderr.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.cluster import link
from chatd.server.config import Config
from chatd.wire.eventcodec import BadEvent

log = Logger(namespace="chatd")

#: What main may hold for one worker that does not read its link, in
#: --max-backlog units (32 MiB by default), before that worker counts as too
#: slow (its clients get SLOW_CONSUMER).  A link carries one copy of the
#: order for all of a worker's clients: many clients' allowance.
LINK_BACKLOGS = 32


class HandleOwner(Protocol):
    """What a handle tells the main process (its backend)."""

    @property
    def config(self) -> Config: ...
    @property
    def stopping(self) -> bool: ...
    def workerMessage(
        self, handle: WorkerHandle, kind: int, payload: bytes
    ) -> None: ...
    def workerGone(self, handle: WorkerHandle, why: str) -> None: ...
    def tooSlow(self, handle: WorkerHandle) -> None: ...
    def logins(self) -> list[bytes]: ...


class WorkerProcess(protocol.ProcessProtocol):
    """A worker's stdout and stderr, logged here tagged ``worker=K``."""

    def __init__(self, handle: WorkerHandle) -> None:
        self.handle = handle
        self._buffer = b""

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self.handle.logLine(line.decode("utf-8", "replace"))

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        if self._buffer:
            self.handle.logLine(self._buffer.decode("utf-8", "replace"))
            self._buffer = b""
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        why = f"killed by signal {sig}" if sig else f"exited with status {code}"
        handle = self.handle
        expected = handle.retiring or handle.slow or handle.owner.stopping
        (log.info if expected and not sig else log.warn)(
            "worker={k} pid {pid} {why}", k=handle.index, pid=handle.pid, why=why
        )
        handle.gone(why)
        handle.exited.callback(None)


class MainLink(link.Link):
    """Main's end of one worker's link."""

    def __init__(self, handle: WorkerHandle) -> None:
        self.handle = handle

    def connectionMade(self) -> None:
        self.handle.link = self
        self.transport.registerProducer(self.handle, True)

    def messageReceived(self, kind: int, payload: bytes) -> None:
        self.handle.messageReceived(kind, payload)

    def connectionLost(self, reason: Any = None) -> None:
        self.handle.gone("its link closed")


@implementer(IPushProducer)
class WorkerHandle:
    """One worker process as main sees it; the dispatcher's slot."""

    link: MainLink | None = None
    pid: int | None = None
    startedAt = 0.0
    process: Any = None
    dead = False
    retiring = False
    slow = False
    _paused = False
    _held = 0
    idleCall: Any = None

    def __init__(self, owner: HandleOwner, index: int) -> None:
        self.owner = owner
        self.index = index
        self.clients = 0
        #: main's conn number -> the descriptor main holds until ADOPTED.
        self.pendingFds: dict[int, int] = {}
        #: ids of the users whose names this worker holds.
        self.uids: set[int] = set()
        self.stats: dict[str, Any] = {}
        self.exited: Deferred[None] = Deferred()

    @property
    def accepting(self) -> bool:
        return not (self.dead or self.retiring or self.slow)

    @property
    def held(self) -> int:
        """Bytes main holds for this worker since its link paused."""
        return self._held

    def __repr__(self) -> str:
        return f"<worker {self.index} pid={self.pid} clients={self.clients}>"

    # -- to the worker ---------------------------------------------------

    def send(self, kind: int, payload: bytes = b"") -> None:
        if not self.dead and self.link is not None:
            data = bytes([kind]) + payload
            if self._paused:
                self._count(len(data) + 4)
            self.link.sendString(data)

    def sendBatch(self, own: list[int], blob: bytes) -> None:
        if self.slow:
            return
        self.send(link.BATCH, link.batchPayload(own, blob))

    def handOff(self, conn: int, fd: int, family: int, tls: bool, port: int) -> bool:
        """Give the worker a client's socket; main keeps ``fd`` until ADOPTED.
        A TLS connection is still at its first byte: the worker wraps it."""
        if self.dead or self.link is None:
            os.close(fd)
            return False
        self.pendingFds[conn] = fd
        self.link.transport.sendFileDescriptor(fd)
        self.send(link.ADOPT, link.ADOPT_HEAD.pack(conn, family, tls, port))
        return True

    def adopted(self, conn: int) -> None:
        """ADOPTED: the worker has its copy; main's can close."""
        fd = self.pendingFds.pop(conn, None)
        if fd is not None:
            os.close(fd)

    def closePending(self) -> None:
        """Close every descriptor still waiting for ADOPTED."""
        for fd in self.pendingFds.values():
            os.close(fd)
        self.pendingFds.clear()

    # -- IPushProducer: the link's transport says the worker is behind ------

    def pauseProducing(self) -> None:
        if not self._paused:
            self._paused = True
            self._held = 64 * 1024

    def resumeProducing(self) -> None:
        self._paused = False
        self._held = 0

    def stopProducing(self) -> None:
        pass

    def _count(self, size: int) -> None:
        self._held += size
        limit = LINK_BACKLOGS * self.owner.config.max_backlog
        if self._held > limit and not self.slow:
            self.owner.tooSlow(self)

    # -- from the worker -------------------------------------------------

    def messageReceived(self, kind: int, payload: bytes) -> None:
        if self.dead:
            return
        try:
            self.owner.workerMessage(self, kind, payload)
        except (link.LinkError, BadEvent, ValueError) as e:
            log.error(
                "worker={k}: bad link message ({e}): stopping it", k=self.index, e=e
            )
            self.kill()

    def logLine(self, line: str) -> None:
        level, _, text = line.partition(" ")
        try:
            logLevel = LogLevel.levelWithName(level)
        except Exception:
            logLevel, text = LogLevel.info, line
        if text:
            log.emit(logLevel, "worker={k} {line}", k=self.index, line=text)

    # -- ending ------------------------------------------------------------

    def cancelIdle(self) -> None:
        if self.idleCall is not None and self.idleCall.active():
            self.idleCall.cancel()
        self.idleCall = None

    def kill(self) -> None:
        if self.process is not None and not self.exited.called:
            try:
                self.process.signalProcess("KILL")
            except Exception:  # already gone: processEnded follows
                pass

    def gone(self, why: str) -> None:
        if not self.dead:
            self.dead = True
            self.owner.workerGone(self, why)
