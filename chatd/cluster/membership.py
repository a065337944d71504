"""A node's membership of the cluster: its lease, the heartbeat, reaping.

The node's lease (``node:<name>``, a token with a TTL) is renewed by the
heartbeat, which also renews its names, says which names went to another
node and which nodes' leases lapsed.  A node whose lease lapses is reaped by
whichever node sees it first: one script sequences LEAVE ``error`` for its
users and frees their names, exactly once; a node that finds its own lease
gone cuts its users with ERROR SHUTDOWN and registers afresh.

Redis back EMPTY (``chatd:epoch`` gone or changed): the node registers again
with its users (name leases, the active-users snapshot) and reads the new
stream from its start; a name then held twice goes to the earlier activation.
A node never takes over the lease of a live node of the same name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.cluster.leases import LeaseRoster
from chatd.cluster.reaper import Reaper
from chatd.cluster.redislink import RedisLink, text
from chatd.cluster.standing import Standing
from chatd.cluster.streamseq import StreamSequencer
from chatd.cluster.who import WhoRebuilder
from chatd.core.events import Join
from chatd.core.roster import User
from chatd.wire import LeaveReason

log = Logger(namespace="chatd.cluster")

LOST = "lost contact with the cluster"
#: The ERROR SHUTDOWN text of a user whose name went to an earlier user.
NAME_LOST = "another user who came first holds this name"


class LocalUsers(Protocol):
    """This node's users, as the front end has them."""

    def named(self) -> list[User]:
        """The named users (those still leaving excluded)."""
        ...

    def cut(self, lowers: set[bytes] | None, why: str) -> int:
        """ERROR SHUTDOWN ``why`` to the users called one of ``lowers`` (in
        any case; None: every connection); how many."""
        ...


class Membership:
    """Joining, the heartbeat, reaping, and recovering from Redis' loss."""

    def __init__(
        self,
        link: RedisLink,
        standing: Standing,
        seq: StreamSequencer,
        roster: LeaseRoster,
        who: WhoRebuilder,
        users: LocalUsers,
    ) -> None:
        self.link = link
        self.standing = standing
        self.seq = seq
        self.roster = roster
        self.who = who
        self.users = users
        #: Called with a one-line reason when this node must not run (its
        #: name is held by a live node); None: log it and stay out.
        self.fatal: Callable[[str], None] | None = None
        self.resets = 0  # times Redis was found to have lost its state
        self.joins = 0
        self._beating = False
        self._needRecover = False  # a recovery failed half-way: try again
        self._recoveryWaiters: list[Deferred[None]] = []
        self._newToken = ""  # the token a recovery registers with
        self._joinedWaiters: list[Deferred[None]] = []
        self.reaper = Reaper(link, standing)
        self.heartbeat = LoopingCall(self.beat)
        self.heartbeat.clock = standing.clock
        standing.beat = self.beat
        standing.leaseLost = self.leaseLost

    def start(self) -> None:
        self.heartbeat.start(self.standing.ttl / 5, now=False)

    def halt(self) -> None:
        """No more heartbeats (stopping, or refused)."""
        self.standing.stopping = True
        if self.heartbeat.running:
            self.heartbeat.stop()

    def whenJoined(self) -> Deferred[None]:
        """Fires once this node holds a lease (at once if it does)."""
        if self.standing.registered:
            return defer.succeed(None)
        d: Deferred[None] = Deferred()
        self._joinedWaiters.append(d)
        return d

    def linkEvent(self) -> None:
        """Connected: join (or renew, and send what is owed) now, without
        waiting for the next beat."""
        if self.link.up and not self.standing.stopping:
            self.standing.beatSoon()

    # -- the heartbeat ---------------------------------------------------------

    def beat(self) -> None:
        standing = self.standing
        if self._beating or standing.stopping:
            return
        self.link.noticeChange()
        if not self.link.up:
            if standing.overdue():
                self.leaseLost(f"no contact with Redis for {standing.ttl:g}s")
            return
        self._beating = True
        if self._needRecover:
            d = self.recover()
        elif not standing.registered:
            d = defer.ensureDeferred(self._join())
        else:
            d = defer.ensureDeferred(self.renew())
        d.addErrback(self._beatFailed)
        d.addBoth(self._beatDone)

    def _beatDone(self, _: object) -> None:
        self._beating = False

    def _beatFailed(self, failure: Failure) -> None:
        log.warn("cluster: heartbeat failed: {why}", why=text(failure.value))
        if self.standing.overdue():
            self.leaseLost(f"no lease renewal for {self.standing.ttl:g}s")

    async def _join(self) -> None:
        """Snapshot (first time), wait out the lease of a previous run under
        our name (a live one: refuse), reap what it left, take a lease."""
        standing = self.standing
        await self.link.loadScripts()
        if self.seq.fresh:
            await self.seq.snapshot()
        self.seq.read()
        key = f"{self.link.prefix}node:{standing.name}"
        left = int(await self.link.command("PTTL", key))
        if left != -2:  # a lease under our name: wait until it must lapse
            wait = (left if left > 0 else standing.ttlMs) / 1000 + 0.2
            log.info(
                "cluster: node name {node} has a lease; waiting {wait:.1f}s to "
                "see it lapse (a live node renews it)",
                node=standing.name,
                wait=wait,
            )
            lapsed: Deferred[None] = Deferred()
            standing.later(wait, lambda: lapsed.callback(None))  # stop() cancels
            await lapsed
            if standing.stopping:
                return
            if await self.link.command("EXISTS", key):
                self._refuse()
                return
        await self.reap(standing.name)
        if not await self._register():
            self._refuse()
            return
        standing.renewed = standing.clock.seconds()
        waiters, self._joinedWaiters = self._joinedWaiters, []
        for waiting in waiters:
            waiting.callback(None)
        self.joins += 1
        log.info(
            "cluster: node {node} joined{again} (sequence at {seq})",
            node=standing.name,
            again=" again" if self.joins > 1 else "",
            seq=self.seq.lastSeq,
        )

    async def _register(self, token: str = "") -> bool:
        """Take our lease (never a live node's) and learn the epoch."""
        standing = self.standing
        token = token or os.urandom(8).hex()
        ok, epoch = await self.link.call(
            "register", standing.name, token, standing.ttlMs, os.urandom(8).hex()
        )
        if not int(ok):
            return False
        standing.token, standing.epoch = token, text(epoch)
        return True

    def _refuse(self) -> None:
        """Two live nodes must never share a name: this one stays out."""
        why = (
            f"cluster: node name {self.standing.name} is held by a live node; "
            "refusing to run under it (give each node its own --node-name)"
        )
        log.error(why)
        self.halt()
        if self.fatal is not None:
            self.fatal(why)

    async def renew(self) -> None:
        """Renew the lease; recover, reap, cut names lost, as it says."""
        standing = self.standing
        reply = await self.link.call(
            "heartbeat", standing.name, standing.token, standing.ttlMs, standing.epoch
        )
        if int(reply[0]) == 2:
            await self.recover()
            return
        if int(reply[0]) == 0:
            self.leaseLost("its lease expired")
            return
        standing.renewed = standing.clock.seconds()
        self.seq.clusterSeq = int(reply[1])
        if self.seq.stale:  # numbers went back, yet the same epoch: read anew
            await self.seq.restartReading(fromStart=False)
        self.seq.read()  # if the reader had given up meanwhile
        self._payDebts()
        if reply[4]:
            self._cutNames({bytes(lower) for lower in reply[4]})
        for dead in reply[3]:
            await self.reap(text(dead))

    def _payDebts(self) -> None:
        self.roster.payReleases()
        self.seq.payLeaves()

    # -- Redis lost its state ----------------------------------------------------

    def recover(self) -> Deferred[None]:
        """Redis lost its state: register again, with our users (their name
        leases and snapshot entries), and read the new stream from its start.
        A name another node took meanwhile goes to the earlier activation.
        Fires when done (a second call waits for the first)."""
        d: Deferred[None] = Deferred()
        self._recoveryWaiters.append(d)
        if not self.standing.recovering:
            self.standing.recovering = True
            done = defer.ensureDeferred(self._recover())

            def fire(result: object) -> None:
                waiters, self._recoveryWaiters = self._recoveryWaiters, []
                for waiting in waiters:
                    if isinstance(result, Failure):
                        waiting.errback(result)
                    else:
                        waiting.callback(None)

            done.addBoth(fire)
        return d

    async def _recover(self) -> None:
        standing = self.standing
        if not self._needRecover:  # the first attempt (not a retry)
            self.resets += 1
            self._newToken = os.urandom(8).hex()
            log.warn(
                "cluster: Redis lost its state (epoch changed); node {node} "
                "registers again with its users",
                node=standing.name,
            )
            self.seq.failNumbered("Redis lost its state")  # an order now lost
            await self.seq.restartReading(fromStart=True)
        self._needRecover = True
        standing.token = ""
        try:
            if not await self._register(self._newToken):
                self._refuse()
                return
            users = self.users.named()
            args: list[object] = []
            for user in users:
                since = self.seq.since.get(user.id, "")
                args += [user.id, user.entry, user.name.lower(), since]
            lost, won = await self.link.call(
                "reclaim",
                standing.name,
                standing.token,
                standing.ttlMs,
                standing.maxId,
                *args,
            )
        except BaseException:
            standing.token = ""
            raise
        finally:
            standing.recovering = False
        self._needRecover = False
        standing.renewed = standing.clock.seconds()
        self.seq.read()
        cut = self._cutNames({bytes(lower) for lower in lost})
        byId = {user.id: user for user in users}
        for uid in won:  # displaced another node's user: JOIN again
            user = byId[int(uid)]
            self.seq.submit(Join(user)).addErrback(lambda f: None)
        self._payDebts()
        log.info(
            "cluster: node {node} registered again after Redis lost its state: "
            "{kept} users kept, {cut} cut (name held by an earlier user)",
            node=standing.name,
            kept=len(users) - cut,
            cut=cut,
        )
        # Every live node registers again within a heartbeat or so; by a TTL
        # from now the others have, or are gone: WHO from the snapshot then.
        standing.later(standing.ttl, self.who.soon)

    def _cutNames(self, lowers: set[bytes]) -> int:
        """ERROR SHUTDOWN to this node's users whose names another node's
        earlier users hold."""
        if not lowers:
            return 0
        log.warn(
            "cluster: {names} held by an earlier user on another node: cut here",
            names=b", ".join(sorted(lowers)).decode("utf-8", "replace"),
        )
        return self.users.cut(lowers, NAME_LOST)

    # -- reaping and being reaped ------------------------------------------------

    async def reap(
        self, dead: str, adopt: bool = True, reason: LeaveReason = LeaveReason.ERROR
    ) -> None:
        """``dead``'s users leave for ``reason`` (its resumable ones
        adopted): the reaper."""
        await self.reaper.reap(dead, adopt, reason)

    def leaseLost(self, why: str) -> None:
        """Others have (or will have) sequenced our users' LEAVEs: cut them,
        so none stays in a room that no longer lists it; join again later."""
        if not self.standing.registered:
            return
        log.error(
            "cluster: node {node} {why}: {lost}",
            node=self.standing.name,
            why=why,
            lost=LOST,
        )
        self.standing.token = ""
        self.roster.forget()
        self.seq.forget(LOST)
        self.users.cut(None, LOST)

    async def leave(self) -> None:
        """A clean stop: give the lease up and reap ourselves."""
        standing = self.standing
        if standing.registered and self.link.up:
            await self.link.script("resign", standing.name, standing.token)
            standing.token = ""
            # Shutdown ends sessions: the users this node still holds (those
            # it adopted from a dead node) leave as its own did, `shutdown`.
            await self.reap(standing.name, adopt=False, reason=LeaveReason.SHUTDOWN)
