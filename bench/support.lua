-- Shared by the benchmarks: paths for the checkout, a timer loop, a static
-- nginx, and the simulator launcher.
local abi = rawget(_G, "jit") and "5.1" or _VERSION:match("%d+%.%d+")
package.path = "./?.lua;lua/?.lua;lua/?/init.lua;spec/support/?.lua;" .. package.path
package.cpath = "build/" .. abi .. "/?.so;" .. package.cpath

local core = require "kinot.core"
local M = {}

M.runtime = rawget(_G, "jit") and jit.version or _VERSION
M.SECONDS = tonumber(os.getenv("BENCH_SECONDS") or "3")

--- rate(fn, seconds) -> calls per second of fn (batches of `batch`)
function M.rate(fn, seconds, batch)
  batch = batch or 100
  local n, t0 = 0, core.monotonic()
  local t
  repeat
    for _ = 1, batch do fn() end
    n = n + batch
    t = core.monotonic()
  until t - t0 >= (seconds or M.SECONDS)
  return n / (t - t0)
end

--- guarded(fn, server...): runs fn, then stops every server even when fn
-- fails, so a broken benchmark leaves no nginx behind
function M.guarded(fn, ...)
  local servers = { ... }
  local ok, err = pcall(fn)
  for _, s in ipairs(servers) do s.stop() end
  if not ok then error(err, 0) end
end

--- cpu_of_children(pid) -> seconds of CPU (user + system, /proc) the
-- children of process pid have spent: an nginx master's workers
function M.cpu_of_children(pid)
  local total = 0
  local p = io.popen("ps -o pid= --ppid " .. math.floor(pid))
  for child in p:read("*a"):gmatch("%d+") do
    local f = io.open("/proc/" .. child .. "/stat")
    if f then
      local fields = {}
      for v in f:read("*a"):match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = v end
      f:close()
      total = total + (tonumber(fields[12]) + tonumber(fields[13])) / 100 -- utime, stime (clock ticks)
    end
  end
  p:close()
  return total
end

function M.peak_rss_kb()
  local f = io.open("/proc/self/status")
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)"))
end

return M
