"""Start and stop a ``twistd -n chatd`` (or any server) for a benchmark run.

Shared by the scripts in bench/: a free loopback port, the server pinned to
one core when ``taskset`` exists, its CPU time and RSS read from /proc.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: chatd as the benchmarks run it: no per-user message rate limit (chatd
#: rate-limits by default, and a rate-limited run measures the limit, which
#: chatd-bench refuses to do) and room for every load user.
BENCH_OPTIONS = (
    "--stats-interval",
    "0",
    "--max-clients",
    "100000",
    "--rate-limit",
    "0",
)


def chatdArgv(port: int, *options: str, logfile: str = "/dev/null") -> list[str]:
    """``twistd -n chatd`` on 127.0.0.1:port; ``options`` override the defaults."""
    return [
        *TWISTD, "-n", f"--logfile={logfile}", "--pidfile=", "chatd",
        "--listen", f"tcp:{port}:interface=127.0.0.1", *BENCH_OPTIONS, *options,
    ]  # fmt: skip


def pinned(argv: list[str], core: int | None) -> list[str]:
    if core is not None and shutil.which("taskset") and os.cpu_count() > 1:
        return ["taskset", "-c", str(core), *argv]
    return argv


class Server:
    """A server subprocess listening on 127.0.0.1:port."""

    def __init__(
        self, argv: list[str], port: int, core: int | None = 0, root: Path = ROOT
    ) -> None:
        """``root``: the checkout whose chatd runs (another one for a
        before/after comparison)."""
        env = dict(os.environ, PYTHONPATH=str(root))
        self.port = port
        self.proc = subprocess.Popen(
            pinned(argv, core),
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._waitListening()

    @classmethod
    def chatd(
        cls,
        *options: str,
        core: int | None = 0,
        logfile: str = "/dev/null",
        root: Path = ROOT,
    ) -> Server:
        port = freePort()
        return cls(chatdArgv(port, *options, logfile=logfile), port, core, root)

    def _waitListening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                probe = socket.create_connection(("127.0.0.1", self.port), 0.2)
            except OSError:
                time.sleep(0.05)
                continue
            # End the probe and wait for the server's end of it too, so that
            # it is gone before anyone counts the server's descriptors.
            with probe:
                probe.settimeout(5)
                probe.shutdown(socket.SHUT_WR)
                while probe.recv(4096):
                    pass
            return
        raise RuntimeError("server did not start listening")

    def cpuSeconds(self) -> float:
        """User + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1]
        utime, stime = fields.split()[11:13]
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")

    def rss(self) -> int:
        """Resident set size in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def openFiles(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


HEADER = struct.Struct("!II")


def frame(ftype: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(ftype, len(payload)) + payload


class Drain:
    """Read and discard everything on many sockets, in one background thread."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.bytes = 0
        self.closed = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def add(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        with self.lock:
            self.selector.register(sock, selectors.EVENT_READ)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                ready = self.selector.select(0.05) if self.selector.get_map() else []
            if not ready:
                time.sleep(0.01)
            for key, _ in ready:
                try:
                    data = key.fileobj.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    self.bytes += len(data)
                else:
                    with self.lock:
                        self.selector.unregister(key.fileobj)
                    self.closed += 1

    def quiet(self, seconds: float = 0.5, limit: float = 60.0) -> None:
        """Wait until nothing has arrived for ``seconds``."""
        deadline = time.monotonic() + limit
        last = -1
        while time.monotonic() < deadline:
            if self.bytes == last:
                return
            last = self.bytes
            time.sleep(seconds)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()
