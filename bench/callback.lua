-- Callback verification: callback.verify of a typical lock status body
-- against the baseline of cjson.decode alone on the same body.  Then, with
-- wrk against one nginx worker, requests per second of
--   bare      a content_by_lua handler that reads the body and answers the
--             same JSON: the baseline of the target;
--   floor     bare, plus the least any verifying handler must add: the
--             body as a Lua string, and the MD5 of a typical callback's
--             canonical string and key;
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
-- Each runs BENCH_SECONDS, in three interleaved rounds; medians are shown,
-- and the issue's two ratios for after_handler, distinct: by the rates, and
-- by the nginx worker's CPU time a request (/proc), which the other work
-- of a shared machine disturbs far less than the rates.
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

local opts = { secret = secret }
local verify = callback.verify
local v = B.rate(function() verify(body, opts) end, B.SECONDS, 1000)
local decode = cjson.decode
local d = B.rate(function() decode(body) end, B.SECONDS, 1000)
print(string.format("verify %-21s callback.verify %9.0f/s   cjson.decode alone %9.0f/s   %.0f%%",
  B.runtime, v, d, 100 * v / d))

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
      -- the floor's MD5: a typical callback's canonical string and key
      local md5_of, canonical = require('kinot.core').callback_digest, ']] .. assert(callback.canonical(body)) .. [['
      floor_md5 = function() return md5_of(canonical, ']] .. secret .. [[') end

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
  { "bare", "/bare", "many" }, { "floor", "/floor", "many" }, { "by hand", "/hand", "many" },
  { "immediate, one body", "/immediate", "one" }, { "immediate, distinct", "/immediate", "many" },
  { "after_handler, one body", "/after_handler", "one" }, { "after_handler, distinct", "/after_handler", "many" },
}
local rates, answered, reached, cpu = {}, {}, {}, {}
local hand_refused, hand_total
B.guarded(function()
  for _ = 1, 3 do
    for _, r in ipairs(runs) do
      rates[r[1]] = rates[r[1]] or {}
      local before, cpu0 = handler_runs()[r[2]], worker_cpu()
      local rate, n = wrk(r[2], scripts[r[3]])
      local cpu1 = worker_cpu()
      table.insert(rates[r[1]], rate)
      cpu[r[1]] = cpu[r[1]] or {}
      if cpu0 and cpu1 then table.insert(cpu[r[1]], (cpu1 - cpu0) / n * 1e6) end
      if before then -- (immediate: its last handlers may still be running; a few are missed)
        answered[r[1]] = (answered[r[1]] or 0) + n
        reached[r[1]] = (reached[r[1]] or 0) + handler_runs()[r[2]] - before
      end
    end
  end
  local got = H.raw("GET", ng.url .. "/handled").body
  assert(tonumber(got:match("^%d+")) > 0, "the handlers never ran")
  hand_refused, hand_total = got:match(" (%d+) (%d+)")
  hand_refused, hand_total = tonumber(hand_refused), tonumber(hand_total)
end, ng)
for _, f in ipairs { many, one, scripts.many, scripts.one } do os.remove(f) end
local function median(t)
  table.sort(t)
  return t[2]
end
local bare = median(rates.bare)
print(string.format("wrk   nginx (1 worker), 16 connections, medians of 3 rounds of %d s:", B.SECONDS))
for _, r in ipairs(runs) do
  local rounds = {}
  for i, x in ipairs(rates[r[1]]) do rounds[i] = string.format("%.0f", x) end
  local rate = median(rates[r[1]])
  local share = answered[r[1]] and string.format("  handled %3.0f%%", 100 * reached[r[1]] / answered[r[1]]) or ""
  local us = #cpu[r[1]] == 3 and string.format("  %5.1f us CPU/req", median(cpu[r[1]])) or ""
  print(string.format("      %-23s %8.0f req/s  %4.0f%% of bare%s%s   (rounds: %s)", r[1], rate, 100 * rate / bare,
    us, share, table.concat(rounds, ", ")))
end
local kinot, hand = median(rates["after_handler, distinct"]), median(rates["by hand"])
print(string.format("      callback.handler (after_handler, dict dedupe, distinct): %.2fx bare, %.2fx by hand",
  kinot / bare, kinot / hand))
if #cpu.bare == 3 then
  -- nginx's CPU a request: what the rates would say with the worker alone on its core
  local c_bare, c_hand, c_kinot = median(cpu.bare), median(cpu["by hand"]), median(cpu["after_handler, distinct"])
  print(string.format("      the same by the worker's CPU a request (bare %.1f us, by hand %.1f, callback.handler %.1f):" ..
    " %.2fx bare, %.2fx by hand", c_bare, c_hand, c_kinot, c_bare / c_kinot, c_hand / c_kinot))
end
print(string.format("      by hand: %d of its %d deliveries (%.0f%%) did not verify (tostring(3.400) is 3.4: the lexeme" ..
  " is lost)", hand_refused, hand_total, 100 * hand_refused / hand_total))
