"""The service's exceptions, and plain words for why a listener failed.

A module of its own so that admin.py (which reports them) and service.py
(which raises them and loads admin lazily) need not import each other.
"""

from __future__ import annotations

import errno
import os
import re

from twisted.internet.error import CannotListenError

__all__ = ["ReloadRefused", "StartupError", "describeError"]


class StartupError(Exception):
    """chatd cannot start (a listener did not bind); the message says why."""


class ReloadRefused(Exception):
    """A new configuration was refused; the old one stays.  Says why."""


#: errno -> what an operator should read instead of the C library's words.
_ERRNO_TEXT = {
    errno.EADDRINUSE: "address already in use (is another chatd running?)",
    errno.EACCES: "permission denied (a port below 1024 needs root: "
    "start as root with --uid and --gid)",
    errno.EADDRNOTAVAIL: "no such address on this host",
}

_NOT_A_NUMBER = re.compile(r"invalid literal for int\(\) with base 10: (.*)")


def describeError(error: BaseException) -> str:
    """One line, no Python reprs, for an error from parsing or binding an
    endpoint (an OSError, Twisted's CannotListenError, a ValueError)."""
    if isinstance(error, CannotListenError):
        inner = error.socketError
        if isinstance(inner, BaseException):
            return describeError(inner)
        return str(inner).rstrip(".")
    if isinstance(error, OSError) and error.strerror:
        path = error.filename2 if error.filename2 is not None else error.filename
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if path:  # a file: its name says more than our hints
            return f"{error.strerror[0].lower()}{error.strerror[1:]}: {path}"
        return _ERRNO_TEXT.get(
            error.errno or 0, error.strerror[0].lower() + error.strerror[1:]
        )
    if isinstance(error, OverflowError):
        return "the port must be 0 to 65535"
    match = _NOT_A_NUMBER.fullmatch(str(error))
    if match:
        literal = match.group(1).strip("'\"")
        return f"{literal!r} is not a number" if literal else "a number is missing"
    text = str(error).rstrip(".")
    return text or type(error).__name__
