-- Callbacks on Redis against the in-memory queue, in one run: wrk against
-- one nginx worker posting distinct signed callbacks (lock and sensor
-- status changes, command results, as bench/callback.lua makes them,
-- stamped within the last 10 minutes so max_age keeps every one) to
--   memory      callback.handler with its in-memory queue (ack immediate):
--               on_status / on_command run in this worker's timers;
--   after_handler  callback.handler with ack = "after_handler" (the
--               default): on_status / on_command run in the request, and
--               the 200 goes once they returned;
--   inbox       callback.handler with inbox = { redis } (each event stored
--               in a Redis stream, deduped by id, before the 200), and a
--               kinot.callback.worker in the same nginx worker (timer
--               loops over cosockets) running the same on_status;
--   inbox+aof   the same against a Redis with appendonly yes and
--               appendfsync always (each 200 on disk first).
-- For each: callbacks answered per second (wrk), callbacks handled per
-- second over the same time, and the time from the POST's arrival to the
-- handler's start (p50, p99, from every handled callback).  Redis runs on
-- this machine: its CPU is shared with nginx and wrk.
-- Then, in the same run:
--   paced       the inbox at a steady half of its median answered/s (wrk's
--               delay() paces each connection: one POST every c/rate
--               seconds after the last answer, so the rate is held, never
--               exceeded), POST -> handler p50 / p99 from every event;
--   drain       `kinot worker` (a plain process, trivial handler) draining
--               a stream filled beforehand with BENCH_DRAIN events (100,000),
--               timed from its start to an empty stream (its --count, and
--               count 10, the default before 0.2.0).
--   luajit bench/inbox.lua [all|wrk|drain]   (after make build; BENCH_SECONDS=3, BENCH_ROUNDS=3 by default;
--   the inbox / memory ratio of each round, and their median, last; BENCH_LOOPS=4: the worker's loops)
--   luajit bench/inbox.lua wait   (the wait option's cost instead: wait_cost below)
--   BENCH_AB_ROOT=<checkout> luajit bench/inbox.lua ab   (this checkout against another, paired: ab below)
-- Where the time goes (wrk and all; off by default): BENCH_CPU=1 prints,
-- for each run, the CPU each process spent per callback answered (the
-- nginx worker, its handlers and worker loops included, until the backlog
-- drained; redis-server), and for the inbox's runs Redis's INFO
-- commandstats (calls and usec_per_call, of EVALSHA and of each command
-- its script calls); BENCH_PROFILE=<jit.p mode> (Fl, vF ...) the nginx
-- worker's jit.p over the last round's inbox run (BENCH_PROFILE_PATH: another
-- path's; BENCH_PROFILE_LINES: lines shown, 40).
package.path = "./?.lua;" .. package.path
local MODE = arg and arg[1] or "all"
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "3") -- (wrk and wait: rounds of every path)
-- the worker's timer loops in the nginx worker (wrk)
local LOOPS = math.floor(tonumber(os.getenv("BENCH_LOOPS") or "4"))
local B = require "bench.support"
local core = require "kinot.core"

local secret = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"
local R = require "redis_server"
local H = require "helpers"

if not H.execute("command -v wrk >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1") then
  print("inbox: wrk or redis-server missing (make deps)")
  return
end

-- the reference's bodies (bench/support.lua: updated_at within the last
-- 10 minutes), signed: 7 in 10 a lock's status, 2 a sensor's, 1 a command's result
local function body_of(i)
  local r, sn = i % 10, 400000000 + i
  local body = r < 7 and B.lock_status_body(sn, i) or r < 9 and B.sensor_status_body(sn, i) or
    B.command_result_body(sn, i)
  return H.signed(body, secret)
end

-- more distinct bodies than any run posts: every one is new to Redis's
-- dedupe (which is flushed between runs) and to the handler's memory
local N = tonumber(os.getenv("BENCH_INBOX_BODIES") or "300000")
local bodies = os.tmpname()
do
  local f = assert(io.open(bodies, "w"))
  for i = 1, N do f:write(body_of(i), "\n") end
  f:close()
end
-- paced (PACE_MS set): each connection waits PACE_MS (fractions carried
-- over) after each answer before its next POST
local script = B.wrk_post_script(bodies, [[
local pace, carried = tonumber(os.getenv("PACE_MS")), 0
if pace then
  function delay()
    carried = carried + pace
    local d = math.floor(carried)
    carried = carried - d
    return d
  end
end
]])

-- `luajit bench/inbox.lua wait`: the cost of the inbox's wait option, on
-- a master with two replicas behind three Sentinels (spec/support), one
-- nginx worker, wrk as above, each path in the same run, 3 rounds:
--   direct     inbox = { redis = "redis://master" }            (the baseline)
--   sentinel   inbox = { redis = "redis+sentinel://..." }      (the master found through Sentinel)
--   wait 1     the same with wait = { replicas = 1 }           (WAIT 1 before each 200)
--   wait 2     the same with wait = { replicas = 2 }           (every replica)
-- Answered per second (no worker runs: the stream is flushed between
-- runs), and the time of one put at a time from this process (LuaSocket).  BENCH_ROUNDS (3), BENCH_ONLY=name: that path alone.
local function wait_cost()
  local S = require "sentinel_cluster"
  local k = S.start {}
  k.wait_ready()
  local master = k.master()
  local paths = { { "direct", "/direct" }, { "sentinel", "/sentinel" }, { "wait 1", "/wait1" }, { "wait 2", "/wait2" } }
  local ng = H.nginx {
    http = [[
      init_by_lua_block {
        local callback = require "kinot.callback"
        local s = "]] .. secret .. [["
        receive_direct = callback.handler { secret = s, inbox = { redis = "]] .. master.url .. [[" } }
        receive_sentinel = callback.handler { secret = s, inbox = { redis = "]] .. k.url .. [[" } }
        receive_wait1 = callback.handler { secret = s, inbox = { redis = "]] .. k.url .. [[", wait = { replicas = 1 } } }
        receive_wait2 = callback.handler { secret = s, inbox = { redis = "]] .. k.url .. [[", wait = { replicas = 2 } } }
      }
    ]],
    server = [[
      location = /direct { content_by_lua_block { receive_direct() } }
      location = /sentinel { content_by_lua_block { receive_sentinel() } }
      location = /wait1 { content_by_lua_block { receive_wait1() } }
      location = /wait2 { content_by_lua_block { receive_wait2() } }
    ]],
  }
  local rates, lat = {}, {}
  local boxes = { direct = { redis = master.url }, sentinel = { redis = k.url },
                  ["wait 1"] = { redis = k.url, wait = { replicas = 1 } }, ["wait 2"] = { redis = k.url, wait = { replicas = 2 } } }
  B.guarded(function()
    for round = 1, ROUNDS do
      -- each round in another order (a machine that slows down mid-run
      -- does not always weigh on the same path); ratios to direct per round
      for j = 1, #paths do
        local p = paths[(j + round - 2) % #paths + 1]
        if os.getenv("BENCH_ONLY") and not p[1]:find(os.getenv("BENCH_ONLY"), 1, true) then goto next end
        local c = master.client()
        c:call("FLUSHALL")
        c:close()
        local wp = io.popen("wrk -t1 -c16 -d" .. B.SECONDS .. "s -s " .. script .. " " .. ng.url .. p[2])
        local out = wp:read("*a")
        wp:close()
        assert(not out:match("Non%-2xx or 3xx responses: (%d+)"), p[1] .. " answered non-2xx: " .. out)
        local rate = assert(tonumber(out:match("Requests/sec:%s*([%d.]+)")), out)
        rates[p[1]] = rates[p[1]] or {}
        rates[p[1]][round] = rate
        -- and one at a time from this process (LuaSocket): the time a put takes
        local box = require("kinot.callback.inbox").new(boxes[p[1]])
        local t0 = core.monotonic()
        for i = 1, 1000 do assert(box:put("seq" .. round .. ":" .. i, "{}", 1)) end
        lat[p[1]] = lat[p[1]] or {}
        lat[p[1]][round] = (core.monotonic() - t0) / 1000
        box.client:close()
        io.stderr:write(string.format("  round %d %-9s %6.0f answered/s\n", round, p[1], rate))
        ::next::
      end
    end
  end, ng, k)
  os.remove(bodies)
  os.remove(script)
  print(string.format("inbox wait  %s, nginx (1 worker), wrk 16 connections, %d s a run, medians of %d rounds;", B.runtime,
    B.SECONDS, ROUNDS))
  print("            a master, two replicas, three Sentinels, all on this machine:")
  local function median(t)
    table.sort(t)
    return t[math.ceil(#t / 2)] or 0
  end
  for _, p in ipairs(paths) do
    local r, ratios = rates[p[1]] or {}, {}
    for round, v in pairs(r) do
      if rates.direct and rates.direct[round] then ratios[#ratios + 1] = v / rates.direct[round] end
    end
    local list, one = {}, {}
    for _, v in pairs(r) do list[#list + 1] = v end
    for _, v in pairs(lat[p[1]] or {}) do one[#one + 1] = v end
    print(string.format("            %-9s %8.0f answered/s  %5.2fx direct (the median of the rounds' ratios);" ..
      " one at a time %6.0f us a put", p[1], median(list), median(ratios), median(one) * 1e6))
  end
end

local function throughput()
  local plain, aof = R.start {}, R.start { aof = true }

  local ng = H.nginx {
    http = [[
      lua_max_running_timers 1024;
      init_by_lua_block {
        local callback = require "kinot.callback"
        -- the POST's arrival, by sn (the instrumentation, the same on every path)
        posted = {}
        samples = { memory = {}, after_handler = {}, inbox = {}, ["inbox+aof"] = {} }
        local function handler_for(name, from_entry)
          return function(ev)
            ngx.update_time()
            local t0 = from_entry and ev.received_at or posted[ev.sn]
            local s = samples[name]
            if t0 then s[#s + 1] = ngx.now() - t0 end
            posted[ev.sn] = nil
            local data = ev.data -- what a receiver typically looks at
            local _ = data.low_battery == 1 or data.car_detected == 1 or ev.command_status == "succeeded"
          end
        end
        local mem = handler_for("memory")
        receive_mem = callback.handler { secret = "]] .. secret .. [[", ack = "immediate", on_status = mem, on_command = mem }
        local after = handler_for("after_handler")
        receive_after = callback.handler { secret = "]] .. secret .. [[", ack = "after_handler", on_status = after,
                                           on_command = after }
        receive_inbox = callback.handler { secret = "]] .. secret .. [[", inbox = { redis = "]] .. plain.url .. [[" } }
        receive_aof = callback.handler { secret = "]] .. secret .. [[", inbox = { redis = "]] .. aof.url .. [[" } }
        run_inbox, run_aof = handler_for("inbox", true), handler_for("inbox+aof", true)
      }
      init_worker_by_lua_block {
        local worker = require "kinot.callback.worker"
        for _, w in ipairs {
          { "]] .. plain.url .. [[", run_inbox }, { "]] .. aof.url .. [[", run_aof } } do
          worker.start { redis = w[1], on_status = w[2], on_command = w[2], loops = ]] .. LOOPS .. [[, count = 50,
                         block = 0.5 }
        end
      }
    ]],
    server = [[
      location = /memory { content_by_lua_block {
        ngx.req.read_body()
        posted[tonumber(ngx.req.get_body_data():match('"sn":(%d+)'))] = ngx.now()
        receive_mem()
      } }
      location = /after_handler { content_by_lua_block {
        ngx.req.read_body()
        posted[tonumber(ngx.req.get_body_data():match('"sn":(%d+)'))] = ngx.now()
        receive_after()
      } }
      location = /inbox { content_by_lua_block {
        ngx.req.read_body()
        posted[tonumber(ngx.req.get_body_data():match('"sn":(%d+)'))] = ngx.now()
        receive_inbox()
      } }
      location = /inbox_aof { content_by_lua_block {
        ngx.req.read_body()
        posted[tonumber(ngx.req.get_body_data():match('"sn":(%d+)'))] = ngx.now()
        receive_aof()
      } }
      location = /pid { content_by_lua_block { ngx.say(ngx.worker.pid()) } }
      location = /jit { content_by_lua_block {
        if ngx.var.arg_on == "1" then require("jit.p").start(ngx.var.arg_mode, ngx.var.arg_file)
        else require("jit.p").stop() end
        ngx.say("ok")
      } }
      location = /stats { content_by_lua_block {
        local name = ngx.unescape_uri(ngx.var.arg_name)
        local s = samples[name]
        table.sort(s)
        local n = #s
        local function q(p) return n > 0 and s[math.max(1, math.ceil(n * p))] or -1 end
        ngx.say(n, " ", q(0.5), " ", q(0.99))
        samples[name] = {}
      } }
    ]],
  }

  local CPU, PROFILE = os.getenv("BENCH_CPU") == "1", os.getenv("BENCH_PROFILE")
  local profile_file = os.tmpname()
  local function wrk(path, pace_ms, seconds)
    local p = io.popen((pace_ms and string.format("PACE_MS=%.4f ", pace_ms) or "") .. "wrk -t1 -c16 -d" ..
      (seconds or B.SECONDS) .. "s -s " .. script .. " " .. ng.url .. path)
    local out = p:read("*a")
    p:close()
    local non2xx = out:match("Non%-2xx or 3xx responses: (%d+)")
    assert(not non2xx, path .. " answered non-2xx: " .. out)
    local reqs = assert(tonumber(out:match("(%d+) requests in")), out)
    assert(path == "/memory" or path == "/after_handler" or reqs < N, "a run posted more callbacks than there are distinct bodies: raise BENCH_INBOX_BODIES")
    return assert(tonumber(out:match("Requests/sec:%s*([%d.]+)")), out), reqs
  end

  -- handled so far: a run's samples, once its backlog is drained
  local function stats(name)
    local n, p50, p99 = H.raw("GET", ng.url .. "/stats?name=" .. name:gsub("%+", "%%2B")).body:match("(%S+) (%S+) (%S+)")
    return tonumber(n), tonumber(p50), tonumber(p99)
  end
  local function backlog(r)
    local c = r.client()
    local len = tonumber(c:call("XLEN", "kinot:callbacks")) or 0
    c:close()
    return len
  end

  local runs = { { "memory", "/memory" }, { "after_handler", "/after_handler" }, { "inbox", "/inbox", plain },
                 { "inbox+aof", "/inbox_aof", aof } }
  local results = {}
  local ng_pid = CPU and assert(tonumber(H.raw("GET", ng.url .. "/pid").body))
  -- (BENCH_CPU) Redis's commandstats since the last CONFIG RESETSTAT:
  -- "name calls usec_per_call" lines, busiest first
  local function commandstats(r)
    local c = r.client()
    local info = c:call("INFO", "commandstats")
    c:call("CONFIG", "RESETSTAT")
    c:close()
    local rows = {}
    for name, calls, usec, per in info:gmatch("cmdstat_(%S-):calls=(%d+),usec=(%d+),usec_per_call=([%d.]+)") do
      rows[#rows + 1] = { name = name, calls = tonumber(calls), usec = tonumber(usec), per = tonumber(per) }
    end
    table.sort(rows, function(a, b) return a.usec > b.usec end)
    return rows
  end
  local cpu_lines = {}
  B.guarded(function()
    for round = 1, ROUNDS do
      for _, run in ipairs(runs) do
        for _, r in ipairs { plain, aof } do
          local c = r.client()
          c:call("FLUSHALL")
          if CPU then c:call("CONFIG", "RESETSTAT") end
          c:close()
        end
        local server = run[3] or plain
        local cpu0 = CPU and { B.cpu_of(ng_pid), B.cpu_of(server.pid()) }
        local profiled = PROFILE and run[1] == (os.getenv("BENCH_PROFILE_PATH") or "inbox")
        if profiled then
          H.raw("GET", ng.url .. "/jit?on=1&mode=" .. PROFILE .. "&file=" .. profile_file)
        end
        local rate, reqs = wrk(run[2])
        if profiled then H.raw("GET", ng.url .. "/jit?on=0") end
        -- handled during the run: all posted but the backlog left at its
        -- end; then the rest drains, so the next run starts with idle workers
        local left = run[3] and backlog(run[3]) or 0
        local t0 = core.monotonic()
        if run[3] and not H.wait_for(function() return backlog(run[3]) == 0 end, 60) then
          error(run[1] .. ": the workers left " .. backlog(run[3]) .. " entries for a minute; nginx's log ends with:\n" ..
            ng.log():sub(-3000))
        end
        local drain = core.monotonic() - t0
        if CPU then
          local per = 1e6 / reqs
          -- (not wrk's: its init(), which loads every body, costs it more than a run)
          local line = string.format("  round %d %-13s CPU per callback: nginx worker %5.1f us, redis-server %5.1f us",
            round, run[1], (B.cpu_of(ng_pid) - cpu0[1]) * per, (B.cpu_of(server.pid()) - cpu0[2]) * per)
          if run[3] then
            local stats_ = {}
            for _, x in ipairs(commandstats(run[3])) do
              stats_[#stats_ + 1] = string.format("%s %.2f/cb %.1f us", x.name, x.calls / reqs, x.per)
            end
            line = line .. "\n      commandstats (calls per callback, usec_per_call): " .. table.concat(stats_, ", ")
          end
          cpu_lines[#cpu_lines + 1] = line
          io.stderr:write(line, "\n")
        end
        core.sleep(0.3)
        local n, p50, p99 = stats(run[1])
        -- (the memory paths dedupe in memory: a body posted again within its window is not handled again)
        assert(n >= math.min(reqs, N) * 0.99, run[1] .. ": " .. n .. " handled of " .. reqs .. " posted")
        results[run[1]] = results[run[1]] or {}
        table.insert(results[run[1]], { rate = rate, handled = (reqs - left) / B.SECONDS, n = n, reqs = reqs,
                                        p50 = p50, p99 = p99, round = round, drain = drain })
        io.stderr:write(string.format("  round %d %-13s %6.0f answered/s, %6d posted, %6d left at the end (drained in %.1f s)\n",
          round, run[1], rate, reqs, left, drain))
      end
    end
    -- at light load: one callback at a time, so no backlog stands between
    -- the POST and the handler
    for k, run in ipairs(runs) do
      for i = 1, 1000 do
        assert(H.raw("POST", ng.url .. run[2], body_of(N + k * 1000 + i), { ["Content-Type"] = "application/json" }).status == 200)
      end
      if run[3] then H.wait_for(function() return backlog(run[3]) == 0 end, 60) end
      core.sleep(0.3)
      local n, p50, p99 = stats(run[1])
      results[run[1]].light = { n = n, p50 = p50, p99 = p99 }
    end
    -- paced: half the inbox's median answered/s, held steady for twice a
    -- run; a 1 s run first finds the answer time wrk's delay() adds to
    -- each connection's period
    local rates = {}
    for i, x in ipairs(results.inbox) do rates[i] = x.rate end
    table.sort(rates)
    local target = rates[math.ceil(#rates / 2)] / 2
    local function flush()
      local c = plain.client()
      c:call("FLUSHALL")
      c:close()
    end
    flush()
    local pace = 16 * 1000 / target
    local got = wrk("/inbox", pace, 1)
    pace = math.max(0, pace - (16 * 1000 / got - pace))
    H.wait_for(function() return backlog(plain) == 0 end, 60)
    core.sleep(0.3)
    stats("inbox")
    flush()
    local seconds = 2 * B.SECONDS
    local rate, reqs = wrk("/inbox", pace, seconds)
    local left = backlog(plain)
    H.wait_for(function() return backlog(plain) == 0 end, 60)
    core.sleep(0.3)
    local n, p50, p99 = stats("inbox")
    assert(n >= reqs * 0.99, "paced: " .. n .. " handled of " .. reqs .. " posted")
    results.paced = { target = target, rate = rate, handled = (reqs - left) / seconds, n = n, p50 = p50, p99 = p99,
                      left = left, seconds = seconds }
  end, ng, plain, aof)
  os.remove(bodies)
  os.remove(script)

  local function median(list, key)
    local t = {}
    for i, x in ipairs(list) do t[i] = x[key] end
    table.sort(t)
    return t[math.ceil(#t / 2)]
  end
  print(string.format("inbox  %s, nginx (1 worker), wrk 16 connections, %d s a run, medians of %d rounds, %d worker loop(s):",
    B.runtime, B.SECONDS, ROUNDS, LOOPS))
  print("       (memory: the in-memory queue, ack = \"immediate\"; after_handler: the handler in the request, in memory)")
  print("       path            answered/s   handled/s   POST->handler p50, p99   one at a time: p50, p99   (ngx.now: 1 ms steps)")
  for _, run in ipairs(runs) do
    local list = results[run[1]]
    print(string.format("       %-13s %11.0f %11.0f %12.1f ms %7.1f ms %12.1f ms %7.1f ms", run[1], median(list, "rate"),
      median(list, "handled"), 1000 * median(list, "p50"), 1000 * median(list, "p99"),
      1000 * list.light.p50, 1000 * list.light.p99))
  end
  -- the inbox against memory round by round (each round's runs one after
  -- the other: on a shared machine the load moves between rounds)
  local ratios, shown = {}, {}
  for i, x in ipairs(results.inbox) do
    ratios[i] = { r = x.rate / results.memory[i].rate }
    shown[i] = string.format("%.0f%%", 100 * ratios[i].r)
  end
  print(string.format("       inbox / memory answered/s, round by round: %s; median %.0f%%", table.concat(shown, ", "),
    100 * median(ratios, "r")))
  for _, l in ipairs(cpu_lines) do print(l) end
  if PROFILE then
    print("jit.p " .. PROFILE .. " of the nginx worker, the last round's " .. (os.getenv("BENCH_PROFILE_PATH") or "inbox") ..
      " run (top lines):")
    local f = io.popen("head -" .. (os.getenv("BENCH_PROFILE_LINES") or "40") .. " " .. profile_file)
    print((f:read("*a"):gsub("\n$", "")))
    f:close()
  end
  os.remove(profile_file)
  local pc = results.paced
  print(string.format("       paced inbox: %.0f posted/s held for %d s (target %.0f: half the inbox's median answered/s), " ..
    "%.0f handled/s, %d left at the end; POST->handler p50 %.1f ms, p99 %.1f ms (%d events)",
    pc.rate, pc.seconds, pc.target, pc.handled, pc.left, 1000 * pc.p50, 1000 * pc.p99, pc.n))
end

-- drain: `kinot worker`, a plain process under this runtime, with a
-- handler that looks at the event and returns, against a stream filled
-- beforehand as the inbox fills it (id, body, at); timed from the
-- process's start until the stream is empty (every entry acknowledged
-- and deleted).  BENCH_DRAIN_COUNTS: the --count of each run ("default"
-- for none; default,10 by default: 10 was the default before 0.2.0); the
-- checkout's own bin/kinot unless BENCH_KINOT_ROOT names another tree (a
-- commit to compare with, e.g. BENCH_DRAIN_COUNTS=default).
local function drain()
  local n = tonumber(os.getenv("BENCH_DRAIN") or "100000")
  local root = os.getenv("BENCH_KINOT_ROOT") or H.root
  local lua = rawget(_G, "jit") and "luajit" or "lua5.4"
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  do
    local f = assert(io.open(dir .. "/bench_drain_handler.lua", "w"))
    f:write([[
return function(ev)
  local data = ev.data -- what a receiver typically looks at
  local _ = data.low_battery == 1 or data.car_detected == 1 or ev.command_status == "succeeded"
end
]])
    f:close()
  end
  local r = R.start {}
  local out = {}
  B.guarded(function()
    local counts = {}
    for x in (os.getenv("BENCH_DRAIN_COUNTS") or "default,10"):gmatch("[^,]+") do counts[#counts + 1] = x end
    for _, count in ipairs(counts) do
      local c = r.client { timeout = 30 }
      c:call("FLUSHALL")
      local at = string.format("%.3f", os.time())
      for i = 1, n, 1000 do
        local cmds = {}
        for j = i, math.min(n, i + 999) do
          local body = body_of(j)
          cmds[#cmds + 1] = { "XADD", "kinot:callbacks", "*", "id", body:match('"sign":"(%x+)"'), "body", body, "at", at }
        end
        assert(c:pipeline(cmds))
      end
      assert(tonumber(c:call("XLEN", "kinot:callbacks")) == n)
      local log = dir .. "/worker.log"
      local cmd = string.format("cd %s && LUA_PATH='%s/?.lua;;' KINOT_REDIS_URL='%s' exec %s bin/kinot worker " ..
        "--handler bench_drain_handler --block 0.2 %s >%s 2>&1 & echo $!", root, dir, r.url, lua,
        count == "default" and "" or ("--count " .. count), log)
      local t0 = core.monotonic()
      local p = io.popen(cmd)
      local pid = assert(tonumber(p:read("*l")))
      p:close()
      local ok = H.wait_for(function() return tonumber(c:call("XLEN", "kinot:callbacks")) == 0 end, 120)
      local t = core.monotonic() - t0
      -- its own count of handlers run (SIGUSR1: a line of counts)
      os.execute("kill -USR1 " .. pid)
      local handled
      H.wait_for(function()
        handled = tonumber((H.read(log) or ""):match("counts: (%d+) handled"))
        return handled
      end, 5)
      os.execute("kill " .. pid)
      assert(handled == n, "the worker ran " .. tostring(handled) .. " handlers of " .. n .. ": " .. (H.read(log) or ""))
      assert(ok, "the worker left " .. c:call("XLEN", "kinot:callbacks") .. " entries: " .. (H.read(log) or ""))
      local pending = tonumber(c:call("XPENDING", "kinot:callbacks", "kinot")[1])
      assert(pending == 0, pending .. " entries left pending")
      -- every one ran its handler: none went to the dead-letter stream
      local dead = tonumber(c:call("XLEN", "kinot:callbacks:dead"))
      assert(dead == 0, dead .. " entries went to the dead-letter stream: " .. (H.read(log) or ""))
      c:close()
      out[#out + 1] = { count = count, rate = n / t, t = t }
      io.stderr:write(string.format("  drain --count %s: %d events in %.2f s\n", count, n, t))
    end
  end, r)
  os.execute("rm -rf " .. dir)
  print(string.format("drain  %s, `kinot worker` (%s), trivial handler, %d stored events, from its start to an empty stream:",
    B.runtime, root == H.root and "this checkout" or root, n))
  for _, x in ipairs(out) do
    print(string.format("       --count %-8s %9.0f events/s  (%.2f s)", x.count, x.rate, x.t))
  end
end

-- `BENCH_AB_ROOT=<another checkout, built> luajit bench/inbox.lua ab`:
-- this checkout's inbox against another's (a commit to compare with: `git
-- worktree add /tmp/base <commit>`, `make build` there), paired.  On a
-- shared machine the load moves between runs by more than a change is
-- worth (the same code measured 7k to 15k answered/s minutes apart), and
-- three rounds' medians cannot tell 10% from noise: here each tree runs
-- its own redis-server and nginx (the same handlers and worker loops as
-- `wrk`, its helpers and Lua its own), both up at once, and short wrk runs
-- (BENCH_SECONDS) alternate between them, BENCH_AB_PAIRS pairs (12), each
-- pair in the other order; per run the answered/s of /inbox and of
-- /memory, and the CPU per callback of the nginx worker and of
-- redis-server.  Shown: each tree's medians, then this tree's answered/s
-- over the other's pair by pair (median, mean and its standard error,
-- pairs faster), and the same for the nginx worker's CPU.
local function ab()
  local other = os.getenv("BENCH_AB_ROOT")
  assert(other and other ~= "", "ab: BENCH_AB_ROOT names the checkout to compare with (built: make build there)")
  local n_pairs = math.floor(tonumber(os.getenv("BENCH_AB_PAIRS") or "12"))
  local lua = rawget(_G, "jit") and "luajit" or "lua5.4"
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  -- the servers' script, run in each tree (package.path: that tree first)
  local f = assert(io.open(dir .. "/serve.lua", "w"))
  f:write([[
package.path = "./?.lua;" .. package.path
local B = require "bench.support"
local R = require "redis_server"
local H = require "helpers"
local core = require "kinot.core"
local name, dir = arg[1], arg[2]
local r = R.start {}
local ok, ng = pcall(H.nginx, {
  http = [=[
    lua_max_running_timers 1024;
    init_by_lua_block {
      local callback = require "kinot.callback"
      local function h(ev)
        local data = ev.data -- what a receiver typically looks at
        local _ = data.low_battery == 1 or data.car_detected == 1 or ev.command_status == "succeeded"
      end
      receive_mem = callback.handler { secret = "]=] .. arg[3] .. [=[", ack = "immediate", on_status = h, on_command = h }
      receive_inbox = callback.handler { secret = "]=] .. arg[3] .. [=[", inbox = { redis = "]=] .. r.url .. [=[" } }
      run_inbox = h
    }
    init_worker_by_lua_block {
      require("kinot.callback.worker").start { redis = "]=] .. r.url .. [=[", on_status = run_inbox,
        on_command = run_inbox, loops = ]=] .. arg[4] .. [=[, count = 50, block = 0.5 }
    }
  ]=],
  server = [=[
    location = /memory { content_by_lua_block { receive_mem() } }
    location = /inbox { content_by_lua_block { receive_inbox() } }
    location = /pid { content_by_lua_block { ngx.say(ngx.worker.pid()) } }
  ]=],
})
if not ok then
  r.stop()
  error(ng, 0)
end
B.guarded(function()
  local f = assert(io.open(dir .. "/" .. name .. ".tmp", "w"))
  f:write(ng.url, " ", H.raw("GET", ng.url .. "/pid").body:match("%d+"), " ", r.pid(), " ", r.url, "\n")
  f:close()
  os.rename(dir .. "/" .. name .. ".tmp", dir .. "/" .. name .. ".up")
  -- (up to an hour: a bench that died leaves nothing running for long)
  local t0 = core.monotonic()
  while not io.open(dir .. "/" .. name .. ".stop") and core.monotonic() - t0 < 3600 do core.sleep(0.2) end
end, ng, r)
os.remove(dir .. "/" .. name .. ".up")
]])
  f:close()
  local trees = { { name = "this", root = H.root }, { name = "other", root = other } }
  for _, t in ipairs(trees) do
    os.execute(string.format("cd %s && %s %s/serve.lua %s %s %s %d >%s/%s.log 2>&1 &", t.root, lua, dir, t.name, dir,
      secret, LOOPS, dir, t.name))
  end
  local res = { this = { inbox = {}, memory = {} }, other = { inbox = {}, memory = {} } }
  local ok, err = pcall(function()
    for _, t in ipairs(trees) do
      local up = H.wait_for(function() return H.read(dir .. "/" .. t.name .. ".up") end, 60)
      assert(up, t.name .. " (" .. t.root .. ") did not start: " .. (H.read(dir .. "/" .. t.name .. ".log") or ""))
      t.url, t.ng_pid, t.r_pid, t.r_url = H.read(dir .. "/" .. t.name .. ".up"):match("(%S+) (%S+) (%S+) (%S+)")
    end
    for i = 1, n_pairs do
      for k = 1, 2 do
        local t = trees[(i + k) % 2 + 1]
        for _, path in ipairs { "inbox", "memory" } do
          local c = require("kinot.redis").new(t.r_url)
          assert(c:call("FLUSHALL"))
          c:close()
          local c0, r0 = B.cpu_of(t.ng_pid), B.cpu_of(t.r_pid)
          local p = io.popen("wrk -t1 -c16 -d" .. B.SECONDS .. "s -s " .. script .. " " .. t.url .. "/" .. path)
          local out = p:read("*a")
          p:close()
          assert(not out:match("Non%-2xx or 3xx responses: (%d+)"), t.name .. " /" .. path .. " answered non-2xx: " .. out)
          local reqs = assert(tonumber(out:match("(%d+) requests in")), out)
          assert(path == "memory" or reqs < N, "a run posted more callbacks than there are distinct bodies: raise BENCH_INBOX_BODIES")
          core.sleep(0.3) -- (the worker loops' backlog, if any)
          table.insert(res[t.name][path], { rate = assert(tonumber(out:match("Requests/sec:%s*([%d.]+)"))),
            ng = (B.cpu_of(t.ng_pid) - c0) * 1e6 / reqs, rd = (B.cpu_of(t.r_pid) - r0) * 1e6 / reqs })
        end
        local x, m = res[t.name].inbox[i], res[t.name].memory[i]
        io.stderr:write(string.format("  pair %2d %-5s inbox %6.0f/s (nginx %5.1f us, redis %5.1f us a callback), " ..
          "memory %6.0f/s: %3.0f%%\n", i, t.name, x.rate, x.ng, x.rd, m.rate, 100 * x.rate / m.rate))
      end
    end
  end)
  for _, t in ipairs(trees) do io.open(dir .. "/" .. t.name .. ".stop", "w"):close() end
  for _, t in ipairs(trees) do
    H.wait_for(function() return not H.read(dir .. "/" .. t.name .. ".up") end, 30)
  end
  os.execute("rm -rf " .. dir)
  os.remove(bodies)
  os.remove(script)
  if not ok then error(err, 0) end
  local function median(t)
    local s = {}
    for i, v in ipairs(t) do s[i] = v end
    table.sort(s)
    return s[math.ceil(#s / 2)]
  end
  local function column(list, key)
    local t = {}
    for i, x in ipairs(list) do t[i] = x[key] end
    return t
  end
  print(string.format("inbox ab  %s, each tree its own nginx (1 worker, %d worker loops) and redis-server, wrk 16 " ..
    "connections, %d s a run, %d pairs:", B.runtime, LOOPS, B.SECONDS, n_pairs))
  for _, t in ipairs(trees) do
    local r = res[t.name]
    local ratios = {}
    for i, x in ipairs(r.inbox) do ratios[i] = x.rate / r.memory[i].rate end
    print(string.format("          %-5s %s: inbox %6.0f answered/s (nginx %5.1f us, redis %5.1f us a callback), memory " ..
      "%6.0f/s, inbox / memory %3.0f%% (medians)", t.name, t.root, median(column(r.inbox, "rate")),
      median(column(r.inbox, "ng")), median(column(r.inbox, "rd")), median(column(r.memory, "rate")), 100 * median(ratios)))
  end
  for _, k in ipairs { { "rate", "inbox answered/s", 1 }, { "ng", "nginx CPU a callback", -1 } } do
    local q = {}
    for i, x in ipairs(res.this.inbox) do q[i] = x[k[1]] / res.other.inbox[i][k[1]] end
    local sum, better = 0, 0
    for _, v in ipairs(q) do
      sum = sum + v
      if (v - 1) * k[3] > 0 then better = better + 1 end
    end
    local mean, var = sum / #q, 0
    for _, v in ipairs(q) do var = var + (v - mean) ^ 2 end
    local se = #q > 1 and math.sqrt(var / (#q - 1) / #q) or 0
    print(string.format("          this / other, pair by pair, %s: median %.3f, mean %.3f +- %.3f (standard error), " ..
      "better in %d of %d", k[2], median(q), mean, se, better, #q))
  end
end

if MODE == "ab" then ab() end
if MODE == "wait" then wait_cost() end
if MODE == "all" or MODE == "wrk" then throughput() end
if MODE == "all" or MODE == "drain" then drain() end
