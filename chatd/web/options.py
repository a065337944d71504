"""Parsers for the --web options (used by chatd.server.config's PARAMETERS).

Kept apart from twisted.web and wsproto so that reading the configuration
never needs the web extra.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def originOf(text: str) -> str:
    """``scheme://host[:port]`` in its canonical form (lower case, default
    port dropped), as a browser's ``Origin`` header has it."""
    parts = urlsplit(text.strip())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{text!r} is not an http(s) origin")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{text!r} is not an origin (scheme://host[:port] only)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r} has a bad port") from None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def origins(value: str) -> tuple[str, ...]:
    """``--web-origin``: origins allowed to open the WebSocket, comma or
    space separated (e.g. ``https://chat.example.org``)."""
    found = tuple(originOf(o) for o in value.replace(",", " ").split())
    if not found:
        raise ValueError("give at least one origin, e.g. https://chat.example.org")
    return found


def proxies(value: str) -> frozenset[str]:
    """``--web-trust-proxy``: addresses of reverse proxies whose
    X-Forwarded-For names the real client."""
    found = set()
    for item in value.replace(",", " ").split():
        try:
            found.add(str(ipaddress.ip_address(item)))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address") from None
    if not found:
        raise ValueError("give the proxy's address, e.g. 127.0.0.1")
    return frozenset(found)


def endpoint(value: str) -> str:
    """``--web``: a server endpoint string Twisted can parse."""
    from twisted.internet import endpoints, reactor

    try:
        endpoints.serverFromString(reactor, value)
    except Exception as e:  # Twisted raises many types for a bad string
        raise ValueError(f"bad endpoint: {e}") from None
    return value
