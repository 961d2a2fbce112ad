-- revoke: delete one session on behalf of its user (logout everywhere, device
-- sign-out, cap eviction), only while the record still belongs to that user:
-- an index entry left behind by a re-bound session must not log out its new
-- owner. A rotated marker is left to its grace (it serves no data, and is no
-- session to count). Returns 1 when deleted, else 0. Touches exactly KEYS[1].
-- KEYS[1] session key
-- ARGV[1] user id
local f = redis.call('HMGET', KEYS[1], '$user', '$rotated')
if f[1] == ARGV[1] and not f[2] then
  return redis.call('DEL', KEYS[1])
end
return 0
