"""The main process's resume authority for ``--workers`` (protocol 1.2).

One place decides, so a token resumes once across workers and a window
ends once: :class:`ResumeAuthority` keeps each resumable user's token
digest and the worker holding it, runs the detached users' windows, and
answers the workers' replays and HISTORY from main's own history, which
is whole (main sequences every event; a worker sees a room's messages
only while it serves a member, :mod:`chatd.cluster.roomrouting`).

A RESUME on worker B of a user held by worker A: the token is spent, A is
told HANDOVER (it drops the session without a LEAVE), the user's name and
rooms are B's from this point of the order, and B builds the session.  Its
REPLAY is answered after main flushed the turn's BATCH, so B's order
stands exactly where the replay ends when B reads the answer and goes
live (the worker's side: :mod:`chatd.cluster.resumelink`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from zope.interface import implementer

from chatd.cluster import link, resumewire
from chatd.core.events import Event, Join, Kick, Leave
from chatd.core.resumes import resumeFigures
from chatd.core.sequencer import IEventSink

if TYPE_CHECKING:
    from chatd.cluster.authority import Authority, Names
    from chatd.cluster.handle import WorkerHandle
    from chatd.core.history import History

log = Logger(namespace="chatd")


class _Kept:
    """One resumable user: its token's digest, its worker, its window."""

    __slots__ = ("digest", "worker", "window")

    def __init__(self, digest: bytes, worker: WorkerHandle) -> None:
        self.digest = digest
        self.worker = worker
        self.window: Any = None

    def stopWindow(self) -> None:
        if self.window is not None and self.window.active():
            self.window.cancel()
        self.window = None


@implementer(IEventSink)
class ResumeAuthority:
    """Tokens, windows and history for every worker (module doc)."""

    def __init__(
        self,
        authority: Authority,
        names: Names,
        callLater: Callable[..., Any],
        window: Callable[[], float],
    ) -> None:
        self.authority = authority
        self.names = names
        self._callLater = callLater
        self._window = window
        #: main's history of every room (set once main's rooms exist).
        self.history: History | None = None
        self._kept: dict[int, _Kept] = {}
        self._digests: dict[bytes, int] = {}
        #: Active users (a RESUME takes only an active user back).
        self._active: set[int] = set()
        authority.subscribe(self)

    # -- the order: who is active, who was kicked ---------------------------

    def deliver(self, event: Event) -> None:
        kind = type(event)
        if kind is Join:
            self._active.add(event.user.id)  # type: ignore[attr-defined]
        elif kind is Leave:
            self._active.discard(event.user.id)  # type: ignore[attr-defined]
            self._drop(event.user.id)  # type: ignore[attr-defined]
        elif kind is Kick:  # a kicked user is not resumed, detached or not
            self._drop(event.target.id)  # type: ignore[union-attr]

    # -- from the workers ---------------------------------------------------

    def message(self, worker: WorkerHandle, kind: int, payload: bytes) -> None:
        """TOKEN, FORGET, KEPT, RESUME, REPLAY or HISTORY from ``worker``."""
        if kind in (link.TOKEN, link.FORGET, link.KEPT):
            if len(payload) < link.U32.size:
                raise link.LinkError("short resume message")
            (uid,) = link.U32.unpack_from(payload)
            if kind == link.TOKEN:
                self._issued(worker, uid, payload[link.U32.size :])
            elif kind == link.FORGET:
                if self._holds(worker, uid):
                    self._drop(uid)
            elif self._holds(worker, uid):
                self._detached(uid)
            return
        req, body = resumewire.parseRequest(payload)
        if kind == link.RESUME:
            answer = self._resume(worker, body)
        elif kind == link.REPLAY:
            self.authority.flush()  # the worker's order reaches the replay's end
            answer = self._replay(body)
        else:
            self.authority.flush()
            answer = self._last(body)
        worker.send(link.ANSWER, resumewire.request(req, answer))

    def workerGone(self, worker: WorkerHandle) -> None:
        """``worker`` is gone or cut off: its users resume nothing (their
        LEAVEs are sequenced by :meth:`Names.forget`)."""
        for uid in [u for u, kept in self._kept.items() if kept.worker is worker]:
            self._drop(uid)

    def report(self) -> dict[str, object]:
        """/status's ``resume`` block for every worker: main alone knows
        all the tokens, the windows running and the whole history."""
        detached = sum(1 for kept in self._kept.values() if kept.window is not None)
        return resumeFigures(self._window(), detached, len(self._kept), self.history)

    # -- the steps --------------------------------------------------------------

    def _holds(self, worker: WorkerHandle, uid: int) -> bool:
        kept = self._kept.get(uid)
        return kept is not None and kept.worker is worker

    def _issued(self, worker: WorkerHandle, uid: int, digest: bytes) -> None:
        if uid not in worker.uids:
            return  # not this worker's user (any more)
        self._drop(uid)
        self._kept[uid] = _Kept(digest, worker)
        self._digests[digest] = uid

    def _detached(self, uid: int) -> None:
        kept = self._kept[uid]
        kept.stopWindow()
        kept.window = self._callLater(self._window(), self._windowOver, uid)

    def _windowOver(self, uid: int) -> None:
        kept = self._kept.get(uid)
        if kept is None:
            return
        kept.window = None
        self._drop(uid)
        log.info("resume window over id={id} worker={k}", id=uid, k=kept.worker.index)
        kept.worker.send(link.EXPIRE, link.U32.pack(uid))

    def _drop(self, uid: int) -> None:
        kept = self._kept.pop(uid, None)
        if kept is not None:
            kept.stopWindow()
            self._digests.pop(kept.digest, None)

    def _resume(self, worker: WorkerHandle, digest: bytes) -> bytes:
        """Spend the token; the user is ``worker``'s from now on."""
        uid = self._digests.pop(digest, None)
        kept = self._kept.pop(uid, None) if uid is not None else None
        user = self.names.users.get(uid) if uid is not None else None
        if kept is None or user is None or uid not in self._active:
            if kept is not None:
                kept.stopWindow()
            return bytes([resumewire.REFUSED])
        kept.stopWindow()
        old = kept.worker
        old.send(link.HANDOVER, link.U32.pack(user.id))
        self.names.move(user.id, old, worker)
        self.authority.routing.move(user.id, worker)
        log.info(
            "resume handed over id={id} worker={a} to worker={b}",
            id=user.id,
            a=old.index,
            b=worker.index,
        )
        return bytes([resumewire.RESUMED]) + user.entry

    def _replay(self, body: bytes) -> bytes:
        history = self.history
        since = resumewire.parseSince(body)
        if history is None:
            return b""
        return resumewire.replayBody({k: history.after(k, n) for k, n in since.items()})

    def _last(self, body: bytes) -> bytes:
        roomKey, count, before = resumewire.parseAsk(body)
        history = self.history
        if history is None:
            return b""
        return resumewire.lastBody(
            history.last(roomKey, min(count, history.limit), before)
        )
