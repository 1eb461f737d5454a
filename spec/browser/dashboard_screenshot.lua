-- `make screenshots`: pictures of `kinot serve`'s dashboard for the docs
-- (docs/img/dashboard.png, docs/img/dashboard-command.png), made the way an
-- operator sees it: a car park of 160 spaces over `kinot sim` (two
-- buildings of two levels of locks, two surface lots of sensors, a few
-- sensors not in the groups file), most devices heard from lately, some
-- silent for days (stale), a few faults, a live change feed, and a command
-- followed to its end. Debian's chromium, headless, at 1280x800 (the
-- browser specs' driver: spec/browser/dashboard.js).
--   lua5.4 spec/browser/dashboard_screenshot.lua [OUT_DIR]   (from the checkout's root)
package.path = "lua/?.lua;lua/?/init.lua;spec/support/?.lua;" .. package.path
package.cpath = "build/5.4/?.so;" .. package.cpath

local json = require "kinot.json"
local core = require "kinot.core"
local launcher = require "kinot.sim.launcher"

local OUT = arg[1] or "docs/img"
local TOKEN = "screenshot-token"

local sh = require("helpers").sh -- (spec/support/helpers.lua)

local http = core.http()
local function call(method, url, doc)
  local res = assert(http:request { method = method, url = url, body = doc and json.encode(doc) or nil,
                                    headers = { ["Content-Type"] = "application/json" }, timeout = 10 })
  return json.decode(res.body)
end

local LEVELS = { { "North", 1, "N1", 24 }, { "North", 2, "N2", 24 }, { "South", 1, "S1", 24 }, { "South", 2, "S2", 24 } }
local LOTS = { { "Surface", "A", "SA", 32 }, { "Surface", "B", "SB", 24 } }
local LOCKS, SENSORS = 96, 64 -- the lots take 56 sensors: 8 are in no group (the "Ungrouped" area)

local sim = assert(launcher.start { locks = LOCKS, sensors = SENSORS, dtus = 4, seed = 7, examples = false,
                                    command_pace = 0.4 })
local groups = os.tmpname()
local pid_file = os.tmpname()
local served
local ok, err = pcall(function()
  local f = assert(io.open(groups, "w"))
  f:write("sn,zone,level,bay\n")
  local sn = 419600001
  for _, l in ipairs(LEVELS) do
    for i = 1, l[4] do
      f:write(string.format("%d,%s,L%d,%s-%02d\n", sn, l[1], l[2], l[3], i))
      sn = sn + 1
    end
  end
  sn = 419800001
  for _, l in ipairs(LOTS) do
    for i = 1, l[4] do
      f:write(string.format("%d,%s,%s,%s-%02d\n", sn, l[1], l[2], l[3], i))
      sn = sn + 1
    end
  end
  f:close()
  -- heard from lately: all but a few (those stay at their 2019 stamps: stale);
  -- the seeded faults cleared but three, so the red ones stand out
  local admin = sim.admin
  local silent = { [419600019] = true, [419600071] = true, [419800040] = true, [419800041] = true,
                   [419800063] = true }
  local faulty = { [419600030] = { motor_fail = 1 }, [419600052] = { coil_fault = 1 },
                   [419800017] = { coil_fault = 1 } }
  for i = 0, LOCKS + SENSORS - 1 do
    local s = i < LOCKS and 419600001 + i or 419800001 + i - LOCKS
    if not silent[s] then
      local set = faulty[s] or { coil_fault = 0, motor_fail = 0, bar_position_error = 0, shell_opened = 0 }
      if s >= 419800001 then set.bar_position_error, set.motor_fail, set.shell_opened = nil, nil, nil end
      call("POST", admin .. "/devices/" .. s, set)
    end
  end
  for d = 644200001, 644200004 do call("POST", admin .. "/devices/" .. d, { online = d == 644200003 and "offline" or "online" }) end

  local port = launcher.free_port()
  local out, rc = sh(string.format("KINOT_ENDPOINT=%s KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_API_TOKEN=%s " ..
    "lua5.4 bin/kinot serve --daemon --pid-file %s --listen 127.0.0.1:%d --dtus 644200001,644200002,644200003,644200004 " ..
    "--groups %s --sweep-interval 5", sim.endpoint, sim.app_key, sim.app_secret, TOKEN, pid_file, port, groups))
  assert(rc == 0, out)
  served = true
  local url = "http://127.0.0.1:" .. port
  local deadline = core.monotonic() + 20
  repeat core.sleep(0.2) until type(call("GET", url .. "/api/fleet").synced_at) == "string" or core.monotonic() > deadline
  local client = require("kinot").new { app_key = sim.app_key, app_secret = sim.app_secret, endpoint = sim.endpoint }
  for _, kind in ipairs { "lock", "sensor" } do
    assert(client:set_notifications { device_type = kind, status_changed_callback_url = url .. "/kinot/callback" })
  end
  -- a live feed: a few rounds of drift, a battery running low, a fault raised
  for _ = 1, 4 do
    call("POST", admin .. "/drift", { count = 3 })
    core.sleep(0.3)
  end
  call("POST", admin .. "/devices/419800009", { low_battery = 1 })
  call("POST", admin .. "/devices/419600044", { shell_opened = 1 })
  core.sleep(0.5)

  local function shot(cfg)
    cfg.url = url
    local o, code = sh("node spec/browser/dashboard.js " .. launcher.sh_quote(json.encode(cfg)))
    assert(code == 0, o)
    io.write(cfg.path, "\n")
  end
  os.execute("mkdir -p " .. launcher.sh_quote(OUT))
  shot { scenario = "screenshot", path = OUT .. "/dashboard.png", settle_ms = 2500 }
  shot { scenario = "screenshot", path = OUT .. "/dashboard-command.png", token = TOKEN, sn = 419600012,
         command = "reset_bt_match_code" }
end)
if served then sh("lua5.4 bin/kinot serve stop --pid-file " .. launcher.sh_quote(pid_file)) end
os.remove(pid_file)
os.remove(groups)
sim.stop()
if not ok then error(err, 0) end
