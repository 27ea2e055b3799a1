-- Obtain: take the lock if nobody holds it, bumping the key's fencing counter.
-- KEYS[1] lock key, KEYS[2] fencing counter key (same hash slot).
-- ARGV[1] "<owner token> <acquired unix ms> <pid> <host>", ARGV[2] TTL in ms,
-- ARGV[3] how long the counter outlives its last use, in ms.
-- Returns the fencing token, or {held value, remaining ms} if held.
local held = redis.call('GET', KEYS[1])
if held then
  return {held, redis.call('PTTL', KEYS[1])}
end
local fence = redis.call('INCR', KEYS[2])
if fence <= 1 then
  -- A new or forgotten counter starts at the server clock in microseconds,
  -- above every token it can have handed out before it was forgotten. One
  -- that was not positive was not this engine's: restart it the same way,
  -- so no token is ever 0 or negative. At the largest integer INCR fails
  -- with an error instead of wrapping around.
  local now = redis.call('TIME')
  fence = tonumber(now[1]) * 1000000 + tonumber(now[2])
  redis.call('SET', KEYS[2], string.format('%d', fence))
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. string.format('%d', fence), 'PX', ARGV[2])
return fence
