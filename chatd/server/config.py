"""Configuration: command line, then ``CHATD_<NAME>`` environment, then default.

:class:`Options` is what ``twistd chatd --help`` shows; :func:`fromEnvironment`
builds the same :class:`Config` for ``chatd.tac``.  Every bad value is a
:class:`usage.UsageError` that names the option and says what is wanted;
on the command line :class:`Options` prints it as one line (twistd would
print its whole usage first) and exits 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.python import usage

from chatd import __version__
from chatd.secretfile import readPassword
from chatd.server import values as _values
from chatd.server.admission import DEFAULT_EXEMPT, connectionsPerSecond, parseNetworks
from chatd.server.endpointcheck import checkDirectory, checkEndpoint, isLocal
from chatd.server.errors import describeError
from chatd.server.historydb import HistoryDBError, checkHistoryDB
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
    # chatd.irc (the IRC front end)
    irc: str | None = None
    motd_file: str | None = None
    irc_history: int = 10
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
    # Protocol 1.2's rooms (docs/protocol.md)
    default_room: str = "lobby"
    max_rooms: int = 1000
    max_rooms_per_user: int = 20
    #: (name, topic) of each --room; a topic given here is locked.
    rooms: tuple[tuple[str, str], ...] = ()
    # 1.2's history and resume (docs/protocol.md)
    resume_window: float = 60.0
    history: int = 100
    history_bytes: int = 65536
    history_db: str | None = None


# name -> (parser, default, help).  The option is --name, the variable
# CHATD_NAME with dashes as underscores.
PARAMETERS: dict[str, tuple[Callable[[str], object], object, str]] = {
    "max-clients": (_values.positiveInt, 1000, "Most TCP connections at once."),
    "idle-timeout": (_values.seconds, 30.0, "Seconds without input before a user is cut off (0 = never)."),
    "handshake-timeout": (_values.seconds, 10.0, "Seconds to reach ACTIVE after connecting (0 = never)."),
    "max-backlog": (_values.size, 1 << 20, "Bytes held for one slow reader before it is cut off."),
    "password-file": (str, None, "File whose first line is the server password."),
    "stats-interval": (_values.seconds, 1.0, "Seconds between stats log lines (0 = off)."),
    "shutdown-grace": (_values.seconds, 5.0, "Seconds to let output drain when stopping."),
    "rate-limit": (_values.rate, 10.0, "SAY/WHISPER per second per user, beyond it RATE_LIMITED (0 = off)."),
    "rate-burst": (_values.positiveInt, 30, "Messages a user may send at once before --rate-limit applies."),
    "max-per-ip": (_values.count, 20, "Most connections at once from one address outside --limit-exempt (0 = no limit)."),
    "admin": (str, None, "Endpoint of the HTTP admin interface, e.g. tcp:7779:interface=127.0.0.1 (off by default)."),
    "admin-token-file": (str, None, "File whose first line is the admin bearer token."),
    "port-file": (str, None, "File chatd writes its listening addresses to once it accepts (useful with port 0)."),
    "env-file": (str, None, "File of CHATD_<OPTION>=value lines, read at start and on every reload (SIGHUP)."),
    # chatd.web (the browser front end)
    "web": (_web.endpoint, None, "Endpoint of the web page and its WebSocket (/ws), e.g. tcp:8080 (off by default)."),
    "web-origin": (_web.origins, None, "Origins whose pages may open the WebSocket, comma-separated (default: the page's own)."),
    "web-trust-proxy": (_web.proxies, None, "Addresses of reverse proxies whose X-Forwarded-For is believed."),
    # chatd.irc (the IRC front end; docs/irc.md)
    "irc": (_web.endpoint, None, "Endpoint of the IRC front end, e.g. tcp:6667 or ssl:6697:... (off by default)."),
    "motd-file": (str, None, "File whose lines are the IRC message of the day (none: 422)."),
    "irc-history": (_values.count, 10, "Earlier messages an IRC user is shown on joining a channel, from its history (0 = none)."),
    "connect-rate": (connectionsPerSecond, 5.0, "New connections per second from one address outside --limit-exempt (0 = no limit)."),
    "connect-burst": (_values.positiveInt, 20, "New connections one address may open at once before --connect-rate applies."),
    "limit-exempt": (parseNetworks, parseNetworks(DEFAULT_EXEMPT), "Comma-separated networks the per-address limits and login backoff spare ('none' = nobody)."),
    "auth-backoff": (_values.seconds, 0.5, "Seconds the first AUTH_FAILED from an address is delayed, doubling per further failure (0 = off)."),
    "auth-backoff-max": (_values.seconds, 10.0, "Longest AUTH_FAILED delay (--auth-backoff doubles up to it)."),
    "log-summary": (_values.seconds, 10.0, "Refusals, login failures and protocol errors: a few lines, then one summary per kind per this many seconds (0 = every line)."),
    "log-keep": (_values.count, 10, "Rotated twistd log files kept (0 = all, as twistd does)."),
    # -- cluster (chatd.cluster; docs/cluster.md) --
    "redis": (_values.cluster("checkRedisURL"), None, "Join the cluster through Redis: redis://host:port/db, rediss:// (TLS) or unix://path (off by default)."),
    "redis-password-file": (_values.cluster("passwordFile"), None, "File whose first line is the Redis password (instead of one in the URL)."),
    "node-name": (_values.cluster("nodeName"), None, "This node's name in the cluster [default: host name:first listen port]."),
    "node-ttl": (_values.cluster("ttl"), 10.0, "Seconds after which a silent node is declared gone and its users leave."),
    # --workers (chatd.cluster; docs/workers.md)
    "workers": (_values.workers, 1, "Worker processes to spread clients over, at most; 'auto' = one per core (1 = one process)."),
    "max-clients-per-worker": (_values.positiveInt, 1000, "Most clients one worker process serves (with --workers above 1)."),
    "worker-idle-exit": (_values.seconds, 60.0, "Seconds a worker with no clients lives on before it exits (never the last one)."),
    "min-workers": (_values.positiveInt, 1, "Workers started at once and kept while idle (at most --workers): clients spread over them from the first."),
    # Protocol 1.2's rooms (docs/protocol.md)
    "default-room": (_values.roomName, "lobby", "The room every user is in (1.1's one room)."),
    "max-rooms": (_values.positiveInt, 1000, "Most rooms at once (1.2 clients create rooms by entering them)."),
    "max-rooms-per-user": (_values.positiveInt, 20, "Most rooms one user is in, the default room counted."),
    # 1.2's history and resume (docs/protocol.md)
    "resume-window": (_values.seconds, 60.0, "Seconds a dropped 1.2 user who asked for it is kept for a RESUME (0 = never)."),
    "history": (_values.count, 100, "Events kept per room for HISTORY and resume (0 = none)."),
    "history-bytes": (_values.size, 65536, "Bytes of events kept per room at most."),
    "history-db": (str, None, "SQLite file the history is also kept in, so that it outlives a restart (one process only; off by default)."),
}  # fmt: skip


def envName(option: str) -> str:
    return "CHATD_" + option.upper().replace("-", "_")


#: Every CHATD_ variable chatd reads.
KNOWN_VARIABLES = frozenset(
    {envName(name) for name in PARAMETERS} | {envName("listen"), envName("room")}
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

    def opt_room(self, spec: str) -> None:
        """A room that always exists: NAME or NAME:topic (topic locked); repeatable [env: CHATD_ROOM, ';'-separated]"""  # noqa: E501 (one line: --help)
        self.setdefault("room", []).append(spec)

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
            checkDirectory(f"--{option}", path)


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
        checkDirectory("--port-file", values["port_file"])
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
    if values["history_db"] is not None:
        checkHistoryFile(values)
    rooms = list(given.get("room") or ())
    source = "--room"
    if not rooms:
        rooms = [r for r in environ.get(envName("room"), "").split(";") if r.strip()]
        source = envName("room")
    try:
        specs = tuple(_values.roomSpec(r.strip()) for r in rooms)
    except ValueError as e:
        raise usage.UsageError(f"{source}: {e}") from None
    return Config(
        listen=tuple(listen),
        password=password,
        admin_token=token,
        rooms=specs,
        **values,
    )


def checkHistoryFile(values: Mapping[str, Any]) -> None:
    """--history-db: one process only, and a file chatd can use."""
    if values["workers"] > 1 or values["redis"]:
        raise usage.UsageError(
            "--history-db: for one process only, not with --workers or --redis"
        )
    checkDirectory("--history-db", values["history_db"])
    try:
        checkHistoryDB(values["history_db"])
    except HistoryDBError as e:
        raise usage.UsageError(f"--history-db: {e}") from None


def fromEnvironment(environ: Mapping[str, str] | None = None) -> Config:
    """The Config that ``chatd.tac`` runs with (and reloads): environment,
    its env file, then defaults."""
    return build({}, os.environ if environ is None else environ)
