"""The service lifecycle: allowed and refused transitions, maintenance, reload.

The service runs on a MemoryReactorClock (no sockets); users are in-memory
peers of its own factory.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from twisted.internet import address, defer, reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chatd.server.config import Config, Options, build
from chatd.server.service import ChatService, ReloadRefused, formatAddress
from chatd.server.states import TRANSITIONS, InvalidTransition, Lifecycle, ServerState
from chatd.wire import FrameType
from tests.daemon import ROOT, connect, environment
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
        self.assertEqual(self.service.factory.hub.password, b"new")

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

    def test_reload_applies_limits(self) -> None:
        """--max-per-ip and --max-backlog from a reload govern what follows:
        a second connection from one address is refused, a paused reader is
        cut off at the new, smaller backlog."""
        slow, talker = self.server.users(b"slow", b"talker")
        self.loads.append(replace(self.config, max_per_ip=2, max_backlog=4096))
        self.assertEqual(
            self.successResultOf(self.service.reload()), ["max_backlog", "max_per_ip"]
        )
        refused = self.server.connect()
        frames = refused.received()
        self.assertEqual(frames[0][0], FrameType.ERROR)
        self.assertTrue(frames[0][1].startswith(b"SERVER_FULL."), frames)
        self.assertTrue(refused.closing)
        slow.proto.pauseProducing()
        for _ in range(10):
            talker.send(FrameType.SAY, b"z" * 500)
            self.reactor.advance(0)
        self.assertTrue(slow.closing)
        self.assertTrue(slow.received()[-1][1].startswith(b"SLOW_CONSUMER."))

    def test_reload_bad_number_in_words(self) -> None:
        """A bad CHATD_MAX_CLIENTS in the env file: refused, and the reason
        says what is wanted, not Python's ``invalid literal for int()``."""
        self.service.loader = lambda: build({}, {"CHATD_MAX_CLIENTS": "many"})
        failure = self.failureResultOf(self.service.reload(), ReloadRefused)
        self.assertEqual(
            str(failure.value),
            "CHATD_MAX_CLIENTS: must be a whole number of at least 1, not 'many'",
        )

    def test_listener_services(self) -> None:
        """A MultiService: one StreamServerEndpointService per listener and a
        TimerService for stats; reload swaps only the listener that changed."""
        from twisted.application.internet import (
            StreamServerEndpointService,
            TimerService,
        )

        [listener] = self.service  # stats_interval=0: no timer
        self.assertIsInstance(listener, StreamServerEndpointService)
        self.loads.append(replace(self.config, stats_interval=2.0))
        self.successResultOf(self.service.reload())
        self.assertIsInstance(self.service.getServiceNamed("stats"), TimerService)
        self.assertTrue(self.service.getServiceNamed("stats").running)

    def test_addresses(self) -> None:
        """Listeners as operators read them, not as Python reprs."""
        self.assertEqual(
            self.service.addresses,
            [{"endpoint": "tcp:0", "address": "tcp 0.0.0.0:0"}],
        )
        cases = {
            ("tcp:7777", address.IPv4Address("TCP", "0.0.0.0", 7777)): "tcp 0.0.0.0:7777",
            ("tcp6:7777", address.IPv6Address("TCP", "::1", 7777)): "tcp6 [::1]:7777",
            ("ssl:7778", address.IPv4Address("TCP", "10.0.0.1", 7778)): "ssl 10.0.0.1:7778",
            ("unix:/run/c.sock", address.UNIXAddress(b"/run/c.sock")): "unix /run/c.sock",
        }  # fmt: skip
        for (description, where), text in cases.items():
            self.assertEqual(formatAddress(where, description), text)

    def test_port_file(self) -> None:
        """--port-file lists what listens, once started; stop removes it."""
        path = os.path.abspath(self.mktemp())
        config = replace(self.config, port_file=path, admin="tcp:0:interface=127.0.0.1")
        service = ChatService(config, self.reactor, handleSignals=False)
        service.startService()
        with open(path) as f:
            self.assertEqual(f.read(), "chat tcp 0.0.0.0:0\nadmin tcp 0.0.0.0:0\n")
        service.stopService()
        self.reactor.advance(10)
        self.assertFalse(os.path.exists(path))


class StatsTests(SynchronousTestCase):
    """The stats line: every interval while counters move, else silence."""

    def test_quiet_when_idle(self) -> None:
        clock = MemoryReactorClock()
        service = ChatService(
            Config(listen=("tcp:0",), stats_interval=1.0), clock, handleSignals=False
        )
        lines: list[str] = []

        def observe(event: dict) -> None:
            text = event.get("log_format") or ""
            if text.startswith("stats"):
                lines.append(text)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        service.startService()
        self.addCleanup(service.stopService)
        clock.advance(1)
        clock.advance(1)
        self.assertEqual(lines, [])  # idle since start: nothing
        server = Server.__new__(Server)
        server.clock, server.config, server.factory = (
            clock,
            service.config,
            service.factory,
        )
        server._ports = iter(range(40000, 65536))
        [alice] = server.users(b"alice")
        clock.advance(1)
        alice.send(FrameType.SAY, b"hi")
        clock.advance(1)
        self.assertEqual(len(lines), 2)
        for _ in range(5):
            clock.advance(1)
        self.assertEqual(len(lines), 3)
        self.assertTrue(lines[-1].startswith("stats idle"))


class ListenerTests(TestCase):
    """Real sockets on 127.0.0.1: binding, and a reload that cannot bind."""

    @defer.inlineCallbacks
    def test_reload_cannot_bind(self):
        """A new listener that cannot bind refuses the reload; the old one
        (closed first, as its endpoint changed) is restored and accepts."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = Config(listen=("tcp:0:interface=127.0.0.1",), stats_interval=0)
        bad = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        service = ChatService(
            config, reactor, loader=lambda: replace(config, listen=(bad,)),
            handleSignals=False,
        )  # fmt: skip
        service.startService()
        self.addCleanup(service.stopService)
        with self.assertRaises(ReloadRefused) as caught:
            yield service.reload("test")
        self.assertIn("address already in use", str(caught.exception))
        self.assertIs(service.state, ServerState.ACTIVE)
        [port] = service.ports
        client = yield connect(port.getHost().port)
        client.send(FrameType.ECHO, b"still here")
        self.assertEqual((yield client.next()), (FrameType.ECHO, b"still here"))
        client.transport.loseConnection()
        yield client.closed


class StructureTests(SynchronousTestCase):
    def test_temporary_files_outside_checkout(self) -> None:
        """mktemp() paths land in trial's _trial_temp or, under pytest, in a
        temporary directory (tests/conftest.py), never in the checkout."""
        path = Path(os.path.abspath(self.mktemp()))
        if path.is_relative_to(ROOT):
            self.assertEqual(path.relative_to(ROOT).parts[0], "_trial_temp")

    def test_no_import_cycle(self) -> None:
        """admin.py does not import the service module (which loads admin)."""
        code = (
            "import sys, chatd.server.admin; "
            "print('chatd.server.service' in sys.modules)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=environment(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        self.assertEqual(out.stdout, "False\n")


class TapTests(TestCase):
    def test_no_excepthook(self) -> defer.Deferred:
        """makeService binds at once and leaves sys.excepthook alone (a bind
        error is its own one-line exit, see test_e2e_twistd)."""
        from chatd.server import tap

        before = sys.excepthook
        options = Options(environ={})
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1"])
        service = tap.makeService(options)
        self.assertIs(sys.excepthook, before)
        self.assertIs(service.state, ServerState.STARTING)
        self.assertTrue(service.addresses[0]["address"].startswith("tcp 127.0.0.1:"))
        return service.stopService()
