-- push: the controller adds a batch of jobs to the run's queue, unless it is full.
--
-- KEYS[1]  taskrunner:{NAME}:waiting    list of job ids waiting to be leased
-- KEYS[2]  taskrunner:{NAME}:payloads   hash: job id -> serialized job
-- KEYS[3]  taskrunner:{NAME}:fed        list: at most a few tokens, one pushed per batch,
--                                       that an idle worker waits on (BLPOP) for jobs
-- KEYS[4]  taskrunner:{NAME}:pushed_by  string: the request id of the last batch added
-- KEYS[5]  taskrunner:{NAME}:owner  string: who took the run's lock last (lock_take.lua)
-- KEYS[6]  taskrunner:{NAME}:seqs       hash: batch id -> the seqs of its jobs (see ARGV[8])
-- ARGV[1]  queue size: the most jobs that may wait
-- ARGV[2]  the job ids, separated by spaces
-- ARGV[3]  the length in bytes of each payload, separated by spaces
-- ARGV[4]  the payloads, one after the other, each followed by one separator byte
-- ARGV[5]  a request id, new for each batch
-- ARGV[6]  the caller's lock token
-- ARGV[7]  the batch's id (the part of its job ids before the colon)
-- ARGV[8]  the seqs of its jobs, in order, separated by spaces, a run of them as START-STOP
--          (STOP not included): kept in KEYS[6] while the batch is in flight, so that a
--          controller resumed after a crash can tell which jobs the outcomes that the
--          workers reported in the meantime are of (redis_reopen.py)
--
-- The batch travels as three arguments, not two per job: redis-py's cost is per argument.
-- Returns the number of jobs now waiting, or -1 (and adds nothing) when the batch would
-- take the queue past its size: the caller waits for workers to lease some and tries again.
-- A call repeated with the request id of the batch added last (the client retried after a
-- lost connection, not knowing whether the first ran) adds nothing: its jobs would be queued
-- twice, and run twice.
-- Refused, with the error TAKEN_OVER, when another controller took the run's lock since this
-- one did (it stalled past it), even if that one has let go: a controller that lost its run
-- neither feeds it nor takes its outcomes. A lock that lapsed and that nobody took is no
-- refusal: the controller takes it back. Refused with RUN_LOST, writing nothing, when the
-- run's owner is gone (Redis lost the run's state): jobs pushed then would re-create the
-- run's keys without an expiry, and workers would lease and report them.

local GROUP = 500  -- elements per command: well under Lua's stack limit for unpack
-- GUARD: a field longer than the compact encodings allow, kept in the hashes that hold a
-- batch of jobs (payloads here, tokens in pop.lua): a hash of a few hundred entries is
-- otherwise a ziplist/listpack, searched from one end for every field (a pop of 500 jobs
-- then costs milliseconds), and Redis never turns a hashtable back into one. It names no job.
local GUARD = 'guard:' .. string.rep('-', 70)
local holder = redis.call('GET', KEYS[5])
if holder and holder ~= ARGV[6] then
    return redis.error_reply('TAKEN_OVER by another controller')
end
if not holder and ARGV[6] ~= '' then
    return redis.error_reply('RUN_LOST from Redis')
end
if redis.call('GET', KEYS[4]) == ARGV[5] then
    return redis.call('LLEN', KEYS[1])
end
-- (Counters, not #t + 1: Lua 5.1's length of a table is a search, in every loop turn.)
local ids = {}
local count = 0
for id in string.gmatch(ARGV[2], '%S+') do
    count = count + 1
    ids[count] = id
end
local waiting = redis.call('LLEN', KEYS[1])
if waiting + #ids > tonumber(ARGV[1]) and waiting > 0 then
    return -1
end
local lengths = {}
local n = 0
for length in string.gmatch(ARGV[3], '%d+') do
    n = n + 1
    lengths[n] = tonumber(length)
end
redis.call('HSETNX', KEYS[2], GUARD, GUARD)
local body = ARGV[4]
local at = 1
for first = 1, #ids, GROUP do
    local last = math.min(first + GROUP - 1, #ids)
    local fields = {}
    local f = 0
    local sub = string.sub
    for i = first, last do
        local length = lengths[i]
        fields[f + 1] = ids[i]
        fields[f + 2] = sub(body, at, at + length - 1)
        f = f + 2
        at = at + length + 1
    end
    redis.call('HSET', KEYS[2], unpack(fields))
    redis.call('RPUSH', KEYS[1], unpack(ids, first, last))
end
redis.call('SET', KEYS[4], ARGV[5])
if #ids > 0 and ARGV[7] then
    redis.call('HSET', KEYS[6], ARGV[7], ARGV[8])
end
if #ids > 0 then
    redis.call('LPUSH', KEYS[3], '1')
    redis.call('LTRIM', KEYS[3], 0, 3)
end
return waiting + #ids
