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
local core = require "kinot.core"

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
function M.new(kind, message, fields)
  assert(KINDS[kind], "unknown error kind " .. tostring(kind))
  local e = fields or {}
  e.kind, e.message = kind, message
  if e.retryable == nil then e.retryable = false end
  e.attempts = e.attempts or 1
  return setmetatable(e, mt)
end

function M.is(v)
  return getmetatable(v) == mt
end

-- the SDK's own files: "@.../lua/" of this file, then "kinot/"
local SDK = (getinfo(1, "S").source:match("^(@.*)kinot[/\\]errors%.lua$") or "@\0") .. "kinot"

-- "file:line" of the first caller outside the SDK (and outside C)
local function caller()
  for level = 3, 60 do
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
function M.misuse_object(message)
  message = tostring(message):gsub("^kinot: ", "") -- the prefix is tostring's, once
  return setmetatable({ kind = "misuse", message = message, where = caller() }, misuse_mt)
end

--- misuse(message): raises the misuse error.  `where` names the first
-- caller outside the SDK, found by walking the stack, not counted by hand.
function M.misuse(message)
  error(M.misuse_object(message), 0)
end

function M.is_misuse(v)
  return getmetatable(v) == misuse_mt
end

return M
