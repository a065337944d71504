"""The resume authority of ``--workers`` in memory: main's
:class:`~chatd.cluster.resumes.ResumeAuthority` with fake worker handles on
a ``task.Clock``, a worker's :class:`~chatd.cluster.resumelink.RemoteResumes`
with a recorded link, and the payloads of :mod:`chatd.cluster.resumewire`.
tests/test_resume_workers_e2e.py runs the whole thing in real processes."""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.trial import unittest

from chatd.cluster import link, resumewire
from chatd.cluster.authority import Authority, Names
from chatd.cluster.remote import LinkLost
from chatd.cluster.resumelink import RemoteResumes
from chatd.cluster.resumes import ResumeAuthority
from chatd.core.events import Join, Kick, Message
from chatd.core.history import History
from chatd.core.roomevents import RoomJoin, RoomMessage
from chatd.core.roster import Replica, User
from chatd.core.tokens import digest
from chatd.wire import FrameType as T
from chatd.wire import LeaveReason
from tests.memory import ChatTestCase

WINDOW = 60.0


class FakeWorker:
    """A worker handle that records what main sends it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.uids: set[int] = set()
        self.sent: list[tuple[int, bytes]] = []

    def send(self, kind: int, payload: bytes = b"") -> None:
        self.sent.append((kind, payload))

    def sendBatch(self, own: list[int], blob: bytes) -> None:
        self.send(link.BATCH, blob)

    def kinds(self) -> list[int]:
        return [kind for kind, _ in self.sent]


class AuthorityTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.authority = Authority(self.clock.callLater)
        self.names = Names(self.authority)
        self.resumes = ResumeAuthority(
            self.authority, self.names, self.clock.callLater, lambda: WINDOW
        )
        self.resumes.history = self.history = History()
        self.authority.subscribe(_Recorder(self.history))
        self.replica = Replica()
        self.authority.subscribe(self.replica)
        self.a, self.b = FakeWorker(1), FakeWorker(2)
        self.authority.workers[:] = [self.a, self.b]  # type: ignore[list-item]

    def user(self, worker: FakeWorker, name: bytes) -> tuple[User, bytes]:
        """An active user of ``worker`` with a token: (user, its digest)."""
        self.names.claim(worker, 1, name)  # type: ignore[arg-type]
        user = self.names.users[max(worker.uids)]
        self.authority.submit(Join(user), worker)  # type: ignore[arg-type]
        kept = digest(b"token-" + name)
        self.message(worker, link.TOKEN, link.U32.pack(user.id) + kept)
        return user, kept

    def message(self, worker: FakeWorker, kind: int, payload: bytes) -> None:
        self.resumes.message(worker, kind, payload)  # type: ignore[arg-type]

    def answer(self, worker: FakeWorker) -> bytes:
        kind, payload = worker.sent[-1]
        self.assertEqual(kind, link.ANSWER)
        return resumewire.parseRequest(payload)[1]

    def resume(self, worker: FakeWorker, kept: bytes, req: int = 7) -> bytes:
        self.message(worker, link.RESUME, resumewire.request(req, kept))
        return self.answer(worker)

    def test_resume_on_another_worker_hands_over(self) -> None:
        ann, kept = self.user(self.a, b"ann")
        self.authority.submit(RoomJoin(b"den", ann), self.a)  # type: ignore[arg-type]
        self.message(self.a, link.KEPT, link.U32.pack(ann.id))
        answer = self.resume(self.b, kept)
        self.assertEqual(answer, bytes([resumewire.RESUMED]) + ann.entry)
        self.assertIn((link.HANDOVER, link.U32.pack(ann.id)), self.a.sent)
        self.assertEqual((self.a.uids, self.b.uids), (set(), {ann.id}))
        self.assertEqual(set(self.authority.routing.routes[b"den"]), {self.b})
        # The window stopped; the token resumes once.
        self.clock.advance(WINDOW * 2)
        self.assertNotIn(link.EXPIRE, self.a.kinds())
        self.assertEqual(self.resume(self.a, kept), bytes([resumewire.REFUSED]))

    def test_window_end_tells_the_holder(self) -> None:
        ann, kept = self.user(self.a, b"ann")
        self.message(self.a, link.KEPT, link.U32.pack(ann.id))
        self.clock.advance(WINDOW - 1)
        self.assertNotIn(link.EXPIRE, self.a.kinds())
        self.clock.advance(1)
        self.assertEqual(self.a.sent[-1], (link.EXPIRE, link.U32.pack(ann.id)))
        self.assertEqual(self.resume(self.b, kept), bytes([resumewire.REFUSED]))

    def test_kick_leave_forget_and_a_dead_worker_spend_the_token(self) -> None:
        ann, annKept = self.user(self.a, b"ann")
        bob, bobKept = self.user(self.a, b"bob")
        carol, carolKept = self.user(self.b, b"carol")
        dave, daveKept = self.user(self.a, b"dave")
        self.authority.submit(Kick(ann))
        self.names.forget(self.b, LeaveReason.ERROR, self.replica)  # type: ignore[arg-type]
        self.message(self.b, link.FORGET, link.U32.pack(bob.id))  # not its user
        self.message(self.a, link.FORGET, link.U32.pack(dave.id))
        for kept in (annKept, carolKept, daveKept):
            self.assertEqual(self.resume(self.b, kept), bytes([resumewire.REFUSED]))
        self.resumes.workerGone(self.a)  # type: ignore[arg-type]
        self.assertEqual(self.resume(self.b, bobKept), bytes([resumewire.REFUSED]))

    def test_a_named_user_not_yet_active_is_not_resumed(self) -> None:
        self.names.claim(self.a, 1, b"ann")  # type: ignore[arg-type]
        (uid,) = self.a.uids
        self.message(self.a, link.TOKEN, link.U32.pack(uid) + digest(b"t"))
        self.assertEqual(self.resume(self.b, digest(b"t")), bytes([resumewire.REFUSED]))

    def test_replay_comes_after_the_turn_it_covers(self) -> None:
        ann, _ = self.user(self.a, b"ann")
        self.clock.advance(0)
        self.authority.submit(Message(ann, b"late"), self.a)  # type: ignore[arg-type]
        since = {b"lobby": 0}
        self.message(
            self.b, link.REPLAY, resumewire.request(3, resumewire.sinceBody(since))
        )
        self.assertEqual(self.b.kinds()[-2:], [link.BATCH, link.ANSWER])
        replay = resumewire.parseReplay(self.answer(self.b))
        gone, held = replay[b"lobby"]
        self.assertIsNone(gone)
        self.assertEqual([type(e) for e, _ in held], [Join, Message])
        self.assertEqual(held[-1][0].seq, self.authority.last)

    def test_history_answer(self) -> None:
        ann, _ = self.user(self.a, b"ann")
        for text in (b"one", b"two", b"three"):
            self.authority.submit(RoomMessage(b"den", ann, text), self.a)  # type: ignore[arg-type]
        ask = resumewire.askBody(b"den", 2, None)
        self.message(self.b, link.HISTORY, resumewire.request(4, ask))
        events = resumewire.parseLast(self.answer(self.b))
        self.assertEqual(
            [e.frame.rsplit(b".", 1)[1] for e, _, _ in events], [b"two", b"three"]
        )


class _Recorder:
    """Main's rooms, as far as the history goes: every event recorded."""

    def __init__(self, history: History) -> None:
        self.history = history

    def deliver(self, event: Any) -> None:
        room = event.room or b"lobby"
        if event.target is None:
            self.history.record(room.lower(), event)


class RemoteTests(unittest.TestCase):
    def setUp(self) -> None:
        self.sent: list[tuple[int, bytes]] = []
        self.resumes = RemoteResumes(
            lambda kind, payload: self.sent.append((kind, payload))
        )

    def test_only_the_digest_crosses_the_link(self) -> None:
        unnamed = _Session(4)
        unnamed.user = None  # type: ignore[assignment]
        self.resumes.forget(unnamed)  # type: ignore[arg-type]
        session = _Session(5)
        token = self.resumes.issue(session)  # type: ignore[arg-type]
        self.assertEqual(self.sent, [(link.TOKEN, link.U32.pack(5) + digest(token))])
        self.resumes.forget(session)  # type: ignore[arg-type]
        self.resumes.forget(session)  # type: ignore[arg-type]
        self.assertEqual(self.sent[1:], [(link.FORGET, link.U32.pack(5))])

    def test_take(self) -> None:
        got: list[Any] = []
        self.resumes.take(b"not a token!").addCallback(got.append)
        self.assertEqual((got, self.sent), ([None], []))
        self.resumes.take(b"abc").addCallback(got.append)
        kind, payload = self.sent[-1]
        req, body = resumewire.parseRequest(payload)
        self.assertEqual((kind, body), (link.RESUME, digest(b"abc")))
        user = User(9, 33, b"ann")
        answer = bytes([resumewire.RESUMED]) + user.entry
        self.resumes.message(link.ANSWER, resumewire.request(req, answer))
        self.assertEqual(
            (got[-1].user.id, got[-1].user.name, got[-1].bucket), (9, b"ann", None)
        )

    def test_handover_and_expire_reach_the_session(self) -> None:
        session = _Session(5)
        self.resumes.issue(session)  # type: ignore[arg-type]
        self.resumes.message(link.EXPIRE, link.U32.pack(5))
        self.assertEqual(session.calls, [])  # not detached: nothing to end
        session._window = object()
        self.resumes.message(link.EXPIRE, link.U32.pack(5))
        self.resumes.message(link.HANDOVER, link.U32.pack(5))
        self.resumes.message(link.HANDOVER, link.U32.pack(5))
        self.assertEqual(session.calls, ["windowOver", "handOver"])
        self.resumes.forget(session)  # type: ignore[arg-type]
        self.assertEqual([k for k, _ in self.sent], [link.TOKEN])  # main decided

    def test_link_lost_fails_what_is_asked(self) -> None:
        failures: list[Any] = []
        self.resumes.replay({b"lobby": 1}).addErrback(failures.append)
        self.resumes.linkLost("gone")
        self.resumes.last(b"lobby", 1, None).addErrback(failures.append)
        self.assertEqual([f.check(LinkLost) for f in failures], [LinkLost, LinkLost])
        with self.assertRaises(link.LinkError):
            self.resumes.message(link.ANSWER, resumewire.request(99, b""))


class _Session:
    def __init__(self, uid: int) -> None:
        self.user = User(uid, 1, b"u%d" % uid)
        self.calls: list[str] = []
        self._window: object = None

    def _handOver(self) -> None:
        self.calls.append("handOver")

    def _windowOver(self) -> None:
        self.calls.append("windowOver")


class WorkerSessionTests(ChatTestCase):
    """A session whose resumes are main's: it waits for each answer."""

    config = {"resume_window": 60.0, "idle_timeout": 0.0}

    def setUp(self) -> None:
        super().setUp()
        self.sent: list[tuple[int, bytes]] = []
        self.remote = RemoteResumes(lambda kind, data: self.sent.append((kind, data)))
        self.server.factory.hub.resumes = self.remote

    def answer(self, body: bytes) -> None:
        req, _ = resumewire.parseRequest(self.sent[-1][1])
        self.remote.message(link.ANSWER, resumewire.request(req, body))
        self.server.clock.advance(0)  # held input goes on

    def test_input_waits_for_each_answer(self) -> None:
        bob = self.server.active(b"bob")
        peer = self.server.connect()
        peer.send(T.VERSION, b"1.2")
        peer.send(T.RESUME, b"abc")
        peer.send(T.SINCE, b"lobby.1")
        peer.send(T.READY)
        self.assertEqual(peer.types(), [T.VERSION])  # SINCE, READY wait
        self.answer(bytes([resumewire.RESUMED]) + bob.entry)
        self.assertEqual(self.sent[-1][0], link.REPLAY)
        self.assertEqual(peer.types(), [T.WELCOME, T.TOKEN])
        self.answer(resumewire.replayBody({b"lobby": (None, [])}))
        peer.send(T.ECHO, b"e")
        self.assertEqual(peer.received(), [(T.ECHO, b"e")])

    def test_no_answer_is_unavailable_not_bad_token(self) -> None:
        peer = self.server.connect()
        peer.send(T.VERSION, b"1.2")
        peer.send(T.RESUME, b"abc")
        self.assertEqual(peer.types(), [T.VERSION])
        self.remote.linkLost("main is gone")
        self.assertOnlyError(peer, "UNAVAILABLE")
