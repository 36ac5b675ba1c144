-- lock_take: take a run's controller lock, when no controller holds it.
--
-- KEYS[1]  taskrunner:{NAME}:lock   string: the token of the controller running the run
-- KEYS[2]  taskrunner:{NAME}:owner  string: the token of the controller that took it last
--                                   (kept when the lock lapses or is released: see below)
-- ARGV[1]  the caller's token ("host:pid:random")
-- ARGV[2]  how long the lock lasts unless extended, in ms
--
-- Returns {1} when taken; {0, holder's token} when another controller holds it (read in the
-- same step, so the holder named is the one that refused us). The owner is who may feed the
-- run and take its outcomes (push, collect, recall, session_end): a controller that stalled
-- past its lock while another took the run is refused even once that one has let go.

if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    redis.call('SET', KEYS[2], ARGV[1])
    return {1}
end
return {0, redis.call('GET', KEYS[1])}
