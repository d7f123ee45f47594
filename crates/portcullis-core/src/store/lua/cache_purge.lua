-- Appends one cache purge to the shared log and returns its sequence number.
-- KEYS[1] = the sequence counter, KEYS[2] = the log (a sorted set scored by sequence)
-- ARGV[1] = the purge (opaque to the store), ARGV[2] = entries kept, ARGV[3] = ms kept
-- The counter never expires: numbers must not repeat while entries stored under them live.
local seq = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], seq, seq .. '|' .. ARGV[1])
local keep = tonumber(ARGV[2])
local n = redis.call('ZCARD', KEYS[2])
if n > keep then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - keep - 1)
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return seq
