"""WebSocket clients for the web front end's tests.

:func:`connectWS` uses Twisted's own WebSocket client
(``twisted.web.websocket``); :class:`RawWS` speaks wsproto over a plain TCP
connection, for what Twisted's client does not show: the close status, a
chosen ``Origin`` header, the HTTP status of a refused upgrade.
"""

from __future__ import annotations

from twisted.internet import defer, endpoints, protocol, reactor
from twisted.web.websocket import WebSocketClientEndpoint
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    Request,
    TextMessage,
)

from chatd.wire import encode
from tests.daemon import Daemon, FrameClient
from tests.memory import parseFrames


def webDaemon(*options: str) -> Daemon:
    """A daemon with ``--web`` on a port the kernel picks (read back by
    :func:`webPort` from the log)."""
    return Daemon("--web", "tcp:0:interface=127.0.0.1", *options)


def webPort(daemon: Daemon) -> int:
    """The --web listener's port, from the daemon's port file."""
    return daemon.ports("web")[0]


class _Frames(FrameClient):
    """A FrameClient fed by WebSocket messages instead of a byte stream."""

    messages = 0

    def gotMessage(self, data: bytes) -> None:
        self.messages += 1
        frames, rest = parseFrames(bytes(data))
        assert not rest, f"a message ended inside a frame: {data!r}"
        FrameClient.dataReceived(self, bytes(data))

    def ended(self, reason: object) -> None:
        if not self.closed.called:
            FrameClient.connectionLost(self, reason)


class WSFrameClient(_Frames):
    """A chatd client on Twisted's WebSocket client (a WebSocketProtocol)."""

    transport: object = None

    def negotiationStarted(self, transport: object) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        pass

    def send(self, ftype: int, payload: bytes = b"") -> None:
        self.sendRaw(encode(ftype, payload))

    def sendRaw(self, data: bytes) -> None:
        self.transport.sendBytesMessage(data)  # type: ignore[attr-defined]

    def stopReading(self) -> None:
        self.transport.transport.pauseProducing()  # type: ignore[attr-defined]

    def abort(self) -> None:
        self.transport.transport.abortConnection()  # type: ignore[attr-defined]

    def bytesMessageReceived(self, data: bytes) -> None:
        self.gotMessage(data)

    def textMessageReceived(self, text: str) -> None:
        raise AssertionError(f"text message from the server: {text!r}")

    def pongReceived(self, payload: bytes) -> None:
        pass

    def connectionLost(self, reason: object) -> None:
        self.ended(reason)


class _Factory:
    def buildProtocol(self, url: str) -> WSFrameClient:
        return WSFrameClient()


def connectWS(port: int) -> defer.Deferred:
    """A :class:`WSFrameClient` connected to ``ws://127.0.0.1:port/ws``."""
    endpoint = WebSocketClientEndpoint.new(reactor, f"http://127.0.0.1:{port}/ws")
    return defer.Deferred.fromCoroutine(endpoint.connect(_Factory()))


class RawWS(_Frames):
    """wsproto over TCP: ``accepted`` fires with the HTTP status (101 or the
    refusal's), ``closeCode`` with the server's close status."""

    def __init__(self, origin: str | None, host: str) -> None:
        super().__init__()
        self.origin = origin
        self.host = host
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.accepted: defer.Deferred = defer.Deferred()
        self.closeCode: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        extra = [] if self.origin is None else [(b"origin", self.origin.encode())]
        self.transport.write(
            self.ws.send(Request(host=self.host, target="/ws", extra_headers=extra))
        )

    def send(self, ftype: int, payload: bytes = b"") -> None:
        self.sendRaw(encode(ftype, payload))

    def sendRaw(self, data: bytes) -> None:
        self.transport.write(self.ws.send(BytesMessage(data=data)))

    def sendText(self, text: str) -> None:
        self.transport.write(self.ws.send(TextMessage(data=text)))

    def dataReceived(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.accepted.callback(101)
            elif isinstance(event, RejectConnection):
                self.accepted.callback(event.status_code)
            elif isinstance(event, BytesMessage):
                self.gotMessage(event.data)
            elif isinstance(event, CloseConnection):
                if not self.closeCode.called:
                    self.closeCode.callback(event.code)
                self.transport.write(self.ws.send(event.response()))
                self.transport.loseConnection()

    def connectionLost(self, reason: object = None) -> None:
        if not self.accepted.called:
            self.accepted.errback(reason)
        if not self.closeCode.called:
            self.closeCode.callback(None)
        self.ended(reason)


def connectRaw(port: int, origin: str | None = None) -> defer.Deferred:
    """A connected :class:`RawWS` (the upgrade requested, maybe not granted)."""
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    factory = protocol.Factory.forProtocol(lambda: RawWS(origin, f"127.0.0.1:{port}"))
    return endpoint.connect(factory)
