"""Reassembling frames from a byte stream, in the style of IntNStringReceiver."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import protocol

from chatd.wire.codec import HEADER, HEADER_SIZE, MAX_PAYLOAD


class FrameReceiver(protocol.Protocol):
    """Reassemble frames from a byte stream, in the style of IntNStringReceiver.

    Subclasses implement :meth:`frameReceived`.  Between reads the buffer
    holds one partial frame (at most 1023 bytes), or, while reading is paused
    for fairness, the rest of one read; a chunk with hundreds of frames is
    walked with an offset and sliced once per frame: no quadratic copying.  A size above :data:`MAX_PAYLOAD` is decided from the header
    alone and reported to :meth:`frameTooLarge`.

    ``framesPerTurn`` bounds how many frames one connection gets handled in a
    reactor turn: past it, reading from the transport pauses and the rest is
    handled on the next turn, so one fast sender cannot starve the others.
    ``stopFraming`` (set when the connection starts closing) makes the
    framer ignore everything after the frame being handled.
    """

    #: Any stream transport: TCP, TLS, unix, a WebSocket adapter.
    transport: Any = None
    #: ``reactor.callLater`` or a test clock's; needed with framesPerTurn.
    callLater: Callable[..., Any]
    framesPerTurn: int | None = None
    stopFraming = False
    #: Frames wait (kept in the buffer) until :meth:`holdFrames` lets go.
    framesHeld = False
    _buffer = b""
    _unpack_from = HEADER.unpack_from
    _turnCall = None
    _readingThrottled = False
    # A subclass that sets framesPerTurn provides callLater (TimeoutMixin does).

    def dataReceived(self, data: bytes) -> int:  # type: ignore[override]
        """Handle ``data``; returns how many whole frames it handled."""
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        if self._readingThrottled or self.framesHeld:
            # Paused for fairness, or held: keep the bytes for later.
            self._buffer = data
            return 0
        return self._frameChunk(data)

    def _frameChunk(self, data: bytes, offset: int = 0, count: int = 0) -> int:
        """Handle the whole frames of ``data`` from ``offset``, ``count`` of
        this turn's frames being handled already; keep the rest."""
        unpack_from = self._unpack_from
        end = len(data)
        budget = self.framesPerTurn or -1
        while end - offset >= HEADER_SIZE:
            if self.stopFraming:
                return count
            if self.framesHeld:
                break
            if count == budget:
                self._throttle()
                break
            ftype, size = unpack_from(data, offset)
            if size > MAX_PAYLOAD:
                self.frameTooLarge(ftype, size)
                return count
            start = offset + HEADER_SIZE
            stop = start + size
            if stop > end:
                break
            offset = stop
            count += 1
            self.frameReceived(ftype, data[start:stop])
        if not self.stopFraming:
            self._buffer = data[offset:] if offset else data
        return count

    def _throttle(self) -> None:
        """Stop reading until the next reactor turn (fairness)."""
        self._readingThrottled = True
        self.readingPaused(True)
        self._turnCall = self.callLater(0, self._nextTurn)

    def _nextTurn(self) -> int:
        self._turnCall = None
        self._readingThrottled = False
        if self.stopFraming:
            return 0
        if not self.framesHeld:
            self.readingPaused(False)
        data, self._buffer = self._buffer, b""
        return self._frameChunk(data)

    def holdFrames(self, hold: bool) -> None:
        """Stop handing frames on (reading pauses too) until called with
        False; frames already read wait in the buffer, in order."""
        if hold == self.framesHeld:
            return
        self.framesHeld = hold
        self.readingPaused(hold)
        if not hold and self._buffer and not self._readingThrottled:
            self._throttle()  # the held frames, next turn

    def cancelThrottle(self) -> None:
        if self._turnCall is not None and self._turnCall.active():
            self._turnCall.cancel()
        self._turnCall = None

    def readingPaused(self, paused: bool) -> None:
        """Pause or resume reading from the transport."""
        if paused:
            self.transport.pauseProducing()
        else:
            self.transport.resumeProducing()

    def frameReceived(self, ftype: int, payload: bytes) -> None:
        raise NotImplementedError

    def frameTooLarge(self, ftype: int, size: int) -> None:
        """The stream can no longer be trusted; by default just drop it."""
        self.stopFraming = True
        self.transport.loseConnection()
