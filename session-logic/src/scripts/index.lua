-- index: maintain one user's session index, a sorted set of session handles
-- scored by absolute deadline. Prunes dead entries, removes and adds members,
-- and, when a cap is set, names the oldest entries beyond it (the caller revokes
-- them), never the member just added. Entries leave only by deadline pruning.
-- KEYS[1] user index key
-- ARGV[1] now  ARGV[2] cap (0 = none)  ARGV[3] n = members to add
-- ARGV[4 .. 3+2n] score, member pairs; ARGV[4+2n ..] members to remove
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local n = tonumber(ARGV[3])
if #ARGV > 3 + 2 * n then redis.call('ZREM', KEYS[1], unpack(ARGV, 4 + 2 * n, #ARGV)) end
if n > 0 then redis.call('ZADD', KEYS[1], unpack(ARGV, 4, 3 + 2 * n)) end
local evicted = {}
local cap = tonumber(ARGV[2])
if cap > 0 then
  local count = redis.call('ZCARD', KEYS[1])
  if count > cap then
    -- Oldest first, never the member this call just added.
    local keep = n > 0 and ARGV[5] or nil
    for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, count - cap)) do
      if #evicted < count - cap and m ~= keep then evicted[#evicted + 1] = m end
    end
    -- kept until pruned: an entry outlives its key, never the other way round
  end
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], last[2]) end
return evicted
