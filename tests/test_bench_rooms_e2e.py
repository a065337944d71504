"""chatd-bench --rooms against a real daemon: one order per room, clean."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from tests.test_bench_e2e import BENCH_SERVER, bench, spawnBench, startDaemon


class BenchRoomsTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_rooms_two_processes_two_listeners(self):
        """4 rooms of 3 users, one sender each, spread over two load
        processes and two addresses: every member got its room's messages
        and nothing else (3 deliveries a message), in one order per room."""
        daemon = yield startDaemon(
            *BENCH_SERVER, "--listen", "tcp:0:interface=127.0.0.1:backlog=512"
        )
        self.addCleanup(daemon.stop)
        server = ",".join(f"127.0.0.1:{p}" for p in daemon.ports())
        result, status, err = yield bench(
            "fanout", server, "--rooms", "4", "--senders", "4", "--receivers", "8",
            "--window", "16", "--duration", "1", "--processes", "2", "--json",
        )  # fmt: skip
        self.assertEqual(result["integrity_failures"], 0, (result, err))
        self.assertEqual(status, 0, err)
        self.assertTrue(result["ok"])
        self.assertGreater(result["messages_sent"], 0)
        self.assertEqual(result["completed"], result["messages_sent"] * 3)
        self.assertEqual((result["rooms"], result["rooms_out_of_order"]), (4, 0))
        per = result["per_room"]
        self.assertEqual(per["users"], {"min": 3, "mean": 3.0, "max": 3})
        self.assertGreater(per["deliveries_per_s"]["min"], 0)

    @defer.inlineCallbacks
    def test_too_many_rooms_is_a_setup_failure(self):
        """More rooms than the server allows: exit 3, saying why."""
        daemon = yield startDaemon(*BENCH_SERVER, "--max-rooms", "2")
        self.addCleanup(daemon.stop)
        status, out, err = yield spawnBench(
            "fanout", f"127.0.0.1:{daemon.port}", "--rooms", "4",
            "--receivers", "4", "--duration", "1",
        ).ended  # fmt: skip
        self.assertEqual(status, 3, err)
        self.assertIn("TOO_MANY_ROOMS", err)
        self.assertIn("in 4 rooms", out)
