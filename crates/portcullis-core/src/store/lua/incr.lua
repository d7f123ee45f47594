-- Atomic increment with a time to live set when the key has none.
-- KEYS[1] the counter; ARGV[1] the increment; ARGV[2] the TTL in milliseconds.
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2], 'NX')
return v
