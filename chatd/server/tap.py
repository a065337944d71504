"""The twistd plugin's body: ``twistd chatd`` options and service.

:func:`makeService` runs before twistd forks into the background and before
its logging begins, with stderr still the operator's terminal: the service
binds its listeners here (its privilegedStartService, still as root), so
that a port that cannot be bound ends twistd with one line saying why, in
the foreground and the background alike.  twistd's own call of
privilegedStartService later finds the work done.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.logger import Logger

from chatd.server.config import Options, unknownVariables
from chatd.server.errors import StartupError
from chatd.server.service import ChatService

__all__ = ["Options", "bindOrExit", "makeService", "warnUnknownVariables"]

log = Logger(namespace="chatd")


def warnUnknownVariables(environ: Mapping[str, str]) -> None:
    """Name every CHATD_ variable chatd does not read: likely a typo."""
    for name in unknownVariables(environ):
        log.warn(
            "environment: unknown variable {name} ignored (see twistd chatd --help)",
            name=name,
        )


def bindOrExit(chat: ChatService) -> ChatService:
    """Bind now, or exit 1 with ``chatd: cannot listen on ...: why``."""
    try:
        chat.privilegedStartService()
    except StartupError as e:
        raise SystemExit(f"chatd: {e}") from None
    return chat


def makeService(options: Options) -> ChatService:
    warnUnknownVariables(options.environ)
    return bindOrExit(ChatService(options.config, loader=options.reload))
