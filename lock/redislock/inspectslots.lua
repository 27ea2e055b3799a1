-- InspectSlots: the live slots, each {value, remaining ms}, and the limit.
-- KEYS[1] the slots, KEYS[2] the holders.
local t = redis.call('TIME')
local nowms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local slots = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. nowms, '+inf', 'WITHSCORES')
local out = {redis.call('HGET', KEYS[2], 'limit') or '0'}
for i = 1, #slots, 2 do
  table.insert(out, redis.call('HGET', KEYS[2], slots[i]) or slots[i])
  table.insert(out, tonumber(slots[i + 1]) - nowms)
end
return out
