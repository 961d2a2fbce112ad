-- revoke: delete one session on behalf of its user (logout everywhere, device
-- sign-out, cap eviction), only while the record still belongs to that user:
-- an index entry left behind by a re-bound session must not log out its new
-- owner. Returns 1 when deleted, else 0. Touches exactly KEYS[1].
-- KEYS[1] session key
-- ARGV[1] user id
if redis.call('HGET', KEYS[1], '$user') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
