"""chatd frames over a WebSocket: a transport adapter for the same ChatProtocol.

Each WebSocket connection gets an ordinary :class:`ChatProtocol` from the
shared :class:`ChatFactory`; :class:`WebSocketChat` is its transport.  One
``write`` of the protocol (always whole frames) becomes one binary message;
one binary message from the browser (whole frames, by PROTOCOL.md) is fed to
the protocol as if it had arrived on TCP.  Handshake, errors, limits,
timeouts, maintenance and shutdown therefore behave exactly as over TCP.

Writes are framed here (a server's message is a fixed header and the bytes)
and sent with TCP's send-now writer: with wsproto building an event per
recipient and write, the WebSocket fan-out cost 2.8x TCP's server CPU per
delivery; framed here, about the same (bench/web_load.py, docs/web.md).

Flow control: Twisted's ``WebSocketTransport.attachProducer`` registers on the
TCP transport, which the HTTP channel already holds as its producer (so it
raises); the request is the consumer Twisted offers instead, and the channel
passes the TCP transport's pause/resume on to it.  A browser that stops
reading therefore pauses this user's fan-out and ends as SLOW_CONSUMER.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer, ITransport
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.server import Request
from twisted.web.websocket import WebSocketTransport
from wsproto.utilities import LocalProtocolError
from zope.interface import implementer

from chatd.server.internals import writerFor
from chatd.wire import HEADER, HEADER_SIZE, MAX_PAYLOAD

if TYPE_CHECKING:
    from chatd.server.factory import ChatFactory
    from chatd.server.protocol import ChatProtocol

log = Logger(namespace="chatd.web")

#: WebSocket close codes (RFC 6455 7.4.1).
NORMAL, PROTOCOL_ERROR, UNSUPPORTED_DATA, TOO_BIG = 1000, 1002, 1003, 1009

#: Most bytes a peer may send towards one message before it is delivered.
#: Twisted reassembles a whole message before handing it over, with no limit
#: of its own; a chatd client has no reason to batch more than this.
MAX_MESSAGE = 1 << 20

_unpack_from = HEADER.unpack_from
_SHORT = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def messageHeader(size: int) -> bytes:
    """RFC 6455 5.2 header of a whole binary message from the server
    (FIN, opcode 2, no mask) with a ``size``-byte payload."""
    if size < 126:
        return bytes((0x82, size))
    if size < 65536:
        return _SHORT.pack(0x82, 126, size)
    return _LONG.pack(0x82, 127, size)


def tornAt(data: bytes) -> int | None:
    """Where ``data`` stops being whole frames (None if it is all whole).

    A header announcing more than MAX_PAYLOAD counts as whole here: the
    protocol itself answers it with FRAME_TOO_LARGE, decided from the header.
    """
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < HEADER_SIZE:
            return offset
        size = _unpack_from(data, offset)[1]
        if size > MAX_PAYLOAD:
            return None
        if offset + HEADER_SIZE + size > end:
            return offset
        offset += HEADER_SIZE + size
    return None


def clientAddress(
    request: Request, trusted: frozenset[str]
) -> IPv4Address | IPv6Address:
    """The address the per-address limit counts: the TCP peer, or, when that
    peer is a trusted proxy, the last address its X-Forwarded-For names."""
    peer = request.getClientAddress()
    host = getattr(peer, "host", "unix")
    port = getattr(peer, "port", 0)
    if host in trusted:
        forwarded = request.getHeader("x-forwarded-for") or ""
        last = forwarded.rsplit(",", 1)[-1].strip()
        try:
            ip = ipaddress.ip_address(last)
        except ValueError:
            pass
        else:
            kind = IPv6Address if ip.version == 6 else IPv4Address
            return kind("TCP", str(ip), 0)
    if isinstance(peer, IPv4Address | IPv6Address):
        return peer
    return IPv4Address("TCP", str(host), port)


class MessageGuard(ProtocolWrapper):
    """Counts what the peer sent since its last whole message was delivered,
    and closes a WebSocket whose message passes :data:`MAX_MESSAGE`."""

    pending = 0
    socket: WebSocketChat | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.socket is None:  # still HTTP: twisted.web bounds that
            ProtocolWrapper.dataReceived(self, data)
            return
        self.pending += len(data)
        ProtocolWrapper.dataReceived(self, data)
        if self.pending > MAX_MESSAGE and self.socket is not None:
            self.socket.refuse(TOO_BIG, f"a message over {MAX_MESSAGE} bytes")


def guarded(factory: Any) -> WrappingFactory:
    """``factory`` (a Site) with every connection behind a MessageGuard."""
    wrapping = WrappingFactory(factory)
    wrapping.protocol = MessageGuard
    wrapping.noisy = False
    return wrapping


@implementer(ITransport, IConsumer, IPushProducer)
class WebSocketChat:
    """One WebSocket connection: the ChatProtocol's transport.

    Also the ``WebSocketProtocol`` Twisted's WebSocketResource talks to.
    """

    disconnecting = False
    #: What ChatProtocol counts this connection's users under.
    frontEnd = "websocket"
    chat: ChatProtocol | None = None
    ws: WebSocketTransport | None = None

    def __init__(
        self,
        factory: ChatFactory,
        request: Request,
        peer: IPv4Address | IPv6Address,
    ) -> None:
        self.factory = factory
        self.request = request
        self.tcp: Any = request.transport
        self.peer = peer
        self.host = request.getHost()

    # -- WebSocketProtocol (from Twisted) ---------------------------------

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.ws = transport

    def negotiationFinished(self) -> None:
        """Upgraded: from here on this is a chatd connection."""
        raw = self.tcp
        if isinstance(raw, MessageGuard):
            raw.socket = self
            raw = raw.transport
        self._send = writerFor(raw)
        self.chat = self.factory.buildProtocol(self.peer)
        self.chat.makeConnection(self)

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        if isinstance(self.tcp, MessageGuard):
            self.tcp.pending = 0
        if self.disconnecting or self.chat is None:
            return
        data = bytes(data)
        torn = tornAt(data)
        if torn is not None:
            self.refuse(
                PROTOCOL_ERROR,
                f"binary message of {len(data)} bytes ends inside a frame at {torn}",
            )
            return
        self.chat.dataReceived(data)

    def textMessageReceived(self, message: str) -> None:
        if isinstance(self.tcp, MessageGuard):
            self.tcp.pending = 0
        self.refuse(UNSUPPORTED_DATA, "text message (chatd frames are binary)")

    def pongReceived(self, payload: bytes) -> None:
        """Nothing to do: chatd's own PING/PONG keeps the connection alive."""

    def connectionLost(self, reason: Failure) -> None:
        self.disconnecting = True
        if isinstance(self.tcp, MessageGuard):
            self.tcp.socket = None
        chat, self.chat = self.chat, None
        if chat is not None:
            chat.connectionLost(reason)

    def refuse(self, code: int, why: str) -> None:
        """A framing violation: close the WebSocket with ``code``."""
        if self.disconnecting:
            return
        number = self.chat.number if self.chat is not None else "?"
        log.info(
            "websocket close conn={conn} status={code}: {why}",
            conn=number,
            code=code,
            why=why,
        )
        self._close(code, why)

    def _close(self, code: int, why: str = "") -> None:
        self.disconnecting = True
        # The HTTP channel stays the TCP transport's producer after the
        # upgrade; a TCP close waits for a paused producer, so let it go.
        self.tcp.unregisterProducer()
        if self.ws is not None:
            try:
                self.ws.loseConnection(code, why)  # type: ignore[call-arg]
                return
            except LocalProtocolError:  # the peer's close came first
                pass
        self.tcp.loseConnection()

    # -- ITransport / IConsumer / IPushProducer (for ChatProtocol) --------

    def write(self, data: bytes) -> None:
        """One binary message: ChatProtocol writes whole frames only.

        What ``sendBytesMessage`` would send, built here: a server's frame is
        unmasked and stateless, and skipping wsproto's event objects per
        recipient and write is most of the WebSocket fan-out's cost.  It goes
        out through the same send-now writer as TCP, after anything Twisted
        queued (a pong) and never after a close (``disconnecting``).
        """
        if self.disconnecting or self.tcp.disconnecting:
            self.disconnecting = True
            return
        self._send(messageHeader(len(data)) + data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if not self.disconnecting:
            self._close(NORMAL)

    def abortConnection(self) -> None:
        self.disconnecting = True
        self.tcp.abortConnection()

    def getPeer(self) -> IPv4Address | IPv6Address:
        return self.peer

    def getHost(self) -> Any:
        return self.host

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self.request.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.request.unregisterProducer()

    def pauseProducing(self) -> None:
        """Stop reading (ChatProtocol's per-turn fairness)."""
        self.tcp.pauseProducing()

    def resumeProducing(self) -> None:
        self.tcp.resumeProducing()

    def stopProducing(self) -> None:
        self.loseConnection()


class WebSocketChatFactory:
    """Builds a :class:`WebSocketChat` per upgraded request
    (a ``WebSocketServerFactory`` for Twisted's WebSocketResource)."""

    def __init__(self, factory: ChatFactory, trusted: Any = frozenset) -> None:
        self.factory = factory
        #: Called at each request: the trusted proxies (config may reload).
        self.trusted = trusted

    def buildProtocol(self, request: Request) -> WebSocketChat:
        return WebSocketChat(
            self.factory, request, clientAddress(request, self.trusted())
        )
