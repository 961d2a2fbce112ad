-- retire: replace a live session by a short-lived "rotated" marker, the old
-- half of regenerate. An in-flight request that still carries the old cookie
-- then sees Rotated (no data, no new cookie) until the grace instant. Returns
-- 1 when retired, 0 when there is no live session (gone, expired, stale marker),
-- -1 when already rotated inside the grace period; the caller fails closed.
-- KEYS[1] old session key
-- ARGV[1] now  ARGV[2] idle timeout  ARGV[3] grace instant (ms)
local f = redis.call('HMGET', KEYS[1], '$touch', '$deadline', '$rotated')
if f[3] then return (tonumber(f[3]) or 0) > tonumber(ARGV[1]) and -1 or 0 end
if not f[1] or not f[2] then return 0 end
local now, t, d = tonumber(ARGV[1]), tonumber(f[1]), tonumber(f[2])
if not t or not d or now >= math.min(t + tonumber(ARGV[2]), d) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '$rotated', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1
