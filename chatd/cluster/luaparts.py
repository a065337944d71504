"""Lua shared by the cluster's scripts: the lease check every script of a
node starts with, leaving rooms (the snapshot's room keys) and
spending a leaving user's resume token."""

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
