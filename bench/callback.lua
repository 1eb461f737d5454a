-- Callback verification: callback.verify of a typical lock status body
-- against the baseline of cjson.decode alone on the same body.  Then, with
-- wrk against one nginx worker, requests per second of
--   bare      a content_by_lua handler that reads the body and answers the
--             same JSON: the baseline of the target;
--   floor     bare, plus the least any verifying handler must add: the
--             body as a Lua string, and the MD5 of a typical callback's
--             canonical string and key;
--   promises' floor
--             floor, plus exactly the lua_shared_dict operations the
--             promises of docs/callbacks.md need for a new delivery, on
--             keys distinct at each request, in dicts as full as the
--             handler's: the order check (a get and a set of the device's
--             newest time, in the dict of done marks), the claim (safe_add
--             of an in-progress mark, a get of the done mark) and the
--             settlement (a set of the done mark, a get and a delete of
--             the in-progress mark); nothing else.  No handler keeping
--             these promises can beat it: our handler's ratio to it says
--             how close to that it is, and its own ratio to bare whether
--             the issue's goal is in reach without weakening a promise;
--   by hand   what a user writes without the SDK: cjson.decode, the
--             canonical string built in Lua (sorted keys, tostring values),
--             ngx.md5, compare, dedupe by the sign in a lua_shared_dict
--             (add), then the same on_status work (it answers 200 either
--             way; how many bodies it could not verify is shown);
--   one body  callback.handler receiving the same signed callback again and
--             again: verified each time, acknowledged as a duplicate;
--   distinct  callback.handler receiving 50,000 distinct signed callbacks
--             in turn (lock and sensor status changes, command results,
--             stamped with the current time), more than its dedupe dict
--             holds: each one verified, judged fresh and in order,
--             remembered and handed to on_status / on_command, which read
--             its data (the share of deliveries that reached a handler is
--             shown: a body seen again while its dedupe mark lives would
--             be a cheaper duplicate);
-- the last two for each acknowledgement: ack = "immediate" (200 at once,
-- the handler in a timer) and ack = "after_handler" (the default: the
-- handler in the request, 200 once it returned).  Dedupe is a
-- lua_shared_dict for each (dedupe = "kinot_<ack>"), as for by hand.
-- Each runs BENCH_SECONDS, in BENCH_ROUNDS interleaved rounds (default 3),
-- each round's paths in another order (rotated: no path always runs
-- right after the same one); medians and ranges are shown, with the load
-- average before and after, and the issue's two ratios for after_handler,
-- distinct: by the rates, and by the nginx worker's CPU time a request
-- (/proc), which the other work of a shared machine disturbs far less than
-- the rates; then its ratio to the promises' floor, and the promises'
-- floor's own ratios to bare and by hand (below 0.75x bare, the issue's
-- goal cannot be met without weakening a promise: said so, by the CPU a
-- request).  BENCH_ONLY=wrk: the wrk part alone (no callback.verify loop).
-- Where the time goes, in the nginx worker, during the after_handler,
-- distinct rounds only: BENCH_PROFILE=<jit.p mode> (e.g. Fl, vF: LuaJIT's
-- sampling profiler, the last round; its top lines are printed) and
-- BENCH_JITV=1 (LuaJIT's trace log, the first round: the aborted traces,
-- counted, are printed).  BENCH_BUDGET=1:
-- after the rounds, the same worker times each step of a delivery alone,
-- in a loop over the distinct bodies (no HTTP), with dicts of its own as
-- full as the bench's: the microseconds of each step, the best of 3 passes
-- over 10,000 bodies each.  BENCH_SPLIT=1: two more rows, to see in
-- the server what the budget sees in a loop:
--   floor + verify   floor, with event.check of the body (scan, canonical
--                    string, MD5, the data and event tables) for its MD5;
--   receiver alone   kinot.callback.receiver's receive (after_handler,
--                    dicts of its own as full as the handler's) called from
--                    a location like bare's: callback.handler without its
--                    glue (the method check, the answer's status, logs).
--   make bench   (or: luajit bench/callback.lua after make build)
package.path = "./?.lua;" .. package.path
local B = require "bench.support"
local H = require "helpers"
local callback = require "kinot.callback"
local cjson = require "cjson"

local secret = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"

-- the reference's bodies (bench/support.lua), signed as the platform signs them
local function lock_status(i) return H.signed(B.lock_status_body(419600000 + i, i), secret) end
local function sensor_status(i) return H.signed(B.sensor_status_body(419700000 + i, i), secret) end
local function command_result(i) return H.signed(B.command_result_body(419600000 + i, i), secret) end

local body = lock_status(1)
assert(callback.verify(body, { secret = secret }))

if os.getenv("BENCH_ONLY") ~= "wrk" then
  local opts = { secret = secret }
  local verify = callback.verify
  local v = B.rate(function() verify(body, opts) end, B.SECONDS, 1000)
  local decode = cjson.decode
  local d = B.rate(function() decode(body) end, B.SECONDS, 1000)
  print(string.format("verify %-21s callback.verify %9.0f/s   cjson.decode alone %9.0f/s   %.0f%%",
    B.runtime, v, d, 100 * v / d))
end
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "3")
assert(ROUNDS and ROUNDS >= 1, "BENCH_ROUNDS must be a number >= 1")

-- wrk: only once (from LuaJIT, nginx's own Lua), and only where wrk exists
if not rawget(_G, "jit") or not H.execute("command -v wrk >/dev/null 2>&1") then return end

local N = 50000
local function write_bodies(path, n)
  local f = assert(io.open(path, "w"))
  for i = 1, n do
    local r = i % 10
    f:write(r < 7 and lock_status(i) or r < 9 and sensor_status(i) or command_result(i), "\n")
  end
  f:close()
end
local wrk_script = B.wrk_post_script -- (every request preformatted once)
local many, one = os.tmpname(), os.tmpname()
write_bodies(many, N)
write_bodies(one, 1)
local scripts = { many = wrk_script(many), one = wrk_script(one) }

local ng = H.nginx {
  http = [[
    # dedupe dicts holding fewer marks than the 50,000 distinct bodies: a
    # body comes round again forgotten, as a new delivery (shown below)
    # (one for each ack: a body one handled is not a duplicate for the other)
    lua_shared_dict kinot_immediate 1m;
    lua_shared_dict kinot_after_handler 1m;
    lua_shared_dict kinot_after_handler_busy 1m;
    lua_shared_dict hand_dedupe 1m;
    # the promises' floor's: the same sizes as the handler's
    lua_shared_dict promises_floor 1m;
    lua_shared_dict promises_floor_busy 1m;
    # BENCH_SPLIT's receiver alone: the same sizes as the handler's
    lua_shared_dict split 1m;
    lua_shared_dict split_busy 1m;
    # the budget's own (BENCH_BUDGET): the same sizes as the handler's
    lua_shared_dict budget_order 1m;
    lua_shared_dict budget 1m;
    lua_shared_dict budget_busy 1m;
    lua_shared_dict budget_whole 1m;
    lua_shared_dict budget_whole_busy 1m;
    init_by_lua_block {
      -- what a receiver typically does: look at the new state, keep a count
      local counts = { low_battery = 0, occupied = 0, commands = 0, hand = 0, hand_refused = 0,
                       runs = { immediate = 0, after_handler = 0, hand = 0 } }
      local function on_status(data)
        if data.low_battery == 1 then counts.low_battery = counts.low_battery + 1 end
        if data.car_detected == 1 then counts.occupied = counts.occupied + 1 end
      end
      local function on_command(status)
        if status == "succeeded" then counts.commands = counts.commands + 1 end
      end
      local runs = counts.runs
      local callback = require('kinot.callback')
      for _, ack in ipairs { "immediate", "after_handler" } do
        _G["receive_" .. ack] = callback.handler {
          secret = ']] .. secret .. [[', ack = ack, dedupe = "kinot_" .. ack,
          on_status = function(ev) runs[ack] = runs[ack] + 1 on_status(ev.data) end,
          on_command = function(ev) runs[ack] = runs[ack] + 1 on_command(ev.command_status) end,
        }
      end
      handled = counts
      -- BENCH_SPLIT: the receiver alone and event.check alone, as the handler runs them
      split_receiver = require("kinot.callback.receiver").new({ secret = ']] .. secret .. [[',
        ack = "after_handler", dedupe = "split", clock = ngx.time,
        on_status = function(ev) on_status(ev.data) end, on_command = function(ev) on_command(ev.command_status) end,
      }, "callback.handler")
      split_secrets = { ']] .. secret .. [[' }
      -- the floor's MD5: a typical callback's canonical string and key
      local md5_of, canonical = require('kinot.core').callback_digest, ']] .. assert(callback.canonical(body)) .. [['
      floor_md5 = function() return md5_of(canonical, ']] .. secret .. [[') end

      -- the promises' floor: the floor and the 7 dict operations of a new
      -- delivery (kinot.callback.freshness, kinot.callback.dict_store), on
      -- keys no request used before (as distinct bodies give the handler,
      -- whose dicts forget them before they come round), with the values
      -- and times the handler writes
      local done, marks, n = ngx.shared.promises_floor, ngx.shared.promises_floor_busy, 0
      local KEEP, TTL, LEASE = 48 * 3600 + 300, 3600, 60
      promises_floor = function()
        ngx.req.read_body()
        local _ = ngx.req.get_body_data()
        local digest = floor_md5()
        n = n + 1
        local id, device, t = digest .. n, "kinot:s:" .. n, 1700000000 + n
        local newest = done:get(device) -- the order check: the device's newest time, then this one
        if not newest or newest <= t then done:set(device, t, KEEP) end
        marks:safe_add(id, n, LEASE) -- the claim: the in-progress mark, then a look at done
        if not done:get(id) then
          done:set(id, true, TTL) -- the settlement: done, then the mark let go
          if marks:get(id) == n then marks:delete(id) end
        end
        ngx.header["Content-Type"] = "application/json"
        ngx.print('{"code":0,"message":"OK"}')
      end

      -- by hand: a receiver written without the SDK
      local cjson = require "cjson.safe"
      local seen = ngx.shared.hand_dedupe
      local null, concat, sort, tostring, upper = cjson.null, table.concat, table.sort, tostring, string.upper
      local key = "&key=]] .. secret .. [["
      by_hand = function()
        ngx.req.read_body()
        local doc = cjson.decode(ngx.req.get_body_data() or "")
        ngx.header["Content-Type"] = "application/json"
        if type(doc) ~= "table" then
          ngx.status = 400
          return ngx.print('{"code":400,"message":"not JSON"}')
        end
        local names = {}
        for k, v in pairs(doc) do
          if k ~= "sign" and v ~= "" and v ~= null then names[#names + 1] = k end
        end
        sort(names)
        for i, k in ipairs(names) do
          local v = doc[k]
          names[i] = k .. "=" .. (type(v) == "table" and cjson.encode(v) or tostring(v))
        end
        counts.hand = counts.hand + 1
        if upper(ngx.md5(concat(names, "&") .. key)) ~= doc.sign then
          counts.hand_refused = counts.hand_refused + 1 -- it would answer 401
        end
        -- dedupe by the sign: handled once (a redelivery is acknowledged)
        if seen:add(doc.sign or "", true, 3600) then
          runs.hand = runs.hand + 1
          if doc.guid then on_command(doc.commnad_status) else on_status(doc) end
        end
        ngx.print('{"code":0,"message":"OK"}')
      end
    }
  ]],
  server = [[
    location = /immediate { content_by_lua_block { receive_immediate() } }
    location = /after_handler { content_by_lua_block { receive_after_handler() } }
    location = /hand { content_by_lua_block { by_hand() } }
    location = /promises { content_by_lua_block { promises_floor() } }
    location = /split_verify { content_by_lua_block {
      ngx.req.read_body()
      local ev = require("kinot.callback.event").check(ngx.req.get_body_data(), split_secrets, 65536)
      assert(ev, "the body did not verify")
      ngx.header["Content-Type"] = "application/json"
      ngx.print('{"code":0,"message":"OK"}')
    } }
    location = /split_receive { content_by_lua_block {
      ngx.req.read_body()
      local status, answer = split_receiver:receive(ngx.req.get_body_data())
      assert(status == 200, answer)
      ngx.header["Content-Type"] = "application/json"
      ngx.print(answer)
    } }
    location = /bare { content_by_lua_block {
      ngx.req.read_body()
      ngx.header["Content-Type"] = "application/json"
      ngx.print('{"code":0,"message":"OK"}')
    } }
    location = /floor { content_by_lua_block {
      ngx.req.read_body()
      local _ = ngx.req.get_body_data()
      floor_md5()
      ngx.header["Content-Type"] = "application/json"
      ngx.print('{"code":0,"message":"OK"}')
    } }
    location = /budget { content_by_lua_block {
      -- each step of a delivery alone, as callback.handler runs it
      local monotonic = require("kinot.core").monotonic
      local event = require "kinot.callback.event"
      local freshness = require "kinot.callback.freshness"
      local receiver = require "kinot.callback.receiver"
      local secrets = { "]] .. secret .. [[" }
      local bodies = {}
      for line in io.lines(ngx.var.arg_bodies) do bodies[#bodies + 1] = line end
      local K, n = 10000, 0
      local rcv = receiver.new({ secret = secrets[1], ack = "after_handler", dedupe = "budget_whole", clock = ngx.time,
        on_status = function(ev) n = n + (ev.data.low_battery or 0) end,
        on_command = function(ev) if ev.command_status == "succeeded" then n = n + 1 end end }, "callback.handler")
      local fresh = freshness.new { dict = ngx.shared.budget_order, now = ngx.time }
      local store = require("kinot.callback.dict_store").new(ngx.shared.budget, ngx.shared.budget_busy, 3600, 60, "b")
      local big, busy = ngx.shared.budget, ngx.shared.budget_busy
      local evs, ids, keys = {}, {}, {}
      for i = 1, #bodies do
        evs[i] = assert(event.check(bodies[i], secrets, 65536))
        ids[i] = evs[i].id
        keys[i] = "budget:" .. i
      end
      local steps = {
        { "verify: event.check (C scan, canonical string, MD5; the data and event tables)",
          function(i) event.check(bodies[i], secrets, 65536) end },
        { "freshness and order: fresh:check (a get and a set in a full dict)", function(i) fresh:check(evs[i]) end },
        { "dedupe: store:claim + store:settle (safe_add, get; set, get, delete)", function(i)
          local _, token = store:claim(ids[i]) store:settle(ids[i], token, true) end },
        { "handing over: rcv:dispatch (pcall of on_status / on_command)", function(i) rcv:dispatch(evs[i]) end },
        { "the whole receive (all of the above and the glue)", function(i) rcv:receive(bodies[i]) end },
        { "  one get in the full dict", function(i) big:get(keys[i]) end },
        { "  one set in the full dict (evicting)", function(i) big:set(keys[i], i, 3600) end },
        { "  safe_add + delete in the dict of marks", function(i) busy:safe_add(ids[i], i, 60) busy:delete(ids[i]) end },
        { "  one get in the dict of marks", function(i) busy:get(ids[i]) end },
      }
      for _, step in ipairs(steps) do
        local best = math.huge
        for pass = 0, 2 do
          local from = (pass * K) % #bodies -- other bodies each pass: new to the dicts
          collectgarbage()
          local fn, t0 = step[2], monotonic()
          for i = from + 1, from + K do fn(i) end
          best = math.min(best, (monotonic() - t0) / K * 1e6)
        end
        ngx.say(string.format("%6.2f us  %s", best, step[1]))
      end
    } }
    location = /jit { content_by_lua_block {
      -- the profiler / trace log of this worker, around the rounds measured
      local on, what, file = ngx.var.arg_on == "1", ngx.var.arg_what, ngx.var.arg_file
      if what == "p" then
        if on then require("jit.p").start(ngx.var.arg_mode, file) else require("jit.p").stop() end
      elseif on then require("jit.v").on(file) else require("jit.v").off() end
      ngx.say("ok")
    } }
    location = /handled { content_by_lua_block {
      ngx.say(handled.low_battery + handled.occupied + handled.commands, " ", handled.hand_refused, " ", handled.hand,
        " ", handled.runs.immediate, " ", handled.runs.after_handler, " ", handled.runs.hand)
    } }
  ]],
}
-- handler runs so far: immediate, after_handler, by hand
local function handler_runs()
  local got = H.raw("GET", ng.url .. "/handled").body
  local i, a, h = got:match(" (%d+) (%d+) (%d+)%s*$")
  return { ["/immediate"] = tonumber(i), ["/after_handler"] = tonumber(a), ["/hand"] = tonumber(h) }
end
-- the nginx worker's CPU seconds so far (user + system, /proc): its cost
-- per request, which other work on a shared machine changes far less than
-- its rate
local function read_all(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return out
end
local worker = read_all("pgrep -P " .. read_all("cat " .. ng.prefix .. "/nginx.pid"):match("%d+")):match("%d+")
local TICK = tonumber(read_all("getconf CLK_TCK"):match("%d+"))
local function worker_cpu()
  local f = io.open("/proc/" .. worker .. "/stat")
  local stat = f and f:read("*a") or ""
  if f then f:close() end
  local utime, stime = stat:match("%) %S+" .. string.rep(" %S+", 10) .. " (%d+) (%d+)")
  return utime and (tonumber(utime) + tonumber(stime)) / TICK
end
-- -> requests per second, requests answered
local function wrk(path, script)
  local p = io.popen("wrk -t1 -c16 -d" .. B.SECONDS .. "s -s " .. script .. " " .. ng.url .. path)
  local out = p:read("*a")
  p:close()
  local non2xx = out:match("Non%-2xx or 3xx responses: (%d+)")
  assert(not non2xx, path .. " answered non-2xx: " .. out)
  return assert(tonumber(out:match("Requests/sec:%s*([%d.]+)")), out), assert(tonumber(out:match("(%d+) requests in")))
end
local runs = {
  { "bare", "/bare", "many" }, { "floor", "/floor", "many" }, { "promises' floor", "/promises", "many" },
  { "by hand", "/hand", "many" },
  { "immediate, one body", "/immediate", "one" }, { "immediate, distinct", "/immediate", "many" },
  { "after_handler, one body", "/after_handler", "one" }, { "after_handler, distinct", "/after_handler", "many" },
}
if os.getenv("BENCH_SPLIT") == "1" then
  table.insert(runs, 4, { "floor + verify", "/split_verify", "many" })
  table.insert(runs, 5, { "receiver alone", "/split_receive", "many" })
end
local rates, answered, reached, cpu = {}, {}, {}, {}
local hand_refused, hand_total
local function load_average()
  local f = io.open("/proc/loadavg")
  local l = f and f:read("*l") or "?"
  if f then f:close() end
  return l:match("^(%S+ %S+ %S+)") or l
end
local load_before, load_after, budget = load_average(), nil, nil
local PROFILE, JITV = os.getenv("BENCH_PROFILE"), os.getenv("BENCH_JITV") == "1"
local profile_file, jitv_file = os.tmpname(), os.tmpname()
-- (each start truncates the file: jit.p writes its samples at the stop, of
-- the last round; jit.v logs as traces are made, in the first round, so
-- it runs in that round only)
local jitv_rounds = 0
local function jit_switch(on)
  local flag = on and "1" or "0"
  if PROFILE then
    H.raw("GET", ng.url .. "/jit?what=p&on=" .. flag .. "&mode=" .. PROFILE .. "&file=" .. profile_file)
  end
  if JITV and jitv_rounds < 1 then
    H.raw("GET", ng.url .. "/jit?what=v&on=" .. flag .. "&file=" .. jitv_file)
    if not on then jitv_rounds = jitv_rounds + 1 end
  end
end
B.guarded(function()
  for round = 1, ROUNDS do
    for k = 1, #runs do
      local r = runs[(k + round - 2) % #runs + 1]
      rates[r[1]] = rates[r[1]] or {}
      local traced = r[1] == "after_handler, distinct"
      if traced then jit_switch(true) end
      local before, cpu0 = handler_runs()[r[2]], worker_cpu()
      local rate, n = wrk(r[2], scripts[r[3]])
      local cpu1 = worker_cpu()
      if traced then jit_switch(false) end
      table.insert(rates[r[1]], rate)
      cpu[r[1]] = cpu[r[1]] or {}
      if cpu0 and cpu1 then table.insert(cpu[r[1]], (cpu1 - cpu0) / n * 1e6) end
      if before then -- (immediate: its last handlers may still be running; a few are missed)
        answered[r[1]] = (answered[r[1]] or 0) + n
        reached[r[1]] = (reached[r[1]] or 0) + handler_runs()[r[2]] - before
      end
    end
  end
  load_after = load_average()
  if os.getenv("BENCH_BUDGET") == "1" then
    local res = H.raw("GET", ng.url .. "/budget?bodies=" .. many)
    assert(res.status == 200, res.body)
    budget = res.body
  end
  local got = H.raw("GET", ng.url .. "/handled").body
  assert(tonumber(got:match("^%d+")) > 0, "the handlers never ran")
  hand_refused, hand_total = got:match(" (%d+) (%d+)")
  hand_refused, hand_total = tonumber(hand_refused), tonumber(hand_total)
end, ng)
for _, f in ipairs { many, one, scripts.many, scripts.one } do os.remove(f) end
local function median(t)
  local s = {}
  for i, x in ipairs(t) do s[i] = x end
  table.sort(s)
  local n = #s
  return n % 2 == 1 and s[(n + 1) / 2] or (s[n / 2] + s[n / 2 + 1]) / 2
end
local function range(t, fmt)
  return string.format(fmt .. "-" .. fmt, math.min((table.unpack or unpack)(t)), math.max((table.unpack or unpack)(t)))
end
local bare = median(rates.bare)
print(string.format("wrk   nginx (1 worker), 16 connections, medians of %d rounds of %d s (load average %s before, %s " ..
  "after):", ROUNDS, B.SECONDS, load_before, load_after))
for _, r in ipairs(runs) do
  local rate = median(rates[r[1]])
  local share = answered[r[1]] and string.format("  handled %3.0f%%", 100 * reached[r[1]] / answered[r[1]]) or ""
  local us = #cpu[r[1]] == ROUNDS and string.format("  %5.1f us CPU/req (%s)", median(cpu[r[1]]),
    range(cpu[r[1]], "%.1f")) or ""
  print(string.format("      %-23s %8.0f req/s (%s)  %4.0f%% of bare%s%s", r[1], rate, range(rates[r[1]], "%.0f"),
    100 * rate / bare, us, share))
end
local kinot, hand = median(rates["after_handler, distinct"]), median(rates["by hand"])
print(string.format("      callback.handler (after_handler, dict dedupe, distinct): %.2fx bare, %.2fx by hand",
  kinot / bare, kinot / hand))
-- the ratios round by round (each round's paths ran within seconds of each other)
local by_round, by_round_hand = {}, {}
for i = 1, ROUNDS do
  by_round[i] = rates["after_handler, distinct"][i] / rates.bare[i]
  by_round_hand[i] = rates["after_handler, distinct"][i] / rates["by hand"][i]
end
print(string.format("      the ratios round by round: %s bare (median %.2f), %s by hand (median %.2f)",
  range(by_round, "%.2f"), median(by_round), range(by_round_hand, "%.2f"), median(by_round_hand)))
local c_bare, c_hand, c_kinot, c_promises
if #cpu.bare == ROUNDS then
  -- nginx's CPU a request: what the rates would say with the worker alone on its core
  c_bare, c_hand, c_kinot = median(cpu.bare), median(cpu["by hand"]), median(cpu["after_handler, distinct"])
  c_promises = median(cpu["promises' floor"])
  print(string.format("      the same by the worker's CPU a request (bare %.1f us, by hand %.1f, callback.handler %.1f):" ..
    " %.2fx bare, %.2fx by hand", c_bare, c_hand, c_kinot, c_bare / c_kinot, c_hand / c_kinot))
end
-- the promises' floor: the best any handler keeping the promises can do
local promises = median(rates["promises' floor"])
print(string.format("      callback.handler to the promises' floor: %.2fx by the rates%s", kinot / promises,
  c_promises and string.format(", %.2fx by the CPU a request (%.1f us; %.1f us above it)", c_promises / c_kinot,
    c_promises, c_kinot - c_promises) or ""))
local goal_cpu = c_promises and c_bare / c_promises
print(string.format("      the promises' floor itself: %.2fx bare, %.2fx by hand by the rates%s: the issue's goal (0.75x" ..
  " bare) is %s", promises / bare, promises / hand,
  goal_cpu and string.format("; %.2fx bare, %.2fx by hand by the CPU a request", goal_cpu, c_hand / c_promises) or "",
  ((goal_cpu or promises / bare) < 0.75 and "OUT OF REACH without weakening a promise" or "in reach") ..
  (goal_cpu and " (by the CPU a request, the steadier figure)" or " (by the rates)")))
if os.getenv("BENCH_BUDGET") == "1" then
  -- (after the rounds: the whole worker is the budget's)
  print("budget: each step alone in the nginx worker, the best of 3 passes over 10,000 distinct bodies (" ..
    load_average() .. "):")
  print((budget:gsub("\n$", "")))
end
-- (the files are the nginx worker's: it may run as another user)
if PROFILE then
  print("jit.p " .. PROFILE .. " of the nginx worker, after_handler, distinct (top lines):")
  print((read_all("head -40 " .. profile_file):gsub("\n$", "")))
end
if JITV then
  print("jit.v of the nginx worker, after_handler, distinct: traces aborted (count, reason):")
  print((read_all("grep -E -e '--' " .. jitv_file .. " | sed 's/^\\[TRACE *//' | sort | uniq -c | sort -rn | head -20")
    :gsub("\n$", "")))
end
os.remove(profile_file)
os.remove(jitv_file)
print(string.format("      by hand: %d of its %d deliveries (%.0f%%) did not verify (tostring(3.400) is 3.4: the lexeme" ..
  " is lost)", hand_refused, hand_total, 100 * hand_refused / hand_total))
