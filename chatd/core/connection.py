"""A session's two sides that are not rules: its states, and the
connection it speaks through (:class:`IConnection`, given by each front
end), with :func:`settled`, how it tells a remote answer from a local one.
"""

from __future__ import annotations

import enum
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface


class State(enum.Enum):
    CONNECTED = "connected"
    NAMED = "named"
    ACTIVE = "active"
    CLOSED = "closed"


CONNECTED, NAMED, ACTIVE, CLOSED = State


def settled(d: Deferred[Any]) -> bool:
    """Whether ``d`` has its final result now.

    ``d.called`` is not enough: a Deferred whose callback returned another,
    unfired Deferred (txredisapi's calls do: a connection first, then the
    reply) is "called" but paused until that one fires.
    """
    return d.called and not d.paused


class IConnection(Interface):
    """A session's output side: one client connection of some front end."""

    number = Attribute("Connection number, for the log.")
    peer = Attribute("The client's address and port, for the log and /status.")
    host = Attribute("The client's address, for per-address limits.")
    codec = Attribute("The IClientCodec that spells outputs for this client.")

    def write(data: bytes) -> None:
        """Send whole frames after everything written before."""

    def backlog() -> int:
        """Bytes written that the client has not taken yet, as the front end
        itself counts them (its transport paused it: see the front end)."""

    def hangUp() -> None:
        """Stop reading; close once what was written has been sent."""

    def holdInput(hold: bool) -> None:
        """Stop (True) or resume handing frames to the session: it waits for
        an answer (a remote roster) and later frames must wait their turn."""

    def dropUnstarted() -> None:
        """Drop the frames written that have not begun to go out (a reader
        being cut off gets its ERROR sooner); best effort."""
