"""The parts of a run: a :class:`LoadPart` here, or one in a worker process.

With ``--processes K`` the parent spawns K workers (``chatd-bench _worker``)
and drives each through the phases of :class:`chatd.bench.load.LoadPart`
over its stdin/stdout, one line per step (``start``/``ready``, ``go``,
``stop``/``drained``, ``finish``/``result``; ``progress``, ``fail`` and
``abandon`` come unasked), so a barrier (all users active, all senders
drained) holds across processes.  :class:`IPart` is what the orchestrator
sees either way.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from twisted.internet import defer, protocol, reactor, stdio, task
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from chatd.bench.config import Config
from chatd.bench.errors import EXIT_FAILED, BenchError
from chatd.bench.load import LoadPart


class IPart(Interface):
    """One share of the load, driven through the phases by the orchestrator."""

    abandoned = Attribute("Deferred: fires with a BenchError if the run is given up")

    def start() -> defer.Deferred:
        """Connect; fires once every user is ACTIVE."""

    def go() -> None:
        """Start the load."""

    def progress() -> tuple[int, int]:
        """(completed, bytes) so far."""

    def stop() -> defer.Deferred:
        """Stop sending; fires once every request is answered."""

    def finish() -> defer.Deferred:
        """Fires with the part's figures (:func:`figures.partFigures`)."""

    def close() -> defer.Deferred:
        """Hang up now; fires once done."""


@implementer(IPart)
class LocalPart:
    """A :class:`LoadPart` in this process."""

    def __init__(self, config: Config) -> None:
        self.load = LoadPart(reactor, config)

    def start(self) -> defer.Deferred:
        return defer.ensureDeferred(self.load.start())

    def go(self) -> None:
        self.load.go()

    def progress(self) -> tuple[int, int]:
        return self.load.progress()

    def stop(self) -> defer.Deferred:
        return defer.ensureDeferred(self.load.stop())

    def finish(self) -> defer.Deferred:
        return defer.ensureDeferred(self.load.finish())

    @property
    def abandoned(self) -> defer.Deferred:
        return self.load.abandoned

    def close(self) -> defer.Deferred:
        self.load.abort()
        return defer.succeed(None)


@implementer(IPart)
class RemotePart(protocol.ProcessProtocol):
    """A worker process, driven over its stdin/stdout one line per step."""

    def __init__(self, config: Config, part: int, parts: int) -> None:
        self.buffer = b""
        self.waiting: dict[str, defer.Deferred] = {}
        self.counts = (0, 0)
        self.stderr = bytearray()
        args = [
            sys.executable,
            "-m",
            "chatd.bench.cli",
            "_worker",
            json.dumps(config.toJSON()),
            str(part),
            str(parts),
        ]
        self.ended: defer.Deferred = defer.Deferred()
        #: Fires with a BenchError when the worker gives the run up.
        self.abandoned: defer.Deferred = defer.Deferred()
        reactor.spawnProcess(self, sys.executable, args, env=os.environ.copy())

    def send(self, word: str) -> None:
        assert self.transport is not None  # spawned in __init__
        self.transport.write(word.encode() + b"\n")

    def command(self, word: str, expect: str) -> defer.Deferred:
        d = self.waiting[expect] = defer.Deferred()
        self.send(word)
        return d

    def start(self) -> defer.Deferred:
        return self.command("start", "ready")

    def go(self) -> None:
        self.send("go")

    def progress(self) -> tuple[int, int]:
        return self.counts

    def stop(self) -> defer.Deferred:
        return self.command("stop", "drained")

    def finish(self) -> defer.Deferred:
        return self.command("finish", "result")

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            word, _, rest = line.decode().partition(" ")
            if word == "progress":
                a, b = rest.split()
                self.counts = (int(a), int(b))
            elif word == "fail":
                self._fail(BenchError.fromJSON(json.loads(rest)))
            elif word == "abandon":
                if not self.abandoned.called:
                    self.abandoned.callback(BenchError.fromJSON(json.loads(rest)))
            elif word in self.waiting:
                self.waiting.pop(word).callback(json.loads(rest) if rest else None)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data[-4096:]

    def _fail(self, reason: BenchError) -> None:
        waiting, self.waiting = self.waiting, {}
        for d in waiting.values():
            d.errback(reason)

    def processEnded(self, reason: object) -> None:
        last = self.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        self._fail(BenchError("load process exited: " + "".join(last), EXIT_FAILED))
        self.ended.callback(None)

    def close(self) -> defer.Deferred:
        """Closing its stdin ends the worker (and its connections)."""
        assert self.transport is not None
        self.transport.closeStdin()
        return self.ended


class Worker(LineReceiver):
    """The worker side: run one :class:`LoadPart` as the parent says."""

    delimiter = b"\n"

    def __init__(self, load: LoadPart, done: defer.Deferred) -> None:
        self.load = load
        self.done = done
        self.ticker = task.LoopingCall(self.report)
        load.abandoned.addCallback(self.abandon)

    def abandon(self, reason: BenchError) -> None:
        self.sendLine(b"abandon " + json.dumps(reason.toJSON()).encode())

    def report(self) -> None:
        self.sendLine(b"progress %d %d" % self.load.progress())

    def lineReceived(self, line: bytes) -> None:
        word = line.decode().strip()
        steps = {
            "start": (self.load.start, "ready"),
            "stop": (self.load.stop, "drained"),
            "finish": (self.load.finish, "result"),
        }
        if word == "go":
            self.load.go()
            self.ticker.start(0.25)
        elif word in steps:
            method, answer = steps[word]
            d = defer.ensureDeferred(method())
            d.addCallback(self.answer, answer)
            d.addErrback(self.fail)

    def answer(self, value: object, word: str) -> None:
        if word == "result":
            if self.ticker.running:
                self.ticker.stop()
            self.report()
        text = word + (" " + json.dumps(value) if value is not None else "")
        self.sendLine(text.encode())
        if word == "result" and self.transport is not None:
            self.transport.loseConnection()  # exits once stdout is flushed

    def fail(self, failure: Failure) -> None:
        reason = failure.value
        if not isinstance(reason, BenchError):
            reason = BenchError(failure.getErrorMessage(), EXIT_FAILED)
        self.sendLine(b"fail " + json.dumps(reason.toJSON()).encode())

    def connectionLost(self, reason: object = None) -> None:
        self.load.abort()
        if not self.done.called:
            self.done.callback(None)


def worker(argv: Sequence[str]) -> None:
    """``chatd-bench _worker CONFIG PART PARTS``: serve the parent until it
    closes our stdin."""
    config = Config(**json.loads(argv[0]))
    load = LoadPart(reactor, config, int(argv[1]), int(argv[2]))

    def main(_reactor: object) -> defer.Deferred:
        done: defer.Deferred = defer.Deferred()
        stdio.StandardIO(Worker(load, done))
        return done

    task.react(main)
