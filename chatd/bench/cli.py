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
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from twisted.internet import defer, protocol, reactor, stdio, task
from twisted.internet.interfaces import IReactorFromThreads
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from chatd.bench.checks import Histogram, tailGaps
from chatd.bench.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STATUSES,
    EXIT_USAGE,
    BenchError,
    mergeErrors,
    plural,
)
from chatd.bench.load import Config, LoadPart
from chatd.secretfile import readPassword

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


def hostPorts(text: str) -> list[tuple[str, int]]:
    """``HOST[:PORT],HOST[:PORT]...`` for argparse."""
    return [hostPort(part) for part in text.split(",")]


def hostPort(text: str) -> tuple[str, int]:
    """``HOST[:PORT]`` (port 7777) for argparse."""
    host, _, port = text.rpartition(":")
    if not host:
        return text, 7777
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"bad port {port!r}: must be 1 to 65535")
    return host, int(port)


def _number(kind: type, least: float, what: str) -> Callable[[str], float]:
    """An argparse type: ``kind`` at least ``least`` (a usage error otherwise)."""

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < least or value != value:
            raise argparse.ArgumentTypeError(f"{text!r}: must be {what}")
        return value

    return convert


positive = _number(int, 1, "at least 1")
natural = _number(int, 0, "0 or more")
seconds = _number(float, 0.001, "more than 0")


class _Help(argparse.RawDescriptionHelpFormatter):
    """Shows each real default; keeps the epilog's lines as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and (
            "(default" not in text
        ):
            text += " (default: %(default)s)"
        return text


def parser() -> argparse.ArgumentParser:
    epilog = (
        "Benchmark a server started with --rate-limit 0: chatd-bench stops at\n"
        "the first RATE_LIMITED, since a rate-limited run measures the limit.\n\n"
        + EXIT_STATUSES
    )
    p = argparse.ArgumentParser(
        prog="chatd-bench",
        description="Stress and benchmark a chatd server; checks every byte.",
        epilog=epilog,
        formatter_class=_Help,
    )
    sub = p.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "server",
        type=hostPorts,
        help="HOST[:PORT] (port 7777); several, comma-separated, spread the "
        "connections over them in turn (the nodes of one cluster)",
    )
    common.add_argument(
        "--duration", type=seconds, default=5.0, metavar="S", help="seconds of load"
    )
    common.add_argument(
        "--setup-timeout",
        type=seconds,
        default=15.0,
        metavar="S",
        help="seconds for every connection to be made and its user ACTIVE",
    )
    common.add_argument(
        "--seed", type=int, default=None, help="random seed (default: random)"
    )
    common.add_argument(
        "--processes",
        type=positive,
        default=1,
        metavar="K",
        help="spread the load over K processes",
    )
    secret = common.add_mutually_exclusive_group()
    secret.add_argument(
        "--password-file",
        default=None,
        metavar="FILE",
        help="file whose first line is the server password",
    )
    secret.add_argument(
        "--password",
        default=None,
        help="server password (visible to other users: prefer --password-file)",
    )
    common.add_argument("--json", action="store_true", help="print one JSON object")
    common.add_argument(
        "--progress",
        choices=("auto", "bar", "lines", "off"),
        default="auto",
        help="live progress on stderr (auto: a bar when stderr is a tty)",
    )

    def mode(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, parents=[common], help=help, formatter_class=_Help, epilog=epilog
        )

    e = mode("echo", "ECHO round trips")
    e.add_argument("--connections", type=positive, default=10, help="connections")
    e.add_argument("--depth", type=positive, default=1, help="requests in flight each")
    e.add_argument(
        "--split", action="store_true", help="send frames cut at random bytes"
    )
    e.add_argument("--ping", action="store_true", help="mix PING/PONG with ECHO")
    e.add_argument(
        "--no-handshake",
        action="store_true",
        help="echo before the handshake (runs end at the server's handshake timeout)",
    )
    f = mode("fanout", "SAY -> MESSAGE broadcast")
    f.add_argument("--receivers", type=natural, default=10, help="users that only read")
    f.add_argument(
        "--senders",
        type=natural,
        default=1,
        help="users that SAY (0: idle receivers only, for memory figures)",
    )
    f.add_argument("--size", type=positive, default=64, help="SAY text bytes")
    f.add_argument(
        "--window", type=positive, default=16, help="unacknowledged per sender"
    )
    f.add_argument(
        "--rate",
        type=seconds,
        default=None,
        help="open loop: messages/s per sender (default: closed loop)",
    )
    return p


def configFrom(args: argparse.Namespace) -> Config:
    (host, port), *also = args.server
    seed = args.seed if args.seed is not None else secrets.randbelow(1 << 31)
    password = args.password
    if args.password_file is not None:
        try:
            raw = readPassword(args.password_file)
        except ValueError as e:
            raise BenchError(f"--password-file: {e}", EXIT_USAGE) from None
        password = raw.decode("utf-8", "surrogateescape")
    config = Config(
        mode=args.mode,
        host=host,
        port=port,
        duration=args.duration,
        seed=seed,
        tag="b" + secrets.token_hex(3),
        password=password,
        setupTimeout=args.setup_timeout,
        also=[list(target) for target in also],
    )
    if args.mode == "echo":
        config.connections, config.depth = args.connections, args.depth
        config.split, config.ping = args.split, args.ping
        config.handshake = not args.no_handshake
    else:
        config.receivers, config.senders = args.receivers, args.senders
        config.size, config.window, config.rate = args.size, args.window, args.rate
    return config


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
        shape = (
            f"{config.senders} {plural(config.senders, 'senders')} + "
            f"{config.receivers} {plural(config.receivers, 'receivers')}, "
            f"{config.size} B SAYs, {pace}"
        )
    spread = f", {processes} processes" if processes > 1 else ""
    return (
        f"chatd-bench {config.mode} -> {', '.join(config.addresses)}: "
        f"{shape}, {config.duration:g} s{spread}, seed {config.seed}"
    )


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

    @property
    def abandoned(self) -> defer.Deferred:
        return self.load.abandoned

    def close(self) -> defer.Deferred:
        self.load.abort()
        return defer.succeed(None)


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
        self.ended: defer.Deferred = defer.Deferred()
        #: Fires with a BenchError when the worker gives the run up.
        self.abandoned: defer.Deferred = defer.Deferred()
        reactor.spawnProcess(self, sys.executable, args, env=os.environ.copy())

    def _expect(self, word: str) -> defer.Deferred:
        d = self.waiting[word] = defer.Deferred()
        return d

    def send(self, word: str) -> None:
        assert self.transport is not None  # spawned in __init__
        self.transport.write(word.encode() + b"\n")

    def command(self, word: str, expect: str) -> defer.Deferred:
        d = self._expect(expect)
        self.send(word)
        return d

    def start(self) -> defer.Deferred:
        return self.command("start", "ready")

    def go(self) -> None:
        self.send("go")

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
                self._fail(BenchError.fromJSON(json.loads(rest)))
            elif word == "abandon":
                if not self.abandoned.called:
                    self.abandoned.callback(BenchError.fromJSON(json.loads(rest)))
            elif word in self.waiting:
                self.waiting.pop(word).callback(json.loads(rest) if rest else None)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data[-4096:]

    def _fail(self, reason: BenchError) -> None:
        waiting, self.waiting = self.waiting, {}
        for d in waiting.values():
            d.errback(reason)

    def processEnded(self, reason: object) -> None:
        last = self.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        self._fail(BenchError("load process exited: " + "".join(last), EXIT_FAILED))
        self.ended.callback(None)

    def close(self) -> defer.Deferred:
        """Closing its stdin ends the worker (and its connections)."""
        assert self.transport is not None
        self.transport.closeStdin()
        return self.ended


class Worker(LineReceiver):
    """The worker side: run one :class:`LoadPart` as the parent says."""

    delimiter = b"\n"

    def __init__(self, load: LoadPart, done: defer.Deferred) -> None:
        self.load = load
        self.done = done
        self.ticker = task.LoopingCall(self.report)
        load.abandoned.addCallback(self.abandon)

    def abandon(self, reason: BenchError) -> None:
        self.sendLine(b"abandon " + json.dumps(reason.toJSON()).encode())

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
        if word == "result" and self.transport is not None:
            self.transport.loseConnection()  # exits once stdout is flushed

    def fail(self, failure: Failure) -> None:
        reason = failure.value
        if not isinstance(reason, BenchError):
            reason = BenchError(failure.getErrorMessage(), EXIT_FAILED)
        self.sendLine(b"fail " + json.dumps(reason.toJSON()).encode())

    def connectionLost(self, reason: object = None) -> None:
        self.load.abort()
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


def orderDisagreements(parts: Iterable[dict[str, int]]) -> int:
    """Total order across users: every user's running hash of the messages
    it got, taken every ORDER_CHECKPOINT messages, must be the same at each
    checkpoint; each extra distinct hash at a checkpoint is a disagreement."""
    seen: dict[str, set[str]] = {}
    for orders in parts:
        for key in orders:
            point, _, digest = key.partition(":")
            seen.setdefault(point, set()).add(digest)
    return sum(len(digests) - 1 for digests in seen.values())


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


def summary(result: dict) -> str:
    def ms(us: int | None) -> str:
        return "-" if us is None else f"{us / 1000:.3f} ms"

    lat = result["latency_us"]
    rate = result.get("deliveries_per_s", result.get("frames_per_s"))
    unit = "deliveries" if result["mode"] == "fanout" else "frames"
    lines = [
        f"  {result['completed']:,} {unit} in {result['seconds']:.2f}s: "
        f"{rate:,.0f} {unit}/s, {result['mb_per_s']:.2f} MB/s",
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


async def gather(ds: list[defer.Deferred], config: Config) -> list:
    """Every part's result, or one BenchError for all the parts that failed."""
    outcomes = await defer.DeferredList(ds, consumeErrors=True)
    errors = [value.value for ok, value in outcomes if not ok]
    if errors:
        raise mergeErrors(errors, config.noun, config.total)
    return [value for _, value in outcomes]


async def run(
    config: Config, processes: int, progressStyle: str, phase: list[str]
) -> dict:
    """Connect, load for ``duration``, drain, collect; ``phase[0]`` says where
    it is (for the message when interrupted)."""
    if processes > 1:
        parts: list = [RemotePart(config, i, processes) for i in range(processes)]
    else:
        parts = [LocalPart(config)]
    unit = "deliveries" if config.mode == "fanout" else "frames"
    progress = Progress(progressStyle, config.duration, unit, parts)
    try:
        phase[0] = f"while connecting {config.total} {config.noun}"
        await gather([p.start() for p in parts], config)
        phase[0] = "during the load"
        began = time.monotonic()
        for p in parts:
            p.go()
        progress.start()
        sleep = task.deferLater(reactor, config.duration, lambda: None)
        index, value = await defer.race([sleep, *(p.abandoned for p in parts)])
        if index:
            raise value
        phase[0] = "while draining"
        await gather([p.stop() for p in parts], config)
        seconds = time.monotonic() - began
        progress.stop()
        results = await gather([p.finish() for p in parts], config)
    finally:
        progress.stop()
        await defer.DeferredList([p.close() for p in parts])
    return merge(config, results, seconds)


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["_worker"]:
        # The parent handles Ctrl-C for the process group and ends workers.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        worker(argv[1:])
        return
    args = parser().parse_args(argv)
    try:
        config = configFrom(args)
    except BenchError as e:
        sys.stderr.write(f"chatd-bench: {e.message}\n")
        sys.exit(e.status)
    status: list[int] = []
    phase = ["before starting"]
    signals: list[int] = []

    def interrupted(signum: int, frame: object) -> None:
        signals.append(signum)
        IReactorFromThreads(reactor).callFromThread(reactor.stop)

    # Installed before the reactor runs, so Twisted leaves SIGINT to us.
    signal.signal(signal.SIGINT, interrupted)

    async def body(_reactor: object) -> None:
        # Twisted installs its SIGTERM handler as it starts: replace it after.
        reactor.callLater(0, signal.signal, signal.SIGTERM, interrupted)
        if not args.json:
            print(header(config, args.processes), flush=True)
        try:
            result = await run(config, args.processes, args.progress, phase)
        except BenchError as e:
            status.append(e.status)
            if not signals:
                sys.stderr.write(f"chatd-bench: {e.message}\n")
            return
        except Exception as e:  # noqa: BLE001 - report, do not trace back
            status.append(EXIT_FAILED)
            if not signals:
                sys.stderr.write(f"chatd-bench: {type(e).__name__}: {e}\n")
            return
        status.append(EXIT_OK if result["ok"] else EXIT_FAILED)
        try:
            print(json.dumps(result) if args.json else summary(result), flush=True)
        except BrokenPipeError:  # e.g. piped into head: the reader left
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for exit's flush

    try:
        task.react(lambda r: defer.ensureDeferred(body(r)))
    except SystemExit as e:
        if signals:
            name = "interrupted" if signals[0] == signal.SIGINT else "terminated"
            sys.stderr.write(f"chatd-bench: {name} {phase[0]}; no results\n")
            sys.exit(EXIT_INTERRUPTED if signals[0] == signal.SIGINT else 143)
        if e.code not in (0, None) or not status:
            raise
    sys.exit(status[0])


if __name__ == "__main__":
    main()
