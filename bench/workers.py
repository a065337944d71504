"""``--workers`` figures: fan-out with bench/loadgen.c at --workers 1, 2, 4.

    .venv/bin/python bench/workers.py [--runs 2] [--duration 5] [--json FILE]

For each configuration it starts ``twistd -n chatd --workers N`` (pinned
to core 0, so its workers are too; loadgen on core 1, as bench/run.py
does), spreads the clients evenly (``--max-clients-per-worker``), runs
loadgen and reads the CPU time of main and of every worker from
/proc/PID/stat every 0.1 s.  The CPU counted is that of loadgen's measured
window (it reports when it began, after set-up and a 0.5 s warm-up), so
handshakes are left out.  ``--workers 1`` is the single process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import threading
import time
from pathlib import Path

from run import LOAD_CORE, LOADGEN_SOURCE, buildC
from server import Server, pinned

SENDERS = 4
SIZE = 64
WINDOW = 64
WARMUP = 0.5
TICK = os.sysconf("SC_CLK_TCK")


def cpuOf(pid: int) -> float | None:
    """User + system CPU seconds of ``pid``; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def childrenOf(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(p) for p in text.split()]


class Sampler:
    """(monotonic time, main CPU, {worker pid: CPU}) every 0.1 s, in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float, dict[int, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            main = cpuOf(self.pid)
            workers = {}
            for child in childrenOf(self.pid):
                cpu = cpuOf(child)
                if cpu is not None:
                    workers[child] = cpu
            if main is not None:
                self.samples.append((now, main, workers))
            self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, when: float) -> tuple[float, dict[int, float]]:
        """The last sample taken at or before ``when``."""
        chosen = self.samples[0]
        for sample in self.samples:
            if sample[0] > when:
                break
            chosen = sample
        return chosen[1], chosen[2]


def run(loadgen: Path, workers: int, receivers: int, duration: float) -> dict:
    users = receivers + SENDERS
    options = ["--idle-timeout", "0", "--handshake-timeout", "0"]
    options += ["--max-per-ip", "0", "--workers", str(workers)]
    if workers > 1:
        per = math.ceil(users / workers)
        options += ["--max-clients-per-worker", str(per)]
    with Server.chatd(*options) as server:
        sampler = Sampler(server.proc.pid)
        argv = [str(loadgen), "fanout", "127.0.0.1", str(server.port)]
        argv += [str(receivers), str(SENDERS), str(SIZE), str(WINDOW), str(duration)]
        env = dict(os.environ, LOADGEN_SERVER_PID=str(server.proc.pid))
        launched = time.monotonic()
        proc = subprocess.run(
            pinned(argv, LOAD_CORE),
            env=env,
            capture_output=True,
            text=True,
            timeout=duration + 300,
        )
        sampler.stop()
    if not proc.stdout.strip():
        raise RuntimeError(f"loadgen failed: {proc.stderr[-2000:]}")
    r = json.loads(proc.stdout)
    begin = launched + r["setup_s"] + WARMUP
    main0, workers0 = sampler.at(begin)
    main1, workers1 = sampler.at(begin + r["seconds"])
    mainCpu = main1 - main0
    workerCpu = sum(cpu - workers0.get(pid, 0.0) for pid, cpu in workers1.items())
    total = mainCpu + workerCpu
    deliveries = r["deliveries"]
    return {
        "workers": workers,
        "receivers": receivers,
        "senders": SENDERS,
        "deliveries_per_s": r["deliveries_per_s"],
        "p99_ms": r["p99_ms"],
        "integrity_failures": r["integrity_failures"],
        "main_cpu_s": round(mainCpu, 3),
        "worker_cpu_s": round(workerCpu, 3),
        "worker_processes": len(workers1),
        "cpu_us_per_delivery": round(total * 1e6 / deliveries, 3)
        if deliveries
        else None,
        "main_share": round(mainCpu / total, 3) if total else None,
        "loadgen_main_cpu_s": r["server_cpu_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--receivers", type=int, nargs="+", default=[1000, 100])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    loadgen = buildC(LOADGEN_SOURCE)
    if loadgen is None:
        raise SystemExit("bench/workers.py: needs gcc to build bench/loadgen.c")
    results = []
    print(
        "receivers workers run deliveries/s p99_ms failures "
        "us/delivery main_share main_cpu worker_cpu procs loadgen_main_cpu"
    )
    for receivers in args.receivers:
        for workers in args.workers:
            for n in range(args.runs):
                r = run(loadgen, workers, receivers, args.duration)
                r["run"] = n + 1
                results.append(r)
                print(
                    f"{receivers} {workers} {n + 1} {r['deliveries_per_s']:.0f} "
                    f"{r['p99_ms']} {r['integrity_failures']} "
                    f"{r['cpu_us_per_delivery']} {r['main_share']} "
                    f"{r['main_cpu_s']} {r['worker_cpu_s']} {r['worker_processes']} "
                    f"{r['loadgen_main_cpu_s']}",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
