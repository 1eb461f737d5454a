-- The set of recently seen callbacks, for deduplicating outside a
-- lua_shared_dict (inside nginx a dict does it across workers): a ring of
-- the last `capacity` keys, oldest evicted first, each remembered for `ttl`
-- seconds.  A ring of plain arrays, not a node per key: nothing is
-- allocated per callback, and the collector has three arrays to walk.
local errors = require "kinot.errors"

local M = {}
M.__index = M

function M.new(capacity, ttl, clock)
  capacity = capacity or 10000
  if type(capacity) ~= "number" or capacity < 1 then errors.misuse("dedupe_capacity must be a positive number") end
  return setmetatable({ cap = capacity, ttl = ttl, clock = clock or os.time, size = 0, at = 0,
                        slot = {}, keys = {}, times = {} }, M)
end

--- add(key) -> true when new, false when seen within ttl seconds
function M:add(key)
  local now = self.clock()
  local slot = self.slot
  local i = slot[key]
  local keys, times = self.keys, self.times
  if i then
    local ttl = self.ttl
    if not ttl or times[i] + ttl > now then return false end
    times[i] = now -- seen again after it expired: new again, from now
    return true
  end
  i = self.at % self.cap + 1
  self.at = i
  local old = keys[i]
  if old ~= nil then slot[old] = nil else self.size = self.size + 1 end
  keys[i], times[i], slot[key] = key, now, i
  return true
end

--- has(key) -> true when seen within ttl seconds (nothing recorded)
function M:has(key)
  local i = self.slot[key]
  if not i then return false end
  local ttl = self.ttl
  return not ttl or self.times[i] + ttl > self.clock()
end

return M
