"""The protocol contract (../shared/PROTOCOL.md), in every deployment mode.

Each check is written once, in :class:`ContractTests`, and runs against a
fresh deployment of each mode (tests/contract.py): one process,
``--workers 2``, two ``--redis`` nodes and the WebSocket front end, as
magic-wormhole's transit relay runs its tests over TCP and WebSocket.
Users are spread: consecutive connections go to different workers or
nodes, so every cross-user rule is checked across processes.  A check a
mode cannot support is skipped with its reason (``Deployment.cannot``).

The in-memory suite (tests/test_protocol.py) checks the same rules on a
task.Clock in depth; this one checks that no mode breaks them.
"""

from __future__ import annotations

import os
import signal

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from chatd.wire import FrameType as T
from chatd.wire import encode
from tests.contractcase import ContractHelpers
from tests.daemon import sayUntilLeave

#: Frame types a client may not send (PROTOCOL.md: UNKNOWN_TYPE, stays open).
SERVER_TYPES = [T.WELCOME, T.MESSAGE, T.JOIN, T.LEAVE, T.ERROR, T.USERS]
SERVER_TYPES += [T.WHISPERED, T.NOTICE, 0, 99, 2**32 - 1]
BAD_TEXTS = [b"\xff", b"a\x1bb", b"line\nbreak", "\u202e".encode(), b"\xc0\xaf"]


class ContractTests(ContractHelpers):
    """The checks; a subclass per mode sets :attr:`mode`."""

    # -- handshake -------------------------------------------------------------

    @defer.inlineCallbacks
    def test_handshake_welcome_join(self):
        yield self.deploy()
        [(alice, aentry)] = yield self.users(b"alice")
        bob, bentry = yield self.named(b"BoB")
        uid, color, name = bentry.split(b".")
        self.assertEqual(name, b"BoB")
        self.assertEqual(uid, str(int(uid)).encode())
        self.assertTrue(0 <= int(color) <= 255)
        self.assertNotEqual(uid, aentry.split(b".")[0])
        bob.send(T.READY)
        self.assertEqual((yield self.expect(bob, T.JOIN)), bentry)
        self.assertEqual((yield self.expect(alice, T.JOIN)), bentry)

    @defer.inlineCallbacks
    def test_pipelined_handshake_say_who(self):
        """HELLO, READY, SAY and WHO in one write: WELCOME, JOIN, MESSAGE,
        USERS, in that order (issue 18: --redis answered ERROR first)."""
        yield self.deploy()
        [(alice, aentry)] = yield self.users(b"alice")
        bob = yield self.deployment.connect()
        bob.sendRaw(
            encode(T.HELLO, b"bob")
            + encode(T.READY)
            + encode(T.SAY, b"hi")
            + encode(T.WHO)
        )
        welcome = yield self.expect(bob, T.WELCOME)
        uid, color = welcome.split(b".")[1:]
        bentry = b".".join((uid, color, b"bob"))
        self.assertEqual((yield self.expect(bob, T.JOIN)), bentry)
        self.assertEqual((yield self.expect(bob, T.MESSAGE)), bentry + b".hi")
        listed = yield self.expect(bob, T.USERS)
        self.assertEqual(listed.split(b"\n"), [aentry, bentry])
        self.assertEqual((yield self.expect(bob, T.USERS)), b"")
        self.assertEqual((yield self.expect(alice, T.JOIN)), bentry)
        self.assertEqual((yield self.expect(alice, T.MESSAGE)), bentry + b".hi")

    @defer.inlineCallbacks
    def test_name_rules_and_retry(self):
        """BAD_NAME and NAME_TAKEN (case-insensitive, across servers) leave
        the connection in CONNECTED; state errors come first."""
        yield self.deploy()
        yield self.users(b"Alice")
        peer = yield self.deployment.connect()
        for name in (b"", b"a" * 33, b"a b", b"\xc3\xa9", b"a!"):
            peer.send(T.HELLO, name)
            yield self.expectError(peer, "BAD_NAME")
        for name in (b"alice", b"ALICE"):
            peer.send(T.HELLO, name)
            yield self.expectError(peer, "NAME_TAKEN")
        peer.send(T.READY)
        yield self.expectError(peer, "BAD_STATE")
        peer.send(T.SAY, b"hi")
        yield self.expectError(peer, "NOT_READY")
        peer.send(T.WHO)
        yield self.expectError(peer, "NOT_READY")
        peer.send(T.WHISPER, b"alice.hi")
        yield self.expectError(peer, "NOT_READY")
        peer.send(T.HELLO, b"a" * 32 + b".ignored.password")
        yield self.expect(peer, T.WELCOME)
        for payload in (b"carol", b"bad name", b""):
            peer.send(T.HELLO, payload)
            yield self.expectError(peer, "BAD_STATE")
        peer.send(T.SAY, b"still named")
        yield self.expectError(peer, "NOT_READY")
        peer.send(T.READY)
        yield self.expect(peer, T.JOIN)
        peer.send(T.READY)
        yield self.expectError(peer, "BAD_STATE")

    @defer.inlineCallbacks
    def test_password(self):
        """Checked before the name; wrong or missing is fatal; a right
        one lets the user in on any server."""
        path = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        with open(path, "w") as f:
            f.write("s3cret\n")
        yield self.deploy("--password-file", path)
        for payload in (b"alice", b"alice.wrong", b"bad name.wrong"):
            peer = yield self.deployment.connect()
            peer.send(T.HELLO, payload)
            yield self.expectError(peer, "AUTH_FAILED", closes=True)
        for k in range(2):
            peer, _ = yield self.named(b"user%d.s3cret" % k)

    @defer.inlineCallbacks
    def test_echo_ping_unknown_in_every_state(self):
        yield self.deploy()
        peer = yield self.deployment.connect()
        for step in (None, b"alice", b""):
            if step is not None:
                peer.send(T.READY if step == b"" else T.HELLO, step)
                yield self.expect(peer, T.JOIN if step == b"" else T.WELCOME)
            peer.send(T.ECHO, b"\x00\xffecho")
            self.assertEqual((yield self.expect(peer, T.ECHO)), b"\x00\xffecho")
            peer.send(T.PING, b"p")
            self.assertEqual((yield self.expect(peer, T.PONG)), b"p")
            peer.send(T.PONG, b"unasked")  # ignored
            for ftype in SERVER_TYPES:
                peer.send(ftype, b"x")
                yield self.expectError(peer, "UNKNOWN_TYPE")
        self.assertEqual((yield self.sync(peer)), [])

    @defer.inlineCallbacks
    def test_frame_too_large(self):
        """Decided from the header alone, before and after the handshake."""
        yield self.deploy()
        early = yield self.deployment.connect()
        early.sendRaw(encode(T.ECHO, b"")[:4] + (1017).to_bytes(4, "big"))
        yield self.expectError(early, "FRAME_TOO_LARGE", closes=True)
        [(alice, aentry), (bob, _)] = yield self.users(b"alice", b"bob")
        bob.sendRaw((5).to_bytes(4, "big") + (5000).to_bytes(4, "big"))
        yield self.expectError(bob, "FRAME_TOO_LARGE", closes=True)
        self.assertTrue((yield self.expect(alice, T.LEAVE)).endswith(b".error"))
        peer = yield self.deployment.connect()
        peer.send(T.ECHO, b"e" * 1016)  # the largest payload is fine
        self.assertEqual((yield self.expect(peer, T.ECHO)), b"e" * 1016)

    # -- text --------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_text_rules(self):
        """BAD_TEXT and TOO_LONG are not fatal and nothing is broadcast;
        the limit is the sender's own; BAD_TEXT wins over TOO_LONG."""
        yield self.deploy()
        [(alice, aentry), (bob, bentry)] = yield self.users(b"alice", b"bob")
        for text in [*BAD_TEXTS, b""]:
            alice.send(T.SAY, text)
            yield self.expectError(alice, "BAD_TEXT")
        limit = 1016 - len(aentry + b".")
        alice.send(T.SAY, b"x" * (limit + 1))
        yield self.expectError(alice, "TOO_LONG")
        alice.send(T.SAY, b"\xff" + b"x" * limit)
        yield self.expectError(alice, "BAD_TEXT")
        yield self.marker(
            alice, aentry, bob, text="\u00e9t\u00e9 \U0001f600\ttab".encode()
        )
        yield self.marker(alice, aentry, bob, text=b"y" * limit)

    # -- whispers ------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_whisper(self):
        """To the target only (on another server), with the sender's entry;
        to oneself; errors in their order."""
        yield self.deploy()
        [(alice, aentry), (bob, bentry), (carol, _)] = yield self.users(
            b"alice", b"bob", b"carol"
        )
        dave, _ = yield self.named(b"dave")  # NAMED, not ACTIVE
        alice.send(T.WHISPER, b"BOB.psst.with.dots")
        self.assertEqual(
            (yield self.expect(bob, T.WHISPERED)), aentry + b".psst.with.dots"
        )
        alice.send(T.WHISPER, b"alice.self")
        self.assertEqual((yield self.expect(alice, T.WHISPERED)), aentry + b".self")
        for payload, code in [
            (b"nodot", "BAD_TEXT"),
            (b"nobody.\xff", "BAD_TEXT"),
            (b"nobody." + b"x" * (1016 - len(aentry)), "TOO_LONG"),
            (b"nobody.hi", "NO_SUCH_USER"),
            (b".hi", "NO_SUCH_USER"),
            (b"dave.hi", "NO_SUCH_USER"),
        ]:
            alice.send(T.WHISPER, payload)
            yield self.expectError(alice, code)
        # Nothing reached carol (or dave): the next thing they get is a SAY
        # sequenced after the whispers.
        yield self.marker(alice, aentry, bob, carol)
        self.assertEqual((yield self.sync(dave)), [])

    # -- WHO ------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_who(self):
        """Active users in the order they became active, from every server;
        departed users not listed; NAMED users not listed."""
        yield self.deploy()
        active = yield self.users(b"alice", b"bob", b"carol")
        yield self.named(b"dave")
        entries, _ = yield self.who(active[1][0])
        self.assertEqual(entries, [e for _, e in active])
        active[0][0].send(T.BYE)
        for client, _ in active[1:]:
            yield self.expect(client, T.LEAVE)
        for client, _ in active[1:]:
            entries, _ = yield self.who(client)
            self.assertEqual(entries, [e for _, e in active[1:]])

    @defer.inlineCallbacks
    def test_who_long_list_split(self):
        yield self.deploy()
        names = [b"user%02d" % k + b"x" * 24 for k in range(30)]
        active = yield self.users(*names)
        entries, frames = yield self.who(active[0][0])
        self.assertEqual(entries, [e for _, e in active])
        self.assertGreater(frames, 1)

    # -- BYE and leaving ----------------------------------------------------------------

    @defer.inlineCallbacks
    def test_bye(self):
        """Replies queued before BYE go out, frames after it are ignored;
        others see LEAVE quit; BYE before ACTIVE produces no LEAVE."""
        yield self.deploy()
        [(alice, aentry), (bob, bentry)] = yield self.users(b"alice", b"bob")
        early, _ = yield self.named(b"early")
        early.send(T.BYE)
        yield early.closed
        bob.sendRaw(encode(T.ECHO, b"before") + encode(T.BYE) + encode(T.SAY, b"after"))
        self.assertEqual((yield self.expect(bob, T.ECHO)), b"before")
        yield bob.closed
        self.assertEqual((yield self.expect(alice, T.LEAVE)), bentry + b".quit")
        yield self.marker(alice, aentry)
        # The name is free again.
        yield self.retryHello(b"BOB")

    @defer.inlineCallbacks
    def test_disconnects(self):
        """A close or a reset without BYE is LEAVE error; a connection cut
        in the middle of a frame, or while its HELLO is being answered,
        leaves no name claimed and nothing behind."""
        yield self.deploy()
        [(alice, aentry), (bob, bentry), (carol, centry)] = yield self.users(
            b"alice", b"bob", b"carol"
        )
        bob.transport.loseConnection()
        self.assertEqual((yield self.expect(alice, T.LEAVE)), bentry + b".error")
        carol.abort()
        self.assertEqual((yield self.expect(alice, T.LEAVE)), centry + b".error")
        for k in range(2):  # on each server
            cut = yield self.deployment.connect()
            cut.sendRaw(encode(T.HELLO, b"cutter%d" % k) + encode(T.SAY, b"x")[:5])
            cut.abort()
            hasty = yield self.deployment.connect()
            hasty.sendRaw(encode(T.HELLO, b"hasty%d" % k) + encode(T.READY))
            hasty.abort()
        for k in range(2):
            for name in (b"cutter%d" % k, b"hasty%d" % k):
                client, _ = yield self.retryHello(name)
                client.send(T.BYE)
                yield client.closed
        # Any JOIN of a hasty user is followed by its LEAVE (error); then
        # alice is alone, and WHO (from every server) says so.
        alice.send(T.SAY, b"marker")
        joined, left = [], []
        while True:
            ftype, payload = yield alice.next()
            if ftype == T.JOIN:
                joined.append(payload)
            elif ftype == T.LEAVE:
                self.assertTrue(payload.endswith(b".error"), payload)
                left.append(payload.rsplit(b".", 1)[0])
            elif (ftype, payload) == (T.MESSAGE, aentry + b".marker"):
                if set(left) >= set(joined):
                    break
                alice.send(T.SAY, b"marker")  # a LEAVE still on its way
            else:
                self.fail(f"unexpected {(ftype, payload)!r}")
        self.assertEqual(sorted(joined), sorted(left))
        for server in range(self.deployment.servers):
            [(other, oentry)] = yield self._activeOn(server, b"check%d" % server)
            entries, _ = yield self.who(other)
            self.assertEqual(entries[0], aentry)
            self.assertEqual(entries[-1], oentry)
            self.assertEqual(len(entries), 2 + server)

    @defer.inlineCallbacks
    def _activeOn(self, server: int, name: bytes):  # type: ignore[no-untyped-def]
        client = yield self.deployment.connect(server)
        client.send(T.HELLO, name)
        welcome = yield self.expect(client, T.WELCOME)
        client.send(T.READY)
        entry = yield self.expect(client, T.JOIN)
        self.assertEqual(entry.split(b".")[2], welcome.split(b".")[0])
        return [(client, entry)]

    # -- order ----------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_one_total_order(self):
        """Three users on different servers pipeline ten messages each:
        everyone sees the same 30 MESSAGEs, each sender's in its order."""
        yield self.deploy()
        active = yield self.users(b"alice", b"bob", b"carol")
        for client, _ in active:
            client.sendRaw(b"".join(encode(T.SAY, b"m%d" % k) for k in range(10)))
        seen = []
        for client, _ in active:
            got = []
            for _ in range(30):
                got.append((yield self.expect(client, T.MESSAGE)))
            seen.append(got)
        self.assertEqual(seen[0], seen[1])
        self.assertEqual(seen[0], seen[2])
        for _, entry in active:
            mine = [p for p in seen[0] if p.startswith(entry + b".")]
            self.assertEqual(mine, [entry + b".m%d" % k for k in range(10)])

    @defer.inlineCallbacks
    def test_replies_in_request_order(self):
        """The sender's own MESSAGE (its acknowledgement) before the replies
        to later requests, also when they are pipelined."""
        yield self.deploy()
        [(alice, aentry), (bob, _)] = yield self.users(b"alice", b"bob")
        alice.sendRaw(
            encode(T.ECHO, b"1")
            + encode(T.SAY, b"two")
            + encode(T.PING, b"3")
            + encode(T.SAY, b"\xff")
            + encode(T.WHISPER, b"bob.five")
            + encode(T.SAY, b"six")
            + encode(T.ECHO, b"7")
        )
        self.assertEqual((yield self.expect(alice, T.ECHO)), b"1")
        self.assertEqual((yield self.expect(alice, T.MESSAGE)), aentry + b".two")
        self.assertEqual((yield self.expect(alice, T.PONG)), b"3")
        yield self.expectError(alice, "BAD_TEXT")
        self.assertEqual((yield self.expect(alice, T.MESSAGE)), aentry + b".six")
        self.assertEqual((yield self.expect(alice, T.ECHO)), b"7")
        self.assertEqual((yield self.expect(bob, T.MESSAGE)), aentry + b".two")
        self.assertEqual((yield self.expect(bob, T.WHISPERED)), aentry + b".five")
        self.assertEqual((yield self.expect(bob, T.MESSAGE)), aentry + b".six")

    @defer.inlineCallbacks
    def test_nothing_before_join(self):
        """A user receives the events sequenced after its READY, its own
        JOIN first, none of what came before."""
        yield self.deploy()
        [(alice, aentry)] = yield self.users(b"alice")
        yield self.marker(alice, aentry, text=b"before")
        [(bob, bentry)] = (yield self.users(b"bob"))[:1]
        self.assertEqual((yield self.expect(alice, T.JOIN)), bentry)
        yield self.marker(alice, aentry, bob, text=b"after")

    @defer.inlineCallbacks
    def test_users_spread(self):
        """The deployment puts consecutive users on different processes
        (what makes the other checks cross-process)."""
        if self.mode in ("single", "websocket"):
            raise unittest.SkipTest("one process: nothing to spread")
        deployment = yield self.deploy()
        yield self.users(b"alice", b"bob")
        if self.mode == "redis":
            self.assertEqual(deployment.serverOf(0), 0)
            self.assertEqual(deployment.serverOf(1), 1)
            return
        status = yield deployment.status()
        workers = {user["name"]: user["worker"] for user in status["users"]}
        self.assertEqual(len(set(workers.values())), 2, workers)

    # -- limits --------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_rate_limit(self):
        """Beyond the burst: RATE_LIMITED, not delivered, still open."""
        yield self.deploy("--rate-limit", "1", "--rate-burst", "3")
        [(alice, aentry), (bob, bentry)] = yield self.users(b"alice", b"bob")
        alice.sendRaw(
            b"".join(encode(T.SAY, b"m%d" % k) for k in range(3))
            + encode(T.SAY, b"over")
            + encode(T.WHISPER, b"bob.over")
        )
        for k in range(3):
            self.assertEqual(
                (yield self.expect(alice, T.MESSAGE)), aentry + b".m%d" % k
            )
        yield self.expectError(alice, "RATE_LIMITED")
        yield self.expectError(alice, "RATE_LIMITED")
        for k in range(3):
            self.assertEqual((yield self.expect(bob, T.MESSAGE)), aentry + b".m%d" % k)
        yield self.marker(bob, bentry, alice, text=b"bob is not limited")

    @defer.inlineCallbacks
    def test_server_full(self):
        """--max-clients per server: the next connection gets SERVER_FULL
        at once and is closed; the others are untouched."""
        yield self.deploy("--max-clients", "2")
        deployment = self.deployment
        held = []
        for k in range(2 * deployment.servers):
            held.append((yield self.named(b"user%d" % k)))
        refused = yield deployment.connect()
        yield self.expectError(refused, "SERVER_FULL", closes=True)
        for client, _ in held:
            self.assertEqual((yield self.sync(client)), [])

    @defer.inlineCallbacks
    def test_loopback_exempt_from_per_address_limits(self):
        """With the defaults (--max-per-ip 20, --connect-rate 5/s, exempt
        127.0.0.0/8) more than 20 connections from 127.0.0.1 get in
        (issue 18: --workers refused the 21st)."""
        yield self.deploy()
        peers = []
        for _ in range(25):
            peers.append((yield self.deployment.connect()))
        for k, peer in enumerate(peers):
            peer.send(T.ECHO, b"%d" % k)
            self.assertEqual((yield self.expect(peer, T.ECHO)), b"%d" % k)

    @defer.inlineCallbacks
    def test_max_per_ip(self):
        """With loopback not exempt, --max-per-ip refuses as the single
        process does, in its words (issue 18: one admission, built from the
        same configuration, in every mode)."""
        yield self.deploy("--limit-exempt", "none", "--max-per-ip", "2")
        held = []
        for server in range(self.deployment.servers):
            for _ in range(2):
                peer = yield self.deployment.connect(server)
                peer.send(T.ECHO, b"in")
                self.assertEqual((yield self.expect(peer, T.ECHO)), b"in")
                held.append(peer)
            refused = yield self.deployment.connect(server)
            text = yield self.expectError(refused, "SERVER_FULL", closes=True)
            self.assertIn(b"max-per-ip 2", text)
        for peer in held:
            self.assertEqual((yield self.sync(peer)), [])

    @defer.inlineCallbacks
    def test_connect_rate(self):
        yield self.deploy(
            *("--limit-exempt", "none", "--max-per-ip", "0"),
            *("--connect-rate", "0.01", "--connect-burst", "3"),
        )
        for server in range(self.deployment.servers):
            for _ in range(3):
                peer = yield self.deployment.connect(server)
                peer.send(T.ECHO, b"in")
                self.assertEqual((yield self.expect(peer, T.ECHO)), b"in")
            refused = yield self.deployment.connect(server)
            text = yield self.expectError(refused, "SERVER_FULL", closes=True)
            self.assertIn(b"connect-rate 0.01/s, connect-burst 3", text)

    @defer.inlineCallbacks
    def test_login_backoff(self):
        """Outside --limit-exempt a wrong password is answered late, and the
        address is then locked: even the right password is refused unchecked
        until the back-off is over (docs/limits.md), in every mode."""
        self.cannot("test_login_backoff")
        path = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        with open(path, "w") as f:
            f.write("s3cret\n")
        yield self.deploy("--limit-exempt", "none", "--password-file", path)
        guesser = yield self.deployment.connect(0)
        right = yield self.deployment.connect(0)
        started = reactor.seconds()
        guesser.send(T.HELLO, b"alice.wrong")
        yield self.lockedAddresses(1)  # the guess was checked
        right.send(T.HELLO, b"alice.s3cret")
        yield self.expectError(right, "AUTH_FAILED", closes=True)
        yield self.expectError(guesser, "AUTH_FAILED", closes=True)
        self.assertGreaterEqual(reactor.seconds() - started, 0.45)
        # The back-off is over once the late answer is out.
        yield self.named(b"alice.s3cret", 0)

    @defer.inlineCallbacks
    def test_login_backoff_everywhere(self):
        """An address locked by a wrong password is locked in every process
        that serves it: with --workers the guess and the right password
        land on the two workers, with --redis on the two nodes
        (docs/limits.md)."""
        self.cannot("test_login_backoff_everywhere")
        path = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        with open(path, "w") as f:
            f.write("s3cret\n")
        # A lock of 3 s, not 0.5: polling /status on a loaded machine must
        # not outlast it before the right password is sent.
        yield self.deploy(
            "--limit-exempt", "none", "--password-file", path, "--auth-backoff", "3"
        )
        guesser = yield self.deployment.connect()
        right = yield self.deployment.connect()  # the next worker or node
        yield self.sync(right)
        guesser.send(T.HELLO, b"alice.wrong")
        yield self.lockedAddresses(1)
        right.send(T.HELLO, b"alice.s3cret")
        text = yield self.expectError(right, "AUTH_FAILED", closes=True)
        self.assertIn(b"password not checked", text)  # type: ignore[attr-defined]
        yield self.expectError(guesser, "AUTH_FAILED", closes=True)
        yield self.lockedAddresses(0)

    @defer.inlineCallbacks
    def lockedAddresses(self, n: int):  # type: ignore[no-untyped-def]
        """Wait (polling /status, at most 5 s) until every admitting process
        (with --redis, every node: the lock travels through Redis) shows
        ``n`` addresses locked by the login back-off; nothing else tells a
        client when another connection's guess was checked."""
        deadline = reactor.seconds() + 5
        for server in range(self.deployment.servers):
            while True:
                status = yield self.deployment.status(server)
                if status["locked_addresses"] == n:
                    break
                self.assertLess(reactor.seconds(), deadline, status)  # type: ignore[attr-defined]
                yield task.deferLater(reactor, 0.02, lambda: None)

    # -- timeouts ---------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_timeouts(self):
        """HANDSHAKE_TIMEOUT before ACTIVE, IDLE_TIMEOUT after (others see
        LEAVE timeout); PING keeps a user alive."""
        yield self.deploy("--handshake-timeout", "1", "--idle-timeout", "2")
        silent = yield self.deployment.connect()
        named, _ = yield self.named(b"named")
        [(alice, aentry), (bob, bentry)] = yield self.users(b"alice", b"bob")
        yield self.expectError(silent, "HANDSHAKE_TIMEOUT", closes=True)
        yield self.expectError(named, "HANDSHAKE_TIMEOUT", closes=True)
        keep = task.LoopingCall(alice.send, T.PING, b"alive")
        keep.start(0.5)
        try:
            yield self.expectError(bob, "IDLE_TIMEOUT", closes=True)
            while True:  # PONGs, then bob's LEAVE
                ftype, payload = yield alice.next()
                if ftype != T.PONG:
                    break
            self.assertEqual((ftype, payload), (T.LEAVE, bentry + b".timeout"))
        finally:
            keep.stop()

    # -- slow readers ------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_slow_reader_cut_off(self):
        """A user that stops reading is cut off (LEAVE slow) while the
        talker on another server goes on; nobody else is slowed."""
        yield self.deploy("--max-backlog", "64KiB", "--rate-limit", "0")
        [(talker, tentry), (slow, sentry), (reader, rentry)] = yield self.users(
            b"talker", b"slow", b"reader"
        )
        slow.stopReading()
        left = yield sayUntilLeave(talker)  # the reader keeps up meanwhile
        self.assertEqual(left, sentry + b".slow")
        # The reader got every message, then the same LEAVE.
        said = 0
        while True:
            ftype, payload = yield reader.next()
            if ftype == T.LEAVE:
                break
            self.assertEqual((ftype, payload), (T.MESSAGE, tentry + b"." + b"x" * 1000))
            said += 1
        self.assertEqual(payload, sentry + b".slow")
        self.assertGreater(said, 64)

    # -- operations --------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_maintenance(self):
        """Maintenance on every server: NOTICE to users, who chat on; new
        connections refused with MAINTENANCE; RESUMED at the end."""
        yield self.deploy()
        [(alice, aentry), (bob, _)] = yield self.users(b"alice", b"bob")
        codes = yield self.deployment.everyServer(
            "/maintenance", b"state=on&text=back+soon"
        )
        self.assertEqual(set(codes), {200})
        for client in (alice, bob):
            self.assertEqual(
                (yield self.expect(client, T.NOTICE)), b"MAINTENANCE.back soon"
            )
        yield self.marker(alice, aentry, bob, text=b"chatting on")
        for _ in range(self.deployment.servers):
            refused = yield self.deployment.connect()
            yield self.expectError(refused, "MAINTENANCE", closes=True)
        yield self.deployment.everyServer("/maintenance", b"off")
        for client in (alice, bob):
            notice = yield self.expect(client, T.NOTICE)
            self.assertTrue(notice.startswith(b"RESUMED."), notice)
        yield self.users(b"carol")

    @defer.inlineCallbacks
    def test_kick(self):
        """An operator kicks a user on another server: ERROR KICKED, and
        LEAVE kicked for the others (the name compared case-insensitively)."""
        yield self.deploy()
        [(alice, aentry), (bob, bentry)] = yield self.users(b"alice", b"bob")
        self.assertEqual((yield self.deployment.kick(b"BOB")), 200)
        yield self.expectError(bob, "KICKED", closes=True)
        self.assertEqual((yield self.expect(alice, T.LEAVE)), bentry + b".kicked")
        self.assertEqual((yield self.deployment.kick(b"nobody")), 404)

    @defer.inlineCallbacks
    def test_shutdown(self):
        """SIGTERM: every user of that server gets ERROR SHUTDOWN and is
        closed; users of another server see LEAVE shutdown and chat on."""
        yield self.deploy()
        active = yield self.users(b"alice", b"bob", b"carol", b"dave")
        deployment = self.deployment
        stopping = deployment.stopServer(0)
        mine = [
            (c, e) for k, (c, e) in enumerate(active) if deployment.serverOf(k) == 0
        ]
        others = [(c, e) for k, (c, e) in enumerate(active) if deployment.serverOf(k)]
        for client, _ in mine:
            yield self.expectError(client, "SHUTDOWN", closes=True)
        self.assertEqual((yield stopping), 128 + signal.SIGTERM)
        for client, _ in others:
            seen = []
            for _ in mine:
                seen.append((yield self.expect(client, T.LEAVE)))
            self.assertEqual(sorted(seen), sorted(e + b".shutdown" for _, e in mine))
        if others:
            yield self.marker(others[0][0], others[0][1], *[c for c, _ in others[1:]])


class SingleProcessContract(ContractTests, unittest.TestCase):
    mode = "single"


class WorkersContract(ContractTests, unittest.TestCase):
    mode = "workers"


class RedisContract(ContractTests, unittest.TestCase):
    mode = "redis"


class WebSocketContract(ContractTests, unittest.TestCase):
    mode = "websocket"
