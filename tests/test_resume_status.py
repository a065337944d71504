"""/status's ``resume`` block with ``--workers``: main's resume authority
reports every worker's detached users and main's history, in the one
process's shape.  In memory: main's factory with hand-made worker handles
on a ``task.Clock`` (tests/test_resume_workers_e2e.py runs real processes).
"""

from __future__ import annotations

from twisted.internet import task

from chatd.cluster import link, resumewire
from chatd.cluster.handle import WorkerHandle
from chatd.core.events import Message
from chatd.core.roster import User
from chatd.core.tokens import digest
from chatd.server.admin import status
from chatd.server.config import Config
from chatd.server.factory import ChatFactory
from chatd.server.service import ChatService
from tests.test_cluster import MainBase

KEYS = {
    "window",
    "detached",
    "tokens",
    "history_rooms",
    "history_events",
    "history_bytes",
}


class WorkersResumeStatusTests(MainBase):
    def setUp(self) -> None:
        super().setUp()
        self.service = ChatService(
            self.factory.config, self.clock, handleSignals=False, factory=self.factory
        )

    def resume(self) -> dict[str, object]:
        block = status(self.service)["resume"]
        assert isinstance(block, dict)
        return block

    def figures(self) -> tuple[object, object]:
        block = self.resume()
        return block["detached"], block["tokens"]

    def token(self, handle: WorkerHandle, user: User, name: bytes) -> bytes:
        kept = digest(b"token-" + name)
        payload = link.U32.pack(user.id) + kept
        self.cluster.workerMessage(handle, link.TOKEN, payload)
        return kept

    def test_detached_across_workers_then_resumed_or_expired(self) -> None:
        one, two = self.handles
        self.assertEqual(self.figures(), (0, 0))
        ann = self.claim(one, b"ann")
        bob = self.claim(two, b"bob")
        annKept = self.token(one, ann, b"ann")
        self.token(two, bob, b"bob")
        self.cluster.authority.submit(Message(ann, b"hello"), one)
        self.clock.advance(0)
        self.assertEqual(self.figures(), (0, 2))
        for handle, user in ((one, ann), (two, bob)):
            self.cluster.workerMessage(handle, link.KEPT, link.U32.pack(user.id))
        self.assertEqual(self.figures(), (2, 2))
        # ann resumes on worker 2: no longer detached, its token spent.
        request = resumewire.request(1, annKept)
        self.cluster.workerMessage(two, link.RESUME, request)
        self.assertEqual(self.figures(), (1, 1))
        self.token(two, ann, b"ann-again")  # worker 2's fresh TOKEN
        self.assertEqual(self.figures(), (1, 2))
        # bob's window ends: main tells worker 2 (EXPIRE) and forgets him.
        self.clock.advance(self.factory.config.resume_window)
        self.assertEqual(self.figures(), (0, 1))
        block = self.resume()
        self.assertEqual(block["window"], 60.0)
        history = self.cluster.resumes.history
        assert history is not None
        self.assertEqual(
            (
                block["history_rooms"],
                block["history_events"],
                block["history_bytes"],
            ),
            (history.rooms, len(history), history.heldBytes),
        )
        self.assertGreaterEqual(block["history_events"], 3)  # type: ignore[operator]

    def test_one_shape_in_both_modes(self) -> None:
        clock = task.Clock()
        single = ChatFactory(Config(), clock)
        service = ChatService(Config(), clock, handleSignals=False, factory=single)
        local = status(service)["resume"]
        assert isinstance(local, dict)
        self.assertEqual(set(local), KEYS)
        self.assertEqual(set(self.resume()), KEYS)
        self.assertEqual(local["tokens"], 0)
