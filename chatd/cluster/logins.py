"""The login back-off shared by the workers of ``--workers``.

A worker checks passwords itself, with the single process's rules
(:class:`~chatd.server.admission.Admission`: a locked address is refused
unchecked, a wrong password answered late).  Alone, each worker would
keep its own table, and a guesser whose connections land on N workers
would get N guesses per delay.  So each verdict a worker reaches on an
address goes to main (link LOGIN), which keeps the table of record and
tells every other worker at once, and a worker started later is told the
table.  The lock reaches the other workers within one link hop: two
guesses landing on two workers in the very same instant may both be
checked, never more than one per worker.  The nodes of ``--redis`` use
the same guard, its ``send`` a Redis PUBLISH (:mod:`.redislogins`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from zope.interface import implementer

from chatd.cluster import link
from chatd.core.hub import ILoginGuard
from chatd.server.admission import Admission, AuthBackoff, addressKey

Send = Callable[[int, bytes], None]


@implementer(ILoginGuard)
class SharedLogins:
    """A worker's login guard: its own verdicts are told to main."""

    def __init__(self, admission: Admission, send: Send) -> None:
        self.admission = admission
        self._send = send

    def locked(self, conn: Any) -> str | None:
        return self.admission.locked(conn)

    def failed(self, conn: Any) -> float:
        delay = self.admission.failed(conn)
        if delay:  # 0: the address is exempt, or the back-off is off
            key = addressKey(conn.host)
            failures = self.admission.auth.failures(key)
            self._send(link.LOGIN, link.loginPayload(key, failures, delay))
        return delay

    def succeeded(self, conn: Any) -> None:
        key = addressKey(conn.host)
        if self.admission.auth.failures(key):
            self._send(link.LOGIN, link.loginPayload(key, 0, 0))
        self.admission.succeeded(conn)

    def learned(self, payload: bytes) -> None:
        """Main's LOGIN: another worker's verdict."""
        self.admission.auth.learn(*link.parseLogin(payload))


def relay(
    table: AuthBackoff, payload: bytes, others: Iterable[Callable[[int, bytes], None]]
) -> None:
    """Main's side: record a worker's LOGIN and pass it to the others."""
    table.learn(*link.parseLogin(payload))
    for send in others:
        send(link.LOGIN, payload)


def tableFor(table: AuthBackoff) -> list[bytes]:
    """The LOGIN messages that tell a new worker the table of record."""
    return [link.loginPayload(*verdict) for verdict in table.verdicts()]
