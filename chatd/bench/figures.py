"""The figures: what one load part measured, and how the parts add up.

Pure bookkeeping, no sockets: a part turns its :class:`Counts`, latency
histogram and stream ends into one JSON-able dict (:func:`partFigures`);
the parent adds those dicts up and derives rates, percentiles and the
verdict (:func:`merge`).  The same dict crosses the worker pipe.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from chatd.bench.checks import Histogram, tailGaps
from chatd.bench.config import Config
from chatd.bench.order import orderDisagreements, roomsOutOfOrder

#: Integrity figures: any non-zero one fails the run.
INTEGRITY = (
    "mismatches",
    "unexpected",
    "unanswered",
    "gaps",
    "duplicates",
    "reorders",
    "disconnects",
)


@dataclass
class Counts:
    """What one part measured; :func:`merge` adds parts up."""

    completed: int = 0  # echo replies, or MESSAGE deliveries
    bytes: int = 0  # frame bytes received that count as load
    sent: int = 0
    mismatches: int = 0
    unexpected: int = 0
    unanswered: int = 0
    gaps: int = 0
    duplicates: int = 0
    reorders: int = 0
    disconnects: int = 0
    errors: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)
    #: "n:hash" -> users whose running hash of their first n MESSAGEs it is.
    orders: Counter = field(default_factory=Counter)
    #: With --rooms: room -> MESSAGE deliveries to its members.
    rooms: Counter = field(default_factory=Counter)


#: One fan-out user at the end: (its sender number or None, how many it
#: sent, sender -> the highest sequence number it got from that sender, its
#: room's number: user k is in room k mod --rooms, 0 without rooms).
UserEnd = tuple[int | None, int, dict[int, int], int]


def streamEnds(
    users: Iterable[UserEnd], senders: int, rooms: int = 0
) -> tuple[dict[int, int], dict[int, Counter]]:
    """What :func:`chatd.bench.checks.tailGaps` needs from one part's users:
    how many each sender sent, and per sender how many users saw it end where
    (-1: nothing from it).  With ``rooms`` a user hears only the senders of
    its room (sender s is user s, so in room s mod rooms)."""
    sent: dict[int, int] = {}
    lastSeen: dict[int, Counter] = {}
    for sender, seq, last, room in users:
        if sender is not None:
            sent[sender] = seq
        for s in range(room, senders, rooms) if rooms else range(senders):
            lastSeen.setdefault(s, Counter())[last.get(s, -1)] += 1
    return sent, lastSeen


def spread(values: list[float]) -> dict[str, float]:
    """min, mean and max of per-room figures."""
    return {
        "min": min(values),
        "mean": round(sum(values) / len(values), 1),
        "max": max(values),
    }


def roomFigures(config: Config, rooms: Counter, seconds: float) -> dict:
    """Per-room figures of a --rooms run: members, senders and deliveries/s
    per room (:func:`spread`), from room -> deliveries."""
    n = config.rooms
    return {
        "users": spread([len(range(r, config.total, n)) for r in range(n)]),
        "senders": spread([len(range(r, config.senders, n)) for r in range(n)]),
        "deliveries_per_s": spread(
            [round(rooms[f"r{r}"] / seconds, 1) for r in range(n)]
        ),
    }


def partFigures(
    counts: Counts,
    latency: Histogram,
    sent: dict[int, int],
    lastSeen: dict[int, Counter],
) -> dict:
    """One part's figures as JSON (the keys :func:`merge` reads)."""
    result = asdict(counts)
    result["errors"] = dict(counts.errors)
    result["orders"] = dict(counts.orders)  # asdict garbles Counters
    result["rooms"] = dict(counts.rooms)
    result["examples"] = counts.examples[:20]
    result["latency"] = latency.toJSON()
    result["sentBySender"] = {str(k): v for k, v in sent.items()}
    result["lastSeen"] = {
        str(s): {str(k): v for k, v in c.items()} for s, c in lastSeen.items()
    }
    return result


def merge(config: Config, results: list[dict], seconds: float) -> dict:
    """Add the parts' figures up and derive rates and percentiles."""
    out: dict = {
        "mode": config.mode,
        "seed": config.seed,
        "processes": len(results),
        "seconds": round(seconds, 3),
    }
    for key in ("completed", "bytes", "sent", *INTEGRITY):
        out[key] = sum(r[key] for r in results)
    out["order_disagreements"] = orderDisagreements(
        r.get("orders", {}) for r in results
    )
    errors: Counter = Counter()
    latency = Histogram()
    sent: dict[int, int] = {}
    lastSeen: dict[int, Counter] = {}
    examples: list[str] = []
    rooms: Counter = Counter()
    for r in results:
        rooms.update(r.get("rooms", {}))
        errors.update(r["errors"])
        latency.merge(Histogram.fromJSON(r["latency"]))
        sent.update({int(k): v for k, v in r["sentBySender"].items()})
        for s, c in r["lastSeen"].items():
            lastSeen.setdefault(int(s), Counter()).update(
                {int(k): v for k, v in c.items()}
            )
        examples.extend(r["examples"])
    if config.mode == "fanout":
        out["gaps"] += tailGaps(sent, lastSeen)
        out["deliveries_per_s"] = round(out["completed"] / seconds, 1)
        out["messages_sent"] = out["sent"]
        out["parameters"] = {
            k: getattr(config, k)
            for k in ("receivers", "senders", "size", "window", "rate", "duration")
        }
        if config.rooms:
            out["parameters"]["rooms"] = out["rooms"] = config.rooms
            out["per_room"] = roomFigures(config, rooms, seconds)
            orders = (r.get("orders", {}) for r in results)
            out["rooms_out_of_order"] = roomsOutOfOrder(orders)
    else:
        out["frames_per_s"] = round(out["completed"] / seconds, 1)
        out["parameters"] = {
            k: getattr(config, k)
            for k in ("connections", "depth", "split", "ping", "duration")
        }
    out["mb_per_s"] = round(out["bytes"] / seconds / 1e6, 3)
    out["latency_us"] = latency.summary()
    out["errors"] = dict(errors)
    out["integrity_failures"] = (
        sum(out[k] for k in INTEGRITY)
        + out["order_disagreements"]
        + sum(errors.values())
    )
    # Nothing measured is not a pass, unless nothing was asked for: fan-out
    # with --senders 0 only holds idle users (the suite's memory figure).
    idle = config.mode == "fanout" and not config.senders
    if not out["completed"] and not idle:
        examples.insert(0, "no request was answered and no message delivered")
    out["ok"] = out["integrity_failures"] == 0 and (out["completed"] > 0 or idle)
    out["examples"] = examples[:20]
    return out
