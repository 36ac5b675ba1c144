-- heartbeat: renew every lease one worker holds, in one call, and say which jobs it started.
--
-- KEYS[1]  taskrunner:{NAME}:leases     sorted set: job id -> lease expiry (ms, Redis clock)
-- KEYS[2]  taskrunner:{NAME}:tokens     hash: job id -> token of the lease that holds it
-- KEYS[3]  taskrunner:{NAME}:held:WID   set of job ids the calling worker holds
-- KEYS[4]  taskrunner:{NAME}:started    set: job ids their worker said it started
-- ARGV[1]  lease length in ms
-- ARGV[2]  the worker's id, WID: its tokens are "WID:counter"
-- ARGV[3]  the ids of the jobs it started since its last heartbeat, separated by spaces
--
-- Sent every lease/3 seconds, and as soon as jobs start: a lease lost later is then judged
-- by whether its jobs had started (pop.lua). A job whose lease the worker lost (it expired
-- and went to another) is dropped from the worker's set, not renewed, and not marked
-- started. Returns the number of leases renewed.

local GROUP = 500  -- elements per command: well under Lua's stack limit for unpack
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
-- As text, once: a number passed to redis.call is turned into text (sprintf) at every use.
local expiry = string.format('%d', now + tonumber(ARGV[1]))
local prefix = ARGV[2] .. ':'

-- The ids of `ids` leased to this worker, and those leased to another (or to none).
local function sort_out(ids)
    local ours, others = {}, {}
    for first = 1, #ids, GROUP do
        local last = math.min(first + GROUP - 1, #ids)
        local tokens = redis.call('HMGET', KEYS[2], unpack(ids, first, last))
        for i = first, last do
            local token = tokens[i - first + 1]
            if token and string.sub(token, 1, #prefix) == prefix then
                ours[#ours + 1] = ids[i]
            else
                others[#others + 1] = ids[i]
            end
        end
    end
    return ours, others
end

local started = {}
for id in string.gmatch(ARGV[3] or '', '%S+') do
    started[#started + 1] = id
end
local ours = sort_out(started)
for first = 1, #ours, GROUP do
    redis.call('SADD', KEYS[4], unpack(ours, first, math.min(first + GROUP - 1, #ours)))
end
local held, gone = sort_out(redis.call('SMEMBERS', KEYS[3]))
for first = 1, #held, GROUP do
    local last = math.min(first + GROUP - 1, #held)
    local scored = {}
    local n = 0
    for i = first, last do
        scored[n + 1] = expiry
        scored[n + 2] = held[i]
        n = n + 2
    end
    redis.call('ZADD', KEYS[1], 'XX', unpack(scored))
end
for first = 1, #gone, GROUP do
    redis.call('SREM', KEYS[3], unpack(gone, first, math.min(first + GROUP - 1, #gone)))
end
return #held
