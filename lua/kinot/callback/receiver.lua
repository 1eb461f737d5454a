-- Receiving one callback delivery, whatever the server: verify, judge its
-- freshness, claim it in the dedupe store (kinot.callback.stores), and
-- acknowledge it as `ack` says:
--   ack = "immediate" (the receiver's default): the claim is settled at
--     once, the answer is 200 and the event comes back for the caller to
--     hand to its handler (callback.handler does it in a timer);
--   ack = "after_handler" (callback.handler's default): the handler runs
--     here, the claim is settled with its outcome, and the answer is 200
--     only once it returned normally (500 when it failed).
-- The OpenResty handler (kinot.callback.handler) adapts it to nginx.
local event = require "kinot.callback.event"
local freshness = require "kinot.callback.freshness"
local stores = require "kinot.callback.stores"
local errors = require "kinot.errors"
local json = require "kinot.json"
local rules = require "kinot.callback.rules"
local validate = require "kinot.validate"
local core = require "kinot.core_loader"

local ngx = rawget(_G, "ngx")
local M = {}
M.__index = M

local OK_BODY = '{"code":0,"message":"OK"}'
M.OK_BODY = OK_BODY
local FAILED_BODY = '{"code":500,"message":"the callback handler failed; deliver this callback again"}'
local BUSY_BODY = '{"code":503,"message":"this callback is being handled by an earlier delivery; deliver it again later"}'
local UNAVAILABLE_BODY = '{"code":503,"message":"the callback store is unavailable: deliver again later"}'

local STATUS = { too_large = 413, no_sign = 401, bad_sign = 401 }

local function err_body(status, err)
  return json.encode { code = status, message = err.message }
end

-- what the receiver takes; callback.handler takes these too
M.OPTIONS = { "secret", "sign_rule", "max_body", "on_status", "on_command", "verify", "max_age", "max_skew",
  "out_of_order", "order_capacity", "order_dict", "dedupe", "dedupe_ttl", "dedupe_capacity", "busy_ttl",
  "busy_dict", "inbox", "ack", "clock", "store", "fleet" }
local OPTIONS = validate.set(M.OPTIONS)

local function log_error(...)
  if ngx and ngx.log then ngx.log(ngx.ERR, ...) end
end

function M.new(opts, fname)
  fname = fname or "callback.receiver"
  if type(opts) ~= "table" then errors.misuse(fname .. " needs a table of options") end
  validate.options(opts, OPTIONS, fname)
  if opts.secret == nil then errors.misuse(fname .. " needs opts.secret (string or list)") end
  for _, k in ipairs { "on_status", "on_command" } do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then errors.misuse(k .. " must be a function") end
  end
  M.check_fleet(opts.fleet)
  local max_body = opts.max_body or event.MAX_BODY
  if type(max_body) ~= "number" or max_body < 1 then errors.misuse("max_body must be a positive number") end
  -- sign_rule and verify = "monitor" (kinot.callback.rules)
  local rule = opts.sign_rule ~= nil and not rules.is_default(opts.sign_rule) and rules.rule(opts.sign_rule) or nil
  if opts.verify ~= nil and opts.verify ~= "enforce" and opts.verify ~= "monitor" then
    errors.misuse("verify must be \"enforce\" (the default) or \"monitor\" (got " .. tostring(opts.verify) .. ")")
  end
  local ack = opts.ack or "immediate"
  if ack ~= "immediate" and ack ~= "after_handler" then
    errors.misuse('ack must be "after_handler" or "immediate" (got ' .. tostring(ack) .. ")")
  end
  local store = opts.store or stores.new(opts, ack == "after_handler")
  -- the newest time of each device: a lua_shared_dict (by name, or the
  -- dict itself), else the dedupe dict, else this process's memory
  local order_dict = opts.order_dict
  if type(order_dict) == "string" then
    order_dict = ngx and ngx.shared and ngx.shared[order_dict]
    if not order_dict then
      errors.misuse("order_dict names lua_shared_dict '" .. opts.order_dict .. "', which nginx.conf does not declare")
    end
  elseif order_dict ~= nil and not (type(order_dict) == "table" and order_dict.get and order_dict.set) then
    errors.misuse("order_dict must name a lua_shared_dict (got " .. type(order_dict) .. ")")
  end
  return setmetatable({
    rule = rule, monitor = opts.verify == "monitor", after = ack == "after_handler",
    secrets = event.secrets_of(opts.secret), on_status = opts.on_status, on_command = opts.on_command,
    fleet = opts.fleet, max_body = max_body, store = store,
    -- freshness (issue 12 §4): kinot.callback.freshness; nil when switched off.
    -- The newest times go in the dedupe dict when there is one (shared by the workers)
    fresh = freshness.new({ max_age = opts.max_age, max_skew = opts.max_skew, out_of_order = opts.out_of_order,
                            dict = order_dict or store.dict, capacity = opts.order_capacity,
                            now = opts.clock }),
  }, M)
end

-- verify = "monitor": a body whose sign fails is handed over all the same,
-- as ev.verified = false; err says why, and under which known rule (if
-- any) it verifies (err.rules).  Anyone can forge callbacks meanwhile.
function M:unverified(raw, err)
  local ev, merr = event.event_of(raw, "unverified:" .. core.md5_hex(raw), nil)
  if not ev then return 400, err_body(400, merr), nil, merr end
  local report = rules.discover(raw, self.secrets)
  if report and #report.matches > 0 then
    err.rules = {}
    for i, m in ipairs(report.matches) do err.rules[i] = m.name end
    err.message = err.message .. "; it verifies under sign_rule " .. table.concat(err.rules, " or ")
  end
  ev.verified = false
  return self:deliver(ev, raw, err)
end

--- receive(raw) -> status, response body, event (nil if refused or a duplicate), err, duplicate
-- (under verify = "monitor" an unverified event comes with the err it failed with)
-- The event is built by the call that verifies the body and owns all it
-- holds: the store may yield (cosockets) without another request's
-- verification changing it.
function M:receive(raw)
  local ev, err
  if self.rule then -- a sign_rule but the default: kinot.callback.rules
    ev, err = event.check_rule(raw, self.secrets, self.rule, self.max_body)
  else
    ev, err = event.check(raw, self.secrets, self.max_body)
  end
  if not ev then
    if self.monitor and (err.reason == "bad_sign" or err.reason == "no_sign") then return self:unverified(raw, err) end
    local status = STATUS[err.reason] or 400 -- not_json, not_object, duplicate_key, malformed: 400
    return status, err_body(status, err), nil, err
  end
  -- freshness (issue 12 §4): see M.refusal.  Judged before the dedupe
  -- store records the delivery: one answered 503 ("future") must not be
  -- remembered, or its redelivery would be acknowledged as a duplicate
  -- and never handled
  if self.fresh then
    local ok, ferr = self.fresh:check(ev)
    if not ok then return M.refusal(ferr) end
  end
  -- (not a tail call: see freshness.newest)
  local status, answer, event_, derr, dup = self:deliver(ev, raw, nil)
  return status, answer, event_, derr, dup
end

--- deliver(ev, raw, err) -> status, body, event, err, duplicate: the
-- claim, the acknowledgement `ack` says, the settlement
function M:deliver(ev, raw, err)
  local store = self.store
  -- how the body was read, for a store that keeps it (the inbox): its
  -- workers must rebuild this event, not the default rule's
  local form
  if ev.verified == false then form = { verified = false } -- read by the default rule (unverified)
  elseif self.rule then form = { rule = self.rule.name } end
  if ev.stale then -- (out_of_order = "flag": the worker's handler is told too)
    form = form or {}
    form.stale = true
  end
  local state, token = store:claim(ev.id, raw, form, ev)
  if state == "done" then return 200, OK_BODY, nil, err, true end -- a redelivery: acknowledged, not handed over
  if state == "busy" then return 503, BUSY_BODY, nil, err end -- being handled now: deliver again later
  if state == nil then
    local why = errors.new("callback", "callback store unavailable (answered 503): " ..
      tostring(type(token) == "table" and token.message or token), { reason = "unavailable" })
    return 503, UNAVAILABLE_BODY, nil, why
  end
  if not self.after then
    -- handed over now: done (when the answer to this is lost, the claim
    -- expires after its lease: the event may run again, never not at all)
    local ok, serr = store:settle(ev.id, token, true)
    if not ok then log_error("kinot callback dedupe not settled: ", tostring(serr)) end
    return 200, OK_BODY, ev, err
  end
  local ok, why = self:dispatch(ev)
  local settled, serr = store:settle(ev.id, token, ok)
  if not settled then log_error("kinot callback dedupe not settled: ", tostring(serr)) end
  if ok then return 200, OK_BODY, ev, err end
  return 500, FAILED_BODY, ev, errors.new("callback", "callback handler failed for sn " ..
    (tostring(ev.sn):sub(1, 40):gsub("%c", "?")) .. ": " .. tostring(why), { reason = "handler_failed" })
end

-- A stale or out-of-order event is acknowledged (200): the platform must
-- not deliver a replay or a superseded state again and again; it never
-- reaches a handler.  One from the future gets 503: a delivery later, when
-- the clocks agree, can succeed.
local FRESH_STATUS = { stale = 200, out_of_order = 200, future = 503 }
function M.refusal(err)
  local status = FRESH_STATUS[err.reason] or 400
  return status, status == 200 and OK_BODY or err_body(status, err), nil, err
end

-- pcall's results -> true | false, why: a handler fails when it raises,
-- returns nil (or false) and an error, or returns false (a handler that
-- says false has not done its work: acknowledging it would lose the event)
local function outcome(ok, r1, r2)
  if not ok then return false, r1 end
  if (r1 == nil or r1 == false) and r2 ~= nil then return false, r2 end
  if r1 == false then return false, "the handler returned false" end
  return true
end

--- check_fleet(twin): `fleet` is a live twin (kinot.fleet) or nil
function M.check_fleet(twin)
  if twin ~= nil and (type(twin) ~= "table" or type(twin.apply) ~= "function") then
    errors.misuse("fleet must be a live twin made by kinot.fleet.new (got " .. type(twin) .. ")")
  end
end

--- dispatch(event) -> true | false, why: feeds the live twin (`fleet`,
-- kinot.fleet) with a status change, then calls on_command / on_status of
-- self (a receiver, or any table holding them: kinot.callback.worker);
-- errors are returned, not raised.  The twin goes first: a twin that could
-- not store the change fails the delivery, which is then not acknowledged
-- (redelivered, or run again by the worker); applying it twice is a
-- "duplicate", never a second change.
function M.dispatch(self, ev)
  local twin = self.fleet
  if twin and ev.kind ~= "command_resp" then
    local ok, verdict, err = pcall(twin.apply, twin, ev)
    if not ok then return false, "the live twin failed: " .. tostring(verdict) end
    if verdict == nil then return false, err end
  end
  local fn = ev.kind == "command_resp" and self.on_command or self.on_status
  if not fn then return true end
  local ok, why = outcome(pcall(fn, ev)) -- (not a tail call: see freshness.newest)
  return ok, why
end

return M
