-- The callback engine behind kinot.callback (the public front): a body ->
-- its canonical string, its sign, its event, and clearly why a body is
-- refused.  The body scan, the data's typing and MD5 are C (one reader and
-- one data builder for every rule and use: kinot.callback.scanner); this
-- file turns the data into an event (kind, device judgement: build below).
--
-- The event: kind ("status_changed" | "command_resp", by a signed guid),
-- device ("lock" | "sensor" | "unknown"), device_why (nil when device_type
-- is 18 or 34; else how the device was judged from the fields, or why it
-- could not be), sn, guid, command_status (the platform spells it
-- commnad_status), reason (a command_resp's reason; nil for the text
-- "NULL"), data (the signed members only, known fields typed as
-- kinot.vocabulary says, nested members decoded), secret_index, id.
local core = require "kinot.core_loader"
local json = require "kinot.json"
local scanner = require "kinot.callback.scanner"
local errors = require "kinot.errors"
local vocabulary = require "kinot.vocabulary"
local rules = require "kinot.callback.rules"

local M = {}

M.MAX_BODY = 64 * 1024

local scan, digest_of = core.callback_scan, core.callback_digest
local verify_body, data_of = scanner.verify, scanner.data
local type, pairs, ipairs = type, pairs, ipairs

local FIELD_TYPES = vocabulary.fields.callback
local DEVICE_BY_TYPE = vocabulary.device_types
local LOCK_ONLY = vocabulary.lock_only
local AS_SENT, NO_REASON = vocabulary.COMMAND_STATUS_AS_SENT, vocabulary.NO_REASON
local CODES_TEXT = vocabulary.device_codes.lock .. " lock, " .. vocabulary.device_codes.sensor .. " sensor"

local function refuse(reason, message)
  return nil, errors.new("callback", message, { reason = reason })
end

-- scan(raw) -> canonical, given sign | nil, err
local function scan_body(raw)
  if type(raw) ~= "string" then errors.misuse("callback body must be a string") end
  local canonical, given, message = scan(raw)
  if not canonical then return refuse(given, "callback body refused: " .. message) end
  return canonical, given
end

--- canonical(raw) -> the string that is signed, without the key | nil, err
---@param raw string the body exactly as received
---@return string|nil canonical
---@return kinot.Error|nil
function M.canonical(raw)
  return scan_body(raw)
end

--- sign(raw, secret) -> 32 upper-case hex chars (any sign member ignored) | nil, err
---@param raw string the body
---@param secret string
---@return string|nil sign
---@return kinot.Error|nil
function M.sign(raw, secret)
  if type(secret) ~= "string" then errors.misuse("callback secret must be a string") end
  local canonical, err = scan_body(raw)
  if not canonical then return nil, err end
  return digest_of(canonical, secret)
end

--- secrets(opts) -> list of secrets, checked once (misuse raises)
local EMPTY = "a callback secret must not be empty (anyone could sign with it)"
local function secrets_of(s)
  if s == "" then errors.misuse(EMPTY) end
  if type(s) == "string" then return { s } end
  if type(s) == "table" and #s > 0 then
    for i = 1, #s do
      if type(s[i]) ~= "string" then errors.misuse("secret[" .. i .. "] must be a string") end
      if s[i] == "" then errors.misuse(EMPTY) end
    end
    return s
  end
  errors.misuse("callback verification needs opts.secret (a string or a list of strings)")
end
M.secrets_of = secrets_of

-- The names of data's members, read from a table: to LuaJIT a key read
-- from a table is no constant, so data[K.sn] compiles to a plain hash
-- lookup.  data.sn would compile to a read of the slot where the first
-- body compiled had its sn: data's layout differs from one kind of body to
-- the next (a lock's members, a sensor's, a command result's), and each
-- other layout would leave the compiled code there, at every delivery,
-- for the interpreter (nginx: jit.v showed these side exits failing to
-- compile, "trace too long", and falling back to the interpreter)
local K = { device_type = "device_type", command_status = "command_status", guid = "guid", reason = "reason",
            sn = "sn", as_sent = AS_SENT }

-- device, why: by device_type when it is one of the reference's codes;
-- else judged from the fields, and why says so (nil when the code named it)
local function device_of(data, kind)
  local code = data[K.device_type]
  local by_type = DEVICE_BY_TYPE[code]
  if by_type then return by_type end
  local what = code == nil and "no device_type" or
    ("device_type " .. tostring(code) .. " is not one of the reference's codes (" .. CODES_TEXT .. ")")
  for _, k in ipairs(LOCK_ONLY) do
    if data[k] ~= nil then return "lock", what .. ": a lock by its fields (" .. k .. ")" end
  end
  if kind == "status_changed" and (data.car_detected ~= nil or data.active ~= nil) then
    return "sensor", what .. ": a sensor by its fields (car_detected and no lock-only field)"
  end
  if kind == "command_resp" then
    return "unknown", what .. ", and a command_resp's fields are the same for a lock and a sensor"
  end
  return "unknown", what .. ", and no field tells a lock from a sensor"
end

-- the event of a verified body: it owns its data
local function build(digest, index, data, nested)
  if nested then
    for k, text in pairs(nested) do
      local v = json.decode(text)
      if v ~= nil then data[k] = v end
    end
  end
  local status = data[K.command_status]
  if status == nil then
    status = data[K.as_sent]
    if status ~= nil then data[K.command_status] = status end
  end
  local guid = data[K.guid]
  local kind = (guid ~= nil and guid ~= "") and "command_resp" or "status_changed"
  local device, why = device_of(data, kind)
  local reason = data[K.reason]
  if reason == NO_REASON then reason = nil end
  -- Every event has the same keys in the same slots, whichever are nil:
  -- made from one template of constants (LuaJIT copies it whole), then
  -- filled in (a nil set keeps its key's slot).  A constructor of the
  -- values themselves leaves out the nil ones, so a status and a command
  -- result would lay their keys out differently, and each compiled read
  -- of ev.data (freshness, the receiver, a handler) is specialized for the
  -- slot it first saw: the other layout leaves the compiled code at that
  -- read, for the interpreter, at every delivery
  local ev = {
    kind = false, device = false, device_why = false, sn = false, guid = false, command_status = false,
    reason = false, data = false, secret_index = false,
    verified = true, -- false only under verify = "monitor" (receiver.lua)
    id = false,
  }
  ev.kind = kind
  ev.device = device
  ev.device_why = why
  ev.sn = data[K.sn]
  ev.guid = guid
  ev.command_status = status
  ev.reason = reason
  ev.data = data
  ev.secret_index = index
  -- the verified sign names the content: a redelivery carries the same
  ev.id = digest
  return ev
end

-- the refusal of a body the scanner refused (its message says what it saw)
local function refused(reason, message)
  if reason ~= "no_sign" and reason ~= "bad_sign" and reason ~= "malformed" then
    message = "callback body refused: " .. message
  end
  return refuse(reason, message)
end

--- event_of(raw, id, index, rule) -> event | nil, err: the event of a
-- body whose sign was checked elsewhere (a sign_rule other than the
-- default, kinot.callback.rules) or not at all (verify = "monitor", the
-- worker's rebuild).  Its data comes from the one builder verify() uses
-- (kinot.callback.scanner.data); a rule that signs "" or null members
-- keeps them in the data.
---@param raw string the body
---@param id string the event's id
---@param index? integer which secret verified it
---@param rule? table a rule of kinot.callback.rules (normalized; default md5-key)
---@return kinot.callback.Event|nil
---@return kinot.Error|nil
function M.event_of(raw, id, index, rule)
  if type(raw) ~= "string" then errors.misuse("callback body must be a string") end
  local keep_empty, keep_null = false, false
  if rule then keep_empty, keep_null = rule.empty == "keep", rule.null ~= "skip" end
  local data, nested, why = data_of(raw, FIELD_TYPES, keep_empty, keep_null)
  if not data then return refused(nested, why) end
  return build(id, index, data, nested)
end

--- check(raw, secrets, max_body) -> event | nil, err
-- The whole verification with a list of secrets already checked
-- (secrets_of): the event is built in the same call that scanned the body
-- and owns everything it holds, so a caller may yield before reading it.
---@param raw string
---@param secrets string[] checked by secrets_of
---@param max_body integer bytes
---@return kinot.callback.Event|nil
---@return kinot.Error|nil
function M.check(raw, secrets, max_body)
  if type(raw) ~= "string" then errors.misuse("callback body must be a string") end
  if #raw > max_body then
    return refuse("too_large", "callback body is " .. #raw .. " bytes, over the " .. max_body .. "-byte cap")
  end
  local digest, index, data, nested = verify_body(raw, secrets, FIELD_TYPES)
  if not digest then return refused(index, data) end
  local ev = build(digest, index, data, nested) -- (not a tail call: kinot.callback.freshness, newest)
  return ev
end

--- check_rule(raw, secrets, rule, max_body) -> event | nil, err: check()
-- under a sign rule other than the default (kinot.callback.rules, in Lua)
---@param raw string
---@param secrets string[]
---@param rule table a normalized rule (kinot.callback.rules.rule)
---@param max_body integer bytes
---@return kinot.callback.Event|nil
---@return kinot.Error|nil
function M.check_rule(raw, secrets, rule, max_body)
  local id, index = rules.check(raw, secrets, rule, max_body)
  if not id then return nil, index end
  return M.event_of(raw, id, index, rule)
end

--- as_rebuilt(ev) -> the event rebuild() makes of ev's body (under the
-- rule ev was built by), made from ev itself: its fields, its data (the
-- same table: a receiver that handed ev to its store reads none of it
-- again), no secret_index (a worker holds no secret), verified (the worker
-- says otherwise from the entry), nothing the receiver added (ev.stale:
-- the worker sets it from the entry).
-- For the durable inbox's workers in the process that received it
-- (kinot.callback.inbox's held events): the body is not scanned twice.
---@param ev kinot.callback.Event
---@return kinot.callback.Event
function M.as_rebuilt(ev)
  -- (build's template: the same keys in the same slots)
  local e = {
    kind = false, device = false, device_why = false, sn = false, guid = false, command_status = false,
    reason = false, data = false, secret_index = false,
    verified = true,
    id = false,
  }
  e.kind = ev.kind
  e.device = ev.device
  e.device_why = ev.device_why
  e.sn = ev.sn
  e.guid = ev.guid
  e.command_status = ev.command_status
  e.reason = ev.reason
  e.data = ev.data
  e.secret_index = nil
  e.id = ev.id
  return e
end

--- rebuild(raw, id[, rule]) -> the event of a body verified earlier, built
-- as verify() builds it (the signed members of `rule`, default the
-- default rule, typed) without checking the sign again | nil, err.  For
-- the durable inbox's workers (kinot.callback.worker): they hold no secret.
-- A rule the SDK does not know is an error, not a misuse: it comes from
-- a stored entry.
---@param raw string a body verified earlier
---@param id string its event's id
---@param rule? string the sign_rule it was verified under (a name)
---@return kinot.callback.Event|nil
---@return kinot.Error|nil
function M.rebuild(raw, id, rule)
  if type(raw) ~= "string" then errors.misuse("callback body must be a string") end
  if rule ~= nil then
    local ok, r = pcall(rules.rule, rule)
    if not ok then return refuse("malformed", "unknown sign_rule " .. tostring(rule):sub(1, 80)) end
    rule = r
  end
  return M.event_of(raw, id, nil, rule)
end

return M
