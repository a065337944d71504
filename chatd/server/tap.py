"""The twistd plugin's body: ``twistd chatd`` options and service.

:func:`makeService` runs before twistd forks into the background and before
its logging begins, with stderr still the operator's terminal: the service
binds its listeners here (its privilegedStartService, still as root), so
that a port that cannot be bound ends twistd with one line saying why, in
the foreground and the background alike.  twistd's own call of
privilegedStartService later finds the work done.

It is also the composition root (:func:`buildService`, for the plugin and
``chatd.tac`` alike): the one module that picks the mode's factory
(:mod:`chatd.cluster`, imported only when asked for) and the HTTP sites
(admin, web) and gives them to the service, which imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.logger import Logger

from chatd.server.config import Config, Options, unknownVariables
from chatd.server.errors import StartupError
from chatd.server.factory import ChatFactory
from chatd.server.service import DEFAULT_SITES, ChatService, SiteMaker

__all__ = [
    "Options",
    "bindOrExit",
    "buildService",
    "makeFactory",
    "makeService",
    "sites",
    "warnUnknownVariables",
]

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


def makeFactory(config: Config, reactor: Any) -> ChatFactory:
    """The one factory, composed with the mode ``config`` asks for: the
    main process of --workers, a --redis node, or one process."""
    if config.workers > 1:
        from chatd.cluster.main import mainFactory

        return mainFactory(config, reactor)
    if config.redis:
        from chatd.cluster.redisnode import redisFactory

        return redisFactory(config, reactor)
    return ChatFactory(config, clock=reactor)


#: role -> the maker of its listener's factory, by name: twisted.web (and
#: for the web front end wsproto) are imported only when that site listens.
sites: Mapping[str, SiteMaker | str] = DEFAULT_SITES


def buildService(
    config: Config, loader: Callable[[], Config] | None = None, reactor: Any = None
) -> ChatService:
    """The service for ``config``, its factory and sites composed here."""
    if reactor is None:
        from twisted.internet import reactor
    return ChatService(
        config,
        reactor,
        loader=loader,
        factory=makeFactory(config, reactor),
        sites=sites,
    )


def makeService(options: Options) -> ChatService:
    warnUnknownVariables(options.environ)
    return bindOrExit(buildService(options.config, loader=options.reload))
