"""Configuration: command line, then ``CHATD_<NAME>`` environment, then default.

:class:`Options` is what ``twistd chatd --help`` shows; :func:`fromEnvironment`
builds the same :class:`Config` for ``chatd.tac``.  Every bad value is a
:class:`usage.UsageError` that names the option, which twistd prints as a
usage error rather than a traceback.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from twisted.python import usage

from chatd.secretfile import readPassword

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
    env_file: str | None = None
    # --workers (chatd.cluster)
    workers: int = 1
    max_clients_per_worker: int = 1000
    worker_idle_exit: float = 60.0


def _positiveInt(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be a whole number of at least 1")
    return number


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be a whole number, 0 or more")
    return number


def _rate(value: str) -> float:
    number = float(value)
    if not (0 <= number < 1e9):
        raise ValueError("must be a number of messages per second, 0 or more")
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if not (0 <= number < 1e9):
        raise ValueError("must be a number of seconds, 0 or more")
    return number


_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20}


def _bytes(value: str) -> int:
    """A size in bytes, optionally with K/KiB or M/MiB."""
    text = value.strip().lower()
    digits = text.rstrip("kimb")
    unit = text[len(digits) :]
    if unit not in _UNITS:
        raise ValueError("must be a size such as 65536, 64KiB or 1MiB")
    number = int(digits) * _UNITS[unit]
    if number < 65536:
        # Twisted's transport pauses its producer at 64 KiB: a smaller limit
        # could not be enforced exactly.
        raise ValueError("must be at least 64KiB")
    return number


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
    "rate-limit": (_rate, 0.0, "SAY/WHISPER per second per user, beyond it RATE_LIMITED (0 = off)."),
    "rate-burst": (_positiveInt, 10, "Messages a user may send at once before --rate-limit applies."),
    "max-per-ip": (_count, 0, "Most connections from one address (0 = no limit)."),
    "admin": (str, None, "Endpoint of the HTTP admin interface, e.g. tcp:7779:interface=127.0.0.1 (off by default)."),
    "admin-token-file": (str, None, "File whose first line is the admin bearer token."),
    "env-file": (str, None, "File of CHATD_<OPTION>=value lines, read at start and on every reload (SIGHUP)."),
    # --workers (chatd.cluster; docs/workers.md)
    "workers": (lambda v: _workers(v), 1, "Worker processes to spread clients over, at most; 'auto' = one per core (1 = one process)."),
    "max-clients-per-worker": (_positiveInt, 1000, "Most clients one worker process serves (with --workers above 1)."),
    "worker-idle-exit": (_seconds, 60.0, "Seconds a worker with no clients lives on before it exits (never the last one)."),
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


class Options(usage.Options):
    """twistd chatd [options]"""

    synopsis = "[options]"
    longdesc = (
        "Run the chatd chat daemon.  Every option can also be given in the "
        "environment as CHATD_<OPTION> (e.g. CHATD_MAX_CLIENTS=500); the "
        "command line wins over the environment."
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

    def postOptions(self) -> None:
        self.config = build(self, self.environ)

    def reload(self) -> Config:
        """The same command line over the files as they are now (SIGHUP)."""
        return build(self, self.environ)


def readEnvFile(path: str) -> dict[str, str]:
    """``CHATD_NAME=value`` lines (systemd EnvironmentFile syntax, simply).

    A running process cannot see a changed environment; this file is what a
    reload re-reads.  Other variables are ignored; an unknown CHATD_ name is
    an error, so a typo does not go unnoticed.
    """
    known = {envName(name) for name in PARAMETERS} | {envName("listen")}
    values: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise usage.UsageError(f"--env-file: cannot read {path}: {e}") from None
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
            if name not in known:
                raise usage.UsageError(f"--env-file: {path}:{number}: unknown {name}")
            values[name] = value
    return values


def build(given: Mapping[str, object], environ: Mapping[str, str]) -> Config:
    """Resolve every option (given > env file > environment > default)."""
    envFile = given.get("env-file") or environ.get(envName("env-file"))
    if envFile:
        environ = {**environ, **readEnvFile(str(envFile))}
    values: dict[str, object] = {}
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
            raise usage.UsageError(f"{source}: bad value {raw!r}: {e}") from None
    listen = list(given.get("listen") or ())
    if not listen:
        listen = environ.get(envName("listen"), DEFAULT_LISTEN).split()
    for description in listen:
        checkEndpoint(description)
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
                f"--admin: {values['admin']!r} is reachable from other hosts: "
                "give it --admin-token-file, or interface=127.0.0.1"
            )
    return Config(listen=tuple(listen), password=password, admin_token=token, **values)


def checkEndpoint(description: str, option: str = "--listen") -> None:
    """Refuse an endpoint string Twisted cannot parse, naming the option."""
    from twisted.internet import endpoints, reactor

    try:
        endpoints.serverFromString(reactor, description)
    except Exception as e:  # Twisted raises many types for a bad string
        raise usage.UsageError(f"{option}: bad endpoint {description!r}: {e}") from None


def isLocal(description: str) -> bool:
    """Whether only this host can reach the endpoint: a loopback interface
    or a unix socket.  Anything unrecognised counts as reachable, the safe
    answer for an interface that can kick users.
    """
    from twisted.internet import endpoints, reactor

    endpoint = endpoints.serverFromString(reactor, description)
    if isinstance(endpoint, endpoints.UNIXServerEndpoint):
        return True
    interface = getattr(endpoint, "_interface", "")  # TCP4/TCP6/SSL4 endpoints
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
