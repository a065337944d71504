"""Resume tokens: the secret that takes a dropped session back.

A token is 32 random URL-safe characters (192 bits, :mod:`secrets`),
bound to one session and spent by the RESUME that uses it.  Only its
SHA-256 is kept, so neither memory dumps nor logs hold a usable token,
and a lookup compares digests (no timing leak on the secret itself).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatd.core.session import Session

#: What a token looks like on the wire (anything else is BAD_TOKEN unread).
TOKEN_FORM = re.compile(rb"[A-Za-z0-9_-]{1,64}\Z")


def digest(token: bytes) -> bytes:
    """What is kept of ``token``: its SHA-256."""
    return hashlib.sha256(token).digest()


def mint() -> tuple[bytes, bytes]:
    """A new token and its digest."""
    token = secrets.token_urlsafe(24).encode()
    return token, digest(token)


class Tokens:
    """Digest of a live token -> the session it resumes."""

    def __init__(self) -> None:
        self._sessions: dict[bytes, Session] = {}
        self._digests: dict[Session, bytes] = {}

    def issue(self, session: Session) -> bytes:
        """A new token for ``session``; any earlier one is spent."""
        self.forget(session)
        token, kept = mint()
        self._sessions[kept] = session
        self._digests[session] = kept
        return token

    def restore(self, session: Session, kept: bytes) -> None:
        """``session`` is resumed by the token whose digest is ``kept`` (a
        detached user read back after a crash: --history-db)."""
        self.forget(session)
        self._sessions[kept] = session
        self._digests[session] = kept

    def digestOf(self, session: Session) -> bytes | None:
        """The digest of ``session``'s live token (what a journal keeps)."""
        return self._digests.get(session)

    def take(self, token: bytes) -> Session | None:
        """The session ``token`` resumes (spent now), or None."""
        if not TOKEN_FORM.match(token):
            return None
        session = self._sessions.pop(digest(token), None)
        if session is not None:
            del self._digests[session]
        return session

    def forget(self, session: Session) -> None:
        """``session`` is gone for good: its token resumes nothing."""
        kept = self._digests.pop(session, None)
        if kept is not None:
            del self._sessions[kept]

    def __len__(self) -> int:
        return len(self._sessions)
