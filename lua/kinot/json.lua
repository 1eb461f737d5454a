-- JSON in and out: the one reader and the one writer of the SDK, the CLI
-- and the simulator.  Decoding is the C core's reader: it tolerates the
-- platform's trailing commas and keeps integers integers on Lua 5.3+
-- (lua-cjson 2.1 decodes every number as a float, which would print sn as
-- 419631107.0).  null decodes to json.null (the same value as cjson.null).
--
-- Encoding is this file's, not lua-cjson's: lua-cjson writes 14 significant
-- digits, so the serial 123456789012345 went out as 1.2345678901234e+14,
-- another device.  Here an integer within +-2^53 (a Lua 5.4 integer of any
-- size too) goes out as its exact digits, an integral float as the integer
-- it is (10.0 is 10), any other float as the shortest text that reads back
-- as the same double (0.1, 0.30000000000000004, 1e+300).  A value JSON
-- cannot carry raises misuse naming where it is, before anything is sent
-- (a table with both list and named keys, NaN, a function ...).  Object
-- keys are written sorted, so the same table gives the same text.
local core = require "kinot.core"
local errors = require "kinot.errors"

local M = {}

--- the JSON null, as the reader gives it (a NULL lightuserdata: == cjson.null)
M.null = core.json_decode("null")

local type, pairs, tostring, tonumber, floor, huge = type, pairs, tostring, tonumber, math.floor, math.huge
local format, gsub, byte, concat, sort = string.format, string.gsub, string.byte, table.concat, table.sort
local mtype = math.type

--- decode(text) -> value | nil, reason
M.decode = core.json_decode

local SAFE = 2 ^ 53

--- number_text(n) -> the JSON text of a finite number (nil for NaN, +-inf):
-- exact digits for an integer (within +-2^53 for a float), else the
-- shortest of 15, 16, 17 significant digits that reads back as n
local function number_text(v)
  if mtype and mtype(v) == "integer" then return format("%d", v) end
  if v ~= v or v == huge or v == -huge then return nil end
  if v == floor(v) and v >= -SAFE and v <= SAFE then return format("%d", v) end
  local s = format("%.15g", v)
  if tonumber(s) == v then return s end
  s = format("%.16g", v)
  if tonumber(s) == v then return s end
  return format("%.17g", v)
end
M.number_text = number_text

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r",
                  ["\t"] = "\\t" }
local function escape(c)
  return ESCAPES[c] or format("\\u%04x", byte(c))
end

local function string_text(s)
  return '"' .. gsub(s, '[%c"\\]', escape) .. '"'
end

local function key_text(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return "." .. k end
  if type(k) == "string" then return "[\"" .. k:sub(1, 30) .. "\"]" end
  return "[" .. tostring(k) .. "]"
end

local MAX_DEPTH = 1000

local function refuse(where, why)
  errors.misuse(where .. " cannot be sent as JSON (" .. why .. ")")
end

local write

local function write_table(t, where, out, seen, depth)
  if seen[t] then refuse(where, "it contains itself") end
  if depth > MAX_DEPTH then refuse(where, "nested deeper than " .. MAX_DEPTH) end
  seen[t] = true
  -- a list: keys 1..n, no hole; an object: string keys; nothing else
  local n, keys, ints, others = #t, {}, 0, false
  for k in pairs(t) do
    if type(k) == "string" then keys[#keys + 1] = k
    elseif type(k) == "number" and k >= 1 and k <= n and k == floor(k) then ints = ints + 1
    else others = true end
  end
  if others or ints ~= n or (#keys > 0 and n > 0) then
    refuse(where, "a table must be a list 1..n or have only string keys")
  end
  if n > 0 then
    out[#out + 1] = "["
    for i = 1, n do
      if i > 1 then out[#out + 1] = "," end
      write(t[i], where .. "[" .. i .. "]", out, seen, depth + 1)
    end
    out[#out + 1] = "]"
  else
    sort(keys)
    out[#out + 1] = "{"
    for i, k in ipairs(keys) do
      out[#out + 1] = (i > 1 and "," or "") .. string_text(k) .. ":"
      write(t[k], where .. key_text(k), out, seen, depth + 1)
    end
    out[#out + 1] = "}"
  end
  seen[t] = nil
end

function write(v, where, out, seen, depth)
  local t = type(v)
  if t == "string" then out[#out + 1] = string_text(v)
  elseif t == "number" then
    local s = number_text(v)
    if not s then refuse(where, tostring(v)) end
    out[#out + 1] = s
  elseif t == "boolean" then out[#out + 1] = v and "true" or "false"
  elseif t == "table" then write_table(v, where, out, seen, depth)
  elseif v == M.null then out[#out + 1] = "null"
  else refuse(where, "a " .. t) end
end

--- encode(v[, name]) -> text; raises misuse, naming where in v (called
-- `name`, "value" by default) the first value JSON cannot carry is
function M.encode(v, name)
  local t = type(v)
  -- the scalars the simulator writes member by member: no table to build
  if t == "string" then return string_text(v) end
  if t == "number" then
    local s = number_text(v)
    if s then return s end
  end
  local out = {}
  write(v, name or "value", out, {}, 1)
  return concat(out)
end

--- check(v, name) -> v; raises misuse as encode would (nil passes)
function M.check(v, name)
  if v ~= nil then M.encode(v, name) end
  return v
end

return M
