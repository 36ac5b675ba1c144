-- report: a worker hands in the outcomes (finished or failed) of jobs it leased.
--
-- KEYS[1]  taskrunner:{NAME}:leases     sorted set: job id -> lease expiry
-- KEYS[2]  taskrunner:{NAME}:tokens     hash: job id -> token of the lease that holds it
-- KEYS[3]  taskrunner:{NAME}:payloads   hash: job id -> serialized job
-- KEYS[4]  taskrunner:{NAME}:leased     hash: job id -> how many times it was leased
-- KEYS[5]  taskrunner:{NAME}:outcomes   list of outcomes for the controller (JSON)
-- KEYS[6]  taskrunner:{NAME}:held:WID   set of job ids the calling worker holds
-- ARGV[3k+1], ARGV[3k+2], ARGV[3k+3]  (k >= 0) job id, the token it was leased with,
--                                     and its outcome (JSON, passed on as is)
--
-- An outcome is accepted only with the token of the job's current lease: a worker that
-- lost its lease (it stalled past the expiry and the job went to another) is refused, so
-- no job is counted twice. Returns the ids refused.

local refused = {}
for i = 1, #ARGV, 3 do
    local id = ARGV[i]
    if redis.call('HGET', KEYS[2], id) == ARGV[i + 1] then
        redis.call('ZREM', KEYS[1], id)
        redis.call('HDEL', KEYS[2], id)
        redis.call('HDEL', KEYS[3], id)
        redis.call('HDEL', KEYS[4], id)
        redis.call('RPUSH', KEYS[5], ARGV[i + 2])
    else
        refused[#refused + 1] = id
    end
    redis.call('SREM', KEYS[6], id)
end
return refused
