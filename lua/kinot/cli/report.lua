-- `kinot report`: the fleet's health in one pass over every lock and sensor
-- (concurrent paging), plus the DTUs named on the command line; occupancy by
-- group with a groups file (kinot.fleet.groups, as `kinot serve` reads it);
-- the battery and signal histograms its HTML form plots (kinot.report.html).
local M = {}

local vocabulary = require "kinot.vocabulary"
local json = require "kinot.json"

local LOCK_FAULTS, SENSOR_FAULTS = vocabulary.faults.lock, vocabulary.faults.sensor

local function new_section()
  return { total = 0, occupied = 0, low_battery = 0, faults = {}, weakest = {} }
end

-- keeps the `n` weakest signals (most negative rs_si) in a small sorted list
-- (a reading as the histogram takes it: a finite number, -0.0 as 0, which is
-- what --json writes; -1e400 reads as -inf and is no reading)
local function note_signal(list, dev, n)
  local rs = tonumber(dev.rs_si)
  if not rs or rs ~= rs or rs == math.huge or rs == -math.huge then return end
  rs = rs + 0 -- -0.0 + 0 is 0.0
  if #list == n and rs >= list[n].rs_si then return end
  list[#list + 1] = { sn = dev.sn, rs_si = rs }
  table.sort(list, function(a, b) return a.rs_si < b.rs_si end)
  if #list > n then list[#list] = nil end
end

-- Histogram buckets, fixed so that two reports compare: voltage in 0.1 V
-- steps from 3.0 to 3.8 V, rs_si in 10 dBm steps from -120 to 0, each with
-- an open bucket below and above.  A reading is put in its bucket by integer
-- arithmetic (millivolts, tenths of a dBm), never by a float comparison that
-- could put 3.3 in the 3.2 bucket.
local BATTERY = { unit = "V", scale = 1000, from = 3000, step = 100, n = 8 }
local SIGNAL = { unit = "dBm", scale = 10, from = -1200, step = 100, n = 12 }
M.BATTERY, M.SIGNAL = BATTERY, SIGNAL

local function new_histogram(spec)
  local buckets = {}
  local function edge(i) return (spec.from + i * spec.step) / spec.scale end
  buckets[1] = { from = json.null, to = edge(0), count = 0 }
  for i = 1, spec.n do buckets[i + 1] = { from = edge(i - 1), to = edge(i), count = 0 } end
  buckets[spec.n + 2] = { from = edge(spec.n), to = json.null, count = 0 }
  return { unit = spec.unit, buckets = buckets, readings = 0, spec = spec }
end

local function count_in(h, x)
  x = tonumber(x)
  if not x or x ~= x or x == math.huge or x == -math.huge then return end
  local spec = h.spec
  local units = math.floor(x * spec.scale + 0.5)
  local i = math.floor((units - spec.from) / spec.step) -- -1 and below: the open bucket below
  if i < 0 then i = -1 elseif i > spec.n then i = spec.n end
  local b = h.buckets[i + 2]
  b.count = b.count + 1
  h.readings = h.readings + 1
end

-- occupancy by group: a device's group is its place's (the groups file);
-- one the file does not place counts as ungrouped
local function count_group(r, dev)
  local g = r.groups
  if not g then return end
  local place = r.places[tonumber(dev.sn)]
  local name = place and place.group
  if not name then
    g.ungrouped = g.ungrouped + 1
    return
  end
  local row = g.by_name[name]
  row.total = row.total + 1
  if dev.car_detected == 1 then row.occupied = row.occupied + 1 end
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

local function add_device(r, section, dev, faults)
  add(section, dev, faults)
  count_in(r.battery, dev.voltage)
  count_in(r.signal, dev.rs_si)
  count_group(r, dev)
end

--- build(client, opts) -> report table | raises the client's error
-- opts: concurrency, dtus = {sn...}, on_page(kind, done, total), groups (a
-- groups file or table, kinot.fleet.groups.load's; read before the scan, so
-- that a wrong file fails at once)
function M.build(client, opts)
  local r = { locks = new_section(), sensors = new_section(), dtus = { total = 0, offline = {} },
              battery = new_histogram(BATTERY), signal = new_histogram(SIGNAL) }
  if opts.groups ~= nil then
    local names
    r.places, names = require("kinot.fleet.groups").load(opts.groups)
    r.groups = { list = {}, by_name = {}, ungrouped = 0 }
    for i, name in ipairs(names) do
      local row = { group = name, occupied = 0, total = 0 }
      r.groups.list[i], r.groups.by_name[name] = row, row
    end
  end
  r.locks.up, r.locks.down = 0, 0
  r.sensors.frozen = 0
  local conc = opts.concurrency or 8
  for lock in client:each_locker { limit = 100, concurrency = conc,
                                   on_page = opts.on_page and function(d, t) opts.on_page("locks", d, t) end } do
    add_device(r, r.locks, lock, LOCK_FAULTS)
    if lock.locked == 1 then r.locks.up = r.locks.up + 1 else r.locks.down = r.locks.down + 1 end
  end
  for sensor in client:each_sensor { limit = 100, concurrency = conc,
                                     on_page = opts.on_page and function(d, t) opts.on_page("sensors", d, t) end } do
    add_device(r, r.sensors, sensor, SENSOR_FAULTS)
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
  -- what is shown and written as JSON: the lists, not the lookups
  r.battery.spec, r.signal.spec, r.places = nil, nil, nil
  if r.groups then
    for _, row in ipairs(r.groups.list) do row.free = row.total - row.occupied end
    r.groups = { groups = r.groups.list, ungrouped = r.groups.ungrouped }
  end
  return r
end

--- bucket_label(b, decimals) -> "3.2 to 3.3", "< 3.0", ">= 3.8" (the unit apart)
function M.bucket_label(b, decimals)
  local function n(x) return (string.format("%." .. decimals .. "f", x)) end
  if b.from == json.null then return "< " .. n(b.to) end
  if b.to == json.null then return ">= " .. n(b.from) end
  return n(b.from) .. " to " .. n(b.to)
end

--- pct(a, b) -> "12.5%" of a in b, "-" when b is 0
function M.pct(a, b) return b > 0 and string.format("%.1f%%", 100 * a / b) or "-" end

--- fault_rows(r) -> { {device, fault, count} ... }: the locks' faults then
-- the sensors', each by kind in order (the terminal's table and the page's)
function M.fault_rows(r)
  local rows = {}
  for _, sec in ipairs { { "lock", r.locks }, { "sensor", r.sensors } } do
    local kinds = {}
    for k in pairs(sec[2].faults) do kinds[#kinds + 1] = k end
    table.sort(kinds)
    for _, k in ipairs(kinds) do rows[#rows + 1] = { device = sec[1], fault = k, count = sec[2].faults[k] } end
  end
  return rows
end

--- weakest_rows(r) -> { {device, sn, rs_si} ... }: the five weakest
-- signals, locks' and sensors' together, weakest first
function M.weakest_rows(r)
  local weak = {}
  for _, sec in ipairs { { "lock", r.locks }, { "sensor", r.sensors } } do
    for _, w in ipairs(sec[2].weakest) do weak[#weak + 1] = { device = sec[1], sn = w.sn, rs_si = w.rs_si } end
  end
  table.sort(weak, function(a, b) return a.rs_si < b.rs_si end)
  local top = {}
  for i = 1, math.min(5, #weak) do top[i] = weak[i] end
  return top
end

--- page_file(path) -> { commit(text), discard() }: FILE written whole or
-- not at all: the page goes to .kinot-report.tmp-RANDOM beside it, opened
-- now (an unwritable path is a usage error at once, exit 2, as a pid
-- file's is), renamed over FILE when written; discard() removes it (the
-- scan failed).  A FILE that is no file (a pipe, a device) is written into
-- instead.
function M.page_file(path)
  local errors = require "kinot.errors"
  if path == "" then errors.misuse("--html needs a file name") end
  local kind = require("kinot.core_loader").file_kind(path)
  -- a directory where the page goes: the rename would fail, after the scan
  if kind == "directory" then errors.misuse("cannot write the HTML report to " .. path .. " (it is a directory)") end
  -- a pipe (the shell's >(...)), a device: the page is written into it
  -- when made (opened then: a pipe's open waits for its reader); a rename
  -- would replace the node itself (/dev/null by a file, as root)
  if kind and kind ~= "file" then
    return {
      commit = function(_, text)
        local f, why = io.open(path, "wb")
        local ok, err = f ~= nil, why
        if f then
          ok, err = f:write(text)
          if ok then ok, err = f:close() else f:close() end
        end
        if not ok then errors.misuse("cannot write the HTML report to " .. path .. " (" .. tostring(err) .. ")") end
      end,
      discard = function() end,
    }
  end
  -- the temp file: in FILE's directory (the rename stays on one file
  -- system), a name of its own length (FILE's own may be NAME_MAX long)
  local tmp = (path:match("^(.*/)[^/]*$") or "") .. ".kinot-report.tmp-" .. require("kinot.core_loader").uuid():sub(1, 8)
  local f, why = io.open(tmp, "wb")
  if not f then
    errors.misuse("cannot write the HTML report to " .. path .. " (" .. tostring(why):gsub("^[^:]*: ", "") ..
      "): is its directory there and writable?")
  end
  return {
    commit = function(_, text)
      local ok, err = f:write(text)
      if ok then ok, err = f:close() else f:close() end
      if ok then ok, err = os.rename(tmp, path) end
      if not ok then
        os.remove(tmp)
        errors.misuse("cannot write the HTML report to " .. path .. " (" .. tostring(err) .. ")")
      end
    end,
    discard = function()
      f:close()
      os.remove(tmp)
    end,
  }
end

local pct = M.pct

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
  if r.groups then
    out:print("")
    out:print(out:paint("bold", "Occupancy by group"))
    out:table(r.groups.groups, { { "group", "GROUP" }, { "occupied", "OCCUPIED" }, { "free", "FREE" },
                                 { "total", "TOTAL" } })
    if r.groups.ungrouped > 0 then
      out:print(out:paint("dim", string.format("%d devices in no group of the groups file", r.groups.ungrouped)))
    end
  end
  local rows = M.fault_rows(r)
  out:print("")
  if #rows > 0 then
    out:print(out:paint("bold", "Faults"))
    out:table(rows, { { "device", "DEVICE" }, { "fault", "FAULT" }, { "count", "COUNT" } })
  else
    out:print(out:paint("green", "No faults."))
  end
  out:print("")
  out:print(out:paint("bold", "Weakest signal"))
  out:table(M.weakest_rows(r), { { "device", "DEVICE" }, { "sn", "SN" }, { "rs_si", "RS_SI" } })
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
