"""Fan-out load: users SAY (closed or open loop) and every user checks every
MESSAGE: once, complete and in order per sender, and in one total order.

With ``--rooms N`` (protocol 1.2) user k sends VERSION after READY, enters
room ``r{k mod N}`` once ACTIVE, and is set up when its ROOM_JOIN comes
back; senders ROOM_SAY there, and the order is one per room.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet import defer, task

from chatd.bench.checks import SequenceChecker, parseMessage, roomParser, sayText
from chatd.bench.config import secret
from chatd.bench.conn import PACK, Conn, SetupRefused, now_us
from chatd.bench.figures import Counts, UserEnd
from chatd.bench.order import ORDER_CHECKPOINT, endNote, note
from chatd.wire import FrameType, join_fields

if TYPE_CHECKING:
    from chatd.bench.load import LoadPart

_PONG = FrameType.PONG
_SAY = FrameType.SAY
_MESSAGE = FrameType.MESSAGE
_ERROR = FrameType.ERROR
#: Room events of other members (entering, leaving, a topic): not load.
_ROOM_EVENTS = (FrameType.ROOM_JOIN, FrameType.ROOM_LEAVE, FrameType.ROOM_TOPIC)


class OpenLoop:
    """Open-loop pacing: how many messages ``rate``/s owes at each tick.

    The fraction left over is carried to the next tick, so the rate holds
    however coarse the ticks are.
    """

    def __init__(self, rate: float, now: int) -> None:
        self.rate = rate
        self.last = now
        self.credit = 0.0

    def owed(self, now: int) -> int:
        """Messages due since the last call (``now`` in microseconds)."""
        self.credit += self.rate * (now - self.last) / 1e6
        self.last = now
        n = int(self.credit)
        self.credit -= n
        return n


class FanUser(Conn):
    """A chat user: handshake, then check every MESSAGE; senders also SAY.

    In a room (``--rooms``) the same checks run on ROOM_MESSAGE: the hot
    path differs only by :attr:`delivery` and :attr:`parse`.
    """

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
        # Instance attributes, not class ones: the hot path reads them.
        #: The frame type that is load, and its parser (a room's with rooms).
        self.delivery: int = _MESSAGE
        self.parse: Callable[[bytes], tuple[int, int, int]] = parseMessage
        self.sayType: int = _SAY
        #: Put before every SAY text: ``room.`` for ROOM_SAY.
        self.sayPrefix = b""
        #: The room to enter (``r{index mod rooms}``), "" for the default room.
        self.room = f"r{index % config.rooms}" if config.rooms else ""
        self.joined = self.versioned = False

    def label(self) -> str:
        return f"user {self.name}"

    def connectionMade(self) -> None:
        Conn.connectionMade(self)
        hello = self.name.encode()
        if self.part.config.password:
            hello += b"." + secret(self.part.config.password)
        self.transport.write(PACK(FrameType.HELLO, len(hello)) + hello)

    def frameReceived(self, ftype: int, payload: bytes) -> None:
        if ftype == self.delivery:
            try:
                sender, seq, stamp = self.parse(payload)
            except (IndexError, ValueError):
                self.part.counts.unexpected += 1
                self.part.example(f"{self.name}: bad MESSAGE {payload[:60]!r}")
                return
            part = self.part
            self.checker.feed(sender, seq)
            # One total order (chatd.bench.order): the running hash, inline.
            self.received += 1
            self.orderHash = hash((self.orderHash, sender, seq))
            if not self.received % ORDER_CHECKPOINT:
                part.counts.orders[note(self.received, self.orderHash, self.room)] += 1
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
            ready = PACK(FrameType.READY, 0)
            if self.room:
                ready += PACK(FrameType.VERSION, 3) + b"1.2"
            self.transport.write(ready)
        elif ftype == FrameType.JOIN:
            if payload == self.welcome and not self.active.called:
                if self.room:
                    self.joined = True
                    self.enter()
                else:
                    self.active.callback(self)
        elif ftype in _ROOM_EVENTS:
            if ftype == FrameType.ROOM_JOIN and not self.active.called:
                self.entered(payload)
        elif ftype == FrameType.VERSION:
            if payload != b"1.2" and not self.active.called:
                self.active.errback(SetupRefused(f"VERSION answered {payload!r}"))
                return
            self.versioned = True
            self.enter()
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

    def enter(self) -> None:
        """ENTER the room once both ACTIVE and speaking 1.2."""
        if self.joined and self.versioned:
            room = self.room.encode()
            self.transport.write(PACK(FrameType.ENTER, len(room)) + room)

    def entered(self, payload: bytes) -> None:
        """A ROOM_JOIN before setup ended: ours (``room.`` + our JOIN) is the
        ENTER's acknowledgement, with the room's spelling; the load is then
        that room's ROOM_MESSAGEs."""
        room, _, who = payload.partition(b".")
        if who != self.welcome:
            return  # another member entering
        self.delivery = FrameType.ROOM_MESSAGE
        self.parse = roomParser(room)
        self.sayType = FrameType.ROOM_SAY
        self.sayPrefix = room + b"."
        self.active.callback(self)

    def go(self) -> None:
        if self.sender is None:
            return
        self.running = True
        rate = self.part.config.rate
        if rate:
            self._ticker = task.LoopingCall(self.tick, OpenLoop(rate, now_us()))
            self._ticker.clock = self.part.reactor
            self._ticker.start(0.005)
        else:
            self.fill()

    def fill(self) -> None:
        """Closed loop: top up to ``window`` unacknowledged messages."""
        n = self.window - self.inflight
        if n > 0:
            self.queue(b"".join(self.say() for _ in range(n)))

    def tick(self, pace: OpenLoop) -> None:
        """Open loop: send what the rate owes since the last tick."""
        n = pace.owed(now_us())
        if n:
            self.queue(b"".join(self.say() for _ in range(n)))

    def say(self) -> bytes:
        assert self.sender is not None  # only senders SAY
        text = self.sayPrefix + sayText(self.sender, self.seq, now_us(), self.size)
        self.seq += 1
        self.inflight += 1
        self.part.counts.sent += 1
        return PACK(self.sayType, len(text)) + text

    def stopSending(self) -> None:
        self.running = False
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        if not self.inflight:
            self.part.drained(self)

    def ping(self) -> defer.Deferred:
        """Fires once everything sequenced before the PING has arrived."""
        self.ponged = defer.Deferred()
        self.transport.write(PACK(FrameType.PING, 4) + b"last")
        return self.ponged

    def end(self) -> UserEnd:
        """Where this user's streams ended (:func:`figures.streamEnds`)."""
        index = self.index % self.part.config.rooms if self.room else 0
        return self.sender, self.seq, self.checker.last, index

    def collect(self, counts: Counts) -> None:
        c = self.checker
        counts.gaps += c.gaps
        counts.duplicates += c.duplicates
        counts.reorders += c.reorders
        counts.examples.extend(f"{self.name}: {e}" for e in c.examples)
        if self.room:
            counts.rooms[self.room] += self.received
            counts.orders[endNote(self.received, self.orderHash, self.room)] += 1
