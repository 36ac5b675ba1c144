-- lock_take: take a run's controller lock, when no controller holds it.
--
-- KEYS[1]  taskrunner:{NAME}:lock   string: the token of the controller running the run
-- ARGV[1]  the caller's token ("host:pid:random")
-- ARGV[2]  how long the lock lasts unless extended, in ms
--
-- Returns {1} when taken; {0, holder's token} when another controller holds it (read in the
-- same step, so the holder named is the one that refused us).

if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return {1}
end
return {0, redis.call('GET', KEYS[1])}
