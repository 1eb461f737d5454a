-- `kinot report`: the fleet's health in one pass over every lock and sensor
-- (concurrent paging), plus the DTUs named on the command line.
local M = {}

local vocabulary = require "kinot.vocabulary"

local LOCK_FAULTS, SENSOR_FAULTS = vocabulary.faults.lock, vocabulary.faults.sensor

local function new_section()
  return { total = 0, occupied = 0, low_battery = 0, faults = {}, weakest = {} }
end

-- keeps the `n` weakest signals (most negative rs_si) in a small sorted list
local function note_signal(list, dev, n)
  local rs = tonumber(dev.rs_si)
  if not rs then return end
  if #list == n and rs >= list[n].rs_si then return end
  list[#list + 1] = { sn = dev.sn, rs_si = rs }
  table.sort(list, function(a, b) return a.rs_si < b.rs_si end)
  if #list > n then list[#list] = nil end
end

local function add(section, dev, faults)
  section.total = section.total + 1
  if dev.car_detected == 1 then section.occupied = section.occupied + 1 end
  if dev.low_battery == 1 then section.low_battery = section.low_battery + 1 end
  for _, f in ipairs(faults) do
    if dev[f] == 1 then section.faults[f] = (section.faults[f] or 0) + 1 end
  end
  note_signal(section.weakest, dev, 5)
end

--- build(client, opts) -> report table | raises the client's error
-- opts: concurrency, dtus = {sn...}, on_page(kind, done, total)
function M.build(client, opts)
  local r = { locks = new_section(), sensors = new_section(), dtus = { total = 0, offline = {} } }
  r.locks.up, r.locks.down = 0, 0
  r.sensors.frozen = 0
  local conc = opts.concurrency or 8
  for lock in client:each_locker { limit = 100, concurrency = conc,
                                   on_page = opts.on_page and function(d, t) opts.on_page("locks", d, t) end } do
    add(r.locks, lock, LOCK_FAULTS)
    if lock.locked == 1 then r.locks.up = r.locks.up + 1 else r.locks.down = r.locks.down + 1 end
  end
  for sensor in client:each_sensor { limit = 100, concurrency = conc,
                                     on_page = opts.on_page and function(d, t) opts.on_page("sensors", d, t) end } do
    add(r.sensors, sensor, SENSOR_FAULTS)
    if sensor.active == 0 then r.sensors.frozen = r.sensors.frozen + 1 end
  end
  for _, sn in ipairs(opts.dtus or {}) do
    local d, err = client:dtu_device(sn)
    if not d then error(err, 0) end
    r.dtus.total = r.dtus.total + 1
    if d.online ~= "online" then r.dtus.offline[#r.dtus.offline + 1] = { sn = d.sn, host = d.host, updated_at = d.updated_at } end
  end
  local spaces = r.locks.total + r.sensors.total
  r.occupancy = spaces > 0 and (r.locks.occupied + r.sensors.occupied) / spaces or 0
  return r
end

local function pct(a, b) return b > 0 and string.format("%.1f%%", 100 * a / b) or "-" end

--- print(out, r): the human form
function M.print(out, r)
  local L, S = r.locks, r.sensors
  out:print(out:paint("bold", "Fleet report"))
  out:kv {
    { "devices", string.format("%d locks, %d sensors, %d DTUs checked", L.total, S.total, r.dtus.total) },
    { "occupancy", string.format("%s (%d of %d spaces)", pct(L.occupied + S.occupied, L.total + S.total),
      L.occupied + S.occupied, L.total + S.total) },
    { "locks", string.format("%d up, %d down", L.up, L.down) },
    { "sensors frozen", S.frozen },
    { "low battery", string.format("%d locks, %d sensors", L.low_battery, S.low_battery) },
  }
  local rows = {}
  for _, sec in ipairs { { "lock", L }, { "sensor", S } } do
    local kinds = {}
    for k in pairs(sec[2].faults) do kinds[#kinds + 1] = k end
    table.sort(kinds)
    for _, k in ipairs(kinds) do rows[#rows + 1] = { device = sec[1], fault = k, count = sec[2].faults[k] } end
  end
  out:print("")
  if #rows > 0 then
    out:print(out:paint("bold", "Faults"))
    out:table(rows, { { "device", "DEVICE" }, { "fault", "FAULT" }, { "count", "COUNT" } })
  else
    out:print(out:paint("green", "No faults."))
  end
  local weak = {}
  for _, sec in ipairs { { "lock", L }, { "sensor", S } } do
    for _, w in ipairs(sec[2].weakest) do weak[#weak + 1] = { device = sec[1], sn = w.sn, rs_si = w.rs_si } end
  end
  table.sort(weak, function(a, b) return a.rs_si < b.rs_si end)
  out:print("")
  out:print(out:paint("bold", "Weakest signal"))
  local top = {}
  for i = 1, math.min(5, #weak) do top[i] = weak[i] end
  out:table(top, { { "device", "DEVICE" }, { "sn", "SN" }, { "rs_si", "RS_SI" } })
  out:print("")
  if r.dtus.total == 0 then
    out:print(out:paint("dim", "DTUs: none checked (pass --dtu SN, or set KINOT_DTUS=sn,sn)"))
  elseif #r.dtus.offline == 0 then
    out:print(out:paint("green", string.format("DTUs: all %d online", r.dtus.total)))
  else
    out:print(out:paint("red", string.format("DTUs offline: %d of %d", #r.dtus.offline, r.dtus.total)))
    out:table(r.dtus.offline, { { "sn", "SN" }, { "host", "HOST" }, { "updated_at", "LAST SEEN" } })
  end
end

return M
