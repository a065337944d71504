"""Which worker takes the next client: the choice, with no processes in it.

The least recently selected worker that has room (fewer than
``perWorker`` clients, and not on its way out) takes it, so clients spread
over the workers that run; when none has room and fewer than
``maxWorkers`` run, a new one is started for it; otherwise the server is
full.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar


class Slot(Protocol):
    """What the choice reads of a worker."""

    @property
    def clients(self) -> int: ...
    @property
    def accepting(self) -> bool: ...


W = TypeVar("W", bound=Slot)


class Dispatcher(Generic[W]):
    """Picks workers; ``spawn`` starts one (and returns it) when needed."""

    def __init__(self, maxWorkers: int, perWorker: int, spawn: Callable[[], W]) -> None:
        self.maxWorkers = maxWorkers
        self.perWorker = perWorker
        self._spawn = spawn
        # Least recently selected first (dicts keep insertion order).
        self._order: dict[W, None] = {}

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[W]:
        return iter(list(self._order))

    def add(self, worker: W) -> None:
        """A worker runs (it has not been selected yet: it goes first)."""
        self._order = {worker: None, **self._order}

    def remove(self, worker: W) -> None:
        """A worker is gone (exited or died)."""
        self._order.pop(worker, None)

    def choose(self) -> W | None:
        """The worker for a new client, or None when every one is full."""
        for worker in self._order:
            if worker.accepting and worker.clients < self.perWorker:
                del self._order[worker]
                self._order[worker] = None
                return worker
        if len(self._order) < self.maxWorkers:
            worker = self._spawn()
            self._order.pop(worker, None)
            self._order[worker] = None
            return worker
        return None
