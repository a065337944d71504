"""Server frames as the lines a person reads, with or without ANSI colour.

Pure functions of (frame, who I am, colour on/off), so the look of the
client is unit-tested without a terminal.  Whatever the server sends is
shown defensively: text that breaks the protocol's text rules is made
harmless before it reaches the screen, and a malformed payload becomes a
readable warning, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatd.wire import FrameType, parse_error, split_fields, valid_text

RESET = "\x1b[0m"
DIM = "\x1b[2m"
BOLD = "\x1b[1m"

_LEAVE_WHY = {"quit": "", "error": " (connection lost)"}


@dataclass(frozen=True)
class Person:
    """``id.color.name`` as carried by WELCOME, MESSAGE, JOIN, LEAVE, USERS."""

    id: int
    color: int | None
    name: str


def safe(data: bytes) -> str:
    """Decode text for display; anything that could steer a terminal is replaced."""
    text = data.decode("utf-8", "replace")
    if valid_text(data):
        return text
    return "".join(c if c.isprintable() or c == "\t" else "\ufffd" for c in text)


def parse_person(fields: list[bytes]) -> Person:
    """The first three fields as a Person; ValueError if they are malformed."""
    user_id, color, name = fields[:3]
    number = int(color)
    return Person(int(user_id), number if 0 <= number <= 255 else None, safe(name))


def paint(text: str, color: int | None, enabled: bool) -> str:
    """``text`` in xterm-256 colour ``color`` (when colour is on)."""
    if not enabled or color is None:
        return text
    return f"\x1b[38;5;{color}m{text}{RESET}"


def dim(text: str, enabled: bool) -> str:
    return f"{DIM}{text}{RESET}" if enabled else text


def history_line(line: str, enabled: bool) -> str:
    """A line of HISTORY's answer: said before we came, marked so."""
    return f"{dim('(history)', enabled)} {line}"


def warning(text: str, enabled: bool) -> str:
    """A line from the client or server about the chat, not in it."""
    return f"{BOLD}! {text}{RESET}" if enabled else f"! {text}"


def own_line(text: str, color: int | None, enabled: bool) -> str:
    return f"{paint('You', color, enabled)}: {text}"


def whisper_sent(name: str, text: str, color: int | None, enabled: bool) -> str:
    return f"{dim(f'(private to {name})', enabled)} {own_line(text, color, enabled)}"


def users_line(entries: list[bytes], enabled: bool, room: str | None = None) -> str:
    """The whole WHO answer (entries gathered from USERS frames) on one line;
    with ``room``, a ROOM_WHO answer for that room."""
    names = []
    for entry in entries:
        try:
            person = parse_person(split_fields(entry, 3))
        except ValueError:
            continue
        names.append(paint(person.name, person.color, enabled))
    if room is not None:
        return tag(room) + dim(f"* {len(names)} here: ", enabled) + ", ".join(names)
    return dim(f"* {len(names)} online: ", enabled) + ", ".join(names)


def tag(room: str) -> str:
    """What marks a line of a room other than the default one."""
    return f"[{room}] "


def rooms_line(entry: bytes) -> str:
    """One ROOMS entry ``room.users.topic`` as ``room (N users): topic``."""
    room, users, topic = split_fields(entry, 3)
    count = int(users)
    line = f"{safe(room)} ({count} user{'' if count == 1 else 's'})"
    return f"{line}: {safe(topic)}" if topic else line


def render_frame(
    ftype: int, payload: bytes, my_id: int | None, enabled: bool
) -> str | None:
    """The line to show for one frame, or None for frames nobody needs to see."""
    try:
        return _render(ftype, payload, my_id, enabled)
    except ValueError:
        try:
            name = FrameType(ftype).name
        except ValueError:
            name = str(ftype)
        return warning(f"malformed {name} frame from the server", enabled)


#: 1.2 room frames, ``room.`` then the payload of the 1.1 frame they extend.
_ROOM_FORMS = {
    FrameType.ROOM_MESSAGE: FrameType.MESSAGE,
    FrameType.ROOM_JOIN: FrameType.JOIN,
    FrameType.ROOM_LEAVE: FrameType.LEAVE,
}


def _render(ftype: int, payload: bytes, my_id: int | None, enabled: bool) -> str | None:
    if ftype in _ROOM_FORMS:
        room, rest = split_fields(payload, 2)
        inner = _ROOM_FORMS[FrameType(ftype)]
        if inner != FrameType.MESSAGE and int(split_fields(rest, 3)[0]) == my_id:
            done = "joined" if inner == FrameType.JOIN else "left"
            return tag(safe(room)) + dim(f"* you {done}", enabled)
        return tag(safe(room)) + (_render(inner, rest, my_id, enabled) or "")
    if ftype == FrameType.ROOM_TOPIC:
        room, topic = split_fields(payload, 2)
        said = f"topic: {safe(topic)}" if topic else "topic cleared"
        return tag(safe(room)) + dim(said, enabled)
    if ftype == FrameType.MESSAGE:
        fields = split_fields(payload, 4)
        who = parse_person(fields)
        text = safe(fields[3])
        if who.id == my_id:
            return own_line(text, who.color, enabled)
        return f"{paint(who.name, who.color, enabled)}: {text}"
    if ftype == FrameType.WHISPERED:
        fields = split_fields(payload, 4)
        who = parse_person(fields)
        return (
            f"{dim('(private)', enabled)} "
            f"{paint(who.name, who.color, enabled)}: {safe(fields[3])}"
        )
    if ftype == FrameType.JOIN:
        who = parse_person(split_fields(payload, 3))
        if who.id == my_id:
            return dim(f"* you joined as {who.name}", enabled)
        return dim(f"* {who.name} joined", enabled)
    if ftype == FrameType.LEAVE:
        fields = split_fields(payload, 4)
        who = parse_person(fields)
        reason = safe(fields[3])
        why = _LEAVE_WHY.get(reason, f" ({reason})")
        return dim(f"* {who.name} left{why}", enabled)
    if ftype in (FrameType.ERROR, FrameType.NOTICE):
        code, text = parse_error(payload)
        kind = "error" if ftype == FrameType.ERROR else "notice"
        return warning(
            f"server {kind}: {safe(text.encode())} [{safe(code.encode())}]", enabled
        )
    return None
