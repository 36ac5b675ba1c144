-- collect: the controller takes the outcomes workers reported, oldest first.
--
-- KEYS[1]  taskrunner:{NAME}:outcomes        list of outcomes (JSON)
-- KEYS[2]  taskrunner:{NAME}:collected       list: the outcomes the last call took
-- KEYS[3]  taskrunner:{NAME}:collected_by    string: the request id of the last call
-- KEYS[4]  taskrunner:{NAME}:owner  string: who took the run's lock last (lock_take.lua)
-- KEYS[5]  taskrunner:{NAME}:seqs       hash: batch id -> the seqs of its jobs (push.lua)
-- ARGV[1]  the most outcomes to take
-- ARGV[2]  a request id, new for each call
-- ARGV[3]  the caller's lock token
-- ARGV[4..] ids of batches the caller has every outcome of: their seqs are let go
--
-- Returns the outcomes taken; they are removed from the list in the same step. A call
-- repeated with the same request id (the client retried after a lost connection, not
-- knowing whether the first ran) gets the same outcomes again instead of losing them.
-- Refused, with the error TAKEN_OVER, when another controller took the run's lock since this
-- one did (it stalled past it), even if that one has let go: a controller that lost its run
-- neither feeds it nor takes its outcomes. A lock that lapsed and that nobody took is no
-- refusal: the controller takes it back. Refused with RUN_LOST when the run's owner is gone
-- (Redis lost the run's state).

local holder = redis.call('GET', KEYS[4])
if holder and holder ~= ARGV[3] then
    return redis.error_reply('TAKEN_OVER by another controller')
end
if not holder and ARGV[3] ~= '' then
    -- The owner, set when the lock was taken and kept with the run's state, is gone: Redis
    -- lost that state (restarted without persistence, or flushed), and the jobs queued and
    -- leased with it. Waiting for their outcomes would wait for ever.
    return redis.error_reply('RUN_LOST from Redis')
end
for i = 4, #ARGV, 500 do
    redis.call('HDEL', KEYS[5], unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
if redis.call('GET', KEYS[3]) == ARGV[2] then
    return redis.call('LRANGE', KEYS[2], 0, -1)
end
local taken = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
redis.call('DEL', KEYS[2])
if #taken > 0 then
    redis.call('LTRIM', KEYS[1], #taken, -1)
    for i = 1, #taken, 1000 do
        redis.call('RPUSH', KEYS[2], unpack(taken, i, math.min(i + 999, #taken)))
    end
end
redis.call('SET', KEYS[3], ARGV[2])
return taken
