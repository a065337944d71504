"""The cluster's options: ``--redis URL``, ``--node-name``, ``--node-ttl``.

Parsed without importing a Redis client, so a bad URL is a usage error
before anything connects.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 6379


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is and how to log in (``repr`` hides the password)."""

    scheme: str  # redis, rediss or unix
    host: str = ""
    port: int = DEFAULT_PORT
    path: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        return f"RedisTarget({self.display!r})"

    @property
    def display(self) -> str:
        """The URL without its password, for logs and /status."""
        if self.scheme == "unix":
            return f"unix://{self.path}?db={self.db}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/{self.db}"


def parseRedisURL(url: str) -> RedisTarget:
    """``redis://[user:pass@]host[:port][/db]``, ``rediss://`` (TLS) or
    ``unix://path[?db=N]``; ValueError says what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"not a Redis URL: {e}") from None
    scheme = parts.scheme.lower()
    password = unquote(parts.password) if parts.password else None
    username = unquote(parts.username) if parts.username else None
    query = dict(p.partition("=")[::2] for p in parts.query.split("&") if p)
    if scheme == "unix":
        path = parts.netloc + parts.path
        if not path:
            raise ValueError("unix:// needs a socket path, e.g. unix:///run/redis.sock")
        return RedisTarget(
            "unix", path=path, db=_db(query.get("db", "0")), password=password
        )
    if scheme not in ("redis", "rediss"):
        raise ValueError("the scheme must be redis://, rediss:// or unix://")
    if not parts.hostname:
        raise ValueError("no host: expected redis://host:port/db")
    db = parts.path.strip("/") or query.get("db", "0")
    return RedisTarget(
        scheme,
        host=parts.hostname,
        port=port if port is not None else DEFAULT_PORT,
        db=_db(db),
        username=username,
        password=password,
    )


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"the database must be a number, not {text!r}")
    return int(text)


def checkRedisURL(value: str) -> str:
    """The --redis parser: the URL itself, once it parses."""
    parseRedisURL(value)
    return value


def nodeName(value: str) -> str:
    """--node-name: printable, no spaces (it is part of Redis key names)."""
    if not value or len(value) > 100 or not all(33 <= ord(c) < 127 for c in value):
        raise ValueError("must be 1 to 100 printable ASCII characters, no spaces")
    return value


def ttl(value: str) -> float:
    number = float(value)
    if not (1 <= number <= 3600):
        raise ValueError("must be a number of seconds from 1 to 3600")
    return number


def defaultNodeName(listen: tuple[str, ...] | list[str]) -> str:
    """Host name and the first listener's port (or its last field)."""
    port = ""
    if listen:
        fields = listen[0].split(":")
        numbers = [f for f in fields[1:] if f.isdigit()]
        port = numbers[0] if numbers else fields[-1].rsplit("/", 1)[-1]
    return nodeName(f"{socket.gethostname()}:{port}".replace(" ", "_")[:100])


def passwordFile(path: str) -> str:
    """--redis-password-file: readable now, with a password on its first line
    (read again when the node starts)."""
    from chatd.secretfile import readPassword

    readPassword(path)
    return path
