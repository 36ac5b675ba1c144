-- session_end: the controller's session ends: the run's state for its workers, and tokens
-- that wake the idle ones to see it now.
--
-- KEYS[1]  taskrunner:{NAME}:meta   hash: the run's settings and its state
-- KEYS[2]  taskrunner:{NAME}:fed    list: tokens idle workers wait on (BLPOP)
-- KEYS[3]  taskrunner:{NAME}:owner  string: the token of the controller that took the lock last
-- ARGV[1]  the state: "finished" or "stopped"
-- ARGV[2]  how many wake tokens to leave
-- ARGV[3]  the caller's lock token
--
-- Does nothing, and returns 0, when another controller took the run's lock since the caller
-- did: a controller that stalled past its lock must not tell that one's workers the run
-- stopped; nor when the run's owner is gone (Redis lost the run). Returns 1.

local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[3] then
    return 0
end
if not holder and ARGV[3] ~= '' then
    -- The owner is gone with the run's whole state (Redis restarted without persistence, or
    -- flushed): written now, the state would bring back a run that is not there, and its
    -- workers would wait on it for ever instead of leaving.
    return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
for _ = 1, tonumber(ARGV[2]) do
    redis.call('LPUSH', KEYS[2], '1')
end
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
return 1
