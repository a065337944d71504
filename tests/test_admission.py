"""Admission: per-address limits, login backoff, bounded memory (task.Clock)."""

from __future__ import annotations

from twisted.internet import task
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from chatd.core.limits import BucketTable
from chatd.server.admission import (
    Admission,
    AuthBackoff,
    addressKey,
    parseNetworks,
)
from chatd.server.config import Config, build
from chatd.wire import encode
from tests.memory import ChatTestCase, Server, T

PUBLIC = {
    "max_per_ip": 20,
    "connect_rate": 5.0,
    "connect_burst": 20,
    "limit_exempt": parseNetworks("127.0.0.0/8,::1"),
    "auth_backoff": 0.5,
    "auth_backoff_max": 10.0,
    "log_summary": 10.0,
}


def admission(**config: object) -> tuple[Admission, task.Clock]:
    clock = task.Clock()
    return Admission(Config(**{**PUBLIC, **config}), clock), clock


class DefaultsTests(SynchronousTestCase):
    def test_daemon_defaults_are_on(self) -> None:
        """With no options the daemon limits: issue 14's defaults."""
        config = build({}, {})
        self.assertEqual((config.rate_limit, config.rate_burst), (10.0, 30))
        self.assertEqual(config.max_per_ip, 20)
        self.assertEqual((config.connect_rate, config.connect_burst), (5.0, 20))
        self.assertEqual(str(config.limit_exempt), "127.0.0.0/8,::1")
        self.assertEqual((config.auth_backoff, config.auth_backoff_max), (0.5, 10.0))
        self.assertEqual((config.log_summary, config.log_keep), (10.0, 10))

    def test_settable_and_off(self) -> None:
        config = build(
            {"limit-exempt": "none", "connect-rate": "0", "auth-backoff": "0"}, {}
        )
        self.assertEqual(tuple(config.limit_exempt), ())
        self.assertEqual((config.connect_rate, config.auth_backoff), (0.0, 0.0))
        config = build({}, {"CHATD_LIMIT_EXEMPT": "10.0.0.0/8, 2001:db8::/32"})
        self.assertIn("10.1.2.3", config.limit_exempt)
        self.assertIn("2001:db8::5", config.limit_exempt)
        self.assertNotIn("127.0.0.1", config.limit_exempt)

    def test_bad_values_one_line(self) -> None:
        for option, value in [("limit-exempt", "10.0.0.0/33"), ("connect-rate", "x")]:
            with self.assertRaises(usage.UsageError) as caught:
                build({option: value}, {})
            message = str(caught.exception)
            self.assertTrue(message.startswith(f"--{option}: "), message)
            self.assertNotIn("\n", message)
        with self.assertRaises(usage.UsageError) as caught:
            build({"limit-exempt": "10.0.0.0/33"}, {})
        self.assertIn("10.0.0.0/8,::1, or none", str(caught.exception))


class AddressTests(SynchronousTestCase):
    def test_keys(self) -> None:
        """IPv4 by address, IPv6 by /64 (one host's block), mapped as IPv4."""
        self.assertEqual(addressKey("10.0.0.5"), "10.0.0.5")
        self.assertEqual(addressKey("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64")
        self.assertEqual(
            addressKey("2001:db8:1:2:ffff::9"), addressKey("2001:db8:1:2::1")
        )
        self.assertEqual(addressKey("::ffff:10.0.0.5"), "10.0.0.5")
        self.assertEqual(addressKey("unix"), "unix")

    def test_exempt(self) -> None:
        gate, _ = admission()
        for host in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "unix"):
            self.assertTrue(gate.exempt(host), host)
        for host in ("10.0.0.5", "::2", "128.0.0.1"):
            self.assertFalse(gate.exempt(host), host)
        gate.applyConfig(Config(**{**PUBLIC, "limit_exempt": parseNetworks("none")}))
        self.assertFalse(gate.exempt("127.0.0.1"))


class PerAddressTests(SynchronousTestCase):
    def test_max_per_ip_outside_exempt_only(self) -> None:
        gate, _ = admission(connect_rate=0)
        for _ in range(20):
            self.assertIsNone(gate.admit("10.0.0.5", "p", None, 0))
        code, text = gate.admit("10.0.0.5", "p", None, 0)
        self.assertEqual(code.name, "SERVER_FULL")
        self.assertIn("max-per-ip 20", text)
        self.assertIn("10.0.0.5", text)
        self.assertIsNone(gate.admit("10.0.0.6", "p", None, 0))  # others unaffected
        for _ in range(100):
            self.assertIsNone(gate.admit("127.0.0.1", "p", None, 0))  # exempt
        gate.release("10.0.0.5")
        self.assertIsNone(gate.admit("10.0.0.5", "p", None, 0))

    def test_connect_rate(self) -> None:
        """20 at once, then 5 a second; refused with a text naming it."""
        gate, clock = admission(max_per_ip=0)
        admitted = 0
        for _ in range(10):  # 10 s of a client reconnecting 100 times a second
            for _ in range(100):
                if gate.admit("10.0.0.5", "p", None, 0) is None:
                    admitted += 1
                    gate.release("10.0.0.5")
                clock.advance(0.01)
        self.assertLessEqual(admitted, 20 + 5 * 10 + 1)
        self.assertGreaterEqual(admitted, 20 + 5 * 10 - 1)
        code, text = gate.admit("10.0.0.5", "p", None, 0)
        self.assertEqual(code.name, "SERVER_FULL")
        self.assertIn("connect-rate 5/s", text)
        self.assertIsNone(gate.admit("10.0.0.6", "p", None, 0))
        self.assertIsNone(gate.admit("127.0.0.1", "p", None, 0))

    def test_max_clients_named(self) -> None:
        gate, _ = admission()
        code, text = gate.admit("10.0.0.5", "p", None, 1000)
        self.assertEqual(
            (code.name, text), ("SERVER_FULL", "server is full (max-clients 1000)")
        )

    def test_bucket_memory_bounded(self) -> None:
        """A million distinct addresses cost at most ``capacity`` buckets;
        idle (refilled) ones are dropped without any timer."""
        clock = task.Clock()
        table = BucketTable(5.0, 20, clock.seconds, capacity=1000)
        for i in range(100_000):
            table.take(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
        self.assertEqual(len(table), 1000)
        clock.advance(4)  # 20 tokens at 5/s: every bucket is full again
        for i in range(10):
            table.take(f"192.168.0.{i}")
        self.assertLessEqual(len(table), 1000 - 10)
        for _ in range(2000):
            table.take("192.168.0.1")
        self.assertLess(len(table), 15)
        self.assertEqual(clock.getDelayedCalls(), [])


class AuthBackoffTests(SynchronousTestCase):
    def test_growth_cap_reset(self) -> None:
        clock = task.Clock()
        auth = AuthBackoff(clock.seconds, 0.5, 10.0)
        delays = [auth.failed("10.0.0.5") for _ in range(8)]
        self.assertEqual(delays, [0.5, 1, 2, 4, 8, 10, 10, 10])
        self.assertEqual(auth.lockedFor("10.0.0.5"), 10)
        self.assertEqual(auth.lockedFor("10.0.0.6"), 0)  # others unaffected
        auth.succeeded("10.0.0.5")
        self.assertEqual(auth.failed("10.0.0.5"), 0.5)
        clock.advance(601)  # long after: forgotten
        self.assertEqual(auth.failed("10.0.0.5"), 0.5)

    def test_memory_bounded(self) -> None:
        clock = task.Clock()
        auth = AuthBackoff(clock.seconds, 0.5, 10.0, capacity=100)
        for i in range(5000):
            auth.failed(f"10.0.{i >> 8}.{i & 255}")
        self.assertEqual(len(auth), 100)
        clock.advance(700)
        auth.failed("192.168.0.1")
        auth.failed("192.168.0.2")
        self.assertLessEqual(len(auth), 100 - 2)


class ServerAdmissionTests(ChatTestCase):
    """Through ChatFactory/ChatProtocol on in-memory transports."""

    config = {**PUBLIC, "limit_exempt": parseNetworks("none"), "connect_rate": 0}

    def test_slot_hogger_refused_newcomer_joins(self) -> None:
        hog = [self.server.connect("10.0.0.5") for _ in range(20)]
        self.assertFalse(any(p.closing for p in hog))
        extra = self.server.connect("10.0.0.5")
        [(ftype, payload)] = extra.received()
        self.assertEqual(ftype, T.ERROR)
        self.assertTrue(
            payload.startswith(b"SERVER_FULL.too many connections from 10.0.0.5")
        )
        self.assertIn(b"(max-per-ip 20)", payload)
        self.assertTrue(extra.closing)
        extra.lose()
        newcomer = self.server.connect("10.0.0.6")
        newcomer.send(T.HELLO, b"new")
        self.assertEqual(newcomer.types(), [T.WELCOME])
        self.assertEqual(self.server.factory.perAddress.counts["10.0.0.5"], 20)

    def test_refusals_logged_bounded(self) -> None:
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for _ in range(20):
            self.server.connect("10.0.0.5")
        for _ in range(500):
            self.server.connect("10.0.0.5").lose()
        refused = [e for e in events if "refused" in e.get("log_format", "")]
        self.assertEqual(len(refused), 5)
        self.server.clock.advance(10)
        summaries = [e for e in events if e.get("kind", "").startswith("connections")]
        self.assertEqual(len(summaries), 1)
        self.assertEqual(
            summaries[0]["summary"],
            "495 connections from 10.0.0.5 refused (max-per-ip) in the last 10 s",
        )


class LoginBackoffTests(ChatTestCase):
    config = {
        **PUBLIC,
        "limit_exempt": parseNetworks("none"),
        "connect_rate": 0,
        "password": b"secret",
    }

    def guess(self, host: str = "10.0.0.5", password: bytes = b"wrong"):
        peer = self.server.connect(host)
        peer.send(T.HELLO, b"bob." + password)
        return peer

    def test_wrong_password_answered_late(self) -> None:
        peer = self.guess()
        self.assertEqual(peer.received(), [])
        self.assertFalse(peer.closing)
        self.server.clock.advance(0.49)
        self.assertEqual(peer.received(), [])
        self.server.clock.advance(0.01)
        self.assertOnlyError(peer, "AUTH_FAILED", fatal=True)

    def test_locked_address_not_checked_others_unaffected(self) -> None:
        """While locked, the address's HELLOs are refused at once, even the
        right password; another address logs in at once."""
        self.guess()
        locked = self.guess(password=b"secret")
        [(ftype, payload)] = locked.received()
        self.assertEqual(ftype, T.ERROR)
        self.assertTrue(payload.startswith(b"AUTH_FAILED.too many failed logins"))
        self.assertIn(b"password not checked", payload)
        other = self.guess("10.0.0.6", b"secret")
        self.assertEqual(other.types(), [T.WELCOME])

    def test_delay_grows_capped_and_success_resets(self) -> None:
        clock = self.server.clock
        waits = []
        for _ in range(7):
            peer = self.guess()
            waited = 0.0
            while not peer.closing:
                clock.advance(0.25)
                waited += 0.25
            waits.append(waited)
        self.assertEqual(waits, [0.5, 1, 2, 4, 8, 10, 10])
        clock.advance(10)
        ok = self.guess(password=b"secret")
        self.assertEqual(ok.types(), [T.WELCOME])
        again = self.guess()
        clock.advance(0.5)
        self.assertOnlyError(again, "AUTH_FAILED", fatal=True)

    def test_guesses_checked_bounded(self) -> None:
        """A guesser opening a connection every 10 ms for 60 s gets at most
        one password checked per delay: a handful, not 6,000."""
        clock = self.server.clock
        checked = 0
        for _ in range(6000):
            peer = self.guess()
            frames = peer.received()
            if not frames:  # checked: its answer comes late
                checked += 1
            peer.lose()
            clock.advance(0.01)
        self.assertLessEqual(checked, 10)
        # Nothing waits but the log summaries: no late answer for a gone peer.
        pending = [c for c in clock.getDelayedCalls() if c.active()]
        self.assertEqual(len(pending), self.server.factory.admission.logs.pending())

    def test_hang_up_while_waiting(self) -> None:
        """A guesser that hangs up leaves no timer and no slot behind."""
        peer = self.guess()
        peer.lose()
        self.assertEqual(self.server.clock.getDelayedCalls(), [])
        self.assertEqual(dict(self.server.factory.perAddress.counts), {})

    def test_pipelined_frames_after_wrong_password_dropped(self) -> None:
        peer = self.server.connect("10.0.0.5")
        peer.sendRaw(encode(T.HELLO, b"bob.x") + encode(T.READY))
        peer.send(T.WHO)
        self.server.clock.advance(0.5)
        self.assertOnlyError(peer, "AUTH_FAILED", fatal=True)

    def test_exempt_not_delayed(self) -> None:
        self.server.factory.applyConfig(Config(**{**PUBLIC, "password": b"secret"}))
        peer = self.guess("127.0.0.1")
        self.assertOnlyError(peer, "AUTH_FAILED", fatal=True)
        peer = self.guess("127.0.0.1", b"secret")
        self.assertEqual(peer.types(), [T.WELCOME])


class ServerDefaultsTests(SynchronousTestCase):
    def test_in_process_config_unlimited(self) -> None:
        """Config() (tests, tools) keeps the limits off: 100 from one host."""
        server = Server()
        peers = [server.connect("10.0.0.5") for _ in range(100)]
        self.assertFalse(any(p.closing for p in peers))


class ReloadTests(SynchronousTestCase):
    def test_reload_applies_limits(self) -> None:
        """applyConfig (SIGHUP, /reload) takes new per-address limits."""
        config = {**PUBLIC, "limit_exempt": parseNetworks("none")}
        server = Server(**config)
        server.connect("10.0.0.5")
        self.assertFalse(server.connect("10.0.0.5").closing)
        server.factory.applyConfig(Config(**{**config, "max_per_ip": 2}))
        self.assertTrue(server.connect("10.0.0.5").closing)
        server.factory.applyConfig(
            Config(
                **{
                    **config,
                    "max_per_ip": 2,
                    "limit_exempt": parseNetworks("10.0.0.0/8"),
                }
            )
        )
        self.assertFalse(server.connect("10.0.0.5").closing)

    def test_pending_summaries_written_at_stop(self) -> None:
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        server = Server(
            **{**PUBLIC, "limit_exempt": parseNetworks("none"), "max_per_ip": 1}
        )
        server.connect("10.0.0.5")
        for _ in range(10):
            server.connect("10.0.0.5").lose()
        server.factory.stopFactory()
        self.assertIn("5 connections from 10.0.0.5", events[-1].get("summary", ""))
        self.assertEqual(server.factory.admission.logs.pending(), 0)
