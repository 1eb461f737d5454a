-- Every known field of an API answer gets the type the reference's tables
-- give it, whatever its JSON text: the decoder types a value by its text
-- (on Lua 5.4 `"rs_si":-55` is an integer, `"sn":"419631107"` a string),
-- the platform's tables by field.  Applied once, on the response path, to
-- every decoded answer (request/classify.lua), keyed by the endpoint's path; raw
-- answers (client:request) are not touched.
--
-- Answers are typed leniently (the callbacks' verification is strict and
-- lives elsewhere):
--   int     a whole number within +-2^53 becomes an integer (3.0 -> 3 on
--           Lua 5.4); numeric text too ("419631107" -> 419631107); true /
--           false -> 1 / 0
--   float   any number becomes a float (0 -> 0.0 on Lua 5.4); numeric text
--           too ("37.919" -> 37.919)
--   string  a number becomes its decimal text: a whole number within
--           +-2^53 without a fraction (12345 -> "12345"), any other the
--           shortest text that reads back as the same double (3.654 -> "3.654")
--   json    (a command's parameter) as it came
-- A value that cannot be given its type ("abc" or 2.5 for an int field, a
-- boolean or an object for a string field) is kept as it came, and JSON
-- null stays kinot.json.null: one odd device must not make a whole page
-- unreadable, and the answer to a POST reports something already done (a
-- command created), which an error would hide.  Fields the tables do not
-- list pass through unchanged.  "Numeric text" is a JSON number's syntax
-- (no spaces, no hex, no inf/nan).
--
-- On LuaJIT every number is a double: int and float fields are numbers
-- alike there, and what changes is text to number and number to text.
local vocabulary = require "kinot.vocabulary"
local number_text = require("kinot.json").number_text

local M = {}

local type, tonumber, pairs, format, find, match = type, tonumber, pairs, string.format, string.find, string.match
local huge = math.huge
local mtype, tointeger = math.type, math.tointeger -- nil on LuaJIT / 5.1

local INT, FLOAT, STRING = 1, 2, 3
local CODE = { int = INT, float = FLOAT, string = STRING } -- json: left as it came

-- field table -> { names = {...}, kinds = {...}, n }
local function compile(...)
  local names, kinds = {}, {}
  for i = 1, select("#", ...) do
    for k, kind in pairs((select(i, ...))) do
      local code = CODE[kind]
      if code then names[#names + 1] = k; kinds[#names] = code end
    end
  end
  return { names = names, kinds = kinds, n = #names }
end

-- a JSON number's text, nothing more
local function numeric(s)
  return find(s, "^%-?%d+%.?%d*$") or find(s, "^%-?%d+%.?%d*[eE][-+]?%d+$")
end

-- the integer rule (kinot.vocabulary.whole): the integer, or nil
local whole = vocabulary.whole

local function to_int(v)
  local t = type(v)
  if t == "number" then
    if not mtype or mtype(v) == "integer" or not whole(v) then return v end -- LuaJIT: a double either way
    return tointeger(v)
  elseif t == "string" then
    if not numeric(v) then return v end
    local n = tonumber(v)
    if mtype and mtype(n) == "integer" then return n end
    if not whole(n) then return v end
    return tointeger and tointeger(n) or n
  elseif t == "boolean" then
    return v and 1 or 0
  end
  return v
end

local function to_float(v)
  local t = type(v)
  if t == "number" then return v + 0.0 end
  if t == "string" and numeric(v) then
    local n = tonumber(v) + 0.0
    if n == n and n ~= huge and n ~= -huge then return n end -- "1e999": kept as it came
  end
  return v
end

-- a number as JSON writes it (kinot.json): exact digits, shortest round trip
local function to_string(v)
  if type(v) ~= "number" then return v end
  return number_text(v) or format("%.17g", v)
end
M.to_int, M.to_float, M.to_string = to_int, to_float, to_string

-- A shape's typer: straight-line code, one field after another, made once
-- per field table.  The careful typer makes one C call a field (math.type
-- on Lua 5.4, nil for what is not a number; type() on LuaJIT, where it is
-- compiled).  On Lua 5.4 that cost about half as much as decoding a page
-- of 100 locks (~40 us against ~85 us), so a fast typer goes first, with no call at all: it raises at the first value
-- that is not already of its kind or a number that converts exactly (a
-- comparison raises on a string, a table, a boolean, null; `| 0` on a
-- float with a fraction), and the careful typer then types the answer
-- again; what the fast one had changed, it leaves as it is (each step
-- gives what the careful one would: spec/typed_spec.lua holds them to it).
local CAREFUL = mtype and {
  [FLOAT] = "v = o[%q]; if v ~= nil then m = mtype(v); " ..
            "if m == 'integer' then o[%q] = v + 0.0 elseif not m then o[%q] = to_float(v) end end",
  [INT] = "v = o[%q]; if v ~= nil and mtype(v) ~= 'integer' then o[%q] = to_int(v) end",
  [STRING] = "v = o[%q]; if v ~= nil and mtype(v) then o[%q] = to_string(v) end",
} or {
  [FLOAT] = "v = o[%q]; if v ~= nil and type(v) ~= 'number' then o[%q] = to_float(v) end",
  [INT] = "v = o[%q]; if v ~= nil and type(v) ~= 'number' then o[%q] = to_int(v) end",
  [STRING] = "v = o[%q]; if v ~= nil and type(v) ~= 'string' then o[%q] = to_string(v) end",
}
local FAST = mtype and {
  [FLOAT] = "v = o[%q]; if v ~= nil then c = v < 0; o[%q] = v + 0.0 end",
  [INT] = "v = o[%q]; if v ~= nil then if v >= L or v <= -L then fail() end o[%q] = v | 0 end",
  [STRING] = "v = o[%q]; if v ~= nil then c = v < '' end",
}

local function fail() error("kinot.typed: not of its kind", 0) end

local function make(template, shape)
  local code = { "local mtype, type, to_int, to_float, to_string, fail, L = ...", "return function(o)", "local v, m, c" }
  for i = 1, shape.n do
    local k = shape.names[i]
    code[#code + 1] = format(template[shape.kinds[i]], k, k, k)
  end
  code[#code + 1] = "return o end"
  local chunk = assert((loadstring or load)(table.concat(code, "\n"), "=kinot.typed"))
  return chunk(mtype, type, to_int, to_float, to_string, fail, vocabulary.INT_LIMIT)
end

local function fast_all(fast, objs)
  for i = 1, #objs do fast(objs[i]) end
end

-- shape -> { careful = function(obj), all = function(objs) }
local function typer(shape)
  local careful = make(CAREFUL, shape)
  local fast = FAST and make(FAST, shape)
  local function all(objs)
    if fast and pcall(fast_all, fast, objs) then return end
    for i = 1, #objs do
      local o = objs[i]
      if type(o) == "table" then careful(o) end
    end
  end
  return { careful = careful, all = all }
end

local F, ALSO = vocabulary.fields, vocabulary.also_typed
local SHAPES = {
  lockers = typer(compile(F.lock)),
  sensors = typer(compile(F.sensor)),
  dtu_devices = typer(compile(F.dtu)),
  commands = typer(compile(F.command, ALSO.command)),
  notifications = typer(compile(F.notification, ALSO.notification)),
  test = typer(compile(F.test_notification)), -- /test/notifications
}
local ENVELOPE = typer(compile(F.envelope)).careful

--- object(obj, fields) -> obj, typed in place by a field table
-- ({ name = "int" | "float" | "string" | "json" }, as kinot.vocabulary's)
local made = setmetatable({}, { __mode = "k" })
function M.object(obj, fields)
  local f = made[fields]
  if not f then f = typer(compile(fields)).careful; made[fields] = f end
  return f(obj)
end

--- answer(doc, path) -> doc, typed in place: its envelope, and each of
-- its objects by the endpoint (the path's first segment below the
-- endpoint: /lockers, /lockers/SN, /commands, /test/notifications ...)
function M.answer(doc, path)
  ENVELOPE(doc)
  local objs = doc.objects
  local shape = SHAPES[match(path, "^/([%w_]+)") or ""]
  if shape and type(objs) == "table" then shape.all(objs) end
  return doc
end

return M
