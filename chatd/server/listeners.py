"""The service's listeners: one StreamServerEndpointService per endpoint.

A :class:`Listener` binds once (in privilegedStartService, before twistd
drops root or forks) and keeps the port it got, or a
:class:`~chatd.server.errors.StartupError` saying why it could not;
:func:`formatAddress` is how an address reads in the log, /status and the
port file.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application import internet
from twisted.internet import address, defer, endpoints
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import failure
from zope.interface import implementer

from chatd.server.errors import StartupError, describeError

__all__ = [
    "LISTEN_BACKLOG",
    "Listener",
    "announce",
    "formatAddress",
    "makeListener",
    "withBacklog",
]


#: Listen queue for our stream endpoints unless the string sets one.  Twisted's
#: default of 50 overflows when a few hundred clients connect at once, and
#: each overflow costs the client a one-second SYN retry.
LISTEN_BACKLOG = 1024
_BACKLOG_TYPES = {"tcp", "tcp6", "ssl", "unix"}

log = Logger(namespace="chatd")


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


@implementer(IStreamServerEndpoint)
class Recorded:
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
        self.recorded = Recorded(endpoint, description)
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


def makeListener(reactor: Any, role: str, description: str, factory: Any) -> Listener:
    """A Listener, or StartupError if the string cannot make an endpoint
    now (a TLS key file gone since the options were checked)."""
    try:
        endpoint = endpoints.serverFromString(reactor, withBacklog(description))
    except Exception as e:
        raise StartupError(
            f"cannot listen on {description}: {describeError(e)}"
        ) from None
    return Listener(role, description, endpoint, factory)


def announce(chat: list[Listener], listeners: list[Listener], adminToken: bool) -> None:
    """The lines an operator (or a script) waits for before connecting:
    where chat is accepted (``chat``: the bound chat listeners, in order),
    the admin URL, the other front ends."""
    addresses = ", ".join(x.address for x in chat)
    log.info("ready: accepting connections on {addresses}", addresses=addresses)
    admin = [x for x in listeners if x.role == "admin" and x.port]
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
            auth="" if adminToken else " (no token: local only)",
        )
    for role in ("web", "irc"):
        for listener in listeners:
            if listener.role == role and listener.port:
                log.info(
                    "{role} front end on {address}", role=role, address=listener.address
                )
