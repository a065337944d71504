"""A session's protocol 1.2 requests: VERSION, and the room requests.

:class:`RoomRequests` is the part of :class:`chatd.core.session.Session`
that answers ENTER, PART, ROOM_SAY, LIST, ROOM_WHO and TOPIC with the
rules of docs/protocol.md ("Version 1.2"), in its order of which error
wins: NOT_READY, the room name's form (BAD_ROOM), the text, the room's
existence, membership, the limits, last the rate limit.  The steps go
through the sequencer as room events (chatd.core.roomevents) and take
effect when they are sequenced (chatd.core.roomcast), in every process
alike.  The default room is 1.1's: requests naming it are the 1.1 ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatd.core.connection import ACTIVE, State
from chatd.core.roomevents import RoomJoin, RoomLeave, RoomMessage, RoomTopic
from chatd.core.rooms import RoomError, key
from chatd.core.rules import MAX_PAYLOAD, ErrorCode, LeaveReason, valid_name
from chatd.core.rules import valid_text as validText
from chatd.core.sessionparts import SessionParts

if TYPE_CHECKING:
    from chatd.core.fanout import FanOut
    from chatd.core.hub import Hub
    from chatd.core.limits import TokenBucket
    from chatd.core.rooms import Room
    from chatd.core.roster import User

#: The longest topic (bytes); TOPIC beyond it is TOO_LONG.
MAX_TOPIC = 300


class RoomRequests(SessionParts):
    """Mixed into Session (its state, user, hub, error, reply, submit)."""

    #: Whether this connection asked for 1.2 (a VERSION was answered).
    speaks12 = False
    hub: Hub
    user: User | None
    #: room key -> the fan-out of that room this session is a member of.
    roomFanouts: dict[bytes, FanOut]
    state: State
    _batch: list[bytes] | None
    _bucket: TokenBucket | None

    if TYPE_CHECKING:
        from chatd.core.codec import IClientCodec

        codec: IClientCodec

        def _withinRate(self) -> bool: ...
        def _textAllowed(self, text: bytes) -> bool: ...
        def _submit(self, event: Any, hold: bool = True) -> None: ...
        def say(self, text: bytes) -> None: ...
        def who(self) -> None: ...

    def version(self, minor: int) -> None:
        """VERSION ``1.minor`` (minor >= 2): this connection speaks 1.2."""
        self.speaks12 = True
        self.reply(self.codec.version(2))

    # -- room requests (only once speaks12: the front end sees to that) ----

    def _room(self, name: bytes) -> bytes | None:
        """The room's key if the request may go on (ACTIVE, a good name)."""
        if not self._active():
            return None
        if not valid_name(name):
            self.error(ErrorCode.BAD_ROOM)
            return None
        return key(name)

    def _isDefault(self, roomKey: bytes) -> bool:
        return roomKey == key(self.hub.rooms.directory.default.name)

    def _sequence(self, event: Any) -> None:
        """Submit a room event after the replies this chunk already made
        (request order: they answer earlier requests)."""
        self._flushBatch()
        self._submit(event)

    def _refused(self, e: RoomError) -> None:
        self.error(ErrorCode[e.code], e.text)

    def _joined(self, name: bytes) -> Room | None:
        """Room ``name``, which this user must be in; else the refusal
        (NO_SUCH_ROOM, then NOT_IN_ROOM) is sent and None returned."""
        try:
            return self.hub.rooms.directory.joined(self.user.id, name)  # type: ignore[union-attr]
        except RoomError as e:
            self._refused(e)
            return None

    def enter(self, name: bytes) -> None:
        roomKey = self._room(name)
        if roomKey is None:
            return
        directory = self.hub.rooms.directory
        uid = self.user.id  # type: ignore[union-attr]
        if self._isDefault(roomKey):
            return self.error(ErrorCode.BAD_STATE, "every user is in the default room")
        try:
            directory.checkEnter(uid, name)
        except RoomError as e:
            return self._refused(e)
        if not self._withinRate():
            return
        room = directory.get(name)
        self._sequence(RoomJoin(room.name if room else name, self.user))  # type: ignore[arg-type]

    def part(self, name: bytes) -> None:
        roomKey = self._room(name)
        if roomKey is None:
            return
        if self._isDefault(roomKey):
            return self.error(
                ErrorCode.BAD_STATE, "the default room cannot be left (BYE leaves)"
            )
        room = self._joined(name)
        if room is None or not self._withinRate():
            return
        self._sequence(RoomLeave(room.name, self.user, LeaveReason.PART))  # type: ignore[arg-type]

    def roomSay(self, name: bytes, text: bytes | None) -> None:
        """ROOM_SAY (``text`` None: the request had no text part).

        The common case (ACTIVE, a good name and text, a room of one's own
        other than the default) is one test, a room look-up and the rate
        limit; anything else takes every check in the protocol's order,
        which also finds the error."""
        user: User = self.user  # type: ignore[assignment]
        if (
            self.state is ACTIVE
            and text is not None
            and len(text) <= MAX_PAYLOAD - len(name) - 1 - len(user.prefix)
            and valid_name(name)
            and validText(text)
        ):
            directory = self.hub.rooms.directory
            room = directory.rooms.get(key(name))
            if (
                room is not None
                and user.id in room.members
                and room is not directory.default
            ):
                if self._bucket is None or self._withinRate():
                    if self._batch:
                        self._flushBatch()
                    self._submit(RoomMessage(room.name, user, text))
                return
        roomKey = self._room(name)
        if roomKey is None:
            return
        if self._isDefault(roomKey) and text is not None:
            return self.say(text)
        if text is None:
            return self.error(ErrorCode.BAD_TEXT, "ROOM_SAY is room.text")
        if not validText(text):
            return self.error(ErrorCode.BAD_TEXT)
        limit = MAX_PAYLOAD - len(name) - 1 - len(self.user.prefix)  # type: ignore[union-attr]
        if len(text) > limit:
            return self.error(ErrorCode.TOO_LONG, f"at most {limit} bytes of text here")
        room = self._joined(name)
        if room is None or not self._withinRate():
            return
        self._sequence(RoomMessage(room.name, self.user, text))  # type: ignore[arg-type]

    def listRooms(self) -> None:
        if not self._active():
            return
        rooms = self.hub.rooms.directory
        active = len(self.hub.replica)  # the default room: every active user
        listing = [
            (name, active if room is rooms.default else count, topic)
            for room, (name, count, topic) in zip(
                rooms.rooms.values(), rooms.listing(), strict=True
            )
        ]
        for frame in self.codec.rooms(listing):
            self.reply(frame)

    def roomWho(self, name: bytes) -> None:
        roomKey = self._room(name)
        if roomKey is None:
            return
        if self._isDefault(roomKey):
            return self.who()
        if self.hub.rooms.directory.get(name) is None:
            return self.error(ErrorCode.NO_SUCH_ROOM)
        for frame in self.codec.members(self.hub.rooms.members(name)):
            self.reply(frame)

    def topic(self, name: bytes, text: bytes | None) -> None:
        """TOPIC (``text`` None: the request had no topic part)."""
        roomKey = self._room(name)
        if roomKey is None:
            return
        if text is None:
            return self.error(ErrorCode.BAD_TEXT, "TOPIC is room.topic")
        if text and not validText(text):
            return self.error(ErrorCode.BAD_TEXT)
        if len(text) > MAX_TOPIC:
            return self.error(ErrorCode.TOO_LONG, f"at most {MAX_TOPIC} bytes of topic")
        if self._isDefault(roomKey):
            return self.error(
                ErrorCode.TOPIC_LOCKED, "the default room's topic is the operator's"
            )
        room = self._joined(name)
        if room is None:
            return
        if room.locked:
            return self.error(
                ErrorCode.TOPIC_LOCKED, f"the topic of {room.name.decode()} is locked"
            )
        if not self._withinRate():
            return
        self._sequence(RoomTopic(room.name, text))
