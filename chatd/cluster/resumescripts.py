"""The Lua of protocol 1.2's resume with ``--redis`` (docs/cluster.md,
"Resume and history"): tokens, windows and the hand-over, each one atomic.

Keys (prefix ``chatd:``), beside those of :mod:`chatd.cluster.scripts`:

* ``token:<hex SHA-256>``: the user id a live token resumes (only the
  digest is ever stored: Redis holds nothing that resumes a session);
* ``resumable``: hash uid -> ``<hex> <node> <deadline ms> <lower name>``,
  the user's one live token, the node holding its session, and when its
  window ends (0: attached).  The window lives here, not only in the
  node, so a node killed -9 leaves its detached users to its reaper.

A hand-over is a stream entry with no events (``s`` the next number,
``b`` empty), ``h`` = ``<uid> <old node>`` and ``r`` the cursors of the
user's rooms' streams: in the total order, so the new node replays up to
it (reading from there the rooms it did not read) and the old one drops
its session at it.
"""

from __future__ import annotations

from chatd.cluster.luaparts import LEASE, STREAMS

# ARGV: prefix node token uid hex lower: the user's one live token is hex.
TOKEN = (
    LEASE
    + """
local old = redis.call('HGET', P..'resumable', ARGV[4])
if old then
  redis.call('DEL', P..'token:'..string.match(old, '^(%S+)'))
end
redis.call('SET', P..'token:'..ARGV[5], ARGV[4])
redis.call('HSET', P..'resumable', ARGV[4], ARGV[5]..' '..node..' 0 '..ARGV[6])
return 1
"""
)

# ARGV: prefix node uid hex -> 1 (the token was still this node's: spent
# now, a LEAVE may follow) or 0 (spent elsewhere: a hand-over is coming).
FORGET = """
local P, node = ARGV[1], ARGV[2]
local kept = redis.call('HGET', P..'resumable', ARGV[3])
local hex, holder = string.match(kept or '', '^(%S+) (%S+)')
if hex ~= ARGV[4] or holder ~= node then
  return 0
end
redis.call('HDEL', P..'resumable', ARGV[3])
redis.call('DEL', P..'token:'..hex)
return 1
"""

# ARGV: prefix node uid hex deadline_ms: the session is detached until then.
DETACH = """
local P, node = ARGV[1], ARGV[2]
local kept = redis.call('HGET', P..'resumable', ARGV[3])
local hex, holder, _, lower = string.match(kept or '', '^(%S+) (%S+) (%S+) (%S+)$')
if hex ~= ARGV[4] or holder ~= node then
  return 0
end
redis.call('HSET', P..'resumable', ARGV[3], hex..' '..node..' '..ARGV[5]..' '..lower)
return 1
"""

# ARGV: prefix node token hex ttl_ms maxlen -> {0} (resumes nothing) or
# {1, entry, seq before the hand-over, old node, since}: the token spent,
# the user (its nodeusers entry, name lease) moved here, the hand-over
# appended to the stream.
RESUME = (
    LEASE
    + STREAMS
    + """
local uid = redis.call('GET', P..'token:'..ARGV[4])
if not uid then
  return {0}
end
redis.call('DEL', P..'token:'..ARGV[4])
local kept = redis.call('HGET', P..'resumable', uid)
local hex, old, _, lower = string.match(kept or '', '^(%S+) (%S+) (%S+) (%S+)$')
if hex ~= ARGV[4] then
  return {0}
end
redis.call('HDEL', P..'resumable', uid)
local entry = redis.call('HGET', P..'users', uid)
if not entry or redis.call('HEXISTS', P..'nodeusers:'..old, uid) == 0 then
  return {0}
end
redis.call('HDEL', P..'nodeusers:'..old, uid)
redis.call('HSET', P..'nodeusers:'..node, uid, entry)
redis.call('SREM', P..'nodenames:'..old, lower)
redis.call('SADD', P..'nodenames:'..node, lower)
redis.call('SET', P..'name:'..lower, node, 'PX', ARGV[5])
local seq = tonumber(redis.call('GET', P..'seq') or '0')
append(P, 'stream', ARGV[6], seq + 1, 0, node, '', 'h', uid..' '..old,
       'r', cursors(P, redis.call('SMEMBERS', P..'userrooms:'..uid)))
return {1, entry, seq, old, redis.call('HGET', P..'since', lower) or ''}
"""
)

RESUME_SCRIPTS = {
    "token": TOKEN,
    "forget": FORGET,
    "detach": DETACH,
    "resume": RESUME,
}
