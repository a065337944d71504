"""chatd.server.internals.unsentBytes on real sockets (loopback only)."""

from __future__ import annotations

import socket
from types import SimpleNamespace

from twisted.trial.unittest import SynchronousTestCase

from chatd.server.internals import unsentBytes


class UnsentBytesTests(SynchronousTestCase):
    def tcpPair(self) -> tuple[socket.socket, socket.socket]:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            client = socket.create_connection(listener.getsockname())
            server, _ = listener.accept()
        self.addCleanup(client.close)
        self.addCleanup(server.close)
        return server, client

    def test_tcp_counts_until_acknowledged(self) -> None:
        server, client = self.tcpPair()
        server.sendall(b"x" * 1000)
        unsent = unsentBytes(SimpleNamespace(socket=server))
        self.assertIsNotNone(unsent)
        self.assertLessEqual(unsent, 1000)  # acknowledged at once on loopback
        client.settimeout(10)
        self.assertEqual(client.recv(1000, socket.MSG_WAITALL), b"x" * 1000)

    def test_unix_closed_or_missing_socket_cannot_tell(self) -> None:
        a, b = socket.socketpair()
        self.addCleanup(b.close)
        a.sendall(b"unread")
        self.assertIsNone(unsentBytes(SimpleNamespace(socket=a)))
        a.close()
        self.assertIsNone(unsentBytes(SimpleNamespace(socket=a)))
        self.assertIsNone(unsentBytes(object()))
        server, _ = self.tcpPair()
        server.close()
        self.assertIsNone(unsentBytes(SimpleNamespace(socket=server)))
