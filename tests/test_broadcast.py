"""chatd.core.fanout and chatd.core.sequencer: LocalSequencer + FanOut with
fake recipients and a clock."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from chatd.core.events import Event, Join, Kick, Whisper
from chatd.core.fanout import FanOut, IRecipient
from chatd.core.roster import User
from chatd.core.sequencer import (
    IEventSink,
    ISequencer,
    ISynchronousSequencer,
    LocalSequencer,
)
from chatd.wire.eventframes import frameOf
from tests.memory import TurnClock

_ids = itertools.count(1)


@implementer(IRecipient)
class Recipient:
    """Records writes; ``backlog`` is what its pretend transport still holds."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.user = User(next(_ids), 33, name.encode())
        self.writes: list[bytes] = []
        self.held = 0
        self.cut = 0
        self.events: list[Event] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def backlog(self) -> int:
        return self.held

    def targeted(self, event: Event) -> None:
        self.events.append(event)

    def slowConsumer(self) -> None:
        self.cut += 1

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)

    def __repr__(self) -> str:
        return f"<Recipient {self.name}>"


class FanOutTestCase(SynchronousTestCase):
    maxBacklog = 1000

    def setUp(self) -> None:
        self.clock = TurnClock()
        self.fanout = FanOut(self.clock.callLater, self.maxBacklog, frameOf)
        self.sequencer = LocalSequencer()
        self.sequencer.subscribe(self.fanout)

    def join(self, name: str) -> Recipient:
        r = Recipient(name)
        self.sequence(b"J" + name.encode(), joining=r)
        return r

    def sequence(self, frame: bytes, joining: Recipient | None = None) -> None:
        """Sequence ``frame`` (as ``joining``'s JOIN if given)."""
        if joining is None:
            self.sequencer.submit(Event(frame))
            return
        self.fanout.expect(joining)
        join = Join(joining.user)
        join.frame = frame
        self.sequencer.submit(join)

    def say(self, *frames: bytes) -> None:
        for frame in frames:
            self.sequence(frame)


class DeliveryTests(FanOutTestCase):
    def test_interfaces(self) -> None:
        verifyObject(IEventSink, self.fanout)
        verifyObject(ISequencer, self.sequencer)
        verifyObject(IRecipient, Recipient("x"))

    def test_total_order_no_loss_no_duplicate(self) -> None:
        """Recipients joining at different times see suffixes of one order."""
        log: list[bytes] = []
        recipients = []
        for i in range(5):
            r = self.join(f"r{i}")
            recipients.append((r, len(log)))
            log.append(b"Jr%d" % i)
            for j in range(i * 3):
                frame = b"<%d.%d>" % (i, j)
                self.say(frame)
                log.append(frame)
            if i % 2:
                self.clock.advance(0)
        self.clock.advance(0)
        for r, start in recipients:
            self.assertEqual(r.data, b"".join(log[start:]), r)

    def test_write_bound_when_live_until_rebind(self) -> None:
        """The fan-out calls the write a recipient had when it went live;
        after :meth:`FanOut.rebind` it calls the one it has now."""
        r = self.join("w")
        self.clock.advance(0)
        other: list[bytes] = []
        r.write = other.append  # type: ignore[method-assign]
        self.say(b"<1>")
        self.clock.advance(0)
        self.assertEqual((r.writes[-1], other), (b"<1>", []))
        self.fanout.rebind(r)
        self.say(b"<2>")
        self.clock.advance(0)
        self.assertEqual((r.writes[-1], other), (b"<1>", [b"<2>"]))
        self.fanout.remove(r)
        self.fanout.rebind(r)  # not live: nothing to bind
        self.assertNotIn(r, self.fanout)

    def test_one_write_per_turn(self) -> None:
        """However many events in a turn: nothing until the turn ends, then one write."""
        a, b = self.join("a"), self.join("b")
        self.clock.advance(0)
        a.writes.clear(), b.writes.clear()
        self.say(*[b"m%d" % i for i in range(100)])
        self.assertEqual((a.writes, b.writes), ([], []))
        self.clock.advance(0)
        expected = [b"".join(b"m%d" % i for i in range(100))]
        self.assertEqual((a.writes, b.writes), (expected, expected))
        self.clock.advance(0)
        self.assertEqual(len(a.writes), 1)

    def test_the_last_to_speak_is_written_first(self) -> None:
        """Who spoke last gets the turn's blob before the others (its own
        copy acknowledges what it sent), the others as before; everyone
        gets the same bytes."""
        order: list[str] = []
        people = [self.join(n) for n in ("a", "b", "c")]
        for r in people:
            r.write = lambda data, r=r: order.append(r.name)  # type: ignore[method-assign]
            self.fanout.rebind(r)
        a, b, c = people
        self.clock.advance(0)
        order.clear()
        self.fanout.spoke(a)
        self.say(b"m")
        self.clock.advance(0)
        self.assertEqual(order, ["a", "c", "b"])
        order.clear()
        self.fanout.spoke(b)
        self.fanout.spoke(b)  # already first: nothing moves
        self.say(b"n")
        self.clock.advance(0)
        self.assertEqual(order, ["b", "a", "c"])
        order.clear()
        self.fanout.spoke(Recipient("stranger"))  # not live here: no effect
        self.say(b"o")
        self.clock.advance(0)
        self.assertEqual(order, ["b", "a", "c"])

    def test_joiner_gets_nothing_before_its_join(self) -> None:
        a = self.join("a")
        self.say(b"early")
        b = self.join("b")
        self.say(b"late")
        self.clock.advance(0)
        self.assertEqual(a.data, b"Ja" + b"early" + b"Jb" + b"late")
        self.assertEqual(b.data, b"Jb" + b"late")

    def test_send_keeps_order_with_broadcast(self) -> None:
        """A reply sent after sequenced frames goes out after them."""
        a = self.join("a")
        self.say(b"m")
        self.fanout.send(a, b"<reply>")
        self.say(b"n")
        self.clock.advance(0)
        # Its share of the turn so far goes with the reply, in one write.
        self.assertEqual(a.writes, [b"Jam<reply>", b"n"])

    def test_remove_drain(self) -> None:
        a, b = self.join("a"), self.join("b")
        self.say(b"last")
        self.fanout.remove(a, drain=True)
        self.say(b"after")
        self.clock.advance(0)
        self.assertEqual(a.data, b"JaJblast")
        self.assertEqual(b.data, b"Jblastafter")
        self.assertNotIn(a, self.fanout)
        self.assertEqual(len(self.fanout), 1)


class SlowConsumerTests(FanOutTestCase):
    def test_resume_delivers_exactly_the_missed_frames(self) -> None:
        a, b = self.join("a"), self.join("b")
        self.clock.advance(0)
        self.fanout.pause(a)
        before = a.data
        for i in range(5):
            self.say(b"<%d>" % i)
            self.clock.advance(0)
        self.assertEqual(a.data, before)
        self.assertGreater(self.fanout.heldBytes, 0)
        self.fanout.resume(a)
        self.say(b"<5>")
        self.clock.advance(0)
        missed = b"".join(b"<%d>" % i for i in range(6))
        self.assertEqual(a.data, before + missed)
        self.assertEqual(b.data, b"Jb" + missed)
        self.assertEqual(self.fanout.heldBytes, 0)

    def test_send_to_paused_catches_up_first(self) -> None:
        a = self.join("a")
        self.clock.advance(0)
        self.fanout.pause(a)
        self.say(b"x")
        self.clock.advance(0)
        self.fanout.send(a, b"<reply>")
        self.say(b"y")
        self.clock.advance(0)
        self.fanout.resume(a)
        self.assertEqual(a.data, b"Ja" + b"x<reply>" + b"y")
        self.assertEqual(self.fanout.heldBytes, 0)

    def test_cut_off_past_max_backlog(self) -> None:
        """A paused recipient past maxBacklog is cut once; others unaffected."""
        slow, fast = self.join("slow"), self.join("fast")
        self.clock.advance(0)
        self.fanout.pause(slow)
        for i in range(10):
            self.say(b"%03d" % i + b"." * 97)  # 100 bytes a turn
            self.clock.advance(0)
            self.assertEqual(slow.cut, 1 if i >= 10 else 0, i)
        self.say(b"!")
        self.clock.advance(0)
        self.assertEqual(slow.cut, 1)
        self.assertNotIn(slow, self.fanout)
        self.assertEqual(len(fast.data), len(b"Jfast") + 1000 + 1)
        self.assertEqual(self.fanout.heldBytes, 0)

    def test_transport_backlog_counts(self) -> None:
        slow = self.join("slow")
        self.clock.advance(0)
        self.fanout.pause(slow)
        slow.held = 950
        self.say(b"x" * 50)
        self.clock.advance(0)
        self.assertEqual(slow.cut, 0)
        self.say(b"x")
        self.clock.advance(0)
        self.assertEqual(slow.cut, 1)

    def test_memory_released(self) -> None:
        """heldBytes returns to 0 once every paused recipient resumes or leaves."""
        a, b, c = self.join("a"), self.join("b"), self.join("c")
        self.clock.advance(0)
        self.fanout.pause(a)
        self.say(b"1" * 100)
        self.clock.advance(0)
        self.fanout.pause(b)
        self.say(b"2" * 100)
        self.clock.advance(0)
        self.assertEqual(self.fanout.heldBytes, 200)
        self.fanout.resume(a)
        self.assertEqual(self.fanout.heldBytes, 100)
        self.fanout.remove(b)
        self.assertEqual(self.fanout.heldBytes, 0)
        self.assertEqual(c.data[-200:], b"1" * 100 + b"2" * 100)

    def test_remove_all(self) -> None:
        a, b = self.join("a"), self.join("b")
        self.clock.advance(0)
        self.fanout.pause(a)
        self.say(b"q")
        self.fanout.removeAll()
        self.assertEqual((a.data[-1:], b.data[-1:]), (b"q", b"q"))
        self.assertEqual((len(self.fanout), self.fanout.heldBytes), (0, 0))


#: Random operations: (op, recipient index).
OPS = st.lists(
    st.tuples(
        st.sampled_from(["say", "pause", "resume", "turn", "send"]), st.integers(0, 3)
    ),
    max_size=80,
)


#: Operations with recipients joining and leaving mid-turn as well.
CHURN_OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["say", "pause", "resume", "turn", "send", "join", "leave", "bye"]
        ),
        st.integers(0, 5),
    ),
    max_size=80,
)


class PropertyTests(FanOutTestCase):
    maxBacklog = 10**9

    def apply(
        self,
        op: str,
        n: int,
        r: Recipient,
        own: list[bytes],
        everyone: list[list[bytes]],
    ) -> None:
        """Do ``op`` (number ``n``) for ``r``, and note what each should get."""
        if op == "say":
            self.say(b"<%d>" % n)
            for stream in everyone:
                stream.append(b"<%d>" % n)
        elif op == "pause":
            self.fanout.pause(r)
        elif op == "resume":
            self.fanout.resume(r)
        elif op == "turn":
            self.clock.advance(0)
        elif op == "send":
            self.fanout.send(r, b"(%d)" % n)
            own.append(b"(%d)" % n)
        else:
            raise ValueError(op)

    @settings(max_examples=200, deadline=None)
    @given(OPS)
    def test_every_recipient_gets_the_whole_order(self, ops: list) -> None:
        """Whatever pauses, resumes and replies: each gets the log exactly, in order."""
        self.setUp()
        recipients = [self.join(str(i)) for i in range(4)]
        # What each should get: the order from its JOIN on, replies in place.
        expected = [[b"J%d" % j for j in range(i, 4)] for i in range(4)]
        for n, (op, i) in enumerate(ops):
            self.apply(op, n, recipients[i], expected[i], expected)
        for r in recipients:
            self.fanout.resume(r)
        self.clock.advance(0)
        for r, stream in zip(recipients, expected, strict=True):
            self.assertEqual(r.data, b"".join(stream))
        self.assertEqual(self.fanout.heldBytes, 0)

    @settings(max_examples=300, deadline=None)
    @given(CHURN_OPS)
    def test_joins_and_leaves_mid_turn(self, ops: list) -> None:
        """Joining, leaving (abruptly or draining), pausing and replying in any
        order, mid-turn or not: a member gets exactly the order from its JOIN
        until it leaves, replies in place; a drained leaver gets all before
        its leave; memory is released."""
        self.setUp()
        members: list[tuple[Recipient, list[bytes]]] = []
        gone: list[tuple[Recipient, list[bytes], bool]] = []
        for n, (op, i) in enumerate(ops):
            if op == "join" or not members:
                r = Recipient(str(n))
                stream: list[bytes] = []
                members.append((r, stream))
                self.sequence(b"J%d" % n, joining=r)
                for _, s in members:
                    s.append(b"J%d" % n)
                continue
            r, stream = members[i % len(members)]
            if op in ("leave", "bye"):  # abruptly (a prefix arrives) or drained
                members.remove((r, stream))
                self.fanout.remove(r, drain=op == "bye")
                gone.append((r, stream, op == "bye"))
            else:
                self.apply(op, n, r, stream, [s for _, s in members])
        for r, _ in members:
            self.fanout.resume(r)
        self.clock.advance(0)
        for r, stream in members:
            self.assertEqual(r.data, b"".join(stream))
        for r, stream, drained in gone:
            if drained:
                self.assertEqual(r.data, b"".join(stream))
            else:  # cut off: what it got is a prefix of its order
                self.assertTrue(b"".join(stream).startswith(r.data))
        self.assertEqual(self.fanout.heldBytes, 0)


class SequencerTests(SynchronousTestCase):
    def test_synchronous_path(self) -> None:
        """One process's sequencer answers at once, without a Deferred: the
        event is delivered before ``sequence`` returns its number, and the
        numbers continue those ``submit`` gives."""
        sequencer = LocalSequencer()
        verifyObject(ISynchronousSequencer, sequencer)
        seen: list[int] = []

        @implementer(IEventSink)
        class Sink:
            def deliver(self, event: Event) -> None:
                seen.append(event.seq)

        sequencer.subscribe(Sink())
        self.assertEqual(sequencer.sequence(Event(b"a")), 1)
        self.assertEqual(seen, [1])
        self.assertEqual(self.successResultOf(sequencer.submit(Event(b"b"))), 2)
        self.assertEqual(sequencer.sequence(Event(b"c")), 3)
        self.assertEqual(seen, [1, 2, 3])

    def test_every_subscriber_gets_every_frame_in_order(self) -> None:
        """One fan-out or several: each gets the frames in sequence order."""
        got: list[list[bytes]] = [[], []]

        @implementer(IEventSink)
        class Sink:
            def __init__(self, into: list[bytes]) -> None:
                self.into = into

            def deliver(self, event: Event) -> None:
                self.into.append(frameOf(event))

        sequencer = LocalSequencer()
        sequencer.subscribe(Sink(got[0]))
        numbers = [self.successResultOf(sequencer.submit(Event(b"a")))]
        sequencer.subscribe(Sink(got[1]), after=1)
        for frame in (b"b", b"c"):
            numbers.append(self.successResultOf(sequencer.submit(Event(frame))))
        self.assertEqual(got, [[b"a", b"b", b"c"], [b"b", b"c"]])
        self.assertEqual(numbers, [1, 2, 3])

    def test_subscribe_from_a_number_it_no_longer_has(self) -> None:
        """The local sequencer keeps no history: only 'from now on'."""
        sequencer = LocalSequencer()
        sequencer.submit(Event(b"a"))
        self.assertRaises(ValueError, sequencer.subscribe, FanOut(None), 0)


class TargetedTests(FanOutTestCase):
    def test_targeted_events_reach_only_their_user(self) -> None:
        """A whisper or a kick goes to its target's recipient, nobody else,
        and never into the broadcast stream."""
        alice, bob = self.join("alice"), self.join("bob")
        self.clock.advance(0)
        before = (alice.data, bob.data)
        whisper = Whisper(alice.user, bob.user, b"psst")
        self.sequencer.submit(whisper)
        self.sequencer.submit(Kick(alice.user))
        self.clock.advance(0)
        self.assertEqual((alice.data, bob.data), before)
        self.assertEqual(bob.events, [whisper])
        self.assertEqual([type(e) for e in alice.events], [Kick])

    def test_targeted_event_for_a_user_gone(self) -> None:
        alice = self.join("alice")
        self.fanout.remove(alice)
        self.sequencer.submit(Kick(alice.user))
        self.assertEqual(alice.events, [])
