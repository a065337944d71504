"""Run the real ``chatd-client`` (``python -m chatd.client``) as a subprocess.

Through pipes for the scripted mode, or on a pseudo-terminal
(``usePTY=True``) for the interactive one.  Output is awaited with
Deferreds that fire when an expected pattern appears, never by sleeping;
each wait has its own deadline and fails with what the client printed.
"""

from __future__ import annotations

import re
import sys

from twisted.internet import defer, error, protocol, reactor

from tests.daemon import ROOT, environment

#: An xterm-256 coloured name as the client paints it.
COLORED = rb"\x1b\[38;5;(\d+)m%s\x1b\[0m"


class ClientProcess(protocol.ProcessProtocol):
    def __init__(self, *args: str, pty: bool = False, env: dict | None = None) -> None:
        self.args = [sys.executable, "-m", "chatd.client", *args]
        self.pty = pty
        extra = {"TERM": "xterm-256color", **(env or {})}
        self.env = environment(extra)
        self.env.pop("NO_COLOR", None)
        self.output = bytearray()
        self.errors = bytearray()
        self.ended: defer.Deferred = defer.Deferred()
        self._waits: list[tuple[re.Pattern, defer.Deferred, object]] = []

    def start(self) -> ClientProcess:
        self.process = reactor.spawnProcess(
            self, self.args[0], self.args, env=self.env, path=str(ROOT), usePTY=self.pty
        )
        return self

    def outReceived(self, data: bytes) -> None:
        self.output += data
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.errors += data
        self._check()

    def _check(self) -> None:
        for wait in list(self._waits):
            pattern, d, timer = wait
            match = pattern.search(bytes(self.output + self.errors))
            if match:
                self._waits.remove(wait)
                timer.cancel()
                d.callback(match)

    def waitFor(self, pattern: bytes | str, timeout: float = 10) -> defer.Deferred:
        """Fires with the re.Match once stdout+stderr matches ``pattern``."""
        if isinstance(pattern, str):
            pattern = re.escape(pattern.encode())
        d: defer.Deferred = defer.Deferred()
        timer = reactor.callLater(timeout, self._timedOut, d, pattern)
        self._waits.append((re.compile(pattern), d, timer))
        self._check()
        return d

    def _timedOut(self, d: defer.Deferred, pattern: bytes) -> None:
        self._waits = [w for w in self._waits if w[1] is not d]
        d.errback(
            AssertionError(
                f"no {pattern!r} in time; stdout={bytes(self.output)!r} "
                f"stderr={bytes(self.errors)!r}"
            )
        )

    def type(self, data: bytes) -> None:
        self.transport.write(data)

    def closeStdin(self) -> None:
        self.transport.closeStdin()

    def processEnded(self, reason) -> None:  # type: ignore[no-untyped-def]
        for _, d, timer in self._waits:
            timer.cancel()
            d.errback(
                AssertionError(
                    f"client exited; stdout={bytes(self.output)!r} "
                    f"stderr={bytes(self.errors)!r}"
                )
            )
        self._waits = []
        code = reason.value.exitCode
        self.ended.callback(code if code is not None else 128 + reason.value.signal)

    def stop(self) -> defer.Deferred:
        """For cleanups: kill it if it is still running."""
        if not self.ended.called:
            try:
                self.process.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass
        return self.ended

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")


def spawn(
    test, *args: str, pty: bool = False, env: dict | None = None
) -> ClientProcess:
    """Start a client for ``test`` and make sure it is gone when the test ends."""
    client = ClientProcess(*args, pty=pty, env=env).start()
    test.addCleanup(client.stop)
    return client


def daemonLogs(daemon, text: str, timeout: float = 5) -> defer.Deferred:
    """Fires once the daemon (tests.daemon.Daemon) has logged ``text``.

    The daemon's log arrives over its own pipe, so it may lag behind what a
    client saw; this waits for it instead of racing it.
    """
    watch = daemon.watch
    d: defer.Deferred = defer.Deferred()
    original = watch.outReceived

    def check() -> None:
        if text in daemon.log and not d.called:
            watch.outReceived = original
            timer.cancel()
            d.callback(None)

    def outReceived(data: bytes) -> None:
        original(data)
        check()

    def timedOut() -> None:
        watch.outReceived = original
        d.errback(AssertionError(f"daemon did not log {text!r}: {daemon.log}"))

    timer = reactor.callLater(timeout, timedOut)
    watch.outReceived = outReceived
    check()
    return d
