"""Options and configuration: every bad value is one line, in words."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stdout

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from chatd import __version__
from chatd.server.config import (
    Options,
    build,
    checkTwistdPaths,
    isLocal,
    unknownVariables,
)


class OptionsTests(SynchronousTestCase):
    def exitLine(self, *args: str) -> str:
        """What parsing ``args`` exits with (its first line)."""
        with self.assertRaises(SystemExit) as caught:
            Options(environ={}).parseOptions(list(args))
        message = str(caught.exception.code)
        self.assertEqual(message.splitlines()[1:], ["see twistd chatd --help"])
        return message.splitlines()[0]

    def test_words_not_python(self) -> None:
        cases = {
            ("--max-clients", "abc"): "--max-clients: must be a whole number of "
            "at least 1, not 'abc'",
            ("--max-per-ip", "-1"): "--max-per-ip: must be a whole number, 0 or "
            "more, not '-1'",
            ("--idle-timeout", "nan"): "--idle-timeout: must be a number of "
            "seconds, 0 or more, not 'nan'",
            ("--max-backlog", "KiB"): "--max-backlog: must be a size such as "
            "65536, 64KiB or 1MiB, not 'KiB'",
            ("--listen", "tcp:"): "--listen: bad endpoint tcp:: a number is missing",
            ("--listen", "tcp:99999"): "--listen: bad endpoint tcp:99999: the port "
            "must be 0 to 65535",
            ("--listen", "unix:"): "--listen: bad endpoint unix:: no socket path",
            ("--listen", "foo:1"): "--listen: bad endpoint foo:1: unknown endpoint "
            "type (use tcp, tcp6, ssl, unix or systemd)",
            ("--listen", "tcp:1", "--listen", "tcp:1"): "--listen: the same "
            "endpoint is given twice",
        }
        for args, line in cases.items():
            self.assertEqual(self.exitLine(*args), "chatd: " + line)

    def test_version(self) -> None:
        out = io.StringIO()
        with redirect_stdout(out), self.assertRaises(SystemExit) as caught:
            Options(environ={}).parseOptions(["--version"])
        self.assertEqual(caught.exception.code, 0)
        self.assertEqual(out.getvalue(), f"chatd {__version__}\n")

    def test_twistd_paths(self) -> None:
        """A log or pid file in a missing directory is refused up front."""
        missing = os.path.abspath(self.mktemp())
        checkTwistdPaths({"logfile": "-", "pidfile": ""})
        with self.assertRaises(usage.UsageError) as caught:
            checkTwistdPaths({"pidfile": f"{missing}/chatd.pid"})
        self.assertEqual(
            str(caught.exception),
            f"--pidfile: directory {missing} does not exist "
            f"(create it first: mkdir -p {missing})",
        )
        with self.assertRaises(usage.UsageError) as caught:
            build({"port-file": f"{missing}/ports"}, {})
        self.assertTrue(str(caught.exception).startswith("--port-file: directory"))

    def test_unknown_variables(self) -> None:
        environ = {"CHATD_MAX_CLIENT": "5", "CHATD_LISTEN": "tcp:1", "HOME": "/"}
        self.assertEqual(unknownVariables(environ), ["CHATD_MAX_CLIENT"])
        self.assertEqual(build({}, environ).listen, ("tcp:1",))

    def test_is_local(self) -> None:
        local = ["tcp:1:interface=127.0.0.1", "tcp6:1:interface=\\:\\:1", "unix:/x"]
        public = ["tcp:1", "tcp:1:interface=0.0.0.0", "ssl:1:privateKey=k.pem"]
        self.assertEqual([isLocal(d) for d in local], [True] * 3)
        self.assertEqual([isLocal(d) for d in public], [False] * 3)


class DescribeErrorTests(SynchronousTestCase):
    def test_in_words(self) -> None:
        """Bind errors read as words, with no errno or bytes reprs."""
        import errno

        from twisted.internet.error import CannotListenError

        from chatd.server.errors import describeError

        def bind(code: int, text: str) -> CannotListenError:
            return CannotListenError("", 80, OSError(code, text))

        lock = FileNotFoundError(errno.ENOENT, "No such file", "1", None, b"/x/s.lock")
        cases = [
            (bind(errno.EADDRINUSE, "Address already in use"), "address already in use (is another chatd running?)"),
            (bind(errno.EACCES, "Permission denied"), "permission denied (a port below 1024 needs root: start as root with --uid and --gid)"),
            (PermissionError(errno.EACCES, "Permission denied", "/run/c.sock"), "permission denied: /run/c.sock"),
            (lock, "no such file: /x/s.lock"),
            (OverflowError("bind(): port must be 0-65535."), "the port must be 0 to 65535"),
        ]  # fmt: skip
        for error, text in cases:
            self.assertEqual(describeError(error), text)


class RoomOptionsTests(SynchronousTestCase):
    """Protocol 1.2's room options: --room is repeatable, CHATD_ROOM is
    ';'-separated, bad names and topics are one line."""

    def parse(self, argv: list[str], environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        options = Options(environ or {})
        options.parseOptions(argv)
        return options.config

    def test_rooms(self) -> None:
        config = self.parse(["--room", "news:daily news", "--room", "dev"])
        self.assertEqual(config.rooms, (("news", "daily news"), ("dev", "")))
        self.assertEqual(
            (config.default_room, config.max_rooms_per_user), ("lobby", 20)
        )
        config = self.parse(
            [], {"CHATD_ROOM": "a:one; b", "CHATD_DEFAULT_ROOM": "hall"}
        )
        self.assertEqual(config.rooms, (("a", "one"), ("b", "")))
        self.assertEqual(config.default_room, "hall")

    def test_bad_rooms(self) -> None:
        for argv in (["--room", "bad name"], ["--room", "a:\x1b"], ["--max-rooms", "0"],
                     ["--default-room", ""]):  # fmt: skip
            with self.assertRaises(SystemExit) as caught:
                self.parse(argv)
            self.assertIn(argv[0], str(caught.exception))
