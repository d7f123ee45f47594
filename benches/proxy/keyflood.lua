-- wrk script (run with -t1): each request from another client address, as a trusted proxy
-- would say in X-Forwarded-For, cycling through exactly KEYS addresses of 10.0.0.0/8, so the
-- gateway holds KEYS rate-limit keys once KEYS requests have passed. Used to measure the
-- gateway's memory per key (benches/proxy/README.md).
local n = 0
local keys = tonumber(os.getenv("KEYS") or "1000000")
request = function()
  n = n + 1
  local v = n % keys
  local ip = string.format("10.%d.%d.%d", math.floor(v / 65536) % 256, math.floor(v / 256) % 256, v % 256)
  return wrk.format("GET", "/", { ["X-Forwarded-For"] = ip })
end
