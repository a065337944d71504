"""The one module that knows Twisted's private attributes.

Everything here reaches under a Twisted transport's public interface, so it
lives in one place, with tests (tests/test_internals.py) that fail if a
Twisted release changes what it relies on.

Send to a TCP socket now, instead of on the reactor's next write turn.

Twisted's ``transport.write`` always buffers: it registers the socket for
writing (an ``epoll_ctl``), sends on the next reactor iteration, and
unregisters it again (another ``epoll_ctl``).  For a server whose every
write is already one batch per turn that is three system calls where one
would do.  :func:`writerFor` returns a write function that, when the
transport holds nothing unsent, calls ``send`` on the socket at once and
hands only what the kernel did not take to ``transport.write``; anything
else (TLS, a non-empty buffer, a socket that fails) goes through
``transport.write`` unchanged, so ordering and flow control stay Twisted's.
asyncio's transports do the same.
"""

from __future__ import annotations

import errno
import fcntl
import socket
import struct
import termios
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.logger import Logger
from twisted.python import log

from chatd.wire import HEADER, HEADER_SIZE

#: What went into Twisted's buffer since it was last empty, per connection:
#: (data, sent, end) where data is whole frames, data[sent:] is what Twisted
#: got, and end counts every byte Twisted got up to this write's last.
Unsent = list[tuple[bytes, int, int]]


def writerFor(transport: Any, unsent: Unsent | None = None) -> Callable[[bytes], None]:
    """The fastest correct way to write whole frames to ``transport``.

    Every write to ``transport`` after this call must go through the writer
    returned: it knows Twisted holds nothing by having seen it empty and
    having given it nothing since.

    With ``unsent`` (a list the caller keeps), writes Twisted buffers are
    noted there, for :func:`dropUnstarted`.  Every write must be whole frames.
    """
    write = transport.write
    if not isinstance(transport, tcp.Connection) or not all(
        hasattr(transport, a)
        for a in ("_tempDataLen", "_tempDataBuffer", "dataBuffer", "offset")
    ):
        return write
    sock = transport.socket
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        # Our own batching coalesces; Nagle would only add delay.
        transport.setTcpNoDelay(True)
    send = sock.send
    # Whether Twisted may hold bytes: only then are its buffers looked at.
    # Every byte written from now on comes through here, so once Twisted
    # was seen empty it stays empty until we hand it something, and the
    # common case (the kernel takes it all) touches no Twisted attribute.
    # True at first: what was written before (an HTTP upgrade's 101) may
    # still be in Twisted's buffer.
    held = True

    def sendNow(data: bytes) -> None:
        nonlocal held
        if held:
            t = transport
            if (
                t._tempDataLen
                or t.offset != len(t.dataBuffer)
                or not t.connected
                or t.disconnecting
            ):
                write(data)
                if unsent is not None:
                    _remember(t, unsent, data, 0)
                return
            held = False
            if unsent:
                unsent.clear()  # Twisted holds nothing: all of it went out
        try:
            sent = send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # Closed or shut down: let Twisted meet the error on its own path
            # (and drop what is written after a close, as it always does).
            write(data)
            held = True
            return
        if sent != len(data):
            write(data[sent:])
            held = True
            if unsent is not None:
                _remember(transport, unsent, data, sent)

    return sendNow


def _held(t: Any) -> int:
    """Bytes a TCP transport holds that the kernel has not taken."""
    return len(t.dataBuffer) - t.offset + t._tempDataLen


def _remember(t: Any, unsent: Unsent, data: bytes, sent: int) -> None:
    """Note a write Twisted buffers; forget those it has sent in full (from
    the front, so each is looked at once), so a reader that never quite
    catches up holds no more than Twisted holds."""
    end = (unsent[-1][2] if unsent else 0) + len(data) - sent
    unsent.append((data, sent, end))
    gone = end - _held(t)  # bytes of these writes Twisted has sent
    drop = 0
    while drop < len(unsent) and unsent[drop][2] <= gone:
        drop += 1
    if drop:
        del unsent[:drop]


def dropUnstarted(transport: Any, unsent: Unsent) -> int:
    """Take back the frames a :func:`writerFor` writer left in Twisted's
    buffer that have not begun to go out, keeping the rest of the one in
    flight, so a reader being cut off gets its ERROR next.  Returns the
    bytes dropped (0 where the buffer is not ours to see: TLS, a
    WebSocket).  What the kernel took is gone either way."""
    if not unsent or not isinstance(transport, tcp.Connection):
        return 0
    t = transport
    held = _held(t)
    # Find, from the newest write back, where what Twisted holds begins.
    left = held
    for data, sent, _ in reversed(unsent):
        if len(data) - sent >= left:
            cut = len(data) - left
            break
        left -= len(data) - sent
    else:
        return 0  # what it holds is not all ours to parse: leave it
    end = 0
    while end < cut:  # the end of the frame in flight
        end += HEADER_SIZE + HEADER.unpack_from(data, end)[1]
    keep = data[cut:end]
    t.dataBuffer, t.offset = keep, 0
    t._tempDataBuffer, t._tempDataLen = [], 0
    unsent.clear()
    if keep:
        unsent.append((data, cut, len(keep)))
    return held - len(keep)


def unsentBytes(transport: object) -> int | None:
    """Bytes the kernel holds for a TCP transport's peer that the peer has not
    acknowledged yet (Linux ``SIOCOUTQ``); None where that cannot be told.

    Also None for a unix socket: there it counts what the peer has not read,
    and a unix socket keeps that readable after we close anyway.
    """
    try:
        sock = transport.socket  # type: ignore[attr-defined]
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (AttributeError, OSError, ValueError):
        return None
    return struct.unpack("i", raw)[0]


def canHalfClose(transport: object) -> bool:
    """Whether ``transport`` is a plain TCP socket connection, which can
    shut its sending side only (``loseWriteConnection``) and linger."""
    return isinstance(transport, tcp.Connection)


def twistdLogFiles() -> list:
    """The :class:`~twisted.python.logfile.LogFile` objects that the global
    log observers write to (twistd's ``--logfile``), found through the
    publisher's observer list and each :class:`FileLogObserver`'s file:
    twistd keeps no public handle on them."""
    from twisted.logger import FileLogObserver, globalLogPublisher
    from twisted.python.logfile import LogFile

    found = []
    for observer in getattr(globalLogPublisher, "_observers", ()):
        out = getattr(observer, "_outFile", None)
        if isinstance(observer, FileLogObserver) and isinstance(out, LogFile):
            found.append(out)
    return found


_log = Logger()


def leanPolling(reactor: Any) -> bool:
    """Dispatch the epoll reactor's events for accepted TCP connections
    without :func:`twisted.python.log.callWithLogger`.

    The reactor wraps every event in ``callWithLogger``, which builds a
    logging context (a dict, a context stack push and pop) so that legacy
    ``log.msg`` calls made while handling it get the connection's prefix.
    Nothing in chatd logs that way, and on a loaded server that wrapping is
    about a fifth of the reactor's work per read.  Accepted connections
    (``tcp.Server``) are dispatched directly, with the same catch-all that
    logs (with the connection's prefix) whatever escapes; every other
    selectable (listening ports, outgoing links, the waker) keeps
    Twisted's path.  Returns whether it was installed: only on the epoll
    reactor whose ``doPoll`` is the one this mirrors.
    """
    try:
        from twisted.internet.epollreactor import EPollReactor
    except ImportError:
        return False
    if getattr(type(reactor), "doPoll", None) is not EPollReactor.doPoll or not all(
        hasattr(reactor, a) for a in ("_poller", "_selectables", "_doReadOrWrite")
    ):
        return False
    poll = reactor._poller.poll
    selectables = reactor._selectables
    dispatch = reactor._doReadOrWrite
    withLogger = log.callWithLogger
    server = tcp.Server

    def doPoll(timeout: float | None) -> None:
        try:
            events = poll(-1 if timeout is None else timeout, len(selectables))
        except OSError as e:
            if e.errno == errno.EINTR:
                return
            raise
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if type(selectable) is not server:
                withLogger(selectable, dispatch, selectable, fd, event)
                continue
            try:
                dispatch(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                _log.failure(
                    "unhandled error on {connection}", connection=selectable.logstr
                )

    reactor.doIteration = reactor.doPoll = doPoll
    return True
