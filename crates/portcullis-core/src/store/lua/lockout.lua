-- Login lockout of one account, on the Redis server's clock: the account's hourly ceiling
-- and one (account, source) pair, in one step. The same rules as auth/lockout.rs.
-- Both keys carry the account's hash tag, so they live in one Cluster slot.
-- KEYS[1]  the account's record, a hash: gen (bumped by unlock), n, end (the ceiling)
-- KEYS[2]  the pair's record, a hash: gen, f, last, lvl, until (not given for 'unlock')
-- ARGV[1]  'check' | 'fail' | 'success' | 'unlock'
-- ARGV[2]  max_failures (at least 1)
-- ARGV[3]  window, microseconds
-- ARGV[4]  lock_for, microseconds
-- ARGV[5]  max_lock, microseconds
-- ARGV[6]  account_max_failures (at least 1)
-- ARGV[7]  the account ceiling's period, microseconds
-- ARGV[8]  the highest lock level
-- Returns {pair_retry_us, pair_just_locked, account_retry_us, account_just_reached}
-- (0 when not locked); for 'unlock' {existed, 0, 0, 0}.
-- A pair record whose gen is not the account's was written before an unlock: absent.
-- The account record outlives every pair record of the account (its TTL is raised to
-- cover each pair written), so an unlock is never undone by the generation expiring.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local op = ARGV[1]
local function fmt(x) return string.format('%d', x) end

local a = redis.call('HMGET', KEYS[1], 'gen', 'n', 'end')
local gen = tonumber(a[1]) or 0
local an = tonumber(a[2]) or 0
local aend = tonumber(a[3]) or 0
if aend <= now then an = 0 aend = 0 end

if op == 'unlock' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0, 0, 0} end
  redis.call('HSET', KEYS[1], 'gen', fmt(gen + 1), 'n', '0', 'end', '0')
  return {1, 0, 0, 0}
end
if op == 'success' then
  redis.call('DEL', KEYS[2])
  return {0, 0, 0, 0}
end

local max_failures = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local lock_for = tonumber(ARGV[4])
local max_lock = tonumber(ARGV[5])
local account_max = tonumber(ARGV[6])
local account_window = tonumber(ARGV[7])
local max_level = tonumber(ARGV[8])

local f, last, lvl, untl = 0, 0, 0, 0
local p = redis.call('HMGET', KEYS[2], 'gen', 'f', 'last', 'lvl', 'until')
if tonumber(p[1]) == gen then
  f = tonumber(p[2]) or 0
  last = tonumber(p[3]) or 0
  lvl = tonumber(p[4]) or 0
  untl = tonumber(p[5]) or 0
  if now >= math.max(untl, last + window) then f, last, lvl, untl = 0, 0, 0, 0 end
end

local pjust, ajust = 0, 0
if op == 'fail' then
  if now - last >= window then f = 0 end
  f = f + 1
  last = now
  if untl <= now and f >= max_failures then
    untl = now + math.min(lock_for * 2 ^ math.min(lvl, max_level), max_lock)
    lvl = math.min(lvl + 1, max_level)
    pjust = 1
  end
  redis.call('HSET', KEYS[2], 'gen', fmt(gen), 'f', fmt(f), 'last', fmt(last), 'lvl', fmt(lvl), 'until', fmt(untl))
  local pexp = math.max(untl, last + window)
  redis.call('PEXPIRE', KEYS[2], math.max(1, math.ceil((pexp - now) / 1000)))

  if aend == 0 then aend = now + account_window end
  an = an + 1
  if an == account_max then ajust = 1 end
  redis.call('HSET', KEYS[1], 'gen', fmt(gen), 'n', fmt(an), 'end', fmt(aend))
  local keep = math.max(1, math.ceil((math.max(aend, pexp) - now) / 1000))
  if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
end

local pretry, aretry = 0, 0
if untl > now then pretry = untl - now end
if an >= account_max and aend > now then aretry = aend - now end
return {pretry, pjust, aretry, ajust}
