"""Interleaved rounds for bench/run.py: one figure per server from several runs.

On a shared machine one run of a scenario can land on a noisy second; the
servers are therefore run in turn, round after round (chatd, peer, chatd,
peer, ...), so noise hits each of them alike, and each server's figure is
the round with its median rate, carrying every round's rate and CPU so a
reader sees the spread.
"""

from __future__ import annotations

from collections.abc import Callable


def median(runs: list[dict], rate: Callable[[dict], float]) -> dict:
    """The run with the median rate (the lower middle one of an even count),
    with ``rounds``: every run's rate and CPU per unit, in the order run."""
    if not runs:
        raise ValueError("no runs")
    ordered = sorted(runs, key=rate)
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds"] = [
        {"rate": rate(r), "cpu_ns_per_unit": r.get("cpu_ns_per_unit")} for r in runs
    ]
    # Every round must be clean, not just the one shown.
    chosen["integrity_failures"] = sum(r.get("integrity_failures", 0) for r in runs)
    chosen["ok"] = all(r.get("ok", False) for r in runs)
    return chosen


def interleaved(
    kinds: list[str], rounds: int, run: Callable[[str], dict]
) -> dict[str, list[dict]]:
    """``run(kind)`` for every kind in turn, ``rounds`` times over."""
    results: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for _ in range(rounds):
        for kind in kinds:
            results[kind].append(run(kind))
    return results
