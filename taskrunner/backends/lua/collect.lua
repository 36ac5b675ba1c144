-- collect: the controller takes the outcomes workers reported, oldest first.
--
-- KEYS[1]  taskrunner:{NAME}:outcomes   list of outcomes (JSON)
-- ARGV[1]  the most outcomes to take
--
-- Returns the outcomes taken; they are removed from the list in the same step.

local taken = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #taken > 0 then
    redis.call('LTRIM', KEYS[1], #taken, -1)
end
return taken
