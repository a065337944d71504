"""The ``--irc`` listener's factory: IRC connections that share the chat
listeners' :class:`~chatd.server.factory.ChatFactory` (one hub, one set of
limits and counts), with the message of the day read at start."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import protocol
from twisted.logger import Logger

from chatd.irc.protocol import IrcProtocol
from chatd.server.errors import describeError

if TYPE_CHECKING:
    from chatd.server.service import ChatService

log = Logger(namespace="chatd.irc")


class IrcFactory(protocol.Factory):
    """Builds one :class:`IrcProtocol` per connection."""

    noisy = False

    def __init__(self, service: ChatService, motd: list[bytes] | None) -> None:
        self.service = service
        self.motd = motd

    def buildProtocol(self, addr: Any) -> IrcProtocol:
        chat = self.service.factory
        return IrcProtocol(chat, chat.connectionNumber(), self.motd)


def readMotd(path: str | None) -> list[bytes] | None:
    """The lines of ``--motd-file`` (None: no file, or it cannot be read,
    which is logged: clients then get 422)."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return [line.rstrip(b"\r\n")[:400] for line in f.read().splitlines()[:100]]
    except OSError as e:
        log.warn(
            "--motd-file: cannot read {path}: {why}", path=path, why=describeError(e)
        )
        return None


def ircSite(service: ChatService) -> IrcFactory:
    """The maker the service calls for the ``irc`` role."""
    return IrcFactory(service, readMotd(service.config.motd_file))
