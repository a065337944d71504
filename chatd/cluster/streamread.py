"""Reading the cluster back: the cluster's stream and this node's rooms'.

Every node delivers events only as it reads them back, in ONE
``XREAD BLOCK`` over the cluster's stream and the streams of the rooms that
have a member on this node (:mod:`.roomreads`), merged by number
(:mod:`.streammerge`): one total order per room on every node, and no node
reads the messages of a room it has no member in.

A room's stream is added when the reader meets, in the order, a local
user's ROOM_JOIN (or a hand-over of a user to this node): the entry carries
the room stream's cursor as it was at that point, so the node reads
everything after it and nothing before.  The reader stops there, seeds the
room's history from the room's stream, and reads again with the room (the
entry comes back and is delivered then).  It drops the stream at the
last local member's ROOM_LEAVE or LEAVE (or hand-over away).  The set thus
changes only between two reads: no blocked read need be cut short.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.cluster.redislink import READ_COUNT, ClusterUnavailable, RedisLink, text
from chatd.cluster.roomreads import LocalRooms
from chatd.cluster.standing import Standing
from chatd.cluster.streammerge import MAIN, Entry, merge, parseReply, roomStream
from chatd.core.events import Join, Leave
from chatd.core.roomevents import RoomJoin, RoomLeave
from chatd.core.rooms import key
from chatd.core.roster import User
from chatd.core.sequencer import IEventSink

log = Logger(namespace="chatd.cluster")


class Cursor:
    """Where a stream is read from, and its last number read (None: not
    known, so its next entry is not checked for a gap)."""

    __slots__ = ("id", "lastNum")

    def __init__(self, entryId: bytes, lastNum: int | None = None) -> None:
        self.id = entryId
        self.lastNum = lastNum


class StreamReader:
    """The reading half of the node's sequencer (module doc)."""

    def __init__(self, link: RedisLink, standing: Standing) -> None:
        self.link = link
        self.standing = standing
        #: Called when WHO may be wrong (a gap, a stream read anew).
        self.rebuildWho: Callable[[], None] = lambda: None
        self.streams: dict[bytes, Cursor] = {MAIN: Cursor(b"0-0", 0)}
        self.rooms = LocalRooms()
        self.lastSeq = 0
        self.clusterSeq = 0
        #: Numbers up to which this node read all its streams hold (others'
        #: rooms' numbers lie between its own): what /status's lag is from.
        self.readTo = 0
        self.gaps = 0
        #: Events read back (the cluster's and this node's rooms').
        self.eventsRead = 0
        self._sinks: list[IEventSink] = []
        # Submissions Redis numbered that the reader has not yet delivered
        # here: (seq, Deferred), in order.  ISequencer promises the Deferred
        # fires after local delivery (replies stay in order).
        self._numbered: list[tuple[int, Deferred[int]]] = []
        # Hand-overs to this node read back (uid -> first), and those
        # waited for (uid -> Deferreds).
        self._tookOver: dict[int, int] = {}
        self._handOvers: dict[int, list[Deferred[int]]] = {}
        # This node's users from their JOIN to their LEAVE, by id, and the
        # stream id of their JOIN (their activation time) once read back.
        self.local: dict[int, User] = {}
        self.since: dict[int, str] = {}
        self._reading = False
        self._readGen = 0  # bumped when reading restarts on a new stream
        self._stale = False  # the stream went backwards: wait for recovery
        #: Protocol 1.2: the resume seam, told of hand-overs
        #: (chatd.cluster.redisresumes); the history, seeded at start and
        #: per room, told of gaps and of streams read anew (.streamhistory).
        self.resumes: Any = None
        self.history: Any = None

    @property
    def lastId(self) -> bytes:
        """The cluster stream's cursor."""
        return self.streams[MAIN].id

    @lastId.setter
    def lastId(self, entryId: bytes) -> None:
        self.streams[MAIN].id = entryId

    def subscribe(self, sink: IEventSink, after: int | None = None) -> None:
        if after is not None:
            raise ValueError("a cluster node delivers from now on only")
        self._sinks.append(sink)

    def reads(self, roomKey: bytes) -> bool:
        """Whether this node reads the room's stream now."""
        return roomStream(roomKey) in self.streams

    # -- reading ---------------------------------------------------------------

    def read(self) -> None:
        """Keep reading (unless reading already, or stopped, or stale)."""
        if self.standing.stopping or self._reading or self._stale:
            return
        self._reading = True
        gen = self._readGen
        d = self.link.read([(name, c.id) for name, c in self.streams.items()])
        d.addCallbacks(self._gotEntries, self._readFailed, (gen, self.clusterSeq))

    @property
    def lag(self) -> int:
        """Numbers assigned (as of the last heartbeat) this node has yet
        to read, as far as it knows."""
        return max(0, self.clusterSeq - max(self.lastSeq, self.readTo))

    def _gotEntries(self, reply: Any, gen: int, issuedAt: int) -> None:
        self._reading = False
        if gen != self._readGen:
            self.read()
            return
        lastNums = {n: c.lastNum or 0 for n, c in self.streams.items()}
        parsed = parseReply(reply, self.link.prefix.encode(), lastNums)
        ready = merge(parsed, READ_COUNT)
        for entry in ready:
            if gen != self._readGen or self._stale:
                break  # read from a stream Redis has since lost
            if entry.stream not in self.streams:
                continue  # a room dropped since: its last member left
            adding = self._toAdd(entry)
            if adding:
                self._reading = True
                d = defer.ensureDeferred(self._add(adding))
                d.addBoth(self._added)
                return
            self._entry(entry)
        else:
            if len(ready) == sum(map(len, parsed.values())):  # none held back
                self.readTo = max(self.readTo, issuedAt)  # known before the read
        self.read()

    def _readFailed(self, failure: Failure) -> None:
        self._reading = False
        if not self.standing.stopping:
            log.warn(
                "cluster: reading the stream failed: {why}", why=text(failure.value)
            )
            self.standing.later(1, self.read)

    # -- the set of streams ----------------------------------------------------

    def _toAdd(self, entry: Entry) -> dict[bytes, bytes]:
        """Room key -> cursor of the rooms this entry makes us read."""
        adding: dict[bytes, bytes] = {}
        if entry.handOver is not None:
            if entry.node == self.standing.name.encode():
                adding = dict(entry.rooms)
        else:
            for event in entry.events:
                if type(event) is RoomJoin and event.user.id in self.local:
                    roomKey = key(event.room)
                    cursor = entry.rooms.get(roomKey)
                    if cursor is not None:
                        adding[roomKey] = cursor
        return {k: c for k, c in adding.items() if not self.reads(k)}

    async def _add(self, adding: dict[bytes, bytes]) -> None:
        """Read these rooms' streams from their cursors on, their history
        seeded from them first."""
        for roomKey, cursor in adding.items():
            self.streams[roomStream(roomKey)] = Cursor(cursor)
        if self.history is None:
            return
        for roomKey, cursor in adding.items():
            try:
                await self.history.seedRoom(roomKey, cursor)
            except Exception as e:
                log.warn(
                    "cluster: the history of room {room} could not be read: {e}",
                    room=text(roomKey),
                    e=text(e),
                )

    def _added(self, result: object) -> None:
        self._reading = False
        self.read()

    def _drop(self, roomKeys: list[bytes]) -> None:
        for roomKey in roomKeys:
            self.streams.pop(roomStream(roomKey), None)

    def _count(self, entry: Entry) -> None:
        """Local members in and out of rooms, as the order says."""
        rooms = self.rooms
        if entry.handOver is not None:
            uidText, _, old = entry.handOver.partition(b" ")
            me = self.standing.name.encode()
            if entry.node == me:
                for roomKey in entry.rooms:
                    rooms.join(roomKey, int(uidText))
            elif old == me:
                self._drop(rooms.leaveAll(int(uidText)))
            return
        for event in entry.events:
            if type(event) is RoomJoin and event.user.id in self.local:
                rooms.join(key(event.room), event.user.id)
            elif type(event) is RoomLeave:
                if rooms.leave(key(event.room), event.user.id):
                    self._drop([key(event.room)])
            elif type(event) is Leave:
                self._drop(rooms.leaveAll(event.user.id))

    def forgetRooms(self) -> None:
        """No local users any more: only the cluster's stream is read."""
        self.rooms.clear()
        self.streams = {MAIN: self.streams[MAIN]}

    # -- one entry ---------------------------------------------------------------

    def _entry(self, entry: Entry) -> None:
        cursor = self.streams[entry.stream]
        cursor.id = entry.id
        if entry.bad is not None:
            log.error(
                "cluster: bad stream entry {id}: {e}", id=text(entry.id), e=entry.bad
            )
            return
        first, events = entry.first, entry.events
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
            self.standing.beatSoon()
            return
        if cursor.lastNum is not None and entry.prev not in (None, cursor.lastNum):
            self.gaps += 1
            self.rebuildWho()
            if self.history is not None:
                self.history.gap(first)
            log.warn(
                "cluster: gap in the sequence of {stream}: expected {want}, got "
                "{got} (entries trimmed while this node was away?)",
                stream=text(entry.stream),
                want=cursor.lastNum,
                got=entry.prev,
            )
        if entry.node != self.standing.name.encode() and any(
            isinstance(e, Leave) and e.user.id in self.local for e in events
        ):
            # Another node sequenced our users' LEAVEs: it reaped us.  Cut
            # them first, so none receives its own LEAVE.
            self.standing.leaseLost("was declared gone by another node")
        self.eventsRead += len(events)
        for i, event in enumerate(events):
            event.seq = first + i
            if isinstance(event, Join):
                self.standing.maxId = max(self.standing.maxId, event.user.id)
                if event.user.id in self.local:
                    self.since.setdefault(event.user.id, text(entry.id))
            for sink in self._sinks:
                sink.deliver(event)
        self._count(entry)
        if events:
            cursor.lastNum = entry.last
        self.lastSeq = max(self.lastSeq, entry.last)
        if entry.handOver is not None:
            self._handedOver(entry)
        self._fireDelivered()

    def _handedOver(self, entry: Entry) -> None:
        handOver = entry.handOver or b""
        if entry.node == self.standing.name.encode():
            uid = int(handOver.partition(b" ")[0])
            waiting = self._handOvers.pop(uid, [])
            if not waiting:
                self._tookOver[uid] = entry.first
            for d in waiting:
                d.callback(entry.first - 1)
        if self.resumes is not None:
            self.resumes.handedOver(handOver, entry.node)

    # -- waiting for the order ---------------------------------------------------

    def whenRead(self, seq: int) -> Deferred[int]:
        """Fires once every event up to ``seq`` was delivered here (fails
        like a submission when that order is lost)."""
        d: Deferred[int] = Deferred()
        bisect.insort(self._numbered, (seq, d), key=lambda pair: pair[0])
        self._fireDelivered()
        return d

    def whenHandedOver(self, uid: int, seq: int) -> Deferred[int]:
        """Fires once the hand-over of ``uid`` to this node that follows
        ``seq`` was read back: everything before it delivered here, the
        user's rooms read (and their history seeded) from there on."""
        if self._tookOver.get(uid, 0) > seq:
            del self._tookOver[uid]
            return defer.succeed(seq)
        d: Deferred[int] = Deferred()
        self._handOvers.setdefault(uid, []).append(d)
        return d

    def _fireDelivered(self) -> None:
        """Fire the submissions whose events the reader has delivered."""
        numbered = self._numbered
        while numbered and numbered[0][0] <= self.lastSeq:
            seq, waiting = numbered.pop(0)
            waiting.callback(seq)

    def failNumbered(self, why: str) -> None:
        """Submissions numbered but not read back will never be: fail them."""
        numbered, self._numbered = self._numbered, []
        handOvers, self._handOvers = self._handOvers, {}
        self._tookOver.clear()
        for _, waiting in numbered:
            waiting.errback(ClusterUnavailable(why))
        for waiters in handOvers.values():
            for waiting in waiters:
                waiting.errback(ClusterUnavailable(why))

    # -- where reading starts ------------------------------------------------------

    @property
    def fresh(self) -> bool:
        """Nothing read yet: a snapshot tells where to start."""
        return self.lastSeq == 0 and self.lastId == b"0-0"

    @property
    def stale(self) -> bool:
        """The numbers went back: nothing is delivered until reading anew."""
        return self._stale

    async def restartReading(self, fromStart: bool) -> None:
        """Read new streams: from their start (Redis lost its state: its
        numbers begin again), or from now on, the snapshot telling WHO."""
        self._readGen += 1
        self._stale = False
        self.readTo = 0
        if fromStart:
            self.lastSeq = self.clusterSeq = 0
            for cursor in self.streams.values():
                cursor.id, cursor.lastNum = b"0-0", 0
            if self.history is not None:  # numbers begin again: so does history
                self.history.restarted()
            return
        lastId, seq, _, _, lastNum = await self.link.call("snapshot")
        self.streams[MAIN] = Cursor(lastId, int(lastNum))
        self.lastSeq = int(seq)
        for name in list(self.streams):
            if name != MAIN:
                top = await self.link.command(
                    "XREVRANGE", self.link.prefix + name.decode(), "+", "-", "COUNT", 1
                )
                self.streams[name] = Cursor(bytes(top[0][0]) if top else b"0-0")
        self.rebuildWho()
