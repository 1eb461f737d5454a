-- The two error classes of the SDK (docs/errors.md), one constructor each:
--
--  * runtime failures come back as `nil, err` where err = errors.new(kind,
--    message, fields): a table with a __tostring, so `assert(client:lockers{})`
--    prints a readable sentence;
--  * misuse (a programming error: a wrong argument, a closed client) raises
--    errors.misuse(message): an object of its own class, told apart by type
--    (errors.is_misuse), never by its text.
--
-- Both print "kinot: " once.  The C core raises through the same two
-- classes: their metatables live in the Lua registry under "kinot.Misuse"
-- and "kinot.Error", created by kinot.core and completed here.
local core = require "kinot.core_loader"

---@class kinot.errors
---@field KINDS table<kinot.ErrorKind, true> every runtime error kind
local M = {}

local getinfo, getmetatable, setmetatable, tostring = debug.getinfo, getmetatable, setmetatable, tostring

local KINDS = {
  network = true, timeout = true, tls = true, http = true, api = true,
  gateway = true, signature = true, throttled = true, decode = true,
  not_found = true, too_large = true, callback = true,
  internal = true, -- the machine failed (memory, OpenSSL, libcurl's setup): raised by the C core
  -- a request that is not idempotent may or may not have been acted on
  unknown_outcome = true,
  redis = true, -- an error answered by a Redis server (kinot.redis)
  -- Ctrl-C under the CLI's SIGINT handler (core.catch_interrupt): raised by
  -- the C core's waits, returned by kinot.redis's waits over LuaSocket; the
  -- SDK alone never sees it
  interrupted = true,
}
M.KINDS = KINDS

local mt, misuse_mt = core.error_metatables()
mt.__index = mt
misuse_mt.__index = misuse_mt

function mt.__tostring(e)
  local parts = { "kinot: " .. e.kind .. ": " .. e.message }
  if e.status then parts[#parts + 1] = "status " .. tostring(e.status) end
  if e.code then parts[#parts + 1] = "code " .. tostring(e.code) end
  if e.request_id then parts[#parts + 1] = "request " .. e.request_id end
  if e.attempts and e.attempts > 1 then parts[#parts + 1] = e.attempts .. " attempts" end
  local s = parts[1]
  if #parts > 1 then s = s .. " (" .. table.concat(parts, ", ", 2) .. ")" end
  if e.server_string_to_sign == e.client_string_to_sign and e.server_string_to_sign then
    s = s .. "\n  string-to-sign (the same on both sides): " .. e.server_string_to_sign:gsub("\n", "\\n")
  elseif e.server_string_to_sign then
    s = s .. "\n  server string-to-sign: " .. e.server_string_to_sign:gsub("\n", "\\n")
       .. "\n  client string-to-sign: " .. (e.client_string_to_sign or "?"):gsub("\n", "\\n")
  end
  return s
end

function misuse_mt.__tostring(e)
  return "kinot: " .. e.message
end

--- Makes a runtime error. `fields` may carry status, code, api_message,
-- request_id, gateway_error, retryable, attempts ... as docs/errors.md lists them.
---@param kind kinot.ErrorKind
---@param message string one human sentence, without the "kinot: " prefix
---@param fields? table status, code, api_message, request_id, retryable, attempts ... (kinot.Error's fields)
---@return kinot.Error
function M.new(kind, message, fields)
  assert(KINDS[kind], "unknown error kind " .. tostring(kind))
  local e = fields or {}
  e.kind, e.message = kind, message
  if e.retryable == nil then e.retryable = false end
  e.attempts = e.attempts or 1
  return setmetatable(e, mt)
end

--- is(v) -> whether v is a runtime error table (kinot.Error)
---@param v any
---@return boolean
function M.is(v)
  return getmetatable(v) == mt
end

-- the SDK's own files: "@.../lua/kinot/" (or "\"), the directory of this
-- file.  The separator is part of it: a caller's "@.../lua/kinot_app.lua"
-- is not the SDK's.
local SDK = getinfo(1, "S").source:match("^(@.*kinot[/\\])errors%.lua$") or "@\0"

-- "file:line" of the first frame outside the SDK (and outside C), however
-- deep in the SDK the raise is: the same frame on Lua 5.4 and LuaJIT
local function caller()
  for level = 3, 200 do
    local info = getinfo(level, "Sl")
    if not info then return nil end
    local src = info.source
    if info.what ~= "C" and src:sub(1, #SDK) ~= SDK then
      return (info.short_src or src) .. ":" .. (info.currentline or 0)
    end
  end
end

--- misuse_object(message) -> the misuse error, not raised: { kind = "misuse", message, where }
-- `message` says what is wrong with which argument, without the "kinot: " prefix.
---@param message string what is wrong with which argument
---@return kinot.Misuse
function M.misuse_object(message)
  message = tostring(message):gsub("^kinot: ", "") -- the prefix is tostring's, once
  return setmetatable({ kind = "misuse", message = message, where = caller() }, misuse_mt)
end

-- Inside nginx an error nobody catches is logged by lua-nginx-module, and
-- it reads only a string or a number: a table, __tostring or not, is
-- logged as "unknown reason" (content, access, timers ...) or "unknown
-- error" (init_by_lua), ngx_http_lua_util.c.  So when no pcall or xpcall of
-- this coroutine stands between the raise and nginx, the misuse is logged
-- here first, readably, and still raised as the object it is.
local ngx = rawget(_G, "ngx")
local pcall, xpcall = pcall, xpcall

local function caught()
  for level = 3, 200 do
    local info = getinfo(level, "f")
    if not info then return false end
    if info.func == pcall or info.func == xpcall then return true end
  end
  return true
end

local function log_uncaught(e)
  if ngx and ngx.log and not caught() then
    ngx.log(ngx.ERR, misuse_mt.__tostring(e), e.where and (" (at " .. e.where .. ")") or "")
  end
end

--- misuse(message): raises the misuse error.  `where` names the first
-- caller outside the SDK, found by walking the stack, not counted by hand.
---@param message string what is wrong with which argument
function M.misuse(message)
  local e = M.misuse_object(message)
  log_uncaught(e)
  error(e, 0)
end

-- the C core's misuse (kn_raise, src/lua_binding.c) is completed here, so
-- that it has the same `where` and the same log as one raised from Lua
debug.getregistry()["kinot.misuse_complete"] = function(e)
  e.where = caller()
  log_uncaught(e)
end

--- is_misuse(v) -> whether v is a misuse object (kinot.Misuse)
---@param v any
---@return boolean
function M.is_misuse(v)
  return getmetatable(v) == misuse_mt
end

-- ------------------------------------------------------------ LuaLS types

---@alias kinot.ErrorKind
---| "network"         # refused, reset or closed; the name did not resolve; a proxy refused the tunnel
---| "timeout"         # the request's deadline passed; or wait_command's own wait ran out (err.command)
---| "tls"             # the handshake failed or the certificate could not be verified
---| "http"            # an HTTP status other than 200 with no gateway message
---| "api"             # the platform answered code ~= 0; an iterator's page that does not add up
---| "gateway"         # the API gateway refused the request (X-Ca-Error-Message)
---| "signature"       # the gateway refused the signature (Invalid Signature)
---| "throttled"       # HTTP 429, or the gateway's "Throttled by ..."
---| "decode"          # the answer is not valid JSON, or not an object; a Redis reply not RESP, or too deep
---| "not_found"       # an unknown sn or guid
---| "too_large"       # the answer passed its cap; a callback body over max_body; a Redis reply over max_reply
---| "callback"        # a callback body was refused (err.reason)
---| "unknown_outcome" # a command may or may not have reached the platform: never retried
---| "redis"           # a Redis server's own error answer (err.code)
---| "internal"        # the machine failed (memory, OpenSSL, libcurl's setup): raised by the C core

--- A runtime failure, returned as `nil, err` (docs/errors.md).
---@class kinot.Error
---@field kind kinot.ErrorKind what failed
---@field message string one human sentence; never the app secret, a signature or a URL's password
---@field status? integer the HTTP status, where there was one
---@field code? integer|string the platform's `code` when `code ~= 0`; a Redis error's first word (kind "redis")
---@field api_message? string the platform's `message` when `code ~= 0`
---@field request_id? string X-Ca-Request-Id, where the gateway sent one
---@field gateway_error? string X-Ca-Error-Message, verbatim
---@field server_string_to_sign? string on Invalid Signature: the gateway's string-to-sign
---@field client_string_to_sign? string on Invalid Signature: the SDK's string-to-sign
---@field retryable boolean whether a retry could succeed
---@field attempts integer how many attempts were made
---@field not_sent? boolean true when the request provably never reached the platform
---@field retry_after? number seconds the server asked to wait (429, 5xx, throttling)
---@field cause? kinot.ErrorKind on unknown_outcome: the kind of the failure behind it
---@field command? kinot.Command on wait_command's own timeout: the command's last state
---@field reason? kinot.callback.Reason on kind "callback": why the body was refused
---@field rules? string[] under verify = "monitor": the sign rules the refused body verifies under
---@field fleet_changed? boolean from an iterator: the fleet changed while paging
---@field paging? kinot.Paging from an iterator: the reading in use, on a paging mismatch
---@field platform_paging? kinot.Paging from an iterator: the platform's reading, on a paging mismatch

--- A programming error, raised (never returned) by every call of the SDK.
---@class kinot.Misuse
---@field kind "misuse"
---@field message string what is wrong with which argument, without the "kinot: " prefix
---@field where? string file:line of the first caller outside the SDK
return M
