"""A reload (SIGHUP, admin /reload): ACTIVE or MAINTENANCE -> REBOOTING -> back.

The configuration is read again; the listeners whose endpoint changed are
swapped (old ones close first, so an endpoint that changed only in its
options can take the same port); a new one that cannot bind undoes every
change and the reload is refused, with the old configuration kept.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage

from chatd.server.config import Config
from chatd.server.errors import ReloadRefused, StartupError
from chatd.server.listeners import Listener
from chatd.server.states import InvalidTransition, ServerState

if TYPE_CHECKING:
    from chatd.server.service import ChatService

log = Logger(namespace="chatd")

REBOOTING = ServerState.REBOOTING


def changes(old: Config, new: Config) -> list[str]:
    """Names of the settings that differ (secrets named, never shown)."""
    return [
        f.name
        for f in dataclasses.fields(Config)
        if getattr(old, f.name) != getattr(new, f.name)
    ]


async def reload(service: ChatService, why: str) -> list[str]:
    """Re-read and apply; the names of the settings that changed.

    Raises :class:`ReloadRefused` (bad new configuration, a new listener
    that cannot bind) or :class:`InvalidTransition`.
    """
    try:
        service.lifecycle.check(REBOOTING)
    except InvalidTransition as e:
        log.warn("{why}: reload refused: {e}", why=why, e=e)
        raise
    try:
        new = service.loader()
    except (usage.UsageError, ValueError, OSError) as e:
        log.error(
            "{why}: new configuration refused, the old one stays: {e}", why=why, e=e
        )
        raise ReloadRefused(str(e)) from None
    back = service.state
    old = service.config
    service.lifecycle.enter(REBOOTING, why)
    try:
        await _swapListeners(service, old, new)
    except ReloadRefused as e:
        log.error("{why}: reload refused, the old one stays: {e}", why=why, e=e)
        if service.state is REBOOTING:
            service.lifecycle.enter(back, "reload refused")
        raise
    if service.state is not REBOOTING:  # stopped meanwhile: nothing to apply
        raise ReloadRefused(f"the server is {service.state.value}")
    service.apply(new)
    changed = changes(old, new)
    service.lifecycle.enter(
        back, "reloaded: " + (", ".join(changed) or "nothing changed")
    )
    return changed


async def _swapListeners(service: ChatService, old: Config, new: Config) -> None:
    """Close the listeners whose endpoint went, open the new ones; if one
    cannot bind, undo every change (best effort) and refuse."""
    current = {x.description: x for x in service.listenersFor("chat")}
    gone = [x for d, x in current.items() if d not in new.listen]
    added = [d for d in new.listen if d not in current]
    closing = list(gone)
    sites = [
        (role, description)
        for role, description in service.sitesOf(new)
        if description != getattr(old, role)
    ]
    for role in service.sites:
        if getattr(new, role) != getattr(old, role):
            closing += service.listenersFor(role)
    for listener in closing:
        await defer.maybeDeferred(listener.disownServiceParent)
    opened: list[Listener] = []
    try:
        for description in added:
            opened.append(await _bindNew(service, "chat", description, service.factory))
        for role, description in sites:
            site = service.site(role)
            opened.append(await _bindNew(service, role, description, site))
    except StartupError as e:
        for listener in opened:
            await listener.stopService()
        await _restore(service, closing)
        raise ReloadRefused(str(e)) from None
    if service.state is not REBOOTING:  # stopped while we awaited
        for listener in opened:
            await listener.stopService()
        return
    for listener in opened:
        service.adopt(listener)  # bound already: only marks it running
        log.info(
            "listening on {endpoint} ({address})",
            endpoint=listener.description,
            address=listener.address,
        )
    for listener in gone:
        log.info("stopped listening on {endpoint}", endpoint=listener.description)


async def _bindNew(
    service: ChatService, role: str, description: str, factory: Any
) -> Listener:
    listener = service.newListener(role, description, factory)
    await listener.bind()
    return listener


async def _restore(service: ChatService, closed: list[Listener]) -> None:
    """Reopen listeners a refused reload had closed."""
    for old in closed:
        try:
            listener = await _bindNew(service, old.role, old.description, old.factory)
        except StartupError as e:
            log.critical("could not restore the old listener: {e}", e=e)
            continue
        service.adopt(listener)
