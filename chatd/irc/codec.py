"""The IRC front end's codec: the session's outputs as IRC lines.

A room is a channel (``#NAME``; the default room is ``#lobby``), a user is
``nick!nick@chatd``.  What every IRC recipient of an event gets is the
same line (a channel PRIVMSG, JOIN, PART, QUIT), so events are spelled once
per event for all of them (the fan-out per codec); a whisper names its
recipient and is spelled per connection.  Replies carry the connection's
nick, so the codec is made per connection.

The session's error codes map onto the numerics of RFC 1459/2812 and the
Modern IRC documentation (docs/irc.md has the table).
"""

from __future__ import annotations

import re
from collections import deque
from typing import TYPE_CHECKING

from twisted.words.protocols import irc
from zope.interface import implementer

from chatd import __version__
from chatd.core.codec import IClientCodec
from chatd.core.events import Join, Leave, Message, Messages, Notice, Whisper
from chatd.core.roomevents import RoomEvent, RoomJoin, RoomLeave, RoomMessage, RoomTopic
from chatd.core.rooms import key
from chatd.core.rules import ErrorCode, LeaveReason, valid_text
from chatd.wire import HEADER
from chatd.wire.runs import runSlice

if TYPE_CHECKING:
    from chatd.core.events import Event
    from chatd.core.resumes import Last
    from chatd.core.roster import Replica, User

SERVER = b"chatd"
#: Longest line we send or take, CRLF included (RFC 1459 2.3).
LINELEN = 512
ERR_INPUTTOOLONG = "417"  # Modern IRC; not in twisted.words

#: What the session's codes are to an IRC client: (numeric, text).  Codes
#: not here (fatal ones) end the link with ERROR; rate and text refusals
#: are NOTICEs, as IRC has no numeric for them.
NUMERICS: dict[ErrorCode, str] = {
    ErrorCode.NAME_TAKEN: irc.ERR_NICKNAMEINUSE,
    ErrorCode.BAD_NAME: irc.ERR_ERRONEUSNICKNAME,
    ErrorCode.NOT_READY: irc.ERR_NOTREGISTERED,
    ErrorCode.NO_SUCH_USER: irc.ERR_NOSUCHNICK,
    ErrorCode.BAD_ROOM: irc.ERR_NOSUCHCHANNEL,
    ErrorCode.NO_SUCH_ROOM: irc.ERR_NOSUCHCHANNEL,
    ErrorCode.NOT_IN_ROOM: irc.ERR_NOTONCHANNEL,
    ErrorCode.TOO_MANY_ROOMS: irc.ERR_TOOMANYCHANNELS,
    ErrorCode.TOPIC_LOCKED: irc.ERR_CHANOPRIVSNEEDED,
    ErrorCode.UNKNOWN_TYPE: irc.ERR_UNKNOWNCOMMAND,
    ErrorCode.AUTH_FAILED: irc.ERR_PASSWDMISMATCH,
}
_QUIT = {
    LeaveReason.QUIT: b"Quit",
    LeaveReason.ERROR: b"Connection closed",
    LeaveReason.TIMEOUT: b"Ping timeout",
    LeaveReason.SLOW: b"Too slow: cut off",
    LeaveReason.SHUTDOWN: b"Server shutting down",
    LeaveReason.KICKED: b"Removed by an operator",
}
_ACTION = b"/me "


def mask(name: bytes) -> bytes:
    return name + b"!" + name + b"@" + SERVER


def line(*parts: bytes, trailing: bytes | None = None) -> bytes:
    """One IRC line: space-separated parts, then ``:trailing``, CRLF."""
    out = b" ".join(parts)
    if trailing is not None:
        out += b" :" + trailing
    return out + b"\r\n"


def echoed(raw: bytes) -> bytes:
    """Client input quoted back to it (a bad nick, an unknown command, a
    QUIT reason): kept if it is text by chatd's rules, else its printable
    ASCII with ``?`` for every other byte, so a reply neither steers the
    client's terminal nor ends its line early, and always encodes."""
    if valid_text(raw):
        return raw
    return bytes(b if 32 <= b < 127 else 63 for b in raw)


def toIrc(text: bytes) -> bytes:
    """A chatd text as an IRC message: ``/me x`` is CTCP ACTION."""
    if text.startswith(_ACTION):
        return b"\x01ACTION " + text[len(_ACTION) :] + b"\x01"
    return text


_FORMATTING = re.compile(
    rb"\x03(?:\d{1,2}(?:,\d{1,2})?)?|[\x02\x0f\x11\x16\x1d\x1e\x1f]"
)


def fromIrc(text: bytes) -> bytes | None:
    """An IRC message as a chatd text: formatting codes stripped, CTCP
    ACTION as ``/me x``; None for any other CTCP (nothing to say)."""
    if text.startswith(b"\x01"):
        body = text.strip(b"\x01")
        if not body.upper().startswith(b"ACTION"):
            return None
        text = _ACTION + body[6:].lstrip(b" ")
    return _FORMATTING.sub(b"", text)


@implementer(IClientCodec)
class IrcCodec:
    """One IRC connection's spelling of the session's outputs."""

    name = "irc"

    def __init__(
        self,
        default: bytes = b"lobby",
        motd: list[bytes] | None = None,
        earlier: int = 10,
    ) -> None:
        self.nick = b"*"
        self.default = b"#" + default
        self.motd = motd
        #: How many earlier messages :meth:`history` shows at most.
        self.earlier = earlier
        #: The channel each pending NAMES (WHO/ROOM_WHO) answer is for.
        self.namesFor: deque[bytes] = deque()
        #: for each LIST asked, the room keys it named (None: every room)
        self.listOnly: deque[frozenset[bytes] | None] = deque()
        #: The nick or channel the request being answered named (the
        #: numerics' parameter).
        self.subject: bytes | None = None
        #: answering a NOTICE: no error reply (RFC 2812 3.3.2), but fatal ones
        self.quiet = False

    def numeric(
        self, code: str, *params: bytes, trailing: bytes | None = None
    ) -> bytes:
        return line(b":" + SERVER, code.encode(), self.nick, *params, trailing=trailing)

    # -- replies ---------------------------------------------------------------

    def welcome(self, user: User) -> bytes:
        self.nick = user.name
        n = self.numeric
        isupport = [
            b"CHANTYPES=#", b"NICKLEN=32", b"CHANNELLEN=33", b"CASEMAPPING=ascii",
            b"LINELEN=%d" % LINELEN, b"TOPICLEN=300", b"NETWORK=chatd",
            b"CHANLIMIT=#:20", b"PREFIX=", b"CHANMODES=,,,",
        ]  # fmt: skip
        version = __version__.encode()
        out = [
            n(irc.RPL_WELCOME, trailing=b"Welcome to chatd, " + mask(user.name)),
            n(irc.RPL_YOURHOST, trailing=b"Your host is chatd, version " + version),
            n(irc.RPL_CREATED, trailing=b"This server speaks chatd protocol 1.2"),
            n(irc.RPL_MYINFO, SERVER, version, b"-", b"-"),
            n(irc.RPL_ISUPPORT, *isupport, trailing=b"are supported by this server"),
        ]
        if not self.motd:
            out.append(n(irc.ERR_NOMOTD, trailing=b"MOTD File is missing"))
        else:
            out.append(n(irc.RPL_MOTDSTART, trailing=b"- chatd Message of the day -"))
            out += [n(irc.RPL_MOTD, trailing=b"- " + text) for text in self.motd]
            out.append(n(irc.RPL_ENDOFMOTD, trailing=b"End of /MOTD command"))
        return b"".join(out)

    def echo(self, payload: bytes) -> bytes:
        return b""  # no such thing in IRC

    def pong(self, payload: bytes) -> bytes:
        return line(b":" + SERVER, b"PONG", SERVER, trailing=echoed(payload))

    def error(self, code: ErrorCode, text: str | None) -> bytes:
        words = (text or code.value).encode()
        numeric = NUMERICS.get(code)
        if code is ErrorCode.AUTH_FAILED:  # 464, then the link ends
            return self.numeric(numeric, trailing=words) + line(  # type: ignore[arg-type]
                b"ERROR", trailing=b"Closing link: " + words
            )
        if code.fatal:
            return line(b"ERROR", trailing=b"Closing link: " + words)
        if self.quiet:
            return b""  # a NOTICE that fails fails silently
        if numeric is None:  # rate, text, state, UNAVAILABLE: said, not numbered
            return self.noticeLine(code.name.encode() + b": " + words)
        if code is ErrorCode.NO_SUCH_ROOM and self.namesFor:
            self.namesFor.popleft()  # the NAMES it asked for will not come
        params = [self.subject] if self.subject else []
        return self.numeric(numeric, *params, trailing=words)

    def noticeLine(self, text: bytes) -> bytes:
        return line(b":" + SERVER, b"NOTICE", self.nick, trailing=text)

    def notice(self, code: str, text: str) -> bytes:
        return self.noticeLine(f"{code}: {text}".encode())

    def users(self, replica: Replica) -> list[bytes]:
        return self.members(replica.active)

    def members(self, users: list[User]) -> list[bytes]:
        """NAMES: 353 lines of whole nicks within LINELEN, then 366."""
        chan = self.namesFor.popleft() if self.namesFor else self.default
        head = b":%s 353 %s = %s :" % (SERVER, self.nick, chan)
        out, names = [], b""
        for user in users:
            if names and len(head) + len(names) + len(user.name) + 3 > LINELEN:
                out.append(head + names + b"\r\n")
                names = b""
            names = names + b" " + user.name if names else user.name
        if names:
            out.append(head + names + b"\r\n")
        out.append(
            self.numeric(irc.RPL_ENDOFNAMES, chan, trailing=b"End of /NAMES list")
        )
        return [b"".join(out)]

    def version(self, minor: int) -> bytes:
        return b""  # rooms are always on for IRC: the front end asks itself

    def rooms(self, listing: list[tuple[bytes, int, bytes]]) -> list[bytes]:
        n = self.numeric
        only = self.listOnly.popleft() if self.listOnly else None
        out = [n(irc.RPL_LISTSTART, b"Channel", trailing=b"Users  Name")]
        out += [n(irc.RPL_LIST, b"#" + name, b"%d" % count, trailing=topic)
                for name, count, topic in listing
                if only is None or key(name) in only]  # fmt: skip
        out.append(n(irc.RPL_LISTEND, trailing=b"End of /LIST"))
        return [b"".join(out)]

    def history(self, room: bytes, held: Last) -> tuple[bytes, int]:
        """A channel's earlier messages, shown on joining it: the last
        :attr:`earlier` of them, between two NOTICEs that say they are
        earlier (IRC has no numbers; joins, parts and topics are left out,
        as they would change the client's idea of who is there)."""
        said: list[bytes] = []
        for event, first, stop in held:
            kind = type(event)
            if kind is Messages:
                said.extend(
                    self._run(runSlice(event.frame or b"", first, stop)).splitlines(
                        True
                    )
                )
            elif kind is Message or kind is RoomMessage:
                said.append(self.event(event))
        said = said[len(said) - self.earlier :] if self.earlier else []
        if not said:
            return b"", 0
        chan = b"#" + room
        n = len(said)
        head = b"%d earlier message%s:" % (n, b"" if n == 1 else b"s")
        return (
            line(b":" + SERVER, b"NOTICE", chan, trailing=head)
            + b"".join(said)
            + line(b":" + SERVER, b"NOTICE", chan, trailing=b"end of earlier messages")
        ), n + 2

    # -- events: the same line for every IRC recipient, but whispers ----------

    def event(self, event: Event) -> bytes:
        kind = type(event)
        if kind is Message:
            return self._said(self.default, event.user, event.text)  # type: ignore[attr-defined]
        if kind is Messages:  # a binary client's run of SAYs: MESSAGE frames
            return self._run(event.frame or b"")
        if kind is Join:
            return line(b":" + mask(event.user.name), b"JOIN", self.default)  # type: ignore[attr-defined]
        if kind is Leave:
            reason = _QUIT.get(event.reason, b"Quit")  # type: ignore[attr-defined]
            return line(b":" + mask(event.user.name), b"QUIT", trailing=reason)  # type: ignore[attr-defined]
        if kind is Whisper:
            return self._said(self.nick, event.sender, event.text)  # type: ignore[attr-defined]
        if kind is Notice:
            text = f"{event.code}: {event.text}".encode()  # type: ignore[attr-defined]
            return line(b":" + SERVER, b"NOTICE", self.default, trailing=text)
        if isinstance(event, RoomEvent):
            return self._roomEvent(event)
        return b""

    def _run(self, frames: bytes) -> bytes:
        """A run of MESSAGE frames (one sender, as the bulk path makes
        them) as PRIVMSG lines: the sender's part made once."""
        out, offset, end = [], 0, len(frames)
        lastName, head = b"", b""
        unpack = HEADER.unpack_from
        while offset < end:
            size = unpack(frames, offset)[1]
            _, _, name, text = frames[offset + 8 : offset + 8 + size].split(b".", 3)
            if name != lastName:
                lastName = name
                head = b":" + mask(name) + b" PRIVMSG " + self.default + b" :"
            out.append(head + toIrc(text) + b"\r\n")
            offset += 8 + size
        return b"".join(out)

    def _said(self, target: bytes, user: User, text: bytes) -> bytes:
        return line(b":" + mask(user.name), b"PRIVMSG", target, trailing=toIrc(text))

    def _roomEvent(self, event: RoomEvent) -> bytes:
        chan = b"#" + event.room
        if isinstance(event, RoomMessage):
            return self._said(chan, event.user, event.text)
        if isinstance(event, RoomJoin):
            return line(b":" + mask(event.user.name), b"JOIN", chan)
        if isinstance(event, RoomLeave):
            if event.reason is LeaveReason.PART:
                return line(
                    b":" + mask(event.user.name), b"PART", chan, trailing=b"part"
                )
            if event.reason is LeaveReason.KICKED:
                return line(
                    b":" + SERVER,
                    b"KICK",
                    chan,
                    event.user.name,
                    trailing=b"Removed by an operator",
                )
            return b""  # it left the server: its QUIT says so
        if isinstance(event, RoomTopic):
            return line(b":" + SERVER, b"TOPIC", chan, trailing=event.topic)
        return b""
