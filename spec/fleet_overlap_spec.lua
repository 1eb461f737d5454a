-- twin:sync inside nginx (kinot serve's case): the paging runs in a light
-- thread while the store writes, and that overlap must lose nothing and
-- stop cleanly: every device counted once, a platform failing mid-scan or
-- a store failing mid-sync end the sync with an error (nothing marked
-- gone, no thread left paging).  Real nginx, the real simulator, a real
-- redis-server.
local H = require "helpers"
local R = require "redis_server"
local json = require "kinot.json"
local launcher = require "kinot.sim.launcher"

describe("kinot.fleet's sync inside nginx, paging beside the store #nginx #sim #redis", function()
  local sim, ng, rs
  setup(function()
    sim = H.sim { locks = 5000, sensors = 500, dtus = 2 }
    rs = R.start()
    ng = H.nginx {
      http = "lua_shared_dict kinot_fleet 64m;\n init_by_lua_block { SIM = { key = '" .. sim.app_key ..
             "', secret = '" .. sim.app_secret .. "', endpoint = '" .. sim.endpoint .. "' } }",
      server = [[
        location = /sync { content_by_lua_block {
          local a = ngx.req.get_uri_args()
          local fleet = require "kinot.fleet"
          local redis = a.redis and a.rto and require("kinot.redis").new(a.redis, { timeout = tonumber(a.rto) }) or a.redis
          local twin = fleet.new { store = a.redis and "redis" or "shared", redis = redis, prefix = a.prefix }
          if a.raise then -- a store that raises (a bug) on its 5th batch, while others are out
            local apply, n = twin.store.apply, 0
            twin.store.apply = function(...)
              n = n + 1
              if n == 5 then error("store raised on batch 5") end
              return apply(...)
            end
          end
          local client = require("kinot").new { app_key = SIM.key, app_secret = SIM.secret, endpoint = SIM.endpoint,
                                                retries = tonumber(a.retries or 2), paging = "page0" }
          local report, err = twin:sync(client, { concurrency = 4, dtus = { 644200001 } })
          local s = twin:summary()
          ngx.say(require("kinot.json").encode {
            report = report or (type(err) == "table" and err.report) or {}, error = err and tostring(err) or nil,
            occupied = s and s.occupancy.occupied, locks = s and s.devices.locks, sensors = s and s.devices.sensors,
            gone = s and s.devices.gone,
          })
        } }
      ]],
    }
  end)
  teardown(function()
    if ng then ng.stop() end
    if rs then rs.stop() end
    if sim then sim.stop() end
  end)

  local function sync(query)
    local res = H.raw("GET", ng.url .. "/sync?" .. (query or ""))
    assert.are.equal(200, res.status, ng.log())
    return json.decode(res.body)
  end

  local function scan_occupied()
    local c, n = sim.client(), 0
    for _, each in ipairs { c.each_locker, c.each_sensor } do
      for d in each(c, { limit = 100, concurrency = 4 }) do n = n + d.car_detected end
    end
    return n
  end

  for _, store in ipairs { "shared", "redis" } do
    it("counts every device once and agrees with a full scan (" .. store .. ")", function()
      sim.reset()
      local q = store == "redis" and ("redis=" .. rs.url .. "&prefix=ok:") or ""
      local got = sync(q)
      assert.is_nil(got.error)
      assert.are.equal(5000, got.report.locks)
      assert.are.equal(500, got.report.sensors)
      assert.are.equal(5501, got.report.added)
      assert.are.same({ 5000, 500, 0 }, { got.locks, got.sensors, got.gone })
      assert.are.equal(scan_occupied(), got.occupied)
      got = sync(q)
      assert.are.equal(5501, got.report.duplicate, json.encode(got))
      assert.are.same({ 0, 0, 0 }, { got.report.missed, got.report.added, got.report.gone })
    end)
  end

  -- a device the twin cannot order is left out; the batches around it, paged beside the store, are applied
  for _, store in ipairs { "shared", "redis" } do
    it("leaves out the devices it cannot order, applies the rest, marks none gone (" .. store .. ")", function()
      sim.reset()
      finally(function() sim.reset() end)
      local q = store == "redis" and ("redis=" .. rs.url .. "&prefix=odd:") or ""
      assert.is_nil(sync(q).error)
      sim.call("POST", "/devices/419602500", { updated_at = json.null })
      sim.call("POST", "/devices/419800400", { updated_at = "not a time" })
      sim.call("POST", "/devices/644200001", { updated_at = json.null })
      local got = sync(q)
      assert.is_nil(got.error, got.error)
      table.sort(got.report.unordered_sns)
      assert.are.same({ 419602500, 419800400, 644200001 }, got.report.unordered_sns)
      assert.are.same({ 3, 0, 5498 }, { got.report.unordered, got.report.gone, got.report.duplicate })
      assert.are.same({ 5000, 500, 0 }, { got.locks, got.sensors, got.gone })
    end)
  end

  it("ends with an error, marks nothing gone, when pages fail mid-scan", function()
    sim.reset()
    local q = "redis=" .. rs.url .. "&prefix=pf:"
    assert.is_nil(sync(q).error)
    sim.fault { kind = "status", status = 500, share = 0.3, endpoint = "GET /lockers" }
    local got = sync(q .. "&retries=0")
    sim.call("DELETE", "/faults")
    assert.is_string(got.error)
    assert.are.equal(0, got.report.gone)
    assert.are.same({ 5000, 0 }, { got.locks, got.gone })
    got = sync(q)
    assert.is_nil(got.error)
    assert.are.same({ 5000, 0, 0 }, { got.locks, got.gone, got.report.missed })
  end)

  -- Redis stops answering (SIGSTOP) while pages are out and batches wait to
  -- be written: the sync ends with Redis's error, marks nothing gone; the
  -- next, Redis back, is whole and exact (a batch the stalled Redis wrote
  -- late, or not at all, changes nothing: each write is all or nothing)
  it("ends with an error, marks nothing gone, when Redis stalls mid-sync; the next sync is exact", function()
    sim.reset()
    local q = "redis=" .. rs.url .. "&prefix=stall:&rto=0.5"
    assert.is_nil(sync(q).error)
    sim.fault { kind = "latency", latency = 0.05, share = 1 }
    finally(function()
      os.execute("kill -CONT " .. rs.pid() .. " 2>/dev/null")
      sim.call("DELETE", "/faults")
    end)
    -- 55 pages at 50 ms, 4 at a time: ~0.7 s; Redis stopped 0.3 s in, for 1.5 s
    os.execute("(sleep 0.3; kill -STOP " .. rs.pid() .. "; sleep 1.5; kill -CONT " .. rs.pid() .. ") &")
    local got = sync(q)
    assert.is_string(got.error)
    assert.matches("[Rr]edis", got.error)
    assert.matches("timeout", got.error)
    assert.are.equal(0, got.report.gone)
    assert.is_true(got.report.locks < 5000, json.encode(got.report))
    sim.call("DELETE", "/faults")
    local deadline = os.time() + 10
    repeat got = sync(q) until not got.error or os.time() > deadline
    assert.is_nil(got.error)
    assert.are.same({ 5000, 500, 0, 0 }, { got.locks, got.sensors, got.gone, got.report.gone })
    assert.are.equal(scan_occupied(), got.occupied)
  end)

  -- an error raised in one of the appliers (a bug), the other's batch out:
  -- the sync fails with it (no batch silently lost), marks nothing gone
  for _, store in ipairs { "shared", "redis" } do
    it("fails with the error a store raises mid-sync, marks nothing gone (" .. store .. ")", function()
      sim.reset()
      local q = (store == "redis" and ("redis=" .. rs.url .. "&prefix=raise:") or "") .. "&raise=1"
      local got = sync(q)
      assert.is_string(got.error)
      assert.matches("store raised on batch 5", got.error)
      assert.are.equal(0, got.report.gone)
      assert.is_true(got.report.locks < 5000, json.encode(got.report))
      got = sync(q:gsub("&raise=1", ""))
      assert.is_nil(got.error)
      assert.are.same({ 5000, 500, 0 }, { got.locks, got.sensors, got.gone })
      assert.are.equal(scan_occupied(), got.occupied)
    end)
  end

  it("stops paging when the store fails, and says why", function()
    sim.reset()
    local function lockers_pages()
      local e = sim.counters().endpoints
      return type(e) == "table" and e["GET /lockers"] or 0
    end
    local before = lockers_pages()
    local dead = "redis://127.0.0.1:" .. launcher.free_port() .. "/0"
    local got = sync("redis=" .. dead)
    assert.matches("redis", got.error)
    local pages = lockers_pages() - before
    -- 50 pages of locks in all: at most the first, the 8 batches waiting and a round of 4 in flight
    assert.is_true(pages < 20, pages .. " pages fetched after the store failed")
  end)
end)
