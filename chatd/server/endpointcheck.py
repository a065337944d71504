"""Checks of endpoint strings and paths, before anything binds.

An endpoint Twisted cannot parse or that cannot work (a port out of range,
a unix socket in a missing directory) is refused with the option's name and
why in words; :func:`isLocal` says whether only this host can reach one.
"""

from __future__ import annotations

import ipaddress
import os
import re

from twisted.python import usage

from chatd.server.errors import describeError

__all__ = ["checkDirectory", "checkEndpoint", "isLocal"]


def checkDirectory(option: str, path: str) -> None:
    """Refuse ``path`` if the directory it would be created in is missing."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise usage.UsageError(
            f"{option}: directory {directory} does not exist "
            f"(create it first: mkdir -p {directory})"
        )


_UNESCAPED_COLON = re.compile(r"(?<!\\):")


def _fields(description: str) -> tuple[str, list[str], dict[str, str]]:
    """An endpoint string's type, positional and keyword fields (as
    serverFromString splits them, simply: enough for the checks below)."""
    kind, _, rest = description.partition(":")
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for part in _UNESCAPED_COLON.split(rest) if rest else []:
        part = part.replace("\\:", ":")
        key, eq, value = part.partition("=")
        if eq:
            kwargs[key] = value
        else:
            args.append(part)
    return kind.strip().lower(), args, kwargs


def checkEndpoint(description: str, option: str = "--listen") -> None:
    """Refuse an endpoint string Twisted cannot parse, or one that cannot
    work (a port out of range, a unix socket in a missing directory),
    naming the option and saying why in words."""
    from twisted.internet import endpoints, reactor

    try:
        endpoints.serverFromString(reactor, description)
    except Exception as e:  # Twisted raises many types for a bad string
        raise usage.UsageError(
            f"{option}: bad endpoint {description}: {_endpointError(e)}"
        ) from None
    kind, args, kwargs = _fields(description)
    if kind in ("tcp", "tcp6", "ssl"):
        port = kwargs.get("port", args[0] if args else "")
        if port.isdigit() and int(port) > 65535:
            raise usage.UsageError(
                f"{option}: bad endpoint {description}: the port must be 0 to 65535"
            )
    if kind == "unix":
        path = kwargs.get("address", args[0] if args else "")
        if not path:
            raise usage.UsageError(
                f"{option}: bad endpoint {description}: no socket path"
            )
        checkDirectory(f"{option}: {description}", path)


def _endpointError(error: Exception) -> str:
    """describeError, plus the few Twisted parse errors that say nothing."""
    if type(error).__module__.startswith("OpenSSL"):
        return "not a usable key or certificate"
    if isinstance(error, IndexError):
        return "no such socket passed by systemd"
    if str(error).startswith("Unknown endpoint type"):
        return "unknown endpoint type (use tcp, tcp6, ssl, unix or systemd)"
    return describeError(error)


def isLocal(description: str) -> bool:
    """Whether only this host can reach the endpoint: a loopback interface
    or a unix socket.  Anything unrecognised counts as reachable, the safe
    answer for an interface that can kick users.
    """
    kind, args, kwargs = _fields(description)
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    positional = args[1] if len(args) > 1 and kind != "ssl" else ""
    interface = kwargs.get("interface", positional)
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:  # "" (every interface) or a host name
        return False
