-- kinot.metrics, in one run (docs/metrics.md):
--   GET /metrics      on `kinot serve` over `kinot sim`'s 100,000 devices
--                     (60,000 locks, 40,000 sensors in 100 groups, 2
--                     workers): p50 / p99 of one request at a time, against
--                     GET /api/fleet (the same summary, as JSON) measured
--                     alternately in the same run: the baseline
--   the handler       kinot.callback.handler with metrics = registry
--                     against the same handler without, one nginx worker,
--                     wrk over 20,000 distinct signed callbacks, rounds
--                     alternating on / off: requests a second and the ratio
--   luajit bench/metrics.lua   (after make build; needs wrk)
package.path = "./?.lua;" .. package.path
local B = require "bench.support"
local H = require "helpers"
local core = require "kinot.core"
local json = require "kinot.json"
local launcher = require "kinot.sim.launcher"

local LOCKS, SENSORS, GROUPS = 60000, 40000, 100
local LUA = rawget(_G, "jit") and "luajit" or "lua5.4"
local PROBES = tonumber(os.getenv("BENCH_PROBES") or "400")

local function sh(cmd) return (H.sh(cmd)) end

local function quantile(sorted, q) return sorted[math.max(1, math.ceil(#sorted * q))] end

local files = {}
local function tmp()
  local name = os.tmpname()
  files[#files + 1] = name
  return name
end

-- ---------------------------------------------------------------- /metrics on 100,000 devices

local function scrape_bench()
  local sim = H.sim { locks = LOCKS, sensors = SENSORS, dtus = 0 }
  local port = launcher.free_port()
  local url = "http://127.0.0.1:" .. port
  local pid_file = tmp()
  local ok, err = pcall(function()
    -- the groups: each device in one of 100 (zone, level)
    local groups = tmp() .. ".csv"
    files[#files + 1] = groups
    local f = assert(io.open(groups, "w"))
    f:write("sn,zone,level\n")
    local client = sim.client()
    local n = 0
    for _, each in ipairs { client.each_locker, client.each_sensor } do
      for d in each(client, { limit = 100, concurrency = 4 }) do
        n = n + 1
        f:write(string.format("%d,Z%d,%d\n", d.sn, n % 10, math.floor(n / 10) % 10))
      end
    end
    f:close()
    print(sh(string.format("KINOT_ENDPOINT=%s KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_REDIS_URL= %s bin/kinot " ..
      "serve --daemon --pid-file %s --listen 127.0.0.1:%d --dict-size 256m --sync-interval 0 --groups %s",
      sim.endpoint, sim.app_key, sim.app_secret, LUA, pid_file, port, groups)))
    local http = core.http()
    local function get(path)
      local r = assert(http:request { method = "GET", url = url .. path, timeout = 10 })
      assert(r.status == 200, path .. ": " .. r.status)
      return r.body
    end
    local t0 = core.monotonic()
    local s
    repeat
      core.sleep(1)
      s = json.decode(get("/api/fleet"))
    until type(s) == "table" and type(s.synced_at) == "string" or core.monotonic() - t0 > 600
    assert(s.devices.locks + s.devices.sensors == LOCKS + SENSORS, "the first sync did not bring every device")
    local text = get("/metrics")
    local series = select(2, text:gsub("\nkinot_", ""))
    print(string.format("kinot serve over %d devices in %d groups (shared dict, 2 workers), %s; first sync %.1f s; " ..
      "/metrics: %d bytes, %d samples", LOCKS + SENSORS, GROUPS, B.runtime, core.monotonic() - t0, #text, series))
    local times = { metrics = {}, fleet = {} }
    for _ = 1, PROBES do
      for _, which in ipairs { "metrics", "fleet" } do
        local t = core.monotonic()
        get(which == "metrics" and "/metrics" or "/api/fleet")
        times[which][#times[which] + 1] = (core.monotonic() - t) * 1000
      end
    end
    for _, which in ipairs { "fleet", "metrics" } do
      table.sort(times[which])
    end
    print(string.format("GET /api/fleet (baseline), one at a time:  p50 %6.2f ms  p99 %6.2f ms  (%d requests)",
      quantile(times.fleet, 0.5), quantile(times.fleet, 0.99), PROBES))
    print(string.format("GET /metrics, one at a time:               p50 %6.2f ms  p99 %6.2f ms  (%d requests)  " ..
      "p99 ratio %.2fx the baseline; goal p99 <= 50 ms: %s", quantile(times.metrics, 0.5),
      quantile(times.metrics, 0.99), PROBES, quantile(times.metrics, 0.99) / quantile(times.fleet, 0.99),
      quantile(times.metrics, 0.99) <= 50 and "met" or "NOT met"))
  end)
  sh(string.format("%s bin/kinot serve stop --pid-file %s", LUA, pid_file))
  sim.stop()
  if not ok then error(err, 0) end
end

-- ---------------------------------------------------------------- the handler, metrics on / off

local function handler_bench()
  local secret = "3b8d0c6e2a4f9b1d7c5e3a0f8b6d4c2e"
  local now = os.time()
  local bodies = tmp()
  local f = assert(io.open(bodies, "w"))
  for i = 1, 20000 do
    local body = string.format('{"sn":%d,"voltage":3.412,"locked":%d,"car_detected":%d,"low_battery":0,' ..
      '"rs_si":-71,"updated_at":"%s","device_type":18}', 419600000 + i, i % 2, (i + 1) % 2,
      os.date("!%Y-%m-%dT%H:%M:%S", now + 8 * 3600) .. "+08:00")
    f:write(H.signed(body, secret), "\n")
  end
  f:close()
  local script = B.wrk_post_script(bodies)
  files[#files + 1] = script
  local ng = H.nginx {
    http = [[
      lua_shared_dict metrics 1m;
      init_by_lua_block {
        local registry = require("kinot.metrics").new { dict = "metrics" }
        local seen = 0
        local function on_status(ev) if ev.data.car_detected == 1 then seen = seen + 1 end end
        receive_on = require("kinot.callback").handler { secret = "]] .. secret .. [[", on_status = on_status,
                                                         metrics = registry }
        receive_off = require("kinot.callback").handler { secret = "]] .. secret .. [[", on_status = on_status }
        metrics_registry = registry
      }
    ]],
    server = [[
      location = /on { content_by_lua_block { receive_on() } }
      location = /off { content_by_lua_block { receive_off() } }
      location = /metrics { content_by_lua_block { metrics_registry:nginx() } }
      location = /cost {
        content_by_lua_block {
          -- what metrics add to one callback, in a request (the start
          -- time is the request's): the receiver's dispatch as the
          -- metrics wrap it, and the observer, against the bare dispatch
          local registry = metrics_registry
          local bare = function() return true end
          local rcv = { after = true, dispatch = bare }
          local observe = require("kinot.metrics.callback").instrument(registry, rcv)
          local ev = { kind = "status_changed", sn = 419600001 }
          local N = 2000000
          local function time(fn)
            ngx.update_time()
            local t = ngx.now()
            fn()
            ngx.update_time()
            return ngx.now() - t
          end
          local base = time(function() for _ = 1, N do bare(rcv, ev) end end)
          local on = time(function() for _ = 1, N do rcv:dispatch(ev) observe(200, ev) end end)
          ngx.say(string.format("%.1f", (on - base) / N * 1e9))
        }
      }
    ]],
  }
  local ok, err = pcall(function()
    -- the machine is shared: many short rounds, on and off back to back in
    -- each (the order turning), the ratio of each round's pair, the median
    local rates = { on = {}, off = {} }
    local ratios = {}
    local seconds = tonumber(os.getenv("BENCH_ROUND_SECONDS") or "2")
    local rounds = tonumber(os.getenv("BENCH_ROUNDS") or "9")
    for round = 1, rounds do
      local got = {}
      for _, which in ipairs(round % 2 == 1 and { "off", "on" } or { "on", "off" }) do
        local out = sh(string.format("wrk -t1 -c8 -d%ds -s %s %s/%s", seconds, script, ng.url, which))
        local rate = tonumber(out:match("Requests/sec:%s*([%d%.]+)"))
        assert(rate, out)
        assert(not out:find("Non%-2xx"), out)
        rates[which][#rates[which] + 1] = rate
        got[which] = rate
      end
      ratios[#ratios + 1] = got.on / got.off
    end
    for _, t in ipairs { rates.on, rates.off, ratios } do table.sort(t) end
    local mid = math.ceil(rounds / 2)
    print(string.format("callback handler, one nginx worker, wrk -t1 -c8, %d rounds of %d s each way: metrics off " ..
      "median %.0f /s, metrics on median %.0f /s; ratio on/off of each round: median %.3f (min %.3f, max %.3f)",
      rounds, seconds, rates.off[mid], rates.on[mid], ratios[mid], ratios[1], ratios[rounds]))
    local ns = {}
    for i = 1, 5 do ns[i] = tonumber(H.raw("GET", ng.url .. "/cost").body) end
    table.sort(ns)
    print(string.format("what metrics add to one callback (the wrapped dispatch and the observer, 2,000,000 in a " ..
      "loop inside nginx, median of 5): %.0f ns = %.2f%% of one handled callback at the metrics-off median rate",
      ns[3], ns[3] * 1e-9 * rates.off[mid] * 100))
  end)
  ng.stop()
  if not ok then error(err, 0) end
end

local ok, err = pcall(function()
  handler_bench()
  if os.getenv("BENCH_ONLY_HANDLER") ~= "1" then scrape_bench() end
end)
for _, name in ipairs(files) do os.remove(name) end
if not ok then error(err, 0) end
