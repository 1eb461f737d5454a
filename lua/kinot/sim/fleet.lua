-- The simulator's fleet: devices are computed from (seed, kind, index), so
-- a 100,000-device fleet costs no memory until a device changes; changes
-- live in an override table.  Pages are rendered to JSON once and cached
-- until the fleet changes, so serving a page is one string write.
local json = require "kinot.json"
local vocabulary = require "kinot.vocabulary"

local M = {}

local floor, format, concat = math.floor, string.format, table.concat

local BASE = { lock = 419600000, sensor = 419800000, dtu = 644200000 }
M.BASE = BASE
M.DEVICE_TYPE = vocabulary.device_codes

-- The platform reference's own example devices, with its example values:
-- the serials the README and docs use (419631107 ...) exist in a simulator
-- started with `examples` (the launcher's default).  They follow the
-- generated devices of their kind (rows n+1 ...) and count in `count`; one
-- whose serial a generated device already has (31,107 locks or more) is that
-- generated device instead.
local EXAMPLES = {
  lock = { {
    sn = 419631107, voltage = 3.659, frequency = 37.919, locked = 0, car_detected = 0, shell_opened = 0,
    low_battery = 0, coil_fault = 0, bar_position_error = 0, motor_fail = 0, rs_si = 0,
    bt_match_code = "61518-59257-29505-55487-10411-15740", bt_mac = "aa0018382001",
    updated_at = "2019-03-13T10:42:39+08:00",
  } },
  sensor = { {
    sn = 419635201, voltage = 3.654, frequency = 38.6, active = 1, car_detected = 1, low_battery = 1,
    coil_fault = 1, rs_si = -109.5, updated_at = "2019-03-13T10:42:39+08:00",
  } },
  dtu = { {
    sn = 644219880, hw = 4097, sw = 8193, firmware = 17, host = "218.204.252.18:44062", online = "online",
    updated_at = "2019-03-24T17:03:44+08:00",
  } },
}
M.EXAMPLES = EXAMPLES

-- MINSTD: exact in doubles, identical on every runtime
local function rng(seed)
  local x = seed % 2147483646 + 1
  return function(n)
    x = (x * 48271) % 2147483647
    return n and (x % n) or x / 2147483647
  end
end
M.rng = rng

local Fleet = {}
Fleet.__index = Fleet

function M.new(opts)
  local self = setmetatable({
    seed = opts.seed or 1,
    n = { lock = opts.locks or 50, sensor = opts.sensors or 50, dtu = opts.dtus or 5 },
    examples = opts.examples == true, -- the reference's example devices join the fleet
    changes = {},     -- sn -> { field = value }
    version = 0,      -- bumps on every change: invalidates rendered pages
    cache = {}, cache_size = 0,
  }, Fleet)
  return self
end

-- the generated device of that serial: kind, index (or nil)
function Fleet:generated(sn)
  for kind, base in pairs(BASE) do
    local i = sn - base
    if i >= 1 and i <= self.n[kind] and i == floor(i) then return kind, i end
  end
end

--- example_rows(kind) -> the reference's example devices of that kind that
-- are rows of this fleet (after the n generated ones), in order
function Fleet:example_rows(kind)
  local rows = {}
  if not self.examples then return rows end
  for _, d in ipairs(EXAMPLES[kind]) do
    if not self:generated(d.sn) then rows[#rows + 1] = d end
  end
  return rows
end

--- count(kind) -> the devices of that kind: generated, then examples
function Fleet:count(kind)
  return self.n[kind] + #self:example_rows(kind)
end

--- locate(sn) -> "lock" | "sensor" | "dtu", row  (or nil)
function Fleet:locate(sn)
  sn = tonumber(sn)
  if not sn then return nil end
  local kind, i = self:generated(sn)
  if kind then return kind, i end
  for k in pairs(EXAMPLES) do
    for j, d in ipairs(self:example_rows(k)) do
      if d.sn == sn then return k, self.n[k] + j end
    end
  end
end

local function stamp(r)
  -- a time in March 2019, as in the reference's examples
  return format("2019-03-%02dT%02d:%02d:%02d+08:00", 1 + r(28), r(24), r(60), r(60))
end

local function hexcode(r)
  local parts = {}
  for k = 1, 6 do parts[k] = format("%05d", r(65536)) end
  return concat(parts, "-")
end

function Fleet:base_device(kind, i)
  if i > self.n[kind] then -- one of the reference's examples: a copy, changes apply to it
    local d = {}
    for k, v in pairs(self:example_rows(kind)[i - self.n[kind]]) do d[k] = v end
    return d
  end
  local r = rng(self.seed * 7919 + (kind == "lock" and 1 or kind == "sensor" and 2 or 3) * 104729 + i * 15485863)
  r(); r()
  local sn = BASE[kind] + i
  -- a reading is n / 1000: the double nearest the three-decimal value, so
  -- it is written with its three decimals (3.2 + n / 1000 is not always)
  if kind == "lock" then
    return {
      sn = sn, voltage = (3200 + r(500)) / 1000, frequency = (37000 + r(2000)) / 1000,
      locked = r(2), car_detected = r(2), shell_opened = r(50) == 0 and 1 or 0,
      low_battery = r(20) == 0 and 1 or 0, coil_fault = r(40) == 0 and 1 or 0,
      bar_position_error = r(60) == 0 and 1 or 0, motor_fail = r(80) == 0 and 1 or 0,
      rs_si = -(r(1200) / 10), bt_match_code = hexcode(r), bt_mac = format("aa%010x", sn % 2 ^ 40),
      updated_at = stamp(r),
    }
  elseif kind == "sensor" then
    return {
      sn = sn, voltage = (3200 + r(500)) / 1000, frequency = (37000 + r(2000)) / 1000,
      active = r(10) == 0 and 0 or 1, car_detected = r(2),
      low_battery = r(20) == 0 and 1 or 0, coil_fault = r(40) == 0 and 1 or 0,
      rs_si = -(r(1200) / 10), updated_at = stamp(r),
    }
  end
  return {
    sn = sn, hw = 4097, sw = 8193, firmware = 17,
    host = format("10.%d.%d.%d:%d", r(256), r(256), r(256), 40000 + r(20000)),
    online = r(8) == 0 and "offline" or "online", updated_at = stamp(r),
  }
end

function Fleet:device(kind, i)
  local d = self:base_device(kind, i)
  local ch = self.changes[d.sn]
  if ch then for k, v in pairs(ch) do d[k] = v end end
  return d
end

function Fleet:get(sn)
  local kind, i = self:locate(sn)
  if not kind then return nil end
  return self:device(kind, i), kind
end

function Fleet:change(sn, fields)
  local kind = self:locate(sn)
  if not kind then return nil end
  local ch = self.changes[sn] or {}
  for k, v in pairs(fields) do
    if k ~= "sn" then ch[k] = v end
  end
  self.changes[sn] = ch
  self.version = self.version + 1
  self.cache, self.cache_size = {}, 0
  return self:get(sn)
end

-- ------------------------------------------------------------ JSON rendering

-- each device's members, in the order of the reference's examples
local FIELDS = { lock = vocabulary.order.lock, sensor = vocabulary.order.sensor, dtu = vocabulary.order.dtu }
M.FIELDS = FIELDS

-- a member's JSON text: kinot.json's writer (exact integers, floats that
-- read back as themselves), nil as null
local function value(v)
  if v == nil then return "null" end
  return json.encode(v)
end
M.value = value

--- render(obj, fields) -> JSON object text, members in the given order
function M.render(obj, fields, extra)
  local out = {}
  for _, k in ipairs(fields) do
    if obj[k] ~= nil then out[#out + 1] = '"' .. k .. '":' .. value(obj[k]) end
  end
  for k, v in pairs(extra or {}) do out[#out + 1] = '"' .. k .. '":' .. v end
  return "{" .. concat(out, ",") .. "}"
end

function Fleet.render_device(_, kind, d)
  return M.render(d, FIELDS[kind])
end

--- page_json(kind, first_row, limit) -> full response body, cached; first_row
-- counts from 0 (the server turns `offset` into it, as its paging reads it)
function Fleet:page_json(kind, first_row, limit)
  local key = kind .. ":" .. first_row .. ":" .. limit
  local hit = self.cache[key]
  if hit then return hit end
  local n = self:count(kind)
  local first = first_row + 1
  local items = {}
  for i = first, math.min(n, first + limit - 1) do
    items[#items + 1] = self:render_device(kind, self:device(kind, i))
  end
  local body = '{"code":0,"message":"OK","objects":[' .. concat(items, ",") .. '],"count":' .. n .. "}"
  if self.cache_size > 4096 then self.cache, self.cache_size = {}, 0 end
  self.cache[key] = body
  self.cache_size = self.cache_size + 1
  return body
end

return M
