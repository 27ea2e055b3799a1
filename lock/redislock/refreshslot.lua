-- Refresh a slot: extend it if the caller's token holds a live one.
-- KEYS and ARGV[1..2] as in Refresh (slots, holders, counter; owner token,
-- TTL in ms), ARGV[3] counter retention in ms. Returns the slot's value.
local t = redis.call('TIME')
local nowms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if not until_ or until_ <= nowms then
  return false
end
local expires = nowms + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', expires, ARGV[1])
local longest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local keep = tonumber(longest[2]) - nowms
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return redis.call('HGET', KEYS[2], ARGV[1])
