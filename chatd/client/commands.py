"""What a line typed into the terminal client means: chat text or a command.

Kept apart from the client so that the rules (``/msg NAME text``, ``//`` to
send a line that starts with a slash, what counts as too long) are pure
functions that unit tests can pin down without a socket or a terminal.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatd.wire import MAX_PAYLOAD, join_fields, valid_name, valid_text

HELP = (
    "commands: /who lists users, /msg NAME text whispers to NAME, "
    "/quit leaves, /help shows this; //text sends a line starting with /"
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
    pass


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


Command = Say | Whisper | Who | Quit | Help | Invalid

_SIMPLE: dict[str, Command] = {
    "who": Who(),
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
    return Invalid(f"unknown command /{word}; /help lists the commands")


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
