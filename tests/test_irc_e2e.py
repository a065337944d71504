"""End to end: IRC users beside binary users against a real twistd, in one
process, with --workers 2 (main serves IRC, workers the TCP users) and on
two --redis nodes (IRC on one, the TCP user on the other): one order per
room, whispers both ways, a kick, shutdown."""

from __future__ import annotations

import signal

from twisted.internet import defer
from twisted.trial import unittest

from chatd.wire import FrameType as T
from tests.contract import LOOPBACK
from tests.contractcase import ContractHelpers
from tests.daemon import sayUntilLeave
from tests.ircclient import connectIrc, registered
from tests.test_contract_resume import RESUMING


class IrcEndToEnd(ContractHelpers):
    @defer.inlineCallbacks
    def test_irc_and_tcp_users_in_two_rooms(self):
        deployment = yield self.deploy("--irc", LOOPBACK, "--rate-limit", "0")
        ircPort = deployment.daemons[0].ports("irc")[0]
        ann = yield registered(ircPort, b"ann")
        [(bob, bentry)] = yield self.users(b"bob")  # on the last server
        bob.send(T.VERSION, b"1.2")
        yield self.expect(bob, T.VERSION)
        ann.send(b"JOIN #dev,#ops")
        yield ann.until(lambda x: x.endswith(b"#ops :End of /NAMES list"))
        bob.send(T.ENTER, b"dev")
        self.assertTrue((yield self.expect(bob, T.ROOM_JOIN)).startswith(b"dev."))
        self.assertEqual((yield ann.next()), b":bob!bob@chatd JOIN #dev")
        for i in range(5):  # both at once: one order for both
            ann.send(b"PRIVMSG #dev :a%d" % i)
            bob.send(T.ROOM_SAY, b"dev.b%d" % i)
        fromBob = []
        for _ in range(5):
            fromBob.append((yield ann.next()))
        seen = []
        for _ in range(10):
            seen.append((yield self.expect(bob, T.ROOM_MESSAGE)).rsplit(b".", 1)[-1])
        self.assertEqual(
            sorted(seen),
            sorted([b"a%d" % i for i in range(5)] + [b"b%d" % i for i in range(5)]),
        )
        # ann sees bob's lines in the order bob saw them (its own are not echoed)
        self.assertEqual(
            [x.rsplit(b":", 1)[-1] for x in fromBob],
            [x for x in seen if x.startswith(b"b")],
        )
        ann.send(b"PRIVMSG #ops :only ops")  # bob is not in #ops
        ann.send(b"PRIVMSG bob :psst")
        self.assertTrue((yield self.expect(bob, T.WHISPERED)).endswith(b".ann.psst"))
        bob.send(T.WHISPER, b"ann.back")
        self.assertEqual((yield ann.next()), b":bob!bob@chatd PRIVMSG ann :back")
        code = yield deployment.kick(b"ann")
        self.assertEqual(code, 200)
        lines = yield ann.until(lambda x: x.startswith(b"ERROR"))
        self.assertIn(b"removed by an operator", lines[-1])
        yield ann.closed
        self.assertEqual(
            (yield self.expect(bob, T.LEAVE)).rsplit(b".", 1)[-1], b"kicked"
        )

    @defer.inlineCallbacks
    def test_earlier_messages_on_joining(self):
        """--irc-history, from the room's history wherever the mode keeps
        it (tests/test_contract_resume.py's RESUMING); nothing elsewhere."""
        deployment = yield self.deploy("--irc", LOOPBACK, "--rate-limit", "0")
        [(bob, _)] = yield self.users(b"bob")
        bob.send(T.VERSION, b"1.2")
        bob.send(T.SAY, b"before")
        bob.send(T.ENTER, b"dev")
        bob.send(T.ROOM_SAY, b"dev.in dev")
        yield bob.nextOf(T.ROOM_MESSAGE)
        ann = yield registered(deployment.daemons[0].ports("irc")[0], b"ann")
        ann.send(b"JOIN #dev", b"PING :done")
        lines = yield ann.until(lambda x: x.endswith(b"PONG chatd :done"))
        earlier = [x for x in lines if b" NOTICE " in x or b" PRIVMSG " in x]
        if self.mode not in RESUMING:
            self.assertEqual(earlier, [])
            return
        self.assertEqual(
            earlier,
            [b":chatd NOTICE #lobby :1 earlier message:",
             b":bob!bob@chatd PRIVMSG #lobby :before",
             b":chatd NOTICE #lobby :end of earlier messages",
             b":chatd NOTICE #dev :1 earlier message:",
             b":bob!bob@chatd PRIVMSG #dev :in dev",
             b":chatd NOTICE #dev :end of earlier messages"],
        )  # fmt: skip

    @defer.inlineCallbacks
    def test_clients_that_misbehave(self):
        """IRC clients as real ones misbehave: one pipelines its whole
        session in one write, one drops in the middle of a line, one stops
        reading in a busy channel; the TCP user sees each right."""
        deployment = yield self.deploy(
            "--irc", LOOPBACK, "--rate-limit", "0", "--max-backlog", "64KiB"
        )
        ircPort = deployment.daemons[0].ports("irc")[0]
        [(bob, _)] = yield self.users(b"bob")
        bob.send(T.VERSION, b"1.2")
        yield self.expect(bob, T.VERSION)
        bob.send(T.ENTER, b"dev")
        yield bob.nextOf(T.ROOM_JOIN)
        piper = yield connectIrc(ircPort)
        piper.send(
            b"NICK piper", b"USER piper 0 * :p", b"JOIN #dev",
            *[b"PRIVMSG #dev :p%d" % i for i in range(5)], b"PING :done",
        )  # fmt: skip
        lines = yield piper.until(lambda x: x.endswith(b"PONG chatd :done"))
        codes = [x.split(b" ")[1] for x in lines]
        self.assertEqual(codes[0], b"001")
        self.assertLess(codes.index(b"JOIN"), codes.index(b"366"))
        self.assertEqual(codes[-1], b"PONG")
        said = []
        while len(said) < 5:
            got = yield bob.next()
            if got[0] == T.ROOM_MESSAGE:
                said.append(got[1].rsplit(b".", 1)[-1])
        self.assertEqual(said, [b"p%d" % i for i in range(5)])
        dropper = yield registered(ircPort, b"dropper")
        self.assertEqual((yield bob.nextOf(T.JOIN)).rsplit(b".", 1)[-1], b"dropper")
        dropper.transport.write(b"PRIVMSG #lobby :half a li")
        dropper.transport.abortConnection()
        left = yield bob.nextOf(T.LEAVE)
        self.assertEqual(left.split(b".")[2:], [b"dropper", b"error"])
        sleeper = yield registered(ircPort, b"sleeper")
        self.assertEqual((yield bob.nextOf(T.JOIN)).rsplit(b".", 1)[-1], b"sleeper")
        sleeper.transport.pauseProducing()  # stops reading its socket
        left = yield sayUntilLeave(bob)
        self.assertIsNotNone(left)
        self.assertEqual(left.split(b".")[2:], [b"sleeper", b"slow"])
        bob.send(T.ECHO, b"still here")
        self.assertEqual((yield bob.nextOf(T.ECHO)), b"still here")
        piper.send(b"PING :after")
        yield piper.until(lambda x: x.endswith(b"PONG chatd :after"))

    @defer.inlineCallbacks
    def test_shutdown_tells_irc_users(self):
        deployment = yield self.deploy("--irc", LOOPBACK)
        ann = yield registered(deployment.daemons[0].ports("irc")[0], b"ann")
        stopping = deployment.stopServer(0, signal.SIGTERM)
        lines = yield ann.until(lambda x: x.startswith(b"ERROR"))
        self.assertIn(b"shutting down", lines[-1])
        yield ann.closed
        yield stopping


class SingleProcessIrc(IrcEndToEnd, unittest.TestCase):
    mode = "single"


class WorkersIrc(IrcEndToEnd, unittest.TestCase):
    mode = "workers"


class RedisIrc(IrcEndToEnd, unittest.TestCase):
    mode = "redis"
