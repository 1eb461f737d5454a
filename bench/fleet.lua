-- The live twin at 100,000 devices (60,000 locks, 40,000 sensors, as the
-- simulator's seeded fleet makes them), in one run:
--   memory    what a device costs in each store, filled by twin:put in pages
--             of 100 as a sync fills it:
--               table   Lua heap growth (collectgarbage "count")
--               shared  the lua_shared_dict's pages used (capacity - free_space),
--                       in a real nginx (LuaJIT)
--               redis   used_memory growth (INFO memory) of a fresh redis-server
--   apply()   status_changed callbacks (each newer than the last) per second:
--               baseline  a plain table assignment, twin[sn] = ev.data
--               table     twin:apply(ev) on the table store
--               redis     twin:apply(ev) on Redis (one EVALSHA round trip each,
--                         over LuaSocket, this machine's redis-server)
--   summary   twin:summary() per second on the 100,000 devices (table,
--             shared, redis), and GET /api/fleet's latency (p50, p99) from
--             nginx holding them in its shared dict (kinot.serve.api)
--   sync      a full sync at 20 ms a request (kinot sim's latency fault),
--             concurrency 4, each store, against the limit (pages x 20 ms /
--             concurrency) and paging alone measured in the same run
--   luajit bench/fleet.lua   |   lua5.4 bench/fleet.lua   (after make build)
--   BENCH_PART=sync luajit bench/fleet.lua     (only the sync)
--   BENCH_PART=memory luajit bench/fleet.lua   (all but the sync and apply())
package.path = "./?.lua;" .. package.path
local B = require "bench.support"
local fleet = require "kinot.fleet"
local simfleet = require "kinot.sim.fleet"
local core = require "kinot.core"
local H = require "helpers"
local R = require "redis_server"

local LOCKS, SENSORS = 60000, 40000
local N = LOCKS + SENSORS
local seconds = B.SECONDS

local sim = simfleet.new { locks = LOCKS, sensors = SENSORS, dtus = 0, seed = 1 }
local function pages(fn)
  for _, kind in ipairs { "lock", "sensor" } do
    local n = kind == "lock" and LOCKS or SENSORS
    for first = 1, n, 100 do
      local page = {}
      for i = first, math.min(n, first + 99) do page[#page + 1] = sim:base_device(kind, i) end
      fn(kind, page)
    end
  end
end

local function fill(twin)
  pages(function(kind, page) assert(twin:put(kind, page, "scan")) end)
end

print(string.format("kinot.fleet at %d devices, %s", N, B.runtime))

-- BENCH_PART=sync: only the sync section (the others take minutes);
-- BENCH_PART=memory: the memory, summary and resync sections, not apply()
local PART = os.getenv("BENCH_PART")
local function part(name) return PART == nil or PART == "" or PART == name end

-- ------------------------------------------------------------ sync
-- A full sync of the 100,000 devices from `kinot sim` answering each request
-- after 20 ms (its latency fault), at concurrency 4 (kinot serve's): the
-- limit is the platform's pages, pages x 20 ms / concurrency, and the
-- baseline measured in the same run is paging alone (each_locker and
-- each_sensor, nothing stored).  Each store: the table (a script: curl's
-- pages, then the store, in turn), the shared dict and Redis inside nginx
-- (kinot serve's case: the paging in a light thread beside the writes);
-- a first sync (every device added) and a resync (every one a duplicate).
if part("sync") then
  local CONC, LAT = 4, 0.02
  local sim_srv = H.sim { locks = LOCKS, sensors = SENSORS, dtus = 0 }
  local rs_sync = R.start()
  local ng = H.nginx {
    http = "lua_shared_dict kinot_fleet 512m;\n init_by_lua_block { SIM = { key = '" .. sim_srv.app_key ..
           "', secret = '" .. sim_srv.app_secret .. "', endpoint = '" .. sim_srv.endpoint .. "' } }",
    server = [[
      location = /sync { content_by_lua_block {
        local a = ngx.req.get_uri_args()
        local client = require("kinot").new { app_key = SIM.key, app_secret = SIM.secret, endpoint = SIM.endpoint,
                                              timeout = 30 }
        ngx.update_time()
        local t0 = ngx.now()
        if a.store == "none" then
          local n, c, batches, last = 0, tonumber(a.c), {}, nil
          local function on_page(i) -- the time c pages take to come in turn (c in flight)
            if i % c == 1 then
              ngx.update_time()
              if last and i > 1 then batches[#batches + 1] = ngx.now() - last end
              last = ngx.now()
            end
          end
          for _, each in ipairs { client.each_locker, client.each_sensor } do
            last = nil
            for _ in each(client, { limit = 100, concurrency = c, on_page = on_page }) do n = n + 1 end
          end
          ngx.update_time()
          table.sort(batches)
          return ngx.say(ngx.now() - t0, " ", n, " ", batches[math.ceil(#batches * 0.5)], " ",
            batches[math.ceil(#batches * 0.9)])
        end
        local twin = require("kinot.fleet").new { store = a.store, redis = a.redis }
        local report = assert(twin:sync(client, { concurrency = tonumber(a.c) }))
        ngx.update_time()
        ngx.say(ngx.now() - t0, " ", report.locks + report.sensors)
      } }
    ]],
  }
  B.guarded(function()
    local npages = math.ceil(LOCKS / 100) + math.ceil(SENSORS / 100)
    local limit = npages * LAT / CONC
    -- the simulator renders a page once and keeps its JSON: every page
    -- rendered before anything is measured (else the first run alone pays
    -- the rendering, ~2 s of the simulator's one worker, one page after another)
    do
      local client = sim_srv.client { timeout = 30 }
      for _, each in ipairs { client.each_locker, client.each_sensor } do
        for _ in each(client, { limit = 100, concurrency = CONC }) do end -- luacheck: ignore 512
      end
    end
    assert(sim_srv.fault { kind = "latency", latency = LAT, share = 1 })
    local http = core.http()
    -- the CPU the nginx worker and the simulator spent (/proc)
    local ng_master = tonumber(io.open(ng.prefix .. "/nginx.pid"):read("*l"))
    local cpu_ng, cpu_sim
    local function cpu_start() cpu_ng, cpu_sim = B.cpu_of_children(ng_master), B.cpu_of_children(sim_srv.pid) end
    local function cpu_text(with_ng)
      return string.format("CPU: %ssimulator %.1f s", with_ng and string.format("nginx worker %.1f s, ",
        B.cpu_of_children(ng_master) - cpu_ng) or "", B.cpu_of_children(sim_srv.pid) - cpu_sim)
    end
    local function in_nginx(query)
      cpu_start()
      local r = assert(http:request { method = "GET", url = ng.url .. "/sync?c=" .. CONC .. "&" .. query,
                                      timeout = 600 })
      assert(r.status == 200, r.body .. ng.log():sub(-2000))
      local t, n, p50, p90 = r.body:match("^(%S+) (%d+) ?(%S*) ?(%S*)")
      assert(tonumber(n) == N, r.body)
      return tonumber(t), tonumber(p50), tonumber(p90)
    end
    local function line(what, t, note)
      print(string.format("sync    %-44s %6.2f s  (%.2fx the limit)%s", what, t, t / limit, note and ("  " .. note) or ""))
    end
    local function batch_text(p50, p90)
      return string.format("%d pages in turn p50 %.0f ms, p90 %.0f ms", CONC, p50 * 1000, p90 * 1000)
    end
    print(string.format("sync    the limit: %d pages x %.0f ms / concurrency %d = %.2f s", npages, LAT * 1000, CONC,
      limit))
    local t, p50, p90 = in_nginx("store=none")
    line("baseline: paging alone, in nginx", t, batch_text(p50, p90) .. "; " .. cpu_text(true))
    do -- a script: curl
      local client = sim_srv.client { timeout = 30 }
      cpu_start()
      local t0 = core.monotonic()
      local n, batches, last = 0, {}, nil
      local function on_page(i)
        if i % CONC == 1 then
          local now = core.monotonic()
          if last and i > 1 then batches[#batches + 1] = now - last end
          last = now
        end
      end
      for _, each in ipairs { client.each_locker, client.each_sensor } do
        last = nil
        for _ in each(client, { limit = 100, concurrency = CONC, on_page = on_page }) do n = n + 1 end
      end
      table.sort(batches)
      line("baseline: paging alone, a script (curl)", core.monotonic() - t0,
        batch_text(batches[math.ceil(#batches * 0.5)], batches[math.ceil(#batches * 0.9)]) .. "; " .. cpu_text(false))
      local twin = fleet.new { store = "table" }
      for _, what in ipairs { "first sync", "resync" } do
        cpu_start()
        t0 = core.monotonic()
        assert(twin:sync(client, { concurrency = CONC }))
        line("table store, a script, " .. what, core.monotonic() - t0, cpu_text(false))
      end
    end
    for _, what in ipairs { "first sync", "resync" } do
      line("shared dict, in nginx, " .. what, in_nginx("store=shared"), cpu_text(true))
    end
    -- and the CPU redis-server spent (INFO cpu): its scripts' share
    local rc = rs_sync.client()
    local function redis_cpu()
      local info = rc:call("INFO", "cpu")
      return tonumber(info:match("used_cpu_user:([%d%.]+)")) + tonumber(info:match("used_cpu_sys:([%d%.]+)"))
    end
    for _, what in ipairs { "first sync", "resync" } do
      local r0 = redis_cpu()
      local took = in_nginx("store=redis&redis=" .. rs_sync.url)
      line("redis, in nginx, " .. what, took, cpu_text(true) .. string.format(", redis-server %.1f s", redis_cpu() - r0))
    end
  end, ng, rs_sync, sim_srv)
end
if PART == "sync" then return end

-- ------------------------------------------------------------ memory

do -- table
  collectgarbage()
  collectgarbage()
  local before = collectgarbage("count")
  local twin = fleet.new { store = "table" }
  fill(twin)
  collectgarbage()
  collectgarbage()
  local bytes = (collectgarbage("count") - before) * 1024
  print(string.format("memory  table   %7.0f bytes/device  (%.1f MB in all)", bytes / N, bytes / 1e6))
end

do -- shared dict, in nginx
  local ng = H.nginx {
    http = "lua_shared_dict kinot_fleet 512m;",
    server = [[
      location = /used {
        content_by_lua_block {
          local dict = ngx.shared.kinot_fleet
          ngx.say(dict:capacity() - dict:free_space())
        }
      }
      location = /fill {
        content_by_lua_block {
          local fleet = require "kinot.fleet"
          local simfleet = require "kinot.sim.fleet"
          local a = ngx.req.get_uri_args()
          local kind, first, last = a.kind, tonumber(a.first), tonumber(a.last)
          local sim = simfleet.new { locks = last, sensors = last, dtus = 0, seed = 1 }
          local twin = fleet.new { store = "shared" }
          for i = first, last, 100 do
            local page = {}
            for k = i, math.min(last, i + 99) do page[#page + 1] = sim:base_device(kind, k) end
            assert(twin:put(kind, page, "scan"))
          end
          ngx.say("ok")
        }
      }
      location /api/ {
        content_by_lua_block {
          twin = twin or require("kinot.fleet").new { store = "shared" } -- luacheck: ignore
          require("kinot.serve.api").nginx(twin)
        }
      }
      location = /sweep {
        content_by_lua_block {
          -- the devices' stamps are of March 2019: a clock of 1 April 2019 and
          -- 40 days' stale_after make none of them due (the pass, not the marking)
          local twin = require("kinot.fleet").new { store = "shared", stale_after = 40 * 86400,
                                                    clock = function() return 1554076800 end }
          twin:devices { limit = 1 } -- this worker's list of serials, made once, not timed
          ngx.update_time()
          local t0 = ngx.now()
          local events = assert(twin:sweep()) -- reads every device's flags
          ngx.update_time()
          local t1 = ngx.now()
          assert(twin:sweep()) -- the next: this worker knows each updated_at (the sweep's floor)
          ngx.update_time()
          ngx.say(t1 - t0, " ", #events, " ", ngx.now() - t1)
        }
      }
      location = /summary {
        content_by_lua_block {
          local twin = require("kinot.fleet").new { store = "shared" }
          ngx.update_time()
          local k, t0 = 0, ngx.now()
          repeat
            for _ = 1, 100 do twin:summary() end
            k = k + 100
            ngx.update_time()
          until ngx.now() - t0 >= 1
          ngx.say(k / (ngx.now() - t0))
        }
      }
    ]],
  }
  B.guarded(function()
    local used0 = tonumber(H.raw("GET", ng.url .. "/used").body)
    for _, kind in ipairs { "lock", "sensor" } do
      local n = kind == "lock" and LOCKS or SENSORS
      for first = 1, n, 5000 do
        local res = H.raw("GET", string.format("%s/fill?kind=%s&first=%d&last=%d", ng.url, kind, first,
          math.min(n, first + 4999)))
        assert(res.status == 200, res.body .. ng.log())
      end
    end
    local used = tonumber(H.raw("GET", ng.url .. "/used").body) - used0
    local rate = tonumber(H.raw("GET", ng.url .. "/summary").body)
    print(string.format("memory  shared  %7.0f bytes/device  (%.1f MB of the dict; give it ~%d MB per 100,000 " ..
      "devices, with room for the change log)", used / N, used / 1e6, math.ceil(used / 1e6 * 1.25)))
    print(string.format("summary shared  %9.0f /s", rate))
    local sweep_s, stale, again = H.raw("GET", ng.url .. "/sweep").body:match("^(%S+) (%d+) (%S+)")
    print(string.format("sweep   shared  %.2f s over the %d devices (%s turned stale), pausing 1 ms each 2 ms; " ..
      "the next sweep of that worker %.3f s", tonumber(sweep_s), N, stale, tonumber(again)))
    -- GET /api/fleet over HTTP, one request at a time: the time a client waits
    local http = core.http()
    local times = {}
    for i = 1, 2000 do
      local t = core.monotonic()
      local r = http:request { method = "GET", url = ng.url .. "/api/fleet", timeout = 5 }
      times[i] = core.monotonic() - t
      assert(r and r.status == 200)
    end
    table.sort(times)
    print(string.format("GET /api/fleet on %d devices (shared dict, one at a time, 2000 requests): p50 %.2f ms, " ..
      "p99 %.2f ms", N, times[1000] * 1000, times[1980] * 1000))
  end, ng)
end

local rs = R.start()
B.guarded(function()
  local c = rs.client()
  local function used() return tonumber(c:call("INFO", "memory"):match("used_memory:(%d+)")) end
  local before = used()
  local twin = fleet.new { store = "redis", redis = c }
  local t0 = core.monotonic()
  fill(twin)
  local fill_s = core.monotonic() - t0
  local bytes = used() - before
  print(string.format("memory  redis   %7.0f bytes/device  (%.1f MB used_memory; filled in %.1f s, pages of 100)",
    bytes / N, bytes / 1e6, fill_s))
  -- of which the records: MEMORY USAGE of every 100th device's key (the rest: the indexes, counters, stream)
  local rec_bytes, k = 0, 0
  for i = 1, LOCKS, 100 do
    rec_bytes, k = rec_bytes + c:call("MEMORY", "USAGE", "kinot:fleet:d:" .. (419600000 + i)), k + 1
  end
  for i = 1, SENSORS, 100 do
    rec_bytes, k = rec_bytes + c:call("MEMORY", "USAGE", "kinot:fleet:d:" .. (419800000 + i)), k + 1
  end
  print(string.format("memory  redis   %7.0f bytes/device are its record's key (MEMORY USAGE, 1 device in 100); " ..
    "the rest its index entries", rec_bytes / k))
  -- a sync that finds nothing new: every device a duplicate
  t0 = core.monotonic()
  fill(twin)
  print(string.format("resync  redis   %.1f s for %d unchanged devices (%.0f /s)", core.monotonic() - t0, N,
    N / (core.monotonic() - t0)))

  if PART == "memory" then return end
  -- ---------------------------------------------------------- apply()
  local T0 = 1796083200
  local function event(i)
    local sn = 419600001 + (i % LOCKS)
    return { kind = "status_changed", device = "lock", sn = sn, verified = true,
             data = { sn = sn, car_detected = i % 2, locked = 1, low_battery = 0, coil_fault = 0, rs_si = -70.5,
                      voltage = 3.4, updated_at = os.date("!%Y-%m-%dT%H:%M:%S+08:00", T0 + i) } }
  end
  -- the events made beforehand: the rates are of the store, not of building events
  local M = 200000
  local evs = {}
  for i = 1, M do evs[i] = event(i) end

  local plain, i = {}, 0
  local base = B.rate(function()
    i = i % M + 1
    local ev = evs[i]
    plain[ev.sn] = ev.data
  end, seconds)

  local tt = fleet.new { store = "table" }
  fill(tt)
  i = 0
  local tab = B.rate(function()
    i = i % M + 1
    assert(tt:apply(evs[i]))
  end, seconds)
  -- fresh stamps for Redis: the table run used them all already on the table twin only
  i = 0
  local red = B.rate(function()
    i = i % M + 1
    assert(twin:apply(evs[i]))
  end, seconds, 10)
  assert(plain[419600002])
  print(string.format("apply   baseline (plain table assignment) %10.0f /s", base))
  print(string.format("apply   table store                      %10.0f /s  (%.1f us each, %.0fx the baseline's time)",
    tab, 1e6 / tab, base / tab))
  print(string.format("apply   redis store                      %10.0f /s  (%.1f us each, one EVALSHA round trip)",
    red, 1e6 / red))
  print(string.format("summary table  %9.0f /s", B.rate(function() tt:summary() end, 1, 10)))
  print(string.format("summary redis  %9.0f /s", B.rate(function() twin:summary() end, 1, 10)))
end, rs)
