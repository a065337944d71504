"""Property-based abuse: random bytes and frame sequences, in every state.

No exception may escape, every reply must be a well-formed frame, a fatal
error must close, and once every connection is gone nothing may be left in
the roster, the fan-out or the factory.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chatd.wire import FATAL_ERRORS, HEADER, MAX_PAYLOAD, ErrorCode, FrameType, encode
from tests.memory import Server, parseFrames

T = FrameType
SERVER_TYPES = {
    T.ECHO, T.WELCOME, T.MESSAGE, T.JOIN, T.LEAVE, T.PONG, T.ERROR, T.USERS,
    T.WHISPERED, T.NOTICE,
}  # fmt: skip
FATAL = {code.name.encode() for code in FATAL_ERRORS}

payloads = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [b"", b"alice", b"Bob", b"alice.pw", b"bob.hi there", b"\xff\xfe",
         b"x" * 1016, b"a.b.c.d", "h\u00e9\u2028".encode(), b"\x1b[31m"]
    ),
)  # fmt: skip
frames = st.tuples(st.integers(min_value=0, max_value=20), payloads).map(
    lambda f: encode(*f)
)
oversize = st.integers(min_value=MAX_PAYLOAD + 1, max_value=2**32 - 1).map(
    lambda n: HEADER.pack(T.SAY, n)
)
chunks = st.lists(
    st.one_of(frames, frames, frames, st.binary(max_size=12), oversize), max_size=12
)
# A script: (connection index, bytes) steps, plus some clock ticks.
steps = st.lists(
    st.tuples(st.integers(min_value=0, max_value=2), chunks, st.booleans()),
    max_size=25,
)


class FuzzTests(SynchronousTestCase):
    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(steps=steps, password=st.booleans())
    def test_random_input(self, steps, password):
        server = Server(password=b"pw" if password else None, max_backlog=4096)
        peers = [server.connect() for _ in range(3)]
        outputs = [b""] * 3
        for index, data, tick in steps:
            peer = peers[index]
            if not peer.transport.disconnecting:
                peer.sendRaw(b"".join(data))
            if tick:
                server.clock.advance(5)
        server.clock.advance(0)
        for index, peer in enumerate(peers):
            outputs[index] = peer.transport.value()
            parsed, rest = parseFrames(outputs[index])
            self.assertEqual(rest, b"", "a partial frame was written")
            for position, (ftype, payload) in enumerate(parsed):
                self.assertIn(ftype, SERVER_TYPES)
                self.assertLessEqual(len(payload), MAX_PAYLOAD)
                if ftype == T.ERROR:
                    code, dot, text = payload.partition(b".")
                    self.assertIn(code.decode(), ErrorCode.__members__)
                    self.assertTrue(text)
                    if code in FATAL:
                        self.assertTrue(peer.transport.disconnecting)
                        self.assertEqual(position, len(parsed) - 1, parsed)
        for peer in peers:
            peer.lose()
        server.clock.advance(0)
        factory = server.factory
        self.assertEqual(factory.hub.roster.named, 0)
        self.assertEqual(factory.hub.replica.active, [])
        self.assertEqual(factory.hub.sessions, {})
        self.assertEqual(len(factory.fanout), 0)
        self.assertEqual(factory.fanout.heldBytes, 0)
        self.assertEqual(factory.connections, {})
        self.assertEqual(factory.named(), [])
        self.assertEqual(dict(factory.perAddress.counts), {})
        # No timers left behind but the (finished) ones
        self.assertEqual([c for c in server.clock.getDelayedCalls() if c.active()], [])
