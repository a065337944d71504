"""Who is here: names, ids and colours, and the order users became active.

Two parts, as a cluster needs them: the :class:`IRoster` authority hands out
names, ids and colours (a name is held from the WELCOME that grants it until
its connection begins to close; ids are never reused), and answers with a
Deferred so a remote roster can answer later; the :class:`Replica` is built
from the sequenced JOIN and LEAVE events, so every process holds the same
list of active users in activation order and answers WHO and WHISPER
lookups locally.  Each user's wire prefix (``id.color.name.``) is formatted
once, at WELCOME, so the per-message path only concatenates bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import Interface, implementer

from chatd.core.events import Event, Join, Leave
from chatd.core.rules import MAX_PAYLOAD
from chatd.core.sequencer import IEventSink

#: xterm-256 colours that read well on dark and on light backgrounds,
#: ordered so that each next one is as far as possible (in CIELAB) from
#: those before it: the first users get clearly different hues (blue,
#: green, red, gold, teal, raspberry, purple, ...).
PALETTE = (
    33, 40, 196, 178, 37, 125, 128, 64, 208, 133, 27, 43, 130, 70, 202, 105,
    99, 34, 161, 169, 172, 136, 166, 69,
)  # fmt: skip

MAX_ID = 4294967295


@dataclass(eq=False)
class User:
    """One named connection; identity, not equality, tells users apart."""

    id: int
    color: int
    name: bytes
    #: ``id.color.name`` as it appears in JOIN, LEAVE and USERS.
    entry: bytes = field(init=False)
    #: ``id.color.name.``: the prefix of MESSAGE and WHISPERED payloads.
    prefix: bytes = field(init=False)
    #: The longest text this user may send (PROTOCOL.md, TOO_LONG).
    max_text: int = field(init=False)

    def __post_init__(self) -> None:
        self.entry = b"%d.%d.%s" % (self.id, self.color, self.name)
        self.prefix = self.entry + b"."
        self.max_text = MAX_PAYLOAD - len(self.prefix)

    @property
    def display(self) -> str:
        return self.name.decode("ascii")


class IRoster(Interface):
    """Names, ids and colours: who may be called what."""

    def claim(name: bytes) -> Deferred[User | None]:
        """Hold ``name`` for a new user: fires with the :class:`User`, or
        None if the name is taken; fails with OverflowError when ids are
        exhausted, or when the roster cannot be reached."""

    def release(user: User) -> None:
        """Free ``user``'s name (its connection began to close)."""


@implementer(IRoster)
class Roster:
    """The in-process roster: names held case-insensitively, ids counted."""

    def __init__(self, palette: tuple[int, ...] = PALETTE, after: int = 0) -> None:
        """Ids are counted from ``after`` + 1 (a restart on --history-db
        goes on after the ids its history names)."""
        self._palette = palette
        self._lastId = after
        self._names: dict[bytes, User] = {}

    def claim(self, name: bytes) -> Deferred[User | None]:
        key = name.lower()
        if key in self._names:
            return succeed(None)
        if self._lastId >= MAX_ID:
            return fail(OverflowError("user ids exhausted"))
        self._lastId += 1
        user = User(
            self._lastId, self._palette[(self._lastId - 1) % len(self._palette)], name
        )
        self._names[key] = user
        return succeed(user)

    def hold(self, user: User) -> bool:
        """Hold ``user``'s name again, as it was (a user read back after a
        crash, chatd.server.resumejournal); False if the name is taken.
        Later ids go on after its."""
        key = user.name.lower()
        if key in self._names:
            return False
        self._names[key] = user
        self._lastId = max(self._lastId, user.id)
        return True

    def release(self, user: User) -> None:
        key = user.name.lower()
        if self._names.get(key) is user:
            del self._names[key]

    @property
    def named(self) -> int:
        """How many names are held."""
        return len(self._names)


@implementer(IEventSink)
class Replica:
    """The active users, in activation order, from the sequenced events.

    An :class:`~chatd.core.sequencer.IEventSink`: every process that
    subscribes one sees the same list, so WHO and WHISPER need no round
    trip.  A codec spells WHO's answer once per :attr:`version`, however
    many ask.
    """

    def __init__(self) -> None:
        self._active: dict[bytes, User] = {}  # lower-case name -> user
        self._version = 0

    def deliver(self, event: Event) -> None:
        if isinstance(event, Join):
            user = event.user
            self._active[user.name.lower()] = user
            self._version += 1
        elif isinstance(event, Leave):
            user = event.user
            known = self._active.get(user.name.lower())
            if known is not None and known.id == user.id:
                del self._active[user.name.lower()]
                self._version += 1

    def find(self, name: bytes) -> User | None:
        """The active user called ``name`` (any case), if there is one."""
        return self._active.get(name.lower())

    @property
    def active(self) -> list[User]:
        return list(self._active.values())

    def __len__(self) -> int:
        return len(self._active)

    @property
    def version(self) -> int:
        """Changes whenever the active users do (a codec's WHO cache key)."""
        return self._version
