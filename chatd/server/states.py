"""The daemon's lifecycle as one explicit state machine.

A table rather than Automat: the service's transitions carry no inputs or
outputs of their own (the service does the work, then records the state), so
a dict of allowed moves says everything and is what an operator reads in
docs/operations.md.  Every move is logged; an impossible one raises, because
a silent no-op would hide a bug (or an operator racing two admin requests).
"""

from __future__ import annotations

import enum

from twisted.logger import Logger

log = Logger(namespace="chatd")


class ServerState(enum.Enum):
    STARTING = "STARTING"
    ACTIVE = "ACTIVE"
    MAINTENANCE = "MAINTENANCE"
    REBOOTING = "REBOOTING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"


S = ServerState

#: state -> the states it may move to.  REBOOTING returns to the state it
#: came from, so a reload does not end a maintenance window by surprise.
TRANSITIONS: dict[ServerState, frozenset[ServerState]] = {
    S.STOPPED: frozenset({S.STARTING}),
    S.STARTING: frozenset({S.ACTIVE, S.FAILED, S.STOPPING}),
    S.ACTIVE: frozenset({S.MAINTENANCE, S.REBOOTING, S.STOPPING}),
    S.MAINTENANCE: frozenset({S.ACTIVE, S.REBOOTING, S.STOPPING}),
    S.REBOOTING: frozenset({S.ACTIVE, S.MAINTENANCE, S.STOPPING}),
    S.STOPPING: frozenset({S.STOPPED}),
    S.FAILED: frozenset({S.STOPPING, S.STOPPED}),
}


class InvalidTransition(Exception):
    """A move the table does not allow (e.g. maintenance while stopping)."""

    def __init__(self, old: ServerState, new: ServerState) -> None:
        super().__init__(f"{old.value} -> {new.value} is not allowed")
        self.old = old
        self.new = new


class Lifecycle:
    """The current state, moved only along :data:`TRANSITIONS`, with a log line."""

    def __init__(self, state: ServerState = S.STOPPED) -> None:
        self.state = state

    def allowed(self, new: ServerState) -> bool:
        return new in TRANSITIONS[self.state]

    def check(self, new: ServerState) -> None:
        """Raise :class:`InvalidTransition` unless ``new`` is reachable now."""
        if not self.allowed(new):
            raise InvalidTransition(self.state, new)

    def enter(self, new: ServerState, why: str = "") -> None:
        self.check(new)
        log.info(
            "state {old} -> {new}{why}",
            old=self.state.value,
            new=new.value,
            why=f" ({why})" if why else "",
        )
        self.state = new
