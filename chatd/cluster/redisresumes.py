"""A ``--redis`` node's resume seam: tokens and windows in Redis, the
history from the one stream (docs/cluster.md, "Resume and history").

:class:`RedisResumes` is the node's :class:`~chatd.core.resumes.IResumes`.
Every node reads the whole stream, so each keeps the history one process
keeps (:mod:`chatd.cluster.streamhistory`).  Tokens are in Redis as SHA-256 only, with the user and the node
holding its session (:mod:`chatd.cluster.resumescripts`), so a RESUME
works on any node: the ``resume`` script spends the token, moves the user
here and appends a hand-over to the stream.  This node then waits until
it has read everything before the hand-over and goes live (the session's
replay comes from this node's history, up to where it stands); the old
node, reading the hand-over, drops its session without a LEAVE.

The users of a node killed -9 that could be resumed are adopted by the
node that reaps it (:mod:`chatd.cluster.reaper`): held here as *ghosts*,
no session, until a RESUME takes them or their window ends (then their
LEAVE ``error`` is sequenced, as for any window that ends).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.cluster.reaper import Adopted
from chatd.cluster.redislink import ClusterUnavailable, text
from chatd.cluster.streamhistory import StreamHistory
from chatd.cluster.streamseq import STREAM_MAXLEN
from chatd.core.events import Event, Kick, Leave
from chatd.core.resumes import IResumes, Last, Replay, Taken, resumeFigures
from chatd.core.roster import User
from chatd.core.sequencer import IEventSink
from chatd.core.tokens import TOKEN_FORM, digest, mint
from chatd.wire import LeaveReason
from chatd.wire.eventcodec import userFromEntry

if TYPE_CHECKING:
    from chatd.cluster.node import ClusterNode
    from chatd.core.history import History
    from chatd.core.hub import Hub
    from chatd.core.session import Session

log = Logger(namespace="chatd.cluster")


@implementer(IResumes, IEventSink)
class RedisResumes:
    """Tokens and windows in Redis, history from the stream (module doc)."""

    def __init__(self, node: ClusterNode, hub: Hub) -> None:
        self.node = node
        self.link = node.link
        self.standing = node.standing
        self.seq = node.seq
        self.hub = hub
        history = hub.rooms.history
        assert history is not None
        self.history: History = history  # type: ignore[assignment]
        #: The history as this node read it from the stream.
        self.stream = StreamHistory(node, hub, self.history)
        #: user id -> this node's session holding its live token.
        self._sessions: dict[int, Session] = {}
        self._digests: dict[Session, bytes] = {}
        #: user id -> (user, token hex, window call) of users adopted from
        #: a dead node: no session here, resumable until the call.
        self._ghosts: dict[int, tuple[User, bytes, Any]] = {}
        self.seq.resumes = self
        self.seq.subscribe(self)  # a kick ends an adopted user too
        node.membership.reaper.adopter = self

    @property
    def window(self) -> float:
        return float(self.hub.config.resume_window)

    @property
    def limit(self) -> int:
        return int(self.history.limit)

    # -- IResumes -------------------------------------------------------------

    def issue(self, session: Session) -> bytes:
        token, kept = mint()
        user = session.user
        assert user is not None
        self._drop(session)
        self._sessions[user.id] = session
        self._digests[session] = hexed = kept.hex().encode()
        self._run("token", self.standing.token, user.id, hexed, user.name.lower())
        return token

    def take(self, token: bytes) -> Deferred[Taken | None]:
        if not TOKEN_FORM.match(token):
            return succeed(None)
        standing = self.standing
        if not (standing.registered and self.link.up):
            return fail(ClusterUnavailable("the cluster is unreachable"))
        d = self.link.script(
            "resume",
            standing.name,
            standing.token,
            digest(token).hex(),
            standing.ttlMs,
            STREAM_MAXLEN,
        )

        def failed(failure: Failure) -> Failure:
            standing.checkLease(failure)
            return Failure(ClusterUnavailable(failure.getErrorMessage()))

        return d.addCallbacks(self._took, failed)

    def forget(self, session: Session) -> None:
        hexed = self._drop(session)
        if hexed is not None and session.user is not None:
            self._run("forget", session.user.id, hexed)

    def keep(self, session: Session, window: float) -> Any:
        hexed = self._digests.get(session)
        if hexed is not None:
            deadline = int((self.standing.clock.seconds() + window) * 1000)
            self._run("detach", session.user.id, hexed, deadline)  # type: ignore[union-attr]
        return self.standing.clock.callLater(window, self._windowEnds, session)

    def replay(self, since: dict[bytes, int]) -> Deferred[Replay]:
        return succeed({k: self.stream.after(k, n) for k, n in since.items()})

    def last(self, roomKey: bytes, count: int, before: int | None) -> Deferred[Last]:
        return succeed(self.history.last(roomKey, min(count, self.limit), before))

    def __len__(self) -> int:
        return len(self._digests) + len(self._ghosts)

    # -- RESUME: the hand-over ---------------------------------------------------

    def _took(self, reply: list[Any]) -> Deferred[Taken | None] | None:
        """The ``resume`` script's answer: the user is this node's now; its
        Taken once this node has read everything before the hand-over."""
        if int(reply[0]) != 1:
            return None
        user = userFromEntry(bytes(reply[1]))
        seq, old, since = int(reply[2]), text(reply[3]), text(reply[4])
        bucket = None
        if old == self.standing.name:
            session = self._sessions.pop(user.id, None)
            if session is not None:
                self._digests.pop(session, None)
                bucket = session._bucket
                session._handOver()
            self._dropGhost(user.id)
        else:
            self.seq.local[user.id] = user
            if since:
                self.seq.since[user.id] = since.split(" ")[0]
            self.standing.maxId = max(self.standing.maxId, user.id)
        log.info(
            "resume handed over id={id} from node {old} to node {new} at {seq}",
            id=user.id,
            old=old,
            new=self.standing.name,
            seq=seq,
        )
        taken = Taken(user, bucket)

        def lost(failure: Failure) -> Failure:
            # The order was lost before the hand-over was read: the user
            # is this node's and nobody's session: it leaves.
            self.node.roster.release(user)
            self.seq.submit(Leave(user, LeaveReason.ERROR)).addErrback(lambda f: None)
            return failure

        # The hand-over read back: all before it delivered here, and the
        # user's rooms read (their history seeded) from there on.
        ready = self.seq.whenHandedOver(user.id, seq)
        return ready.addCallbacks(lambda _: taken, lost)

    def handedOver(self, handOver: bytes, toNode: bytes) -> None:
        """A hand-over read from the stream: if the user was ours and went
        to another node, its session here stops, without a LEAVE."""
        uidText, _, old = bytes(handOver).partition(b" ")
        me = self.standing.name.encode()
        if old != me or bytes(toNode) == me:
            return
        uid = int(uidText)
        self.seq.local.pop(uid, None)
        self.seq.since.pop(uid, None)
        self._dropGhost(uid)
        session = self._sessions.pop(uid, None)
        if session is not None:
            self._digests.pop(session, None)
            session._handOver()
        log.info("resume: id={id} went to node {node}", id=uid, node=text(toNode))

    # -- windows ------------------------------------------------------------------

    def _windowEnds(self, session: Session) -> None:
        """The window is over: spend the token (unless a RESUME elsewhere
        has), then the LEAVE, as in one process."""
        hexed = self._digests.get(session)
        if hexed is None or session.user is None:
            return self._end(session)
        d = self.link.script("forget", self.standing.name, session.user.id, hexed)

        def spent(ours: int) -> None:
            if int(ours) == 1:
                self._drop(session)
                return self._end(session)
            # Resumed elsewhere (the hand-over is on its way), or another
            # node holds the token now (it reaped us; Redis lost it):
            # whoever holds it ends the user.  Should no hand-over come,
            # the session goes a TTL later, silently.
            self.standing.later(self.standing.ttl, lambda: self._silently(session))

        def failed(failure: Failure) -> None:
            self.standing.later(1, lambda: self._windowEnds(session))

        d.addCallbacks(spent, failed)

    def _end(self, session: Session) -> None:
        if session in self.hub.detached:
            session._windowOver()

    def _silently(self, session: Session) -> None:
        """A detached session whose token is no longer this node's goes
        without a LEAVE (the token's holder sequences it)."""
        if session not in self.hub.detached or session.user is None:
            return
        uid = session.user.id
        if self._sessions.get(uid, session) is session and uid not in self._ghosts:
            self.seq.local.pop(uid, None)
            self.seq.since.pop(uid, None)
        session._handOver()

    def adopt(self, users: list[Adopted]) -> None:
        """Resumable users of a dead node are ours until their deadlines."""
        clock = self.standing.clock
        for user, hexed, deadline in users:
            self._dropGhost(user.id)
            wait = max(0.0, deadline / 1000 - clock.seconds())
            call = clock.callLater(wait, self._ghostEnds, user.id)
            self._ghosts[user.id] = (user, hexed, call)
            self.seq.local[user.id] = user
            self.standing.maxId = max(self.standing.maxId, user.id)
            log.info(
                "resume: id={id} name={name} kept {wait:.0f}s for a resume",
                id=user.id,
                name=user.display,
                wait=wait,
            )

    def deliver(self, event: Event) -> None:
        """IEventSink: an operator's kick of an adopted user ends it (as it
        ends a detached session: LEAVE ``kicked``)."""
        if type(event) is Kick and event.target.id in self._ghosts:  # type: ignore[union-attr]
            self._dropGhost(event.target.id, LeaveReason.KICKED)  # type: ignore[union-attr]

    def _ghostEnds(self, uid: int) -> None:
        self._dropGhost(uid, LeaveReason.ERROR)

    def _dropGhost(self, uid: int, leave: LeaveReason | None = None) -> None:
        """Forget an adopted user (resumed, or gone elsewhere); with
        ``leave``, it leaves, if its token was still this node's."""
        ghost = self._ghosts.pop(uid, None)
        if ghost is None:
            return
        user, hexed, call = ghost
        if call.active():
            call.cancel()
        if leave is None:
            return
        d = self.link.script("forget", self.standing.name, uid, hexed)

        def spent(ours: int) -> None:
            if int(ours) == 1:
                self.node.roster.release(user)
                self.seq.submit(Leave(user, leave)).addErrback(lambda f: None)

        d.addCallbacks(spent, lambda f: None)

    def report(self) -> dict[str, object]:
        """/status's ``resume`` block: users adopted from a dead node are
        detached users too."""
        detached = len(self.hub.detached) + len(self._ghosts)
        return resumeFigures(self.window, detached, len(self), self.history)

    # -- helpers ----------------------------------------------------------------

    def _drop(self, session: Session) -> bytes | None:
        """Forget ``session``'s token here; its hex digest, if it had one."""
        hexed = self._digests.pop(session, None)
        if hexed is not None and session.user is not None:
            if self._sessions.get(session.user.id) is session:
                del self._sessions[session.user.id]
        return hexed

    def _run(self, name: str, *args: object) -> None:
        """A script whose answer only matters if it fails (logged)."""
        d = self.link.script(name, self.standing.name, *args)
        d.addErrback(
            lambda f: log.warn(
                "cluster: resume {name} failed: {why}", name=name, why=text(f.value)
            )
        )
