"""Runs of like frames, handled with one slice and one check each.

Busy connections send many frames of one type in one read: a benchmark's
ECHOs, a chat's SAYs.  These functions walk the headers of such a run and
hand back the whole run at once, so the per-frame cost is one header
unpack.  They only read bytes; what a run means is the caller's business.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable

from chatd.wire.codec import (
    HEADER,
    HEADER_SIZE,
    MAX_PAYLOAD,
    SAY_HEADER_NOISE,
    FrameType,
    plainTexts,
)

_UNPACK_FROM = HEADER.unpack_from
_PACK = HEADER.pack
_ECHO = FrameType.ECHO
_SAY = FrameType.SAY
_MESSAGE = FrameType.MESSAGE


def sameTypeRun(data: bytes, offset: int, ftype: int, budget: int) -> tuple[int, int]:
    """The whole frames of type ``ftype`` from ``offset``, at most ``budget``
    of them (-1: any number): returns (end offset, frame count).

    For ECHO the run is its own answer: an ECHO reply is the request frame.
    Frames of one size (a benchmark's, a prober's) are checked with one
    unpack of all their headers; the rest of the run, and runs of mixed
    sizes, are walked header by header.
    """
    end = len(data)
    if end - offset < HEADER_SIZE:
        return offset, 0
    kind, size = _UNPACK_FROM(data, offset)
    step = HEADER_SIZE + size
    n = (end - offset) // step
    if 0 <= budget < n:
        n = budget
    frames = 0
    if (
        n > 1
        and kind == ftype
        and size <= MAX_PAYLOAD
        and _UNPACK_FROM(data, offset + step) == (kind, size)
    ):
        # The second frame is like the first: likely all are.  (Frames of
        # mixed sizes, a real client's, skip this: an unpack shape of its
        # own for every read would cost more than the walk below.)
        unpack, headers = _equalFrames(ftype, size, n)
        if unpack(data, offset) == headers:
            offset += n * step
            frames = n
    while end - offset >= HEADER_SIZE and frames != budget:
        kind, size = _UNPACK_FROM(data, offset)
        stop = offset + HEADER_SIZE + size
        if kind != ftype or size > MAX_PAYLOAD or stop > end:
            break
        offset = stop
        frames += 1
    return offset, frames


@functools.lru_cache(maxsize=256)
def _equalFrames(ftype: int, size: int, n: int) -> tuple[Callable[..., tuple], tuple]:
    """An unpack of ``n`` frames' headers, payloads skipped, and what it
    gives when all are ``ftype`` frames of ``size`` bytes."""
    shape = struct.Struct("!" + f"II{size}x" * n)
    return shape.unpack_from, (ftype, size) * n


def runSlice(frames: bytes, first: int, stop: int) -> bytes:
    """Frames ``first`` to ``stop`` of a run of whole frames (the part of a
    run of SAYs that :meth:`chatd.core.history.History.last` keeps)."""
    at = start = 0
    for i in range(stop):
        if i == first:
            start = at
        at += HEADER_SIZE + _UNPACK_FROM(frames, at)[1]
    return frames[start:at]


def messageRun(
    data: bytes, offset: int, budget: int, limit: int, prefix: bytes
) -> tuple[int, int, bytes]:
    """The run of SAY frames at ``offset`` with texts of 1 to ``limit``
    bytes, all plain ASCII, as MESSAGE frames whose payloads begin with
    ``prefix`` (``id.color.name.``): returns (end offset, count, frames).

    Each MESSAGE is one slice and a header shared by texts of one size; the
    texts are checked with one C call (:func:`plainTexts`).  If any text is
    not plain ASCII the count is 0: the caller takes the frames one by one,
    which also finds the errors.
    """
    end = len(data)
    start = offset
    frames = 0
    parts: list[bytes] = []
    append = parts.append
    room = len(prefix)
    noise = 0
    lastSize = -1
    head = b""
    headNoise = 0
    while end - offset >= HEADER_SIZE and frames != budget:
        ftype, size = _UNPACK_FROM(data, offset)
        if ftype != _SAY or not 0 < size <= limit:
            break
        stop = offset + HEADER_SIZE + size
        if stop > end:
            break
        if size != lastSize:
            lastSize = size
            head = _PACK(_MESSAGE, room + size) + prefix
            headNoise = SAY_HEADER_NOISE[size]
        append(head)
        append(data[offset + HEADER_SIZE : stop])
        noise += headNoise
        offset = stop
        frames += 1
    if not frames or not plainTexts(data[start:offset], noise):
        return start, 0, b""
    return offset, frames, b"".join(parts)
