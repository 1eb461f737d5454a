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
local core = require "kinot.core_loader"
local errors = require "kinot.errors"

local M = {}

--- the JSON null, as the reader gives it (a NULL lightuserdata: == cjson.null)
M.null = core.json_decode("null")

local type, pairs, tostring, tonumber, floor, huge = type, pairs, tostring, tonumber, math.floor, math.huge
local format, gsub, find, byte, concat, sort = string.format, string.gsub, string.find, string.byte, table.concat, table.sort
local mtype = math.type

--- decode(text) -> value | nil, reason
M.decode = core.json_decode

-- (bounds the doubles written as digits: kinot.vocabulary's integer rule)
local SAFE = require("kinot.vocabulary").INT_LIMIT

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
  if not find(s, '[%c"\\]') then return '"' .. s .. '"' end
  return '"' .. gsub(s, '[%c"\\]', escape) .. '"'
end

local function key_text(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return "." .. k end
  if type(k) == "string" then return "[\"" .. k:sub(1, 30) .. "\"]" end
  return "[" .. tostring(k) .. "]"
end

local MAX_DEPTH = 1000

-- a member name's text ('"name":'), kept: the same names come back object
-- after object (a page of devices); a bounded cache, emptied when full
local KEY_TEXT, key_count = {}, 0
local function key_cached(k)
  if key_count >= 4096 then KEY_TEXT, key_count = {}, 0 end
  local kt = string_text(k) .. ":"
  KEY_TEXT[k], key_count = kt, key_count + 1
  return kt
end

-- where a refused value is: the name, then the keys down to it (kept as a
-- stack while writing, made into text only for the message)
local function refuse(name, path, depth, why)
  local parts = { name }
  for i = 1, depth - 1 do parts[#parts + 1] = key_text(path[i]) end
  errors.misuse(concat(parts) .. " cannot be sent as JSON (" .. why .. ")")
end

local write

local function write_table(t, name, path, out, seen, depth)
  if seen[t] then refuse(name, path, depth, "it contains itself") end
  if depth > MAX_DEPTH then refuse(name, path, depth, "nested deeper than " .. MAX_DEPTH) end
  seen[t] = true
  -- a list: keys 1..n, no hole; an object: string keys; nothing else
  local n, keys, nkeys, ints, others = #t, nil, 0, 0, false
  for k in pairs(t) do
    if type(k) == "string" then
      keys = keys or {}
      nkeys = nkeys + 1
      keys[nkeys] = k
    elseif type(k) == "number" and k >= 1 and k <= n and k == floor(k) then ints = ints + 1
    else others = true end
  end
  if others or ints ~= n or (nkeys > 0 and n > 0) then
    refuse(name, path, depth, "a table must be a list 1..n or have only string keys")
  end
  local o = #out
  if n > 0 then
    o = o + 1
    out[o] = "["
    for i = 1, n do
      if i > 1 then o = o + 1 out[o] = "," end
      path[depth] = i
      o = write(t[i], name, path, out, seen, depth + 1)
    end
    o = o + 1
    out[o] = "]"
  else
    if keys then sort(keys) end
    o = o + 1
    out[o] = "{"
    for i = 1, nkeys do
      local k = keys[i]
      local kt = KEY_TEXT[k]
      if not kt then kt = key_cached(k) end
      o = o + 1
      out[o] = i > 1 and ("," .. kt) or kt
      path[depth] = k
      o = write(t[k], name, path, out, seen, depth + 1)
    end
    o = o + 1
    out[o] = "}"
  end
  path[depth] = nil
  seen[t] = nil
  return o
end

-- appends v's text to out; returns #out
function write(v, name, path, out, seen, depth)
  local t, o = type(v), #out + 1
  if t == "string" then out[o] = string_text(v)
  elseif t == "number" then
    local s = number_text(v)
    if not s then refuse(name, path, depth, tostring(v)) end
    out[o] = s
  elseif t == "boolean" then out[o] = v and "true" or "false"
  elseif t == "table" then return write_table(v, name, path, out, seen, depth)
  elseif v == M.null then out[o] = "null"
  else refuse(name, path, depth, "a " .. t) end
  return o
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
  write(v, name or "value", {}, out, {}, 1)
  return concat(out)
end

--- check(v, name) -> v; raises misuse as encode would (nil passes)
function M.check(v, name)
  if v ~= nil then M.encode(v, name) end
  return v
end

return M
