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
