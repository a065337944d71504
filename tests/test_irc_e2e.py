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
from tests.ircclient import registered
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
