"""``chatd-bench``: command line, load processes, progress and the summary.

With ``--processes K`` the parent spawns K workers (``chatd-bench _worker``)
and drives them through the phases of :class:`chatd.bench.load.LoadPart`
over their stdin/stdout, one line per step, so a barrier (all users active,
all senders drained) holds across processes; the figures are merged here.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import Sequence

from twisted.internet import defer, protocol, reactor, stdio, task
from twisted.protocols.basic import LineReceiver

from chatd.bench.checks import Histogram, tailGaps
from chatd.bench.load import Config, LoadPart

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


def hostPort(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        return text, 7777
    try:
        return host, int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chatd-bench",
        description="Stress and benchmark a chatd server; checks every byte.",
    )
    sub = p.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("server", type=hostPort, help="HOST[:PORT] (port 7777)")
    common.add_argument("--duration", type=float, default=5.0, help="seconds of load")
    common.add_argument("--seed", type=int, default=None, help="random seed")
    common.add_argument(
        "--processes", type=int, default=1, help="spread the load over K processes"
    )
    common.add_argument("--password", default=None, help="server password")
    common.add_argument("--json", action="store_true", help="print one JSON object")
    common.add_argument(
        "--progress",
        choices=("auto", "bar", "lines", "off"),
        default="auto",
        help="live progress on stderr (auto: a bar when stderr is a tty)",
    )
    e = sub.add_parser("echo", parents=[common], help="ECHO round trips")
    e.add_argument("--connections", type=int, default=10)
    e.add_argument("--depth", type=int, default=1, help="requests in flight each")
    e.add_argument(
        "--split", action="store_true", help="send frames cut at random bytes"
    )
    e.add_argument("--ping", action="store_true", help="mix PING/PONG with ECHO")
    e.add_argument(
        "--no-handshake",
        action="store_true",
        help="echo before the handshake (runs end at the server's handshake timeout)",
    )
    f = sub.add_parser("fanout", parents=[common], help="SAY -> MESSAGE broadcast")
    f.add_argument("--receivers", type=int, default=10)
    f.add_argument("--senders", type=int, default=1)
    f.add_argument("--size", type=int, default=64, help="SAY text bytes")
    f.add_argument("--window", type=int, default=16, help="unacknowledged per sender")
    f.add_argument(
        "--rate", type=float, default=None, help="open loop: messages/s per sender"
    )
    return p


def configFrom(args: argparse.Namespace) -> Config:
    host, port = args.server
    seed = args.seed if args.seed is not None else secrets.randbelow(1 << 31)
    config = Config(
        mode=args.mode,
        host=host,
        port=port,
        duration=args.duration,
        seed=seed,
        tag="b" + secrets.token_hex(3),
        password=args.password,
    )
    if args.mode == "echo":
        config.connections, config.depth = args.connections, args.depth
        config.split, config.ping = args.split, args.ping
        config.handshake = not args.no_handshake
    else:
        config.receivers, config.senders = args.receivers, args.senders
        config.size, config.window, config.rate = args.size, args.window, args.rate
    return config


# -- parts: in this process, or a worker process --------------------------


class LocalPart:
    def __init__(self, config: Config) -> None:
        self.load = LoadPart(reactor, config)

    def start(self) -> defer.Deferred:
        return defer.ensureDeferred(self.load.start())

    def go(self) -> None:
        self.load.go()

    def progress(self) -> tuple[int, int]:
        return self.load.progress()

    def stop(self) -> defer.Deferred:
        return defer.ensureDeferred(self.load.stop())

    def finish(self) -> defer.Deferred:
        return defer.ensureDeferred(self.load.finish())


class RemotePart(protocol.ProcessProtocol):
    """A worker process, driven over its stdin/stdout one line per step."""

    def __init__(self, config: Config, part: int, parts: int) -> None:
        self.buffer = b""
        self.waiting: dict[str, defer.Deferred] = {}
        self.counts = (0, 0)
        self.stderr = bytearray()
        args = [
            sys.executable,
            "-m",
            "chatd.bench.cli",
            "_worker",
            json.dumps(config.toJSON()),
            str(part),
            str(parts),
        ]
        self.ended = defer.Deferred()
        reactor.spawnProcess(self, sys.executable, args, env=os.environ.copy())

    def _expect(self, word: str) -> defer.Deferred:
        d = self.waiting[word] = defer.Deferred()
        return d

    def command(self, word: str, expect: str | None) -> defer.Deferred | None:
        d = self._expect(expect) if expect else None
        self.transport.write(word.encode() + b"\n")
        return d

    def start(self) -> defer.Deferred:
        d = self._expect("ready")
        self.transport.write(b"start\n")
        return d

    def go(self) -> None:
        self.command("go", None)

    def progress(self) -> tuple[int, int]:
        return self.counts

    def stop(self) -> defer.Deferred:
        return self.command("stop", "drained")

    def finish(self) -> defer.Deferred:
        return self.command("finish", "result")

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            word, _, rest = line.decode().partition(" ")
            if word == "progress":
                a, b = rest.split()
                self.counts = (int(a), int(b))
            elif word == "fail":
                for d in self.waiting.values():
                    d.errback(RuntimeError(rest))
                self.waiting.clear()
            elif word in self.waiting:
                self.waiting.pop(word).callback(json.loads(rest) if rest else None)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data[-4096:]

    def processEnded(self, reason: object) -> None:
        for d in self.waiting.values():
            d.errback(RuntimeError("worker exited: " + self.stderr.decode()[-2000:]))
        self.waiting.clear()
        self.ended.callback(None)


class Worker(LineReceiver):
    """The worker side: run one :class:`LoadPart` as the parent says."""

    delimiter = b"\n"

    def __init__(self, load: LoadPart, done: defer.Deferred) -> None:
        self.load = load
        self.done = done
        self.ticker = task.LoopingCall(self.report)

    def report(self) -> None:
        self.sendLine(b"progress %d %d" % self.load.progress())

    def lineReceived(self, line: bytes) -> None:
        word = line.decode().strip()
        steps = {
            "start": (self.load.start, "ready"),
            "stop": (self.load.stop, "drained"),
            "finish": (self.load.finish, "result"),
        }
        if word == "go":
            self.load.go()
            self.ticker.start(0.25)
        elif word in steps:
            method, answer = steps[word]
            d = defer.ensureDeferred(method())
            d.addCallback(self.answer, answer)
            d.addErrback(self.fail)

    def answer(self, value: object, word: str) -> None:
        if word == "result":
            if self.ticker.running:
                self.ticker.stop()
            self.report()
        text = word + (" " + json.dumps(value) if value is not None else "")
        self.sendLine(text.encode())
        if word == "result":
            self.transport.loseConnection()  # exits once stdout is flushed

    def fail(self, failure) -> None:  # type: ignore[no-untyped-def]
        self.sendLine(f"fail {failure.getErrorMessage()}".encode())
        self.transport.loseConnection()

    def connectionLost(self, reason: object = None) -> None:
        if not self.done.called:
            self.done.callback(None)


def worker(argv: Sequence[str]) -> None:
    config = Config(**json.loads(argv[0]))
    load = LoadPart(reactor, config, int(argv[1]), int(argv[2]))

    def main(_reactor: object) -> defer.Deferred:
        done: defer.Deferred = defer.Deferred()
        stdio.StandardIO(Worker(load, done))
        return done

    task.react(main)


# -- progress and the summary ----------------------------------------------


class Progress:
    """A live line on stderr: a bar with throughput on a tty, or plain lines."""

    def __init__(self, style: str, duration: float, unit: str, parts: list) -> None:
        if style == "auto":
            style = "bar" if sys.stderr.isatty() else "off"
        self.style = style
        self.duration = duration
        self.unit = unit
        self.parts = parts
        self.began = time.monotonic()
        self.last = (self.began, 0, 0)
        self.loop = task.LoopingCall(self.show)

    def start(self) -> None:
        if self.style != "off":
            self.loop.start(0.5 if self.style == "bar" else 1.0, now=False)

    def show(self) -> None:
        now = time.monotonic()
        count = sum(p.progress()[0] for p in self.parts)
        size = sum(p.progress()[1] for p in self.parts)
        then, count0, size0 = self.last
        self.last = (now, count, size)
        rate = (count - count0) / max(now - then, 1e-9)
        mbs = (size - size0) / max(now - then, 1e-9) / 1e6
        elapsed = now - self.began
        if self.style == "bar":
            done = min(elapsed / self.duration, 1.0) if self.duration else 1.0
            bar = "#" * int(done * 30)
            sys.stderr.write(
                f"\r[{bar:<30}] {elapsed:5.1f}/{self.duration:.0f}s "
                f"{rate:12,.0f} {self.unit}/s {mbs:8.1f} MB/s"
            )
        else:
            sys.stderr.write(
                f"{elapsed:6.1f}s {count:12d} {self.unit} "
                f"{rate:12,.0f} {self.unit}/s {mbs:8.1f} MB/s\n"
            )
        sys.stderr.flush()

    def stop(self) -> None:
        if self.loop.running:
            self.loop.stop()
            if self.style == "bar":
                sys.stderr.write("\r" + " " * 90 + "\r")
                sys.stderr.flush()


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
    errors: Counter = Counter()
    latency = Histogram()
    sent: dict[int, int] = {}
    lastSeen: dict[int, Counter] = {}
    examples: list[str] = []
    for r in results:
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
    else:
        out["frames_per_s"] = round(out["completed"] / seconds, 1)
        out["parameters"] = {
            k: getattr(config, k)
            for k in ("connections", "depth", "split", "ping", "duration")
        }
    out["mb_per_s"] = round(out["bytes"] / seconds / 1e6, 3)
    out["latency_us"] = latency.summary()
    out["errors"] = dict(errors)
    out["integrity_failures"] = sum(out[k] for k in INTEGRITY) + sum(errors.values())
    out["ok"] = out["integrity_failures"] == 0
    out["examples"] = examples[:20]
    return out


def summary(result: dict) -> str:
    def ms(us: int | None) -> str:
        return "-" if us is None else f"{us / 1000:.3f} ms"

    lat = result["latency_us"]
    rate = result.get("deliveries_per_s", result.get("frames_per_s"))
    unit = "deliveries" if result["mode"] == "fanout" else "frames"
    lines = [
        f"chatd-bench {result['mode']} {result['parameters']} seed={result['seed']}",
        f"  {result['completed']:,} {unit} in {result['seconds']:.2f}s: "
        f"{rate:,.0f} {unit}/s, {result['mb_per_s']:.2f} MB/s",
        f"  latency p50 {ms(lat['p50'])}  p90 {ms(lat['p90'])}  "
        f"p99 {ms(lat['p99'])}  max {ms(lat['max'])}",
        "  integrity: "
        + "  ".join(f"{k} {result[k]}" for k in INTEGRITY)
        + "  errors "
        + (" ".join(f"{k}={v}" for k, v in result["errors"].items()) or "0"),
        "  result: " + ("OK" if result["ok"] else "FAILED"),
    ]
    lines += [f"  ! {e}" for e in result["examples"]]
    return "\n".join(lines)


async def run(config: Config, processes: int, progressStyle: str) -> dict:
    if processes > 1:
        parts: list = [RemotePart(config, i, processes) for i in range(processes)]
    else:
        parts = [LocalPart(config)]
    try:
        await defer.gatherResults([p.start() for p in parts], consumeErrors=True)
        began = time.monotonic()
        for p in parts:
            p.go()
        unit = "deliveries" if config.mode == "fanout" else "frames"
        progress = Progress(progressStyle, config.duration, unit, parts)
        progress.start()
        await task.deferLater(reactor, config.duration, lambda: None)
        await defer.gatherResults([p.stop() for p in parts], consumeErrors=True)
        seconds = time.monotonic() - began
        progress.stop()
        results = await defer.gatherResults(
            [p.finish() for p in parts], consumeErrors=True
        )
    finally:
        for p in parts:
            if isinstance(p, RemotePart):
                p.transport.closeStdin()
        await defer.DeferredList([p.ended for p in parts if isinstance(p, RemotePart)])
    return merge(config, results, seconds)


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["_worker"]:
        worker(argv[1:])
        return
    args = parser().parse_args(argv)
    config = configFrom(args)
    status: list[int] = []

    async def body(_reactor: object) -> None:
        try:
            result = await run(config, args.processes, args.progress)
        except Exception as e:  # noqa: BLE001 - report, do not trace back
            while isinstance(e, defer.FirstError):  # gathered: say the cause
                e = e.subFailure.value
            sys.stderr.write(f"chatd-bench: {e}\n")
            status.append(2)
            return
        status.append(0 if result["ok"] else 1)
        try:
            print(json.dumps(result) if args.json else summary(result), flush=True)
        except BrokenPipeError:  # e.g. piped into head: the reader left
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for exit's flush

    try:
        task.react(lambda r: defer.ensureDeferred(body(r)))
    except SystemExit as e:
        if e.code not in (0, None) or not status:
            raise
    sys.exit(status[0])


if __name__ == "__main__":
    main()
