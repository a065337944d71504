"""Two ``--redis`` nodes whose users share no room: what each node reads.

Issue 20's benchmark.  One redis-server (bench/cluster.py's), two nodes;
node A's users are all in room ``ra``, node B's in room ``rb``; one sender
per room sends ``--messages`` ROOM_SAYs and every member waits for all of
its room's ROOM_MESSAGEs.  Run twice on fresh nodes: both rooms busy, then
room ``ra`` alone (node A's figures there are those of a node that reads
only its own room's stream).  Per node it prints the stream events the node
read (``/status`` ``cluster.events_read``) per message delivered in its own
room, the Redis commands it sent (XREADs, EVALSHAs, heartbeats), and the node's CPU seconds (``/proc/<pid>/stat``) for the run.  With
one stream for every room (before issue 20's per-room streams) a node
read the other room's messages too: about 2 events read per own message;
now 1 (docs/cluster.md, "Cost").

    python bench/roomstreams.py [--messages 20000] [--members 10]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from cluster import Redis
from server import Server, freePort

HEADER = struct.Struct("!II")
HELLO, READY, VERSION, ENTER, ROOM_SAY, ROOM_MESSAGE = 2, 4, 18, 19, 21, 22
TEXT = b"x" * 64


def frame(ftype: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(ftype, len(payload)) + payload


class Client:
    """A blocking 1.2 client in one room, counting its ROOM_MESSAGEs."""

    def __init__(self, port: int, name: bytes, room: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), 10)
        self.buf = b""
        self.sock.sendall(
            frame(HELLO, name) + frame(READY) + frame(VERSION, b"1.2")
            + frame(ENTER, room)
        )  # fmt: skip
        self.room = room
        self.heard = 0

    def frames(self):  # type: ignore[no-untyped-def]
        while True:
            while len(self.buf) >= 8:
                ftype, size = HEADER.unpack_from(self.buf)
                if len(self.buf) < 8 + size:
                    break
                payload, self.buf = self.buf[8 : 8 + size], self.buf[8 + size :]
                yield ftype, payload
            data = self.sock.recv(65536)
            if not data:
                return
            self.buf += data

    def hear(self, count: int) -> None:
        for ftype, _ in self.frames():
            if ftype == ROOM_MESSAGE:
                self.heard += 1
                if self.heard >= count:
                    return


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status(admin: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=10) as r:
        return json.loads(r.read())["cluster"]


def startNode(redis: Redis, name: str, core: int) -> tuple[Server, int]:
    log = tempfile.NamedTemporaryFile(suffix=".log", delete=False).name
    admin = freePort()
    node = Server.chatd(
        "--idle-timeout", "0", "--handshake-timeout", "0", "--rate-limit", "0",
        "--redis", f"unix://{redis.socket}", "--node-name", name,
        "--admin", f"tcp:{admin}:interface=127.0.0.1",
        core=core, logfile=log,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while f"cluster: node {name} joined" not in Path(log).read_text():
        if time.monotonic() > deadline:
            raise RuntimeError(f"node {name} did not join the cluster")
        time.sleep(0.05)
    return node, admin


def scenario(redis: Redis, messages: int, members: int, busy: int) -> dict:
    """Fresh nodes A and B; the first ``busy`` rooms' senders send."""
    nodes = [startNode(redis, "A", 0), startNode(redis, "B", 1)]
    try:
        rooms = [b"ra", b"rb"][:busy]
        groups = [
            [Client(node.port, b"%s%d" % (room, i), room) for i in range(members)]
            for (node, _), room in zip(nodes, rooms, strict=False)
        ]
        time.sleep(1)  # every member is in before anyone speaks
        before = [(cpu(n.proc.pid), status(a)) for n, a in nodes]
        start = time.monotonic()
        listeners = [
            threading.Thread(target=c.hear, args=(messages,))
            for group in groups
            for c in group
        ]
        for t in listeners:
            t.start()
        for group, room in zip(groups, rooms, strict=True):
            data = frame(ROOM_SAY, room + b"." + TEXT) * messages
            threading.Thread(target=group[0].sock.sendall, args=(data,)).start()
        for t in listeners:
            t.join(300)
        elapsed = time.monotonic() - start
        rows = []
        for (node, admin), (cpu0, was) in zip(nodes, before, strict=True):
            now = status(admin)
            read = now["events_read"] - was["events_read"]
            own = messages if len(rows) < busy else 0
            rows.append({
                "node": "AB"[len(rows)],
                "messages_in_own_room": own,
                "events_read": read,
                "redis_commands": now["redis_commands"] - was["redis_commands"],
                "reads_per_delivered_message": round(read / own, 3) if own else None,
                "cpu_s": round(cpu(node.proc.pid) - cpu0, 2),
            })  # fmt: skip
        return {"busy_rooms": busy, "elapsed_s": round(elapsed, 2), "nodes": rows}
    finally:
        for node, _ in nodes:
            node.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--members", type=int, default=10)
    args = p.parse_args()
    redis = Redis()
    try:
        # Both rooms busy, then A's alone: A's CPU in the second is what a
        # node that reads only its own room's stream could come down to.
        runs = [scenario(redis, args.messages, args.members, busy) for busy in (2, 1)]
    finally:
        redis.stop()
    print(json.dumps(runs, indent=1))


if __name__ == "__main__":
    sys.exit(main())
