-- The two JSON writers the SDK had before kinot.json.encode moved into the
-- C core (src/lua_json.c), kept here only as the oracle of
-- spec/json_writer_spec.lua: the C writer must give their bytes for every
-- value.  M.encode is kinot.json.encode as it was in Lua (keys sorted);
-- M.json_text is the CLI's ordered writer of kinot.cli.output as it was
-- (keys in a shape's order, the rest sorted; floats and escaped strings by
-- M.encode).  Not used by anything under lua/.
local errors = require "kinot.errors"

local M = {}

local type, pairs, tostring, tonumber, floor, huge = type, pairs, tostring, tonumber, math.floor, math.huge
local format, gsub, find, byte, concat, sort = string.format, string.gsub, string.find, string.byte, table.concat, table.sort
local mtype = math.type
local null = require("kinot.json").null

-- ---------------------------------------------------------------- kinot.json.encode (Lua)
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
  elseif v == null then out[o] = "null"
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


-- ---------------------------------------------------------------- kinot.cli.output.json_text
local json = M
local S = require("kinot.cli.output").SHAPES
-- (the CLI filled this from its shapes with json.encode(k): the same texts)
local CLI_KEY_TEXT = {}
-- cjson writes "/" as "\/": a run of backslashes before "/" is always odd
-- there (each "\" of the text is "\\"), its last one escapes the slash
local function unescape_slashes(text)
  if not text:find("\\/", 1, true) then return text end
  return (text:gsub("(\\+)/", function(run) if #run % 2 == 1 then return run:sub(2) .. "/" end end))
end

local encode

-- what JSON cannot carry raises misuse, as kinot.json.check says it
local function cli_refuse(why) errors.misuse("output cannot be written as JSON (" .. why .. ")") end

local function encode_table(t, shape, out, depth)
  shape = shape or {}
  if depth > 1000 then cli_refuse("nested deeper than 1000, or it contains itself") end
  if t[1] ~= nil or (next(t) == nil and shape.items) then
    local n, count = #t, 0
    for _ in pairs(t) do count = count + 1 end
    if count ~= n then cli_refuse("a table must be a list 1..n or have only string keys") end
    out[#out + 1] = "["
    for i = 1, n do
      if i > 1 then out[#out + 1] = "," end
      encode(t[i], shape.items, out, depth + 1)
    end
    out[#out + 1] = "]"
    return
  end
  -- the shape's keys present, in its order; then the others, sorted
  local keys, rank = {}, shape.rank
  if not rank then -- once per shape
    rank = {}
    for i, k in ipairs(shape.order or {}) do rank[k] = i end
    shape.rank = rank
  end
  local rest = {}
  for k in pairs(t) do
    if not rank[k] then
      if type(k) ~= "string" then cli_refuse("a table must be a list 1..n or have only string keys") end
      rest[#rest + 1] = k
    end
  end
  for _, k in ipairs(shape.order or {}) do if t[k] ~= nil then keys[#keys + 1] = k end end
  table.sort(rest)
  for _, k in ipairs(rest) do keys[#keys + 1] = k end
  out[#out + 1] = "{"
  for i, k in ipairs(keys) do
    if i > 1 then out[#out + 1] = "," end
    out[#out + 1] = CLI_KEY_TEXT[k] or unescape_slashes(json.encode(k))
    out[#out + 1] = ":"
    encode(t[k], shape.fields and shape.fields[k], out, depth + 1)
  end
  out[#out + 1] = "}"
end

local INT_LIMIT = 2 ^ 53

function encode(v, shape, out, depth)
  local t = type(v)
  if t == "table" then return encode_table(v, shape, out, depth) end
  -- the common cases here (a string with nothing to escape, a whole
  -- number within +-2^53: its exact digits); any other value as the SDK's
  -- encoder writes it (kinot.json), "/" as it is
  if t == "string" and not v:find('[%c"\\/]') then
    out[#out + 1] = '"' .. v .. '"'
  elseif t == "number" and v == floor(v) and v > -INT_LIMIT and v < INT_LIMIT and (v ~= 0 or 1 / v > 0) then
    out[#out + 1] = format("%d", v)
  else
    out[#out + 1] = t == "string" and unescape_slashes(json.encode(v)) or json.encode(v)
  end
end

--- json_text(v[, shape]) -> one line of JSON: keys in the shape's order (a
-- name in M.SHAPES, or a shape), the rest sorted; "/" unescaped
function M.json_text(v, shape)
  if type(shape) == "string" then shape = assert(S[shape], "no JSON shape " .. shape) end
  local out = {}
  encode(v, shape, out, 1)
  return concat(out)
end


return M
