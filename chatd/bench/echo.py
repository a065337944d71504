"""Echo load: each connection keeps ``--depth`` ECHO (or PING) requests in
flight and checks every reply byte for byte (:class:`EchoChecker`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import defer

from chatd.bench.checks import EchoChecker, PayloadGenerator
from chatd.bench.config import secret
from chatd.bench.conn import PACK, Conn, now_us
from chatd.bench.figures import Counts
from chatd.wire import FrameType

if TYPE_CHECKING:
    from chatd.bench.load import LoadPart

_ECHO = FrameType.ECHO
_ERROR = FrameType.ERROR
_HANDSHAKE_FRAMES = frozenset({FrameType.WELCOME, FrameType.JOIN, FrameType.LEAVE})


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` in pieces at ``cuts`` (sorted offsets inside it), for --split."""
    pieces = []
    start = 0
    for at in cuts:
        pieces.append(data[start:at])
        start = at
    pieces.append(data[start:])
    return pieces


class EchoConn(Conn):
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
        Conn.connectionMade(self)
        config = self.part.config
        if config.handshake:
            hello = f"{config.tag}e{self.number}".encode()
            if config.password:
                hello += b"." + secret(config.password)
            self.transport.write(
                PACK(FrameType.HELLO, len(hello)) + hello + PACK(FrameType.READY, 0)
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
        return PACK(ftype, len(payload)) + payload

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
        self._splitQueue.extend(cut(data, self.generator.splits(len(data))))
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
