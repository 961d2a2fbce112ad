-- index: add one session to its user's index, a sorted set of session handles
-- scored by absolute deadline. Prunes dead entries first, keeps the key alive
-- until its latest deadline (only ever extended: GT, or NX on a key without a
-- TTL yet), and, when a cap is set, names the oldest entries beyond it (the
-- caller revokes them), never the member just added. Entries leave only by
-- deadline pruning: an entry outlives its session, never the other way round.
-- KEYS[1] user index key
-- ARGV[1] now  ARGV[2] cap (0 = none)  ARGV[3] score (the session's deadline)  ARGV[4] member
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
if redis.call('PEXPIREAT', KEYS[1], ARGV[3], 'GT') == 0 then
  redis.call('PEXPIREAT', KEYS[1], ARGV[3], 'NX')
end
local evicted = {}
local cap = tonumber(ARGV[2])
if cap > 0 then
  local count = redis.call('ZCARD', KEYS[1])
  if count > cap then
    for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, count - cap)) do
      if #evicted < count - cap and m ~= ARGV[4] then evicted[#evicted + 1] = m end
    end
  end
end
return evicted
