"""What chatd-bench prints and the status it exits with, as pure functions.

The header line before the run, the summary after it, and the line and
status for a run cut short by a signal; :mod:`chatd.bench.cli` only
writes them out.
"""

from __future__ import annotations

import signal

from chatd.bench.config import Config
from chatd.bench.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, plural
from chatd.bench.figures import INTEGRITY

#: The exit status for SIGTERM (128 + 15, as a shell reports it).
EXIT_TERMINATED = 143


def header(config: Config, processes: int) -> str:
    """The run in one readable line: target, mode, connections, sizes, time."""
    if config.mode == "echo":
        shape = (
            f"{config.connections} {plural(config.connections, 'connections')}"
            f" x {config.depth} in flight"
            + (", split writes" if config.split else "")
            + (", PING mixed in" if config.ping else "")
            + ("" if config.handshake else ", no handshake")
        )
    else:
        pace = (
            f"{config.rate:g} msg/s each" if config.rate else f"window {config.window}"
        )
        rooms = (
            f" in {config.rooms} {plural(config.rooms, 'rooms')}"
            if config.rooms
            else ""
        )
        shape = (
            f"{config.senders} {plural(config.senders, 'senders')} + "
            f"{config.receivers} {plural(config.receivers, 'receivers')}{rooms}, "
            f"{config.size} B {'ROOM_' if config.rooms else ''}SAYs, {pace}"
        )
    spread = f", {processes} processes" if processes > 1 else ""
    return (
        f"chatd-bench {config.mode} -> {', '.join(config.addresses)}: "
        f"{shape}, {config.duration:g} s{spread}, seed {config.seed}"
    )


def summary(result: dict) -> str:
    """The merged figures (:func:`chatd.bench.figures.merge`) for people."""

    def ms(us: int | None) -> str:
        return "-" if us is None else f"{us / 1000:.3f} ms"

    lat = result["latency_us"]
    rate = result.get("deliveries_per_s", result.get("frames_per_s"))
    unit = "deliveries" if result["mode"] == "fanout" else "frames"
    lines = [
        f"  {result['completed']:,} {unit} in {result['seconds']:.2f}s: "
        f"{rate:,.0f} {unit}/s, {result['mb_per_s']:.2f} MB/s",
        *_perRoom(result),
        f"  latency p50 {ms(lat['p50'])}  p90 {ms(lat['p90'])}  "
        f"p99 {ms(lat['p99'])}  max {ms(lat['max'])}",
        "  integrity: "
        + "  ".join(f"{k} {result[k]}" for k in INTEGRITY)
        + f"  order_disagreements {result['order_disagreements']}"
        + "  errors "
        + (" ".join(f"{k}={v}" for k, v in result["errors"].items()) or "0"),
        "  result: " + ("OK" if result["ok"] else "FAILED"),
    ]
    lines += [f"  ! {e}" for e in result["examples"]]
    return "\n".join(lines)


def _perRoom(result: dict) -> list[str]:
    """The per-room line of a --rooms run (none without rooms)."""
    if "per_room" not in result:
        return []

    def span(figure: dict, noun: str) -> str:
        low, high = figure["min"], figure["max"]
        if low == high:
            return f"{low:,} {plural(low, noun)}"
        return f"{low:,}-{high:,} {noun}"

    per = result["per_room"]
    rate = per["deliveries_per_s"]
    return [
        f"  {result['rooms']:,} {plural(result['rooms'], 'rooms')}: "
        f"{span(per['users'], 'users')}, {span(per['senders'], 'senders')} and "
        f"{rate['mean']:,.0f} deliveries/s per room (min {rate['min']:,.0f}, "
        f"max {rate['max']:,.0f}); {result['rooms_out_of_order']} out of order"
    ]


def resultStatus(result: dict) -> int:
    """A finished run's exit status: 0 only if it was clean."""
    return EXIT_OK if result["ok"] else EXIT_FAILED


def interruption(signum: int, phase: str) -> tuple[str, int]:
    """(stderr line, exit status) for a run ended by SIGINT or SIGTERM
    ``phase`` (e.g. ``during the load``)."""
    if signum == signal.SIGINT:
        return f"chatd-bench: interrupted {phase}; no results\n", EXIT_INTERRUPTED
    return f"chatd-bench: terminated {phase}; no results\n", EXIT_TERMINATED
