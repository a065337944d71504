"""The admin listener's HTTP layer: a twisted.web Site that is safe to expose.

Stock twisted.web reads a whole request before the application sees it: a
body of any size is spooled to a temporary file before the resource can say
401, the connection timeout is an *idle* timeout (a client sending a byte
every few seconds never meets it), there is no limit on connections, and the
access log carries the full URI, query string and all.  Issue 14 hit each of
these on the admin port.  This module closes them:

* every request is judged when its headers arrive (``screen``: the token,
  then the announced size), and a refused one is answered at once and the
  connection closed, so its body is never read;
* a body is kept in memory and capped (``maxBody``): a larger announced
  ``Content-Length`` gets 413 at the headers, a chunked body is cut off with
  413 as soon as it passes the cap;
* a request must arrive whole within ``timeout`` seconds of the connection
  (or of the previous response): a deadline, not an idle timer; a partial
  request then gets 408 and the connection is closed;
* at most ``maxConnections`` connections at once; the next one gets 503 and
  is closed, so admin clients cannot use up the descriptors chat users need
  (a 503 holds its socket until the next reactor turn, so during a flood
  only ``BUSY_ANSWERS`` get one at a time, the rest are closed unanswered);
* the access log line has the path without the query string and no Referer.

Everything here uses twisted.web's public hooks (``Site.protocol``,
``requestFactory``, ``getContentFile``, ``logFormatter``) and the channel's
documented methods; no private attribute is touched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from io import BytesIO
from typing import Any

from twisted.internet import protocol
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols import basic
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.iweb import IAccessLogFormatter
from twisted.web.resource import IResource
from zope.interface import provider

log = Logger(namespace="chatd.server.admin")

#: (status code, message) of a refused request; None lets it through.
Refusal = tuple[int, str]
#: Connections over the limit that may be getting their 503 at once.
BUSY_ANSWERS = 4
Screen = Callable[[server.Request], Refusal | None]


def peer(request: server.Request) -> str:
    """Who asked: an address, or "unix" on a unix socket."""
    return str(getattr(request.getClientAddress(), "host", "unix"))


def jsonAnswer(request: server.Request, code: int, body: dict) -> bytes:
    """Set the status and headers of a JSON answer; returns its bytes."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    if code == 401:
        request.setHeader(b"www-authenticate", b'Bearer realm="chatd"')
    return json.dumps(body, indent=1).encode() + b"\n"


def _text(raw: bytes) -> str:
    """Log-safe text of request bytes: no quote or control character unescaped."""
    return raw.decode("ascii", "backslashreplace").replace('"', '\\"')


@provider(IAccessLogFormatter)
def accessLogFormatter(timestamp: str, request: server.Request) -> str:
    """The combined log format without what may carry a secret.

    The query string (``?token=...``) and the Referer are left out; the
    Authorization header never was in it.
    """
    path = request.path if request.path is not None else b"-"
    agent = request.getHeader(b"user-agent") or b"-"
    return (
        f'"{_text(peer(request).encode())}" - - {timestamp} '
        f'"{_text(request.method)} {_text(path)} {_text(request.clientproto)}" '
        f'{request.code} {request.sentLength or "-"} "-" "{_text(agent)}"'
    )


def _raw(code: int, reason: bytes, message: str) -> bytes:
    """A whole HTTP/1.1 response for a connection that has no request yet."""
    body = json.dumps({"error": message}).encode() + b"\n"
    return (
        b"HTTP/1.1 %d %s\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s" % (code, reason, len(body), body)
    )


class _Busy(protocol.Protocol):
    """For a connection over the limit: 503, closed at once."""

    def __init__(self, site: AdminSite) -> None:
        self.site = site

    def connectionMade(self) -> None:
        self.site.answering += 1
        assert self.transport is not None
        self.transport.write(
            _raw(503, b"Service Unavailable", "too many admin connections, try again")
        )
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.site.answering -= 1


class AdminRequest(server.Request):
    """A request judged on its request line and headers, before any body."""

    channel: AdminChannel
    #: Set once the request is refused: its answer is sent or on its way.
    refusal: Refusal | None = None

    def sawRequestLine(self, method: bytes, target: bytes, version: bytes) -> None:
        """Known at the request line, so a refusal before the body can say
        which request it refuses (requestReceived sets the same later)."""
        self.method, self.uri, self.clientproto = method, target, version
        self.path = target.split(b"?", 1)[0]

    def screen(self, length: int | None) -> Refusal | None:
        """The site's own check (the token), then the announced body size."""
        site = self.channel.site
        refusal = site.screen(self)
        if refusal is None and length is not None and length > site.maxBody:
            refusal = self._tooLarge()
        return refusal

    def _tooLarge(self) -> Refusal:
        limit = self.channel.site.maxBody
        log.warn(
            "admin: refused {method} {path} from {peer}: body over {limit} bytes",
            method=_text(self.method),
            path=_text(self.path),
            peer=peer(self),
            limit=limit,
        )
        return 413, f"request body over the limit of {limit} bytes"

    def handleContentChunk(self, data: bytes) -> None:
        """Store the body up to the cap; past it (chunked) answer 413 and close."""
        if self.refusal is not None:
            return  # answered already: the rest is dropped unread
        assert self.content is not None
        if self.content.tell() + len(data) > self.channel.site.maxBody:
            self.answerEarly(*self._tooLarge())
            self.channel.loseConnection()
            return
        self.content.write(data)

    def answerEarly(self, code: int, message: str) -> None:
        """Send the answer now, before the request is whole; the caller closes."""
        if self._answer(code, message):
            self.channel.site.log(self)  # finish() would; this one never finishes

    def _answer(self, code: int, message: str) -> bool:
        """Write a JSON error as the whole response; False if it cannot be."""
        self.refusal = code, message
        if self.startedWriting or self.clientproto not in (b"HTTP/1.0", b"HTTP/1.1"):
            return False
        self.setHeader(b"date", http.datetimeToString())
        self.setHeader(b"connection", b"close")
        body = jsonAnswer(self, code, {"error": message})
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        return True

    def process(self) -> None:
        if self.refusal is None:
            super().process()
            return
        if self.startedWriting:
            return  # answered mid-body; the connection is closing
        self.site = self.channel.site
        self._answer(*self.refusal)
        self.finish()


class AdminChannel(http.HTTPChannel):
    """HTTPChannel with a request deadline and a check at the headers."""

    site: AdminSite
    #: After a timeout, how long a peer that does not read its 408 may keep
    #: the socket before it is aborted (twisted.web's default is 15 s).
    abortTimeout = 2

    def connectionMade(self) -> None:
        self.site.opened()
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.site.closed()

    def dataReceived(self, data: bytes) -> None:
        # HTTPChannel.dataReceived restarts the timeout on every read: an idle
        # timeout.  Skipping that makes it a deadline for the whole request.
        basic.LineReceiver.dataReceived(self, data)

    def lineReceived(self, line: bytes) -> None:
        waiting = len(self.requests)
        super().lineReceived(line)
        if len(self.requests) > waiting and not getattr(
            self.transport, "disconnecting", False
        ):
            request = self.requests[-1]  # this line was a valid request line
            if isinstance(request, AdminRequest):
                method, target, version = line.split(b" ")
                request.sawRequestLine(method, target, version)

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        refusal = None
        if isinstance(request, AdminRequest):
            refusal = request.screen(self.length)
        if refusal is None:
            super().allHeadersReceived()  # may send 100 Continue
            return
        # The request ends at its headers: a length of 0 makes the channel
        # process it now, and the body it announced is never read.
        request.refusal = refusal
        self.persistent = False
        self.length = 0
        request.gotLength(0)

    def timeoutConnection(self) -> None:
        request = self.requests[-1] if self.requests else None
        if isinstance(request, AdminRequest):  # begun, not whole
            log.warn(
                "admin: {peer} did not send a whole request in {timeout:g} s",
                peer=peer(request),
                timeout=self.timeOut,
            )
            request.answerEarly(
                408, f"the request did not arrive whole within {self.timeOut:g} s"
            )
        super().timeoutConnection()


class AdminSite(server.Site):
    """A Site with the limits above; ``screen`` is the application's check."""

    protocol = AdminChannel  # type: ignore[assignment]
    requestFactory = AdminRequest
    noisy = False

    def __init__(
        self,
        resource: IResource,
        screen: Screen,
        *,
        maxBody: int,
        maxConnections: int,
        timeout: float,
        reactor: Any = None,
    ) -> None:
        super().__init__(
            resource,
            timeout=timeout,
            logFormatter=accessLogFormatter,
            reactor=reactor,
        )
        self.screen = screen
        self.maxBody = maxBody
        self.maxConnections = maxConnections
        self.openConnections = 0
        self.refusedConnections = 0
        self.answering = 0  # _Busy connections not yet closed

    def getContentFile(self, length: int | None) -> BytesIO:
        """Always memory: a body never exceeds ``maxBody``, so never a temp file."""
        return BytesIO()

    def buildProtocol(self, addr: Any) -> Any:
        if self.openConnections < self.maxConnections:
            return super().buildProtocol(addr)
        self.refusedConnections += 1
        if self.refusedConnections == 1:
            log.warn(
                "admin: {limit} connections open; more get 503 until one closes",
                limit=self.maxConnections,
            )
        if self.answering < BUSY_ANSWERS:
            return _Busy(self)
        return None  # the port closes it at once

    def opened(self) -> None:
        self.openConnections += 1

    def closed(self) -> None:
        self.openConnections -= 1
        if self.refusedConnections and self.openConnections < self.maxConnections:
            log.info(
                "admin: below the connection limit again; {n} connections refused",
                n=self.refusedConnections,
            )
            self.refusedConnections = 0


__all__ = [
    "AdminChannel",
    "AdminRequest",
    "AdminSite",
    "accessLogFormatter",
    "jsonAnswer",
    "peer",
]
