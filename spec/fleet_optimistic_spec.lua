-- kinot.fleet's shared dict decides on one read of a device before it
-- takes the device's lock (docs/fleet.md, "Shared dict"): a verdict that
-- writes nothing (older, duplicate) takes no lock at all; one that writes
-- takes it and reads again, and decides again when another wrote the
-- device meanwhile.  Attacked here in a real nginx: a device's lock held
-- by another (a worker elsewhere in its update), and a newer update
-- written between an update's first read and its lock.
local H = require "helpers"
local json = require "kinot.json"

local HTTP = [[
  lua_shared_dict fleet_opt 4m;
  init_by_lua_block {
    SN = 419900001
    local twin
    function opt_twin()
      twin = twin or require("kinot.fleet").new { store = "shared", dict = "fleet_opt", stale_after = false }
      return twin
    end
    function opt_put(a)
      local obj = { sn = SN, car_detected = tonumber(a.c), locked = tonumber(a.l), low_battery = 0, coil_fault = 0,
                    updated_at = string.format("2026-12-01T00:00:%02dZ", tonumber(a.s)) }
      local twin = opt_twin()
      local out, err = twin:put("lock", { obj }, a.source or "callback")
      return out and out[1].verdict or ("failed: " .. tostring(err))
    end
  }
]]

local SERVER = [[
  location = /hold {
    content_by_lua_block {
      -- the device's lock, held by another (a worker elsewhere in its update)
      ngx.shared.fleet_opt:set("l:" .. SN, "elsewhere:1", 30)
      ngx.say("held")
    }
  }
  location = /put {
    content_by_lua_block {
      ngx.update_time()
      local t0 = ngx.now()
      local verdict = opt_put(ngx.req.get_uri_args())
      ngx.update_time()
      ngx.say(verdict, " ", ngx.now() - t0)
    }
  }
  location = /swap {
    content_by_lua_block {
      -- the other worker's update: its lock freed, then (nothing yields in
      -- between) this update written under the lock this request takes
      ngx.shared.fleet_opt:delete("l:" .. SN)
      ngx.say(opt_put(ngx.req.get_uri_args()))
    }
  }
  location = /check {
    content_by_lua_block {
      package.path = "${root}/spec/support/?.lua;" .. package.path
      local model = require "fleet_model"
      local twin = opt_twin()
      local d = twin:device(SN)
      local changes = {}
      for _, ev in ipairs(twin:changes(nil, 1000).changes) do changes[#changes + 1] = ev.change .. "/" .. ev.source end
      table.sort(changes)
      local s = twin:summary()
      ngx.say(require("kinot.json").encode { updated_at = d.updated_at, locked = d.state.locked, occupied = d.state.car_detected,
        changes = changes, updates = s.updates, recount = model.recount(twin, { SN }),
        summary = model.counted(s) })
    }
  }
]]

local function start()
  return H.nginx { http = HTTP,
                   server = (SERVER:gsub("%${root}", H.root)) }
end

local function get(ng, path) return H.raw("GET", ng.url .. path).body end
local function check(ng) return json.decode(get(ng, "/check")) end
local check_race = check

describe("kinot.fleet's shared dict, an update's first read and its lock #nginx", function()
  it("decides an update that writes nothing with no lock: one held elsewhere neither delays nor fails it", function()
    local ng = start()
    finally(function() ng.stop() end)
    assert.matches("^added", get(ng, "/put?s=10&c=1&l=1&source=scan"))
    assert.are.equal("held\n", get(ng, "/hold"))
    -- the same state at the same stamp, and an older stamp: at once, not
    -- after the 5 s a lock is waited for (a timeout then)
    local verdict, took = get(ng, "/put?s=10&c=1&l=1&source=scan"):match("^(%S+) (%S+)")
    assert.are.equal("duplicate", verdict)
    assert.is_true(tonumber(took) < 0.5, took)
    verdict, took = get(ng, "/put?s=5&c=0&l=0"):match("^(%S+) (%S+)")
    assert.are.equal("older", verdict)
    assert.is_true(tonumber(took) < 0.5, took)
    -- a newer one waits for the lock (and times out: nobody frees it)
    assert.matches("^failed: .*stayed locked", get(ng, "/put?s=20&c=0&l=1"))
    local doc = check(ng)
    assert.are.equal("2026-12-01T00:00:10Z", doc.updated_at)
    assert.are.equal(1, doc.updates.duplicate)
    assert.are.equal(1, doc.updates.out_of_order)
    assert.are.same(doc.recount, doc.summary)
  end)

  it("decides again under the lock when a newer update was written after its first read: never backward", function()
    local ng = start()
    finally(function() ng.stop() end)
    assert.matches("^added", get(ng, "/put?s=1&c=0&l=1&source=scan"))
    assert.are.equal("held\n", get(ng, "/hold"))
    -- U1 (second 10, occupied): read the device (second 1), decided applied,
    -- now waits for the lock ...
    local waiting = io.popen("curl -s '" .. ng.url .. "/put?s=10&c=1&l=1'")
    os.execute("sleep 0.3")
    -- ... while U2 (second 20, occupied, lock down) is written
    assert.are.equal("applied\n", get(ng, "/swap?s=20&c=1&l=0"))
    local u1 = waiting:read("*a")
    waiting:close()
    -- U1's decision, made on the device it first read, would put second 10
    -- over second 20: made again on what the lock found, it is older
    assert.matches("^older", u1)
    local doc = check(ng)
    assert.are.equal("2026-12-01T00:00:20Z", doc.updated_at)
    assert.are.equal(0, doc.locked)
    assert.are.equal(1, doc.occupied)
    -- U2's changes, once each; none of U1's
    assert.are.same({ "down/callback", "occupied/callback" }, doc.changes)
    assert.are.same({ added = 1, applied = 1, missed = 0, out_of_order = 1, duplicate = 0 }, doc.updates)
    assert.are.same(doc.recount, doc.summary)
  end)
end)

-- two workers: resyncs (every device the same state at the same stamp, a
-- duplicate, or older once a callback came) racing callbacks with newer
-- stamps on the same devices
local RACE_HTTP = [[
  lua_shared_dict fleet_race 8m;
  init_by_lua_block {
    SNS = {}
    for i = 1, 20 do SNS[i] = 419910000 + i end
    T0 = 1796083200
    local twin
    function race_twin()
      twin = twin or require("kinot.fleet").new { store = "shared", dict = "fleet_race", stale_after = false }
      return twin
    end
    function race_obj(sn, s, c)
      return { sn = sn, car_detected = c, locked = 1, low_battery = 0, coil_fault = 0,
               updated_at = os.date("!%Y-%m-%dT%H:%M:%SZ", T0 + s) }
    end
  }
]]

local RACE_SERVER = [[
  location = /scan {
    content_by_lua_block {
      local twin = race_twin()
      for _ = 1, 40 do
        local page = {}
        for i, sn in ipairs(SNS) do page[i] = race_obj(sn, 0, 0) end
        local out, err = twin:put("lock", page, "scan")
        if not out then return ngx.say("failed: ", tostring(err)) end
        ngx.sleep(0.001)
      end
      ngx.say("ok")
    }
  }
  location = /cb {
    content_by_lua_block {
      local twin = race_twin()
      math.randomseed(tonumber(ngx.var.arg_seed))
      local sent = {}
      for _ = 1, 60 do
        local sn = SNS[math.random(#SNS)]
        local s = ngx.shared.fleet_race:incr("race_stamp", 1, 0) -- unique, rising
        local obj = race_obj(sn, s, s % 2)
        local v, err = twin:apply { kind = "status_changed", device = "lock", sn = sn, data = obj, verified = true }
        if not v then return ngx.say("failed: ", tostring(err)) end
        sent[#sent + 1] = sn .. ":" .. s
        if s % 3 == 0 then ngx.sleep(0.001) end
      end
      ngx.say("ok ", table.concat(sent, " "))
    }
  }
  location = /check {
    content_by_lua_block {
      package.path = "${root}/spec/support/?.lua;" .. package.path
      local model = require "fleet_model"
      local twin = race_twin()
      local devices, events = {}, {}
      for _, sn in ipairs(SNS) do
        local d = twin:device(sn)
        devices[tostring(sn)] = { updated_at = d.updated_at, occupied = d.state.car_detected }
      end
      local since
      repeat
        local page = twin:changes(since, 1000)
        for _, ev in ipairs(page.changes) do events[#events + 1] = { sn = ev.sn, change = ev.change } end
        local more = page.next ~= since and #page.changes > 0
        since = page.next
      until not more
      local s = twin:summary()
      ngx.say(require("kinot.json").encode { devices = devices, events = events, updates = s.updates,
        recount = model.recount(twin, SNS), summary = model.counted(s) })
    }
  }
]]

describe("kinot.fleet's shared dict, resyncs racing callbacks in two workers #nginx", function()
  it("keeps every device at its newest stamp, each change once, the summary equal to a recount", function()
    -- (every round is checked whole; one whose timing made no resync older
    -- than a callback, or no duplicate, exercised less: then another, on
    -- a fresh nginx, 3 at most)
    local ng
    finally(function() if ng then ng.stop() end end)
    local exercised
    for _ = 1, 3 do
      if ng then ng.stop() ng = nil end
      ng = H.nginx { http = RACE_HTTP, server = (RACE_SERVER:gsub("%${root}", H.root)), workers = 2 }
      assert.are.equal("ok\n", get(ng, "/scan"))
      local urls = {}
      for _ = 1, 6 do urls[#urls + 1] = ng.url .. "/scan" end
      for i = 1, 12 do urls[#urls + 1] = ng.url .. "/cb?seed=" .. i end
      local list = os.tmpname()
      local f = assert(io.open(list, "w"))
      f:write(table.concat(urls, "\n"), "\n")
      f:close()
      local p = io.popen("xargs -P 9 -n 1 curl -s < " .. list)
      local out = p:read("*a")
      p:close()
      os.remove(list)
      local newest, calls = {}, 0
      for line in out:gmatch("[^\n]+") do
        assert.matches("^ok", line, line .. ng.log())
        for sn, s in line:gmatch("(%d+):(%d+)") do
          calls = calls + 1
          s = tonumber(s)
          if s > (newest[sn] or 0) then newest[sn] = s end
        end
      end
      assert.are.equal(12 * 60, calls)
      local doc = check_race(ng)
      local T0 = 1796083200
      for sn, d in pairs(doc.devices) do
        local s = newest[sn] or 0
        assert.are.equal(os.date("!%Y-%m-%dT%H:%M:%SZ", T0 + s), d.updated_at, sn)
        assert.are.equal(s % 2, d.occupied, sn)
      end
      -- each device's occupied / free alternate (an event twice: emitted twice),
      -- starting from free (its first state) and ending at its state now
      local last = {}
      for _, ev in ipairs(doc.events) do
        local sn = tostring(math.floor(ev.sn))
        assert.is_true(ev.change == "occupied" or ev.change == "free", ev.change)
        assert.are_not.equal(last[sn] or "free", ev.change, sn)
        last[sn] = ev.change
      end
      for sn, d in pairs(doc.devices) do
        assert.are.equal(d.occupied == 1 and "occupied" or "free", last[sn] or "free", sn)
      end
      local u = doc.updates
      assert.are.equal(20, u.added)
      -- every update counted once: 7 resyncs of 40 pages of 20, 720 callbacks
      assert.are.equal(7 * 40 * 20 + 12 * 60, u.added + u.applied + u.missed + u.out_of_order + u.duplicate)
      assert.are.equal(0, u.missed) -- (a resync's stamp is never newer)
      assert.are.same(doc.recount, doc.summary)
      exercised = u.duplicate > 0 and u.out_of_order > 0 and u.applied > 0
      if exercised then break end
    end
    assert.is_true(exercised, "3 rounds without a duplicate, an out-of-order resync and an applied update each")
  end)
end)
