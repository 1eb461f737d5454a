-- Dedupe in this process's memory (no lua_shared_dict, no Redis): the
-- deliveries handled, a bounded ring (kinot.callback.recent), and those
-- being handled.  The store contract of kinot.callback.stores.
local recent = require "kinot.callback.recent"
local core = require "kinot.core"

local M = {}
M.__index = M

local monotonic = core.monotonic

--- new(capacity, ttl, lease, clock) -> store
function M.new(capacity, ttl, lease, clock)
  return setmetatable({ done = recent.new(capacity, ttl, clock), busy = {}, lease = lease }, M)
end

function M:claim(id)
  if self.done:has(id) then return "done" end
  local now = monotonic()
  local until_ = self.busy[id]
  if until_ and until_ > now then return "busy" end
  -- the mark's deadline is its token: a late settle never clears the
  -- mark of the delivery that took over once the lease ran out
  local token = now + self.lease
  self.busy[id] = token
  return "new", token
end

function M:settle(id, token, ok)
  if self.busy[id] == token then self.busy[id] = nil end
  if ok then self.done:add(id) end
  return true
end

return M
