"""A chatd node in a Redis cluster: the room's sequencer and roster.

:class:`ClusterNode` provides :class:`~chatd.core.sequencer.ISequencer` and
:class:`~chatd.core.roster.IRoster`, so the room, sessions and fan-out work
as in one process:

* what this node's users submit in one reactor turn goes to Redis as ONE
  stream entry (one EVALSHA: INCRBY the sequence by the batch size, XADD),
  and every node, this one too, delivers events only as it reads them back
  from the stream (``XREAD BLOCK`` on a connection of its own), so all nodes
  deliver the same events in the same order;
* names are ``SET NX`` leases renewed by the node's heartbeat, ids come from
  ``INCR``; WHO is the Replica built from the stream (plus a snapshot of the
  active users when the node starts);
* a node whose lease lapses is reaped by whichever node sees it first: one
  script sequences LEAVE ``error`` for its users and frees their names,
  exactly once; a node that finds its own lease gone cuts its users with
  ERROR SHUTDOWN and registers afresh.

While Redis cannot be reached, submits and claims fail at once (the session
answers UNAVAILABLE); nothing is queued but the LEAVEs and name releases of
users who left meanwhile (at most one each per user), sent when Redis is back.

Redis back EMPTY (``chatd:epoch`` gone or changed): the node registers again
with its users (name leases, the active-users snapshot) and reads the new
stream from its start; a name then held twice goes to the earlier activation.
A node never takes over the lease of a live node of the same name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, endpoints
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.cluster.options import RedisTarget, defaultNodeName, parseRedisURL
from chatd.cluster.scripts import SCRIPTS, SHA
from chatd.core.eventcodec import BadEvent, decodeBatch, encodeBatch, userFromEntry
from chatd.core.events import Event, Join, Leave
from chatd.core.roster import MAX_ID, PALETTE, IRoster, User
from chatd.core.sequencer import IEventSink, ISequencer
from chatd.wire import ErrorCode, LeaveReason

log = Logger(namespace="chatd.cluster")

#: Batches sent and not yet answered: past this, submits fail (UNAVAILABLE)
#: rather than queue behind a Redis that does not keep up.
MAX_IN_FLIGHT = 256
#: Events gathered in one turn at most (the front ends bound what a turn reads).
MAX_PENDING = 100_000
#: Stream entries kept (MAXLEN ~): a node more than this behind has a gap.
STREAM_MAXLEN = 100_000
#: Seconds a command may wait for Redis' answer.
REPLY_TIMEOUT = 5.0
#: XREAD BLOCK, in milliseconds; its connection times out a little later.
READ_BLOCK_MS = 2000
READ_COUNT = 1000
LOST = "lost contact with the cluster"
#: The ERROR SHUTDOWN text of a user whose name went to an earlier user.
NAME_LOST = "another user who came first holds this name"


class ClusterUnavailable(Exception):
    """Redis cannot be reached (or this node holds no lease): try again."""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@implementer(ISequencer, IRoster)
class ClusterNode:
    """One chatd process's membership of the cluster."""

    def __init__(
        self,
        target: RedisTarget,
        name: str,
        ttl: float,
        clock: Any,
        prefix: str = "chatd:",
    ) -> None:
        self.target = target
        self.name = name
        self.ttl = ttl
        self.clock = clock
        self.prefix = prefix
        self._sinks: list[IEventSink] = []
        self.factory: Any = None  # the ChatFactory, for cutting users
        self.replica: Any = None  # the room's Replica (WHO), rebuilt after gaps
        #: Called with a one-line reason when this node must not run (its
        #: name is held by a live node); None: log it and stay out.
        self.fatal: Callable[[str], None] | None = None
        self.token = ""  # this lease's token; "" while not registered
        self.epoch = ""  # Redis' chatd:epoch when this node registered
        self.resets = 0  # times Redis was found to have lost its state
        self.rebuilds = 0  # times WHO was rebuilt from the snapshot
        self.maxId = 0  # the highest user id seen: ids resume above it
        self.lastId = b"0-0"
        self.lastSeq = 0
        self.clusterSeq = 0
        self.gaps = 0
        self.joins = 0
        self.commands = 0  # Redis commands sent, for the benchmarks
        self._cmd: Any = None
        self._reader: Any = None
        self._pending: list[tuple[Event, Deferred[int]]] = []
        # Submissions Redis numbered that the stream reader has not yet
        # delivered here: (seq, Deferred), in order.  ISequencer promises
        # the Deferred fires after local delivery (replies stay in order).
        self._numbered: list[tuple[int, Deferred[int]]] = []
        self._flushCall: Any = None
        self._inFlight = 0
        self._drained: list[Deferred[None]] = []
        # Users whose JOIN was refused before it reached Redis: their LEAVE
        # is dropped too, or others would see a LEAVE without a JOIN.
        self._unjoined: set[int] = set()
        # This node's users from their JOIN to their LEAVE, by id, and the
        # stream id of their JOIN (their activation time) once read back.
        self._local: dict[int, User] = {}
        self._since: dict[int, str] = {}
        self._recovering = False
        self._needRecover = False  # a recovery failed half-way: try again
        self._recoveryWaiters: list[Deferred[None]] = []
        self._newToken = ""  # the token a recovery registers with
        #: The WHO rebuild under way, if any (fires when done).
        self.rebuilding: Deferred[None] | None = None
        self._readGen = 0  # bumped when reading restarts on a new stream
        self._stale = False  # the stream went backwards: wait for recovery
        self._owedLeaves: dict[int, Leave] = {}
        self._owedReleases: dict[bytes, None] = {}
        self._renewed = 0.0
        self._beating = False
        self._reading = False
        self._stopping = False
        self._linkWasUp: bool | None = None
        self._joinedWaiters: list[Deferred[None]] = []
        self._calls: list[Any] = []  # retries and early beats, for stop()
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = clock

    # -- wiring --------------------------------------------------------------

    def seams(self) -> dict[str, Any]:
        """ChatFactory's keyword arguments: this node is both."""
        return {"sequencer": self, "roster": self}

    def start(self, factory: Any) -> None:
        """Connect and join (in the background: until this node holds a
        lease, HELLO gets UNAVAILABLE)."""
        self.factory = factory
        if factory is not None and self.replica is None:
            self.replica = factory.room.replica
        self._cmd = connectRedis(self.target, REPLY_TIMEOUT, self._linkEvent)
        self._reader = connectRedis(self.target, READ_BLOCK_MS / 1000 + REPLY_TIMEOUT)
        log.info(
            "cluster: node {node} joining through {redis}",
            node=self.name,
            redis=self.target.display,
        )
        self._heartbeat.start(self.ttl / 5, now=False)

    def whenJoined(self) -> Deferred[None]:
        """Fires once this node holds a lease (at once if it does)."""
        if self.registered:
            return defer.succeed(None)
        d: Deferred[None] = Deferred()
        self._joinedWaiters.append(d)
        return d

    @property
    def linkUp(self) -> bool:
        return self._cmd is not None and self._cmd._factory.size > 0

    @property
    def registered(self) -> bool:
        return bool(self.token)

    def status(self) -> dict[str, Any]:
        """What /status shows under ``cluster``."""
        replica = len(self.factory.room.replica) if self.factory is not None else 0
        return {
            "node": self.name,
            "redis": self.target.display,
            "link": "up" if self.linkUp else "down",
            "registered": self.registered,
            "last_seq": self.lastSeq,
            "stream_lag": max(0, self.clusterSeq - self.lastSeq),
            "cluster_users": replica,
            "gaps": self.gaps,
            "redis_resets": self.resets,
            "redis_commands": self.commands,
        }

    # -- Redis calls -----------------------------------------------------------

    def _script(self, name: str, *args: object) -> Deferred[Any]:
        """EVALSHA; when Redis lost its script cache (a restart), the call
        fails and every script is loaded again, so later calls work and no
        batch overtakes another."""
        self.commands += 1
        d = self._cmd.execute_command("EVALSHA", SHA[name], 0, self.prefix, *args)
        d.addErrback(self._noScript)
        return d

    async def _call(self, name: str, *args: object) -> Any:
        """A script whose order does not matter (heartbeat, register...):
        tried again once after Redis lost its script cache."""
        try:
            return await self._script(name, *args)
        except Exception as e:
            if "NOSCRIPT" not in _text(e):
                raise
        await self._loadScripts()
        return await self._script(name, *args)

    def _noScript(self, failure: Failure) -> Failure:
        if "NOSCRIPT" in _text(failure.value):
            self._loadScripts()
        return failure

    def _loadScripts(self) -> Deferred[Any]:
        self.commands += len(SCRIPTS)
        return defer.gatherResults(
            [
                self._cmd.execute_command("SCRIPT", "LOAD", src)
                for src in SCRIPTS.values()
            ],
            consumeErrors=True,
        )

    # -- ISequencer ------------------------------------------------------------

    def subscribe(self, sink: IEventSink, after: int | None = None) -> None:
        if after is not None:
            raise ValueError("a cluster node delivers from now on only")
        self._sinks.append(sink)

    def submit(self, event: Event) -> Deferred[int]:
        if isinstance(event, Leave) and event.user.id in self._unjoined:
            self._unjoined.discard(event.user.id)
            return defer.succeed(0)  # never joined: nothing to tell anyone
        why = None
        if not self.registered:
            why = "this node has not joined the cluster"
        elif not self.linkUp:
            why = "Redis is unreachable"
        elif self._inFlight >= MAX_IN_FLIGHT or len(self._pending) >= MAX_PENDING:
            why = "Redis is not keeping up"
        if why is not None:
            if isinstance(event, Join):
                self._unjoined.add(event.user.id)
            self._owe(event)
            return defer.fail(ClusterUnavailable(why))
        if isinstance(event, Join):
            self._local[event.user.id] = event.user
            self.maxId = max(self.maxId, event.user.id)
        elif isinstance(event, Leave):
            self._local.pop(event.user.id, None)
            self._since.pop(event.user.id, None)
        d: Deferred[int] = Deferred()
        self._pending.append((event, d))
        if self._flushCall is None:
            self._flushCall = self.clock.callLater(0, self.flush)
        return d

    def _owe(self, event: Event) -> None:
        """A LEAVE that could not be sent is sent when Redis is back, or
        others would list its user for ever (without a lease, the reaper
        sends it instead)."""
        if isinstance(event, Leave) and (self.registered or self._recovering):
            self._owedLeaves[event.user.id] = event

    def flush(self) -> None:
        """This turn's events as one stream entry: one EVALSHA."""
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None
        batch, self._pending = self._pending, []
        if batch:
            self._send(batch)

    def _send(self, batch: list[tuple[Event, Deferred[int]]]) -> None:
        events = [event for event, _ in batch]
        joins: list[object] = []
        leaves: list[object] = []
        for event in events:
            if isinstance(event, Join):
                joins += [event.user.id, event.user.entry, event.user.name.lower()]
            elif isinstance(event, Leave):
                leaves.append(event.user.id)
        self._inFlight += 1
        d = self._script(
            "submit",
            self.name,
            self.token,
            len(events),
            encodeBatch(events),
            STREAM_MAXLEN,
            *joins,
            "-",
            *leaves,
        )

        def sequenced(result: list[Any]) -> None:
            self._answered()
            first = int(result[0])
            for i, (_, waiting) in enumerate(batch):
                self._numbered.append((first + i, waiting))
            self._numbered.sort(key=lambda pair: pair[0])
            self._fireDelivered()

        def failed(failure: Failure) -> None:
            self._answered()
            self._checkLease(failure)
            for event, waiting in batch:
                self._owe(event)
                waiting.errback(ClusterUnavailable(failure.getErrorMessage()))

        d.addCallbacks(sequenced, failed)

    def _answered(self) -> None:
        self._inFlight -= 1
        if not self._inFlight:
            waiters, self._drained = self._drained, []
            for waiting in waiters:
                waiting.callback(None)

    def _allAnswered(self) -> Deferred[None]:
        """Fires once every batch sent has its answer (or its timeout)."""
        if not self._inFlight:
            return defer.succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        return d

    def _checkLease(self, failure: Failure) -> None:
        """``LEASE lost <epoch>``: declared gone, or (another epoch) Redis
        lost its state, which the heartbeat, run now, recovers from."""
        text = _text(failure.value)
        if "LEASE" not in text or not self.registered:
            return
        if text.rsplit(" ", 1)[-1] != self.epoch:
            self._later(0, self._beat)
        else:
            self._leaseLost("its lease is gone")

    # -- reading the stream ----------------------------------------------------

    def _read(self) -> None:
        if self._stopping or self._reading or self._stale:
            return
        self._reading = True
        gen = self._readGen
        self.commands += 1
        d = self._reader.execute_command(
            "XREAD",
            "COUNT",
            READ_COUNT,
            "BLOCK",
            READ_BLOCK_MS,
            "STREAMS",
            self.prefix + "stream",
            self.lastId,
        )
        d.addCallbacks(self._gotEntries, self._readFailed, (gen,))

    def _gotEntries(self, reply: Any, gen: int) -> None:
        self._reading = False
        for _stream, entries in reply or ():
            for entryId, fields in entries:
                if gen != self._readGen or self._stale:
                    break  # read from a stream Redis has since lost
                self._entry(entryId, fields)
        self._read()

    def _readFailed(self, failure: Failure) -> None:
        self._reading = False
        if not self._stopping:
            log.warn(
                "cluster: reading the stream failed: {why}", why=_text(failure.value)
            )
            self._later(1, self._read)

    def _entry(self, entryId: bytes, fields: list[bytes]) -> None:
        values = dict(zip(fields[::2], fields[1::2], strict=False))
        self.lastId = entryId
        try:
            first = int(values[b"s"])
            events = decodeBatch(values[b"b"])
        except (KeyError, ValueError, BadEvent) as e:
            log.error("cluster: bad stream entry {id}: {e}", id=_text(entryId), e=e)
            return
        if first <= self.lastSeq:
            # Numbers going backwards: Redis lost its state.  Deliver nothing
            # until the heartbeat has registered again and reading restarts.
            log.warn(
                "cluster: the sequence went back from {last} to {first}: "
                "Redis lost its state?",
                last=self.lastSeq,
                first=first,
            )
            self._stale = True
            self._later(0, self._beat)
            return
        if first != self.lastSeq + 1:
            self.gaps += 1
            self._rebuildSoon()
            log.warn(
                "cluster: gap in the sequence: expected {want}, got {got} "
                "(entries trimmed while this node was away?)",
                want=self.lastSeq + 1,
                got=first,
            )
        if values.get(b"n") != self.name.encode() and any(
            isinstance(e, Leave) and e.user.id in self._local for e in events
        ):
            # Another node sequenced our users' LEAVEs: it reaped us.  Cut
            # them first, so none receives its own LEAVE.
            self._leaseLost("was declared gone by another node")
        for i, event in enumerate(events):
            event.seq = first + i
            if isinstance(event, Join):
                self.maxId = max(self.maxId, event.user.id)
                if event.user.id in self._local:
                    self._since.setdefault(event.user.id, _text(entryId))
            for sink in self._sinks:
                sink.deliver(event)
        self.lastSeq = first + len(events) - 1
        self._fireDelivered()

    def _fireDelivered(self) -> None:
        """Fire the submissions whose events the reader has delivered."""
        numbered = self._numbered
        while numbered and numbered[0][0] <= self.lastSeq:
            seq, waiting = numbered.pop(0)
            waiting.callback(seq)

    # -- IRoster -----------------------------------------------------------------

    def claim(self, name: bytes) -> Deferred[User | None]:
        if not (self.registered and self.linkUp):
            return defer.fail(ClusterUnavailable("the cluster is unreachable"))
        d = self._script(
            "claim",
            self.name,
            self.token,
            name.lower(),
            int(self.ttl * 1000),
            MAX_ID,
        )

        def claimed(uid: int) -> User | None:
            uid = int(uid)
            if uid == 0:
                return None
            if uid < 0:
                raise OverflowError("user ids exhausted")
            self.maxId = max(self.maxId, uid)
            return User(uid, PALETTE[(uid - 1) % len(PALETTE)], name)

        def failed(failure: Failure) -> Failure:
            self._checkLease(failure)
            return Failure(ClusterUnavailable(failure.getErrorMessage()))

        return d.addCallbacks(claimed, failed)

    def release(self, user: User) -> None:
        self.releaseName(user.name)

    def releaseName(self, name: bytes) -> Deferred[None] | None:
        """Free ``name``; the Deferred (None when nothing was sent) fires
        once Redis has done it."""
        if not (self.registered or self._recovering):
            return None  # the lease is gone: so are its names (the reaper's)
        lower = name.lower()
        if not self.linkUp or self._recovering:
            self._owedReleases[lower] = None
            return None
        d = self._script("release", self.name, lower)
        d.addErrback(lambda f: self._owedReleases.__setitem__(lower, None))
        return d

    # -- heartbeat: lease, reaping, catching up ------------------------------

    def _beat(self) -> None:
        if self._beating or self._stopping:
            return
        self._linkChanged()
        if not self.linkUp:
            if self.registered and self.clock.seconds() - self._renewed > self.ttl:
                self._leaseLost(f"no contact with Redis for {self.ttl:g}s")
            return
        self._beating = True
        if self._needRecover:
            d = self._recover()
        elif not self.registered:
            d = self._join()
        else:
            d = self._renew()
        d.addErrback(self._beatFailed)
        d.addBoth(self._beatDone)

    def _beatDone(self, _: object) -> None:
        self._beating = False

    def _beatFailed(self, failure: Failure) -> None:
        log.warn("cluster: heartbeat failed: {why}", why=_text(failure.value))
        if self.registered and self.clock.seconds() - self._renewed > self.ttl:
            self._leaseLost(f"no lease renewal for {self.ttl:g}s")

    def _later(self, seconds: float, f: Callable[[], None]) -> None:
        """callLater, remembered so that stop() can cancel it."""
        self._calls = [c for c in self._calls if c.active()]
        self._calls.append(self.clock.callLater(seconds, f))

    def _linkEvent(self) -> None:
        """Connected or disconnected: say so now; once connected, join (or
        renew, and send what is owed) without waiting for the next beat."""
        self._linkChanged()
        if self.linkUp and not self._stopping:
            self._later(0, self._beat)

    def _linkChanged(self) -> None:
        up = self.linkUp
        if up != self._linkWasUp:
            if self._linkWasUp is not None or not up:
                log.info(
                    "cluster: Redis link {state} ({redis})",
                    state="up" if up else "down",
                    redis=self.target.display,
                )
            self._linkWasUp = up

    async def _joinAsync(self) -> None:
        """Snapshot (first time), wait out the lease of a previous run under
        our name (a live one: refuse), reap what it left, take a lease."""
        await self._loadScripts()
        if self.lastSeq == 0 and self.lastId == b"0-0":
            await self._snapshot()
        self._read()
        key = f"{self.prefix}node:{self.name}"
        self.commands += 1
        left = int(await self._cmd.execute_command("PTTL", key))
        if left != -2:  # a lease under our name: wait until it must lapse
            wait = (left if left > 0 else self.ttl * 1000) / 1000 + 0.2
            log.info(
                "cluster: node name {node} has a lease; waiting {wait:.1f}s to "
                "see it lapse (a live node renews it)",
                node=self.name,
                wait=wait,
            )
            lapsed: Deferred[None] = Deferred()
            self._later(wait, lambda: lapsed.callback(None))  # stop() cancels
            await lapsed
            if self._stopping:
                return
            self.commands += 1
            if await self._cmd.execute_command("EXISTS", key):
                self._refuse()
                return
        await self._reap(self.name)
        if not await self._register():
            self._refuse()
            return
        self._renewed = self.clock.seconds()
        waiters, self._joinedWaiters = self._joinedWaiters, []
        for waiting in waiters:
            waiting.callback(None)
        self.joins += 1
        log.info(
            "cluster: node {node} joined{again} (sequence at {seq})",
            node=self.name,
            again=" again" if self.joins > 1 else "",
            seq=self.lastSeq,
        )

    async def _register(self, token: str = "") -> bool:
        """Take our lease (never a live node's) and learn the epoch."""
        token = token or os.urandom(8).hex()
        ok, epoch = await self._call(
            "register", self.name, token, int(self.ttl * 1000), os.urandom(8).hex()
        )
        if not int(ok):
            return False
        self.token, self.epoch = token, _text(epoch)
        return True

    def _refuse(self) -> None:
        """Two live nodes must never share a name: this one stays out."""
        why = (
            f"cluster: node name {self.name} is held by a live node; refusing "
            "to run under it (give each node its own --node-name)"
        )
        log.error(why)
        self._stopping = True
        if self._heartbeat.running:
            self._heartbeat.stop()
        if self.fatal is not None:
            self.fatal(why)

    def _join(self) -> Deferred[None]:
        return defer.ensureDeferred(self._joinAsync())

    async def _snapshot(self) -> None:
        lastId, seq, flat = await self._script("snapshot")
        self.lastId = lastId
        self.lastSeq = self.clusterSeq = int(seq)
        users = sorted(
            (userFromEntry(entry) for entry in flat[1::2]), key=lambda u: u.id
        )
        for user in users:
            join = Join(user)
            for sink in self._sinks:
                sink.deliver(join)
        log.info(
            "cluster: {n} users active, sequence at {seq}",
            n=len(users),
            seq=self.lastSeq,
        )

    async def _renewAsync(self) -> None:
        reply = await self._call(
            "heartbeat", self.name, self.token, int(self.ttl * 1000), self.epoch
        )
        if int(reply[0]) == 2:
            await self._recover()
            return
        if int(reply[0]) == 0:
            self._leaseLost("its lease expired")
            return
        self._renewed = self.clock.seconds()
        self.clusterSeq = int(reply[1])
        if self._stale:  # numbers went back, yet the same epoch: read anew
            await self._restartReading(fromStart=False)
        self._read()  # if the reader had given up meanwhile
        self._payDebts()
        if reply[4]:
            self._cutNames({bytes(lower) for lower in reply[4]}, NAME_LOST)
        for dead in reply[3]:
            await self._reap(_text(dead))

    def _recover(self) -> Deferred[None]:
        """Redis lost its state: register again, with our users (their name
        leases and snapshot entries), and read the new stream from its start.
        A name another node took meanwhile goes to the earlier activation.
        Fires when done (a second call waits for the first)."""
        d: Deferred[None] = Deferred()
        self._recoveryWaiters.append(d)
        if not self._recovering:
            self._recovering = True
            done = defer.ensureDeferred(self._recoverAsync())

            def fire(result: object) -> None:
                waiters, self._recoveryWaiters = self._recoveryWaiters, []
                for waiting in waiters:
                    if isinstance(result, Failure):
                        waiting.errback(result)
                    else:
                        waiting.callback(None)

            done.addBoth(fire)
        return d

    async def _recoverAsync(self) -> None:
        if not self._needRecover:  # the first attempt (not a retry)
            self.resets += 1
            self._newToken = os.urandom(8).hex()
            log.warn(
                "cluster: Redis lost its state (epoch changed); node {node} "
                "registers again with its users",
                node=self.name,
            )
            numbered, self._numbered = self._numbered, []
            for _, waiting in numbered:  # numbered in an order now lost
                waiting.errback(ClusterUnavailable("Redis lost its state"))
            await self._restartReading(fromStart=True)
        self._needRecover = True
        self.token = ""
        try:
            if not await self._register(self._newToken):
                self._refuse()
                return
            users = self._localUsers()
            args: list[object] = []
            for user in users:
                since = self._since.get(user.id, "")
                args += [user.id, user.entry, user.name.lower(), since]
            lost, won = await self._call(
                "reclaim",
                self.name,
                self.token,
                int(self.ttl * 1000),
                self.maxId,
                *args,
            )
        except BaseException:
            self.token = ""
            raise
        finally:
            self._recovering = False
        self._needRecover = False
        self._renewed = self.clock.seconds()
        self._read()
        cut = self._cutNames({bytes(lower) for lower in lost}, NAME_LOST)
        byId = {user.id: user for user in users}
        for uid in won:  # displaced another node's user: JOIN again
            user = byId[int(uid)]
            self.submit(Join(user)).addErrback(lambda f: None)
        self._payDebts()
        log.info(
            "cluster: node {node} registered again after Redis lost its state: "
            "{kept} users kept, {cut} cut (name held by an earlier user)",
            node=self.name,
            kept=len(users) - cut,
            cut=cut,
        )
        # Every live node registers again within a heartbeat or so; by a TTL
        # from now the others have, or are gone: WHO from the snapshot then.
        self._later(self.ttl, self._rebuildSoon)

    def _localUsers(self) -> list[User]:
        """This node's named users (those still leaving excluded)."""
        if self.factory is not None:
            return [user for user, _ in self.factory.named()]
        return [u for uid, u in self._local.items() if uid not in self._owedLeaves]

    async def _restartReading(self, fromStart: bool) -> None:
        """Read a new stream: from its start (Redis lost its state: its
        numbers begin again), or from now on, the snapshot telling WHO."""
        self._readGen += 1
        self._stale = False
        if fromStart:
            self.lastId, self.lastSeq, self.clusterSeq = b"0-0", 0, 0
            return
        lastId, seq, _ = await self._call("snapshot")
        self.lastId, self.lastSeq = lastId, int(seq)
        self._rebuildSoon()

    def _cutNames(self, lowers: set[bytes], text: str) -> int:
        """ERROR SHUTDOWN ``text`` to this node's users called one of
        ``lowers`` (in any case)."""
        if not lowers:
            return 0
        log.warn(
            "cluster: {names} held by an earlier user on another node: cut here",
            names=b", ".join(sorted(lowers)).decode("utf-8", "replace"),
        )
        if self.factory is None:
            return 0
        cut = 0
        for user, proto in self.factory.named():
            if user.name.lower() in lowers:
                proto.session.close(LeaveReason.ERROR, ErrorCode.SHUTDOWN, text)
                cut += 1
        return cut

    def _rebuildSoon(self) -> None:
        if self.rebuilding is not None or self._stopping or self.replica is None:
            return
        d = self.rebuilding = defer.ensureDeferred(self._rebuildWho())
        d.addErrback(
            lambda f: log.warn(
                "cluster: could not rebuild WHO: {why}", why=_text(f.value)
            )
        )
        d.addBoth(lambda _: setattr(self, "rebuilding", None))

    async def _rebuildWho(self) -> None:
        """The replica (WHO) as the active-users snapshot has it: after a
        gap it may miss JOINs and LEAVEs.  Events read later apply on top
        (each user's JOIN comes before its LEAVE), so it converges."""
        _, _, flat = await self._call("snapshot")
        users = sorted(
            (userFromEntry(entry) for entry in flat[1::2]), key=lambda u: u.id
        )
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

    def _renew(self) -> Deferred[None]:
        return defer.ensureDeferred(self._renewAsync())

    def _payDebts(self) -> None:
        for lower in list(self._owedReleases):
            del self._owedReleases[lower]
            self.releaseName(lower)
        leaves = list(self._owedLeaves.values())
        self._owedLeaves.clear()
        for leave in leaves:
            self.submit(leave).addErrback(lambda f: None)

    async def _reap(self, dead: str) -> None:
        """Sequence LEAVE error for ``dead``'s users and free its names; the
        script does it only if ``dead`` still holds no lease, and only once."""
        for _ in range(3):
            self.commands += 1
            flat = await self._cmd.execute_command(
                "HGETALL", f"{self.prefix}nodeusers:{dead}"
            )
            users = sorted(
                (userFromEntry(entry) for entry in flat[1::2]), key=lambda u: u.id
            )
            leaves: list[Event] = [Leave(u, LeaveReason.ERROR) for u in users]
            result = await self._script(
                "reap",
                dead,
                self.name,
                len(leaves),
                encodeBatch(leaves),
                STREAM_MAXLEN,
            )
            if result == -1:
                continue
            if isinstance(result, list):
                log.info(
                    "cluster: node {dead} is gone: {n} users leave (sequenced by "
                    "{node})",
                    dead=dead,
                    n=len(users),
                    node=self.name,
                )
            return

    def _leaseLost(self, why: str) -> None:
        """Others have (or will have) sequenced our users' LEAVEs: cut them,
        so none stays in a room that no longer lists it; join again later."""
        if not self.registered:
            return
        log.error(
            "cluster: node {node} {why}: {lost}", node=self.name, why=why, lost=LOST
        )
        self.token = ""
        self._local.clear()
        self._since.clear()
        self._owedLeaves.clear()
        self._owedReleases.clear()
        pending, self._pending = self._pending, []
        for _, waiting in pending:
            waiting.errback(ClusterUnavailable(LOST))
        numbered, self._numbered = self._numbered, []
        for _, waiting in numbered:
            waiting.errback(ClusterUnavailable(LOST))
        self.cutAll(LOST)

    def cutAll(self, text: str) -> int:
        """ERROR SHUTDOWN ``text`` to every connection of this node."""
        if self.factory is None:
            return 0
        conns = list(self.factory.connections)
        for proto in conns:
            proto.session.close(LeaveReason.ERROR, ErrorCode.SHUTDOWN, text)
        return len(conns)

    # -- stopping --------------------------------------------------------------

    def stop(self) -> Deferred[None]:
        """After the local users were closed: send their LEAVEs, give the
        lease up, clean up after ourselves, disconnect.  Bounded by the reply
        timeout when Redis is away (then the others reap us after the TTL)."""
        return defer.ensureDeferred(self._stopAsync())

    async def _stopAsync(self) -> None:
        self._stopping = True
        if self._heartbeat.running:
            self._heartbeat.stop()
        for call in self._calls:
            if call.active():
                call.cancel()
        self.flush()
        try:
            await self._allAnswered()
            if self.registered and self.linkUp:
                await self._script("resign", self.name, self.token)
                self.token = ""
                await self._reap(self.name)
        except Exception as e:
            log.warn("cluster: could not leave cleanly ({e}); the others reap us", e=e)
        self.token = ""
        for conn in (self._cmd, self._reader):
            if conn is not None:
                try:
                    await conn.disconnect()
                except Exception:
                    pass
        log.info("cluster: node {node} left", node=self.name)


def connectRedis(
    target: RedisTarget,
    replyTimeout: float | None,
    onLink: Callable[[], None] | None = None,
) -> Any:
    """A txredisapi connection handler: one connection, reconnecting, bytes
    in and out.  ``onLink`` is called whenever it connects or disconnects.
    (A command given while it is disconnected waits for the reconnection:
    callers check ``_factory.size`` first.)"""
    import txredisapi
    from twisted.internet import reactor

    factory = txredisapi.RedisFactory(
        target.display,
        target.db or None,
        1,
        isLazy=True,
        charset=None,
        password=target.password,
        replyTimeout=replyTimeout,
        convertNumbers=False,
        username=target.username,
    )
    factory.initialDelay = 0.5
    factory.maxDelay = 2
    if onLink is not None:
        added, removed = factory.addConnection, factory.delConnection

        def addConnection(conn: Any) -> None:
            added(conn)
            onLink()

        def delConnection(conn: Any) -> None:
            removed(conn)
            onLink()

        factory.addConnection = addConnection
        factory.delConnection = delConnection
    factory.startConnecting(redisEndpoint(reactor, target))
    return factory.handler


def redisEndpoint(reactor: Any, target: RedisTarget) -> Any:
    """TCP, TLS with the host's certificate checked, or a unix socket."""
    if target.scheme == "unix":
        return endpoints.UNIXClientEndpoint(reactor, target.path, timeout=5)
    endpoint: Any = endpoints.HostnameEndpoint(
        reactor, target.host, target.port, timeout=5
    )
    if target.scheme == "rediss":
        from twisted.internet import ssl

        options = ssl.optionsForClientTLS(target.host)
        endpoint = endpoints.wrapClientTLS(options, endpoint)
    return endpoint


def nodeFor(config: Any, clock: Any) -> ClusterNode:
    """The node that ``--redis`` and friends describe."""
    from twisted.python import usage

    from chatd.secretfile import readPassword

    target = parseRedisURL(config.redis)
    if config.redis_password_file:
        try:
            password = readPassword(config.redis_password_file)
        except ValueError as e:
            raise usage.UsageError(f"--redis-password-file: {e}") from None
        target = RedisTarget(
            target.scheme,
            target.host,
            target.port,
            target.path,
            target.db,
            target.username,
            password.decode("utf-8", "replace"),
        )
    name = config.node_name or defaultNodeName(config.listen)
    node = ClusterNode(target, name, config.node_ttl, clock)
    node.fatal = _stopReactor
    return node


def _stopReactor(why: str) -> None:
    """The node must not run: stop chatd (the reason is logged already)."""
    from twisted.internet import reactor

    reactor.stop()
