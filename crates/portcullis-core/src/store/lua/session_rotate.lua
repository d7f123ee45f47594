-- One refresh, atomically: the same steps as session::rotate in Rust.
-- KEYS[1] the family; ARGV: presented hash, next hash, next sealed, grace ms, idle ms.
-- Returns {outcome, family JSON}: outcome is rotated | replayed | reused | invalid.
local raw = redis.call('GET', KEYS[1])
if not raw then return {'invalid', ''} end
local f = cjson.decode(raw)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if f.rev or now >= f.abs then return {'invalid', ''} end
if ARGV[1] == f.cur then
  f.prev = f.cur
  f.cur = ARGV[2]
  f.prev_at = now
  f.succ = ARGV[3]
  f.generation = (f.generation or 0) + 1
  local ttl = math.max(1, math.min(f.abs - now, tonumber(ARGV[5])))
  local out = cjson.encode(f)
  redis.call('SET', KEYS[1], out, 'PX', ttl)
  return {'rotated', out}
end
if f.prev and f.prev ~= '' and ARGV[1] == f.prev and now - (f.prev_at or 0) <= tonumber(ARGV[4]) then
  return {'replayed', raw}
end
f.rev = true
local out = cjson.encode(f)
redis.call('SET', KEYS[1], out, 'KEEPTTL')
return {'reused', out}
