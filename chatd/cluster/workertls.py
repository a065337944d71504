"""TLS in a worker: the settings of each ``ssl:`` listener, by port.

The main process accepts every connection and hands a worker the socket
with the port it came in on; for an ``ssl:`` port the worker does the TLS
itself (the handshake and the crypto are per-connection work, so they
spread over the workers).  The settings are read from the same ``--listen``
strings, parsed by Twisted's own endpoint parser, through public API.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import endpoints, protocol
from twisted.internet.interfaces import IReactorSSL
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

log = Logger(namespace="chatd")


def tlsFactories(
    listen: tuple[str, ...], factory: Any
) -> dict[int, TLSMemoryBIOFactory]:
    """A TLS wrapper of ``factory`` for every ssl: listener, by port (read
    again on each reload, so renewed certificates apply to new
    connections).  A listener whose key or certificate cannot be read is
    logged, naming it, and left out: its connections are closed."""
    tls: dict[int, TLSMemoryBIOFactory] = {}
    for description in listen:
        if description.split(":", 1)[0].strip().lower() != "ssl":
            continue
        try:
            port, context = tlsContext(description)
        except Exception as e:  # a missing or bad key file: say which
            log.error("cannot read the TLS settings of {d}: {e}", d=description, e=e)
            continue
        tls[port] = TLSMemoryBIOFactory(context, False, factory)
    return tls


@implementer(IReactorSSL)
class _CaptureTLS:
    """A reactor that only records what an ssl: endpoint would listen with:
    the endpoint string parsed by Twisted itself, through public API."""

    port = 0
    context: Any = None

    def listenSSL(  # type: ignore[override]
        self,
        port: int,
        factory: Any,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> None:
        self.port, self.context = port, contextFactory

    def connectSSL(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        raise NotImplementedError("only listening is captured")


def tlsContext(description: str) -> tuple[int, Any]:
    """(port, TLS context factory) of an ``ssl:`` endpoint description."""
    capture = _CaptureTLS()
    endpoint = endpoints.serverFromString(capture, description)
    failures: list[Any] = []
    endpoint.listen(protocol.Factory()).addErrback(failures.append)
    if failures:
        failures[0].raiseException()
    return capture.port, capture.context
