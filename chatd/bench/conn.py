"""What every load connection shares: batched writes, ERRORs, disconnects.

:class:`Conn` is the base of :class:`chatd.bench.echo.EchoConn` and
:class:`chatd.bench.fanout.FanUser`.  It reports to its
:class:`chatd.bench.load.LoadPart` (counts, examples, drained, lost) and
signals setup through :attr:`Conn.active`, so that setup never waits on a
connection the server has refused.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from chatd.bench.errors import EXIT_RATE_LIMITED, RATE_LIMITED_MESSAGE, BenchError
from chatd.bench.figures import Counts
from chatd.netutil import describe_failure
from chatd.wire import HEADER, FrameReceiver, FrameType, parse_error

if TYPE_CHECKING:
    from chatd.bench.load import LoadPart

PACK = HEADER.pack


def now_us() -> int:
    """CLOCK_MONOTONIC in microseconds: the same clock in every load process."""
    return time.monotonic_ns() // 1000


class SetupRefused(Exception):
    """The server answered the handshake with an ERROR (``CODE text``)."""


class SetupLost(Exception):
    """The connection ended before its user was ACTIVE (one-line reason)."""


class Conn(FrameReceiver):
    """Shared by both kinds of connection: batching, ERRORs, disconnects.

    :attr:`active` fires once the connection is ready for load (its user
    ACTIVE), or fails with :class:`SetupRefused` or :class:`SetupLost`, so
    that setup never waits on a connection the server has refused.
    """

    #: A TCP connection (setTcpNoDelay, abortConnection, disconnecting).
    transport: Any
    part: LoadPart
    active: defer.Deferred
    closing = False
    heard = False
    running = False
    _out: list[bytes] | None = None

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.part.connected(self)

    def dataReceived(self, data: bytes) -> int:  # type: ignore[override]
        # (FrameReceiver's int return already differs from Protocol's None.)
        self.heard = True
        out: list[bytes] = []
        self._out = out
        frames = FrameReceiver.dataReceived(self, data)
        self._out = None
        if out:
            self.send(out[0] if len(out) == 1 else b"".join(out))
        return frames

    def go(self) -> None:
        """Start the load."""
        raise NotImplementedError

    def collect(self, counts: Counts) -> None:
        """Add what this connection's checker found to ``counts``."""
        raise NotImplementedError

    def queue(self, data: bytes) -> None:
        if self._out is not None:
            self._out.append(data)
        else:
            self.send(data)

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def error(self, payload: bytes) -> None:
        code, text = parse_error(payload)
        if not self.active.called:
            self.active.errback(SetupRefused(f"{code} {text}"))
            return
        self.part.counts.errors[code] += 1
        self.part.example(f"ERROR {code}: {text}")
        if code == "RATE_LIMITED":
            self.part.abandon(
                BenchError(RATE_LIMITED_MESSAGE.format(text=text), EXIT_RATE_LIMITED)
            )

    def frameTooLarge(self, ftype: int, size: int) -> None:
        self.part.counts.mismatches += 1
        self.part.example(f"frame type {ftype} with size {size} > 1016")
        self.stopFraming = True
        self.transport.abortConnection()

    def close(self) -> None:
        self.closing = True
        self.transport.write(PACK(FrameType.BYE, 0))
        self.transport.loseConnection()

    def abort(self) -> None:
        """Drop the connection now, as a hang-up of ours (no disconnect)."""
        self.closing = True
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        why = describe_failure(
            reason or Failure(ConnectionDone()),
            self.part.config.address,
            False,
            self.heard,
            "chatd-bench speaks plain TCP only",
        )
        if not self.active.called:
            self.active.errback(SetupLost(why))
        elif not self.closing:
            self.part.counts.disconnects += 1
            self.part.example(f"{self.label()}: {why}")
        self.part.lost(self)

    def label(self) -> str:
        return "connection"
