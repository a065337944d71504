"""Running out of file descriptors: raise the limit, summarise accept failures.

Twisted's listening Port copes with ``EMFILE`` itself (it keeps a reserved
descriptor, accepts and closes the waiting clients, and tries again on the
next turn), but it logs each refused attempt, so a connection flood at the
limit becomes a log flood.  :class:`AcceptFailures` stands in for the port's
log observer: the first failure of a burst is logged, the rest are counted,
and one line sums the burst up once accepting has been quiet for a second.
"""

from __future__ import annotations

import resource
from typing import Any

from twisted.logger import ILogObserver, Logger, globalLogPublisher
from zope.interface import implementer

log = Logger(namespace="chatd")

#: Twisted's messages for a failed accept (tcp._accept).
_ACCEPT_FAILURE = ("EMFILE", "Could not accept new connection")


def raiseFileLimit() -> int:
    """Raise the soft open-files limit to the hard one: every user is a socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    log.info("open files limit: {soft} (hard {hard})", soft=soft, hard=hard)
    return soft


@implementer(ILogObserver)
class AcceptFailures:
    """A listening port's log observer that summarises accept failures."""

    quiet = 1.0  # seconds without a failure that end a burst

    def __init__(self, clock: Any, forward: ILogObserver = globalLogPublisher) -> None:
        self.clock = clock
        self.forward = forward
        self.inBurst = 0
        self.total = 0
        self._end = None

    def __call__(self, event: dict) -> None:
        text = event.get("log_format") or ""
        if not any(marker in text for marker in _ACCEPT_FAILURE):
            self.forward(event)
            return
        if "Re-reserving" in text or "releasing reserved" in text:
            return  # bookkeeping lines of the same recovery
        self.total += 1
        self.inBurst += 1
        if self.inBurst == 1:
            log.warn(
                "accept failing: out of file descriptors ({error}); "
                "new connections are closed until some free up",
                error=event.get("acceptError", "EMFILE"),
            )
        if self._end is not None and self._end.active():
            self._end.reset(self.quiet)
        else:
            self._end = self.clock.callLater(self.quiet, self._burstOver)

    def _burstOver(self) -> None:
        self._end = None
        log.warn(
            "accept failures over: {n} connection attempts refused for lack of "
            "file descriptors",
            n=self.inBurst,
        )
        self.inBurst = 0

    def stop(self) -> None:
        if self._end is not None and self._end.active():
            self._end.cancel()
        self._end = None

    def watch(self, port: object) -> None:
        """Route ``port``'s log through this observer (a no-op if it has none)."""
        logger = getattr(port, "_logger", None)
        if isinstance(logger, Logger):
            port._logger = Logger(  # type: ignore[attr-defined]
                namespace=logger.namespace, source=port, observer=self
            )
