"""The journal's Lua scripts: each request state change is one atomic script.

Redis runs a script without interleaving any other command, so a record is never
half-updated, a request is never both queued and leased, and the lease fence (the record's
``lease`` counter) is checked and acted on in one step. Key names are spelled in Lua under
the same ``agentainer:`` prefix as :data:`agentainer.store.PREFIX`; every script takes its
inputs as ARGV (no KEYS), documented above each one. :class:`agentainer.journal.Journal`
registers and calls them.
"""

# NOTE: shared Lua prelude: key names, and finishing a record (expire + drop its lease).
_LUA_PRELUDE = """
local P = 'agentainer:'
local function finish(rid, ttl)
  redis.call('expire', P..'req:'..rid, ttl)
  redis.call('zrem', P..'leases', rid)
end
local function held(r, lease)
  return r[1] == 'in_flight' and r[3] == lease
end
local function count(name)
  redis.call('hincrby', P..'counters', name, 1)
end
-- Queue a request; return its position (1 = next to be delivered).
local function enqueue(aid, rid, front)
  redis.call('sadd', P..'queued', aid)
  if not front then return redis.call('rpush', P..'queue:'..aid, rid) end
  redis.call('lpush', P..'queue:'..aid, rid)
  return 1
end
"""

# Admit one proxied request: resolve the agent, check a private agent's token, apply the
# idempotency key, then journal it as in_flight (agent running) or queued.
# ARGV: ref, by_id, token_hash, rid, now_ms, queue_limit, idem_key, body_sha,
#       lease_deadline_ms, retention_s, then record field/value pairs.
ADMIT = _LUA_PRELUDE + """
local ref, by_id, token_hash, rid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local aid = ref
if by_id == '0' then aid = redis.call('hget', P..'names', ref) end
if not aid then return {'missing'} end
local akey = P..'agent:'..aid
local a = redis.call('hmget', akey, 'status', 'route', 'persist', 'private_hash')
if not a[1] then return {'missing'} end
local status, route, persist, private_hash = a[1], a[2] or '', a[3], a[4] or ''
if private_hash ~= '' and private_hash ~= token_hash then return {'forbidden', aid} end
local strip = '0'
if token_hash ~= '' and (token_hash == private_hash
    or redis.call('hexists', P..'tokens', token_hash) == 1) then strip = '1' end
if persist == '0' then
  if status == 'running' then count('proxied') end
  return {'direct', aid, status, route, strip}
end
local idem = ARGV[7]
local ikey = P..'idem:'..aid..':'..idem
if idem ~= '' then
  local existing = redis.call('get', ikey)
  if existing then
    local r = redis.call('hmget', P..'req:'..existing, 'status', 'body_sha')
    -- NOTE: a failed or cancelled request's key admits a new request (the client retries)
    if r[1] and r[1] ~= 'failed' and r[1] ~= 'cancelled' then
      return {'idempotent', aid, existing, r[1], r[2], strip}
    end
  end
end
local qkey = P..'queue:'..aid
local running = status == 'running' and route ~= ''
if not running and redis.call('llen', qkey) >= tonumber(ARGV[6]) then return {'full', aid} end
if idem ~= '' then redis.call('set', ikey, rid, 'EX', tonumber(ARGV[10])) end
local rkey = P..'req:'..rid
redis.call('hset', rkey, 'id', rid, 'agent', aid, 'lease', 0, unpack(ARGV, 11))
redis.call('zadd', P..'reqs:'..aid, ARGV[5], rid)
if running then
  redis.call('hset', rkey, 'status', 'in_flight', 'attempts', 1, 'lease', 1)
  redis.call('zadd', P..'leases', ARGV[9], rid)
  count('proxied')
  return {'forward', aid, route, strip}
end
redis.call('hset', rkey, 'status', 'queued', 'attempts', 0)
count('queued')
return {'queued', aid, tostring(enqueue(aid, rid, false)), strip}
"""

# Put a leased request back: ARGV rid, now_ms, error, max_attempts, retention_s, mode, lease.
# mode 'attempted' counts the attempt (it may have reached the agent) and 'untried' does not;
# both go to the front of the queue (or to failed after max_attempts). 'new' is a request
# never queued and never sent: it joins the queue behind those that arrived before it.
RETRY = _LUA_PRELUDE + """
local rid, mode = ARGV[1], ARGV[6]
local rkey = P..'req:'..rid
local r = redis.call('hmget', rkey, 'status', 'agent', 'lease', 'attempts')
if not r[1] then return {'missing'} end
if not held(r, ARGV[7]) then return {'stale'} end
local attempts = tonumber(r[4])
if mode ~= 'attempted' then attempts = attempts - 1 end
redis.call('zrem', P..'leases', rid)
if attempts >= tonumber(ARGV[4]) then
  redis.call('hset', rkey, 'status', 'failed', 'attempts', attempts, 'error', ARGV[3],
             'updated_at', ARGV[2])
  finish(rid, tonumber(ARGV[5]))
  count('failed')
  return {'failed', r[2]}
end
redis.call('hset', rkey, 'status', 'queued', 'attempts', attempts, 'error', ARGV[3],
           'updated_at', ARGV[2])
return {'queued', r[2], tostring(enqueue(r[2], rid, mode ~= 'new'))}
"""

# Record the agent's response: ARGV rid, now_ms, retention_s, counter ('replayed' or ''),
# latency bucket ('' for none), latency seconds, lease, then field/value pairs.
# NOTE: an answer under a lease that expired still completes the request while nobody
# else has leased it since (it was swept to queued, and leaves its queue here, or to
# failed): it saves a redelivery. A completed or cancelled request is stale.
COMPLETE = _LUA_PRELUDE + """
local rid = ARGV[1]
local rkey = P..'req:'..rid
local r = redis.call('hmget', rkey, 'status', 'agent', 'lease')
if not r[1] then return 'missing' end
if r[3] ~= ARGV[7] or r[1] == 'completed' or r[1] == 'cancelled' then return 'stale' end
redis.call('lrem', P..'queue:'..r[2], 0, rid)
redis.call('hset', rkey, 'status', 'completed', 'updated_at', ARGV[2], 'error', '',
           unpack(ARGV, 8))
finish(rid, tonumber(ARGV[3]))
if ARGV[4] ~= '' then count(ARGV[4]) end
if ARGV[5] ~= '' then
  count(ARGV[5])
  redis.call('hincrbyfloat', P..'counters', 'latency_sum', ARGV[6])
end
return 'completed'
"""

# Lease the oldest queued request of an agent: ARGV aid, now_ms, deadline_ms.
LEASE = _LUA_PRELUDE + """
local qkey = P..'queue:'..ARGV[1]
while true do
  local rid = redis.call('lpop', qkey)
  if not rid then return false end
  local rkey = P..'req:'..rid
  if redis.call('hget', rkey, 'status') == 'queued' then
    redis.call('hset', rkey, 'status', 'in_flight', 'updated_at', ARGV[2])
    redis.call('hincrby', rkey, 'attempts', 1)
    redis.call('hincrby', rkey, 'lease', 1)
    redis.call('zadd', P..'leases', ARGV[3], rid)
    return redis.call('hgetall', rkey)
  end
end
"""

# Sweep expired leases back to their queues: ARGV now_ms, max_attempts, retention_s.
SWEEP = _LUA_PRELUDE + """
local agents = {}
for _, rid in ipairs(redis.call('zrangebyscore', P..'leases', '-inf', ARGV[1], 'LIMIT', 0, 200)) do
  redis.call('zrem', P..'leases', rid)
  local rkey = P..'req:'..rid
  local r = redis.call('hmget', rkey, 'status', 'agent', 'attempts')
  if r[1] == 'in_flight' then
    if tonumber(r[3]) >= tonumber(ARGV[2]) then
      redis.call('hset', rkey, 'status', 'failed', 'error', 'lease expired', 'updated_at', ARGV[1])
      finish(rid, tonumber(ARGV[3]))
    else
      redis.call('hset', rkey, 'status', 'queued', 'error', 'lease expired', 'updated_at', ARGV[1])
      enqueue(r[2], rid, true)
      agents[#agents + 1] = r[2]
    end
  end
end
return agents
"""

# Push a held lease's deadline forward: ARGV rid, lease, deadline_ms.
RENEW = _LUA_PRELUDE + """
local r = redis.call('hmget', P..'req:'..ARGV[1], 'status', 'agent', 'lease')
if not held(r, ARGV[2]) then return 0 end
redis.call('zadd', P..'leases', 'XX', ARGV[3], ARGV[1])
return 1
"""

# Drop an agent's listed requests older than cutoff or beyond the newest `limit`, deleting
# their records; queued and in-flight ones stay. ARGV aid, cutoff_ms, limit.
TRIM = _LUA_PRELUDE + """
local index = P..'reqs:'..ARGV[1]
local drop = redis.call('zrangebyscore', index, '-inf', ARGV[2])
local over = redis.call('zcard', index) - tonumber(ARGV[3])
if over > 0 then
  for _, rid in ipairs(redis.call('zrange', index, 0, over - 1)) do drop[#drop + 1] = rid end
end
local removed = 0
for _, rid in ipairs(drop) do
  local status = redis.call('hget', P..'req:'..rid, 'status')
  if status ~= 'queued' and status ~= 'in_flight' then
    redis.call('del', P..'req:'..rid)
    removed = removed + redis.call('zrem', index, rid)
  end
end
return removed
"""

# Cancel a queued request, or re-queue a finished one: ARGV rid, aid, action, now_ms, ttl.
CHANGE = _LUA_PRELUDE + """
local rid, aid, action = ARGV[1], ARGV[2], ARGV[3]
local rkey = P..'req:'..rid
local status = redis.call('hget', rkey, 'status')
if not status or redis.call('hget', rkey, 'agent') ~= aid then return 'missing' end
local qkey = P..'queue:'..aid
if action == 'cancel' then
  if status ~= 'queued' then return status end
  redis.call('lrem', qkey, 0, rid)
  redis.call('hset', rkey, 'status', 'cancelled', 'updated_at', ARGV[4])
  finish(rid, tonumber(ARGV[5]))
  return 'ok'
end
if status == 'in_flight' or status == 'completed' then return status end
redis.call('lrem', qkey, 0, rid)
enqueue(aid, rid, true)
redis.call('persist', rkey)
redis.call('hset', rkey, 'status', 'queued', 'attempts', 0, 'error', '', 'updated_at', ARGV[4])
return 'ok'
"""

# Return agents with queued requests, dropping those whose queues are empty.
PRUNE = _LUA_PRELUDE + """
local busy = {}
for _, aid in ipairs(redis.call('smembers', P..'queued')) do
  if redis.call('llen', P..'queue:'..aid) > 0 then busy[#busy + 1] = aid
  else redis.call('srem', P..'queued', aid) end
end
return busy
"""
