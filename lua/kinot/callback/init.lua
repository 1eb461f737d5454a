-- The platform's callbacks (docs/callback-sign.md): canonical string, sign, verify.
-- The body scan and MD5 are C (kinot.core); this file turns the result into
-- an event and says clearly why a body is refused.
--
-- The event: kind ("status_changed" | "command_resp", by a signed guid),
-- device ("lock" | "sensor" | "unknown"), device_why (nil when device_type
-- is 18 or 34; else how the device was judged from the fields, or why it
-- could not be), sn, guid, command_status (the platform spells it
-- commnad_status), reason (a command_resp's reason; nil for the text
-- "NULL"), data (the signed members only, known fields typed as
-- kinot.vocabulary says, nested members decoded), secret_index, id.
local core = require "kinot.core"
local json = require "kinot.json"
local scanner = require "kinot.callback.scanner"
local errors = require "kinot.errors"
local vocabulary = require "kinot.vocabulary"
local rules = require "kinot.callback.rules"
local freshness = require "kinot.callback.freshness"
local validate = require "kinot.validate"

---@class kinot.callback
---@field MAX_BODY integer the default max_body, bytes (64 KiB)
local M = {}

M.MAX_BODY = 64 * 1024

local scan, digest_of = core.callback_scan, core.callback_digest
local verify_body = scanner.verify
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

-- device, why: by device_type when it is one of the reference's codes;
-- else judged from the fields, and why says so (nil when the code named it)
local function device_of(data, kind)
  local code = data.device_type
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
  local status = data.command_status
  if status == nil then
    status = data[AS_SENT]
    data.command_status = status
  end
  local guid = data.guid
  local kind = (guid ~= nil and guid ~= "") and "command_resp" or "status_changed"
  local device, why = device_of(data, kind)
  local reason = data.reason
  if reason == NO_REASON then reason = nil end
  return {
    kind = kind,
    device = device,
    device_why = why,
    sn = data.sn,
    guid = data.guid,
    command_status = status,
    reason = reason,
    data = data,
    secret_index = index,
    verified = true, -- false only under verify = "monitor" (receiver.lua)
    -- the verified sign names the content: a redelivery carries the same
    id = digest,
  }
end

local coerce, NULL = vocabulary.coerce, json.null

--- signed_data(members, rule) -> data | nil, err: the members a rule of
-- kinot.callback.rules signed, known fields typed as the C path types them
-- (a known field of the wrong type refuses the body: malformed)
local function signed_data(members, rule)
  -- '&' or '=' in a name, '&' in a typed string: the signed string could
  -- not tell the body from one recut (members moved into one another)
  -- (a name in a message loses its control characters: under verify =
  -- "monitor" it is anyone's, and the message goes to the error log)
  for _, m in ipairs(members) do
    if m.key:find("[&=]") then
      return refuse("malformed", "callback body refused: member name \"" .. m.key:sub(1, 40):gsub("%c", "?") ..
        "\" holds '&' or '=', so the signed string cannot tell it from other members")
    end
    if m.kind == "string" and FIELD_TYPES[m.key] == "string" and m.key ~= "sign" and m.text:find("&", 1, true) then
      return refuse("malformed", "callback body refused: member \"" .. m.key:sub(1, 40) ..
        "\" holds '&', so the signed string cannot tell it from the members after it")
    end
  end
  local data = rules.data(members) -- every member but sign, as Lua values
  for k, v in pairs(data) do
    if (v == "" and rule.empty ~= "keep") or (v == NULL and rule.null == "skip") then data[k] = nil end
  end
  for k, v in pairs(data) do
    local kind = FIELD_TYPES[k]
    if kind and v ~= NULL then
      local typed, why = coerce(kind, v)
      if typed == nil then return refuse("malformed", "callback field " .. k .. ": " .. why) end
      data[k] = typed
    end
  end
  return data
end

--- event_of(members, id, index, rule) -> event | nil, err: the event of a
-- body read by kinot.callback.rules (a sign_rule other than the default,
-- or an unverified body under verify = "monitor")
---@param members table[] the members kinot.callback.rules read
---@param id string the event's id
---@param index? integer which secret verified it
---@param rule? table a rule of kinot.callback.rules (normalized)
---@return kinot.callback.Event|nil
---@return kinot.Error|nil
function M.event_of(members, id, index, rule)
  local data, err = signed_data(members, rule or rules.rule(nil))
  if not data then return nil, err end
  return build(id, index, data, nil)
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
  if not digest then
    if index ~= "no_sign" and index ~= "bad_sign" and index ~= "malformed" then data = "callback body refused: " .. data end
    return refuse(index, data)
  end
  return build(digest, index, data, nested)
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
  local id, index, members = rules.check(raw, secrets, rule, max_body)
  if not id then return nil, index end
  return M.event_of(members, id, index, rule)
end

--- rebuild(raw, id) -> the event of a body verified earlier, built as
-- verify() builds it (the default rule's signed members, typed) without
-- checking the sign again | nil, err.  For the durable inbox's workers
-- (kinot.callback.worker): they hold no secret.
---@param raw string a body verified earlier
---@param id string its event's id
---@return kinot.callback.Event|nil
---@return kinot.Error|nil
function M.rebuild(raw, id)
  if type(raw) ~= "string" then errors.misuse("callback body must be a string") end
  local members, err = rules.members(raw)
  if not members then return nil, err end
  return M.event_of(members, id, nil)
end

--- verify(raw, opts) -> event | nil, err
-- opts.secret: string or list (rotation); opts.max_body (default 64 KiB);
-- opts.sign_rule: a rule of kinot.callback.rules (default "md5-key", in C)
---@param raw string the body exactly as received
---@param opts kinot.callback.VerifyOptions
---@return kinot.callback.Event|nil
---@return kinot.Error|nil kind "callback", err.reason says why
local VERIFY_OPTIONS = validate.set { "secret", "sign_rule", "max_body", "max_age", "max_skew", "clock" }

function M.verify(raw, opts)
  validate.options(opts, VERIFY_OPTIONS, "callback.verify")
  local secrets = secrets_of(opts and opts.secret)
  local max_body = (opts and opts.max_body) or M.MAX_BODY
  local rule = opts and opts.sign_rule
  -- freshness (the receiver's rule, kinot.callback.freshness), only when
  -- asked for: a body may be verified long after it came (a captured one,
  -- a stored one).  Given max_skew alone, max_age is the receiver's default.
  local fresh
  if opts and (opts.max_age or opts.max_skew) then
    fresh = freshness.new { max_age = opts.max_age, max_skew = opts.max_skew, out_of_order = false, now = opts.clock }
  end
  local ev, err
  if rule ~= nil and not rules.is_default(rule) then
    ev, err = M.check_rule(raw, secrets, rules.rule(rule), max_body)
  else
    ev, err = M.check(raw, secrets, max_body)
  end
  if ev and fresh then
    local ok, ferr = fresh:check(ev)
    if not ok then return nil, ferr end
  end
  return ev, err
end

--- discover(raw, secrets[, extra_rules]) -> report | nil, err: every known
-- sign rule the body verifies under (kinot.callback.rules)
---@param raw string a captured body
---@param secrets string|string[]
---@param extra? kinot.callback.SignRule[] more rules to try
---@return kinot.callback.Discovery|nil
---@return kinot.Error|nil
function M.discover(raw, secrets, extra)
  return rules.discover(raw, secrets, extra)
end

--- receiver(opts) -> object with :receive(raw) -> status, body, event|nil, err|nil
-- Framework-neutral: the OpenResty handler is a thin adapter over it.
---@param opts kinot.callback.ReceiverOptions
---@return kinot.callback.Receiver
function M.receiver(opts)
  return require("kinot.callback.receiver").new(opts)
end

--- worker(opts) -> a worker running the durable inbox's events (kinot.callback.worker)
---@param opts kinot.callback.WorkerOptions
---@return kinot.callback.Worker
function M.worker(opts)
  return require("kinot.callback.worker").new(opts)
end

--- handler(opts) -> function for content_by_lua_block (docs/callbacks.md)
---@param opts kinot.callback.HandlerOptions
---@return fun() handler for content_by_lua_block
function M.handler(opts)
  return require("kinot.callback.handler").new(opts)
end

-- ------------------------------------------------------------ LuaLS types
-- (docs/callbacks.md, docs/callback-sign.md, docs/redis.md)

--- A verified callback.
---@class kinot.callback.Event
---@field kind "status_changed"|"command_resp" command_resp when the body has a signed guid
---@field device "lock"|"sensor"|"unknown" by device_type 18 or 34, else judged from the fields
---@field device_why? string nil when device_type was 18 or 34; else how the device was judged, or why it could not be
---@field sn? integer the device's serial
---@field guid? string the command's guid (command_resp)
---@field command_status? kinot.CommandStatus spelt correctly (the platform sends commnad_status)
---@field reason? string a command_resp's reason; nil when the body says "NULL"
---@field data table<string, any> the body's signed members, without sign, typed as kinot.vocabulary says
---@field id string the verified sign: a redelivery has the same id
---@field secret_index? integer which of the secrets verified it
---@field verified boolean false only under verify = "monitor"
---@field stale? boolean true for an out-of-order status handed over under out_of_order = "flag"

--- why a body is refused (err.reason of kind "callback")
---@alias kinot.callback.Reason
---| "too_large"     # over max_body (413)
---| "not_json"      # not a JSON object (400)
---| "not_object"    # (400)
---| "duplicate_key" # a key repeated (400)
---| "malformed"     # a known field of the wrong type, or an updated_at that is not ISO 8601 (400)
---| "no_sign"       # no sign member (401)
---| "bad_sign"      # verifies with no secret (401)
---| "stale"         # older than max_age (200, not handled)
---| "out_of_order"  # older than the newest accepted for its device (200, not handled)
---| "future"        # updated_at more than max_skew ahead (503)

--- a sign rule: a name ("md5-key", "md5-secret+lower", "hmac-sha256+base64" ...) or a table of
--- parts { digest, suffix, empty, null, encoding } (docs/callback-sign.md)
---@alias kinot.callback.SignRule string|table

--- when the platform gets its 200
---@alias kinot.callback.AckMode
---| "after_handler" # once the handler returned normally; 500 when it fails (the default)
---| "immediate"     # at once; the handlers run afterwards in timers

---@class kinot.callback.VerifyOptions
---@field secret string|string[] a string, or a list tried in order (rotation)
---@field sign_rule? kinot.callback.SignRule default "md5-key"
---@field max_body? integer bytes (default 65536)
---@field max_age? number|false seconds; an older signed updated_at is refused as stale
--- (verify: judged only when max_age or max_skew is given, then 172800 by default)
---@field max_skew? number seconds an updated_at may be ahead of this clock (verify: judged only when given, or with max_age)
---@field clock? fun(): number the time now, epoch seconds (default os.time)

--- callback.receiver's options: the handler's, but ack, inbox, busy_ttl and a dict name for dedupe
---@class kinot.callback.ReceiverOptions: kinot.callback.VerifyOptions
---@field on_status? fun(ev: kinot.callback.Event): any, any? for status_changed events; fails by raising or returning nil, err
---@field on_command? fun(ev: kinot.callback.Event): any, any? for command_resp events
---@field verify? "enforce"|"monitor" monitor hands a body that fails over with ev.verified = false (default "enforce")
---@field max_age? number|false seconds: an older signed updated_at is refused as stale; false turns it off (default 172800)
---@field max_skew? number seconds an updated_at may be ahead of the receiver's clock (default 300)
---@field out_of_order? "drop"|"flag"|false an event older than the newest accepted for its device (default "drop")
---@field order_capacity? integer devices whose newest time each worker remembers without a lua_shared_dict (default 100000)
---@field dedupe_ttl? number seconds a delivery is remembered (default 3600)
---@field dedupe_capacity? integer deliveries each worker remembers without a lua_shared_dict (default 10000)

--- callback.handler's options (OpenResty)
---@class kinot.callback.HandlerOptions: kinot.callback.ReceiverOptions
---@field ack? kinot.callback.AckMode default "after_handler"
---@field dedupe? string|kinot.callback.RedisDedupe a lua_shared_dict's name (one host), or Redis (every host)
---@field busy_ttl? number seconds at most a delivery being handled keeps its copies away (default 60)
---@field inbox? kinot.callback.Inbox store each verified event in a Redis stream before answering; workers run them

---@class kinot.callback.RedisDedupe
---@field redis string redis://[[user]:password@]host:port/db
---@field ttl? number seconds a delivery is remembered (default 3600)
---@field lease? number seconds at most a delivery is "pending" while its handler runs (default 60)

---@class kinot.callback.Inbox
---@field redis string redis://[[user]:password@]host:port/db
---@field stream? string default "kinot:callbacks"
---@field maxlen? integer trims the oldest entries, handled or not (default none)

---@class kinot.callback.WorkerOptions
---@field redis string redis://[[user]:password@]host:port/db (required)
---@field stream? string default "kinot:callbacks"
---@field group? string the consumer group (default "kinot")
---@field consumer? string this worker's name (default host:pid)
---@field on_status? fun(ev: kinot.callback.Event): any, any? one of on_status, on_command is required
---@field on_command? fun(ev: kinot.callback.Event): any, any?
---@field claim_after? number seconds an entry stays pending before any worker claims it again (default 60)
---@field max_attempts? integer failed attempts before the entry moves to <stream>:dead (default 5)
---@field block? number seconds one read waits for new entries (default 2)
---@field count? integer entries a read (default 10)
---@field delete? boolean a handled entry leaves the stream (default true)
---@field timeout? number seconds, for each Redis call (default 2)
---@field connect_timeout? number seconds (default 1)
---@field log? fun(level: string, message: string) default ngx.log, or stderr
---@field loops? integer worker.start only: timer loops side by side in each nginx worker (default 1)

---@class kinot.callback.Receiver
---@field max_body integer
--- receive(raw) -> status, body to answer, the event (nil if refused or a duplicate), err, duplicate
---@field receive fun(self: kinot.callback.Receiver, raw: string): integer, string, kinot.callback.Event?, kinot.Error?, boolean?
---@field dispatch fun(self: kinot.callback.Receiver, ev: kinot.callback.Event): boolean, any? the handler's outcome: true, or false and why

---@class kinot.callback.Worker
---@field step fun(self: kinot.callback.Worker): integer?, kinot.Error? entries run (0 when none came), or nil, err
---@field run fun(self: kinot.callback.Worker, until_fn?: fun(): boolean) steps until until_fn() is true (never, without one)
---@field handled integer
---@field failed integer
---@field dead integer

--- callback.discover's report; the sign and the secrets appear nowhere in it
---@class kinot.callback.Discovery
---@field matches { name: string, rule: table, secret_index: integer, undetermined: string[] }[] the rules the body verifies under
---@field tried string[] the rule names tried
---@field ruled_out string[] the tried whose digest has another length than the sign
---@field sign_form string e.g. "32 hex characters, upper case"
---@field canonical string the default rule's canonical string
---@field note? string what the body cannot tell
---@field secrets integer how many secrets were tried
return M
