-- docs/img/report.png: the HTML report (`kinot report --html`) of a
-- realistic car park, rendered by Debian's chromium.  A simulator with a
-- seeded fleet, its devices set by the simulator's admin API (occupancy by
-- level, a tail of low batteries, weaker signal underground, a few faults, a
-- DTU offline), a groups file of zones and levels, the report, the
-- screenshot; the simulator is stopped however this ends.  From the
-- checkout's root, after `make build` and `make deps`:
--   lua5.4 examples/report_screenshot.lua [docs/img/report.png]
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/5.4/?.so;" .. package.cpath
local json = require "kinot.json"
local launcher = require "kinot.sim.launcher"
local http = require("kinot.core").http()

local shot = arg[1] or "docs/img/report.png"
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))

-- a fixed stream of numbers in [0, 1): the same picture every run
local seed = 20261203
local function rnd()
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed / 2147483648
end

local LOCKS, SENSORS = 240, 96
-- levels of the garage: its share of spaces taken, its signal (dBm, basement weaker)
local LEVELS = { P1 = { occ = 0.82, rs = -78 }, P2 = { occ = 0.58, rs = -92 }, P3 = { occ = 0.27, rs = -104 } }
local SURFACE = { occ = 0.91, rs = -70 }

local sim = assert(launcher.start { locks = LOCKS, sensors = SENSORS, dtus = 4, examples = false })
local ok, err = pcall(function()
  local function admin(sn, doc)
    local res = assert(http:request { method = "POST", url = sim.admin .. "/devices/" .. sn, body = json.encode(doc),
                                      headers = { ["Content-Type"] = "application/json" }, timeout = 10 })
    assert(res.status == 200, res.body)
  end
  local function battery()
    local r = rnd()
    if r < 0.07 then return 2.85 + rnd() * 0.4 end -- the low tail: these flag low_battery
    return 3.42 + rnd() * 0.1 + rnd() * 0.1 + rnd() * 0.08
  end
  local bays = { "sn,zone,level,bay" }
  for i = 1, LOCKS do
    local sn = 419600000 + i
    local level = ({ "P1", "P2", "P3" })[(i - 1) // 80 + 1]
    local zone = ({ "A", "B", "C", "D" })[((i - 1) % 80) // 20 + 1]
    bays[#bays + 1] = string.format("%d,%s,%s,%s%s-%02d", sn, zone, level, zone, level:sub(2), (i - 1) % 20 + 1)
    local l = LEVELS[level]
    local car = rnd() < l.occ and 1 or 0
    local v = battery()
    admin(sn, { car_detected = car, locked = 1 - car, voltage = math.floor(v * 1000 + 0.5) / 1000,
                low_battery = v < 3.3 and 1 or 0, rs_si = math.floor((l.rs + (rnd() - 0.5) * 26) * 10) / 10,
                coil_fault = 0, bar_position_error = 0, motor_fail = 0, shell_opened = 0 })
  end
  for i = 1, SENSORS do
    local sn = 419800000 + i
    local zone = i <= 48 and "E" or "F"
    bays[#bays + 1] = string.format("%d,%s,P0,%s0-%02d", sn, zone, zone, (i - 1) % 48 + 1)
    local v = battery()
    admin(sn, { car_detected = rnd() < SURFACE.occ and 1 or 0, active = 1, voltage = math.floor(v * 1000 + 0.5) / 1000,
                low_battery = v < 3.3 and 1 or 0, coil_fault = 0,
                rs_si = math.floor((SURFACE.rs + (rnd() - 0.5) * 24) * 10) / 10 })
  end
  -- the faults of a working garage, two sensors frozen, one DTU down
  for _, f in ipairs { { 419600007, "motor_fail" }, { 419600093, "motor_fail" }, { 419600161, "motor_fail" },
                       { 419600044, "bar_position_error" }, { 419600170, "bar_position_error" },
                       { 419600012, "coil_fault" }, { 419600201, "coil_fault" }, { 419600222, "coil_fault" },
                       { 419600130, "shell_opened" }, { 419800017, "coil_fault" }, { 419800071, "coil_fault" } } do
    admin(f[1], { [f[2]] = 1 })
  end
  admin(419800033, { active = 0 })
  admin(419800090, { active = 0 })
  for d = 1, 4 do admin(644200000 + d, { online = d == 3 and "offline" or "online" }) end
  local f = assert(io.open(dir .. "/bays.csv", "wb"))
  f:write(table.concat(bays, "\n"), "\n")
  f:close()
  local env = string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s", sim.app_key, sim.app_secret,
    sim.endpoint)
  assert(os.execute(string.format("%s lua5.4 bin/kinot report --groups %s/bays.csv --dtu 644200001 --dtu 644200002 " ..
    "--dtu 644200003 --dtu 644200004 --html %s/report.html >/dev/null", env, dir, dir)))
  assert(os.execute("mkdir -p \"$(dirname " .. shot .. ")\""))
  local abs = shot:sub(1, 1) == "/" and shot or (os.getenv("PWD") .. "/" .. shot)
  assert(os.execute(string.format("cd spec/browser && node report-render.js %s/report.html %s 1200 >/dev/null", dir, abs)))
  print("wrote " .. shot)
end)
sim.stop()
os.execute("rm -rf " .. dir)
if not ok then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
