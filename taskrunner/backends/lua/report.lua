-- report: a worker hands in the outcomes (finished or failed) of jobs it leased.
--
-- KEYS[1]  taskrunner:{NAME}:lease_expiry sorted set: lease token -> expiry
-- KEYS[2]  taskrunner:{NAME}:tokens       hash: job id -> token of the lease that holds it
-- KEYS[3]  taskrunner:{NAME}:payloads     hash: job id -> serialized job
-- KEYS[4]  taskrunner:{NAME}:leased       hash: job id -> lost leases counted as attempts
-- KEYS[5]  taskrunner:{NAME}:outcomes     list of outcomes for the controller
-- KEYS[6]  taskrunner:{NAME}:holds:WID    set of the lease tokens the calling worker holds
-- KEYS[7]  taskrunner:{NAME}:started      set: job ids their worker said it started
-- KEYS[8]  taskrunner:{NAME}:suspects     hash: job id -> leases lost while it had started
-- KEYS[9]  taskrunner:{NAME}:missed       hash: job id -> leases lost before it started
-- KEYS[10] taskrunner:{NAME}:reported:WID hash: the request id of the worker's last report
--                                         ("by") and the ids it refused ("refused", JSON)
-- KEYS[11] taskrunner:{NAME}:wake         list: at most one token, for a controller that
--                                         waits (BLPOP) for outcomes
-- KEYS[12] taskrunner:{NAME}:lease_jobs   hash: lease token -> the ids it leased
-- KEYS[13] taskrunner:{NAME}:lease_left   hash: lease token -> how many are not reported
-- ARGV[1]  a request id, new for each call
-- ARGV[3k+2], ARGV[3k+3], ARGV[3k+4]  (k >= 0) one lease's part of the report: its token,
--          the ids of its jobs reported (separated by spaces), and what became of them
--          (a JSON document for the controller, passed on as is)
--
-- An outcome is accepted only with the token of the job's current lease: a worker that
-- lost its lease (it stalled past the expiry and the job went to another) is refused, so
-- no job is counted twice. A lease whose jobs are all reported ends (pop.lua's expiry has
-- nothing left to reclaim of it). Each part accepted becomes one entry of the outcomes list:
-- "ids\nrefused ids\ndocument", the controller skipping the refused ones. Returns the ids
-- refused. A call repeated with the same request id (the client retried after a lost
-- connection, not knowing whether the first ran) gets the same answer, and applies nothing
-- twice.

local GROUP = 500  -- elements per command: well under Lua's stack limit for unpack
if redis.call('HGET', KEYS[10], 'by') == ARGV[1] then
    return cjson.decode(redis.call('HGET', KEYS[10], 'refused'))
end

-- One command for each group of `ids`, for each key that may hold them (the loss path's
-- keys only when they exist: most runs never lose a lease). Returns how many tokens it
-- removed: the jobs settled now, each once, whatever the report repeated.
local function settle(ids)
    local settled = 0
    local tidy = {}
    for _, index in ipairs({4, 7, 8, 9}) do
        if redis.call('EXISTS', KEYS[index]) == 1 then
            tidy[#tidy + 1] = index
        end
    end
    for first = 1, #ids, GROUP do
        local last = math.min(first + GROUP - 1, #ids)
        settled = settled + redis.call('HDEL', KEYS[2], unpack(ids, first, last))
        redis.call('HDEL', KEYS[3], unpack(ids, first, last))
        for _, index in ipairs(tidy) do
            local command = index == 7 and 'SREM' or 'HDEL'
            redis.call(command, KEYS[index], unpack(ids, first, last))
        end
    end
    return settled
end

local refused = {}
local applied = 0
for k = 2, #ARGV, 3 do
    local token = ARGV[k]
    -- (Counters, not #t + 1: Lua 5.1's length of a table is a search, in every loop turn.)
    local ids = {}
    local count = 0
    for id in string.gmatch(ARGV[k + 1], '%S+') do
        count = count + 1
        ids[count] = id
    end
    local accepted, refused_here = {}, {}
    local taken = 0
    for first = 1, count, GROUP do
        local last = math.min(first + GROUP - 1, count)
        local tokens = redis.call('HMGET', KEYS[2], unpack(ids, first, last))
        for i = first, last do
            if tokens[i - first + 1] == token then
                taken = taken + 1
                accepted[taken] = ids[i]
            else
                refused_here[#refused_here + 1] = ids[i]
                refused[#refused + 1] = ids[i]
            end
        end
    end
    if taken > 0 then
        -- (Accepted jobs were under the lease, so it had not expired: lease_left is there.)
        if redis.call('HINCRBY', KEYS[13], token, -settle(accepted)) <= 0 then
            redis.call('ZREM', KEYS[1], token)
            redis.call('HDEL', KEYS[12], token)
            redis.call('HDEL', KEYS[13], token)
            redis.call('SREM', KEYS[6], token)
        end
        redis.call('RPUSH', KEYS[5], ARGV[k + 1] .. '\n' .. table.concat(refused_here, ' ')
            .. '\n' .. ARGV[k + 2])
        applied = applied + 1
    end
end
if applied > 0 then
    redis.call('LPUSH', KEYS[11], '1')
    redis.call('LTRIM', KEYS[11], 0, 0)
end
-- cjson writes an empty table as {}, which decodes back as an empty table too.
redis.call('HSET', KEYS[10], 'by', ARGV[1], 'refused', cjson.encode(refused))
redis.call('EXPIRE', KEYS[10], 3600)
return refused
