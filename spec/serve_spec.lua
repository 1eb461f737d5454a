-- `kinot serve` as a user runs it (bin/kinot, --daemon, `kinot serve
-- stop`) against `kinot sim` (1,000 locks, 500 sensors): the first sync
-- against a full scan's count, drift reaching the twin through real
-- callbacks within 2 s, 30 changes made while the receiver is stopped found
-- by the next start's sync (missed 30), and two servers on one real
-- redis-server answering the same summary.
local H = require "helpers"
local R = require "redis_server"
local launcher = require "kinot.sim.launcher"
local core = require "kinot.core"

local LUA = rawget(_G, "jit") and "luajit" or "lua5.4"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  return out, tonumber(out:match("rc=(%d+)%s*$"))
end

describe("kinot serve against the simulator #cli #sim #nginx #redis", function()
  local sim, rs
  setup(function()
    sim = H.sim { locks = 1000, sensors = 500, dtus = 5 }
    rs = R.start()
  end)
  teardown(function()
    if sim then sim.stop() end
    if rs then rs.stop() end
  end)

  local function env()
    return string.format("KINOT_ENDPOINT=%s KINOT_APP_KEY=%s KINOT_APP_SECRET=%s", sim.endpoint, sim.app_key,
      sim.app_secret)
  end

  -- serve(extra) -> { url, port, stop() }: a `kinot serve --daemon`
  local function serve(extra)
    local port = launcher.free_port()
    local pid_file = os.tmpname()
    local out, rc = sh(string.format("cd %s && %s %s bin/kinot serve --daemon --pid-file %s --listen 127.0.0.1:%d " ..
      "--dtus 644200001,644200002 %s", H.root, env(), LUA, pid_file, port, extra or ""))
    assert.are.equal(0, rc, out)
    local s = { url = "http://127.0.0.1:" .. port, port = port, out = out }
    function s.stop()
      sh(string.format("cd %s && %s bin/kinot serve stop --pid-file %s", H.root, LUA, pid_file))
      os.remove(pid_file)
    end
    function s.fleet() return (H.json("GET", s.url .. "/api/fleet")) end
    function s.synced(after)
      return H.wait_for(function()
        local doc = s.fleet()
        return type(doc.synced_at) == "string" and (not after or doc.synced_at > after)
          and doc
      end, 10)
    end
    return s
  end

  local function scan_count()
    local client = sim.client()
    local occupied = 0
    for _, each in ipairs { client.each_locker, client.each_sensor } do
      for d in each(client, { limit = 100, concurrency = 4 }) do occupied = occupied + d.car_detected end
    end
    return occupied
  end

  local function point_callbacks_at(url)
    local client = sim.client()
    for _, kind in ipairs { "lock", "sensor" } do
      assert(client:set_notifications { device_type = kind, status_changed_callback_url = url })
    end
  end

  it("prints where it listens, syncs at start to a full scan's count, and follows drift within 2 s", function()
    sim.reset()
    local s = serve("--sync-interval 300")
    finally(function() s.stop() end)
    assert.matches("http://127.0.0.1:" .. s.port .. "/kinot/callback", s.out, 1, true)
    local doc = s.synced()
    assert.is_table(doc, "no sync reported in /api/fleet")
    assert.are.equal(scan_count(), doc.occupancy.occupied)
    assert.are.same({ locks = 1000, sensors = 500, dtus = 2, gone = 0 }, doc.devices)

    point_callbacks_at(s.url .. "/kinot/callback")
    local drift = sim.call("POST", "/drift", { count = 50 })
    local flips = {}
    for _, sn in ipairs(drift.changed) do flips[sn] = (flips[sn] or 0) + 1 end
    local client = sim.client()
    local t0 = core.monotonic()
    local agreed = H.wait_for(function()
      for sn in pairs(flips) do
        local d = H.json("GET", s.url .. "/api/devices/" .. sn)
        local kind = sn < 419800000 and "locker" or "sensor"
        if d.state.car_detected ~= assert(client[kind](client, sn)).car_detected then return false end
      end
      return true
    end, 2)
    assert.is_true(agreed, "drift did not reach the twin within 2 s")
    assert.is_true(core.monotonic() - t0 <= 2.5)
    assert.are.equal(scan_count(), s.fleet().occupancy.occupied)
    assert.are.equal(0, s.fleet().missed)

    -- kinot fleet asks it: the same figures, as tables or as the API's JSON
    local kf = string.format("cd %s && %s bin/kinot %%s fleet %%s --url %s", H.root, LUA, s.url)
    local out, rc = sh(kf:format("--json", "summary"))
    assert.are.equal(0, rc, out)
    local answer = require("kinot.json").decode((out:gsub("rc=%d+%s*$", "")))
    assert.are.equal(s.fleet().occupancy.occupied, answer.occupancy.occupied)
    out, rc = sh(kf:format("", "summary"))
    assert.are.equal(0, rc, out)
    assert.matches("occupied:%s+" .. answer.occupancy.occupied .. " of 1500 spaces", out)
    out, rc = sh(kf:format("", "devices --occupied false --kind sensor --limit 3"))
    assert.are.equal(0, rc, out)
    assert.matches("SN%s+KIND%s+GROUP%s+SPACE", out)
    assert.matches("1%-3 of %d+", out)
    assert.is_nil(out:find("occupied", 1, true))
    local sn = next(flips)
    out, rc = sh(kf:format("", "device " .. sn))
    assert.are.equal(0, rc, out)
    assert.matches("source:%s+callback", out)
    out, rc = sh(kf:format("", "changes --limit 5"))
    assert.are.equal(0, rc, out)
    assert.matches("callback", out)
    out, rc = sh(kf:format("", "device 419699999"))
    assert.are.equal(3, rc, out)
    assert.matches("never seen", out)
  end)

  it("finds by its next sync the 30 changes made while the receiver was stopped (Redis), and two hosts agree",
    function()
      sim.reset()
      local redis = "--redis " .. rs.url .. " --sync-interval 300"
      local a = serve(redis)
      local stopped = false
      finally(function() if not stopped then a.stop() end end)
      assert.is_table(a.synced(), "no first sync")
      point_callbacks_at(a.url .. "/kinot/callback")
      a.stop()
      stopped = true
      -- the receiver is down: the simulator's deliveries fail (it tries each 3 times)
      local drift = sim.call("POST", "/drift", { count = 30 })
      local unique = {}
      local n = 0
      for _, sn in ipairs(drift.changed) do
        if not unique[sn] then n = n + 1 end
        unique[sn] = true
      end
      H.wait_for(function()
        local c = sim.counters().callbacks
        return c.failed >= 30
      end, 5)
      local b = serve(redis)
      local c = serve(redis)
      finally(function()
        b.stop()
        c.stop()
      end)
      local doc = H.wait_for(function()
        local d = b.fleet()
        return d.missed >= n and d
      end, 10)
      assert.is_table(doc, "the sync did not find the missed changes")
      assert.are.equal(n, doc.missed)
      assert.are.equal(scan_count(), doc.occupancy.occupied)
      -- their changes are in the stream, from the scan
      local feed = H.json("GET", b.url .. "/api/changes?limit=1000")
      local from_scan = {}
      for _, ev in ipairs(feed.changes) do
        if ev.source == "scan" and (ev.change == "occupied" or ev.change == "free") then from_scan[ev.sn] = true end
      end
      for sn in pairs(unique) do
        local odd = 0
        for _, x in ipairs(drift.changed) do if x == sn then odd = odd + 1 end end
        if odd % 2 == 1 then assert.is_true(from_scan[sn], "no change from the scan for " .. sn) end
      end
      -- two hosts, one Redis: one summary (once both have synced: three syncs in
      -- all, a's, b's and c's, each of the 1,502 devices it read counted once)
      local same = H.wait_for(function()
        local x = b.fleet()
        local u = x.updates
        return u.added + u.applied + u.missed + u.duplicate + u.out_of_order == 3 * 1502
          and require("luassert.util").deepcompare(x, c.fleet(), true)
      end, 10)
      assert.is_true(same, "the two hosts answer differently")
      assert.are.same(b.fleet(), c.fleet())
    end)

  it("refuses a busy port and missing credentials with a usage error", function()
    local ng = H.nginx { server = "location / { return 200; }" }
    finally(function() ng.stop() end)
    local out, rc = sh(string.format("cd %s && %s %s bin/kinot serve --listen 127.0.0.1:%d", H.root, env(), LUA,
      ng.port))
    assert.are.equal(2, rc, out)
    assert.matches("already in use", out)
    out, rc = sh(string.format("cd %s && env -u KINOT_APP_KEY -u KINOT_APP_SECRET -u KINOT_ENDPOINT %s bin/kinot " ..
      "serve --daemon", H.root, LUA))
    assert.are.equal(2, rc, out)
    assert.matches("KINOT_APP_KEY", out)
  end)
end)
