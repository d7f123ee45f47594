-- The per-source login-failure ceiling, on the Redis server's clock: the same rules as
-- auth/lockout.rs. A fixed window that starts with the source's first failure.
-- KEYS[1]  the source's counter, a hash: n, end
-- ARGV[1]  'check' | 'fail'
-- ARGV[2]  ip_max_failures (at least 1)
-- ARGV[3]  window, microseconds
-- Returns {retry_us (0: not refused), just_reached (0|1)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local max = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'n', 'end')
local n = tonumber(v[1]) or 0
local e = tonumber(v[2]) or 0
if e <= now then n = 0 e = 0 end
local just = 0
if ARGV[1] == 'fail' then
  if e == 0 then e = now + window end
  n = n + 1
  if n == max then just = 1 end
  redis.call('HSET', KEYS[1], 'n', string.format('%d', n), 'end', string.format('%d', e))
  redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((e - now) / 1000)))
end
if n >= max and e > now then return {e - now, just} end
return {0, just}
