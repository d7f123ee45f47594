-- Sliding-window counter on the Redis server's clock: the same arithmetic as
-- ratelimit/sliding.rs, in integers (exact while limit x per < 2^53).
-- KEYS[1]  the state, "window:prev:cur" (window = floor(now / per), now in microseconds
--          since the epoch, server clock); absent or unreadable: no state
-- ARGV[1]  per, microseconds
-- ARGV[2]  limit
-- ARGV[3]  cost (0 peeks: answered as a request of 1, nothing written)
-- Returns {allowed (0|1), remaining, reset_after_us, retry_after_us}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local per = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local store = cost > 0
if cost < 1 then cost = 1 end
local window = math.floor(now / per)
local elapsed = now - window * per
local left = per - elapsed
local prev, cur = 0, 0
local raw = redis.call('GET', KEYS[1])
if raw then
  local w, p, c = string.match(raw, '^(%d+):(%d+):(%d+)$')
  w = tonumber(w)
  if w then
    if w >= window then
      prev, cur = tonumber(p), tonumber(c)
    elseif w + 1 == window then
      prev = tonumber(c)
    end
  end
end
-- In units of 1/per of a request: the previous window's weight, and the room left.
local weight = prev * left
local allowed = cur + cost <= limit and weight <= (limit - cur - cost) * per
if allowed then
  cur = cur + cost
  if store then
    redis.call('SET', KEYS[1], string.format('%d:%d:%d', window, prev, cur),
      'PX', math.max(1, math.ceil(2 * per / 1000)))
  end
end
local remaining = math.max(0, limit - cur) - math.ceil(weight / per)
if remaining < 0 then remaining = 0 end
local reset = 0
if cur > 0 then
  reset = per + left
elseif prev > 0 then
  reset = left
end
if allowed then
  return {1, remaining, reset, 0}
end
local retry
if cost > limit then
  retry = per
elseif cur + cost <= limit then
  retry = per - math.floor((limit - cur - cost) * per / prev) - elapsed
else
  retry = left + per - math.floor((limit - cost) * per / cur)
end
return {0, remaining, reset, retry}
