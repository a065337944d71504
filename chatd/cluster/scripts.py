"""The Lua scripts that make each cluster step one atomic Redis command.

Every script takes its keys' prefix as ARGV[1] and this node's name as
ARGV[2].  Keys (with the default prefix ``chatd:``):

* ``seq``: the last sequence number; ``stream``: the cluster's capped event
  stream (everything but the rooms' messages), ``roomstream:<lower>``: a
  protocol 1.2 room's ROOM_MESSAGEs; one entry per run of a submitted
  batch that goes to one stream (``s`` first number, ``p`` the stream's
  last number before it, ``n`` node, ``b`` the eventcodec batch; ``r`` on
  an entry with ROOM_JOINs: each joined room's stream cursor);
  ``streamlast``: hash stream -> its last number;
* ``ids``: the last user id; ``users``: hash id -> entry of the active
  users of the whole cluster (the snapshot a starting node reads);
* ``nodes``: set of registered node names; ``node:<name>``: the node's
  lease (its start token, with a TTL its heartbeat renews);
  ``nodeusers:<name>``: hash id -> entry of its active users;
  ``nodenames:<name>``: set of the names it holds;
* ``name:<lower-case name>``: a name lease (value: the node), same TTL;
  ``since``: hash lower-case name -> ``<stream id of its JOIN> <uid>``, the
  activation time that settles a name held twice after Redis lost its state;
* ``epoch``: a random token set by the first node to register: a node that
  finds it gone or changed knows Redis lost its state (restarted empty).
* protocol 1.2's rooms, for the snapshot a starting node reads (the events
  themselves are in the stream): ``roomset``: set of the lower-case names
  of rooms with members; ``roomnames``/``roomtopics``: hash lower-case name
  -> kept spelling / topic; ``roommembers:<lower>``: hash uid -> the
  sequence number of its ROOM_JOIN (the order they entered);
  ``userrooms:<uid>``: set of the rooms a user is in (so that leaving the
  server, or being reaped, leaves them).
* protocol 1.2's resume: ``token:<hex>`` and ``resumable``
  (:mod:`chatd.cluster.resumescripts`); a LEAVE spends its user's token.

A script run by a node whose lease is gone fails with ``LEASE lost <epoch>``
(the current epoch, ``-`` if none): a node that was declared dead cannot
sequence or claim anything more, and one whose epoch is not that one knows
Redis lost its state rather than that it was declared dead.
"""

from __future__ import annotations

import hashlib

from chatd.cluster.luaparts import LEASE as _LEASE
from chatd.cluster.luaparts import ROOMS as _ROOMS
from chatd.cluster.luaparts import STREAMS as _STREAMS
from chatd.cluster.resumescripts import RESUME_SCRIPTS

# ARGV: prefix node token n maxlen runs, runs * (stream count batch nrooms
# lower*) (stream '' is the cluster's, else the room's; the lowers: the rooms
# joined in the run, whose cursors go in its entry), joins(uid entry lower
# run)* '-' leaves(uid)* '-' room steps: J lower name uid index | L lower uid
# | T lower topic
SUBMIT = (
    _LEASE
    + _ROOMS
    + _STREAMS
    + """
local n = tonumber(ARGV[4])
local last = redis.call('INCRBY', P..'seq', n)
local first = last - n + 1
local ids, at, i = {}, first, 7
for k = 1, tonumber(ARGV[6]) do
  local name, count, nrooms = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 3])
  local key, extra = 'stream', {}
  if name ~= '' then
    key = 'roomstream:'..name
  end
  if nrooms > 0 then
    extra = {'r', cursors(P, {unpack(ARGV, i + 4, i + 3 + nrooms)})}
  end
  ids[k] = append(P, key, ARGV[5], at, count, node, ARGV[i + 2], unpack(extra))
  at = at + count
  i = i + 4 + nrooms
end
while ARGV[i] ~= '-' do
  redis.call('HSET', P..'users', ARGV[i], ARGV[i + 1])
  redis.call('HSET', P..'nodeusers:'..node, ARGV[i], ARGV[i + 1])
  local since = redis.call('HGET', P..'since', ARGV[i + 2])
  if not since or string.match(since, ' (%d+)$') ~= ARGV[i] then
    redis.call('HSET', P..'since', ARGV[i + 2], ids[tonumber(ARGV[i + 3])]..' '..ARGV[i])
  end
  i = i + 4
end
local j = i + 1
while j <= #ARGV and ARGV[j] ~= '-' do
  redis.call('HDEL', P..'users', ARGV[j])
  redis.call('HDEL', P..'nodeusers:'..node, ARGV[j])
  leaveRooms(P, ARGV[j])
  spendToken(P, ARGV[j], node)
  j = j + 1
end
j = j + 1
while j <= #ARGV do
  local step, lower = ARGV[j], ARGV[j + 1]
  if step == 'J' then
    redis.call('SADD', P..'roomset', lower)
    redis.call('HSETNX', P..'roomnames', lower, ARGV[j + 2])
    redis.call('HSET', P..'roommembers:'..lower, ARGV[j + 3], first + ARGV[j + 4])
    redis.call('SADD', P..'userrooms:'..ARGV[j + 3], lower)
    j = j + 5
  elseif step == 'L' then
    leaveRoom(P, lower, ARGV[j + 2])
    j = j + 3
  else
    if redis.call('SISMEMBER', P..'roomset', lower) == 1 then
      redis.call('HSET', P..'roomtopics', lower, ARGV[j + 2])
    end
    j = j + 3
  end
end
return {first, ids[1] or ''}
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
  redis.call('HDEL', P..'since', ARGV[3])
end
redis.call('SREM', P..'nodenames:'..node, ARGV[3])
return 1
"""

# ARGV: prefix node token ttl_ms epoch -> {1, seq, users, dead nodes, names
# lost to another node}, {0} (lease gone) or {2} (the epoch changed: Redis
# lost its state)
HEARTBEAT = """
local P, node = ARGV[1], ARGV[2]
if redis.call('GET', P..'epoch') ~= ARGV[5] then
  return {2}
end
local key = P..'node:'..node
if redis.call('GET', key) ~= ARGV[3] then
  return {0}
end
redis.call('PEXPIRE', key, ARGV[4])
local lost = {}
for _, lower in ipairs(redis.call('SMEMBERS', P..'nodenames:'..node)) do
  local holder = redis.call('GET', P..'name:'..lower)
  if holder == node then
    redis.call('PEXPIRE', P..'name:'..lower, ARGV[4])
  elseif not holder then
    redis.call('SET', P..'name:'..lower, node, 'PX', ARGV[4])
  else
    redis.call('SREM', P..'nodenames:'..node, lower)
    table.insert(lost, lower)
  end
end
local dead = {}
for _, other in ipairs(redis.call('SMEMBERS', P..'nodes')) do
  if redis.call('EXISTS', P..'node:'..other) == 0 then
    table.insert(dead, other)
  end
end
return {1, redis.call('GET', P..'seq') or '0', redis.call('HLEN', P..'users'), dead,
        lost}
"""

# ARGV: prefix node token ttl_ms new_epoch -> {1, epoch}, or {0, epoch} when
# another token holds the name (a live node's lease is never taken over)
REGISTER = """
local P, node = ARGV[1], ARGV[2]
redis.call('SET', P..'epoch', ARGV[5], 'NX')
local epoch = redis.call('GET', P..'epoch')
local key = P..'node:'..node
local held = redis.call('GET', key)
if held and held ~= ARGV[3] then
  return {0, epoch}
end
redis.call('SET', key, ARGV[3], 'PX', ARGV[4])
redis.call('SADD', P..'nodes', node)
return {1, epoch}
"""

# After Redis lost its state: this node's users again.  ARGV: prefix node
# token ttl_ms max_id (uid entry lower since)* -> {names lost, uids that
# displaced another node's user}.  A name held by another node goes to the
# earlier activation: the lower (JOIN stream id, uid); '' (not active yet)
# comes last.  The loser's node finds its name gone at its next heartbeat.
RECLAIM = (
    _LEASE
    + """
local function rank(since, uid)
  local ms, n = string.match(since or '', '^(%d+)-(%d+)$')
  if not ms then
    return {math.huge, 0, tonumber(uid) or math.huge}
  end
  return {tonumber(ms), tonumber(n), tonumber(uid) or math.huge}
end
local function before(a, b)
  for k = 1, 3 do
    if a[k] ~= b[k] then
      return a[k] < b[k]
    end
  end
  return false
end
local ttl, lost, won = ARGV[4], {}, {}
if tonumber(redis.call('GET', P..'ids') or '0') < tonumber(ARGV[5]) then
  redis.call('SET', P..'ids', ARGV[5])
end
for i = 6, #ARGV, 4 do
  local uid, entry, lower, since = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local holder = redis.call('GET', P..'name:'..lower)
  local keep = true
  if holder and holder ~= node then
    local other = redis.call('HGET', P..'since', lower)
    local osince, ouid = string.match(other or '', '^(%S*) (%d+)$')
    if before(rank(since, uid), rank(osince, ouid)) then
      if ouid then
        redis.call('HDEL', P..'users', ouid)
        redis.call('HDEL', P..'nodeusers:'..holder, ouid)
      end
      table.insert(won, uid)
    else
      keep = false
      table.insert(lost, lower)
    end
  end
  if keep then
    redis.call('SET', P..'name:'..lower, node, 'PX', ttl)
    redis.call('SADD', P..'nodenames:'..node, lower)
    if since ~= '' then
      redis.call('HSET', P..'users', uid, entry)
      redis.call('HSET', P..'nodeusers:'..node, uid, entry)
      redis.call('HSET', P..'since', lower, since..' '..uid)
    end
  end
end
return {lost, won}
"""
)

# ARGV: prefix node token: give up our lease (a clean stop); a reap follows.
RESIGN = """
local P, node = ARGV[1], ARGV[2]
local key = P..'node:'..node
if redis.call('GET', key) == ARGV[3] then
  redis.call('DEL', key)
end
return 1
"""

# ARGV: prefix deadnode reaper n batch maxlen ttl_ms deadline_ms kept_uid*
# -> {first, id}, 1 (nothing to sequence), 0 (alive, or reaped already), -1
# (its users changed: read again).  Exactly once: the first reaper deletes
# the dead node's records, so any other finds nothing left and sequences
# nothing.  The kept uids (resumable users of the dead node, protocol 1.2)
# do not leave: the reaper adopts them (their nodeusers entry, name lease
# and token) until their window ends (deadline_ms if they were attached);
# any other token the dead node held (a user before its READY) is spent.
REAP = (
    _ROOMS
    + _STREAMS
    + """
local P, dead, reaper = ARGV[1], ARGV[2], ARGV[3]
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
local adopted, lowers = {}, {}
for k = 9, #ARGV do
  local uid = ARGV[k]
  local kept = redis.call('HGET', P..'resumable', uid)
  local hex, holder, deadline, lower = string.match(kept or '',
                                                    '^(%S+) (%S+) (%S+) (%S+)$')
  local entry = redis.call('HGET', users, uid)
  if holder ~= dead or not entry then
    return -1
  end
  if deadline == '0' then
    deadline = ARGV[8]
  end
  adopted[uid] = {entry, hex..' '..reaper..' '..deadline..' '..lower}
  lowers[lower] = true
end
if redis.call('HLEN', users) ~= n + #ARGV - 8 then
  return -1
end
for _, lower in ipairs(redis.call('SMEMBERS', names)) do
  if redis.call('GET', P..'name:'..lower) == dead and not lowers[lower] then
    redis.call('DEL', P..'name:'..lower)
    redis.call('HDEL', P..'since', lower)
  end
end
for _, uid in ipairs(redis.call('HKEYS', users)) do
  if not adopted[uid] then
    redis.call('HDEL', P..'users', uid)
    leaveRooms(P, uid)
    spendToken(P, uid, dead)
  end
end
-- A token given by the dead node to a user not yet in nodeusers (it died
-- before that user's READY) resumes nothing: spend it too.
local held = redis.call('HGETALL', P..'resumable')
for k = 1, #held, 2 do
  if not adopted[held[k]] and string.match(held[k + 1], '^%S+ (%S+)') == dead then
    spendToken(P, held[k], dead)
  end
end
redis.call('DEL', users, names)
redis.call('SREM', P..'nodes', dead)
for uid, kept in pairs(adopted) do
  redis.call('HSET', P..'nodeusers:'..reaper, uid, kept[1])
  redis.call('HSET', P..'resumable', uid, kept[2])
end
for lower in pairs(lowers) do
  redis.call('SET', P..'name:'..lower, reaper, 'PX', ARGV[7])
  redis.call('SADD', P..'nodenames:'..reaper, lower)
end
if n == 0 then
  return 1
end
local last = redis.call('INCRBY', P..'seq', n)
local first = last - n + 1
return {first, append(P, 'stream', ARGV[6], first, n, ARGV[3], ARGV[5])}
"""
)

# ARGV: prefix -> {last stream id, seq, users hash as a flat list, rooms:
# (name, topic, member count, uids in the order they entered)*, the
# stream's last number}
SNAPSHOT = """
local P = ARGV[1]
local last = redis.call('XREVRANGE', P..'stream', '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then
  id = last[1][1]
end
local rooms = {}
for _, lower in ipairs(redis.call('SMEMBERS', P..'roomset')) do
  local flat = redis.call('HGETALL', P..'roommembers:'..lower)
  local members = {}
  for k = 1, #flat, 2 do
    table.insert(members, {tonumber(flat[k + 1]), flat[k]})
  end
  table.sort(members, function(x, y) return x[1] < y[1] end)
  table.insert(rooms, redis.call('HGET', P..'roomnames', lower) or lower)
  table.insert(rooms, redis.call('HGET', P..'roomtopics', lower) or '')
  table.insert(rooms, #members)
  for _, m in ipairs(members) do
    table.insert(rooms, m[2])
  end
end
return {id, redis.call('GET', P..'seq') or '0', redis.call('HGETALL', P..'users'),
        rooms, redis.call('HGET', P..'streamlast', 'stream') or '0'}
"""

SCRIPTS = {
    "submit": SUBMIT,
    "claim": CLAIM,
    "release": RELEASE,
    "heartbeat": HEARTBEAT,
    "register": REGISTER,
    "reclaim": RECLAIM,
    "resign": RESIGN,
    "reap": REAP,
    "snapshot": SNAPSHOT,
    **RESUME_SCRIPTS,
}

SHA = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in SCRIPTS.items()}
