"""Run a real ``twistd chatd`` subprocess for end-to-end tests.

The daemon runs from this checkout (PYTHONPATH is the repository root, so
the plugin in twisted/plugins/ is found whether or not chatd is installed)
in a temporary directory of its own.  It binds port 0 and reports the port
it got in its ``--port-file``: no picking a free port that someone else may
take first.  Readiness and exit are Deferreds driven by the process's own
output and exit, never by sleeping.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
from pathlib import Path

from twisted.internet import defer, endpoints, error, protocol, reactor
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

ROOT = Path(__file__).resolve().parent.parent
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
READY_LINE = b"ready: accepting connections"
#: What a test listens on: the kernel picks the port.
LOOPBACK = "tcp:0:interface=127.0.0.1"


def readPortFile(path: str) -> list[tuple[str, str, str]]:
    """(role, kind, where) per line of a --port-file: ("chat", "tcp",
    "127.0.0.1:40123"), ("admin", "tcp", ...), ("chat", "unix", "/path")."""
    with open(path, encoding="utf-8") as f:
        return [tuple(line.split(" ", 2)) for line in f.read().splitlines()]  # type: ignore[misc]


def portOf(where: str) -> int:
    return int(where.rsplit(":", 1)[1])


def refusingPort(testCase: object) -> int:
    """A loopback port that refuses connections: bound but never listening,
    and held until ``testCase`` ends, so nothing else can take it."""
    s = socket.socket()
    testCase.addCleanup(s.close)  # type: ignore[attr-defined]
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


class _Watch(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = bytearray()
        self.ready: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()
        self.watching: list[tuple[bytes, defer.Deferred]] = []

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.ready.called and READY_LINE in self.output:
            self.ready.callback(None)
        for entry in list(self.watching):
            if entry[0] in self.output:
                self.watching.remove(entry)
                entry[1].callback(None)

    def waitFor(self, text: bytes) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.watching.append((text, d))
        self.outReceived(b"")
        return d

    errReceived = outReceived

    def processEnded(self, reason) -> None:  # type: ignore[no-untyped-def]
        status = reason.value.exitCode
        if status is None:  # killed by a signal: report it the shell's way
            status = 128 + reason.value.signal
        if not self.ready.called:
            self.ready.errback(
                RuntimeError(f"exited {status} before ACTIVE:\n{self.output.decode()}")
            )
        self.ended.callback(status)


def run(
    args: list[str], env: dict[str, str] | None = None, path: str | None = None
) -> defer.Deferred:
    """Run ``python args...`` to its end, in ``path`` (default: the
    repository root, so that ``bench/fuzz.py`` and the like are found).

    Fires with (exit status, combined output).
    """
    watch = _Watch()
    watch.ready.addErrback(lambda failure: None)  # not a daemon: no readiness
    argv = [sys.executable, *args]
    where = str(ROOT) if path is None else path
    reactor.spawnProcess(watch, argv[0], argv, env=environment(env), path=where)
    watch.ended.addCallback(lambda status: (status, watch.output.decode()))
    return watch.ended


class Daemon:
    """``twistd -n chatd`` on port 0 of 127.0.0.1, logging to stdout.

    ``command`` replaces ``chatd --listen ...`` (e.g. ``["-y", "chatd.tac"]``,
    which reads its port file from CHATD_PORT_FILE, set here).  Once started,
    :attr:`port` is the first chat listener's port, :meth:`ports` all of
    them in --listen order, :attr:`adminPort` the admin interface's.
    """

    def __init__(
        self,
        *options: str,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
        maxFiles: int | None = None,
    ) -> None:
        self.dir = tempfile.mkdtemp(prefix="chatd-test-")
        self.portFile = os.path.join(self.dir, "ports")
        self.listen = LOOPBACK
        self._port: int | None = None
        if command is None:
            command = [
                "chatd",
                "--listen",
                self.listen,
                "--port-file",
                self.portFile,
                *options,
            ]
        env = {"CHATD_PORT_FILE": self.portFile, **(env or {})}
        twistd = TWISTD
        if maxFiles is not None:  # as `ulimit -n` would, soft and hard
            twistd = [
                sys.executable,
                "-c",
                "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, "
                f"({maxFiles}, {maxFiles})); " + TWISTD[2],
            ]
        self.args = [*twistd, "-n", "--logfile=-", "--pidfile=", *command]
        self.env = environment(env)
        self.watch = _Watch()
        self.watch.ended.addBoth(self._cleanUp)
        self.process = None

    def _cleanUp(self, result: object) -> object:
        shutil.rmtree(self.dir, ignore_errors=True)
        return result

    def start(self) -> defer.Deferred:
        """Spawn it; fires once it logs that it is ACTIVE."""
        self.process = reactor.spawnProcess(
            self.watch, self.args[0], self.args, env=self.env, path=self.dir
        )
        return self.watch.ready

    def addresses(self, role: str = "chat") -> list[tuple[str, str]]:
        """(kind, where) of each ``role`` listener, from the port file that
        chatd writes before it logs that it is ready."""
        return [(k, w) for r, k, w in readPortFile(self.portFile) if r == role]

    def ports(self, role: str = "chat") -> list[int]:
        """The TCP/TLS ports of the ``role`` listeners, in --listen order."""
        return [portOf(w) for k, w in self.addresses(role) if k != "unix"]

    @property
    def port(self) -> int:
        """The first chat listener's port (or the one set, for a restart)."""
        if self._port is None:
            self._port = self.ports()[0]
        return self._port

    @port.setter
    def port(self, value: int) -> None:
        self._port = value

    @property
    def adminPort(self) -> int:
        return self.ports("admin")[0]

    def waitForLog(self, text: str) -> defer.Deferred:
        """Fires once ``text`` appears in the daemon's output."""
        return self.watch.waitFor(text.encode())

    @property
    def log(self) -> str:
        return self.watch.output.decode("utf-8", "replace")

    def signal(self, sig: int = signal.SIGTERM) -> defer.Deferred:
        """Send ``sig``; fires with the exit status (128+N when killed by N)."""
        if not self.watch.ended.called:
            try:
                self.process.signalProcess(sig)
            except error.ProcessExitedAlready:
                pass  # ended fires on its own
        return self.watch.ended

    def stop(self) -> defer.Deferred:
        """For cleanups: SIGTERM, and SIGKILL if it has not gone in 15 s."""
        if self.process is None:
            self._cleanUp(None)
            return defer.succeed(None)
        if self.watch.ended.called:
            return defer.succeed(None)
        kill = reactor.callLater(15, self._kill)
        d = self.signal(signal.SIGTERM)
        d.addBoth(lambda r: kill.cancel() if kill.active() else None)
        return d

    def _kill(self) -> None:
        if not self.watch.ended.called:
            try:
                self.process.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass


HEADER = struct.Struct("!II")


_SAY, _MESSAGE, _LEAVE = 5, 6, 8  # frame types (docs/protocol.md)


@defer.inlineCallbacks
def sayUntilLeave(talker: FrameClient):  # type: ignore[no-untyped-def]
    """SAY 1 KB lines from ``talker`` in rounds of 32 (reading its own
    copies, so it is never the slow one) until a LEAVE arrives; fires with
    the LEAVE's payload (None after 640 rounds: bounded).

    A round is smaller than what the kernel holds for one connection even
    while the talker's test process gets no CPU, so the talker's transport
    never fills: with --max-backlog 64KiB a filled one is cut at its next
    write (rounds of 100 KB got the talker cut on a loaded machine)."""
    left = None
    for _round in range(640):  # at most 640 x 32 KB
        for _ in range(32):
            talker.send(_SAY, b"x" * 1000)
        got = 0
        while got < 32:
            ftype, payload = yield talker.next()
            if ftype == _MESSAGE:
                got += 1
            elif ftype == _LEAVE:
                left = payload
        if left is not None:
            return left
    return left


class RawClient(protocol.Protocol):
    """Everything the server sends until it closes (an HTTP exchange, say):
    ``closed`` fires with all of it."""

    def __init__(self) -> None:
        self.data = b""
        self.closed: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: object) -> None:
        self.closed.callback(self.data)


class FrameClient(protocol.Protocol):
    """A bare test client: send frames, await them one at a time."""

    def __init__(self) -> None:
        self.buffer = b""
        self.frames: list[tuple[int, bytes]] = []
        self.waiting: list[defer.Deferred] = []
        self.closed: defer.Deferred = defer.Deferred()

    def send(self, ftype: int, payload: bytes = b"") -> None:
        self.transport.write(HEADER.pack(ftype, len(payload)) + payload)

    def sendRaw(self, data: bytes) -> None:
        """``data`` in one write: many frames (pipelined), or part of one."""
        self.transport.write(data)

    def stopReading(self) -> None:
        """Read nothing more from the socket (a client that stops reading)."""
        self.transport.pauseProducing()

    def abort(self) -> None:
        """Reset the connection (RST), as a client that dies does."""
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 8:
            ftype, size = HEADER.unpack_from(self.buffer)
            if len(self.buffer) < 8 + size:
                break
            self.frames.append((ftype, self.buffer[8 : 8 + size]))
            self.buffer = self.buffer[8 + size :]
        self._serve()

    def _serve(self) -> None:
        while self.frames and self.waiting:
            self.waiting.pop(0).callback(self.frames.pop(0))

    def next(self) -> defer.Deferred:
        """Fires with the next (type, payload) received."""
        d: defer.Deferred = defer.Deferred()
        self.waiting.append(d)
        self._serve()
        return d

    @defer.inlineCallbacks
    def nextOf(self, wanted: int):  # type: ignore[no-untyped-def]
        """Fires with the payload of the next frame of type ``wanted``
        (frames of other types are skipped)."""
        while True:
            ftype, payload = yield self.next()
            if ftype == wanted:
                return payload

    def connectionLost(self, reason) -> None:  # type: ignore[no-untyped-def]
        for d in self.waiting:
            d.errback(reason)
        self.waiting = []
        self.closed.callback(None)


@implementer(IHalfCloseableProtocol)
class HalfCloseClient(FrameClient):
    """A client that keeps its socket open after the server's FIN (``ended``
    fires then), and can shut its own sending side."""

    def __init__(self) -> None:
        super().__init__()
        self.ended: defer.Deferred = defer.Deferred()

    def readConnectionLost(self) -> None:
        self.ended.callback(None)

    def writeConnectionLost(self) -> None:
        pass


def connect(port: int, kind: type[FrameClient] = FrameClient) -> defer.Deferred:
    """A connected :class:`FrameClient` (or ``kind``) to 127.0.0.1:port."""
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    return endpoint.connect(protocol.Factory.forProtocol(kind))


_HELLO, _WELCOME, _READY, _JOIN = 2, 3, 4, 7


@defer.inlineCallbacks
def activeUser(case, port: int, name: bytes, kind: type[FrameClient] = FrameClient):  # type: ignore[no-untyped-def]
    """A client of ``kind`` on 127.0.0.1:port, ACTIVE as ``name`` (its
    WELCOME and its own JOIN checked), aborted when ``case`` ends; fires
    with (client, its entry ``id.color.name``)."""
    client = yield connect(port, kind)
    case.addCleanup(client.transport.abortConnection)
    client.send(_HELLO, name)
    ftype, payload = yield client.next()
    case.assertEqual(ftype, _WELCOME, payload)
    welcomed, uid, color = payload.split(b".")
    case.assertEqual(welcomed, name)
    client.send(_READY)
    entry = b".".join((uid, color, welcomed))
    case.assertEqual((yield client.next()), (_JOIN, entry))
    return client, entry
