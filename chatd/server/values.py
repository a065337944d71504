"""The parsers of chatd's option values: counts, seconds, rates, sizes.

Each takes the text of an option or a ``CHATD_`` variable and returns the
value, or raises ValueError saying what is wanted (config.py adds the
option's name).
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = [
    "cluster",
    "count",
    "number",
    "positiveInt",
    "rate",
    "seconds",
    "size",
    "whole",
    "workers",
]


def whole(value: str, least: int, rule: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(rule) from None
    if number < least:
        raise ValueError(rule)
    return number


def positiveInt(value: str) -> int:
    return whole(value, 1, "must be a whole number of at least 1")


def count(value: str) -> int:
    return whole(value, 0, "must be a whole number, 0 or more")


def number(value: str, rule: str) -> float:
    """A finite number below 1e9 and not negative, else ``rule``."""
    try:
        number = float(value)
    except ValueError:
        raise ValueError(rule) from None
    if not (0 <= number < 1e9):  # also refuses nan and inf
        raise ValueError(rule)
    return number


def rate(value: str) -> float:
    return number(value, "must be a number of messages per second, 0 or more")


def seconds(value: str) -> float:
    return number(value, "must be a number of seconds, 0 or more")


_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20}
_SIZE_RULE = "must be a size such as 65536, 64KiB or 1MiB"


def size(value: str) -> int:
    """A size in bytes, optionally with K/KiB or M/MiB."""
    text = value.strip().lower()
    digits = text.rstrip("kimb")
    unit = text[len(digits) :]
    if unit not in _UNITS or not digits.isdigit():
        raise ValueError(_SIZE_RULE)
    number = int(digits) * _UNITS[unit]
    if number < 65536:
        # Twisted's transport pauses its producer at 64 KiB: a smaller limit
        # could not be enforced exactly.
        raise ValueError("must be at least 64KiB")
    return number


def cluster(name: str) -> Callable[[str], object]:
    """A parser from chatd.cluster.options, imported only when the option is
    given: without --redis nothing of the cluster is imported."""

    def parse(value: str) -> object:
        from chatd.cluster import options

        return getattr(options, name)(value)

    return parse


def workers(value: str) -> int:
    """--workers: a count, or ``auto`` for one per core."""
    if value.strip().lower() == "auto":
        return os.cpu_count() or 1
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError("must be a whole number of at least 1, or auto")
    return int(value)


def roomName(value: str) -> str:
    """A room name: the user-name rules (1 to 32 of letters, digits, _ -)."""
    from chatd.wire import valid_name

    if not valid_name(value.encode()):
        raise ValueError("a room name is 1 to 32 ASCII letters, digits, _ or -")
    return value


def roomSpec(value: str) -> tuple[str, str]:
    """``NAME`` or ``NAME:topic`` (a --room): the name and its topic."""
    from chatd.wire import valid_text

    name, _, topic = value.partition(":")
    roomName(name)
    if topic and (len(topic.encode()) > 300 or not valid_text(topic.encode())):
        raise ValueError("a topic is at most 300 bytes of one line of text")
    return name, topic
