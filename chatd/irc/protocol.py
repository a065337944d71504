"""The IRC front end: IRC lines in, the session's semantic inputs out.

:class:`IrcProtocol` is the binary front end's connection (admission,
flow control, the lingering close, slow readers) with IRC in place of
chatd frames: lines are cut here (512 bytes at most, CRLF or LF), parsed
with ``twisted.words.protocols.irc.parsemsg``, and each command becomes a
call of the same :class:`~chatd.core.session.Session` every front end
drives, so names, password, limits, timeouts, maintenance and kick are the
session's rules.  Registration (PASS, NICK, USER; CAP answered honestly:
none offered) is HELLO; the welcome is READY and NAMES of ``#lobby``.

A call that waits for a remote roster or sequencer holds the lines after
it, as frames are held, so replies keep request order in every mode.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.internet import task
from twisted.words.protocols import irc

from chatd.core.rooms import key
from chatd.core.session import CLOSED, NAMED
from chatd.irc.codec import (
    ERR_INPUTTOOLONG,
    LINELEN,
    SERVER,
    IrcCodec,
    fromIrc,
    line,
    mask,
)
from chatd.server.protocol import ChatProtocol
from chatd.wire import LeaveReason

if TYPE_CHECKING:
    from chatd.server.factory import ChatFactory

#: Commands a client may send before it is registered.
BEFORE = frozenset({"CAP", "PASS", "NICK", "USER", "PING", "PONG", "QUIT"})
#: Lines a held connection may queue before it is cut off as a flood.
MAX_QUEUED = 256


class IrcProtocol(ChatProtocol):
    """One IRC client (module doc)."""

    frontEnd = "irc"
    _discarding = False

    def __init__(
        self, factory: ChatFactory, number: int, motd: list[bytes] | None = None
    ) -> None:
        self.irc = IrcCodec(factory.config.default_room.encode(), motd)
        self.codec = self.irc  # type: ignore[assignment]
        ChatProtocol.__init__(self, factory, number)
        self.default = factory.config.default_room.encode().lower()
        self._buf = b""
        self._held = False
        self._queue: deque[Callable[[], Any]] = deque()
        self.nick: bytes | None = None
        self.password: bytes | None = None
        self.gaveUser = False
        self.negotiating = False
        self.registering = False
        self.registered = False
        self._own = b""
        self._heard = True
        self._pinger: task.LoopingCall | None = None

    def connectionMade(self) -> None:
        ChatProtocol.connectionMade(self)
        self.frontEnd = "irc"

    def makeWriter(self) -> Any:
        """The transport's writer, less its own PRIVMSGs coming back: IRC
        has no such acknowledgement."""
        send = self._raw = ChatProtocol.makeWriter(self)

        def filtered(data: bytes) -> None:
            own = self._own
            if own and own in data:
                data = b"".join(
                    x for x in data.splitlines(True) if not x.startswith(own)
                )
                if not data:
                    return
            send(data)

        return filtered

    def connectionLost(self, reason: Any = None) -> None:
        if self._pinger is not None and self._pinger.running:
            self._pinger.stop()
        ChatProtocol.connectionLost(self, reason)

    # -- lines ---------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:  # type: ignore[override]
        self.stats.bytesIn += len(data)
        session = self.session
        if session.state is CLOSED:
            return
        self._heard = True
        session.activity()
        session.beginChunk()
        try:
            self._lines(self._buf + data)
        finally:
            session.endChunk()

    def _lines(self, buf: bytes) -> None:
        while self.session.state is not CLOSED:
            end = buf.find(b"\n")
            if self._discarding:  # the rest of a line too long: dropped
                if end < 0:
                    buf = b""
                    break
                buf, self._discarding = buf[end + 1 :], False
                continue
            if end < 0:
                if len(buf) >= LINELEN:
                    self._tooLong()
                    self._discarding, buf = True, b""
                break
            raw, buf = buf[:end], buf[end + 1 :]
            if len(raw) + 1 > LINELEN:
                self._tooLong()
                continue
            self._do(partial(self.lineReceived, raw.rstrip(b"\r")))
        self._buf = buf

    def _tooLong(self) -> None:
        self.sendLine(self._numeric(ERR_INPUTTOOLONG, b"Input line was too long"))

    def _do(self, call: Callable[[], Any]) -> None:
        """Run ``call`` now, or after what the session waits for."""
        if self._held or self._queue:
            if len(self._queue) >= MAX_QUEUED:
                self.session.close(LeaveReason.ERROR, None)
                return
            self._queue.append(call)
        else:
            call()

    def holdInput(self, hold: bool) -> None:
        self._held = hold
        if hold:
            return
        if self.registering:  # the roster answered the registration
            if self.session.state is NAMED:
                self._welcomed()
            else:  # refused (433, 432): NICK may try again
                self.registering = False
        while self._queue and not self._held and self.session.state is not CLOSED:
            self._queue.popleft()()

    def lineReceived(self, raw: bytes) -> None:
        if not raw.strip() or self.session.state is CLOSED:
            return
        try:
            _, command, params = irc.parsemsg(raw.decode("utf-8", "surrogateescape"))
        except (irc.IRCBadMessage, IndexError, ValueError):
            return self.sendLine(
                self._numeric(irc.ERR_UNKNOWNCOMMAND, b"*", b"Bad message")
            )
        command = command.upper()
        args = [p.encode("utf-8", "surrogateescape") for p in params]
        handler = getattr(self, "irc_" + command, None)
        if handler is None:
            return self.sendLine(
                self._numeric(
                    irc.ERR_UNKNOWNCOMMAND, command.encode(), b"Unknown command"
                )
            )
        if not self.registered and command not in BEFORE:
            return self.sendLine(
                self._numeric(irc.ERR_NOTREGISTERED, b"You have not registered")
            )
        handler(args)

    # -- output helpers ---------------------------------------------------------

    def sendLine(self, data: bytes) -> None:
        """A reply made here (not by the session), in request order."""
        self.session.reply(data)

    def _numeric(self, code: str, *params: bytes) -> bytes:
        *middle, trailing = params
        nick = self.nick if self.registered and self.nick else b"*"
        return line(b":" + SERVER, code.encode(), nick, *middle, trailing=trailing)

    def _need(self, args: list[bytes], n: int, command: bytes) -> bool:
        if len(args) >= n and all(args[:n]):
            return True
        self.sendLine(
            self._numeric(irc.ERR_NEEDMOREPARAMS, command, b"Not enough parameters")
        )
        return False

    # -- registration -------------------------------------------------------------

    def irc_CAP(self, args: list[bytes]) -> None:
        sub = args[0].upper() if args else b""
        if sub == b"LS":
            self.negotiating = not self.registered
            self.sendLine(line(b":" + SERVER, b"CAP", b"*", b"LS", trailing=b""))
        elif sub == b"LIST":
            self.sendLine(line(b":" + SERVER, b"CAP", b"*", b"LIST", trailing=b""))
        elif sub == b"REQ":
            wanted = args[1] if len(args) > 1 else b""
            self.sendLine(line(b":" + SERVER, b"CAP", b"*", b"NAK", trailing=wanted))
        elif sub == b"END":
            self.negotiating = False
            self._register()
        else:
            self.sendLine(self._numeric("410", sub or b"*", b"Invalid CAP command"))

    def irc_PASS(self, args: list[bytes]) -> None:
        if self.registered or self.registering:
            return self.sendLine(
                self._numeric(irc.ERR_ALREADYREGISTRED, b"You may not reregister")
            )
        if self._need(args, 1, b"PASS"):
            self.password = args[0]

    def irc_NICK(self, args: list[bytes]) -> None:
        if not args or not args[0]:
            return self.sendLine(
                self._numeric(irc.ERR_NONICKNAMEGIVEN, b"No nickname given")
            )
        if self.registered:
            return self.sendLine(
                self._numeric(
                    irc.ERR_ERRONEUSNICKNAME,
                    args[0],
                    b"Nick changes are not supported here",
                )
            )
        self.nick = args[0]
        self._register()

    def irc_USER(self, args: list[bytes]) -> None:
        if self.registered or self.gaveUser:
            return self.sendLine(
                self._numeric(irc.ERR_ALREADYREGISTRED, b"You may not reregister")
            )
        if self._need(args, 4, b"USER"):
            self.gaveUser = True
            self._register()

    def _register(self) -> None:
        if self.registered or self.registering or self.negotiating:
            return
        if self.nick is None or not self.gaveUser:
            return
        self.registering = True
        self.irc.subject = self.nick
        self.session.hello(self.nick, self.password)
        if self.session.state is NAMED:
            self._welcomed()
        elif not self._held:  # refused (433, 432): NICK may try again
            self.registering = False

    def _welcomed(self) -> None:
        """WELCOME (001-005, MOTD) is out: into #lobby, then its NAMES."""
        self.registering = False
        self.registered = True
        self.nick = self.session.user.name  # type: ignore[union-attr]
        self._own = b":" + mask(self.nick) + b" PRIVMSG "
        self.session.ready()
        self.irc.namesFor.append(self.irc.default)
        self.session.who()
        idle = self.factory.config.idle_timeout
        if idle:
            self._pinger = task.LoopingCall(self._keepAlive)
            self._pinger.clock = self.factory.clock
            self._pinger.start(max(idle / 3, 1.0), now=False)

    def _keepAlive(self) -> None:
        """PING a client that said nothing for a while: its PONG is input,
        so the idle timeout cuts only clients that are really gone."""
        if not self._heard and self.session.state is not CLOSED:
            self._raw(b"PING :" + SERVER + b"\r\n")
        self._heard = False

    def irc_PING(self, args: list[bytes]) -> None:
        self.session.ping(args[-1] if args else b"")

    def irc_PONG(self, args: list[bytes]) -> None:
        self.session.pong()

    def irc_QUIT(self, args: list[bytes]) -> None:
        self.session.bye()

    # -- channels ---------------------------------------------------------------

    def _room(self, chan: bytes) -> bytes | None:
        if not chan.startswith(b"#") or len(chan) < 2:
            self.sendLine(
                self._numeric(irc.ERR_NOSUCHCHANNEL, chan, b"No such channel")
            )
            return None
        return chan[1:]

    def _asking(self, subject: bytes, call: Callable[[], Any]) -> None:
        def ask() -> None:
            self.irc.subject = subject
            call()

        self._do(ask)

    def irc_JOIN(self, args: list[bytes]) -> None:
        if not self._need(args, 1, b"JOIN"):
            return
        for chan in args[0].split(b","):
            room = self._room(chan)
            if room is None or key(room) == self.default:
                continue  # every user is in #lobby
            if key(room) in self.session.roomFanouts:
                continue  # already there: nothing, as IRC servers do
            self._asking(chan, partial(self.session.enter, room))
            self._do(partial(self._namesIfIn, room, chan))

    def _namesIfIn(self, room: bytes, chan: bytes) -> None:
        if key(room) in self.session.roomFanouts:
            self.irc.namesFor.append(chan)
            self.session.roomWho(room)

    def irc_PART(self, args: list[bytes]) -> None:
        if not self._need(args, 1, b"PART"):
            return
        for chan in args[0].split(b","):
            room = self._room(chan)
            if room is not None:
                self._asking(chan, partial(self.session.part, room))

    def irc_NAMES(self, args: list[bytes]) -> None:
        for chan in args[0].split(b",") if args else [self.irc.default]:
            room = self._room(chan)
            if room is None:
                continue
            self.irc.namesFor.append(chan)
            self._asking(chan, partial(self.session.roomWho, room))

    def irc_LIST(self, args: list[bytes]) -> None:
        self.session.listRooms()

    def irc_TOPIC(self, args: list[bytes]) -> None:
        if not self._need(args, 1, b"TOPIC"):
            return
        room = self._room(args[0])
        if room is None:
            return
        if len(args) > 1:
            return self._asking(args[0], partial(self.session.topic, room, args[1]))
        found = self.session.hub.rooms.directory.get(room)
        if found is None:
            return self.sendLine(
                self._numeric(irc.ERR_NOSUCHCHANNEL, args[0], b"No such channel")
            )
        if found.topic:
            self.sendLine(self._numeric(irc.RPL_TOPIC, args[0], found.topic))
        else:
            self.sendLine(self._numeric(irc.RPL_NOTOPIC, args[0], b"No topic is set"))

    def irc_PRIVMSG(self, args: list[bytes], notice: bool = False) -> None:
        if not args or not args[0]:
            return self.sendLine(
                self._numeric(irc.ERR_NORECIPIENT, b"No recipient given")
            )
        if len(args) < 2 or not args[1]:
            return self.sendLine(
                self._numeric(irc.ERR_NOTEXTTOSEND, b"No text to send")
            )
        text = fromIrc(args[1])
        if text is None:
            return  # a CTCP other than ACTION: nothing to carry
        for target in args[0].split(b","):
            if target.startswith(b"#"):
                room = target[1:]
                if key(room) == self.default:
                    self._asking(target, partial(self.session.say, text))
                else:
                    self._asking(target, partial(self.session.roomSay, room, text))
            else:
                self._asking(target, partial(self.session.whisper, target, text))

    def irc_NOTICE(self, args: list[bytes]) -> None:
        self.irc_PRIVMSG(args, notice=True)

    # -- queries --------------------------------------------------------------------

    def irc_WHO(self, args: list[bytes]) -> None:
        chan = args[0] if args else self.irc.default
        hub = self.session.hub
        if chan.startswith(b"#"):
            room = chan[1:]
            users = (
                hub.replica.active
                if key(room) == self.default
                else hub.rooms.members(room)
            )
        else:
            found = hub.replica.find(chan)
            users = [found] if found is not None else []
        for user in users:
            self.sendLine(
                self._numeric(
                    irc.RPL_WHOREPLY,
                    chan,
                    user.name,
                    SERVER,
                    SERVER,
                    user.name,
                    b"H",
                    b"0 " + user.name,
                )  # fmt: skip
            )
        self.sendLine(self._numeric(irc.RPL_ENDOFWHO, chan, b"End of /WHO list"))

    def irc_WHOIS(self, args: list[bytes]) -> None:
        if not args:
            return self.sendLine(
                self._numeric(irc.ERR_NONICKNAMEGIVEN, b"No nickname given")
            )
        nick = args[-1]
        user = self.session.hub.replica.find(nick)
        if user is None:
            self.sendLine(self._numeric(irc.ERR_NOSUCHNICK, nick, b"No such nick"))
        else:
            self.sendLine(
                self._numeric(
                    irc.RPL_WHOISUSER, user.name, user.name, SERVER, b"*", user.name
                )
            )
        self.sendLine(self._numeric(irc.RPL_ENDOFWHOIS, nick, b"End of /WHOIS list"))

    def irc_MODE(self, args: list[bytes]) -> None:
        if not self._need(args, 1, b"MODE"):
            return
        target = args[0]
        if target.startswith(b"#"):
            if len(args) > 1 and args[1] not in (b"b", b"+b"):
                return self.sendLine(
                    self._numeric(
                        irc.ERR_CHANOPRIVSNEEDED, target, b"No channel modes can be set"
                    )
                )
            if len(args) > 1:  # a ban list query: there are none
                return self.sendLine(
                    self._numeric("368", target, b"End of channel ban list")
                )
            return self.sendLine(self._numeric(irc.RPL_CHANNELMODEIS, target, b"+"))
        if len(args) > 1:
            return self.sendLine(
                self._numeric(irc.ERR_UMODEUNKNOWNFLAG, b"No user modes can be set")
            )
        self.sendLine(self._numeric(irc.RPL_UMODEIS, b"+"))

    def irc_KICK(self, args: list[bytes]) -> None:
        chan = args[0] if args else b"*"
        self.sendLine(
            self._numeric(
                irc.ERR_CHANOPRIVSNEEDED,
                chan,
                b"Only the operator kicks (the admin interface)",
            )
        )
