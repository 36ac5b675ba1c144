-- heartbeat: renew every lease one worker holds, in one call, and say which jobs it started.
--
-- KEYS[1]  taskrunner:{NAME}:leases     sorted set: job id -> lease expiry (ms, Redis clock)
-- KEYS[2]  taskrunner:{NAME}:tokens     hash: job id -> token of the lease that holds it
-- KEYS[3]  taskrunner:{NAME}:held:WID   set of job ids the calling worker holds
-- KEYS[4]  taskrunner:{NAME}:started    set: job ids their worker said it started
-- ARGV[1]  lease length in ms
-- ARGV[2]  the worker's id, WID: its tokens are "WID:counter"
-- ARGV[3..] the ids of the jobs it started since its last heartbeat
--
-- Sent every lease/3 seconds, and as soon as jobs start: a lease lost later is then judged
-- by whether its jobs had started (pop.lua). A job whose lease the worker lost (it expired
-- and went to another) is dropped from the worker's set, not renewed, and not marked
-- started. Returns the number of leases renewed.

local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local expiry = now + tonumber(ARGV[1])
local prefix = ARGV[2] .. ':'
local function ours(id)
    local token = redis.call('HGET', KEYS[2], id)
    return token and string.sub(token, 1, #prefix) == prefix
end
for i = 3, #ARGV do
    if ours(ARGV[i]) then
        redis.call('SADD', KEYS[4], ARGV[i])
    end
end
local renewed = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    if ours(id) then
        redis.call('ZADD', KEYS[1], 'XX', expiry, id)
        renewed = renewed + 1
    else
        redis.call('SREM', KEYS[3], id)
    end
end
return renewed
