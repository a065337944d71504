"""A bare IRC test client: send lines, await them one at a time."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer, endpoints, protocol, reactor
from twisted.protocols.basic import LineOnlyReceiver


class IrcClient(LineOnlyReceiver):
    delimiter = b"\r\n"
    MAX_LENGTH = 4096

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.waiting: list[defer.Deferred] = []
        self.closed: defer.Deferred = defer.Deferred()

    def send(self, *lines: bytes) -> None:
        self.transport.write(b"".join(x + b"\r\n" for x in lines))

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)
        while self.lines and self.waiting:
            self.waiting.pop(0).callback(self.lines.pop(0))

    def next(self) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        if self.lines:
            d.callback(self.lines.pop(0))
        else:
            self.waiting.append(d)
        return d

    @defer.inlineCallbacks
    def until(self, want: Callable[[bytes], bool]):  # type: ignore[no-untyped-def]
        """Lines up to and with the first that ``want`` accepts."""
        seen = []
        while True:
            got = yield self.next()
            seen.append(got)
            if want(got):
                return seen

    def connectionLost(self, reason=None) -> None:  # type: ignore[no-untyped-def]
        for d in self.waiting:
            d.errback(ConnectionError("closed"))
        self.waiting = []
        self.closed.callback(None)


def connectIrc(port: int) -> defer.Deferred:
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    return endpoint.connect(protocol.Factory.forProtocol(IrcClient))


@defer.inlineCallbacks
def registered(port: int, nick: bytes):  # type: ignore[no-untyped-def]
    """A client past registration, its NAMES of #lobby read."""
    client = yield connectIrc(port)
    client.send(b"NICK " + nick, b"USER " + nick + b" 0 * :" + nick)
    yield client.until(lambda x: b" 366 " in x)
    return client
