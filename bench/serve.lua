-- `kinot serve` under load, as a user runs it (bin/kinot serve --daemon,
-- the twin in its lua_shared_dict, 2 workers) over `kinot sim`'s 100,000
-- devices (60,000 locks, 40,000 sensors), in one run:
--   callback -> twin   wrk posts distinct signed lock callbacks (each a
--                      device's newer state) paced near RATE a second (each
--                      of 40 connections waits 40 / (1.2 RATE) s between two
--                      requests; the rate reached is printed);
--                      meanwhile a prober posts a signed sensor callback
--                      and reads GET /api/devices/{sn} until the twin shows
--                      it: the time from posting to seeing, p50 / p99
--   GET /api/fleet     its latency on the 100,000 devices (wrk --latency,
--                      4 connections, each a request every 10 ms) under the
--                      same callback load
--   the floor          GET /api/none beside GET /api/fleet, at the same pace
--                      at the same time: the API's 404 (the same nginx, Lua
--                      handler and token check, all but the summary)
--   CPU                the nginx workers' (/proc) a GET and a callback
--   baselines          the same measured with no callback load, in the
--                      same run (the prober; GET /api/fleet and /api/none by wrk)
--   luajit bench/serve.lua   (after make build; needs wrk)
--   BENCH_SERVE_ARGS="--workers 4" luajit bench/serve.lua   (more kinot serve options)
package.path = "./?.lua;" .. package.path
local B = require "bench.support"
local H = require "helpers"
local core = require "kinot.core"
local json = require "kinot.json"
local launcher = require "kinot.sim.launcher"

local LOCKS, SENSORS = 60000, 40000
local RATE = tonumber(os.getenv("BENCH_RATE") or "2000")
local SECONDS = math.max(5, B.SECONDS * 2)
local CONNS = 40
local LUA = rawget(_G, "jit") and "luajit" or "lua5.4"

local function sh(cmd) return (H.sh(cmd)) end

local sim = H.sim { locks = LOCKS, sensors = SENSORS, dtus = 0 }
local secret = sim.app_secret
local port = launcher.free_port()
local url = "http://127.0.0.1:" .. port
local pid_file = os.tmpname()
local files = { pid_file }

local function stop_all()
  sh(string.format("%s bin/kinot serve stop --pid-file %s", LUA, pid_file))
  sim.stop()
  for _, f in ipairs(files) do os.remove(f) end
end

local function stamp(t) return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(t) + 8 * 3600) .. "+08:00" end
local function signed(body) return H.signed(body, secret) end

local ok, err = pcall(function()
  print(sh(string.format("KINOT_ENDPOINT=%s KINOT_APP_KEY=%s KINOT_APP_SECRET=%s %s bin/kinot serve --daemon " ..
    "--pid-file %s --listen 127.0.0.1:%d --dict-size 256m --sync-interval 0 %s", sim.endpoint, sim.app_key, secret,
    LUA, pid_file, port, os.getenv("BENCH_SERVE_ARGS") or "")))
  local http = core.http()
  local function get(path)
    local r = assert(http:request { method = "GET", url = url .. path, timeout = 10 })
    return r.status, r.body
  end
  -- the first sync: all 100,000 devices in the twin
  local t0 = core.monotonic()
  repeat
    core.sleep(1)
    local _, body = get("/api/fleet")
    local s = json.decode(body)
  until type(s) == "table" and type(s.synced_at) == "string" or core.monotonic() - t0 > 300
  print(string.format("kinot serve over %d devices (shared dict, 2 workers), %s; first sync done after %.1f s",
    LOCKS + SENSORS, B.runtime, core.monotonic() - t0))

  -- the load: distinct lock callbacks, each a newer state of its device
  local now = os.time()
  local bodies = os.tmpname()
  files[#files + 1] = bodies
  local f = assert(io.open(bodies, "w"))
  for i = 1, LOCKS do
    f:write(signed(string.format('{"sn":%d,"voltage":3.412,"frequency":37.919,"locked":%d,"car_detected":%d,' ..
      '"shell_opened":0,"low_battery":0,"coil_fault":0,"bar_position_error":0,"motor_fail":0,"rs_si":-71,' ..
      '"updated_at":"%s","device_type":18}', 419600000 + i, i % 2, (i + 1) % 2, stamp(now))), "\n")
  end
  f:close()
  local script = os.tmpname()
  files[#files + 1] = script
  f = assert(io.open(script, "w"))
  f:write(string.format([[
local requests, i, threads = {}, 0, 0
function setup(thread) -- each thread its own share of the bodies: every callback posted once
  threads = threads + 1
  thread:set("id", threads)
end
function init()
  local k = 0
  for body in io.lines(%q) do
    k = k + 1
    if k %% 2 == id %% 2 then
      requests[#requests + 1] = wrk.format("POST", "/kinot/callback", { ["Content-Type"] = "application/json" }, body)
    end
  end
end
function delay() return %d end
function request()
  i = i %% #requests + 1
  return requests[i]
end
]], bodies, math.floor(CONNS * 1000 / (RATE * 1.2))))
  f:close()

  -- GET /api/fleet paced too: 4 connections, each a request every 10 ms (at most 400 /s)
  local fleet_script = os.tmpname()
  files[#files + 1] = fleet_script
  f = assert(io.open(fleet_script, "w"))
  f:write('function delay() return 10 end\n')
  f:close()
  local function wrk_start(args, out)
    files[#files + 1] = out
    local p = io.popen(string.format("wrk %s > %s 2>&1 & echo $!", args, out))
    local pid = tonumber(p:read("*l"))
    p:close()
    return pid
  end
  local function wrk_wait(pid, out)
    while os.execute("kill -0 " .. pid .. " 2>/dev/null") == true or os.execute("kill -0 " .. pid .. " 2>/dev/null") == 0 do
      core.sleep(0.2)
    end
    local text = io.open(out):read("*a")
    return text
  end
  local function wrk_latency(text, q)
    local v, unit = text:match("%s" .. q .. "%%%s+([%d%.]+)(%a+)")
    if not v then return nil end
    local scale = { us = 0.001, ms = 1, s = 1000 }
    return tonumber(v) * scale[unit]
  end

  -- the prober: a sensor callback posted, then its device read until it shows it
  local probe_i = 0
  local function probe()
    probe_i = probe_i + 1
    local sn = 419800000 + probe_i
    local body = signed(string.format('{"sn":%d,"voltage":3.5,"car_detected":%d,"low_battery":0,"rs_si":-80,' ..
      '"updated_at":"%s","device_type":34}', sn, probe_i % 2, stamp(now + 1)))
    local want = stamp(now + 1)
    local t = core.monotonic()
    local r = assert(http:request { method = "POST", url = url .. "/kinot/callback", body = body, timeout = 10,
                                    headers = { ["Content-Type"] = "application/json" } })
    assert(r.status == 200, r.body)
    repeat
      local _, text = get("/api/devices/" .. sn)
      local d = json.decode(text)
      if type(d) == "table" and d.updated_at == want then return core.monotonic() - t end
    until core.monotonic() - t > 5
    return 5
  end
  local function probes(seconds)
    local times, t0p = {}, core.monotonic()
    while core.monotonic() - t0p < seconds do
      times[#times + 1] = probe()
      core.sleep(0.01)
    end
    table.sort(times)
    return times[math.ceil(#times * 0.5)] * 1000, times[math.ceil(#times * 0.99)] * 1000, #times
  end

  -- the CPU time the nginx workers spent (utime + stime, /proc), in seconds
  local master = tonumber(io.open(io.open(pid_file):read("*l") .. "/nginx.pid"):read("*l"))
  local function cpu() return B.cpu_of_children(master) end

  -- GET /api/fleet and, beside it at the same pace, GET /api/none (the
  -- API's 404: the same nginx, the same Lua handler and token check, all
  -- but the summary): the floor any /api/fleet can reach on this machine,
  -- under the same load at the same time
  local function reads(seconds)
    local out_f, out_n = os.tmpname(), os.tmpname()
    local f_pid = wrk_start(string.format("-t1 -c4 -d%ds --latency -s %s %s/api/fleet", seconds, fleet_script, url),
      out_f)
    local n_pid = wrk_start(string.format("-t1 -c4 -d%ds --latency -s %s %s/api/none", seconds, fleet_script, url),
      out_n)
    return function() return wrk_wait(f_pid, out_f), wrk_wait(n_pid, out_n) end
  end
  local function count(text) return tonumber(text:match("(%d+) requests in")) end
  local function reads_line(what, f_text, n_text)
    print(string.format("GET /api/fleet, paced, %-33s p50 %6.2f ms  p99 %6.2f ms  (%s /s)", what .. ":",
      wrk_latency(f_text, "50"), wrk_latency(f_text, "99"), f_text:match("Requests/sec:%s*([%d%.]+)")))
    print(string.format("GET /api/none beside it (the floor: the API's 404): p50 %6.2f ms  p99 %6.2f ms  (%s /s)",
      wrk_latency(n_text, "50"), wrk_latency(n_text, "99"), n_text:match("Requests/sec:%s*([%d%.]+)")))
  end

  -- baselines: no callback load
  local p50, p99, n = probes(SECONDS / 2)
  print(string.format("callback -> GET /api/devices/{sn}, no load (baseline):   p50 %6.2f ms  p99 %6.2f ms  (%d probes)",
    p50, p99, n))
  local cpu0 = cpu()
  local f_text, n_text = reads(math.floor(SECONDS / 2))()
  local read_cpu = (cpu() - cpu0) / (count(f_text) + count(n_text))
  reads_line("no load (baseline)", f_text, n_text)
  print(string.format("  the workers' CPU a GET: %.0f us", read_cpu * 1e6))

  -- under the callback load
  local out_cb = os.tmpname()
  cpu0 = cpu()
  local cb = wrk_start(string.format("-t2 -c%d -d%ds --latency -s %s %s", CONNS, SECONDS, script, url), out_cb)
  core.sleep(1)
  local wait_reads = reads(SECONDS - 3)
  p50, p99, n = probes(SECONDS - 2)
  local cb_text = wrk_wait(cb, out_cb)
  f_text, n_text = wait_reads()
  local load_cpu = cpu() - cpu0
  local rate = tonumber(cb_text:match("Requests/sec:%s*([%d%.]+)"))
  local non2xx = cb_text:match("Non%-2xx or 3xx responses:%s*(%d+)") or "0"
  print(string.format("callbacks posted by wrk: %.0f /s (paced at %d /s, %d connections), p99 %.2f ms to their 200, " ..
    "%s not 2xx", rate, RATE, CONNS, wrk_latency(cb_text, "99"), non2xx))
  local ncb, nget = count(cb_text), count(f_text) + count(n_text)
  print(string.format("  the workers' CPU a callback: %.0f us (%.2f s in all for %d callbacks, %d GETs, the probes)",
    (load_cpu - nget * read_cpu) / ncb * 1e6, load_cpu, ncb, nget))
  print(string.format("callback -> GET /api/devices/{sn}, under that load:      p50 %6.2f ms  p99 %6.2f ms  (%d probes)",
    p50, p99, n))
  reads_line("under that load", f_text, n_text)
  core.sleep(1)
  local _, body = get("/api/fleet")
  local s = json.decode(body)
  print(string.format("the twin after: %d applied from callbacks, %d out of order, %d duplicates", s.updates.applied,
    s.updates.out_of_order, s.updates.duplicate))
  -- what kinot serve refused, if anything (its log names each)
  local prefix = io.open(pid_file):read("*l")
  local log = io.open(prefix .. "/error.log"):read("*a")
  local refusals, sample = 0, nil
  for line in log:gmatch("[^\n]+") do
    if line:find("%[warn%]") or line:find("%[error%]") then
      refusals = refusals + 1
      sample = sample or line:sub(1, 300)
    end
  end
  print(string.format("kinot serve's log: %d warnings or errors%s", refusals, sample and (", the first: " .. sample) or ""))
end)
stop_all()
if not ok then error(err, 0) end
