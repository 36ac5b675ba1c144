-- report: a worker hands in the outcomes (finished or failed) of jobs it leased.
--
-- KEYS[1]  taskrunner:{NAME}:leases       sorted set: job id -> lease expiry
-- KEYS[2]  taskrunner:{NAME}:tokens       hash: job id -> token of the lease that holds it
-- KEYS[3]  taskrunner:{NAME}:payloads     hash: job id -> serialized job
-- KEYS[4]  taskrunner:{NAME}:leased       hash: job id -> leases counted as attempts
-- KEYS[5]  taskrunner:{NAME}:outcomes     list of outcomes for the controller (JSON)
-- KEYS[6]  taskrunner:{NAME}:held:WID     set of job ids the calling worker holds
-- KEYS[7]  taskrunner:{NAME}:started      set: job ids their worker said it started
-- KEYS[8]  taskrunner:{NAME}:suspects     hash: job id -> leases lost while it had started
-- KEYS[9]  taskrunner:{NAME}:missed       hash: job id -> leases lost before it started
-- KEYS[10] taskrunner:{NAME}:reported:WID hash: the request id of the worker's last report
--                                         ("by") and the ids it refused ("refused", JSON)
-- ARGV[1]  a request id, new for each call
-- ARGV[3k+2], ARGV[3k+3], ARGV[3k+4]  (k >= 0) job id, the token it was leased with,
--                                     and its outcome (JSON, passed on as is)
--
-- An outcome is accepted only with the token of the job's current lease: a worker that
-- lost its lease (it stalled past the expiry and the job went to another) is refused, so
-- no job is counted twice. Returns the ids refused. A call repeated with the same request
-- id (the client retried after a lost connection, not knowing whether the first ran) gets
-- the same answer, and applies nothing twice.

if redis.call('HGET', KEYS[10], 'by') == ARGV[1] then
    return cjson.decode(redis.call('HGET', KEYS[10], 'refused'))
end
local refused = {}
for i = 2, #ARGV, 3 do
    local id = ARGV[i]
    if redis.call('HGET', KEYS[2], id) == ARGV[i + 1] then
        redis.call('ZREM', KEYS[1], id)
        redis.call('HDEL', KEYS[2], id)
        redis.call('HDEL', KEYS[3], id)
        redis.call('HDEL', KEYS[4], id)
        redis.call('SREM', KEYS[7], id)
        redis.call('HDEL', KEYS[8], id)
        redis.call('HDEL', KEYS[9], id)
        redis.call('RPUSH', KEYS[5], ARGV[i + 2])
    else
        refused[#refused + 1] = id
    end
    redis.call('SREM', KEYS[6], id)
end
-- cjson writes an empty table as {}, which decodes back as an empty table too.
redis.call('HSET', KEYS[10], 'by', ARGV[1], 'refused', cjson.encode(refused))
redis.call('EXPIRE', KEYS[10], 3600)
return refused
