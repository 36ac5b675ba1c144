-- save: write a run's checkpoint, counters and new failures in one step.
--
-- KEYS[1]  taskrunner:{NAME}:run             hash: "record" -> the run record (JSON)
-- KEYS[2]  taskrunner:{NAME}:failures        hash: seq -> failure (JSON whose first key is
--                                            "traceback_hash", when it has one)
-- KEYS[3]  taskrunner:{NAME}:lock            string: the token of the controller running it
-- KEYS[4]  taskrunner:{NAME}:tracebacks      hash: traceback hash -> traceback, less message
-- KEYS[5]  taskrunner:{NAME}:traceback_refs  hash: traceback hash -> failures pointing at it
-- KEYS[6..] every other key of the run, to expire with it
-- ARGV[1]  the caller's lock token ("" to skip the check: a read-only tool never saves)
-- ARGV[2]  the run record (JSON)
-- ARGV[3]  seconds to keep the run's keys once it has finished; 0 while it goes on
-- ARGV[4]  how many failures follow
-- ARGV[5]  how many tracebacks follow
-- ARGV[6..] seq, failure JSON, traceback hash triples to add; then hash, traceback pairs;
--          then the seqs of failures to remove
--
-- A traceback is kept once, as long as a failure points at it: every new reference is
-- counted before any old one is let go, so a traceback moving between failures of one
-- call is never dropped. Refuses (returns 0) when another controller holds the run's lock:
-- two controllers never write one checkpoint; returns -1 when the run's state is gone
-- from Redis (KEYS[6], its owner, is missing). Returns 1 when saved.

if ARGV[1] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[1] then
    return 0
end
if ARGV[1] ~= '' and redis.call('EXISTS', KEYS[6]) == 0 then
    -- The run's owner (set with its lock, kept with its state) is gone: Redis lost the run's
    -- state (restarted without persistence, or flushed). A checkpoint written now would
    -- stand without the failures saved before it.
    return -1
end
redis.call('HSET', KEYS[1], 'record', ARGV[2])

local function traceback_of(entry)
    if not entry then
        return nil
    end
    return string.match(entry, '^{"traceback_hash": "(%x+)"')
end

local added = tonumber(ARGV[4])
local bodies = tonumber(ARGV[5])
local last_added = 5 + 3 * added
local last_body = last_added + 2 * bodies
for i = last_added + 1, last_body, 2 do
    redis.call('HSETNX', KEYS[4], ARGV[i], ARGV[i + 1])
end
local released = {}
for i = 6, last_added, 3 do
    local old = traceback_of(redis.call('HGET', KEYS[2], ARGV[i]))
    if old then
        table.insert(released, old)
    end
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    if ARGV[i + 2] ~= '' then
        redis.call('HINCRBY', KEYS[5], ARGV[i + 2], 1)
    end
end
for i = last_body + 1, #ARGV do
    local old = traceback_of(redis.call('HGET', KEYS[2], ARGV[i]))
    if old then
        table.insert(released, old)
    end
    redis.call('HDEL', KEYS[2], ARGV[i])
end
for _, hash in ipairs(released) do
    if redis.call('HINCRBY', KEYS[5], hash, -1) <= 0 then
        redis.call('HDEL', KEYS[5], hash)
        redis.call('HDEL', KEYS[4], hash)
    end
end
local keep = tonumber(ARGV[3])
if keep > 0 then
    for _, key in ipairs(KEYS) do
        redis.call('EXPIRE', key, keep)
    end
end
return 1
