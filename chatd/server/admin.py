"""The admin interface (``--admin``): status, metrics and operator actions.

A small twisted.web resource on its own listener, off by default:

* ``GET /status`` (JSON) and ``GET /metrics`` (Prometheus text format);
* ``POST /maintenance`` (``on``/``off``), ``POST /reload``, ``POST /kick``.

Everything but ``/metrics`` needs ``Authorization: Bearer <token>`` when
``--admin-token-file`` is set; config.py refuses an admin endpoint other
hosts can reach without one.  Every action and every refusal is logged.

The token is checked when the headers arrive, before any body is read, and
the listener caps bodies, connections and the time a request may take to
arrive (:mod:`chatd.server.adminhttp`, limits below).
"""

from __future__ import annotations

import hmac
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from chatd import __version__
from chatd.core.roomrequests import MAX_TOPIC
from chatd.server.adminhttp import AdminSite, Refusal, jsonAnswer, peer
from chatd.server.errors import ReloadRefused
from chatd.server.metrics import registry
from chatd.server.states import InvalidTransition, ServerState
from chatd.wire import MAX_NOTICE_TEXT, noticeText, valid_text

if TYPE_CHECKING:
    from chatd.server.service import ChatService

log = Logger(namespace="chatd.server.admin")

#: (method, path) -> handler name; a known path with another method is 405.
ROUTES = {
    (b"GET", b"/status"): "status",
    (b"GET", b"/metrics"): "metrics",
    (b"POST", b"/maintenance"): "maintenance",
    (b"POST", b"/reload"): "reload",
    (b"POST", b"/kick"): "kick",
    (b"POST", b"/topic"): "topic",
}
PUBLIC = {b"/metrics"}

#: Largest request body kept (a kick or a notice needs far less); a larger
#: one gets 413 without being stored.
MAX_BODY = 64 * 1024
#: Admin connections open at once; the next gets 503.  Small, so admin
#: clients cannot take the descriptors chat users need.
MAX_CONNECTIONS = 32
#: Seconds a request has to arrive whole (headers and body), counted from the
#: connection or the previous response; then 408 and the connection closes.
REQUEST_TIMEOUT = 10.0

#: How a state reads in a 409: what the server is doing, not its enum name.
_DOING = {
    ServerState.STARTING: "starting",
    ServerState.REBOOTING: "reloading",
    ServerState.STOPPING: "stopping",
    ServerState.STOPPED: "stopped",
    ServerState.FAILED: "failed to start",
}


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _param(request: server.Request, name: bytes) -> str:
    """A form field (``-d name=value``), else the whole body (``-d value``)."""
    values = request.args.get(name)
    if values:
        return values[0].decode("utf-8", "replace").strip()
    if request.content is None:
        return ""
    request.content.seek(0)
    raw = request.content.read(4096).decode("utf-8", "replace").strip()
    return "" if "=" in raw else raw


def topicText(text: str) -> bool:
    """A topic the operator may set: one line of text, at most MAX_TOPIC
    bytes (empty clears it)."""
    data = text.encode("utf-8")
    return len(data) <= MAX_TOPIC and (not data or valid_text(data))


def _path(request: server.Request) -> bytes:
    return request.path.rstrip(b"/") or b"/"


def _maintenanceConflict(on: bool, state: ServerState) -> str:
    """Why ``maintenance on``/``off`` cannot happen now, in operator words."""
    if on and state is ServerState.MAINTENANCE:
        return "already in maintenance"
    if not on and state is ServerState.ACTIVE:
        return "not in maintenance"
    doing = _DOING.get(state, state.value.lower())
    return f"cannot {'start' if on else 'end'} maintenance while {doing}"


class Admin(resource.Resource):
    """Routes by exact path; answers JSON (or the Prometheus text)."""

    isLeaf = True

    def __init__(self, service: ChatService) -> None:
        super().__init__()
        self.service = service
        self.registry = registry(service)

    def render(self, request: server.Request) -> bytes | int:
        path = _path(request)
        name = ROUTES.get((request.method, path))
        if name is None:
            if any(p == path for _, p in ROUTES):
                return self._json(request, 405, {"error": "method not allowed"})
            return self._json(request, 404, {"error": "no such page"})
        if self.screen(request) is not None:  # adminSite screened it already
            return self._json(request, 401, {"error": "missing or wrong token"})
        return getattr(self, "do_" + name)(request)

    def screen(self, request: server.Request) -> Refusal | None:
        """The check made when the headers arrive: a token unless public."""
        if _path(request) in PUBLIC or self._authorized(request):
            return None
        return 401, "missing or wrong token"

    def _authorized(self, request: server.Request) -> bool:
        token = self.service.config.admin_token  # read now: a reload may change it
        if token is None:
            return True  # config.py allowed this only on a local endpoint
        header = request.getHeader(b"authorization") or b""
        scheme, _, given = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token):
            return True
        log.warn(
            "admin: refused {method} {path} from {peer}: {why} token",
            method=request.method.decode(),
            path=request.path.decode("ascii", "replace"),
            peer=peer(request),
            why="wrong" if given else "missing",
        )
        return False

    _json = staticmethod(jsonAnswer)

    def _did(self, request: server.Request, what: str) -> None:
        log.info(
            "admin: {what} (from {peer})",
            what=what,
            peer=peer(request),
        )

    # -- pages ------------------------------------------------------------

    def do_status(self, request: server.Request) -> bytes:
        return self._json(request, 200, status(self.service))

    def do_metrics(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)

    def do_maintenance(self, request: server.Request) -> bytes:
        mode = _param(request, b"state").lower()
        text = request.args.get(b"text", [b""])[0].decode("utf-8", "replace")
        if mode not in ("on", "off"):
            return self._json(request, 400, {"error": "say on or off"})
        if text and not noticeText(text):
            return self._json(
                request,
                400,
                {"error": f"text must be one line of at most {MAX_NOTICE_TEXT} bytes"},
            )
        try:
            told = self.service.setMaintenance(mode == "on", text)
        except InvalidTransition as e:
            error = _maintenanceConflict(mode == "on", e.old)
            return self._json(request, 409, {"error": error})
        self._did(request, f"maintenance {mode}, {told} users told")
        return self._json(
            request, 200, {"state": self.service.state.value, "notified": told}
        )

    def do_kick(self, request: server.Request) -> bytes:
        name = _param(request, b"name")
        if not name:
            return self._json(request, 400, {"error": "say which user: name=..."})
        rooms = request.args.get(b"room")  # a form field only, never the body
        room = rooms[0].decode("utf-8", "replace").strip() if rooms else ""
        if room:  # from one 1.2 room only: the user stays connected
            if not self.service.factory.kickFromRoom(name, room):
                return self._json(
                    request, 404, {"error": f"no user {name!r} in room {room!r}"}
                )
            self._did(request, f"kicked {name} from room {room}")
            return self._json(request, 200, {"kicked": name, "room": room})
        if not self.service.factory.kick(name):
            return self._json(request, 404, {"error": f"no user {name!r}"})
        self._did(request, f"kicked {name}")
        return self._json(request, 200, {"kicked": name})

    def do_topic(self, request: server.Request) -> bytes:
        """``room=dev`` with ``text=...`` and/or ``lock=1`` / ``lock=0``."""
        fields = {k: v[0].decode("utf-8", "replace") for k, v in request.args.items()}
        room, text, lock = fields.get(b"room"), fields.get(b"text"), fields.get(b"lock")
        if not room or (text is None and lock is None):
            return self._json(
                request, 400, {"error": "say room=... and text=... and/or lock=1|0"}
            )
        if lock not in (None, "0", "1"):
            return self._json(request, 400, {"error": "lock is 1 or 0"})
        if text is not None and not topicText(text):
            return self._json(
                request, 400, {"error": "a topic is at most 300 bytes of one line"}
            )
        locked = None if lock is None else lock == "1"
        if not self.service.factory.setTopic(room, text, locked):
            return self._json(request, 404, {"error": f"no room {room!r}"})
        self._did(request, f"topic of {room}: text={text!r} lock={lock}")
        return self._json(request, 200, {"room": room, "text": text, "locked": locked})

    def do_reload(self, request: server.Request) -> int:
        self._did(request, "reload")
        d = self.service.reload("admin /reload")

        def done(changed: list[str]) -> tuple[int, dict]:
            return 200, {"state": self.service.state.value, "changed": changed}

        def refused(failure: Failure) -> tuple[int, dict]:
            failure.trap(ReloadRefused, InvalidTransition)
            if isinstance(failure.value, InvalidTransition):
                return 409, {
                    "error": _reloadConflict(failure.value.old),
                    "state": self.service.state.value,
                }
            return 400, {
                "error": str(failure.value),
                "state": self.service.state.value,
            }

        def answer(result: tuple[int, dict]) -> None:
            if not finished.called:
                request.write(self._json(request, *result))
                request.finish()

        finished = request.notifyFinish()
        finished.addErrback(lambda f: None)  # the client went away: fine
        d.addCallbacks(done, refused).addCallback(answer)
        d.addErrback(lambda f: log.failure("admin: reload failed", f))
        return server.NOT_DONE_YET


def status(service: ChatService) -> dict:
    """What ``GET /status`` shows: state, limits, counters, users, and the
    mode's typed report (workers, cluster node)."""
    config = service.config
    factory = service.factory
    report = factory.status()
    users: list[dict[str, Any]]
    if report.users is None:  # the users are this process's connections
        users = [
            {
                "id": user.id,
                "name": user.display,
                "state": proto.session.state.value,
                "peer": proto.peer,
                "connected_since": _iso(proto.since),
                "backlog_bytes": factory.fanout.backlog(proto.session),
            }
            for user, proto in factory.named()
        ]
    else:  # --workers: users live in workers
        users = [
            {
                "id": u.id,
                "name": u.name,
                "worker": u.worker,
                "state": u.state,
                "peer": u.peer,
                "connected_since": _iso(u.since) if u.since else None,
                "backlog_bytes": u.backlog_bytes,
            }
            for u in report.users
        ]
    workers = report.workers
    return {
        "state": service.state.value,
        "version": __version__,
        "started": _iso(service.started) if service.started else None,
        "uptime_seconds": round(service.uptime, 3),
        "listeners": service.addresses,
        "limits": {
            "max_clients": config.max_clients,
            "max_per_ip": config.max_per_ip,
            "max_backlog": config.max_backlog,
            "idle_timeout": config.idle_timeout,
            "handshake_timeout": config.handshake_timeout,
            "rate_limit": config.rate_limit,
            "rate_burst": config.rate_burst,
            "shutdown_grace": config.shutdown_grace,
            "password": config.password is not None,
            # --workers (chatd.cluster): counters add workers, worker_pids...
            "workers": config.workers,
            "max_clients_per_worker": config.max_clients_per_worker,
            "worker_idle_exit": config.worker_idle_exit,
            "min_workers": config.min_workers,
        },
        "counters": factory.snapshot(),
        # Addresses refused unchecked now by the login back-off (with
        # --workers: main's table, which every worker follows).
        "locked_addresses": factory.admission.auth.lockedNow(),
        # Per front end (tcp, tls, unix, websocket) of this process.
        "front_ends": factory.frontEnds(),
        "users": users,
        # Protocol 1.2's rooms, the default room first (this process's view,
        # the same in every process: built from the one order).
        "rooms": factory.hub.roomReport(),
        # 1.2's history and resume (None: not served in this mode); with
        # --workers, main's: every worker's detached users and main's history.
        "resume": (
            report.resume if report.resume is not None else factory.hub.resumeReport()
        ),
        # --history-db: the file and what was written to it (None: off).
        "history_db": factory.historyReport(),
        # --workers: one entry per worker (pid, users, connections, counters)
        "workers": None if workers is None else [asdict(w) for w in workers],
        # cluster (--redis): node, Redis link, stream lag, users cluster-wide
        "cluster": None if report.node is None else asdict(report.node),
    }


def _reloadConflict(state: ServerState) -> str:
    if state is ServerState.REBOOTING:
        return "already reloading"
    return f"cannot reload while {_DOING.get(state, state.value.lower())}"


def adminSite(service: ChatService) -> AdminSite:
    """The factory the admin endpoint listens with (limits read now, so a
    test or a .tac may change the module constants first)."""
    admin = Admin(service)
    return AdminSite(
        admin,
        admin.screen,
        maxBody=MAX_BODY,
        maxConnections=MAX_CONNECTIONS,
        timeout=REQUEST_TIMEOUT,
        reactor=service.reactor,
    )


__all__ = ["Admin", "adminSite", "status"]
