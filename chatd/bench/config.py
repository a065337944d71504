"""One run's parameters: what the command line asked for, as sent to workers.

A plain dataclass so that ``--processes`` can hand it to each worker
process as JSON and get the same run back (:meth:`Config.toJSON`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from chatd.netutil import hostport


def secret(password: str) -> bytes:
    """A password as bytes again (the JSON config holds it surrogate-escaped)."""
    return password.encode("utf-8", "surrogateescape")


@dataclass
class Config:
    """One run's parameters (sent as JSON to worker processes)."""

    mode: str  # "echo" or "fanout"
    host: str = "127.0.0.1"
    port: int = 7777
    connections: int = 10
    depth: int = 1
    split: bool = False
    ping: bool = False
    #: Echo connections become ACTIVE users first, so that a run longer than
    #: the server's handshake timeout is not cut off by it.
    handshake: bool = True
    receivers: int = 10
    senders: int = 1
    size: int = 64
    window: int = 16
    rate: float | None = None
    #: Fan-out in this many rooms (protocol 1.2); 0: the default room (1.1).
    rooms: int = 0
    duration: float = 5.0
    seed: int = 0
    tag: str = "b"
    password: str | None = None
    connectConcurrency: int = 100
    drainTimeout: float = 15.0
    #: Seconds for every connection to be made and its user to be ACTIVE.
    setupTimeout: float = 15.0
    #: More [host, port] to spread the connections over, in turn (the
    #: nodes of one cluster); connection k goes to target k mod n.
    also: list = field(default_factory=list)

    @property
    def targets(self) -> list[tuple[str, int]]:
        return [(self.host, self.port), *((h, int(p)) for h, p in self.also)]

    @property
    def addresses(self) -> list[str]:
        return [hostport(h, p) for h, p in self.targets]

    @property
    def address(self) -> str:
        return ", ".join(self.addresses)

    @property
    def noun(self) -> str:
        """What the run's connections are, for messages."""
        return "users" if self.mode == "fanout" else "connections"

    @property
    def total(self) -> int:
        if self.mode == "fanout":
            return self.senders + self.receivers
        return self.connections

    @property
    def unit(self) -> str:
        """What the run counts: echo replies, or MESSAGE deliveries."""
        return "deliveries" if self.mode == "fanout" else "frames"

    def toJSON(self) -> dict:
        return asdict(self)
