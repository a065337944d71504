"""Why a chatd-bench run could not go on, as one line and an exit status.

Setup failures are counted per reason so that a thousand users refused for
one reason make one line, and the counts of several load processes add up.
"""

from __future__ import annotations

from collections import Counter

#: Exit statuses (documented in ``chatd-bench --help`` and docs/benchmarks.md).
EXIT_OK = 0
EXIT_FAILED = 1  # the run completed but failed its integrity checks
EXIT_USAGE = 2  # bad command line
EXIT_SETUP = 3  # could not connect, or users were refused or never active
EXIT_RATE_LIMITED = 4  # the server rate-limits the load
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_STATUSES = """exit status:
  0    the run was clean
  1    integrity failures (or nothing was measured)
  2    usage error
  3    cannot connect; users refused by the server, lost or not ACTIVE
       within --setup-timeout
  4    the server rate-limits the load (start it with --rate-limit 0)
  130  interrupted (Ctrl-C)"""

RATE_LIMITED_MESSAGE = (
    "the server rate-limits messages (ERROR RATE_LIMITED {text}): "
    "benchmark a server started with --rate-limit 0"
)

#: What a user can do about a refusal, by ERROR code.
_HINTS = {
    "AUTH_FAILED": "give the server's password with --password-file",
    "SERVER_FULL": "raise the server's --max-clients/--max-per-ip or use fewer users",
}


class BenchError(Exception):
    """A run that cannot go on: :attr:`message` for stderr, :attr:`status`."""

    def __init__(
        self,
        message: str,
        status: int = EXIT_SETUP,
        failures: Counter[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        #: (what, detail) -> how many connections, for setup failures.
        self.failures: Counter[tuple[str, str]] = failures or Counter()

    def toJSON(self) -> dict:
        return {
            "message": self.message,
            "status": self.status,
            "failures": [[w, d, n] for (w, d), n in self.failures.items()],
        }

    @classmethod
    def fromJSON(cls, data: dict) -> BenchError:
        failures = Counter({(w, d): n for w, d, n in data.get("failures", [])})
        return cls(data["message"], data["status"], failures)


def plural(n: int, noun: str) -> str:
    """``noun`` (a plural such as ``users``) as it goes with ``n``."""
    return noun if n != 1 else noun.removesuffix("s")


def setupError(failures: Counter[tuple[str, str]], noun: str, total: int) -> BenchError:
    """One line for every way connections failed in setup, biggest first.

    ``what`` is ``refused`` (an ERROR before the handshake completed, its
    detail ``CODE text``), ``not active`` or ``failed`` (a connection that
    could not be made or was lost; its detail names the address).
    """
    if len(failures) == 1:
        ((what, detail), n) = next(iter(failures.items()))
        if what == "failed" and n == total:
            return BenchError(detail, EXIT_SETUP, failures)  # e.g. refused
    parts = []
    for (what, detail), n in failures.most_common():
        text = f"{n} {plural(n, noun)} {what}" + (f": {detail}" if detail else "")
        hint = _HINTS.get(detail.partition(" ")[0]) if what == "refused" else None
        parts.append(f"{text} ({hint})" if hint else text)
    text = "; ".join(parts)
    return BenchError(text, EXIT_SETUP, failures)


def mergeErrors(errors: list[BaseException], noun: str, total: int) -> BenchError:
    """The errors of several load processes as one: setup counts add up."""
    benchErrors = [e for e in errors if isinstance(e, BenchError)]
    if benchErrors and all(e.failures for e in benchErrors):
        merged: Counter[tuple[str, str]] = Counter()
        for e in benchErrors:
            merged.update(e.failures)
        return setupError(merged, noun, total)
    if benchErrors:
        return benchErrors[0]
    return BenchError(str(errors[0]) or type(errors[0]).__name__, EXIT_FAILED)
