-- The C callback scanner (src/cbscan.c) for Lua, two calls:
--   check(raw, secrets) -> sign (upper hex), secret index | nil, reason, message
--   data()              -> data, nested_or_nil: the members of the body last checked
-- reason: "not_json", "not_object", "duplicate_key", "no_sign", "bad_sign".
-- On Lua 5.4 they are the Lua C API binding (kinot.core).  On LuaJIT they go
-- through the FFI: the JIT compiles the calls and the building of the data
-- table, which the C API cannot offer (spec/callback_spec.lua checks both
-- give the same).
local core = require "kinot.core"
local json = require "kinot.json"
local lib = require "kinot.native"

local M = { ffi = lib ~= false }

if not lib then
  M.check, M.data = core.callback_check, core.callback_data
  return M
end

local ffi = require "ffi"
local ok_new, new_tab = pcall(require, "table.new")
if not ok_new then new_tab = function() return {} end end
local ffi_string, ffi_new, type, error, tonumber = ffi.string, ffi.new, type, error, tonumber
local NULL = json.null

-- kn_cb_verdict and kn_cb_type, as in src/cbscan.h
local REASON = { "not_json", "not_object", "duplicate_key", "no_sign", "bad_sign" }
local NOMEM = 6
local STRING, NUMBER, TRUE, FALSE, NULLV = 0, 1, 2, 3, 4

-- one scanner per Lua state, as the C API binding has
local scanner = ffi.gc(lib.kn_cb_scanner_new(), lib.kn_cb_scanner_free)
if scanner == nil then error("kinot: out of memory creating the callback scanner") end
local hex, index, why = ffi_new("char[33]"), ffi_new("int[1]"), ffi_new("char[200]")
local members, count = ffi_new("const kn_cb_member *[1]"), ffi_new("size_t[1]")

-- the secrets as kn_str, remade only when the list (or a member) changes;
-- `held` (the list at [0], its strings at 1..n) keeps the strings the
-- array points into alive
local held, held_arr = nil, nil
local function secret_array(secrets)
  local n = #secrets
  if held and #held == n and held[0] == secrets then
    local same = true
    for i = 1, n do
      if held[i] ~= secrets[i] then same = false break end
    end
    if same then return held_arr, n end
  end
  local arr = ffi_new("kn_str[?]", n > 0 and n or 1)
  local keep = { [0] = secrets }
  for i = 1, n do
    local s = secrets[i]
    if type(s) ~= "string" then error("kinot: secret[" .. i .. "] must be a string", 3) end
    arr[i - 1].p, arr[i - 1].n = s, #s
    keep[i] = s
  end
  held, held_arr = keep, arr
  return arr, n
end

function M.check(raw, secrets)
  if type(raw) ~= "string" then error("kinot: callback body must be a string", 2) end
  if type(secrets) ~= "table" then error("kinot: callback secrets must be a list of strings", 2) end
  local arr, n = secret_array(secrets)
  local verdict = lib.kn_cb_check(scanner, raw, #raw, arr, n, hex, index, why, 200)
  if verdict == 0 then return ffi_string(hex, 32), index[0] end
  if verdict == NOMEM then error("kinot: " .. ffi_string(why)) end
  return nil, REASON[verdict], ffi_string(why)
end

-- member names, by the scanner's name slots: a name seen before is not
-- made into a string again.  A call that failed half way (out of memory)
-- may have left names behind the scanner's slots: the next call starts
-- them afresh.
local names, building = {}, false

function M.data()
  if lib.kn_cb_convert(scanner, members, count) ~= 0 then error("kinot: out of memory") end
  if building then names = {} end
  building = true
  local m, n = members[0], tonumber(count[0])
  local data, nested = new_tab(0, n), nil
  for i = 0, n - 1 do
    local e = m[i]
    local slot, key = e.name_slot
    if slot > 0 then key = names[slot] end
    if key == nil then
      key = ffi_string(e.key.p, e.key.n)
      if slot ~= 0 then names[slot < 0 and -slot or slot] = key end
    end
    local t, v = e.type
    if t == STRING then v = ffi_string(e.text.p, e.text.n)
    elseif t == NUMBER then v = e.number
    elseif t == TRUE then v = true
    elseif t == FALSE then v = false
    elseif t == NULLV then v = NULL
    else -- an object or array: its raw text, for the caller to decode
      v = ffi_string(e.text.p, e.text.n)
      nested = nested or {}
      nested[key] = v
    end
    data[key] = v
  end
  building = false
  return data, nested
end

return M
