-- Freshness and per-device order of verified callbacks.  A captured good
-- callback verifies forever, and the dedupe memory forgets it after an
-- hour, 10,000 other deliveries or a restart; what cannot be replayed is
-- the signed `updated_at`:
--   max_age   an event whose updated_at is older than this many seconds is
--             refused, reason "stale" (default 48 h: longer than the
--             redelivery schedules of platforms of this kind, so that a
--             genuine redelivery is never stale; see README);
--   max_skew  an updated_at up to this many seconds ahead of our clock is
--             accepted (clocks differ); further ahead: reason "future";
--   order     per device (status_changed: its sn) and per command
--             (command_resp: its guid), the newest updated_at accepted so
--             far; an older one is no longer the current state: refused,
--             reason "out_of_order" (or, with out_of_order = "flag", handed
--             over with ev.stale = true).
-- The newest times are kept in the dedupe lua_shared_dict when there is
-- one (shared by the workers, kept for max_age + max_skew), else per
-- worker in memory (two generations of `capacity` keys each).
local errors = require "kinot.errors"

local M = {}
M.__index = M

M.MAX_AGE = 48 * 3600
M.MAX_SKEW = 300
M.CAPACITY = 100000

local type, floor, byte = type, math.floor, string.byte

local days_from_civil = require("kinot.calendar").days_from_civil

-- the zones furthest west and east of UTC, in seconds
local ZONE_WEST, ZONE_EAST = 12 * 3600, 14 * 3600

local last_text, last_t, last_zoned -- most callbacks of a burst share their second

-- the value of the two ASCII digits at i, or nil.  parse reads bytes, not
-- patterns: LuaJIT compiles string.byte, while string.match leaves the
-- JIT for the interpreter (a third of a callback's freshness check); and
-- no loop: a trace through a loop called six times a callback gives up
local function two(text, i)
  local a, b = byte(text, i, i + 1)
  if a == nil or b == nil or a < 48 or a > 57 or b < 48 or b > 57 then return nil end
  return a * 10 + b - 528 -- (48 * 10 + 48)
end

local DASH, COLON, DOT, PLUS, T, SPACE, Z, LOWER_Z = 45, 58, 46, 43, 84, 32, 90, 122
-- where each part of the time is
local LAYOUT = "YYYY-MM-DDThh:mm:ss"
local function at(part) return (LAYOUT:find(part, 1, true)) end
local MONTH, DAY, HOUR, MINUTE, SECOND = at("MM"), at("DD"), at("hh"), at("mm"), at("ss")

--- parse(text) -> seconds since the epoch (UTC), zoned | nil
-- ISO 8601 as the platform writes it: "2019-03-13T10:42:39+08:00"; also a
-- space for T, fractions of a second, Z, +0800 and +08.  Without an offset
-- the time is read as UTC and zoned is false (check() then allows for
-- every zone, UTC-12 to UTC+14).
function M.parse(text)
  if text == last_text then return last_t, last_zoned end
  if type(text) ~= "string" then return nil end
  -- YYYY-MM-DD[T ]hh:mm:ss
  local c, y = two(text, 1), two(text, 3) -- century, year
  local mo, d, h = two(text, MONTH), two(text, DAY), two(text, HOUR)
  local mi, s = two(text, MINUTE), two(text, SECOND)
  if not (c and y and mo and d and h and mi and s) or byte(text, MONTH - 1) ~= DASH or byte(text, DAY - 1) ~= DASH or
    byte(text, MINUTE - 1) ~= COLON or byte(text, SECOND - 1) ~= COLON then
    return nil
  end
  local sep = byte(text, HOUR - 1)
  if sep ~= T and sep ~= SPACE then return nil end
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or s > 60 then return nil end
  local i, n = #LAYOUT + 1, #text
  -- a fraction of a second: '.' and at least one digit, ignored
  if byte(text, i) == DOT then
    i = i + 1
    local f = byte(text, i)
    if f == nil or f < 48 or f > 57 then return nil end
    repeat
      i = i + 1
      f = byte(text, i)
    until f == nil or f < 48 or f > 57
  end
  local offset, zoned = 0, true
  local z = byte(text, i)
  if z == nil then
    zoned = false
  elseif (z == Z or z == LOWER_Z) and i == n then
    offset = 0
  elseif z == PLUS or z == DASH then
    -- +hh, +hhmm, +hh:mm (and +hh: as +hh)
    local oh, om = two(text, i + 1), 0
    if not oh then return nil end
    i = i + 3
    if byte(text, i) == COLON then i = i + 1 end
    if i <= n then
      if n - i ~= 1 then return nil end
      om = two(text, i)
      if not om then return nil end
    end
    if oh > 23 or om > 59 then return nil end
    offset = (oh * 3600 + om * 60) * (z == DASH and -1 or 1)
  else
    return nil
  end
  local t = days_from_civil(c * 100 + y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset
  last_text, last_t, last_zoned = text, t, zoned
  return t, zoned
end

local function refuse(reason, message, fields)
  fields = fields or {}
  fields.reason = reason
  return nil, errors.new("callback", message, fields)
end

local function positive_or_false(v, name, default)
  if v == nil then return default end
  if v == false then return false end
  if type(v) ~= "number" or v ~= v or v < 0 then
    errors.misuse(name .. " must be a number of seconds >= 0, or false")
  end
  return v
end

--- new(opts) -> checker | nil when every check is off
-- opts: max_age, max_skew, out_of_order ("drop" | "flag" | false),
-- dict (an ngx.shared dict), capacity, now (clock in seconds)
function M.new(opts, level)
  level = (level or 2) + 1
  local max_age = positive_or_false(opts.max_age, "max_age", M.MAX_AGE, level)
  local max_skew = positive_or_false(opts.max_skew, "max_skew", M.MAX_SKEW, level) or 0
  local order = opts.out_of_order
  if order == nil then order = "drop" end
  if order ~= "drop" and order ~= "flag" and order ~= false then
    errors.misuse('out_of_order must be "drop", "flag" or false')
  end
  if opts.now ~= nil and type(opts.now) ~= "function" then
    errors.misuse("clock must be a function returning the time in seconds")
  end
  local capacity = opts.capacity or M.CAPACITY
  if type(capacity) ~= "number" or capacity < 1 then errors.misuse("order_capacity must be a positive number") end
  if not max_age and not order then return nil end
  return setmetatable({
    max_age = max_age, max_skew = max_skew, order = order, dict = opts.dict,
    -- how long a newest time is worth keeping in the dict (older events
    -- are stale by then); 0: until the dict needs the room
    keep = max_age and max_age + max_skew or 0,
    capacity = capacity, now = opts.now or os.time,
    young = {}, old = {}, count = 0,
  }, M)
end

local function key_of(ev)
  if ev.kind == "command_resp" then
    return ev.guid ~= nil and ("kinot:c:" .. tostring(ev.guid)) or nil
  end
  return ev.sn ~= nil and ("kinot:s:" .. tostring(ev.sn)) or nil
end

-- No tail call (return f(x)) on a delivery's way: LuaJIT gives up a trace
-- that makes more than 15 (loopunroll), and the lua_shared_dict calls of
-- one delivery already make 12 (resty.core: a set is 2, a delete 3).  A
-- side trace begun early in a delivery runs to its end: at 16 it failed
-- ("loop unroll limit reached") and that exit fell back to the
-- interpreter at every delivery
function M:newest(key)
  local dict = self.dict
  if dict then
    local t = dict:get(key)
    return t
  end
  local t = self.young[key]
  if t == nil then t = self.old[key] end
  return t
end

function M:remember(key, t)
  local dict = self.dict
  if dict then
    -- not atomic across workers: two workers accepting two new statuses of
    -- one device in the same microsecond may keep the older of the two
    dict:set(key, t, self.keep)
    return
  end
  local young = self.young
  if young[key] == nil then
    local n = self.count + 1
    if n > self.capacity then -- a new generation; the oldest is forgotten
      self.old, young, n = young, {}, 1
      self.young = young
    end
    self.count = n
  end
  young[key] = t
end

--- check(ev) -> true | nil, err (reason "stale", "future" or "out_of_order")
-- On success the event's time becomes its device's newest.  An event
-- without updated_at passes: nothing to judge it by (every body in the
-- platform's reference carries one).
-- (a key read from a table: data[UPDATED.at] is a plain hash lookup to
-- LuaJIT, not one compiled for one kind of body's layout: see the names
-- of data's members in kinot.callback.event)
local UPDATED = { at = "updated_at" }

function M:check(ev)
  local data = ev.data
  local text = data and data[UPDATED.at]
  -- absent, or "" / null (which the sign rule skips): nothing to judge by
  if text == nil or text == "" or type(text) == "userdata" then return true end
  local t, zoned = M.parse(text)
  if not t then
    return refuse("malformed", "callback updated_at is not an ISO 8601 time", { sn = ev.sn })
  end
  -- Without an offset the time is some zone's local time, UTC-12 to
  -- UTC+14: stale only when stale in every zone, future only when ahead
  -- in every zone (a capture from long ago is still refused)
  do
    local age = self.now() - t
    local young_by, ahead_by = 0, 0
    if not zoned then young_by, ahead_by = ZONE_WEST, ZONE_EAST end
    if self.max_age and age - young_by > self.max_age then
      return refuse("stale", "callback for sn " .. tostring(ev.sn) .. ": updated_at " .. text .. " is " ..
        floor(age) .. " s old, over max_age " .. self.max_age .. " s: acknowledged, not handled",
        { sn = ev.sn, age = age })
    end
    if -age - ahead_by > self.max_skew then
      return refuse("future", "callback for sn " .. tostring(ev.sn) .. ": updated_at " .. text .. " is " ..
        floor(-age) .. " s ahead of this clock, over max_skew " .. self.max_skew .. " s", { sn = ev.sn, age = age })
    end
  end
  if not self.order then return true end
  local key = key_of(ev)
  if not key then return true end
  local newest = self:newest(key)
  if newest and t < newest then
    if self.order == "flag" then
      ev.stale = true
      return true
    end
    return refuse("out_of_order", "callback for " .. key:sub(9) .. " of " .. text .. " is older than one already" ..
      " accepted: acknowledged, not handled", { sn = ev.sn })
  end
  if newest ~= t then self:remember(key, t) end
  return true
end

return M
