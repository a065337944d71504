"""chatd-client's command line: ``chatd-client [HOST[:PORT]] [--name NAME] ...``.

What is left here is the program: the argument parser, the checks that turn
arguments into settings (a bad one is a :class:`UsageError`, exit status 2),
the TLS trust root, and :func:`run`, which builds the
:class:`~chatd.client.console.Console`, the
:class:`~chatd.client.session.Session` and the connector on the real
reactor and runs them.  :func:`main` (the console script) puts a terminal in
raw mode around it.

On a terminal a small line editor keeps the user's partial input intact
while messages arrive.  With stdin not a terminal, the client is a filter:
lines in are SAYs (sent at the server's pace, each refused one reported by
line number), messages out are plain lines, and at end of input it waits
until every line was delivered or refused before it says BYE, so
``printf 'hi\\n' | chatd-client --name bot`` works; the exit status says
whether all of them got through.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from twisted.internet import error

from chatd import __version__
from chatd.client.connection import UsageError, connector, parse_address
from chatd.client.console import Console, RawTerminal
from chatd.client.session import KEEPALIVE, Session
from chatd.secretfile import readPassword
from chatd.wire import valid_name

DEFAULT_SERVER = "localhost:7777"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="chatd-client",
        description="Chat through a chatd server. On a terminal: type to chat, "
        "/help for commands. On a pipe: each input line is said, messages are "
        "printed one per line.",
    )
    p.add_argument(
        "server",
        nargs="?",
        help=f"HOST[:PORT] or [IPv6]:PORT (default: $CHATD_SERVER or {DEFAULT_SERVER})",
    )
    p.add_argument("--name", help="your chat name (asked for on a terminal if absent)")
    p.add_argument(
        "--password-file", help="file whose first line is the server password"
    )
    p.add_argument(
        "--tls", action="store_true", help="connect with TLS, verifying the server"
    )
    p.add_argument(
        "--ca", metavar="FILE", help="trust this CA certificate (PEM) for --tls"
    )
    p.add_argument(
        "--reconnect",
        action="store_true",
        help="reconnect with backoff when the connection is lost",
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="do not resume the session after a dropped connection (protocol 1.2)",
    )
    p.add_argument("--no-color", action="store_true", help="no ANSI colours")
    p.add_argument("--version", action="version", version=f"chatd-client {__version__}")
    p.add_argument("--keepalive", type=float, default=KEEPALIVE, help=argparse.SUPPRESS)
    return p  # fmt: skip


def _loadTrust(ca: str | None) -> object:
    """The trust root for --tls: the --ca certificate, else the system's CAs."""
    from OpenSSL import crypto
    from twisted.internet import ssl

    if ca is None:
        return ssl.platformTrust()
    try:
        with open(ca, "rb") as f:
            return ssl.Certificate.loadPEM(f.read())
    except OSError as e:
        raise UsageError(f"--ca: cannot read {ca}: {e.strerror}") from None
    except (crypto.Error, ValueError):
        raise UsageError(f"--ca: {ca} holds no PEM certificate") from None


def _setup(argv: list[str]) -> dict:
    args = _parser().parse_args(argv)
    server = args.server or os.environ.get("CHATD_SERVER") or DEFAULT_SERVER
    host, port = parse_address(server)
    interactive = os.isatty(0)
    if args.name is not None and not valid_name(args.name.encode("ascii", "replace")):
        raise UsageError(
            f"--name: {args.name!r} is not a name (1 to 32 ASCII letters, digits, _ or -)"
        )
    if args.name is None and not interactive:
        raise UsageError("--name is required when stdin is not a terminal")
    if args.ca is not None and not args.tls:
        raise UsageError("--ca needs --tls")
    if not args.keepalive > 0:
        raise UsageError("--keepalive must be a positive number of seconds")
    password = None
    if args.password_file is not None:
        try:
            password = readPassword(args.password_file)
        except ValueError as e:
            raise UsageError(f"--password-file: {e}") from None
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    color = (
        interactive
        and os.isatty(1)
        and not args.no_color
        and "NO_COLOR" not in os.environ
        and os.environ.get("TERM") != "dumb"
    )
    return dict(
        host=host,
        port=port,
        address=address,
        name=args.name,
        password=password,
        tls=args.tls,
        trust=_loadTrust(args.ca) if args.tls else None,
        reconnect=args.reconnect,
        resume=not args.no_resume,
        keepalive=args.keepalive,
        interactive=interactive,
        color=color,
    )


def _stop(_: object, reactor: Any) -> None:
    try:
        reactor.stop()
    except error.ReactorNotRunning:  # already stopping (SIGTERM)
        pass


def run(settings: dict) -> int:
    """Run the chat in the reactor until the session ends; the exit status."""
    from twisted.internet import reactor as _reactor
    from twisted.internet.stdio import StandardIO

    reactor: Any = _reactor
    connect = connector(reactor, settings["host"], settings["port"], settings["trust"])
    console = Console(settings["interactive"], settings["color"])
    session = Session(
        reactor,
        console,
        connect,
        settings["address"],
        settings["name"],
        password=settings["password"],
        tls=settings["tls"],
        reconnect=settings["reconnect"],
        keepalive=settings["keepalive"],
        resume=settings["resume"],
    )
    session.done.addBoth(_stop, reactor)
    reactor.addSystemEventTrigger("before", "shutdown", session.shutdown)

    def started() -> None:
        signal.signal(signal.SIGINT, lambda *_: reactor.callFromThread(session.quit))
        if settings["interactive"]:
            signal.signal(
                signal.SIGWINCH, lambda *_: reactor.callFromThread(console.resized)
            )
        StandardIO(console)
        session.start()

    reactor.callWhenRunning(started)
    reactor.run()
    return 1 if session.exitCode is None else session.exitCode


def main(argv: list[str] | None = None) -> None:
    """Console entry point: ``chatd-client [HOST[:PORT]] [--name NAME] ...``."""
    try:
        settings = _setup(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        sys.stderr.write(f"chatd-client: {e} (see --help)\n")
        sys.exit(2)
    if settings["interactive"]:
        with RawTerminal(0):
            try:
                code = run(settings)
            finally:
                for fd in (0, 1):
                    os.set_blocking(fd, True)
        sys.stdout.write("\n" if code == 0 else "")
    else:
        code = run(settings)
    sys.exit(code)


if __name__ == "__main__":
    main()
