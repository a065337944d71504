"""The hub: what every session of one process shares.

The rules (a configuration read at use, so a reload applies to everyone),
the clock, the roster authority and its replica, the sequencer and this
process's fan-outs (one per wire format), the counters and the error log.
Front ends make sessions on the hub; the server's factory owns one.  It is
not a chat room: the rooms of protocol 1.2 are :mod:`chatd.core.rooms`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface

from chatd.core.codec import IClientCodec
from chatd.core.errorlog import ErrorLog
from chatd.core.events import Event, Kick
from chatd.core.fanout import FanOut
from chatd.core.history import History, IHistoryStore
from chatd.core.resumes import IResumes, LocalResumes, resumeFigures
from chatd.core.roomcast import RoomCast
from chatd.core.roomevents import RoomLeave, RoomLock, RoomTopic
from chatd.core.roster import IRoster, Replica, Roster
from chatd.core.rules import LeaveReason
from chatd.core.sequencer import ISequencer, ISynchronousSequencer, LocalSequencer
from chatd.core.session import Session
from chatd.core.stats import Stats


class Rules(Protocol):
    """The settings sessions read (chatd.server.config.Config has them)."""

    @property
    def password(self) -> bytes | None: ...
    @property
    def idle_timeout(self) -> float: ...
    @property
    def handshake_timeout(self) -> float: ...
    @property
    def rate_limit(self) -> float: ...
    @property
    def rate_burst(self) -> int: ...
    @property
    def max_backlog(self) -> int: ...
    @property
    def default_room(self) -> str: ...
    @property
    def max_rooms(self) -> int: ...
    @property
    def max_rooms_per_user(self) -> int: ...
    @property
    def rooms(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def resume_window(self) -> float: ...
    @property
    def history(self) -> int: ...
    @property
    def history_bytes(self) -> int: ...


class ILoginGuard(Interface):
    """Slows password guessing; a connection is anything with ``host`` and
    ``peer`` (an :class:`~chatd.core.session.IConnection`)."""

    def locked(conn: object) -> str | None:
        """The AUTH_FAILED text for a HELLO from a locked address, or None
        when its password may be checked."""

    def failed(conn: object) -> float:
        """A wrong password: seconds to wait before answering (0: now)."""

    def succeeded(conn: object) -> None:
        """A right password: the address is trusted again."""


class Hub:
    """Sessions, and what they share."""

    def __init__(
        self,
        config: Rules,
        clock: IReactorTime,
        sequencer: ISequencer | None = None,
        roster: IRoster | None = None,
        *,
        codec: IClientCodec,
        resumable: bool = False,
        history: IHistoryStore | None = None,
    ) -> None:
        """``codec`` is the wire format most connections speak: its fan-out
        is made now and is :attr:`fanout` (the others' on first use).
        ``resumable``: history and resume are served (one process), from
        ``history`` (--history-db's store) or a history in memory."""
        self.config = config
        self.clock = clock
        self.stats = Stats()
        self.roster: IRoster = roster if roster is not None else Roster()
        self.replica = Replica()
        self.sequencer: ISequencer = (
            sequencer if sequencer is not None else LocalSequencer()
        )
        self.sequencer.subscribe(self.replica)
        #: The sequencer's synchronous path, where it has one (one process).
        self.sequenceNow: Callable[[Event], int] | None = (
            self.sequencer.sequence
            if ISynchronousSequencer.providedBy(self.sequencer)
            else None
        )
        #: One fan-out per wire format, so an event is encoded once per
        #: format, not once per recipient.
        self.fanouts: dict[str, FanOut] = {}
        #: The fan-out of the main wire format (chatd frames, in a server).
        self.fanout = self.fanoutFor(codec)
        #: Protocol 1.2's rooms and their members' fan-outs.
        self.rooms = RoomCast(
            clock.callLater,
            config.max_backlog,
            config.default_room.encode(),
            config.max_rooms,
            config.max_rooms_per_user,
            [(n.encode(), t.encode(), bool(t)) for n, t in config.rooms],
        )
        self.sequencer.subscribe(self.rooms)
        #: Resume tokens, and the sessions kept for a resume; None: not served.
        self.resumes: IResumes | None = None
        self.detached: dict[Session, None] = {}
        if resumable:
            if history is None:
                history = History(config.history, config.history_bytes)
            self.rooms.history = history
            self.resumes = LocalResumes(clock, history)
        self.errorLog = ErrorLog()
        #: Sessions admitted and not yet gone, in order of arrival.
        self.sessions: dict[Session, None] = {}
        #: Guards password checks (a server's per-address login backoff).
        self.logins: ILoginGuard | None = None

    def fanoutFor(self, codec: IClientCodec) -> FanOut:
        """The fan-out of recipients that speak ``codec`` (made on first
        use: it delivers what is sequenced from then on, which is all a
        user who becomes active later needs)."""
        fanout = self.fanouts.get(codec.name)
        if fanout is None:
            fanout = FanOut(self.clock.callLater, self.config.max_backlog, codec.event)
            self.fanouts[codec.name] = fanout
            self.sequencer.subscribe(fanout)
        return fanout

    @property
    def password(self) -> bytes | None:
        return self.config.password

    def applyConfig(self, config: Rules) -> None:
        """New rules for everyone (a reload); timeouts and rate limits of
        sessions already active keep what they started with."""
        self.config = config
        for fanout in self.fanouts.values():
            fanout.maxBacklog = config.max_backlog
        self.rooms.applyConfig(config.max_backlog)
        if self.rooms.history is not None:
            self.rooms.history.limit = config.history
            self.rooms.history.maxBytes = config.history_bytes

    def kick(self, name: str) -> bool:
        """Remove the active user ``name`` (any case), wherever it is
        connected: ERROR KICKED to it, LEAVE ``kicked`` to the others."""
        user = self.replica.find(name.encode())
        if user is None:
            return False
        self.sequencer.submit(Kick(user))
        return True

    def kickFromRoom(self, name: str, room: str) -> bool:
        """Remove user ``name`` from 1.2 room ``room`` only: ROOM_LEAVE
        ``kicked`` to the members and to the user, who stays connected."""
        user = self.replica.find(name.encode())
        found = self.rooms.directory.get(room.encode())
        if user is None or found is None or user.id not in found.members:
            return False
        self.sequencer.submit(RoomLeave(found.name, user, LeaveReason.KICKED))
        return True

    def setTopic(self, room: str, topic: str | None, locked: bool | None) -> bool:
        """The operator sets 1.2 room ``room``'s topic (None: as it is) and
        locks or unlocks it (None: as it is): sequenced, so every process
        and every member agree; False if there is no such room."""
        found = self.rooms.directory.get(room.encode())
        if found is None or found is self.rooms.directory.default:
            return False
        if topic is not None:
            self.sequencer.submit(RoomTopic(found.name, topic.encode()))
        if locked is not None:
            self.sequencer.submit(RoomLock(found.name, locked))
        return True

    def roomReport(self) -> list[dict[str, object]]:
        """Every room: name, members, topic, whether it is the operator's,
        and the room events sequenced in it (for /status and /metrics)."""
        rooms = self.rooms
        default = rooms.directory.default
        return [
            {
                "name": room.name.decode(),
                "users": len(self.replica) if room is default else len(room.members),
                "topic": room.topic.decode(errors="replace"),
                "topic_locked": room.locked or room is default,
                "permanent": room.permanent,
                "events": rooms.messages.get(roomKey, 0),
            }
            for roomKey, room in rooms.directory.rooms.items()
        ]

    def resumeReport(self) -> dict[str, object] | None:
        """Users kept for a resume and what the history holds (/status);
        None where this process does not keep them (with --workers, main's
        backend reports its ResumeAuthority's instead)."""
        if self.resumes is None:
            return None
        return resumeFigures(
            self.config.resume_window,
            len(self.detached),
            len(self.resumes),
            self.rooms.history,
        )
