-- retire: mark a live session as a short-lived "rotated" marker (the old half
-- of regenerate), so a request still carrying the old cookie sees Rotated
-- until the grace instant. The record is marked in place, not rewritten: every
-- reader checks `$rotated` first, so its other fields are never served again,
-- and they expire with the marker. Returns 1, or the record as it was when its
-- revision is not ARGV[4] (a parallel save landed: the caller merges it); 0
-- when there is no live session, -1 when already rotated inside grace (caller
-- fails closed).
-- KEYS[1] old session key
-- ARGV[1] now  ARGV[2] idle timeout  ARGV[3] grace instant (ms)  ARGV[4] revision
local f = redis.call('HMGET', KEYS[1], '$touch', '$deadline', '$rotated', '$rev')
if f[3] then return (tonumber(f[3]) or 0) > tonumber(ARGV[1]) and -1 or 0 end
if not f[1] or not f[2] then return 0 end
local now, t, d = tonumber(ARGV[1]), tonumber(f[1]), tonumber(f[2])
if not t or not d or now >= math.min(t + tonumber(ARGV[2]), d) then return 0 end
local r = f[4] ~= ARGV[4] and redis.call('HGETALL', KEYS[1]) or 1
redis.call('HSET', KEYS[1], '$rotated', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return r
