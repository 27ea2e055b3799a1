-- Obtain: take the lock if nobody holds it, with a new fencing token.
-- KEYS[1] lock key, KEYS[2] fencing counter key (same hash slot).
-- ARGV[1] "<owner token> <acquired unix ms> <pid> <host>", ARGV[2] TTL in ms,
-- ARGV[3] how long the counter outlives its last use, in ms.
-- Returns the fencing token, or {held value, remaining ms} if held.
local held = redis.call('GET', KEYS[1])
if held then
  return {held, redis.call('PTTL', KEYS[1])}
end
-- The token is the larger of the counter plus one and the server clock in
-- microseconds, so it stays above every token handed out before even when
-- the counter was forgotten (expired), or lost with recent writes in a
-- restart from a snapshot or a failover to a replica that lagged. A counter
-- that is not a positive number was not this engine's: the clock wins.
local now = redis.call('TIME')
local fence = tonumber(now[1]) * 1000000 + tonumber(now[2])
local last = tonumber(redis.call('GET', KEYS[2])) or 0
if last >= fence then
  -- Lua's numbers are exact integers up to 2^53 only: beyond, refuse
  -- rather than hand out a token twice.
  if last >= 9007199254740991 then
    return redis.error_reply('fencing counter ' .. KEYS[2] .. ' is exhausted: increment or decrement would overflow')
  end
  fence = last + 1
end
local token = string.format('%d', fence)
redis.call('SET', KEYS[2], token, 'PX', ARGV[3])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
return fence
