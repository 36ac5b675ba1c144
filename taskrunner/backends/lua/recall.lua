-- recall: the controller is stopping and takes back every job no worker has leased yet.
--
-- KEYS[1]  taskrunner:{NAME}:waiting        list of job ids waiting to be leased
-- KEYS[2]  taskrunner:{NAME}:payloads       hash: job id -> serialized job
-- KEYS[3]  taskrunner:{NAME}:recalled       list: the ids the last call took back
-- KEYS[4]  taskrunner:{NAME}:recalled_by    string: the request id of the last call
-- KEYS[5]  taskrunner:{NAME}:alone          list of crash suspects waiting to be leased
-- KEYS[6]  taskrunner:{NAME}:owner  string: who took the run's lock last (lock_take.lua)
-- ARGV[1]  a request id, new for each call
-- ARGV[2]  the caller's lock token
--
-- Returns the ids taken back; their jobs stay unfinished in the checkpoint, for `resume`.
-- A call repeated with the same request id gets the same ids again.
-- Refused, with the error TAKEN_OVER, when another controller took the run's lock since this
-- one did (it stalled past it), even if that one has let go: a controller that lost its run
-- neither feeds it nor takes its outcomes. A lock that lapsed and that nobody took is no
-- refusal: the controller takes it back. Refused with RUN_LOST, writing nothing, when the
-- run's owner is gone (Redis lost the run's state): there is nothing to take back, and the
-- list of what it took would stay without an expiry.

local holder = redis.call('GET', KEYS[6])
if holder and holder ~= ARGV[2] then
    return redis.error_reply('TAKEN_OVER by another controller')
end
if not holder and ARGV[2] ~= '' then
    return redis.error_reply('RUN_LOST from Redis')
end
if redis.call('GET', KEYS[4]) == ARGV[1] then
    return redis.call('LRANGE', KEYS[3], 0, -1)
end
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
for _, id in ipairs(redis.call('LRANGE', KEYS[5], 0, -1)) do
    ids[#ids + 1] = id
end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[5])
for i = 1, #ids do
    redis.call('HDEL', KEYS[2], ids[i])
end
for i = 1, #ids, 1000 do
    redis.call('RPUSH', KEYS[3], unpack(ids, i, math.min(i + 999, #ids)))
end
redis.call('SET', KEYS[4], ARGV[1])
return ids
