-- pop: reclaim expired leases, then lease up to N waiting jobs to the caller.
--
-- KEYS[1]  taskrunner:{NAME}:waiting    list of job ids waiting to be leased
-- KEYS[2]  taskrunner:{NAME}:payloads   hash: job id -> serialized job
-- KEYS[3]  taskrunner:{NAME}:lease_expiry sorted set: lease token -> expiry (ms, Redis clock)
-- KEYS[4]  taskrunner:{NAME}:tokens     hash: job id -> token of the lease that holds it
-- KEYS[5]  taskrunner:{NAME}:leased     hash: job id -> lost leases counted as attempts
-- KEYS[6]  taskrunner:{NAME}:outcomes   list of outcomes for the controller (JSON)
-- KEYS[7]  taskrunner:{NAME}:holds:WID  set of the lease tokens the calling worker holds
-- KEYS[8]  taskrunner:{NAME}:meta       hash: the run's settings and its state
-- KEYS[9]  taskrunner:{NAME}:pace       string: earliest start (ms) of the next job, for --rate
-- KEYS[10] taskrunner:{NAME}:popped:WID string: the token of the worker's last pop
-- KEYS[11] taskrunner:{NAME}:started    set: job ids their worker said it started (heartbeat)
-- KEYS[12] taskrunner:{NAME}:suspects   hash: job id -> leases lost while it had started
-- KEYS[13] taskrunner:{NAME}:missed     hash: job id -> leases lost before it was seen starting
-- KEYS[14] taskrunner:{NAME}:alone      list of suspects waiting, each for an idle worker
-- KEYS[15] taskrunner:{NAME}:lease_jobs hash: lease token -> the ids it leased (spaces between)
-- KEYS[16] taskrunner:{NAME}:lease_left hash: lease token -> how many of them are not reported
-- ARGV[1]  N, the most jobs to lease
-- ARGV[2]  lease length in ms
-- ARGV[3]  the fresh lease token, "WID:counter"
-- ARGV[4]  how many leases a job may have: 1 + retries
-- ARGV[5]  ms between job starts across all workers (--rate), or 0 for no limit
-- ARGV[6]  1 when the caller holds no job (it may take a suspect, alone), else 0
-- ARGV[7]  (a worker's pops) the session of the run the caller took its settings from: the
--          meta hash's "session" field when it read them, "" if there was none
--
-- A lease is one pop's jobs under one token, with one expiry that the worker's heartbeat
-- renews: a job's own entries are its payload and its token (so that a stale worker's report
-- of it is refused), not an expiry too. The cost of a job in Redis is then an element of a
-- few commands, and a lease's a handful.
--
-- Expiry is judged by Redis's own clock (TIME), so workers with skewed clocks agree. An
-- expired lease is the local rule for a dead worker (triage.py), in lease terms, for each of
-- its jobs not reported yet:
-- - a job its worker had not started goes back to the head of the queue, no attempt counted
--   (one lost MAX_MISSED times without being seen starting is taken as started: it may be
--   killing its worker before the heartbeat tells; a suspect, which runs alone, lost more
--   than MAX_MISSED_ALONE times so);
-- - a job that had started is a suspect: it goes back, no attempt counted the first time,
--   to be leased alone to a worker that holds nothing else;
-- - a suspect whose lease is lost again while it had started (or taken as started) is the
--   culprit: once it has had all its leases it is reported to the controller as lost
--   (LeaseLost).
--
-- With --rate, the jobs leased are given start times one interval apart, after those given
-- to every earlier pop: the caller waits `delay` ms before the first, then one interval
-- between each.
--
-- A pop repeated with the same token (the client retried after a lost connection, not
-- knowing whether the first ran) returns the jobs the first leased instead of leasing more.
--
-- A worker's pop of a session other than the run's now (its controller wrote new settings
-- since: a resume, a --restart) does nothing and returns {state, 0, 0, 0, session}: the
-- worker reads the new settings and pops again, so that no job is leased, reclaimed or
-- paced under the old ones. Its cost is one HGET a pop, none a job.
--
-- Returns {state, delay, suspects waiting, alone, ids, lengths, payloads}; state is the meta
-- hash's "state" field ("running", "finished", "stopped"), "starting" when the meta hash has
-- none yet, or false when the run does not exist; alone is 1 when the one job leased is a
-- suspect, to run by itself. The jobs leased travel as three strings (none when nothing was
-- leased): their ids separated by spaces, the length of each payload separated by spaces,
-- and the payloads one after the other, each followed by a comma (so that JSON payloads
-- read at once as one array).

local MAX_MISSED = 3
local MAX_MISSED_ALONE = 1
local GROUP = 500  -- elements per command: well under Lua's stack limit for unpack
-- GUARD (as in push.lua): a field longer than the compact encodings allow, kept in the hash
-- of tokens: a hash of a few hundred entries is otherwise a ziplist/listpack, searched from
-- one end for every field (a pop of 500 jobs then costs milliseconds), and Redis never turns
-- a hashtable back into one. It names no job.
local GUARD = 'guard:' .. string.rep('-', 70)
if ARGV[7] then
    local session = redis.call('HGET', KEYS[8], 'session') or ''
    if session ~= ARGV[7] then
        -- A --restart's new session has settings before a state (see "starting" below).
        local state = redis.call('HGET', KEYS[8], 'state')
        if not state and session ~= '' then
            state = 'starting'
        end
        return {state, 0, 0, 0, session}
    end
end
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local max_leases = tonumber(ARGV[4])

-- The lost leases of other workers (the loss path: one job at a time is fine here).
local function reclaim(id)
    redis.call('HDEL', KEYS[4], id)
    local started = redis.call('SREM', KEYS[11], id) == 1
    local suspect = redis.call('HEXISTS', KEYS[12], id) == 1
    -- Lost before it was seen starting: as started once that has happened often enough.
    -- A suspect runs alone, so twice is enough (one that kills its worker at once dies
    -- before the heartbeat can tell), and not once: a suspect may wait unstarted in a lost
    -- worker (for its --rate slot, say), which is no fault of its own.
    local most_missed = suspect and MAX_MISSED_ALONE or MAX_MISSED
    if not started and redis.call('HINCRBY', KEYS[13], id, 1) > most_missed then
        started = true
    end
    if started then
        redis.call('HDEL', KEYS[13], id)  -- a suspect from now on: its alone leases count anew
    end
    -- The lease lost now was an attempt too when `counted`.
    local leased = 1 + tonumber(redis.call('HGET', KEYS[5], id) or '0')
    -- A suspect that had started again: this lease was an attempt. Every other lost lease
    -- was not one (the job had not started, or it is a suspect for the first time).
    local counted = started and suspect
    if started then
        redis.call('HINCRBY', KEYS[12], id, 1)
    end
    if counted and leased >= max_leases then
        local lost = redis.call('HGET', KEYS[12], id)
        redis.call('HDEL', KEYS[2], id)
        redis.call('HDEL', KEYS[5], id)
        redis.call('HDEL', KEYS[12], id)
        redis.call('HDEL', KEYS[13], id)
        -- An outcome as report.lua writes them: ids, refused ids, then the details (JSON).
        redis.call('RPUSH', KEYS[6], id .. '\n\n' .. cjson.encode({lost = {[id] = tonumber(lost)}}))
    else
        if counted then
            redis.call('HINCRBY', KEYS[5], id, 1)
        end
        if started or suspect then
            redis.call('RPUSH', KEYS[14], id)
        else
            redis.call('LPUSH', KEYS[1], id)
        end
    end
end

-- At most RECLAIM_AT_ONCE jobs a call, so that one call stays short however many leases
-- expired at once (a lease may hold thousands): a lease looked at in part keeps the rest of
-- its ids, and the next pops go on with them.
local RECLAIM_AT_ONCE = 1000
local budget = RECLAIM_AT_ONCE
for _, token in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 100)) do
    if budget <= 0 then
        break
    end
    local text = redis.call('HGET', KEYS[15], token) or ''
    local given = 0
    local at = 1
    while budget > 0 do
        local first, last = string.find(text, '%S+', at)
        if not first then
            at = #text + 1
            break
        end
        at = last + 1
        budget = budget - 1
        local id = string.sub(text, first, last)
        -- Only the jobs still under this lease: not those reported since.
        if redis.call('HGET', KEYS[4], id) == token then
            reclaim(id)
            given = given + 1
        end
    end
    local rest = string.sub(text, at)
    if string.find(rest, '%S') then
        redis.call('HSET', KEYS[15], token, rest)
        -- As text: -given is -0 when nothing was given back, which Redis writes "-0", no integer.
        if redis.call('HINCRBY', KEYS[16], token, string.format('%d', -given)) <= 0 then
            rest = ''
        end
    end
    if not string.find(rest, '%S') then
        redis.call('ZREM', KEYS[3], token)
        redis.call('HDEL', KEYS[15], token)
        redis.call('HDEL', KEYS[16], token)
    end
end

-- A meta hash without a state is a run being set up: its settings are written (store.create)
-- before its controller's loop starts and says "running" (RedisExecutor.start). A worker
-- started with the controller may pop in between: it is told "starting", and waits, as it
-- does for a stopped run. Only a run whose meta is gone (Redis lost it) is false.
local state = redis.call('HGET', KEYS[8], 'state')
if not state and redis.call('EXISTS', KEYS[8]) == 1 then
    state = 'starting'
end
local reply = {state, 0, redis.call('LLEN', KEYS[14]), 0}

-- The jobs of `ids` that have a payload, as the reply's three strings.
-- (Counters, not #t + 1: Lua 5.1's length of a table is a search, in every loop turn.)
-- Each length is written as text once per call (`length_text`): a number that table.concat
-- turns into text goes through sprintf each time, and a batch's payloads share few lengths.
local function add_jobs(ids, payloads)
    local kept, lengths, bodies = {}, {}, {}
    local length_text = {}
    local n = 0
    for i = 1, #ids do
        local payload = payloads[i]
        if payload then
            n = n + 1
            kept[n] = ids[i]
            local length = #payload
            local text = length_text[length]
            if not text then
                text = string.format('%d', length)
                length_text[length] = text
            end
            lengths[n] = text
            bodies[n] = payload
        end
    end
    if n > 0 then
        reply[5] = table.concat(kept, ' ')
        reply[6] = table.concat(lengths, ' ')
        reply[7] = table.concat(bodies, ',') .. ','
    end
    return kept
end

local function payloads_of(ids)
    if #ids <= GROUP then
        return redis.call('HMGET', KEYS[2], unpack(ids))
    end
    local payloads = {}
    for first = 1, #ids, GROUP do
        local got = redis.call('HMGET', KEYS[2], unpack(ids, first, math.min(first + GROUP - 1, #ids)))
        for i = 1, #got do
            payloads[first + i - 1] = got[i]
        end
    end
    return payloads
end

-- A retry: the token was this worker's last pop, or it already has a lease (a retry that
-- came after `popped` expired must not lease more under it, overwriting its list of ids).
if redis.call('GET', KEYS[10]) == ARGV[3] or redis.call('HEXISTS', KEYS[15], ARGV[3]) == 1 then
    -- The jobs the first call leased with this token (and not reported since), again.
    local ids = {}
    local n = 0
    for id in string.gmatch(redis.call('HGET', KEYS[15], ARGV[3]) or '', '%S+') do
        if redis.call('HGET', KEYS[4], id) == ARGV[3] then
            if redis.call('HEXISTS', KEYS[12], id) == 1 then
                reply[4] = 1
            end
            n = n + 1
            ids[n] = id
        end
    end
    if n > 0 then
        add_jobs(ids, payloads_of(ids))
    end
    return reply
end
redis.call('SET', KEYS[10], ARGV[3], 'PX', ARGV[2])
local wanted = tonumber(ARGV[1])
local ids
if ARGV[6] == '1' and reply[3] > 0 then
    ids = {redis.call('LPOP', KEYS[14])}
    reply[3] = reply[3] - 1
    reply[4] = 1
else
    if wanted <= 0 then
        return reply
    end
    ids = redis.call('LRANGE', KEYS[1], 0, wanted - 1)
    if #ids == 0 then
        return reply
    end
    redis.call('LTRIM', KEYS[1], #ids, -1)
end
local leased = add_jobs(ids, payloads_of(ids))
if #leased > 0 then
    local token = ARGV[3]
    redis.call('HSETNX', KEYS[4], GUARD, GUARD)
    for first = 1, #leased, GROUP do
        local last = math.min(first + GROUP - 1, #leased)
        local owned = {}
        local n = 0
        for i = first, last do
            owned[n + 1] = leased[i]
            owned[n + 2] = token
            n = n + 2
        end
        redis.call('HSET', KEYS[4], unpack(owned))
    end
    -- As text: a number passed to redis.call is turned into text with sprintf.
    redis.call('ZADD', KEYS[3], string.format('%d', now + tonumber(ARGV[2])), token)
    redis.call('HSET', KEYS[15], token, reply[5])
    redis.call('HSET', KEYS[16], token, #leased)
    redis.call('SADD', KEYS[7], token)
end
local interval = tonumber(ARGV[5])
if interval > 0 then
    local first_start = math.max(now, tonumber(redis.call('GET', KEYS[9]) or '0'))
    reply[2] = first_start - now
    -- Expires once its time has passed (a time in the past paces as none): see pace.lua.
    local next_start = first_start + #leased * interval
    redis.call('SET', KEYS[9], tostring(next_start), 'PX', string.format('%d', math.ceil(next_start - now) + 1000))
end
return reply
