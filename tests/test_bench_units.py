"""The pure pieces the split of chatd-bench made testable, without sockets:
split writes, open-loop pacing, the total-order notes, a part's figures
through JSON, the progress line, the summary and the exit statuses."""

from __future__ import annotations

import json
import signal
from collections import Counter

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest
from zope.interface.verify import verifyClass

from chatd.bench.checks import Histogram, PayloadGenerator, sayText
from chatd.bench.config import Config
from chatd.bench.echo import cut
from chatd.bench.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from chatd.bench.fanout import FanUser, OpenLoop
from chatd.bench.figures import Counts, merge, partFigures, streamEnds
from chatd.bench.load import LoadPart
from chatd.bench.order import ORDER_CHECKPOINT, orderDisagreements
from chatd.bench.parts import IPart, LocalPart, RemotePart
from chatd.bench.progress import progressLine
from chatd.bench.report import EXIT_TERMINATED, interruption, resultStatus, summary
from chatd.wire import FrameType, encode


class SplitTests(unittest.SynchronousTestCase):
    def test_cut_at_the_offsets(self):
        self.assertEqual(cut(b"abcdef", [1, 4]), [b"a", b"bcd", b"ef"])
        self.assertEqual(cut(b"abc", []), [b"abc"])

    def test_random_cuts_lose_nothing(self):
        """--split pieces are never empty and join back to the frame bytes."""
        g = PayloadGenerator(3)
        for _ in range(200):
            data = g.next()[1] + b"!"
            pieces = cut(data, g.splits(len(data)))
            self.assertEqual(b"".join(pieces), data)
            self.assertNotIn(b"", pieces)


class OpenLoopTests(unittest.SynchronousTestCase):
    def test_whole_messages_per_tick(self):
        pace = OpenLoop(1000.0, 0)
        self.assertEqual([pace.owed(t * 5000) for t in (1, 2, 3)], [5, 5, 5])

    def test_fractions_carry_over(self):
        """0.75 messages a tick: nothing is lost to rounding over a second."""
        pace = OpenLoop(150.0, 0)
        owed = [pace.owed(t * 5000) for t in range(1, 201)]
        self.assertEqual(owed[:4], [0, 1, 1, 1])
        self.assertEqual(sum(owed), 150)


def _transport() -> StringTransport:
    t = StringTransport()
    t.setTcpNoDelay = lambda enabled: None  # type: ignore[attr-defined]
    return t


class OrderNoteTests(unittest.SynchronousTestCase):
    def user(self, part: LoadPart, index: int) -> FanUser:
        user = FanUser(part, index, None)
        user.makeConnection(_transport())
        user.active.callback(user)  # ACTIVE: MESSAGEs count from here
        return user

    def feed(self, user: FanUser, order: list[tuple[int, int]]) -> None:
        user.dataReceived(
            b"".join(
                encode(FrameType.MESSAGE, b"1.3.bs0." + sayText(s, q, 0, 16))
                for s, q in order
            )
        )

    def test_users_agree_or_not_at_the_checkpoint(self):
        """Two users with one order note one hash; a third, which got two
        messages the other way round, notes another: one disagreement."""
        part = LoadPart(MemoryReactorClock(), Config(mode="fanout", senders=2))
        order = [(n % 2, n // 2) for n in range(ORDER_CHECKPOINT)]
        swapped = [order[1], order[0], *order[2:]]
        for index, stream in enumerate((order, order, swapped)):
            self.feed(self.user(part, index), stream)
        self.assertEqual(sum(part.counts.orders.values()), 3)
        self.assertEqual(len(part.counts.orders), 2)
        self.assertTrue(
            all(k.startswith(f"{ORDER_CHECKPOINT}:") for k in part.counts.orders)
        )
        self.assertEqual(orderDisagreements([dict(part.counts.orders)]), 1)

    def test_no_note_before_the_checkpoint(self):
        part = LoadPart(MemoryReactorClock(), Config(mode="fanout", senders=1))
        self.feed(self.user(part, 0), [(0, q) for q in range(ORDER_CHECKPOINT - 1)])
        self.assertEqual(part.counts.orders, Counter())
        self.assertEqual(part.counts.completed, ORDER_CHECKPOINT - 1)


class FiguresTests(unittest.SynchronousTestCase):
    def test_stream_ends(self):
        """Sender 0 sent 5; one user saw up to 4, one up to 2, one nothing
        from sender 1 (which sent none)."""
        sent, lastSeen = streamEnds(
            [(0, 5, {0: 4}, 0), (None, 0, {0: 2}, 0), (1, 0, {0: 4}, 0)], 2
        )
        self.assertEqual(sent, {0: 5, 1: 0})
        self.assertEqual(lastSeen, {0: Counter({4: 2, 2: 1}), 1: Counter({-1: 3})})

    def test_part_figures_merge_through_json(self):
        """A part's figures survive the worker pipe and add up as they were:
        the tail missing at one user is two gaps."""
        counts = Counts(completed=13, bytes=900, sent=5)
        counts.errors["BAD_TEXT"] += 1
        counts.orders["500:7"] += 3
        latency = Histogram()
        for us in (100, 200, 300):
            latency.add(us)
        sent, lastSeen = streamEnds([(0, 5, {0: 4}, 0), (None, 0, {0: 2}, 0)], 1)
        wire = json.loads(json.dumps(partFigures(counts, latency, sent, lastSeen)))
        config = Config(mode="fanout", senders=1, receivers=1)
        out = merge(config, [wire], 1.0)
        self.assertEqual(out["gaps"], 2)
        self.assertEqual(out["errors"], {"BAD_TEXT": 1})
        self.assertEqual(out["latency_us"]["max"], 300)
        self.assertEqual(out["integrity_failures"], 3)
        self.assertFalse(out["ok"])


class OutputTests(unittest.SynchronousTestCase):
    def test_progress_bar(self):
        line = progressLine("bar", 2.5, 5.0, 10, 1234.0, 1.5, "frames")
        self.assertEqual(
            line,
            "\r[###############               ]   2.5/5s        1,234 frames/s"
            "      1.5 MB/s",
        )
        full = progressLine("bar", 9.0, 0.0, 0, 0.0, 0.0, "frames")
        self.assertIn("#" * 30, full)

    def test_progress_lines(self):
        line = progressLine("lines", 1.0, 5.0, 42, 42.0, 0.0, "deliveries")
        self.assertEqual(
            line,
            "   1.0s           42 deliveries           42 deliveries/s      0.0 MB/s\n",
        )

    def test_summary(self):
        counts = Counts(completed=2000, bytes=4_000_000, sent=2000)
        latency = Histogram({1500: 2000})
        part = json.loads(json.dumps(partFigures(counts, latency, {}, {})))
        out = merge(Config(mode="echo", seed=1), [part], 2.0)
        self.assertEqual(
            summary(out),
            "  2,000 frames in 2.00s: 1,000 frames/s, 2.00 MB/s\n"
            "  latency p50 1.500 ms  p90 1.500 ms  p99 1.500 ms  max 1.500 ms\n"
            "  integrity: mismatches 0  unexpected 0  unanswered 0  gaps 0  "
            "duplicates 0  reorders 0  disconnects 0  order_disagreements 0"
            "  errors 0\n"
            "  result: OK",
        )
        self.assertEqual(resultStatus(out), EXIT_OK)
        self.assertEqual(resultStatus({**out, "ok": False}), EXIT_FAILED)

    def test_interruption(self):
        self.assertEqual(
            interruption(signal.SIGINT, "during the load"),
            ("chatd-bench: interrupted during the load; no results\n", 130),
        )
        line, status = interruption(signal.SIGTERM, "while draining")
        self.assertEqual(line, "chatd-bench: terminated while draining; no results\n")
        self.assertEqual((status, EXIT_TERMINATED, EXIT_INTERRUPTED), (143, 143, 130))

    def test_parts_provide_the_interface(self):
        self.assertTrue(verifyClass(IPart, LocalPart))
        self.assertTrue(verifyClass(IPart, RemotePart))
