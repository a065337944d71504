"""ChatProtocol against PROTOCOL.md, on in-memory transports and a task.Clock."""

from __future__ import annotations

from chatd.core.roster import PALETTE
from chatd.server import protocol as chatprotocol
from chatd.wire import HEADER, MAX_PAYLOAD, encode
from tests.memory import ChatTestCase, Server, T, parseFrames
from tests.test_wire import BAD_TEXTS, GOOD_TEXTS

#: Types the server sends but never accepts, and numbers outside the table.
SERVER_TYPES = [T.WELCOME, T.MESSAGE, T.JOIN, T.LEAVE, T.ERROR, T.USERS]
SERVER_TYPES += [T.WHISPERED, T.NOTICE, 0, 18, 255, 2**31, 2**32 - 1]


class HandshakeTests(ChatTestCase):
    def test_welcome_format(self) -> None:
        """WELCOME is ``name.id.color``: the name first, as sent."""
        peer = self.server.connect()
        peer.send(T.HELLO, b"Alice")
        [(ftype, payload)] = peer.received()
        self.assertEqual(ftype, T.WELCOME)
        self.assertEqual(payload, b"Alice.1." + str(PALETTE[0]).encode())

    def test_welcome_fields(self) -> None:
        """WELCOME holds the name as sent, the id and colour of its JOIN."""
        peer = self.server.connect()
        peer.send(T.HELLO, b"AlIcE")
        [(ftype, welcome)] = peer.received()
        peer.send(T.READY)
        [(jtype, join)] = peer.received()
        self.assertEqual((ftype, jtype), (T.WELCOME, T.JOIN))
        self.assertEqual(sorted(welcome.split(b".")), sorted(join.split(b".")))
        self.assertIn(b"AlIcE", welcome.split(b"."))

    def test_case_kept_in_what_others_see(self) -> None:
        [bob] = self.server.users(b"bob")
        self.server.active(b"AlIcE")
        [(ftype, join)] = bob.received()
        self.assertEqual(ftype, T.JOIN)
        self.assertEqual(join.split(b".")[2], b"AlIcE")

    def test_ids_and_colours(self) -> None:
        """Ids are decimal, unique, no leading zeros; colours 0-255 from the palette."""
        peers = self.server.users(*[b"u%d" % i for i in range(30)])
        ids = []
        for peer in peers:
            id_, color, _ = peer.entry.split(b".")
            self.assertEqual(id_, str(int(id_)).encode())
            self.assertEqual(color, str(int(color)).encode())
            self.assertTrue(1 <= int(id_) <= 2**32 - 1)
            self.assertIn(int(color), PALETTE)
            ids.append(int(id_))
        self.assertEqual(len(set(ids)), 30)
        self.assertTrue(all(0 <= c <= 255 for c in PALETTE))

    def test_ids_never_reused(self) -> None:
        first = self.server.active(b"a")
        first.send(T.BYE)
        again = self.server.active(b"a")
        self.assertNotEqual(first.entry.split(b".")[0], again.entry.split(b".")[0])

    def test_name_limits(self) -> None:
        for name in [b"a" * 32, b"x", b"_-09AZaz"]:
            self.server.named(name)
        for name in [b"", b"a" * 33, b"a b", b"\xc3\xa9t\xc3\xa9", b"a\x00", b"a!"]:
            peer = self.server.connect()
            peer.send(T.HELLO, name)
            self.assertOnlyError(peer, "BAD_NAME")

    def test_name_taken_case_insensitive(self) -> None:
        self.server.named(b"Alice")
        for name in (b"alice", b"ALICE", b"Alice"):
            peer = self.server.connect()
            peer.send(T.HELLO, name)
            self.assertOnlyError(peer, "NAME_TAKEN")

    def test_retry_after_bad_name_and_name_taken(self) -> None:
        """BAD_NAME and NAME_TAKEN leave the connection in CONNECTED."""
        self.server.named(b"alice")
        peer = self.server.connect()
        peer.send(T.HELLO, b"bad name")
        self.assertOnlyError(peer, "BAD_NAME")
        peer.send(T.READY)
        self.assertOnlyError(peer, "BAD_STATE")
        peer.send(T.HELLO, b"ALICE")
        self.assertOnlyError(peer, "NAME_TAKEN")
        peer.send(T.SAY, b"hi")
        self.assertOnlyError(peer, "NOT_READY")
        peer.send(T.HELLO, b"bob")
        self.assertEqual(peer.types(), [T.WELCOME])

    def test_password_part_ignored_without_password(self) -> None:
        peer = self.server.connect()
        peer.send(T.HELLO, b"alice.any.thing")
        peer.send(T.READY)
        self.assertEqual(peer.types(), [T.WELCOME, T.JOIN])
        peer.send(T.WHO)
        self.assertIn(b".alice", peer.received()[0][1])

    def test_ready_before_welcome_and_twice(self) -> None:
        peer = self.server.connect()
        peer.send(T.READY)
        self.assertOnlyError(peer, "BAD_STATE")
        peer.send(T.HELLO, b"alice")
        peer.send(T.READY)
        self.assertEqual(peer.types(), [T.WELCOME, T.JOIN])
        peer.send(T.READY)
        self.assertOnlyError(peer, "BAD_STATE")

    def test_second_hello_bad_state(self) -> None:
        """HELLO after WELCOME is BAD_STATE, in NAMED and ACTIVE, any payload."""
        named = self.server.named(b"alice")
        active = self.server.active(b"bob")
        for peer in (named, active):
            for payload in (b"carol", b"alice", b"bad name", b"", b"x.pw"):
                peer.send(T.HELLO, payload)
                self.assertOnlyError(peer, "BAD_STATE")

    def test_hello_and_ready_pipelined(self) -> None:
        """HELLO+READY+SAY in one chunk: WELCOME, JOIN, MESSAGE in that order."""
        peer = self.server.connect()
        peer.sendRaw(encode(T.HELLO, b"a") + encode(T.READY) + encode(T.SAY, b"x"))
        self.assertEqual(peer.types(), [T.WELCOME, T.JOIN, T.MESSAGE])


class PasswordTests(ChatTestCase):
    config = {"password": b"s3cr.et"}

    def test_right_password(self) -> None:
        """The password is the rest after the first dot, dots and all."""
        peer = self.server.active(b"alice", b"s3cr.et")
        self.assertTrue(peer.entry.endswith(b".alice"))

    def test_wrong_or_missing_password_fatal(self) -> None:
        for payload in (b"alice", b"alice.", b"alice.s3cr", b"alice.s3cr.etx", b""):
            peer = self.server.connect()
            peer.send(T.HELLO, payload)
            self.assertOnlyError(peer, "AUTH_FAILED", fatal=True)

    def test_password_checked_before_name(self) -> None:
        """A bad or taken name with a wrong password is AUTH_FAILED: names not revealed."""
        self.server.named(b"alice", b"s3cr.et")
        for name in (b"alice", b"bad name", b"a" * 40):
            peer = self.server.connect()
            peer.send(T.HELLO, name + b".wrong")
            self.assertOnlyError(peer, "AUTH_FAILED", fatal=True)

    def test_name_checked_after_password(self) -> None:
        self.server.named(b"alice", b"s3cr.et")
        peer = self.server.connect()
        peer.send(T.HELLO, b"bad name.s3cr.et")
        self.assertOnlyError(peer, "BAD_NAME")
        peer.send(T.HELLO, b"ALICE.s3cr.et")
        self.assertOnlyError(peer, "NAME_TAKEN")

    def test_nothing_after_auth_failed(self) -> None:
        peer = self.server.connect()
        peer.sendRaw(encode(T.HELLO, b"a.x") + encode(T.ECHO, b"1"))
        self.assertOnlyError(peer, "AUTH_FAILED", fatal=True)

    def test_second_hello_bad_state_whatever_password(self) -> None:
        peer = self.server.named(b"alice", b"s3cr.et")
        for payload in (b"bob.wrong", b"bob", b"bob.s3cr.et"):
            peer.send(T.HELLO, payload)
            self.assertOnlyError(peer, "BAD_STATE")


class StateTests(ChatTestCase):
    def peers(self) -> dict[str, object]:
        """One connection in each open state."""
        return {
            "CONNECTED": self.server.connect(),
            "NAMED": self.server.named(b"named"),
            "ACTIVE": self.server.active(b"active"),
        }

    def test_not_ready_whatever_payload(self) -> None:
        """SAY, WHO, WHISPER before ACTIVE: NOT_READY, even with bad payloads."""
        payloads = [b"", b"hi", b"\xff\x00", b"x" * MAX_PAYLOAD, b"active.hi", b"."]
        for peer in (self.server.connect(), self.server.named(b"alice")):
            for ftype in (T.SAY, T.WHO, T.WHISPER):
                for payload in payloads:
                    peer.send(ftype, payload)
                    self.assertOnlyError(peer, "NOT_READY")

    def test_echo_in_every_state(self) -> None:
        payloads = [b"", b"\x00\xff.\n", b"e" * MAX_PAYLOAD]
        for state, peer in self.peers().items():
            for payload in payloads:
                peer.send(T.ECHO, payload)
                self.assertEqual(peer.received(), [(T.ECHO, payload)], state)

    def test_ping_in_every_state(self) -> None:
        for state, peer in self.peers().items():
            for payload in (b"", b"\x01\x02", b"p" * MAX_PAYLOAD):
                peer.send(T.PING, payload)
                self.assertEqual(peer.received(), [(T.PONG, payload)], state)

    def test_unsolicited_pong_ignored(self) -> None:
        for peer in self.peers().values():
            peer.send(T.PONG, b"whatever")
            self.assertEqual(peer.received(), [])
            self.assertFalse(peer.closing)

    def test_unknown_type_stays_open(self) -> None:
        """Server-to-client types and unknown numbers: UNKNOWN_TYPE, open, any state."""
        for peer in self.peers().values():
            for ftype in SERVER_TYPES:
                peer.send(ftype, b"1.2.x")
                self.assertOnlyError(peer, "UNKNOWN_TYPE")
            peer.send(T.ECHO, b"still")
            self.assertEqual(peer.received(), [(T.ECHO, b"still")])

    def test_payloads_ignored_on_ready_who_bye(self) -> None:
        peer = self.server.named(b"alice")
        peer.send(T.READY, b"junk\xff")
        [(ftype, entry)] = peer.received()
        self.assertEqual(ftype, T.JOIN)
        peer.send(T.WHO, b"junk\x00")
        self.assertEqual(peer.received(), [(T.USERS, entry), (T.USERS, b"")])
        other = self.server.active(b"bob")
        peer.send(T.BYE, b"junk")
        self.assertEqual(other.received(), [(T.LEAVE, entry + b".quit")])


class TextTests(ChatTestCase):
    def test_bad_text_non_fatal_not_broadcast(self) -> None:
        alice, bob = self.server.users(b"alice", b"bob")
        for why, text in BAD_TEXTS.items():
            alice.send(T.SAY, text)
            frames = alice.received()
            self.assertEqual(len(frames), 1, why)
            self.assertError(frames[0], "BAD_TEXT")
            self.assertFalse(alice.closing)
        self.assertEqual(bob.received(), [])

    def test_good_text_broadcast(self) -> None:
        alice, bob = self.server.users(b"alice", b"bob")
        for text in GOOD_TEXTS:
            alice.send(T.SAY, text)
            self.assertEqual(bob.received(), [(T.MESSAGE, alice.prefix + text)])
            self.assertEqual(alice.received(), [(T.MESSAGE, alice.prefix + text)])

    def test_too_long_limit_from_own_prefix(self) -> None:
        """Longest text = 1016 - len("id.color.name."); one more is TOO_LONG."""
        for name in (b"a", b"N" * 32):
            peer, other = self.server.users(name, b"o" + name[:30])
            limit = MAX_PAYLOAD - len(peer.prefix)
            peer.send(T.SAY, b"t" * limit)
            self.assertEqual(
                other.received(), [(T.MESSAGE, peer.prefix + b"t" * limit)]
            )
            peer.received()
            for size in (limit + 1, MAX_PAYLOAD):
                peer.send(T.SAY, b"t" * size)
                self.assertOnlyError(peer, "TOO_LONG")
            self.assertEqual(other.received(), [])

    def test_bad_text_before_too_long(self) -> None:
        [peer] = self.server.users(b"alice")
        peer.send(T.SAY, b"\x1b" * MAX_PAYLOAD)
        self.assertOnlyError(peer, "BAD_TEXT")
        peer.send(T.SAY, b"a" * (MAX_PAYLOAD - 2) + b"\xc0\xaf")
        self.assertOnlyError(peer, "BAD_TEXT")


class WhisperTests(ChatTestCase):
    def test_whisper_delivered_to_target_only(self) -> None:
        alice, bob, carol = self.server.users(b"alice", b"Bob", b"carol")
        alice.send(T.WHISPER, b"bOB.psst. a.b")
        self.assertEqual(bob.received(), [(T.WHISPERED, alice.prefix + b"psst. a.b")])
        self.assertEqual(alice.received(), [])
        self.assertEqual(carol.received(), [])

    def test_whisper_to_self(self) -> None:
        [alice] = self.server.users(b"alice")
        alice.send(T.WHISPER, b"ALICE.me")
        self.assertEqual(alice.received(), [(T.WHISPERED, alice.prefix + b"me")])

    def test_no_dot_is_bad_text(self) -> None:
        alice, bob = self.server.users(b"alice", b"bob")
        for payload in (b"bob", b"", b"nobody"):
            alice.send(T.WHISPER, payload)
            self.assertOnlyError(alice, "BAD_TEXT")
        self.assertEqual(bob.received(), [])

    def test_text_checked_before_target(self) -> None:
        alice, _ = self.server.users(b"alice", b"bob")
        limit = MAX_PAYLOAD - len(alice.prefix)
        for target in (b"bob", b"nobody", b""):
            for why, text in BAD_TEXTS.items():
                alice.send(T.WHISPER, target + b"." + text)
                frames = alice.received()
                self.assertEqual(len(frames), 1, why)
                self.assertError(frames[0], "BAD_TEXT")
            alice.send(T.WHISPER, target[:1] + b"." + b"w" * (limit + 1))
            self.assertOnlyError(alice, "TOO_LONG")

    def test_too_long_limit_is_senders(self) -> None:
        alice, bob = self.server.users(b"alice", b"b")
        limit = MAX_PAYLOAD - len(alice.prefix)
        alice.send(T.WHISPER, b"b." + b"w" * limit)
        self.assertEqual(bob.received(), [(T.WHISPERED, alice.prefix + b"w" * limit)])
        alice.send(T.WHISPER, b"b." + b"w" * (limit + 1))
        self.assertOnlyError(alice, "TOO_LONG")

    def test_no_such_user(self) -> None:
        alice, _ = self.server.users(b"alice", b"bob")
        self.server.named(b"carol")
        for target in (b"", b"nobody", b"carol", b"bad name", b"bob\xff"):
            alice.send(T.WHISPER, target + b".hi")
            self.assertOnlyError(alice, "NO_SUCH_USER")

    def test_departed_target(self) -> None:
        alice, bob = self.server.users(b"alice", b"bob")
        bob.send(T.BYE)
        alice.received()
        alice.send(T.WHISPER, b"bob.hi")
        self.assertOnlyError(alice, "NO_SUCH_USER")


class WhoTests(ChatTestCase):
    def entries(self, peer: object) -> list[list[bytes]]:
        """WHO, then the USERS frames' entries, frame by frame, up to the terminator."""
        peer.send(T.WHO)
        frames = peer.received()
        self.assertEqual(frames[-1], (T.USERS, b""))
        pages = []
        for ftype, payload in frames[:-1]:
            self.assertEqual(ftype, T.USERS)
            self.assertTrue(payload, "empty USERS before the end")
            self.assertLessEqual(len(payload), MAX_PAYLOAD)
            self.assertFalse(payload.endswith(b"\n") or payload.startswith(b"\n"))
            pages.append(payload.split(b"\n"))
        return pages

    def test_order_of_becoming_active(self) -> None:
        """Listed in READY order, not HELLO order; NAMED users left out."""
        a = self.server.named(b"a")
        b = self.server.named(b"b")
        self.server.named(b"c")
        b.send(T.READY)
        a.send(T.READY)
        [(_, a_entry)] = a.received()
        [(_, b_entry), _] = b.received()
        self.assertEqual(self.entries(a), [[b_entry, a_entry]])

    def test_departed_users_not_listed(self) -> None:
        a, b, c = self.server.users(b"a", b"b", b"c")
        b.send(T.BYE)
        a.received()
        self.assertEqual(self.entries(a), [[a.entry, c.entry]])

    def test_long_list_split_across_frames(self) -> None:
        """Many long names: several full USERS frames, entries whole, order kept."""
        names = [b"%02d" % i + b"x" * 30 for i in range(100)]
        peers = self.server.users(*names)
        pages = self.entries(peers[0])
        self.assertGreater(len(pages), 3)
        listed = [e for page in pages for e in page]
        self.assertEqual(listed, [p.entry for p in peers])
        for page, following in zip(pages, pages[1:], strict=False):
            # Greedy packing: the next entry would not have fitted.
            self.assertGreater(len(b"\n".join([*page, following[0]])), MAX_PAYLOAD)


class ByeTests(ChatTestCase):
    def test_bye_before_active(self) -> None:
        """BYE in CONNECTED or NAMED: closed, no LEAVE, name released."""
        [watcher] = self.server.users(b"watcher")
        for peer in (self.server.connect(), self.server.named(b"alice")):
            peer.send(T.BYE)
            self.assertEqual(peer.received(), [])
            self.assertTrue(peer.closing)
        self.assertEqual(watcher.received(), [])
        self.server.named(b"alice")

    def test_bye_active(self) -> None:
        """LEAVE quit for the others, none for the leaver; name free at once."""
        alice, bob = self.server.users(b"alice", b"bob")
        alice.send(T.BYE)
        self.assertTrue(alice.closing)
        self.assertEqual(alice.received(), [])
        self.assertEqual(bob.received(), [(T.LEAVE, alice.prefix + b"quit")])
        self.server.active(b"ALICE")  # before connectionLost
        alice.lose()
        self.assertEqual(bob.types(), [T.JOIN])

    def test_queued_replies_sent_frames_after_ignored(self) -> None:
        alice, bob = self.server.users(b"alice", b"bob")
        alice.sendRaw(
            encode(T.SAY, b"last")
            + encode(T.ECHO, b"e")
            + encode(T.BYE)
            + encode(T.SAY, b"ghost")
            + encode(T.ECHO, b"no")
        )
        alice.send(T.SAY, b"later")
        alice.sendRaw(HEADER.pack(T.SAY, 5000))
        message = (T.MESSAGE, alice.prefix + b"last")
        self.assertEqual(alice.received(), [message, (T.ECHO, b"e")])
        self.assertEqual(bob.received(), [message, (T.LEAVE, alice.prefix + b"quit")])

    def test_disconnect_without_bye(self) -> None:
        alice, bob = self.server.users(b"alice", b"bob")
        alice.lose()
        self.assertEqual(bob.received(), [(T.LEAVE, alice.prefix + b"error")])
        self.assertNotIn(alice.proto, self.server.factory.connections)
        self.server.named(b"alice")

    def test_disconnect_before_active(self) -> None:
        [bob] = self.server.users(b"bob")
        named = self.server.named(b"alice")
        named.lose()
        self.assertEqual(bob.received(), [])
        self.server.named(b"alice")


class TimeoutTests(ChatTestCase):
    def test_handshake_timeout(self) -> None:
        """10 s by default, not reset by activity; fatal; no LEAVE."""
        [watcher] = self.server.users(b"w")
        self.server.clock.advance(5)
        connected, named = self.server.connect(), self.server.named(b"alice")
        for t in range(9):
            self.server.clock.advance(1)
            connected.send(T.ECHO, b"%d" % t)
            named.send(T.PING)
        connected.sendRaw(b"\0")
        connected.received(), named.received()
        self.server.clock.advance(0.5)
        self.assertFalse(connected.closing or named.closing)
        self.server.clock.advance(0.5)
        self.assertOnlyError(connected, "HANDSHAKE_TIMEOUT", fatal=True)
        self.assertOnlyError(named, "HANDSHAKE_TIMEOUT", fatal=True)
        self.assertEqual(watcher.received(), [])
        self.server.named(b"alice")

    def test_no_handshake_timeout_once_active(self) -> None:
        peer = self.server.connect()
        self.server.clock.advance(9)
        peer.send(T.HELLO, b"a")
        peer.send(T.READY)
        peer.received()
        self.server.clock.advance(29.9)
        self.assertEqual(peer.received(), [])
        self.assertFalse(peer.closing)

    def test_idle_timeout(self) -> None:
        """30 s after READY with nothing received: IDLE_TIMEOUT, LEAVE timeout."""
        self.server.clock.advance(3)
        alice, bob = self.server.users(b"alice", b"bob")
        self.server.clock.advance(29.5)
        self.assertFalse(alice.closing)
        bob.send(T.PING)
        self.server.clock.advance(0.5)
        self.assertOnlyError(alice, "IDLE_TIMEOUT", fatal=True)
        self.assertEqual(
            bob.received(), [(T.PONG, b""), (T.LEAVE, alice.prefix + b"timeout")]
        )

    def test_idle_reset_by_any_bytes(self) -> None:
        """A partial frame, an unsolicited PONG, or a bad frame count as activity."""
        [peer] = self.server.users(b"alice")
        pong = encode(T.PONG)
        for data in (pong[:3], pong[3:], HEADER.pack(99, 0)):
            self.server.clock.advance(29)
            peer.sendRaw(data)
        self.server.clock.advance(29.9)
        self.assertFalse(peer.closing)
        self.server.clock.advance(0.1)
        frames = peer.received()
        self.assertError(frames[-1], "IDLE_TIMEOUT")
        self.assertTrue(peer.closing)

    def test_configured_timeouts(self) -> None:
        server = Server(handshake_timeout=2.0, idle_timeout=5.0)
        slow = server.connect()
        server.clock.advance(2)
        self.assertTrue(slow.closing)
        peer = server.active(b"a")
        server.clock.advance(4.9)
        self.assertFalse(peer.closing)
        server.clock.advance(0.1)
        self.assertTrue(peer.closing)

    def test_zero_disables(self) -> None:
        server = Server(handshake_timeout=0, idle_timeout=0)
        peers = [server.connect(), server.active(b"a")]
        server.clock.advance(10**6)
        self.assertFalse(any(p.closing for p in peers))

    def test_close_timeout_aborts(self) -> None:
        """A closing peer that does not read is aborted after CLOSE_TIMEOUT."""
        [peer] = self.server.users(b"a")
        peer.send(T.BYE)
        self.server.clock.advance(chatprotocol.CLOSE_TIMEOUT - 0.1)
        self.assertFalse(peer.transport.disconnected)
        self.server.clock.advance(0.1)
        self.assertTrue(peer.transport.disconnected)

    def test_no_timer_left_after_close(self) -> None:
        """Once lost, a connection leaves no delayed call behind."""
        peer = self.server.active(b"a")
        peer.send(T.BYE)
        peer.lose()
        self.server.clock.advance(0)
        self.assertEqual(self.server.clock.getDelayedCalls(), [])


class LimitTests(ChatTestCase):
    config = {"max_clients": 3}

    def test_server_full(self) -> None:
        """The connection over the limit gets SERVER_FULL at once and is closed."""
        peers = [
            self.server.connect(),
            self.server.named(b"a"),
            self.server.active(b"b"),
        ]
        extra = self.server.connect()
        self.assertOnlyError(extra, "SERVER_FULL", fatal=True)
        extra.lose()
        peers[0].send(T.BYE)
        peers[0].lose()
        self.assertEqual(self.server.connect().received(), [])

    def test_lingering_released_up_to_max_clients(self) -> None:
        """A closed connection that lingers frees its slot, but at most
        max_clients linger at once; the next must close at once."""
        server = Server(max_clients=1, max_per_ip=1)
        factory = server.factory
        first = server.connect()
        self.assertTrue(server.connect().closing)  # full
        self.assertTrue(factory.release(first.proto))
        self.assertTrue(factory.release(first.proto))  # idempotent
        self.assertNotIn("127.0.0.1", factory.perAddress.counts)
        second = server.connect()
        self.assertFalse(second.closing)  # first's slot was free
        self.assertFalse(factory.release(second.proto))  # one lingers already
        self.assertEqual(factory.perAddress.counts["127.0.0.1"], 1)
        first.lose()
        self.assertEqual(list(factory.connections), [second.proto])
        self.assertEqual(factory.perAddress.counts["127.0.0.1"], 1)
        self.assertTrue(factory.release(second.proto))

    def test_max_per_ip(self) -> None:
        """chatd's --max-per-ip: SERVER_FULL for one host's extra connection."""
        server = Server(max_per_ip=2)
        first = [server.connect("10.0.0.1"), server.connect("10.0.0.1")]
        extra = server.connect("10.0.0.1")
        self.assertOnlyError(extra, "SERVER_FULL", fatal=True)
        self.assertEqual(server.connect("10.0.0.2").received(), [])
        first[0].lose()
        self.assertEqual(server.connect("10.0.0.1").received(), [])

    def test_frame_too_large(self) -> None:
        """Decided from the header: ERROR, closed, LEAVE error, nothing after."""
        alice, bob = self.server.users(b"alice", b"bob")
        alice.sendRaw(encode(T.ECHO, b"1") + HEADER.pack(T.SAY, 1017))
        alice.sendRaw(encode(T.ECHO, b"2"))
        frames = alice.received()
        self.assertEqual(frames[0], (T.ECHO, b"1"))
        self.assertEqual(len(frames), 2)
        self.assertError(frames[1], "FRAME_TOO_LARGE")
        self.assertTrue(alice.closing)
        self.assertEqual(bob.received(), [(T.LEAVE, alice.prefix + b"error")])

    def test_frame_too_large_before_handshake(self) -> None:
        for size in (1017, 2**32 - 1):
            peer = self.server.connect()
            peer.sendRaw(HEADER.pack(T.HELLO, size)[:5])
            self.assertEqual(peer.received(), [])
            peer.sendRaw(HEADER.pack(T.HELLO, size)[5:])
            self.assertOnlyError(peer, "FRAME_TOO_LARGE", fatal=True)

    def test_max_payload_accepted(self) -> None:
        peer = self.server.connect()
        peer.send(T.ECHO, b"m" * MAX_PAYLOAD)
        self.assertEqual(peer.received(), [(T.ECHO, b"m" * MAX_PAYLOAD)])


class OrderTests(ChatTestCase):
    def test_say_then_echo(self) -> None:
        [peer] = self.server.users(b"alice")
        peer.sendRaw(encode(T.SAY, b"hi") + encode(T.ECHO, b"e"))
        self.assertEqual(peer.types(), [T.MESSAGE, T.ECHO])

    def test_echo_then_say(self) -> None:
        [peer] = self.server.users(b"alice")
        peer.sendRaw(encode(T.ECHO, b"e") + encode(T.SAY, b"hi"))
        self.assertEqual(peer.types(), [T.ECHO, T.MESSAGE])

    def test_mixed_requests_keep_order(self) -> None:
        alice, _ = self.server.users(b"alice", b"bob")
        chunk = b""
        expected = []
        for i in range(20):
            kind = i % 5
            if kind == 0:
                chunk += encode(T.SAY, b"s%d" % i)
                expected.append((T.MESSAGE, alice.prefix + b"s%d" % i))
            elif kind == 1:
                chunk += encode(T.PING, b"%d" % i)
                expected.append((T.PONG, b"%d" % i))
            elif kind == 2:
                chunk += encode(T.SAY, b"\x00")
                expected.append("BAD_TEXT")
            elif kind == 3:
                chunk += encode(T.WHISPER, b"alice.w%d" % i)
                expected.append((T.WHISPERED, alice.prefix + b"w%d" % i))
            else:
                chunk += encode(T.WHISPER, b"nobody.x")
                expected.append("NO_SUCH_USER")
        for cut in (0, 1, len(chunk) // 2):
            alice.sendRaw(chunk[:cut])
            alice.sendRaw(chunk[cut:])
            frames = alice.received()
            self.assertEqual(len(frames), len(expected))
            for frame, want in zip(frames, expected, strict=True):
                if isinstance(want, str):
                    self.assertError(frame, want)
                else:
                    self.assertEqual(frame, want)

    def test_total_order_across_clients(self) -> None:
        """Interleaved SAYs: every ACTIVE user sees the same MESSAGE sequence."""
        peers = self.server.users(b"a", b"b", b"c")
        for i in range(30):
            peers[i % 3].send(T.SAY, b"%d" % i)
            if i % 7 == 0:
                self.server.clock.advance(0)
        seen = [p.received() for p in peers]
        self.assertEqual(seen[0], seen[1])
        self.assertEqual(seen[1], seen[2])
        self.assertEqual(
            [f[1].rsplit(b".", 1)[1] for f in seen[0]], [b"%d" % i for i in range(30)]
        )

    def test_join_first_nothing_before(self) -> None:
        """A newcomer gets its own JOIN first and nothing sequenced before it."""
        alice, bob = self.server.users(b"alice", b"bob")
        carol = self.server.named(b"carol")
        alice.send(T.SAY, b"before")
        carol.send(T.READY)
        bob.send(T.SAY, b"after")
        frames = carol.received()
        self.assertEqual([t for t, _ in frames], [T.JOIN, T.MESSAGE])
        self.assertEqual(frames[1][1], bob.prefix + b"after")
        self.assertEqual(
            [t for t, _ in alice.received()], [T.MESSAGE, T.JOIN, T.MESSAGE]
        )


class FairnessTests(ChatTestCase):
    def test_64_frames_per_turn(self) -> None:
        """200 pipelined ECHOs: 64 answered per reactor turn, reading paused between."""
        [peer] = self.server.users(b"a")
        start = len(peer.transport.value())
        peer.sendRaw(b"".join(encode(T.ECHO, b"%d" % i) for i in range(200)))
        counts = []
        for _ in range(4):
            frames, _ = parseFrames(peer.transport.value()[start:])
            counts.append(len(frames))
            self.server.clock.turn()
        self.assertEqual(counts, [64, 128, 192, 200])
        self.assertEqual(frames, [(T.ECHO, b"%d" % i) for i in range(200)])
        self.assertEqual(peer.transport.producerState, "producing")

    def test_close_while_paused_resumes_reading(self) -> None:
        """A connection closed while paused for fairness reads again: a close
        must see the client's end (TLS waits for its close_notify)."""
        [peer] = self.server.users(b"a")
        peer.sendRaw(b"".join(encode(T.ECHO, b"%d" % i) for i in range(200)))
        self.assertEqual(peer.transport.producerState, "paused")
        self.assertTrue(self.server.factory.kick("a"))
        self.assertTrue(peer.closing)
        self.assertEqual(peer.transport.producerState, "producing")

    def test_other_clients_served_between_turns(self) -> None:
        a, b = self.server.users(b"a", b"b")
        a.sendRaw(encode(T.SAY, b"x") * 100)
        b.send(T.SAY, b"y")
        self.server.clock.advance(0)
        said = [f[1][-1:] for f in a.received()]
        self.assertEqual(said[:64], [b"x"] * 64)
        self.assertEqual(said[64], b"y")
        self.assertEqual(len(said), 101)


class SlowConsumerTests(ChatTestCase):
    # A paused transport holds 64 KiB and the write that crossed it, as the
    # protocol counts it: the limit leaves room for 8 KiB more.
    config = {"max_backlog": 72 * 1024}

    def test_paused_reader_cut_off(self) -> None:
        """Past max_backlog held for a paused reader: SLOW_CONSUMER, LEAVE slow."""
        slow, talker, other = self.server.users(b"slow", b"talker", b"other")
        slow.proto.pauseProducing()
        for _ in range(20):
            talker.send(T.SAY, b"z" * 500)
            self.server.clock.advance(0)
        self.assertOnlyError(slow, "SLOW_CONSUMER", fatal=True)
        frames = other.received()
        self.assertEqual([t for t, _ in frames].count(T.MESSAGE), 20)
        self.assertIn((T.LEAVE, slow.prefix + b"slow"), frames)
        self.assertEqual(self.server.factory.fanout.heldBytes, 0)
        self.server.active(b"slow")

    def test_unsent_replies_past_backlog(self) -> None:
        """chatd's choice: replies a paused reader leaves unsent count too."""
        [slow] = self.server.users(b"slow")
        slow.proto.pauseProducing()
        for _ in range(7):
            slow.send(T.ECHO, b"e" * MAX_PAYLOAD)
        self.assertFalse(slow.closing)
        for _ in range(2):
            slow.send(T.ECHO, b"e" * MAX_PAYLOAD)
        self.assertTrue(slow.closing)
        self.assertError(slow.received()[-1], "SLOW_CONSUMER")

    def test_resume_in_time_gets_everything(self) -> None:
        slow, talker = self.server.users(b"slow", b"talker")
        slow.proto.pauseProducing()
        for i in range(5):
            talker.send(T.SAY, b"%d" % i)
            self.server.clock.advance(0)
        self.assertEqual(slow.received(), [])
        slow.proto.resumeProducing()
        said = [p for _, p in slow.received()]
        self.assertEqual(said, [talker.prefix + b"%d" % i for i in range(5)])


class RateLimitTests(ChatTestCase):
    config = {"rate_limit": 1.0, "rate_burst": 3}

    def test_say_and_whisper_beyond_rate(self) -> None:
        """Past the burst: RATE_LIMITED, not delivered, connection open."""
        alice, bob = self.server.users(b"alice", b"bob")
        alice.send(T.SAY, b"1")
        alice.send(T.WHISPER, b"bob.2")
        alice.send(T.SAY, b"3")
        self.assertEqual(len(bob.received()), 3)
        alice.received()
        for ftype, payload in ((T.SAY, b"4"), (T.WHISPER, b"bob.5")):
            alice.send(ftype, payload)
            self.assertOnlyError(alice, "RATE_LIMITED")
        self.assertEqual(bob.received(), [])
        self.server.clock.advance(1)
        alice.send(T.SAY, b"6")
        self.assertEqual(bob.received(), [(T.MESSAGE, alice.prefix + b"6")])

    def test_rate_off_by_default(self) -> None:
        server = Server()
        alice = server.active(b"alice")
        for i in range(500):
            alice.send(T.SAY, b"%d" % i)
        self.assertEqual(alice.types(), [T.MESSAGE] * 500)
