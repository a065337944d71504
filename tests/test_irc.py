"""The IRC front end in memory (task.Clock, StringTransport): registration,
every command and numeric docs/irc.md lists, hostile input, and IRC users
beside binary users in the same rooms and order."""

from __future__ import annotations

from twisted.internet import address
from twisted.internet.testing import StringTransport

from chatd.core.events import Messages
from chatd.irc.codec import IrcCodec
from chatd.irc.protocol import IrcProtocol
from chatd.wire import FrameType as T
from chatd.wire import encode
from tests.memory import ChatTestCase, Server


class IrcPeer:
    """One IRC client connection to the in-memory server."""

    def __init__(
        self, server: Server, port: int, motd: list[bytes] | None = None
    ) -> None:
        self.server = server
        addr = address.IPv4Address("TCP", "127.0.0.1", port)
        self.proto = IrcProtocol(
            server.factory, server.factory.connectionNumber(), motd
        )
        self.transport = StringTransport(peerAddress=addr)
        self.proto.makeConnection(self.transport)
        self._seen = 0

    def send(self, *lines: bytes) -> None:
        self.proto.dataReceived(b"".join(x + b"\r\n" for x in lines))

    def lines(self) -> list[bytes]:
        self.server.clock.advance(0)
        data = self.transport.value()[self._seen :]
        self._seen += len(data)
        return data.splitlines()

    def codes(self) -> list[bytes]:
        """The command or numeric of each line since the last call."""
        return [
            x.split(b" ")[1] if x.startswith(b":") else x.split(b" ")[0]
            for x in self.lines()
        ]

    def register(self, nick: bytes) -> list[bytes]:
        self.send(b"NICK " + nick, b"USER " + nick + b" 0 * :" + nick)
        return self.lines()


class IrcTests(ChatTestCase):
    def setUp(self) -> None:
        self.server = Server()
        self._ports = iter(range(50000, 60000))

    def irc(
        self, nick: bytes | None = None, motd: list[bytes] | None = None
    ) -> IrcPeer:
        peer = IrcPeer(self.server, next(self._ports), motd)
        if nick is not None:
            got = peer.register(nick)
            assert any(b" 366 " in x for x in got), got
        return peer

    def test_registration_welcome_motd_join_names(self) -> None:
        peer = self.irc()
        peer.send(b"CAP LS 302", b"NICK ann", b"USER ann 0 * :Ann A")
        self.assertEqual(peer.codes(), [b"CAP"])  # waits for CAP END
        peer.send(b"CAP REQ :sasl", b"CAP END")
        got = peer.lines()
        self.assertEqual(got[0], b":chatd CAP * NAK :sasl")
        codes = [x.split(b" ")[1] for x in got[1:]]
        self.assertEqual(
            codes,
            [b"001", b"002", b"003", b"004", b"005", b"422", b"JOIN", b"353", b"366"],
        )
        isupport = got[5]
        for token in (
            b"CHANTYPES=#",
            b"NICKLEN=32",
            b"CASEMAPPING=ascii",
            b"LINELEN=512",
        ):
            self.assertIn(token, isupport)
        self.assertEqual(got[7], b":ann!ann@chatd JOIN #lobby")
        self.assertEqual(got[8], b":chatd 353 ann = #lobby :ann")
        motd = self.irc(motd=[b"hello", b"world"])
        codes = [x.split(b" ")[1] for x in motd.register(b"bob")]
        self.assertEqual(codes[5:8], [b"375", b"372", b"372"])

    def test_nick_errors_and_retry(self) -> None:
        self.irc(b"ann")
        peer = self.irc()
        peer.send(b"NICK ANN", b"USER x 0 * :x")
        self.assertEqual(peer.lines(), [b":chatd 433 * ANN :that name is in use"])
        peer.send(b"NICK bad.nick")
        self.assertEqual(peer.codes(), [b"432"])
        peer.send(b"NICK bo")
        self.assertIn(b"001", peer.codes())
        peer.send(b"NICK other")
        self.assertEqual(peer.codes(), [b"432"])  # no nick changes
        peer.send(b"USER again 0 * :x")
        self.assertEqual(peer.codes(), [b"462"])

    def test_password(self) -> None:
        self.server = Server(password=b"s3cret")
        peer = self.irc()
        peer.send(b"PASS wrong", b"NICK ann", b"USER ann 0 * :a")
        got = peer.lines()
        self.assertEqual(got[0].split(b" ")[1], b"464")
        self.assertTrue(got[1].startswith(b"ERROR :Closing link"))
        ok = self.irc()
        ok.send(b"PASS s3cret", b"NICK ann", b"USER ann 0 * :a")
        self.assertIn(b"001", ok.codes())

    def test_before_registration_and_unknown(self) -> None:
        peer = self.irc()
        peer.send(b"JOIN #dev", b"PRIVMSG #lobby :hi", b"FROB x", b"PING :tok")
        self.assertEqual(
            peer.lines(),
            [b":chatd 451 * :You have not registered",
             b":chatd 451 * :You have not registered",
             b":chatd 421 * FROB :Unknown command",
             b":chatd PONG chatd :tok"],
        )  # fmt: skip

    def test_channels_with_native_users_one_order(self) -> None:
        ann = self.irc(b"ann")
        bob = self.server.active(b"bob")  # a binary 1.2 user
        bob.send(T.VERSION, b"1.2")
        ann.lines(), bob.received()
        ann.send(b"JOIN #dev,#ops")
        got = ann.lines()
        self.assertEqual(got[0], b":ann!ann@chatd JOIN #dev")
        self.assertEqual(
            got[1:3],
            [b":chatd 353 ann = #dev :ann", b":chatd 366 ann #dev :End of /NAMES list"],
        )
        bob.send(T.ENTER, b"dev")
        self.assertEqual(ann.lines(), [b":bob!bob@chatd JOIN #dev"])
        bob.received()
        ann.send(
            b"PRIVMSG #dev :hello \x02bold\x02", b"PRIVMSG #dev :\x01ACTION waves\x01"
        )
        bob.send(T.ROOM_SAY, b"dev.hi ann")
        self.assertEqual(
            [
                p.rsplit(b".", 1)[-1] if b"/me" not in p else p[-9:]
                for _, p in bob.received()
            ],
            [b"hello bold", b"/me waves", b"hi ann"],
        )
        self.assertEqual(
            ann.lines(), [b":bob!bob@chatd PRIVMSG #dev :hi ann"]
        )  # its own lines are not echoed
        bob.send(T.SAY, b"/me is here")
        self.assertEqual(
            ann.lines(), [b":bob!bob@chatd PRIVMSG #lobby :\x01ACTION is here\x01"]
        )
        ann.send(b"PART #ops", b"TOPIC #dev :ship it", b"TOPIC #dev")
        self.assertEqual(
            ann.lines(),
            [b":ann!ann@chatd PART #ops :part", b":chatd TOPIC #dev :ship it",
             b":chatd 332 ann #dev :ship it"],
        )  # fmt: skip
        ann.send(b"LIST")
        got = ann.lines()
        self.assertEqual(got[0].split(b" ")[1], b"321")
        self.assertIn(b":chatd 322 ann #dev 2 :ship it", got)
        self.assertEqual(got[-1].split(b" ")[1], b"323")
        self.assertIn(b" #lobby ", b"".join(got))
        ann.send(b"LIST #DEV,#nowhere")  # only the rooms named, any case
        self.assertEqual(
            ann.lines(),
            [b":chatd 321 ann Channel :Users  Name",
             b":chatd 322 ann #dev 2 :ship it", b":chatd 323 ann :End of /LIST"],
        )  # fmt: skip

    def test_earlier_messages_on_joining(self) -> None:
        """--irc-history: a channel's last messages from its history, after
        NAMES, between two NOTICEs; joins and parts left out."""
        bob = self.server.active(b"bob")
        bob.send(T.VERSION, b"1.2")
        bob.send(T.SAY, b"one")
        bob.sendRaw(
            encode(T.SAY, b"skip") + encode(T.SAY, b"two") + encode(T.SAY, b"three")
        )
        bob.send(T.ENTER, b"dev")
        bob.send(T.ROOM_SAY, b"dev.four")
        bob.received()
        ann = self.irc()
        got = ann.register(b"ann")
        names = got.index(b":chatd 366 ann #lobby :End of /NAMES list")
        self.assertEqual(
            got[names + 1 :],
            [b":chatd NOTICE #lobby :4 earlier messages:",
             b":bob!bob@chatd PRIVMSG #lobby :one",
             b":bob!bob@chatd PRIVMSG #lobby :skip",
             b":bob!bob@chatd PRIVMSG #lobby :two",
             b":bob!bob@chatd PRIVMSG #lobby :three",
             b":chatd NOTICE #lobby :end of earlier messages"],
        )  # fmt: skip
        ann.send(b"JOIN #dev")
        got = ann.lines()
        self.assertEqual(got[2].split(b" ")[1], b"366")
        self.assertEqual(
            got[3:],
            [b":chatd NOTICE #dev :1 earlier message:",
             b":bob!bob@chatd PRIVMSG #dev :four",
             b":chatd NOTICE #dev :end of earlier messages"],
        )  # fmt: skip
        ann.send(b"JOIN #new")  # nothing said there: no NOTICEs
        self.assertEqual(ann.codes(), [b"JOIN", b"353", b"366"])
        # History.last may cut a run of SAYs: only its frames from first on.
        run = [(e, f, t) for e, f, t in self.server.factory.hub.rooms.history.last(b"lobby", 9)
               if isinstance(e, Messages)]  # fmt: skip
        event = run[-1][0]
        self.assertEqual(event.count, 3)
        got, n = IrcCodec(earlier=5).history(b"lobby", [(event, 1, 3)])
        self.assertEqual(n, 4)
        self.assertEqual(
            [x.rsplit(b":", 1)[1] for x in got.splitlines()[1:-1]], [b"two", b"three"]
        )

    def test_earlier_messages_bounded_or_off(self) -> None:
        for limit, shown in ((2, [b"b2", b"b3"]), (0, [])):
            self.server = Server(irc_history=limit)
            bob = self.server.active(b"bob")
            for text in (b"b1", b"b2", b"b3"):
                bob.send(T.SAY, text)
                bob.received()
            got = self.irc().register(b"ann")
            said = [x.rsplit(b":", 1)[1] for x in got if b" PRIVMSG " in x]
            self.assertEqual(said, shown)
            self.assertEqual(any(b"earlier" in x for x in got), bool(shown))

    def test_whispers_both_ways_and_errors(self) -> None:
        ann = self.irc(b"ann")
        bob = self.server.active(b"bob")
        ann.lines()
        ann.send(b"PRIVMSG bob :psst")
        self.assertEqual(
            bob.received(), [(T.WHISPERED, ann.proto.session.user.entry + b".psst")]
        )  # type: ignore[union-attr]
        bob.send(T.WHISPER, b"ann.back")
        self.assertEqual(ann.lines(), [b":bob!bob@chatd PRIVMSG ann :back"])
        ann.send(b"PRIVMSG nobody :x", b"PRIVMSG #nosuch :x", b"PART #nosuch",
                 b"PRIVMSG", b"PRIVMSG bob", b"JOIN nohash", b"TOPIC #lobby :x")  # fmt: skip
        self.assertEqual(
            ann.codes(), [b"401", b"403", b"403", b"411", b"412", b"403", b"482"]
        )

    def test_who_whois_mode_names(self) -> None:
        ann = self.irc(b"ann")
        self.server.active(b"bob")
        ann.lines()
        ann.send(b"WHO #lobby", b"WHOIS bob", b"WHOIS nobody", b"MODE #lobby",
                 b"MODE #lobby +o ann", b"MODE ann", b"MODE ann +i", b"NAMES #lobby")  # fmt: skip
        self.assertEqual(
            ann.codes(),
            [b"352", b"352", b"315", b"311", b"318", b"401", b"318", b"324", b"482",
             b"221", b"501", b"353", b"366"],
        )  # fmt: skip

    def test_no_error_answers_a_notice(self) -> None:
        """RFC 2812 3.3.2: a NOTICE that fails fails silently (bots answer
        NOTICEs with NOTICEs, so an error reply could start a loop)."""
        ann = self.irc(b"ann")
        bob = self.irc(b"bob")
        ann.lines()
        ann.send(
            b"NOTICE nobody :x", b"NOTICE #nochan :x", b"NOTICE #bad!room :x",
            b"NOTICE bob", b"NOTICE", b"NOTICE bob :nul\x00", b"NOTICE bob :hi",
            b"PRIVMSG nobody :x", b"PING :end",
        )  # fmt: skip
        self.assertEqual(
            ann.lines(),
            [b":chatd 401 ann nobody :no active user by that name",
             b":chatd PONG chatd :end"],
        )  # fmt: skip
        # delivered as chatd carries it: one kind of message (docs/irc.md)
        self.assertEqual(bob.lines()[-1], b":ann!ann@chatd PRIVMSG bob :hi")

    def test_ison_and_userhost(self) -> None:
        self.irc(b"Bob")
        ann = self.irc(b"ann")
        ann.lines()
        ann.send(b"ISON bob nobody :ANN", b"USERHOST nobody BOB", b"ISON")
        self.assertEqual(
            ann.lines(),
            [b":chatd 303 ann :Bob ann", b":chatd 302 ann :Bob=+Bob@chatd",
             b":chatd 461 ann ISON :Not enough parameters"],
        )  # fmt: skip

    def test_hostile_input(self) -> None:
        ann = self.irc(b"ann")
        ann.lines()
        ann.proto.dataReceived(b"x" * (1 << 20))  # no CRLF for 1 MiB
        self.assertEqual(ann.codes(), [b"417"])
        self.assertLess(len(ann.proto._buf), 1024)  # nothing kept
        ann.proto.dataReceived(b"tail\r\nPING :after\r\n")
        self.assertEqual(ann.lines(), [b":chatd PONG chatd :after"])
        ann.send(b"PRIVMSG #lobby :" + b"y" * 590)  # a 600-byte line
        self.assertEqual(ann.codes(), [b"417"])
        ann.send(b"PRIVMSG #lobby :nul\x00here", b"PRIVMSG #lobby :" + b"z" * 480)
        got = ann.lines()
        self.assertIn(b"BAD_TEXT", got[0])
        self.assertFalse(ann.transport.disconnecting)

    def test_input_quoted_back_is_made_safe(self) -> None:
        """An unknown command, a bad nick, a PING token, a CAP request and
        a QUIT reason are quoted back printable, also when they are not
        UTF-8 (once a traceback and a dropped connection)."""
        peer = self.irc()
        peer.send(b"FOO\xff\xfe x", b"\x00\x1b[31m y", b"NICK a\x1bb")
        self.assertEqual(
            peer.lines(),
            [
                b":chatd 421 * FOO?? :Unknown command",
                b":chatd 421 * ??[31M :Unknown command",
                b":chatd 432 * a?b :a nick is 1 to 32 ASCII letters, digits, _ or -",
            ],
        )
        self.assertFalse(peer.transport.disconnecting)
        peer.send(b"CAP REQ :\x1b]0;x\x07", b"CAP END")
        self.assertEqual(peer.lines(), [b":chatd CAP * NAK :?]0;x?"])
        ann = self.irc(b"ann")
        ann.lines()
        ann.send(b"PING :\x1b[2J", b"PING :caf\xc3\xa9", b"QUIT :gone\x1b[H")
        self.assertEqual(
            ann.lines(),
            [
                b":chatd PONG chatd :?[2J",
                b":chatd PONG chatd :caf\xc3\xa9",  # text by chatd's rules: kept
                b"ERROR :Closing link: gone?[H",
            ],
        )

    def test_quit_and_kick(self) -> None:
        ann = self.irc(b"ann")
        bob = self.irc(b"bob")
        ann.lines()
        bob.send(b"PING", b"QUIT :bye")
        self.assertEqual(
            bob.lines(),
            [b":chatd 409 bob :No origin specified", b"ERROR :Closing link: bye"],
        )
        self.assertTrue(bob.transport.disconnecting)
        self.assertEqual(ann.lines(), [b":bob!bob@chatd QUIT :Quit"])
        self.assertTrue(self.server.factory.kick("ann"))
        self.server.clock.advance(0)
        self.assertTrue(ann.lines()[-1].startswith(b"ERROR :Closing link"))
        self.assertTrue(ann.transport.disconnecting)

    def test_keepalive_and_timeouts(self) -> None:
        """A registered client silent for a third of the idle timeout is
        PINGed at the next tick; its PONG keeps it, silence past the timeout cuts it; a
        client that never registers meets the handshake timeout."""
        self.server = Server(idle_timeout=30.0, handshake_timeout=10.0)
        clock = self.server.clock
        lurker = self.irc()
        lurker.send(b"NICK lurker")  # never sends USER
        ann = self.irc(b"ann")
        ann.lines()
        clock.advance(10.5)
        self.assertEqual(ann.lines(), [])  # it spoke within the last 10 s
        self.assertTrue(lurker.lines()[-1].startswith(b"ERROR :Closing link"))
        self.assertTrue(lurker.transport.disconnecting)
        clock.advance(10)
        self.assertEqual(ann.lines(), [b"PING :chatd"])
        ann.send(b"PONG :chatd")
        for _ in range(6):  # a minute, answering every PING
            clock.advance(10)
            if ann.lines() == [b"PING :chatd"]:
                ann.send(b"PONG :chatd")
        self.assertFalse(ann.transport.disconnecting)
        clock.pump([1.0] * 31)  # now silent
        got = ann.lines()
        self.assertEqual(got[:1], [b"PING :chatd"])
        self.assertTrue(got[-1].startswith(b"ERROR :Closing link"), got)
        self.assertTrue(ann.transport.disconnecting)

    def test_counted_per_front_end(self) -> None:
        self.irc(b"ann")
        self.server.active(b"bob")
        counts = self.server.factory.frontEnds()
        self.assertEqual(counts["irc"], {"connections": 1, "active_users": 1})
        self.assertEqual(counts["tcp"]["active_users"], 1)


class RemoteIrcTests(ChatTestCase):
    """A roster and a sequencer that answer later (a cluster): lines wait
    their turn, replies keep request order."""

    def test_registration_and_messages_wait_for_answers(self) -> None:
        from tests.test_session import LaterRoster, LaterSequencer

        roster, sequencer = LaterRoster(), LaterSequencer()
        server = Server(roster=roster, sequencer=sequencer)
        peer = IrcPeer(server, 50001)
        peer.send(b"NICK ann", b"USER ann 0 * :a", b"PING :first")
        self.assertEqual(peer.lines(), [])
        sequencer.later = True
        roster.answer()  # WELCOME; then READY's JOIN waits for the order
        self.assertEqual(peer.codes()[-1], b"422")
        sequencer.answer()
        self.assertEqual(peer.codes(), [b"JOIN", b"353", b"366", b"PONG"])
        # a NOTICE whose answer fails later is still silent; a PRIVMSG not;
        # and a queued line's message goes before the lines after it
        peer.send(b"NOTICE #lobby :n", b"PRIVMSG #lobby :p", b"PING :after")
        for _ in range(2):
            self.assertEqual(peer.lines(), [])
            sequencer.waiting.pop(0)[1].errback(ConnectionError("backend away"))
        self.assertEqual(
            peer.lines(),
            [b":chatd NOTICE ann :UNAVAILABLE: the chat backend is unreachable; "
             b"not delivered, try again", b":chatd PONG chatd :after"],
        )  # fmt: skip
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 0)
