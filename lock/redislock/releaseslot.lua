-- Release a slot held live by the caller's token.
-- KEYS[1] the slots, KEYS[2] the holders. ARGV[1] owner token.
local t = redis.call('TIME')
local nowms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if not until_ or until_ <= nowms then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
