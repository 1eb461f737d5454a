-- Step 1 of a call (kinot.request): the call ({ method, path, query, body })
-- becomes the transport's request: percent-encoded query string, the
-- gateway's headers, the JSON body and its Content-MD5, the signature
-- (docs/signing.md).  Nothing here touches the network.
local core = require "kinot.core_loader"
local json = require "kinot.json"
local errors = require "kinot.errors"

local M = {}

local concat, floor, tostring = table.concat, math.floor, tostring
local byte, format, gsub = string.byte, string.format, string.gsub

M.USER_AGENT = "lua-kinot/" .. require("kinot.version")

--- pct(s) -> s percent-encoded: RFC 3986 unreserved characters stay,
-- everything else is %XX (UTF-8 bytes)
local function pct(s)
  return (gsub(s, "[^%w%-%._~]", function(c) return format("%%%02X", byte(c)) end))
end
M.pct = pct

--- wire_path(path) -> the path as it goes on the wire, and so as it is
-- signed: the gateway signs the path it receives (docs/signing.md), so a
-- byte a URL path cannot hold raw (UTF-8, '"', '<', '{' ...) is
-- percent-encoded here, before signing, not by the transport after it
-- (libcurl wrote é as %c3%a9, which the signature did not cover).  %XX the
-- caller wrote stays as written; a stray '%' is %25.  Refused (misuse):
-- '?' and '#' (a query goes in `query`), and '.' or '..' segments, which
-- the transport would resolve before sending.  Spaces and control bytes
-- the signer refuses.
local function wire_path(path)
  if path:find("[?#]") then
    errors.misuse("path must not hold '?' or '#' (got " .. path:sub(1, 60) .. "): give a query as {query = {{k, v}...}}")
  end
  for seg in (path .. "/"):gmatch("/([^/]*)") do
    if seg == "." or seg == ".." then
      errors.misuse("path must not hold '.' or '..' segments (got " .. path:sub(1, 60) .. "): they would be " ..
        "resolved before sending, and the request would not be the one signed")
    end
  end
  path = gsub(path, "%%(%x?%x?)", function(hex) if #hex < 2 then return "%25" .. hex end end)
  return (gsub(path, "[^%w%-%._~!$&'()*+,;=:@/%% %c]", function(c) return format("%%%02X", byte(c)) end))
end
M.wire_path = wire_path

--- query_string({{k, v}...}) -> "k=v&k2=v2", in the order given, each side pct-encoded
local function query_string(pairs_list)
  local out = {}
  for i = 1, #pairs_list do
    local p = pairs_list[i]
    out[i] = pct(p[1]) .. "=" .. pct(p[2])
  end
  return concat(out, "&")
end
M.query_string = query_string

--- build(client, call[, stamp]) -> transport request, signing result
-- call = { method, path, query = {{k, v}...}, body = table|nil, raw_body = string|nil }
-- stamp = { now_ms = ..., nonce = ... } fixes the clock and the nonce (the
-- specs'); by default the core's clock (plus the client's learnt offset)
-- and a fresh UUID.
function M.build(client, call, stamp)
  if not client.signer then errors.misuse("client is closed") end -- closed under an iterator, say
  local now_ms = stamp and stamp.now_ms or core.now_ms()
  local headers = {
    ["Accept"] = "application/json",
    ["User-Agent"] = M.USER_AGENT,
    ["X-Ca-Key"] = client.app_key,
    ["X-Ca-Timestamp"] = tostring(floor(now_ms + client.clock_offset_ms)),
    ["X-Ca-Nonce"] = stamp and stamp.nonce or core.uuid(),
    ["X-Ca-Signature-Method"] = client.signature_method,
  }
  if client.stage then headers["X-Ca-Stage"] = client.stage end
  local body = call.raw_body
  if call.body ~= nil and body == nil then body = json.encode(call.body, "body") end
  if body then
    headers["Content-Type"] = "application/json; charset=UTF-8"
    headers["Content-MD5"] = core.content_md5(body)
  end
  local path = wire_path(client.base_path .. call.path)
  local signed = client.signer:sign{
    method = call.method, path = path, query = call.query, headers = headers,
    signature_method = client.signature_method,
  }
  headers["X-Ca-Signature"] = signed.signature
  headers["X-Ca-Signature-Headers"] = concat(signed.signed_headers, ",")
  local url = client.origin .. path
  if call.query and #call.query > 0 then url = url .. "?" .. query_string(call.query) end
  return {
    method = call.method, url = url, headers = headers, body = body,
    timeout = client.timeout, connect_timeout = client.connect_timeout,
  }, signed
end

return M
