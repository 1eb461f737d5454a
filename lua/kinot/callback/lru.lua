-- A small LRU set for deduplicating callbacks outside nginx (inside nginx a
-- lua_shared_dict does it across workers).  O(1) per operation.
local M = {}
M.__index = M

function M.new(capacity, ttl)
  return setmetatable({ cap = capacity or 10000, ttl = ttl, size = 0, map = {},
                        head = {}, clock = os.time }, M)
end

local function unlink(node)
  node.prev.next, node.next.prev = node.next, node.prev
end

--- add(key) -> true when new, false when seen (and not expired)
function M:add(key)
  local now = self.clock()
  local node = self.map[key]
  if node then
    if not self.ttl or node.at + self.ttl > now then return false end
    unlink(node)
    self.size = self.size - 1
    self.map[key] = nil
  end
  local head = self.head
  if not head.next then head.next, head.prev = head, head end
  node = { key = key, at = now, prev = head, next = head.next }
  head.next.prev = node
  head.next = node
  self.map[key] = node
  self.size = self.size + 1
  if self.size > self.cap then
    local old = head.prev
    unlink(old)
    self.map[old.key] = nil
    self.size = self.size - 1
  end
  return true
end

function M:remove(key)
  local node = self.map[key]
  if node then
    unlink(node)
    self.map[key] = nil
    self.size = self.size - 1
  end
end

return M
