-- Signing throughput: kinot.sign_request on a typical GET lockers page, with
-- all the headers the SDK sends, against the baseline of a C loop of raw
-- OpenSSL HMAC-SHA256 + base64 over a string-to-sign of the same length,
-- same run.  Like a real client, every request carries a fresh nonce and
-- timestamp: 4,096 distinct requests are made before the clock starts and
-- signed in turn, so no result string is interned once and reused.  The
-- old figure (one request signed again and again) is printed beside it.
--   make bench   (or: lua5.4 bench/sign.lua / luajit bench/sign.lua after make build)
package.path = "./?.lua;" .. package.path
local B = require "bench.support"
local kinot = require "kinot"
local core = require "kinot.core"

local SECONDS, runtime = B.SECONDS, B.runtime
local DISTINCT = 4096

local function request(timestamp, nonce)
  return {
    method = "GET", path = "/open/lora/v1/lockers", app_secret = "3f2a9c1e7b6d4e58a0c2b7d9e1f4a6c8",
    query = { { "offset", "0" }, { "limit", "100" } },
    headers = {
      Accept = "application/json", ["User-Agent"] = "lua-kinot/" .. require("kinot.version"), -- as sent
      ["X-Ca-Key"] = "24680135",
      ["X-Ca-Timestamp"] = timestamp, ["X-Ca-Nonce"] = nonce,
      ["X-Ca-Signature-Method"] = "HmacSHA256",
    },
  }
end

local reqs, t0 = {}, 1700000000000
for i = 1, DISTINCT do reqs[i] = request(tostring(t0 + i * 7), core.uuid()) end
local same = request("1700000000000", "5f0e8c2a-6b1d-4c3e-9a7f-1e2d3c4b5a69")

local sts = kinot.sign_request(reqs[1]).string_to_sign
local path = os.tmpname()
local f = assert(io.open(path, "wb"))
f:write(sts)
f:close()

local sign = kinot.sign_request
local i = 0
local fresh = B.rate(function()
  i = i % DISTINCT + 1
  sign(reqs[i])
end, SECONDS, 10000)
local repeated = B.rate(function() sign(same) end, SECONDS, 10000)

local p = io.popen("build/bench/hmac_baseline " .. path .. " " .. SECONDS)
local raw = tonumber(p:read("*l"))
p:close()
os.remove(path)

print(string.format("sign  %-22s kinot.sign_request, fresh nonce %10.0f/s (same request again: %10.0f/s)   " ..
  "raw OpenSSL HMAC loop (C) %10.0f/s   ratio %.2fx", runtime, fresh, repeated, raw or 0, raw and raw / fresh or 0))
