-- Argument checks done before anything is sent.  Misuse raises an error
-- naming the argument (level 3: the caller of the public method).
local M = {}

local floor, tonumber, type, tostring = math.floor, tonumber, type, tostring

local function fail(msg, level)
  error("kinot: " .. msg, (level or 3) + 1)
end
M.fail = fail

--- sn(v, name) -> integer sn; accepts a positive integer or a numeric string
function M.sn(v, name, level)
  name = name or "sn"
  local n = v
  if type(v) == "string" then
    if not v:match("^%d+$") then fail(name .. " must be a positive integer (got \"" .. v:sub(1, 30) .. "\")", level) end
    n = tonumber(v)
  end
  if type(n) ~= "number" or n ~= n or n < 1 or n ~= floor(n) or n >= 2 ^ 53 then
    fail(name .. " must be a positive integer (got " .. tostring(v) .. ")", level)
  end
  return math.tointeger and math.tointeger(n) or n
end

--- the sn as it goes in a path: digits, never "1.0"
function M.sn_text(n)
  return string.format("%d", n)
end

function M.page(opts, level)
  opts = opts or {}
  if type(opts) ~= "table" then fail("page options must be a table like {offset = 0, limit = 10}", level) end
  local offset, limit = opts.offset or 0, opts.limit or 10
  if type(offset) ~= "number" or offset < 0 or offset ~= floor(offset) then
    fail("offset must be an integer >= 0 (a page index; got " .. tostring(opts.offset) .. ")", level)
  end
  if type(limit) ~= "number" or limit ~= floor(limit) or limit < 10 or limit > 100 then
    fail("limit must be an integer from 10 to 100 (got " .. tostring(opts.limit) .. ")", level)
  end
  return offset, limit
end

local DEVICE_TYPES = { [18] = 18, [34] = 34, lock = 18, locker = 18, sensor = 34 }
function M.device_type(v, level)
  local t = DEVICE_TYPES[v]
  if not t then fail("device_type must be 18 (lock), 34 (sensor), \"lock\" or \"sensor\" (got " .. tostring(v) .. ")", level) end
  return t
end

local CALLBACK_TYPES = { status_changed = true, command_resp = true }
function M.callback_type(v, level)
  if not CALLBACK_TYPES[v] then
    fail("callback_type must be \"status_changed\" or \"command_resp\" (got " .. tostring(v) .. ")", level)
  end
  return v
end

function M.url(v, name, level)
  if type(v) ~= "string" or not v:match("^https?://[^%s/?#]+[^%s]*$") then
    fail(name .. " must be an http:// or https:// URL (got " .. require("kinot.redact").text(tostring(v)) .. ")", level)
  end
  return v
end

function M.guid(v, level)
  if type(v) ~= "string" or not v:match("^[%w%-]+$") or #v > 64 then
    fail("guid must be the command's guid string (got " .. tostring(v) .. ")", level)
  end
  return v
end

function M.positive(v, name, level)
  if v ~= nil and (type(v) ~= "number" or v < 0) then fail(name .. " must be a number >= 0", level) end
  return v
end

return M
