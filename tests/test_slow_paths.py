"""A client over its backlog while its own frames are being handled.

Found in review: cutting a slow client off from inside its own frame
handler closed it in the middle of that handler (a close within close, a
MESSAGE after the sender's LEAVE); and a client whose transport was already
full when it sent READY joined as a live reader, never cut off.
"""

from __future__ import annotations

from chatd.wire import HEADER, encode
from tests.memory import ChatTestCase, T


class OverBacklogTests(ChatTestCase):
    # What a paused transport holds is already more than this.
    config = {"max_backlog": 65536}

    def slowPair(self):
        alice, bob = self.server.users(b"alice", b"bob")
        alice.proto.pauseProducing()  # its transport says it is full
        return alice, bob

    def test_reply_then_bye(self):
        """ECHO then BYE in one read: no exception, one LEAVE, name freed."""
        alice, bob = self.slowPair()
        alice.sendRaw(encode(T.ECHO, b"x") + encode(T.BYE))
        leaves = [p for t, p in bob.received() if t == T.LEAVE]
        self.assertEqual(leaves, [alice.entry + b".quit"])
        self.assertEqual(
            [u for u, _ in self.server.factory.named()], [bob.proto.session.user]
        )

    def test_reply_then_oversize(self):
        """ECHO then a frame too large: the fatal error wins, no exception."""
        alice, bob = self.slowPair()
        alice.sendRaw(encode(T.ECHO, b"x") + HEADER.pack(T.SAY, 5000))
        self.assertTrue(alice.closing)
        self.assertEqual([t for t, _ in bob.received()], [T.LEAVE])

    def test_no_message_after_leave(self):
        """ECHO then SAY from a client over its backlog: its MESSAGE, then
        its LEAVE slow, never the other way round."""
        alice, bob = self.slowPair()
        alice.sendRaw(encode(T.ECHO, b"x") + encode(T.SAY, b"last words"))
        frames = bob.received()
        self.assertEqual([t for t, _ in frames], [T.MESSAGE, T.LEAVE])
        self.assertTrue(frames[0][1].endswith(b".last words"))
        self.assertTrue(frames[1][1].endswith(b".slow"))
        self.assertTrue(alice.closing)

    def test_full_before_ready(self):
        """A client whose transport is full when it sends READY is paused in
        the fan-out, so it is cut off when its backlog passes the limit."""
        (bob,) = self.server.users(b"bob")
        alice = self.server.named(b"alice")
        alice.proto.pauseProducing()
        alice.send(T.READY)
        fanout = self.server.factory.fanout
        self.assertNotIn(alice.proto.session, fanout._live)
        bob.send(T.SAY, b"hello")
        self.server.clock.advance(0)
        self.assertTrue(alice.closing)
        self.assertIn(
            (T.LEAVE, alice.proto.session.user.entry + b".slow"), bob.received()
        )


class WhoAfterChangesTests(ChatTestCase):
    def who(self, peer):
        peer.send(T.WHO)
        return [p for t, p in peer.received() if t == T.USERS]

    def test_who_follows_joins_and_leaves(self):
        """WHO's answer (built once per change) follows every join and leave."""
        (alice,) = self.server.users(b"alice")
        first = self.who(alice)
        self.assertEqual(first, [alice.entry, b""])
        bob = self.server.active(b"bob")
        alice.received()
        self.assertEqual(self.who(alice), [alice.entry + b"\n" + bob.entry, b""])
        bob.send(T.BYE)
        alice.received()
        self.assertEqual(self.who(alice), [alice.entry, b""])
