-- JSON in and out.  Decoding is the C core's reader: it tolerates the
-- platform's trailing commas and keeps integers integers on Lua 5.3+
-- (lua-cjson 2.1 decodes every number as a float, which would print sn as
-- 419631107.0).  null decodes to cjson.null.  Encoding is lua-cjson's, after
-- check(): a value JSON cannot carry raises misuse naming where it is,
-- before anything is sent (lua-cjson would fail, or guess: a table with
-- both list and named keys would go out as an object keyed "1", "2" ...).
local cjson = require "cjson.safe"
local core = require "kinot.core_loader"
local errors = require "kinot.errors"

local M = {}
M.null = cjson.null

local type, pairs, tostring, floor, huge = type, pairs, tostring, math.floor, math.huge

--- decode(text) -> value | nil, reason
M.decode = core.json_decode

local function key_text(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return "." .. k end
  if type(k) == "string" then return "[\"" .. k:sub(1, 30) .. "\"]" end
  return "[" .. tostring(k) .. "]"
end

local check

local MAX_DEPTH = 1000 -- lua-cjson's own limit

local function check_table(t, where, seen, depth)
  if seen[t] then errors.misuse(where .. " cannot be sent as JSON (it contains itself)") end
  if depth > MAX_DEPTH then errors.misuse(where .. " cannot be sent as JSON (nested deeper than " .. MAX_DEPTH .. ")") end
  seen[t] = true
  -- an array: keys 1..n, no hole; an object: string keys; nothing else
  local n, strings, ints, others = #t, false, 0, false
  for k in pairs(t) do
    if type(k) == "string" then strings = true
    elseif type(k) == "number" and k >= 1 and k <= n and k == floor(k) then ints = ints + 1
    else others = true end
  end
  if others or ints ~= n or (strings and n > 0) then
    errors.misuse(where .. " cannot be sent as JSON (a table must be a list 1..n or have only string keys)")
  end
  for k, v in pairs(t) do check(v, where .. key_text(k), seen, depth + 1) end
  seen[t] = nil
end

function check(v, where, seen, depth)
  local t = type(v)
  if t == "string" or t == "boolean" then return end
  if t == "number" then
    if v ~= v or v == huge or v == -huge then
      errors.misuse(where .. " cannot be sent as JSON (" .. tostring(v) .. ")")
    end
    return
  end
  if t == "table" then return check_table(v, where, seen, depth or 1) end
  if v == M.null then return end -- lightuserdata
  errors.misuse(where .. " cannot be sent as JSON (a " .. t .. ")")
end

--- check(v, name) -> v; raises misuse naming where in v the first value
-- JSON cannot carry is (NaN, inf, a function, a table neither list nor object)
function M.check(v, name)
  if v ~= nil then check(v, name or "value", {}) end
  return v
end

--- encode(v[, name]) -> text; raises misuse, naming the value, for what JSON cannot carry
function M.encode(v, name)
  check(v, name or "value", {})
  local s, err = cjson.encode(v)
  if not s then errors.misuse((name or "value") .. " cannot be sent as JSON (" .. tostring(err) .. ")") end
  return s
end

return M
