"""bench/run.py's table of chatd against a fast peer server (issue 23).

The naive server is the floor of care; a peer is what another good
programmer gets from another stack (bench/peers/), so its ratios say where
chatd stands, not just that it beats a strawman.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

#: kind (as bench/run.py names servers) -> (script, what it is, module it needs)
PEERS = {
    "uvloop": ("bench/peers/asyncio_uvloop.py", "asyncio + uvloop", "uvloop"),
}
#: Not a peer but read the same way: chatd from another checkout
#: (bench/run.py --baseline), for before/after figures from one run.
BASELINE = ("the --baseline checkout", "chatd before this change")


def available() -> list[str]:
    """The peers whose event loop is installed here."""
    return [
        k for k, (_, _, module) in PEERS.items() if importlib.util.find_spec(module)
    ]


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def peerTable(
    results: dict,
    kind: str,
    rate: Callable[[dict], float],
    ms: Callable[[int | None], str],
    steal: Callable[[dict], str],
    load: str,
) -> list[str]:
    """Markdown lines: per scenario, chatd's rate and CPU per unit beside the
    peer's, and chatd/peer for both (rate above 1 and CPU below 1 favour
    chatd).  ``rate``, ``ms`` and ``steal`` are run.py's formatters."""
    rows = [
        (name, pair["chatd"], pair[kind])
        for name, pair in results.items()
        if kind in pair
    ]
    if not rows:
        return []
    c = load == "c"
    where, what = PEERS.get(kind, BASELINE)[:2]
    lines = [
        "",
        f"chatd against {what} ({where})"
        + (", a fast peer written the idiomatic way" if kind in PEERS else "")
        + "; same load, same pinning.  *rate chatd/peer* above 1 and",
        "*CPU chatd/peer* below 1 favour chatd.",
        "",
        f"| scenario | chatd /s | {kind} /s | rate chatd/peer | chatd CPU ns/unit | "
        f"{kind} CPU ns/unit | CPU chatd/peer | {kind} p99 ms | integrity {kind} |"
        + (" load core chatd/peer |" if c else "")
        + " steal chatd/peer |",
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if c else "") + "---|",
    ]
    for name, ch, peer in rows:
        cpu, peerCpu = ch["cpu_ns_per_unit"], peer["cpu_ns_per_unit"]
        lines.append(
            f"| {name} | {rate(ch):,.0f} | {rate(peer):,.0f} | "
            f"{ratio(rate(ch), rate(peer))} | {cpu} | {peerCpu} | "
            f"{ratio(cpu, peerCpu)} | {ms(peer['latency_us']['p99'])} | "
            f"{peer['integrity_failures']} |"
            + (
                f" {ch['load_core_share']:.2f}/{peer['load_core_share']:.2f} |"
                if c
                else ""
            )
            + f" {steal(ch)}/{steal(peer)} |"
        )
    return lines
