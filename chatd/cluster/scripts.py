"""The Lua scripts that make each cluster step one atomic Redis command.

Every script takes its keys' prefix as ARGV[1] and this node's name as
ARGV[2].  Keys (with the default prefix ``chatd:``):

* ``seq``: the last sequence number; ``stream``: the capped event stream,
  one entry per submitted batch (``s`` first number, ``n`` node, ``b`` the
  eventcodec batch);
* ``ids``: the last user id; ``users``: hash id -> entry of the active
  users of the whole cluster (the snapshot a starting node reads);
* ``nodes``: set of registered node names; ``node:<name>``: the node's
  lease (its start token, with a TTL its heartbeat renews);
  ``nodeusers:<name>``: hash id -> entry of its active users;
  ``nodenames:<name>``: set of the names it holds;
* ``name:<lower-case name>``: a name lease (value: the node), same TTL.

A script run by a node whose lease is gone fails with ``LEASE lost``: a
node that was declared dead cannot sequence or claim anything more.
"""

from __future__ import annotations

import hashlib

_LEASE = """
local P, node = ARGV[1], ARGV[2]
if redis.call('GET', P..'node:'..node) ~= ARGV[3] then
  return redis.error_reply('LEASE lost')
end
"""

# ARGV: prefix node token n batch maxlen joins(uid entry)* '-' leaves(uid)*
SUBMIT = (
    _LEASE
    + """
local n = tonumber(ARGV[4])
local last = redis.call('INCRBY', P..'seq', n)
local first = last - n + 1
local id = redis.call('XADD', P..'stream', 'MAXLEN', '~', ARGV[6], '*',
                      's', first, 'n', node, 'b', ARGV[5])
local i = 7
while ARGV[i] ~= '-' do
  redis.call('HSET', P..'users', ARGV[i], ARGV[i + 1])
  redis.call('HSET', P..'nodeusers:'..node, ARGV[i], ARGV[i + 1])
  i = i + 2
end
for j = i + 1, #ARGV do
  redis.call('HDEL', P..'users', ARGV[j])
  redis.call('HDEL', P..'nodeusers:'..node, ARGV[j])
end
return {first, id}
"""
)

# ARGV: prefix node token lowername ttl_ms max_id -> id, 0 (taken), -1 (ids out)
CLAIM = (
    _LEASE
    + """
local key = P..'name:'..ARGV[4]
if not redis.call('SET', key, node, 'NX', 'PX', ARGV[5]) then
  return 0
end
local id = redis.call('INCR', P..'ids')
if id > tonumber(ARGV[6]) then
  redis.call('DEL', key)
  return -1
end
redis.call('SADD', P..'nodenames:'..node, ARGV[4])
return id
"""
)

# ARGV: prefix node lowername
RELEASE = """
local P, node = ARGV[1], ARGV[2]
local key = P..'name:'..ARGV[3]
if redis.call('GET', key) == node then
  redis.call('DEL', key)
end
redis.call('SREM', P..'nodenames:'..node, ARGV[3])
return 1
"""

# ARGV: prefix node token ttl_ms -> {1, seq, users, dead nodes} or {0}
HEARTBEAT = """
local P, node = ARGV[1], ARGV[2]
local key = P..'node:'..node
if redis.call('GET', key) ~= ARGV[3] then
  return {0}
end
redis.call('PEXPIRE', key, ARGV[4])
for _, lower in ipairs(redis.call('SMEMBERS', P..'nodenames:'..node)) do
  redis.call('PEXPIRE', P..'name:'..lower, ARGV[4])
end
local dead = {}
for _, other in ipairs(redis.call('SMEMBERS', P..'nodes')) do
  if redis.call('EXISTS', P..'node:'..other) == 0 then
    table.insert(dead, other)
  end
end
return {1, redis.call('GET', P..'seq') or '0', redis.call('HLEN', P..'users'), dead}
"""

# ARGV: prefix node token ttl_ms
REGISTER = """
local P, node = ARGV[1], ARGV[2]
redis.call('SET', P..'node:'..node, ARGV[3], 'PX', ARGV[4])
redis.call('SADD', P..'nodes', node)
return 1
"""

# ARGV: prefix node token: give up the lease (a clean stop, or a takeover
# of our own name at start); a reap follows.
RESIGN = """
local P, node = ARGV[1], ARGV[2]
local key = P..'node:'..node
if ARGV[3] == '' or redis.call('GET', key) == ARGV[3] then
  redis.call('DEL', key)
end
return 1
"""

# ARGV: prefix deadnode reaper n batch maxlen -> {first, id}, 1 (nothing to
# sequence), 0 (alive, or reaped already), -1 (its users changed: read again)
# Exactly once: the first reaper deletes the dead node's records, so any
# other finds nothing left and sequences nothing.
REAP = """
local P, dead = ARGV[1], ARGV[2]
if redis.call('EXISTS', P..'node:'..dead) == 1 then
  return 0
end
local users = P..'nodeusers:'..dead
local names = P..'nodenames:'..dead
if redis.call('SISMEMBER', P..'nodes', dead) == 0
   and redis.call('EXISTS', users) == 0 and redis.call('EXISTS', names) == 0 then
  return 0
end
local n = tonumber(ARGV[4])
if redis.call('HLEN', users) ~= n then
  return -1
end
for _, lower in ipairs(redis.call('SMEMBERS', names)) do
  if redis.call('GET', P..'name:'..lower) == dead then
    redis.call('DEL', P..'name:'..lower)
  end
end
for _, uid in ipairs(redis.call('HKEYS', users)) do
  redis.call('HDEL', P..'users', uid)
end
redis.call('DEL', users, names)
redis.call('SREM', P..'nodes', dead)
if n == 0 then
  return 1
end
local last = redis.call('INCRBY', P..'seq', n)
local first = last - n + 1
local id = redis.call('XADD', P..'stream', 'MAXLEN', '~', ARGV[6], '*',
                      's', first, 'n', ARGV[3], 'b', ARGV[5])
return {first, id}
"""

# ARGV: prefix -> {last stream id, seq, users hash as a flat list}
SNAPSHOT = """
local P = ARGV[1]
local last = redis.call('XREVRANGE', P..'stream', '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then
  id = last[1][1]
end
return {id, redis.call('GET', P..'seq') or '0', redis.call('HGETALL', P..'users')}
"""

SCRIPTS = {
    "submit": SUBMIT,
    "claim": CLAIM,
    "release": RELEASE,
    "heartbeat": HEARTBEAT,
    "register": REGISTER,
    "resign": RESIGN,
    "reap": REAP,
    "snapshot": SNAPSHOT,
}

SHA = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in SCRIPTS.items()}
