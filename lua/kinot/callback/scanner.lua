-- The C callback scanner (src/cbscan.c) for Lua: the one reader of
-- callback bodies and the one builder of an event's data, three calls:
--   verify(raw, secrets, types) -> sign (upper hex), secret index, data, nested_or_nil
--                                | nil, reason, message
--     the default rule ("md5-key") whole: scan, sign check, data
--   data(raw, types[, keep_empty, keep_null]) -> data, nested_or_nil | nil, reason, message
--     the same data of a body whose sign was checked elsewhere (another
--     sign rule, in Lua: kinot.callback.rules) or not at all (the worker's
--     rebuild, verify = "monitor"); keep_*: the rule signs "" / null
--     members, so they are data (a null as json.null)
--   members(raw) -> list of { key, kind, text } | nil, reason, message
--     the members as the sign rules read them (their canonical strings)
-- data: the members kept (signed: not "sign", null or ""), each field
-- named in types (name -> "int" | "float" | "string") of that type, the
-- others typed by their text; nested: the raw text of object and array
-- members, for the caller to decode.  The '&'/'=' refusal, the typing and
-- the int rule are done once per language: build_data in
-- src/lua_callback.c (the C API), build() below (the FFI).  reason:
-- "not_json", "not_object", "duplicate_key", "no_sign", "bad_sign",
-- "malformed".  What a call returns owns everything; nothing stays behind
-- for a later call.
-- On Lua 5.4 the calls are the Lua C API binding (kinot.core).  On LuaJIT
-- they go through the FFI: the JIT compiles the call and the building of
-- the tables, which the C API cannot offer (spec/reader_spec.lua checks
-- both give the same).
local errors = require "kinot.errors"
local core = require "kinot.core_loader"
local lib = require "kinot.native"
local whole = require("kinot.vocabulary").whole
local NULL = require("kinot.json").null

local M = { ffi = lib ~= false }

-- The recut refusals, in Lua once (the C API's are in lua_callback.c): '&'
-- or '=' in a member name, '&' in a string the reference types: the signed
-- string could not tell the body from one recut (members moved into one
-- another).  A name in a message loses its control characters: under
-- verify = "monitor" it is anyone's, and the message goes to the error log.
local function shown(key) return (key:sub(1, 40):gsub("%c", "?")) end
function M.recut_name(key)
  return "callback body refused: member name \"" .. shown(key) ..
    "\" holds '&' or '=', so the signed string cannot tell it from other members"
end
function M.recut_value(key)
  return "callback body refused: member \"" .. shown(key) ..
    "\" holds '&', so the signed string cannot tell it from the members after it"
end
local recut_name, recut_value = M.recut_name, M.recut_value

if not lib then
  M.verify, M.data, M.members = core.callback_verify, core.callback_data, core.callback_members
  return M
end

local ffi = require "ffi"
local ok_new, new_tab = pcall(require, "table.new")
if not ok_new then new_tab = function() return {} end end
local ffi_string, ffi_new, ffi_gc, type, error, tonumber = ffi.string, ffi.new, ffi.gc, type, error, tonumber
local find = string.find

-- kn_cb_verdict and kn_cb_type, from the declarations (kinot.native)
local REASON = { [lib.KN_CB_NOT_JSON] = "not_json", [lib.KN_CB_NOT_OBJECT] = "not_object",
                 [lib.KN_CB_DUPLICATE_KEY] = "duplicate_key", [lib.KN_CB_NO_SIGN] = "no_sign",
                 [lib.KN_CB_BAD_SIGN] = "bad_sign" }
local NOMEM = lib.KN_CB_NOMEM
local STRING, NUMBER, TRUE, FALSE, NULLV, OBJECT = lib.KN_CB_STRING, lib.KN_CB_NUMBER, lib.KN_CB_TRUE, lib.KN_CB_FALSE,
  lib.KN_CB_NULL, lib.KN_CB_OBJECT
local KIND_OF = { [STRING] = "a string", [NUMBER] = "a number that is not whole, or beyond +-2^53", [TRUE] = "a boolean",
                  [FALSE] = "a boolean", [OBJECT] = "an object" }
local WANT = { int = "an int", float = "a float", string = "a string" }

-- A scanner and everything a call writes (out-parameters, member names by
-- the scanner's name slots) travel together in a box.  Each call takes
-- the state's spare box for its own length and gives it back at its end,
-- as the C API binding does: a call that finds none (a finalizer run by
-- the collector in the middle of another call) makes its own, and a call
-- that raises half way never gives its box back.
local function new_box()
  local sc = lib.kn_cb_scanner_new()
  if sc == nil then error(errors.new("internal", "out of memory creating the callback scanner"), 0) end
  return {
    sc = ffi_gc(sc, lib.kn_cb_scanner_free),
    hex = ffi_new("char[33]"), index = ffi_new("int[1]"), why = ffi_new("char[200]"),
    members = ffi_new("const kn_cb_member *[1]"), count = ffi_new("size_t[1]"),
    -- member names by name slot: a name seen before is not made again
    names = {},
  }
end
local spare = new_box()

-- the secrets as kn_str, remade only when the list (or a member) changes;
-- `held` (the list at [0], its strings at 1..n) keeps the strings the
-- array points into alive.  A call keeps the array it got in a local.
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
    if type(s) ~= "string" then errors.misuse("secret[" .. i .. "] must be a string") end
    arr[i - 1].p, arr[i - 1].n = s, #s
    keep[i] = s
  end
  held, held_arr = keep, arr
  return arr, n
end

-- A refusal half way: the scanner's name slots now hold names of members
-- this call never reached, so the box's names start afresh.
local function malformed(box, key, want, t)
  box.names = {}
  return nil, "callback body refused: member \"" .. shown(key) .. "\" must be " .. WANT[want] ..
    " (the reference's type), not " .. (KIND_OF[t] or "an array")
end

-- a body the signed string cannot tell from a recut one (see M.recut_name)
local function recut(box, message)
  box.names = {}
  return nil, message
end

-- THE event builder of the FFI (its twin for the C API is build_data in
-- src/lua_callback.c): the data of the members just scanned, or nil,
-- message.  keep_empty, keep_null: "" / null members are data (a sign
-- rule that signs them); a kept null is json.null, typed or not.
local function build(box, types, keep_empty, keep_null)
  local sc, names = box.sc, box.names
  if lib.kn_cb_convert(sc, box.members, box.count) ~= 0 then error(errors.new("internal", "out of memory"), 0) end
  local m, n = box.members[0], tonumber(box.count[0])
  local data, nested = new_tab(0, n), nil
  for i = 0, n - 1 do
    local e = m[i]
    -- the name first, signed or not: the scanner counts on its slot being filled
    local slot, key = e.name_slot
    if slot > 0 then key = names[slot] end
    if key == nil then
      key = ffi_string(e.key.p, e.key.n)
      -- '&' or '=' in a name: the signed string could not tell it from
      -- other members (a name kept in `names` was checked when made)
      if find(key, "[&=]") then return recut(box, recut_name(key)) end
      if slot ~= 0 then names[slot < 0 and -slot or slot] = key end
    end
    local t, kept = e.type, true
    if key == "sign" then kept = false
    elseif t == NULLV then
      kept = false
      if keep_null then data[key] = NULL end
    elseif t == STRING and e.text.n == 0 then kept = keep_empty
    end
    if kept then
      local want, v = types[key]
      if want == "int" then
        -- the int rule (kinot.vocabulary.whole; kn_cb_whole in C)
        v = t == NUMBER and whole(e.number) or nil
        if v == nil then return malformed(box, key, want, t) end
      elseif want == "float" then
        if t ~= NUMBER then return malformed(box, key, want, t) end
        v = e.number
      elseif want == "string" then
        if t ~= STRING then return malformed(box, key, want, t) end
        v = ffi_string(e.text.p, e.text.n)
        if find(v, "&", 1, true) then return recut(box, recut_value(key)) end
      elseif t == STRING then v = ffi_string(e.text.p, e.text.n)
      elseif t == NUMBER then v = e.number
      elseif t == TRUE then v = true
      elseif t == FALSE then v = false
      else -- an object or array: its raw text, for the caller to decode
        v = ffi_string(e.text.p, e.text.n)
        nested = nested or {}
        nested[key] = v
      end
      data[key] = v
    end
  end
  return data, nested
end

function M.verify(raw, secrets, types)
  if type(raw) ~= "string" then errors.misuse("callback body must be a string") end
  if type(secrets) ~= "table" then errors.misuse("callback secrets must be a list of strings") end
  if type(types) ~= "table" then errors.misuse("callback field types must be a table") end
  local box = spare or new_box()
  spare = nil
  local arr, n = secret_array(secrets)
  local verdict = lib.kn_cb_check(box.sc, raw, #raw, arr, n, box.hex, box.index, box.why, 200)
  if verdict ~= 0 then
    if verdict == NOMEM then error(errors.new("internal", ffi_string(box.why)), 0) end
    local why = ffi_string(box.why)
    spare = box
    return nil, REASON[verdict], why
  end
  local index = box.index[0]
  -- (the digest before the data: a body's last member is usually its sign,
  -- whose iteration leaves build's compiled loop by a side exit that LuaJIT
  -- could not compile (the rest of a delivery is too long for one trace),
  -- so what follows the loop runs in the interpreter up to the next
  -- compiled function: it should hold no FFI call)
  local digest = ffi_string(box.hex, 32)
  local data, nested = build(box, types, false, false)
  spare = box
  if not data then return nil, "malformed", nested end
  return digest, index, data, nested
end

-- the box with body scanned, or nil, reason, message (the box given back)
local function scanned(raw, box)
  local verdict = lib.kn_cb_scan(box.sc, raw, #raw, box.why, 200)
  if verdict == 0 then return box end
  if verdict == NOMEM then error(errors.new("internal", ffi_string(box.why)), 0) end
  spare = box
  return nil, REASON[verdict], ffi_string(box.why)
end

function M.data(raw, types, keep_empty, keep_null)
  if type(raw) ~= "string" then errors.misuse("callback body must be a string") end
  if type(types) ~= "table" then errors.misuse("callback field types must be a table") end
  local taken = spare or new_box()
  spare = nil
  local box, reason, why = scanned(raw, taken)
  if not box then return nil, reason, why end
  local data, nested = build(box, types, keep_empty == true, keep_null == true)
  spare = box
  if not data then return nil, "malformed", nested end
  return data, nested
end

local KIND = { [STRING] = "string", [TRUE] = "true", [FALSE] = "false", [NULLV] = "null", [OBJECT] = "object",
               [lib.KN_CB_ARRAY] = "array" }

function M.members(raw)
  if type(raw) ~= "string" then errors.misuse("callback body must be a string") end
  local taken = spare or new_box()
  spare = nil
  local box, reason, why = scanned(raw, taken)
  if not box then return nil, reason, why end
  if lib.kn_cb_convert(box.sc, box.members, box.count) ~= 0 then error(errors.new("internal", "out of memory"), 0) end
  local m, n, names = box.members[0], tonumber(box.count[0]), box.names
  local list = new_tab(n, 0)
  for i = 0, n - 1 do
    local e = m[i]
    local slot, key = e.name_slot, nil
    if slot > 0 then key = names[slot] end
    if key == nil then
      key = ffi_string(e.key.p, e.key.n)
      -- build() takes a name it finds in `names` as checked: a new one
      -- here (not checked for '&' or '=') only empties its slot
      if slot < 0 then names[-slot] = nil end
    end
    local t = e.type
    list[i + 1] = { key = key, kind = KIND[t] or (e.is_integer ~= 0 and "integer" or "number"),
                    text = ffi_string(e.text.p, e.text.n) }
  end
  spare = box
  return list
end

return M
