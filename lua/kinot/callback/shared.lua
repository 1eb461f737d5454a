-- callback.handler's Redis path, for several receivers (hosts, workers)
-- behind one load balancer:
--   dedupe = { redis = url, ttl = s }    one dedupe set for every host
--   inbox  = { redis = url, stream = name, maxlen = n }
--                                        each verified event stored in a
--                                        Redis stream before the 200;
--                                        kinot.callback.worker runs it
-- When Redis cannot say (down, slow, refusing), the platform gets 503 and
-- delivers again: never a 200 for an event that was neither stored nor
-- handed to this worker's handler.
local store = require "kinot.callback.redis_store"
local inbox = require "kinot.callback.inbox"

local ngx = rawget(_G, "ngx")

local M = {}
M.__index = M

local OK_BODY = '{"code":0,"message":"OK"}'
local BUSY = '{"code":503,"message":"this callback is being handled now: deliver again later"}'
local UNAVAILABLE = '{"code":503,"message":"the callback store is unavailable: deliver again later"}'

-- the receiver's own memory must not answer for Redis: a delivery it
-- remembered but Redis refused would be acknowledged and lost
local PASS = { add = function() return true end }

--- new(handler opts) -> gate | nil (neither option is set: the handler's usual path)
function M.new(o)
  if type(o.dedupe) ~= "table" and o.inbox == nil then return nil end
  -- each claimed event's token, until settle (weak: an event dropped
  -- half way takes its token with it)
  local self = setmetatable({ pass = PASS, tokens = setmetatable({}, { __mode = "k" }) }, M)
  if o.inbox ~= nil then
    if o.on_status ~= nil or o.on_command ~= nil then
      error("kinot: with an inbox, on_status and on_command belong to kinot.callback.worker, not the handler", 4)
    end
    inbox.options(o.inbox, o.dedupe, 4)
    self.inbox = inbox.new(o.inbox, o.dedupe)
  else
    store.options(o.dedupe, 4)
    self.store = store.new(o.dedupe)
    -- each delivery is marked pending (for `lease` s) and settled: at once
    -- (ack = "immediate"), or by settle(ev, ok) once the handler returned
    -- (ack = "after_handler"); never recorded as done before that
    self.lease = o.dedupe.lease or 60
    self.immediate = o.ack == "immediate"
  end
  self.now = (ngx and ngx.now) or os.time
  return self
end

local function unavailable(err)
  if ngx then ngx.log(ngx.ERR, "kinot callback answered 503: ", tostring(err)) end
  return 503, UNAVAILABLE, nil
end

--- accept(raw, ev) -> status, answer, event to hand to this worker's handler (or nil)
function M:accept(raw, ev)
  if self.inbox then
    local stored, err = self.inbox:put(ev.id, raw, self.now())
    if stored == nil then return unavailable(err) end
    return 200, OK_BODY, nil -- stored (now or before): the workers run it
  end
  local state, token = self.store:claim(ev.id, self.lease)
  if state == nil then return unavailable(token) end
  if state == "busy" then return 503, BUSY, nil end -- another host runs it now: deliver again later
  if state == "done" then return 200, OK_BODY, nil end
  if self.immediate then
    -- this worker's handler will run it: done now (if the answer to this
    -- is lost, the pending mark expires after lease: at least once)
    local done, err = self.store:settle(ev.id, true, token)
    if not done and ngx then ngx.log(ngx.ERR, "kinot callback dedupe not settled: ", tostring(err)) end
  else
    self.tokens[ev] = token
  end
  return 200, OK_BODY, ev
end

--- settle(ev, ok) (ack = "after_handler" only): the handler returned
-- (ok) or failed; done for ttl, or forgotten so the redelivery runs.
-- The handler calls it right after on_status / on_command, before answering.
function M:settle(ev, ok)
  if self.immediate or self.inbox then return true end
  local token = self.tokens[ev]
  self.tokens[ev] = nil
  local done, err = self.store:settle(ev.id, ok, token)
  if not done and ngx then ngx.log(ngx.ERR, "kinot callback dedupe not settled: ", tostring(err)) end
  return done, err
end

return M
