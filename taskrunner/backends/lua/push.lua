-- push: the controller adds a batch of jobs to the run's queue, unless it is full.
--
-- KEYS[1]  taskrunner:{NAME}:waiting    list of job ids waiting to be leased
-- KEYS[2]  taskrunner:{NAME}:payloads   hash: job id -> serialized job
-- ARGV[1]  queue size: the most jobs that may wait
-- ARGV[2k], ARGV[2k+1]  (k >= 1) a job id and its payload
--
-- Returns the number of jobs now waiting, or -1 (and adds nothing) when the batch would
-- take the queue past its size: the caller waits for workers to lease some and tries again.

local waiting = redis.call('LLEN', KEYS[1])
local count = (#ARGV - 1) / 2
if waiting + count > tonumber(ARGV[1]) and waiting > 0 then
    return -1
end
for i = 2, #ARGV, 2 do
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    redis.call('RPUSH', KEYS[1], ARGV[i])
end
return waiting + count
