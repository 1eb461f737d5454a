-- Step 2 of a call (kinot.request): what came back becomes a document or an
-- error table (docs/errors.md).  A response: the gateway's refusals (by
-- X-Ca-Error-Message), the platform's HTTP status, its JSON envelope (code
-- and message).  A transport failure: its kind.  And for a request that is
-- not idempotent, whether its outcome is unknown (it may have reached the
-- platform, and no answer says what came of it).  Pure functions of their
-- arguments (but the clock, for a Retry-After given as a date).
local core = require "kinot.core_loader"
local json = require "kinot.json"
local errors = require "kinot.errors"
local typed = require "kinot.typed"
local redact = require "kinot.redact"

local M = {}

local tostring, tonumber, type = tostring, tonumber, type
local gsub, find = string.gsub, string.find

local function header(res, name)
  return res.headers and res.headers[name]
end
M.header = header

-- ---------------------------------------------------------------- HTTP dates

local days_from_civil = require("kinot.calendar").days_from_civil

-- "Wed, 25 Nov 2026 19:41:18 GMT" -> ms since the epoch (UTC, no os.time)
local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }
local function http_date_ms(s)
  if not s then return nil end
  local d, mon, y, h, mi, sec = s:match("(%d+) (%a+) (%d+) (%d+):(%d+):(%d+)")
  local m = MONTHS[mon or ""]
  if not m then return nil end
  local days = days_from_civil(tonumber(y), m, tonumber(d))
  return ((days * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60000 + tonumber(sec) * 1000
end
M.http_date_ms = http_date_ms

--- retry_after(res[, now_ms]) -> seconds | nil: Retry-After as seconds or
-- as an HTTP date (seconds from now, never negative)
local function retry_after(res, now_ms)
  local v = header(res, "retry-after")
  if not v then return nil end
  local n = tonumber(v)
  if n then return n end
  local at = http_date_ms(v)
  if at then return math.max(0, (at - (now_ms or core.now_ms())) / 1000) end
end
M.retry_after = retry_after

-- ---------------------------------------------------------------- a response

local TIMESTAMP_ERRORS = { ["Invalid Timestamp"] = true, ["Timestamp Expired"] = true }
local RETRYABLE_GATEWAY = { ["Nonce Used"] = true, ["Invalid Nonce"] = true }

-- the gateway's StringToSign has '#' where the string had line feeds
local function server_sts(msg)
  local s = msg:match("Server StringToSign:%s*`?(.-)`?$")
  return s and (gsub(s, "#", "\n")) or nil
end

-- the gateway itself answered: X-Ca-Error-Message
local function gateway_refusal(res, signed, gw, fields)
  local status = res.status
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

--- response(res, signed, call) -> decoded document (typed) | nil, err
-- res = { status, headers (lower-case names), body }; signed: build's
-- signing result (its string_to_sign, shown beside the gateway's)
function M.response(res, signed, call)
  local status = res.status
  local fields = { status = status, request_id = header(res, "x-ca-request-id") }
  local gw = header(res, "x-ca-error-message")
  if gw then return gateway_refusal(res, signed, gw, fields) end
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

-- ---------------------------------------------------------------- a transport failure

--- transport_error(kind, message, not_sent, origin) -> err; raises misuse
-- for kind "invalid".  origin: the client's, whose userinfo (if any) no
-- message may repeat
function M.transport_error(kind, message, not_sent, origin)
  message = redact.text(message, origin)
  if kind == "invalid" then errors.misuse(message) end
  local retryable = kind == "network" or kind == "timeout"
  return errors.new(kind == "nomem" and "network" or kind, message, { retryable = retryable, not_sent = not_sent })
end

-- ---------------------------------------------------------------- unknown outcome

--- outcome_unknown(err) -> boolean: whether a failed attempt leaves it open
-- if the platform acted on the request: it may have arrived, and no answer
-- we can read says what came of it.  A decoded answer, or a refusal by the
-- gateway (but Nonce Used), is known.
function M.outcome_unknown(err)
  local k = err.kind
  if err.not_sent then return false end
  if k == "network" or k == "timeout" or k == "tls" or k == "decode" or k == "too_large" then return true end
  if (k == "http" or k == "gateway") and (err.status or 0) >= 500 then return true end
  if k == "gateway" and err.gateway_error and find(err.gateway_error, "^Nonce Used") then return true end
  return false
end

--- unknown_outcome(call, err) -> the error a non-idempotent call returns
-- when it cannot tell whether the platform acted on it (never retried)
function M.unknown_outcome(call, err)
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

--- safe_method(method) -> whether the HTTP method cannot act (GET, HEAD):
-- a raw request (client:request) with any other method whose outcome is
-- unknown gets unknown_outcome
function M.safe_method(method)
  return method == "GET" or method == "HEAD"
end

return M
