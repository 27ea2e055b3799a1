-- ObtainLimit: take one of a key's slots if fewer than the limit are live.
-- KEYS[1] the slots (a sorted set: owner token -> expiry in unix ms),
-- KEYS[2] the holders (a hash: owner token -> value, and "limit"),
-- KEYS[3] the key's fencing counter, KEYS[4] its plain lock (see
-- obtain.lua); all in one hash slot.
-- ARGV[1] owner token, ARGV[2] "<acquired unix ms> <pid> <host>",
-- ARGV[3] TTL in ms, ARGV[4] counter retention in ms, ARGV[5] the limit.
-- Returns the fencing token, or {value of the slot that frees first,
-- remaining ms} when the key is full, or {holder's value, remaining ms,
-- limit} while it is held with another limit (1: its plain lock).
local plain = redis.call('GET', KEYS[4])
if plain then
  return {plain, redis.call('PTTL', KEYS[4]), 1}
end
local t = redis.call('TIME')
local nowms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', nowms)
if #expired > 0 then
  redis.call('ZREM', KEYS[1], unpack(expired))
  redis.call('HDEL', KEYS[2], unpack(expired))
end
local live = redis.call('ZCARD', KEYS[1])
local limit = tonumber(ARGV[5])
if live > 0 then
  local had = tonumber(redis.call('HGET', KEYS[2], 'limit'))
  if had and had ~= limit then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {redis.call('HGET', KEYS[2], first[1]), tonumber(first[2]) - nowms, had}
  end
end
if live >= limit then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {redis.call('HGET', KEYS[2], first[1]), tonumber(first[2]) - nowms}
end
-- The fencing token as Obtain hands it out: above every earlier one.
local fence = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[3])) or 0
if last >= fence then
  if last >= 9007199254740991 then
    return redis.error_reply('fencing counter ' .. KEYS[3] .. ' is exhausted: increment or decrement would overflow')
  end
  fence = last + 1
end
local token = string.format('%d', fence)
redis.call('SET', KEYS[3], token, 'PX', ARGV[4])
redis.call('ZADD', KEYS[1], nowms + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. token, 'limit', limit)
-- The slots last as long as their longest lease.
local longest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local keep = tonumber(longest[2]) - nowms
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
return fence
