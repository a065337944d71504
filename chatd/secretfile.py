"""Secrets kept in files (server password, admin token, a client's password).

Shared by the server and the client, so neither imports the other.
"""

from __future__ import annotations


def readPassword(path: str, what: str = "password") -> bytes:
    """The first line of ``path``, without its line ending."""
    try:
        with open(path, "rb") as f:
            line = f.readline().rstrip(b"\r\n")
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    if not line:
        raise ValueError(f"{path} holds no {what} on its first line")
    return line
