"""Lua of the Redis store's ``OutcomeStore`` role: events of a queue kept elsewhere, and forgetting them.

Keys under the prefix ``P``: the event stream and per-task seq lists of the store's own
events (``ev``, ``te:ID``), the set of tasks that have appended events (``evtasks``), their
purge times (``evgone``: score the time, member the task; ``evgone_seq``: the seq of the event
that set it), and kept results (``kr:TOKEN:ID`` strings, indexed by ``krall`` (all) and
``krexp`` (score: when each may go)).
"""

from __future__ import annotations

from omniq_nb.storage.redis_lua import PRELUDE

__all__ = ["APPEND_EVENTS", "FORGET_OUTCOMES", "KEEP_RESULTS"]

KEEP_RESULTS = (
    PRELUDE
    + r"""
-- ARGV: count, then per result: key, bytes, when it may go ('' never)
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  local key, blob, due = ARGV[5 + 3 * i], ARGV[6 + 3 * i], ARGV[7 + 3 * i]
  redis.call('SET', key, blob)
  redis.call('ZADD', P .. ':krall', NOW, key)
  if due ~= '' then redis.call('ZADD', P .. ':krexp', due, key) else redis.call('ZREM', P .. ':krexp', key) end
end
return n
"""
)

APPEND_EVENTS = (
    PRELUDE
    + r"""
-- ARGV: count, then per event: task, kind, at, status, attempt, progress, message, run id ('' none);
-- then the purge count and per task: id, when its events go
local n = tonumber(ARGV[4])
local base = 5
for i = 0, n - 1 do
  local a = base + 8 * i
  local function opt(v) if v == '' then return false end return v end
  event(ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], opt(ARGV[a + 5]), opt(ARGV[a + 6]),
    opt(ARGV[a + 7]))
  redis.call('SADD', P .. ':evtasks', ARGV[a])
end
local m = tonumber(ARGV[base + 8 * n])
for j = 0, m - 1 do
  local id, due = ARGV[base + 8 * n + 1 + 2 * j], ARGV[base + 8 * n + 2 + 2 * j]
  local last = redis.call('LINDEX', P .. ':te:' .. id, -1)
  if last then
    redis.call('ZADD', P .. ':evgone', due, id)
    redis.call('HSET', P .. ':evgone_seq', id, last)
  end
end
return n
"""
)

FORGET_OUTCOMES = (
    PRELUDE
    + r"""
-- ARGV: everything flag, limit; returns how many kept results went
local everything, limit = ARGV[4] == '1', tonumber(ARGV[5])

local function drop_events(id)
  for _, seq in ipairs(redis.call('LRANGE', P .. ':te:' .. id, 0, -1)) do
    redis.call('XDEL', P .. ':ev', seq .. '-0')
  end
  redis.call('DEL', P .. ':te:' .. id)
  redis.call('SREM', P .. ':evtasks', id)
end

local gone = 0
if everything then
  for _, key in ipairs(redis.call('ZRANGE', P .. ':krall', 0, -1)) do redis.call('DEL', key); gone = gone + 1 end
  for _, id in ipairs(redis.call('SMEMBERS', P .. ':evtasks')) do drop_events(id) end
  redis.call('DEL', P .. ':krall', P .. ':krexp', P .. ':evgone', P .. ':evgone_seq', P .. ':ev')
  return gone
end
for _, key in ipairs(redis.call('ZRANGEBYSCORE', P .. ':krexp', '-inf', NOW, 'LIMIT', 0, limit)) do
  redis.call('DEL', key)
  redis.call('ZREM', P .. ':krexp', key)
  redis.call('ZREM', P .. ':krall', key)
  gone = gone + 1
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':evgone', '-inf', NOW, 'LIMIT', 0, limit)) do
  local marked = tonumber(redis.call('HGET', P .. ':evgone_seq', id) or '0')
  local last = tonumber(redis.call('LINDEX', P .. ':te:' .. id, -1) or '0')
  if last <= marked then drop_events(id) end  -- newer events: it was requeued, and lives on
  redis.call('ZREM', P .. ':evgone', id)
  redis.call('HDEL', P .. ':evgone_seq', id)
end
return gone
"""
)
