-- lock_extend: renew a run's controller lock, if the caller still holds it or nobody does.
--
-- KEYS[1]  taskrunner:{NAME}:lock   string: the token of the controller running the run
-- KEYS[2]  taskrunner:{NAME}:owner  string: the token of the controller that took it last
-- ARGV[1]  the token the caller took it with
-- ARGV[2]  how long the lock lasts from now unless extended again, in ms
--
-- Compare and extend in one step. A lock that lapsed while nobody took it (Redis was
-- unreachable for longer than the lock lasts: its TTL kept counting) is taken back, if no
-- other controller took it meanwhile (the owner is still the caller: another may have taken
-- it and let go since); one that another controller holds is neither renewed nor taken.
-- Returns 1 when extended, 2 when taken back, 0 when another token holds it or held it last
-- (then `save` refuses too, see save.lua).

local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
local owner = redis.call('GET', KEYS[2])
if not holder and (not owner or owner == ARGV[1]) then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 2
end
return 0
