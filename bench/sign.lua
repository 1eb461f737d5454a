-- Signing throughput: kinot.sign_request (a typical GET lockers page, all
-- the headers the SDK sends) against the baseline of a C loop of raw
-- OpenSSL HMAC-SHA256 + base64 over the same string-to-sign, same run.
--   make bench   (or: lua5.4 bench/sign.lua / luajit bench/sign.lua after make build)
package.path = "./?.lua;" .. package.path
local B = require "bench.support"
local kinot = require "kinot"

local SECONDS, runtime = B.SECONDS, B.runtime

local req = {
  method = "GET", path = "/open/lora/v1/lockers", app_secret = "3f2a9c1e7b6d4e58a0c2b7d9e1f4a6c8",
  query = { { "offset", "0" }, { "limit", "100" } },
  headers = {
    Accept = "application/json", ["User-Agent"] = "lua-kinot/0.1.0", ["X-Ca-Key"] = "24680135",
    ["X-Ca-Timestamp"] = "1700000000000", ["X-Ca-Nonce"] = "5f0e8c2a-6b1d-4c3e-9a7f-1e2d3c4b5a69",
    ["X-Ca-Signature-Method"] = "HmacSHA256",
  },
}

local sts = kinot.sign_request(req).string_to_sign
local path = os.tmpname()
local f = assert(io.open(path, "wb"))
f:write(sts)
f:close()

-- the SDK, through the public function
local sign = kinot.sign_request
local sdk = B.rate(function() sign(req) end, SECONDS, 10000)

local p = io.popen("build/bench/hmac_baseline " .. path .. " " .. SECONDS)
local raw = tonumber(p:read("*l"))
p:close()
os.remove(path)

print(string.format("sign  %-22s kinot.sign_request %10.0f/s   raw OpenSSL HMAC loop (C) %10.0f/s   ratio %.2fx",
  runtime, sdk, raw or 0, raw and raw / sdk or 0))
