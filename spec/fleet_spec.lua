-- kinot.fleet, the live twin: one scenario run against its three stores
-- (a Lua table here, a lua_shared_dict in a real nginx, a real
-- redis-server), each transcript checked step by step and the three held
-- equal.  The nginx twin is driven over HTTP: a location runs each call on
-- a twin over the shared dict and answers its results and change events.
local fleet = require "kinot.fleet"
local json = require "kinot.json"
local cjson = require "cjson"
local H = require "helpers"
local R = require "redis_server"

local LOCK1, LOCK2, SENSOR1, DTU1 = 419600001, 419600002, 419800001, 644200001
local GROUPS = {
  [tostring(LOCK1)] = { zone = "A", level = "1", bay = "A1-01" },
  [tostring(LOCK2)] = { zone = "A", level = "1", bay = "A1-02" },
  [tostring(SENSOR1)] = { zone = "B", level = "2", bay = "B2-01" },
}
local OPTS = { groups = GROUPS, stale_after = 3600, weak_signal = -100 }

local function stamp(s) -- seconds after 2026-12-01T00:00:00Z
  return os.date("!%Y-%m-%dT%H:%M:%S+00:00", 1796083200 + s)
end
local T0 = 1796083200

local function lock(sn, s, fields)
  local o = { sn = sn, voltage = 3.45, frequency = 37.5, locked = 0, car_detected = 0, shell_opened = 0,
              low_battery = 0, coil_fault = 0, bar_position_error = 0, motor_fail = 0, rs_si = -60.5,
              bt_match_code = "00001-00002-00003-00004-00005-00006", bt_mac = "aa0019028ac1", updated_at = stamp(s) }
  for k, v in pairs(fields or {}) do o[k] = v end
  return o
end
local function sensor(sn, s, fields)
  local o = { sn = sn, voltage = 3.3, frequency = 37.1, active = 1, car_detected = 0, low_battery = 0,
              coil_fault = 0, rs_si = -70, updated_at = stamp(s) }
  for k, v in pairs(fields or {}) do o[k] = v end
  return o
end
local function dtu(sn, s, online)
  return { sn = sn, hw = 4097, sw = 8193, firmware = 17, host = "10.0.0.1:40001", online = online or "online",
           updated_at = stamp(s) }
end
-- a verified callback event, as kinot.callback gives it (only what the twin reads)
local function callback(device, data)
  return { kind = "status_changed", device = device, sn = data.sn, data = data, verified = true }
end

-- JSON and back, without ids (each store numbers its events its own way)
local function plain(v)
  local t = json.decode(cjson.encode(v))
  local function strip(x)
    if type(x) == "table" then
      x.id = nil
      x.next = nil
      for _, y in pairs(x) do strip(y) end
    end
  end
  strip(t)
  return t
end

-- ------------------------------------------------------------ the three twins
-- each: call(method, now, ...) -> { r1 = ..., r2 = ..., events = {...} } (plain)

local function local_twin(opts)
  local now, events = 0, {}
  local o = { clock = function() return now end, on_change = function(ev) events[#events + 1] = ev end }
  for k, v in pairs(OPTS) do o[k] = v end
  for k, v in pairs(opts) do o[k] = v end
  local twin = fleet.new(o)
  return function(method, at, ...)
    now, events = at, {}
    local r1, r2 = twin[method](twin, ...)
    return { r1 = plain(r1), r2 = r2 ~= nil and plain(type(r2) == "table" and r2 or tostring(r2)) or nil,
             events = plain(events), raw = r1 }
  end
end

local NGINX_CALL = [[
  location = /call {
    content_by_lua_block {
      local fleet = require "kinot.fleet"
      local cjson = require "cjson"
      ngx.req.read_body()
      local req = cjson.decode(ngx.req.get_body_data())
      local events = {}
      local o = req.opts
      o.clock = function() return req.now end
      o.on_change = function(ev) events[#events + 1] = ev end
      local twin = fleet.new(o)
      local args = req.args
      for i = 1, req.n do if args[i] == cjson.null then args[i] = nil end end
      local r1, r2 = twin[req.method](twin, unpack(args, 1, req.n))
      if type(r2) ~= "table" and r2 ~= nil then r2 = tostring(r2) end
      ngx.say(cjson.encode { r1 = r1, r2 = r2, events = events })
    }
  }
]]

local function nginx_twin(ng, dict)
  return function(method, at, ...)
    local o = { store = "shared", dict = dict }
    for k, v in pairs(OPTS) do o[k] = v end
    local args = { ... }
    local res = H.raw("POST", ng.url .. "/call", cjson.encode { method = method, now = at, opts = o, args = args,
                                                                n = select("#", ...) })
    assert.are.equal(200, res.status, res.body .. "\n" .. ng.log())
    local doc = json.decode(res.body)
    return { r1 = plain(doc.r1), r2 = doc.r2 and plain(doc.r2) or nil, events = plain(doc.events) }
  end
end

-- ------------------------------------------------------------ the scenario

local function changes_of(events)
  local out = {}
  for _, ev in ipairs(events) do
    out[#out + 1] = ev.sn .. " " .. ev.change .. (ev.fault and (":" .. ev.fault) or "") .. " " .. ev.source
  end
  table.sort(out)
  return out
end

-- runs the scenario on a twin, checking each step; returns the transcript
local function scenario(call)
  local log = {}
  local function step(name, ...)
    local r = call(...)
    log[#log + 1] = { name = name, r1 = r.r1, r2 = r.r2, events = r.events }
    return r
  end

  -- the first scan: every device is new, no change events
  local r = step("scan locks", "put", T0 + 10, "lock", { lock(LOCK1, 0), lock(LOCK2, 0, { car_detected = 1 }) }, "scan")
  assert.are.same({ "added", "added" }, { r.r1[1].verdict, r.r1[2].verdict })
  assert.are.same({}, r.events)
  step("scan sensor", "put", T0 + 10, "sensor", { sensor(SENSOR1, 0, { rs_si = -105 }) }, "scan")
  step("scan dtu", "put", T0 + 10, "dtu", { dtu(DTU1, 0) }, "scan")
  r = step("summary after scan", "summary", T0 + 10)
  local s = r.r1
  assert.are.same({ locks = 2, sensors = 1, dtus = 1, gone = 0 }, s.devices)
  assert.are.equal(1, s.occupancy.occupied)
  assert.are.equal(3, s.occupancy.total)
  assert.are.same({ occupied = 1, free = 1, total = 2 }, s.occupancy.groups["A/1"])
  assert.are.same({ occupied = 0, free = 1, total = 1 }, s.occupancy.groups["B/2"])
  assert.are.equal(1, s.weak_signal)
  assert.are.equal(0, s.dtus_offline)

  -- a newer callback applies: occupied, up, a fault raised
  r = step("callback newer", "apply", T0 + 20, callback("lock", { sn = LOCK1, car_detected = 1, locked = 1,
    coil_fault = 1, low_battery = 0, rs_si = -61, voltage = 3.44, frequency = 37.5, shell_opened = 0,
    bar_position_error = 0, motor_fail = 0, updated_at = stamp(20) }))
  assert.are.equal("applied", r.r1)
  assert.are.same({ LOCK1 .. " fault_raised:coil_fault callback", LOCK1 .. " occupied callback",
                    LOCK1 .. " up callback" }, changes_of(r.events))
  -- the callback's fields lie over the scan's: bt_match_code (not in a callback) stays
  r = step("device after callback", "device", T0 + 20, LOCK1)
  assert.are.equal(1, r.r1.state.car_detected)
  assert.are.equal("00001-00002-00003-00004-00005-00006", r.r1.state.bt_match_code)
  assert.are.equal("callback", r.r1.source)
  assert.are.equal(stamp(20), r.r1.updated_at)
  assert.are.equal(T0 + 20, r.r1.seen_at)
  assert.are.same(GROUPS[tostring(LOCK1)].bay, r.r1.place.bay)

  -- an older callback (delivered late) is counted, never applied
  r = step("callback older", "apply", T0 + 21, callback("lock", { sn = LOCK1, car_detected = 0, locked = 0,
    updated_at = stamp(15) }))
  assert.are.equal("older", r.r1)
  assert.are.same({}, r.events)
  r = step("device after older", "device", T0 + 21, LOCK1)
  assert.are.equal(1, r.r1.state.car_detected)
  assert.are.equal(stamp(20), r.r1.updated_at)

  -- the same callback again: a duplicate
  r = step("callback again", "apply", T0 + 22, callback("lock", { sn = LOCK1, car_detected = 1, locked = 1,
    coil_fault = 1, updated_at = stamp(20) }))
  assert.are.equal("duplicate", r.r1)

  -- the tie rule: the same second, another state from a callback: the later arrival wins...
  r = step("tie callback", "apply", T0 + 23, callback("lock", { sn = LOCK1, car_detected = 0, updated_at = stamp(20) }))
  assert.are.equal("applied", r.r1)
  assert.are.same({ LOCK1 .. " free callback" }, changes_of(r.events))
  -- ...but a callback never replaces what a scan read at the same stamp
  step("scan lock2 newer", "put", T0 + 30, "lock", { lock(LOCK2, 25, { car_detected = 0 }) }, "scan")
  r = step("tie callback vs scan", "apply", T0 + 31, callback("lock", { sn = LOCK2, car_detected = 1,
    updated_at = stamp(25) }))
  assert.are.equal("older", r.r1)

  -- a scan newer than a callback-held state: missed, its changes with source scan
  r = step("scan missed", "put", T0 + 40, "lock", { lock(LOCK1, 35, { car_detected = 1, locked = 0, coil_fault = 0,
    low_battery = 1 }) }, "scan")
  assert.are.equal("missed", r.r1[1].verdict)
  assert.are.same({ LOCK1 .. " battery_low scan", LOCK1 .. " down scan", LOCK1 .. " fault_cleared:coil_fault scan",
                    LOCK1 .. " occupied scan" }, changes_of(r.events))

  -- a DTU goes offline and back
  r = step("dtu offline", "put", T0 + 50, "dtu", { dtu(DTU1, 45, "offline") }, "scan")
  assert.are.same({ DTU1 .. " offline scan" }, changes_of(r.events))
  r = step("dtu online", "put", T0 + 51, "dtu", { dtu(DTU1, 46, "online") }, "scan")
  assert.are.same({ DTU1 .. " online scan" }, changes_of(r.events))

  -- stale: nothing from the sensor for stale_after (3600 s) ...
  r = step("sweep early", "sweep", T0 + 3000)
  assert.are.same({}, r.events)
  r = step("sweep", "sweep", T0 + 3625)
  -- at T0 + 3625 the sensor (0) is past 3600 s old and lock2 (25) exactly that (stale: the bound is
  -- in); lock1 (35) and the DTU (46) are not
  assert.are.same({ LOCK2 .. " stale sweep", SENSOR1 .. " stale sweep" }, changes_of(r.events))
  r = step("sweep again", "sweep", T0 + 3634)
  assert.are.same({}, r.events)
  r = step("summary stale", "summary", T0 + 3621)
  assert.are.equal(2, r.r1.stale)
  r = step("sensor alive", "apply", T0 + 3700, callback("sensor", { sn = SENSOR1, car_detected = 1,
    updated_at = stamp(3690) }))
  assert.are.same({ SENSOR1 .. " alive callback", SENSOR1 .. " occupied callback" }, changes_of(r.events))

  -- gone, and back
  r = step("gone", "gone", T0 + 3800, { LOCK2 })
  assert.are.same({ LOCK2 .. " gone scan" }, changes_of(r.events))
  r = step("summary gone", "summary", T0 + 3800)
  assert.are.same({ locks = 1, sensors = 1, dtus = 1, gone = 1 }, r.r1.devices)
  assert.are.equal(2, r.r1.occupancy.total)
  r = step("device gone", "device", T0 + 3800, LOCK2)
  assert.is_true(r.r1.gone)
  r = step("back", "put", T0 + 3900, "lock", { lock(LOCK2, 25, { car_detected = 0 }) }, "scan")
  assert.are.same({ LOCK2 .. " back scan" }, changes_of(r.events))

  -- the queries
  r = step("summary end", "summary", T0 + 3900)
  s = r.r1
  assert.are.same({ locks = 2, sensors = 1, dtus = 1, gone = 0 }, s.devices)
  assert.are.same({ occupied = 2, free = 1, total = 3 }, { occupied = s.occupancy.occupied,
    free = s.occupancy.free, total = s.occupancy.total })
  assert.are.same({ occupied = 1, free = 1, total = 2 }, s.occupancy.groups["A/1"])
  assert.are.equal(1, s.low_battery)
  assert.are.equal(0, s.faults.devices)
  assert.are.equal(1, s.stale) -- lock2 came back with its 25 s stamp: still stale
  assert.are.equal(2, s.missed) -- lock2's scan at 25 s and lock1's at 35 s
  assert.are.equal(2, s.updates.out_of_order)
  assert.are.equal(1, s.updates.duplicate)
  r = step("free spaces", "devices", T0 + 3900, { occupied = false })
  assert.are.equal(1, r.r1.total)
  assert.are.equal(LOCK2, r.r1.devices[1].sn)
  r = step("group B/2", "devices", T0 + 3900, { group = "B/2" })
  assert.are.equal(SENSOR1, r.r1.devices[1].sn)
  r = step("low battery locks", "devices", T0 + 3900, { kind = "lock", low_battery = true })
  assert.are.equal(1, r.r1.total)
  assert.are.equal(LOCK1, r.r1.devices[1].sn)
  r = step("weak signal", "devices", T0 + 3900, { weak_signal = true })
  -- the sensor's callback carried no rs_si: the scan's -105 (below -100) stays
  assert.are.equal(1, r.r1.total)
  assert.are.equal(SENSOR1, r.r1.devices[1].sn)
  r = step("paged", "devices", T0 + 3900, { offset = 1, limit = 2 })
  assert.are.equal(4, r.r1.total)
  assert.are.same({ LOCK2, SENSOR1 }, { r.r1.devices[1].sn, r.r1.devices[2].sn })
  r = step("changes", "changes", T0 + 3900, 0, 1000)
  local all = r.r1.changes
  assert.is_true(#all >= 15)
  return log
end

-- the first place two transcripts differ, as "step name: path: a ~= b" (nil when equal)
local function difference(a, b, path)
  if type(a) ~= "table" or type(b) ~= "table" then
    if a ~= b then return path .. ": " .. tostring(a) .. " ~= " .. tostring(b) end
    return nil
  end
  local keys = {}
  for k in pairs(a) do keys[k] = true end
  for k in pairs(b) do keys[k] = true end
  for k in pairs(keys) do
    local name = type(a[k]) == "table" and a[k].name
    local d = difference(a[k], b[k], path .. "." .. (name or tostring(k)))
    if d then return d end
  end
end

-- ------------------------------------------------------------ the specs

describe("kinot.fleet: one scenario, three stores #nginx #redis", function()
  local ng, rs
  local transcripts = {}
  setup(function()
    rs = R.start()
    ng = H.nginx { http = "lua_shared_dict kinot_fleet 8m;", server = NGINX_CALL, workers = 2 }
  end)
  teardown(function()
    if ng then ng.stop() end
    if rs then rs.stop() end
  end)

  it("on a Lua table", function()
    transcripts.table = scenario(local_twin { store = "table" })
  end)
  it("on a lua_shared_dict, in nginx", function()
    transcripts.shared = scenario(nginx_twin(ng))
  end)
  it("on Redis", function()
    transcripts.redis = scenario(local_twin { store = "redis", redis = rs.url, prefix = "t1:" })
  end)
  it("gives the same transcript on every store", function()
    assert.is_table(transcripts.table)
    assert.is_nil(difference(transcripts.table, transcripts.shared, "table vs shared"))
    assert.is_nil(difference(transcripts.table, transcripts.redis, "table vs redis"))
  end)
end)

-- Attack: many workers at once.  Updates of four devices in a shuffled order
-- of their stamps, 8 clients in parallel against nginx's 2 workers, each
-- worker with its own twin over the one store.  Whatever the interleaving,
-- each device ends at its newest stamp, every update is counted once, and
-- the summary's counters agree with the devices.
local APPLY = [[
  location = /apply {
    content_by_lua_block {
      local fleet = require "kinot.fleet"
      local a = ngx.req.get_uri_args()
      local store = a.store
      local twin = fleet.new { store = store, redis = a.redis, prefix = a.prefix, stale_after = false }
      local s = tonumber(a.s)
      local verdict, err = twin:apply { kind = "status_changed", device = "lock", verified = true, data = {
        sn = tonumber(a.sn), car_detected = tonumber(a.c), locked = s % 2,
        updated_at = os.date("!%Y-%m-%dT%H:%M:%S+00:00", 1796083200 + s) } }
      if not verdict then ngx.status = 500 ngx.say(tostring(err)) return end
      ngx.say(verdict)
    }
  }
]]

-- two requests at once, one a worker, each applying n updates in a tight
-- loop (no process to spawn between them: the workers really overlap)
local HAMMER = [[
  location = /hammer {
    content_by_lua_block {
      local fleet = require "kinot.fleet"
      local a = ngx.req.get_uri_args()
      local twin = fleet.new { store = a.store, redis = a.redis, prefix = a.prefix, stale_after = false,
                               dict = a.store == "shared" and "fleet_hammer" or nil }
      local x, n = tonumber(a.seed), tonumber(a.n)
      local counts = {}
      for _ = 1, n do
        x = (x * 48271) % 2147483647
        local sn, s = 419600201 + x % 4, math.floor(x / 4) % 500 + 1
        local verdict, err = twin:apply { kind = "status_changed", device = "lock", verified = true, data = {
          sn = sn, car_detected = (s * 3 + sn) % 2, locked = s % 2,
          updated_at = os.date("!%Y-%m-%dT%H:%M:%S+00:00", 1796083200 + s) } }
        if not verdict then ngx.status = 500 ngx.say(tostring(err)) return end
        counts[verdict] = (counts[verdict] or 0) + 1
      end
      ngx.say(require("cjson").encode { pid = ngx.worker.pid(), counts = counts })
    }
  }
]]

describe("kinot.fleet under concurrent workers #nginx #redis", function()
  local ng, rs
  setup(function()
    rs = R.start()
    ng = H.nginx { http = "lua_shared_dict kinot_fleet 8m; lua_shared_dict fleet_hammer 4m;",
                   server = APPLY .. HAMMER .. NGINX_CALL, workers = 2 }
  end)
  teardown(function()
    if ng then ng.stop() end
    if rs then rs.stop() end
  end)

  for _, store in ipairs { "shared", "redis" } do
    it("never goes backward and counts every update once (" .. store .. ", 2 workers, 8 clients)", function()
      local sns = { 419600101, 419600102, 419600103, 419600104 }
      local urls, newest = {}, {}
      math.randomseed(7)
      for _, sn in ipairs(sns) do
        for s = 1, 60 do
          -- stamps 1..60, a few repeated (duplicates), the order shuffled below
          local c = (s * 7 + sn) % 2
          urls[#urls + 1] = string.format("%s/apply?store=%s&redis=%s&prefix=%s&sn=%d&s=%d&c=%d", ng.url, store,
            rs.url, "conc:", sn, s, c)
          if s % 10 == 0 then urls[#urls + 1] = urls[#urls] end
          newest[sn] = { s = s, c = c }
        end
      end
      for i = #urls, 2, -1 do
        local j = math.random(i)
        urls[i], urls[j] = urls[j], urls[i]
      end
      local list = os.tmpname()
      local f = assert(io.open(list, "w"))
      f:write(table.concat(urls, "\n"), "\n")
      f:close()
      local p = io.popen("xargs -P 8 -n 1 curl -s -o /dev/null -w '%{http_code}\\n' < " .. list)
      local codes = {}
      for line in p:lines() do codes[line] = (codes[line] or 0) + 1 end
      p:close()
      os.remove(list)
      assert.are.same({ ["200"] = #urls }, codes, ng.log())

      local call = nginx_twin(ng)
      local function ask(method, ...)
        if store == "shared" then return call(method, 0, ...).r1 end
        local twin = fleet.new { store = "redis", redis = rs.url, prefix = "conc:", stale_after = false }
        return plain((twin[method](twin, ...)))
      end
      local occupied = 0
      for _, sn in ipairs(sns) do
        local d = ask("device", sn)
        assert.are.equal(stamp(newest[sn].s), d.updated_at)
        assert.are.equal(newest[sn].c, d.state.car_detected)
        assert.are.equal(newest[sn].s % 2, d.state.locked)
        occupied = occupied + newest[sn].c
      end
      local s = ask("summary")
      local u = s.updates
      assert.are.equal(#urls, u.added + u.applied + u.out_of_order + u.duplicate)
      assert.are.equal(4, u.added)
      assert.is_true(u.out_of_order > 0 and u.duplicate > 0) -- the shuffle made both
      assert.are.equal(occupied, s.occupancy.occupied)
      assert.are.equal(occupied, ask("devices", { occupied = true }).total)
      assert.are.equal(4, s.devices.locks)
    end)

    it("keeps its counters true under two workers applying at once (" .. store .. ")", function()
      local n = store == "shared" and 40000 or 3000
      local prefix = "hammer:" .. store .. ":"
      local url = string.format("%s/hammer?store=%s&redis=%s&prefix=%s&n=%d&seed=", ng.url, store, rs.url, prefix, n)
      local p = io.popen("(curl -s '" .. url .. "11' & curl -s '" .. url .. "29' & wait)")
      local out = p:read("*a")
      p:close()
      local pids = {}
      for line in out:gmatch("[^\n]+") do
        local doc = json.decode(line)
        assert.is_table(doc, out .. ng.log())
        pids[doc.pid] = true
      end
      local twin
      local function ask(method, ...)
        if store == "shared" then return nginx_twin(ng, "fleet_hammer")(method, 0, ...).r1 end
        twin = twin or fleet.new { store = "redis", redis = rs.url, prefix = prefix, stale_after = false }
        return plain((twin[method](twin, ...)))
      end
      local workers = 0
      for _ in pairs(pids) do workers = workers + 1 end
      local served = workers .. " worker(s) served the two requests"
      local s = ask("summary")
      local u = s.updates
      assert.are.equal(2 * n, u.added + u.applied + u.out_of_order + u.duplicate, served)
      -- the newest stamp each device got, from the same generator
      local newest = {}
      for _, seed in ipairs { 11, 29 } do
        local x = seed
        for _ = 1, n do
          x = (x * 48271) % 2147483647
          local sn, st = 419600201 + x % 4, math.floor(x / 4) % 500 + 1
          if st > (newest[sn] or 0) then newest[sn] = st end
        end
      end
      local occupied, up = 0, 0
      for sn = 419600201, 419600204 do
        local d = ask("device", sn)
        assert.are.equal(stamp(newest[sn]), d.updated_at)
        assert.are.equal((newest[sn] * 3 + sn) % 2, d.state.car_detected)
        occupied = occupied + d.state.car_detected
        up = up + d.state.locked
      end
      assert.are.equal(occupied, s.occupancy.occupied, served)
      assert.are.equal(up, s.locks_up, served)
      assert.are.equal(4, s.devices.locks)
    end)
  end
end)

describe("kinot.fleet: options, hostile updates, groups #unit", function()
  local errors = require "kinot.errors"

  it("refuses an unknown option or filter, naming it", function()
    local ok, err = pcall(fleet.new, { store = "table", stale_afte = 60 })
    assert.is_false(ok)
    assert.is_true(errors.is_misuse(err))
    assert.matches("stale_afte", tostring(err))
    local twin = fleet.new { store = "table" }
    ok, err = pcall(twin.devices, twin, { ocupied = true })
    assert.is_false(ok)
    assert.matches("ocupied", tostring(err))
    assert.has_error(function() twin:devices { limit = 0 } end)
    assert.has_error(function() twin:devices { occupied = "yes" } end)
    assert.has_error(function() fleet.new { store = "memcached" } end)
    assert.has_error(function() fleet.new { store = "redis" } end)
  end)

  it("refuses an update it cannot order, and changes nothing", function()
    local twin = fleet.new { store = "table" }
    for _, data in ipairs {
      { sn = LOCK1, car_detected = 1 },                                -- no updated_at
      { sn = LOCK1, car_detected = 1, updated_at = "yesterday" },
      { sn = LOCK1, car_detected = 1, updated_at = 1796083200 },
      { sn = "abc", car_detected = 1, updated_at = stamp(1) },
      { sn = 2.5, car_detected = 1, updated_at = stamp(1) },
      { car_detected = 1, updated_at = stamp(1) },
    } do
      local verdict, err = twin:apply(callback("lock", data))
      assert.is_nil(verdict)
      assert.are.equal("decode", err.kind)
    end
    local s = twin:summary()
    assert.are.same({ locks = 0, sensors = 0, dtus = 0, gone = 0 }, s.devices)
    assert.is_nil(twin:device(LOCK1))
  end)

  it("ignores what is not a device's state: command_resp, unverified (monitor), unknown device", function()
    local twin = fleet.new { store = "table" }
    local data = { sn = LOCK1, car_detected = 1, updated_at = stamp(1) }
    assert.are.equal("ignored", (twin:apply { kind = "command_resp", device = "lock", data = data }))
    assert.are.equal("ignored", (twin:apply { kind = "status_changed", device = "lock", data = data, verified = false }))
    assert.are.equal("ignored", (twin:apply { kind = "status_changed", device = "unknown", data = data }))
    assert.is_nil(twin:device(LOCK1))
    assert.has_error(function() twin:apply("body") end)
  end)

  it("gives copies: changing what it answered does not change the twin", function()
    local twin = fleet.new { store = "table" }
    twin:put("lock", { lock(LOCK1, 1, { car_detected = 1 }) }, "scan")
    local d = twin:device(LOCK1)
    d.state.car_detected = 0
    assert.are.equal(1, twin:device(LOCK1).state.car_detected)
  end)

  it("keeps the last changes_max changes", function()
    local twin = fleet.new { store = "table", changes_max = 3 }
    twin:put("lock", { lock(LOCK1, 0) }, "scan")
    for s = 1, 5 do
      twin:apply(callback("lock", { sn = LOCK1, car_detected = s % 2, updated_at = stamp(s) }))
    end
    local got = twin:changes(0, 100)
    assert.are.equal(3, #got.changes)
    assert.are.same({ 3, 4, 5 }, { got.changes[1].id, got.changes[2].id, got.changes[3].id })
    assert.are.same({}, twin:changes(got.next, 100).changes)
  end)

  it("reads groups from CSV and from either JSON shape", function()
    local groups = require "kinot.fleet.groups"
    local dir = os.tmpname()
    local csv = dir .. ".csv"
    local f = assert(io.open(csv, "w"))
    f:write('# the car park\r\nsn,zone,level,bay\r\n419600001,A,1,"A1, by the lift"\r\n\r\n419600002, A ,2,A2-01\r\n')
    f:close()
    local map, names = groups.load(csv)
    os.remove(csv)
    os.remove(dir)
    assert.are.same({ "A/1", "A/2" }, names)
    assert.are.same({ zone = "A", level = "1", bay = "A1, by the lift", group = "A/1" }, map[419600001])
    assert.are.equal("A/2", map[419600002].group)
    names = select(2, groups.load({ { sn = 419800001, zone = "B", level = 3 } }))
    assert.are.same({ "B/3" }, names)
    map = groups.load({ ["419800001"] = { group = "visitors" } })
    assert.are.equal("visitors", map[419800001].group)
    map = groups.load({ ["419800001"] = { zone = "B", level = "1" } }, { "zone" })
    assert.are.equal("B", map[419800001].group)
    assert.has_error(function() groups.load({ { sn = "x", zone = "A" } }) end)
    assert.has_error(function() groups.load({ { sn = 1, group = "a|b" } }) end)
    assert.has_error(function() groups.load("/nonexistent/groups.csv") end)
  end)
end)

describe("kinot.fleet when Redis goes away #redis", function()
  it("answers nil, err (retryable) while Redis is down, and works again once it is back", function()
    local rs = R.start { aof = true }
    finally(function() rs.stop() end)
    local twin = fleet.new { store = "redis", redis = rs.url, prefix = "down:", stale_after = false }
    assert.are.equal("added", (twin:apply(callback("lock", { sn = LOCK1, car_detected = 1, updated_at = stamp(1) }))))
    rs.kill()
    local verdict, err = twin:apply(callback("lock", { sn = LOCK1, car_detected = 0, updated_at = stamp(2) }))
    assert.is_nil(verdict)
    assert.is_true(err.kind == "network" or err.kind == "timeout", tostring(err))
    assert.is_true(err.retryable)
    local s, serr = twin:summary()
    assert.is_nil(s)
    assert.is_table(serr)
    rs.up()
    -- the platform delivers the refused callback again: now it applies, once
    verdict = twin:apply(callback("lock", { sn = LOCK1, car_detected = 0, updated_at = stamp(2) }))
    assert.are.equal("applied", verdict)
    assert.are.equal("duplicate", (twin:apply(callback("lock", { sn = LOCK1, car_detected = 0, updated_at = stamp(2) }))))
    s = assert(twin:summary())
    assert.are.same({ 1, 1, 1, 0 }, { s.updates.added, s.updates.applied, s.updates.duplicate, s.occupancy.occupied })
  end)
end)
