"""chatd.wire: the FrameReceiver framer, encoding helpers, names and text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from chatd import wire
from chatd.wire import MAX_PAYLOAD, FrameReceiver, encode
from tests.memory import TurnClock

FRAMES = [(1, b""), (5, b"hello"), (2**32 - 1, b"x" * MAX_PAYLOAD), (9, b".\x00\xff")]
STREAM = b"".join(encode(t, p) for t, p in FRAMES)


class Recorder(FrameReceiver):
    """Records frames; stops framing after a frame of type ``stopOn``."""

    stopOn = None

    def __init__(self, framesPerTurn: int | None = None) -> None:
        self.frames: list[tuple[int, bytes]] = []
        self.tooLarge: list[tuple[int, int]] = []
        self.framesPerTurn = framesPerTurn
        self.clock = TurnClock()
        self.callLater = self.clock.callLater
        self.transport = StringTransport()
        self.makeConnection(self.transport)

    def frameReceived(self, ftype: int, payload: bytes) -> None:
        self.frames.append((ftype, payload))
        if ftype == self.stopOn:
            self.stopFraming = True

    def frameTooLarge(self, ftype: int, size: int) -> None:
        self.tooLarge.append((ftype, size))
        FrameReceiver.frameTooLarge(self, ftype, size)


def feed(data: bytes, cuts: list[int], **kw: object) -> Recorder:
    """A Recorder fed ``data`` cut at the sorted offsets ``cuts``."""
    r = Recorder(**kw)
    last = 0
    for cut in [*sorted(cuts), len(data)]:
        r.dataReceived(data[last:cut])
        last = cut
    return r


class FramingTests(SynchronousTestCase):
    def test_every_split_point(self) -> None:
        """Cutting the stream once anywhere yields the same frames."""
        for cut in range(len(STREAM) + 1):
            self.assertEqual(feed(STREAM, [cut]).frames, FRAMES, cut)

    def test_every_pair_of_split_points_in_headers(self) -> None:
        """Two cuts within and around the first frames' headers."""
        for a in range(30):
            for b in range(a, 30):
                self.assertEqual(feed(STREAM, [a, b]).frames, FRAMES, (a, b))

    def test_byte_at_a_time(self) -> None:
        r = feed(STREAM, list(range(len(STREAM))))
        self.assertEqual(r.frames, FRAMES)

    def test_hundreds_pipelined_in_one_chunk(self) -> None:
        frames = [(i % 17 + 1, str(i).encode() * (i % 5)) for i in range(500)]
        r = feed(b"".join(encode(t, p) for t, p in frames), [])
        self.assertEqual(r.frames, frames)

    def test_partial_frame_waits(self) -> None:
        r = feed(encode(5, b"abc")[:-1], [])
        self.assertEqual(r.frames, [])
        r.dataReceived(b"c")
        self.assertEqual(r.frames, [(5, b"abc")])

    def test_max_payload_accepted(self) -> None:
        r = feed(encode(1, b"z" * 1016), [])
        self.assertEqual((r.frames, r.tooLarge), ([(1, b"z" * 1016)], []))

    def test_oversize_from_header_alone(self) -> None:
        """Size 1017 in a bare 8-byte header is refused at once, connection dropped."""
        r = feed(wire.HEADER.pack(5, 1017), [])
        self.assertEqual(r.tooLarge, [(5, 1017)])
        self.assertTrue(r.transport.disconnecting)

    def test_oversize_header_split(self) -> None:
        header = wire.HEADER.pack(1, 2**32 - 1)
        for cut in range(1, 8):
            r = feed(header, [cut])
            self.assertEqual(r.tooLarge, [(1, 2**32 - 1)], cut)

    def test_nothing_after_oversize_is_handled(self) -> None:
        """Frames before an oversize header are handled, none after it."""
        data = encode(1, b"a") + wire.HEADER.pack(1, 5000) + encode(1, b"b")
        r = feed(data, [])
        self.assertEqual(r.frames, [(1, b"a")])
        r.dataReceived(encode(1, b"c"))
        self.assertEqual(r.frames, [(1, b"a")])
        self.assertEqual(len(r.tooLarge), 1)

    def test_stop_framing_drops_the_rest(self) -> None:
        """stopFraming set in frameReceived: later frames of the chunk are not handled."""
        r = Recorder()
        r.stopOn = 17
        r.dataReceived(encode(1, b"a") + encode(17) + encode(1, b"b"))
        r.dataReceived(encode(1, b"c"))
        self.assertEqual(r.frames, [(1, b"a"), (17, b"")])

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=MAX_PAYLOAD)),
            max_size=20,
        ),
        st.lists(st.integers(0, 30000), max_size=30),
    )
    def test_round_trip(self, frames: list, cuts: list) -> None:
        """encode, then feed in random chunks == the original frames."""
        data = b"".join(encode(t, p) for t, p in frames)
        r = feed(data, [c % (len(data) + 1) for c in cuts])
        self.assertEqual(r.frames, frames)
        self.assertEqual(r.tooLarge, [])


class FairnessTests(SynchronousTestCase):
    def test_budget_per_turn(self) -> None:
        """200 frames, 64 per turn: the rest on later turns, reading paused meanwhile."""
        frames = [(1, str(i).encode()) for i in range(200)]
        r = feed(b"".join(encode(t, p) for t, p in frames), [], framesPerTurn=64)
        self.assertEqual(r.frames, frames[:64])
        self.assertEqual(r.transport.producerState, "paused")
        for handled in (128, 192):
            r.clock.turn()
            self.assertEqual(r.frames, frames[:handled])
        r.clock.turn()
        self.assertEqual(r.frames, frames)
        self.assertEqual(r.transport.producerState, "producing")
        self.assertEqual(r.clock.getDelayedCalls(), [])

    def test_exact_budget_does_not_throttle(self) -> None:
        r = feed(encode(1) * 64, [], framesPerTurn=64)
        self.assertEqual(len(r.frames), 64)
        self.assertEqual(r.transport.producerState, "producing")
        self.assertEqual(r.clock.getDelayedCalls(), [])

    def test_bytes_arriving_while_throttled_keep_order(self) -> None:
        r = feed(encode(1, b"a") * 3, [], framesPerTurn=2)
        r.dataReceived(encode(1, b"b") + encode(1, b"c")[:5])
        self.assertEqual(len(r.frames), 2)
        r.dataReceived(encode(1, b"c")[5:])
        r.clock.turn()
        self.assertEqual(len(r.frames), 4)
        r.clock.turn()
        self.assertEqual(r.frames, [(1, b"a")] * 3 + [(1, b"b"), (1, b"c")])

    def test_oversize_after_budget_next_turn(self) -> None:
        r = feed(encode(1) * 3 + wire.HEADER.pack(1, 1017), [], framesPerTurn=3)
        self.assertEqual((len(r.frames), r.tooLarge), (3, []))
        r.clock.turn()
        self.assertEqual(r.tooLarge, [(1, 1017)])


class FieldTests(SynchronousTestCase):
    def test_encode(self) -> None:
        self.assertEqual(encode(6, b"ab"), b"\0\0\0\x06\0\0\0\x02ab")
        self.assertEqual(encode(17), b"\0\0\0\x11\0\0\0\0")

    def test_join_and_split_fields(self) -> None:
        payload = wire.join_fields(7, 33, b"bob", b"a.b.c")
        self.assertEqual(payload, b"7.33.bob.a.b.c")
        self.assertEqual(wire.split_fields(payload, 4), [b"7", b"33", b"bob", b"a.b.c"])
        self.assertRaises(ValueError, wire.split_fields, b"1.2", 3)

    def test_error_payload_always_has_text(self) -> None:
        for code in wire.ErrorCode:
            c, dot, text = wire.error_payload(code).partition(b".")
            self.assertEqual((c.decode(), dot), (code.name, b"."))
            self.assertTrue(text)

    def test_fatal_split(self) -> None:
        fatal = {c.name for c in wire.ErrorCode if c.fatal}
        self.assertEqual(
            fatal,
            {
                "FRAME_TOO_LARGE", "AUTH_FAILED", "SERVER_FULL", "MAINTENANCE",
                "SLOW_CONSUMER", "IDLE_TIMEOUT", "HANDSHAKE_TIMEOUT", "SHUTDOWN",
                "KICKED",
            },
        )  # fmt: skip

    def test_codes_and_types_match_spec(self) -> None:
        spec = (
            "FRAME_TOO_LARGE UNKNOWN_TYPE BAD_NAME NAME_TAKEN AUTH_FAILED NOT_READY "
            "BAD_STATE BAD_TEXT TOO_LONG NO_SUCH_USER RATE_LIMITED SERVER_FULL "
            "MAINTENANCE SLOW_CONSUMER IDLE_TIMEOUT HANDSHAKE_TIMEOUT SHUTDOWN KICKED "
            "UNAVAILABLE"  # protocol 1.1
            " BAD_ROOM NO_SUCH_ROOM NOT_IN_ROOM TOO_MANY_ROOMS TOPIC_LOCKED"  # 1.2
            " BAD_TOKEN HISTORY_GONE"  # 1.2, history and resume
        ).split()
        self.assertEqual(sorted(c.name for c in wire.ErrorCode), sorted(spec))
        self.assertFalse(wire.ErrorCode.UNAVAILABLE.fatal)
        for code in spec[-7:]:  # no 1.2 code closes the connection
            self.assertFalse(wire.ErrorCode[code].fatal)
        # 1..17: protocol 1.1; 18..35: 1.2 (docs/protocol.md)
        self.assertEqual([int(t) for t in wire.FrameType], list(range(1, 36)))


GOOD_NAMES = [b"a", b"Z", b"0", b"_", b"-", b"a" * 32, b"Alice_-9"]
BAD_NAMES = [b"", b"a" * 33, b"a b", b"a.b", b"\xc3\xa9", b"a\n", b"a\x00", b"@"]

#: Text the spec refuses, each with why.
BAD_TEXTS = {
    "empty": b"",
    "NUL": b"a\x00",
    "LF": b"a\nb",
    "CR": b"a\rb",
    "ESC": b"\x1b[31m",
    "DEL": b"a\x7f",
    "C1 NEL": "a\u0085".encode(),
    "C1 CSI": "\u009b".encode(),
    "LINE SEPARATOR": "\u2028".encode(),
    "PARAGRAPH SEPARATOR": "\u2029".encode(),
    "LRE": "\u202a".encode(),
    "RLO": "x\u202ey".encode(),
    "LRI": "\u2066".encode(),
    "PDI": "\u2069".encode(),
    "overlong slash": b"\xc0\xaf",
    "overlong NUL": b"\xc0\x80",
    "overlong 3-byte": b"\xe0\x80\xaf",
    "overlong 4-byte": b"\xf0\x80\x80\xaf",
    "surrogate": b"\xed\xa0\x80",
    "surrogate pair (CESU)": b"\xed\xa0\xbd\xed\xb8\x80",
    "above U+10FFFF": b"\xf4\x90\x80\x80",
    "F5 lead": b"\xf5\x80\x80\x80",
    "lone continuation": b"\x80",
    "truncated": b"\xe2\x82",
    "FF byte": b"a\xff",
    "latin-1": "café".encode("latin-1"),
}
GOOD_TEXTS = [
    b"x",
    b"a\tb",
    b"dots.in.text",
    b" ",
    "café ☕ 😀".encode(),
    "\u200e".encode(),  # LRM is not among the listed bidi controls
    "\ufeff".encode(),
    "\U0010ffff".encode(),
    "\u00a0".encode(),  # first code point after C1
    "\u2027\u202f\u2065\u206a".encode(),  # neighbours of the forbidden ranges
]


class NameAndTextTests(SynchronousTestCase):
    def test_names(self) -> None:
        for name in GOOD_NAMES:
            self.assertTrue(wire.valid_name(name), name)
        for name in BAD_NAMES:
            self.assertFalse(wire.valid_name(name), name)

    def test_bad_text(self) -> None:
        for why, text in BAD_TEXTS.items():
            self.assertFalse(wire.valid_text(text), why)

    def test_every_forbidden_code_point(self) -> None:
        forbidden = [*range(0x00, 0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0)]
        forbidden += [0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
        for cp in forbidden:
            self.assertFalse(wire.valid_text(("ok" + chr(cp)).encode()), hex(cp))

    def test_good_text(self) -> None:
        for text in GOOD_TEXTS:
            self.assertTrue(wire.valid_text(text), text)
