-- kinot.fleet's stores, a batch (a scan's page) attacked half way.
-- The shared dict moves a batch's counters once, after its records
-- (docs/fleet.md): a worker killed (SIGKILL) while the batch waits for a
-- device another holds, or a device the dict cannot keep (a number JSON
-- cannot carry: the platform's 1e999) raising mid-batch, must not leave the
-- counters short of the records written before.  A real nginx (one worker:
-- the master starts another after the kill; the dict outlives it).
local H = require "helpers"
local json = require "kinot.json"

local HTTP = [[
  lua_shared_dict fleet_kill 4m;
  init_by_lua_block {
    SNS = {}
    for i = 1, 20 do SNS[i] = 419800000 + i end
    local twin
    function kill_twin()
      twin = twin or require("kinot.fleet").new { store = "shared", dict = "fleet_kill", stale_after = false }
      return twin
    end
  }
]]

local SERVER = [[
  location = /pid { content_by_lua_block { ngx.say(ngx.worker.pid()) } }
  location = /hold {
    content_by_lua_block {
      -- device sn's lock, held by another (a worker elsewhere in its update)
      ngx.shared.fleet_kill:set("l:" .. ngx.var.arg_sn, "elsewhere:1", 30)
      ngx.say("held")
    }
  }
  location = /page {
    content_by_lua_block {
      local page = {}
      for i, sn in ipairs(SNS) do page[i] = { sn = sn, car_detected = 1, updated_at = "2026-12-01T00:00:00Z" } end
      local bad = tonumber(ngx.var.arg_bad)
      if bad then page[bad].rs_si = 1e999 end
      local twin = kill_twin()
      local ok, res = pcall(twin.put, twin, "sensor", page, "scan")
      ngx.say(ok and (res and "put" or "failed") or "raised")
    }
  }
  location = /check {
    content_by_lua_block {
      package.path = "${root}/spec/support/?.lua;" .. package.path
      local model = require "fleet_model"
      local twin = kill_twin()
      local want, got = model.recount(twin, SNS), model.counted(twin:summary())
      ngx.say(require("kinot.json").encode { recount = want, summary = got })
    }
  }
]]

local function start()
  return H.nginx { http = HTTP, server = (SERVER:gsub("%${root}", H.root)) }
end

local function check(ng)
  return json.decode(H.raw("GET", ng.url .. "/check").body)
end

describe("kinot.fleet's shared dict, a batch attacked half way #nginx", function()
  it("keeps the counters equal to a recount when the worker is killed while a batch waits for a lock", function()
    local ng = start()
    finally(function() ng.stop() end)
    assert.are.equal("held\n", H.raw("GET", ng.url .. "/hold?sn=419800015").body)
    local pid = tonumber(H.raw("GET", ng.url .. "/pid").body)
    -- the page: devices 1 to 14 written, then it waits (up to 5 s) for device 15
    os.execute("curl -s -m 10 -o /dev/null '" .. ng.url .. "/page' &")
    os.execute("sleep 0.8")
    local doc = check(ng)
    assert.are.equal(14, doc.recount.sensors, "the page is not waiting at device 15")
    local killed = os.execute("kill -9 " .. pid)
    assert.is_true(killed == true or killed == 0)
    local now_pid
    for _ = 1, 50 do
      os.execute("sleep 0.1")
      local ok, r = pcall(H.raw, "GET", ng.url .. "/pid") -- (refused while the master starts another)
      now_pid = ok and tonumber(r.body)
      if now_pid and now_pid ~= pid then break end
    end
    assert.are_not.equal(pid, now_pid)
    doc = check(ng)
    assert.are.equal(14, doc.recount.sensors)
    assert.are.same(doc.recount, doc.summary)
  end)

  it("keeps the counters equal to a recount when the dict fills up mid-batch", function()
    local ng = H.nginx { http = "lua_shared_dict fleet_tiny 96k;", server = ([[
      location = /fill {
        content_by_lua_block {
          package.path = "${root}/spec/support/?.lua;" .. package.path
          local model = require "fleet_model"
          local twin = require("kinot.fleet").new { store = "shared", dict = "fleet_tiny", stale_after = false }
          local sns, failed, first_err = {}, 0, nil
          for sn = 1, 400 do sns[sn] = 419600000 + sn end
          math.randomseed(7)
          for round = 1, 6 do
            for first = 1, 400, 50 do
              local page = {}
              for sn = first, first + 49 do
                page[#page + 1] = { sn = 419600000 + sn, car_detected = (sn + round) % 2, locked = (sn * round) % 2,
                  low_battery = round % 2, bt_mac = string.rep("ab", math.random(1, 40)),
                  updated_at = os.date("!%Y-%m-%dT%H:%M:%S+00:00", 1796083200 + round * 10) }
              end
              local ok, err = twin:put("lock", page, "scan")
              if not ok then
                failed = failed + 1
                first_err = first_err or tostring(err)
              end
            end
          end
          ngx.say(require("kinot.json").encode { failed = failed, first_err = first_err,
            recount = model.recount(twin, sns), summary = model.counted(twin:summary()) })
        }
      }]]):gsub("%${root}", H.root) }
    finally(function() ng.stop() end)
    local res = H.raw("GET", (ng.url .. "/fill"))
    assert.are.equal(200, res.status, res.body .. ng.log())
    local doc = json.decode(res.body)
    assert.is_true(doc.failed > 0, "the dict never filled: make it smaller")
    assert.matches("fleet_tiny is full", doc.first_err)
    assert.is_true(doc.recount.locks > 50)
    assert.are.same(doc.recount, doc.summary)
  end)

  it("keeps the counters equal to a recount when a device raises mid-batch", function()
    local ng = start()
    finally(function() ng.stop() end)
    assert.are.equal("raised\n", H.raw("GET", ng.url .. "/page?bad=15").body)
    local doc = check(ng)
    assert.are.equal(14, doc.recount.sensors)
    assert.are.same(doc.recount, doc.summary)
  end)
end)

-- kinot.fleet's Redis store, a page planned by the client (MGET, then a
-- compare-and-set script) attacked between its two steps and inside its
-- script.  A real redis-server.
describe("kinot.fleet's Redis store, a planned page attacked half way #redis", function()
  local fleet = require "kinot.fleet"
  local model = require "fleet_model"
  local R = require "redis_server"
  local unpack = table.unpack or unpack -- luacheck: ignore 143
  local T0 = 1796083200 -- 2026-12-01T00:00:00Z
  local function stamp(s) return os.date("!%Y-%m-%dT%H:%M:%S+00:00", T0 + s) end
  local SNS = {}
  for i = 1, 10 do SNS[i] = 419800000 + i end
  local rs
  setup(function() rs = R.start() end)
  teardown(function() if rs then rs.stop() end end)

  local function twin(prefix, clock)
    return fleet.new { store = "redis", redis = rs.url, prefix = prefix, stale_after = false,
                       clock = function() return clock.now end }
  end
  local function page(s, occupied)
    local out = {}
    for i, sn in ipairs(SNS) do out[i] = { sn = sn, car_detected = occupied, updated_at = stamp(s) } end
    return out
  end
  -- the stream's events of each change
  local function streamed(c, prefix)
    local n = {}
    for _, entry in ipairs(c:call("XRANGE", prefix .. "x", "-", "+")) do
      local ev = json.decode(entry[2][2])
      n[ev.change] = (n[ev.change] or 0) + 1
    end
    return n
  end
  local function agrees(t)
    assert.are.same(model.recount(t, SNS), model.counted(assert(t:summary())))
  end

  it("keeps the tie rule at an equal updated_at alike in a plan, in the script and in the table store", function()
    local clock = { now = T0 + 100 }
    local red, tab = twin("tie:", clock), fleet.new { store = "table", stale_after = false,
                                                      clock = function() return clock.now end }
    local function both(fn)
      local a, b = fn(red), fn(tab)
      local va, vb = {}, {}
      for i = 1, #a do va[i], vb[i] = a[i].verdict, b[i].verdict end
      assert.are.same(vb, va)
      return va
    end
    local function cb(t, sn, occ, s)
      local v = t:apply { kind = "status_changed", device = "sensor", sn = sn, verified = true,
                          data = { sn = sn, car_detected = occ, updated_at = stamp(s) } }
      return { { verdict = v } }
    end
    -- devices 1-5 by a scan (a plan), 6-10 by callbacks (the script), all at second 10
    local first = page(10, 0)
    both(function(t) return assert(t:put("sensor", { unpack(first, 1, 5) }, "scan")) end)
    for i = 6, 10 do both(function(t) return cb(t, SNS[i], 0, 10) end) end
    -- the same second: a callback after a scan is older, a scan after a callback applies (missed)
    assert.are.same({ "older" }, both(function(t) return cb(t, SNS[1], 1, 10) end))
    local got = both(function(t) return assert(t:put("sensor", page(10, 1), "scan")) end)
    assert.are.same({ "missed", "missed", "missed", "missed", "missed", "missed", "missed", "missed", "missed", "missed" },
      got)
    -- the same state at the same second: a duplicate, through the plan and through the script
    assert.are.same({ "duplicate" }, both(function(t) return cb(t, SNS[7], 1, 10) end))
    got = both(function(t) return assert(t:put("sensor", page(10, 1), "scan")) end)
    for i = 1, #SNS do assert.are.equal("duplicate", got[i]) end
    assert.are.same(model.counted(assert(tab:summary())), model.counted(assert(red:summary())))
    agrees(red)
  end)

  -- each way the page's script fails: Redis made to refuse it (breaks),
  -- what the error says, and Redis mended again
  for _, case in ipairs {
    { "an index of the wrong type", "wt:", "WRONGTYPE",
      -- someone else's value where the occupied index goes
      function(c) c:call("SET", "wt:i:occupied", "not a sorted set") end,
      function(c) c:call("DEL", "wt:i:occupied") end },
    { "a counter that is no integer", "nan:", "integer",
      function(c) c:call("HSET", "nan:c", "occupied", "many") end,
      function(c) c:call("HSET", "nan:c", "occupied", "0") end },
    { "Redis refusing it for memory (maxmemory)", "oom:", "OOM",
      function(c)
        c:call("CONFIG", "SET", "maxmemory-policy", "noeviction")
        c:call("CONFIG", "SET", "maxmemory", "1")
      end,
      function(c) c:call("CONFIG", "SET", "maxmemory", "0") end },
  } do
    local what, prefix, says, breaks, mends = case[1], case[2], case[3], case[4], case[5]
    it("writes nothing of a plan whose script fails on " .. what .. ", the page again makes it whole", function()
      local clock = { now = T0 + 100 }
      local t, c = twin(prefix, clock), rs.client()
      assert(t:put("sensor", page(10, 0), "scan"))
      breaks(c)
      local ok, err = t:put("sensor", page(20, 1), "scan")
      mends(c)
      assert.is_nil(ok)
      assert.matches(says, tostring(err))
      -- the page again: the changes it brings, each once, in the stream too
      local got = assert(t:put("sensor", page(20, 1), "scan"))
      for i = 1, #SNS do assert.are.equal("missed", got[i].verdict) end
      assert.are.equal(10, streamed(c, prefix).occupied)
      assert.are.equal(10, assert(t:devices { occupied = true }).total)
      agrees(t)
    end)
  end

  it("writes a plan over a record gone and back to the same bytes between its MGET and its script (ABA)", function()
    local clock = { now = T0 + 100 }
    local t, other, c = twin("aba:", clock), twin("aba:", clock), rs.client()
    -- each device alone: the script writes it, as it writes device 3 back below
    for _, obj in ipairs(page(10, 0)) do assert(t:put("sensor", { obj }, "scan")) end
    local before = c:call("GET", "aba:d:419800003")
    local call, answers = t.store.c.call, {}
    t.store.c.call = function(self, cmd, ...)
      local r, e = call(self, cmd, ...)
      if cmd == "MGET" then
        -- device 3 marked gone, then brought back by the same page (the clock stands still)
        assert(other:gone { 419800003 })
        assert.are.equal("applied", assert(other:put("sensor", { page(10, 0)[3] }, "scan"))[1].verdict)
        answers.same = c:call("GET", "aba:d:419800003") == before
      end
      return r, e
    end
    local got = assert(t:put("sensor", page(20, 1), "scan"))
    t.store.c.call = call
    for i = 1, #SNS do assert.are.equal("missed", got[i].verdict) end
    assert.are.same({ occupied = 10, gone = 1, back = 1 }, streamed(c, "aba:"))
    agrees(t)
    assert.is_true(answers.same) -- the record came back byte for byte: the compare let the plan through
  end)

  it("refuses a plan when a device of the page is marked gone between its MGET and its script", function()
    local clock = { now = T0 + 100 }
    local t, other, c = twin("gone:", clock), twin("gone:", clock), rs.client()
    local tab = fleet.new { store = "table", stale_after = false, clock = function() return clock.now end }
    assert(t:put("sensor", page(10, 0), "scan"))
    assert(tab:put("sensor", page(10, 0), "scan"))
    local call = t.store.c.call
    t.store.c.call = function(self, cmd, ...)
      local r, e = call(self, cmd, ...)
      if cmd == "MGET" then assert.are.equal(1, #assert(other:gone { 419800006 })) end
      return r, e
    end
    local got = assert(t:put("sensor", page(20, 1), "scan"))
    t.store.c.call = call
    assert(tab:gone { 419800006 })
    local want = assert(tab:put("sensor", page(20, 1), "scan"))
    local function changes(results)
      local out = {}
      for i, r in ipairs(results) do
        out[i] = { r.verdict }
        for _, ev in ipairs(r.events) do out[i][#out[i] + 1] = ev.change end
      end
      return out
    end
    assert.are.same(changes(want), changes(got))
    assert.are.same({ "applied", "back" }, changes(got)[6]) -- back from gone: applied, one event (rule.lua)
    assert.are.same({ occupied = 9, gone = 1, back = 1 }, streamed(c, "gone:"))
    assert.are.same(model.counted(assert(tab:summary())), model.counted(assert(t:summary())))
    agrees(t)
  end)

  it("refuses a plan that writes nothing when one of its devices changes between its MGET and its script", function()
    local clock = { now = T0 + 100 }
    local t, other = twin("dup:", clock), twin("dup:", clock)
    assert(t:put("sensor", page(10, 0), "scan"))
    local call = t.store.c.call
    t.store.c.call = function(self, cmd, ...)
      local r, e = call(self, cmd, ...)
      if cmd == "MGET" then
        assert.are.equal("applied", (other:apply { kind = "status_changed", device = "sensor", sn = SNS[3],
          verified = true, data = { sn = SNS[3], car_detected = 1, updated_at = stamp(30) } }))
      end
      return r, e
    end
    -- the page as the twin holds it: every device a duplicate, the plan writes no record
    local got = assert(t:put("sensor", page(10, 0), "scan"))
    t.store.c.call = call
    for i = 1, #SNS do assert.are.equal(i == 3 and "older" or "duplicate", got[i].verdict) end
    local s = assert(t:summary())
    assert.are.same({ 1, 9, 1 }, { s.occupancy.occupied, s.updates.duplicate, s.updates.out_of_order })
    agrees(t)
  end)

  it("keeps one twin when a device in a page and one outside it change between its MGET and its script", function()
    local clock = { now = T0 + 100 }
    local t, other, c = twin("two:", clock), twin("two:", clock), rs.client()
    assert(t:put("sensor", page(10, 0), "scan"))
    assert(t:put("sensor", { { sn = 419800099, car_detected = 0, updated_at = stamp(10) } }, "scan"))
    local call = t.store.c.call
    t.store.c.call = function(self, cmd, ...)
      local r, e = call(self, cmd, ...)
      if cmd == "MGET" then
        for _, sn in ipairs { 419800099, 419800004 } do
          assert.are.equal("applied", (other:apply { kind = "status_changed", device = "sensor", sn = sn,
            verified = true, data = { sn = sn, car_detected = 1, updated_at = stamp(30) } }))
        end
      end
      return r, e
    end
    local got = assert(t:put("sensor", page(20, 0), "scan"))
    t.store.c.call = call
    assert.are.equal("older", got[4].verdict)
    assert.are.equal(1, assert(t:device(419800004)).state.car_detected)
    assert.are.equal(2, streamed(c, "two:").occupied)
    SNS[#SNS + 1] = 419800099
    finally(function() SNS[#SNS] = nil end)
    agrees(t)
  end)
end)

-- Three processes (three hosts) on one Redis prefix at once: overlapping
-- pages (planned by each client, written by compare-and-set), callbacks,
-- stamps older, equal and newer, each host with other groups.  After it: the summary equals a recount,
-- and each device's stream of occupied / free and up / down alternates (a
-- change emitted twice would repeat) and ends where its record is.
describe("kinot.fleet's Redis store, three hosts writing overlapping pages at once #redis #slow", function()
  it("keeps one twin: counters equal to a recount, each change streamed once", function()
    local R = require "redis_server"
    local model = require "fleet_model"
    local rs = R.start()
    local script = os.tmpname()
    finally(function()
      rs.stop()
      os.remove(script)
    end)
    local f = assert(io.open(script, "w"))
    f:write([=[
      package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
      local url, seed = arg[1], tonumber(arg[2])
      local T0 = 1796083200
      local fleet = require "kinot.fleet"
      -- each host its own groups file (as one reloaded mid-sync on one host): a device's group moves
      local groups = {}
      for i = 1, 31 do
        if (i + seed) % 3 ~= 0 then
          groups[tostring(419600000 + i)] = { zone = "Z" .. (i + seed) % 3, level = "1" }
          groups[tostring(419600100 + i)] = { zone = "Z" .. seed, level = "2" }
        end
      end
      local t = fleet.new { store = "redis", redis = url, prefix = "many:", stale_after = false, groups = groups,
                            clock = function() return T0 + 1000 end }
      local refused, eval = 0, t.store.c.eval
      t.store.c.eval = function(self, ...)
        local r, e = eval(self, ...)
        if r == '{"changed":true}' then refused = refused + 1 end
        return r, e
      end
      math.randomseed(seed)
      local rnd = math.random
      for _ = 1, 150 do
        local kind_lock = rnd(2) == 1
        local function obj(sn)
          local o = { sn = sn, car_detected = rnd(0, 1), updated_at = os.date("!%Y-%m-%dT%H:%M:%SZ", T0 + rnd(1, 40)) }
          o.locked = rnd(0, 1)
          return o
        end
        local base = 419600000 + (kind_lock and 0 or 100)
        if rnd(4) == 1 then
          local sn = base + rnd(1, 30)
          assert(t:apply { kind = "status_changed", device = kind_lock and "lock" or "sensor", sn = sn,
                           data = obj(sn), verified = true })
        else
          local page, first = {}, rnd(1, 20)
          for i = first, first + rnd(2, 10) do page[#page + 1] = obj(base + i) end
          assert(t:put(kind_lock and "lock" or "sensor", page, "scan"))
        end
      end
      print("ok " .. refused)
    ]=])
    f:close()
    local p = io.popen("for s in 1 2 3; do (cd " .. H.root .. " && LUA_CPATH='build/5.1/?.so;;' luajit " .. script ..
      " " .. rs.url .. " $s 2>&1) & done; wait")
    local out = p:read("*a")
    p:close()
    local oks, refused = 0, 0
    for n in out:gmatch("ok (%d+)\n") do
      oks, refused = oks + 1, refused + tonumber(n)
    end
    assert.are.equal(3, oks, out)
    assert.is_true(refused > 0, "no plan was refused: the hosts never overlapped") -- (a few dozen here)
    local fleet = require "kinot.fleet"
    -- a reader whose groups file names every group the hosts' do (its summary lists those), on no serial here
    local names, k = {}, 0
    for zone = 0, 3 do
      for level = 1, 2 do
        k = k + 1
        names[tostring(100 + k)] = { zone = "Z" .. zone, level = tostring(level) }
      end
    end
    local t = fleet.new { store = "redis", redis = rs.url, prefix = "many:", stale_after = false, groups = names }
    local sns = {}
    for i = 1, 31 do
      sns[#sns + 1] = 419600000 + i
      sns[#sns + 1] = 419600100 + i
    end
    local want = model.recount(t, sns)
    assert.is_not_nil(next(want.groups))
    assert.are.same(want, model.counted(assert(t:summary())))
    local c, last = rs.client(), {}
    local pairs_of = { occupied = "occ", free = "occ", up = "lock", down = "lock" }
    for _, entry in ipairs(c:call("XRANGE", "many:x", "-", "+")) do
      local ev = json.decode(entry[2][2])
      local key = pairs_of[ev.change] and (ev.sn .. pairs_of[ev.change])
      if key then
        assert.are_not.equal(last[key], ev.change, "device " .. ev.sn .. ": " .. ev.change .. " twice in a row")
        last[key] = ev.change
      end
    end
    for _, sn in ipairs(sns) do
      local d = t:device(sn)
      if d and last[sn .. "occ"] then
        assert.are.equal(d.state.car_detected == 1 and "occupied" or "free", last[sn .. "occ"], "device " .. sn)
      end
      if d and d.kind == "lock" and last[sn .. "lock"] then
        assert.are.equal(d.state.locked == 1 and "up" or "down", last[sn .. "lock"], "device " .. sn)
      end
    end
  end)
end)

-- The table store keeps a first sight's state table without a copy: what
-- the caller holds after the put (its objects, the results' events, the
-- events its on_change hook got) must not reach into the twin.
describe("kinot.fleet's table store, what a put hands back #unit", function()
  it("keeps the twin whole when the caller mutates its page, the results and the hook's events", function()
    local fleet = require "kinot.fleet"
    local hooked = {}
    local now = 1796083300
    local t = fleet.new { store = "table", stale_after = false, clock = function() return now end,
                          on_change = function(ev) hooked[#hooked + 1] = ev end }
    local page = {}
    for i = 1, 3 do page[i] = { sn = 419800000 + i, car_detected = 0, updated_at = "2026-12-01T00:00:00Z" } end
    assert(t:put("sensor", page, "scan")) -- first sight: the state tables kept as made
    now = now + 10
    for i = 1, 3 do page[i].car_detected, page[i].updated_at = 1, "2026-12-01T00:00:05Z" end
    local got = assert(t:put("sensor", page, "scan"))
    local before = { t:device(419800001), t:summary(), t:changes(0) }
    -- the caller's rows reused for another page, its results and events scribbled on
    for i = 1, 3 do
      page[i].car_detected, page[i].sn, page[i].updated_at = 0, 1, "2027-01-01T00:00:00Z"
      for _, ev in ipairs(got[i].events) do ev.change, ev.sn = "free", 2 end
    end
    for _, ev in ipairs(hooked) do ev.change, ev.group = "gone", "X" end
    local d = t:device(419800001)
    d.state.car_detected = 0
    assert.are.same(before, { t:device(419800001), t:summary(), t:changes(0) })
    -- and the next update decides against what the twin held, not the scribbles
    now = now + 10
    local again = assert(t:put("sensor", { { sn = 419800001, car_detected = 1, updated_at = "2026-12-01T00:00:05Z" } },
      "scan"))
    assert.are.equal("duplicate", again[1].verdict)
  end)
end)
