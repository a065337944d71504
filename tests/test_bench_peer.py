"""bench/peers/asyncio_uvloop.py speaks the frames bench/run.py's loads use."""

from __future__ import annotations

import importlib.util
import socket
import struct
import subprocess
import sys

from twisted.trial import unittest

from tests.daemon import ROOT, environment

PEER = ROOT / "bench" / "peers" / "asyncio_uvloop.py"
HEADER = struct.Struct("!II")


def frame(ftype: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(ftype, len(payload)) + payload


def readFrame(sock: socket.socket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError(f"closed after {data!r}")
            data += chunk
        return data

    ftype, size = HEADER.unpack(exactly(8))
    return ftype, exactly(size)


class PeerTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        if importlib.util.find_spec("uvloop") is None:
            raise unittest.SkipTest("uvloop is not installed")
        self.proc = subprocess.Popen(
            [sys.executable, str(PEER), "--port", "0"],
            env=environment(),
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(self.proc.wait, 10)
        self.addCleanup(self.proc.terminate)
        assert self.proc.stdout is not None
        self.addCleanup(self.proc.stdout.close)
        line = self.proc.stdout.readline().split()
        self.assertEqual(line[0], "listening")
        self.port = int(line[1])

    def connect(self, name: bytes) -> tuple[socket.socket, bytes]:
        """A user through HELLO and READY, its JOIN read; its b"id.color.name"."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.addCleanup(sock.close)
        sock.sendall(frame(2, name) + frame(4))
        ftype, welcome = readFrame(sock)
        self.assertEqual(ftype, 3)
        got, uid, color = welcome.split(b".")
        self.assertEqual(got, name)
        user = b".".join((uid, color, name))
        self.assertEqual(readFrame(sock), (7, user))
        return sock, user

    def test_say_echo_ping_bye(self) -> None:
        alice, aliceUser = self.connect(b"alice")
        bob, bobUser = self.connect(b"bob")
        self.assertEqual(readFrame(alice), (7, bobUser))
        # Split across sends and mixed in one: replies keep request order.
        data = frame(5, b"hi.there") + frame(1, b"e1") + frame(9, b"p")
        alice.sendall(data[:5])
        alice.sendall(data[5:] + frame(5, b"two"))
        said = (6, aliceUser + b".hi.there")
        self.assertEqual(readFrame(alice), said)
        self.assertEqual(readFrame(alice), (1, b"e1"))
        self.assertEqual(readFrame(alice), (10, b"p"))
        self.assertEqual(readFrame(alice), (6, aliceUser + b".two"))
        self.assertEqual(readFrame(bob), said)
        self.assertEqual(readFrame(bob), (6, aliceUser + b".two"))
        alice.sendall(frame(17) + frame(5, b"ignored"))
        self.assertEqual(readFrame(bob), (8, aliceUser + b".quit"))
        self.assertEqual(alice.recv(1), b"")

    def test_oversized_frame_closes(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.addCleanup(sock.close)
        sock.sendall(HEADER.pack(1, 1017))
        try:
            self.assertEqual(sock.recv(1), b"")
        except ConnectionResetError:
            pass  # closed with the header unread: the kernel resets
