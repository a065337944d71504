"""The admin interface (``--admin``): status, metrics and operator actions.

A small twisted.web resource on its own listener, off by default:

* ``GET /status`` (JSON) and ``GET /metrics`` (Prometheus text format);
* ``POST /maintenance`` (``on``/``off``), ``POST /reload``, ``POST /kick``.

Everything but ``/metrics`` needs ``Authorization: Bearer <token>`` when
``--admin-token-file`` is set; config.py refuses an admin endpoint other
hosts can reach without one.  Every action and every refusal is logged.
"""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.logger import Logger
from twisted.web import resource, server

from chatd import __version__
from chatd.server.errors import ReloadRefused
from chatd.server.metrics import registry
from chatd.server.states import InvalidTransition
from chatd.wire import MAX_NOTICE_TEXT, noticeText

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
}
PUBLIC = {b"/metrics"}


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _param(request: server.Request, name: bytes) -> str:
    """A form field (``-d name=value``), else the whole body (``-d value``)."""
    values = request.args.get(name)
    if values:
        return values[0].decode("utf-8", "replace").strip()
    request.content.seek(0)
    raw = request.content.read(4096).decode("utf-8", "replace").strip()
    return "" if "=" in raw else raw


def _peer(request: server.Request) -> str:
    """Who asked: an address, or "unix" on a unix socket."""
    return str(getattr(request.getClientAddress(), "host", "unix"))


class Admin(resource.Resource):
    """Routes by exact path; answers JSON (or the Prometheus text)."""

    isLeaf = True

    def __init__(self, service: ChatService) -> None:
        super().__init__()
        self.service = service
        self.registry = registry(service)

    def render(self, request: server.Request) -> bytes | int:
        path = request.path.rstrip(b"/") or b"/"
        name = ROUTES.get((request.method, path))
        if name is None:
            if any(p == path for _, p in ROUTES):
                return self._json(request, 405, {"error": "method not allowed"})
            return self._json(request, 404, {"error": "no such page"})
        if path not in PUBLIC and not self._authorized(request):
            return self._json(request, 401, {"error": "missing or wrong token"})
        return getattr(self, "do_" + name)(request)

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
            peer=_peer(request),
            why="wrong" if given else "missing",
        )
        return False

    def _json(self, request: server.Request, code: int, body: dict) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        if code == 401:
            request.setHeader(b"www-authenticate", b'Bearer realm="chatd"')
        return json.dumps(body, indent=1).encode() + b"\n"

    def _did(self, request: server.Request, what: str) -> None:
        log.info(
            "admin: {what} (from {peer})",
            what=what,
            peer=_peer(request),
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
            return self._json(request, 409, {"error": str(e)})
        self._did(request, f"maintenance {mode}, {told} users told")
        return self._json(
            request, 200, {"state": self.service.state.value, "notified": told}
        )

    def do_kick(self, request: server.Request) -> bytes:
        name = _param(request, b"name")
        if not name:
            return self._json(request, 400, {"error": "say which user: name=..."})
        if not self.service.factory.kick(name):
            return self._json(request, 404, {"error": f"no user {name!r}"})
        self._did(request, f"kicked {name}")
        return self._json(request, 200, {"kicked": name})

    def do_reload(self, request: server.Request) -> int:
        self._did(request, "reload")
        d = self.service.reload("admin /reload")

        def done(changed: list[str]) -> tuple[int, dict]:
            return 200, {"state": self.service.state.value, "changed": changed}

        def refused(failure: object) -> tuple[int, dict]:
            error = failure.trap(ReloadRefused, InvalidTransition)
            code = 409 if error is InvalidTransition else 400
            return code, {
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
    """What ``GET /status`` shows: state, limits, counters, users."""
    config = service.config
    factory = service.factory
    users = []
    for user, proto in list(factory.byUser.items()):
        users.append(
            {
                "id": user.id,
                "name": user.display,
                "state": proto.state.value,
                "peer": proto.peer,
                "connected_since": _iso(proto.since),
                "backlog_bytes": factory.fanout.backlog(proto),
            }
        )
    return {
        "state": service.state.value,
        "version": __version__,
        "started": _iso(service.started) if service.started else None,
        "uptime_seconds": round(service.uptime, 3),
        "listeners": [
            {"endpoint": description, "address": str(port.getHost())}
            for description, port in service.listeners.items()
        ],
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
        },
        "counters": factory.snapshot(),
        "users": users,
    }


def adminSite(service: ChatService) -> server.Site:
    site = server.Site(Admin(service))
    site.noisy = False
    return site


__all__ = ["Admin", "adminSite", "status"]
