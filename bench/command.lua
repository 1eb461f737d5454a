-- What "a command is written at most once" costs: milliseconds per
-- send_command against the simulator (signed, checked by its gateway, a
-- command created), in one run:
--   curl, warm:  one client, one keep-alive connection (the guard against
--                libcurl's replay is a callback: no extra connect)
--   curl, fresh: the same client with a new connection per command (the
--                request asks the server to close), which is what
--                CURLOPT_FRESH_CONNECT would have cost
--   resty:       inside nginx, where a command gets a connection of its own
--                (beside GET /commands on the pooled connection)
--   lua5.4 bench/command.lua   (after make build; BENCH_COMMANDS=N)
package.path = "./?.lua;" .. package.path
local B = require "bench.support"
local core = require "kinot.core"
local json = require "kinot.json"
local H = require "helpers"

local N = tonumber(os.getenv("BENCH_COMMANDS") or "2000")
local ROUNDS = 5
local SN = 419600001

local sim = H.sim { locks = 100, command_pace = 3600 }
local results = {}

B.guarded(function()
  local curl = require("kinot.transport.curl").new { verify_tls = true, max_body = 1024 * 1024 }
  local function fresh(req)
    req.headers["Connection"] = "close" -- not signed: the gateway does not mind
    local res, kind, msg, not_sent = curl.send(req)
    if not res then return nil, { kind = kind, message = msg, not_sent = not_sent } end
    return res
  end
  local warm_client = sim.client()
  local fresh_client = sim.client { transport = fresh }
  local function run(c, n)
    local t0 = core.monotonic()
    for _ = 1, n do assert(c:send_command(SN, { key = "handle", value = 1 })) end
    return core.monotonic() - t0
  end
  run(warm_client, 100)
  run(fresh_client, 100)
  local tw, tf = 0, 0
  for _ = 1, ROUNDS do -- interleaved, so drift hits both alike
    tw = tw + run(warm_client, N / ROUNDS)
    tf = tf + run(fresh_client, N / ROUNDS)
  end
  warm_client:close()
  fresh_client:close()
  curl.close()
  results.warm, results.fresh = tw / N * 1000, tf / N * 1000

  local ng = H.nginx {
    server = [[
      location = /bench { content_by_lua_block {
        local a = ngx.req.get_uri_args()
        local n = tonumber(a.n)
        local c = require("kinot").new { app_key = a.key, app_secret = a.secret, endpoint = a.endpoint,
                                         transport = "resty" }
        local guid = assert(c:send_command(419600001, { key = "handle", value = 1 })).guid
        local function time(fn)
          for _ = 1, 50 do fn() end
          ngx.update_time()
          local t0 = ngx.now()
          for _ = 1, n do fn() end
          ngx.update_time()
          return (ngx.now() - t0) / n * 1000
        end
        local post = time(function() assert(c:send_command(419600001, { key = "handle", value = 1 })) end)
        local get = time(function() assert(c:command(guid)) end)
        ngx.say(require("kinot.json").encode { post = post, get = get })
      } }
    ]],
  }
  B.guarded(function()
    local res = H.raw("GET", ng.url .. "/bench?n=" .. N .. "&key=" .. sim.app_key .. "&secret=" .. sim.app_secret ..
      "&endpoint=" .. sim.endpoint)
    assert(res.status == 200, res.body)
    local r = json.decode(res.body)
    results.resty_post, results.resty_get = r.post, r.get
  end, ng)
end, sim)

print(string.format("send_command against the simulator, %d commands each (%s, %s)", N, B.runtime, core.curl_version():match("^%S+")))
print(string.format("  curl, warm connection (this SDK)       %7.3f ms/command", results.warm))
print(string.format("  curl, fresh connection per command     %7.3f ms/command  (+%.3f ms, x%.2f)", results.fresh,
  results.fresh - results.warm, results.fresh / results.warm))
print(string.format("  resty, command on its own connection   %7.3f ms/command", results.resty_post))
print(string.format("  resty, GET /commands, pooled           %7.3f ms/call", results.resty_get))
