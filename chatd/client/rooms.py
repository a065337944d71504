"""The terminal client's rooms (protocol 1.2): which it is in and types into.

:class:`RoomBook` is pure bookkeeping, no frames and no I/O, so the rules
are unit-tested alone: whether the server speaks 1.2 (VERSION answered) or
1.1 (VERSION refused with ``UNKNOWN_TYPE``), the rooms the user is in (as
the server spells them; compared case-insensitively), the current room
typed into and the ones before it (``/part`` goes back), and the room
requests still unanswered.  Replies come in request order, so an ERROR
with a room code answers the oldest pending request that can get it, and a
USERS or ROOMS listing the oldest WHO or LIST: that is how a ``/who dev``
answer is labelled ``[dev]``.  The default room is ``None`` here: it needs
no name on the wire (SAY, WHO), whatever ``--default-room`` the server has.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

#: The name the user may type for the default room (chatd's default).
DEFAULT_ROOM = "lobby"

#: For each room ERROR code, the requests it can answer (docs/protocol.md,
#: "which error wins").  BAD_STATE answers an ENTER or PART once ACTIVE.
_ANSWERS = {
    "BAD_ROOM": {"enter", "part", "who", "topic", "say", "history"},
    "NO_SUCH_ROOM": {"part", "who", "topic", "say", "history"},
    "NOT_IN_ROOM": {"part", "topic", "say"},
    "BAD_STATE": {"enter", "part"},
    "TOO_MANY_ROOMS": {"enter"},
    "TOPIC_LOCKED": {"topic"},
}
ROOM_ERRORS = frozenset(_ANSWERS)
#: Codes that answer a SAY or WHISPER as well: a room request's only when
#: none of those is in flight (the Session asks only then).
_ANSWERS.update(
    BAD_TEXT={"topic"},
    TOO_LONG={"topic"},
    RATE_LIMITED={"enter", "part", "topic"},
    UNAVAILABLE={"enter", "part", "topic", "who", "list"},
)


def room_key(name: str | None) -> str | None:
    """How two spellings of a room compare; None for the default room."""
    if name is None or name.lower() == DEFAULT_ROOM:
        return None
    return name.lower()


@dataclass(frozen=True)
class Request:
    """A room request sent and not answered yet.

    ``kind`` is enter, part, who, list, topic, say or history; ``room`` None is the
    default room; ``switch``: an ENTER whose room becomes the current one.
    """

    kind: str
    room: str | None = None
    switch: bool = False


class RoomBook:
    """One user's rooms across the connections of a session."""

    def __init__(self) -> None:
        #: None until the server answered VERSION (1.2) or refused it (1.1).
        self.rooms: bool | None = None
        #: key -> the server's spelling, in the order entered.
        self.joined: dict[str, str] = {}
        #: The current room (None: the default), then the earlier ones, newest last.
        self.current: str | None = None
        self._earlier: list[str] = []
        self.pending: deque[Request] = deque()
        #: Rooms to enter again after a reconnect, and which was current.
        self.rejoin: list[str] = []
        self._rejoinCurrent: str | None = None
        #: The rooms as they were at the loss, for a resumed session.
        self._saved: tuple[dict[str, str], str | None, list[str]] = ({}, None, [])

    # -- the connection ----------------------------------------------------

    def lost(self) -> None:
        """The connection is gone: the next server knows none of our rooms."""
        if self.joined:
            self.rejoin = list(self.joined.values())
            self._rejoinCurrent = self.current
            self._saved = (dict(self.joined), self.current, list(self._earlier))
        self.rooms = None
        self.joined.clear()
        self.current = None
        self._earlier.clear()
        self.pending.clear()

    def answered(self, rooms: bool) -> list[Request]:
        """VERSION answered (True) or refused (False): the ENTERs to send again."""
        self.rooms = rooms
        names, self.rejoin = self.rejoin, []
        self._saved = ({}, None, [])
        if not rooms:
            return []
        want = room_key(self._rejoinCurrent)
        return [Request("enter", name, room_key(name) == want) for name in names]

    def saved(self) -> set[str]:
        """The keys of the rooms we were in when the connection was lost."""
        return set(self._saved[0])

    def resumed(self) -> None:
        """The session was resumed: we never left our rooms."""
        joined, self.current, self._earlier = self._saved
        self.joined.update(joined)
        self.rooms = True
        self.rejoin, self._saved = [], ({}, None, [])

    # -- names ---------------------------------------------------------------

    def name(self, room: str | None) -> str:
        """How a room is shown: the server's spelling where known."""
        if room is None:
            return DEFAULT_ROOM
        return self.joined.get(room.lower(), room)

    def isIn(self, room: str | None) -> bool:
        key = room_key(room)
        return key is None or key in self.joined

    def target(self, room: str | None) -> str | None:
        """The room a command is about: ``room`` (None for the default
        room), or the current one when no room was given."""
        if room is None:
            return self.current
        return None if room_key(room) is None else self.name(room)

    # -- requests and their answers -------------------------------------

    def sent(self, request: Request) -> None:
        self.pending.append(request)

    def _take(self, kinds: set[str], room: str | None = None) -> Request | None:
        """The oldest pending request of one of ``kinds`` (for ``room``)."""
        for request in self.pending:
            if request.kind in kinds and (
                room is None or room_key(request.room) == room_key(room)
            ):
                self.pending.remove(request)
                return request
        return None

    def refused(self, code: str) -> Request | None:
        """An ERROR with a room code: the request it answers, if one is pending."""
        return self._take(_ANSWERS.get(code, set()))

    def listed(self, kind: str) -> Request | None:
        """A whole USERS (kind who) or ROOMS (kind list) answer came."""
        return self._take({kind})

    def said(self, room: str) -> None:
        """Our own ROOM_MESSAGE copy came back."""
        self._take({"say"}, room)

    def historyCame(self, room: str) -> None:
        """HISTORY's answer for ``room`` came."""
        self._take({"history"}, room)

    def topicSet(self, room: str) -> None:
        self._take({"topic"}, room)

    def entered(self, room: str) -> bool:
        """Our own ROOM_JOIN (``room`` as the server spells it); True if it
        was asked to become the current room."""
        self.joined[room.lower()] = room
        request = self._take({"enter"}, room)
        if request is not None and request.switch:
            self.switch(room)
            return True
        return False

    def parting(self, room: str) -> None:
        """A PART is sent: stop typing into the room at once (a line typed
        before the answer would be NOT_IN_ROOM), back to the one before."""
        key = room.lower()
        self._earlier = [r for r in self._earlier if r != key]
        if room_key(self.current) == key:
            self.current = None
            while self._earlier:
                earlier = self._earlier.pop()
                if earlier in self.joined:
                    self.current = self.joined[earlier]
                    break

    def left(self, room: str) -> None:
        """Our own ROOM_LEAVE: we are out of the room."""
        self._take({"part"}, room)
        self.parting(room)
        self.joined.pop(room.lower(), None)

    def switch(self, room: str | None) -> None:
        """Type into ``room`` (one we are in; None: the default room)."""
        key = room_key(room)
        previous = room_key(self.current)
        if key == previous:
            return
        if previous is not None:
            self._earlier = [r for r in self._earlier if r != previous]
            self._earlier.append(previous)
        self.current = None if key is None else self.joined[key]

    def prompt(self) -> str:
        return "> " if self.current is None else f"[{self.current}]> "


def topic_target(words: str, book: RoomBook) -> tuple[str | None, str]:
    """``/topic [ROOM] TEXT``: (room, topic).  The first word is the room
    when it names one we are in and text follows; else the whole line is
    the current room's topic.  ``-`` alone clears the topic."""
    first, _, rest = words.partition(" ")
    room: str | None = book.current
    if rest.strip() and room_key(first) is not None and book.isIn(first):
        room, words = book.name(first), rest.strip()
    elif rest.strip() and room_key(first) is None and first.lower() == DEFAULT_ROOM:
        room, words = None, rest.strip()
    return room, "" if words == "-" else words
