"""Issue 14's attacks, measured: what the attacker got, what users saw, log bytes.

Each attack runs against a fresh ``twistd -n chatd`` logging to a file.  The
attacker connects from 127.0.0.200, legitimate users from 127.0.0.2 and up
(Linux routes all of 127/8 to loopback), and the daemon runs with
``--limit-exempt none`` so that loopback counts as a public address.

    python bench/attacks.py                      # this checkout, its defaults
    python bench/attacks.py --root /tmp/old      # another checkout ("before")
    python bench/attacks.py --only guess -- --rate-limit 0   # extra options

``--root`` runs chatd from another source tree, e.g. one made with
``git archive <commit> | tar -x -C /tmp/old``; such an old tree knows no
``--limit-exempt``, so pass ``--old`` with it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

from server import TWISTD, Server, freePort

from chatd.wire import FrameType as T

ROOT = Path(__file__).resolve().parent.parent
HEADER = struct.Struct("!II")
ECHO, HELLO, READY, SAY = T.ECHO, T.HELLO, T.READY, T.SAY
WELCOME, MESSAGE, JOIN, LEAVE, ERROR = T.WELCOME, T.MESSAGE, T.JOIN, T.LEAVE, T.ERROR
#: Not 127.0.0.1, which bench/server.py's readiness probe comes from.
ATTACKER = "127.0.0.200"


def frame(ftype: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(ftype, len(payload)) + payload


def user(n: int) -> str:
    """The n-th legitimate user's source address (127.0.0.2, ...)."""
    return f"127.0.{(n + 2) >> 8}.{(n + 2) & 255}"


class Conn:
    """A blocking client connection that reads whole frames."""

    def __init__(self, port: int, source: str, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((source, 0))
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        self.buf = bytearray()
        self.closed = False

    def send(self, ftype: int, payload: bytes = b"") -> None:
        self.sock.sendall(frame(ftype, payload))

    def frames(self) -> list[tuple[int, bytes]]:
        out = []
        offset = 0
        while len(self.buf) - offset >= 8:
            ftype, size = HEADER.unpack_from(self.buf, offset)
            if len(self.buf) - offset < 8 + size:
                break
            out.append((ftype, bytes(self.buf[offset + 8 : offset + 8 + size])))
            offset += 8 + size
        del self.buf[:offset]
        return out

    def read(self, limit: int = 1 << 16) -> int:
        try:
            data = self.sock.recv(limit)
        except (BlockingIOError, TimeoutError):
            return 0
        except OSError:
            data = b""
        if not data:
            self.closed = True
        self.buf += data
        return len(data)

    def next(self, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The next frame; None on close or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.frames()
            if got:
                self.buf[:0] = b"".join(frame(t, p) for t, p in got[1:])
                return got[0]
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return None
            self.sock.settimeout(left)
            self.read()

    def join(self, name: bytes) -> bool:
        self.send(HELLO, name)
        got = self.next()
        if not got or got[0] != WELCOME:
            return False
        self.send(READY)
        got = self.next()
        return bool(got and got[0] == JOIN)

    def close(self) -> None:
        self.sock.close()


class Daemon:
    """chatd from ``root`` (bench/server.py's Server), logging to a file."""

    def __init__(self, root: Path, options: list[str], password: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="chatd-attacks-"))
        self.log = self.dir / "chatd.log"
        if password:
            (self.dir / "pw").write_text("opensesame\n")
            options = [*options, "--password-file", str(self.dir / "pw")]
        port = freePort()
        # Directory and PYTHONPATH through env(1): Server's name this tree
        # (and ``python -c`` puts its working directory first on sys.path).
        argv = ["env", "-C", str(root), f"PYTHONPATH={root}", *TWISTD, "-n", f"--logfile={self.log}",
                "--pidfile=", "chatd", "--listen", f"tcp:{port}:interface=127.0.0.1",
                "--stats-interval", "0", *options]  # fmt: skip
        self.server = Server(argv, port)
        self.port = self.server.port
        self.mark = self.log.stat().st_size

    def stop(self) -> dict:
        grown = self.log.stat().st_size - self.mark
        lines = self.log.read_bytes().count(b"\n")
        self.server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        return {"log_bytes": grown, "log_lines_total": lines}


def flood(port: int) -> dict:
    """One user pipelines 5,000 SAYs; ten users read at ~250 KB/s each."""
    readers = []
    for i in range(10):
        c = Conn(port, user(i), rcvbuf=16 * 1024)
        assert c.join(b"reader%d" % i)
        readers.append(c)
    flooder = Conn(port, ATTACKER)
    assert flooder.join(b"flooder")
    counts = {"limited": 0, "slow": 0}
    stop = threading.Event()

    def drainFlooder() -> None:
        """The flooder reads everything: RATE_LIMITED, and the LEAVEs of
        readers cut off (reason slow)."""
        flooder.sock.settimeout(0.2)
        while not flooder.closed and not stop.is_set():
            flooder.read()
            for ftype, payload in flooder.frames():
                if ftype == ERROR and payload.startswith(b"RATE_LIMITED"):
                    counts["limited"] += 1
                if ftype == LEAVE and payload.endswith(b".slow"):
                    counts["slow"] += 1

    thread = threading.Thread(target=drainFlooder, daemon=True)
    thread.start()
    text = b"f" * 1000
    flooder.sock.sendall(frame(SAY, text) * 5000 + frame(ECHO, b"done"))
    delivered = [0] * 10
    cut = [False] * 10
    for r in readers:
        r.sock.setblocking(False)
    end = time.monotonic() + 6
    while time.monotonic() < end:
        for i, r in enumerate(readers):
            if cut[i]:
                continue
            r.read(25_000)
            for ftype, payload in r.frames():
                if ftype == MESSAGE and b".flooder." in payload:
                    delivered[i] += 1
                if ftype == ERROR:
                    cut[i] = True
            cut[i] = cut[i] or r.closed
        time.sleep(0.1)
    stop.set()
    thread.join(10)
    for c in [*readers, flooder]:
        c.close()
    return {
        "attacker: messages delivered to each reader (of 5,000)": max(delivered),
        "attacker: RATE_LIMITED answers": counts["limited"],
        "users: readers cut off (of 10)": max(sum(cut), counts["slow"]),
    }


def hog(port: int) -> dict:
    """One address takes every slot it can and reconnects when refused; then
    25 newcomers from other addresses try to join."""
    held = []
    refusal = b""
    for i in range(1000):
        c = Conn(port, ATTACKER)
        c.send(HELLO, b"hog%d" % i)
        got = c.next(2)
        if not got or got[0] != WELCOME:
            refusal = got[1] if got else b"(closed)"
            c.close()
            break
        c.send(READY)
        held.append(c)
    stop = threading.Event()
    retries = [0]

    def reconnect() -> None:
        while not stop.is_set():
            try:
                c = Conn(port, ATTACKER)
                c.next(1)
                c.close()
                retries[0] += 1
            except OSError:
                time.sleep(0.01)

    thread = threading.Thread(target=reconnect, daemon=True)
    thread.start()
    joined = 0
    for i in range(25):
        try:
            c = Conn(port, user(i))
            joined += c.join(b"new%d" % i)
            c.close()
        except OSError:
            pass
    stop.set()
    thread.join()
    for c in held:
        c.close()
    return {
        "attacker: slots held": len(held),
        "attacker: refused with": refusal.decode(errors="replace"),
        "attacker: reconnects meanwhile": retries[0],
        "users: newcomers joined (of 25)": joined,
    }


def churn(port: int, seconds: float = 5.0) -> dict:
    """connect/HELLO/READY/close from one address as fast as it goes."""
    watcher = Conn(port, user(0))
    assert watcher.join(b"watcher")
    seen = [0]
    stop = threading.Event()

    def watch() -> None:
        watcher.sock.settimeout(0.2)
        while not stop.is_set() and not watcher.closed:
            watcher.read()
            seen[0] += sum(t in (JOIN, LEAVE) for t, _ in watcher.frames())

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    cycles = refused = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        c = Conn(port, ATTACKER)
        c.sock.sendall(frame(HELLO, b"churn") + frame(READY))
        got = c.next(2)
        if got and got[0] == WELCOME:
            cycles += 1
        else:
            refused += 1
        c.close()
    elapsed = time.monotonic() - start
    time.sleep(0.5)
    stop.set()
    thread.join()
    watcher.close()
    return {
        "attacker: join cycles": cycles,
        "attacker: cycles/s": round(cycles / elapsed, 1),
        "attacker: refused": refused,
        "users: JOIN+LEAVE/s seen by a watcher": round(seen[0] / elapsed, 1),
    }


def guess(port: int, seconds: float = 5.0) -> dict:
    """Password guesses from one address, each waited for up to 0.3 s."""
    attempts = checked = refused = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        c = Conn(port, ATTACKER)
        c.send(HELLO, b"bob.guess%d" % attempts)
        attempts += 1
        got = c.next(0.3)
        if got and got[1].startswith(b"SERVER_FULL."):
            refused += 1  # refused at connect: never got to its HELLO
        elif not (got and b"password not checked" in got[1]):
            checked += 1
        c.close()
    elapsed = time.monotonic() - start
    began = time.monotonic()
    c = Conn(port, user(0))
    c.send(HELLO, b"alice.opensesame")
    ok = c.next()
    login = time.monotonic() - began
    c.close()
    return {
        "attacker: attempts": attempts,
        "attacker: refused at connect": refused,
        "attacker: passwords checked": checked,
        "attacker: passwords checked/s": round(checked / elapsed, 2),
        "users: login from another address (ms)": round(login * 1000, 1)
        if ok and ok[0] == WELCOME
        else "failed",
    }


ATTACKS = {"flood": flood, "hog": hog, "churn": churn, "guess": guess}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--old", action="store_true", help="no --limit-exempt")
    parser.add_argument("--only", choices=sorted(ATTACKS), action="append")
    parser.add_argument("options", nargs="*", help="extra chatd options")
    args = parser.parse_args()
    base = [] if args.old else ["--limit-exempt", "none"]
    results = {}
    for name in args.only or list(ATTACKS):
        daemon = Daemon(args.root, [*base, *args.options], password=name == "guess")
        try:
            result = ATTACKS[name](daemon.port)
        finally:
            result_log = daemon.stop()
        results[name] = {**result, **result_log}
        print(name, json.dumps(results[name]), flush=True)


if __name__ == "__main__":
    main()
