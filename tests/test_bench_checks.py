"""chatd-bench's generators and checkers, without sockets."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from chatd.bench.checks import (
    EchoChecker,
    Histogram,
    PayloadGenerator,
    SequenceChecker,
    parseMessage,
    sayText,
    tailGaps,
)
from chatd.bench.config import Config
from chatd.bench.figures import merge
from chatd.wire import MAX_PAYLOAD, FrameType, valid_text


class GeneratorTests(unittest.SynchronousTestCase):
    def test_reproducible(self):
        """The same seed gives the same frames; another seed does not."""
        g1, g2, g3 = PayloadGenerator(7), PayloadGenerator(7), PayloadGenerator(8)
        frames1 = [g1.next() for _ in range(50)]
        self.assertEqual(frames1, [g2.next() for _ in range(50)])
        self.assertNotEqual(frames1, [g3.next() for _ in range(50)])

    def test_sizes_cover_range(self):
        """Sizes are uniform in 0..1016: both ends are reachable, never beyond."""
        g = PayloadGenerator(1)
        sizes = [len(g.next()[1]) for _ in range(20000)]
        self.assertLessEqual(max(sizes), MAX_PAYLOAD)
        self.assertGreater(max(sizes), MAX_PAYLOAD - 20)
        self.assertLess(min(sizes), 20)

    def test_types(self):
        g = PayloadGenerator(3, types=(FrameType.ECHO, FrameType.PING))
        self.assertEqual(
            {g.next()[0] for _ in range(100)}, {FrameType.ECHO, FrameType.PING}
        )

    @given(st.integers(0, 5000), st.integers(0, 2**31))
    def test_splits(self, length, seed):
        cuts = PayloadGenerator(seed).splits(length)
        self.assertEqual(cuts, sorted(set(cuts)))
        self.assertTrue(all(0 < c < length for c in cuts))
        if length >= 2:
            self.assertGreaterEqual(len(cuts), 1)


class EchoCheckerTests(unittest.SynchronousTestCase):
    def feed(self, sent, replies):
        c = EchoChecker()
        for i, (t, p) in enumerate(sent):
            c.sent(t, p, i)
        for t, p in replies:
            c.received(t, p)
        return c

    def test_clean(self):
        frames = [(FrameType.ECHO, b"abc"), (FrameType.ECHO, b"")]
        c = self.feed(frames, frames)
        self.assertEqual((c.completed, c.mismatches, c.outstanding), (2, 0, 0))

    def test_flipped_byte(self):
        """One flipped bit is a mismatch, located in the example."""
        c = self.feed([(1, b"hello world")], [(1, b"hello_world")])
        self.assertEqual(c.mismatches, 1)
        self.assertIn("first difference at byte 5", c.examples[0])

    def test_truncated_and_reordered(self):
        c = self.feed([(1, b"aa"), (1, b"bb")], [(1, b"bb"), (1, b"aa")])
        self.assertEqual(c.mismatches, 2)
        c = self.feed([(1, b"aaaa")], [(1, b"aaa")])
        self.assertEqual(c.mismatches, 1)

    def test_ping_expects_pong(self):
        c = self.feed([(FrameType.PING, b"x")], [(FrameType.ECHO, b"x")])
        self.assertEqual(c.mismatches, 1)
        c = self.feed([(FrameType.PING, b"x")], [(FrameType.PONG, b"x")])
        self.assertEqual(c.mismatches, 0)

    def test_unexpected_and_unanswered(self):
        c = self.feed([], [(1, b"x")])
        self.assertEqual(c.unexpected, 1)
        c = self.feed([(1, b"x"), (1, b"y")], [(1, b"x")])
        self.assertEqual(c.outstanding, 1)


class SequenceCheckerTests(unittest.SynchronousTestCase):
    def check(self, stream):
        c = SequenceChecker()
        for sender, seq in stream:
            c.feed(sender, seq)
        return c.gaps, c.duplicates, c.reorders

    def test_clean_interleaved(self):
        stream = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]
        self.assertEqual(self.check(stream), (0, 0, 0))

    def test_gap(self):
        self.assertEqual(self.check([(0, 0), (0, 1), (0, 4)]), (2, 0, 0))
        self.assertEqual(self.check([(0, 1)]), (1, 0, 0))  # the first lost

    def test_duplicate(self):
        self.assertEqual(self.check([(0, 0), (0, 1), (0, 1), (0, 2)]), (0, 1, 0))
        self.assertEqual(self.check([(0, 0), (0, 1), (0, 0)]), (0, 1, 0))

    def test_reorder(self):
        """A late number fills its hole: a reorder, no longer a gap."""
        self.assertEqual(self.check([(0, 0), (0, 2), (0, 1), (0, 3)]), (0, 0, 1))
        # ... and the same late number again is a duplicate.
        self.assertEqual(self.check([(0, 0), (0, 2), (0, 1), (0, 1)]), (0, 1, 1))

    def test_senders_are_independent(self):
        self.assertEqual(self.check([(0, 0), (1, 1), (0, 1)]), (1, 0, 0))

    def test_hole_cap(self):
        c = SequenceChecker()
        c.MAX_HOLES = 10
        c.feed(0, 100)
        self.assertEqual(c.gaps, 100)
        self.assertEqual(len(c.holes[0]), 10)

    @given(st.permutations(list(range(30))))
    def test_any_permutation(self, order):
        """Every number once: never a gap or duplicate at the end."""
        c = SequenceChecker()
        for seq in order:
            c.feed(0, seq)
        self.assertEqual((c.gaps, c.duplicates), (0, 0))
        self.assertEqual(c.reorders == 0, order == sorted(order))

    def test_tail_gaps(self):
        """Users that stopped short of a sender's last message count as gaps."""
        sent = {0: 10, 1: 5}
        seen = {0: Counter({9: 3, 7: 1}), 1: Counter({-1: 1, 4: 3})}
        self.assertEqual(tailGaps(sent, seen), 2 + 5)


class TextTests(unittest.SynchronousTestCase):
    @given(st.integers(0, 10**6), st.integers(0, 10**9), st.integers(0, 2**62))
    def test_roundtrip(self, sender, seq, stamp):
        text = sayText(sender, seq, stamp, 64)
        self.assertTrue(valid_text(text))
        self.assertGreaterEqual(len(text), 64)
        payload = b"12.196.bob." + text
        self.assertEqual(parseMessage(payload), (sender, seq, stamp))

    def test_exact_size(self):
        self.assertEqual(len(sayText(1, 2, 3, 512)), 512)

    def test_garbage(self):
        with self.assertRaises(ValueError):
            parseMessage(b"1.2.bob.hello there")


class HistogramTests(unittest.SynchronousTestCase):
    def test_percentiles(self):
        h = Histogram()
        for us in range(1, 101):
            h.add(us)
        self.assertEqual(h.summary(), {"p50": 50, "p90": 90, "p99": 99, "max": 100})

    def test_precision_and_merge(self):
        a, b = Histogram(), Histogram()
        a.add(1_000_000)
        b.add(999)
        a.merge(Histogram.fromJSON(b.toJSON()))
        self.assertEqual(a.total, 2)
        self.assertLess(abs(a.percentile(100) - 1_000_000), 10_000)
        self.assertEqual(a.percentile(50), 996)  # within 1%
        self.assertIsNone(Histogram().percentile(50))


class MergeTests(unittest.SynchronousTestCase):
    def part(self, **over):
        r = {
            "completed": 10,
            "bytes": 100,
            "sent": 5,
            "mismatches": 0,
            "unexpected": 0,
            "unanswered": 0,
            "gaps": 0,
            "duplicates": 0,
            "reorders": 0,
            "disconnects": 0,
            "errors": {},
            "examples": [],
            "latency": {"10": 10},
            "sentBySender": {"0": 5},
            "lastSeen": {"0": {"4": 2}},
        }
        r.update(over)
        return r

    def test_ok(self):
        config = Config(mode="fanout", senders=1, receivers=1)
        out = merge(config, [self.part(), self.part(sentBySender={})], 2.0)
        self.assertTrue(out["ok"])
        self.assertEqual(out["deliveries_per_s"], 10.0)

    def test_failures_counted(self):
        """A missing tail, an ERROR, a disconnect: each fails the run."""
        config = Config(mode="fanout", senders=1, receivers=1)
        out = merge(config, [self.part(lastSeen={"0": {"3": 1}})], 1.0)
        self.assertEqual((out["gaps"], out["ok"]), (1, False))
        out = merge(config, [self.part(errors={"BAD_TEXT": 1})], 1.0)
        self.assertFalse(out["ok"])
        out = merge(Config(mode="echo"), [self.part(disconnects=1)], 1.0)
        self.assertEqual((out["integrity_failures"], out["ok"]), (1, False))

    def test_nothing_measured_fails(self):
        """A run in which nothing was answered is not OK, whatever else."""
        empty = self.part(completed=0, bytes=0, sent=0, latency={}, sentBySender={})
        out = merge(Config(mode="echo"), [empty], 1.0)
        self.assertFalse(out["ok"])
        self.assertIn("no request was answered", out["examples"][0])
