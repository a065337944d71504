"""Protocol 1.2's rooms, in every deployment mode (tests/contract.py):
members on different processes see one order per room, errors are the
same everywhere, a user who leaves the server leaves its rooms, and a 1.1
user beside them sees nothing new.  tests/test_rooms_protocol.py checks
the rules in depth in memory."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from chatd.wire import FrameType as T
from chatd.wire import encode
from tests.contractcase import ContractHelpers


class RoomHelpers(ContractHelpers):
    @defer.inlineCallbacks
    def speakers(self, *names: bytes):  # type: ignore[no-untyped-def]
        """ACTIVE users (spread over the processes) that asked for 1.2."""
        done = yield self.users(*names)
        for client, _ in done:
            client.send(T.VERSION, b"1.2")
            self.assertEqual((yield self.expect(client, T.VERSION)), b"1.2")
        return done

    @defer.inlineCallbacks
    def enter(self, room: bytes, client, entry: bytes, *members):  # type: ignore[no-untyped-def]
        """``client`` enters ``room``; it and every member see its ROOM_JOIN."""
        client.send(T.ENTER, room)
        for c in (client, *members):
            self.assertEqual((yield self.expect(c, T.ROOM_JOIN)), room + b"." + entry)


class RoomContractTests(RoomHelpers):
    @defer.inlineCallbacks
    def test_one_order_per_room_across_processes(self):
        yield self.deploy("--rate-limit", "0")
        [(ann, aentry), (bob, bentry), (cat, centry)] = yield self.speakers(
            b"ann", b"bob", b"cat"
        )
        old, _ = (yield self.users(b"old"))[0]
        for c in (ann, bob, cat):
            yield self.expect(c, T.JOIN)  # old's
        yield self.enter(b"dev", ann, aentry)
        yield self.enter(b"dev", bob, bentry, ann)
        for i in range(10):  # both at once, pipelined: one order for both
            ann.send(T.ROOM_SAY, b"dev.a%d" % i)
            bob.send(T.ROOM_SAY, b"dev.b%d" % i)
        seen = []
        for c in (ann, bob):
            frames = []
            for _ in range(20):
                frames.append((yield self.expect(c, T.ROOM_MESSAGE)))
            seen.append(frames)
        self.assertEqual(seen[0], seen[1])
        self.assertEqual(
            sorted(seen[0]),
            sorted([b"dev." + aentry + b".a%d" % i for i in range(10)]
                   + [b"dev." + bentry + b".b%d" % i for i in range(10)]),
        )  # fmt: skip
        # Nothing of the room reached cat (1.2, not a member) or old (1.1).
        yield self.marker(ann, aentry, bob, cat, old)

    @defer.inlineCallbacks
    def test_a_pipelined_run_of_room_says(self):
        """A read of ROOM_SAYs to two rooms, two bad ones among them, then
        a PING: each room's messages in request order to every member,
        each ERROR at its place, the PONG last."""
        yield self.deploy("--rate-limit", "0")
        [(ann, aentry), (bob, bentry)] = yield self.speakers(b"ann", b"bob")
        for room in (b"dev", b"ops"):
            yield self.enter(room, ann, aentry)
            yield self.enter(room, bob, bentry, ann)
        run = [b"dev.m0", b"dev.m1", b"dev.\xff", b"ops.o0", b"dev.m2"]
        run += [b"nosuch.x", b"DEV.m3", b"ops.o1"]
        ann.sendRaw(b"".join(encode(T.ROOM_SAY, p) for p in run))
        got = yield self.sync(ann)
        said = [
            (T.ROOM_MESSAGE, b"%s.%s.%s" % (room, aentry, text))
            for room, text in [(b"dev", b"m0"), (b"dev", b"m1"), (b"ops", b"o0"),
                               (b"dev", b"m2"), (b"dev", b"m3"), (b"ops", b"o1")]
        ]  # fmt: skip
        errors = [p.split(b".")[0] for t, p in got if t == T.ERROR]
        self.assertEqual(errors, [b"BAD_TEXT", b"NO_SUCH_ROOM"])
        messages = [f for f in got if f[0] == T.ROOM_MESSAGE]
        for room in (b"dev.", b"ops."):  # one order per room, request order
            self.assertEqual(
                [f for f in messages if f[1].startswith(room)],
                [f for f in said if f[1].startswith(room)],
            )
        self.assertEqual(len(got), len(said) + 2)
        # Each ERROR after the room's messages asked before it, before the
        # ones asked after it.
        bad, nosuch = [i for i, f in enumerate(got) if f[0] == T.ERROR]
        self.assertLess(max(self._at(got, aentry, b"m0", b"m1")), bad)
        self.assertLess(bad, min(self._at(got, aentry, b"m2", b"m3")))
        self.assertLess(max(self._at(got, aentry, b"m2")), nosuch)
        self.assertLess(nosuch, min(self._at(got, aentry, b"m3")))
        heard = []
        for _ in said:
            heard.append((T.ROOM_MESSAGE, (yield self.expect(bob, T.ROOM_MESSAGE))))
        for room in (b"dev.", b"ops."):
            self.assertEqual(
                [f for f in heard if f[1].startswith(room)],
                [f for f in said if f[1].startswith(room)],
            )
        yield self.marker(bob, bentry, ann)  # nothing more was owed to either

    def _at(self, frames: list, entry: bytes, *texts: bytes) -> list[int]:
        """Where the dev messages ``texts`` of ``entry`` are in ``frames``."""
        return [
            frames.index((T.ROOM_MESSAGE, b"dev.%s.%s" % (entry, t))) for t in texts
        ]

    @defer.inlineCallbacks
    def test_a_run_of_room_says_beyond_the_rate_limit(self):
        """The rate limit counts each ROOM_SAY of a run, as one at a time."""
        # Almost no refill: the ENTER took one token of the burst of 4.
        yield self.deploy("--rate-limit", "0.001", "--rate-burst", "4")
        [(ann, aentry)] = yield self.speakers(b"ann")
        yield self.enter(b"dev", ann, aentry)
        ann.sendRaw(b"".join(encode(T.ROOM_SAY, b"dev.m%d" % k) for k in range(5)))
        for k in range(3):
            self.assertEqual(
                (yield self.expect(ann, T.ROOM_MESSAGE)), b"dev.%s.m%d" % (aentry, k)
            )
        yield self.expectError(ann, "RATE_LIMITED")
        yield self.expectError(ann, "RATE_LIMITED")
        self.assertEqual((yield self.sync(ann)), [])

    @defer.inlineCallbacks
    def test_errors_the_same_everywhere(self):
        yield self.deploy()
        [(ann, aentry), (bob, _)] = yield self.speakers(b"ann", b"bob")
        yield self.enter(b"dev", ann, aentry)
        old, _ = (yield self.users(b"old"))[0]
        yield self.expect(ann, T.JOIN)
        yield self.expect(bob, T.JOIN)
        for ftype, payload, code in [
            (T.ENTER, b"bad name", "BAD_ROOM"),
            (T.ROOM_SAY, b"nosuch.\xff", "BAD_TEXT"),
            (T.ROOM_SAY, b"nosuch.hi", "NO_SUCH_ROOM"),
            (T.ROOM_SAY, b"dev.hi", "NOT_IN_ROOM"),  # ann is, on the other server
            (T.PART, b"dev", "NOT_IN_ROOM"),
            (T.PART, b"lobby", "BAD_STATE"),
            (T.TOPIC, b"lobby.x", "TOPIC_LOCKED"),
        ]:
            bob.send(ftype, payload)
            yield self.expectError(bob, code)
        old.send(T.ENTER, b"dev")  # no VERSION: as 1.1
        yield self.expectError(old, "UNKNOWN_TYPE")
        bob.send(T.LIST)
        self.assertEqual((yield self.expect(bob, T.ROOMS)), b"lobby.3.\ndev.1.")
        self.assertEqual((yield self.expect(bob, T.ROOMS)), b"")
        bob.send(T.ROOM_WHO, b"DEV")
        self.assertEqual((yield self.expect(bob, T.USERS)), aentry)
        self.assertEqual((yield self.expect(bob, T.USERS)), b"")

    @defer.inlineCallbacks
    def test_leaving_the_server_leaves_its_rooms(self):
        yield self.deploy()
        [(ann, aentry), (bob, bentry)] = yield self.speakers(b"ann", b"bob")
        yield self.enter(b"dev", ann, aentry)
        yield self.enter(b"dev", bob, bentry, ann)
        ann.send(T.TOPIC, b"dev.ship it")
        for c in (ann, bob):
            self.assertEqual((yield self.expect(c, T.ROOM_TOPIC)), b"dev.ship it")
        bob.abort()  # no BYE: reason error, in the room too
        self.assertEqual((yield self.expect(ann, T.LEAVE)), bentry + b".error")
        self.assertEqual(
            (yield self.expect(ann, T.ROOM_LEAVE)), b"dev." + bentry + b".error"
        )
        ann.send(T.PART, b"dev")
        self.assertEqual(
            (yield self.expect(ann, T.ROOM_LEAVE)), b"dev." + aentry + b".part"
        )
        ann.send(T.LIST)  # the emptied room is gone, in every process
        self.assertEqual((yield self.expect(ann, T.ROOMS)), b"lobby.1.")

    @defer.inlineCallbacks
    def test_operator_sees_rooms_and_kicks_from_one(self):
        yield self.deploy("--room", "news:daily")
        [(ann, aentry), (bob, bentry)] = yield self.speakers(b"ann", b"bob")
        yield self.enter(b"dev", ann, aentry)
        yield self.enter(b"dev", bob, bentry, ann)
        # bob is on the second server where there are two: any server's
        # admin interface may kick him from the room.
        code, _ = yield self.deployment.admin("/kick", b"name=bob&room=dev")
        self.assertEqual(code, 200)
        for c in (ann, bob):  # the user too: its connection stays open
            self.assertEqual(
                (yield self.expect(c, T.ROOM_LEAVE)), b"dev." + bentry + b".kicked"
            )
        bob.send(T.ROOM_SAY, b"dev.still here?")
        yield self.expectError(bob, "NOT_IN_ROOM")
        code, _ = yield self.deployment.admin("/kick", b"name=bob&room=dev")
        self.assertEqual(code, 404)  # not in it any more
        # The operator locks dev's topic (every process agrees: bob is on
        # another server than this admin interface where there are two).
        code, _ = yield self.deployment.admin("/topic", b"room=dev&text=by ops&lock=1")
        self.assertEqual(code, 200)
        self.assertEqual((yield self.expect(ann, T.ROOM_TOPIC)), b"dev.by ops")
        bob.send(T.ENTER, b"dev")
        yield self.expect(bob, T.ROOM_JOIN)
        self.assertEqual((yield self.expect(bob, T.ROOM_TOPIC)), b"dev.by ops")
        yield self.expect(ann, T.ROOM_JOIN)
        bob.send(T.TOPIC, b"dev.mine")
        yield self.expectError(bob, "TOPIC_LOCKED")
        code, _ = yield self.deployment.admin("/topic", b"room=nosuch&lock=1")
        self.assertEqual(code, 404)
        bob.send(T.PART, b"dev")
        for c in (bob, ann):
            yield self.expect(c, T.ROOM_LEAVE)
        rooms = (yield self.deployment.status())["rooms"]
        self.assertEqual(
            [(r["name"], r["users"], r["topic"], r["topic_locked"]) for r in rooms],
            [
                ("lobby", 2, "", True),
                ("news", 0, "daily", True),
                ("dev", 1, "by ops", True),
            ],  # fmt: skip
        )


class SingleProcessRooms(RoomContractTests, unittest.TestCase):
    mode = "single"


class WorkersRooms(RoomContractTests, unittest.TestCase):
    mode = "workers"


class RedisRooms(RoomContractTests, unittest.TestCase):
    mode = "redis"


class WebSocketRooms(RoomContractTests, unittest.TestCase):
    mode = "websocket"


class LateWorkerRooms(RoomHelpers, unittest.TestCase):
    """A worker started after rooms exist is told them (the seed)."""

    mode = "workers"

    @defer.inlineCallbacks
    def test_a_late_worker_knows_the_rooms(self):
        yield self.deploy("--min-workers", "1", "--max-clients-per-worker", "2")
        [(ann, aentry), (bob, bentry)] = yield self.speakers(b"ann", b"bob")
        yield self.enter(b"dev", ann, aentry)
        ann.send(T.TOPIC, b"dev.ship it")
        self.assertEqual((yield self.expect(ann, T.ROOM_TOPIC)), b"dev.ship it")
        # The first worker is full: cat is served by a second one, started now.
        [(cat, centry)] = yield self.speakers(b"cat")
        self.assertEqual((yield self.expect(ann, T.JOIN)), centry)
        status = yield self.deployment.status()
        self.assertEqual(len(status["workers"]), 2)
        cat.send(T.LIST)
        self.assertEqual((yield self.expect(cat, T.ROOMS)), b"lobby.3.\ndev.1.ship it")
        self.assertEqual((yield self.expect(cat, T.ROOMS)), b"")
        cat.send(T.ROOM_WHO, b"dev")
        self.assertEqual((yield self.expect(cat, T.USERS)), aentry)
        yield self.expect(cat, T.USERS)
        yield self.enter(b"dev", cat, centry, ann)
        self.assertEqual((yield self.expect(cat, T.ROOM_TOPIC)), b"dev.ship it")
        cat.send(T.ROOM_SAY, b"dev.hi from the new worker")
        for c in (cat, ann):
            self.assertEqual(
                (yield self.expect(c, T.ROOM_MESSAGE)),
                b"dev." + centry + b".hi from the new worker",
            )


class LateNodeRooms(RoomHelpers, unittest.TestCase):
    """A Redis node started after rooms exist reads them from Redis (the
    snapshot the submit script keeps), without a user who left."""

    mode = "redis"

    @defer.inlineCallbacks
    def test_a_late_node_knows_the_rooms(self):
        yield self.deploy()
        [(ann, aentry), (bob, bentry), (cat, centry)] = yield self.speakers(
            b"ann", b"bob", b"cat"
        )
        yield self.enter(b"Dev", ann, aentry)
        yield self.enter(b"Dev", bob, bentry, ann)
        yield self.enter(b"Dev", cat, centry, ann, bob)
        ann.send(T.TOPIC, b"dev.ship it")
        for c in (ann, bob, cat):
            self.assertEqual((yield self.expect(c, T.ROOM_TOPIC)), b"Dev.ship it")
        bob.send(T.PART, b"dev")
        self.assertEqual(
            (yield self.expect(ann, T.ROOM_LEAVE)), b"Dev." + bentry + b".part"
        )
        cat.send(T.BYE)  # leaves the server: its room leave follows its LEAVE
        self.assertEqual((yield self.expect(ann, T.LEAVE)), centry + b".quit")
        self.assertEqual(
            (yield self.expect(ann, T.ROOM_LEAVE)), b"Dev." + centry + b".quit"
        )
        yield self.deployment.addNode("node-c")
        [(dan, dentry)] = yield self.speakersOn(2, b"dan")
        dan.send(T.LIST)
        self.assertEqual((yield self.expect(dan, T.ROOMS)), b"lobby.3.\nDev.1.ship it")
        self.assertEqual((yield self.expect(dan, T.ROOMS)), b"")
        dan.send(T.ROOM_WHO, b"dev")
        self.assertEqual((yield self.expect(dan, T.USERS)), aentry)
        yield self.expect(dan, T.USERS)
        dan.send(T.ENTER, b"DEV")
        self.assertEqual((yield self.expect(dan, T.ROOM_JOIN)), b"Dev." + dentry)
        self.assertEqual((yield self.expect(dan, T.ROOM_TOPIC)), b"Dev.ship it")

    @defer.inlineCallbacks
    def speakersOn(self, server: int, name: bytes):  # type: ignore[no-untyped-def]
        client, entry = yield self.named(name, server)
        client.send(T.READY)
        self.assertEqual((yield self.expect(client, T.JOIN)), entry)
        client.send(T.VERSION, b"1.2")
        self.assertEqual((yield self.expect(client, T.VERSION)), b"1.2")
        return [(client, entry)]
