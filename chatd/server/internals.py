"""Send to a TCP socket now, instead of on the reactor's next write turn.

Twisted's ``transport.write`` always buffers: it registers the socket for
writing (an ``epoll_ctl``), sends on the next reactor iteration, and
unregisters it again (another ``epoll_ctl``).  For a server whose every
write is already one batch per turn that is three system calls where one
would do.  :func:`writerFor` returns a write function that, when the
transport holds nothing unsent, calls ``send`` on the socket at once and
hands only what the kernel did not take to ``transport.write``; anything
else (TLS, a non-empty buffer, a closing transport) goes through
``transport.write`` unchanged, so ordering and flow control stay Twisted's.
asyncio's transports do the same.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from collections.abc import Callable

from twisted.internet import tcp


def writerFor(transport: object) -> Callable[[bytes], None]:
    """The fastest correct way to write ``bytes`` to ``transport``."""
    write = transport.write  # type: ignore[attr-defined]
    if not isinstance(transport, tcp.Connection) or not all(
        hasattr(transport, a) for a in ("_tempDataLen", "dataBuffer", "offset")
    ):
        return write
    sock = transport.socket
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        # Our own batching coalesces; Nagle would only add delay.
        transport.setTcpNoDelay(True)
    send = sock.send

    def sendNow(data: bytes) -> None:
        t = transport
        if (
            t._tempDataLen
            or t.offset != len(t.dataBuffer)
            or not t.connected
            or t.disconnecting
        ):
            write(data)
            return
        try:
            sent = send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # Let Twisted meet the error on its own path and close properly.
            write(data)
            return
        if sent < len(data):
            write(data[sent:])

    return sendNow


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
