"""Differential check: the same input must get the same answers from two
chatd builds, and from every deployment mode.

Plays the same random scripts of frames from three connections against
each target and compares every connection's transcript, frame by frame.
Two ways to use it:

* ``--a PYTHON --b PYTHON``: two builds (each interpreter's checkout, e.g.
  one before a refactor and one after), both single processes;
* ``--modes``: one build as a single process, as ``--workers 2`` and as two
  ``--redis`` nodes on a redis-server it starts (connection k goes to node
  k % 2); each mode is compared with the single process.

Transcripts are compared after renaming user ids and colours by their
first appearance, and nothing else: a mode may number its users its own
way, but every other byte must match.

Sync: after each frame sent, its sender is settled with a PING round trip
(replies come in request order); a sender that was hung up on is awaited
as a LEAVE; a whisper is awaited at its target; then an observer on each
server says a marker and waits for its own copy, and every active
connection reads up to the last marker (with ``--workers``, the
observers are the first two users, so one lands on each worker).  One total order makes that a
barrier for every event of the step in every mode, so transcripts do not
depend on timing, and each server has done what the step asked of it
(a name freed, say) before the next step.

    python bench/differential.py --a old/.venv/bin/python --b .venv/bin/python
    python bench/differential.py --modes --scripts 500
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager

HEADER = struct.Struct("!II")
NAMES = [b"alice", b"Bob", b"ALICE", b"carol", b"bad name", b"", b"x" * 33, b"d.pw"]
TEXTS = [b"hi", b"", b"a.b.c", "\u00e9t\u00e9".encode(), b"\x1b[31m", b"x" * 1000,
         b"\xff", "\u202e".encode(), b"tab\there"]  # fmt: skip
WELCOME, MESSAGE, JOIN, LEAVE, PING, PONG, ERROR = 3, 6, 7, 8, 9, 10, 11
USERS, WHISPER, WHISPERED = 13, 14, 15
#: Frame types whose payload starts ``id.color`` (WELCOME: ``name.id.color``).
WITH_ID = {MESSAGE, JOIN, LEAVE, WHISPERED}
#: What every target runs with: nothing that depends on the clock.
OPTIONS = ["--stats-interval", "0", "--rate-limit", "0", "--max-per-ip", "0",
           "--idle-timeout", "0", "--handshake-timeout", "0",
           "--connect-rate", "0"]  # fmt: skip
WAIT = 10.0  # seconds a connection waits for what the step must bring

Frame = tuple[int, bytes]


def frame(ftype: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(ftype, len(payload)) + payload


def randomFrame(rng: random.Random) -> bytes:
    kind = rng.choice("HRSSSWwBEPUQ")
    if kind == "H":
        return frame(2, rng.choice(NAMES))
    if kind == "R":
        return frame(4)
    if kind == "S":
        return frame(5, rng.choice(TEXTS))
    if kind == "W":
        return frame(WHISPER, rng.choice(NAMES) + b"." + rng.choice(TEXTS))
    if kind == "w":
        return frame(12)
    if kind == "B":
        return frame(17)
    if kind == "E":
        return frame(1, rng.randbytes(rng.randrange(0, 40)))
    if kind == "P":
        return frame(PONG, b"unasked")
    if kind == "U":
        return frame(rng.choice([0, 3, 6, 11, 99]), b"x")
    return HEADER.pack(5, 5000)  # oversize header: fatal


def script(seed: int) -> list[tuple[int, bytes]]:
    rng = random.Random(seed)
    return [(rng.randrange(3), randomFrame(rng)) for _ in range(rng.randrange(5, 40))]


class Conn:
    """One client socket, its frames so far, and what they say of it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(WAIT)
        self.buf = b""
        self.frames: list[Frame] = []
        self.open = True
        self.sync = 0
        self.id: bytes | None = None
        self.name = b""
        self.active = False

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            self.open = False

    def _take(self, f: Frame) -> None:
        ftype, payload = f
        if ftype == WELCOME and self.id is None:
            self.name, self.id, _ = payload.split(b".", 2)
        elif ftype == JOIN and payload.split(b".", 1)[0] == self.id:
            self.active = True

    def readUntil(self, want: Callable[[Frame], bool], keep: bool = True) -> bool:
        """Read frames until one matches ``want`` (dropped unless ``keep``);
        False at end of stream or after WAIT seconds (noted in the
        transcript, so that it differs)."""
        while True:
            while len(self.buf) >= HEADER.size:
                ftype, size = HEADER.unpack_from(self.buf)
                if len(self.buf) < HEADER.size + size:
                    break
                f = (ftype, self.buf[HEADER.size : HEADER.size + size])
                self.buf = self.buf[HEADER.size + size :]
                self._take(f)
                if want(f):
                    if keep:
                        self.frames.append(f)
                    return True
                self.frames.append(f)
            if not self.open:
                return False
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                self.frames.append((-1, b"timed out"))
                chunk = b""
            except OSError:
                chunk = b""
            if not chunk:
                self.open = self.active = False
                if self.buf:
                    self.frames.append((-1, self.buf))
                    self.buf = b""
                return False
            self.buf += chunk

    def settle(self) -> None:
        """Everything the server answers to what was sent so far."""
        if self.open:
            self.sync += 1
            token = b"sync%d" % self.sync
            self.send(frame(PING, token))
            self.readUntil(lambda f: f == (PONG, token), keep=False)

    def close(self) -> None:
        self.sock.close()


class Target:
    """One build in one mode: its servers' ports and two observers, one on
    each server where there are two (the same two in every mode, so that
    WHO and the markers read the same everywhere)."""

    def __init__(self, label: str, ports: Sequence[int]) -> None:
        self.label = label
        self.ports = list(ports)
        self.markers = 0
        self.observers = []
        for k in range(2):
            o = Conn(self.ports[k % len(self.ports)])
            o.send(frame(2, b"observer%d" % k) + frame(4))
            o.readUntil(lambda f, o=o: f[0] == JOIN and o.active)
            self.observers.append(o)

    def barrier(self, conns: list[Conn]) -> None:
        """Every server has acted on the step; every active conn has read
        the step's events (see the module docstring)."""
        for o in self.observers:
            self.markers += 1
            text = b"~marker %d" % self.markers
            o.send(frame(5, text))
            o.readUntil(lambda f, t=text, o=o: _said(f, o.id, t), keep=False)
            o.frames.clear()  # the judge: its own transcript is not compared
        for c in conns:
            if c.active:
                c.readUntil(lambda f, t=text: _said(f, None, t))

    def play(self, steps: list[tuple[int, bytes]]) -> list[list[Frame]]:
        conns = [Conn(self.ports[k % len(self.ports)]) for k in range(3)]
        for c in conns:
            c.settle()
        for i, data in steps:
            sender = conns[i]
            wasActive, seen = sender.active, len(sender.frames)
            sender.send(data)
            sender.settle()
            if wasActive and not sender.open:
                self.observers[0].readUntil(lambda f, u=sender.id: _left(f, u))
            if HEADER.unpack_from(data)[0] == WHISPER and sender.open:
                answered = sender.frames[seen:]
                if not any(f[0] == ERROR for f in answered):
                    target = data[HEADER.size :].split(b".", 1)[0].lower()
                    for c in conns:
                        if c.active and c.name.lower() == target:
                            c.readUntil(lambda f: f[0] == WHISPERED)
            self.barrier(conns)
        for c in conns:
            c.close()
        return [c.frames for c in conns]

    def close(self) -> None:
        for o in self.observers:
            o.close()


def _said(f: Frame, uid: bytes | None, text: bytes) -> bool:
    return (
        f[0] == MESSAGE
        and f[1].endswith(b"." + text)
        and (uid is None or f[1].split(b".", 1)[0] == uid)
    )


def _left(f: Frame, uid: bytes | None) -> bool:
    return f[0] == LEAVE and f[1].split(b".", 1)[0] == uid


def normalise(transcripts: list[list[Frame]]) -> list[list[Frame]]:
    """Ids and colours renamed by first appearance (one map for the
    script's connections, which share ids); every other byte kept."""
    ids: dict[bytes, bytes] = {}
    colours: dict[bytes, bytes] = {}

    def idColour(uid: bytes, colour: bytes) -> list[bytes]:
        u = ids.setdefault(uid, b"u%d" % len(ids))
        first = colours.setdefault(uid, colour)
        return [u, b"c" + u if colour == first else b"c" + u + b"!" + colour]

    out = []
    for frames in transcripts:
        mine = []
        for ftype, payload in frames:
            if ftype == WELCOME and payload.count(b".") == 2:
                name, uid, colour = payload.split(b".")
                payload = b".".join([name, *idColour(uid, colour)])
            elif ftype in WITH_ID and payload.count(b".") >= 2:
                uid, colour, rest = payload.split(b".", 2)
                payload = b".".join([*idColour(uid, colour), rest])
            elif ftype == USERS and payload:
                lines = [line.split(b".", 2) for line in payload.split(b"\n")]
                payload = b"\n".join(
                    b".".join([*idColour(uid, colour), name])
                    for uid, colour, name in lines
                )
            mine.append((ftype, payload))
        out.append(mine)
    return out


def compare(
    targets: list[Target], seeds: range, report: Callable[[str], None] = print
) -> dict[str, int]:
    """Play each seed's script on every target; count, per target after the
    first, the scripts whose transcripts differ from the first's."""
    differ = {t.label: 0 for t in targets[1:]}
    for n in seeds:
        steps = script(n)
        base = normalise(targets[0].play(steps))
        for t in targets[1:]:
            other = normalise(t.play(steps))
            if other != base:
                differ[t.label] += 1
                report(f"script {n}: {targets[0].label} and {t.label} differ")
                for i, (x, y) in enumerate(zip(base, other, strict=True)):
                    if x != y:
                        report(f"  conn {i}:\n    {x[:12]!r}\n    {y[:12]!r}")
    return differ


# -- starting targets (the CLI; the test suite starts its own) ---------------


@contextmanager
def daemon(python: str, where: str, *options: str) -> Iterator[int]:
    """``twistd -n chatd`` of ``python``'s checkout on port 0; its port."""
    tmp = tempfile.mkdtemp(prefix="chatd-diff-")
    portFile, logFile = os.path.join(tmp, "ports"), os.path.join(tmp, "log")
    with open(logFile, "wb") as log:
        proc = subprocess.Popen(
            [python, "-c", "from twisted.scripts.twistd import run; run()", "-n",
             "--pidfile=", "chatd", "--listen", "tcp:0:interface=127.0.0.1",
             "--port-file", portFile, *OPTIONS, *options],
            cwd=where, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        ready = b"joined" if "--redis" in options else b"accepting connections"
        _waitFor(lambda: ready in _read(logFile), proc, logFile)
        with open(portFile, encoding="utf-8") as f:
            yield int(f.readline().split()[2].rsplit(":", 1)[1])
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def redisServer() -> Iterator[str]:
    tmp = tempfile.mkdtemp(prefix="chatd-diff-redis-")
    sock = os.path.join(tmp, "redis.sock")
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", sock, "--dir", tmp,
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _waitFor(lambda: os.path.exists(sock), proc, "")
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _waitFor(done: Callable[[], bool], proc: subprocess.Popen, log: str) -> None:
    for _ in range(300):  # a dev tool polling a child: 30 s at most
        if done():
            return
        if proc.poll() is not None:
            raise SystemExit(
                f"exited {proc.returncode}: {log and _read(log)[-2000:]!r}"
            )
        time.sleep(0.1)
    raise SystemExit("did not start in 30 s")


def checkout(python: str) -> str:
    """The checkout whose venv ``python`` is: its twisted/plugins has chatd."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(python))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", help="interpreter of the first build (single process)")
    p.add_argument("--b", default=sys.executable)
    p.add_argument("--modes", action="store_true", help="single vs workers vs redis")
    p.add_argument("--scripts", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if bool(args.a) == args.modes:
        p.error("give either --a (two builds) or --modes")
    with ExitStack() as stack:
        where = checkout(args.b)
        if args.modes:
            url = stack.enter_context(redisServer())
            nodes = [("--redis", url, "--node-name", f"node-{k}") for k in "ab"]
            plans = [("single", [()]), ("workers", [("--workers", "2",
                     "--min-workers", "2")]), ("redis", nodes)]  # fmt: skip
            builds = [(label, args.b, opts) for label, opts in plans]
        else:
            builds = [("a", args.a, [()]), ("b", args.b, [()])]
        targets = []
        for label, python, each in builds:
            home = checkout(python) if not args.modes else where
            ports = [stack.enter_context(daemon(python, home, *o)) for o in each]
            targets.append(Target(label, ports))
            stack.callback(targets[-1].close)
        seeds = range(args.seed, args.seed + args.scripts)
        differ = compare(targets, seeds)
        for label, n in differ.items():
            print(f"{targets[0].label} vs {label}: {args.scripts} scripts, {n} differ")
    sys.exit(1 if any(differ.values()) else 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
