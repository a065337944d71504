"""A deliberately naive chat server, the reference point for chatd's figures.

Written the way Twisted's ``chatserver.py`` example is: a list of clients
and, for each message, ``for c in clients: c.transport.write(frame)``.
It speaks just enough of PROTOCOL.md for chatd-bench (HELLO/WELCOME/READY,
JOIN, SAY -> MESSAGE, ECHO, PING/PONG, BYE): no validation, no flow
control, no batching.  Framing reuses :class:`chatd.wire.FrameReceiver`
so that the comparison is about what the servers do with frames.

Usage: ``python bench/naive_server.py PORT``; prints ``listening`` when ready.
"""

from __future__ import annotations

import sys

from twisted.internet import protocol, reactor

from chatd.wire import FrameReceiver, FrameType, encode, join_fields


class NaiveChat(FrameReceiver):
    user: bytes | None = None  # b"id.color.name"

    def __init__(self, factory: NaiveFactory) -> None:
        self.factory = factory

    def frameReceived(self, ftype: int, payload: bytes) -> None:
        if ftype == FrameType.ECHO:
            self.transport.write(encode(FrameType.ECHO, payload))
        elif ftype == FrameType.PING:
            self.transport.write(encode(FrameType.PONG, payload))
        elif ftype == FrameType.HELLO:
            self.factory.lastId += 1
            name = payload.partition(b".")[0]
            self.user = join_fields(self.factory.lastId, 7, name)
            self.transport.write(
                encode(FrameType.WELCOME, join_fields(name, self.factory.lastId, 7))
            )
        elif ftype == FrameType.READY:
            self.factory.clients.append(self)
            self.broadcast(encode(FrameType.JOIN, self.user))
        elif ftype == FrameType.SAY:
            self.broadcast(encode(FrameType.MESSAGE, self.user + b"." + payload))
        elif ftype == FrameType.BYE:
            self.transport.loseConnection()

    def broadcast(self, frame: bytes) -> None:
        for c in self.factory.clients:
            c.transport.write(frame)

    def connectionLost(self, reason: object = None) -> None:
        if self in self.factory.clients:
            self.factory.clients.remove(self)
            self.broadcast(encode(FrameType.LEAVE, self.user + b".quit"))


class NaiveFactory(protocol.Factory):
    def __init__(self) -> None:
        self.clients: list[NaiveChat] = []
        self.lastId = 0

    def buildProtocol(self, addr: object) -> NaiveChat:
        return NaiveChat(self)


if __name__ == "__main__":
    reactor.listenTCP(int(sys.argv[1]), NaiveFactory(), interface="127.0.0.1")
    print("listening", flush=True)
    reactor.run()
