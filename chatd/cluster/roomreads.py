"""Which rooms' streams a node reads: those with a member on it.

Counted from what the node reads back, in the total order (a local
user's ROOM_JOIN, ROOM_LEAVE and LEAVE, a hand-over to or from this node),
so the set of streams only changes between two of the reader's reads and
every member gets its room's events from its join on.  Pure: no I/O.
"""

from __future__ import annotations


class LocalRooms:
    """Room key -> the ids of this node's users in it."""

    def __init__(self) -> None:
        self._members: dict[bytes, set[int]] = {}

    def __contains__(self, roomKey: bytes) -> bool:
        return roomKey in self._members

    def __len__(self) -> int:
        return len(self._members)

    def rooms(self) -> list[bytes]:
        return list(self._members)

    def join(self, roomKey: bytes, uid: int) -> None:
        self._members.setdefault(roomKey, set()).add(uid)

    def leave(self, roomKey: bytes, uid: int) -> bool:
        """``uid`` left the room: whether that was its last local member."""
        members = self._members.get(roomKey)
        if members is None or uid not in members:
            return False
        members.discard(uid)
        if members:
            return False
        del self._members[roomKey]
        return True

    def leaveAll(self, uid: int) -> list[bytes]:
        """``uid`` left the server (or this node): the rooms it emptied."""
        return [k for k in list(self._members) if self.leave(k, uid)]

    def clear(self) -> None:
        self._members.clear()
