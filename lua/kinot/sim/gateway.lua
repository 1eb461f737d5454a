-- The simulator's API gateway: the checks the Alibaba Cloud API Gateway
-- makes before a request reaches the platform (docs/signing.md), with its error
-- style: HTTP 400/403 + X-Ca-Error-Message + X-Ca-Request-Id.
local core = require "kinot.core_loader"

local M = {}

local WINDOW_MS = 15 * 60 * 1000

--- new(opts) -> gateway {app_key, signer, nonces, clock_offset_ms}
function M.new(opts)
  return {
    app_key = opts.app_key, signer = require("kinot.signer").new(opts.app_secret), stage = opts.stage,
    nonces = {}, nonce_count = 0, sweep_at = 20000, sweeps = 0, clock_offset_ms = opts.clock_offset_ms or 0,
  }
end

function M.now_ms(gw)
  return core.now_ms() + gw.clock_offset_ms
end

-- Nonces live 15 minutes.  Expired ones are swept when the table doubles
-- past its size after the last sweep, so a sweep costs O(1) per request.
local function forget_old_nonces(gw, now)
  if gw.nonce_count < gw.sweep_at then return end
  local kept, n = {}, 0
  for k, exp in pairs(gw.nonces) do
    if exp > now then kept[k] = exp; n = n + 1 end
  end
  gw.nonces, gw.nonce_count = kept, n
  gw.sweep_at = math.max(20000, 2 * n)
  gw.sweeps = gw.sweeps + 1
end

--- server_string(gw, req) -> string_to_sign the gateway computes
-- req = { method, path, query = {{k,v}}, form = {{k,v}}|nil, headers = (case-insensitive get) }
function M.server_string(gw, req)
  local listed = req.headers["x-ca-signature-headers"] or ""
  local headers, sign_headers = {}, {}
  for name in listed:gmatch("[^,%s]+") do
    local v = req.headers[name]
    if type(v) == "table" then v = v[1] end
    headers[name] = v or ""
    sign_headers[#sign_headers + 1] = name
  end
  for _, name in ipairs { "Accept", "Content-MD5", "Content-Type", "Date" } do
    local v = req.headers[name]
    if type(v) == "table" then v = v[1] end
    if v then headers[name] = v end
  end
  local alg = req.headers["x-ca-signature-method"]
  if alg ~= "HmacSHA1" then alg = "HmacSHA256" end
  local ok, signed = pcall(gw.signer.sign, gw.signer, {
    method = req.method, path = req.path, query = req.query, form = req.form,
    headers = headers, sign_headers = sign_headers, signature_method = alg,
  })
  if not ok then return nil, signed end
  return signed
end

--- check(gw, req) -> true | nil, status, message
function M.check(gw, req)
  local h = req.headers
  -- started with a stage: the API is published to that stage only.  The
  -- gateway takes a request without X-Ca-Stage for RELEASE, and answers a
  -- stage the API is not published to as it answers an unknown path: 404,
  -- "Invalid Url" (Alibaba's error table; our reading of it)
  if gw.stage then
    local stage = h["x-ca-stage"]
    if type(stage) == "table" then stage = stage[1] end
    if stage == nil or stage == "" then stage = "RELEASE" end
    if stage ~= gw.stage then return nil, 404, "Invalid Url" end
  end
  local key = h["x-ca-key"]
  if not key or key ~= gw.app_key then return nil, 400, "Invalid AppKey" end
  local ts = tonumber(h["x-ca-timestamp"])
  if not ts then return nil, 400, "Invalid Timestamp" end
  local now = M.now_ms(gw)
  if math.abs(now - ts) > WINDOW_MS then return nil, 400, "Timestamp Expired" end
  local nonce = h["x-ca-nonce"]
  if not nonce or nonce == "" then return nil, 400, "Invalid Nonce" end
  if (gw.nonces[nonce] or 0) > now then return nil, 400, "Nonce Used" end
  if req.body and req.body ~= "" and h["content-md5"] then
    if core.content_md5(req.body) ~= h["content-md5"] then return nil, 400, "Invalid Content-MD5" end
  end
  local sig = h["x-ca-signature"]
  if not sig then return nil, 400, "Empty Signature" end
  local signed, why = M.server_string(gw, req)
  if not signed then return nil, 400, "Invalid Signature, " .. tostring(why) end
  if not core.ct_equal(signed.signature, sig) then
    -- the gateway shows its string with '#' for each line feed
    return nil, 400, "Invalid Signature, Server StringToSign:`" .. signed.string_to_sign:gsub("\n", "#") .. "`"
  end
  gw.nonces[nonce] = now + WINDOW_MS
  gw.nonce_count = gw.nonce_count + 1
  forget_old_nonces(gw, now)
  return true
end

return M
