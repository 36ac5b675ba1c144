-- pace: reserve --rate start times for N jobs that a worker runs again under the leases it
-- holds (handed back by one of its processes, or left by one that died).
--
-- KEYS[1]  taskrunner:{NAME}:pace   string: earliest start (ms) of the next job, for --rate
-- ARGV[1]  N, how many starts to reserve
-- ARGV[2]  ms between job starts across all workers
--
-- The starts follow those given by every earlier pop or pace, one interval apart, by
-- Redis's clock (TIME). A call retried after a lost reply reserves again: that leaves a gap
-- in the pace, never a burst.
--
-- The key expires once its time has passed: a time in the past paces as no time at all,
-- and a run whose state Redis lost keeps no key of it for ever.
--
-- Returns the delay in ms before the first of them may start.

local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local first_start = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
local next_start = first_start + tonumber(ARGV[1]) * tonumber(ARGV[2])
redis.call('SET', KEYS[1], tostring(next_start), 'PX', string.format('%d', math.ceil(next_start - now) + 1000))
return first_start - now
