"""The benchmark suite: standard chatd-bench scenarios, chatd against a naive server.

Each scenario runs against a fresh ``twistd -n chatd`` and a fresh
bench/naive_server.py (the reference point), the server pinned to core 0
and the load to core 1 when ``taskset`` and two cores exist.  The load is
chatd-bench (``--load py``, the default) or bench/loadgen.c (``--load c``),
a C epoll load generator compiled on the fly with gcc: the Python tool
saturates its core well below what the servers can do, so with it the
ratios measure the load tool.  With ``--load c`` the suite also runs
bench/floor.c, the least a server can do for the same traffic in C: its
CPU per delivery is what the kernel alone costs.  Server CPU time comes
from /proc/PID/stat before and after the load; RSS per idle user from
/proc/PID/status with 2,000 users connected (always with chatd-bench: idle
users need no speed).
Writes docs/benchmarks.md (with docs/benchmarks-notes.md, hand-written,
appended when it exists), docs/benchmarks.png and docs/benchmarks.json.

    python bench/run.py [--duration 5] [--out docs] [--load c]
    python bench/run.py --smoke --out /tmp/x    # one short scenario
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from server import ROOT, Server, freePort, pinned

import twisted

BENCH = [sys.executable, "-c", "from chatd.bench.cli import main; main()"]
LOAD_CORE = 1
LOADGEN_SOURCE = ROOT / "bench" / "loadgen.c"
FLOOR_SOURCE = ROOT / "bench" / "floor.c"
NOTES = "benchmarks-notes.md"

#: name, mode, chatd-bench options.  Targets refer to these names.
SCENARIOS: list[tuple[str, str, dict]] = [
    ("echo 100x16", "echo", {"connections": 100, "depth": 16}),
    ("echo 50x16", "echo", {"connections": 50, "depth": 16}),
    ("fanout 1x50 64B w16", "fanout", {"senders": 1, "receivers": 50, "size": 64, "window": 16}),
    ("fanout 1x100 64B", "fanout", {"senders": 1, "receivers": 100, "size": 64, "window": 16}),
    ("fanout 1x100 512B", "fanout", {"senders": 1, "receivers": 100, "size": 512, "window": 16}),
    ("fanout 4x100 64B", "fanout", {"senders": 4, "receivers": 100, "size": 64, "window": 16}),
    ("fanout 4x100 512B", "fanout", {"senders": 4, "receivers": 100, "size": 512, "window": 16}),
    ("fanout 4x100 64B w64", "fanout", {"senders": 4, "receivers": 100, "size": 64, "window": 64}),
    ("fanout 1x1000 64B", "fanout", {"senders": 1, "receivers": 1000, "size": 64, "window": 16}),
    ("fanout 1x1000 512B", "fanout", {"senders": 1, "receivers": 1000, "size": 512, "window": 16}),
]  # fmt: skip
SMOKE: list[tuple[str, str, dict]] = [
    ("echo 10x4", "echo", {"connections": 10, "depth": 4}),
    ("fanout 1x10 64B", "fanout", {"senders": 1, "receivers": 10, "size": 64, "window": 4}),
]  # fmt: skip

IDLE_USERS = 2000


#: Compiled C programs by source name (bench/run.py --load c).
BUILT: dict[str, Path] = {}


def startServer(kind: str) -> Server:
    if kind == "chatd":
        return Server.chatd(
            "--idle-timeout", "0", "--handshake-timeout", "0", "--rate-limit", "0"
        )
    port = freePort()
    if kind == "floor":
        return Server([str(BUILT["floor"]), str(port)], port)
    return Server([sys.executable, "bench/naive_server.py", str(port)], port)


def bench(
    port: int, mode: str, options: dict, duration: float, progress: str = "lines"
) -> subprocess.Popen:
    argv = [*BENCH, mode, f"127.0.0.1:{port}", "--duration", str(duration)]
    for key, value in options.items():
        argv += [f"--{key}", str(value)]
    argv += ["--json", "--progress", progress, "--seed", "1"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        pinned(argv, LOAD_CORE),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def cpuTimes() -> list[int]:
    """The machine's CPU times from /proc/stat (user nice system idle ... steal)."""
    try:
        return [int(x) for x in Path("/proc/stat").read_text().split()[1:9]]
    except (OSError, ValueError):
        return []


def measure(
    kind: str, mode: str, options: dict, duration: float, loadgen: Path | None = None
) -> dict:
    """One scenario against a fresh server: the load's result plus server CPU.

    Also the share of the machine's CPU time stolen by the hypervisor while
    it ran: on a shared virtual machine that is what makes runs differ.
    """
    before = cpuTimes()
    if loadgen is not None:
        result = measureC(loadgen, kind, mode, options, duration)
    else:
        result = measurePy(kind, mode, options, duration)
    after = cpuTimes()
    if before and after:
        total = sum(after) - sum(before)
        result["steal_share"] = round((after[7] - before[7]) / total, 3) if total else 0
    return result


def measurePy(kind: str, mode: str, options: dict, duration: float) -> dict:
    """chatd-bench against a fresh server.

    CPU is counted from chatd-bench's first progress line (a second into
    the load, so connection set-up and handshakes are left out) to its end.
    """
    with startServer(kind) as server:
        proc = bench(server.port, mode, options, duration)
        first = proc.stderr.readline().split()
        cpu0 = server.cpuSeconds()
        count0 = int(first[1]) if len(first) > 1 else 0
        out, _ = proc.communicate(timeout=duration + 300)
        cpu1 = server.cpuSeconds()
    result = json.loads(out)
    result["server_cpu_s"] = round(cpu1 - cpu0, 3)
    done = result["completed"] - count0
    result["cpu_ns_per_unit"] = (
        round((cpu1 - cpu0) * 1e9 / done, 1) if done > 0 else None
    )
    result["exit_status"] = proc.returncode
    return result


def buildC(source: Path) -> Path | None:
    """Compile a C program of bench/ into a temporary directory; None if
    there is no compiler or it fails (said on stderr)."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        print(f"gcc not found: {source.name} not built", file=sys.stderr)
        return None
    tmp = tempfile.mkdtemp(prefix="chatd-bench-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    exe = Path(tmp) / source.stem
    argv = [gcc, "-O2", "-std=c11", "-Wall", "-o", str(exe), str(source)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"gcc failed on {source.name}:\n{done.stderr}", file=sys.stderr)
        return None
    BUILT[source.stem] = exe
    return exe


def measureC(
    loadgen: Path, kind: str, mode: str, options: dict, duration: float
) -> dict:
    """bench/loadgen against a fresh server, shaped like chatd-bench's result.

    loadgen reads the server's CPU time itself at the edges of its measured
    window (after a 0.5 s warm-up), so set-up is left out exactly.
    """
    o = options
    with startServer(kind) as server:
        if mode == "echo":
            params = [o["connections"], o["depth"]]
        else:
            params = [o["receivers"], o["senders"], o["size"], o["window"]]
        argv = [str(loadgen), mode, "127.0.0.1", str(server.port), *map(str, params)]
        env = dict(os.environ, LOADGEN_SERVER_PID=str(server.proc.pid))
        proc = subprocess.run(
            pinned([*argv, str(duration)], LOAD_CORE),
            env=env,
            capture_output=True,
            text=True,
            timeout=duration + 300,
        )
    if not proc.stdout.strip():
        raise RuntimeError(f"loadgen failed ({proc.returncode}): {proc.stderr[-2000:]}")
    r = json.loads(proc.stdout)
    done = r["round_trips" if mode == "echo" else "deliveries"]
    if mode == "echo":
        r["frames_per_s"] = r["round_trips_per_s"]
    r["completed"] = done
    r["parameters"] = {**options, "duration": duration}
    r["ok"] = r["integrity_failures"] == 0
    cpu = r["server_cpu_s"]
    r["cpu_ns_per_unit"] = (
        round(cpu * 1e9 / done, 1) if cpu is not None and done else None
    )
    r["load_core_share"] = round(r["load_cpu_s"] / r["seconds"], 3)
    r["examples"] = proc.stderr.splitlines()[:20]
    r["exit_status"] = proc.returncode
    return r


def idleRss(kind: str, users: int) -> dict:
    """RSS growth per ACTIVE idle user, with ``users`` connected."""
    with startServer(kind) as server:
        base = server.rss()
        files0 = server.openFiles()
        options = {"senders": 0, "receivers": users}
        proc = bench(server.port, "fanout", options, 4.0, progress="off")
        deadline = time.monotonic() + 60
        while server.openFiles() < files0 + users and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        time.sleep(1.0)  # handshakes done; let the allocator settle
        rss = server.rss()
        connected = server.openFiles() - files0
        out, _ = proc.communicate(timeout=180)
    result = json.loads(out)
    return {
        "users": users,
        "rss_before": base,
        "rss_with_users": rss,
        "bytes_per_user": round((rss - base) / users),
        "connected": connected,
        "ok": result["ok"],
    }


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "kernel": platform.release(),
        "pinned": pinned(["x"], 0) != ["x"],
    }


def rate(r: dict) -> float:
    return r.get("deliveries_per_s") or r.get("frames_per_s") or 0.0


def steal(r: dict) -> str:
    share = r.get("steal_share")
    return "-" if share is None else f"{share:.0%}"


def ms(us: int | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


LOADS = {
    "py": "chatd-bench (the Python load tool, chatd/bench/)",
    "c": "bench/loadgen.c (C, epoll, single-threaded; compiled with gcc -O2)",
}


def report(
    results: dict, rss: dict, info: dict, duration: float, plot: bool, load: str
) -> str:
    tool = "chatd-bench" if load == "py" else "loadgen"
    window = (
        "from 1 s into the load to its end"
        if load == "py"
        else "over the measured window, after a 0.5 s warm-up"
    )
    lines = [
        "# chatd benchmarks",
        "",
        f"Generated by `python bench/run.py{' --load c' if load == 'c' else ''}` "
        "(do not edit by hand; notes go in",
        "docs/benchmarks-notes.md, appended below).  Every run",
        "below checks every byte: the *integrity* column is mismatches + gaps +",
        "duplicates + reorders + ERROR frames + disconnects (0 = all clean).",
        "",
        f"Load generator: {LOADS[load]}.",
        f"Machine: {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}, "
        f"Python {info['python']}, Twisted {info['twisted']}.  "
        + (
            f"Server pinned to core 0 and {tool} to core 1 (`taskset`)."
            if info["pinned"]
            else "No pinning (taskset or a second core missing)."
        ),
        f"Each scenario: {duration:g} s of load against a freshly started server.",
        "Fan-out is closed loop: each sender keeps at most *w* messages",
        "unacknowledged (its own MESSAGE copy is the acknowledgement); senders",
        "are users too, so a message to 50 receivers and 1 sender is 51 deliveries.",
        "Rates are echo round trips/s or MESSAGE deliveries/s (summed over users);",
        "latency is send to receipt; CPU/unit is server CPU (utime+stime,",
        f"{window}) per round trip or delivery.",
    ]
    if load == "c":
        lines += [
            "*load core* is the share of core 1 the load generator used during the",
            "window (near 1.00: the load, not the server, may be the limit).",
        ]
    lines += [
        "*steal* is the share of the machine's CPU time the hypervisor took",
        "while the scenario ran (/proc/stat); rows with high steal are noisy.",
    ]
    lines += [
        "",
        "| scenario | chatd /s | naive /s | ratio | chatd MB/s | chatd p50 ms | "
        "chatd p99 ms | naive p99 ms | chatd CPU ns/unit | naive CPU ns/unit | "
        "integrity chatd/naive |"
        + (" load core chatd/naive |" if load == "c" else "")
        + " steal chatd/naive |",
        "|---|---|---|---|---|---|---|---|---|---|---|"
        + ("---|" if load == "c" else "")
        + "---|",
    ]
    floors: list[str] = []
    for name, pair in results.items():
        c, n = pair["chatd"], pair["naive"]
        ratio = rate(c) / rate(n) if rate(n) else float("nan")
        if "floor" in pair:
            floors.append(
                f"| {name} | {rate(pair['floor']):,.0f} | "
                f"{pair['floor']['cpu_ns_per_unit']} | {c['cpu_ns_per_unit']} | "
                f"{pair['floor']['integrity_failures']} |"
            )
        lines.append(
            f"| {name} | {rate(c):,.0f} | {rate(n):,.0f} | {ratio:.2f}x | "
            f"{c['mb_per_s']:.1f} | {ms(c['latency_us']['p50'])} | "
            f"{ms(c['latency_us']['p99'])} | {ms(n['latency_us']['p99'])} | "
            f"{c['cpu_ns_per_unit']} | {n['cpu_ns_per_unit']} | "
            f"{c['integrity_failures']}/{n['integrity_failures']} |"
            + (
                f" {c['load_core_share']:.2f}/{n['load_core_share']:.2f} |"
                if load == "c"
                else ""
            )
            + f" {steal(c)}/{steal(n)} |"
        )
    if floors:
        lines += [
            "",
            "The kernel's share: bench/floor.c, a C epoll server that only frames",
            "and batches like chatd (no checks), under the same load.  Its CPU per",
            "unit is nearly all system time: loopback TCP's cost, which any server",
            "pays.",
            "",
            "| scenario | floor /s | floor CPU ns/unit | chatd CPU ns/unit | "
            "integrity floor |",
            "|---|---|---|---|---|",
            *floors,
        ]
    if rss:
        lines += [
            "",
            f"Idle users: RSS growth with {IDLE_USERS:,} ACTIVE users connected "
            "(connected by chatd-bench).",
            "",
            "| server | RSS before | RSS with users | bytes per user |",
            "|---|---|---|---|",
        ]
        for kind, r in rss.items():
            lines.append(
                f"| {kind} | {r['rss_before'] / 2**20:.1f} MiB | "
                f"{r['rss_with_users'] / 2**20:.1f} MiB | "
                f"{r['bytes_per_user']:,} ({r['bytes_per_user'] / 1024:.1f} KiB) |"
            )
    lines += targets(results, rss)
    if plot:
        lines += ["", "![deliveries/s and p99 against receivers](benchmarks.png)"]
    return "\n".join(lines) + "\n"


def targets(results: dict, rss: dict) -> list[str]:
    """The issue's targets, each with the measured figure and a verdict."""
    rows = []

    def ratio(name: str) -> float | None:
        if name not in results:
            return None
        c, n = results[name]["chatd"], results[name]["naive"]
        return rate(c) / rate(n) if rate(n) else None

    def add(what: str, value: float | None, goal: str, ok: bool | None) -> None:
        shown = "-" if value is None else f"{value:,.2f}"
        verdict = "-" if ok is None else ("met" if ok else "**not met**")
        rows.append(f"| {what} | {shown} | {goal} | {verdict} |")

    r = ratio("fanout 1x50 64B w16")
    add(
        "fan-out 50 recv/1 sender/64 B/w16 vs naive",
        r,
        ">= 2x",
        None if r is None else r >= 2,
    )
    r = ratio("fanout 4x100 64B w64")
    add("fan-out 100/4/64 B/w64 vs naive", r, ">= 5x", None if r is None else r >= 5)
    p99 = (
        results.get("fanout 1x50 64B w16", {})
        .get("chatd", {})
        .get("latency_us", {})
        .get("p99")
    )
    add(
        "p99 ms at 50/1/64 B/w16",
        None if p99 is None else p99 / 1000,
        "< 2 ms",
        None if p99 is None else p99 < 2000,
    )
    cpu = (
        results.get("fanout 4x100 64B w64", {}).get("chatd", {}).get("cpu_ns_per_unit")
    )
    add(
        "server CPU ns/delivery at 100/4/64 B/w64",
        cpu,
        "<= 40 ns",
        None if cpu is None else cpu <= 40,
    )
    r = ratio("echo 50x16")
    add(
        "echo 50 conns x depth 16 vs naive",
        r,
        ">= 1.5x",
        None if r is None else r >= 1.5,
    )
    per = rss.get("chatd", {}).get("bytes_per_user")
    add(
        f"RSS KiB per idle user at {IDLE_USERS:,}",
        None if per is None else per / 1024,
        "<= 8 KiB",
        None if per is None else per <= 8192,
    )
    return ["", "## Targets", "", "| target | measured | goal | verdict |", "|---|---|---|---|", *rows]  # fmt: skip


def drawPlot(results: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    series: dict[tuple[str, int, int], list[tuple[int, float, float]]] = {}
    for pair in results.values():
        for kind, r in pair.items():
            if r["mode"] != "fanout" or r["parameters"]["window"] != 16:
                continue
            p = r["parameters"]
            key = (kind, p["senders"], p["size"])
            p99 = (r["latency_us"]["p99"] or 0) / 1000
            series.setdefault(key, []).append((p["receivers"], rate(r), p99))
    if not series:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    # One colour per load shape, one line style per server.
    shapes = sorted({key[1:] for key in series})
    colours = {shape: f"C{i}" for i, shape in enumerate(shapes)}
    styles = {"chatd": "-o", "naive": "--x", "floor": ":."}
    for (kind, senders, size), points in sorted(series.items()):
        points.sort()
        xs = [p[0] for p in points]
        style = styles.get(kind, "-.")
        colour = colours[senders, size]
        label = f"{kind} {senders} sender{'s' if senders > 1 else ''} {size} B"
        left.plot(xs, [p[1] for p in points], style, color=colour, label=label)
        right.plot(xs, [p[2] for p in points], style, color=colour, label=label)
    left.set(
        xscale="log",
        xlabel="receivers",
        ylabel="deliveries/s",
        title="Fan-out throughput (w16)",
    )
    right.set(xscale="log", yscale="log", xlabel="receivers", ylabel="p99 latency (ms)", title="Fan-out p99 latency (w16)")  # fmt: skip
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    p.add_argument("--smoke", action="store_true", help="one short scenario")
    p.add_argument("--only", default=None, help="run scenarios whose name has this")
    p.add_argument(
        "--load",
        choices=("py", "c"),
        default="py",
        help="load generator: chatd-bench (py) or bench/loadgen.c (c)",
    )
    args = p.parse_args()
    loadgen = buildC(LOADGEN_SOURCE) if args.load == "c" else None
    if args.load == "c" and loadgen is None:
        print("falling back to chatd-bench (--load py)", file=sys.stderr)
    load = "c" if loadgen is not None else "py"
    kinds = ["chatd", "naive"]
    if loadgen is not None and buildC(FLOOR_SOURCE) is not None:
        kinds.append("floor")
    scenarios = SMOKE if args.smoke else SCENARIOS
    if args.only:
        scenarios = [s for s in scenarios if args.only in s[0]]
    duration = 1.5 if args.smoke else args.duration
    results: dict = {}
    for name, mode, options in scenarios:
        results[name] = {}
        for kind in kinds:
            r = measure(kind, mode, options, duration, loadgen)
            results[name][kind] = r
            print(
                f"{name:24} {kind:6} {rate(r):12,.0f}/s p99 {ms(r['latency_us']['p99'])} ms "
                f"cpu {r['cpu_ns_per_unit']} ns/unit integrity {r['integrity_failures']}",
                file=sys.stderr,
                flush=True,
            )
    rss = {} if args.smoke else {k: idleRss(k, IDLE_USERS) for k in ("chatd", "naive")}
    for kind, r in rss.items():
        print(f"idle {kind}: {r}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    plot = drawPlot(results, args.out / "benchmarks.png")
    info = machine()
    text = report(results, rss, info, duration, plot, load)
    notes = ROOT / "docs" / NOTES
    if notes.exists():
        text += "\n" + notes.read_text()
    (args.out / "benchmarks.md").write_text(text)
    (args.out / "benchmarks.json").write_text(
        json.dumps(
            {"machine": info, "load": load, "results": results, "idle_rss": rss},
            indent=1,
        )
    )
    failed = [n for n, pair in results.items() for r in pair.values() if not r["ok"]]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
