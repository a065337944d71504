"""WebSocket fan-out against TCP fan-out: the same load through both front ends.

N silent users and S senders join one ``twistd chatd --web`` server, all
over TCP or all over the WebSocket (``/ws``); each sender keeps ``window``
messages unacknowledged (its own MESSAGE copy is the acknowledgement, and
gives the latency).  Every user is a receiver, so one message is N + S
deliveries.  Silent users read and discard; the server runs on core 0 and
this tool on core 1, as in bench/run.py.

    python bench/web_load.py [--users 500] [--senders 4] [--seconds 10]
"""

from __future__ import annotations

import argparse
import base64
import os
import selectors
import socket
import statistics
import struct
import time

from server import Server, freePort

HEADER = struct.Struct("!II")
HELLO, READY, SAY, MESSAGE = 2, 4, 5, 6


def frame(ftype: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(ftype, len(payload)) + payload


def wsMessage(data: bytes) -> bytes:
    """One client-to-server binary message (masked with a zero key, which
    leaves the payload as it is)."""
    n = len(data)
    if n < 126:
        head = bytes((0x82, 0x80 | n))
    elif n < 65536:
        head = bytes((0x82, 0x80 | 126)) + struct.pack("!H", n)
    else:
        head = bytes((0x82, 0x80 | 127)) + struct.pack("!Q", n)
    return head + b"\0\0\0\0" + data


def upgrade(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class User:
    """One connection; silent users only drain, senders parse and measure."""

    def __init__(self, port: int, ws: bool, name: bytes) -> None:
        self.ws = ws
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hello = frame(HELLO, name) + frame(READY)
        if ws:  # RFC 6455: no data before the server's 101
            self.sock.sendall(upgrade(port))
            response = b""
            while b"\r\n\r\n" not in response:
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise ConnectionError("server closed during the upgrade")
                response += chunk
            if not response.startswith(b"HTTP/1.1 101"):
                raise ConnectionError(response.split(b"\r\n", 1)[0].decode())
            self.leftover = response.split(b"\r\n\r\n", 1)[1]
            hello = wsMessage(hello)
        self.sock.sendall(hello)
        self.sock.setblocking(False)
        self.out = b""

    leftover = b""

    def send(self, data: bytes) -> None:
        self.out += wsMessage(data) if self.ws else data
        self.flush()

    def flush(self) -> None:
        while self.out:
            try:
                sent = self.sock.send(self.out)
            except BlockingIOError:
                return
            self.out = self.out[sent:]


class Sender(User):
    def __init__(self, port: int, ws: bool, name: bytes, size: int, window: int):
        super().__init__(port, ws, name)
        self.name = name
        self.size = size
        self.window = window
        self.raw = self.leftover
        self.frames = b""
        self.mine = b"." + name + b"."
        self.latencies: list[float] = []
        self.acked = 0
        self.seq = 0

    def start(self) -> None:
        self.send(b"".join(self._say() for _ in range(self.window)))

    def _say(self) -> bytes:
        self.seq += 1
        text = b"%d:%d:" % (time.perf_counter_ns(), self.seq)
        return frame(SAY, text.ljust(self.size, b"x"))

    def received(self, data: bytes, measuring: bool) -> None:
        if not self.ws:
            self.frames += data
        else:
            self.raw += data
            self._unwrap()
        self._chat(measuring)

    def _unwrap(self) -> None:
        """Server messages are unmasked: header, length, payload."""
        raw, offset, parts = self.raw, 0, []
        while len(raw) - offset >= 2:
            n = raw[offset + 1] & 0x7F
            head = 2
            if n == 126:
                if len(raw) - offset < 4:
                    break
                n, head = struct.unpack_from("!H", raw, offset + 2)[0], 4
            elif n == 127:
                if len(raw) - offset < 10:
                    break
                n, head = struct.unpack_from("!Q", raw, offset + 2)[0], 10
            if len(raw) - offset < head + n:
                break
            parts.append(raw[offset + head : offset + head + n])
            offset += head + n
        self.raw = raw[offset:]
        self.frames += b"".join(parts)

    def _chat(self, measuring: bool) -> None:
        data, offset, replies = self.frames, 0, []
        now = time.perf_counter_ns()
        while len(data) - offset >= 8:
            ftype, size = HEADER.unpack_from(data, offset)
            if len(data) - offset < 8 + size:
                break
            payload = data[offset + 8 : offset + 8 + size]
            offset += 8 + size
            if ftype == MESSAGE and self.mine in payload:
                sent = int(payload.split(b".", 3)[3].split(b":", 1)[0])
                if measuring:
                    self.latencies.append((now - sent) / 1e6)
                    self.acked += 1
                replies.append(self._say())
        self.frames = data[offset:]
        if replies:
            self.send(b"".join(replies))


def run(ws: bool, users: int, senders: int, seconds: float, size: int, window: int):
    webPort = freePort()
    with Server.chatd(
        "--web", f"tcp:{webPort}:interface=127.0.0.1",
        "--idle-timeout", "0", "--handshake-timeout", "0",
        "--max-backlog", "16MiB", core=0,
    ) as server:  # fmt: skip
        port = webPort if ws else server.port
        sel = selectors.DefaultSelector()
        silent = [User(port, ws, b"u%d" % i) for i in range(users)]
        talkers = [Sender(port, ws, b"s%d" % i, size, window) for i in range(senders)]
        for u in silent:
            sel.register(u.sock, selectors.EVENT_READ, u)
        for s in talkers:
            sel.register(s.sock, selectors.EVENT_READ, s)
        buf = bytearray(1 << 18)
        view = memoryview(buf)
        closed = 0

        def loop(until: float, measuring: bool) -> None:
            nonlocal closed
            while time.monotonic() < until:
                for key, _ in sel.select(0.05):
                    user = key.data
                    try:
                        n = user.sock.recv_into(buf)
                    except BlockingIOError:
                        continue
                    except OSError:
                        n = 0
                    if n == 0:
                        sel.unregister(user.sock)
                        closed += 1
                    elif isinstance(user, Sender):
                        user.received(bytes(view[:n]), measuring)
                for s in talkers:
                    s.flush()

        loop(time.monotonic() + 2.0, False)  # everyone joins; JOINs drain
        for s in talkers:
            s.start()
        loop(time.monotonic() + 1.0, False)  # warm-up
        cpu0, t0 = server.cpuSeconds(), time.monotonic()
        loop(t0 + seconds, True)
        cpu, elapsed = server.cpuSeconds() - cpu0, time.monotonic() - t0
        for u in silent + talkers:
            u.sock.close()
    acked = sum(s.acked for s in talkers)
    lat = sorted(x for s in talkers for x in s.latencies)
    deliveries = acked * (users + senders) / elapsed
    return {
        "deliveries_per_s": deliveries,
        "messages_per_s": acked / elapsed,
        "p50_ms": statistics.median(lat) if lat else float("nan"),
        "p99_ms": lat[int(len(lat) * 0.99)] if lat else float("nan"),
        "cpu_ns_per_delivery": cpu / (deliveries * elapsed) * 1e9 if acked else 0,
        "closed": closed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=64, help="text bytes per message")
    parser.add_argument("--window", type=int, default=16)
    args = parser.parse_args()
    os.sched_setaffinity(0, {1}) if os.cpu_count() and os.cpu_count() > 1 else None
    results = {}
    for kind in ("tcp", "ws"):
        results[kind] = run(
            kind == "ws", args.users, args.senders, args.seconds, args.size, args.window
        )
    print(
        f"{args.users} users + {args.senders} senders, {args.size} B, "
        f"window {args.window}, {args.seconds:g} s"
    )
    print(
        "| front end | deliveries/s | messages/s | p50 ms | p99 ms | server CPU ns/delivery | cut off |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind, r in results.items():
        print(
            f"| {kind} | {r['deliveries_per_s']:,.0f} | {r['messages_per_s']:,.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['cpu_ns_per_delivery']:.0f} | {r['closed']} |"
        )
    ratio = results["ws"]["deliveries_per_s"] / results["tcp"]["deliveries_per_s"]
    print(f"WebSocket / TCP deliveries: {ratio:.2f}x")


if __name__ == "__main__":
    main()
