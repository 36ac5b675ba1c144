-- heartbeat: renew every lease one worker holds, in one call, and say which jobs it started.
--
-- KEYS[1]  taskrunner:{NAME}:lease_expiry sorted set: lease token -> expiry (ms, Redis clock)
-- KEYS[2]  taskrunner:{NAME}:tokens     hash: job id -> token of the lease that holds it
-- KEYS[3]  taskrunner:{NAME}:holds:WID  set of the lease tokens the worker holds
-- KEYS[4]  taskrunner:{NAME}:started    set: job ids their worker said it started
-- KEYS[5]  taskrunner:{NAME}:lease_left hash: lease token -> how many of its jobs are not reported
-- ARGV[1]  lease length in ms
-- ARGV[2]  the worker's id, WID: its tokens are "WID:counter"
-- ARGV[3]  the ids of the jobs it started since its last heartbeat, separated by spaces
--
-- Sent every lease/3 seconds, and as soon as jobs start: a lease lost later is then judged
-- by whether its jobs had started (pop.lua). A job whose lease the worker lost (it expired
-- and went to another) is not marked started; a lease lost or ended (all its jobs reported)
-- is dropped from the worker's set, not renewed. Returns the number of leases renewed.

local GROUP = 500  -- elements per command: well under Lua's stack limit for unpack
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
-- As text, once: a number passed to redis.call is turned into text (sprintf) at every use.
local expiry = string.format('%d', now + tonumber(ARGV[1]))
local prefix = ARGV[2] .. ':'

-- (Counters, not #t + 1: Lua 5.1's length of a table is a search, in every loop turn.)
local started, ours = {}, {}
local count, n = 0, 0
for id in string.gmatch(ARGV[3] or '', '%S+') do
    count = count + 1
    started[count] = id
end
for first = 1, count, GROUP do
    local last = math.min(first + GROUP - 1, count)
    local tokens = redis.call('HMGET', KEYS[2], unpack(started, first, last))
    for i = first, last do
        local token = tokens[i - first + 1]
        if token and string.sub(token, 1, #prefix) == prefix then
            n = n + 1
            ours[n] = started[i]
        end
    end
end
for first = 1, n, GROUP do
    redis.call('SADD', KEYS[4], unpack(ours, first, math.min(first + GROUP - 1, n)))
end

local held = redis.call('SMEMBERS', KEYS[3])
local renewed = 0
for first = 1, #held, GROUP do
    local last = math.min(first + GROUP - 1, #held)
    local left = redis.call('HMGET', KEYS[5], unpack(held, first, last))
    local scored, gone = {}, {}
    local s, g = 0, 0
    for i = first, last do
        if left[i - first + 1] then
            scored[s + 1] = expiry
            scored[s + 2] = held[i]
            s = s + 2
        else
            g = g + 1
            gone[g] = held[i]
        end
    end
    if s > 0 then
        redis.call('ZADD', KEYS[1], 'XX', unpack(scored))
        renewed = renewed + s / 2
    end
    if g > 0 then
        redis.call('SREM', KEYS[3], unpack(gone))
    end
end
return renewed
