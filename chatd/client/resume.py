"""The terminal client's history and resume (protocol 1.2), for the Session.

:class:`Resume` asks for 1.2 before HELLO (VERSION, then RESUMABLE), keeps
the TOKEN (in memory only, never shown) and, per room, the numbers of the
events seen (each MARK names the next frame's room and number).  When the
connection drops by itself it makes the Session dial again for a bounded
time and take the session back with RESUME and one SINCE per room, so
nothing said meanwhile is lost; the replay ends at the PONG of a PING sent
right behind READY, which is when "reconnected, N missed messages
delivered" is shown.  On entering a room it asks HISTORY and shows the
answer marked as history before that room's live lines; numbers already
seen are never shown twice.  A 1.1 server (VERSION refused) or one without
tokens (RESUMABLE ``0``) gets no resume attempt.  In pipe mode too: a
script's lines in flight at the drop are confirmed by their own copies in
the replay, and the rest go after it (chatd.client.pacing), so none is
lost or sent twice.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from chatd.client import render
from chatd.client.roomchat import VERSION
from chatd.client.rooms import Request
from chatd.wire import FATAL_ERRORS, ErrorCode, FrameType, split_fields

if TYPE_CHECKING:
    from chatd.client.session import Session

#: Frames of a room's order: the server sends each right after its MARK.
NUMBERED = frozenset(
    {
        FrameType.MESSAGE,
        FrameType.JOIN,
        FrameType.LEAVE,
        FrameType.ROOM_MESSAGE,
        FrameType.ROOM_JOIN,
        FrameType.ROOM_LEAVE,
        FrameType.ROOM_TOPIC,
    }
)
MESSAGES = frozenset({FrameType.MESSAGE, FrameType.ROOM_MESSAGE})
#: 1.1's frames of the default room: their MARK names it.
_DEFAULT_ROOM = frozenset({FrameType.MESSAGE, FrameType.JOIN, FrameType.LEAVE})
#: Events of history shown on entering a room.
HISTORY_COUNT = 20
#: How long to try to resume after a drop, and the first retry's delay.
RETRY_FOR = 30.0
FIRST_DELAY = 0.5
MAX_DELAY = 8.0
#: The PING behind READY after a RESUME: its PONG ends the replay.
REPLAYED = b"resumed"
#: Numbers remembered per room to drop repeats (HISTORY's answer overlaps).
KEEP = 1000
_FATAL = frozenset(code.name for code in FATAL_ERRORS)


def parse_mark(payload: bytes) -> tuple[str, int] | None:
    """MARK ``room.number`` as (room, number); None if malformed."""
    try:
        room, value = split_fields(payload, 2)
    except ValueError:
        return None
    if not room or not value.isdigit() or len(value) > 20:
        return None
    return room.decode("ascii", "replace"), int(value)


class Seen:
    """The numbers of one room's events seen, the last few hundred."""

    def __init__(self) -> None:
        self.numbers: set[int] = set()
        self._order: deque[int] = deque()

    def add(self, number: int) -> bool:
        """Remember ``number``; False if it was seen already."""
        if number in self.numbers:
            return False
        self.numbers.add(number)
        self._order.append(number)
        if len(self._order) > KEEP:
            self.numbers.discard(self._order.popleft())
        return True


class Resume:
    """History and resume for one Session, across its connections."""

    def __init__(self, session: Session, enabled: bool) -> None:
        self.session = session
        #: Ask for 1.2 before HELLO at all (the CLI on a terminal).
        self.enabled = enabled
        self._token: bytes | None = None
        #: The resume window the server announced (seconds; 0: no token).
        self.window = 0
        #: This connection's events are numbered (RESUMABLE answered, or RESUME).
        self.numbered = False
        #: This connection sent RESUME and has not been answered yet.
        self.resuming = False
        #: room key -> (spelling, the last number seen live): what SINCE says.
        self.last: dict[str, tuple[str, int]] = {}
        self._seen: dict[str, Seen] = {}
        self._default: str | None = None
        self._mark: tuple[str, int] | None = None
        #: room key -> live frames held until its HISTORY answer is shown.
        self._held: dict[str, list[tuple[int, bytes]]] = {}
        #: (room key, frames still to come) of a HISTORY answer being read.
        self._answer: tuple[str, int] | None = None
        #: Missed messages counted during a replay (None: not replaying).
        self.replayed: int | None = None
        self._gone: set[str] = set()
        self._dropped: float | None = None
        self._delay = FIRST_DELAY
        session.rooms.onEntered = self._entered
        session.rooms.onHistoryRefused = self._release

    @property
    def resumable(self) -> bool:
        """A token is held: a drop is resumed, not a new login."""
        return self._token is not None

    def forget(self) -> None:
        """The server ended the session (a fatal ERROR): nothing to resume."""
        self._token = None

    # -- the handshake -----------------------------------------------------

    def connected(self) -> bool:
        """A connection is up: ask for 1.2 first; False if HELLO goes now."""
        if not self.enabled:
            return False
        self.session.state = "version"
        self.session._send(FrameType.VERSION, VERSION)
        return True

    def _answered(self, speaks12: bool) -> None:
        """VERSION answered (1.2) or refused (1.1): RESUME, or HELLO as before."""
        session = self.session
        session.rooms.preAnswered(speaks12)
        if speaks12 and self._token is not None:
            self.resuming = True
            session.state = "hello"
            return session._send(FrameType.RESUME, self._token)
        if speaks12:
            session._send(FrameType.RESUMABLE)
        session._hello()

    def welcomed(self) -> bool:
        """WELCOME: True if it answers our RESUME; then SINCE each room known."""
        resumed, self.resuming = self.resuming, False
        self._dropped, self._delay = None, FIRST_DELAY
        if not resumed:
            # A new session: numbers seen in an earlier one (a server since
            # restarted may give them again) say nothing about this one.
            self._seen.clear()
            self.last.clear()
            return False
        self.numbered = True
        keep = self.session.rooms.book.saved()
        for key, (room, number) in self.last.items():
            if key == self._default or key in keep:
                self.session._send(FrameType.SINCE, f"{room}.{number}".encode())
        return True

    def ready(self) -> None:
        """READY after a RESUME is sent: count the replay up to the PONG."""
        self.replayed = 0
        self._gone.clear()
        self.session._send(FrameType.PING, REPLAYED)

    def lost(self) -> None:
        """The connection is gone; a held room's lines are shown, not lost."""
        self.numbered = self.resuming = False
        self._mark = self._answer = None
        self.replayed = None
        for key in list(self._held):
            self._release(key)

    def retryDelay(self) -> float | None:
        """Seconds until the next attempt to resume; None once it is no use
        (no token, or tried for RETRY_FOR or the server's window)."""
        if self._token is None:
            return None
        now = self.session.reactor.seconds()
        if self._dropped is None:
            self._dropped = now
        left = self._dropped + min(RETRY_FOR, self.window) - now
        if left <= 0:
            self._token = None
            return None
        delay, self._delay = self._delay, min(self._delay * 2, MAX_DELAY)
        return min(delay, left)

    # -- frames from the server --------------------------------------------

    def frame(self, ftype: int, payload: bytes) -> bool:
        """Take a 1.2 history or resume frame, or drop a repeat; False if
        the Session shows ``ftype`` as usual."""
        session = self.session
        if ftype == FrameType.VERSION and session.state == "version":
            self._answered(True)
            return True
        if not self.numbered and not self.resuming and self._answer is None:
            if ftype == FrameType.RESUMABLE:
                self.numbered = True
                self.window = int(payload) if payload.isdigit() else 0
                return True
            return False  # the fast path of an unnumbered connection
        if ftype == FrameType.TOKEN:
            self._token = payload if 0 < len(payload) <= 64 else None
            return True
        if ftype == FrameType.MARK:
            self._mark = parse_mark(payload)
            return True
        if ftype == FrameType.HISTORY:
            return self._historyStarts(payload)
        mark, self._mark = self._mark, None
        if self._answer is not None:
            return self._historyFrame(ftype, payload, mark)
        if (
            ftype == FrameType.PONG
            and payload == REPLAYED
            and self.replayed is not None
        ):
            count, self.replayed = self.replayed, None
            s = "" if count == 1 else "s"
            session.console.warn(f"reconnected, {count} missed message{s} delivered")
            session.replayed()
            return True
        if mark is None or ftype not in NUMBERED:
            return False
        room, number = mark
        key = room.lower()
        if ftype in _DEFAULT_ROOM:
            self._default = key
        if not self._seen.setdefault(key, Seen()).add(number):
            return True  # shown already
        if number > self.last.get(key, ("", -1))[1]:
            self.last[key] = (room, number)
        if key in self._held:
            self._held[key].append((ftype, payload))
            return True
        if self.replayed is not None and ftype in MESSAGES:
            self.replayed += 1
        return False

    def error(self, code: str, text: str) -> bool:
        """An ERROR: True if it was ours (1.1's VERSION refusal, BAD_TOKEN,
        HISTORY_GONE)."""
        session = self.session
        if code == ErrorCode.UNKNOWN_TYPE.name and session.state == "version":
            self._answered(False)
            return True
        if code == ErrorCode.BAD_TOKEN.name and self.resuming:
            self.resuming, self._token = False, None
            session.console.warn(
                f"the session could not be resumed (BAD_TOKEN): joining as "
                f"{session.name} again; messages meanwhile are not shown"
            )
            session._send(FrameType.RESUMABLE)
            session._hello()
            return True
        if code == ErrorCode.HISTORY_GONE.name:
            room = render.safe(text.partition(".")[0].encode())
            if room.lower() not in self._gone:
                self._gone.add(room.lower())
                session.console.warn(f"some messages were lost in {room}")
            return True
        if code in _FATAL:
            self.forget()
        return False

    # -- history -----------------------------------------------------------

    def _entered(self, room: str) -> None:
        """We are in ``room`` (our ROOM_JOIN): show what was said before."""
        if not self.numbered:
            return
        rooms = self.session.rooms
        rooms.book.sent(Request("history", room))
        self._held.setdefault(room.lower(), [])
        self.session._send(FrameType.HISTORY, f"{room}.{HISTORY_COUNT}".encode())

    def _historyStarts(self, payload: bytes) -> bool:
        try:
            room, count = split_fields(payload, 2)
            n = int(count)
        except ValueError:
            return True  # malformed: nothing to wait for
        name = render.safe(room)
        self.session.rooms.book.historyCame(name)
        if n > 0:
            self._answer = (name.lower(), n)
        else:
            self._release(name)
        return True

    def _historyFrame(
        self, ftype: int, payload: bytes, mark: tuple[str, int] | None
    ) -> bool:
        """One event of HISTORY's answer: shown marked, unless seen already."""
        assert self._answer is not None
        key, left = self._answer
        self._answer = (key, left - 1) if left > 1 else None
        if mark is not None and self._seen.setdefault(mark[0].lower(), Seen()).add(
            mark[1]
        ):
            session = self.session
            me = session.me.id if session.me is not None else None
            color = session.console.color
            line = render.render_frame(ftype, payload, me, color)
            if line is not None:
                session.console.show(render.history_line(line, color))
        if self._answer is None:
            self._release(key)
        return True

    def _release(self, room: str | None) -> None:
        """The room's history is shown (or will not come): its live lines now."""
        held = self._held.pop((room or "").lower(), None) or []
        for ftype, payload in held:
            self.session.handle(ftype, payload)
