-- Dedupe in this process's memory (no lua_shared_dict, no Redis): the
-- deliveries handled, a bounded ring (kinot.callback.recent), and those
-- being handled.  The store contract of kinot.callback.stores.
local recent = require "kinot.callback.recent"

local M = {}
M.__index = M

--- new(capacity, ttl, lease, clock) -> store.  clock: the receiver's
-- (ngx.time in nginx: cached, and compiled by the JIT; a C call per
-- delivery here cost a third of the handler's throughput)
function M.new(capacity, ttl, lease, clock)
  clock = clock or os.time
  return setmetatable({ done = recent.new(capacity, ttl, clock), busy = {}, lease = lease, clock = clock }, M)
end

function M:claim(id)
  if self.done:has(id) then return "done" end
  local now = self.clock()
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
