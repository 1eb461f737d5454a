-- One API call, read top to bottom: build -> sign -> send -> decode -> error,
-- wrapped in the retry policy of docs/transports.md.
local core = require "kinot.core"
local json = require "kinot.json"
local errors = require "kinot.errors"
local typed = require "kinot.typed"
local redact = require "kinot.redact"

local M = {}

local concat, floor, random, tostring, tonumber, pcall = table.concat, math.floor, math.random, tostring, tonumber, pcall
local byte, format, gsub, find = string.byte, string.format, string.gsub, string.find

M.USER_AGENT = "lua-kinot/" .. require("kinot.version")

-- RFC 3986 unreserved characters stay; everything else is %XX (UTF-8 bytes)
local function pct(s)
  return (gsub(s, "[^%w%-%._~]", function(c) return format("%%%02X", byte(c)) end))
end
M.pct = pct

local function query_string(pairs_list)
  local out = {}
  for i = 1, #pairs_list do
    local p = pairs_list[i]
    out[i] = pct(p[1]) .. "=" .. pct(p[2])
  end
  return concat(out, "&")
end

-- ---------------------------------------------------------------- build

--- build(client, call, attempt) -> transport request, signing result
-- call = { method, path, query = {{k, v}...}, body = table|nil }
local function build(client, call)
  if not client.signer then errors.misuse("client is closed") end -- closed under an iterator, say
  local headers = {
    ["Accept"] = "application/json",
    ["User-Agent"] = M.USER_AGENT,
    ["X-Ca-Key"] = client.app_key,
    ["X-Ca-Timestamp"] = tostring(floor(core.now_ms() + client.clock_offset_ms)),
    ["X-Ca-Nonce"] = core.uuid(),
    ["X-Ca-Signature-Method"] = client.signature_method,
  }
  if client.stage then headers["X-Ca-Stage"] = client.stage end
  local body = call.raw_body
  if call.body ~= nil and body == nil then body = json.encode(call.body, "body") end
  if body then
    headers["Content-Type"] = "application/json; charset=UTF-8"
    headers["Content-MD5"] = core.content_md5(body)
  end
  local path = client.base_path .. call.path
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
M.build = build

-- ---------------------------------------------------------------- decode / classify

local function header(res, name)
  return res.headers and res.headers[name]
end

-- "Wed, 25 Nov 2026 19:41:18 GMT" -> ms since the epoch (UTC, no os.time)
local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }
local function http_date_ms(s)
  if not s then return nil end
  local d, mon, y, h, mi, sec = s:match("(%d+) (%a+) (%d+) (%d+):(%d+):(%d+)")
  local m = MONTHS[mon or ""]
  if not m then return nil end
  y, m, d = tonumber(y), m, tonumber(d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return ((days * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60000 + tonumber(sec) * 1000
end
M.http_date_ms = http_date_ms

local function retry_after(res)
  local v = header(res, "retry-after")
  if not v then return nil end
  local n = tonumber(v)
  if n then return n end
  local at = http_date_ms(v)
  if at then return math.max(0, (at - core.now_ms()) / 1000) end
end

local TIMESTAMP_ERRORS = { ["Invalid Timestamp"] = true, ["Timestamp Expired"] = true }
local RETRYABLE_GATEWAY = { ["Nonce Used"] = true, ["Invalid Nonce"] = true }

-- the gateway's StringToSign has '#' where the string had line feeds
local function server_sts(msg)
  local s = msg:match("Server StringToSign:%s*`?(.-)`?$")
  return s and (gsub(s, "#", "\n")) or nil
end

--- classify(res, signed, call) -> decoded page/body | nil, err
local function decode(res, signed, call)
  local status = res.status
  local fields = { status = status, request_id = header(res, "x-ca-request-id") }
  local gw = header(res, "x-ca-error-message")
  if gw then
    fields.gateway_error = gw
    -- the gateway itself refused (4xx): the platform never saw the request.
    -- Not so for 5xx, where a backend may have acted before failing, nor
    -- for "Nonce Used": a request with this nonce (so a copy of this very
    -- attempt) arrived before.
    fields.not_sent = status < 500 and not find(gw, "^Nonce Used")
    if find(gw, "Invalid Signature", 1, true) then
      fields.server_string_to_sign = server_sts(gw)
      fields.client_string_to_sign = signed.string_to_sign
      -- the same string on both sides: then only the key signing it differs
      local same = fields.server_string_to_sign == signed.string_to_sign
      return nil, errors.new("signature", same
        and "the gateway refused the request signature although both sides signed the same string: " ..
            "the app_secret (or the app_key it is paired with) is what differs"
        or "the gateway refused the request signature: check app_key/app_secret and that every signed header is sent as signed",
        fields)
    end
    if status == 429 or find(gw, "Throttled", 1, true) then
      fields.retryable, fields.retry_after = true, retry_after(res)
      return nil, errors.new("throttled", "the gateway throttled the request: " .. gw, fields)
    end
    local key = gw:match("^[^,]+")
    fields.timestamp_error = TIMESTAMP_ERRORS[key] or nil
    -- a fresh nonce (every attempt has one) cures a nonce refusal
    fields.retryable = status >= 500 or RETRYABLE_GATEWAY[key] == true
    local hint = key == "Invalid Url" and " (no API at this method and path in the stage asked: check the stage option, " ..
      "X-Ca-Stage; none means RELEASE)" or ""
    return nil, errors.new("gateway", "the API gateway refused the request: " .. gw .. hint, fields)
  end
  if status == 429 then
    fields.retryable, fields.retry_after = true, retry_after(res)
    return nil, errors.new("throttled", "too many requests (HTTP 429)", fields)
  end
  if status >= 500 then
    fields.retryable, fields.retry_after = true, retry_after(res)
    return nil, errors.new("http", "the platform answered HTTP " .. status, fields)
  end
  if status ~= 200 then
    return nil, errors.new(status == 404 and "not_found" or "http",
      "the platform answered HTTP " .. status .. " for " .. call.method .. " " .. call.path, fields)
  end
  local doc, why = json.decode(res.body)
  if type(doc) ~= "table" then
    fields.retryable = true
    return nil, errors.new("decode", "the platform's answer is not valid JSON (" ..
      tostring(why or "not an object") .. ")", fields)
  end
  local code = tonumber(doc.code)
  if code and code ~= 0 then
    fields.code, fields.api_message = code, doc.message
    local msg = tostring(doc.message or "")
    local nf = code == 404 or find(msg:lower(), "not found", 1, true) or find(msg:lower(), "not exist", 1, true)
    return nil, errors.new(nf and "not_found" or "api",
      "the platform refused " .. call.method .. " " .. call.path .. ": " .. msg .. " (code " .. code .. ")", fields)
  end
  return typed.answer(doc, call.path) -- every known field as the reference types it
end
M.decode = decode

-- ---------------------------------------------------------------- events

local REDACTED = "<redacted>"
local function redacted_headers(h)
  local out = {}
  for k, v in pairs(h) do out[k] = v end
  out["X-Ca-Signature"] = REDACTED
  return out
end

-- events are built only when someone listens: callers check client.on_event
local function emit(client, ev)
  pcall(client.on_event, ev)
end

-- ---------------------------------------------------------------- send with retries

local function backoff(client, attempt, after)
  if after then return after end
  local base = client.backoff.base * 2 ^ (attempt - 1)
  if base > client.backoff.max then base = client.backoff.max end
  return base / 2 + random() * base / 2 -- "equal jitter": never zero, never all at once
end

-- origin: the client's, whose userinfo (if any) no message may repeat
local function transport_error(kind, message, not_sent, origin)
  message = redact.text(message, origin)
  if kind == "invalid" then errors.misuse(message) end
  local retryable = kind == "network" or kind == "timeout"
  return errors.new(kind == "nomem" and "network" or kind, message, { retryable = retryable, not_sent = not_sent })
end
M.transport_error = transport_error

-- ---------------------------------------------------------------- unknown outcome

-- Whether a failed attempt leaves it open if the platform acted on the
-- request: it may have arrived, and no answer we can read says what came of
-- it.  A decoded answer, or a refusal by the gateway (but Nonce Used), is known.
local function outcome_unknown(err)
  local k = err.kind
  if err.not_sent then return false end
  if k == "network" or k == "timeout" or k == "tls" or k == "decode" or k == "too_large" then return true end
  if (k == "http" or k == "gateway") and (err.status or 0) >= 500 then return true end
  if k == "gateway" and err.gateway_error and find(err.gateway_error, "^Nonce Used") then return true end
  return false
end

--- unknown_outcome(call, err) -> the error a non-idempotent call returns
-- when it cannot tell whether the platform acted on it (never retried)
local function unknown_outcome(call, err)
  local sn = type(call.body) == "table" and call.body.sn
  local where = sn and tostring(sn) or "SN"
  local how
  if call.path == "/commands" then
    how = "read the device's state (`kinot locker " .. where .. "` or `kinot sensor " .. where ..
      "`; client:locker(sn) / client:sensor(sn)) and the command on the platform (`kinot command get GUID` / " ..
      "client:command(guid) when a guid is known; against the simulator, GET /__kinot_sim/counters counts " ..
      "the commands it created)"
  elseif call.path == "/test/notifications" then
    how = "see whether the test callback reached your callback URL (against the simulator, " ..
      "GET /__kinot_sim/callbacks lists its deliveries); for a command, `kinot command get GUID`"
  else
    how = "read back what it would have changed (against the simulator, GET /__kinot_sim/counters); " ..
      "for a command, `kinot command get GUID`"
  end
  local fields = {
    cause = err.kind, status = err.status, request_id = err.request_id, gateway_error = err.gateway_error,
    code = err.code, retryable = false, not_sent = false, attempts = err.attempts,
  }
  return errors.new("unknown_outcome", call.method .. " " .. call.path .. (sn and (" for sn " .. tostring(sn)) or "") ..
    ": the request may or may not have reached the platform, and no answer says what came of it (" ..
    err.kind .. ": " .. err.message .. "); it was not sent again. Find out before sending it again: " .. how, fields)
end
M.unknown_outcome = unknown_outcome

local function learn_clock(client, res)
  local server = http_date_ms(header(res, "date"))
  if server then client.clock_offset_ms = server - core.now_ms() end
end

--- send(client, call) -> response {status, headers, body}, signed | nil, err
-- One attempt: build, sign, send.
function M.send(client, call)
  local req, signed = build(client, call)
  local res, kind, message, not_sent = client.transport.send(req)
  if not res then
    local err = transport_error(kind, message, not_sent, client.origin)
    if call.method ~= "GET" and call.method ~= "HEAD" and outcome_unknown(err) then err = unknown_outcome(call, err) end
    return nil, err
  end
  return res, signed
end

--- perform(client, call) -> decoded document | nil, err
-- call.idempotent: false for POST /commands (docs/transports.md)
function M.perform(client, call)
  local transport = client.transport
  local max_attempts = 1 + client.retries
  local attempt, skew_retried = 0, false
  while true do
    attempt = attempt + 1
    local req, signed = build(client, call)
    local hook = client.on_event
    if hook then
      emit(client, { type = "request", attempt = attempt, method = req.method, url = redact.url(req.url),
                     headers = redacted_headers(req.headers) })
    end
    local started = hook and transport.now()
    local res, kind, message, not_sent = transport.send(req)
    local doc, err
    if res then
      if hook then
        emit(client, { type = "response", attempt = attempt, method = req.method, url = redact.url(req.url),
                       status = res.status, request_id = header(res, "x-ca-request-id"),
                       elapsed = transport.now() - started })
      end
      doc, err = decode(res, signed, call)
      if doc then return doc end
    else
      err = transport_error(kind, message, not_sent, client.origin)
    end
    err.attempts = attempt
    -- a refused timestamp: learn the server's clock once and go again
    if err.timestamp_error and not skew_retried and res then
      skew_retried = true
      learn_clock(client, res)
      if hook then emit(client, { type = "retry", attempt = attempt, reason = "clock skew", delay = 0, error = err.kind }) end
      max_attempts = max_attempts + 1
    elseif not call.idempotent and outcome_unknown(err) then
      -- a command must never reach a device twice because of us: it may
      -- have arrived, so it is not sent again, and the caller is told so
      return nil, unknown_outcome(call, err)
    else
      local allowed = err.retryable and attempt < max_attempts
      if allowed and not call.idempotent then
        -- sent again only when it provably never left
        allowed = err.not_sent == true
      end
      if allowed and err.retry_after and err.retry_after > client.max_retry_after then allowed = false end
      if not allowed then
        err.timestamp_error = nil
        return nil, err
      end
      local delay = backoff(client, attempt, err.retry_after)
      if hook then emit(client, { type = "retry", attempt = attempt, reason = err.message, error = err.kind, delay = delay }) end
      transport.sleep(delay)
    end
  end
end

--- perform_many(client, calls) -> list of {doc} | {nil, err}, one round of
-- concurrent GETs over the transport's batch path (or one by one without it).
function M.perform_many(client, calls)
  if not client.signer then errors.misuse("client is closed") end
  local transport = client.transport
  if not transport.send_many or #calls <= 1 then
    local out = {}
    for i = 1, #calls do out[i] = { M.perform(client, calls[i]) } end
    return out
  end
  local reqs, signs = {}, {}
  local hook = client.on_event
  for i = 1, #calls do
    reqs[i], signs[i] = build(client, calls[i])
    if hook then -- a batch's requests are events too, as perform's are
      emit(client, { type = "request", attempt = 1, method = reqs[i].method, url = redact.url(reqs[i].url),
                     headers = redacted_headers(reqs[i].headers) })
    end
  end
  local started = hook and transport.now()
  local results = transport.send_many(reqs)
  local out = {}
  for i = 1, #calls do
    local r = results[i]
    local doc, err
    if r.error then
      err = transport_error(r.error, r.message, r.not_sent, client.origin)
    else
      if hook then
        emit(client, { type = "response", attempt = 1, method = reqs[i].method, url = redact.url(reqs[i].url),
                       status = r.status, request_id = header(r, "x-ca-request-id"), elapsed = transport.now() - started })
      end
      doc, err = decode(r, signs[i], calls[i])
    end
    if doc then
      out[i] = { doc }
    elseif not calls[i].idempotent and outcome_unknown(err) then
      -- a command in a batch keeps perform's rule: it may have arrived
      out[i] = { nil, unknown_outcome(calls[i], err) }
    elseif err.retryable or err.timestamp_error then
      -- a failed page goes again alone, under the full retry policy
      out[i] = { M.perform(client, calls[i]) }
      if out[i][2] then out[i][2].attempts = out[i][2].attempts + 1 end
    else
      out[i] = { nil, err }
    end
  end
  return out
end

return M
