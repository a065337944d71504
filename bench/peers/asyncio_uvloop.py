"""A chat server on asyncio + uvloop, a fast peer to measure chatd against.

bench/naive_server.py is the floor of care; this is what a good asyncio
programmer writes when speed matters: one :class:`asyncio.Protocol` per
connection, a bytearray parsed in place with ``struct.unpack_from`` over a
memoryview (payloads are not copied out), each MESSAGE frame built once
and every reply of one read gathered into one ``transport.write``: the
MESSAGEs of one read go to each recipient as one blob.  It speaks the
part of PROTOCOL.md that bench/run.py's scenarios use (HELLO/WELCOME,
READY/JOIN, SAY/MESSAGE, ECHO, PING/PONG, BYE/LEAVE) and checks nothing
else: no name rules, no text rules, no flow control.  A frame announcing
more than 1016 bytes closes the connection; other stray frames are ignored.

Usage: ``python bench/peers/asyncio_uvloop.py --port 0``; prints
``listening PORT`` when ready, stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import struct
from collections.abc import Callable
from typing import cast

import uvloop

HEADER = struct.Struct("!II")
MAX_PAYLOAD = 1016
ECHO, HELLO, WELCOME, READY, SAY, MESSAGE, JOIN, LEAVE, PING, PONG = range(1, 11)
BYE = 17
LISTEN_BACKLOG = 1024  # as chatd's listeners
#: xterm-256 colours readable on dark and light terminals, as chatd picks.
COLORS = (33, 39, 71, 108, 130, 133, 166, 172, 178, 203)


def frame(ftype: int, payload: bytes) -> bytes:
    return HEADER.pack(ftype, len(payload)) + payload


class Room:
    """Everyone's shared state: ids handed out and the ACTIVE users' writers."""

    def __init__(self) -> None:
        self.lastId = 0
        #: ACTIVE users in the order they became active (dicts keep order).
        self.writers: dict[ChatPeer, Callable[[bytes], object]] = {}

    def broadcast(self, data: bytes) -> None:
        for write in self.writers.values():
            write(data)


class ChatPeer(asyncio.Protocol):
    transport: asyncio.Transport

    def __init__(self, room: Room) -> None:
        self.room = room
        self.buffer = bytearray()
        self.user = b""  # b"id.color.name", set by HELLO
        self.prefix = b""  # b"id.color.name.", what every MESSAGE starts with
        self.closing = False
        self.replies: list[bytes] = []  # for this connection, from this read
        self.says: list[bytes] = []  # MESSAGE frames for everyone, this read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TCPTransport

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        if not buf:  # the usual case: whole frames, parsed where they are
            offset = self.parse(data)
            if offset < len(data):
                buf += memoryview(data)[offset:]
            return
        buf += data
        del buf[: self.parse(buf)]

    def parse(self, data: bytes | bytearray) -> int:
        """Handle every whole frame in ``data``; how many bytes they took."""
        offset, end = 0, len(data)
        with memoryview(data) as view:
            while end - offset >= 8 and not self.closing:
                ftype, size = HEADER.unpack_from(data, offset)
                if size > MAX_PAYLOAD:
                    self.flush()
                    self.transport.close()
                    self.closing = True
                    break
                start = offset + 8
                stop = start + size
                if stop > end:
                    break
                if ftype == SAY:
                    if self in self.room.writers:
                        self.say(view[start:stop], size)
                elif ftype == ECHO:
                    self.reply(bytes(view[offset:stop]))  # the same frame back
                elif ftype == PING:
                    self.reply(HEADER.pack(PONG, size) + view[start:stop])
                else:
                    self.flush()
                    self.control(ftype, bytes(view[start:stop]))
                offset = stop
        self.flush()
        return offset if not self.closing else end

    def say(self, text: memoryview, size: int) -> None:
        if self.replies:
            self.transport.write(b"".join(self.replies))
            self.replies.clear()
        head = HEADER.pack(MESSAGE, len(self.prefix) + size)
        self.says.append(b"".join((head, self.prefix, text)))

    def reply(self, data: bytes) -> None:
        if self.says:
            self.room.broadcast(b"".join(self.says))
            self.says.clear()
        self.replies.append(data)

    def flush(self) -> None:
        """Send what this read produced so far (only one list is non-empty)."""
        if self.says:
            self.room.broadcast(b"".join(self.says))
            self.says.clear()
        if self.replies:
            self.transport.write(b"".join(self.replies))
            self.replies.clear()

    def control(self, ftype: int, payload: bytes) -> None:
        """The rare frames: handshake and goodbye."""
        room = self.room
        if ftype == HELLO and not self.user:
            room.lastId += 1
            name = payload.partition(b".")[0]
            color = COLORS[room.lastId % len(COLORS)]
            self.user = b"%d.%d.%s" % (room.lastId, color, name)
            self.prefix = self.user + b"."
            welcome = b"%s.%d.%d" % (name, room.lastId, color)
            self.transport.write(frame(WELCOME, welcome))
        elif ftype == READY and self.user and self not in room.writers:
            room.writers[self] = self.transport.write
            room.broadcast(frame(JOIN, self.user))
        elif ftype == BYE:
            self.closing = True
            self.leave(b"quit")
            self.transport.close()  # after what is already queued

    def leave(self, reason: bytes) -> None:
        if self.room.writers.pop(self, None) is not None:
            self.room.broadcast(frame(LEAVE, self.prefix + reason))

    def connection_lost(self, exc: Exception | None) -> None:
        self.leave(b"error")


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    room = Room()
    # asyncio's default backlog (100) resets a crowd connecting at once.
    server = await loop.create_server(
        lambda: ChatPeer(room), host, port, backlog=LISTEN_BACKLOG
    )
    print("listening", server.sockets[0].getsockname()[1], flush=True)
    stopped = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    async with server:
        await stopped.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: the kernel picks")
    args = p.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
