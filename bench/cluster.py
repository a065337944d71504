"""One chatd node with ``--redis`` against one without, under the same load.

Starts its own redis-server on a unix socket (no TCP port), then for each
scenario runs bench/loadgen.c (as ``bench/run.py --load c`` does) against a
fresh chatd without and with ``--redis``.  For the Redis node it also reads
the node's ``/status`` at the end: messages sequenced and Redis commands
sent, so *commands per message* shows the batching (one stream entry per
reactor turn, never one command per message).

    python bench/cluster.py [--duration 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import run
from server import Server, freePort

#: The two scenarios of issue 12.
SCENARIOS = [
    ("fanout 4x100 64B w64", {"senders": 4, "receivers": 100, "size": 64, "window": 64}),
    ("fanout 1x50 64B w16", {"senders": 1, "receivers": 50, "size": 64, "window": 16}),
]  # fmt: skip


class Redis:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="chatd-bench-redis-")
        self.socket = f"{self.dir}/redis.sock"
        exe = shutil.which("redis-server")
        if exe is None:
            sys.exit("redis-server is not installed (apt-get install -y redis-server)")
        self.proc = subprocess.Popen(
            [exe, "--port", "0", "--unixsocket", self.socket, "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not Path(self.socket).exists():
            if time.monotonic() > deadline:
                sys.exit("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Node(Server):
    """chatd with --redis: ready once it has joined; /status read at stop."""

    status: dict = {}

    @classmethod
    def start(cls, redis: Redis | None) -> Server:
        if redis is None:
            return Server.chatd("--idle-timeout", "0", "--handshake-timeout", "0")
        log = tempfile.NamedTemporaryFile(suffix=".log", delete=False).name
        admin = freePort()
        node = cls.chatd(
            "--idle-timeout", "0", "--handshake-timeout", "0",
            "--redis", f"unix://{redis.socket}", "--node-name", "bench",
            "--admin", f"tcp:{admin}:interface=127.0.0.1",
            logfile=log,
        )  # fmt: skip
        node.admin = admin
        deadline = time.monotonic() + 20
        while "cluster: node bench joined" not in Path(log).read_text():
            if time.monotonic() > deadline:
                raise RuntimeError("the node did not join the cluster")
            time.sleep(0.05)
        return node

    def stop(self) -> None:
        url = f"http://127.0.0.1:{self.admin}/status"
        with urllib.request.urlopen(url, timeout=10) as answer:
            Node.status = json.loads(answer.read())
        super().stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=5.0)
    args = p.parse_args()
    loadgen = run.buildC(run.LOADGEN_SOURCE)
    if loadgen is None:
        sys.exit("bench/loadgen.c could not be built")
    redis = Redis()
    rows = []
    try:
        for name, options in SCENARIOS:
            for label, target in (("chatd", None), ("chatd --redis", redis)):
                run.startServer = lambda kind, target=target: Node.start(target)
                r = run.measureC(loadgen, "chatd", "fanout", options, args.duration)
                row = {
                    "scenario": name,
                    "server": label,
                    "deliveries_per_s": round(r["deliveries_per_s"]),
                    "p99_ms": r["p99_ms"],
                    "integrity_failures": r["integrity_failures"],
                }
                if target is not None:
                    counters = Node.status["counters"]
                    cluster = Node.status["cluster"]
                    row["messages"] = counters["messages"]
                    row["redis_commands"] = cluster["redis_commands"]
                    row["commands_per_message"] = round(
                        cluster["redis_commands"] / max(1, counters["messages"]), 4
                    )
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        redis.stop()
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
