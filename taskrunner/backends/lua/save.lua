-- save: write a run's checkpoint, counters and new failures in one step.
--
-- KEYS[1]  taskrunner:{NAME}:run        hash: "record" -> the run record (JSON)
-- KEYS[2]  taskrunner:{NAME}:failures   hash: seq -> failure (JSON)
-- KEYS[3]  taskrunner:{NAME}:lock       string: the token of the controller running it
-- KEYS[4..] every other key of the run, to expire with it
-- ARGV[1]  the caller's lock token ("" to skip the check: a read-only tool never saves)
-- ARGV[2]  the run record (JSON)
-- ARGV[3]  seconds to keep the run's keys once it has finished; 0 while it goes on
-- ARGV[4]  how many failures follow
-- ARGV[5..] seq, failure JSON pairs to add; then the seqs of failures to remove
--
-- Refuses (returns 0) when another controller holds the run's lock: two controllers never
-- write one checkpoint. Returns 1 when saved.

if ARGV[1] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[1] then
    return 0
end
redis.call('HSET', KEYS[1], 'record', ARGV[2])
local added = tonumber(ARGV[4])
local last_added = 4 + 2 * added
for i = 5, last_added, 2 do
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
for i = last_added + 1, #ARGV do
    redis.call('HDEL', KEYS[2], ARGV[i])
end
local keep = tonumber(ARGV[3])
if keep > 0 then
    for _, key in ipairs(KEYS) do
        redis.call('EXPIRE', key, keep)
    end
end
return 1
