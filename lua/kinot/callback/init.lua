-- The platform's callbacks (docs/callbacks.md, docs/callback-sign.md): the
-- public front.  The engine is kinot.callback.event (body -> event), the
-- receiving is kinot.callback.receiver (and .handler for nginx, .worker for
-- the durable inbox); none of them requires this module back.
local event = require "kinot.callback.event"
local rules = require "kinot.callback.rules"
local freshness = require "kinot.callback.freshness"
local validate = require "kinot.validate"
local errors = require "kinot.errors"
local receiver = require "kinot.callback.receiver"
local handler = require "kinot.callback.handler"
local worker = require "kinot.callback.worker"

---@class kinot.callback
---@field MAX_BODY integer the default max_body, bytes (64 KiB)
local M = {}

M.MAX_BODY = event.MAX_BODY
M.canonical = event.canonical
M.sign = event.sign
M.secrets_of = event.secrets_of
M.event_of = event.event_of
M.check = event.check
M.check_rule = event.check_rule
M.rebuild = event.rebuild

local VERIFY_OPTIONS = validate.set { "secret", "sign_rule", "max_body", "max_age", "max_skew", "clock" }

-- an options table is checked once: verify is called again and again with
-- the same table, and the check walks it with pairs (which LuaJIT does not
-- compile: it would take the whole verification out of the JIT)
local checked = setmetatable({}, { __mode = "k" })

--- verify(raw, opts) -> event | nil, err
-- opts.secret: string or list (rotation); opts.max_body (default 64 KiB);
-- opts.sign_rule: a rule of kinot.callback.rules (default "md5-key", in C);
-- opts.max_age, opts.max_skew, opts.clock: the receiver's freshness rule,
-- judged only when max_age or max_skew is given
---@param raw string the body exactly as received
---@param opts kinot.callback.VerifyOptions
---@return kinot.callback.Event|nil
---@return kinot.Error|nil kind "callback", err.reason says why
function M.verify(raw, opts)
  if opts ~= nil and not checked[opts] then
    validate.options(opts, VERIFY_OPTIONS, "callback.verify")
    if type(opts) == "table" then checked[opts] = true end
  end
  local secrets = event.secrets_of(opts and opts.secret)
  local max_body = (opts and opts.max_body) or M.MAX_BODY
  if type(max_body) ~= "number" or max_body < 1 then errors.misuse("max_body must be a positive number") end
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
    ev, err = event.check_rule(raw, secrets, rules.rule(rule), max_body)
  else
    ev, err = event.check(raw, secrets, max_body)
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
  return receiver.new(opts)
end

--- worker(opts) -> a worker running the durable inbox's events (kinot.callback.worker)
---@param opts kinot.callback.WorkerOptions
---@return kinot.callback.Worker
function M.worker(opts)
  return worker.new(opts)
end

--- handler(opts) -> function for content_by_lua_block (docs/callbacks.md)
---@param opts kinot.callback.HandlerOptions
---@return fun() handler for content_by_lua_block
function M.handler(opts)
  return handler.new(opts)
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
---@field redis string redis://[[user]:password@]host:port/db, or redis+sentinel://...host:port[,host:port...]/mastername/db
---@field ttl? number seconds a delivery is remembered (default 3600)
---@field lease? number seconds at most a delivery is "pending" while its handler runs (default 60)
---@field wait? kinot.callback.Wait WAIT for replicas after each "done" mark (a shortfall is logged)

---@class kinot.callback.Wait
---@field replicas integer replicas that must have the write
---@field timeout? number seconds WAIT waits for them (default 1)

---@class kinot.callback.Inbox
---@field redis string redis://[[user]:password@]host:port/db, or redis+sentinel://...host:port[,host:port...]/mastername/db
---@field stream? string default "kinot:callbacks"
---@field maxlen? integer trims the oldest entries, handled or not (default none)
---@field wait? kinot.callback.Wait answer 200 only once that many replicas have the event (503 otherwise)

---@class kinot.callback.WorkerOptions
---@field redis string redis://[[user]:password@]host:port/db, or redis+sentinel://... (required)
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
