"""Worker supervision for ``--workers``: start, retire, cut off, replace.

:class:`Supervisor` starts worker processes (--min-workers at once, more as
the clients need them, through the dispatcher), lets an idle one exit after
--worker-idle-exit (never below --min-workers, never the last), cuts off one
that cannot keep up, replaces one that died, and refuses to become a fork
loop when workers die as they start (a broken install).
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import protocol
from twisted.logger import Logger

from chatd.cluster import link
from chatd.cluster.authority import Authority
from chatd.cluster.dispatch import Dispatcher
from chatd.cluster.handle import HandleOwner, MainLink, WorkerHandle, WorkerProcess
from chatd.server.config import Config

log = Logger(namespace="chatd")

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


class Supervisor:
    """The worker processes of the main process (module doc).

    ``seed`` gives the batch blob a new worker starts from (who is here).
    """

    def __init__(
        self,
        reactor: Any,
        owner: HandleOwner,
        authority: Authority,
        seed: Callable[[], bytes],
    ) -> None:
        self.reactor = reactor
        self.owner = owner
        self.authority = authority
        self.seed = seed
        config = owner.config
        self.dispatcher: Dispatcher[WorkerHandle] = Dispatcher(
            config.workers, config.max_clients_per_worker, self.spawn
        )
        self.started = False
        self._indices = itertools.count(1)
        #: When workers that died young died (see spawn).
        self._failedStarts: list[float] = []

    @property
    def config(self) -> Config:
        return self.owner.config

    def running(self) -> list[WorkerHandle]:
        """The workers not known to be gone, in dispatch order."""
        return [w for w in self.dispatcher if not w.dead]

    def applyConfig(self, config: Config) -> None:
        self.dispatcher.maxWorkers = config.workers
        self.dispatcher.perWorker = config.max_clients_per_worker

    # -- starting ------------------------------------------------------------

    def startMinimum(self) -> None:
        """The first listener is up: --min-workers (at least one) are ready."""
        if not self.started:
            self.started = True
            for _ in range(max(1, min(self.config.min_workers, self.config.workers))):
                self.dispatcher.add(self.spawn())

    def spawn(self) -> WorkerHandle:
        """Start a worker, unless workers keep dying as they start (a broken
        install must not become a fork loop): then :class:`NoWorker`."""
        now = self.reactor.seconds()
        self._failedStarts = [t for t in self._failedStarts if now - t < FAILED_WINDOW]
        if len(self._failedStarts) >= FAILED_STARTS:
            raise NoWorker(
                f"{len(self._failedStarts)} workers died within {START_TIME:g}s "
                f"of starting in the last {FAILED_WINDOW:g}s"
            )
        handle = WorkerHandle(self.owner, next(self._indices))
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
        seed = self.seed()
        if seed:
            handle.sendBatch([], seed)
        for verdict in self.owner.logins():
            handle.send(link.LOGIN, verdict)
        self.authority.workers.append(handle)
        log.info(
            "worker={k} started: pid {pid} ({n} running)",
            k=handle.index,
            pid=handle.pid,
            n=len(self.authority.workers),
        )
        return handle

    # -- idle exit -------------------------------------------------------------

    def armIdle(self, handle: WorkerHandle) -> None:
        """``handle`` has no clients left: it exits if it stays so."""
        handle.cancelIdle()
        handle.idleCall = self.reactor.callLater(
            self.config.worker_idle_exit, self.retire, handle
        )

    def retire(self, handle: WorkerHandle) -> None:
        """An idle worker exits, unless fewer than --min-workers (or none)
        would be left accepting."""
        handle.idleCall = None
        others = [w for w in self.dispatcher if w is not handle and w.accepting]
        keep = max(1, self.config.min_workers)
        if (
            handle.clients
            or len(others) < keep
            or not handle.accepting
            or self.owner.stopping
        ):
            return
        handle.retiring = True
        log.info(
            "worker={k} idle for {secs}s: exiting",
            k=handle.index,
            secs=self.config.worker_idle_exit,
        )
        handle.send(link.STOP)

    # -- cut off, gone, replaced -------------------------------------------------

    def cutOff(self, handle: WorkerHandle) -> None:
        """``handle`` cannot keep up: it cuts its clients off (SIGUSR1) and
        is killed if it has not exited after --shutdown-grace."""
        handle.slow = True
        log.warn(
            "worker={k} pid {pid} cannot keep up ({n} bytes held): "
            "its clients get SLOW_CONSUMER; it is replaced",
            k=handle.index,
            pid=handle.pid,
            n=handle.held,
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

    def detach(self, handle: WorkerHandle) -> None:
        """A worker exited or died: no more batches, clients or descriptors."""
        # A link that closed without the process ending: it is stuck.
        self.reactor.callLater(KILL_AFTER, handle.kill)
        self.authority.drop(handle)
        self.dispatcher.remove(handle)
        handle.cancelIdle()
        handle.closePending()

    def replace(self, handle: WorkerHandle, expected: bool) -> None:
        """After ``handle`` died: count a young death, and start another
        worker if none accepts."""
        now = self.reactor.seconds()
        if not expected and now - handle.startedAt < START_TIME:
            self._failedStarts.append(now)
        if not self.owner.stopping and not any(w.accepting for w in self.dispatcher):
            try:
                self.dispatcher.add(self.spawn())
            except NoWorker as e:
                log.critical("no worker running, none started: {e}", e=e)

    # -- stopping ----------------------------------------------------------------

    def stopAll(self) -> list[Any]:
        """STOP every worker; their ``exited`` Deferreds."""
        waits = []
        for worker in list(self.dispatcher):
            worker.send(link.STOP)
            waits.append(worker.exited)
        return waits

    def abortAll(self) -> int:
        """Workers abort what is still open; one that still lingers is killed."""
        n = 0
        for worker in list(self.dispatcher):
            if not worker.exited.called:
                worker.send(link.ABORT)
                self.reactor.callLater(KILL_AFTER, worker.kill)
                n += worker.clients
        return n
