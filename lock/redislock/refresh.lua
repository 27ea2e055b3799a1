-- Refresh: extend the lock if the caller's token still holds it.
-- KEYS[1] lock key, KEYS[2] fencing counter key.
-- ARGV[1] owner token, ARGV[2] TTL in ms, ARGV[3] counter retention in ms.
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return v
end
return false
