-- save: apply one request's delta (fields set, fields deleted) to a live
-- session, bump its revision and, at most once per touch interval (as a load
-- does), slide its idle deadline. Returns the new revision; 0 when gone or
-- expired, -1 when rotated (marker in grace): no write ever recreates a
-- session (no resurrection). Only changed fields travel, so two requests
-- changing different keys both keep their changes. One HMGET reads every
-- metadata field, one HSET writes data, revision and (when due) the touch.
-- KEYS[1] session key
-- ARGV[1] now  ARGV[2] idle timeout  ARGV[3] now + idle timeout
-- ARGV[4] touch interval (0: touch now)  ARGV[5] n = pairs to set
-- ARGV[6 .. 5+2n] field, value pairs; ARGV[6+2n ..] fields to delete
local f = redis.call('HMGET', KEYS[1], '$touch', '$deadline', '$rotated', '$rev')
if f[3] then return (tonumber(f[3]) or 0) > tonumber(ARGV[1]) and -1 or 0 end
if not f[1] or not f[2] then return 0 end
local now, t, d = tonumber(ARGV[1]), tonumber(f[1]), tonumber(f[2])
if not t or not d or now >= math.min(t + tonumber(ARGV[2]), d) then return 0 end
local n = tonumber(ARGV[5])
local rev = (tonumber(f[4]) or 0) + 1
if now > t and now - t >= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], '$rev', rev, '$touch', ARGV[1], unpack(ARGV, 6, 5 + 2 * n))
  if tonumber(ARGV[3]) < d then
    redis.call('PEXPIREAT', KEYS[1], ARGV[3])
  else
    redis.call('PEXPIREAT', KEYS[1], f[2])
  end
else
  redis.call('HSET', KEYS[1], '$rev', rev, unpack(ARGV, 6, 5 + 2 * n))
end
if #ARGV > 5 + 2 * n then redis.call('HDEL', KEYS[1], unpack(ARGV, 6 + 2 * n, #ARGV)) end
return rev
