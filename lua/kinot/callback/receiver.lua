-- Receiving one callback delivery, whatever the server: verify, answer,
-- deduplicate, dispatch.  The OpenResty handler adapts it to nginx.
local callback = require "kinot.callback"
local recent = require "kinot.callback.recent"
local freshness = require "kinot.callback.freshness"
local json = require "kinot.json"
local rules = require "kinot.callback.rules"
local core = require "kinot.core_loader"

local M = {}
M.__index = M

local OK_BODY = '{"code":0,"message":"OK"}'
M.OK_BODY = OK_BODY

local STATUS = { too_large = 413, no_sign = 401, bad_sign = 401 }

local function err_body(status, err)
  return json.encode { code = status, message = err.message }
end

function M.new(opts)
  if type(opts) ~= "table" then error("kinot: callback receiver needs a table of options", 3) end
  if opts.secret == nil then error("kinot: callback receiver needs opts.secret (string or list)", 3) end
  for _, k in ipairs { "on_status", "on_command" } do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then error("kinot: " .. k .. " must be a function", 3) end
  end
  local max_body = opts.max_body or callback.MAX_BODY
  if type(max_body) ~= "number" or max_body < 1 then error("kinot: max_body must be a positive number", 3) end
  -- sign_rule and verify = "monitor" (kinot.callback.rules)
  local rule = opts.sign_rule ~= nil and not rules.is_default(opts.sign_rule) and rules.rule(opts.sign_rule, 3) or nil
  if opts.verify ~= nil and opts.verify ~= "enforce" and opts.verify ~= "monitor" then
    error("kinot: verify must be \"enforce\" (the default) or \"monitor\" (got " .. tostring(opts.verify) .. ")", 3)
  end
  return setmetatable({
    rule = rule, monitor = opts.verify == "monitor",
    secrets = callback.secrets_of(opts.secret, 4), on_status = opts.on_status, on_command = opts.on_command,
    max_body = max_body, seen = opts.seen or recent.new(opts.dedupe_capacity or 10000, opts.dedupe_ttl or 3600, opts.clock),
    -- freshness (issue 12 §4): kinot.callback.freshness; nil when switched off
    fresh = freshness.new({ max_age = opts.max_age, max_skew = opts.max_skew, out_of_order = opts.out_of_order,
                            dict = opts.order_dict, capacity = opts.order_capacity, now = opts.clock }, 3),
  }, M)
end

-- verify = "monitor": a body whose sign fails is handed over all the same,
-- as ev.verified = false; err says why, and under which known rule (if
-- any) it verifies (err.rules).  Anyone can forge callbacks meanwhile.
function M:unverified(raw, err)
  local members = rules.members(raw)
  if not members then return 400, err_body(400, err), nil, err end
  local report = rules.discover(raw, self.secrets)
  if report and #report.matches > 0 then
    err.rules = {}
    for i, m in ipairs(report.matches) do err.rules[i] = m.name end
    err.message = err.message .. "; it verifies under sign_rule " .. table.concat(err.rules, " or ")
  end
  local id = "unverified:" .. core.md5_hex(raw)
  if not self.seen:add(id) then return 200, OK_BODY, nil, err, true end
  local ev, merr = callback.event_of(members, id, nil)
  if not ev then return 400, err_body(400, merr), nil, merr end
  ev.verified = false
  return 200, OK_BODY, ev, err
end

--- receive(raw) -> status, response body, event (nil if refused or a duplicate), err, duplicate
-- (under verify = "monitor" an unverified event comes with the err it failed with)
-- The event is built by the call that verifies the body and owns all it
-- holds: seen:add may yield (a store on cosockets) without another
-- request's verification changing it.
function M:receive(raw)
  local ev, err
  if self.rule then -- a sign_rule but the default: kinot.callback.rules
    ev, err = callback.check_rule(raw, self.secrets, self.rule, self.max_body)
  else
    ev, err = callback.check(raw, self.secrets, self.max_body)
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
  -- a redelivery is acknowledged without being handed over again
  if not self.seen:add(ev.id) then return 200, OK_BODY, nil, nil, true end
  return 200, OK_BODY, ev
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

--- dispatch(event): calls on_command / on_status; errors are returned, not raised
function M:dispatch(ev)
  local fn = ev.kind == "command_resp" and self.on_command or self.on_status
  if not fn then return true end
  return pcall(fn, ev)
end

return M
