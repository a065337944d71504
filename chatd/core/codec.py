"""The seam between the session and its front end's wire format.

The session speaks in semantic inputs (its methods :meth:`hello`,
:meth:`say`, ...: see :class:`chatd.core.session.Session`) and semantic
outputs: it asks its connection's :class:`IClientCodec` for the bytes
that say "welcome", "this error", "these users", "this event" to that
client, and writes them in request order.  The binary front end (TCP, TLS,
unix, WebSocket) spells them as chatd frames
(:class:`chatd.server.binary.BinaryCodec`); another front end (IRC) spells
them its own way, with the same rules, because the rules are the session's.

An event is encoded once per codec, not once per recipient: a codec
memoises what it makes of an event (the binary codec's is the frame the
event was built with).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from chatd.core.events import Event
    from chatd.core.roster import Replica, User
    from chatd.core.rules import ErrorCode


class IClientCodec(Interface):
    """How one front end spells the session's outputs for its client."""

    name = Attribute("Short name of the wire format, e.g. 'binary'.")

    def welcome(user: User) -> bytes:
        """The handshake's answer: ``user`` is this client's name, id, colour."""

    def echo(payload: bytes) -> bytes:
        """The answer to an ECHO."""

    def pong(payload: bytes) -> bytes:
        """The answer to a PING."""

    def error(code: ErrorCode, text: str | None) -> bytes:
        """An ERROR (``text`` None: the code's standard text)."""

    def notice(code: str, text: str) -> bytes:
        """A server NOTICE (maintenance, shutdown...)."""

    def users(replica: Replica) -> list[bytes]:
        """The answer to WHO: the active users of ``replica``."""

    def event(event: Event) -> bytes:
        """A sequenced or targeted event (MESSAGE, JOIN, LEAVE, WHISPERED).

        A :class:`~chatd.core.events.Messages` is a run of SAYs a binary
        client sent in one read, carried as ``count`` MESSAGE frames: a
        codec of another format spells each of them."""

    # -- protocol 1.2 (docs/protocol.md) --

    def version(minor: int) -> bytes:
        """The answer to a client that asked for 1.2 or later: ``1.minor``."""

    def rooms(listing: list[tuple[bytes, int, bytes]]) -> list[bytes]:
        """The answer to LIST: (name, users, topic) of every room."""

    def members(users: list[User]) -> list[bytes]:
        """The answer to ROOM_WHO: a room's members, in the order they came."""
