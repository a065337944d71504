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

from chatd.core.rules import valid_name
from chatd.core.session import CLOSED, NAMED
from chatd.irc.codec import (
    ERR_INPUTTOOLONG,
    LINELEN,
    SERVER,
    IrcCodec,
    echoed,
    line,
    mask,
)
from chatd.irc.commands import IrcCommands
from chatd.server.protocol import ChatProtocol
from chatd.wire import LeaveReason

if TYPE_CHECKING:
    from chatd.server.factory import ChatFactory

#: Commands a client may send before it is registered.
BEFORE = frozenset({"CAP", "PASS", "NICK", "USER", "PING", "PONG", "QUIT"})
#: Lines a held connection may queue before it is cut off as a flood.
MAX_QUEUED = 256


class IrcProtocol(IrcCommands, ChatProtocol):
    """One IRC client (module doc)."""

    kind = "irc"
    servedByMain = True  # --workers: main serves IRC users itself
    _discarding = False

    def __init__(
        self, factory: ChatFactory, number: int, motd: list[bytes] | None = None
    ) -> None:
        self.irc = IrcCodec(
            factory.config.default_room.encode(), motd, factory.config.irc_history
        )
        self.codec = self.irc  # type: ignore[assignment]
        ChatProtocol.__init__(self, factory, number)
        self.default = factory.config.default_room.encode().lower()
        self._buf = b""
        self._held = False
        self._queue: deque[Callable[[], Any]] = deque()
        #: while a queued call runs: the calls it makes that must wait, to
        #: go before the lines queued after it (None when none runs)
        self._nested: list[Callable[[], Any]] | None = None
        self.nick: bytes | None = None
        self.password: bytes | None = None
        self.gaveUser = False
        self.negotiating = False
        self.registering = False
        self.registered = False
        self._own = b""
        #: Its own channel messages sequenced and not yet seen coming back.
        self.ownOwed = 0
        self._heard = True
        self._pinger: task.LoopingCall | None = None

    def connectionMade(self) -> None:
        ChatProtocol.connectionMade(self)

    def makeWriter(self) -> Any:
        """The transport's writer: as it is, but while the client's own
        channel messages are on their way back (IRC has no such
        acknowledgement), one that drops them (:meth:`expectOwn`)."""
        raw = self._raw = ChatProtocol.makeWriter(self)

        def filtered(data: bytes) -> None:
            own = self._own
            if own in data:
                lines = data.splitlines(True)
                kept = [x for x in lines if not x.startswith(own)]
                self.ownOwed = max(0, self.ownOwed - (len(lines) - len(kept)))
                data = b"".join(kept)
                if not self.ownOwed:
                    self._writeWith(raw)
                if not data:
                    return
            raw(data)

        self._filtered = filtered
        return raw

    def expectOwn(self) -> None:
        """A channel message of its own was asked for: drop its copy."""
        self.ownOwed += 1
        if self.ownOwed == 1:
            self._writeWith(self._filtered)

    def _writeWith(self, writer: Any) -> None:
        """Switch the writer everywhere it is bound (the per-recipient
        path then costs no extra call while nothing is to be dropped)."""
        self._send = writer  # type: ignore[method-assign]
        if not self._paused:
            self.write = writer  # type: ignore[method-assign]
            session = self.session
            if not session.outputBlocked and session.state is not CLOSED:
                session.writeWith(writer)

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
        nested = self._nested
        if nested is not None:  # a queued line's own step: before later lines
            if self._held or nested:
                nested.append(call)
            else:
                call()
            return
        if self._held or self._queue:
            if len(self._queue) >= MAX_QUEUED:
                self.session.close(LeaveReason.ERROR, None)
                return
            self._queue.append(call)
        else:
            call()

    def holdInput(self, hold: bool) -> None:
        """The session waits for a remote answer (or has it): lines after
        wait, and reading pauses meanwhile, as frames are held."""
        if hold == self._held:
            return
        self._held = hold
        if self.session.state is not CLOSED:
            if hold:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()
        if not hold:  # the answer is handled after this call: go on next turn
            self.callLater(0, self._resume)

    def _resume(self) -> None:
        if self.registering:  # the roster answered the registration
            if self.session.state is NAMED:
                self._welcomed()
            else:  # refused (433, 432): NICK may try again
                self.registering = False
        session = self.session
        session.beginChunk()
        try:
            while self._queue and not self._held and session.state is not CLOSED:
                self._nested = []
                try:
                    self._queue.popleft()()
                finally:
                    nested, self._nested = self._nested, None
                self._queue.extendleft(reversed(nested))
        finally:
            session.endChunk()

    def lineReceived(self, raw: bytes) -> None:
        if not raw.strip() or self.session.state is CLOSED:
            return
        self.irc.quiet = False  # until a NOTICE says otherwise
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
                    irc.ERR_UNKNOWNCOMMAND,
                    command.encode("utf-8", "surrogateescape"),
                    b"Unknown command",
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
        """A numeric to this client (``*`` until it is registered); what it
        quotes of the client's input is made safe to show (:func:`echoed`)."""
        *middle, trailing = params
        return self.irc.numeric(code, *map(echoed, middle), trailing=trailing)

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
            self.sendLine(
                line(b":" + SERVER, b"CAP", b"*", b"NAK", trailing=echoed(wanted))
            )
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
        if not valid_name(args[0]):  # said at once, as IRC servers do
            return self.sendLine(
                self._numeric(
                    irc.ERR_ERRONEUSNICKNAME,
                    args[0],
                    b"a nick is 1 to 32 ASCII letters, digits, _ or -",
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
        if self._held or self._queue:  # after its JOIN, before later lines
            self._queue.appendleft(self._lobbyNames)
        else:
            self._lobbyNames()
        idle = self.factory.config.idle_timeout
        if idle:
            self._pinger = task.LoopingCall(self._keepAlive)
            self._pinger.clock = self.factory.clock
            self._pinger.start(max(idle / 3, 1.0), now=False)

    def _lobbyNames(self) -> None:
        self.irc.namesFor.append(self.irc.default)
        self.session.who()
        self._do(partial(self.earlier, self.irc.default[1:]))

    def _keepAlive(self) -> None:
        """PING a client that said nothing for a while: its PONG is input,
        so the idle timeout cuts only clients that are really gone."""
        if not self._heard and self.session.state is not CLOSED:
            self._raw(b"PING :" + SERVER + b"\r\n")
        self._heard = False

    def irc_PING(self, args: list[bytes]) -> None:
        if not args or not args[-1]:
            return self.sendLine(self._numeric("409", b"No origin specified"))
        self.session.ping(args[-1])

    def irc_PONG(self, args: list[bytes]) -> None:
        self.session.pong()

    def irc_QUIT(self, args: list[bytes]) -> None:
        """Acknowledged with ERROR, as RFC 2812 3.1.7 says, then closed."""
        why = args[0] if args and args[0] else b"Quit"
        self.sendLine(line(b"ERROR", trailing=b"Closing link: " + echoed(why)))
        self.session.bye()
