"""``chatd-bench``: parse the command line, run the phases, print the result.

:func:`run` drives the parts (:mod:`chatd.bench.parts`) through connect,
load, drain and collect; :func:`main` adds signals and exit statuses.
Options live in :mod:`chatd.bench.options`, the output in
:mod:`chatd.bench.report`, the live line in :mod:`chatd.bench.progress`.
``chatd-bench _worker ...`` (spawned by ``--processes``) is a worker.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Sequence

from twisted.internet import defer, reactor, task
from twisted.internet.interfaces import IReactorFromThreads

from chatd.bench.config import Config
from chatd.bench.errors import EXIT_FAILED, BenchError, mergeErrors
from chatd.bench.figures import merge
from chatd.bench.options import configFrom, parser
from chatd.bench.parts import IPart, LocalPart, RemotePart, worker
from chatd.bench.progress import Progress
from chatd.bench.report import header, interruption, resultStatus, summary


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
    parts: list[IPart]
    if processes > 1:
        parts = [RemotePart(config, i, processes) for i in range(processes)]
    else:
        parts = [LocalPart(config)]
    progress = Progress(progressStyle, config.duration, config.unit, parts)
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
        status.append(resultStatus(result))
        try:
            print(json.dumps(result) if args.json else summary(result), flush=True)
        except BrokenPipeError:  # e.g. piped into head: the reader left
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for exit's flush

    try:
        task.react(lambda r: defer.ensureDeferred(body(r)))
    except SystemExit as e:
        if signals:
            line, code = interruption(signals[0], phase[0])
            sys.stderr.write(line)
            sys.exit(code)
        if e.code not in (0, None) or not status:
            raise
    sys.exit(status[0])


if __name__ == "__main__":
    main()
