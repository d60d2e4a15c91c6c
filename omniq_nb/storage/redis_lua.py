"""Lua of the Redis store's hot path (insert, claim, settle) and the helpers every script shares.

One script per transition, each atomic on the server.

Every script starts with ``PRELUDE``: its first three arguments are the key prefix, the
events flag (``1``: record events) and the event stream's approximate cap; ``ARGV`` past
those are the script's own. Times come from ``TIME`` on the server, written as decimal text
with microseconds (``"1764700000.123456"``), never through Lua's ``tostring`` (14 digits).

Keys, all under the prefix ``P``:

- ``P:t:ID`` a task's hash (the ``rows.COLUMNS`` names, plus ``seq``: enqueue order);
- ``P:q:QUEUE`` the queue's ready set: score ``-priority``, member ``eta (20 digits of
  microseconds) .. seq (12 digits) .. id``, so ``ZRANGE 0 n`` is priority desc, eta, enqueue order;
- ``P:delayed`` pending tasks whose eta is ahead (score eta), moved to their ready set by the
  claim once the server's clock passes it;
- ``P:running`` (score lease_until), ``P:expiry`` (pending tasks with a TTL, score expires_at),
  ``P:done`` (finished, score finished_at), ``P:ttl`` (finished with a result_ttl, score purge time);
- ``P:all`` and ``P:s:STATUS`` (score seq): listings newest first and counts per status;
- ``P:series:SERIES`` the unfinished runs of a periodic series;
- ``P:dependents:ID`` the ids of the tasks whose ``depends_on`` names ``ID`` (written at insert,
  removed with the dependent; a ``waiting`` task is in no ready or delayed set);
- ``P:cache:KEY``, ``P:cached`` the result cache's index, and ``P:o:ID``, ``P:os:ID``,
  ``P:om:ID`` a task's kept output (see ``redis_lua_output``);
- ``P:ev`` the event stream (entry id ``SEQ-0``), ``P:evseq`` its counter, ``P:te:ID`` a task's event seqs;
- ``P:fn`` batches' pickled functions by digest (kept by ``INSERT_MANY``, until a purge of everything);
- ``P:seq`` the enqueue counter, ``P:meta`` the layout version, ``P:w:ID`` and ``P:workers``
  the worker registry, ``P:lead`` the maintenance turn, and the pub/sub channel ``P:wake``.
"""

from __future__ import annotations

__all__ = [
    "CLAIM",
    "INSERT",
    "INSERT_MANY",
    "PRELUDE",
    "SETTLE",
]

PRELUDE = r"""
local P = ARGV[1]
local EVENTS = ARGV[2] == '1'
local CAP = ARGV[3]
local WAKE = false
local clock = redis.call('TIME')
local NOW = clock[1] .. '.' .. string.format('%06d', tonumber(clock[2]))
local NOWF = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local function stamp(seconds)
  return string.format('%.6f', seconds)
end

local function tkey(id)
  return P .. ':t:' .. id
end

local function member(eta, seq, id)
  return string.format('%020.0f', tonumber(eta) * 1000000) .. string.format('%012d', tonumber(seq)) .. id
end

local function event(id, kind, at, status, attempt, progress, message, run_id)
  if not EVENTS then return end
  local seq = redis.call('INCR', P .. ':evseq')
  local entry = {'XADD', P .. ':ev', 'MAXLEN', '~', CAP, seq .. '-0',
    't', id, 'k', kind, 'a', at, 's', status, 'n', attempt or '0'}
  if progress then entry[#entry + 1] = 'p'; entry[#entry + 1] = progress end
  if message then entry[#entry + 1] = 'm'; entry[#entry + 1] = message end
  if run_id then entry[#entry + 1] = 'r'; entry[#entry + 1] = run_id end
  redis.call(unpack(entry))
  redis.call('RPUSH', P .. ':te:' .. id, seq)
end

-- a task's event from its hash: status, attempt, progress, run_id as stored now
local function task_event(id, kind, message)
  local f = redis.call('HMGET', tkey(id), 'status', 'attempt', 'progress', 'run_id')
  event(id, kind, NOW, f[1], f[2], f[3] or '0', message, f[4])
end

local function restatus(id, seq, from, to)
  redis.call('ZREM', P .. ':s:' .. from, id)
  redis.call('ZADD', P .. ':s:' .. to, seq, id)
end

-- put a pending task where a claim finds it: its ready set, or the delayed set until its eta
-- (from its fields as read: queue, priority, eta, seq, expires_at)
local function place_as(id, queue, priority, eta, seq, expires_at)
  if tonumber(eta) > NOWF then
    redis.call('ZADD', P .. ':delayed', eta, id)
  else
    redis.call('ZADD', P .. ':q:' .. queue, -tonumber(priority), member(eta, seq, id))
    WAKE = true
  end
  if expires_at then redis.call('ZADD', P .. ':expiry', expires_at, id) end
end

local function place(id)
  local f = redis.call('HMGET', tkey(id), 'queue', 'priority', 'eta', 'seq', 'expires_at')
  place_as(id, f[1], f[2], f[3], f[4], f[5])
end

-- take a pending task out of its ready or delayed set (and the expiry set)
local function unplace(id)
  local f = redis.call('HMGET', tkey(id), 'queue', 'eta', 'seq')
  redis.call('ZREM', P .. ':q:' .. f[1], member(f[2], f[3], id))
  redis.call('ZREM', P .. ':delayed', id)
  redis.call('ZREM', P .. ':expiry', id)
end

-- a task enters a finished status: stamp it, index it for purge, leave its series
local function finish(id, seq, from, to)
  local f = redis.call('HMGET', tkey(id), 'result_ttl', 'series')
  redis.call('HSET', tkey(id), 'status', to, 'finished_at', NOW)
  redis.call('HDEL', tkey(id), 'lease_until')
  restatus(id, seq, from, to)
  redis.call('ZREM', P .. ':running', id)
  redis.call('ZADD', P .. ':done', NOW, id)
  if f[1] then redis.call('ZADD', P .. ':ttl', stamp(NOWF + tonumber(f[1])), id) end
  if f[2] then redis.call('SREM', P .. ':series:' .. f[2], id) end
end

-- insert one new task: ``own`` and ``shared`` are flat field/value lists (``shared``: values
-- every task of a batch has, ``own`` wins); returns whether it was inserted (false: the id exists)
local function insert_task(id, own, shared)
  local key = tkey(id)
  if redis.call('EXISTS', key) == 1 then return false end
  local seq = redis.call('INCR', P .. ':seq')
  local fields = {'HSET', key, 'seq', seq}
  local values = {}
  for _, list in ipairs({shared, own}) do
    for i = 1, #list, 2 do
      fields[#fields + 1] = list[i]; fields[#fields + 1] = list[i + 1]
      values[list[i]] = list[i + 1]
    end
  end
  redis.call(unpack(fields))
  redis.call('ZADD', P .. ':all', seq, id)
  redis.call('ZADD', P .. ':s:' .. values.status, seq, id)
  if values.status == 'pending' then
    place_as(id, values.queue, values.priority, values.eta, seq, values.expires_at)
  end
  if values.series and (values.status == 'pending' or values.status == 'running' or values.status == 'waiting') then
    redis.call('SADD', P .. ':series:' .. values.series, id)
  end
  for dependency in string.gmatch(values.depends_on or '', '[^\n]+') do
    redis.call('SADD', P .. ':dependents:' .. dependency, id)
  end
  if values.cache_key then
    redis.call('SADD', P .. ':cache:' .. values.cache_key, id)
    redis.call('SADD', P .. ':cached', id)
  end
  event(id, 'enqueued', values.created_at, values.status, values.attempt)
  return true
end

-- refuse a batch whose ids exist or repeat, before anything is written
local function refuse_duplicates(ids)
  local seen = {}
  for _, id in ipairs(ids) do
    if seen[id] or redis.call('EXISTS', tkey(id)) == 1 then return redis.error_reply('DUPLICATE ' .. id) end
    seen[id] = true
  end
  return false
end

local function wake()
  if WAKE then redis.call('PUBLISH', P .. ':wake', '') end
end
"""

INSERT = (
    PRELUDE
    + r"""
-- ARGV[4]: count; then per task: id, n, n field/value pairs. All or none.
local tasks, at = {}, 5
for _ = 1, tonumber(ARGV[4]) do
  local n = tonumber(ARGV[at + 1])
  local own = {}
  for i = at + 2, at + 1 + 2 * n do own[#own + 1] = ARGV[i] end
  tasks[#tasks + 1] = {ARGV[at], own}
  at = at + 2 + 2 * n
end
local ids = {}
for i, t in ipairs(tasks) do ids[i] = t[1] end
local refused = refuse_duplicates(ids)
if refused then return refused end
for _, t in ipairs(tasks) do insert_task(t[1], t[2], {}) end
wake()
return #tasks
"""
)

INSERT_MANY = (
    PRELUDE
    + r"""
-- ARGV[4]: periodic ('1': each task is its own series); ARGV[5], ARGV[6]: the digest ('' none)
-- and body of the callable the payloads name; ARGV[7]: m, then m field/value pairs every task
-- shares; then id, payload per task. All or none.
local periodic, m = ARGV[4] == '1', tonumber(ARGV[7])
local shared = {}
for i = 8, 7 + 2 * m do shared[#shared + 1] = ARGV[i] end
local ids = {}
for i = 8 + 2 * m, #ARGV, 2 do ids[#ids + 1] = ARGV[i] end
local refused = refuse_duplicates(ids)
if refused then return refused end
if ARGV[5] ~= '' then redis.call('HSETNX', P .. ':fn', ARGV[5], ARGV[6]) end
for i = 8 + 2 * m, #ARGV, 2 do
  local id = ARGV[i]
  local own = {'id', id, 'payload', ARGV[i + 1]}
  if periodic then own[5] = 'series'; own[6] = id end
  insert_task(id, own, shared)
end
wake()
return #ids
"""
)

CLAIM = (
    PRELUDE
    + r"""
-- ARGV: lease, worker, unowned_only, owner, limit, queue count, queues..., then the lease tokens and
-- run ids as one hex text: 48 digits per task (32 of token, 16 of run id), then the kinds to skip
-- (comma-separated; a task of such a kind stays pending for a pool that runs it)
local lease, worker, unowned, owner = tonumber(ARGV[4]), ARGV[5], ARGV[6] == '1', ARGV[7]
local limit, nq = tonumber(ARGV[8]), tonumber(ARGV[9])
local queues = {}
for i = 1, nq do queues[i] = ARGV[9 + i] end
local tokens = ARGV[10 + nq]
local skipped = {}
for kind in string.gmatch(ARGV[11 + nq] or '', '[^,]+') do skipped[kind] = true end

-- delayed tasks whose eta has passed join their ready sets
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':delayed', '-inf', NOW, 'LIMIT', 0, 5000)) do
  redis.call('ZREM', P .. ':delayed', id)
  if redis.call('HGET', tkey(id), 'status') == 'pending' then place(id) end
end

local live = {}
if unowned then
  for _, w in ipairs(redis.call('ZRANGEBYSCORE', P .. ':workers', '(' .. NOW, '+inf')) do
    local kernel = redis.call('HGET', P .. ':w:' .. w, 'kernel')
    if kernel then live[kernel] = true end
  end
end

-- merge the queues' ready sets in order; nothing is removed until the choice is made
local batch = math.max(limit, 16)
local buffers, offsets, heads = {}, {}, {}
local function refill(q)
  local rows = redis.call('ZRANGE', P .. ':q:' .. queues[q], offsets[q], offsets[q] + batch - 1, 'WITHSCORES')
  offsets[q] = offsets[q] + #rows / 2
  buffers[q], heads[q] = rows, 1
end
for q = 1, nq do offsets[q] = 0; refill(q) end

local chosen = {}
while #chosen < limit do
  local best = nil
  for q = 1, nq do
    if heads[q] > #buffers[q] and #buffers[q] == 2 * batch then refill(q) end
    local h = heads[q]
    if h <= #buffers[q] then
      if best == nil then
        best = q
      else
        local b = heads[best]
        local s, bs = tonumber(buffers[q][h + 1]), tonumber(buffers[best][b + 1])
        if s < bs or (s == bs and buffers[q][h] < buffers[best][b]) then best = q end
      end
    end
  end
  if best == nil then break end
  local m = buffers[best][heads[best]]
  heads[best] = heads[best] + 2
  local id = string.sub(m, 33)
  local f = redis.call('HMGET', tkey(id), 'expires_at', 'owner', 'seq', 'attempt', 'progress_total',
    'progress_message', 'kind')
  local fresh = not f[1] or tonumber(f[1]) > NOWF
  local allowed = (not unowned or not f[2] or f[2] == owner or not live[f[2]]) and not (f[7] and skipped[f[7]])
  if fresh and allowed then chosen[#chosen + 1] = {best, m, id, f} end
end

local claimed = {}
for n, pick in ipairs(chosen) do
  local q, m, id, f = pick[1], pick[2], pick[3], pick[4]
  local key = tkey(id)
  redis.call('ZREM', P .. ':q:' .. queues[q], m)
  if f[1] then redis.call('ZREM', P .. ':expiry', id) end
  local until_ = stamp(NOWF + lease)
  local attempt = tonumber(f[4]) + 1
  local token, run_id = string.sub(tokens, 48 * n - 47, 48 * n - 16), string.sub(tokens, 48 * n - 15, 48 * n)
  redis.call('HSET', key, 'status', 'running', 'attempt', attempt, 'lease_token', token,
    'run_id', run_id, 'lease_until', until_, 'started_at', NOW, 'worker', worker,
    'progress', '0', 'progress_done', '0')
  if f[5] or f[6] then redis.call('HDEL', key, 'progress_total', 'progress_message') end
  restatus(id, f[3], 'pending', 'running')
  redis.call('ZADD', P .. ':running', until_, id)
  event(id, 'started', NOW, 'running', attempt, '0', false, run_id)
  claimed[#claimed + 1] = redis.call('HGETALL', key)
end
return claimed
"""
)

SETTLE = (
    PRELUDE
    + r"""
-- ARGV[4..]: per outcome, its msgpack-packed facts (id, token, status, has_result, error, message,
-- eta, rescue, successor id, n; false: none), its result (raw bytes), then n field/value pairs
-- of its successor (cmsgpack reads no binary values: the bytes travel as arguments of their own)
local accepted = {}
local at = 4
while at <= #ARGV do
  local o = cmsgpack.unpack(ARGV[at])
  local id, token, status, has_result, err, message = o[1], o[2], o[3], o[4], o[5], o[6]
  local eta, rescue, successor, n = o[7], o[8], o[9], o[10]
  local result = has_result and ARGV[at + 1]
  local fields = {}
  for j = at + 2, at + 1 + 2 * n do fields[#fields + 1] = ARGV[j] end
  at = at + 2 + 2 * n
  local key = tkey(id)
  local f = redis.call('HMGET', key, 'status', 'lease_token', 'lease_until', 'seq', 'attempt', 'progress', 'run_id',
    'queue', 'priority', 'eta', 'expires_at', 'result_ttl', 'series')
  local holds = f[1] == 'running' and f[2] == token
  if holds and rescue and f[3] and tonumber(f[3]) > NOWF then holds = false end
  if holds then
    local set, del = {'HSET', key, 'status', status}, {'HDEL', key, 'lease_token', 'lease_until'}
    if result then set[#set + 1] = 'result'; set[#set + 1] = result else del[#del + 1] = 'result' end
    if err then set[#set + 1] = 'error'; set[#set + 1] = err else del[#del + 1] = 'error' end
    if eta then set[#set + 1] = 'eta'; set[#set + 1] = eta else eta = f[10] end
    local progress = f[6] or '0'
    if status == 'pending' then
      del[#del + 1] = 'finished_at'
    else
      set[#set + 1] = 'finished_at'; set[#set + 1] = NOW
      if status == 'succeeded' then progress = '1'; set[#set + 1] = 'progress'; set[#set + 1] = '1' end
    end
    redis.call(unpack(set))
    redis.call(unpack(del))
    restatus(id, f[4], 'running', status)
    redis.call('ZREM', P .. ':running', id)
    if status == 'pending' then
      place_as(id, f[8], f[9], eta, f[4], f[11])
    else
      redis.call('ZADD', P .. ':done', NOW, id)
      if f[12] then redis.call('ZADD', P .. ':ttl', stamp(NOWF + tonumber(f[12])), id) end
      if f[13] then redis.call('SREM', P .. ':series:' .. f[13], id) end
    end
    local kind = status == 'pending' and 'retried' or status
    event(id, kind, NOW, status, f[5], progress, message, f[7])
    accepted[#accepted + 1] = redis.call('HGETALL', key)
    if successor then
      local series = false
      for j = 1, #fields, 2 do
        if fields[j] == 'series' then series = fields[j + 1] end
      end
      if not series or redis.call('SCARD', P .. ':series:' .. series) == 0 then insert_task(successor, fields, {}) end
    end
  end
end
wake()
return accepted
"""
)
