-- A car-park operator's morning script: every lock and sensor, occupancy,
-- faults and low battery; then one command sent and awaited.
--   KINOT_APP_KEY=... KINOT_APP_SECRET=... [KINOT_ENDPOINT=...] lua5.4 examples/fleet_report.lua
local kinot = require "kinot"

local client = kinot.new {
  app_key = assert(os.getenv("KINOT_APP_KEY"), "set KINOT_APP_KEY"),
  app_secret = assert(os.getenv("KINOT_APP_SECRET"), "set KINOT_APP_SECRET"),
  endpoint = os.getenv("KINOT_ENDPOINT"),
}

local totals = { locks = 0, sensors = 0, occupied = 0, low_battery = {}, faulty = {} }

local function look_at(device, kind)
  totals[kind] = totals[kind] + 1
  if device.car_detected == 1 then totals.occupied = totals.occupied + 1 end
  if device.low_battery == 1 then totals.low_battery[#totals.low_battery + 1] = device.sn end
  if device.coil_fault == 1 or device.motor_fail == 1 or device.bar_position_error == 1 then
    totals.faulty[#totals.faulty + 1] = device.sn
  end
end

-- paging errors are raised by the iterators: catch them once here
local ok, err = pcall(function()
  for lock in client:each_locker { limit = 100, concurrency = 8 } do look_at(lock, "locks") end
  for sensor in client:each_sensor { limit = 100, concurrency = 8 } do look_at(sensor, "sensors") end
end)
if not ok then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end

local spaces = totals.locks + totals.sensors
print(string.format("%d locks, %d sensors: %d of %d spaces occupied (%.1f%%)",
  totals.locks, totals.sensors, totals.occupied, spaces, spaces > 0 and 100 * totals.occupied / spaces or 0))
print(string.format("%d devices on low battery, %d with a fault", #totals.low_battery, #totals.faulty))

-- reset the BlueTooth match code of the first lock, and wait for the device
local first = assert(client:lockers { limit = 10 }).objects[1]
local cmd = assert(client:reset_bt_match_code(first.sn))
local done, werr = client:wait_command(cmd.guid, { timeout = 30 })
if not done then
  io.stderr:write("command ", cmd.guid, ": ", tostring(werr), "\n")
  os.exit(1)
end
print(string.format("command %s on lock %d: %s", done.guid, done.sn, done.command_status))
client:close()
