-- Release: delete the lock only if the caller's token holds it.
-- KEYS[1] lock key. ARGV[1] owner token.
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  return redis.call('DEL', KEYS[1])
end
return 0
