"""chatd.wire.runs.sameTypeRun: the run of like frames a read begins with,
by either of its two ways (one unpack for frames of one size, a walk for
the rest), always the same answer as a frame-by-frame walk."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from chatd.wire import HEADER, MAX_PAYLOAD, FrameType
from chatd.wire.runs import _equalFrames, sameTypeRun

ECHO = FrameType.ECHO


def frame(ftype: int, payload: bytes) -> bytes:
    return HEADER.pack(ftype, len(payload)) + payload


def walked(data: bytes, offset: int, ftype: int, budget: int) -> tuple[int, int]:
    """The reference: one header at a time."""
    frames = 0
    while len(data) - offset >= 8 and frames != budget:
        kind, size = HEADER.unpack_from(data, offset)
        if kind != ftype or size > MAX_PAYLOAD or offset + 8 + size > len(data):
            break
        offset += 8 + size
        frames += 1
    return offset, frames


class SameTypeRunTests(SynchronousTestCase):
    def check(self, data: bytes, budget: int = -1, offset: int = 0) -> tuple[int, int]:
        got = sameTypeRun(data, offset, ECHO, budget)
        self.assertEqual(got, walked(data, offset, ECHO, budget))
        return got

    def test_equal_frames_whole_run(self) -> None:
        data = frame(ECHO, b"e" * 16) * 16
        self.assertEqual(self.check(data), (len(data), 16))

    def test_budget_cuts_the_run(self) -> None:
        data = frame(ECHO, b"e" * 5) * 10
        self.assertEqual(self.check(data, budget=4), (4 * 13, 4))
        self.assertEqual(self.check(data, budget=0), (0, 0))

    def test_other_type_of_the_same_size_ends_it(self) -> None:
        one = frame(ECHO, b"abc")
        data = one * 3 + frame(FrameType.SAY, b"abc") + one * 3
        self.assertEqual(self.check(data), (3 * len(one), 3))

    def test_a_type_that_differs_only_in_a_high_byte(self) -> None:
        one = frame(ECHO, b"abc")
        data = one * 2 + frame(ECHO | 1 << 24, b"abc") + one
        self.assertEqual(self.check(data), (2 * len(one), 2))

    def test_sizes_that_differ_are_walked(self) -> None:
        data = frame(ECHO, b"a") + frame(ECHO, b"bb") + frame(ECHO, b"a")
        self.assertEqual(self.check(data), (len(data), 3))

    def test_mixed_sizes_build_no_unpack_shape(self) -> None:
        """A real client's frames differ in size: each read's run must not
        cost a struct of its own (it did, a fifth of echo's CPU)."""
        _equalFrames.cache_clear()
        for first in range(50):
            data = frame(ECHO, b"a" * first) + frame(ECHO, b"b" * (first + 1)) * 3
            self.assertEqual(self.check(data), (len(data), 4))
        self.assertEqual(_equalFrames.cache_info().misses, 0)
        data = frame(ECHO, b"c" * 3) * 4
        self.assertEqual(self.check(data), (len(data), 4))
        self.assertEqual(_equalFrames.cache_info().misses, 1)

    def test_payload_that_looks_like_headers(self) -> None:
        fake = HEADER.pack(ECHO, 4)
        data = frame(ECHO, fake) * 4
        self.assertEqual(self.check(data), (len(data), 4))

    def test_partial_last_frame_and_offset(self) -> None:
        one = frame(ECHO, b"xy")
        data = b"junk" + one * 5 + one[:7]
        self.assertEqual(self.check(data, offset=4), (4 + 5 * len(one), 5))

    def test_oversized_frames_are_not_a_run(self) -> None:
        data = HEADER.pack(ECHO, MAX_PAYLOAD + 1) * 3
        self.assertEqual(self.check(data), (0, 0))

    def test_every_size_and_count_agrees_with_the_walk(self) -> None:
        for size in (0, 1, 7, 8, 100, MAX_PAYLOAD):
            for count in range(1, 6):
                data = frame(ECHO, b"z" * size) * count + frame(ECHO, b"q")
                for budget in (-1, 1, count, count + 5):
                    self.check(data, budget)
