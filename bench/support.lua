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
-- fails, so a broken benchmark leaves no nginx behind (the specs' guard:
-- spec/support/helpers.lua)
function M.guarded(fn, ...) return require("helpers").guarded(fn, ...) end

--- wrk_post_script(bodies[, more]) -> the path of a wrk script (the caller
-- removes it) that POSTs the lines of the file bodies in turn, each
-- preformatted once in init(): wrk's own work per request the same for
-- every handler and as small as it can be; more: Lua appended to it
-- (wrk's delay(), say)
function M.wrk_post_script(bodies, more)
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(string.format([[
local requests, i = {}, 0
function init() -- wrk knows the URL's path only from here on
  for body in io.lines(%q) do
    requests[#requests + 1] = wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
  end
end
request = function()
  i = i %% #requests + 1
  return requests[i]
end
]], bodies), more or "")
  f:close()
  return script
end

-- ---------------------------------------------------------------- callbacks

-- the reference's callback bodies (unsigned: H.signed), with the fields
-- that vary from one device and moment to the next; i picks them, and an
-- updated_at within the last 10 minutes (older than max_age, 48 h by
-- default, the handler would acknowledge and drop it), written as the
-- platform writes it (+08:00)
local NOW = os.time()
local function stamp(i)
  return os.date("!%Y-%m-%dT%H:%M:%S", NOW - i % 600 + 8 * 3600) .. "+08:00"
end
function M.lock_status_body(sn, i)
  return string.format('{"sn":%d,"voltage":%.3f,"frequency":37.919,"locked":%d,"car_detected":%d,' ..
    '"shell_opened":0,"low_battery":%d,"coil_fault":0,"bar_position_error":0,"motor_fail":0,"rs_si":%d,' ..
    '"updated_at":"%s","device_type":18}',
    sn, 3.4 + (i % 300) / 1000, i % 2, math.floor(i / 2) % 2, i % 7 == 0 and 1 or 0, i % 5, stamp(i))
end
function M.sensor_status_body(sn, i)
  return string.format('{"sn":%d,"voltage":%.3f,"car_detected":%d,"low_battery":0,"rs_si":%d,' ..
    '"updated_at":"%s","device_type":34}', sn, 3.5 + (i % 200) / 1000, i % 2, i % 5, stamp(i))
end
function M.command_result_body(sn, i)
  return string.format('{"guid":"%032X","sn":%d,"commnad_status":"succeeded","reason":"NULL",' ..
    '"updated_at":"%s","device_type":18}', i, sn, stamp(i))
end

--- cpu_of(pid) -> seconds of CPU (user + system, /proc) process pid has
-- spent (0 when it is gone)
function M.cpu_of(pid)
  local f = io.open("/proc/" .. math.floor(pid) .. "/stat")
  if not f then return 0 end
  local fields = {}
  for v in f:read("*a"):match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = v end
  f:close()
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100 -- utime, stime (clock ticks)
end

--- cpu_of_children(pid) -> seconds of CPU (user + system, /proc) the
-- children of process pid have spent: an nginx master's workers
function M.cpu_of_children(pid)
  local total = 0
  local p = io.popen("ps -o pid= --ppid " .. math.floor(pid))
  for child in p:read("*a"):gmatch("%d+") do total = total + M.cpu_of(tonumber(child)) end
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
