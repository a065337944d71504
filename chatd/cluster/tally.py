"""What the main process of ``--workers`` reports: every worker's counts.

Each worker sends STATS every second; :class:`Tally` adds them to main's own
counters (those of workers that are gone too: the totals are Prometheus
counters and never go down) and gives the typed entries of /status and
/metrics (:class:`~chatd.server.backend.WorkerEntry`, ``RemoteUser``).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from chatd.server.backend import WORKER_COUNTERS, RemoteUser, WorkerEntry

if TYPE_CHECKING:
    from chatd.cluster.authority import Names
    from chatd.cluster.handle import WorkerHandle

#: Worker counters the main process adds to its own.
SUMMED = WORKER_COUNTERS


def counters(stats: dict[str, Any]) -> Counter[str]:
    return Counter({k: int(stats.get(k, 0)) for k in SUMMED})


def errors(stats: dict[str, Any]) -> Counter[str]:
    return Counter({str(k): int(v) for k, v in stats.get("errors", {}).items()})


class Tally:
    """Main's counters plus every worker's (module doc)."""

    def __init__(self) -> None:
        #: What workers that are gone had counted (their last STATS).
        self._departed: Counter[str] = Counter()
        self._departedErrors: Counter[str] = Counter()

    def departed(self, handle: WorkerHandle) -> None:
        """``handle`` is gone: keep what it counted."""
        self._departed.update(counters(handle.stats))
        self._departedErrors.update(errors(handle.stats))

    def snapshot(
        self,
        snap: dict[str, Any],
        workers: list[WorkerHandle],
        active: int,
        clients: int,
    ) -> dict[str, Any]:
        """``snap`` (main's own) with the workers' counts added."""
        snap["active_users"] = active
        snap["connections"] += clients
        total = self._departed.copy()
        errorCounts = Counter(snap["errors"]) + self._departedErrors
        for worker in workers:
            total.update(counters(worker.stats))
            errorCounts.update(errors(worker.stats))
        for key in SUMMED:
            snap[key] += total[key]
        snap["errors"] = dict(sorted(errorCounts.items()))
        snap["workers"] = len(workers)
        snap["worker_pids"] = ",".join(f"{w.index}={w.pid}" for w in workers)
        snap["worker_clients"] = ",".join(f"{w.index}={w.clients}" for w in workers)
        return snap

    @staticmethod
    def table(workers: list[WorkerHandle]) -> tuple[WorkerEntry, ...]:
        """/status ``workers`` and /metrics: one entry per running worker,
        its counters as of its last STATS."""
        return tuple(
            WorkerEntry(
                worker=w.index,
                pid=w.pid,
                users=len(w.uids),
                connections=w.clients,
                counters={
                    **counters(w.stats),
                    "errors": dict(sorted(errors(w.stats).items())),
                },
            )
            for w in workers
        )

    @staticmethod
    def users(workers: list[WorkerHandle], names: Names) -> tuple[RemoteUser, ...]:
        """/status ``users``: who holds a name on which worker, known here at
        once; state, peer, since (epoch seconds) and backlog come with that
        worker's last STATS (every second), None until then."""
        users = []
        for worker in workers:
            details = {
                d.get("id"): d
                for d in worker.stats.get("users", ())
                if isinstance(d, dict)
            }
            for uid in sorted(worker.uids):
                user = names.users.get(uid)
                if user is None:
                    continue
                known = details.get(uid, {})
                users.append(
                    RemoteUser(
                        id=uid,
                        name=user.display,
                        worker=worker.index,
                        state=known.get("state"),
                        peer=known.get("peer"),
                        since=known.get("since"),
                        backlog_bytes=known.get("backlog_bytes"),
                    )
                )
        return tuple(sorted(users, key=lambda u: u.id))
