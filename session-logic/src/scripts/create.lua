-- create: write a brand-new session record under a freshly minted key, only
-- if that key does not exist (a collision is reported, never overwritten).
-- Returns 1 when created, 0 on collision.
-- KEYS[1] new session key
-- ARGV[1] expiry instant (ms)  ARGV[2 ..] field, value pairs (metadata and data)
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2, #ARGV))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
