-- pop: reclaim expired leases, then lease up to N waiting jobs to the caller.
--
-- KEYS[1]  taskrunner:{NAME}:waiting    list of job ids waiting to be leased
-- KEYS[2]  taskrunner:{NAME}:payloads   hash: job id -> serialized job
-- KEYS[3]  taskrunner:{NAME}:leases     sorted set: job id -> lease expiry (ms, Redis clock)
-- KEYS[4]  taskrunner:{NAME}:tokens     hash: job id -> token of the lease that holds it
-- KEYS[5]  taskrunner:{NAME}:leased     hash: job id -> how many times it was leased
-- KEYS[6]  taskrunner:{NAME}:outcomes   list of outcomes for the controller (JSON)
-- KEYS[7]  taskrunner:{NAME}:held:WID   set of job ids the calling worker holds
-- KEYS[8]  taskrunner:{NAME}:meta       hash: the run's settings and its state
-- KEYS[9]  taskrunner:{NAME}:pace       string: earliest start (ms) of the next job, for --rate
-- KEYS[10] taskrunner:{NAME}:popped:WID string: the token of the worker's last pop
-- ARGV[1]  N, the most jobs to lease
-- ARGV[2]  lease length in ms
-- ARGV[3]  the fresh lease token, "WID:counter"
-- ARGV[4]  how many leases a job may have: 1 + retries
-- ARGV[5]  ms between job starts across all workers (--rate), or 0 for no limit
--
-- Expiry is judged by Redis's own clock (TIME), so workers with skewed clocks agree.
-- A job whose lease expired goes back to the head of the queue, or, once it has had all
-- its leases, is reported to the controller as lost.
--
-- With --rate, the jobs leased are given start times one interval apart, after those given
-- to every earlier pop: the caller waits `delay` ms before the first, then one interval
-- between each.
--
-- A pop repeated with the same token (the client retried after a lost connection, not
-- knowing whether the first ran) returns the jobs the first leased instead of leasing more.
--
-- Returns {state, delay, id1, payload1, id2, payload2, ...}; state is the meta hash's
-- "state" field ("running", "finished", "stopped") or false when the run does not exist.

local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local max_leases = tonumber(ARGV[4])

local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
    redis.call('ZREM', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
    local leased = tonumber(redis.call('HGET', KEYS[5], id) or '0')
    if leased >= max_leases then
        redis.call('HDEL', KEYS[2], id)
        redis.call('HDEL', KEYS[5], id)
        redis.call('RPUSH', KEYS[6], cjson.encode({i = id, lost = leased}))
    else
        redis.call('LPUSH', KEYS[1], id)
    end
end

local reply = {redis.call('HGET', KEYS[8], 'state'), 0}
if redis.call('GET', KEYS[10]) == ARGV[3] then
    for _, id in ipairs(redis.call('SMEMBERS', KEYS[7])) do
        if redis.call('HGET', KEYS[4], id) == ARGV[3] then
            reply[#reply + 1] = id
            reply[#reply + 1] = redis.call('HGET', KEYS[2], id)
        end
    end
    return reply
end
redis.call('SET', KEYS[10], ARGV[3], 'PX', ARGV[2])
local wanted = tonumber(ARGV[1])
if wanted <= 0 then
    return reply
end
local ids = redis.call('LRANGE', KEYS[1], 0, wanted - 1)
if #ids == 0 then
    return reply
end
redis.call('LTRIM', KEYS[1], #ids, -1)
local expiry = now + tonumber(ARGV[2])
local interval = tonumber(ARGV[5])
local first_start = now
if interval > 0 then
    first_start = math.max(now, tonumber(redis.call('GET', KEYS[9]) or '0'))
    reply[2] = first_start - now
end
local leased_count = 0
for _, id in ipairs(ids) do
    local payload = redis.call('HGET', KEYS[2], id)
    if payload then
        redis.call('ZADD', KEYS[3], expiry, id)
        redis.call('HSET', KEYS[4], id, ARGV[3])
        redis.call('HINCRBY', KEYS[5], id, 1)
        redis.call('SADD', KEYS[7], id)
        reply[#reply + 1] = id
        reply[#reply + 1] = payload
        leased_count = leased_count + 1
    end
end
if interval > 0 then
    redis.call('SET', KEYS[9], tostring(first_start + leased_count * interval))
end
return reply
