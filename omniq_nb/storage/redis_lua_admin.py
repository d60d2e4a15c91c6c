"""The Redis store's other Lua scripts: leases, cancel, requeue, expiry, reads, dependencies, purge, registry.

Each builds on ``redis_lua.PRELUDE`` (the prefix, events flag and cap in ``ARGV[1..3]``,
the server's clock, the key helpers); see ``redis_lua`` for the key layout.
"""

from __future__ import annotations

from omniq_nb.storage.redis_lua import PRELUDE

__all__ = [
    "CANCEL",
    "CHECK",
    "DEPENDENTS",
    "EXPIRE",
    "EXPIRED_LEASES",
    "GET_MANY",
    "HEARTBEAT",
    "LEAD",
    "MOVE_DEPENDENTS",
    "PROGRESS",
    "PURGE",
    "RELEASE",
    "RENEW",
    "REQUEST_STOP",
    "REQUEUE",
    "UNREGISTER",
    "WORKERS",
]

RELEASE = (
    PRELUDE
    + r"""
-- ARGV[4..]: id, token pairs
local released = {}
for i = 4, #ARGV, 2 do
  local id, key = ARGV[i], tkey(ARGV[i])
  local f = redis.call('HMGET', key, 'status', 'lease_token', 'seq')
  if f[1] == 'running' and f[2] == ARGV[i + 1] then
    redis.call('HSET', key, 'status', 'pending')
    redis.call('HINCRBY', key, 'attempt', -1)
    redis.call('HDEL', key, 'lease_token', 'lease_until', 'worker')
    restatus(id, f[3], 'running', 'pending')
    redis.call('ZREM', P .. ':running', id)
    place(id)
    task_event(id, 'released', false)
    released[#released + 1] = redis.call('HGETALL', key)
  end
end
wake()
return released
"""
)

RENEW = (
    PRELUDE
    + r"""
-- ARGV[4]: lease seconds; ARGV[5..]: id, token pairs
local until_ = stamp(NOWF + tonumber(ARGV[4]))
local held = {}
for i = 5, #ARGV, 2 do
  local key = tkey(ARGV[i])
  local f = redis.call('HMGET', key, 'status', 'lease_token')
  if f[1] == 'running' and f[2] == ARGV[i + 1] then
    redis.call('HSET', key, 'lease_until', until_)
    redis.call('ZADD', P .. ':running', until_, ARGV[i])
    held[#held + 1] = ARGV[i]
  end
end
return held
"""
)

PROGRESS = (
    PRELUDE
    + r"""
-- ARGV: id, token, done, total ('' none), message flag, message, fraction
local id, key = ARGV[4], tkey(ARGV[4])
local f = redis.call('HMGET', key, 'status', 'lease_token')
if f[1] ~= 'running' or f[2] ~= ARGV[5] then return 0 end
redis.call('HSET', key, 'progress_done', ARGV[6], 'progress', ARGV[10])
if ARGV[7] ~= '' then
  redis.call('HSET', key, 'progress_total', ARGV[7])
else
  redis.call('HDEL', key, 'progress_total')
end
local message = false
if ARGV[8] == '1' then
  message = ARGV[9]
  redis.call('HSET', key, 'progress_message', message)
else
  redis.call('HDEL', key, 'progress_message')
end
task_event(id, 'progress', message)
return 1
"""
)

CANCEL = (
    PRELUDE
    + r"""
-- ARGV[4]: the task id; its series' unfinished runs are cancelled with it
local id = ARGV[4]
local series = redis.call('HGET', tkey(id), 'series')
if redis.call('EXISTS', tkey(id)) == 0 then return false end
local targets = {id}
if series then
  for _, other in ipairs(redis.call('SMEMBERS', P .. ':series:' .. series)) do
    if other ~= id then targets[#targets + 1] = other end
  end
end
for _, t in ipairs(targets) do
  local f = redis.call('HMGET', tkey(t), 'status', 'seq')
  if f[1] == 'waiting' or f[1] == 'pending' or f[1] == 'running' then
    if f[1] == 'pending' then unplace(t) end
    finish(t, f[2], f[1], 'cancelled')
    task_event(t, 'cancelled', false)
  end
end
return redis.call('HGETALL', tkey(id))
"""
)

REQUEUE = (
    PRELUDE
    + r"""
-- ARGV[4]: the task id
local id, key = ARGV[4], tkey(ARGV[4])
if redis.call('EXISTS', key) == 0 then return false end
local f = redis.call('HMGET', key, 'status', 'seq', 'retries', 'attempt', 'expires_at', 'created_at', 'series')
if f[1] == 'failed' or f[1] == 'cancelled' or f[1] == 'expired' then
  redis.call('HSET', key, 'status', 'pending', 'eta', NOW,
    'retries', math.max(tonumber(f[3]), tonumber(f[4])))
  redis.call('HDEL', key, 'finished_at', 'lease_token', 'lease_until')
  if f[5] then
    redis.call('HSET', key, 'expires_at', stamp(NOWF + tonumber(f[5]) - tonumber(f[6])))
  end
  restatus(id, f[2], f[1], 'pending')
  redis.call('ZREM', P .. ':done', id)
  redis.call('ZREM', P .. ':ttl', id)
  if f[7] then redis.call('SADD', P .. ':series:' .. f[7], id) end
  place(id)
  task_event(id, 'retried', false)
  wake()
end
return redis.call('HGETALL', key)
"""
)

EXPIRE = (
    PRELUDE
    + r"""
local expired = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':expiry', '-inf', NOW)) do
  local f = redis.call('HMGET', tkey(id), 'status', 'seq')
  if f[1] == 'pending' then
    unplace(id)
    finish(id, f[2], 'pending', 'expired')
    task_event(id, 'expired', false)
    expired[#expired + 1] = redis.call('HGETALL', tkey(id))
  else
    redis.call('ZREM', P .. ':expiry', id)
  end
end
return expired
"""
)

EXPIRED_LEASES = (
    PRELUDE
    + r"""
-- ARGV[4]: the most tasks to return
local found = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':running', '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[4]))) do
  found[#found + 1] = redis.call('HGETALL', tkey(id))
end
return found
"""
)

GET_MANY = (
    PRELUDE
    + r"""
-- ARGV[4..]: task ids; returns each one's hash (empty where there is none)
local found = {}
for i = 4, #ARGV do found[#found + 1] = redis.call('HGETALL', tkey(ARGV[i])) end
return found
"""
)

PURGE = (
    PRELUDE
    + r"""
-- ARGV: everything flag, finished_before ('' none), limit, statuses...; returns {gone, more}
local everything, before, limit = ARGV[4] == '1', ARGV[5], tonumber(ARGV[6])
local wanted = {}
for i = 7, #ARGV do wanted[ARGV[i]] = true end

local function remove(id)
  local key = tkey(id)
  local f = redis.call('HMGET', key, 'status', 'queue', 'eta', 'seq', 'series', 'depends_on', 'cache_key')
  for _, set in ipairs({'all', 'delayed', 'running', 'expiry', 'done', 'ttl'}) do
    redis.call('ZREM', P .. ':' .. set, id)
  end
  if not f[1] then return 0 end
  redis.call('ZREM', P .. ':q:' .. f[2], member(f[3], f[4], id))
  redis.call('ZREM', P .. ':s:' .. f[1], id)
  if f[5] then redis.call('SREM', P .. ':series:' .. f[5], id) end
  for dependency in string.gmatch(f[6] or '', '[^\n]+') do
    redis.call('SREM', P .. ':dependents:' .. dependency, id)
  end
  if f[7] then
    redis.call('SREM', P .. ':cache:' .. f[7], id)
    redis.call('SREM', P .. ':cached', id)
  end
  for _, seq in ipairs(redis.call('LRANGE', P .. ':te:' .. id, 0, -1)) do
    redis.call('XDEL', P .. ':ev', seq .. '-0')
  end
  redis.call('DEL', key, P .. ':te:' .. id, P .. ':o:' .. id, P .. ':os:' .. id, P .. ':om:' .. id)
  return 1
end

local gone = 0
if everything then
  while true do
    local ids = redis.call('ZRANGE', P .. ':all', 0, 999)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do gone = gone + remove(id) end
  end
  redis.call('DEL', P .. ':ev', P .. ':fn')
  return {gone, 0}
end
local due = redis.call('ZRANGEBYSCORE', P .. ':ttl', '-inf', NOW, 'LIMIT', 0, limit)
for _, id in ipairs(due) do gone = gone + remove(id) end
if before ~= '' then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':done', '-inf', '(' .. before)) do
    if wanted[redis.call('HGET', tkey(id), 'status')] then gone = gone + remove(id) end
  end
end
return {gone, #due == limit and 1 or 0}
"""
)

DEPENDENTS = (
    PRELUDE
    + r"""
-- ARGV[4..]: task ids; returns the hash of each task depending on any of them, once each
local seen, found = {}, {}
for i = 4, #ARGV do
  for _, id in ipairs(redis.call('SMEMBERS', P .. ':dependents:' .. ARGV[i])) do
    if not seen[id] then
      seen[id] = true
      local fields = redis.call('HGETALL', tkey(id))
      if #fields > 0 then found[#found + 1] = fields end
    end
  end
end
return found
"""
)

MOVE_DEPENDENTS = (
    PRELUDE
    + r"""
-- ARGV[4..]: per move: task id, source, target, event kind, error JSON ('' none), message;
-- a move applies only while the task is in its source (waiting, or a finished status)
local moved = {}
for i = 4, #ARGV, 6 do
  local id, source, target, kind, err = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local key = tkey(id)
  local f = redis.call('HMGET', key, 'status', 'seq', 'series')
  if f[1] == source then
    if err ~= '' then redis.call('HSET', key, 'error', err) else redis.call('HDEL', key, 'error') end
    if target == 'pending' or target == 'waiting' then
      redis.call('HSET', key, 'status', target)
      redis.call('HDEL', key, 'finished_at')
      restatus(id, f[2], source, target)
      redis.call('ZREM', P .. ':done', id)  -- left a finished status (no-ops from waiting)
      redis.call('ZREM', P .. ':ttl', id)
      if f[3] then redis.call('SADD', P .. ':series:' .. f[3], id) end
      if target == 'pending' then place(id) end
    else
      finish(id, f[2], source, target)
    end
    task_event(id, kind, err ~= '' and ARGV[i + 5])
    moved[#moved + 1] = redis.call('HGETALL', key)
  end
end
wake()
return moved
"""
)

HEARTBEAT = (
    PRELUDE
    + r"""
-- ARGV: id, ttl, started_at ('' none), then field/value pairs; returns 1 when asked to stop
local id, ttl, started = ARGV[4], tonumber(ARGV[5]), ARGV[6]
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', P .. ':workers', '-inf', NOW)) do
  redis.call('DEL', P .. ':w:' .. dead)
  redis.call('ZREM', P .. ':workers', dead)
end
local key = P .. ':w:' .. id
local known = redis.call('HGET', key, 'started_at')
if not known then known = started ~= '' and started or NOW end
local fields = {'HSET', key, 'heartbeat', NOW, 'started_at', known}
for i = 7, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]; fields[#fields + 1] = ARGV[i + 1]
end
redis.call(unpack(fields))
redis.call('ZADD', P .. ':workers', stamp(NOWF + ttl), id)
if redis.call('HGET', key, 'stop_requested') == '1' then return 1 end
return 0
"""
)

WORKERS = (
    PRELUDE
    + r"""
local found = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':workers', '(' .. NOW, '+inf')) do
  found[#found + 1] = redis.call('HGETALL', P .. ':w:' .. id)
end
return found
"""
)

REQUEST_STOP = (
    PRELUDE
    + r"""
local deadline = redis.call('ZSCORE', P .. ':workers', ARGV[4])
if not deadline or tonumber(deadline) <= NOWF then return 0 end
redis.call('HSET', P .. ':w:' .. ARGV[4], 'stop_requested', '1')
return 1
"""
)

UNREGISTER = (
    PRELUDE
    + r"""
redis.call('DEL', P .. ':w:' .. ARGV[4])
redis.call('ZREM', P .. ':workers', ARGV[4])
return 0
"""
)

CHECK = (
    PRELUDE
    + r"""
-- ARGV: stale_after, the most ids to return, statuses...;
-- returns {count per status..., expired leases, stale leases, {stale ids}}
local out = {}
for i = 6, #ARGV do out[#out + 1] = redis.call('ZCARD', P .. ':s:' .. ARGV[i]) end
local stale_at = stamp(NOWF - tonumber(ARGV[4]))
out[#out + 1] = redis.call('ZCOUNT', P .. ':running', '-inf', NOW)
out[#out + 1] = redis.call('ZCOUNT', P .. ':running', '-inf', stale_at)
out[#out + 1] = redis.call('ZRANGEBYSCORE', P .. ':running', '-inf', stale_at, 'LIMIT', 0, tonumber(ARGV[5]))
return out
"""
)

LEAD = r"""
-- KEYS[1]: the election key; ARGV: runner, term in milliseconds. The holder extends its turn;
-- anyone else takes it only when nobody holds it (SET NX PX).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
