"""Reaping a node that is gone: its users leave, exactly once.

When a node's lease lapses (kill -9, power loss), the first other node
whose heartbeat notices runs the ``reap`` script: LEAVE ``error`` for the
dead node's users, their names freed, only if the lease is still gone and
only once.  With protocol 1.2's resume, a dead node's resumable users do
not leave: the reaper adopts them (:class:`IAdopter`, the node's
:mod:`chatd.cluster.redisresumes`) for the rest of their window, so a
client whose node died resumes on any other node; their LEAVE comes when
the window ends.  A node reaping itself (a clean stop) adopts nobody, and
its users leave with ``shutdown``.
"""

from __future__ import annotations

from typing import Protocol

from twisted.logger import Logger

from chatd.cluster.redislink import RedisLink
from chatd.cluster.standing import Standing
from chatd.cluster.streamseq import STREAM_MAXLEN
from chatd.cluster.who import usersOf
from chatd.core.events import Event, Leave
from chatd.core.roster import User
from chatd.wire import LeaveReason
from chatd.wire.eventcodec import encodeBatch

log = Logger(namespace="chatd.cluster")

#: A resumable user adopted: (user, its token's hex digest, deadline ms).
Adopted = tuple[User, bytes, int]


class IAdopter(Protocol):
    """Who runs the windows of the resumable users this node adopts."""

    @property
    def window(self) -> float:
        """--resume-window: the window of a user that was attached."""
        ...

    def adopt(self, users: list[Adopted]) -> None:
        """``users`` are this node's now, until their deadlines."""
        ...


class Reaper:
    """Runs the ``reap`` script for a node that is gone."""

    def __init__(self, link: RedisLink, standing: Standing) -> None:
        self.link = link
        self.standing = standing
        self.adopter: IAdopter | None = None

    async def reap(
        self, dead: str, adopt: bool = True, reason: LeaveReason = LeaveReason.ERROR
    ) -> None:
        """Sequence LEAVE ``reason`` for ``dead``'s users (its resumable
        ones adopted, if ``adopt``) and free its names; the script does it
        only if ``dead`` still holds no lease, and only once.  A node that
        stops reaps itself with ``shutdown``: what it still holds then are
        users it adopted, whose server it was."""
        prefix = self.link.prefix
        for _ in range(3):
            users = usersOf(
                await self.link.command("HGETALL", f"{prefix}nodeusers:{dead}")
            )
            kept = await self._resumable(dead, users) if adopt else []
            keptIds = {user.id for user, _, _ in kept}
            leaves: list[Event] = [
                Leave(u, reason) for u in users if u.id not in keptIds
            ]
            result = await self.link.script(
                "reap",
                dead,
                self.standing.name,
                len(leaves),
                encodeBatch(leaves),
                STREAM_MAXLEN,
                self.standing.ttlMs,
                self._attachedDeadline(),
                *sorted(keptIds),
            )
            if result == -1:
                continue
            if isinstance(result, list) or result == 1:
                if kept and self.adopter is not None:
                    self.adopter.adopt(kept)
                log.info(
                    "cluster: node {dead} is gone: {n} users leave, {k} kept for "
                    "a resume (sequenced by {node})",
                    dead=dead,
                    n=len(leaves),
                    k=len(kept),
                    node=self.standing.name,
                )
            return

    def _attachedDeadline(self) -> int:
        window = self.adopter.window if self.adopter is not None else 0.0
        return int((self.standing.clock.seconds() + window) * 1000)

    async def _resumable(self, dead: str, users: list[User]) -> list[Adopted]:
        """``dead``'s users that hold a live token, with their deadlines."""
        if self.adopter is None or self.adopter.window <= 0 or not users:
            return []
        flat = await self.link.command("HGETALL", f"{self.link.prefix}resumable")
        held = dict(zip(flat[::2], flat[1::2], strict=False))
        attached = self._attachedDeadline()
        kept: list[Adopted] = []
        for user in users:
            parts = bytes(held.get(str(user.id).encode(), b"")).split(b" ")
            if len(parts) == 4 and parts[1] == dead.encode():
                deadline = int(parts[2]) or attached
                kept.append((user, parts[0], deadline))
        return kept
