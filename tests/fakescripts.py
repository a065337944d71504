"""The chatd scripts done in Python, for :mod:`tests.fakeredis`.

Each function is the Lua of :mod:`chatd.cluster.scripts` of its name, line
by line, on the fake's keys: ``a`` is ARGV (``a[0]`` is ARGV[1], the
prefix).  Lua numbers come back as ints, strings as bytes, tables as lists.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chatd.cluster.scripts import SCRIPTS, SHA

if TYPE_CHECKING:
    from tests.fakeredis import FakeRedis


class FakeRedisError(Exception):
    """An error reply (its text is what Redis would say)."""


def _lease(r: FakeRedis, a: list[bytes]) -> None:
    if r.get(a[0] + b"node:" + a[1]) != a[2]:
        epoch = r.get(a[0] + b"epoch") or b"-"
        raise FakeRedisError("LEASE lost " + epoch.decode())


def _append(
    r: FakeRedis,
    P: bytes,
    name: bytes,
    maxlen: bytes,
    first: int,
    n: int,
    node: bytes,
    batch: bytes,
    *extra: object,
) -> bytes:
    last = r.hash(P + b"streamlast")
    prev = last.get(name, b"0")
    if n > 0:
        last[name] = str(first + n - 1).encode()
    fields: list[object] = [b"s", first, b"p", prev, b"n", node, b"b", batch]
    return r.xadd(P + name, maxlen, [*fields, *extra])


def _cursors(r: FakeRedis, P: bytes, lowers: list[bytes]) -> bytes:
    return b" ".join(
        lower + b" " + r.lastId(P + b"roomstream:" + lower) for lower in lowers
    )


def _submit(r: FakeRedis, a: list[bytes]) -> list[object]:
    _lease(r, a)
    P, node = a[0], a[1]
    n = int(a[3])
    first = r.incrby(P + b"seq", n) - n + 1
    ids: list[bytes] = []
    at, i = first, 6
    for _ in range(int(a[5])):
        name, count, nrooms = a[i], int(a[i + 1]), int(a[i + 3])
        streamName = b"roomstream:" + name if name else b"stream"
        extra: list[object] = []
        if nrooms > 0:
            extra = [b"r", _cursors(r, P, a[i + 4 : i + 4 + nrooms])]
        ids.append(_append(r, P, streamName, a[4], at, count, node, a[i + 2], *extra))
        at += count
        i += 4 + nrooms
    while a[i] != b"-":
        uid, entry, lower, run = a[i : i + 4]
        r.hash(P + b"users")[uid] = entry
        r.hash(P + b"nodeusers:" + node)[uid] = entry
        since = r.hash(P + b"since").get(lower)
        if since is None or since.rsplit(b" ", 1)[-1] != uid:
            r.hash(P + b"since")[lower] = ids[int(run) - 1] + b" " + uid
        i += 4
    j = i + 1
    while j < len(a) and a[j] != b"-":
        r.hdel(P + b"users", a[j])
        r.hdel(P + b"nodeusers:" + node, a[j])
        _leaveRooms(r, P, a[j])
        _spendToken(r, P, a[j], node)
        j += 1
    j += 1
    while j < len(a):
        step, lower = a[j], a[j + 1]
        if step == b"J":
            r.sadd(P + b"roomset", lower)
            r.hash(P + b"roomnames").setdefault(lower, a[j + 2])
            members = r.hash(P + b"roommembers:" + lower)
            members[a[j + 3]] = str(first + int(a[j + 4])).encode()
            r.sadd(P + b"userrooms:" + a[j + 3], lower)
            j += 5
        elif step == b"L":
            _leaveRoom(r, P, lower, a[j + 2])
            j += 3
        else:
            if lower in r.sets.get(P + b"roomset", set()):
                r.hash(P + b"roomtopics")[lower] = a[j + 2]
            j += 3
    return [first, ids[0] if ids else b""]


def _leaveRoom(r: FakeRedis, P: bytes, lower: bytes, uid: bytes) -> None:
    key = P + b"roommembers:" + lower
    r.hdel(key, uid)
    r.srem(P + b"userrooms:" + uid, lower)
    if not r.hashes.get(key):
        r.srem(P + b"roomset", lower)
        r.hdel(P + b"roomnames", lower)
        r.hdel(P + b"roomtopics", lower)


def _leaveRooms(r: FakeRedis, P: bytes, uid: bytes) -> None:
    for lower in r.members(P + b"userrooms:" + uid):
        _leaveRoom(r, P, lower, uid)
    r._delete(P + b"userrooms:" + uid)


def _spendToken(r: FakeRedis, P: bytes, uid: bytes, node: bytes) -> None:
    kept = r.hashes.get(P + b"resumable", {}).get(uid)
    if kept is not None and kept.split(b" ")[1] == node:
        r._delete(P + b"token:" + kept.split(b" ")[0])
        r.hdel(P + b"resumable", uid)


def _claim(r: FakeRedis, a: list[bytes]) -> int:
    _lease(r, a)
    P, node = a[0], a[1]
    key = P + b"name:" + a[3]
    if not r.set(key, node, px=int(a[4]), nx=True):
        return 0
    uid = r.incrby(P + b"ids", 1)
    if uid > int(a[5]):
        r._delete(key)
        return -1
    r.sadd(P + b"nodenames:" + node, a[3])
    return uid


def _release(r: FakeRedis, a: list[bytes]) -> int:
    P, node, lower = a[0], a[1], a[2]
    if r.get(P + b"name:" + lower) == node:
        r._delete(P + b"name:" + lower)
        r.hdel(P + b"since", lower)
    r.srem(P + b"nodenames:" + node, lower)
    return 1


def _heartbeat(r: FakeRedis, a: list[bytes]) -> list[object]:
    P, node, ttl = a[0], a[1], int(a[3])
    if r.get(P + b"epoch") != a[4]:
        return [2]
    key = P + b"node:" + node
    if r.get(key) != a[2]:
        return [0]
    r.set(key, a[2], px=ttl)
    lost = []
    for lower in r.members(P + b"nodenames:" + node):
        holder = r.get(P + b"name:" + lower)
        if holder is None or holder == node:
            r.set(P + b"name:" + lower, node, px=ttl)
        else:
            r.srem(P + b"nodenames:" + node, lower)
            lost.append(lower)
    dead = [
        other for other in r.members(P + b"nodes") if not r.exists(P + b"node:" + other)
    ]
    seq = r.get(P + b"seq") or b"0"
    return [1, seq, len(r.hashes.get(P + b"users", {})), dead, lost]


def _register(r: FakeRedis, a: list[bytes]) -> list[object]:
    P, node = a[0], a[1]
    r.set(P + b"epoch", a[4], nx=True)
    epoch = r.get(P + b"epoch")
    held = r.get(P + b"node:" + node)
    if held is not None and held != a[2]:
        return [0, epoch]
    r.set(P + b"node:" + node, a[2], px=int(a[3]))
    r.sadd(P + b"nodes", node)
    return [1, epoch]


def _reclaim(r: FakeRedis, a: list[bytes]) -> list[object]:
    _lease(r, a)
    P, node, ttl = a[0], a[1], int(a[3])

    def rank(since: bytes | None, uid: bytes | None) -> tuple[float, ...]:
        n = float(uid) if uid and uid.isdigit() else float("inf")
        m = re.fullmatch(rb"(\d+)-(\d+)", since or b"")
        return (float(m[1]), float(m[2]), n) if m else (float("inf"), 0, n)

    if int(r.get(P + b"ids") or 0) < int(a[4]):
        r.strings[P + b"ids"] = a[4]
    lost, won = [], []
    for i in range(5, len(a), 4):
        uid, entry, lower, since = a[i : i + 4]
        holder = r.get(P + b"name:" + lower)
        keep = True
        if holder is not None and holder != node:
            other = r.hash(P + b"since").get(lower, b"")
            m = re.fullmatch(rb"(\S*) (\d+)", other)
            osince, ouid = (m[1], m[2]) if m else (None, None)
            if rank(since, uid) < rank(osince, ouid):
                if ouid:
                    r.hdel(P + b"users", ouid)
                    r.hdel(P + b"nodeusers:" + holder, ouid)
                won.append(uid)
            else:
                keep = False
                lost.append(lower)
        if keep:
            r.set(P + b"name:" + lower, node, px=ttl)
            r.sadd(P + b"nodenames:" + node, lower)
            if since != b"":
                r.hash(P + b"users")[uid] = entry
                r.hash(P + b"nodeusers:" + node)[uid] = entry
                r.hash(P + b"since")[lower] = since + b" " + uid
    return [lost, won]


def _resign(r: FakeRedis, a: list[bytes]) -> int:
    key = a[0] + b"node:" + a[1]
    if r.get(key) == a[2]:
        r._delete(key)
    return 1


def _reap(r: FakeRedis, a: list[bytes]) -> Any:
    P, dead, reaper, n = a[0], a[1], a[2], int(a[3])
    if r.exists(P + b"node:" + dead):
        return 0
    users, names = P + b"nodeusers:" + dead, P + b"nodenames:" + dead
    if dead not in r.sets.get(P + b"nodes", set()) and not (
        r.exists(users) or r.exists(names)
    ):
        return 0
    adopted: dict[bytes, tuple[bytes, bytes]] = {}
    lowers: set[bytes] = set()
    for uid in a[8:]:
        kept = r.hashes.get(P + b"resumable", {}).get(uid, b"").split(b" ")
        entry = r.hashes.get(users, {}).get(uid)
        if len(kept) != 4 or kept[1] != dead or entry is None:
            return -1
        deadline = a[7] if kept[2] == b"0" else kept[2]
        adopted[uid] = (entry, b" ".join([kept[0], reaper, deadline, kept[3]]))
        lowers.add(kept[3])
    if len(r.hashes.get(users, {})) != n + len(a) - 8:
        return -1
    for lower in r.members(names):
        if r.get(P + b"name:" + lower) == dead and lower not in lowers:
            r._delete(P + b"name:" + lower)
            r.hdel(P + b"since", lower)
    for uid in list(r.hashes.get(users, {})):
        if uid not in adopted:
            r.hdel(P + b"users", uid)
            _leaveRooms(r, P, uid)
            _spendToken(r, P, uid, dead)
    for uid, kept in list(r.hashes.get(P + b"resumable", {}).items()):
        if uid not in adopted and kept.split(b" ")[1] == dead:
            _spendToken(r, P, uid, dead)
    r._delete(users, names)
    r.srem(P + b"nodes", dead)
    for uid, (entry, kept) in adopted.items():
        r.hash(P + b"nodeusers:" + reaper)[uid] = entry
        r.hash(P + b"resumable")[uid] = kept
    for lower in lowers:
        r.set(P + b"name:" + lower, reaper, px=int(a[6]))
        r.sadd(P + b"nodenames:" + reaper, lower)
    if n == 0:
        return 1
    first = r.incrby(P + b"seq", n) - n + 1
    return [first, _append(r, P, b"stream", a[5], first, n, a[2], a[4])]


def _snapshot(r: FakeRedis, a: list[bytes]) -> list[object]:
    P = a[0]
    stream = r.streams.get(P + b"stream", [])
    last = stream[-1][0] if stream else b"0-0"
    rooms: list[object] = []
    for lower in r.members(P + b"roomset"):
        members = r.hashes.get(P + b"roommembers:" + lower, {})
        order = sorted(members, key=lambda uid: int(members[uid]))
        rooms += [r.hashes.get(P + b"roomnames", {}).get(lower, lower)]
        topic = r.hashes.get(P + b"roomtopics", {}).get(lower, b"")
        rooms += [topic, len(order), *order]
    streamlast = r.hashes.get(P + b"streamlast", {}).get(b"stream", b"0")
    return [last, r.get(P + b"seq") or b"0", r.flat(P + b"users"), rooms, streamlast]


def _token(r: FakeRedis, a: list[bytes]) -> int:
    _lease(r, a)
    P, node, uid = a[0], a[1], a[3]
    old = r.hashes.get(P + b"resumable", {}).get(uid)
    if old is not None:
        r._delete(P + b"token:" + old.split(b" ")[0])
    r.set(P + b"token:" + a[4], uid)
    r.hash(P + b"resumable")[uid] = b" ".join([a[4], node, b"0", a[5]])
    return 1


def _heldHere(r: FakeRedis, a: list[bytes]) -> list[bytes] | None:
    """ARGV prefix node uid hex: the user's resumable fields, if its live
    token is hex and this node holds it."""
    kept = r.hashes.get(a[0] + b"resumable", {}).get(a[2], b"").split(b" ")
    return kept if len(kept) == 4 and kept[:2] == [a[3], a[1]] else None


def _forget(r: FakeRedis, a: list[bytes]) -> int:
    if _heldHere(r, a) is None:
        return 0
    r.hdel(a[0] + b"resumable", a[2])
    r._delete(a[0] + b"token:" + a[3])
    return 1


def _detach(r: FakeRedis, a: list[bytes]) -> int:
    kept = _heldHere(r, a)
    if kept is None:
        return 0
    r.hash(a[0] + b"resumable")[a[2]] = b" ".join([a[3], a[1], a[4], kept[3]])
    return 1


def _resume(r: FakeRedis, a: list[bytes]) -> list[object]:
    _lease(r, a)
    P, node, hex = a[0], a[1], a[3]
    uid = r.get(P + b"token:" + hex)
    if uid is None:
        return [0]
    r._delete(P + b"token:" + hex)
    kept = r.hashes.get(P + b"resumable", {}).get(uid, b"").split(b" ")
    if len(kept) != 4 or kept[0] != hex:
        return [0]
    old, lower = kept[1], kept[3]
    r.hdel(P + b"resumable", uid)
    entry = r.hashes.get(P + b"users", {}).get(uid)
    if entry is None or uid not in r.hashes.get(P + b"nodeusers:" + old, {}):
        return [0]
    r.hdel(P + b"nodeusers:" + old, uid)
    r.hash(P + b"nodeusers:" + node)[uid] = entry
    r.srem(P + b"nodenames:" + old, lower)
    r.sadd(P + b"nodenames:" + node, lower)
    r.set(P + b"name:" + lower, node, px=int(a[4]))
    seq = int(r.get(P + b"seq") or 0)
    rooms = _cursors(r, P, r.members(P + b"userrooms:" + uid))
    handOver = [b"h", uid + b" " + old, b"r", rooms]
    _append(r, P, b"stream", a[5], seq + 1, 0, node, b"", *handOver)
    return [1, entry, seq, old, r.hashes.get(P + b"since", {}).get(lower, b"")]


#: The scripts by SHA, as EVALSHA finds them.
BY_SHA: dict[bytes, Callable[[FakeRedis, list[bytes]], Any]] = {
    SHA[name].encode(): globals()["_" + name] for name in SCRIPTS
}
