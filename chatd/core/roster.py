"""Who is here: names, ids and colours, and the order users became active.

A name is held from the WELCOME that grants it until its connection begins to
close; ids are never reused while the server runs.  Each user's wire prefix
(``id.color.name.``) is formatted once, at WELCOME, so the per-message path
only concatenates bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chatd.wire import MAX_PAYLOAD, FrameType, encode, join_fields

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
        self.entry = join_fields(self.id, self.color, self.name)
        self.prefix = self.entry + b"."
        self.max_text = MAX_PAYLOAD - len(self.prefix)

    @property
    def display(self) -> str:
        return self.name.decode("ascii")

    def welcome(self) -> bytes:
        """WELCOME is ``name.id.color``: a different order from ``entry``."""
        return encode(FrameType.WELCOME, join_fields(self.name, self.id, self.color))

    def join(self) -> bytes:
        return encode(FrameType.JOIN, self.entry)

    def leave(self, reason: str) -> bytes:
        return encode(FrameType.LEAVE, join_fields(self.entry, reason))


class Roster:
    """Names held (case-insensitively), ids handed out, and the active users."""

    def __init__(self, palette: tuple[int, ...] = PALETTE) -> None:
        self._palette = palette
        self._lastId = 0
        self._names: dict[bytes, User] = {}
        #: Active users in the order they became active (dicts keep order).
        self._active: dict[User, None] = {}
        self._who: list[bytes] | None = None  # whoFrames(), until a change

    def claim(self, name: bytes) -> User | None:
        """Hold ``name`` for a new user, or None if it is taken."""
        key = name.lower()
        if key in self._names:
            return None
        if self._lastId >= MAX_ID:
            raise OverflowError("user ids exhausted")
        self._lastId += 1
        user = User(
            self._lastId, self._palette[(self._lastId - 1) % len(self._palette)], name
        )
        self._names[key] = user
        return user

    def release(self, user: User) -> None:
        """Free the user's name and drop it from the active users."""
        key = user.name.lower()
        if self._names.get(key) is user:
            del self._names[key]
        if self._active.pop(user, 0) is None:
            self._who = None

    def activate(self, user: User) -> None:
        self._active[user] = None
        self._who = None

    def findActive(self, name: bytes) -> User | None:
        user = self._names.get(name.lower())
        return user if user is not None and user in self._active else None

    @property
    def active(self) -> list[User]:
        return list(self._active)

    @property
    def named(self) -> int:
        """How many names are held."""
        return len(self._names)

    def whoFrames(self) -> list[bytes]:
        """USERS frames listing the active users, ended by an empty USERS.

        Entries are packed greedily; an entry never spans two frames.  Built
        once per change of the active users, however many ask.
        """
        if self._who is None:
            self._who = self._packWho()
        return self._who

    def _packWho(self) -> list[bytes]:
        frames = []
        chunk: list[bytes] = []
        size = 0
        for user in self._active:
            entry = user.entry
            extra = len(entry) + (1 if chunk else 0)
            if chunk and size + extra > MAX_PAYLOAD:
                frames.append(encode(FrameType.USERS, b"\n".join(chunk)))
                chunk, size, extra = [], 0, len(entry)
            chunk.append(entry)
            size += extra
        if chunk:
            frames.append(encode(FrameType.USERS, b"\n".join(chunk)))
        frames.append(encode(FrameType.USERS))
        return frames
