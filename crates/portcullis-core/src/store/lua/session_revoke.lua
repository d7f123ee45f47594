-- Revokes a family (logout). KEYS[1] the family. Returns the family JSON, or '' if none.
local raw = redis.call('GET', KEYS[1])
if not raw then return '' end
local f = cjson.decode(raw)
f.rev = true
local out = cjson.encode(f)
redis.call('SET', KEYS[1], out, 'KEEPTTL')
return out
