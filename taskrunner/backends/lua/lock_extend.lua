-- lock_extend: renew a run's controller lock, if the caller still holds it.
--
-- KEYS[1]  taskrunner:{NAME}:lock   string: the token of the controller running the run
-- ARGV[1]  the token the caller took it with
-- ARGV[2]  how long the lock lasts from now unless extended again, in ms
--
-- Compare and extend in one step: a lock that lapsed and was taken by another controller is
-- not renewed for the first one, nor taken back. Returns 1 when extended, 0 when not held by
-- ARGV[1] (taken by another, or lapsed: then `save` refuses too, see save.lua).

if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
