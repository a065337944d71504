"""Which workers a 1.2 room's messages go to, for ``--workers``.

Every worker gets every event but one kind: a ROOM_MESSAGE goes only to
the workers that serve a member of its room, so a worker reads and
decodes nothing for rooms its users are not in.  Joins, leaves and topics
still go to every worker (few, and they keep each worker's directory
whole: LIST, ROOM_WHO and the limits answer the same on every worker).

Kept at submit time, in the order: a message reaches the workers whose
users were members when it was sequenced, whatever the rest of the turn
does.  A member's worker is the one that submitted its ROOM_JOIN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatd.core.events import Event, Leave
from chatd.core.roomevents import RoomJoin, RoomLeave, RoomMessage
from chatd.core.rooms import key

if TYPE_CHECKING:
    from chatd.cluster.handle import WorkerHandle


class RoomRouting:
    """Room key -> the workers serving its members (module doc)."""

    def __init__(self) -> None:
        #: room key -> worker -> members it serves there.
        self.routes: dict[bytes, dict[WorkerHandle, int]] = {}
        #: user id -> room key -> the worker that serves it.
        self._rooms: dict[int, dict[bytes, WorkerHandle]] = {}

    def targets(self, event: Event, origin: WorkerHandle | None) -> frozenset | None:
        """The workers ``event`` must reach: None for all of them."""
        kind = type(event)
        if kind is RoomMessage:
            return frozenset(self.routes.get(key(event.room), ()))  # type: ignore[arg-type]
        if kind is RoomJoin and origin is not None:
            roomKey = key(event.room)  # type: ignore[arg-type]
            self._rooms.setdefault(event.user.id, {})[roomKey] = origin  # type: ignore[attr-defined]
            served = self.routes.setdefault(roomKey, {})
            served[origin] = served.get(origin, 0) + 1
        elif kind is RoomLeave:
            mine = self._rooms.get(event.user.id, {})  # type: ignore[attr-defined]
            self._left(key(event.room), mine.pop(key(event.room), None))  # type: ignore[arg-type]
        elif kind is Leave:
            for roomKey, worker in self._rooms.pop(event.user.id, {}).items():  # type: ignore[attr-defined]
                self._left(roomKey, worker)
        return None

    def move(self, uid: int, worker: WorkerHandle) -> None:
        """User ``uid`` is served by ``worker`` from this point of the
        order on (a resume on another worker): its rooms' messages follow."""
        rooms = self._rooms.get(uid, {})
        for roomKey, old in list(rooms.items()):
            self._left(roomKey, old)
            rooms[roomKey] = worker
            served = self.routes.setdefault(roomKey, {})
            served[worker] = served.get(worker, 0) + 1

    def _left(self, roomKey: bytes, worker: WorkerHandle | None) -> None:
        served = self.routes.get(roomKey)
        if worker is None or served is None or worker not in served:
            return
        served[worker] -= 1
        if not served[worker]:
            del served[worker]
            if not served:
                del self.routes[roomKey]
