-- The naive model of kinot.fleet's summary (spec/fleet_attack_spec.lua):
-- a recount of every device the twin shows, and a random sequence (seeded)
-- of scans, callbacks, out-of-order and repeated stamps, devices changing
-- kind, gone and back, stale and alive, a second twin with other groups over
-- the same store, the summary held against the recount after each step.
-- Plain Lua (no busted): it runs in busted and inside nginx (the shared dict).
--   differential(make, seed, steps) -> nil | "seed S step N: want ..., got ..."
local json = require "kinot.json"

local M = {}

local function recount(twin, sns)
  local c = { locks = 0, sensors = 0, dtus = 0, gone = 0, occupied = 0, space = 0, up = 0, fault = 0, low = 0,
              stale = 0, offline = 0, weak = 0, groups = {} }
  for _, sn in ipairs(sns) do
    local d = twin:device(sn)
    if d and d.gone then c.gone = c.gone + 1
    elseif d then
      local s = d.state
      c[d.kind .. "s"] = c[d.kind .. "s"] + 1
      if d.kind ~= "dtu" then
        c.space = c.space + 1
        local g = d.group and (c.groups[d.group] or { occupied = 0, total = 0 })
        if g then
          c.groups[d.group] = g
          g.total = g.total + 1
        end
        if s.car_detected == 1 then
          c.occupied = c.occupied + 1
          if g then g.occupied = g.occupied + 1 end
        end
        if d.kind == "lock" and s.locked == 1 then c.up = c.up + 1 end
        if s.coil_fault == 1 or s.motor_fail == 1 then c.fault = c.fault + 1 end
        if s.low_battery == 1 then c.low = c.low + 1 end
        if type(s.rs_si) == "number" and s.rs_si < -110 then c.weak = c.weak + 1 end
      elseif s.online ~= "online" then
        c.offline = c.offline + 1
      end
      if d.stale then c.stale = c.stale + 1 end
    end
  end
  return c
end

local function counted(s)
  local groups = {}
  for name, g in pairs(s.occupancy.groups) do
    if g.total > 0 then groups[name] = { occupied = g.occupied, total = g.total } end
  end
  return { locks = s.devices.locks, sensors = s.devices.sensors, dtus = s.devices.dtus, gone = s.devices.gone,
           occupied = s.occupancy.occupied, space = s.occupancy.total, up = s.locks_up, fault = s.faults.devices,
           low = s.low_battery, stale = s.stale, offline = s.dtus_offline, weak = s.weak_signal, groups = groups }
end

local function differential(make, seed, steps)
  local T = 1796083200
  local sns = {}
  for i = 1, 12 do sns[i] = 419600000 + i end
  local groups_a, groups_b = {}, {}
  for i, sn in ipairs(sns) do
    groups_a[tostring(sn)] = { zone = i % 2 == 0 and "A" or "B", level = "1" }
    groups_b[tostring(sn)] = { zone = i % 3 == 0 and "C" or "A", level = "2" }
  end
  local now = T + 1000
  local twin = make { groups = groups_a, clock = function() return now end }
  local rnd = math.random
  math.randomseed(seed)
  for step = 1, steps do
    local op = rnd(10)
    local sn = sns[rnd(#sns)]
    local s = rnd(0, 60)
    local kind = (sn % 3 == 0 and rnd(4) == 1) and "sensor" or (sn % 5 == 0 and rnd(6) == 1) and "dtu" or
      (sn % 3 == 0 and "sensor" or "lock")
    local obj
    if kind == "dtu" then
      obj = { sn = sn, online = rnd(2) == 1 and "online" or "offline", updated_at = os.date("!%Y-%m-%dT%H:%M:%SZ", T + s) }
    else
      obj = { sn = sn, car_detected = rnd(0, 1), locked = rnd(0, 1), coil_fault = rnd(0, 1) * rnd(0, 1),
              motor_fail = rnd(0, 1) * rnd(0, 1), low_battery = rnd(0, 1), rs_si = -90 - rnd(0, 40),
              updated_at = os.date("!%Y-%m-%dT%H:%M:%S+00:00", T + s) }
    end
    local why = "seed " .. seed .. " step " .. step .. " op " .. op
    if op <= 4 then
      assert(twin:put(kind, { obj }, "scan"))
    elseif op <= 7 and kind ~= "dtu" then
      assert(twin:apply { kind = "status_changed", device = kind, sn = sn, data = obj, verified = true })
    elseif op == 8 then
      assert(twin:gone { sn, sns[rnd(#sns)] })
    elseif op == 9 then
      now = now + rnd(0, 50)
      assert(twin:sweep())
    elseif op == 10 and rnd(3) == 1 then
      twin = make { groups = rnd(2) == 1 and groups_b or groups_a, clock = function() return now end }
    end
    local want, got = recount(twin, sns), counted(twin:summary())
    -- groups of the current groups file only (the summary names those)
    local named = {}
    for _, g in ipairs(twin.group_names) do named[g] = true end
    for name in pairs(want.groups) do if not named[name] then want.groups[name] = nil end end
    local a, b = json.encode(want), json.encode(got)
    if a ~= b then return why .. ": recount " .. a .. ", summary " .. b end
  end
end


M.differential = differential
M.recount, M.counted = recount, counted
return M
