"""The room's roster in a cluster: names as Redis leases, ids from INCR.

A name is ``SET NX`` to this node, with the node's TTL, and the heartbeat
renews it (the ``heartbeat`` script): unique across the cluster, and freed
by the reaper when this node is gone.  While Redis cannot be reached,
claims fail at once; the names released meanwhile are freed when it is back.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from chatd.cluster.redislink import ClusterUnavailable, RedisLink
from chatd.cluster.standing import Standing
from chatd.core.roster import MAX_ID, PALETTE, User


class LeaseRoster:
    """Claims and releases of names, for this node's lease."""

    def __init__(self, link: RedisLink, standing: Standing) -> None:
        self.link = link
        self.standing = standing
        self._owedReleases: dict[bytes, None] = {}

    def claim(self, name: bytes) -> Deferred[User | None]:
        standing = self.standing
        if not (standing.registered and self.link.up):
            return defer.fail(ClusterUnavailable("the cluster is unreachable"))
        d = self.link.script(
            "claim", standing.name, standing.token, name.lower(), standing.ttlMs, MAX_ID
        )

        def claimed(uid: int) -> User | None:
            uid = int(uid)
            if uid == 0:
                return None
            if uid < 0:
                raise OverflowError("user ids exhausted")
            standing.maxId = max(standing.maxId, uid)
            return User(uid, PALETTE[(uid - 1) % len(PALETTE)], name)

        def failed(failure: Failure) -> Failure:
            standing.checkLease(failure)
            return Failure(ClusterUnavailable(failure.getErrorMessage()))

        return d.addCallbacks(claimed, failed)

    def release(self, user: User) -> None:
        self.releaseName(user.name)

    def releaseName(self, name: bytes) -> Deferred[None] | None:
        """Free ``name``; the Deferred (None when nothing was sent) fires
        once Redis has done it."""
        standing = self.standing
        if not (standing.registered or standing.recovering):
            return None  # the lease is gone: so are its names (the reaper's)
        lower = name.lower()
        if not self.link.up or standing.recovering:
            self._owedReleases[lower] = None
            return None
        d = self.link.script("release", standing.name, lower)
        d.addErrback(lambda f: self._owedReleases.__setitem__(lower, None))
        return d

    def payReleases(self) -> None:
        """Free the names released while Redis was away."""
        for lower in list(self._owedReleases):
            del self._owedReleases[lower]
            self.releaseName(lower)

    def forget(self) -> None:
        """The lease is lost: its names are the reaper's to free."""
        self._owedReleases.clear()
