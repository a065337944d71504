"""The terminal client's room commands and frames (protocol 1.2), for the Session.

:class:`RoomChat` turns ``/join``, ``/part``, ``/rooms``, ``/topic``,
``/room`` and ``/who`` into frames, lines typed into a room into ROOM_SAY,
and the server's room frames into lines marked with their room, keeping
the :class:`~chatd.client.rooms.RoomBook` up to date.  It asks for 1.2 with
VERSION once ACTIVE; a 1.1 server refuses that with ``UNKNOWN_TYPE``, and
then only room commands change: they say the server has no rooms.  Given
callables to send and to show, so tests drive it without a socket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from chatd.client import commands, render
from chatd.client.inflight import InFlight
from chatd.client.rooms import ROOM_ERRORS, Request, RoomBook, room_key, topic_target
from chatd.wire import ErrorCode, FrameType, join_fields, split_fields

if TYPE_CHECKING:
    from chatd.client.console import Console

NO_ROOMS = "this server speaks protocol 1.1: it has no rooms"
#: The version asked for (docs/protocol.md, "Opting in").
VERSION = b"1.2"
#: The longest topic in bytes (docs/protocol.md, TOPIC).
MAX_TOPIC = 300
_ROOM_FRAMES = {
    FrameType.ROOM_MESSAGE,
    FrameType.ROOM_JOIN,
    FrameType.ROOM_LEAVE,
    FrameType.ROOM_TOPIC,
}


class RoomChat:
    """Rooms for one Session: commands out, room frames in."""

    def __init__(
        self,
        console: Console,
        send: Callable[[FrameType, bytes], None],
        requests: InFlight,
    ) -> None:
        self.console = console
        self._send = send
        #: The Session's SAYs and WHISPERs in flight: a ROOM_SAY is one more.
        self.requests = requests
        #: The longest SAY text (chatd.client.commands.max_text), set at WELCOME.
        self.limit = 0
        self.book = RoomBook()
        self.asked = False
        self.waiting: list[tuple[commands.Command, str]] = []
        self._users: list[bytes] = []
        self._rooms: list[bytes] = []
        #: VERSION's answer when it came before HELLO (chatd.client.resume).
        self._early: bool | None = None
        #: Told of our own ROOM_JOIN, and of a HISTORY refused (the resume's).
        self.onEntered: Callable[[str], None] = lambda room: None
        self.onHistoryRefused: Callable[[str | None], None] = lambda room: None

    def _prompt(self) -> None:
        self.console.setPrompt(self.book.prompt())

    # -- the connection ----------------------------------------------------

    def preAnswered(self, rooms: bool) -> None:
        """VERSION was answered before HELLO: the rooms wait for ACTIVE."""
        self.asked = True
        self._early = rooms

    def active(self, resumed: bool = False) -> None:
        """The connection is ACTIVE: ask for 1.2 on a terminal (a script's
        lines are SAYs to the default room, as in 1.1: it needs no rooms),
        unless that was asked before HELLO; ``resumed``: we never left."""
        early, self._early = self._early, None
        if early is not None:
            return self._answered(early, resumed)
        if not self.console.interactive:
            return
        self.asked = True
        self._send(FrameType.VERSION, VERSION)

    def lost(self) -> None:
        self.book.lost()
        self.asked = False
        self._early = None
        self._users, self._rooms = [], []

    def _answered(self, rooms: bool, resumed: bool = False) -> None:
        if resumed:
            self.book.resumed()
            self._prompt()
        else:
            for request in self.book.answered(rooms):
                self._request(request, FrameType.ENTER, request.room or "")
        waiting, self.waiting = self.waiting, []
        for command, line in waiting:
            self.submit(command, line)

    # -- commands ----------------------------------------------------------

    def submit(self, command: commands.Command, line: str) -> bool:
        """Send ``command`` if it is about rooms; False if the Session should
        (a SAY or WHO in the default room, or anything else)."""
        if isinstance(command, commands.Say):
            return self._say(command.text, line)
        if isinstance(command, commands.Who) and self.book.target(command.room) is None:
            self.book.sent(Request("who"))
            return False  # WHO, as in 1.1
        if not isinstance(command, (commands.Who, *commands.ROOM_COMMANDS)):
            return False
        if self.book.rooms is None and self.asked:
            self.waiting.append((command, line))
        elif not self.book.rooms:
            self.console.warn(NO_ROOMS)
        else:
            self._roomCommand(command)
        return True

    def _request(self, request: Request, ftype: FrameType, payload: str) -> None:
        self.book.sent(request)
        self._send(ftype, payload.encode("utf-8"))

    def _roomCommand(self, command: commands.Command) -> None:
        book = self.book
        if isinstance(command, commands.Join):
            if book.isIn(command.room):
                return self._switch(command.room)
            return self._request(
                Request("enter", command.room, True), FrameType.ENTER, command.room
            )
        if isinstance(command, commands.Rooms):
            return self._request(Request("list"), FrameType.LIST, "")
        if isinstance(command, commands.Switch):
            return self._switch(command.room)
        if isinstance(command, commands.Topic):
            room, topic = topic_target(command.words, book)
            if room is None:
                return self.console.warn("the default room's topic is the operator's")
            problem = topic and commands.check_text(topic, MAX_TOPIC)
            if problem:
                return self.console.warn(problem.replace("text", "topic"))
            payload = join_fields(room, topic).decode("utf-8")
            return self._request(Request("topic", room), FrameType.TOPIC, payload)
        assert isinstance(command, (commands.Who, commands.Part))
        room = book.target(command.room)
        if room is None:  # not a WHO: that went as in 1.1
            return self.console.warn("the default room cannot be left (/quit leaves)")
        if isinstance(command, commands.Who):
            return self._request(Request("who", room), FrameType.ROOM_WHO, room)
        if not book.isIn(room):  # PART
            return self.console.warn(f"you are not in {room}")
        book.parting(room)
        self._prompt()
        self._request(Request("part", room), FrameType.PART, book.name(room))

    def _switch(self, room: str | None) -> None:
        if room is not None and room_key(room) is not None and not self.book.isIn(room):
            return self.console.warn(f"you are not in {room}; /join {room} first")
        self.book.switch(room)
        self._prompt()

    def _say(self, text: str, line: str) -> bool:
        room = self.book.current
        if room is None:
            return False
        space = self.limit - len(room.encode()) - 1  # "room." before id.color.name.
        problem = commands.check_text(text, space)
        if problem:
            self.console.restore(line)
            self.console.warn(problem)
            return True
        self.requests.said()
        self._send(FrameType.ROOM_SAY, join_fields(room, text))
        return True

    # -- frames from the server --------------------------------------------

    def frame(self, ftype: int, payload: bytes, my_id: int | None) -> bool:
        """Handle a 1.2 frame, or a USERS answer; False if it is not one."""
        if ftype == FrameType.VERSION:
            self._answered(True)
            return True
        if ftype == FrameType.USERS:
            return self._listing(payload, self._users, "who")
        if ftype == FrameType.ROOMS:
            return self._listing(payload, self._rooms, "list")
        if ftype not in _ROOM_FRAMES:
            return False
        try:
            self._track(ftype, payload, my_id)
        except ValueError:
            pass  # rendered below as malformed
        line = render.render_frame(ftype, payload, my_id, self.console.color)
        if line is not None:
            self.console.show(line)
        return True

    def _track(self, ftype: int, payload: bytes, my_id: int | None) -> None:
        """What a room frame changes in the book (ours: acknowledgements)."""
        room_bytes, rest = split_fields(payload, 2)
        room = render.safe(room_bytes)
        if ftype == FrameType.ROOM_TOPIC:
            return self.book.topicSet(room)
        if int(split_fields(rest, 2)[0]) != my_id:
            return
        if ftype == FrameType.ROOM_MESSAGE:
            return self.requests.acked()  # our copy: the oldest SAY arrived
        if ftype == FrameType.ROOM_JOIN:
            self.book.entered(room)
            self.onEntered(room)
        else:
            self.book.left(room)
        self._prompt()

    def _listing(self, payload: bytes, gathered: list[bytes], kind: str) -> bool:
        if payload:
            gathered.extend(payload.split(b"\n"))
            return True
        entries = list(gathered)
        gathered.clear()
        request = self.book.listed(kind)
        color = self.console.color
        if kind == "who":
            room = request.room if request is not None else None
            self.console.show(render.users_line(entries, color, room))
            return True
        for entry in entries:
            try:
                self.console.show(render.rooms_line(entry))
            except ValueError:
                self.console.warn("malformed ROOMS entry from the server")
        return True

    def error(self, code: str) -> bool:
        """An ERROR: True if it was ours to swallow (VERSION refused: 1.1)."""
        if (
            code == ErrorCode.UNKNOWN_TYPE.name
            and self.asked
            and self.book.rooms is None
        ):
            self._answered(False)
            return True
        if code in ROOM_ERRORS or not len(self.requests):
            request = self.book.refused(code)
            if request is not None and request.kind == "history":
                self.onHistoryRefused(request.room)
                return True  # asked on our own: nothing the user did
        return False
