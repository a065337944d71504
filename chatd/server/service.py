"""ChatService: the daemon's lifecycle, its listeners, stats and graceful stop.

A MultiService of Twisted's building blocks: one
:class:`~chatd.server.listeners.Listener` per ``--listen`` endpoint and one
per HTTP site (``--admin``, ``--web``), and a TimerService for the stats
line.  Listeners bind in ``privilegedStartService``, which twistd runs
before it drops root for ``--uid``/``--gid``, so a port below 1024 works;
chatd's tap calls it even earlier, before twistd forks (see
:mod:`chatd.server.tap`).

The service is given what it serves: the factory (composed with the mode's
backend by :mod:`chatd.server.tap`) and the HTTP sites by role; it imports
neither the cluster, nor admin, nor the web front end.  The states and their
allowed moves are in :mod:`chatd.server.states`; the work of each move is
here (listen, maintenance), in :mod:`chatd.server.reload` (REBOOTING) and
:mod:`chatd.server.shutdown` (STOPPING -> STOPPED).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import failure, reflect

from chatd.server.backend import IBackend
from chatd.server.config import Config
from chatd.server.descriptors import AcceptFailures, raiseFileLimit
from chatd.server.errors import ReloadRefused, StartupError
from chatd.server.factory import ChatFactory
from chatd.server.internals import leanPolling
from chatd.server.listeners import Listener, announce, formatAddress, makeListener
from chatd.server.logsummary import keepRotated
from chatd.server.portfile import PortFile
from chatd.server.reload import reload
from chatd.server.shutdown import drain
from chatd.server.states import InvalidTransition, Lifecycle, ServerState
from chatd.server.statsline import StatsLine
from chatd.wire import ErrorCode

__all__ = [
    "DEFAULT_SITES",
    "ChatService",
    "InvalidTransition",
    "Listener",
    "ReloadRefused",
    "ServerState",
    "SiteMaker",
    "StartupError",
    "formatAddress",
]

log = Logger(namespace="chatd")

STARTING, ACTIVE, MAINTENANCE, REBOOTING, STOPPING, STOPPED, FAILED = ServerState

#: Builds the HTTP site of one role for a service (admin.adminSite...).
SiteMaker = Callable[["ChatService"], Any]

#: role (a Config field naming its endpoint) -> the site's maker, by name:
#: what a service is given when its maker passes none (tests, embedders).
#: Names, resolved only when that site listens, so that the service does
#: not import them (twisted.web, wsproto).
DEFAULT_SITES: Mapping[str, str] = {
    "admin": "chatd.server.admin.adminSite",
    "web": "chatd.web.site.webSite",
    "irc": "chatd.irc.site.ircSite",
}


class ChatService(service.MultiService):
    """Owns the listeners, the shared connection state and the lifecycle.

    ``loader`` builds a fresh :class:`Config` for a reload (the command line
    over the files as they are now); without one a reload keeps the config.
    ``factory`` is what the chat listeners serve (one process if None: the
    other modes are composed by :func:`chatd.server.tap.buildService`);
    ``sites`` maps each HTTP role to its maker (:data:`DEFAULT_SITES`).
    """

    name = "chatd"

    def __init__(
        self,
        config: Config,
        reactor: Any = None,
        loader: Callable[[], Config] | None = None,
        handleSignals: bool = True,
        *,
        factory: ChatFactory | None = None,
        sites: Mapping[str, SiteMaker | str] | None = None,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        self.loader = loader if loader is not None else (lambda: self.config)
        self.handleSignals = handleSignals
        self.lifecycle = Lifecycle()
        if factory is None:
            if config.workers > 1 or config.redis:
                raise ValueError(
                    "--workers and --redis need their factory: "
                    "use chatd.server.tap.buildService"
                )
            factory = ChatFactory(config, clock=reactor)
        self.factory: ChatFactory = factory
        self.sites: Mapping[str, SiteMaker | str] = dict(
            DEFAULT_SITES if sites is None else sites
        )
        self.started = 0.0
        self._startedAt = 0.0
        self._bound = False
        self._oldHup: Any = None
        self.portFile = PortFile()
        self.acceptFailures = AcceptFailures(reactor)

    @property
    def backend(self) -> IBackend:
        """The mode the factory is composed with (its typed report:
        ``backend.status()``)."""
        return self.factory.backend

    # -- what is listening ----------------------------------------------

    def listenersFor(self, role: str | None = None) -> list[Listener]:
        """Every listener of ``role`` (all if None), bound or not."""
        return [
            s
            for s in self.services
            if isinstance(s, Listener) and (role is None or s.role == role)
        ]

    def _chatListeners(self) -> list[Listener]:
        """Bound chat listeners in --listen order (reload may append)."""
        bound = {x.description: x for x in self.listenersFor("chat") if x.port}
        order = [d for d in self.config.listen if d in bound]
        order += [d for d in bound if d not in order]
        return [bound[d] for d in order]

    @property
    def listeners(self) -> dict[str, Any]:
        """Endpoint description -> listening port, in --listen order."""
        return {x.description: x.port for x in self._chatListeners()}

    @property
    def ports(self) -> list:
        return [x.port for x in self._chatListeners()]

    @property
    def addresses(self) -> list[dict[str, str]]:
        """What /status shows: ``{"endpoint": "tcp:7777", "address":
        "tcp 0.0.0.0:7777"}`` per chat listener, no Python reprs."""
        return [
            {"endpoint": x.description, "address": x.address}
            for x in self._chatListeners()
        ]

    @property
    def webPort(self) -> Any:
        web = [x for x in self.listenersFor("web") if x.port]
        return web[0].port if web else None

    @property
    def adminPort(self) -> Any:
        admin = [x for x in self.listenersFor("admin") if x.port]
        return admin[0].port if admin else None

    @property
    def state(self) -> ServerState:
        return self.lifecycle.state

    @property
    def uptime(self) -> float:
        return self.reactor.seconds() - self._startedAt if self.started else 0.0

    def _enter(self, state: ServerState, why: str = "") -> None:
        self.lifecycle.enter(state, why)

    def newListener(self, role: str, description: str, factory: Any) -> Listener:
        """A Listener (not yet bound), or StartupError."""
        return makeListener(self.reactor, role, description, factory)

    def adopt(self, listener: Listener) -> None:
        """A listener bound (by a reload) joins the service."""
        listener.setServiceParent(self)
        if listener.role == "chat":
            self.acceptFailures.watch(listener.port)

    # -- STOPPED -> STARTING -> ACTIVE | FAILED ---------------------------

    def privilegedStartService(self) -> None:
        """Bind every listener (as root, if twistd was started so), or move
        to FAILED and raise StartupError saying which endpoint and why.

        Once only: chatd's tap calls it before twistd forks, twistd again.
        """
        if self._bound:
            return
        self._bound = True
        self._enter(STARTING)
        raiseFileLimit()
        try:
            for description in self.config.listen:
                self.newListener("chat", description, self.factory).setServiceParent(
                    self
                )
            for role, description in self.sitesOf(self.config):
                self.newListener(role, description, self.site(role)).setServiceParent(
                    self
                )
            for listener in self.listenersFor():
                listener.privilegedStartService()
                bound = listener.recorded.result()
                if not bound.called:  # an endpoint that binds later fails later
                    bound.addCallbacks(lambda _: None, self._failLate)
                    continue
                errors: list[failure.Failure] = []
                bound.addErrback(errors.append)
                if errors:
                    errors[0].raiseException()
                if listener.role == "chat":
                    self.acceptFailures.watch(listener.port)
        except StartupError as e:
            self._fail(e)

    def startService(self) -> None:
        self.privilegedStartService()
        # twistd's logging has begun by now: bound its rotated files.
        keepRotated(self.config.log_keep)
        self._setStatsTimer(self.config.stats_interval)
        service.MultiService.startService(self)
        self.started = time.time()
        self._startedAt = self.reactor.seconds()
        self._enter(ACTIVE, "listening on " + ", ".join(self.config.listen))
        self.factory.backend.start()  # --redis: join in the background
        leanPolling(self.reactor)
        self._installSignals()
        self._writePortFile()
        self.reactor.callWhenRunning(self._announce)

    def sitesOf(self, config: Config) -> list[tuple[str, str]]:
        """The HTTP listeners ``config`` asks for: (role, endpoint)."""
        return [(r, d) for r in self.sites if (d := getattr(config, r))]

    def site(self, role: str) -> Any:
        """The HTTP site for ``role``, made when it is to listen."""
        maker = self.sites[role]
        if isinstance(maker, str):
            maker = reflect.namedAny(maker)
        return maker(self)

    def _announce(self) -> None:
        """Logged once the reactor runs (signals handled): safe to connect."""
        announce(
            self._chatListeners(), self.listenersFor(), bool(self.config.admin_token)
        )

    def _fail(self, error: StartupError) -> None:
        """FAILED: close what did bind, and raise ``error`` for the caller
        (the tap turns it into one line on stderr and exit status 1)."""
        self._enter(FAILED, str(error))
        # Not critical: before twistd's logging begins, Twisted copies
        # critical events to stderr, and the tap prints this line itself.
        log.error("startup failed: {message}", message=str(error))
        for listener in self.listenersFor():
            if listener.bound:
                listener.stopService()
        self.running = False
        raise error

    def _failLate(self, reason: failure.Failure) -> None:
        log.error("startup failed: {message}", message=str(reason.value))
        self.reactor.stop()

    # -- port file ----------------------------------------------------------

    def _writePortFile(self) -> None:
        """Every listening address to --port-file: ``chat tcp
        127.0.0.1:40123`` lines in --listen order, then ``admin ...`` and
        any other role."""
        others = [x for x in self.listenersFor() if x.role != "chat" and x.port]
        lines = [f"{x.role} {x.address}\n" for x in self._chatListeners() + others]
        self.portFile.write(self.config.port_file, lines)

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
        :class:`InvalidTransition` (not ACTIVE or in MAINTENANCE); see
        :mod:`chatd.server.reload`.
        """
        return defer.ensureDeferred(reload(self, why))

    def apply(self, new: Config) -> None:
        """Swap the new (immutable) config in; the factory reads it at use."""
        old = self.config
        self.config = new
        self.factory.applyConfig(new)
        if new.stats_interval != old.stats_interval:
            self._setStatsTimer(new.stats_interval)
        self._writePortFile()

    # -- stats ------------------------------------------------------------

    def _setStatsTimer(self, interval: float) -> None:
        """The stats line every ``interval`` s (none for 0), replacing the
        one there was."""
        if "stats" in self.namedServices:
            self.namedServices["stats"].disownServiceParent()
        if interval > 0:
            StatsLine(interval, self.factory.snapshot, self.reactor).setServiceParent(
                self
            )

    # -- any -> STOPPING -> STOPPED ---------------------------------------

    def stopService(self) -> defer.Deferred:
        """Stop accepting, SHUTDOWN everyone, let output drain, then close."""
        self._restoreSignals()
        if self.state is FAILED:
            service.Service.stopService(self)
            self._enter(STOPPED)
            return defer.succeed(None)
        self._enter(STOPPING)
        self.acceptFailures.stop()
        self.portFile.remove()
        self.factory.refusal = ErrorCode.SHUTDOWN
        # Every listener and the stats timer, in reverse order.
        d = drain(self, service.MultiService.stopService(self))
        d.addCallback(lambda _: self.factory.closeHistory())  # after the LEAVEs
        return d
