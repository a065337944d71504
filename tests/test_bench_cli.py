"""chatd-bench's command line and messages, without sockets."""

from __future__ import annotations

import contextlib
import io
from collections import Counter

from twisted.trial import unittest

from chatd.bench.config import secret
from chatd.bench.errors import (
    EXIT_SETUP,
    EXIT_USAGE,
    BenchError,
    mergeErrors,
    setupError,
)
from chatd.bench.options import configFrom, parser
from chatd.bench.order import orderDisagreements
from chatd.bench.report import header


def parse(*argv: str) -> tuple[int | None, str]:
    """(exit status or None, stderr) of parsing ``argv``."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser().parse_args(list(argv))
        except SystemExit as e:
            return e.code, err.getvalue()  # type: ignore[return-value]
    return None, err.getvalue()


class ErrorFormattingTests(unittest.SynchronousTestCase):
    def test_refusals_summarised(self):
        """Many users refused for one reason make one line, with what to do."""
        failures = Counter(
            {("refused", "SERVER_FULL too many connections from 127.0.0.1"): 12}
        )
        e = setupError(failures, "users", 20)
        self.assertEqual(
            e.message,
            "12 users refused: SERVER_FULL too many connections from 127.0.0.1 "
            "(raise the server's --max-clients/--max-per-ip or use fewer users)",
        )
        self.assertEqual(e.status, EXIT_SETUP)
        self.assertNotIn("\n", e.message)

    def test_several_reasons_biggest_first(self):
        failures = Counter(
            {
                ("refused", "AUTH_FAILED wrong or missing password"): 1,
                ("not active after 15 s (--setup-timeout)", ""): 4,
            }
        )
        self.assertEqual(
            setupError(failures, "connections", 5).message,
            "4 connections not active after 15 s (--setup-timeout); "
            "1 connection refused: AUTH_FAILED wrong or missing password "
            "(give the server's password with --password-file)",
        )

    def test_everyone_failed_alike_says_it_once(self):
        why = "cannot connect to 127.0.0.1:1: connection refused"
        e = setupError(Counter({("failed", why): 10}), "connections", 10)
        self.assertEqual(e.message, why)

    def test_processes_add_up(self):
        """The counts of several load processes are summed, through JSON."""
        reason = ("refused", "AUTH_FAILED wrong or missing password")
        parts = [
            BenchError.fromJSON(setupError(Counter({reason: n}), "users", 7).toJSON())
            for n in (3, 4)
        ]
        merged = mergeErrors(parts, "users", 7)
        self.assertTrue(merged.message.startswith("7 users refused: AUTH_FAILED"))
        self.assertEqual(merged.failures, Counter({reason: 7}))

    def test_other_errors_kept(self):
        merged = mergeErrors([RuntimeError("boom")], "users", 1)
        self.assertEqual((merged.message, merged.status), ("boom", 1))


class OrderCheckTests(unittest.SynchronousTestCase):
    def test_disagreements_per_checkpoint(self):
        """Users of two load processes: one saw a different order by message
        1000; one had not got that far (no checkpoint, no verdict)."""
        parts = [
            {"500:11": 3, "1000:22": 3},
            {"500:11": 2, "1000:23": 1, "1000:22": 1},
        ]
        self.assertEqual(orderDisagreements(parts), 1)
        self.assertEqual(orderDisagreements([{"500:1": 4}, {"500:1": 1}]), 0)

    def test_several_addresses(self):
        config = configFrom(parser().parse_args(["fanout", "a:1,b,c:3"]))
        self.assertEqual(config.targets, [("a", 1), ("b", 7777), ("c", 3)])
        self.assertEqual(
            header(config, 1).split(": ")[0], "chatd-bench fanout -> a:1, b:7777, c:3"
        )


class CommandLineTests(unittest.SynchronousTestCase):
    def test_zero_connections_is_a_usage_error(self):
        status, err = parse("echo", "127.0.0.1:1", "--connections", "0")
        self.assertEqual(status, EXIT_USAGE)
        self.assertIn("--connections: '0': must be at least 1", err)

    def test_bad_numbers(self):
        for argv in (
            ("fanout", "h", "--senders", "-1"),
            ("fanout", "h", "--window", "x"),
            ("echo", "h", "--duration", "0"),
            ("echo", "h", "--setup-timeout", "-1"),
            ("echo", "h:99999"),
        ):
            self.assertEqual(parse(*argv)[0], EXIT_USAGE, argv)

    def test_zero_senders_is_allowed(self):
        """Idle receivers only: what the suite's memory figure uses."""
        args = parser().parse_args(["fanout", "h", "--senders", "0"])
        self.assertEqual(args.senders, 0)

    def test_help_shows_defaults_and_exit_statuses(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), self.assertRaises(SystemExit):
            parser().parse_args(["fanout", "--help"])
        text = out.getvalue()
        for expected in (
            "--setup-timeout S",
            "(default: 15.0)",
            "(default: 16)",
            "--password-file FILE",
            "--rate-limit 0",
            "130  interrupted",
        ):
            self.assertIn(expected, text)
        self.assertNotIn("(default: None)", text)

    def test_password_file(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"s\xe9cret\n")
        args = parser().parse_args(["echo", "h", "--password-file", path])
        config = configFrom(args)
        self.assertEqual(secret(config.password or ""), b"s\xe9cret")

    def test_password_file_missing(self):
        args = parser().parse_args(["echo", "h", "--password-file", "/nonexistent"])
        with self.assertRaises(BenchError) as caught:
            configFrom(args)
        self.assertEqual(caught.exception.status, EXIT_USAGE)
        self.assertIn(
            "--password-file: cannot read /nonexistent", str(caught.exception)
        )

    def test_header(self):
        args = parser().parse_args(
            ["fanout", "::1:7000", "--senders", "2", "--receivers", "1", "--seed", "3"]
        )
        self.assertEqual(
            header(configFrom(args), 2),
            "chatd-bench fanout -> [::1]:7000: 2 senders + 1 receiver, 64 B SAYs, "
            "window 16, 5 s, 2 processes, seed 3",
        )
