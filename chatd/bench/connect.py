"""Setup: make every connection and wait until its user is ACTIVE.

At most ``connectConcurrency`` connections are being made at once; each
must be ready within ``setupTimeout``.  Whatever did not get ready is
counted by reason (:func:`classify`) into one :class:`BenchError`, so a
thousand users refused alike make one line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import cast

from twisted.internet import defer, endpoints, protocol
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from chatd.bench.config import Config
from chatd.bench.conn import Conn, SetupLost, SetupRefused
from chatd.bench.errors import setupError
from chatd.netutil import describe_failure


def classify(failure: Failure, config: Config) -> tuple[str, str]:
    """(what, detail) for a connection that did not become ready."""
    if failure.check(SetupRefused):
        return "refused", str(failure.value)
    if failure.check(SetupLost):
        return "failed", str(failure.value)
    if failure.check(defer.TimeoutError):
        timeout = config.setupTimeout
        return f"not active after {timeout:g} s (--setup-timeout)", ""
    why = describe_failure(failure, config.address, False, False)
    return "failed", why


async def connectAll(
    reactor: IReactorTime,
    config: Config,
    specs: Sequence[tuple[int, Callable[[], Conn]]],
) -> list[Conn]:
    """Connect ``(index, make)`` each to target ``index`` mod the targets;
    the ready connections, or one :class:`BenchError` for all the ones
    refused, lost or not ACTIVE within ``setupTimeout`` (the rest are then
    hung up on)."""
    # The setup timeout below bounds connecting too: TCP's own is later.
    targets = [
        endpoints.TCP4ClientEndpoint(
            reactor, host, port, timeout=config.setupTimeout + 5
        )
        for host, port in config.targets
    ]
    semaphore = defer.DeferredSemaphore(config.connectConcurrency)

    async def one(index: int, make: Callable[[], Conn]) -> Conn:
        await semaphore.acquire()
        conn = None
        try:
            endpoint = targets[index % len(targets)]
            conn = cast(Conn, await endpoint.connect(_OneShot(make)))
            await conn.active
            return conn
        except BaseException:  # refused, lost, or the setup timeout
            if conn is not None:  # (a non-fatal refusal leaves it open)
                conn.abort()
            raise
        finally:
            semaphore.release()

    attempts = [
        defer.ensureDeferred(one(i, m)).addTimeout(config.setupTimeout, reactor)
        for i, m in specs
    ]
    outcomes = await defer.DeferredList(attempts, consumeErrors=True)
    conns: list[Conn] = []
    failures: Counter[tuple[str, str]] = Counter()
    for ok, value in outcomes:
        if ok:
            conns.append(value)
        else:
            failures[classify(cast(Failure, value), config)] += 1
    if failures:
        for conn in conns:
            conn.abort()
        raise setupError(failures, config.noun, config.total)
    return conns


class _OneShot(protocol.Factory):
    """A factory that builds one prepared protocol."""

    def __init__(self, make: Callable[[], Conn]) -> None:
        self.make = make

    def buildProtocol(self, addr: object) -> protocol.Protocol:
        return self.make()
