-- The callback handler's metrics (docs/metrics.md): kinot.callback.handler
-- { metrics = registry } asks instrument() for an observer, called once a
-- delivery is answered.  Without `metrics` the handler holds no observer
-- and pays one nil test.
local M = {}

local ngx = rawget(_G, "ngx")

-- the reasons a delivery is refused (kinot.callback.event, freshness,
-- receiver, handler): a label takes these, anything else is "other"
M.REASONS = {}
for _, r in ipairs { "not_json", "not_object", "duplicate_key", "malformed", "no_sign", "bad_sign", "too_large",
                     "unreadable", "stale", "out_of_order", "future", "unavailable", "busy" } do
  M.REASONS[r] = r
end
M.KINDS = { status_changed = "status_changed", command_resp = "command_resp" }

--- metrics(registry) -> the callback metrics of a registry (made once, shared by its handlers)
function M.metrics(reg)
  return {
    received = reg:counter("kinot_callbacks_received_total",
      "Callback events accepted (verified, or let through by verify = monitor), by event kind", { "kind" }),
    refused = reg:counter("kinot_callbacks_refused_total",
      "Callback deliveries refused or not handled, by reason", { "reason" }),
    duplicate = reg:counter("kinot_callbacks_duplicate_total",
      "Callback deliveries acknowledged as redeliveries of an event already handled"),
    failed = reg:counter("kinot_callback_handler_failures_total",
      "Callback events whose handler (or the live twin) failed: answered 500, delivered again"),
    delay = reg:histogram("kinot_callback_handler_delay_seconds",
      "Time from the callback's POST to its handler's call (nginx's cached clock: millisecond steps)"),
  }
end

--- instrument(registry, rcv) -> observe(status, ev, err, duplicate, why):
-- the receiver's dispatch is wrapped to time the handler's call and count
-- its failures (under either acknowledgement)
function M.instrument(reg, rcv)
  require("kinot.metrics").check(reg, "callback.handler")
  local m = M.metrics(reg)
  local received, refused, duplicate, failed, delay = m.received, m.refused, m.duplicate, m.failed, m.delay
  local arrived = setmetatable({}, { __mode = "k" }) -- ack = "immediate": event -> its POST's time
  local after = rcv.after
  local dispatch = rcv.dispatch
  rcv.dispatch = function(self, ev)
    local t0
    if after then t0 = ngx.req.start_time() -- in the request
    else t0 = arrived[ev] arrived[ev] = nil end -- in a timer, later
    if t0 then delay:observe(ngx.now() - t0) end
    local ok, why = dispatch(self, ev)
    if not ok then failed:inc(1) end -- (ack = "immediate": in the timer, after the 200)
    return ok, why
  end
  return function(status, ev, err, dup, why)
    if ev then
      received:inc(1, M.KINDS[ev.kind] or "other")
      if not after then arrived[ev] = ngx.req.start_time() end
    elseif dup then
      duplicate:inc(1)
    else
      local reason = err and err.reason or (status == 503 and "busy") or why
      refused:inc(1, M.REASONS[reason] or "other")
    end
  end
end

return M
