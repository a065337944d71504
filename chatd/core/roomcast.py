"""Delivery of protocol 1.2's room events to the members of each room.

:class:`RoomCast` is an :class:`~chatd.core.sequencer.IEventSink` beside
the 1.1 fan-out.  From the sequenced room events it keeps this process's
:class:`~chatd.core.rooms.Directory` (which rooms exist, who is in each:
the same in every process of a cluster, because every process reads the
same events in the same order), and it delivers each room event to the
room's local members through a :class:`~chatd.core.fanout.FanOut` of
their own (one per room and wire format, made when the first local member
enters and dropped when the last leaves), so a delivery costs nothing for
rooms a connection is not in, and an idle room holds no fan-out.

A user who leaves the server (a 1.1 LEAVE, sequenced once) leaves every
room it was in: each process turns that one LEAVE into the ROOM_LEAVEs
its local members are owed, at the LEAVE's place in the order, so no
extra event is sequenced and a node that died still has its users leave
their rooms everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from zope.interface import implementer

from chatd.core.events import Event, Leave, Notice
from chatd.core.fanout import FanOut
from chatd.core.history import IHistoryStore
from chatd.core.roomevents import RoomJoin, RoomLeave, RoomLock, RoomMessage, RoomTopic
from chatd.core.rooms import Directory, key
from chatd.core.sequencer import IEventSink

if TYPE_CHECKING:
    from chatd.core.roomevents import RoomEvent
    from chatd.core.roster import User
    from chatd.core.session import Session


@implementer(IEventSink)
class RoomCast:
    """The rooms of one process and their local members (module doc)."""

    def __init__(
        self,
        callLater: Callable[..., Any],
        maxBacklog: int,
        default: bytes = b"lobby",
        maxRooms: int = 1000,
        maxPerUser: int = 20,
        configured: Iterable[tuple[bytes, bytes, bool]] = (),
    ) -> None:
        self._callLater = callLater
        self.maxBacklog = maxBacklog
        self.directory = Directory(default, maxRooms, maxPerUser, configured)
        #: Users in some room (ROOM_WHO lists them), by id.
        self.users: dict[int, User] = {}
        #: Local active sessions by user id: the ones delivered to here.
        self.local: dict[int, Session] = {}
        #: room key -> codec name -> the fan-out of its local members.
        self.fanouts: dict[bytes, dict[str, FanOut]] = {}
        #: Room events delivered, per room key (for /status).
        self.messages: dict[bytes, int] = {}
        #: Each room's last events (HISTORY, a resume); None: not kept.
        self.history: IHistoryStore | None = None

    # -- local sessions -------------------------------------------------------

    def arrive(self, session: Session) -> None:
        """``session`` is active here: room events for its user reach it."""
        self.local[session.user.id] = session  # type: ignore[union-attr]

    def depart(self, session: Session, drain: bool) -> None:
        """``session`` is closing: it gets nothing more from any room (its
        user leaves the rooms when its LEAVE is sequenced)."""
        uid = session.user.id  # type: ignore[union-attr]
        if self.local.get(uid) is session:
            del self.local[uid]
        for roomKey, fanout in list(session.roomFanouts.items()):
            self._drop(roomKey, session, fanout, drain)

    # -- IEventSink -------------------------------------------------------------

    def rejoin(self, session: Session) -> None:
        """A resumed ``session`` takes its user's rooms back: live in each
        from now on (what it missed comes from the history)."""
        self.arrive(session)
        uid = session.user.id  # type: ignore[union-attr]
        for room in self.directory.roomsOf(uid):
            if room is self.directory.default:
                continue
            roomKey = key(room.name)
            fanout = self._fanoutFor(roomKey, session)
            session.roomFanouts[roomKey] = fanout
            fanout.add(session)
            if session.outputBlocked:
                fanout.pause(session)

    def deliver(self, event: Event) -> None:
        room = event.room
        if room is not None:
            if type(event) is RoomMessage:
                self._message(event, room)
                return
            self._roomEvent(event, room)  # type: ignore[arg-type]
            self._ended(room)
            return
        if type(event) is Leave:
            self._leftServer(event)
        history = self.history
        if history is not None and event.target is None and type(event) is not Notice:
            history.record(self.directory.defaultKey, event)

    def _message(self, event: RoomMessage, name: bytes) -> None:
        """A ROOM_MESSAGE, the frequent room event: what :meth:`_roomEvent`
        and :meth:`_ended` do with one, without their branches (counted,
        kept, then sent to each format's fan-out of the room)."""
        roomKey = key(name)
        messages = self.messages
        messages[roomKey] = messages.get(roomKey, 0) + 1
        history = self.history
        if history is not None:
            history.record(roomKey, event)
        byCodec = self.fanouts.get(roomKey)
        if byCodec is not None:
            for fanout in tuple(byCodec.values()):
                if len(fanout):
                    fanout.deliverFrames(fanout.encode(event))  # type: ignore[misc]
        if history is not None and roomKey not in self.directory.rooms:
            history.drop(roomKey)

    def _roomEvent(self, event: RoomEvent, name: bytes) -> None:
        roomKey = key(name)
        directory = self.directory
        if type(event) is RoomLock:  # the operator's: no member sees it
            locked = directory.get(name)
            if locked is not None:
                locked.locked = event.locked
            return
        self.messages[roomKey] = self.messages.get(roomKey, 0) + 1
        if self.history is not None:
            self.history.record(roomKey, event)
        if type(event) is RoomJoin:
            user = event.user
            room = directory.add(user.id, name)
            self.users[user.id] = user
            session = self.local.get(user.id)
            if session is not None:
                fanout = self._fanoutFor(roomKey, session)
                session.roomFanouts[roomKey] = fanout
                self._send(roomKey, event, joining=session)
                if session.outputBlocked:  # its transport is full: not live
                    fanout.pause(session)
                if room.topic:
                    topic = RoomTopic(room.name, room.topic)
                    fanout.send(session, session.codec.event(topic))
                return
        elif type(event) is RoomTopic:
            topical = directory.get(name)
            if topical is not None:
                topical.topic = event.topic
        self._send(roomKey, event)
        if type(event) is RoomLeave:
            uid = event.user.id
            directory.drop(uid, name)
            self._forgetUser(uid)
            session = self.local.get(uid)
            if session is not None:
                mine = session.roomFanouts.get(roomKey)
                if mine is not None:  # it got its own ROOM_LEAVE: the ack
                    self._drop(roomKey, session, mine, drain=True)

    def _leftServer(self, event: Leave) -> None:
        uid = event.user.id
        for room in self.directory.leaveAll(uid):
            leave = RoomLeave(room.name, event.user, event.reason)
            leave.seq = event.seq  # its place in the order: the LEAVE's
            roomKey = key(room.name)
            if self.history is not None:
                self.history.record(roomKey, leave)
            self._send(roomKey, leave)
            self._ended(room.name)
        self.users.pop(uid, None)

    def _ended(self, name: bytes) -> None:
        """A room that no longer exists tells its history (memory drops
        it; ``--history-db`` keeps it for when the room comes back)."""
        if self.history is not None and self.directory.get(name) is None:
            self.history.drop(key(name))

    # -- fan-outs -----------------------------------------------------------------

    def _send(
        self, roomKey: bytes, event: Event, joining: Session | None = None
    ) -> None:
        """``event`` to every local member of the room, in each one's format;
        ``joining`` (already counted in the directory) from this event on."""
        for codecName, fanout in list(self.fanouts.get(roomKey, {}).items()):
            if joining is not None and joining.codec.name == codecName:
                fanout.deliverFrames(joining.codec.event(event), joining)
            elif len(fanout):
                fanout.deliverFrames(fanout.encode(event))  # type: ignore[misc]

    def _fanoutFor(self, roomKey: bytes, session: Session) -> FanOut:
        codec = session.codec
        byCodec = self.fanouts.setdefault(roomKey, {})
        fanout = byCodec.get(codec.name)
        if fanout is None:
            fanout = byCodec[codec.name] = FanOut(
                self._callLater, self.maxBacklog, codec.event
            )
        return fanout

    def _drop(
        self, roomKey: bytes, session: Session, fanout: FanOut, drain: bool
    ) -> None:
        fanout.remove(session, drain=drain)
        session.roomFanouts.pop(roomKey, None)
        if not len(fanout):
            fanout.flush()
            byCodec = self.fanouts.get(roomKey, {})
            byCodec.pop(session.codec.name, None)
            if not byCodec:
                self.fanouts.pop(roomKey, None)

    def _forgetUser(self, uid: int) -> None:
        if uid not in self.directory.memberships:
            self.users.pop(uid, None)

    # -- questions ------------------------------------------------------------

    def snapshot(self) -> list[Event]:
        """The rooms as events (every member's ROOM_JOIN, then each topic),
        for a process that starts later (a new worker)."""
        joins: list[Event] = []
        topics: list[Event] = []
        default = self.directory.default
        for room in self.directory.rooms.values():
            if room is default:
                continue
            joins += [RoomJoin(room.name, user) for user in self.members(room.name)]
            if room.topic:
                topics.append(RoomTopic(room.name, room.topic))
            if room.locked:
                topics.append(RoomLock(room.name, True))
        return joins + topics

    def members(self, name: bytes) -> list[User]:
        room = self.directory.get(name)
        if room is None:
            return []
        users = self.users
        return [users[uid] for uid in room.members if uid in users]

    def applyConfig(self, maxBacklog: int) -> None:
        self.maxBacklog = maxBacklog
        for byCodec in self.fanouts.values():
            for fanout in byCodec.values():
                fanout.maxBacklog = maxBacklog
