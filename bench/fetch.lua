-- Page fetch throughput: client:lockers{limit = 100} against a static nginx
-- page of the simulator's shape, beside the baseline of raw libcurl (the
-- same C core, unsigned) plus cjson.decode of the same body, same run.
--   make bench   (or: lua5.4 bench/fetch.lua after make build)
package.path = "./?.lua;" .. package.path
local B = require "bench.support"
local core = require "kinot.core"
local cjson = require "cjson"
local kinot = require "kinot"
local fleet = require "kinot.sim.fleet"
local H = require "helpers"

local body = fleet.new { locks = 100, seed = 3 }:page_json("lock", 0, 100)
local page_file = os.tmpname()
local f = assert(io.open(page_file, "wb"))
f:write(body)
f:close()
os.execute("chmod 644 " .. page_file) -- nginx's workers read it as another user
local ng = H.nginx {
  server = "location = /open/lora/v1/lockers { default_type application/json; alias " .. page_file .. "; }",
}
local url = ng.url .. "/open/lora/v1/lockers?offset=0&limit=100"

local url_sdk = ng.url .. "/open/lora/v1"
local sdk, baseline
B.guarded(function()
  local http = core.http()
  local decode = cjson.decode
  baseline = B.rate(function()
    local res = http:request { url = url }
    local doc = decode(res.body)
    assert(#doc.objects == 100)
  end, B.SECONDS, 20)

  local client = kinot.new { app_key = "bench", app_secret = "bench-secret", endpoint = url_sdk }
  sdk = B.rate(function()
    local page = assert(client:lockers { limit = 100 })
    assert(#page.objects == 100)
  end, B.SECONDS, 20)
end, ng)
os.remove(page_file)
print(string.format("fetch %-22s client:lockers{limit=100} %8.0f pages/s   raw libcurl + cjson.decode %8.0f pages/s   %.0f%%",
  B.runtime, sdk, baseline, 100 * sdk / baseline))
