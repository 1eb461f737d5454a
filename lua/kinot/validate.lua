-- Argument checks done before anything is sent.  Misuse raises
-- errors.misuse naming the argument; where the caller stands is found by
-- kinot.errors, not counted here.  Numbers the reference types as int go
-- out as integers: an integral float (10.0) is taken as the integer it is,
-- anything else (2.5, inf, nan) raises.
local errors = require "kinot.errors"
local vocabulary = require "kinot.vocabulary"

local M = {}

local floor, tonumber, type, tostring, format, pairs = math.floor, tonumber, type, tostring, string.format, pairs
local tointeger = math.tointeger or function(n) return n end
local misuse = errors.misuse

--- fail(message): raises misuse (a trailing level argument, once counted by hand, is ignored)
function M.fail(msg)
  misuse(msg)
end

-- the integer a number is, within [lo, hi]; nil for anything else
local function integer(v, lo, hi)
  if type(v) ~= "number" or v ~= v or v < lo or v > hi or v ~= floor(v) then return nil end
  return tointeger(v)
end
M.integer = integer

-- a string as a message quotes it: redacted before the cut, which could
-- fall inside a URL's password and hide its '@'
local function shown(v)
  if type(v) == "string" then return "\"" .. require("kinot.redact").text(v, v):sub(1, 30) .. "\"" end
  return tostring(v)
end

local MAX_SN = vocabulary.INT_MAX -- the integer rule's largest (kinot.vocabulary)

--- sn(v, name) -> integer sn; accepts a positive integer (10.0 is 10) or a string of digits
function M.sn(v, name)
  name = name or "sn"
  local n = v
  if type(v) == "string" then n = v:match("^%d+$") and tonumber(v) end
  local big = type(n) == "number" and n > MAX_SN
  n = integer(n, 1, MAX_SN)
  -- beyond 2^53 a double may hold a neighbour of the serial meant
  if not n then
    misuse(name .. " must be a positive integer" .. (big and " up to 2^53 - 1 = 9007199254740991" or "") ..
      " (got " .. shown(v) .. ")")
  end
  return n
end

--- the integer as it goes in a path or a query: digits, never "1.0" or "1e+15"
function M.sn_text(n)
  return format("%d", n)
end
M.int_text = M.sn_text

--- page(opts) -> offset, limit: integers
function M.page(opts)
  opts = opts or {}
  if type(opts) ~= "table" then misuse("page options must be a table like {offset = 0, limit = 10}") end
  local offset = integer(opts.offset or 0, 0, 2147483647)
  if not offset then
    misuse("offset must be an integer from 0 to 2147483647 (a page index; got " .. shown(opts.offset) .. ")")
  end
  local limit = integer(opts.limit or 10, 10, 100)
  if not limit then misuse("limit must be an integer from 10 to 100 (got " .. shown(opts.limit) .. ")") end
  return offset, limit
end

-- the codes and the names kinot.vocabulary gives, each to its code
local DEVICE_TYPES = {}
for code in pairs(vocabulary.device_types) do DEVICE_TYPES[code] = code end
for name, code in pairs(vocabulary.device_names) do DEVICE_TYPES[name] = code end
local LOCK, SENSOR = vocabulary.device_codes.lock, vocabulary.device_codes.sensor
function M.device_type(v)
  local t = DEVICE_TYPES[v]
  if not t then
    misuse("device_type must be " .. LOCK .. " (lock), " .. SENSOR .. " (sensor), \"lock\" or \"sensor\" (got " ..
      shown(v) .. ")")
  end
  return t
end

local CALLBACK_TYPES = { status_changed = true, command_resp = true }
function M.callback_type(v)
  if not CALLBACK_TYPES[v] then
    misuse("callback_type must be \"status_changed\" or \"command_resp\" (got " .. shown(v) .. ")")
  end
  return v
end

function M.url(v, name)
  if type(v) ~= "string" or not v:match("^https?://[^%s/?#]+[^%s]*$") then
    misuse(name .. " must be an http:// or https:// URL (got " .. shown(v) .. ")")
  end
  return v
end

function M.guid(v)
  if type(v) ~= "string" or not v:match("^[%w%-]+$") or #v > 64 then
    misuse("guid must be the command's guid string (got " .. shown(v) .. ")")
  end
  return v
end

--- positive(v, name[, forever]) -> v: nil, or a finite number >= 0 (math.huge too when `forever`)
function M.positive(v, name, forever)
  if v ~= nil and (type(v) ~= "number" or v ~= v or v < 0 or (v == math.huge and not forever)) then
    misuse(name .. " must be a " .. (forever and "" or "finite ") .. "number >= 0 (got " .. shown(v) .. ")")
  end
  return v
end

--- set{"a", "b"} -> {a = true, b = true}: the known options of a function, for options()
function M.set(names)
  local s = {}
  for i = 1, #names do s[names[i]] = true end
  return s
end

--- options(opts, known, fname) -> opts: raises misuse naming every key of
-- opts that the set `known` lacks (an option silently ignored is a promise
-- silently broken: `max_age` to a function without one).  nil passes.
function M.options(opts, known, fname)
  if opts == nil then return nil end
  if type(opts) ~= "table" then misuse(fname .. ": options must be a table (got " .. type(opts) .. ")") end
  local unknown
  for k in pairs(opts) do
    if not known[k] then
      unknown = unknown or {}
      unknown[#unknown + 1] = shown(k)
    end
  end
  if unknown then
    table.sort(unknown)
    local names = {}
    for k in pairs(known) do names[#names + 1] = tostring(k) end
    table.sort(names)
    misuse(format("%s: unknown option%s %s (known: %s)", fname, #unknown > 1 and "s" or "",
      table.concat(unknown, ", "), table.concat(names, ", ")))
  end
  return opts
end

return M
