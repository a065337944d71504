"""The load: Twisted client connections driven in phases by an orchestrator.

A :class:`LoadPart` is the share of one load process: some echo
connections, or some fan-out users.  Its phases are the same whether the
orchestrator is in the same process or a parent talking over a pipe
(``--processes``): :meth:`start` connects (and handshakes), :meth:`go`
starts the load, :meth:`stop` stops new requests and waits until every
request has its answer, :meth:`finish` makes sure every broadcast reached
every user and returns the figures as a JSON-able dict.

The hot path walks frames with :class:`chatd.wire.FrameReceiver` (offsets,
``unpack_from``) and writes what one chunk of input provoked in one write.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, cast

from twisted.internet import defer, endpoints, protocol, task
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from chatd.bench.checks import (
    EchoChecker,
    Histogram,
    PayloadGenerator,
    SequenceChecker,
    parseMessage,
    sayText,
)
from chatd.bench.errors import (
    EXIT_RATE_LIMITED,
    RATE_LIMITED_MESSAGE,
    BenchError,
    setupError,
)
from chatd.netutil import describe_failure, hostport
from chatd.wire import HEADER, FrameReceiver, FrameType, join_fields, parse_error

_PACK = HEADER.pack
_ECHO = FrameType.ECHO
_PONG = FrameType.PONG
_SAY = FrameType.SAY
_MESSAGE = FrameType.MESSAGE
_ERROR = FrameType.ERROR


def secret(password: str) -> bytes:
    """A password as bytes again (the JSON config holds it surrogate-escaped)."""
    return password.encode("utf-8", "surrogateescape")


def now_us() -> int:
    """CLOCK_MONOTONIC in microseconds: the same clock in every load process."""
    return time.monotonic_ns() // 1000


#: Every this many MESSAGEs a user notes its running hash of their order.
ORDER_CHECKPOINT = 500


@dataclass
class Config:
    """One run's parameters (sent as JSON to worker processes)."""

    mode: str  # "echo" or "fanout"
    host: str = "127.0.0.1"
    port: int = 7777
    connections: int = 10
    depth: int = 1
    split: bool = False
    ping: bool = False
    #: Echo connections become ACTIVE users first, so that a run longer than
    #: the server's handshake timeout is not cut off by it.
    handshake: bool = True
    receivers: int = 10
    senders: int = 1
    size: int = 64
    window: int = 16
    rate: float | None = None
    duration: float = 5.0
    seed: int = 0
    tag: str = "b"
    password: str | None = None
    connectConcurrency: int = 100
    drainTimeout: float = 15.0
    #: Seconds for every connection to be made and its user to be ACTIVE.
    setupTimeout: float = 15.0
    #: More [host, port] to spread the connections over, in turn (the
    #: nodes of one cluster); connection k goes to target k mod n.
    also: list = field(default_factory=list)

    @property
    def targets(self) -> list[tuple[str, int]]:
        return [(self.host, self.port), *((h, int(p)) for h, p in self.also)]

    @property
    def addresses(self) -> list[str]:
        return [hostport(h, p) for h, p in self.targets]

    @property
    def address(self) -> str:
        return ", ".join(self.addresses)

    @property
    def noun(self) -> str:
        """What the run's connections are, for messages."""
        return "users" if self.mode == "fanout" else "connections"

    @property
    def total(self) -> int:
        if self.mode == "fanout":
            return self.senders + self.receivers
        return self.connections

    def toJSON(self) -> dict:
        return asdict(self)


@dataclass
class Counts:
    """What one part measured; :func:`merge` adds parts up."""

    completed: int = 0  # echo replies, or MESSAGE deliveries
    bytes: int = 0  # frame bytes received that count as load
    sent: int = 0
    mismatches: int = 0
    unexpected: int = 0
    unanswered: int = 0
    gaps: int = 0
    duplicates: int = 0
    reorders: int = 0
    disconnects: int = 0
    errors: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)
    #: "n:hash" -> users whose running hash of their first n MESSAGEs it is.
    orders: Counter = field(default_factory=Counter)


class SetupRefused(Exception):
    """The server answered the handshake with an ERROR (``CODE text``)."""


class SetupLost(Exception):
    """The connection ended before its user was ACTIVE (one-line reason)."""


class _Conn(FrameReceiver):
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
        self.transport.write(_PACK(FrameType.BYE, 0))
        self.transport.loseConnection()

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


_HANDSHAKE_FRAMES = frozenset({FrameType.WELCOME, FrameType.JOIN, FrameType.LEAVE})


class EchoConn(_Conn):
    """Keeps ``depth`` ECHO (or PING) requests in flight, checks each reply."""

    def __init__(self, part: LoadPart, number: int) -> None:
        self.part = part
        self.number = number
        config = part.config
        types = (_ECHO, FrameType.PING) if config.ping else (_ECHO,)
        self.generator = PayloadGenerator(config.seed * 1_000_003 + number, types=types)
        self.checker = EchoChecker()
        self.running = False
        self._splitQueue: list[bytes] = []
        self.active = defer.Deferred()

    def label(self) -> str:
        return f"echo connection {self.number}"

    def connectionMade(self) -> None:
        _Conn.connectionMade(self)
        config = self.part.config
        if config.handshake:
            hello = f"{config.tag}e{self.number}".encode()
            if config.password:
                hello += b"." + secret(config.password)
            self.transport.write(
                _PACK(FrameType.HELLO, len(hello)) + hello + _PACK(FrameType.READY, 0)
            )
        else:
            self.active.callback(self)

    def go(self) -> None:
        self.running = True
        self.queue(b"".join(self.request() for _ in range(self.part.config.depth)))

    def request(self) -> bytes:
        ftype, payload = self.generator.next()
        self.checker.sent(ftype, payload, now_us())
        self.part.counts.sent += 1
        return _PACK(ftype, len(payload)) + payload

    def frameReceived(self, ftype: int, payload: bytes) -> None:
        if ftype == _ERROR:
            self.error(payload)
            return
        if ftype in _HANDSHAKE_FRAMES and self.part.config.handshake:
            # Our WELCOME (the password was right), everyone's JOIN and LEAVE.
            if ftype == FrameType.WELCOME and not self.active.called:
                self.active.callback(self)
            return
        part = self.part
        stamp = self.checker.received(ftype, payload)
        if stamp is None:
            return
        counts = part.counts
        counts.completed += 1
        counts.bytes += 8 + len(payload)
        part.latency.add(now_us() - stamp)
        if self.running:
            self.queue(self.request())
        elif not self.checker.pending:
            part.drained(self)

    def send(self, data: bytes) -> None:
        if not self.part.config.split:
            self.transport.write(data)
            return
        # Cut the bytes at random places and send each piece in its own
        # reactor turn (TCP_NODELAY is on), so pieces leave as separate
        # segments and the server must reassemble frames across reads.
        start = 0
        for cut in self.generator.splits(len(data)):
            self._splitQueue.append(data[start:cut])
            start = cut
        self._splitQueue.append(data[start:])
        self._pump()

    def _pump(self) -> None:
        if not self._splitQueue or self.transport.disconnecting:
            return
        self.transport.write(self._splitQueue.pop(0))
        if self._splitQueue:
            self.part.reactor.callLater(0, self._pump)

    def collect(self, counts: Counts) -> None:
        counts.mismatches += self.checker.mismatches
        counts.unexpected += self.checker.unexpected
        counts.unanswered += self.checker.outstanding
        counts.examples.extend(self.checker.examples)


class FanUser(_Conn):
    """A chat user: handshake, then check every MESSAGE; senders also SAY."""

    def __init__(self, part: LoadPart, index: int, sender: int | None) -> None:
        self.part = part
        self.index = index
        self.sender = sender
        self.name = f"{part.config.tag}{'s' if sender is not None else 'r'}{index}"
        self.checker = SequenceChecker()
        self.received = 0
        self.orderHash = 0
        self.welcome: bytes | None = None
        self.active = defer.Deferred()
        self.ponged: defer.Deferred | None = None
        self.running = False
        self.seq = 0
        self.inflight = 0
        config = part.config
        self.window = config.window
        self.size = config.size
        self._ticker: task.LoopingCall | None = None
        self._credit = 0.0

    def label(self) -> str:
        return f"user {self.name}"

    def connectionMade(self) -> None:
        _Conn.connectionMade(self)
        hello = self.name.encode()
        if self.part.config.password:
            hello += b"." + secret(self.part.config.password)
        self.transport.write(_PACK(FrameType.HELLO, len(hello)) + hello)

    def frameReceived(self, ftype: int, payload: bytes) -> None:
        if ftype == _MESSAGE:
            try:
                sender, seq, stamp = parseMessage(payload)
            except (IndexError, ValueError):
                self.part.counts.unexpected += 1
                self.part.example(f"{self.name}: bad MESSAGE {payload[:60]!r}")
                return
            part = self.part
            self.checker.feed(sender, seq)
            # One total order: every user's running hash of what it got must
            # agree at each checkpoint (ints hash alike in every process).
            self.received += 1
            self.orderHash = hash((self.orderHash, sender, seq))
            if not self.received % ORDER_CHECKPOINT:
                part.counts.orders[f"{self.received}:{self.orderHash}"] += 1
            counts = part.counts
            counts.completed += 1
            counts.bytes += 8 + len(payload)
            part.latency.add(now_us() - stamp)
            if sender == self.sender:
                self.inflight -= 1
                if self.running:
                    if self._ticker is None:
                        self.fill()
                elif not self.inflight:
                    part.drained(self)
        elif ftype == FrameType.WELCOME:
            # WELCOME is name.id.color; our own JOIN will be id.color.name.
            name, ident, color = payload.split(b".", 2)
            self.welcome = join_fields(ident, color, name)
            self.transport.write(_PACK(FrameType.READY, 0))
        elif ftype == FrameType.JOIN:
            if payload == self.welcome and not self.active.called:
                self.active.callback(self)
        elif ftype == _PONG:
            if self.ponged is not None:
                d, self.ponged = self.ponged, None
                d.callback(None)
        elif ftype == _ERROR:
            self.error(payload)
            if self.sender is not None and self.inflight:
                # A refused SAY is answered too: it will never be acknowledged.
                self.inflight -= 1
                if not self.running and not self.inflight:
                    self.part.drained(self)
        elif ftype != FrameType.LEAVE:
            self.part.counts.unexpected += 1

    def go(self) -> None:
        if self.sender is None:
            return
        self.running = True
        rate = self.part.config.rate
        if rate:
            self._ticker = task.LoopingCall(self.tick, rate)
            self._ticker.clock = self.part.reactor
            self._last = now_us()
            self._ticker.start(0.005)
        else:
            self.fill()

    def fill(self) -> None:
        """Closed loop: top up to ``window`` unacknowledged messages."""
        n = self.window - self.inflight
        if n > 0:
            self.queue(b"".join(self.say() for _ in range(n)))

    def tick(self, rate: float) -> None:
        """Open loop: send what ``rate`` messages/s owes since the last tick."""
        now = now_us()
        self._credit += rate * (now - self._last) / 1e6
        self._last = now
        n = int(self._credit)
        if n:
            self._credit -= n
            self.queue(b"".join(self.say() for _ in range(n)))

    def say(self) -> bytes:
        assert self.sender is not None  # only senders SAY
        text = sayText(self.sender, self.seq, now_us(), self.size)
        self.seq += 1
        self.inflight += 1
        self.part.counts.sent += 1
        return _PACK(_SAY, len(text)) + text

    def stopSending(self) -> None:
        self.running = False
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        if not self.inflight:
            self.part.drained(self)

    def ping(self) -> defer.Deferred:
        """Fires once everything sequenced before the PING has arrived."""
        self.ponged = defer.Deferred()
        self.transport.write(_PACK(FrameType.PING, 4) + b"last")
        return self.ponged

    def collect(self, counts: Counts) -> None:
        c = self.checker
        counts.gaps += c.gaps
        counts.duplicates += c.duplicates
        counts.reorders += c.reorders
        counts.examples.extend(f"{self.name}: {e}" for e in c.examples)


class LoadPart:
    """One load process's connections, driven through the phases."""

    def __init__(
        self, reactor: IReactorTime, config: Config, part: int = 0, parts: int = 1
    ) -> None:
        self.reactor = reactor
        self.config = config
        self.part = part
        self.parts = parts
        self.counts = Counts()
        self.latency = Histogram()
        self.conns: list[_Conn] = []
        self._waitingDrain: set[_Conn] = set()
        self._drained: defer.Deferred | None = None
        self._allLost: defer.Deferred | None = None
        self._open = 0
        #: Fires with a :class:`BenchError` when the run cannot go on (the
        #: server rate-limits it); the orchestrator then stops at once.
        self.abandoned: defer.Deferred = defer.Deferred()

    def abandon(self, reason: BenchError) -> None:
        if not self.abandoned.called:
            self.abandoned.callback(reason)

    def abort(self) -> None:
        """Drop every connection now (the run was given up or interrupted)."""
        for conn in self.conns:
            if not conn.transport.disconnecting:
                conn.closing = True
                conn.transport.abortConnection()

    def example(self, text: str) -> None:
        if len(self.counts.examples) < 20:
            self.counts.examples.append(text)

    # -- phases -----------------------------------------------------------

    async def start(self) -> None:
        """Connect everyone; fails with one :class:`BenchError` for all the
        connections refused, lost or not ACTIVE within ``setupTimeout``."""
        config = self.config
        specs: list[tuple[int, Callable[[], _Conn]]]
        if config.mode == "echo":
            specs = [
                (n, partial(EchoConn, self, n))
                for n in range(self.part, config.connections, self.parts)
            ]
        else:
            specs = [
                (i, partial(FanUser, self, i, i if i < config.senders else None))
                for i in range(self.part, config.total, self.parts)
            ]
        # The setup timeout below bounds connecting too: TCP's own is later.
        targets = [
            endpoints.TCP4ClientEndpoint(
                self.reactor, host, port, timeout=config.setupTimeout + 5
            )
            for host, port in config.targets
        ]
        semaphore = defer.DeferredSemaphore(config.connectConcurrency)

        async def one(index: int, make: Callable[[], _Conn]) -> _Conn:
            await semaphore.acquire()
            conn = None
            try:
                endpoint = targets[index % len(targets)]
                conn = cast(_Conn, await endpoint.connect(_OneShot(make)))
                await conn.active
                return conn
            except BaseException:  # refused, lost, or the setup timeout
                if conn is not None:  # (a non-fatal refusal leaves it open)
                    conn.closing = True
                    conn.transport.abortConnection()
                raise
            finally:
                semaphore.release()

        attempts = [
            defer.ensureDeferred(one(i, m)).addTimeout(
                config.setupTimeout, self.reactor
            )
            for i, m in specs
        ]
        outcomes = await defer.DeferredList(attempts, consumeErrors=True)
        failures: Counter[tuple[str, str]] = Counter()
        for ok, value in outcomes:
            if ok:
                self.conns.append(value)
            else:
                failures[self._classify(cast(Failure, value))] += 1
        if failures:
            for conn in self.conns:
                conn.closing = True
                conn.transport.abortConnection()
            raise setupError(failures, config.noun, config.total)

    def _classify(self, failure: Failure) -> tuple[str, str]:
        """(what, detail) for a connection that did not become ready."""
        if failure.check(SetupRefused):
            return "refused", str(failure.value)
        if failure.check(SetupLost):
            return "failed", str(failure.value)
        if failure.check(defer.TimeoutError):
            timeout = self.config.setupTimeout
            return f"not active after {timeout:g} s (--setup-timeout)", ""
        why = describe_failure(failure, self.config.address, False, False)
        return "failed", why

    def go(self) -> None:
        for conn in self.conns:
            conn.go()

    def progress(self) -> tuple[int, int]:
        return self.counts.completed, self.counts.bytes

    async def stop(self) -> None:
        """Stop sending; wait (bounded) until every request is answered."""
        self._drained = defer.Deferred()
        if self.config.mode == "echo":
            echoes = [c for c in self.conns if isinstance(c, EchoConn)]
            self._waitingDrain = {c for c in echoes if c.checker.pending}
            for echo in echoes:
                echo.running = False
        else:
            senders = [
                c for c in self.conns if isinstance(c, FanUser) and c.sender is not None
            ]
            self._waitingDrain = set(senders)
            for conn in senders:
                conn.stopSending()
        if self._waitingDrain:
            timeout = self.reactor.callLater(
                self.config.drainTimeout, self._drainTimedOut
            )
            await self._drained
            if timeout.active():
                timeout.cancel()

    def drained(self, conn: _Conn) -> None:
        self._waitingDrain.discard(conn)
        if not self._waitingDrain and self._drained and not self._drained.called:
            self._drained.callback(None)

    def _drainTimedOut(self) -> None:
        self.example(f"{len(self._waitingDrain)} connections did not drain")
        self._waitingDrain.clear()
        if self._drained is not None and not self._drained.called:
            self._drained.callback(None)

    async def finish(self) -> dict:
        """Make sure every broadcast arrived, hang up, return the figures."""
        live = [
            c
            for c in self.conns
            if isinstance(c, FanUser) and not c.transport.disconnecting
        ]
        if self.config.mode == "fanout" and live:
            pings = defer.gatherResults([c.ping() for c in live])
            timeout = self.reactor.callLater(self.config.drainTimeout, pings.cancel)
            try:
                await pings
            except defer.CancelledError:
                self.example("some users got no PONG at the end")
            if timeout.active():
                timeout.cancel()
        counts = self.counts
        sent: dict[int, int] = {}
        lastSeen: dict[int, Counter] = {}
        for conn in self.conns:
            conn.collect(counts)
            if isinstance(conn, FanUser):
                if conn.sender is not None:
                    sent[conn.sender] = conn.seq
                for sender in range(self.config.senders):
                    last = conn.checker.last.get(sender, -1)
                    lastSeen.setdefault(sender, Counter())[last] += 1
        self._allLost = defer.Deferred()
        if self._open:
            for conn in self.conns:
                if not conn.transport.disconnecting:
                    conn.close()
                else:
                    conn.closing = True
            await self._allLost
        result = asdict(counts)
        result["errors"] = dict(counts.errors)
        result["orders"] = dict(counts.orders)  # asdict garbles Counters
        result["examples"] = counts.examples[:20]
        result["latency"] = self.latency.toJSON()
        result["sentBySender"] = {str(k): v for k, v in sent.items()}
        result["lastSeen"] = {
            str(s): {str(k): v for k, v in c.items()} for s, c in lastSeen.items()
        }
        return result

    # -- connection bookkeeping -------------------------------------------

    def connected(self, conn: _Conn) -> None:
        self._open += 1

    def lost(self, conn: _Conn) -> None:
        self._open -= 1
        if self._drained is not None:
            self.drained(conn)
        if not self._open and self._allLost is not None and not self._allLost.called:
            self._allLost.callback(None)


class _OneShot(protocol.Factory):
    """A factory that builds one prepared protocol."""

    def __init__(self, make: Callable[[], _Conn]) -> None:
        self.make = make

    def buildProtocol(self, addr: object) -> protocol.Protocol:
        return self.make()
