-- Callback verification: callback.verify of a typical lock status body
-- against the baseline of cjson.decode alone on the same body; then, with
-- wrk, requests per second of callback.handler in nginx against a bare
-- content_by_lua handler that answers the same JSON.
--   make bench   (or: luajit bench/callback.lua after make build)
package.path = "./?.lua;" .. package.path
local B = require "bench.support"
local callback = require "kinot.callback"
local cjson = require "cjson"

local secret = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"
local body = '{"sn":419631107,"voltage":3.659,"frequency":37.919,"locked":0,"car_detected":1,"shell_opened":0,' ..
  '"low_battery":0,"coil_fault":0,"bar_position_error":0,"motor_fail":1,"rs_si":1,' ..
  '"updated_at":"2019-03-13T10:42:39+08:00","device_type":18}'
local sign = callback.sign(body, secret)
body = body:gsub("}$", ',"sign":"' .. sign .. '"}')
assert(callback.verify(body, { secret = secret }))

local opts = { secret = secret }
local verify = callback.verify
local v = B.rate(function() verify(body, opts) end, B.SECONDS, 1000)
local decode = cjson.decode
local d = B.rate(function() decode(body) end, B.SECONDS, 1000)
print(string.format("verify %-21s callback.verify %9.0f/s   cjson.decode alone %9.0f/s   %.0f%%",
  B.runtime, v, d, 100 * v / d))

-- wrk: only once (from LuaJIT, nginx's own Lua), and only where wrk exists
local function succeeds(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0 -- 5.4 says true, LuaJIT 0
end
if not rawget(_G, "jit") or not succeeds("command -v wrk >/dev/null 2>&1") then return end
local H = require "helpers"
local ng = H.nginx {
  http = "init_by_lua_block { receive = require('kinot.callback').handler { secret = '" .. secret .. "' } }",
  server = [[
    location = /cb { content_by_lua_block { receive() } }
    location = /bare { content_by_lua_block {
      ngx.req.read_body()
      ngx.header["Content-Type"] = "application/json"
      ngx.print('{"code":0,"message":"OK"}')
    } }
  ]],
}
local script = os.tmpname()
local f = io.open(script, "w")
f:write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = ', string.format("%q", body), "\n")
f:close()
local function wrk(path)
  local p = io.popen("wrk -t1 -c16 -d" .. B.SECONDS .. "s -s " .. script .. " " .. ng.url .. path)
  local out = p:read("*a")
  p:close()
  local non2xx = out:match("Non%-2xx or 3xx responses: (%d+)")
  assert(not non2xx, path .. " answered non-2xx: " .. out)
  return tonumber(out:match("Requests/sec:%s*([%d.]+)"))
end
local handler, bare
B.guarded(function() handler, bare = wrk("/cb"), wrk("/bare") end, ng)
os.remove(script)
print(string.format("wrk   nginx (1 worker), 16 connections: callback.handler %8.0f req/s   bare content_by_lua %8.0f req/s   %.0f%%",
  handler, bare, 100 * handler / bare))
