"""Which rooms exist and who is in each (protocol 1.2, docs/protocol.md).

Pure bookkeeping, no I/O and no frames: the session checks a room frame's
form and text, then asks the :class:`Directory` whether the step is allowed
and makes it.  The checks raise :class:`RoomError` with the protocol's code,
in the order docs/protocol.md gives ("which error wins"): the room's
existence, then membership, then the limits.  In a cluster each process
keeps a directory built from the sequenced room events, as the roster's
replica is built from JOIN and LEAVE.

Names are compared case-insensitively (ASCII, as user names) and keep
their first spelling.  A room lives while it has members, or always when
the operator named it.  Members are kept in the order they entered (what
ROOM_WHO lists); rooms in the order they were created (what LIST lists).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

#: The codes a directory refuses with (chatd.core.rules.ErrorCode names).
NO_SUCH_ROOM = "NO_SUCH_ROOM"
NOT_IN_ROOM = "NOT_IN_ROOM"
ALREADY_IN_ROOM = "BAD_STATE"
TOO_MANY_ROOMS = "TOO_MANY_ROOMS"
TOPIC_LOCKED = "TOPIC_LOCKED"


class RoomError(Exception):
    """A room step refused: ``code`` (an ErrorCode name) and a text."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text


class Room:
    """One room: its kept spelling, topic and members."""

    __slots__ = ("name", "topic", "locked", "permanent", "members")

    def __init__(
        self,
        name: bytes,
        topic: bytes = b"",
        locked: bool = False,
        permanent: bool = False,
    ) -> None:
        self.name = name
        self.topic = topic
        self.locked = locked
        self.permanent = permanent
        #: member -> None, in the order they entered.
        self.members: dict[Hashable, None] = {}

    def __repr__(self) -> str:
        return f"<Room {self.name.decode()} {len(self.members)} members>"


def key(name: bytes) -> bytes:
    """What names are compared by."""
    return name.lower()


class Directory:
    """The rooms of one process (module doc)."""

    def __init__(
        self,
        default: bytes = b"lobby",
        maxRooms: int = 1000,
        maxPerUser: int = 20,
        configured: Iterable[tuple[bytes, bytes, bool]] = (),
    ) -> None:
        self.maxRooms = maxRooms
        self.maxPerUser = maxPerUser
        self.rooms: dict[bytes, Room] = {}
        #: member -> its rooms, in the order it entered them.
        self.memberships: dict[Hashable, dict[bytes, Room]] = {}
        self.default = self._permanent(default, b"", False)
        for name, topic, locked in configured:
            self._permanent(name, topic, locked)

    def _permanent(self, name: bytes, topic: bytes, locked: bool) -> Room:
        room = self.rooms.get(key(name))
        if room is None:
            room = self.rooms[key(name)] = Room(name, permanent=True)
        room.topic, room.locked = topic or room.topic, locked or room.locked
        return room

    # -- questions ---------------------------------------------------------

    @property
    def defaultKey(self) -> bytes:
        """The default room's key (its events carry no room)."""
        return key(self.default.name)

    def get(self, name: bytes) -> Room | None:
        return self.rooms.get(key(name))

    def existing(self, name: bytes) -> Room:
        room = self.rooms.get(key(name))
        if room is None:
            raise RoomError(NO_SUCH_ROOM, f"no room {name.decode()}")
        return room

    def joined(self, member: Hashable, name: bytes) -> Room:
        """The room ``name``, which ``member`` must be in."""
        room = self.existing(name)
        if member not in room.members:
            raise RoomError(NOT_IN_ROOM, f"you are not in {room.name.decode()}")
        return room

    def roomsOf(self, member: Hashable) -> list[Room]:
        return list(self.memberships.get(member, {}).values())

    def listing(self) -> list[tuple[bytes, int, bytes]]:
        """(name, members, topic) of every room, in creation order."""
        return [(r.name, len(r.members), r.topic) for r in self.rooms.values()]

    # -- steps -------------------------------------------------------------

    def checkEnter(self, member: Hashable, name: bytes) -> None:
        """Raise the RoomError an ENTER of ``name`` would get, if any."""
        room = self.rooms.get(key(name))
        if room is not None and member in room.members:
            raise RoomError(ALREADY_IN_ROOM, f"already in {room.name.decode()}")
        # + 1: the default room, which every active user is in.
        if len(self.memberships.get(member, ())) + 1 >= self.maxPerUser:
            raise RoomError(
                TOO_MANY_ROOMS,
                f"in {self.maxPerUser} rooms already (max-rooms-per-user)",
            )
        if room is None and len(self.rooms) >= self.maxRooms:
            raise RoomError(TOO_MANY_ROOMS, f"{self.maxRooms} rooms exist (max-rooms)")

    def enter(self, member: Hashable, name: bytes) -> Room:
        """``member`` enters ``name`` (created if need be)."""
        self.checkEnter(member, name)
        return self.add(member, name)

    def add(self, member: Hashable, name: bytes) -> Room:
        """``member`` is in ``name`` (created if need be), unchecked: a
        sequenced ROOM_JOIN, which every process applies alike."""
        room = self.rooms.get(key(name))
        if room is None:
            room = self.rooms[key(name)] = Room(name)
        room.members[member] = None
        self.memberships.setdefault(member, {})[key(name)] = room
        return room

    def drop(self, member: Hashable, name: bytes) -> None:
        """A sequenced ROOM_LEAVE: ``member`` is no longer in ``name``."""
        room = self.rooms.get(key(name))
        if room is not None and member in room.members:
            self._drop(member, room)

    def part(self, member: Hashable, name: bytes) -> Room:
        """``member`` leaves ``name``; an emptied room goes unless permanent."""
        room = self.joined(member, name)
        self._drop(member, room)
        return room

    def leaveAll(self, member: Hashable) -> list[Room]:
        """``member`` is gone: the rooms it was in, in the order it entered."""
        rooms = self.roomsOf(member)
        for room in rooms:
            self._drop(member, room)
        return rooms

    def setTopic(self, member: Hashable, name: bytes, topic: bytes) -> Room:
        room = self.joined(member, name)
        if room.locked:
            raise RoomError(
                TOPIC_LOCKED, f"the topic of {room.name.decode()} is locked"
            )
        room.topic = topic
        return room

    def _drop(self, member: Hashable, room: Room) -> None:
        del room.members[member]
        mine = self.memberships[member]
        del mine[key(room.name)]
        if not mine:
            del self.memberships[member]
        if not room.members and not room.permanent:
            del self.rooms[key(room.name)]
