-- lock_release: let go of a run's controller lock, if the caller still holds it.
--
-- KEYS[1]  taskrunner:{NAME}:lock   string: the token of the controller running the run
-- ARGV[1]  the token the caller took it with
--
-- Compare and delete in one step: a controller whose lock lapsed (and was taken by another
-- meanwhile) never deletes the other's. Returns 1 when released, 0 when not held by ARGV[1].

if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
