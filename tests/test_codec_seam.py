"""The session speaks no wire format: a front end with another codec drives
the same rules through the semantic inputs, and its users get every event
in their own spelling, encoded once per codec, in the one total order."""

from __future__ import annotations

from zope.interface import implementer
from zope.interface.verify import verifyObject

from chatd.core.codec import IClientCodec
from chatd.core.events import Event, Join, Leave, Message, Messages
from chatd.core.session import ACTIVE, CLOSED, IConnection, Session
from chatd.server.binary import BINARY
from chatd.wire.eventframes import frameOf
from tests.memory import ChatTestCase, Server, T, parseFrames


@implementer(IClientCodec)
class LineCodec:
    """A made-up text format: one line per output."""

    name = "lines"

    def __init__(self) -> None:
        self.encoded = 0

    def welcome(self, user):  # type: ignore[no-untyped-def]
        return b"welcome %s %d\n" % (user.name, user.id)

    def echo(self, payload: bytes) -> bytes:
        return b"echo " + payload + b"\n"

    def pong(self, payload: bytes) -> bytes:
        return b"pong " + payload + b"\n"

    def error(self, code, text):  # type: ignore[no-untyped-def]
        return b"error " + code.name.encode() + b"\n"

    def notice(self, code: str, text: str) -> bytes:
        return f"notice {code}\n".encode()

    def users(self, replica):  # type: ignore[no-untyped-def]
        return [b"users " + b",".join(u.name for u in replica.active) + b"\n"]

    def version(self, minor: int) -> bytes:
        return b"version 1.%d\n" % minor

    def rooms(self, listing):  # type: ignore[no-untyped-def]
        return [b"rooms " + b",".join(name for name, _, _ in listing) + b"\n"]

    def members(self, users):  # type: ignore[no-untyped-def]
        return [b"members " + b",".join(u.name for u in users) + b"\n"]

    def event(self, event: Event) -> bytes:
        self.encoded += 1
        if isinstance(event, Message | Messages):  # Messages: a run of frames
            frames, _ = parseFrames(frameOf(event))
            return b"".join(b"message " + p + b"\n" for _, p in frames)
        if isinstance(event, Join):
            return b"join " + event.user.name + b"\n"
        if isinstance(event, Leave):
            return b"leave " + event.user.name + b"\n"
        return b"event\n"


@implementer(IConnection)
class LineConnection:
    """A front end's connection that keeps what it is given."""

    peer = "127.0.0.1:1"
    host = "127.0.0.1"

    def __init__(self, number: int, codec: LineCodec) -> None:
        self.number = number
        self.codec = codec
        self.data = b""
        self.hungUp = False

    def write(self, data: bytes) -> None:
        self.data += data

    def backlog(self) -> int:
        return 0

    def hangUp(self) -> None:
        self.hungUp = True

    def holdInput(self, hold: bool) -> None:
        pass

    def dropUnstarted(self) -> None:
        pass

    def lines(self) -> list[bytes]:
        out, self.data = self.data.splitlines(), b""
        return out


class CodecSeamTests(ChatTestCase):
    def setUp(self) -> None:
        self.server = Server()
        self.hub = self.server.factory.hub
        self.codec = LineCodec()
        verifyObject(IClientCodec, self.codec)
        verifyObject(IClientCodec, BINARY)

    def lineUser(self, number: int = 1) -> tuple[Session, LineConnection]:
        conn = LineConnection(number, self.codec)
        verifyObject(IConnection, conn)
        session = Session(self.hub)
        session.attach(conn)
        session.begin()
        return session, conn

    def test_same_rules_other_spelling(self) -> None:
        """Handshake, errors and their precedence come from the session;
        only the spelling is the codec's."""
        s, conn = self.lineUser()
        s.say(b"too early")
        s.echo(b"x")
        s.hello(b"bad name", None)
        s.hello(b"ann", None)
        s.ready()
        s.whisper(b"nobody", b"hi")
        s.whisper(b"ann", None)
        s.who()
        s.ping(b"t")
        self.server.clock.advance(0)
        self.assertEqual(
            conn.lines(),
            [b"error NOT_READY", b"echo x", b"error BAD_NAME", b"welcome ann 1",
             b"join ann", b"error NO_SUCH_USER", b"error BAD_TEXT", b"users ann",
             b"pong t"],
        )  # fmt: skip
        self.assertIs(s.state, ACTIVE)

    def test_one_order_each_spelling_encoded_once(self) -> None:
        """A binary user and two line users see the same events in the same
        order; each event is encoded once for all the line users."""
        bob = self.server.active(b"bob")
        ann, annConn = self.lineUser(1)
        cat, catConn = self.lineUser(2)
        for s, name in ((ann, b"ann"), (cat, b"cat")):
            s.hello(name, None)
            s.ready()
        self.server.clock.advance(0)
        annConn.lines(), catConn.lines(), bob.received()
        before = self.codec.encoded
        bob.send(T.SAY, b"one")
        ann.say(b"two")
        cat.bye()
        self.server.clock.advance(0)
        self.assertEqual(self.codec.encoded - before, 3)  # 3 events, 2 users
        self.assertEqual(
            annConn.lines(),
            [b"message %s.one" % bob.entry, b"message 2.%d.ann.two" % ann.user.color,  # type: ignore[union-attr]
             b"leave cat"],
        )  # fmt: skip
        self.assertEqual(
            [(t, p.rsplit(b".", 1)[-1]) for t, p in bob.received()],
            [(T.MESSAGE, b"one"), (T.MESSAGE, b"two"), (T.LEAVE, b"quit")],
        )
        self.assertIs(cat.state, CLOSED)
        self.assertTrue(catConn.hungUp)
