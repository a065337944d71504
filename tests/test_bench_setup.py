"""chatd-bench's setup phase and fail-fast paths, in memory (task.Clock).

A server that refuses users, never answers or rate-limits must end the
run at once (or at --setup-timeout) with one line that says why, never
hang.
"""

from __future__ import annotations

from twisted.internet import defer, error
from twisted.internet.address import IPv4Address
from twisted.internet.testing import (
    MemoryReactorClock,
    StringTransportWithDisconnection,
)
from twisted.python.failure import Failure
from twisted.trial import unittest

from chatd.bench.config import Config
from chatd.bench.errors import EXIT_RATE_LIMITED, EXIT_SETUP, BenchError
from chatd.bench.load import LoadPart
from chatd.wire import ErrorCode, FrameType, encode, error_frame, join_fields


class _Transport(StringTransportWithDisconnection):
    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


class SetupTests(unittest.SynchronousTestCase):
    def begin(self, mode: str = "fanout", **options: object) -> defer.Deferred:
        """Start a LoadPart on a memory reactor; fires as its start() does."""
        self.reactor = MemoryReactorClock()
        self.config = Config(mode=mode, host="127.0.0.1", port=7777, **options)
        self.part = LoadPart(self.reactor, self.config)
        return defer.ensureDeferred(self.part.start())

    def accept(self) -> list[tuple[object, _Transport]]:
        """Complete every pending TCP connection: (protocol, transport)."""
        made = []
        for _host, _port, factory, _timeout, _bind in self.reactor.tcpClients:
            proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 7777))
            transport = _Transport()
            transport.protocol = proto
            proto.makeConnection(transport)
            made.append((proto, transport))
        self.reactor.tcpClients.clear()
        return made

    @staticmethod
    def welcome(proto, transport: _Transport, number: int) -> None:  # type: ignore[no-untyped-def]
        """Answer a HELLO as chatd does: WELCOME, then the user's own JOIN."""
        hello = transport.value().split(b"\x00")[-1]  # after the 8-byte header
        name = hello.split(b".")[0]
        proto.dataReceived(
            encode(FrameType.WELCOME, join_fields(name, number, 3))
            + encode(FrameType.JOIN, join_fields(number, 3, name))
        )

    def failure(self, d: defer.Deferred) -> BenchError:
        return self.failureResultOf(d, BenchError).value

    def test_refused_users_fail_at_once(self):
        """Users refused with SERVER_FULL end setup with one summary line."""
        d = self.begin(senders=1, receivers=3)
        conns = self.accept()
        for number, (proto, transport) in enumerate(conns[:2], 1):
            self.welcome(proto, transport, number)
        text = "too many connections from 127.0.0.1 (at most 2)"
        for proto, transport in conns[2:]:
            proto.dataReceived(error_frame(ErrorCode.SERVER_FULL, text))
            transport.loseConnection()
        e = self.failure(d)
        self.assertEqual(e.status, EXIT_SETUP)
        self.assertTrue(
            e.message.startswith(
                "2 users refused: SERVER_FULL too many connections from 127.0.0.1"
            ),
            e.message,
        )
        # The users that did get in are hung up on.
        self.assertFalse(any(t.connected for _, t in conns))

    def test_setup_timeout(self):
        """A server that accepts and never answers: setup ends at the timeout."""
        d = self.begin(senders=1, receivers=2, setupTimeout=5.0)
        conns = self.accept()
        self.reactor.advance(4.9)
        self.assertNoResult(d)
        self.reactor.advance(0.2)
        e = self.failure(d)
        self.assertEqual(e.message, "3 users not active after 5 s (--setup-timeout)")
        self.assertEqual(e.status, EXIT_SETUP)
        self.assertFalse(any(t.connected for _, t in conns))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_connection_refused_names_the_address(self):
        """Nothing listening: one line naming HOST:PORT, not a Failure repr."""
        d = self.begin("echo", connections=3)
        for _host, _port, factory, _timeout, _bind in self.reactor.tcpClients:
            factory.clientConnectionFailed(
                None, Failure(error.ConnectionRefusedError())
            )
        e = self.failure(d)
        self.assertEqual(
            e.message, "cannot connect to 127.0.0.1:7777: connection refused"
        )
        self.assertEqual(e.status, EXIT_SETUP)

    def test_closed_before_handshake(self):
        """A server that closes at once (TLS port, another service)."""
        d = self.begin("echo", connections=1)
        for _proto, transport in self.accept():
            transport.loseConnection()
        e = self.failure(d)
        self.assertEqual(
            e.message,
            "127.0.0.1:7777 closed the connection before the "
            "handshake (is it a TLS port? chatd-bench speaks plain TCP only)",
        )

    def test_echo_waits_for_the_welcome(self):
        """Echo connections are ready only once WELCOMEd: a wrong password
        fails setup with a hint, instead of a run of unanswered ECHOs."""
        d = self.begin("echo", connections=2)
        for proto, transport in self.accept():
            proto.dataReceived(error_frame(ErrorCode.AUTH_FAILED))
            transport.loseConnection()
        e = self.failure(d)
        self.assertEqual(
            e.message,
            "2 connections refused: AUTH_FAILED wrong or missing password "
            "(give the server's password with --password-file)",
        )

    def test_echo_ready_after_welcome(self):
        d = self.begin("echo", connections=2)
        for number, (proto, transport) in enumerate(self.accept(), 1):
            self.welcome(proto, transport, number)
        self.successResultOf(d)
        self.assertEqual(len(self.part.conns), 2)

    def test_rate_limited_abandons_the_run(self):
        """RATE_LIMITED during the load: the run is given up with advice."""
        d = self.begin(senders=1, receivers=0)
        ((proto, transport),) = self.accept()
        self.welcome(proto, transport, 1)
        self.successResultOf(d)
        self.part.go()
        self.assertNoResult(self.part.abandoned)
        proto.dataReceived(error_frame(ErrorCode.RATE_LIMITED))
        e = self.successResultOf(self.part.abandoned)
        self.assertEqual(e.status, EXIT_RATE_LIMITED)
        self.assertIn("RATE_LIMITED", e.message)
        self.assertIn("--rate-limit 0", e.message)
        self.part.abort()
        self.assertFalse(transport.connected)

    def test_non_fatal_refusal_hangs_up(self):
        """A refusal that leaves the connection open (NAME_TAKEN) still fails
        setup, and the bench hangs up rather than leave it open."""
        d = self.begin(senders=1, receivers=0)
        ((proto, transport),) = self.accept()
        proto.dataReceived(error_frame(ErrorCode.NAME_TAKEN))
        e = self.failure(d)
        self.assertEqual(e.message, "1 user refused: NAME_TAKEN that name is in use")
        self.assertFalse(transport.connected)
