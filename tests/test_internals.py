"""chatd.server.internals, the one module that touches Twisted's private
attributes, on real sockets (loopback only).

These tests are the tripwire for a Twisted release that changes what the
module relies on: the send-now writer must still be in use on a TCP
connection (it falls back to ``transport.write`` when the attributes it
reads are gone) and must never put bytes ahead of what Twisted holds.
"""

from __future__ import annotations

import socket
from types import SimpleNamespace

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chatd.server.internals import (
    canHalfClose,
    dropUnstarted,
    leanPolling,
    unsentBytes,
    writerFor,
)
from chatd.wire import FrameType, encode
from tests.memory import parseFrames


class Collect(protocol.Protocol):
    """Client side: gathers bytes until it has ``expected`` of them, or
    until they end with ``last``."""

    def __init__(self, expected: int, last: bytes | None = None) -> None:
        self.expected = expected
        self.last = last
        self.data = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.done.called:
            return
        if (self.last is None and len(self.data) >= self.expected) or (
            self.last is not None and self.data.endswith(self.last)
        ):
            self.done.callback(self.data)


class Serve(protocol.Protocol):
    def __init__(self, made: defer.Deferred) -> None:
        self.made = made

    def connectionMade(self) -> None:
        self.made.callback(self)


class SendNowTests(TestCase):
    @defer.inlineCallbacks
    def connected(self, expected: int, last: bytes | None = None):  # type: ignore[no-untyped-def]
        made: defer.Deferred[Serve] = defer.Deferred()
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(lambda: Serve(made))
        )
        self.addCleanup(port.stopListening)
        client = Collect(expected, last)
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            protocol.Factory.forProtocol(lambda: client)
        )
        server = yield made
        self.addCleanup(client.transport.loseConnection)
        self.addCleanup(server.transport.loseConnection)
        return server, client

    @defer.inlineCallbacks
    def test_in_use_on_tcp(self):  # type: ignore[no-untyped-def]
        """On a TCP connection the writer is the send-now path, not
        ``transport.write``: a Twisted that renamed what it reads fails here."""
        server, client = yield self.connected(5)
        write = writerFor(server.transport)
        self.assertNotEqual(write, server.transport.write)
        self.assertTrue(canHalfClose(server.transport))
        write(b"hello")  # sent at once, no reactor turn needed
        self.assertEqual((yield client.done), b"hello")

    @defer.inlineCallbacks
    def test_never_ahead_of_what_twisted_holds(self):  # type: ignore[no-untyped-def]
        """Bytes Twisted still buffers go first: without the guard, "second"
        would reach the socket before the end of "first"."""
        first = b"first" * 3_000_000  # 15 MB: more than the kernel takes at once
        server, client = yield self.connected(len(first + b"second"))
        write = writerFor(server.transport)
        write(first)
        self.assertGreater(server.transport._tempDataLen, 0)  # Twisted holds the rest
        write(b"second")
        self.assertEqual((yield client.done), first + b"second")

    @defer.inlineCallbacks
    def test_after_what_was_written_before_it(self):  # type: ignore[no-untyped-def]
        """Bytes given to Twisted before the writer existed (an HTTP
        upgrade's 101, written by twisted.web) still go first."""
        server, client = yield self.connected(len(b"HTTP/1.1 101\r\n\r\nframe"))
        server.transport.write(b"HTTP/1.1 101\r\n\r\n")  # held until the next turn
        write = writerFor(server.transport)
        write(b"frame")
        self.assertEqual((yield client.done), b"HTTP/1.1 101\r\n\r\nframe")

    @defer.inlineCallbacks
    def test_drop_unstarted_keeps_the_frame_in_flight(self):  # type: ignore[no-untyped-def]
        """After dropUnstarted, the client gets whole frames only (the one in
        flight completed), fewer than were written, then what follows."""
        final = encode(FrameType.ERROR, b"SLOW_CONSUMER.you did not read fast enough")
        server, client = yield self.connected(0, last=final)
        frame = encode(FrameType.MESSAGE, b"m" * 1000)
        unsent: list = []
        write = writerFor(server.transport, unsent)
        written = 0
        for _ in range(256):  # 64 MiB: far more than the kernel takes at once
            write(frame * 256)
            written += 256
        self.assertGreater(dropUnstarted(server.transport, unsent), 0)
        self.assertEqual(dropUnstarted(server.transport, unsent), 0)  # nothing more
        write(final)
        data = yield client.done
        frames, rest = parseFrames(data)
        self.assertEqual(rest, b"")
        self.assertEqual(frames[-1], (FrameType.ERROR, final[8:]))
        self.assertEqual({f for f in frames[:-1]}, {(FrameType.MESSAGE, b"m" * 1000)})
        self.assertLess(len(frames) - 1, written)

    def test_other_transports_use_write(self) -> None:
        transport = SimpleNamespace(write=lambda data: None)
        self.assertIs(writerFor(transport), transport.write)
        self.assertEqual(dropUnstarted(transport, [(b"x", 0)]), 0)
        self.assertFalse(canHalfClose(transport))


class UnsentBytesTests(SynchronousTestCase):
    def tcpPair(self) -> tuple[socket.socket, socket.socket]:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            client = socket.create_connection(listener.getsockname())
            server, _ = listener.accept()
        self.addCleanup(client.close)
        self.addCleanup(server.close)
        return server, client

    def test_tcp_counts_until_acknowledged(self) -> None:
        server, client = self.tcpPair()
        server.sendall(b"x" * 1000)
        unsent = unsentBytes(SimpleNamespace(socket=server))
        self.assertIsNotNone(unsent)
        self.assertLessEqual(unsent, 1000)  # acknowledged at once on loopback
        client.settimeout(10)
        self.assertEqual(client.recv(1000, socket.MSG_WAITALL), b"x" * 1000)

    def test_unix_closed_or_missing_socket_cannot_tell(self) -> None:
        a, b = socket.socketpair()
        self.addCleanup(b.close)
        a.sendall(b"unread")
        self.assertIsNone(unsentBytes(SimpleNamespace(socket=a)))
        a.close()
        self.assertIsNone(unsentBytes(SimpleNamespace(socket=a)))
        self.assertIsNone(unsentBytes(object()))
        server, _ = self.tcpPair()
        server.close()
        self.assertIsNone(unsentBytes(SimpleNamespace(socket=server)))


class LeanPollingTests(SynchronousTestCase):
    """leanPolling on a reactor of the test's own (the suite's stays as is)."""

    def epoll(self):  # type: ignore[no-untyped-def]
        from twisted.internet.epollreactor import EPollReactor

        r = EPollReactor()
        self.addCleanup(self.close, r)
        return r

    def close(self, r) -> None:  # type: ignore[no-untyped-def]
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        for selectable in r.removeAll():
            selectable.connectionLost(Failure(ConnectionDone()))
        r._poller.close()
        r.waker.connectionLost(None)

    def spin(self, r, until) -> None:  # type: ignore[no-untyped-def]
        for _ in range(2000):
            if until():
                return
            r.iterate(0.01)
        self.fail("nothing happened")

    def test_only_the_epoll_reactor(self) -> None:
        from twisted.internet.selectreactor import SelectReactor
        from twisted.internet.task import Clock

        self.assertFalse(leanPolling(Clock()))
        select = SelectReactor()
        self.addCleanup(select.waker.connectionLost, None)
        self.assertFalse(leanPolling(select))

    def test_server_and_client_connections_both_served(self) -> None:
        r = self.epoll()
        self.assertTrue(leanPolling(r))
        self.assertEqual(r.doIteration, r.doPoll)

        class Echo(protocol.Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(data)

        port = r.listenTCP(0, protocol.Factory.forProtocol(Echo), interface="127.0.0.1")
        client = Collect(5)
        r.connectTCP(
            "127.0.0.1",
            port.getHost().port,
            protocol.ClientFactory.forProtocol(lambda: client),
        )
        self.spin(
            r, lambda: client.transport is not None and client.transport.connected
        )
        client.transport.write(b"hello")
        self.spin(r, lambda: client.done.called)
        self.assertEqual(client.data, b"hello")

    def test_what_escapes_is_logged_with_the_connection(self) -> None:
        from twisted.logger import globalLogPublisher

        r = self.epoll()
        leanPolling(r)
        lost: list[bool] = []

        class Broken(protocol.Protocol):
            def connectionLost(self, reason: object = None) -> None:
                lost.append(True)
                raise ZeroDivisionError("in connectionLost")

        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        port = r.listenTCP(
            0, protocol.Factory.forProtocol(Broken), interface="127.0.0.1"
        )
        sock = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.spin(r, lambda: len(r.getReaders()) > 2)  # accepted
        sock.close()
        self.spin(r, lambda: bool(lost))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        [event] = [e for e in events if "log_failure" in e]
        self.assertIn("Broken", event["connection"])
        self.assertIn("127.0.0.1", event["connection"])
