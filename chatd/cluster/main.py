"""The main process of ``--workers N``: it accepts, orders and names.

:class:`ClusterFactory` takes the place of the ChatFactory on every
listener.  It admits each new connection (--max-clients, --max-per-ip,
maintenance, all counted across workers), picks a worker
(:class:`~chatd.cluster.dispatch.Dispatcher`, starting one when the clients
do not fit) and hands the socket over the worker's link; a refused
connection is answered here, as a single process would.  It is the one
sequencer (:class:`Authority`: every event, from whichever worker, gets its
number here and goes to every worker in one BATCH per reactor turn) and the
one roster (names, ids, colours unique across workers).

A worker that dies (kill -9 included) is noticed by its link and its
process: its users are LEAVE ``error`` for the others and their names are
free again.  A worker that cannot keep up with the order is bounded: once
main holds more than :data:`LINK_BACKLOGS` times --max-backlog for it, it is told to cut
its clients off (SLOW_CONSUMER) and is replaced.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger, LogLevel
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.cluster import link
from chatd.cluster.dispatch import Dispatcher
from chatd.core.eventcodec import BadEvent, decodeEvent, encodeEvent
from chatd.core.events import Event, Join, Leave
from chatd.core.roster import Roster, User
from chatd.core.sequencer import IEventSink, ISequencer
from chatd.server.config import Config
from chatd.server.factory import ChatFactory
from chatd.server.protocol import ChatProtocol
from chatd.wire import ErrorCode, LeaveReason

log = Logger(namespace="chatd")

#: What main may hold for one worker that does not read its link, in
#: --max-backlog units (32 MiB by default), before that worker counts as too
#: slow (its clients get SLOW_CONSUMER).  A link carries one copy of the
#: order for all of a worker's clients: many clients' allowance.
LINK_BACKLOGS = 32

#: After STOP or a slow cut-off, a worker that has not exited this long
#: after --shutdown-grace is killed.
KILL_AFTER = 5.0

#: Workers that die within START_TIME seconds of starting, FAILED_STARTS
#: times within FAILED_WINDOW seconds, stop new ones being started until the
#: window has passed (new clients get SERVER_FULL meanwhile).
START_TIME = 2.0
FAILED_STARTS = 3
FAILED_WINDOW = 30.0


class NoWorker(RuntimeError):
    """No worker can be started now; says why."""


_FAMILY = {socket.AF_INET: 0, socket.AF_INET6: 1, socket.AF_UNIX: 2}


def unsupportedListeners(config: Config) -> list[str]:
    """Listeners --workers cannot hand over yet (the PROXY protocol...)."""
    return [
        d
        for d in config.listen
        if d.split(":", 1)[0].strip().lower() not in ("tcp", "tcp6", "unix", "ssl")
    ]


@implementer(ISequencer)
class Authority:
    """The one total order: numbers events, delivers them to this process's
    sinks at once and to every worker in one BATCH per reactor turn."""

    def __init__(self, callLater: Any) -> None:
        self._callLater = callLater
        self.last = 0
        self._sinks: list[IEventSink] = []
        self._parts: list[bytes] = []
        self._own: dict[WorkerHandle, list[int]] = {}
        self._flushCall: Any = None
        self.workers: list[WorkerHandle] = []

    def subscribe(self, sink: IEventSink, after: int | None = None) -> None:
        if after is not None and after != self.last:
            raise ValueError(f"events after {after} are gone; now at {self.last}")
        self._sinks.append(sink)

    def submit(self, event: Event, origin: WorkerHandle | None = None) -> Deferred[int]:
        self.last = seq = self.last + 1
        event.seq = seq
        for sink in self._sinks:
            sink.deliver(event)
        data = encodeEvent(event)
        self._parts.append(link.U32.pack(len(data)))
        self._parts.append(data)
        if origin is not None:
            self._own.setdefault(origin, []).append(seq)
        if self._flushCall is None:
            self._flushCall = self._callLater(0, self.flush)
        return succeed(seq)

    def flush(self) -> None:
        """Send this turn's events to every worker: the same blob for all."""
        if self._flushCall is not None:
            if self._flushCall.active():
                self._flushCall.cancel()
            self._flushCall = None
        if not self._parts:
            return
        blob = b"".join(self._parts)
        own, self._parts, self._own = self._own, [], {}
        for worker in self.workers:
            worker.sendBatch(own.get(worker, []), blob)


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
        expected = handle.retiring or handle.slow or handle.cluster.stopping
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
    _idleCall: Any = None

    def __init__(self, cluster: ClusterFactory, index: int) -> None:
        self.cluster = cluster
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
        limit = LINK_BACKLOGS * self.cluster.config.max_backlog
        if self._held > limit and not self.slow:
            self.cluster.tooSlow(self)

    # -- from the worker -------------------------------------------------

    def messageReceived(self, kind: int, payload: bytes) -> None:
        if self.dead:
            return
        try:
            self.cluster.workerMessage(self, kind, payload)
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

    def kill(self) -> None:
        if self.process is not None and not self.exited.called:
            try:
                self.process.signalProcess("KILL")
            except Exception:  # already gone: processEnded follows
                pass

    def gone(self, why: str) -> None:
        if not self.dead:
            self.dead = True
            self.cluster.workerGone(self, why)


class Handoff(protocol.Protocol):
    """An admitted client's connection in main: it only passes the socket.

    Main's copy is closed with an abort (an orderly close would shut the
    socket down for the worker too); only once it is closed, so the worker
    can undo the abort's SO_LINGER without a race, is the duplicate sent.
    """

    transport: Any = None

    def __init__(self, cluster: ClusterFactory, conn: int) -> None:
        self.cluster = cluster
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
        self.cluster.handOff(self.conn, self.fd, self.family, self.tls, self.port)


class RefusedProtocol(ChatProtocol):
    """A connection main refuses itself, with the fatal ERROR it chose."""

    refusal: tuple[ErrorCode, str | None] = (ErrorCode.SERVER_FULL, None)


class ClusterFactory(ChatFactory):
    """Admission, the order and the roster of every worker (module doc)."""

    def __init__(self, config: Config, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.authority = Authority(reactor.callLater)
        self.names = Roster()
        super().__init__(config, reactor, self.authority, self.names)
        self.dispatcher: Dispatcher[WorkerHandle] = Dispatcher(
            config.workers, config.max_clients_per_worker, self._spawn
        )
        self._indices = itertools.count(1)
        self._connNumbers = itertools.count(1)
        #: main's conn number -> (worker, peer host), until DONE.
        self.clients: dict[int, tuple[WorkerHandle, str]] = {}
        self.users: dict[int, User] = {}
        self.stopping = False
        self.started = False
        #: What workers that are gone had counted (their last STATS).
        self._departed: Counter[str] = Counter()
        self._departedErrors: Counter[str] = Counter()
        #: When workers that died young died (see _spawn).
        self._failedStarts: list[float] = []

    # -- workers -----------------------------------------------------------

    def startFactory(self) -> None:
        """The first listener is up: --min-workers (at least one) are ready."""
        if not self.started:
            self.started = True
            for _ in range(max(1, min(self.config.min_workers, self.config.workers))):
                self.dispatcher.add(self._spawn())

    def _spawn(self) -> WorkerHandle:
        """Start a worker, unless workers keep dying as they start (a broken
        install must not become a fork loop): then :class:`NoWorker`."""
        now = self.reactor.seconds()
        self._failedStarts = [t for t in self._failedStarts if now - t < FAILED_WINDOW]
        if len(self._failedStarts) >= FAILED_STARTS:
            raise NoWorker(
                f"{len(self._failedStarts)} workers died within {START_TIME:g}s "
                f"of starting in the last {FAILED_WINDOW:g}s"
            )
        handle = WorkerHandle(self, next(self._indices))
        handle.startedAt = now
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as e:  # out of descriptors
            self._failedStarts.append(now)
            raise NoWorker(f"cannot make a link: {e}") from None
        try:
            argv = [sys.executable, "-m", "chatd.cluster.worker"]
            argv += ["--index", str(handle.index), "--fd", "3"]
            handle.process = self.reactor.spawnProcess(
                WorkerProcess(handle),
                sys.executable,
                argv,
                env=workerEnvironment(),
                childFDs={0: "w", 1: "r", 2: "r", 3: theirs.fileno()},
            )
            handle.pid = handle.process.pid
        except OSError as e:  # out of processes or memory
            ours.close()
            self._failedStarts.append(now)
            raise NoWorker(f"cannot start a worker: {e}") from None
        finally:
            theirs.close()
        ours.setblocking(False)
        try:
            self.reactor.adoptStreamConnection(
                ours.fileno(),
                socket.AF_UNIX,
                protocol.Factory.forProtocol(lambda: MainLink(handle)),
            )
        finally:
            ours.close()
        # Everything ordered so far goes out first, then the newcomer is
        # told its settings and who is here, then it gets every later batch.
        self.authority.flush()
        handle.send(link.CONFIG, link.configPayload(self.config))
        seed = [encodeEvent(Join(user)) for user in self.room.replica.active]
        if seed:
            handle.sendBatch([], b"".join(link.U32.pack(len(e)) + e for e in seed))
        self.authority.workers.append(handle)
        log.info(
            "worker={k} started: pid {pid} ({n} running)",
            k=handle.index,
            pid=handle.pid,
            n=len(self.authority.workers),
        )
        return handle

    def workerMessage(self, handle: WorkerHandle, kind: int, payload: bytes) -> None:
        if handle.slow and kind in (link.SUBMIT, link.CLAIM):
            return  # being cut off: main already sequenced its users' LEAVEs
        if kind == link.SUBMIT:
            self.authority.submit(decodeEvent(payload), handle)
        elif kind == link.CLAIM:
            (req,) = link.U32.unpack_from(payload)
            self._claim(handle, req, payload[link.U32.size :])
        elif kind == link.RELEASE:
            (uid,) = link.U32.unpack_from(payload)
            self._release(handle, uid)
        elif kind == link.ADOPTED:
            (conn,) = link.U32.unpack_from(payload)
            fd = handle.pendingFds.pop(conn, None)
            if fd is not None:
                os.close(fd)
        elif kind == link.DONE:
            (conn,) = link.U32.unpack_from(payload)
            self._clientDone(conn)
        elif kind == link.STATS:
            stats = json.loads(payload)
            if not isinstance(stats, dict):
                raise link.LinkError("STATS is not an object")
            handle.stats = stats
        else:
            raise link.LinkError(f"unknown link message {kind}")

    def _claim(self, handle: WorkerHandle, req: int, name: bytes) -> None:
        answers: list[Any] = []
        self.names.claim(name).addBoth(answers.append)
        answer = answers[0]
        if isinstance(answer, Failure):
            status, entry = link.EXHAUSTED, b""
        elif answer is None:
            status, entry = link.TAKEN, b""
        else:
            self.users[answer.id] = answer
            handle.uids.add(answer.id)
            status, entry = link.GRANTED, answer.entry
        handle.send(link.NAMED, link.NAMED_HEAD.pack(req, status) + entry)

    def _release(self, handle: WorkerHandle, uid: int) -> None:
        if uid in handle.uids:
            handle.uids.discard(uid)
            user = self.users.pop(uid, None)
            if user is not None:
                self.names.release(user)

    def _clientDone(self, conn: int) -> None:
        entry = self.clients.pop(conn, None)
        if entry is None:
            return
        handle, host = entry
        handle.clients -= 1
        self.admission.release(host)
        if handle.clients == 0 and not handle.dead:
            self._armIdle(handle)

    def _armIdle(self, handle: WorkerHandle) -> None:
        if handle._idleCall is not None and handle._idleCall.active():
            handle._idleCall.cancel()
        handle._idleCall = self.reactor.callLater(
            self.config.worker_idle_exit, self._retire, handle
        )

    def _retire(self, handle: WorkerHandle) -> None:
        """An idle worker exits, unless fewer than --min-workers (or none)
        would be left accepting."""
        handle._idleCall = None
        others = [w for w in self.dispatcher if w is not handle and w.accepting]
        keep = max(1, self.config.min_workers)
        if (
            handle.clients
            or len(others) < keep
            or not handle.accepting
            or self.stopping
        ):
            return
        handle.retiring = True
        log.info(
            "worker={k} idle for {secs}s: exiting",
            k=handle.index,
            secs=self.config.worker_idle_exit,
        )
        handle.send(link.STOP)

    def tooSlow(self, handle: WorkerHandle) -> None:
        """``handle`` does not read its link: cut its clients off and replace it."""
        handle.slow = True
        log.warn(
            "worker={k} pid {pid} cannot keep up ({n} bytes held): "
            "its clients get SLOW_CONSUMER; it is replaced",
            k=handle.index,
            pid=handle.pid,
            n=handle._held,
        )
        if handle.pid is not None and not handle.exited.called:
            # SIGUSR1: cut your clients off; SIGCONT in case it was stopped.
            # (Twisted's signalProcess knows only a few signals by name.)
            for sig in (signal.SIGUSR1, signal.SIGCONT):
                try:
                    os.kill(handle.pid, sig)
                except ProcessLookupError:
                    break
        self.reactor.callLater(self.config.shutdown_grace + KILL_AFTER, handle.kill)
        self._forgetUsers(handle, LeaveReason.SLOW)
        if self.authority.workers.count(handle):
            self.authority.workers.remove(handle)

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
        # A link that closed without the process ending: it is stuck.
        self.reactor.callLater(KILL_AFTER, handle.kill)
        if handle in self.authority.workers:
            self.authority.workers.remove(handle)
        self.dispatcher.remove(handle)
        if handle._idleCall is not None and handle._idleCall.active():
            handle._idleCall.cancel()
        for fd in handle.pendingFds.values():
            os.close(fd)
        handle.pendingFds.clear()
        for conn, (owner, host) in list(self.clients.items()):
            if owner is handle:
                del self.clients[conn]
                self.admission.release(host)
        handle.clients = 0
        self._departed.update(_counters(handle.stats))
        self._departedErrors.update(_errors(handle.stats))
        self._forgetUsers(handle, LeaveReason.ERROR)
        if not expected and self.reactor.seconds() - handle.startedAt < START_TIME:
            self._failedStarts.append(self.reactor.seconds())
        if not self.stopping and not any(w.accepting for w in self.dispatcher):
            try:
                self.dispatcher.add(self._spawn())
            except NoWorker as e:
                log.critical("no worker running, none started: {e}", e=e)

    def _forgetUsers(self, handle: WorkerHandle, reason: LeaveReason) -> None:
        replica = self.room.replica
        for uid in sorted(handle.uids):
            user = self.users.pop(uid, None)
            if user is None:
                continue
            active = replica.find(user.name)
            if active is not None and active.id == uid:
                self.authority.submit(Leave(active, reason))
            self.names.release(user)
        handle.uids.clear()

    # -- admission ---------------------------------------------------------

    def buildProtocol(self, addr: object) -> protocol.Protocol:  # type: ignore[override]
        host = str(getattr(addr, "host", "unix"))
        peer = f"{host}:{addr.port}" if hasattr(addr, "port") else host
        conn = next(self._connNumbers)
        refusal = self._admitRemote(conn, host, peer)
        if refusal is not None:
            proto = RefusedProtocol(self, conn)
            proto.refusal = refusal
            return proto
        return Handoff(self, conn)

    def _admitRemote(
        self, conn: int, host: str, peer: str
    ) -> tuple[ErrorCode, str | None] | None:
        """The single process's admission (chatd.server.admission: state,
        --max-clients, --max-per-ip, --connect-rate, --limit-exempt), then
        a worker with room."""
        self.stats.connectionsTotal += 1
        refusal = self.admission.admit(host, peer, self.refusal, len(self.clients))
        if refusal is not None:
            return refusal
        try:
            worker = self.dispatcher.choose()
        except NoWorker as e:
            self.admission.release(host)
            log.error("conn={conn}: no worker can start: {e}", conn=conn, e=e)
            return ErrorCode.SERVER_FULL, "no worker can start"
        if worker is None:
            self.admission.release(host)
            return ErrorCode.SERVER_FULL, "every worker is full"
        worker.clients += 1
        if worker._idleCall is not None and worker._idleCall.active():
            worker._idleCall.cancel()
        self.clients[conn] = (worker, host)
        return None

    def admit(self, proto: ChatProtocol) -> tuple[ErrorCode, str | None] | None:
        """Only refused connections are served here."""
        return getattr(proto, "refusal", (ErrorCode.SERVER_FULL, None))

    def handOff(
        self, conn: int, fd: int | None, family: int, tls: bool, port: int
    ) -> None:
        entry = self.clients.get(conn)
        if fd is not None:
            if entry is not None and entry[0].handOff(conn, fd, family, tls, port):
                return
            if entry is None:
                os.close(fd)
        self._clientDone(conn)

    # -- what the service asks of its factory ------------------------------

    def notice(self, code: str, text: str) -> int:
        told = super().notice(code, text)
        payload = f"{code}.{text}".encode()
        for worker in self.authority.workers:
            worker.send(link.NOTICE, payload)
            told += worker.clients
        return told

    def applyConfig(self, config: Config) -> None:
        super().applyConfig(config)
        self.dispatcher.maxWorkers = config.workers
        self.dispatcher.perWorker = config.max_clients_per_worker
        message = link.configPayload(config)
        for worker in self.authority.workers:
            worker.send(link.CONFIG, message)

    def closeAll(self, reason: LeaveReason, code: ErrorCode) -> Deferred:
        """Every worker sends ERROR ``code`` to its clients and exits."""
        self.stopping = True
        self.authority.flush()
        waits = [super().closeAll(reason, code)]
        for worker in list(self.dispatcher):
            worker.send(link.STOP)
            waits.append(worker.exited)
        total = len(self.clients)
        return DeferredList(waits).addCallback(lambda _: total)

    def abortAll(self) -> int:
        """Workers abort what is still open; one that still lingers is killed."""
        n = super().abortAll()
        for worker in list(self.dispatcher):
            if not worker.exited.called:
                worker.send(link.ABORT)
                self.reactor.callLater(KILL_AFTER, worker.kill)
                n += worker.clients
        return n

    def snapshot(self) -> dict:
        """Main's counters plus every worker's, those gone included (the
        totals are Prometheus counters: they never go down)."""
        snap = super().snapshot()
        snap["active_users"] = len(self.room.replica)
        snap["connections"] += len(self.clients)
        total = self._departed.copy()
        errors = Counter(snap["errors"]) + self._departedErrors
        workers = [w for w in self.dispatcher if not w.dead]
        for worker in workers:
            total.update(_counters(worker.stats))
            errors.update(_errors(worker.stats))
        for key in _SUMMED:
            snap[key] += total[key]
        snap["errors"] = dict(sorted(errors.items()))
        snap["workers"] = len(workers)
        snap["worker_pids"] = ",".join(f"{w.index}={w.pid}" for w in workers)
        snap["worker_clients"] = ",".join(f"{w.index}={w.clients}" for w in workers)
        return snap

    def workerUsers(self) -> list[dict[str, Any]]:
        """/status ``users``: who holds a name on which worker, known here at
        once; state, peer, since (epoch seconds) and backlog come with that
        worker's last STATS (every second), None until then."""
        users = []
        for worker in self.dispatcher:
            if worker.dead:
                continue
            details = {
                d.get("id"): d
                for d in worker.stats.get("users", ())
                if isinstance(d, dict)
            }
            for uid in sorted(worker.uids):
                user = self.users.get(uid)
                if user is None:
                    continue
                known = details.get(uid, {})
                users.append(
                    {
                        "id": uid,
                        "name": user.display,
                        "worker": worker.index,
                        "state": known.get("state"),
                        "peer": known.get("peer"),
                        "since": known.get("since"),
                        "backlog_bytes": known.get("backlog_bytes"),
                    }
                )
        return sorted(users, key=lambda u: u["id"])

    def workerTable(self) -> list[dict[str, Any]]:
        """/status ``workers`` and /metrics: one entry per running worker,
        its counters as of its last STATS."""
        return [
            {
                "worker": w.index,
                "pid": w.pid,
                "users": len(w.uids),
                "connections": w.clients,
                "counters": {
                    **_counters(w.stats),
                    "errors": dict(sorted(_errors(w.stats).items())),
                },
            }
            for w in self.dispatcher
            if not w.dead
        ]

    def workerMetrics(self) -> Iterator[Metric]:
        """Per-worker gauges and counters for /metrics (label ``worker``)."""
        table = self.workerTable()
        for key, text in (
            ("connections", "Client connections a worker serves now."),
            ("users", "Named users on a worker now."),
            ("pid", "A worker's process id."),
        ):
            gauge = GaugeMetricFamily(f"chatd_worker_{key}", text, labels=["worker"])
            for entry in table:
                gauge.add_metric([str(entry["worker"])], entry[key] or 0)
            yield gauge
        for key in _SUMMED:
            counter = CounterMetricFamily(
                f"chatd_worker_{key}",
                f"The {key} counter of one running worker.",
                labels=["worker"],
            )
            for entry in table:
                counter.add_metric([str(entry["worker"])], entry["counters"][key])
            yield counter


#: Worker counters the main process adds to its own.
_SUMMED = ("frames_in", "bytes_in", "frames_out", "bytes_out", "messages", "deliveries")


def _counters(stats: dict[str, Any]) -> Counter[str]:
    return Counter({k: int(stats.get(k, 0)) for k in _SUMMED})


def _errors(stats: dict[str, Any]) -> Counter[str]:
    return Counter({str(k): int(v) for k, v in stats.get("errors", {}).items()})


def workerEnvironment() -> dict[str, str]:
    """Ours, with this chatd first on the path: the worker must run the same
    code even when twistd changed directory (--rundir, daemonizing) and
    chatd came from a relative PYTHONPATH."""
    import chatd

    root = os.path.dirname(os.path.dirname(os.path.abspath(chatd.__file__)))
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, env.get("PYTHONPATH", "")) if p
    )
    return env


def makeClusterFactory(config: Config, reactor: Any) -> ClusterFactory:
    """The main process's factory, or a StartupError naming what --workers
    cannot do yet."""
    from chatd.server.service import StartupError

    unsupported = unsupportedListeners(config)
    if unsupported:
        raise StartupError(
            "--workers: cannot hand over connections of "
            + ", ".join(unsupported)
            + " yet (tcp:, tcp6:, ssl: and unix: listeners only); use --workers 1"
        )
    return ClusterFactory(config, reactor)
