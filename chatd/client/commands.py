"""What a line typed into the terminal client means: chat text or a command.

Kept apart from the client so that the rules (``/msg NAME text``, ``//`` to
send a line that starts with a slash, what counts as too long) are pure
functions that unit tests can pin down without a socket or a terminal.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatd.wire import MAX_PAYLOAD, join_fields, valid_name, valid_text

HELP = (
    "commands: /who [ROOM] lists users, /msg NAME text whispers to NAME, "
    "/join ROOM, /part [ROOM], /room ROOM types into ROOM, /rooms lists rooms, "
    "/topic [ROOM] TEXT, /quit leaves, /help shows this; "
    "//text sends a line starting with /"
)


@dataclass(frozen=True)
class Say:
    text: str


@dataclass(frozen=True)
class Whisper:
    name: str
    text: str


@dataclass(frozen=True)
class Who:
    """WHO for the default room, ROOM_WHO for another (None: the current one)."""

    room: str | None = None


@dataclass(frozen=True)
class Join:
    room: str


@dataclass(frozen=True)
class Part:
    room: str | None = None


@dataclass(frozen=True)
class Switch:
    """Type into ``room`` from now on (None: the default room)."""

    room: str | None = None


@dataclass(frozen=True)
class Rooms:
    pass


@dataclass(frozen=True)
class Topic:
    """``/topic [ROOM] TEXT`` as typed: which word is the room needs the rooms
    one is in (chatd.client.rooms.topic_target)."""

    words: str


@dataclass(frozen=True)
class Quit:
    pass


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class Invalid:
    """A line that cannot be sent; ``reason`` is shown to the user."""

    reason: str


Command = (
    Say | Whisper | Who | Quit | Help | Invalid | Join | Part | Switch | Rooms | Topic
)
#: The commands that need protocol 1.2 (a 1.1 server has no rooms), with a
#: ``/who ROOM`` of another room than the default one.
ROOM_COMMANDS = (Join, Part, Switch, Rooms, Topic)

_SIMPLE: dict[str, Command] = {
    "rooms": Rooms(),
    "list": Rooms(),
    "quit": Quit(),
    "exit": Quit(),
    "help": Help(),
    "?": Help(),
}


def parse_command(line: str) -> Command | None:
    """The command a typed line stands for; None for a blank line."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return None
    if not line.startswith("/"):
        return Say(line)
    if line.startswith("//"):
        return Say(line[1:])
    word, _, rest = line[1:].partition(" ")
    word = word.lower()
    if word in _SIMPLE:
        return _SIMPLE[word]
    if word in ("msg", "w", "whisper"):
        name, _, text = rest.strip().partition(" ")
        text = text.strip()
        if not name or not text:
            return Invalid("usage: /msg NAME text")
        if not valid_name(name.encode("ascii", "replace")):
            return Invalid(f"{name!r} is not a valid user name")
        return Whisper(name, text)
    if word in _ROOM_WORDS:
        return _room_command(word, rest.split())
    if word == "topic":
        return (
            Topic(rest.strip())
            if rest.strip()
            else Invalid("usage: /topic [ROOM] TEXT")
        )
    return Invalid(f"unknown command /{word}; /help lists the commands")


_ROOM_WORDS = {"who", "join", "part", "leave", "room", "switch"}


def _room_command(word: str, args: list[str]) -> Command:
    """``/who``, ``/join``, ``/part``, ``/room``: a command naming at most one room."""
    usage = {"who": "/who [ROOM]", "join": "/join ROOM", "part": "/part [ROOM]"}
    usage.update(leave="/part [ROOM]", room="/room ROOM", switch="/switch ROOM")
    if len(args) > 1 or (word == "join" and not args):
        return Invalid(f"usage: {usage[word]}")
    room = args[0] if args else None
    if room is not None and not valid_name(room.encode("ascii", "replace")):
        return Invalid(f"{room!r} is not a room name (1 to 32 of A-Z a-z 0-9 _ -)")
    if word == "who":
        return Who(room)
    if word == "join":
        return Join(args[0])
    if word in ("part", "leave"):
        return Part(room)
    return Switch(room)


def max_text(user_id: bytes | int, color: bytes | int, name: bytes | str) -> int:
    """The longest SAY text in bytes for this identity (PROTOCOL.md TOO_LONG)."""
    return MAX_PAYLOAD - len(join_fields(user_id, color, name, b""))


def text_problem(text: str, limit: int) -> tuple[str, str] | None:
    """The ERROR code and reason the server would refuse ``text`` with, or None.

    Checked before sending, so the user hears it at once and a script never
    waits for a MESSAGE copy that will not come.
    """
    data = text.encode("utf-8", "surrogatepass")
    if not valid_text(data):
        return "BAD_TEXT", "text must be one line without control characters"
    if len(data) > limit:
        return "TOO_LONG", f"text too long: {len(data)} bytes, at most {limit}"
    return None


def check_text(text: str, limit: int) -> str | None:
    """Why ``text`` would be refused by the server (for a person), or None."""
    problem = text_problem(text, limit)
    return None if problem is None else problem[1]
