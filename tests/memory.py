"""In-memory chatd for unit tests: a ChatFactory on a task.Clock, no sockets.

:class:`Server` builds the factory; :meth:`Server.connect` gives a
:class:`Peer` (protocol + StringTransport + a frame parser for what the
server wrote); :meth:`Server.active` gives a named, ACTIVE user.
"""

from __future__ import annotations

from twisted.internet import address, task
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from chatd.server.config import Config
from chatd.server.factory import ChatFactory
from chatd.server.protocol import ChatProtocol
from chatd.wire import HEADER, HEADER_SIZE, FrameType, encode

T = FrameType


def parseFrames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Whole frames in ``data`` and the unparsed rest."""
    frames = []
    offset = 0
    while len(data) - offset >= HEADER_SIZE:
        ftype, size = HEADER.unpack_from(data, offset)
        end = offset + HEADER_SIZE + size
        if end > len(data):
            break
        frames.append((ftype, data[offset + HEADER_SIZE : end]))
        offset = end
    return frames, data[offset:]


class TurnClock(task.Clock):
    """A task.Clock that can also run one reactor turn.

    ``advance(0)`` runs calls scheduled while it runs too; :meth:`turn` runs
    only those due when it begins, as one reactor iteration does.
    """

    def turn(self) -> None:
        now = self.seconds()
        for call in [c for c in self.calls if c.getTime() <= now]:
            if call in self.calls:
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


class Peer:
    """One client connection to the in-memory server."""

    def __init__(self, server: Server, port: int, host: str = "127.0.0.1") -> None:
        self.server = server
        addr = address.IPv4Address("TCP", host, port)
        self.proto: ChatProtocol = server.factory.buildProtocol(addr)
        self.transport = StringTransport(peerAddress=addr)
        self._seen = 0
        #: ``id.color.name`` of this user once ACTIVE (from its own JOIN).
        self.entry = b""
        self.proto.makeConnection(self.transport)

    def sendRaw(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def send(self, ftype: int, payload: bytes = b"") -> None:
        self.sendRaw(encode(ftype, payload))

    def received(self) -> list[tuple[int, bytes]]:
        """Frames the server wrote since the last call (flushing the fan-out)."""
        self.server.clock.advance(0)
        data = self.transport.value()[self._seen :]
        frames, rest = parseFrames(data)
        self._seen = len(self.transport.value()) - len(rest)
        return frames

    def types(self) -> list[int]:
        return [t for t, _ in self.received()]

    @property
    def closing(self) -> bool:
        """The server began to close this connection."""
        return self.transport.disconnecting

    def lose(self) -> None:
        """The TCP connection goes away (peer closed it, or the close ended)."""
        self.proto.connectionLost(Failure(ConnectionDone()))

    @property
    def prefix(self) -> bytes:
        return self.entry + b"."


class Server:
    """A ChatFactory with a task.Clock; ``Config`` fields as keywords."""

    def __init__(
        self, sequencer: object = None, roster: object = None, **config: object
    ) -> None:
        self.clock = TurnClock()
        self.config = Config(**config)  # type: ignore[arg-type]
        self.factory = ChatFactory(
            self.config,
            clock=self.clock,
            sequencer=sequencer,  # type: ignore[arg-type]
            roster=roster,  # type: ignore[arg-type]
        )
        self._ports = iter(range(40000, 65536))

    def connect(self, host: str = "127.0.0.1") -> Peer:
        return Peer(self, next(self._ports), host)

    def named(self, name: bytes, password: bytes | None = None) -> Peer:
        """A connection that got WELCOME for ``name`` (state NAMED)."""
        peer = self.connect()
        peer.send(T.HELLO, name if password is None else name + b"." + password)
        frames = peer.received()
        assert [t for t, _ in frames] == [T.WELCOME], frames
        return peer

    def active(self, name: bytes, password: bytes | None = None) -> Peer:
        """A connection that is ACTIVE as ``name``, its output read."""
        peer = self.named(name, password)
        peer.send(T.READY)
        frames = peer.received()
        assert frames and frames[0][0] == T.JOIN, frames
        peer.entry = frames[0][1]
        return peer

    def users(self, *names: bytes) -> list[Peer]:
        """Several ACTIVE users; every one's output read."""
        peers = [self.active(n) for n in names]
        for p in peers:
            p.received()
        return peers


class ChatTestCase(SynchronousTestCase):
    """Base for protocol tests: ``self.server``, and assertions on replies."""

    config: dict = {}

    def setUp(self) -> None:
        self.server = Server(**self.config)

    def assertError(self, frame: tuple[int, bytes], code: str) -> None:
        """``frame`` is ERROR ``code.text`` with a non-empty text."""
        ftype, payload = frame
        self.assertEqual(ftype, T.ERROR, frame)
        got, dot, text = payload.partition(b".")
        self.assertEqual(got.decode(), code)
        self.assertTrue(dot and text, f"ERROR without text: {payload!r}")
        text.decode("utf-8")

    def assertOnlyError(self, peer: Peer, code: str, fatal: bool = False) -> None:
        """``peer`` got exactly one ERROR ``code``; closed only if ``fatal``."""
        frames = peer.received()
        self.assertEqual(len(frames), 1, frames)
        self.assertError(frames[0], code)
        self.assertEqual(peer.closing, fatal, f"{code}: closing={peer.closing}")
