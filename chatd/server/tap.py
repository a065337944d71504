"""The twistd plugin's body: ``twistd chatd`` options and service."""

from __future__ import annotations

from chatd.server.config import Options
from chatd.server.service import ChatService, quietStartupErrors

__all__ = ["Options", "makeService"]


def makeService(options: Options) -> ChatService:
    quietStartupErrors()
    return ChatService(options.config, loader=options.reload)
