"""The web front end (``--web``): the chat page and its WebSocket, on twisted.web.

``/`` is the page, ``/app.js`` (with the modules it imports: ``/wire.js``,
``/rooms.js``, ``/commands.js``) and ``/style.css`` its files (package data,
read once), ``/ws`` the WebSocket that carries chatd frames
(:mod:`chatd.web.websocket`).  Every response carries the security headers;
a WebSocket request from a foreign ``Origin`` gets 403 before the upgrade
(Twisted's WebSocketResource checks none), so another site cannot make a
visitor's browser chat in their name.
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.web import pages, resource, server
from twisted.web.resource import IResource

from chatd.web.options import originOf

if TYPE_CHECKING:
    from chatd.server.factory import ChatFactory
    from chatd.server.service import ChatService

log = Logger(namespace="chatd.web")

#: Sent with every response.  No inline script or style anywhere, so the
#: policy can forbid both; ``connect-src 'self'`` admits the page's own ws(s).
SECURITY_HEADERS = {
    b"Content-Security-Policy": (
        b"default-src 'none'; script-src 'self'; style-src 'self'; "
        b"connect-src 'self'; img-src 'self'; base-uri 'none'; "
        b"form-action 'none'; frame-ancestors 'none'"
    ),
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"X-Frame-Options": b"DENY",
    b"Cross-Origin-Opener-Policy": b"same-origin",
}

#: Seconds an HTTP connection (not yet a WebSocket) may sit idle.
HTTP_IDLE_TIMEOUT = 60

STATIC = {
    b"": ("index.html", "text/html; charset=utf-8"),
    b"app.js": ("app.js", "text/javascript; charset=utf-8"),
    b"wire.js": ("wire.js", "text/javascript; charset=utf-8"),
    b"rooms.js": ("rooms.js", "text/javascript; charset=utf-8"),
    b"commands.js": ("commands.js", "text/javascript; charset=utf-8"),
    b"style.css": ("style.css", "text/css; charset=utf-8"),
}


class SecureSite(server.Site):
    """A Site that puts :data:`SECURITY_HEADERS` on every response, errors too."""

    def getResourceFor(self, request: server.Request) -> Any:
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        return server.Site.getResourceFor(self, request)


def ownOrigin(request: server.Request) -> str | None:
    """The origin the page was served from, by the Host header."""
    host = request.getHeader("host")
    if not host:
        return None
    scheme = "https" if request.isSecure() else "http"
    try:
        return originOf(f"{scheme}://{host}")
    except ValueError:
        return None


class OriginGate(resource.Resource):
    """403 for a WebSocket request from a foreign Origin, else ``inner``.

    A request without ``Origin`` is not from a browser (browsers always send
    it on WebSocket requests), so it cannot be a cross-site attack: let it in.
    """

    isLeaf = True

    def __init__(self, inner: resource.Resource, allowed: Any) -> None:
        super().__init__()
        self.inner = inner
        #: Called at each request: the configured origins, or None (own only).
        self.allowed = allowed

    def render(self, request: server.Request) -> bytes | int:
        origin = request.getHeader("origin")
        if origin is not None:
            allowed = self.allowed()
            try:
                given = originOf(origin)
            except ValueError:
                given = None
            ok = given is not None and (
                given in allowed if allowed else given == ownOrigin(request)
            )
            if not ok:
                log.info(
                    "web refused peer={peer}: origin {origin!r} not allowed",
                    peer=getattr(request.getClientAddress(), "host", "?"),
                    origin=origin[:200],
                )
                request.setResponseCode(403)
                request.setHeader(b"content-type", b"text/plain; charset=utf-8")
                return b"403 Forbidden: this origin may not open a chat connection\n"
        return self.inner.render(request)


class StaticFile(resource.Resource):
    """One file of the page, read once from the package (no directory
    listing, no path walking: only the names in :data:`STATIC` exist)."""

    isLeaf = True

    def __init__(self, name: str, contentType: str) -> None:
        super().__init__()
        self.data = files("chatd.web").joinpath("static", name).read_bytes()
        self.contentType = contentType.encode()

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", self.contentType)
        request.setHeader(b"cache-control", b"no-cache")
        return self.data

    def render_HEAD(self, request: server.Request) -> bytes:
        return self.render_GET(request)


class Root(resource.Resource):
    """``/`` and the names put under it; anything else is a plain 404."""

    def getChild(self, path: bytes, request: server.Request) -> IResource:
        return pages.notFound()


def webRoot(factory: ChatFactory, config: Any) -> resource.Resource:
    """The resource tree; ``config()`` is read at each request (reloads)."""
    from twisted.web.websocket import WebSocketResource

    from chatd.web.websocket import WebSocketChatFactory  # needs twisted[websocket]

    root = Root()
    for path, (name, contentType) in STATIC.items():
        root.putChild(path, StaticFile(name, contentType))
    sockets = WebSocketChatFactory(
        factory, lambda: config().web_trust_proxy or frozenset()
    )
    root.putChild(
        b"ws", OriginGate(WebSocketResource(sockets), lambda: config().web_origin)
    )
    return root


def webSite(service: ChatService) -> Any:
    """The ``--web`` listener's factory: the page and the WebSocket, sharing
    ``service.factory`` with the TCP listeners."""
    from chatd.web.websocket import guarded

    # An HTTP connection idle this long is closed (Twisted's default is 12 h);
    # an upgraded one is the chat's, whose own timeouts apply.
    site = SecureSite(
        webRoot(service.factory, lambda: service.config), timeout=HTTP_IDLE_TIMEOUT
    )
    site.displayTracebacks = False
    site.noisy = False
    return guarded(site)
