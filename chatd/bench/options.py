"""The command line: chatd-bench's options, checked, and the run they ask for.

Bad values are usage errors (exit status 2) raised by argparse itself, so
every one reads ``--option: 'value': must be ...``; :func:`configFrom`
turns the parsed options into a :class:`chatd.bench.config.Config`.
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Callable

from chatd.bench.config import Config
from chatd.bench.errors import EXIT_STATUSES, EXIT_USAGE, BenchError
from chatd.secretfile import readPassword


def hostPorts(text: str) -> list[tuple[str, int]]:
    """``HOST[:PORT],HOST[:PORT]...`` for argparse."""
    return [hostPort(part) for part in text.split(",")]


def hostPort(text: str) -> tuple[str, int]:
    """``HOST[:PORT]`` (port 7777) for argparse."""
    host, _, port = text.rpartition(":")
    if not host:
        return text, 7777
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"bad port {port!r}: must be 1 to 65535")
    return host, int(port)


def _number(kind: type, least: float, what: str) -> Callable[[str], float]:
    """An argparse type: ``kind`` at least ``least`` (a usage error otherwise)."""

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < least or value != value:
            raise argparse.ArgumentTypeError(f"{text!r}: must be {what}")
        return value

    return convert


positive = _number(int, 1, "at least 1")
natural = _number(int, 0, "0 or more")
seconds = _number(float, 0.001, "more than 0")


class _Help(argparse.RawDescriptionHelpFormatter):
    """Shows each real default; keeps the epilog's lines as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and (
            "(default" not in text
        ):
            text += " (default: %(default)s)"
        return text


def parser() -> argparse.ArgumentParser:
    epilog = (
        "Benchmark a server started with --rate-limit 0: chatd-bench stops at\n"
        "the first RATE_LIMITED, since a rate-limited run measures the limit.\n\n"
        + EXIT_STATUSES
    )
    p = argparse.ArgumentParser(
        prog="chatd-bench",
        description="Stress and benchmark a chatd server; checks every byte.",
        epilog=epilog,
        formatter_class=_Help,
    )
    sub = p.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "server",
        type=hostPorts,
        help="HOST[:PORT] (port 7777); several, comma-separated, spread the "
        "connections over them in turn (the nodes of one cluster)",
    )
    common.add_argument(
        "--duration", type=seconds, default=5.0, metavar="S", help="seconds of load"
    )
    common.add_argument(
        "--setup-timeout",
        type=seconds,
        default=15.0,
        metavar="S",
        help="seconds for every connection to be made and its user ACTIVE",
    )
    common.add_argument(
        "--seed", type=int, default=None, help="random seed (default: random)"
    )
    common.add_argument(
        "--processes",
        type=positive,
        default=1,
        metavar="K",
        help="spread the load over K processes",
    )
    secret = common.add_mutually_exclusive_group()
    secret.add_argument(
        "--password-file",
        default=None,
        metavar="FILE",
        help="file whose first line is the server password",
    )
    secret.add_argument(
        "--password",
        default=None,
        help="server password (visible to other users: prefer --password-file)",
    )
    common.add_argument("--json", action="store_true", help="print one JSON object")
    common.add_argument(
        "--progress",
        choices=("auto", "bar", "lines", "off"),
        default="auto",
        help="live progress on stderr (auto: a bar when stderr is a tty)",
    )

    def mode(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, parents=[common], help=help, formatter_class=_Help, epilog=epilog
        )

    e = mode("echo", "ECHO round trips")
    e.add_argument("--connections", type=positive, default=10, help="connections")
    e.add_argument("--depth", type=positive, default=1, help="requests in flight each")
    e.add_argument(
        "--split", action="store_true", help="send frames cut at random bytes"
    )
    e.add_argument("--ping", action="store_true", help="mix PING/PONG with ECHO")
    e.add_argument(
        "--no-handshake",
        action="store_true",
        help="echo before the handshake (runs end at the server's handshake timeout)",
    )
    f = mode("fanout", "SAY -> MESSAGE broadcast")
    f.add_argument("--receivers", type=natural, default=10, help="users that only read")
    f.add_argument(
        "--senders",
        type=natural,
        default=1,
        help="users that SAY (0: idle receivers only, for memory figures)",
    )
    f.add_argument("--size", type=positive, default=64, help="SAY text bytes")
    f.add_argument(
        "--window", type=positive, default=16, help="unacknowledged per sender"
    )
    f.add_argument(
        "--rate",
        type=seconds,
        default=None,
        help="open loop: messages/s per sender (default: closed loop)",
    )
    f.add_argument(
        "--rooms",
        type=natural,
        default=0,
        metavar="N",
        help="protocol 1.2: user k enters room r{k mod N} and senders ROOM_SAY "
        "there, one order per room (0: everyone in the default room, 1.1)",
    )
    return p


def configFrom(args: argparse.Namespace) -> Config:
    """The run the options ask for; a usage BenchError if the password
    file cannot be read."""
    (host, port), *also = args.server
    seed = args.seed if args.seed is not None else secrets.randbelow(1 << 31)
    password = args.password
    if args.password_file is not None:
        try:
            raw = readPassword(args.password_file)
        except ValueError as e:
            raise BenchError(f"--password-file: {e}", EXIT_USAGE) from None
        password = raw.decode("utf-8", "surrogateescape")
    config = Config(
        mode=args.mode,
        host=host,
        port=port,
        duration=args.duration,
        seed=seed,
        tag="b" + secrets.token_hex(3),
        password=password,
        setupTimeout=args.setup_timeout,
        also=[list(target) for target in also],
    )
    if args.mode == "echo":
        config.connections, config.depth = args.connections, args.depth
        config.split, config.ping = args.split, args.ping
        config.handshake = not args.no_handshake
    else:
        config.receivers, config.senders = args.receivers, args.senders
        config.size, config.window, config.rate = args.size, args.window, args.rate
        config.rooms = args.rooms
    return config
