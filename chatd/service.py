"""ChatService: the daemon's lifecycle, its listeners, stats and graceful stop.

States (the original design's): STARTING -> ACTIVE -> STOPPING -> STOPPED,
and STARTING -> FAILED when a listener cannot bind.  Transitions are checked
against a table: an impossible one is a bug and raises.
"""

from __future__ import annotations

import enum
import sys
import time

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chatd.config import Config
from chatd.descriptors import AcceptFailures, raiseFileLimit
from chatd.protocol import ChatFactory
from chatd.wire import ErrorCode, LeaveReason

log = Logger(namespace="chatd")


class ServerState(enum.Enum):
    STARTING = "STARTING"
    ACTIVE = "ACTIVE"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"


TRANSITIONS = {
    ServerState.STARTING: {ServerState.ACTIVE, ServerState.FAILED, ServerState.STOPPING},
    ServerState.ACTIVE: {ServerState.STOPPING},
    ServerState.STOPPING: {ServerState.STOPPED},
    ServerState.STOPPED: {ServerState.STARTING},
    ServerState.FAILED: {ServerState.STOPPED},
}  # fmt: skip


class InvalidTransition(Exception):
    pass


class StartupError(Exception):
    """chatd cannot start (a listener did not bind); the message says why."""


class ChatService(service.Service):
    """Owns the listeners and the shared connection state."""

    name = "chatd"

    def __init__(self, config: Config, reactor: object = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        self.state = ServerState.STOPPED
        self.factory = ChatFactory(config, clock=reactor)
        self.ports: list = []
        self.started = 0.0
        self._stats = LoopingCall(self.logStats)
        self._stats.clock = reactor
        self.acceptFailures = AcceptFailures(reactor)

    def _enter(self, state: ServerState, why: str = "") -> None:
        if state not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"{self.state.value} -> {state.value}")
        log.info(
            "state {old} -> {new}{why}",
            old=self.state.value,
            new=state.value,
            why=f" ({why})" if why else "",
        )
        self.state = state

    def startService(self) -> None:
        self._enter(ServerState.STARTING)
        service.Service.startService(self)
        self.started = time.time()
        raiseFileLimit()
        for description in self.config.listen:
            try:
                endpoint = endpoints.serverFromString(self.reactor, description)
                d = endpoint.listen(self.factory)
            except Exception as e:  # a bad string or TLS file: say which
                self._fail(description, e)
            failure = []
            d.addCallbacks(self._listening, failure.append)
            if failure:
                self._fail(description, failure[0].value)
            if not d.called:  # an endpoint that binds asynchronously
                d.addErrback(lambda f, s=description: self._failLate(s, f.value))
        self._enter(ServerState.ACTIVE, "listening on " + ", ".join(self.config.listen))
        if self.config.stats_interval > 0:
            self._stats.start(self.config.stats_interval, now=False)
        self.reactor.callWhenRunning(self._announce)

    def _announce(self) -> None:
        """Logged once the reactor runs (signals handled): safe to connect."""
        addresses = ", ".join(str(p.getHost()) for p in self.ports)
        log.info("ready: accepting connections on {addresses}", addresses=addresses)

    def _listening(self, port: object) -> None:
        self.acceptFailures.watch(port)
        self.ports.append(port)

    def _fail(self, description: str, error: BaseException) -> None:
        message = f"cannot listen on {description}: {error}"
        self._enter(ServerState.FAILED, message)
        log.critical("startup failed: {message}", message=message)
        for port in self.ports:
            port.stopListening()
        self.ports = []
        self.running = False
        raise StartupError(message)

    def _failLate(self, description: str, error: BaseException) -> None:
        try:
            self._fail(description, error)
        except StartupError:
            self.reactor.stop()

    def stopService(self) -> defer.Deferred:
        """Stop accepting, SHUTDOWN everyone, let output drain, then close."""
        service.Service.stopService(self)
        if self.state is ServerState.FAILED:
            self._enter(ServerState.STOPPED)
            return defer.succeed(None)
        self._enter(ServerState.STOPPING)
        if self._stats.running:
            self._stats.stop()
        self.acceptFailures.stop()
        factory = self.factory
        factory.refusal = ErrorCode.SHUTDOWN
        stopped = [defer.maybeDeferred(p.stopListening) for p in self.ports]
        self.ports = []
        conns = list(factory.connections)
        closed = []
        for proto in conns:
            proto.onClosed = defer.Deferred()
            closed.append(proto.onClosed)
        factory.fanout.removeAll()  # local users all go: no LEAVE among them
        for proto in conns:
            proto.close(LeaveReason.SHUTDOWN, ErrorCode.SHUTDOWN)
        begun = self.reactor.seconds()
        grace = self.reactor.callLater(self.config.shutdown_grace, self._abortAll)

        def done(_: object) -> None:
            if grace.active():
                grace.cancel()
            stats = factory.snapshot()
            self._enter(ServerState.STOPPED)
            log.info(
                "stopped: {n} connections closed in {secs:.2f}s; "
                "connections_total={total} messages={messages} "
                "deliveries={deliveries}",
                n=len(conns),
                secs=self.reactor.seconds() - begun,
                total=stats["connections_total"],
                messages=stats["messages"],
                deliveries=stats["deliveries"],
            )

        d = defer.DeferredList(stopped + closed)
        d.addCallback(done)
        return d

    def _abortAll(self) -> None:
        left = list(self.factory.connections)
        if left:
            log.info("shutdown grace over: aborting {n} connections", n=len(left))
        for proto in left:
            proto.transport.abortConnection()

    def logStats(self) -> None:
        snap = self.factory.snapshot()
        errors = " ".join(f"{k}={v}" for k, v in snap.pop("errors").items())
        log.info(
            "stats {counters} errors: {errors}",
            counters=" ".join(f"{k}={v}" for k, v in snap.items()),
            errors=errors or "none",
        )


def quietStartupErrors() -> None:
    """Make a StartupError end twistd with its one-line message, no traceback.

    twistd lets an exception from startService propagate; in the foreground
    Python would print a traceback.  This hook prints just the reason.
    """
    previous = sys.excepthook

    def hook(kind, value, tb):  # type: ignore[no-untyped-def]
        if issubclass(kind, StartupError):
            sys.stderr.write(f"chatd: {value}\n")
        else:
            previous(kind, value, tb)

    sys.excepthook = hook
