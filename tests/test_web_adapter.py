"""The WebSocket front end in memory: the adapter, the origin gate, options."""

from __future__ import annotations

from dataclasses import replace

from twisted.internet import protocol
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest
from wsproto.frame_protocol import FrameProtocol, Opcode
from wsproto.utilities import LocalProtocolError

from chatd.server.config import Config, Options
from chatd.server.service import ChatService
from chatd.web import options
from chatd.web.site import HTTP_IDLE_TIMEOUT, SECURITY_HEADERS, OriginGate, webSite
from chatd.web.websocket import (
    MAX_MESSAGE,
    MessageGuard,
    WebSocketChat,
    clientAddress,
    messageHeader,
    tornAt,
)
from chatd.wire import HEADER, encode
from chatd.wire import FrameType as T
from tests.memory import Server, parseFrames


class FakeWS:
    """Twisted's WebSocketTransport, recording; raises once closed, as wsproto."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.closed: int | None = None

    def sendBytesMessage(self, data: bytes) -> None:
        if self.closed is not None:
            raise LocalProtocolError("closed")
        self.messages.append(data)

    def loseConnection(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is not None:
            raise LocalProtocolError("closed")
        self.closed = code


class FakeRequest:
    """What WebSocketChat uses of a twisted.web Request."""

    def __init__(self, host: str = "127.0.0.1", forwarded: str | None = None) -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, 5555))
        self.headers = {} if forwarded is None else {"x-forwarded-for": forwarded}
        self.producer: object = None
        # The HTTP channel stays the TCP transport's producer after the upgrade.
        self.transport.registerProducer(object(), True)

    def getClientAddress(self) -> object:
        return self.transport.getPeer()

    def getHost(self) -> object:
        return self.transport.getHost()

    def getHeader(self, name: str) -> str | None:
        return self.headers.get(name)

    def registerProducer(self, producer: object, streaming: bool) -> None:
        assert self.producer is None and streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None


def unwrap(data: bytes) -> list[bytes]:
    """The payloads of the server's (unmasked, binary, final) messages."""
    reader = FrameProtocol(client=True, extensions=[])
    reader.receive_bytes(data)
    messages = []
    for f in reader.received_frames():
        assert f.opcode is Opcode.BINARY and f.frame_finished and f.message_finished
        messages.append(bytes(f.payload))
    return messages


class AdapterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = Server(max_backlog=65536)

    def socket(
        self, host: str = "127.0.0.1"
    ) -> tuple[WebSocketChat, FakeWS, FakeRequest]:
        request = FakeRequest(host)
        sock = WebSocketChat(
            self.server.factory,
            request,  # type: ignore[arg-type]
            clientAddress(request, frozenset()),  # type: ignore[arg-type]
        )
        ws = FakeWS()
        sock.negotiationStarted(ws)
        sock.negotiationFinished()
        return sock, ws, request

    def received(self, request: FakeRequest) -> list[tuple[int, bytes]]:
        """Frames sent since the last call; every message is whole frames."""
        self.server.clock.advance(0)
        frames = []
        for message in unwrap(request.transport.value()):
            got, rest = parseFrames(message)
            self.assertEqual(rest, b"", "a message ended inside a frame")
            frames.extend(got)
        request.transport.clear()
        return frames

    def active(self, name: bytes) -> tuple[WebSocketChat, FakeWS, FakeRequest]:
        sock, ws, request = self.socket()
        sock.bytesMessageReceived(encode(T.HELLO, name) + encode(T.READY))
        self.assertEqual([t for t, _ in self.received(request)], [T.WELCOME, T.JOIN])
        return sock, ws, request

    def test_torn_at(self) -> None:
        say = encode(T.SAY, b"hi")
        self.assertIsNone(tornAt(b""))
        self.assertIsNone(tornAt(say + say))
        self.assertEqual(tornAt(say + say[:5]), len(say))
        self.assertEqual(tornAt(say + say[:-1]), len(say))
        self.assertIsNone(tornAt(say + HEADER.pack(T.SAY, 1017)))

    def test_frames_in_one_message_and_one_message_per_write(self) -> None:
        """A message with several frames is handled whole; each of the
        protocol's writes goes out as its own binary message."""
        sock, ws, request = self.socket()
        self.assertIs(request.producer, sock.chat)
        sock.bytesMessageReceived(
            encode(T.HELLO, b"web") + encode(T.READY) + encode(T.SAY, b"hi")
        )
        frames = self.received(request)
        self.assertEqual([t for t, _ in frames], [T.WELCOME, T.JOIN, T.MESSAGE])
        self.assertEqual(frames[2][1], b"1.33.web.hi")

    def test_peer_is_the_requests_address(self) -> None:
        sock, _, _ = self.socket("10.1.2.3")
        assert sock.chat is not None
        self.assertEqual(sock.chat.peer, "10.1.2.3:5555")

    def test_text_message_closes_1003(self) -> None:
        tcp = self.server.active(b"tcp")
        sock, ws, _ = self.active(b"web")
        self.assertEqual(tcp.types(), [T.JOIN])
        sock.textMessageReceived("hello")
        self.assertEqual(ws.closed, 1003)
        sock.connectionLost(protocol.connectionDone)  # type: ignore[arg-type]
        frames = tcp.received()
        self.assertEqual(len(frames), 1)
        self.assertEqual(frames[0][0], T.LEAVE)
        self.assertTrue(frames[0][1].endswith(b".web.error"))

    def test_torn_message_closes_1002_and_handles_nothing(self) -> None:
        tcp = self.server.active(b"tcp")
        sock, ws, request = self.active(b"web")
        tcp.received()
        sock.bytesMessageReceived(encode(T.SAY, b"ok") + encode(T.SAY, b"cut")[:-1])
        self.assertEqual(ws.closed, 1002)
        self.assertEqual(tcp.received(), [])
        self.assertEqual(self.received(request), [])

    def test_oversized_header_is_the_protocols_error(self) -> None:
        sock, ws, request = self.socket()
        sock.bytesMessageReceived(HEADER.pack(T.SAY, 5000))
        frames = self.received(request)
        self.assertEqual(len(frames), 1)
        self.assertTrue(frames[0][1].startswith(b"FRAME_TOO_LARGE."))
        self.assertEqual(ws.closed, 1000)

    def test_message_header_is_wsprotos(self) -> None:
        """Our header for a server message is byte for byte wsproto's."""
        for size in (0, 1, 125, 126, 1024, 65535, 65536, 70000):
            data = b"x" * size
            expected = FrameProtocol(client=False, extensions=[]).send_data(data, True)
            self.assertEqual(messageHeader(size) + data, expected, size)

    def test_writes_after_the_peers_close_are_dropped(self) -> None:
        """Twisted answers a browser's close and closes the TCP side itself;
        nothing may follow the close frame."""
        sock, ws, request = self.active(b"web")
        ws.closed = 1000  # the browser's close arrived: wsproto refuses sends
        request.transport.loseConnection()
        sock.write(encode(T.PONG))
        self.assertEqual(request.transport.value(), b"")
        self.assertTrue(sock.disconnecting)
        sock.loseConnection()  # nothing more to send, no exception either

    def test_close_releases_the_channel_producer(self) -> None:
        """The TCP close must not wait for the HTTP channel (its producer)."""
        sock, ws, request = self.active(b"web")
        self.assertIsNotNone(request.transport.producer)
        sock.loseConnection()
        self.assertIsNone(request.transport.producer)
        self.assertEqual(ws.closed, 1000)

    def test_fairness_pauses_reading(self) -> None:
        """More frames than one turn handles: the TCP socket stops being read
        until the next turn, and every frame is still answered."""
        sock, ws, request = self.socket()
        sock.bytesMessageReceived(encode(T.PING, b"p") * 100)
        self.assertEqual(request.transport.producerState, "paused")
        self.server.clock.advance(0)
        self.assertEqual(request.transport.producerState, "producing")
        self.assertEqual([t for t, _ in self.received(request)], [T.PONG] * 100)

    def test_browser_that_does_not_read_is_cut_off(self) -> None:
        """The channel pauses the producer registered with the request: the
        fan-out holds frames for it and cuts it off past --max-backlog."""
        tcp = self.server.active(b"tcp")
        sock, ws, request = self.active(b"web")
        tcp.received()
        request.producer.pauseProducing()  # type: ignore[attr-defined]
        for _ in range(70):
            tcp.send(T.SAY, b"x" * 1000)
            self.server.clock.advance(0)
        frames = self.received(request)
        self.assertTrue(frames and frames[-1][1].startswith(b"SLOW_CONSUMER."), frames)
        self.assertEqual(ws.closed, 1000)
        self.assertIsNone(request.producer)
        leaves = [p for t, p in tcp.received() if t == T.LEAVE]
        self.assertEqual(len(leaves), 1)
        self.assertTrue(leaves[0].endswith(b".web.slow"))

    def test_abort(self) -> None:
        sock, _, request = self.active(b"web")
        sock.abortConnection()
        self.assertTrue(request.transport.disconnecting)


class AddressTests(SynchronousTestCase):
    def test_forwarded_for_only_from_a_trusted_proxy(self) -> None:
        request = FakeRequest("127.0.0.1", forwarded="1.1.1.1, 203.0.113.9")
        self.assertEqual(
            clientAddress(request, frozenset()),  # type: ignore[arg-type]
            IPv4Address("TCP", "127.0.0.1", 5555),
        )
        self.assertEqual(
            clientAddress(request, frozenset({"127.0.0.1"})),  # type: ignore[arg-type]
            IPv4Address("TCP", "203.0.113.9", 0),
        )
        v6 = FakeRequest("127.0.0.1", forwarded="2001:db8::1")
        self.assertEqual(
            clientAddress(v6, frozenset({"127.0.0.1"})),  # type: ignore[arg-type]
            IPv6Address("TCP", "2001:db8::1", 0),
        )
        junk = FakeRequest("127.0.0.1", forwarded="<script>")
        self.assertEqual(
            clientAddress(junk, frozenset({"127.0.0.1"})).host,  # type: ignore[arg-type]
            "127.0.0.1",
        )


class GuardTests(SynchronousTestCase):
    def test_huge_message_closes_1009(self) -> None:
        refused: list[int] = []

        class Socket:
            def refuse(self, code: int, why: str) -> None:
                refused.append(code)

        factory = WrappingFactory(protocol.Factory.forProtocol(protocol.Protocol))
        guard = MessageGuard(factory, protocol.Protocol())
        guard.makeConnection(StringTransport())
        guard.dataReceived(b"x" * (2 * MAX_MESSAGE))  # still HTTP: not counted
        guard.socket = Socket()  # type: ignore[assignment]
        guard.dataReceived(b"x" * (MAX_MESSAGE // 2))
        self.assertEqual(refused, [])
        guard.pending = 0  # a message was delivered
        guard.dataReceived(b"x" * (MAX_MESSAGE // 2))
        self.assertEqual(refused, [])
        guard.dataReceived(b"x" * (MAX_MESSAGE // 2 + 1))
        self.assertEqual(refused, [1009])


class Inner(resource.Resource):
    isLeaf = True

    def render(self, request: object) -> bytes:
        return b"upgraded"


def originRequest(origin: str | None, host: str = "chat.example:8080") -> DummyRequest:
    request = DummyRequest([b"ws"])
    request.requestHeaders = Headers({b"host": [host.encode()]})
    if origin is not None:
        request.requestHeaders.setRawHeaders(b"origin", [origin.encode()])
    request.isSecure = lambda: False  # type: ignore[method-assign]
    return request


class OriginTests(SynchronousTestCase):
    def test_own_origin_only_by_default(self) -> None:
        gate = OriginGate(Inner(), lambda: None)
        own = originRequest("http://CHAT.example:8080")
        self.assertEqual(gate.render(own), b"upgraded")
        self.assertEqual(gate.render(originRequest(None)), b"upgraded")
        for bad in ("http://evil.example", "https://chat.example:8080", "null", "x"):
            request = originRequest(bad)
            self.assertNotEqual(gate.render(request), b"upgraded", bad)
            self.assertEqual(request.responseCode, 403, bad)

    def test_configured_origins(self) -> None:
        gate = OriginGate(Inner(), lambda: ("https://chat.example.org",))
        self.assertEqual(
            gate.render(originRequest("https://chat.example.org")), b"upgraded"
        )
        request = originRequest("http://chat.example:8080")  # its own, not listed
        gate.render(request)
        self.assertEqual(request.responseCode, 403)


class OptionTests(SynchronousTestCase):
    def test_origin_forms(self) -> None:
        self.assertEqual(
            options.originOf("HTTP://Example.ORG:80/"), "http://example.org"
        )
        self.assertEqual(options.originOf("https://a.b:8443"), "https://a.b:8443")
        self.assertEqual(options.originOf("http://[::1]:8080"), "http://[::1]:8080")
        for bad in ("ftp://x", "http://", "http://a/path", "example.org"):
            with self.assertRaises(ValueError):
                options.originOf(bad)

    def test_command_line_and_environment(self) -> None:
        opts = Options(
            environ={"CHATD_WEB_ORIGIN": "https://a.example,https://b.example"}
        )
        opts.parseOptions(["--web", "tcp:0", "--web-trust-proxy", "127.0.0.1 ::1"])
        self.assertEqual(opts.config.web, "tcp:0")
        self.assertEqual(
            opts.config.web_origin, ("https://a.example", "https://b.example")
        )
        self.assertEqual(opts.config.web_trust_proxy, frozenset({"127.0.0.1", "::1"}))
        self.assertIsNone(Options(environ={}).parseOptions([]) or None)

    def test_bad_values_name_the_option(self) -> None:
        for args, name in [
            (["--web", "nonsense:1"], "--web"),
            (["--web-origin", "evil"], "--web-origin"),
            (["--web-trust-proxy", "proxy.example"], "--web-trust-proxy"),
        ]:
            with self.assertRaises(SystemExit) as e:  # one line, not usage
                Options(environ={}).parseOptions(args)
            self.assertIn(name, str(e.exception))

    def test_off_by_default(self) -> None:
        opts = Options(environ={})
        opts.parseOptions([])
        self.assertIsNone(opts.config.web)


class ServiceHookTests(SynchronousTestCase):
    """--web listens beside --listen, follows a reload, stops with the rest."""

    def test_listen_reload_stop(self) -> None:
        reactor = MemoryReactorClock()
        config = Config(listen=("tcp:0",), stats_interval=0, web="tcp:8080")
        loads = [replace(config, web="tcp:8081"), replace(config, web=None)]
        service = ChatService(
            config, reactor, loader=lambda: loads.pop(0), handleSignals=False
        )
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        self.assertEqual([s[0] for s in reactor.tcpServers], [0, 8080])
        self.assertIsNotNone(service.webPort)
        self.assertEqual(self.successResultOf(service.reload()), ["web"])
        self.assertEqual(reactor.tcpServers[-1][0], 8081)
        self.successResultOf(service.reload())
        self.assertIsNone(service.webPort)

    def test_site_headers_on_every_response(self) -> None:
        reactor = MemoryReactorClock()
        service = ChatService(Config(stats_interval=0), reactor, handleSignals=False)
        site = webSite(service).wrappedFactory
        self.assertEqual(site.timeOut, HTTP_IDLE_TIMEOUT)
        for path in (b"/", b"/app.js", b"/missing"):
            request = DummyRequest(path.lstrip(b"/").split(b"/"))
            site.getResourceFor(request)
            for name, value in SECURITY_HEADERS.items():
                self.assertEqual(request.responseHeaders.getRawHeaders(name), [value])
