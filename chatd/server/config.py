"""Configuration: command line, then ``CHATD_<NAME>`` environment, then default.

:class:`Options` is what ``twistd chatd --help`` shows; :func:`fromEnvironment`
builds the same :class:`Config` for ``chatd.tac``.  Every bad value is a
:class:`usage.UsageError` that names the option and says what is wanted;
on the command line :class:`Options` prints it as one line (twistd would
print its whole usage first) and exits 1.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.python import usage

from chatd import __version__
from chatd.secretfile import readPassword
from chatd.server.admission import DEFAULT_EXEMPT, connectionsPerSecond, parseNetworks
from chatd.server.errors import describeError
from chatd.web import options as _web

DEFAULT_LISTEN = "tcp:7777"


@dataclass(frozen=True)
class Config:
    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    max_clients: int = 1000
    idle_timeout: float = 30.0
    handshake_timeout: float = 10.0
    max_backlog: int = 1 << 20
    password_file: str | None = None
    password: bytes | None = field(default=None, repr=False)
    stats_interval: float = 1.0
    shutdown_grace: float = 5.0
    rate_limit: float = 0.0
    rate_burst: int = 10
    max_per_ip: int = 0
    admin: str | None = None
    admin_token_file: str | None = None
    admin_token: bytes | None = field(default=None, repr=False)
    port_file: str | None = None
    env_file: str | None = None
    # chatd.web (the browser front end)
    web: str | None = None
    web_origin: tuple[str, ...] | None = None
    web_trust_proxy: frozenset[str] | None = None
    # Abuse limits (docs/limits.md).  The daemon's defaults are in PARAMETERS;
    # these in-process defaults leave them off, as before.
    connect_rate: float = 0.0
    connect_burst: int = 20
    limit_exempt: tuple = parseNetworks("none")
    auth_backoff: float = 0.0
    auth_backoff_max: float = 10.0
    log_summary: float = 0.0
    log_keep: int = 0
    # -- cluster (chatd.cluster, --redis): the PARAMETERS at the end --
    redis: str | None = field(default=None, repr=False)  # may hold a password
    redis_password_file: str | None = None
    node_name: str | None = None
    node_ttl: float = 10.0
    # --workers (chatd.cluster)
    workers: int = 1
    max_clients_per_worker: int = 1000
    worker_idle_exit: float = 60.0
    min_workers: int = 1


def _whole(value: str, least: int, rule: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(rule) from None
    if number < least:
        raise ValueError(rule)
    return number


def _positiveInt(value: str) -> int:
    return _whole(value, 1, "must be a whole number of at least 1")


def _count(value: str) -> int:
    return _whole(value, 0, "must be a whole number, 0 or more")


def _number(value: str, rule: str) -> float:
    """A finite number below 1e9 and not negative, else ``rule``."""
    try:
        number = float(value)
    except ValueError:
        raise ValueError(rule) from None
    if not (0 <= number < 1e9):  # also refuses nan and inf
        raise ValueError(rule)
    return number


def _rate(value: str) -> float:
    return _number(value, "must be a number of messages per second, 0 or more")


def _seconds(value: str) -> float:
    return _number(value, "must be a number of seconds, 0 or more")


_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20}
_SIZE_RULE = "must be a size such as 65536, 64KiB or 1MiB"


def _bytes(value: str) -> int:
    """A size in bytes, optionally with K/KiB or M/MiB."""
    text = value.strip().lower()
    digits = text.rstrip("kimb")
    unit = text[len(digits) :]
    if unit not in _UNITS or not digits.isdigit():
        raise ValueError(_SIZE_RULE)
    number = int(digits) * _UNITS[unit]
    if number < 65536:
        # Twisted's transport pauses its producer at 64 KiB: a smaller limit
        # could not be enforced exactly.
        raise ValueError("must be at least 64KiB")
    return number


def _cluster(name: str) -> Callable[[str], object]:
    """A parser from chatd.cluster.options, imported only when the option is
    given: without --redis nothing of the cluster is imported."""

    def parse(value: str) -> object:
        from chatd.cluster import options

        return getattr(options, name)(value)

    return parse


# name -> (parser, default, help).  The option is --name, the variable
# CHATD_NAME with dashes as underscores.
PARAMETERS: dict[str, tuple[Callable[[str], object], object, str]] = {
    "max-clients": (_positiveInt, 1000, "Most TCP connections at once."),
    "idle-timeout": (_seconds, 30.0, "Seconds without input before a user is cut off (0 = never)."),
    "handshake-timeout": (_seconds, 10.0, "Seconds to reach ACTIVE after connecting (0 = never)."),
    "max-backlog": (_bytes, 1 << 20, "Bytes held for one slow reader before it is cut off."),
    "password-file": (str, None, "File whose first line is the server password."),
    "stats-interval": (_seconds, 1.0, "Seconds between stats log lines (0 = off)."),
    "shutdown-grace": (_seconds, 5.0, "Seconds to let output drain when stopping."),
    "rate-limit": (_rate, 10.0, "SAY/WHISPER per second per user, beyond it RATE_LIMITED (0 = off)."),
    "rate-burst": (_positiveInt, 30, "Messages a user may send at once before --rate-limit applies."),
    "max-per-ip": (_count, 20, "Most connections at once from one address outside --limit-exempt (0 = no limit)."),
    "admin": (str, None, "Endpoint of the HTTP admin interface, e.g. tcp:7779:interface=127.0.0.1 (off by default)."),
    "admin-token-file": (str, None, "File whose first line is the admin bearer token."),
    "port-file": (str, None, "File chatd writes its listening addresses to once it accepts (useful with port 0)."),
    "env-file": (str, None, "File of CHATD_<OPTION>=value lines, read at start and on every reload (SIGHUP)."),
    # chatd.web (the browser front end)
    "web": (_web.endpoint, None, "Endpoint of the web page and its WebSocket (/ws), e.g. tcp:8080 (off by default)."),
    "web-origin": (_web.origins, None, "Origins whose pages may open the WebSocket, comma-separated (default: the page's own)."),
    "web-trust-proxy": (_web.proxies, None, "Addresses of reverse proxies whose X-Forwarded-For is believed."),
    "connect-rate": (connectionsPerSecond, 5.0, "New connections per second from one address outside --limit-exempt (0 = no limit)."),
    "connect-burst": (_positiveInt, 20, "New connections one address may open at once before --connect-rate applies."),
    "limit-exempt": (parseNetworks, parseNetworks(DEFAULT_EXEMPT), "Comma-separated networks the per-address limits and login backoff spare ('none' = nobody)."),
    "auth-backoff": (_seconds, 0.5, "Seconds the first AUTH_FAILED from an address is delayed, doubling per further failure (0 = off)."),
    "auth-backoff-max": (_seconds, 10.0, "Longest AUTH_FAILED delay (--auth-backoff doubles up to it)."),
    "log-summary": (_seconds, 10.0, "Refusals, login failures and protocol errors: a few lines, then one summary per kind per this many seconds (0 = every line)."),
    "log-keep": (_count, 10, "Rotated twistd log files kept (0 = all, as twistd does)."),
    # -- cluster (chatd.cluster; docs/cluster.md) --
    "redis": (_cluster("checkRedisURL"), None, "Join the cluster through Redis: redis://host:port/db, rediss:// (TLS) or unix://path (off by default)."),
    "redis-password-file": (_cluster("passwordFile"), None, "File whose first line is the Redis password (instead of one in the URL)."),
    "node-name": (_cluster("nodeName"), None, "This node's name in the cluster [default: host name:first listen port]."),
    "node-ttl": (_cluster("ttl"), 10.0, "Seconds after which a silent node is declared gone and its users leave."),
    # --workers (chatd.cluster; docs/workers.md)
    "workers": (lambda v: _workers(v), 1, "Worker processes to spread clients over, at most; 'auto' = one per core (1 = one process)."),
    "max-clients-per-worker": (_positiveInt, 1000, "Most clients one worker process serves (with --workers above 1)."),
    "worker-idle-exit": (_seconds, 60.0, "Seconds a worker with no clients lives on before it exits (never the last one)."),
    "min-workers": (_positiveInt, 1, "Workers started at once and kept while idle (at most --workers): clients spread over them from the first."),
}  # fmt: skip


def _workers(value: str) -> int:
    """--workers: a count, or ``auto`` for one per core."""
    if value.strip().lower() == "auto":
        return os.cpu_count() or 1
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError("must be a whole number of at least 1, or auto")
    return int(value)


def envName(option: str) -> str:
    return "CHATD_" + option.upper().replace("-", "_")


#: Every CHATD_ variable chatd reads.
KNOWN_VARIABLES = frozenset(
    {envName(name) for name in PARAMETERS} | {envName("listen")}
)

HELP_HINT = "see twistd chatd --help"


class Options(usage.Options):
    """twistd chatd [options]"""

    synopsis = "[options]"
    longdesc = (
        f"Run the chatd {__version__} chat daemon.  Every option can also be "
        "given in the environment as CHATD_<OPTION> (e.g. CHATD_MAX_CLIENTS=500); "
        "the command line wins over the environment."
    )
    optParameters = [
        [name, None, None, f"{help} [default: {default}; env: {envName(name)}]"]
        for name, (_, default, help) in PARAMETERS.items()
    ]

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.environ = os.environ if environ is None else environ
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Twisted endpoint to listen on; repeatable
        [default: tcp:7777; env: CHATD_LISTEN, space-separated]"""
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def opt_version(self) -> None:
        """Print chatd's version and exit."""
        print(f"chatd {__version__}")
        sys.exit(0)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse, or exit 1 with ``chatd: <why>`` and a hint on stderr.

        twistd would print its forty lines of usage before the one line that
        matters; a SystemExit passes through twistd untouched.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            raise SystemExit(f"chatd: {e}\n{HELP_HINT}") from None

    def postOptions(self) -> None:
        checkTwistdPaths(getattr(self, "parent", None))
        self.config = build(self, self.environ)

    def reload(self) -> Config:
        """The same command line over the files as they are now (SIGHUP)."""
        return build(self, self.environ)


def _checkDirectory(option: str, path: str) -> None:
    """Refuse ``path`` if the directory it would be created in is missing."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise usage.UsageError(
            f"{option}: directory {directory} does not exist "
            f"(create it first: mkdir -p {directory})"
        )


def checkTwistdPaths(twistd: Mapping[str, object] | None) -> None:
    """Refuse a --logfile or --pidfile in a directory that does not exist.

    twistd opens the log before it forks (a missing directory is a long
    traceback) and writes the pid file after (a truncated bytes repr from
    the background); checked here, it is one line in the foreground.
    """
    if twistd is None:
        return
    for option in ("logfile", "pidfile"):
        path = twistd.get(option)
        if isinstance(path, str) and path not in ("", "-"):
            _checkDirectory(f"--{option}", path)


def unknownVariables(environ: Mapping[str, str]) -> list[str]:
    """CHATD_ names in ``environ`` that chatd does not read (typos)."""
    return sorted(
        name
        for name in environ
        if name.startswith("CHATD_") and name not in KNOWN_VARIABLES
    )


def readEnvFile(path: str) -> dict[str, str]:
    """``CHATD_NAME=value`` lines (systemd EnvironmentFile syntax, simply).

    A running process cannot see a changed environment; this file is what a
    reload re-reads.  Other variables are ignored; an unknown CHATD_ name is
    an error, so a typo does not go unnoticed.
    """
    values: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise usage.UsageError(
            f"--env-file: cannot read {path}: {describeError(e)}"
        ) from None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, eq, value = line.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if not eq:
            raise usage.UsageError(f"--env-file: {path}:{number}: expected NAME=value")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if name.startswith("CHATD_"):
            if name not in KNOWN_VARIABLES:
                raise usage.UsageError(f"--env-file: {path}:{number}: unknown {name}")
            values[name] = value
    return values


def build(given: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
    """Resolve every option (given > env file > environment > default)."""
    envFile = given.get("env-file") or environ.get(envName("env-file"))
    if envFile:
        environ = {**environ, **readEnvFile(str(envFile))}
    values: dict[str, Any] = {}
    for name, (parse, default, _) in PARAMETERS.items():
        raw = given.get(name)
        source = f"--{name}"
        if raw is None:
            raw = environ.get(envName(name))
            source = envName(name)
        if raw is None:
            values[name.replace("-", "_")] = default
            continue
        try:
            values[name.replace("-", "_")] = parse(str(raw))
        except ValueError as e:
            raise usage.UsageError(f"{source}: {e}, not {raw!r}") from None
    if values["port_file"] is not None:
        _checkDirectory("--port-file", values["port_file"])
    listen = list(given.get("listen") or ())
    if not listen:
        listen = environ.get(envName("listen"), DEFAULT_LISTEN).split()
    for description in listen:
        checkEndpoint(description)
    if len(set(listen)) < len(listen):
        raise usage.UsageError("--listen: the same endpoint is given twice")
    password = None
    if values["password_file"] is not None:
        try:
            password = readPassword(values["password_file"])
        except ValueError as e:
            raise usage.UsageError(f"--password-file: {e}") from None
    token = None
    if values["admin_token_file"] is not None:
        try:
            token = readPassword(values["admin_token_file"], "token")
        except ValueError as e:
            raise usage.UsageError(f"--admin-token-file: {e}") from None
    if values["admin"] is not None:
        checkEndpoint(values["admin"], "--admin")
        if token is None and not isLocal(values["admin"]):
            raise usage.UsageError(
                f"--admin: {values['admin']} is reachable from other hosts: "
                "give it --admin-token-file, or interface=127.0.0.1"
            )
    if values["min_workers"] > values["workers"]:
        raise usage.UsageError(
            f"--min-workers: at most --workers ({values['workers']}), "
            f"not {values['min_workers']}"
        )
    if values["workers"] > 1 and values["redis"]:
        raise usage.UsageError(
            "--workers: not together with --redis yet; run one node per core instead"
        )
    return Config(listen=tuple(listen), password=password, admin_token=token, **values)


_UNESCAPED_COLON = re.compile(r"(?<!\\):")


def _fields(description: str) -> tuple[str, list[str], dict[str, str]]:
    """An endpoint string's type, positional and keyword fields (as
    serverFromString splits them, simply: enough for the checks below)."""
    kind, _, rest = description.partition(":")
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for part in _UNESCAPED_COLON.split(rest) if rest else []:
        part = part.replace("\\:", ":")
        key, eq, value = part.partition("=")
        if eq:
            kwargs[key] = value
        else:
            args.append(part)
    return kind.strip().lower(), args, kwargs


def checkEndpoint(description: str, option: str = "--listen") -> None:
    """Refuse an endpoint string Twisted cannot parse, or one that cannot
    work (a port out of range, a unix socket in a missing directory),
    naming the option and saying why in words."""
    from twisted.internet import endpoints, reactor

    try:
        endpoints.serverFromString(reactor, description)
    except Exception as e:  # Twisted raises many types for a bad string
        raise usage.UsageError(
            f"{option}: bad endpoint {description}: {_endpointError(e)}"
        ) from None
    kind, args, kwargs = _fields(description)
    if kind in ("tcp", "tcp6", "ssl"):
        port = kwargs.get("port", args[0] if args else "")
        if port.isdigit() and int(port) > 65535:
            raise usage.UsageError(
                f"{option}: bad endpoint {description}: the port must be 0 to 65535"
            )
    if kind == "unix":
        path = kwargs.get("address", args[0] if args else "")
        if not path:
            raise usage.UsageError(
                f"{option}: bad endpoint {description}: no socket path"
            )
        _checkDirectory(f"{option}: {description}", path)


def _endpointError(error: Exception) -> str:
    """describeError, plus the few Twisted parse errors that say nothing."""
    if type(error).__module__.startswith("OpenSSL"):
        return "not a usable key or certificate"
    if isinstance(error, IndexError):
        return "no such socket passed by systemd"
    if str(error).startswith("Unknown endpoint type"):
        return "unknown endpoint type (use tcp, tcp6, ssl, unix or systemd)"
    return describeError(error)


def isLocal(description: str) -> bool:
    """Whether only this host can reach the endpoint: a loopback interface
    or a unix socket.  Anything unrecognised counts as reachable, the safe
    answer for an interface that can kick users.
    """
    kind, args, kwargs = _fields(description)
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    positional = args[1] if len(args) > 1 and kind != "ssl" else ""
    interface = kwargs.get("interface", positional)
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:  # "" (every interface) or a host name
        return False


def fromEnvironment(environ: Mapping[str, str] | None = None) -> Config:
    """The Config that ``chatd.tac`` runs with (and reloads): environment,
    its env file, then defaults."""
    return build({}, os.environ if environ is None else environ)
