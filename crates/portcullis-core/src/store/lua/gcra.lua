-- GCRA on the Redis server's clock: the same arithmetic as ratelimit/gcra.rs.
-- KEYS[1]  the key holding the TAT (microseconds since the epoch, server clock)
-- ARGV[1]  emission interval T, microseconds
-- ARGV[2]  capacity C = burst x T, microseconds
-- ARGV[3]  cost (0 peeks)
-- Returns {allowed (0|1), remaining, retry_after_us, reset_after_us}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + emission * cost
local ahead = new_tat - now
if ahead <= capacity then
  if cost > 0 then
    redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.max(1, math.ceil(ahead / 1000)))
  end
  return {1, math.floor((capacity - ahead) / emission), 0, ahead}
end
return {0, 0, ahead - capacity, tat - now}
