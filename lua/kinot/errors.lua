-- The one failure convention of the SDK (DESIGN §3): runtime failures come
-- back as `nil, err` where err is a table of this shape with a __tostring,
-- so `assert(client:lockers{})` prints a readable sentence.
local M = {}

local KINDS = {
  network = true, timeout = true, tls = true, http = true, api = true,
  gateway = true, signature = true, throttled = true, decode = true,
  not_found = true, too_large = true, callback = true,
  redis = true, -- an error answered by a Redis server (kinot.redis)
}
M.KINDS = KINDS

local mt = {}
mt.__index = mt

function mt.__tostring(e)
  local parts = { "kinot: " .. e.kind .. ": " .. e.message }
  if e.status then parts[#parts + 1] = "status " .. tostring(e.status) end
  if e.code then parts[#parts + 1] = "code " .. tostring(e.code) end
  if e.request_id then parts[#parts + 1] = "request " .. e.request_id end
  if e.attempts and e.attempts > 1 then parts[#parts + 1] = e.attempts .. " attempts" end
  local s = parts[1]
  if #parts > 1 then s = s .. " (" .. table.concat(parts, ", ", 2) .. ")" end
  if e.server_string_to_sign then
    s = s .. "\n  server string-to-sign: " .. e.server_string_to_sign:gsub("\n", "\\n")
       .. "\n  client string-to-sign: " .. (e.client_string_to_sign or "?"):gsub("\n", "\\n")
  end
  return s
end

--- Makes an error. `fields` may carry status, code, api_message, request_id,
-- gateway_error, retryable, attempts ... as DESIGN §3 lists them.
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

return M
