-- GET /metrics of `kinot serve` against `kinot sim`, as an operator's
-- Prometheus sees it: `promtool check metrics` on the real output, a real
-- `prometheus` server scraping it and answering kinot_spaces_occupied as
-- the twin counts it, the callback counters after known deliveries, and
-- the counts exact under wrk at two workers.
local H = require "helpers"
local launcher = require "kinot.sim.launcher"

local sh, write, samples, iso8 = H.sh, H.write, H.samples, H.iso8
local function tmpdir() return H.tmpdir("metrics") end

describe("GET /metrics of kinot serve #cli #sim #nginx", function()
  local sim, dir, s
  setup(function()
    sim = H.sim { locks = 300, sensors = 200, dtus = 3 }
    dir = tmpdir()
    -- the groups: two zones, one with a name Prometheus must see escaped
    local client = sim.client()
    local rows = { "sn,zone,level" }
    local n = 0
    for d in client:each_locker { limit = 100 } do
      n = n + 1
      rows[#rows + 1] = string.format('%d,%s,1', d.sn, n % 2 == 0 and "A" or '"Q""\\z"')
    end
    write(dir .. "/groups.csv", table.concat(rows, "\n") .. "\n")
    s = H.serve(sim, { token = "tok-1", env = "KINOT_REDIS_URL=", pid_file = dir .. "/serve.pid", sync_within = 20,
      args = "--dtus 644200001,644200002 --sync-interval 300 --workers 2 --groups " .. dir .. "/groups.csv" })
    for _, kind in ipairs { "lock", "sensor" } do
      assert(client:set_notifications { device_type = kind, status_changed_callback_url = s.url .. "/kinot/callback" })
    end
  end)
  teardown(function()
    if s then s.stop() end
    if sim then sim.stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  local function scrape()
    local res = H.raw("GET", s.url .. "/metrics")
    assert.are.equal(200, res.status, res.body)
    return res.body, res
  end

  -- every counter has flushed (each worker every second) once this many seconds passed
  local FLUSHED = 1.3

  it("lints clean with promtool check metrics, after drift through real callbacks, and holds every metric", function()
    local drift = sim.call("POST", "/drift", { count = 20 })
    assert.is_table(drift.changed)
    -- every change a callback: all of them in (and flushed) before the next spec counts its own
    assert(H.wait_for(function()
      local c = samples(scrape())['kinot_callbacks_received_total{kind="status_changed"}'] or 0
      return c >= #drift.changed
    end, 10), "the drift's callbacks were not all counted")
    H.wait_for(function() return false end, FLUSHED)
    local text, res = scrape()
    assert.matches("text/plain; version=0.0.4", res.headers["content-type"] or res.headers["Content-Type"], 1, true)
    write(dir .. "/metrics.txt", text)
    local out, rc = sh("promtool check metrics < " .. dir .. "/metrics.txt")
    assert.are.equal(0, rc, out)
    assert.are.equal("", out)
    local v = samples(text)
    local fleet = H.json("GET", s.url .. "/api/fleet")
    assert.are.equal(fleet.occupancy.occupied, v.kinot_spaces_occupied)
    assert.are.equal(fleet.occupancy.free, v.kinot_spaces_free)
    assert.are.equal(300, v['kinot_devices{kind="lock"}'])
    assert.are.equal(200, v['kinot_devices{kind="sensor"}'])
    assert.are.equal(2, v['kinot_devices{kind="dtu"}'])
    -- by group, the hostile name escaped; the groups sum to the whole
    local qa = v['kinot_group_spaces_occupied{group="Q\\"\\\\z/1"}']
    local a = v['kinot_group_spaces_occupied{group="A/1"}']
    assert.is_number(qa, text:match("kinot_group_spaces_occupied[^\n]*\n[^\n]*\n[^\n]*"))
    assert.are.equal(fleet.occupancy.groups["A/1"].occupied, a)
    for _, name in ipairs { "kinot_devices_faulty", "kinot_devices_low_battery", "kinot_devices_weak_signal",
                            "kinot_dtus_offline", "kinot_devices_stale", "kinot_fleet_store_up" } do
      assert.is_number(v[name], name)
    end
    -- the drift's callbacks, counted as received (20 changes, each a callback)
    assert.is_true(v['kinot_callbacks_received_total{kind="status_changed"}'] >= #drift.changed, text)
    assert.is_true(v['kinot_callback_handler_delay_seconds_count'] >= 1)
    assert.are.equal(1, v['kinot_syncs_total{result="ok"}'])
    assert.are.equal(1, v.kinot_sync_duration_seconds_count)
    assert.is_true(v['kinot_api_requests_total{endpoint="/lockers",status_class="2xx"}'] >= 3)
    assert.is_true(v['kinot_api_requests_total{endpoint="/dtu_devices/{sn}",status_class="2xx"}'] >= 2)
    assert.is_nil(text:find("644200001", 1, true), "a serial in a label")
    for _, name in ipairs { "kinot_callbacks_refused_total", "kinot_callbacks_duplicate_total",
                            "kinot_callback_handler_failures_total", "kinot_api_retries_total",
                            "kinot_api_unknown_outcomes_total", "kinot_api_request_duration_seconds",
                            "kinot_sync_missed_total", "kinot_device_faults", "kinot_fleet_updates_total" } do
      assert.matches("# TYPE " .. name .. " ", text, 1, true)
    end
  end)

  it("counts a refused callback by reason, a duplicate, and an accepted one, exactly", function()
    H.wait_for(function() return false end, FLUSHED)
    local before = samples(scrape())
    local function n(v, k) return v[k] or 0 end
    local lock = sim.client():lockers { limit = 10 }.objects[1]
    local body = '{"sn":' .. lock.sn .. ',"locked":1,"car_detected":0,"updated_at":"' .. iso8(os.time()) .. '"}'
    local good = H.signed(body, sim.app_secret)
    local forged = H.signed(body, "not-the-secret")
    assert.are.equal(200, H.raw("POST", s.url .. "/kinot/callback", good).status)
    assert.are.equal(200, H.raw("POST", s.url .. "/kinot/callback", good).status) -- the duplicate
    assert.are.equal(401, H.raw("POST", s.url .. "/kinot/callback", forged).status)
    assert.are.equal(401, H.raw("POST", s.url .. "/kinot/callback", forged).status)
    assert.are.equal(400, H.raw("POST", s.url .. "/kinot/callback", "{not json").status)
    H.wait_for(function() return false end, FLUSHED)
    local after = samples(scrape())
    local function moved(k) return n(after, k) - n(before, k) end
    assert.are.equal(1, moved('kinot_callbacks_received_total{kind="status_changed"}'))
    assert.are.equal(1, moved("kinot_callbacks_duplicate_total"))
    assert.are.equal(2, moved('kinot_callbacks_refused_total{reason="bad_sign"}'))
    assert.are.equal(1, moved('kinot_callbacks_refused_total{reason="not_json"}'))
    assert.are.equal(0, moved("kinot_callback_handler_failures_total"))
  end)

  it("is scraped by a real prometheus, whose kinot_spaces_occupied equals the twin's count", function()
    local pdir = tmpdir()
    local pport = launcher.free_port()
    write(pdir .. "/prometheus.yml", string.format([[
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: kinot
    static_configs:
      - targets: ["127.0.0.1:%d"]
]], s.port))
    local p = io.popen(string.format("prometheus --config.file=%s/prometheus.yml --storage.tsdb.path=%s/data " ..
      "--web.listen-address=127.0.0.1:%d >%s/prometheus.log 2>&1 & echo $!", pdir, pdir, pport, pdir))
    local pid = tonumber(p:read("*l"))
    p:close()
    finally(function()
      os.execute("kill " .. pid .. " 2>/dev/null")
      H.wait_for(function() return not launcher.alive(pid) end, 10)
      os.execute("rm -rf " .. pdir)
    end)
    local want = H.json("GET", s.url .. "/api/fleet").occupancy.occupied
    local got, up
    local ok = H.wait_for(function()
      local okq, doc = pcall(H.json, "GET", "http://127.0.0.1:" .. pport ..
        "/api/v1/query?query=kinot_spaces_occupied")
      if not okq or type(doc) ~= "table" or doc.status ~= "success" then return false end
      local r = doc.data.result[1]
      got = r and tonumber(r.value[2])
      if r then up = r.metric end
      return got == want
    end, 30)
    assert.is_true(ok, "prometheus answered " .. tostring(got) .. ", the twin " .. want .. "; log: " ..
      tostring(H.read(pdir .. "/prometheus.log")):sub(-2000))
    assert.are.equal("kinot", up.job)
    -- and it saw the scrape healthy
    local doc = H.json("GET", "http://127.0.0.1:" .. pport .. "/api/v1/query?query=up")
    assert.are.equal("1", doc.data.result[1].value[2])
  end)

  it("counts exactly under wrk: two workers, 4,000 deliveries, every one counted once", function()
    H.wait_for(function() return false end, FLUSHED)
    local before = samples(scrape())
    local sensor = sim.client():sensors { limit = 10 }.objects[1]
    local body = '{"sn":' .. sensor.sn .. ',"car_detected":1,"updated_at":"' .. iso8(os.time() + 1) .. '"}'
    local good = H.signed(body, sim.app_secret)
    local forged = H.signed(body, "forged")
    -- one connection a thread: a thread stopped after its 2,000th answer
    -- leaves no request in flight; it alternates a forged and a good body
    local script = dir .. "/wrk.lua"
    write(script, string.format([[
local bodies = { %q, %q }
local sent, answered = 0, 0
request = function()
  sent = sent + 1
  return wrk.format("POST", "/kinot/callback", { ["Content-Type"] = "application/json" }, bodies[sent %% 2 + 1])
end
response = function()
  answered = answered + 1
  if answered == 2000 then wrk.thread:stop() end
end
]], forged, good))
    -- (wrk's event loop takes file descriptors up to 10 + 3 a connection:
    -- those busted holds open are closed first)
    local out, rc = sh(string.format("python3 -c 'import os, sys; os.closerange(3, 4096); os.execvp(\"wrk\", " ..
      "sys.argv[1:])' wrk -t 2 -c 2 -d 8s -s %s %s/kinot/callback", script, s.url))
    assert.are.equal(0, rc, out)
    assert.matches("4000 requests in", out, 1, true)
    H.wait_for(function() return false end, FLUSHED)
    local after = samples(scrape())
    local function moved(k) return (after[k] or 0) - (before[k] or 0) end
    assert.are.equal(2000, moved('kinot_callbacks_refused_total{reason="bad_sign"}'))
    -- the good body: handled once, then duplicates (or "busy" while the first was being handled)
    assert.are.equal(1, moved('kinot_callbacks_received_total{kind="status_changed"}'))
    assert.are.equal(2000, moved('kinot_callbacks_received_total{kind="status_changed"}') +
      moved("kinot_callbacks_duplicate_total") + moved('kinot_callbacks_refused_total{reason="busy"}'))
  end)
end)

describe("GET /metrics of kinot serve over a twin in Redis #cli #sim #nginx #redis", function()
  local R = require "redis_server"
  it("reads the summary from Redis at each scrape; a Redis gone shows as kinot_fleet_store_up 0, never a failed scrape",
    function()
      local sim = H.sim { locks = 60, sensors = 40, dtus = 0 }
      local rs = R.start()
      local dir = tmpdir()
      local stopped, srv = false, nil
      finally(function()
        if srv then srv.stop() end
        if not stopped then rs.stop() end
        sim.stop()
        os.execute("rm -rf " .. dir)
      end)
      srv = H.serve(sim, { pid_file = dir .. "/serve.pid", sync_within = 20, args = "--sync-interval 300 --redis " .. rs.url })
      local url = srv.url
      local fleet = H.json("GET", url .. "/api/fleet")
      local res = H.raw("GET", url .. "/metrics")
      assert.are.equal(200, res.status)
      write(dir .. "/m.txt", res.body)
      local lint, lrc = sh("promtool check metrics < " .. dir .. "/m.txt")
      assert.are.equal(0, lrc, lint)
      local v = samples(res.body)
      assert.are.equal(1, v.kinot_fleet_store_up)
      assert.are.equal(fleet.occupancy.occupied, v.kinot_spaces_occupied)
      assert.are.equal(100, v.kinot_spaces)
      assert.are.equal(100, v['kinot_fleet_updates_total{verdict="added"}'])
      rs.stop()
      stopped = true
      res = H.raw("GET", url .. "/metrics")
      assert.are.equal(200, res.status, res.body)
      v = samples(res.body)
      assert.are.equal(0, v.kinot_fleet_store_up)
      -- the sync was counted by worker 0: in the dict within a flush (1 s)
      v = H.wait_for(function()
        local s = samples(H.raw("GET", url .. "/metrics").body)
        return s['kinot_syncs_total{result="ok"}'] == 1 and s
      end, 3)
      assert.is_table(v, "the sync was not counted")
      assert.are.equal(0, v.kinot_fleet_store_up)
    end)
end)
