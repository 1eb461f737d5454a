-- Fleet scan: a 100,000-lock fleet iterated with each_locker while the
-- simulator adds 20 ms to every request; sequential (concurrency 1, the
-- baseline) against concurrency 16.  Then peak memory of a concurrent scan
-- of 10,000 against 100,000 devices, each in a fresh process.
--   make bench   (or: lua5.4 bench/scan.lua after make build)
package.path = "./?.lua;" .. package.path
local B = require "bench.support"
local core = require "kinot.core"

-- child mode: one scan, prints "seconds count peak_rss_kb lua_peak_kb"
if arg[1] == "child" then
  local kinot = require "kinot"
  local c = kinot.new { app_key = arg[2], app_secret = arg[3], endpoint = arg[4], timeout = 30 }
  local conc, want = tonumber(arg[5]), tonumber(arg[6])
  collectgarbage("collect")
  local peak = collectgarbage("count")
  local t0, n = core.monotonic(), 0
  for _ in c:each_locker { limit = 100, concurrency = conc } do
    n = n + 1
    if n % 1000 == 0 then
      local k = collectgarbage("count")
      if k > peak then peak = k end
    end
  end
  assert(n == want, "scanned " .. n .. " of " .. want)
  print(string.format("%.3f %d %d %.0f", core.monotonic() - t0, n, B.peak_rss_kb(), peak))
  os.exit(0)
end

local H = require "helpers"
local lua = rawget(_G, "jit") and "luajit" or "lua5.4"

local function scan(sim, conc, want)
  local p = io.popen(string.format("%s bench/scan.lua child %s %s %s %d %d", lua, sim.app_key, sim.app_secret,
    sim.endpoint, conc, want))
  local out = p:read("*a")
  p:close()
  local secs, n, rss, heap = out:match("([%d.]+) (%d+) (%d+) (%d+)")
  assert(secs, "scan failed: " .. out)
  return tonumber(secs), tonumber(n), tonumber(rss), tonumber(heap)
end

local sim = H.sim { locks = 100000, sensors = 10 }
local seq, conc, rss100k, heap100k, rss10k, heap10k
B.guarded(function()
  sim.fault { kind = "latency", latency = 0.02, share = 1, endpoint = "GET /lockers" }
  seq = scan(sim, 1, 100000)
  local _
  conc, _, rss100k, heap100k = scan(sim, 16, 100000)
  sim.call("POST", "/fleet", { locks = 10000 })
  _, _, rss10k, heap10k = scan(sim, 16, 10000)
end, sim)

print(string.format("scan  %-22s 100k locks, 20 ms/request: sequential %.1f s, concurrency 16 %.2f s, %.1fx faster",
  B.runtime, seq, conc, seq / conc))
print(string.format("scan  %-22s peak RSS 10k: %d KiB, 100k: %d KiB (diff %d KiB); Lua heap peak 10k: %d KiB, 100k: %d KiB",
  B.runtime, rss10k, rss100k, rss100k - rss10k, heap10k, heap100k))
