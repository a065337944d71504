"""The bulk path for runs of SAY (ChatProtocol._says) against the frame path.

Whatever a client pipelines, handling it as one read must give every user
exactly the bytes, and the server exactly the counts, that handling it one
frame per read gives.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chatd.core.events import Event
from chatd.wire import HEADER, MAX_PAYLOAD, SAY_HEADER_NOISE, encode, plainTexts
from tests.memory import Server, T
from tests.test_wire import BAD_TEXTS, GOOD_TEXTS

texts = st.one_of(
    st.binary(min_size=1, max_size=30).filter(lambda b: b.isascii()),
    st.text(
        alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1
    ).map(str.encode),
    st.sampled_from([*BAD_TEXTS.values(), *GOOD_TEXTS, b"", b"\t", b"t" * 1000]),
)
requests = st.one_of(
    texts.map(lambda t: encode(T.SAY, t)),
    texts.map(lambda t: encode(T.SAY, t)),
    st.sampled_from(
        [encode(T.ECHO, b"e"), encode(T.PING, b"p"), encode(T.WHO), encode(T.HELLO)]
    ),
)


def run(frames: list[bytes], chunked: bool) -> tuple[bytes, bytes, dict]:
    """What the sender and a watcher got, and the counts, for ``frames``
    sent as one read (``chunked``) or one frame per read."""
    server = Server()
    sender, watcher = server.users(b"sender", b"watcher")
    start = [len(sender.transport.value()), len(watcher.transport.value())]
    if chunked:
        sender.sendRaw(b"".join(frames))
    else:
        for frame in frames:
            sender.sendRaw(frame)
    clock = server.clock
    while any(call.getTime() <= clock.seconds() for call in clock.calls):
        clock.advance(0)
    snapshot = server.factory.snapshot()
    counts = {k: snapshot[k] for k in ("messages", "deliveries", "frames_in")}
    counts["errors"] = dict(snapshot["errors"])
    return (
        sender.transport.value()[start[0] :],
        watcher.transport.value()[start[1] :],
        counts,
    )


class SayRunTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.lists(requests, max_size=150))
    def test_one_read_same_as_frame_by_frame(self, frames: list[bytes]) -> None:
        self.assertEqual(run(frames, chunked=True), run(frames, chunked=False))

    def test_plain_run_sequenced_as_one_blob(self) -> None:
        """The point of the bulk path: one sequencing per run, not per SAY."""
        server = Server()
        alice, bob = server.users(b"alice", b"bob")
        calls: list[int] = []

        class Count:
            def deliver(self, event: Event) -> None:
                calls.append(event.count)

        server.factory.hub.sequencer.subscribe(Count())
        alice.sendRaw(b"".join(encode(T.SAY, b"line %d\tok" % i) for i in range(10)))
        self.assertEqual(calls, [10])
        self.assertEqual(len(bob.received()), 10)

    def test_run_broken_by_bad_text(self) -> None:
        """A bad text in the middle: the MESSAGEs before it, its ERROR, the rest."""
        server = Server()
        alice, bob = server.users(b"alice", b"bob")
        said = [b"one", b"two", b"bad\x1b[2J", b"three", "f\u00fcnf".encode()]
        alice.sendRaw(b"".join(encode(T.SAY, t) for t in said))
        frames = alice.received()
        self.assertEqual(
            [t for t, _ in frames],
            [T.MESSAGE, T.MESSAGE, T.ERROR, T.MESSAGE, T.MESSAGE],
        )
        self.assertEqual(
            [p for _, p in bob.received()],
            [alice.prefix + t for t in said if t != b"bad\x1b[2J"],
        )

    def test_deliveries_counted_per_frame_with_newcomer(self) -> None:
        """A run is one blob but counts as its frames, also for a user who
        joins after it in the same turn (and is not given it)."""
        server = Server()
        alice, bob = server.users(b"alice", b"bob")
        carol = server.named(b"carol")
        before = server.factory.snapshot()["deliveries"]
        alice.sendRaw(b"".join(encode(T.SAY, b"m%d" % i) for i in range(5)))
        carol.send(T.READY)
        server.clock.advance(0)
        # 5 MESSAGEs to alice and bob; the JOIN to all three.
        self.assertEqual(server.factory.snapshot()["deliveries"] - before, 5 * 2 + 3)
        self.assertEqual([t for t, _ in carol.received()], [T.JOIN])
        self.assertEqual(len(bob.received()), 6)

    def test_deliveries_count_frames_given_early(self) -> None:
        """A reply in the same read, or a BYE, gives the sender this turn's
        frames early; they are delivered all the same and counted."""
        server = Server()
        alice, bob = server.users(b"alice", b"bob")
        before = server.factory.snapshot()["deliveries"]
        alice.sendRaw(encode(T.SAY, b"one") + encode(T.SAY, b"two") + encode(T.ECHO))
        server.clock.advance(0)
        self.assertEqual(server.factory.snapshot()["deliveries"] - before, 2 * 2)
        self.assertEqual(len(alice.received()), 3)
        alice.sendRaw(encode(T.SAY, b"three") + encode(T.BYE))
        server.clock.advance(0)
        # MESSAGE to both, then alice's LEAVE to bob.
        self.assertEqual(server.factory.snapshot()["deliveries"] - before, 4 + 2 + 1)
        self.assertEqual(
            [t for t, _ in bob.received()][-3:], [T.MESSAGE] * 2 + [T.LEAVE]
        )


class PlainTextsTests(SynchronousTestCase):
    def frames(self, *texts: bytes) -> tuple[bytes, int]:
        data = b"".join(encode(T.SAY, t) for t in texts)
        return data, sum(SAY_HEADER_NOISE[len(t)] for t in texts)

    def test_plain_ascii_passes(self) -> None:
        self.assertTrue(plainTexts(*self.frames(b"hello", b"a\tb", b"~" * 300)))

    def test_any_other_byte_fails(self) -> None:
        for bad in [*range(0, 9), *range(10, 32), *range(127, 256)]:
            self.assertFalse(plainTexts(*self.frames(b"ok", b"x%cx" % bad)), bad)

    def test_noise_for_every_size(self) -> None:
        """Every size's header noise is right, whatever the size's low byte."""
        for size in range(1, MAX_PAYLOAD + 1):
            data = HEADER.pack(T.SAY, size) + b"a" * size
            self.assertTrue(plainTexts(data, SAY_HEADER_NOISE[size]), size)


class SpeakerFirstTests(SynchronousTestCase):
    """The fan-out writes to whoever spoke last before the others, on the
    bulk path and the frame path: its copy is its acknowledgement."""

    def test_the_speaker_is_written_first(self) -> None:
        server = Server(rate_limit=0)
        peers = server.users(b"a", b"b", b"c")
        order: list[bytes] = []
        for peer in peers:
            session = peer.proto.session
            session.writeWith(
                lambda data, name=peer.entry, write=session.write: (
                    order.append(name.rsplit(b".", 1)[-1]),
                    write(data),
                )
            )
        a, b, c = peers
        for speaker, frames in [
            (b, encode(T.SAY, b"plain") * 3),  # the bulk path
            (c, encode(T.SAY, "caf\u00e9".encode())),  # frame by frame
            (a, encode(T.SAY, b"x")),
        ]:
            order.clear()
            speaker.sendRaw(frames)
            server.clock.advance(0)
            self.assertEqual(order[0], speaker.entry.rsplit(b".", 1)[-1])
            self.assertEqual(sorted(order), [b"a", b"b", b"c"])
        for peer in peers:
            said = [p for t, p in peer.received() if t == T.MESSAGE]
            self.assertEqual(len(said), 5)
