-- Obtain: take the lock if nobody holds it, with a new fencing token.
-- KEYS[1] lock key, KEYS[2] fencing counter key, KEYS[3] and KEYS[4] the
-- key's slots and holders when taken with a limit (see obtainslot.lua);
-- one hash slot.
-- ARGV[1] "<owner token> <acquired unix ms> <pid> <host>", ARGV[2] TTL in ms,
-- ARGV[3] how long the counter outlives its last use, in ms.
-- Returns the fencing token, or {held value, remaining ms} if held, or
-- {slot's owner token, remaining ms, limit} while slots of the key live.
local held = redis.call('GET', KEYS[1])
if held then
  return {held, redis.call('PTTL', KEYS[1])}
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  local t = redis.call('TIME')
  local nowms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local live = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. nowms, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #live > 0 then
    local limit = tonumber(redis.call('HGET', KEYS[4], 'limit')) or 0
    return {live[1], tonumber(live[2]) - nowms, limit}
  end
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
