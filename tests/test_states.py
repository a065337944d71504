"""The service lifecycle: allowed and refused transitions, maintenance, reload.

The service runs on a MemoryReactorClock (no sockets); users are in-memory
peers of its own factory.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from chatd.server.config import Config
from chatd.server.service import ChatService, ReloadRefused
from chatd.server.states import TRANSITIONS, InvalidTransition, Lifecycle, ServerState
from chatd.wire import FrameType
from tests.memory import Server

S = ServerState

#: The issue's edges, spelled out independently of the table.
EXPECTED = {
    (S.STOPPED, S.STARTING),
    (S.STARTING, S.ACTIVE),
    (S.STARTING, S.FAILED),
    (S.STARTING, S.STOPPING),
    (S.ACTIVE, S.MAINTENANCE),
    (S.MAINTENANCE, S.ACTIVE),
    (S.ACTIVE, S.REBOOTING),
    (S.MAINTENANCE, S.REBOOTING),
    (S.REBOOTING, S.ACTIVE),
    (S.REBOOTING, S.MAINTENANCE),
    (S.ACTIVE, S.STOPPING),
    (S.MAINTENANCE, S.STOPPING),
    (S.REBOOTING, S.STOPPING),
    (S.FAILED, S.STOPPING),
    (S.FAILED, S.STOPPED),
    (S.STOPPING, S.STOPPED),
}


class LifecycleTests(SynchronousTestCase):
    def test_every_pair(self) -> None:
        """Exactly the expected moves are allowed; every other one raises."""
        for old, new in itertools.product(S, S):
            machine = Lifecycle(old)
            if (old, new) in EXPECTED:
                machine.enter(new)
                self.assertIs(machine.state, new)
            else:
                with self.assertRaises(InvalidTransition, msg=f"{old} -> {new}"):
                    machine.enter(new)
                self.assertIs(machine.state, old)

    def test_table_matches(self) -> None:
        table = {(old, new) for old, news in TRANSITIONS.items() for new in news}
        self.assertEqual(table, EXPECTED)

    def test_logged(self) -> None:
        events: list[dict] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        Lifecycle(S.ACTIVE).enter(S.MAINTENANCE, "upgrade")
        texts = [e.get("log_format", "").format(**e) for e in events if "old" in e]
        self.assertIn("state ACTIVE -> MAINTENANCE (upgrade)", texts)


class ServiceTests(SynchronousTestCase):
    """ChatService moves along the table and does each move's work."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.config = Config(listen=("tcp:0",), stats_interval=0)
        self.loads: list[Config] = []
        self.service = ChatService(
            self.config, self.reactor, loader=self.load, handleSignals=False
        )
        self.service.startService()
        self.addCleanup(self.stop)
        # The in-memory peers of tests/memory.py, on this service's factory.
        self.server = Server.__new__(Server)
        self.server.clock = self.reactor
        self.server.config = self.config
        self.server.factory = self.service.factory
        self.server._ports = iter(range(40000, 65536))

    def load(self) -> Config:
        if not self.loads:
            raise usage.UsageError("--max-clients: bad value 'x'")
        return self.loads.pop(0)

    def stop(self) -> None:
        if self.service.running:
            self.service.stopService()
            self.reactor.advance(10)

    def test_started(self) -> None:
        self.assertIs(self.service.state, S.ACTIVE)
        self.assertEqual(len(self.reactor.tcpServers), 1)

    def test_maintenance(self) -> None:
        """Existing users stay and chat, and hear about it; newcomers are
        refused with MAINTENANCE; RESUMED opens the door again."""
        alice, bob = self.server.users(b"alice", b"bob")
        told = self.service.setMaintenance(True, "back at 10")
        self.assertEqual(told, 2)
        self.assertIs(self.service.state, S.MAINTENANCE)
        self.assertEqual(
            alice.received(), [(FrameType.NOTICE, b"MAINTENANCE.back at 10")]
        )
        alice.send(FrameType.SAY, b"still here")
        self.assertEqual(
            [t for t, _ in bob.received()], [FrameType.NOTICE, FrameType.MESSAGE]
        )
        self.assertTrue(alice.received()[0][1].endswith(b".still here"))
        newcomer = self.server.connect()
        frames = newcomer.received()
        self.assertEqual(frames[0][0], FrameType.ERROR)
        self.assertTrue(frames[0][1].startswith(b"MAINTENANCE."))
        self.assertTrue(newcomer.closing)

        self.service.setMaintenance(False, "done")
        self.assertIs(self.service.state, S.ACTIVE)
        self.assertEqual(alice.received(), [(FrameType.NOTICE, b"RESUMED.done")])
        self.server.active(b"carol")

    def test_maintenance_told_mid_handshake(self) -> None:
        """A connection already open but not yet ACTIVE hears both notices and
        may finish its handshake meanwhile."""
        early = self.server.named(b"early")
        told = self.service.setMaintenance(True, "soon")
        self.assertEqual(told, 1)
        early.send(FrameType.READY)
        self.service.setMaintenance(False, "done")
        self.assertEqual(
            [t for t, _ in early.received()],
            [FrameType.NOTICE, FrameType.JOIN, FrameType.NOTICE],
        )

    def test_maintenance_refused_twice(self) -> None:
        self.service.setMaintenance(True)
        with self.assertRaises(InvalidTransition):
            self.service.setMaintenance(True)
        self.service.setMaintenance(False)
        with self.assertRaises(InvalidTransition):
            self.service.setMaintenance(False)

    def test_reload_applies(self) -> None:
        """A reload swaps in the new config: factory limits and password."""
        self.loads.append(replace(self.config, max_clients=7, password=b"new"))
        d = self.service.reload("test")
        self.assertEqual(self.successResultOf(d), ["max_clients", "password"])
        self.assertIs(self.service.state, S.ACTIVE)
        self.assertEqual(self.service.factory.config.max_clients, 7)
        self.assertEqual(self.service.factory.room.password, b"new")

    def test_reload_keeps_maintenance(self) -> None:
        self.service.setMaintenance(True)
        self.loads.append(self.config)
        self.assertEqual(self.successResultOf(self.service.reload()), [])
        self.assertIs(self.service.state, S.MAINTENANCE)

    def test_reload_bad_config(self) -> None:
        """A bad new configuration is refused and the old one stays."""
        d = self.service.reload("test")
        self.failureResultOf(d, ReloadRefused)
        self.assertIs(self.service.state, S.ACTIVE)
        self.assertIs(self.service.config, self.config)

    def test_reload_swaps_listeners(self) -> None:
        """Only the listener whose endpoint changed is closed and reopened."""
        kept = self.service.listeners["tcp:0"]
        self.loads.append(replace(self.config, listen=("tcp:0", "tcp:1")))
        self.successResultOf(self.service.reload())
        self.assertIs(self.service.listeners["tcp:0"], kept)
        self.assertEqual(list(self.service.listeners), ["tcp:0", "tcp:1"])
        self.loads.append(replace(self.config, listen=("tcp:1",)))
        self.successResultOf(self.service.reload())
        self.assertEqual(list(self.service.listeners), ["tcp:1"])

    def test_reload_refused_when_stopped(self) -> None:
        self.stop()
        self.loads.append(self.config)
        self.failureResultOf(self.service.reload(), InvalidTransition)
        self.assertIs(self.service.state, S.STOPPED)

    def test_stop(self) -> None:
        self.service.setMaintenance(True)
        self.stop()
        self.assertIs(self.service.state, S.STOPPED)
        with self.assertRaises(InvalidTransition):
            self.service.setMaintenance(False)
