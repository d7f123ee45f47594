-- Starts a refresh family. KEYS[1] the family; ARGV[1] the family JSON without `abs`;
-- ARGV[2] absolute lifetime ms; ARGV[3] idle lifetime ms. `abs` is set on the server clock.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = cjson.decode(ARGV[1])
f.abs = now + tonumber(ARGV[2])
redis.call('SET', KEYS[1], cjson.encode(f), 'PX', math.min(tonumber(ARGV[2]), tonumber(ARGV[3])))
return 1
