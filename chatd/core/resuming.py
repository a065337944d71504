"""Resume: a session that outlives its connection (docs/protocol.md,
"History and resume").

Part of :class:`chatd.core.session.Session` (a mixin, for the size of one
module).  A client that asked (RESUMABLE) has its events numbered and gets
a token after WELCOME; when its connection is lost, the session is
*detached* for the window instead of closed: no LEAVE, the name held,
still in its rooms, still its user's for targeted events (a kick).  A new
connection's RESUME takes the user over (the old session is dropped
without a LEAVE), SINCE says where the client is in each room, and READY
replays the history after that, then goes live, with nothing lost or
repeated: the history and the fan-outs are fed by the same sequenced
events in the same turn (:meth:`chatd.core.fanout.FanOut.add`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatd.core.connection import ACTIVE, CLOSED, CONNECTED, NAMED, settled
from chatd.core.events import Leave
from chatd.core.limits import TokenBucket
from chatd.core.rooms import key
from chatd.core.rules import ErrorCode, LeaveReason, valid_name
from chatd.core.sessionparts import SessionParts

if TYPE_CHECKING:
    from chatd.core.codec import IClientCodec
    from chatd.core.connection import IConnection, State
    from chatd.core.fanout import FanOut
    from chatd.core.hub import Hub
    from chatd.core.resumes import Last, Replay, Taken
    from chatd.core.roster import User

log = Logger(namespace="chatd")

#: The longest number SINCE and HISTORY accept (20 digits: 64 bits).
_MAX_DIGITS = 20


def _decimal(text: bytes | None) -> int | None:
    if text is None or not 0 < len(text) <= _MAX_DIGITS or not text.isdigit():
        return None
    return int(text)


class Resuming(SessionParts):
    """RESUMABLE, RESUME, SINCE, HISTORY and the detached state."""

    state: State
    user: User | None
    hub: Hub
    conn: IConnection
    codec: IClientCodec
    fanout: FanOut
    _bucket: TokenBucket | None
    _disconnected: bool
    _outputBlocked: bool
    _batch: list[bytes] | None
    #: Its events are numbered (RESUMABLE or RESUME).
    numbered = False
    #: room key -> SINCE's number, from a RESUME's WELCOME to READY.
    _since: dict[bytes, int] | None = None
    _window: Any = None
    ended: str | None

    if TYPE_CHECKING:

        def _answered(self, result: object) -> object: ...

    @property
    def resumeWindow(self) -> float:
        """Seconds a dropped session is kept (0: resume is not served)."""
        if self.hub.resumes is None:
            return 0.0
        return self.hub.config.resume_window

    # -- inputs ------------------------------------------------------------

    def resumable(self, codec: IClientCodec) -> None:
        """RESUMABLE: number this connection's events (spelled by
        ``codec``, its front end's numbered format) and give it a token."""
        if self.state is not CONNECTED or self.numbered:
            return self.error(ErrorCode.BAD_STATE, "RESUMABLE comes before HELLO, once")
        self._numbered(codec)
        self.reply(codec.resumable(self.resumeWindow))  # type: ignore[attr-defined]

    def resume(self, token: bytes, codec: IClientCodec) -> None:
        """RESUME ``token``: take a kept session's user over."""
        if self.state is not CONNECTED:
            return self.error(ErrorCode.BAD_STATE, "RESUME comes instead of HELLO")
        resumes = self.hub.resumes
        if resumes is None:
            return self._resumed(None, codec)
        self._await(resumes.take(token), self._resumed, codec)

    def _resumed(self, taken: Taken | None, codec: IClientCodec) -> None:
        """RESUME's answer: the user is this session's now, or BAD_TOKEN."""
        if taken is not None and self.state is not CONNECTED:
            # Closed while the answer came: the user is nobody's now.
            self.hub.roster.release(taken.user)
            self.hub.sequencer.submit(Leave(taken.user, LeaveReason.ERROR))
            return
        if taken is None:
            log.info("resume refused conn={conn} peer={peer}", conn=self.conn.number,
                     peer=self.conn.peer)  # fmt: skip
            return self.error(ErrorCode.BAD_TOKEN)
        self._numbered(codec)
        self.user = user = taken.user
        # The rate limit is the user's, not the connection's.
        self._bucket = taken.bucket
        self.fanout.target(self)  # type: ignore[arg-type]  # a kick ends it
        self.state = NAMED
        self._since = {}
        self.reply(codec.welcome(user))
        self._giveToken()
        log.info(
            "resume conn={conn} id={id} name={name} peer={peer}",
            conn=self.conn.number,
            id=user.id,
            name=user.display,
            peer=self.conn.peer,
        )

    def since(self, room: bytes, value: bytes | None) -> None:
        """SINCE ``room.number``: replay the room after ``number`` at READY."""
        if self.state is not NAMED or self._since is None:
            return self.error(
                ErrorCode.BAD_STATE, "SINCE comes after a RESUME's WELCOME"
            )
        if not valid_name(room):
            return self.error(ErrorCode.BAD_ROOM)
        seen = _decimal(value)
        if seen is None:
            return self.error(ErrorCode.BAD_TEXT, "SINCE is room.number")
        directory = self.hub.rooms.directory
        found = directory.get(room)
        if found is None or (
            found is not directory.default and self.user.id not in found.members  # type: ignore[union-attr]
        ):
            return self.error(ErrorCode.NOT_IN_ROOM)
        self._since[key(room)] = seen

    def history(self, room: bytes, rest: bytes | None, codec: IClientCodec) -> None:
        """HISTORY ``room.count[.before]``: the room's last events, spelled
        by ``codec`` (numbered, whatever this connection's own format)."""
        if not self._active():
            return
        if not valid_name(room):
            return self.error(ErrorCode.BAD_ROOM)
        countText, dot, beforeText = (rest or b"").partition(b".")
        count = _decimal(countText)
        before = _decimal(beforeText) if dot else None
        if not count or (dot and before is None):
            return self.error(ErrorCode.BAD_TEXT, "HISTORY is room.count[.before]")
        found = self.hub.rooms.directory.get(room)
        if found is None:
            return self.error(ErrorCode.NO_SUCH_ROOM)
        resumes = self.hub.resumes
        if resumes is None:
            return self._answerHistory([], found.name, codec)
        asked = resumes.last(key(room), count, before)
        self._await(asked, self._answerHistory, found.name, codec)

    def _answerHistory(self, events: Last, name: bytes, codec: IClientCodec) -> None:
        if self.state is ACTIVE and not self._disconnected:
            frames, n = codec.history(name, events)  # type: ignore[attr-defined]
            self.reply(frames, n)

    def _await(self, d: Deferred[Any], then: Callable[..., None], *args: Any) -> None:
        """``then(answer, *args)`` once ``d`` has it, which may be later (a
        worker asks the main process): until then the connection's later
        input waits (replies keep request order); no answer is UNAVAILABLE."""
        if not settled(d):
            self.conn.holdInput(True)
            d.addBoth(self._answered)
        d.addCallback(then, *args).addErrback(self._unavailable)

    # -- the session's life ------------------------------------------------

    def _numbered(self, codec: IClientCodec) -> None:
        self.numbered = True
        self.codec = codec
        self.fanout = self.hub.fanoutFor(codec)

    def _giveToken(self) -> None:
        """After WELCOME: the token, if this session may be resumed."""
        if self.numbered and self.resumeWindow > 0:
            token = self.hub.resumes.issue(self)  # type: ignore[union-attr,arg-type]
            self.reply(self.codec.token(token))  # type: ignore[attr-defined]

    def _readyResumed(self) -> None:
        """READY after a RESUME (the session is ACTIVE now): live again,
        after what it missed."""
        since, self._since = self._since or {}, None
        resumes = self.hub.resumes
        if resumes is None or not since:
            return self._replay({})
        self._await(resumes.replay(since), self._replay)

    def _replay(self, replay: Replay) -> None:
        """Live from this turn on, after the replay of what it missed."""
        if self.state is not ACTIVE or self._disconnected:
            return  # closed or dropped while the replay came
        rooms = self.hub.rooms
        self.fanout.add(self)  # type: ignore[arg-type]
        rooms.rejoin(self)  # type: ignore[arg-type]
        if self._outputBlocked:
            self.fanout.pause(self)  # type: ignore[arg-type]
        directory = rooms.directory
        order = [directory.default, *directory.roomsOf(self.user.id)]  # type: ignore[union-attr]
        replayed = 0
        for room in order:
            found = replay.get(key(room.name))
            if found is None:
                continue
            gone, held = found
            if gone is not None:
                self.error(ErrorCode.HISTORY_GONE, f"{room.name.decode()}.{gone}")
            frames, n = self.codec.replay(room.name, held)  # type: ignore[attr-defined]
            if n:
                self.reply(frames, n)
                replayed += n
        log.info(
            "resumed conn={conn} id={id} name={name} replayed={n}",
            conn=self.conn.number,
            id=self.user.id,  # type: ignore[union-attr]
            name=self.user.display,  # type: ignore[union-attr]
            n=replayed,
        )

    def keep(self, why: str) -> bool:
        """The connection was lost (or the client closed its side): keep
        the session for the window (True), if it may be resumed and was
        not ended on purpose.  Again once kept: True, nothing more."""
        if self._window is not None:
            return True
        window = self.resumeWindow
        if self.state is not ACTIVE or window <= 0 or not self.numbered:
            return False
        self._disconnected = True
        self._batch = None
        self.setTimeout(None)
        self.fanout.detach(self)  # type: ignore[arg-type]
        self.hub.rooms.depart(self, drain=False)  # type: ignore[arg-type]
        self.hub.detached[self] = None  # type: ignore[index]
        self._window = self.hub.resumes.keep(self, window)  # type: ignore[union-attr,arg-type]
        log.info(
            "detach conn={conn} id={id} name={name} why={why} window={window}",
            conn=self.conn.number,
            id=self.user.id,  # type: ignore[union-attr]
            name=self.user.display,  # type: ignore[union-attr]
            why=why,
            window=window,
        )
        return True

    def _windowOver(self) -> None:
        self._window = None
        self.close(LeaveReason.ERROR)
        self.ended = "resume window over"

    def _endResume(self) -> None:
        """The session ends for good: its token and its window go."""
        if self._window is not None and self._window.active():
            self._window.cancel()
        self._window = None
        self.hub.detached.pop(self, None)  # type: ignore[call-overload]
        if self.hub.resumes is not None:
            self.hub.resumes.forget(self)  # type: ignore[arg-type]

    def _handOver(self) -> None:
        """Another connection resumed this user: this session stops at
        once, without a LEAVE and without a word to its connection."""
        self._endResume()
        self.setTimeout(None)
        self.fanout.remove(self)  # type: ignore[arg-type]
        self.hub.rooms.depart(self, drain=False)  # type: ignore[arg-type]
        self.state = CLOSED
        self.ended = "resumed elsewhere"
        self.hub.sessions.pop(self, None)  # type: ignore[call-overload]
        if not self._disconnected:
            self._disconnected = True
            self._batch = None
            self.conn.dropUnstarted()
            self.conn.hangUp()
