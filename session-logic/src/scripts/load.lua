-- load: read one session record and, at most once per touch interval, slide
-- its idle deadline. A marker, a corrupt or an expired record is returned as
-- read and never touched (touching an expired record would resurrect it).
-- Touches exactly KEYS[1]; time comes from ARGV, never from TIME.
-- KEYS[1] session key
-- ARGV[1] now (ms)  ARGV[2] idle timeout (ms)  ARGV[3] touch interval (ms)
-- ARGV[4] now + idle timeout (ms), the new TTL instant unless the deadline is sooner
local r = redis.call('HGETALL', KEYS[1])
local touch, deadline, rotated
for i = 1, #r, 2 do
  local f = r[i]
  if f == '$touch' then touch = r[i + 1]
  elseif f == '$deadline' then deadline = r[i + 1]
  elseif f == '$rotated' then rotated = true end
end
if rotated or not touch or not deadline then return r end
local now, t, d = tonumber(ARGV[1]), tonumber(touch), tonumber(deadline)
if not t or not d or now >= math.min(t + tonumber(ARGV[2]), d) then return r end
if now - t >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], '$touch', ARGV[1])
  if tonumber(ARGV[4]) < d then
    redis.call('PEXPIREAT', KEYS[1], ARGV[4])
  else
    redis.call('PEXPIREAT', KEYS[1], deadline)
  end
end
return r
