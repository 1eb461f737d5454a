-- JSON in and out: the one reader and the one writer of the SDK, the CLI
-- and the simulator.  Decoding is the C core's reader: it tolerates the
-- platform's trailing commas and keeps integers integers on Lua 5.3+
-- (lua-cjson 2.1 decodes every number as a float, which would print sn as
-- 419631107.0).  null decodes to json.null (the same value as cjson.null).
--
-- Encoding is the C core's writer too (src/lua_json.c, lua-cjson's speed
-- or better), not lua-cjson: lua-cjson writes 14 significant digits, so
-- the serial 123456789012345 went out as 1.2345678901234e+14, another
-- device.  Here an integer within +-2^53 (a Lua 5.4 integer of any size
-- too) goes out as its exact digits, an integral float as the integer it is
-- (10.0 is 10, -0.0 is 0), any other float as the shortest of 15, 16, 17
-- significant digits that reads back as the same double (0.1,
-- 0.30000000000000004, 1e+300).  Strings go out byte for byte but '"', '\\'
-- and the control bytes (C0 and DEL, escaped); '/' and UTF-8 as they are.
-- A value JSON cannot carry raises misuse naming where it is, before
-- anything is sent (a table with both list and named keys, NaN, a
-- function, a table inside itself, nesting deeper than 1000 ...).
--
-- Object keys are written sorted (bytewise), so the same table gives the
-- same text; or in the order a shape gives (the CLI's --json follows the
-- reference's order that way):
--   shape = { order = { "sn", "voltage" },       -- these first, when present
--             fields = { parameter = shape },    -- the shape of a member
--             items = shape }                    -- of a list's items; an empty
--                                                -- table is then [], not {}
-- keys the order does not name follow it, sorted.  A shape is read once
-- (the writer keeps what it made of it): do not change it after use.
local core = require "kinot.core_loader"

local M = {}

--- the JSON null, as the reader gives it (a NULL lightuserdata: == cjson.null)
M.null = core.json_decode("null")

--- decode(text) -> value | nil, reason
M.decode = core.json_decode

--- encode(v[, shape][, name]) -> text; raises misuse, naming where in v
-- (called `name`, "value" by default) the first value JSON cannot carry is
-- (encode(v, name) as well: a string there is the name)
M.encode = core.json_encode

local encode, huge = core.json_encode, math.huge

--- number_text(n) -> the JSON text of a finite number (nil for NaN, +-inf)
function M.number_text(v)
  if v ~= v or v == huge or v == -huge then return nil end
  return encode(v)
end

--- check(v, name) -> v; raises misuse as encode would (nil passes)
function M.check(v, name)
  if v ~= nil then encode(v, name) end
  return v
end

return M
