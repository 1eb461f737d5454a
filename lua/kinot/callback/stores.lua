-- The dedupe store a receiver asks "is this delivery new?", chosen from its
-- options.  Every store keeps one contract:
--   claim(id, raw, form, ev) -> "new", token   the delivery is this receiver's to handle
--                   | "done"         handled (or stored) before: acknowledge it
--                   | "busy"         another delivery of it is being handled now
--                   | nil, err       the store cannot say: answer 503
--     (raw: the body; form: nil, or { rule = name, verified = false,
--     stale = true } when the event was read under another sign_rule than
--     the default, not verified (verify = "monitor") or flagged
--     (out_of_order = "flag"): a store that keeps the body (the
--     inbox) keeps these, so its workers rebuild the same event; ev: the
--     event verified, which the inbox holds for its workers in this
--     process: the receiver reads nothing of it but its kind and sn after)
--   settle(id, token, ok) -> true | nil, err
--                   handled (ok): remembered as done; failed: forgotten, so
--                   the redelivery runs it
-- The receiver (kinot.callback.receiver) owns the acknowledgement: with
-- ack = "immediate" it settles at once and hands the event over; with
-- "after_handler" it settles with the handler's outcome.
--   dedupe = nil          this process's memory (kinot.callback.memory_store)
--   dedupe = "name"       lua_shared_dicts, one host (kinot.callback.dict_store)
--   dedupe = { redis }    Redis, every host (kinot.callback.redis_store)
--   inbox  = { redis }    the durable inbox: claiming is storing (kinot.callback.inbox)
local errors = require "kinot.errors"
local inbox = require "kinot.callback.inbox"
local redis_store = require "kinot.callback.redis_store"
local dict_store = require "kinot.callback.dict_store"
local memory_store = require "kinot.callback.memory_store"

local M = {}

-- how long a delivery being handled (ack = "after_handler") keeps other
-- copies of it away: longer than a handler takes, short enough that a
-- delivery whose worker was killed is handled again soon after
M.BUSY_TTL = 60

--- new(o, after) -> store.  o: the receiver's options (dedupe, inbox,
-- dedupe_ttl, dedupe_capacity, busy_ttl, busy_dict, clock); after: ack is
-- "after_handler".  Misuse raises.
function M.new(o, after)
  local ttl = o.dedupe_ttl or 3600
  if type(ttl) ~= "number" or ttl <= 0 then errors.misuse("dedupe_ttl must be a positive number of seconds") end
  local lease = o.busy_ttl or M.BUSY_TTL
  if type(lease) ~= "number" or lease ~= lease or lease <= 0 then
    errors.misuse("busy_ttl must be a positive number of seconds")
  end
  if o.inbox ~= nil then
    return inbox.new(o.inbox, o.dedupe)
  end
  local dedupe = o.dedupe
  if type(dedupe) == "table" then
    local d = {}
    for k, v in pairs(dedupe) do d[k] = v end
    -- ack = "immediate" settles at once: its claims need only outlive the
    -- one round trip that settles them, and a claim whose answer was lost
    -- should block its redelivery for no longer than that
    if d.lease == nil and not after then d.lease = 5 end
    return redis_store.new(d)
  end
  if dedupe ~= nil then
    if type(dedupe) ~= "string" then errors.misuse("dedupe must name a lua_shared_dict or be { redis = url, ttl = s }") end
    local ngx = rawget(_G, "ngx")
    if ngx and ngx.shared then
      local done = ngx.shared[dedupe]
      if not done then errors.misuse("dedupe names lua_shared_dict '" .. dedupe .. "', which nginx.conf does not declare") end
      local busy
      if after then
        -- the in-progress marks: a dict of their own (kinot.callback.dict_store)
        local name = o.busy_dict or (dedupe .. "_busy")
        busy = ngx.shared[name]
        if not busy then
          errors.misuse("ack = \"after_handler\" with dedupe = \"" .. dedupe .. "\" keeps its in-progress marks in " ..
            "lua_shared_dict '" .. name .. "', which nginx.conf does not declare (add: lua_shared_dict " .. name ..
            " 1m;), or name another with busy_dict")
        end
      end
      return dict_store.new(done, busy, ttl, lease, o.busy_dict or (dedupe .. "_busy"))
    end
  end
  return memory_store.new(o.dedupe_capacity or 10000, ttl, lease, o.clock)
end

return M
