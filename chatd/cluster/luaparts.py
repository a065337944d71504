"""Lua shared by the cluster's scripts: the lease check every script of a
node starts with, leaving rooms (the snapshot's room keys),
spending a leaving user's resume token, and appending to a stream."""

LEASE = """
local P, node = ARGV[1], ARGV[2]
if redis.call('GET', P..'node:'..node) ~= ARGV[3] then
  return redis.error_reply('LEASE lost '..(redis.call('GET', P..'epoch') or '-'))
end
"""

ROOMS = """
local function leaveRoom(P, lower, uid)
  local key = P..'roommembers:'..lower
  redis.call('HDEL', key, uid)
  redis.call('SREM', P..'userrooms:'..uid, lower)
  if redis.call('HLEN', key) == 0 then
    redis.call('SREM', P..'roomset', lower)
    redis.call('HDEL', P..'roomnames', lower)
    redis.call('HDEL', P..'roomtopics', lower)
  end
end
local function leaveRooms(P, uid)
  for _, lower in ipairs(redis.call('SMEMBERS', P..'userrooms:'..uid)) do
    leaveRoom(P, lower, uid)
  end
  redis.call('DEL', P..'userrooms:'..uid)
end
local function spendToken(P, uid, node)
  local kept = redis.call('HGET', P..'resumable', uid)
  if kept and string.match(kept, '^%S+ (%S+)') == node then
    redis.call('DEL', P..'token:'..string.match(kept, '^(%S+)'))
    redis.call('HDEL', P..'resumable', uid)
  end
end
"""

# append(P, name, maxlen, first, n, node, batch, extra fields...): XADD to the
# stream P..name an entry numbered first..first+n-1 (``p``: the stream's
# last number before it, so a reader sees a gap in that stream alone;
# ``streamlast`` keeps it per stream).  rooms(P, lowers): each room's
# stream cursor (its last entry id), as "lower id lower id ...".
STREAMS = """
local function append(P, name, maxlen, first, n, node, batch, ...)
  local prev = redis.call('HGET', P..'streamlast', name) or '0'
  if n > 0 then
    redis.call('HSET', P..'streamlast', name, first + n - 1)
  end
  return redis.call('XADD', P..name, 'MAXLEN', '~', maxlen, '*',
                    's', first, 'p', prev, 'n', node, 'b', batch, ...)
end
local function cursors(P, lowers)
  local r = {}
  for _, lower in ipairs(lowers) do
    local top = redis.call('XREVRANGE', P..'roomstream:'..lower, '+', '-', 'COUNT', 1)
    table.insert(r, lower..' '..((top[1] and top[1][1]) or '0-0'))
  end
  return table.concat(r, ' ')
end
"""
