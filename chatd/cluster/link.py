"""The link between the main process and one worker: a socketpair, framed.

Each message is an ``Int32StringReceiver`` string whose first byte says
what it is; numbers are network order; nothing is pickled (events travel
as :mod:`chatd.wire.eventcodec` bytes, the settings as JSON).  A client's
socket travels as a descriptor (``sendFileDescriptor``) with the ADOPT
message that names it.

main -> worker                           worker -> main
  CONFIG  json settings                    SUBMIT  an encoded event
  ADOPT   conn:u32 family:u8 tls:u8 port:u16 (+ the fd)
                                           ADOPTED conn:u32 (main closes its copy)
  BATCH   n:u32 seq:u64*n batch            DONE    conn:u32 (the connection ended)
  NAMED   req:u32 status:u8 entry          CLAIM   req:u32 name
  NOTICE  code.text                        RELEASE uid:u32
  STOP    (SHUTDOWN everyone, exit)        STATS   json counters
  ABORT   (abort connections still open)
  LOGIN   failures:u32 ms:u32 key          LOGIN   failures:u32 ms:u32 key
  HANDOVER uid:u32 (drop it silently)      TOKEN   uid:u32 digest
  EXPIRE  uid:u32 (its window is over)     FORGET  uid:u32 (ended for good)
  ANSWER  req:u32 answer                   KEPT    uid:u32 (detached)
                                           RESUME  req:u32 digest
                                           REPLAY  req:u32 since
                                           HISTORY req:u32 question

The resume messages (protocol 1.2) are :mod:`chatd.cluster.resumes` at
main and :mod:`chatd.cluster.resumelink` in a worker; their payloads are
:mod:`chatd.cluster.resumewire`.

A BATCH is one reactor turn of the one total order, the same bytes for
every worker; the ``seq`` list numbers the worker's own submissions in it,
in the order it sent them.

LOGIN shares the login back-off (docs/limits.md): a worker tells main each
verdict on an address (``failures`` in a row, locked ``ms`` more; 0
failures: a right password trusted it again), and main tells every other
worker, and a worker that starts later, so an address locked on one worker
is locked on all of them.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver

if TYPE_CHECKING:
    from chatd.server.config import Config

# main -> worker
CONFIG, ADOPT, BATCH, NAMED, NOTICE, STOP, ABORT, LOGIN = b"CABNOSXL"
HANDOVER, EXPIRE, ANSWER = b"HWY"
# worker -> main (and LOGIN)
SUBMIT, ADOPTED, DONE, CLAIM, RELEASE, STATS = b"EaDQRJ"
TOKEN, FORGET, KEPT, RESUME, REPLAY, HISTORY = b"TFKGPV"
#: What a worker asks or tells main's resume authority.
RESUME_KINDS = frozenset((TOKEN, FORGET, KEPT, RESUME, REPLAY, HISTORY))

U32 = struct.Struct("!I")
U64 = struct.Struct("!Q")
ADOPT_HEAD = struct.Struct("!IBBH")
NAMED_HEAD = struct.Struct("!IB")
CLAIM_HEAD = U32
LOGIN_HEAD = struct.Struct("!II")

#: NAMED status: the name is the user's, taken, or no id is left.
GRANTED, TAKEN, EXHAUSTED = 0, 1, 2

#: Address families an adopted socket can have (ADOPT's family byte).
FAMILIES = {0: "AF_INET", 1: "AF_INET6", 2: "AF_UNIX"}

#: The settings a worker's sessions read; the rest is the main process's.
_WORKER_SETTINGS = (
    "idle_timeout",
    "handshake_timeout",
    "max_backlog",
    "stats_interval",
    "shutdown_grace",
    "rate_limit",
    "rate_burst",
    "auth_backoff",
    "auth_backoff_max",
    "default_room",
    "max_rooms",
    "max_rooms_per_user",
    "rooms",
    "resume_window",
)


log = Logger(namespace="chatd")


class LinkError(ValueError):
    """A malformed link message: the other side is not a chatd process."""


def configPayload(config: Config) -> bytes:
    """CONFIG: what a worker needs of ``config`` (the password as hex)."""
    values: dict[str, Any] = {name: getattr(config, name) for name in _WORKER_SETTINGS}
    values["password"] = None if config.password is None else config.password.hex()
    values["listen"] = list(config.listen)  # a worker wraps TLS connections
    values["limit_exempt"] = str(config.limit_exempt)  # spared the back-off
    return json.dumps(values).encode()


def configFrom(payload: bytes) -> Config:
    """A worker's Config from a CONFIG payload: the main process admits,
    so the worker's own limits are off."""
    from chatd.server.admission import parseNetworks
    from chatd.server.config import Config

    try:
        values = json.loads(payload)
        password = values.pop("password")
        values["listen"] = tuple(values.get("listen", ()))
        values["rooms"] = tuple(tuple(r) for r in values.get("rooms", ()))
        values["limit_exempt"] = parseNetworks(values.get("limit_exempt", "none"))
        fields = {f.name for f in dataclasses.fields(Config)}
        if not set(values) <= fields:
            raise LinkError(f"unknown settings {sorted(set(values) - fields)}")
        return Config(
            password=None if password is None else bytes.fromhex(password),
            max_clients=1 << 30,
            max_per_ip=0,
            **values,
        )
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise LinkError(f"bad CONFIG: {e}") from None


def loginPayload(key: str, failures: int, delay: float) -> bytes:
    """LOGIN: the verdict on address ``key`` (see the module doc)."""
    ms = min(0xFFFFFFFF, max(0, round(delay * 1000)))
    return LOGIN_HEAD.pack(min(failures, 0xFFFFFFFF), ms) + key.encode()


def parseLogin(payload: bytes) -> tuple[str, int, float]:
    """(key, failures, seconds locked) from a LOGIN payload."""
    if len(payload) < LOGIN_HEAD.size:
        raise LinkError("short LOGIN")
    failures, ms = LOGIN_HEAD.unpack_from(payload)
    return payload[LOGIN_HEAD.size :].decode(), failures, ms / 1000


def jsonPayload(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def batchPayload(own: list[int], blob: bytes) -> bytes:
    """BATCH for one worker: its own sequence numbers, then the shared blob."""
    return b"".join([U32.pack(len(own)), *(U64.pack(s) for s in own), blob])


def parseBatch(payload: bytes) -> tuple[list[int], bytes]:
    if len(payload) < U32.size:
        raise LinkError("short BATCH")
    (n,) = U32.unpack_from(payload)
    start = U32.size + n * U64.size
    if len(payload) < start:
        raise LinkError("short BATCH")
    own = [U64.unpack_from(payload, U32.size + i * U64.size)[0] for i in range(n)]
    return own, payload[start:]


class Link(Int32StringReceiver):
    """One end of the link: messages to :meth:`messageReceived` by kind."""

    #: A batch of one busy turn can be large; a bad length is still refused.
    MAX_LENGTH = 64 << 20
    #: A unix stream transport (IUNIXTransport: it can send descriptors).
    transport: Any = None
    broken = False

    def dataReceived(self, data: bytes) -> None:
        """Frames to messages; a malformed one ends the link in one log line
        (the other side is then a dead process to its peer)."""
        if self.broken:
            return
        try:
            Int32StringReceiver.dataReceived(self, data)
        except (ValueError, struct.error) as e:  # LinkError, BadEvent, JSON...
            self.broken = True
            log.error("link broken: {e}", e=e)
            self.transport.abortConnection()

    def stringReceived(self, data: bytes) -> None:
        if not data:
            raise LinkError("empty link message")
        self.messageReceived(data[0], data[1:])

    def messageReceived(self, kind: int, payload: bytes) -> None:
        raise NotImplementedError

    def send(self, kind: int, payload: bytes = b"") -> None:
        self.sendString(bytes([kind]) + payload)

    def lengthLimitExceeded(self, length: int) -> None:
        raise LinkError(f"link message of {length} bytes")
