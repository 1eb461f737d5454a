-- Leak check: N signed requests against a running simulator and N callback
-- verifications, RSS sampled after warm-up and at the end.  Run plain for
-- the RSS figures and under LeakSanitizer for leaks (make leakcheck).
--   lua5.4 bench/leak.lua N CPATH_DIR SIM_JSON
local n, cdir, sim_json = tonumber(arg[1] or "100000"), arg[2] or "build/5.4", arg[3]
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = cdir .. "/?.so;" .. package.cpath
local kinot = require "kinot"
local callback = require "kinot.callback"
local cjson = require "cjson"

local function rss_kb()
  collectgarbage("collect")
  collectgarbage("collect")
  local f = io.open("/proc/self/status")
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

local f = assert(io.open(sim_json))
local sim = cjson.decode(f:read("*a"))
f:close()

local client = kinot.new { app_key = sim.app_key, app_secret = sim.app_secret, endpoint = sim.endpoint }
local secret = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"
local body = '{"sn":419631107,"voltage":3.659,"locked":0,"car_detected":1,"parameter":{"key":"handle","value":1},' ..
  '"updated_at":"2019-03-13T10:42:39+08:00","device_type":18}'
body = body:gsub("}$", ',"sign":"' .. callback.sign(body, secret) .. '"}')

local function round(count)
  for i = 1, count do
    local sn = 419600001 + i % 40
    assert(client:locker(sn))
    assert(callback.verify(body, { secret = secret }))
    -- a refusal path too, every 10th time
    if i % 10 == 0 then assert(not callback.verify(body:gsub("3.659", "3.658"), { secret = secret })) end
  end
end

round(1000) -- warm-up: connection pool, caches, JIT
local start = rss_kb()
round(n)
local finish = rss_kb()
client:close()
if cdir:find("asan", 1, true) then
  -- ASan keeps freed memory in quarantine: RSS says nothing here, LSan at exit does
  print(string.format("leak  %s: %d signed requests + %d verifications done; LeakSanitizer checks at exit", cdir, n, n))
else
  print(string.format("leak  %s: %d signed requests + %d verifications: RSS %d KiB after warm-up, %d KiB at the end (%+d KiB)",
    cdir, n, n, start, finish, finish - start))
end
