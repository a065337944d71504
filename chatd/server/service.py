"""ChatService: the daemon's lifecycle, its listeners, stats and graceful stop.

A MultiService of Twisted's building blocks: one :class:`Listener` (a
StreamServerEndpointService) per ``--listen`` endpoint and one for
``--admin``, and a TimerService for the stats line.  Listeners bind in
``privilegedStartService``, which twistd runs before it drops root for
``--uid``/``--gid``, so a port below 1024 works; chatd's tap calls it even
earlier, before twistd forks (see :mod:`chatd.server.tap`).

The states and their allowed moves are in :mod:`chatd.server.states`; this
module does the work of each move: listen (STARTING -> ACTIVE), refuse
newcomers (MAINTENANCE), re-read the configuration and swap the listeners
whose endpoint changed (REBOOTING, on SIGHUP or from the admin interface),
drain and close (STOPPING -> STOPPED).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from twisted.application import internet, service
from twisted.internet import address, defer, endpoints
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import failure, usage
from zope.interface import implementer

from chatd.server.config import Config
from chatd.server.descriptors import AcceptFailures, raiseFileLimit
from chatd.server.errors import ReloadRefused, StartupError, describeError
from chatd.server.factory import ChatFactory
from chatd.server.logsummary import keepRotated
from chatd.server.states import InvalidTransition, Lifecycle, ServerState
from chatd.wire import ErrorCode, LeaveReason

__all__ = [
    "ChatService",
    "InvalidTransition",
    "Listener",
    "ReloadRefused",
    "ServerState",
    "StartupError",
    "formatAddress",
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


def formatAddress(where: object, description: str = "") -> str:
    """``tcp 0.0.0.0:7777``, ``tcp6 [::1]:7777``, ``ssl ...``, ``unix /path``:
    what operators read in the log, /status and the port file."""
    kind = description.split(":", 1)[0].strip().lower()
    if isinstance(where, address.IPv4Address):
        return f"{'ssl' if kind == 'ssl' else 'tcp'} {where.host}:{where.port}"
    if isinstance(where, address.IPv6Address):
        return f"{'ssl' if kind == 'ssl' else 'tcp6'} [{where.host}]:{where.port}"
    if isinstance(where, address.UNIXAddress):
        name = where.name
        text = os.fsdecode(name) if isinstance(name, bytes) else name
        return f"unix {text or '(unnamed)'}"
    return str(where)


def _changes(old: Config, new: Config) -> list[str]:
    """Names of the settings that differ (secrets named, never shown)."""
    return [
        f.name
        for f in dataclasses.fields(Config)
        if getattr(old, f.name) != getattr(new, f.name)
    ]


@implementer(IStreamServerEndpoint)
class _Recorded:
    """An endpoint that remembers the port it gave, or why it could not.

    StreamServerEndpointService keeps both to itself; the service needs the
    port (addresses, accept-failure logging) and a bind error as a
    StartupError rather than a logged traceback.
    """

    def __init__(self, endpoint: Any, description: str) -> None:
        self.endpoint = endpoint
        self.description = description
        self.port: Any = None
        self.error: StartupError | None = None
        self._waiting: list[defer.Deferred] = []

    def listen(self, factory: Any) -> defer.Deferred:
        d = self.endpoint.listen(factory)
        d.addCallbacks(self._listening, self._failed)
        return d

    def _listening(self, port: Any) -> Any:
        self.port = port
        self._tell()
        return port

    def _failed(self, reason: failure.Failure) -> None:
        why = describeError(reason.value) if reason.value else "unknown error"
        self.error = StartupError(f"cannot listen on {self.description}: {why}")
        self._tell()
        return None  # the service's stopService then has no port to stop

    def _tell(self) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            self._answer(d)

    def _answer(self, d: defer.Deferred) -> None:
        if self.error is not None:
            d.errback(self.error)
        else:
            d.callback(self.port)

    def result(self) -> defer.Deferred:
        """Fires with the listening port, or fails with StartupError."""
        d: defer.Deferred = defer.Deferred()
        if self.port is not None or self.error is not None:
            self._answer(d)
        else:
            self._waiting.append(d)
        return d


class Listener(internet.StreamServerEndpointService):
    """One endpoint of the service: ``role`` is ``chat`` or ``admin``.

    Binds once, in privilegedStartService; a second call (twistd's, after
    the tap's early one) does nothing.
    """

    def __init__(self, role: str, description: str, endpoint: Any, factory: Any):
        self.recorded = _Recorded(endpoint, description)
        super().__init__(self.recorded, factory)
        self.role = role
        self.description = description
        self.bound = False

    @property
    def port(self) -> Any:
        return self.recorded.port

    @property
    def address(self) -> str:
        return formatAddress(self.port.getHost(), self.description)

    def privilegedStartService(self) -> None:
        if self.bound:
            return
        self.bound = True
        super().privilegedStartService()

    def bind(self) -> defer.Deferred:
        """Listen now; fires with the port or fails with StartupError."""
        self.privilegedStartService()
        return self.recorded.result()


class ChatService(service.MultiService):
    """Owns the listeners, the shared connection state and the lifecycle.

    ``loader`` builds a fresh :class:`Config` for a reload (the command line
    over the files as they are now); without one a reload keeps the config.
    """

    name = "chatd"

    def __init__(
        self,
        config: Config,
        reactor: Any = None,
        loader: Callable[[], Config] | None = None,
        handleSignals: bool = True,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        self.loader = loader if loader is not None else (lambda: self.config)
        self.handleSignals = handleSignals
        self.lifecycle = Lifecycle()
        # Beyond one process (chatd.cluster, imported only when asked for):
        # --workers makes the main process's factory, which hands clients to
        # worker processes; --redis plugs a cluster node in as the room's
        # sequencer and roster.
        self.cluster: Any = None
        #: A ChatFactory, or with --workers the main process's ClusterFactory
        #: (the same operations: admit, notice, kick, closeAll, snapshot...).
        self.factory: Any
        if config.workers > 1:
            from chatd.cluster.main import makeClusterFactory

            self.factory = makeClusterFactory(config, reactor)
        elif config.redis:
            from chatd.cluster.node import nodeFor

            self.cluster = nodeFor(config, reactor)
            self.factory = ChatFactory(config, clock=reactor, **self.cluster.seams())
        else:
            self.factory = ChatFactory(config, clock=reactor)
        self.started = 0.0
        self._startedAt = 0.0
        self._bound = False
        self._oldHup: Any = None
        self._lastStats: dict | None = None
        self._statsMoving = False
        self._portFile: str | None = None
        self.acceptFailures = AcceptFailures(reactor)

    # -- what is listening ----------------------------------------------

    def _listeners(self, role: str | None = None) -> list[Listener]:
        return [
            s
            for s in self.services
            if isinstance(s, Listener) and (role is None or s.role == role)
        ]

    def _chatListeners(self) -> list[Listener]:
        """Bound chat listeners in --listen order (reload may append)."""
        bound = {x.description: x for x in self._listeners("chat") if x.port}
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
        web = [x for x in self._listeners("web") if x.port]
        return web[0].port if web else None

    @property
    def adminPort(self) -> Any:
        admin = [x for x in self._listeners("admin") if x.port]
        return admin[0].port if admin else None

    @property
    def state(self) -> ServerState:
        return self.lifecycle.state

    @property
    def uptime(self) -> float:
        return self.reactor.seconds() - self._startedAt if self.started else 0.0

    def _enter(self, state: ServerState, why: str = "") -> None:
        self.lifecycle.enter(state, why)

    def _listener(self, role: str, description: str, factory: Any) -> Listener:
        """A Listener, or StartupError if the string cannot make an endpoint
        now (a TLS key file gone since the options were checked)."""
        try:
            endpoint = endpoints.serverFromString(
                self.reactor, withBacklog(description)
            )
        except Exception as e:
            raise StartupError(
                f"cannot listen on {description}: {describeError(e)}"
            ) from None
        return Listener(role, description, endpoint, factory)

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
                self._listener("chat", description, self.factory).setServiceParent(self)
            for role, description in self._sites(self.config):
                self._listener(role, description, self._site(role)).setServiceParent(
                    self
                )
            for listener in self._listeners():
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
        self._lastStats = self.factory.snapshot()
        self._statsMoving = False
        self._setStatsTimer(self.config.stats_interval)
        service.MultiService.startService(self)
        self.started = time.time()
        self._startedAt = self.reactor.seconds()
        self._enter(ACTIVE, "listening on " + ", ".join(self.config.listen))
        if self.cluster is not None:  # cluster: join in the background
            self.cluster.start(self.factory)
        self._installSignals()
        self._writePortFile()
        self.reactor.callWhenRunning(self._announce)

    @staticmethod
    def _sites(config: Config) -> list[tuple[str, str]]:
        """The HTTP listeners ``config`` asks for: (role, endpoint)."""
        return [(r, d) for r, d in (("admin", config.admin), ("web", config.web)) if d]

    def _site(self, role: str) -> Any:
        """The HTTP site for ``role``; twisted.web (and for the web front end
        wsproto) are imported only when asked for."""
        if role == "admin":
            from chatd.server.admin import adminSite

            return adminSite(self)
        from chatd.web.site import webSite

        return webSite(self)

    def _announce(self) -> None:
        """Logged once the reactor runs (signals handled): safe to connect."""
        addresses = ", ".join(x.address for x in self._chatListeners())
        log.info("ready: accepting connections on {addresses}", addresses=addresses)
        admin = [x for x in self._listeners("admin") if x.port]
        if admin:
            where = admin[0].port.getHost()
            if isinstance(where, (address.IPv4Address, address.IPv6Address)):
                host = where.host if ":" not in where.host else f"[{where.host}]"
                url = f"http://{host}:{where.port}/"
            else:
                url = formatAddress(where)
            log.info(
                "admin interface on {url}{auth}",
                url=url,
                auth="" if self.config.admin_token else " (no token: local only)",
            )
        for web in self._listeners("web"):
            if web.port:
                log.info("web front end on {address}", address=web.address)

    def _fail(self, error: StartupError) -> None:
        """FAILED: close what did bind, and raise ``error`` for the caller
        (the tap turns it into one line on stderr and exit status 1)."""
        self._enter(FAILED, str(error))
        # Not critical: before twistd's logging begins, Twisted copies
        # critical events to stderr, and the tap prints this line itself.
        log.error("startup failed: {message}", message=str(error))
        for listener in self._listeners():
            if listener.bound:
                listener.stopService()
        self.running = False
        raise error

    def _failLate(self, reason: failure.Failure) -> None:
        log.error("startup failed: {message}", message=str(reason.value))
        self.reactor.stop()

    # -- port file ----------------------------------------------------------

    def _writePortFile(self) -> None:
        """Write every listening address to --port-file (``chat tcp
        127.0.0.1:40123`` lines in --listen order, then ``admin ...`` and any
        other role), so that whoever started chatd on port 0 learns the port."""
        path = self.config.port_file
        if self._portFile and self._portFile != path:
            self._removePortFile()
        if not path:
            return
        others = [x for x in self._listeners() if x.role != "chat" and x.port]
        lines = [f"{x.role} {x.address}\n" for x in self._chatListeners() + others]
        try:
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.writelines(lines)
            os.replace(path + ".tmp", path)  # readers never see half a file
        except OSError as e:
            log.error(
                "--port-file: cannot write {path}: {why}",
                path=path,
                why=describeError(e),
            )
            return
        self._portFile = path

    def _removePortFile(self) -> None:
        if self._portFile:
            try:
                os.unlink(self._portFile)
            except OSError:
                pass  # gone already, or we lost the right to remove it
            self._portFile = None

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
        current = {x.description: x for x in self._listeners("chat")}
        gone = [x for d, x in current.items() if d not in new.listen]
        added = [d for d in new.listen if d not in current]
        closing = list(gone)
        sites = [
            (role, description)
            for role, description in self._sites(new)
            if description != getattr(old, role)
        ]
        for role in ("admin", "web"):
            if getattr(new, role) != getattr(old, role):
                closing += self._listeners(role)
        for listener in closing:
            await defer.maybeDeferred(listener.disownServiceParent)
        opened: list[Listener] = []
        try:
            for description in added:
                opened.append(await self._bindNew("chat", description, self.factory))
            for role, description in sites:
                opened.append(await self._bindNew(role, description, self._site(role)))
        except StartupError as e:
            for listener in opened:
                await listener.stopService()
            await self._restore(closing)
            raise ReloadRefused(str(e)) from None
        if self.state is not REBOOTING:  # stopped while we awaited
            for listener in opened:
                await listener.stopService()
            return
        for listener in opened:
            listener.setServiceParent(self)  # bound already: only marks it running
            if listener.role == "chat":
                self.acceptFailures.watch(listener.port)
            log.info(
                "listening on {endpoint} ({address})",
                endpoint=listener.description,
                address=listener.address,
            )
        for listener in gone:
            log.info("stopped listening on {endpoint}", endpoint=listener.description)

    async def _bindNew(self, role: str, description: str, factory: Any) -> Listener:
        listener = self._listener(role, description, factory)
        await listener.bind()
        return listener

    async def _restore(self, closed: list[Listener]) -> None:
        """Reopen listeners a refused reload had closed."""
        for old in closed:
            try:
                listener = await self._bindNew(old.role, old.description, old.factory)
            except StartupError as e:
                log.critical("could not restore the old listener: {e}", e=e)
                continue
            listener.setServiceParent(self)
            if listener.role == "chat":
                self.acceptFailures.watch(listener.port)

    def _apply(self, new: Config) -> None:
        """Swap the new (immutable) config in; the factory reads it at use."""
        old = self.config
        self.config = new
        self.factory.applyConfig(new)
        if new.stats_interval != old.stats_interval:
            self._setStatsTimer(new.stats_interval)
        self._writePortFile()

    # -- stats ------------------------------------------------------------

    def _setStatsTimer(self, interval: float) -> None:
        """A TimerService calling :meth:`logStats` every ``interval`` s
        (none for 0), replacing the one there was."""
        if "stats" in self.namedServices:
            self.namedServices["stats"].disownServiceParent()
        if interval > 0:
            timer = internet.TimerService(interval, self.logStats)
            timer.clock = self.reactor
            timer.setName("stats")
            timer.setServiceParent(self)

    def logStats(self) -> None:
        """One stats line per interval while anything moves; nothing while
        the counters stand still, after one line saying activity stopped."""
        snap = self.factory.snapshot()
        if snap == self._lastStats:
            if self._statsMoving:
                self._statsMoving = False
                log.info("stats idle: no change since the last stats line")
            return
        self._lastStats = snap
        self._statsMoving = True
        snap = dict(snap)
        errors = " ".join(f"{k}={v}" for k, v in snap.pop("errors").items())
        log.info(
            "stats {counters} errors: {errors}",
            counters=" ".join(f"{k}={v}" for k, v in snap.items()),
            errors=errors or "none",
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
        self._removePortFile()
        factory = self.factory
        factory.refusal = ErrorCode.SHUTDOWN
        # Every listener and the stats timer, in reverse order.
        stopped = service.MultiService.stopService(self)
        n = factory.snapshot()["connections"]  # --workers: workers' clients too
        closed = factory.closeAll(LeaveReason.SHUTDOWN, ErrorCode.SHUTDOWN)
        waits = [stopped, closed]
        if self.cluster is not None:  # cluster: sequence their LEAVEs, resign
            waits.append(self.cluster.stop())
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

        d = defer.DeferredList(waits)
        d.addCallback(done)
        return d

    def _abortAll(self) -> None:
        n = self.factory.abortAll()
        if n:
            log.info("shutdown grace over: aborted {n} connections", n=n)
