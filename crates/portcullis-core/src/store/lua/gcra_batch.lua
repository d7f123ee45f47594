-- GCRA for n requests of cost 1 at one instant, on the Redis server's clock: as many as
-- fit are admitted, in order, and the state is written once. The same arithmetic as
-- GcraBatch::decide in ratelimit/gcra.rs; the state is read as gcra.lua reads it.
-- KEYS[1]  the state, "tat:T" (see gcra.lua)
-- ARGV[1]  emission interval T, microseconds
-- ARGV[2]  capacity C = burst x T, microseconds
-- ARGV[3]  n, the number of requests (at least 1)
-- Returns {now_us, tat_us, admitted}: the server's time, the TAT the requests were decided
-- from (rescaled to T; now_us when there was no state) and how many of the n, the first
-- ones, were admitted. From these Rust rebuilds every decision (GcraBatch::decisions).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
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
-- The i-th request fits while tat + i x T <= now + C.
local admitted = 0
local free = now + capacity - tat
if free > 0 then
  admitted = math.min(n, math.floor(free / emission))
end
if admitted > 0 then
  local new_tat = tat + emission * admitted
  redis.call('SET', KEYS[1], string.format('%d:%d', new_tat, emission), 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
end
return {now, tat, admitted}
