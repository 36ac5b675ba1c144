-- recall: the controller is stopping and takes back every job no worker has leased yet.
--
-- KEYS[1]  taskrunner:{NAME}:waiting    list of job ids waiting to be leased
-- KEYS[2]  taskrunner:{NAME}:payloads   hash: job id -> serialized job
--
-- Returns the ids taken back; their jobs stay unfinished in the checkpoint, for `resume`.

local ids = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
for _, id in ipairs(ids) do
    redis.call('HDEL', KEYS[2], id)
end
return ids
