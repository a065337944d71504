"""Runs of ROOM_SAY in one read (chatd.core.roomrequests' common case,
chatd.core.roomcast's ROOM_MESSAGE delivery), in memory: a pipelined run
gives every member, numbered or not, the bytes, history and replay that
the same requests one read at a time give; a bad frame, a second room or
the rate limit inside a run are answered at their places; IRC and
WebSocket members are spelt each message as before."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from chatd.web.websocket import WebSocketChat, clientAddress
from chatd.wire import FrameType as T
from chatd.wire import encode
from tests.memory import Peer, Server, parseFrames
from tests.test_irc import IrcPeer
from tests.test_web_adapter import FakeRequest, FakeWS, unwrap

#: What every server of these tests is: numbered events, no idle clock.
CONFIG = {"resume_window": 60.0, "history": 100, "idle_timeout": 0.0}


def speaker(server: Server, name: bytes, resumable: bool = False) -> Peer:
    """An ACTIVE 1.2 user (numbered if ``resumable``), its output read."""
    peer = server.connect()
    peer.send(T.VERSION, b"1.2")
    if resumable:
        peer.send(T.RESUMABLE)
    peer.send(T.HELLO, name)
    peer.send(T.READY)
    joins = [p for t, p in peer.received() if t == T.JOIN]
    peer.entry = joins[0]
    return peer


def roomSays(*said: bytes) -> list[bytes]:
    """ROOM_SAY frames, ``room.text`` each."""
    return [encode(T.ROOM_SAY, payload) for payload in said]


class Room:
    """A server with ann (the sender), bob and a numbered cat in ``dev``
    and ``ops``, and dan, in neither."""

    def __init__(self, **config: object) -> None:
        self.server = Server(**{**CONFIG, **config})
        self.ann = speaker(self.server, b"ann")
        self.bob = speaker(self.server, b"bob")
        self.cat = speaker(self.server, b"cat", resumable=True)
        self.dan = speaker(self.server, b"dan")
        for room in (b"dev", b"ops"):
            for peer in (self.ann, self.bob, self.cat):
                peer.send(T.ENTER, room)
        self.drain()

    @property
    def peers(self) -> list[Peer]:
        return [self.ann, self.bob, self.cat, self.dan]

    def drain(self) -> None:
        for peer in self.peers:
            peer.received()

    def heard(self) -> list[list[tuple[int, bytes]]]:
        return [peer.received() for peer in self.peers]

    def history(self, room: bytes) -> list[tuple[int, bytes]]:
        self.dan.send(T.HISTORY, room + b".100")
        return self.dan.received()


class RunTests(SynchronousTestCase):
    def test_a_run_is_what_the_frames_one_read_at_a_time_are(self) -> None:
        said = [b"dev.m%d" % i for i in range(20)]
        heard, histories = [], []
        for pipelined in (True, False):
            room = Room()
            frames = roomSays(*said)
            if pipelined:
                room.ann.sendRaw(b"".join(frames))
            else:
                for frame in frames:
                    room.ann.sendRaw(frame)
            heard.append(room.heard())
            histories.append(room.history(b"dev"))
        self.assertEqual(heard[0], heard[1])
        self.assertEqual(histories[0], histories[1])
        ann, bob, cat, dan = heard[0]
        want = [
            (T.ROOM_MESSAGE, b"dev." + room.ann.prefix + b"m%d" % i) for i in range(20)
        ]
        self.assertEqual(ann, want)
        self.assertEqual(bob, want)
        self.assertEqual([f for f in cat if f[0] != T.MARK], want)
        marks = [int(p.rsplit(b".", 1)[1]) for t, p in cat if t == T.MARK]
        self.assertEqual(len(marks), 20)
        self.assertEqual(marks, sorted(set(marks)))  # each its own number
        self.assertEqual(dan, [])
        history = histories[0]
        self.assertEqual(history[0], (T.HISTORY, b"dev.23"))  # 3 ROOM_JOINs too
        self.assertEqual(history[-40:], cat)  # the same numbers and frames

    def test_a_resume_replays_a_run_message_by_message(self) -> None:
        room = Room()
        token = self._token(room)
        last = self._lastMark(room)
        room.cat.lose()
        room.ann.sendRaw(b"".join(roomSays(*[b"dev.r%d" % i for i in range(5)])))
        peer = room.server.connect()
        since = encode(T.SINCE, b"dev.%d" % last)
        peer.sendRaw(encode(T.VERSION, b"1.2") + encode(T.RESUME, token) + since)
        peer.send(T.READY)
        got = peer.received()
        replay = [f for f in got if f[0] == T.ROOM_MESSAGE]
        self.assertEqual(
            [p for t, p in replay],
            [b"dev." + room.ann.prefix + b"r%d" % i for i in range(5)],
        )
        marks = [
            int(got[i - 1][1].rsplit(b".", 1)[1])
            for i, (t, _) in enumerate(got)
            if t == T.ROOM_MESSAGE
        ]
        self.assertEqual(len(marks), 5)
        self.assertTrue(all(m > last for m in marks), (marks, last))
        self.assertEqual(marks, sorted(set(marks)))

    def _token(self, room: Room) -> bytes:
        """cat again, as a new resumable user (its token kept)."""
        peer = room.server.connect()
        for ftype, payload in [
            (T.VERSION, b"1.2"),
            (T.RESUMABLE, b""),
            (T.HELLO, b"eve"),
        ]:
            peer.send(ftype, payload)
        token = [p for t, p in peer.received() if t == T.TOKEN][0]
        peer.send(T.READY)
        peer.send(T.ENTER, b"dev")
        room.cat = peer
        room.drain()
        return token

    def _lastMark(self, room: Room) -> int:
        room.ann.send(T.ROOM_SAY, b"dev.before")
        frames = room.cat.received()
        self.assertEqual(frames[-1][0], T.ROOM_MESSAGE)
        return int(frames[-2][1].rsplit(b".", 1)[1])

    def test_a_bad_frame_is_answered_at_its_place(self) -> None:
        room = Room()
        ann = room.ann
        frames = roomSays(b"dev.one", b"dev.\xff", b"dev.two", b"nosuch.x")
        frames += roomSays(b"dev", b"dev.three", b"DEV." + b"x" * 1010)
        ann.sendRaw(b"".join(frames) + encode(T.PING, b"p"))
        got = ann.received()
        said = [(T.ROOM_MESSAGE, b"dev." + ann.prefix + t) for t in (b"one", b"two")]
        self.assertEqual(got[0], said[0])
        self.assertEqual(got[1][1].split(b".")[0], b"BAD_TEXT")
        self.assertEqual(got[2], said[1])
        self.assertEqual(got[3][1].split(b".")[0], b"NO_SUCH_ROOM")
        self.assertEqual(got[4][1].split(b".")[0], b"BAD_TEXT")  # no text part
        self.assertEqual(got[5], (T.ROOM_MESSAGE, b"dev." + ann.prefix + b"three"))
        self.assertEqual(got[6][1].split(b".")[0], b"TOO_LONG")
        self.assertEqual(got[7], (T.PONG, b"p"))
        self.assertEqual(len(got), 8)
        self.assertEqual(
            [p for t, p in room.bob.received()],
            [b"dev." + ann.prefix + t for t in (b"one", b"two", b"three")],
        )

    def test_the_longest_text_passes_and_one_more_is_too_long(self) -> None:
        room = Room()
        ann = room.ann
        longest = 1016 - len(b"dev.") - len(ann.prefix)
        ann.sendRaw(
            b"".join(roomSays(b"dev." + b"a" * longest, b"dev." + b"b" * (longest + 1)))
        )
        got = ann.received()
        self.assertEqual(
            got[0], (T.ROOM_MESSAGE, b"dev." + ann.prefix + b"a" * longest)
        )
        self.assertEqual(got[1][1].split(b".")[0], b"TOO_LONG")
        self.assertEqual(len(got), 2)

    def test_two_rooms_interleaved_and_the_default_room(self) -> None:
        room = Room()
        ann = room.ann
        said = [b"dev.d0", b"ops.o0", b"Dev.d1", b"lobby.l0", b"ops.o1", b"dev.d2"]
        ann.sendRaw(b"".join(roomSays(*said)))
        lobby = (T.MESSAGE, ann.prefix + b"l0")

        def inRoom(name: bytes, text: bytes) -> tuple[int, bytes]:
            return (T.ROOM_MESSAGE, name + b"." + ann.prefix + text)

        # Each room's messages in request order, and each fan-out's at the
        # end of the turn in the order they began: dev's, ops', the lobby's.
        want = [
            inRoom(b"dev", b"d0"), inRoom(b"dev", b"d1"), inRoom(b"dev", b"d2"),
            inRoom(b"ops", b"o0"), inRoom(b"ops", b"o1"), lobby,
        ]  # fmt: skip
        self.assertEqual(ann.received(), want)
        self.assertEqual(room.bob.received(), want)
        self.assertEqual(room.dan.received(), [lobby])  # in neither room
        self.assertEqual(room.server.factory.hub.rooms.messages[b"dev"], 3 + 3)
        self.assertEqual(room.server.factory.hub.rooms.messages[b"ops"], 3 + 2)

    def test_a_run_when_rate_limited(self) -> None:
        room = Room(rate_limit=1.0, rate_burst=3)
        ann = room.ann
        room.server.clock.advance(10)  # the bucket full again after ENTERs
        ann.sendRaw(
            b"".join(roomSays(*[b"dev.m%d" % i for i in range(5)]))
            + encode(T.PING, b"p")
        )
        got = ann.received()
        self.assertEqual(
            got[:3],
            [(T.ROOM_MESSAGE, b"dev." + ann.prefix + b"m%d" % i) for i in range(3)],
        )
        self.assertEqual([p.split(b".")[0] for _, p in got[3:5]], [b"RATE_LIMITED"] * 2)
        self.assertEqual(got[5:], [(T.PONG, b"p")])
        self.assertEqual(len(room.bob.received()), 3)
        self.assertEqual(room.server.factory.hub.stats.errors["RATE_LIMITED"], 2)


class FrontEndTests(SynchronousTestCase):
    """An IRC and a WebSocket member of a room binary users say a run to."""

    def test_irc_and_websocket_members_get_every_message(self) -> None:
        server = Server(**CONFIG)
        ann, bob = speaker(server, b"ann"), speaker(server, b"bob")
        irc = IrcPeer(server, 50001)
        irc.register(b"ira")
        irc.send(b"JOIN #dev")
        request = FakeRequest()
        sock = WebSocketChat(
            server.factory,
            request,  # type: ignore[arg-type]
            clientAddress(request, frozenset()),  # type: ignore[arg-type]
        )
        sock.negotiationStarted(FakeWS())
        sock.negotiationFinished()
        sock.bytesMessageReceived(
            b"".join(
                encode(t, p)
                for t, p in [(T.VERSION, b"1.2"), (T.HELLO, b"web"), (T.READY, b"")]
            )
        )
        sock.bytesMessageReceived(encode(T.ENTER, b"dev"))
        for peer in (ann, bob):
            peer.send(T.ENTER, b"dev")
        server.clock.advance(0)
        irc.lines(), request.transport.clear(), ann.received(), bob.received()
        ann.sendRaw(b"".join(roomSays(*[b"dev.a%d" % i for i in range(4)])))
        bob.sendRaw(b"".join(roomSays(b"dev.b0", b"ops.x", b"dev.b1")))
        order = [(ann, b"a0"), (ann, b"a1"), (ann, b"a2"), (ann, b"a3")]
        order += [(bob, b"b0"), (bob, b"b1")]
        names = {ann: b"ann", bob: b"bob"}
        self.assertEqual(
            irc.lines(),
            [b":%s!%s@chatd PRIVMSG #dev :%s" % (names[p], names[p], t)
             for p, t in order],
        )  # fmt: skip
        web = []
        for message in unwrap(request.transport.value()):
            frames, rest = parseFrames(message)
            self.assertEqual(rest, b"")
            web += frames
        self.assertEqual(
            web, [(T.ROOM_MESSAGE, b"dev." + p.prefix + t) for p, t in order]
        )
        self.assertEqual(
            [p for t, p in ann.received() if t == T.ROOM_MESSAGE],
            [b"dev." + p.prefix + t for p, t in order],
        )
