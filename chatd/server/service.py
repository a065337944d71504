"""ChatService: the daemon's lifecycle, its listeners, stats and graceful stop.

The states and their allowed moves are in :mod:`chatd.server.states`; this module
does the work of each move: listen (STARTING -> ACTIVE), refuse newcomers
(MAINTENANCE), re-read the configuration and swap the listeners whose
endpoint changed (REBOOTING, on SIGHUP or from the admin interface), drain
and close (STOPPING -> STOPPED).
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from collections.abc import Callable

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python import usage

from chatd.server.config import Config
from chatd.server.descriptors import AcceptFailures, raiseFileLimit
from chatd.server.protocol import ChatFactory
from chatd.server.states import InvalidTransition, Lifecycle, ServerState
from chatd.wire import ErrorCode, LeaveReason

__all__ = [
    "ChatService",
    "InvalidTransition",
    "ReloadRefused",
    "ServerState",
    "StartupError",
]

log = Logger(namespace="chatd")

STARTING, ACTIVE, MAINTENANCE, REBOOTING, STOPPING, STOPPED, FAILED = ServerState


#: Listen queue for our stream endpoints unless the string sets one.  Twisted's
#: default of 50 overflows when a few hundred clients connect at once, and
#: each overflow costs the client a one-second SYN retry.
LISTEN_BACKLOG = 1024
_BACKLOG_TYPES = {"tcp", "tcp6", "ssl", "unix"}


def withBacklog(description: str) -> str:
    """``description`` with ``backlog=LISTEN_BACKLOG`` if it names none."""
    kind = description.split(":", 1)[0].strip().lower()
    if kind in _BACKLOG_TYPES and "backlog=" not in description:
        return f"{description}:backlog={LISTEN_BACKLOG}"
    return description


class StartupError(Exception):
    """chatd cannot start (a listener did not bind); the message says why."""


class ReloadRefused(Exception):
    """A new configuration was refused; the old one stays.  Says why."""


def _changes(old: Config, new: Config) -> list[str]:
    """Names of the settings that differ (secrets named, never shown)."""
    return [
        f.name
        for f in dataclasses.fields(Config)
        if getattr(old, f.name) != getattr(new, f.name)
    ]


class ChatService(service.Service):
    """Owns the listeners, the shared connection state and the lifecycle.

    ``loader`` builds a fresh :class:`Config` for a reload (the command line
    over the files as they are now); without one a reload keeps the config.
    """

    name = "chatd"

    def __init__(
        self,
        config: Config,
        reactor: object = None,
        loader: Callable[[], Config] | None = None,
        handleSignals: bool = True,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        self.loader = loader if loader is not None else (lambda: self.config)
        self.handleSignals = handleSignals
        self.lifecycle = Lifecycle()
        # --workers (chatd.cluster, imported only then): the factory of the
        # main process hands clients to worker processes and stops them.
        if config.workers > 1:
            from chatd.cluster.main import makeClusterFactory

            self.factory = makeClusterFactory(config, reactor)
        else:
            self.factory = ChatFactory(config, clock=reactor)
        #: endpoint description -> listening port, in --listen order.
        self.listeners: dict[str, object] = {}
        self.adminPort: object = None
        self.started = 0.0
        self._startedAt = 0.0
        self._oldHup: object = None
        self._stats = LoopingCall(self.logStats)
        self._stats.clock = reactor
        self.acceptFailures = AcceptFailures(reactor)

    @property
    def state(self) -> ServerState:
        return self.lifecycle.state

    @property
    def ports(self) -> list:
        return list(self.listeners.values())

    @property
    def uptime(self) -> float:
        return self.reactor.seconds() - self._startedAt if self.started else 0.0

    def _endpoint(self, description: str) -> object:
        return endpoints.serverFromString(self.reactor, withBacklog(description))

    def _enter(self, state: ServerState, why: str = "") -> None:
        self.lifecycle.enter(state, why)

    # -- STARTING -> ACTIVE | FAILED ------------------------------------

    def startService(self) -> None:
        self._enter(STARTING)
        service.Service.startService(self)
        self.started = time.time()
        self._startedAt = self.reactor.seconds()
        raiseFileLimit()
        for description in self.config.listen:
            self._listenNow(description, self.factory, self._listening(description))
        if self.config.admin:
            self._listenNow(self.config.admin, self._adminSite(), self._setAdminPort)
        self._enter(ACTIVE, "listening on " + ", ".join(self.config.listen))
        if self.config.stats_interval > 0:
            self._stats.start(self.config.stats_interval, now=False)
        self._installSignals()
        self.reactor.callWhenRunning(self._announce)

    def _listenNow(
        self, description: str, factory: object, store: Callable[[object], None]
    ) -> None:
        """Listen and ``store`` the port, or FAILED with a StartupError that
        says which endpoint.  An endpoint that binds later fails later."""
        try:
            endpoint = self._endpoint(description)
            d = endpoint.listen(factory)
        except Exception as e:  # a bad string or TLS file: say which
            self._fail(description, e)
        if not d.called:  # an endpoint that binds later fails later
            d.addCallbacks(store, lambda f: self._failLate(description, f.value))
            return
        failure: list = []
        d.addCallbacks(store, failure.append)
        if failure:
            self._fail(description, failure[0].value)

    def _listening(self, description: str) -> Callable[[object], None]:
        def store(port: object) -> None:
            self.acceptFailures.watch(port)
            self.listeners[description] = port

        return store

    def _setAdminPort(self, port: object) -> None:
        self.adminPort = port

    def _adminSite(self) -> object:
        from chatd.server.admin import adminSite  # twisted.web only when asked for

        return adminSite(self)

    def _announce(self) -> None:
        """Logged once the reactor runs (signals handled): safe to connect."""
        addresses = ", ".join(str(p.getHost()) for p in self.ports)
        log.info("ready: accepting connections on {addresses}", addresses=addresses)
        if self.adminPort is not None:
            log.info(
                "admin interface on http://{host}:{port}/{auth}",
                host=self.adminPort.getHost().host,
                port=getattr(self.adminPort.getHost(), "port", ""),
                auth="" if self.config.admin_token else " (no token: local only)",
            )

    def _fail(self, description: str, error: BaseException) -> None:
        message = f"cannot listen on {description}: {error}"
        self._enter(FAILED, message)
        log.critical("startup failed: {message}", message=message)
        for port in [*self.listeners.values(), self.adminPort]:
            if port is not None:
                port.stopListening()
        self.listeners = {}
        self.adminPort = None
        self.running = False
        raise StartupError(message)

    def _failLate(self, description: str, error: BaseException) -> None:
        try:
            self._fail(description, error)
        except StartupError:
            self.reactor.stop()

    # -- SIGHUP -----------------------------------------------------------

    def _installSignals(self) -> None:
        """SIGHUP reloads.  The handler only schedules the work in the
        reactor thread: a signal may arrive in the middle of anything."""
        if not self.handleSignals:
            return

        def onHup(signum: int, frame: object) -> None:
            self.reactor.callFromThread(self._reloadOnSignal)

        self._oldHup = signal.signal(signal.SIGHUP, onHup)

    def _restoreSignals(self) -> None:
        if self._oldHup is not None:
            signal.signal(signal.SIGHUP, self._oldHup)
            self._oldHup = None

    def _reloadOnSignal(self) -> None:
        d = self.reload("SIGHUP")
        d.addErrback(lambda f: None)  # reload() logged the refusal

    # -- ACTIVE <-> MAINTENANCE -------------------------------------------

    def setMaintenance(self, on: bool, text: str = "") -> int:
        """Enter or leave maintenance; returns how many users were told.

        Users already connected stay and get NOTICE MAINTENANCE / RESUMED;
        while it lasts a new connection gets ERROR MAINTENANCE and is closed.
        """
        if on:
            if self.state is not ACTIVE:
                raise InvalidTransition(self.state, MAINTENANCE)
            self._enter(MAINTENANCE, text or "by the operator")
            self.factory.refusal = ErrorCode.MAINTENANCE
            return self.factory.notice(
                "MAINTENANCE", text or "maintenance: new connections are refused"
            )
        if self.state is not MAINTENANCE:
            raise InvalidTransition(self.state, ACTIVE)
        self._enter(ACTIVE, text or "maintenance over")
        self.factory.refusal = None
        return self.factory.notice(
            "RESUMED", text or "maintenance is over: new connections are accepted"
        )

    # -- ACTIVE/MAINTENANCE -> REBOOTING -> back ----------------------------

    def reload(self, why: str = "reload") -> defer.Deferred:
        """Re-read the configuration and apply it without dropping users.

        Fires with the names of the settings that changed, or fails with
        :class:`ReloadRefused` (bad new configuration, a new listener that
        cannot bind: the old configuration stays) or
        :class:`InvalidTransition` (not ACTIVE or in MAINTENANCE).
        """
        return defer.ensureDeferred(self._reload(why))

    async def _reload(self, why: str) -> list[str]:
        try:
            self.lifecycle.check(REBOOTING)
        except InvalidTransition as e:
            log.warn("{why}: reload refused: {e}", why=why, e=e)
            raise
        try:
            new = self.loader()
        except (usage.UsageError, ValueError, OSError) as e:
            log.error(
                "{why}: new configuration refused, the old one stays: {e}", why=why, e=e
            )
            raise ReloadRefused(str(e)) from None
        back = self.state
        old = self.config
        self._enter(REBOOTING, why)
        try:
            await self._swapListeners(old, new)
        except ReloadRefused as e:
            log.error("{why}: reload refused, the old one stays: {e}", why=why, e=e)
            if self.state is REBOOTING:
                self._enter(back, "reload refused")
            raise
        if self.state is not REBOOTING:  # stopped meanwhile: nothing to apply
            raise ReloadRefused(f"the server is {self.state.value}")
        self._apply(new)
        changed = _changes(old, new)
        self._enter(back, "reloaded: " + (", ".join(changed) or "nothing changed"))
        return changed

    async def _swapListeners(self, old: Config, new: Config) -> None:
        """Close the listeners whose endpoint went, open the new ones.

        Old ones close first, so an endpoint that changed only in its options
        can take the same port.  If a new one cannot bind, every change is
        undone (best effort) and the reload is refused.
        """
        gone = [d for d in self.listeners if d not in new.listen]
        added = [d for d in new.listen if d not in self.listeners]
        adminChanged = new.admin != old.admin
        closing = [self.listeners.pop(d) for d in gone]
        if adminChanged and self.adminPort is not None:
            closing.append(self.adminPort)
            self.adminPort = None
        for port in closing:
            await defer.maybeDeferred(port.stopListening)
        opened: dict[str, object] = {}
        try:
            for description in added:
                opened[description] = await self._listenLater(description, self.factory)
            adminPort = None
            if adminChanged and new.admin:
                adminPort = await self._listenLater(new.admin, self._adminSite())
        except Exception as e:
            for port in opened.values():
                await defer.maybeDeferred(port.stopListening)
            await self._reopen(gone, old.admin if adminChanged else None)
            raise ReloadRefused(str(e)) from None
        if self.state is not REBOOTING:  # stopped while we awaited
            for port in [*opened.values(), adminPort]:
                if port is not None:
                    await defer.maybeDeferred(port.stopListening)
            return
        for description, port in opened.items():
            self.acceptFailures.watch(port)
            log.info("listening on {endpoint}", endpoint=description)
        for description in gone:
            log.info("stopped listening on {endpoint}", endpoint=description)
        # Keep --listen order, so /status lists them as configured.
        ports = {**self.listeners, **opened}
        self.listeners = {d: ports[d] for d in new.listen}
        if adminChanged:
            self.adminPort = adminPort

    async def _listenLater(self, description: str, factory: object) -> object:
        try:
            endpoint = self._endpoint(description)
            return await endpoint.listen(factory)
        except Exception as e:
            raise ReloadRefused(f"cannot listen on {description}: {e}") from None

    async def _reopen(self, gone: list[str], admin: str | None) -> None:
        for description in gone:
            try:
                self.listeners[description] = await self._listenLater(
                    description, self.factory
                )
            except ReloadRefused as e:
                log.critical("could not restore the old listener: {e}", e=e)
        if admin:
            try:
                self.adminPort = await self._listenLater(admin, self._adminSite())
            except ReloadRefused as e:
                log.critical("could not restore the admin listener: {e}", e=e)

    def _apply(self, new: Config) -> None:
        """Swap the new (immutable) config in; the factory reads it at use."""
        self.config = new
        self.factory.applyConfig(new)
        if self._stats.running:
            self._stats.stop()
        if new.stats_interval > 0:
            self._stats.start(new.stats_interval, now=False)

    # -- any -> STOPPING -> STOPPED ---------------------------------------

    def stopService(self) -> defer.Deferred:
        """Stop accepting, SHUTDOWN everyone, let output drain, then close."""
        service.Service.stopService(self)
        self._restoreSignals()
        if self.state is FAILED:
            self._enter(STOPPED)
            return defer.succeed(None)
        self._enter(STOPPING)
        if self._stats.running:
            self._stats.stop()
        self.acceptFailures.stop()
        factory = self.factory
        factory.refusal = ErrorCode.SHUTDOWN
        ports = [*self.listeners.values()]
        if self.adminPort is not None:
            ports.append(self.adminPort)
        stopped = [defer.maybeDeferred(p.stopListening) for p in ports]
        self.listeners = {}
        self.adminPort = None
        n = len(factory.connections)
        closed = factory.closeAll(LeaveReason.SHUTDOWN, ErrorCode.SHUTDOWN)
        begun = self.reactor.seconds()
        grace = self.reactor.callLater(self.config.shutdown_grace, self._abortAll)

        def done(_: object) -> None:
            if grace.active():
                grace.cancel()
            stats = factory.snapshot()
            self._enter(STOPPED)
            log.info(
                "stopped: {n} connections closed in {secs:.2f}s; "
                "connections_total={total} messages={messages} "
                "deliveries={deliveries}",
                n=n,
                secs=self.reactor.seconds() - begun,
                total=stats["connections_total"],
                messages=stats["messages"],
                deliveries=stats["deliveries"],
            )

        d = defer.DeferredList([*stopped, closed])
        d.addCallback(done)
        return d

    def _abortAll(self) -> None:
        n = self.factory.abortAll()
        if n:
            log.info("shutdown grace over: aborted {n} connections", n=n)

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
