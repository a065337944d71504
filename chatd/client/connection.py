"""chatd-client's link to the server: the address, the dialling, the frames.

:func:`parse_address` reads the ``HOST[:PORT]`` of the command line,
:func:`connector` makes the function that dials it (plain TCP or TLS), and
:class:`SessionFactory` builds, for each attempt, a
:class:`ChatClientProtocol`: frames in and out over chatd.wire, with every
decision left to the :class:`~chatd.client.session.Session` (which also
decides when to dial again).  Kept apart so the protocol's plumbing can be
read, and replaced in tests, without the state machine around it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IAddress, IStreamClientEndpoint
from twisted.python.failure import Failure

from chatd.wire import FrameReceiver, FrameType, encode

if TYPE_CHECKING:
    from chatd.client.session import Session

DEFAULT_PORT = 7777


class UsageError(Exception):
    """Bad command line or input file: one line on stderr, exit status 2."""


def parse_address(text: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise UsageError(f"bad server address {text!r}")
        port = rest[1:] if rest else ""
    elif text.count(":") > 1:  # a bare IPv6 address, no port
        host, port = text, ""
    else:
        host, _, port = text.partition(":")
    if not host:
        raise UsageError(f"bad server address {text!r}: no host")
    if not port:
        return host, DEFAULT_PORT
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"bad port {port!r} in {text!r}: must be 1 to 65535")
    return host, int(port)


class ChatClientProtocol(FrameReceiver):
    """Frames to and from the server; all decisions are the Session's."""

    transport: Any  # a TCP or TLS transport: abortConnection, connected

    def __init__(self, session: Session) -> None:
        self.session = session

    def connectionMade(self) -> None:
        self.session.connected(self)

    def send(self, ftype: FrameType, payload: bytes = b"") -> None:
        self.transport.write(encode(ftype, payload))

    def frameReceived(self, ftype: int, payload: bytes) -> None:
        self.session.frameReceived(ftype, payload)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.session.disconnected(self, reason)


class SessionFactory(protocol.ClientFactory):
    """Builds the one protocol of a connection attempt for ``session``."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def buildProtocol(self, addr: IAddress | None) -> protocol.Protocol:
        return ChatClientProtocol(self.session)


def connector(
    reactor: Any, host: str, port: int, trust: Any
) -> Callable[[protocol.Factory], defer.Deferred]:
    """A function connecting a factory to the server; with a ``trust`` root
    (a Certificate or platformTrust()) over TLS, verifying the server."""
    from twisted.internet import ssl
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, host, port)
    if trust is not None:
        options = ssl.optionsForClientTLS(host, trustRoot=trust)
        endpoint = wrapClientTLS(options, endpoint)
    return endpoint.connect
