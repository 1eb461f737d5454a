-- kinot.fleet's Redis store, a batch decided by the client (a scan's page):
-- its records read with MGET, decided by the rule here, and one script
-- that writes the plan only if no record changed since the MGET (else the
-- script decides the batch itself).  What it must never do: hold anything
-- else than the script deciding device by device would (records, indexes,
-- counters, the change stream, verdicts and events), or write over a
-- callback that came between the MGET and the script.  A real redis-server.
local fleet = require "kinot.fleet"
local json = require "kinot.json"
local R = require "redis_server"

local T0 = 1796083200 -- 2026-12-01T00:00:00Z
local function stamp(s) return os.date("!%Y-%m-%dT%H:%M:%S+00:00", T0 + s) end
local GROUPS = { ["419600001"] = { zone = "A", level = "1" }, ["419600002"] = { zone = "A", level = "1" },
                 ["419800001"] = { zone = "B", level = "2" }, ["419600007"] = { zone = "B", level = "2" } }

-- a device as the platform lists it, of kind `kind`, state drawn by rnd
local function device(kind, sn, s, rnd)
  if kind == "dtu" then
    return { sn = sn, hw = 4097, sw = 8193, firmware = 17, host = "10.0.0.1:40001",
             online = rnd(3) == 1 and "offline" or "online", updated_at = stamp(s) }
  end
  local o = { sn = sn, voltage = 3.0 + rnd(9) / 10, frequency = 37.5, car_detected = rnd(2) - 1,
              low_battery = rnd(4) == 1 and 1 or 0, coil_fault = rnd(5) == 1 and 1 or 0, rs_si = -60 - rnd(60),
              updated_at = stamp(s) }
  if kind == "lock" then
    o.locked, o.motor_fail, o.bar_position_error, o.shell_opened = rnd(2) - 1, rnd(6) == 1 and 1 or 0, 0, 0
    if rnd(2) == 1 then o.bt_match_code = "00001-00002-00003-00004-00005-0000" .. rnd(9) end
  else
    o.active = 1
  end
  return o
end

-- everything under a prefix, comparable across prefixes: records decoded,
-- every sorted set with its scores, the counters, the stream's events
local function dump(c, prefix)
  local out = { d = {}, z = {} }
  local keys = c:call("KEYS", prefix .. "*")
  table.sort(keys)
  for _, key in ipairs(keys) do
    local name = key:sub(#prefix + 1)
    local kind = c:call("TYPE", key)
    if kind == "string" and name:sub(1, 2) == "d:" then
      out.d[name] = json.decode(c:call("GET", key))
    elseif kind == "zset" then
      out.z[name] = c:call("ZRANGE", key, 0, -1, "WITHSCORES")
    elseif kind == "hash" and name == "c" then
      local flat, counters = c:call("HGETALL", key), {}
      for i = 1, #flat, 2 do
        if flat[i + 1] ~= "0" then counters[flat[i]] = flat[i + 1] end
      end
      out.c = counters
    elseif kind == "stream" then
      local events = {}
      for i, entry in ipairs(c:call("XRANGE", key, "-", "+")) do events[i] = json.decode(entry[2][2]) end
      out.x = events
    end
  end
  return out
end

-- a put's results without the events' ids (each prefix numbers its own)
local function plain(results)
  local out = {}
  for i, r in ipairs(results) do
    local events = {}
    for k, ev in ipairs(r.events) do
      local copy = {}
      for f, v in pairs(ev) do copy[f] = v end
      copy.id = nil
      events[k] = copy
    end
    out[i] = { verdict = r.verdict, events = events }
  end
  return out
end

describe("kinot.fleet's Redis store, a batch decided by the client #redis", function()
  local rs
  setup(function() rs = R.start() end)
  teardown(function() if rs then rs.stop() end end)

  local function twin(prefix, clock)
    return fleet.new { store = "redis", redis = rs.url, prefix = prefix, groups = GROUPS, stale_after = 600,
                       weak_signal = -100, clock = function() return clock.now end }
  end

  -- batches (the plan) on one prefix, the same devices one at a time (the
  -- script decides each) on another: after every step the same results,
  -- at the end the same store, key for key
  for seed = 1, 6 do
    it("holds what the script deciding device by device holds (random sequence " .. seed .. ")", function()
      local rng = seed * 7919
      local function rnd(n) -- a small LCG: the same sequence in both runtimes
        rng = (rng * 1103515245 + 12345) % 2147483648
        return math.floor(rng / 65536) % n + 1
      end
      local clock = { now = T0 + 100 }
      local pre_a, pre_b = "plan" .. seed .. ":", "each" .. seed .. ":"
      local a, b = twin(pre_a, clock), twin(pre_b, clock)
      local plans = 0
      local eval = a.store.c.eval
      a.store.c.eval = function(self, script, ...)
        if script:find("local plan = cjson.decode(ARGV[4])", 1, true) then plans = plans + 1 end
        return eval(self, script, ...)
      end
      local pool = {}
      for i = 1, 12 do pool[#pool + 1] = 419600000 + i end
      for i = 1, 8 do pool[#pool + 1] = 419800000 + i end
      for i = 1, 4 do pool[#pool + 1] = 644200000 + i end
      local at = {} -- each device's last stamp (seconds after T0)
      for step = 1, 60 do
        clock.now = clock.now + rnd(120)
        local what = rnd(10)
        if what <= 7 then
          local kind = ({ "lock", "sensor", "dtu" })[rnd(3)]
          local batch, used = {}, {}
          for _ = 1, rnd(14) do
            local sn = pool[rnd(#pool)]
            if not used[sn] or rnd(8) == 1 then -- now and then a serial twice in a batch
              used[sn] = true
              local now_s = clock.now - T0
              local last = at[sn] or (now_s - rnd(800))
              -- older, the same, newer (fresh, or already stale_after old)
              local s = ({ last - rnd(5), last, last, math.max(last + 1, now_s - rnd(800)) })[rnd(4)]
              if s > last then at[sn] = s end
              batch[#batch + 1] = device(kind, sn, s, rnd)
            end
          end
          local source = rnd(4) == 1 and "callback" or "scan"
          local got_a = assert(a:put(kind, batch, source))
          local got_b = {}
          for i, obj in ipairs(batch) do got_b[i] = assert(b:put(kind, { obj }, source))[1] end
          assert.are.same(plain(got_b), plain(got_a), "step " .. step)
        elseif what == 8 then
          local sns = {}
          for _ = 1, rnd(5) do sns[#sns + 1] = pool[rnd(#pool)] end
          assert.are.same(plain { { events = assert(b:gone(sns)) } }, plain { { events = assert(a:gone(sns)) } })
        else
          assert.are.same(plain { { events = assert(b:sweep()) } }, plain { { events = assert(a:sweep()) } })
        end
      end
      assert.is_true(plans > 20, plans .. " plans")
      local c = rs.client()
      assert.are.same(dump(c, pre_b), dump(c, pre_a))
      assert.are.same(b:summary(), a:summary())
    end)
  end

  it("does not write over a callback that came between the batch's MGET and its script", function()
    local clock = { now = T0 + 100 }
    local scan, other, ref = twin("race:", clock), twin("race:", clock), fleet.new {
      store = "table", groups = GROUPS, stale_after = 600, weak_signal = -100, clock = function() return clock.now end }
    local rnd = function() return 1 end
    local page = {}
    for i = 1, 20 do page[i] = device("lock", 419600000 + i, 10, rnd) end -- car_detected 0
    assert(scan:put("lock", page, "scan"))
    assert(ref:put("lock", page, "scan"))
    -- the next scan reads the platform at second 20 (nothing occupied);
    -- between its MGET and its script a callback says device 5 was taken at 30
    local next_page = {}
    for i = 1, 20 do
      next_page[i] = device("lock", 419600000 + i, 20, rnd)
      next_page[i].locked = 1
    end
    local cb = { kind = "status_changed", device = "lock", sn = 419600005, verified = true,
                 data = { sn = 419600005, car_detected = 1, locked = 1, updated_at = stamp(30) } }
    local client, call, answers = scan.store.c, scan.store.c.call, {}
    client.call = function(self, cmd, ...)
      local r, e = call(self, cmd, ...)
      if cmd == "MGET" then assert.are.equal("applied", (other:apply(cb))) end
      return r, e
    end
    local eval = client.eval
    client.eval = function(self, ...)
      local r, e = eval(self, ...)
      answers[#answers + 1] = type(r) == "string" and r:sub(1, 20) or tostring(r)
      return r, e
    end
    local got = assert(scan:put("lock", next_page, "scan"))
    client.call, client.eval = call, eval
    -- the plan was refused (the record changed), the script decided the batch
    assert.are.same({ '{"changed":true}', "[{" }, { answers[1], answers[2]:sub(1, 2) })
    assert.are.equal("applied", (ref:apply(cb)))
    local want = ref:put("lock", next_page, "scan")
    assert.are.same(plain(want), plain(got))
    assert.are.equal("older", got[5].verdict)
    local d = scan:device(419600005)
    assert.are.same({ 1, "callback", stamp(30) }, { d.state.car_detected, d.source, d.updated_at })
    local s, r = scan:summary(), ref:summary()
    assert.are.same(r.occupancy, s.occupancy)
    assert.are.same(r.updates, s.updates)
    assert.are.equal(1, s.occupancy.occupied)
    assert.are.equal(20, s.locks_up)
  end)

  it("takes a batch of PLAN_MAX devices as a plan, and a larger one in one script", function()
    local clock = { now = T0 + 100 }
    local t = twin("big:", clock)
    local rnd = function() return 2 end -- occupied
    for _, n in ipairs { 1000, 1001 } do
      local page = {}
      for i = 1, n do page[i] = device("sensor", 419800000 + (n - 1000) * 5000 + i, 10, rnd) end
      local got = assert(t:put("sensor", page, "scan"))
      assert.are.equal(n, #got)
      for i = 1, n do assert.are.equal("added", got[i].verdict) end
      got = assert(t:put("sensor", page, "scan"))
      for i = 1, n do assert.are.equal("duplicate", got[i].verdict) end
    end
    local s = assert(t:summary())
    assert.are.same({ 2001, 2001, 2001 }, { s.devices.sensors, s.occupancy.total, s.occupancy.occupied })
    assert.are.equal(1000, require("kinot.fleet.redis_store").PLAN_MAX)
  end)

  it("fails the put, writing nothing, when Redis stalls past the client's timeout mid-batch", function()
    local clock = { now = T0 + 100 }
    local t = fleet.new { store = "redis", redis = require("kinot.redis").new(rs.url, { timeout = 0.5 }),
                          prefix = "stall:", stale_after = 600, clock = function() return clock.now end }
    local rnd = function() return 2 end
    local page = {}
    for i = 1, 30 do page[i] = device("sensor", 419800000 + i, 10, rnd) end
    local client, call = t.store.c, t.store.c.call
    client.call = function(self, cmd, ...)
      local r, e = call(self, cmd, ...)
      if cmd == "MGET" then os.execute("kill -STOP " .. rs.pid()) end
      return r, e
    end
    local ok, err = t:put("sensor", page, "scan")
    os.execute("kill -CONT " .. rs.pid())
    client.call = call
    assert.is_nil(ok)
    assert.is_true(err.kind == "timeout" or err.kind == "network", tostring(err))
    -- whether the script ran is unknown to the client: it ran whole or not at
    -- all, and the same page again makes the twin whole (added or duplicate)
    local again = assert(t:put("sensor", page, "scan"))
    for i = 1, 30 do assert.is_truthy(({ added = true, duplicate = true })[again[i].verdict]) end
    local s = assert(t:summary())
    assert.are.same({ 30, 30, 30 }, { s.devices.sensors, s.occupancy.total, s.occupancy.occupied })
  end)
end)

-- two batches in flight at once (a sync's two appliers in nginx), sharing
-- devices (a page shift lists a device on two pages): whichever script runs
-- second finds a record changed since its MGET, or reads it, and the newer
-- state wins either way; the counters equal a recount
describe("kinot.fleet's Redis store, two batches at once sharing devices #redis #nginx", function()
  local H = require "helpers"
  it("keeps the newer state of each shared device and exact counters", function()
    local rs = R.start()
    -- (one finally for both: busted keeps only an it's last one)
    local ng
    finally(function()
      if ng then ng.stop() end
      rs.stop()
    end)
    ng = H.nginx { server = [[
      location = /race { content_by_lua_block {
        local fleet = require "kinot.fleet"
        local json = require "kinot.json"
        local a = ngx.req.get_uri_args()
        local twin = fleet.new { store = "redis", redis = a.redis, prefix = a.prefix, stale_after = false }
        local eval, changed = twin.store.c.eval, 0
        twin.store.c.eval = function(self, ...)
          local got, err = eval(self, ...)
          if type(got) == "string" and got:find('"changed":true', 1, true) then changed = changed + 1 end
          return got, err
        end
        local function lock(sn, s, occupied)
          return { sn = sn, car_detected = occupied, locked = 0, voltage = 3.5,
                   updated_at = os.date("!%Y-%m-%dT%H:%M:%S+00:00", 1796083200 + s) }
        end
        -- page 1: devices 1..100 at second 10, free; page 2: 51..150 at second 20, taken
        local p1, p2 = {}, {}
        for i = 1, 100 do p1[#p1 + 1] = lock(419600000 + i, 10, 0) end
        for i = 51, 150 do p2[#p2 + 1] = lock(419600000 + i, 20, 1) end
        local r = {}
        local t1 = ngx.thread.spawn(function() r[1] = { twin:put("lock", p1, "scan") } end)
        local t2 = ngx.thread.spawn(function() r[2] = { twin:put("lock", p2, "scan") } end)
        ngx.thread.wait(t1)
        ngx.thread.wait(t2)
        local verdicts = {}
        for k = 1, 2 do
          assert(r[k][1], tostring(r[k][2]))
          for _, o in ipairs(r[k][1]) do verdicts[o.verdict] = (verdicts[o.verdict] or 0) + 1 end
        end
        local occupied, wrong = 0, {}
        for i = 1, 150 do
          local d = twin:device(419600000 + i)
          occupied = occupied + d.state.car_detected
          if (i > 50) ~= (d.state.car_detected == 1) then wrong[#wrong + 1] = i end
        end
        local s = twin:summary()
        ngx.say(json.encode { changed = changed, verdicts = verdicts, occupied = occupied, wrong = wrong, locks = s.devices.locks,
                              summary_occupied = s.occupancy.occupied, total = s.occupancy.total })
      } }
    ]] }
    local conflicts = 0
    for round = 1, 12 do
      local res = H.raw("GET", ng.url .. "/race?redis=" .. rs.url .. "&prefix=race" .. round .. ":")
      assert.are.equal(200, res.status, ng.log())
      local got = json.decode(res.body)
      assert.are.same({}, got.wrong, res.body)
      assert.are.same({ 150, 150, 100, 100 }, { got.locks, got.total, got.occupied, got.summary_occupied }, res.body)
      assert.are.equal(150, got.verdicts.added, res.body)
      assert.are.equal(50, (got.verdicts.missed or 0) + (got.verdicts.older or 0), res.body)
      conflicts = conflicts + got.changed
    end
    -- both MGETs go out before either script: the second plan is refused
    assert.is_true(conflicts >= 6, conflicts .. " plans refused in 12 rounds")
  end)
end)
