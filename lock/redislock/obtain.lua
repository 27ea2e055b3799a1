-- Obtain: take the lock if nobody holds it, bumping the key's fencing counter.
-- KEYS[1] lock key, KEYS[2] fencing counter key (same hash slot).
-- ARGV[1] owner token, ARGV[2] TTL in ms, ARGV[3] holder details,
-- ARGV[4] how long the counter outlives its last use, in ms.
local held = redis.call('GET', KEYS[1])
if held then
  return {0, held, redis.call('PTTL', KEYS[1])}
end
local fence = redis.call('INCR', KEYS[2])
if fence == 1 then
  -- A new or forgotten counter starts at the server clock in microseconds,
  -- above every token it can have handed out before it was forgotten.
  local now = redis.call('TIME')
  fence = string.format('%d', tonumber(now[1]) * 1000000 + tonumber(now[2]))
  redis.call('SET', KEYS[2], fence)
else
  fence = string.format('%d', fence)
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence .. ' ' .. ARGV[3], 'PX', ARGV[2])
return {1, fence}
