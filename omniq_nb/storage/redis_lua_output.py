"""Lua of the Redis store's result cache (lookup, forget) and kept task output (append, read).

Keys, under the prefix ``P`` (see ``redis_lua`` for the rest of the layout):

- ``P:cache:KEY`` the ids of the tasks inserted with ``cache_key`` KEY, and ``P:cached`` the
  ids of every task with a ``cache_key`` (what ``forget_cached`` scans): both filled by the
  insert script, only for a task that has a key, and emptied by purge and ``forget_cached``;
- ``P:o:ID`` a task's output stream (entry id ``SEQ-0``, fields ``s`` stream, ``x`` text),
  ``P:os:ID`` the list of its kept chunks' sizes (``"BYTES LINES"``, oldest first) and
  ``P:om:ID`` a hash of the next seq and the kept bytes and lines: trimming pops sizes, never
  reads text. Purge deletes the three with the task.
"""

from __future__ import annotations

from omniq_nb.storage.redis_lua import PRELUDE

__all__ = ["APPEND_OUTPUT", "CACHED", "FORGET_CACHED", "OUTPUT"]

CACHED = (
    PRELUDE
    + r"""
-- ARGV[4]: finished_after ('' none); ARGV[5] on: cache keys; returns {key, hash, key, hash, ...}:
-- for each key some succeeded task has (finished at or after finished_after), the newest one's hash
local after = ARGV[4] ~= '' and tonumber(ARGV[4])
local found = {}
for i = 5, #ARGV do
  local key = ARGV[i]
  local best, best_at = false, false
  for _, id in ipairs(redis.call('SMEMBERS', P .. ':cache:' .. key)) do
    local f = redis.call('HMGET', tkey(id), 'status', 'finished_at', 'cache_key')
    if f[1] == 'succeeded' and f[2] and f[3] == key then
      local at = tonumber(f[2])
      if (not after or at >= after) and (not best or at > best_at) then best, best_at = id, at end
    end
  end
  if best then
    found[#found + 1] = key
    found[#found + 1] = redis.call('HGETALL', tkey(best))
  end
end
return found
"""
)

FORGET_CACHED = (
    PRELUDE
    + r"""
-- ARGV[4]: SSCAN cursor of P:cached; ARGV[5]: '1' to forget only the tasks named ARGV[6];
-- returns {next cursor ('0': done), how many tasks lost their key}
local reply = redis.call('SSCAN', P .. ':cached', ARGV[4], 'COUNT', 500)
local named, name, forgotten = ARGV[5] == '1', ARGV[6], 0
for _, id in ipairs(reply[2]) do
  local f = redis.call('HMGET', tkey(id), 'name', 'cache_key')
  if not f[2] then
    redis.call('SREM', P .. ':cached', id)
  elseif not named or f[1] == name then
    redis.call('HDEL', tkey(id), 'cache_key')
    redis.call('SREM', P .. ':cache:' .. f[2], id)
    redis.call('SREM', P .. ':cached', id)
    forgotten = forgotten + 1
  end
end
return {reply[1], forgotten}
"""
)

APPEND_OUTPUT = (
    PRELUDE
    + r"""
-- ARGV[4]: task id; ARGV[5], ARGV[6]: the limits in bytes and lines; then per chunk: stream,
-- text, bytes, lines. Appends with the next seqs, then drops the oldest chunks while over a
-- limit (the newest always stays); a task that does not exist gets none.
local id = ARGV[4]
if redis.call('EXISTS', tkey(id)) == 0 then return 0 end
local stream, sizes, meta = P .. ':o:' .. id, P .. ':os:' .. id, P .. ':om:' .. id
local m = redis.call('HMGET', meta, 'next', 'bytes', 'lines')
local seq, bytes, lines = tonumber(m[1] or '1'), tonumber(m[2] or '0'), tonumber(m[3] or '0')
for i = 7, #ARGV, 4 do
  redis.call('XADD', stream, seq .. '-0', 's', ARGV[i], 'x', ARGV[i + 1])
  redis.call('RPUSH', sizes, ARGV[i + 2] .. ' ' .. ARGV[i + 3])
  bytes, lines, seq = bytes + tonumber(ARGV[i + 2]), lines + tonumber(ARGV[i + 3]), seq + 1
end
local limit_bytes, limit_lines = tonumber(ARGV[5]), tonumber(ARGV[6])
local kept = redis.call('LLEN', sizes)
local dropped = 0
while kept - dropped > 1 and (bytes > limit_bytes or lines > limit_lines) do
  local b, l = string.match(redis.call('LPOP', sizes), '(%d+) (%d+)')
  bytes, lines, dropped = bytes - tonumber(b), lines - tonumber(l), dropped + 1
end
if dropped > 0 then redis.call('XTRIM', stream, 'MAXLEN', kept - dropped) end
redis.call('HSET', meta, 'next', seq, 'bytes', bytes, 'lines', lines)
return 1
"""
)

OUTPUT = (
    PRELUDE
    + r"""
-- ARGV[4]: task id; ARGV[5]: after (a seq); ARGV[6]: limit;
-- returns {the oldest kept entry's id ('' none), up to limit entries with seq > after}
local stream, limit = P .. ':o:' .. ARGV[4], tonumber(ARGV[6])
local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
if #head == 0 then return {'', {}} end
if limit < 1 then return {head[1][1], {}} end
return {head[1][1], redis.call('XRANGE', stream, (tonumber(ARGV[5]) + 1) .. '-0', '+', 'COUNT', limit)}
"""
)
