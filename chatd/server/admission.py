"""Who may connect, and how often a password may be tried (docs/limits.md).

:class:`Admission` decides for every new connection: the server's state
(maintenance, shutdown), ``--max-clients``, then, for addresses outside
``--limit-exempt``, ``--max-per-ip`` (connections at once) and
``--connect-rate``/``--connect-burst`` (new connections a second).  A
refusal names the limit in its ERROR text and is logged through a
:class:`~chatd.server.logsummary.LogSummary`, so a flood of refusals is a
few lines.

It also slows password guessing.  After an AUTH_FAILED an address is
*locked* for a delay that doubles with each consecutive failure
(``--auth-backoff`` up to ``--auth-backoff-max``); the failing connection
gets its AUTH_FAILED only when the delay is over, and a HELLO from that
address while it is locked is refused at once without its password being
checked.  So at most one guess per delay is ever checked, however many
connections the guesser opens, and only one delayed connection per address
waits at a time: the delay cannot be used to hold slots.  A success resets
the address.

An IPv6 address is counted by its /64, the block one host is usually
given, so that hopping through it does not multiply the limits.  Memory is
bounded: per-address tables drop idle entries and hold at most
``capacity`` addresses.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zope.interface import implementer

from chatd.core.hub import ILoginGuard
from chatd.core.limits import BucketTable, PerAddress
from chatd.server.logsummary import LogSummary
from chatd.wire import ErrorCode

if TYPE_CHECKING:
    from chatd.server.config import Config

DEFAULT_EXEMPT = "127.0.0.0/8,::1"

#: Addresses each per-address table remembers at most.
CAPACITY = 10_000

#: An address whose last login failure is this old starts again from the
#: first delay.
AUTH_FORGET = 600.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Networks(tuple):
    """Parsed ``--limit-exempt``; prints as it is written."""

    def __str__(self) -> str:
        return (
            ",".join(
                str(n.network_address if n.prefixlen == n.max_prefixlen else n)
                for n in self
            )
            or "none"
        )

    def __contains__(self, host: object) -> bool:
        try:
            ip = ipaddress.ip_address(str(host))
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self)


def parseNetworks(value: str) -> Networks:
    """``10.0.0.0/8,::1`` (or ``none``) as networks; ValueError says why."""
    text = value.strip()
    if text.lower() == "none":
        return Networks()
    networks: list[Network] = []
    for part in text.split(","):
        try:
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"{part.strip()!r} is not a network: give comma-separated "
                "addresses or networks such as 10.0.0.0/8,::1, or none"
            ) from None
    return Networks(networks)


def connectionsPerSecond(value: str) -> float:
    number = float(value)
    if not (0 <= number < 1e9):
        raise ValueError("must be a number of connections per second, 0 or more")
    return number


def addressKey(host: str) -> str:
    """What the per-address limits count: an IPv4 address or an IPv6 /64."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host  # "unix" and the like
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{host}/64", strict=False))
    return host


class AuthBackoff:
    """Consecutive login failures by address, in bounded memory."""

    def __init__(
        self,
        seconds: Callable[[], float],
        first: float,
        cap: float,
        capacity: int = CAPACITY,
    ) -> None:
        self.seconds = seconds
        self.first = first
        self.cap = cap
        self.capacity = capacity
        #: key -> [consecutive failures, locked until]
        self.entries: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def lockedFor(self, key: str) -> float:
        """Seconds until ``key`` may have a password checked again."""
        entry = self.entries.get(key)
        return max(0.0, entry[1] - self.seconds()) if entry else 0.0

    def failed(self, key: str) -> float:
        """Count a failure; returns the delay (and lock) it earns."""
        if not self.first:
            return 0.0
        now = self.seconds()
        entry = self.entries.pop(key, None)
        if entry is None or now - entry[1] > AUTH_FORGET:
            entry = [0, now]
        entry[0] += 1
        delay = min(self.cap, self.first * 2 ** min(entry[0] - 1, 64))
        entry[1] = now + delay
        self.entries[key] = entry  # most recent last
        self._prune(now)
        return delay

    def succeeded(self, key: str) -> None:
        self.entries.pop(key, None)

    def failures(self, key: str) -> int:
        """Consecutive failures counted for ``key`` (0: trusted)."""
        entry = self.entries.get(key)
        return int(entry[0]) if entry else 0

    def learn(self, key: str, failures: int, delay: float) -> None:
        """Another process's verdict on ``key`` (``--workers``): it has
        ``failures`` consecutive failures and is locked ``delay`` seconds
        more; 0 failures means a right password trusted it again.  An older
        verdict (fewer failures) than the one held is ignored."""
        if not failures:
            self.entries.pop(key, None)
            return
        now = self.seconds()
        entry = self.entries.pop(key, None)
        if entry is None or failures >= entry[0]:
            entry = [failures, now + delay]
        self.entries[key] = entry
        self._prune(now)

    def lockedNow(self) -> int:
        """How many addresses are locked at this moment (for /status)."""
        now = self.seconds()
        return sum(1 for _, until in self.entries.values() if until > now)

    def verdicts(self) -> list[tuple[str, int, float]]:
        """(key, failures, seconds still locked) of every address with
        failures not yet forgotten, for a process that starts later."""
        now = self.seconds()
        return [
            (key, int(failures), max(0.0, until - now))
            for key, (failures, until) in self.entries.items()
            if now - until <= AUTH_FORGET
        ]

    def _prune(self, now: float) -> None:
        entries = self.entries
        for _ in range(2):
            key, (_, until) = next(iter(entries.items()))
            if now - until > AUTH_FORGET:
                del entries[key]
            else:
                break
        while len(entries) > self.capacity:
            entries.popitem(last=False)


@implementer(ILoginGuard)
class Admission:
    """The factory's gatekeeper; reads its settings from ``config``."""

    def __init__(self, config: Config, clock: Any, capacity: int = CAPACITY) -> None:
        self.clock = clock
        self.perAddress = PerAddress(0)
        self.connects = BucketTable(0, 1, clock.seconds, capacity)
        self.auth = AuthBackoff(clock.seconds, 0, 0, capacity)
        self.logs = LogSummary(clock)
        #: Connections waiting for their late AUTH_FAILED.
        self._late: dict[Any, Any] = {}
        self.applyConfig(config)

    def applyConfig(self, config: Config) -> None:
        self.config = config
        self.perAddress.limit = config.max_per_ip
        if (config.connect_rate, config.connect_burst) != (
            self.connects.rate,
            self.connects.burst,
        ):
            self.connects.reset(config.connect_rate, config.connect_burst)
        self.auth.first = config.auth_backoff
        self.auth.cap = config.auth_backoff_max
        self.logs.interval = config.log_summary

    def exempt(self, host: str) -> bool:
        return host == "unix" or host in self.config.limit_exempt

    # -- connections -------------------------------------------------------

    def admit(
        self, host: str, peer: str, refusal: ErrorCode | None, used: int
    ) -> tuple[ErrorCode, str | None] | None:
        """None to let the connection in (it is then counted until
        :meth:`release`), else the fatal ERROR and its text.

        ``refusal`` is the server's own (MAINTENANCE, SHUTDOWN); ``used`` is
        how many slots of ``--max-clients`` are taken.
        """
        config = self.config
        key = addressKey(host)
        if refusal is not None:
            return self._refuse(refusal, None, refusal.name.lower(), key, peer)
        if used >= config.max_clients:
            text = f"server is full (max-clients {config.max_clients})"
            return self._refuse(ErrorCode.SERVER_FULL, text, "max-clients", key, peer)
        if not self.exempt(host):
            limit = self.perAddress.limit
            if limit and self.perAddress.counts[key] >= limit:
                text = f"too many connections from {key} at once (max-per-ip {limit})"
                return self._refuse(
                    ErrorCode.SERVER_FULL, text, "max-per-ip", key, peer
                )
            if not self.connects.take(key):
                text = (
                    f"too many new connections from {key}: retry in "
                    f"{max(1, round(self.connects.wait(key)))} s (connect-rate "
                    f"{config.connect_rate:g}/s, connect-burst {config.connect_burst})"
                )
                return self._refuse(
                    ErrorCode.SERVER_FULL, text, "connect-rate", key, peer
                )
        # Counted for exempt addresses too, so a reload that changes
        # --limit-exempt releases what it admitted.
        self.perAddress.counts[key] += 1
        return None

    def _refuse(
        self, code: ErrorCode, text: str | None, limit: str, key: str, peer: str
    ) -> tuple[ErrorCode, str | None]:
        self.logs.event(
            "connections from {addresses} refused (" + limit + ")",
            key,
            "refused peer={peer}: {code} ({limit})",
            peer=peer,
            code=code.name,
            limit=limit,
        )
        return code, text

    def release(self, host: str) -> None:
        """A connection admitted from ``host`` no longer counts."""
        self.perAddress.release(addressKey(host))

    # -- passwords -----------------------------------------------------------

    def locked(self, proto: Any) -> str | None:
        """The AUTH_FAILED text for a HELLO from a locked address, or None
        when its password may be checked."""
        host = proto.host
        if self.exempt(host):
            return None
        key = addressKey(host)
        wait = self.auth.lockedFor(key)
        if not wait:
            return None
        self._logAuth(key, proto.peer, "locked: not checked")
        return (
            f"too many failed logins from {key}: password not checked, "
            f"retry in {max(1, round(wait + 0.49))} s"
        )

    def failed(self, proto: Any) -> float:
        """A wrong password from ``proto``: lock its address, and return how
        long its AUTH_FAILED waits (0: answer now)."""
        host = proto.host
        self._logAuth(addressKey(host), proto.peer, "wrong password")
        if self.exempt(host):
            return 0.0
        return self.auth.failed(addressKey(host))

    def succeeded(self, proto: Any) -> None:
        self.auth.succeeded(addressKey(proto.host))

    def _logAuth(self, key: str, peer: str, why: str) -> None:
        self.logs.event(
            "logins from {addresses} failed (" + why + ")",
            key,
            "auth failed peer={peer} ({why})",
            peer=peer,
            why=why,
        )

    def answerLater(self, proto: Any, delay: float, answer: Callable[[], None]) -> None:
        """Give ``proto`` its ``answer`` (the AUTH_FAILED close) in ``delay``
        seconds.  Until then its input is read and dropped, and the delay
        stands in for its handshake timeout."""
        proto.stopFraming = True
        proto.setTimeout(None)

        def late() -> None:
            self._late.pop(proto, None)
            answer()

        self._late[proto] = self.clock.callLater(delay, late)

    def forget(self, proto: Any) -> None:
        """``proto`` is gone: no late answer for it."""
        call = self._late.pop(proto, None)
        if call is not None and call.active():
            call.cancel()
