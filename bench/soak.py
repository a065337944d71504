"""Churn and soak: memory per idle user, and whether churn leaks.

1. N idle ACTIVE users (default 2,000): server RSS per user.
2. C connect-handshake-disconnect cycles (default 10,000) from T threads,
   each ending one of three ways: abruptly (RST), with BYE, or mid-frame.
3. Afterwards: RSS within 10 % of step 1 and open descriptors back to where
   they were, with the N users still connected.

    python bench/soak.py [--users 2000] [--cycles 10000]
"""

from __future__ import annotations

import argparse
import socket
import struct
import threading
import time

from server import Drain, Server, frame

HELLO, READY, BYE, ECHO = 2, 4, 17, 1
LINGER_RST = struct.pack("ii", 1, 0)


def user(port: int, name: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(frame(HELLO, name.encode()) + frame(READY))
    return sock


def cycles(port: int, worker: int, count: int, errors: list) -> None:
    for i in range(count):
        try:
            sock = user(port, f"c{worker}x{i}")
            sock.recv(4096)  # WELCOME (and the JOIN, usually)
            ending = i % 3
            if ending == 0:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            elif ending == 1:
                sock.sendall(frame(BYE))
            else:
                sock.sendall(frame(ECHO, b"partial")[:5])
            sock.close()
        except OSError as e:
            errors.append(repr(e))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--cycles", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    with Server.chatd("--idle-timeout", "0") as server:
        time.sleep(0.5)
        base_rss, base_fds = server.rss(), server.openFiles()
        drain = Drain()
        for i in range(args.users):
            drain.add(user(server.port, f"idle{i}"))
        drain.quiet()
        idle_rss, idle_fds = server.rss(), server.openFiles()
        per_user = (idle_rss - base_rss) / args.users
        errors: list = []
        start = time.monotonic()
        threads = [
            threading.Thread(
                target=cycles,
                args=(server.port, w, args.cycles // args.threads, errors),
            )
            for w in range(args.threads)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        churn_secs = time.monotonic() - start
        drain.quiet()
        end_rss, end_fds = server.rss(), server.openFiles()
        lost = drain.closed
        drain.stop()
    print(f"baseline:            RSS {base_rss / 2**20:7.1f} MiB, {base_fds} fds")
    print(
        f"{args.users} idle users:    RSS {idle_rss / 2**20:7.1f} MiB, {idle_fds} fds, "
        f"{per_user / 1024:.2f} KiB per idle user"
    )
    print(
        f"after {args.cycles} cycles: RSS {end_rss / 2**20:7.1f} MiB "
        f"({(end_rss - idle_rss) / idle_rss * 100:+.1f} %), {end_fds} fds "
        f"({end_fds - idle_fds:+d}); churn took {churn_secs:.1f}s, "
        f"{len(errors)} client errors, {lost} idle users disconnected"
    )
    ok = abs(end_rss - idle_rss) <= 0.1 * idle_rss and end_fds == idle_fds
    print("PASS" if ok and not lost else "FAIL")


if __name__ == "__main__":
    main()
