"""chatd-client's rooms (protocol 1.2): commands, lines, the RoomBook, the Session.

The Session runs on a Clock and in-memory transports (tests/test_client_session.py's
harness); a 1.1 server is the one that answers VERSION with UNKNOWN_TYPE.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from chatd.client import commands as c
from chatd.client.render import render_frame, rooms_line, users_line
from chatd.client.roomchat import NO_ROOMS
from chatd.client.rooms import Request, RoomBook, topic_target
from chatd.wire import FrameType as T
from tests.test_client_session import SessionHarness

#: A terminal client's first frames: 1.1's handshake, then it asks for 1.2.
HANDSHAKE = [(T.HELLO, b"me"), (T.READY, b""), (T.VERSION, b"1.2")]


class RoomCommandTests(SynchronousTestCase):
    def test_parse(self):
        cases = {
            "/join dev": c.Join("dev"),
            "/JOIN  dev ": c.Join("dev"),
            "/join": c.Invalid("usage: /join ROOM"),
            "/join a b": c.Invalid("usage: /join ROOM"),
            "/join d.v": c.Invalid(
                "'d.v' is not a room name (1 to 32 of A-Z a-z 0-9 _ -)"
            ),
            "/part": c.Part(),
            "/part dev": c.Part("dev"),
            "/leave dev": c.Part("dev"),
            "/room dev": c.Switch("dev"),
            "/switch dev": c.Switch("dev"),
            "/room": c.Switch(),
            "/rooms": c.Rooms(),
            "/list": c.Rooms(),
            "/who": c.Who(),
            "/who dev": c.Who("dev"),
            "/topic dev ship it": c.Topic("dev ship it"),
            "/topic": c.Invalid("usage: /topic [ROOM] TEXT"),
        }
        for line, expected in cases.items():
            self.assertEqual(c.parse_command(line), expected, line)


class RoomRenderTests(SynchronousTestCase):
    def test_room_lines_are_marked_with_their_room(self):
        cases = {
            (T.ROOM_MESSAGE, b"dev.2.33.ann.hi. there"): "[dev] ann: hi. there",
            (T.ROOM_MESSAGE, b"dev.1.33.me.mine"): "[dev] You: mine",
            (T.ROOM_JOIN, b"dev.2.33.bob"): "[dev] * bob joined",
            (T.ROOM_JOIN, b"dev.1.33.me"): "[dev] * you joined",
            (T.ROOM_LEAVE, b"dev.2.33.bob.part"): "[dev] * bob left (part)",
            (T.ROOM_LEAVE, b"dev.2.33.bob.quit"): "[dev] * bob left",
            (T.ROOM_LEAVE, b"dev.1.33.me.part"): "[dev] * you left",
            (T.ROOM_TOPIC, b"dev.ship it"): "[dev] topic: ship it",
            (T.ROOM_TOPIC, b"dev."): "[dev] topic cleared",
            (T.ROOM_JOIN, b"dev.x"): "! malformed ROOM_JOIN frame from the server",
            (T.ROOM_MESSAGE, b"d\x1bv.2.33.ann.\x07"): "[d\ufffdv] ann: \ufffd",
        }
        for (ftype, payload), line in cases.items():
            self.assertEqual(render_frame(ftype, payload, 1, False), line, payload)
        self.assertEqual(
            render_frame(T.ROOM_JOIN, b"dev.2.33.bob", 1, True),
            "[dev] \x1b[2m* bob joined\x1b[0m",
        )

    def test_listings(self):
        self.assertEqual(rooms_line(b"dev.2.ship. it"), "dev (2 users): ship. it")
        self.assertEqual(rooms_line(b"ops.1."), "ops (1 user)")
        self.assertEqual(
            users_line([b"1.33.ann", b"2.40.bob"], False, "dev"),
            "[dev] * 2 here: ann, bob",
        )


class RoomBookTests(SynchronousTestCase):
    def setUp(self):
        self.book = RoomBook()
        self.book.answered(True)

    def enter(self, *rooms: str) -> None:
        for room in rooms:
            self.book.sent(Request("enter", room.lower(), switch=True))
            self.assertTrue(self.book.entered(room))

    def test_part_goes_back_to_the_room_before(self):
        book = self.book
        self.enter("Dev", "ops", "qa")
        self.assertEqual((book.current, book.prompt()), ("qa", "[qa]> "))
        book.switch("DEV")  # the server's spelling is kept
        self.assertEqual(book.current, "Dev")
        book.parting("dev")
        self.assertEqual(book.current, "qa")
        book.left("Dev")
        book.parting("qa")
        self.assertEqual(book.current, "ops")
        book.parting("ops")
        self.assertEqual((book.current, book.prompt()), (None, "> "))
        self.assertTrue(book.isIn("lobby"))
        self.assertFalse(book.isIn("dev"))

    def test_errors_answer_the_oldest_request_that_can_get_them(self):
        book = self.book
        for request in (
            Request("enter", "a"),
            Request("who", "b"),
            Request("topic", "c"),
        ):
            book.sent(request)
        self.assertEqual(book.refused("NO_SUCH_ROOM"), Request("who", "b"))
        self.assertIsNone(book.listed("who"))
        self.assertEqual(book.refused("TOO_MANY_ROOMS"), Request("enter", "a"))
        self.assertIsNone(book.refused("TOO_MANY_ROOMS"))
        self.assertEqual(book.refused("TOPIC_LOCKED"), Request("topic", "c"))

    def test_reconnect_enters_the_rooms_again(self):
        self.enter("dev", "ops")
        self.book.switch("dev")
        self.book.lost()
        self.assertEqual((self.book.rooms, self.book.current), (None, None))
        again = self.book.answered(True)
        self.assertEqual(
            again, [Request("enter", "dev", True), Request("enter", "ops", False)]
        )
        self.assertEqual(self.book.answered(True), [])

    def test_topic_target(self):
        self.enter("dev")
        self.book.switch(None)
        self.enter("ops")
        cases = {
            "dev ship it": ("dev", "ship it"),
            "DEV -": ("dev", ""),
            "ship it": ("ops", "ship it"),
            "dev": ("ops", "dev"),
            "qa ship": ("ops", "qa ship"),  # not a room we are in
            "-": ("ops", ""),
            "lobby hi": (None, "hi"),
        }
        for words, expected in cases.items():
            self.assertEqual(topic_target(words, self.book), expected, words)


class RoomSessionTests(SynchronousTestCase):
    def setUp(self):
        self.h = SessionHarness(interactive=True)
        self.h.join()

    def answer(self, version: bool = True) -> None:
        self.assertEqual(self.h.sent(), HANDSHAKE)
        if version:
            self.h.receive(T.VERSION, b"1.2")
        else:
            self.h.receive(T.ERROR, b"UNKNOWN_TYPE.type 18 not accepted from clients")
        self.h.shown()

    def type(self, line: str) -> list[tuple[int, bytes]]:
        self.h.console.dataReceived(line.encode() + b"\r")
        return self.h.sent()

    def test_join_say_who_part(self):
        h = self.h
        self.answer()
        self.assertEqual(self.type("/join dev"), [(T.ENTER, b"dev")])
        self.assertEqual(self.type("still lobby"), [(T.SAY, b"still lobby")])
        h.receive(T.ROOM_JOIN, b"Dev.1.33.me")
        h.receive(T.ROOM_TOPIC, b"Dev.ship it")
        self.assertEqual(h.console.editor.prompt, "[Dev]> ")
        self.assertEqual(self.type("hi"), [(T.ROOM_SAY, b"Dev.hi")])
        self.assertEqual(len(h.session.requests), 2)
        h.receive(T.MESSAGE, b"1.33.me.still lobby")
        h.receive(T.ROOM_MESSAGE, b"Dev.1.33.me.hi")
        h.receive(T.ROOM_JOIN, b"Dev.2.40.bob")
        h.receive(T.ROOM_MESSAGE, b"Dev.2.40.bob.yo")
        self.assertEqual(len(h.session.requests), 0)
        self.assertEqual(self.type("/who"), [(T.ROOM_WHO, b"Dev")])
        self.assertEqual(self.type("/who lobby"), [(T.WHO, b"")])
        h.receive(T.USERS, b"1.33.me\n2.40.bob")
        h.receive(T.USERS, b"")
        h.receive(T.USERS, b"1.33.me\n2.40.bob\n3.196.cy")
        h.receive(T.USERS, b"")
        self.assertEqual(self.type("/rooms"), [(T.LIST, b"")])
        h.receive(T.ROOMS, b"lobby.3.\nDev.2.ship it")
        h.receive(T.ROOMS, b"")
        self.assertEqual(self.type("/topic -"), [(T.TOPIC, b"Dev.")])
        self.assertEqual(self.type("/part"), [(T.PART, b"Dev")])
        self.assertEqual(h.console.editor.prompt, "> ")
        h.receive(T.ROOM_LEAVE, b"Dev.1.33.me.part")
        self.assertEqual(self.type("back"), [(T.SAY, b"back")])
        lines = [
            "[Dev] * you joined",
            "[Dev] topic: ship it",
            "You: still lobby",
            "[Dev] You: hi",
            "[Dev] * bob joined",
            "[Dev] bob: yo",
            "[Dev] * 2 here: me, bob",
            "* 3 online: me, bob, cy",
            "lobby (3 users)",
            "Dev (2 users): ship it",
            "[Dev] * you left",
        ]
        shown = h.shown()
        at = [shown.find(line) for line in lines]
        self.assertNotIn(-1, at, shown)
        self.assertEqual(at, sorted(at))
        self.assertEqual(
            h.session.rooms.book.pending,
            type(h.session.rooms.book.pending)([Request("topic", "Dev")]),
        )

    def test_room_errors_are_shown_with_the_servers_text(self):
        h = self.h
        self.answer()
        self.assertEqual(self.type("/who nosuch"), [(T.ROOM_WHO, b"nosuch")])
        h.receive(T.ERROR, b"NO_SUCH_ROOM.no room nosuch")
        self.assertIn("! server error: no room nosuch [NO_SUCH_ROOM]", h.shown())
        self.assertEqual(len(h.session.rooms.book.pending), 0)
        self.type("/join dev")
        h.receive(T.ERROR, b"TOO_MANY_ROOMS.at most 20 rooms each")
        self.assertIn("[TOO_MANY_ROOMS]", h.shown())
        self.assertEqual(h.console.editor.prompt, "> ")

    def test_local_refusals(self):
        h = self.h
        self.answer()
        for line, said in {
            "/part": "the default room cannot be left",
            "/part dev": "you are not in dev",
            "/room dev": "you are not in dev; /join dev first",
            "/topic hi": "the default room's topic is the operator's",
        }.items():
            self.assertEqual(self.type(line), [], line)
            self.assertIn(said, h.shown())
        h.receive(T.ROOM_JOIN, b"dev.1.33.me")  # e.g. entered again after a reconnect
        self.assertEqual(h.console.editor.prompt, "> ")
        self.assertEqual(self.type("/join DEV"), [])  # in it already: switch
        self.assertEqual(h.console.editor.prompt, "[dev]> ")
        self.assertEqual(self.type("x" * 1005), [])  # fits the lobby, not "dev."
        self.assertIn("text too long", h.shown())
        self.assertEqual(h.console.editor.buffer, "x" * 1005)  # kept, to shorten
        h.console.editor.set("")
        self.assertEqual(self.type("/room lobby"), [])
        self.assertEqual(h.console.editor.prompt, "> ")
        self.assertEqual(self.type("/topic dev " + "t" * 301), [])  # fits no frame
        self.assertIn("topic too long: 301 bytes, at most 300", h.shown())
        h.session.typed("/topic dev bell\x07")  # the editor would drop the key
        self.assertEqual(h.sent(), [])
        self.assertIn("topic must be one line", h.shown())

    def test_room_commands_wait_for_the_version_answer(self):
        h = self.h
        self.assertEqual(self.type("/join dev"), HANDSHAKE)
        h.receive(T.VERSION, b"1.2")
        self.assertEqual(h.sent(), [(T.ENTER, b"dev")])

    def test_a_1_1_server_chats_as_before(self):
        h = self.h
        self.type("/rooms")  # waits for the answer
        h.sent()
        h.receive(T.ERROR, b"UNKNOWN_TYPE.type 18 not accepted from clients")
        shown = h.shown()
        self.assertNotIn("UNKNOWN_TYPE", shown)
        self.assertIn(NO_ROOMS, shown)
        for line in ("/join dev", "/who dev", "/topic dev x", "/part dev", "/room dev"):
            self.assertEqual(self.type(line), [], line)
            self.assertIn(NO_ROOMS, h.shown())
        self.assertEqual(self.type("/who"), [(T.WHO, b"")])
        self.assertEqual(self.type("hi"), [(T.SAY, b"hi")])
        h.receive(T.ERROR, b"UNKNOWN_TYPE.type 99 not accepted from clients")
        self.assertIn("[UNKNOWN_TYPE]", h.shown())  # only VERSION's is swallowed

    def test_reconnect_enters_the_rooms_again(self):
        h = SessionHarness(interactive=True, reconnect=True)
        h.join()
        h.receive(T.VERSION, b"1.2")
        h.session.typed("/join dev")
        h.receive(T.ROOM_JOIN, b"dev.1.33.me")
        h.close()
        h.clock.advance(1)
        self.assertEqual(len(h.wires), 2)
        h.receive(T.WELCOME, b"me.5.33")
        self.assertEqual(h.console.editor.prompt, "> ")
        h.receive(T.VERSION, b"1.2")
        self.assertEqual(
            h.sent(),
            [*HANDSHAKE, (T.ENTER, b"dev")],
        )
        h.receive(T.ROOM_JOIN, b"dev.5.33.me")
        self.assertEqual(h.console.editor.prompt, "[dev]> ")


class PipeRoomTests(SynchronousTestCase):
    def test_a_script_asks_for_no_rooms(self):
        """Pipe mode's bytes are 1.1's: no VERSION, lines are SAYs."""
        h = SessionHarness(interactive=False)
        h.session.typed("/join dev")
        h.join()
        self.assertEqual(
            h.sent(), [(T.HELLO, b"me"), (T.READY, b""), (T.SAY, b"/join dev")]
        )
