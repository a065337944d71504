"""A graceful stop: any state -> STOPPING -> STOPPED.

Stop accepting, ERROR SHUTDOWN to everyone (the backend's users beyond this
process too), let output drain for --shutdown-grace, abort what is left,
then one line saying how it went.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.logger import Logger

from chatd.server.states import ServerState
from chatd.wire import ErrorCode, LeaveReason

if TYPE_CHECKING:
    from chatd.server.factory import ChatFactory
    from chatd.server.service import ChatService

log = Logger(namespace="chatd")


def drain(service: ChatService, stopped: defer.Deferred) -> defer.Deferred:
    """Close every connection once ``stopped`` (the listeners) is under
    way; fires once all are gone, or --shutdown-grace later."""
    reactor = service.reactor
    factory = service.factory
    n = factory.snapshot()["connections"]  # --workers: workers' clients too
    closed = factory.closeAll(LeaveReason.SHUTDOWN, ErrorCode.SHUTDOWN)
    waits = [stopped, closed]
    left = factory.backend.stop()  # cluster: sequence their LEAVEs, resign
    if left is not None:
        waits.append(left)
    begun = reactor.seconds()
    grace = reactor.callLater(service.config.shutdown_grace, abortAll, factory)

    def done(_: object) -> None:
        if grace.active():
            grace.cancel()
        stats = factory.snapshot()
        service.lifecycle.enter(ServerState.STOPPED)
        log.info(
            "stopped: {n} connections closed in {secs:.2f}s; "
            "connections_total={total} messages={messages} "
            "deliveries={deliveries}",
            n=n,
            secs=reactor.seconds() - begun,
            total=stats["connections_total"],
            messages=stats["messages"],
            deliveries=stats["deliveries"],
        )

    d = defer.DeferredList(waits)
    d.addCallback(done)
    return d


def abortAll(factory: ChatFactory) -> None:
    n = factory.abortAll()
    if n:
        log.info("shutdown grace over: aborted {n} connections", n=n)
