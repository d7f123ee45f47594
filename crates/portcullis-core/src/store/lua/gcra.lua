-- GCRA on the Redis server's clock: the same arithmetic as ratelimit/gcra.rs.
-- KEYS[1]  the state, "tat:T": the TAT (microseconds since the epoch, server clock) and
--          the emission interval it was written with; a bare TAT is of the current T
-- ARGV[1]  emission interval T, microseconds
-- ARGV[2]  capacity C = burst x T, microseconds
-- ARGV[3]  cost (0 peeks: decided as cost 1, nothing stored)
-- Returns {allowed (0|1), remaining, retry_after_us, reset_after_us}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = now
local raw = redis.call('GET', KEYS[1])
if raw then
  local a, b = string.match(raw, '^(%d+):(%d+)$')
  local stored, old_t = tonumber(a or raw), tonumber(b or emission)
  -- What is owed is kept as a number of requests when the quota's T changed.
  if stored and old_t and stored > now then
    if old_t == emission or old_t == 0 then
      tat = stored
    else
      tat = now + math.floor((stored - now) * emission / old_t)
    end
  end
end
local new_tat = tat + emission * math.max(cost, 1)
local ahead = new_tat - now
if ahead <= capacity then
  if cost > 0 then
    redis.call('SET', KEYS[1], string.format('%d:%d', new_tat, emission), 'PX', math.max(1, math.ceil(ahead / 1000)))
  end
  return {1, math.floor((capacity - ahead) / emission), 0, ahead}
end
return {0, 0, ahead - capacity, tat - now}
