"""WHO in a cluster: the room's replica rebuilt from Redis' active users.

The replica is built from the stream, but a node that missed entries (a gap:
trimmed while it was away, or Redis lost its state) may list users gone or
miss users come; the ``users`` hash is the truth it is reset to.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatd.cluster.redislink import RedisLink, text
from chatd.cluster.standing import Standing
from chatd.core.events import Join, Leave
from chatd.core.roster import User
from chatd.wire import LeaveReason
from chatd.wire.eventcodec import userFromEntry

log = Logger(namespace="chatd.cluster")


def usersOf(flat: list[Any]) -> list[User]:
    """A users hash (HGETALL's flat list: id, entry...) by id."""
    return sorted((userFromEntry(entry) for entry in flat[1::2]), key=lambda u: u.id)


class WhoRebuilder:
    """Rebuilds the replica from the snapshot, one rebuild at a time."""

    def __init__(self, link: RedisLink, standing: Standing) -> None:
        self.link = link
        self.standing = standing
        self.replica: Any = None  # the room's Replica, once the node starts
        self.rebuilds = 0  # times WHO was rebuilt from the snapshot
        #: The WHO rebuild under way, if any (fires when done).
        self.rebuilding: Deferred[None] | None = None

    def soon(self) -> None:
        """Rebuild, unless one is under way (it reads the snapshot later)."""
        if self.rebuilding is not None or self.standing.stopping:
            return
        if self.replica is None:
            return
        d = self.rebuilding = defer.ensureDeferred(self._rebuild())
        d.addErrback(
            lambda f: log.warn(
                "cluster: could not rebuild WHO: {why}", why=text(f.value)
            )
        )
        d.addBoth(lambda _: setattr(self, "rebuilding", None))

    async def _rebuild(self) -> None:
        """The replica (WHO) as the active-users snapshot has it: after a
        gap it may miss JOINs and LEAVEs.  Events read later apply on top
        (each user's JOIN comes before its LEAVE), so it converges."""
        _, _, flat, *_ = await self.link.call("snapshot")
        users = usersOf(flat)
        snapshot = {u.id: u for u in users}
        replica = self.replica
        held = {u.id for u in replica.active}
        gone = [u for u in replica.active if u.id not in snapshot]
        added = [u for u in users if u.id not in held]
        for user in gone:
            replica.deliver(Leave(user, LeaveReason.ERROR))
        for user in added:
            replica.deliver(Join(user))
        self.rebuilds += 1
        log.info(
            "cluster: WHO rebuilt from the active-users snapshot: {n} users "
            "({added} added, {gone} removed)",
            n=len(replica),
            added=len(added),
            gone=len(gone),
        )
