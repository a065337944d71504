"""The IRC commands after registration: channels (rooms), messages and
queries, each one call of the session or an answer from what it holds.

Mixed into :class:`chatd.irc.protocol.IrcProtocol`, which cuts the lines,
registers the client and keeps request order (``_do`` holds a call while
the session waits for a remote answer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.words.protocols import irc

from chatd.core.connection import CLOSED
from chatd.core.rooms import key
from chatd.irc.codec import SERVER, fromIrc

if TYPE_CHECKING:
    from chatd.core.roster import User
    from chatd.core.session import Session
    from chatd.irc.codec import IrcCodec


class IrcCommands:
    """JOIN, PART, NAMES, LIST, TOPIC, PRIVMSG, NOTICE, WHO, WHOIS, MODE, KICK."""

    session: Session
    irc: IrcCodec
    default: bytes

    if TYPE_CHECKING:

        def sendLine(self, data: bytes) -> None: ...
        def _numeric(self, code: str, *params: bytes) -> bytes: ...
        def _need(self, args: list[bytes], n: int, command: bytes) -> bool: ...
        def _do(self, call: Callable[[], Any]) -> None: ...
        def expectOwn(self) -> None: ...

    # -- channels ---------------------------------------------------------------

    def _room(self, chan: bytes) -> bytes | None:
        if not chan.startswith(b"#") or len(chan) < 2:
            self.sendLine(
                self._numeric(irc.ERR_NOSUCHCHANNEL, chan, b"No such channel")
            )
            return None
        return chan[1:]

    def _asking(
        self, subject: bytes, call: Callable[[], Any], quiet: bool = False
    ) -> None:
        def ask() -> None:
            self.irc.subject = subject
            self.irc.quiet = quiet
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
            self._do(partial(self.earlier, room))

    def _namesIfIn(self, room: bytes, chan: bytes) -> None:
        if key(room) in self.session.roomFanouts:
            self.irc.namesFor.append(chan)
            self.session.roomWho(room)

    def earlier(self, room: bytes) -> None:
        """A channel just joined: its earlier messages (--irc-history),
        from the room's history where this process keeps it (one process,
        and main with --workers, which serves IRC itself)."""
        session = self.session
        rooms = session.hub.rooms
        history = rooms.history
        found = rooms.directory.get(room)
        if not self.irc.earlier or history is None or found is None:
            return
        if session.state is CLOSED or not (
            key(room) == self.default or key(room) in session.roomFanouts
        ):
            return
        held = history.last(key(room), session.hub.config.history, None)
        frames, n = self.irc.history(found.name, held)
        if n:
            session.reply(frames, n)

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
        """LIST, or ``LIST #a,#b``: only the rooms named (RFC 2812 3.2.6)."""
        named = args[0].split(b",") if args and args[0] else []
        only = frozenset(key(c[1:]) for c in named if c.startswith(b"#"))
        self.irc.listOnly.append(only if named else None)
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
            if not notice:  # no error ever answers a NOTICE (RFC 2812 3.3.2)
                self.sendLine(self._numeric(irc.ERR_NORECIPIENT, b"No recipient given"))
            return
        if len(args) < 2 or not args[1]:
            if not notice:
                self.sendLine(self._numeric(irc.ERR_NOTEXTTOSEND, b"No text to send"))
            return
        text = fromIrc(args[1])
        if text is None:
            return  # a CTCP other than ACTION: nothing to carry
        for target in args[0].split(b","):
            if target.startswith(b"#"):
                self.expectOwn()  # its copy is dropped on the way back
                room = target[1:]
                if key(room) == self.default:
                    self._asking(target, partial(self.session.say, text), notice)
                else:
                    self._asking(
                        target, partial(self.session.roomSay, room, text), notice
                    )
            else:
                self._asking(
                    target, partial(self.session.whisper, target, text), notice
                )

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

    def irc_ISON(self, args: list[bytes]) -> None:
        """Which of the nicks given are here (irssi's /notify asks so)."""
        if not self._need(args, 1, b"ISON"):
            return
        here = self._here(n for a in args for n in a.split())
        self.sendLine(self._numeric("303", b" ".join(u.name for u in here)))

    def irc_USERHOST(self, args: list[bytes]) -> None:
        """Up to five nicks, as ``nick=+nick@chatd`` (RFC 2812 4.8)."""
        if not self._need(args, 1, b"USERHOST"):
            return
        here = self._here(args[:5])
        reply = b" ".join(u.name + b"=+" + u.name + b"@" + SERVER for u in here)
        self.sendLine(self._numeric("302", reply))

    def _here(self, nicks: Iterable[bytes]) -> list[User]:
        """The active users of those nicks, in their order; the rest left out."""
        find = self.session.hub.replica.find
        return [u for u in map(find, nicks) if u is not None]

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
