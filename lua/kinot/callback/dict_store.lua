-- Dedupe in lua_shared_dicts: every worker of one host sees the same
-- deliveries, and they outlive a worker killed with SIGKILL.  The store
-- contract of kinot.callback.stores: claim(id) -> "new", token | "done" |
-- "busy" | nil, err; settle(id, token, ok) -> true.
--
-- Two dicts, because the two marks keep different promises:
--   * `done`: the deliveries handled (or acknowledged), for ttl seconds.
--     Written with set: when the dict is full nginx evicts the least
--     recently used, and an evicted mark costs at most one more run of an
--     event already handled (at least once);
--   * `busy` (ack = "after_handler" only): the in-progress marks, one per
--     handler running, for `lease` seconds at most.  A mark there keeps a
--     copy of the event from running beside the first, so it must never be
--     evicted: written with safe_add only, in a dict of its own that
--     nothing else fills; when it is full the delivery gets 503.
local errors = require "kinot.errors"

local ngx = ngx -- luacheck: ignore
local M = {}
M.__index = M

-- a claim's token: this worker's pid and a count, as one number (no
-- string made per delivery); unique within the host's dicts, which is all
-- a token is compared within
local MARKS = 2 ^ 30
local marks = 0

--- new(done dict, busy dict or nil, ttl, lease, name) -> store.
-- Without a busy dict a claim is recorded as done at once (ack = "immediate").
function M.new(done, busy, ttl, lease, name)
  return setmetatable({ dict = done, busy = busy, ttl = ttl, lease = lease, name = name }, M)
end

function M:claim(id)
  local done = self.dict
  local busy = self.busy
  if not busy then
    local ok, err = done:add(id, true, self.ttl)
    if ok then return "new", true end
    if err == "exists" then return "done" end
    return "new", true -- no memory even by evicting: handle it, unrecorded
  end
  marks = marks % MARKS + 1
  local token = ngx.worker.pid() * MARKS + marks
  -- the mark first, then one look at `done`: a delivery handled and
  -- settled at any time before that look is seen there (settle writes
  -- done before it lets the mark go), so two dict operations for a new
  -- delivery; a redelivery of a handled one also makes and drops a mark
  local ok, err = busy:safe_add(id, token, self.lease)
  if not ok and err ~= "exists" then -- no memory: let expired marks go, once
    busy:flush_expired(100)
    ok, err = busy:safe_add(id, token, self.lease)
  end
  if done:get(id) then
    if ok then busy:delete(id) end
    return "done"
  end
  if ok then return "new", token end
  if err == "exists" then return "busy" end
  return nil, errors.new("callback", "the lua_shared_dict " .. self.name .. " of in-progress marks is full (" ..
    tostring(err) .. "): make it bigger", { reason = "unavailable" })
end

function M:settle(id, token, ok)
  local busy = self.busy
  if not busy then return true end
  if ok then self.dict:set(id, true, self.ttl) end
  if busy:get(id) == token then busy:delete(id) end
  return true
end

return M
