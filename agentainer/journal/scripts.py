"""The journal's Lua scripts: each request state change is one atomic script.

Redis runs a script without interleaving any other command, so a record is never
half-updated, a request is never both queued and leased, and the lease fence (the record's
``lease`` counter) is checked and acted on in one step.
:class:`agentainer.journal.journal.Journal` registers and calls them.

Keys: most scripts derive the keys they touch from data they read (a request ID popped
from a queue, an agent ID in a record), so they cannot be listed as KEYS before the call.
Those scripts share :data:`_LUA_PRELUDE`, which starts with :func:`agentainer.keys.lua_names`:
a table ``K`` of every key and key family, as :mod:`agentainer.keys` names them, so a
script writes ``K.req..rid``, never a key name of its own. :data:`RENEW`, whose keys are
known before the call, takes them as KEYS instead.

Every script may run twice for one call (the Redis client resends a command whose reply a
restart cut off), so each is safe to repeat: admission is keyed by the request ID, leasing
by a ticket, and completion and retry are fenced by the lease.

Byte accounting: a record's ``size`` (what Redis allocates for it, see
:func:`agentainer.journal.journal.allocated`; ``bodies_size`` of it for the bodies) counts towards
``journal_bytes`` (every record) and, while it waits in its agent's queue, towards that
agent's field of ``queue_bytes``.
"""

from agentainer import keys
from agentainer.webhooks.outbox import LUA_EVENT

# Shared by the scripts that build their keys: the lease fence check.
_LUA_HELD = """
local function held(r, lease)
  return r[1] == 'in_flight' and r[3] == lease
end
"""

# NOTE: shared Lua prelude: key names (agentainer.keys), leases, queues and byte accounting,
# and request_event() (a request's end, for an agent with a webhook: agentainer.webhooks).
_LUA_PRELUDE = keys.lua_names() + _LUA_HELD + LUA_EVENT + """
local BYTES, QBYTES = K.journal_bytes, K.queue_bytes
local STREAM_TAIL_MS = 5000
local function size_of(rkey)
  return tonumber(redis.call('hget', rkey, 'size') or '0')
end
local function count(name)
  redis.call('hincrby', K.counters, name, 1)
end
-- Lease a request of agent aid to a holder (a live process, see
-- agentainer.journal.liveness) until deadline; it counts as in flight to the agent.
-- NOTE: flying:{aid} holds the agent's leased requests: max_concurrency counts them, and
-- they keep it from going idle.
-- NOTE: the caller sets the record's 'holder' field to holder.
local function take(rid, aid, holder, deadline)
  redis.call('zadd', K.leases, deadline, rid)
  redis.call('sadd', K.held..holder, rid)
  redis.call('sadd', K.holders, holder)
  redis.call('sadd', K.flying..aid, rid)
end
-- End a lease at now (ms) of a request of agent aid leased to holder (either may be
-- nil): the agent was last active then (the idle rule).
local function release_held(rid, now, holder, aid)
  redis.call('zrem', K.leases, rid)
  if holder then redis.call('srem', K.held..holder, rid) end
  if aid and redis.call('srem', K.flying..aid, rid) == 1
      and redis.call('exists', K.agent..aid) == 1 then
    redis.call('hset', K.agent..aid, 'last_active', now)
  end
end
local function release(rid, now)
  local r = redis.call('hmget', K.req..rid, 'holder', 'agent')
  release_held(rid, now, r[1], r[2])
end
-- Say whether the agent has max_concurrency (> 0) requests in flight.
local function at_capacity(aid, max_concurrency)
  local limit = tonumber(max_concurrency or '0') or 0
  return limit > 0 and redis.call('scard', K.flying..aid) >= limit
end
-- Queue a request; return its position (1 = next to be delivered).
local function enqueue(aid, rid, front)
  redis.call('sadd', K.queued, aid)
  redis.call('hincrby', QBYTES, aid, size_of(K.req..rid))
  if not front then return redis.call('rpush', K.queue..aid, rid) end
  redis.call('lpush', K.queue..aid, rid)
  return 1
end
local function unqueue(aid, rid)
  if redis.call('lrem', K.queue..aid, 0, rid) > 0 then
    redis.call('hincrby', QBYTES, aid, -size_of(K.req..rid))
  end
end
-- Say whether one more request of `size` bytes fits the agent's queue.
local function room(aid, size, limit, max_bytes)
  return redis.call('llen', K.queue..aid) < limit
    and tonumber(redis.call('hget', QBYTES, aid) or '0') + size <= max_bytes
end
-- Send a leased request back to the front of its queue, or fail it after max_attempts.
local function give_back(rid, aid, attempts, max_attempts, error, now)
  local rkey = K.req..rid
  release(rid, now)
  if attempts >= max_attempts then
    redis.call('hset', rkey, 'status', 'failed', 'error', error, 'updated_at', now)
    count('failed')
    request_event(aid, rid, REQUEST_FAILED, now)
    return false
  end
  redis.call('hset', rkey, 'status', 'queued', 'error', error, 'updated_at', now)
  enqueue(aid, rid, true)
  return true
end
"""

# Admit one proxied request: resolve the agent, check a private agent's invoke token
# (private_hash; the tokens hash holds invoke and manage tokens alike, so either is stripped),
# apply the idempotency key and the byte budgets, then journal it as in_flight (agent running,
# leased to the holder) or queued: the agent is not running, or it is but has a backlog (an
# ordered agent: queued requests, or a drain claim, see replay.py) or max_concurrency
# requests in flight (on_busy 'queue'; 'reject' refuses it: 'busy').
# ARGV: ref, by_id, token_hash, rid, now_ms, queue_limit, idem_key, fingerprint,
#       lease_deadline_ms, idem_ttl_s, holder, size, journal_max_bytes, queue_max_bytes,
#       then record field/value pairs.
# A 'forward' reply is {'forward', aid, route, strip, the agent's hold ('' for the setting:
# for a forward that finds the agent down and queues after all)}; a 'queued' one is
# {'queued', aid, position, strip, agent status, why ('down', 'backlog' or 'busy'), the
# agent's hold, its desired state, its idle mark}.
ADMIT = _LUA_PRELUDE + """
local ref, by_id, token_hash, rid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local aid = ref
if by_id == '0' then aid = redis.call('hget', K.names, ref) end
if not aid then return {'missing'} end
local a = redis.call('hmget', K.agent..aid, 'status', 'route', 'persist', 'private_hash',
                     'ordered', 'max_concurrency', 'on_busy', 'hold', 'desired', 'idle')
if not a[1] then return {'missing'} end
local status, route, persist, private_hash = a[1], a[2] or '', a[3], a[4] or ''
local idle = a[10] or ''
local function queued(position, strip, why)
  return {'queued', aid, tostring(position), strip, status, why, a[8] or '', a[9] or '', idle}
end
if private_hash ~= '' and private_hash ~= token_hash then return {'forbidden', aid} end
local strip = '0'
if token_hash ~= '' and (token_hash == private_hash
    or redis.call('hexists', K.tokens, token_hash) == 1) then strip = '1' end
if persist == '0' then
  if status == 'running' then count('proxied') end
  return {'direct', aid, status, route, strip}
end
local rkey = K.req..rid
local qkey = K.queue..aid
-- NOTE: this admission ran already and its reply was lost: answer as it was decided
local prior = redis.call('hmget', rkey, 'status', 'lease')
if prior[1] == 'in_flight' and prior[2] == '1' then
  return {'forward', aid, route, strip, a[8] or ''}
end
if prior[1] == 'queued' then
  return queued((redis.call('lpos', qkey, rid) or 0) + 1, strip, 'down')
end
local idem = ARGV[7]
local ikey = K.idem..aid..':'..idem
if idem ~= '' then
  local existing = redis.call('get', ikey)
  if existing then
    local r = redis.call('hmget', K.req..existing, 'status', 'fingerprint')
    -- NOTE: a failed or cancelled request's key admits a new request (the client retries)
    if r[1] and r[1] ~= 'failed' and r[1] ~= 'cancelled' then
      return {'idempotent', aid, existing, r[1], r[2], strip}
    end
  end
end
local size = tonumber(ARGV[12])
if tonumber(redis.call('get', BYTES) or '0') + size > tonumber(ARGV[13]) then
  return {'over', aid}
end
local why = ''
-- NOTE: an agent the idle rule marked (going or gone idle) takes no request: it queues
-- and the proxy wakes the agent (see IDLE)
if status ~= 'running' or route == '' or idle ~= '' then why = 'down'
elseif a[5] ~= '0' and (redis.call('llen', qkey) > 0
                        or redis.call('exists', K.claim..aid) == 1) then why = 'backlog'
elseif at_capacity(aid, a[6]) then
  if a[7] == 'reject' then return {'busy', aid} end
  why = 'busy'
elseif (tonumber(a[6] or '0') or 0) > 0 and redis.call('llen', qkey) > 0 then
  -- NOTE: under max_concurrency the queue goes first, ordered or not: a slot freed while
  -- requests wait is theirs (the drain polls for it), else they could wait for ever
  why = 'busy'
end
if why ~= '' and not room(aid, size, tonumber(ARGV[6]), tonumber(ARGV[14])) then
  return {'full', aid}
end
if idem ~= '' then redis.call('set', ikey, rid, 'EX', tonumber(ARGV[10])) end
-- PERF: the record in one HSET (its state, then the fields from ARGV 15 on)
if why == '' then
  redis.call('hset', rkey, 'id', rid, 'agent', aid, 'size', size, 'status', 'in_flight',
             'attempts', 1, 'lease', 1, 'holder', ARGV[11], unpack(ARGV, 15))
else
  redis.call('hset', rkey, 'id', rid, 'agent', aid, 'size', size, 'status', 'queued',
             'attempts', 0, 'lease', 0, unpack(ARGV, 15))
end
-- APPSEC: an Agentainer token is never journaled (nor, so, replayed to the agent)
if strip == '1' then redis.call('hdel', rkey, 'authorization') end
redis.call('incrby', BYTES, size)
redis.call('zadd', K.reqs..aid, ARGV[5], rid)
if why == '' then
  -- NOTE: the agent stays active while the request flies (its release is the mark)
  take(rid, aid, ARGV[11], ARGV[9])
  count('proxied')
  return {'forward', aid, route, strip, a[8] or ''}
end
redis.call('hset', K.agent..aid, 'last_active', ARGV[5])
count('queued')
return queued(enqueue(aid, rid, false), strip, why)
"""

# Decide whether an agent is idle and, if so, mark it (its ``idle`` field 'pending') in the
# same step: ARGV aid, now_ms, idle_timeout_ms. Idle: running as its user wants, not
# marked, nothing in flight (flying:{aid}), nothing queued, no drain claimed, and no
# request queued nor lease released for idle_timeout (``last_active``; a start sets it
# too; a forwarded request is in flight until its release).
# NOTE: one script, so an admission either comes before it (and keeps the agent running)
# or after it, and finds the mark: it queues and wakes the agent (ADMIT).
IDLE = _LUA_PRELUDE + """
local aid, now = ARGV[1], tonumber(ARGV[2])
local akey = K.agent..aid
local a = redis.call('hmget', akey, 'status', 'desired', 'idle', 'last_active')
if a[1] ~= 'running' or a[2] ~= 'running' or (a[3] or '') ~= '' then return 0 end
if not a[4] then
  redis.call('hset', akey, 'last_active', now)  -- NOTE: a record older than the idle rule
  return 0
end
if redis.call('scard', K.flying..aid) > 0 or redis.call('llen', K.queue..aid) > 0
    or redis.call('exists', K.claim..aid) == 1 then return 0 end
if now - tonumber(a[4]) < tonumber(ARGV[3]) then return 0 end
redis.call('hset', akey, 'idle', 'pending')
return 1
"""

# Put a leased request back: ARGV rid, now_ms, error, max_attempts, mode, lease,
# queue_limit, queue_max_bytes.
# mode 'attempted' counts the attempt (it may have reached the agent) and 'untried' does not;
# both go to the front of the queue (or to failed after max_attempts): they were admitted
# under the queue's limits and only left it to be tried. 'new' is a request never queued
# and never sent: it joins the queue behind those that arrived before it if there is room;
# if not, it is taken back as if never admitted ('full': record, key and bytes dropped).
RETRY = _LUA_PRELUDE + """
local rid, mode = ARGV[1], ARGV[5]
local rkey = K.req..rid
local r = redis.call('hmget', rkey, 'status', 'agent', 'lease', 'attempts', 'idempotency_key')
if not r[1] then return {'missing'} end
if not held(r, ARGV[6]) then return {'stale'} end
local aid, attempts = r[2], tonumber(r[4])
if mode ~= 'attempted' then attempts = attempts - 1 end
redis.call('hset', rkey, 'attempts', attempts)
if mode ~= 'new' then
  if give_back(rid, aid, attempts, tonumber(ARGV[4]), ARGV[3], ARGV[2]) then
    return {'queued', aid, '1'}
  end
  return {'failed', aid}
end
local size = size_of(rkey)
if not room(aid, size, tonumber(ARGV[7]), tonumber(ARGV[8])) then
  release(rid, ARGV[2])
  local ikey = K.idem..aid..':'..(r[5] or '')
  if r[5] and r[5] ~= '' and redis.call('get', ikey) == rid then redis.call('del', ikey) end
  redis.call('zrem', K.reqs..aid, rid)
  redis.call('decrby', BYTES, size)
  redis.call('del', rkey)
  return {'full', aid}
end
release(rid, ARGV[2])
redis.call('hset', rkey, 'status', 'queued', 'error', ARGV[3], 'updated_at', ARGV[2])
return {'queued', aid, tostring(enqueue(aid, rid, false))}
"""

# Record the agent's response: ARGV rid, now_ms, counter ('replayed' or ''), latency bucket
# ('' for none), latency seconds, lease, body size, headers size, then field/value pairs.
# NOTE: an answer under a lease that expired still completes the request while nobody
# else has leased it since (it was swept to queued, and leaves its queue here, or to
# failed): it saves a redelivery. A completed or cancelled request is stale.
COMPLETE = _LUA_PRELUDE + """
local rid = ARGV[1]
local rkey = K.req..rid
local r = redis.call('hmget', rkey, 'status', 'agent', 'lease', 'holder', 'size',
                     'bodies_size')
if not r[1] then return 'missing' end
if r[3] ~= ARGV[6] or r[1] == 'completed' or r[1] == 'cancelled' then return 'stale' end
if r[1] == 'queued' then unqueue(r[2], rid) end  -- NOTE: its lease expired and was swept
release_held(rid, ARGV[2], r[4], r[2])
local added = tonumber(ARGV[7]) + tonumber(ARGV[8])
redis.call('hset', rkey, 'status', 'completed', 'updated_at', ARGV[2], 'error', '',
           'bodies_size', tonumber(r[6] or '0') + tonumber(ARGV[7]),
           'size', tonumber(r[5] or '0') + added, unpack(ARGV, 9))
redis.call('incrby', BYTES, added)
redis.call('zadd', K.bodies, ARGV[2], rid)
-- NOTE: the live capture outlives the record's completion briefly, so a follower between
-- two reads still finds its end entry (it then reads on from the record)
redis.call('pexpire', K.respstream..rid, STREAM_TAIL_MS)
if ARGV[3] ~= '' then count(ARGV[3]) end
if ARGV[4] ~= '' then
  count(ARGV[4])
  redis.call('hincrbyfloat', K.counters, 'latency_sum', ARGV[5])
end
request_event(r[2], rid, REQUEST_COMPLETED, ARGV[2])
return 'completed'
"""

# Lease the oldest queued request of an agent to a holder: ARGV aid, now_ms, deadline_ms,
# holder, ticket. A call repeated with its ticket gets the request the first one leased.
# 'busy' when the agent has max_concurrency requests in flight (nothing leased).
LEASE = _LUA_PRELUDE + """
local aid, holder, ticket = ARGV[1], ARGV[4], ARGV[5]
local tkey = K.ticket..aid
local last = redis.call('get', tkey)
if last and string.sub(last, 1, #ticket + 1) == ticket..' ' then
  local rkey = K.req..string.sub(last, #ticket + 2)
  local r = redis.call('hmget', rkey, 'status', 'holder')
  if r[1] == 'in_flight' and r[2] == holder then return redis.call('hgetall', rkey) end
end
if at_capacity(aid, redis.call('hget', K.agent..aid, 'max_concurrency')) then return 'busy' end
local qkey = K.queue..aid
while true do
  local rid = redis.call('lpop', qkey)
  if not rid then return false end
  local rkey = K.req..rid
  redis.call('hincrby', QBYTES, aid, -size_of(rkey))
  if redis.call('hget', rkey, 'status') == 'queued' then
    redis.call('hset', rkey, 'status', 'in_flight', 'updated_at', ARGV[2], 'holder', holder)
    redis.call('hincrby', rkey, 'attempts', 1)
    redis.call('hincrby', rkey, 'lease', 1)
    take(rid, aid, holder, ARGV[3])
    redis.call('set', tkey, ticket..' '..rid, 'PX', 60000)
    return redis.call('hgetall', rkey)
  end
end
"""

# Sweep expired leases back to their queues: ARGV now_ms, max_attempts.
# NOTE: the backstop for a holder that lives but never finished (liveness covers the dead).
SWEEP = _LUA_PRELUDE + """
local agents = {}
for _, rid in ipairs(redis.call('zrangebyscore', K.leases, '-inf', ARGV[1], 'LIMIT', 0, 200)) do
  local r = redis.call('hmget', K.req..rid, 'status', 'agent', 'attempts')
  if r[1] == 'in_flight' then
    if give_back(rid, r[2], tonumber(r[3]), tonumber(ARGV[2]), 'lease expired', ARGV[1]) then
      agents[#agents + 1] = r[2]
    end
  else
    release(rid, ARGV[1])
  end
end
return agents
"""

# Take back every lease of a dead holder: ARGV holder, now_ms, max_attempts. Returns the
# agents whose queues got requests back (at the front: they arrived before what is queued).
REAP = _LUA_PRELUDE + """
local holder = ARGV[1]
local agents = {}
for _, rid in ipairs(redis.call('smembers', K.held..holder)) do
  local r = redis.call('hmget', K.req..rid, 'status', 'agent', 'attempts', 'holder')
  if r[1] == 'in_flight' and r[4] == holder then
    if give_back(rid, r[2], tonumber(r[3]), tonumber(ARGV[3]),
                 'its server or worker died mid-request', ARGV[2]) then
      agents[#agents + 1] = r[2]
    end
  end
end
redis.call('del', K.held..holder)
return agents
"""

# Push a held lease's deadline forward: KEYS the request's record, leases; ARGV rid, lease,
# deadline_ms. (No K table: its keys are known before the call.)
RENEW = _LUA_HELD + """
local r = redis.call('hmget', KEYS[1], 'status', 'agent', 'lease')
if not held(r, ARGV[2]) then return 0 end
redis.call('zadd', KEYS[2], 'XX', ARGV[3], ARGV[1])
return 1
"""

# Drop an agent's listed requests older than cutoff or beyond the newest `limit`, deleting
# their records; queued and in-flight ones stay. ARGV aid, cutoff_ms, limit.
TRIM = _LUA_PRELUDE + """
local index = K.reqs..ARGV[1]
local drop = redis.call('zrangebyscore', index, '-inf', ARGV[2])
local over = redis.call('zcard', index) - tonumber(ARGV[3])
if over > 0 then
  for _, rid in ipairs(redis.call('zrange', index, 0, over - 1)) do drop[#drop + 1] = rid end
end
local removed = 0
for _, rid in ipairs(drop) do
  local rkey = K.req..rid
  local status = redis.call('hget', rkey, 'status')
  if status ~= 'queued' and status ~= 'in_flight' then
    redis.call('decrby', BYTES, size_of(rkey))
    redis.call('zrem', K.bodies, rid)
    redis.call('del', rkey)
    removed = removed + redis.call('zrem', index, rid)
  end
end
return removed
"""

# Drop the request and response bodies of requests completed before cutoff (their records
# stay, marked truncated): ARGV cutoff_ms, batch. Returns how many were dropped.
DROP_BODIES = _LUA_PRELUDE + """
local done = redis.call('zrangebyscore', K.bodies, '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, rid in ipairs(done) do
  local rkey = K.req..rid
  if redis.call('hget', rkey, 'status') == 'completed' then
    local freed = tonumber(redis.call('hget', rkey, 'bodies_size') or '0')
    redis.call('hdel', rkey, 'body', 'resp_body')
    redis.call('hset', rkey, 'bodies_size', 0)
    redis.call('hset', rkey, 'resp_truncated', '1', 'note', 'bodies dropped after body_retention')
    redis.call('hincrby', rkey, 'size', -freed)
    redis.call('decrby', BYTES, freed)
  end
  redis.call('zrem', K.bodies, rid)
end
return #done
"""

# Cancel a queued request, or re-queue a finished one: ARGV rid, aid, action, now_ms,
# queue_limit, queue_max_bytes. Returns 'ok', 'missing', 'full' or the blocking status.
CHANGE = _LUA_PRELUDE + """
local rid, aid, action = ARGV[1], ARGV[2], ARGV[3]
local rkey = K.req..rid
local status = redis.call('hget', rkey, 'status')
if not status or redis.call('hget', rkey, 'agent') ~= aid then return 'missing' end
if action == 'cancel' then
  if status ~= 'queued' then return status end
  unqueue(aid, rid)
  redis.call('hset', rkey, 'status', 'cancelled', 'updated_at', ARGV[4])
  return 'ok'
end
if status == 'in_flight' or status == 'completed' then return status end
unqueue(aid, rid)
if status ~= 'queued' and not room(aid, size_of(rkey), tonumber(ARGV[5]), tonumber(ARGV[6])) then
  return 'full'
end
enqueue(aid, rid, true)
redis.call('hset', rkey, 'status', 'queued', 'attempts', 0, 'error', '', 'updated_at', ARGV[4])
return 'ok'
"""

# Return agents with queued requests, dropping those whose queues are empty.
PRUNE = _LUA_PRELUDE + """
local busy = {}
for _, aid in ipairs(redis.call('smembers', K.queued)) do
  if redis.call('llen', K.queue..aid) > 0 then busy[#busy + 1] = aid
  else redis.call('srem', K.queued, aid) end
end
return busy
"""
