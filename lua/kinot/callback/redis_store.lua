-- Shared dedupe on Redis: one set of delivered callbacks for every worker
-- of every receiver host, keyed by the event's id (its verified sign: a
-- redelivery carries the same).  Selected by callback.handler's
-- `dedupe = { redis = "redis://[:password@]host:port/db", ttl = 3600 }`.
--   claim(id) -> "new", token | "done" | "busy" | nil, err
--   settle(id, token, ok) -> true | nil, err
-- (the store contract of kinot.callback.stores)
-- Every delivery is claimed first: a pending mark naming its claim, which
-- expires after `lease` seconds (a host that died holding it blocks nobody
-- for long), then settled: "done" for ttl, or forgotten.  A claim whose
-- answer was lost (Redis stalled past the timeout, and ran it later) is
-- therefore never read as "done" by the redelivery: it is "busy" until its
-- lease runs out, then new.
local redis = require "kinot.redis"
local errors = require "kinot.errors"
local validate = require "kinot.validate"
local core = require "kinot.core_loader"

local M = {}
M.__index = M

M.PREFIX = "kinot:seen:"

-- the pending mark names its claim (ARGV[2]): a host whose lease ran out
-- and whose handler then failed forgets its own claim, never the claim of
-- the host that took the delivery over
-- A claim that finds its own mark answers new: kinot.redis sends a command
-- again when a kept connection died, and the first may have run.
local CLAIM = [[
local v = redis.call('GET', KEYS[1])
if v == 'done' then return 'done' end
if v == 'pending:' .. ARGV[2] then return 'new' end
if v then return 'busy' end
redis.call('SET', KEYS[1], 'pending:' .. ARGV[2], 'PX', ARGV[1])
return 'new']]

local SETTLE = [[
if ARGV[1] == 'ok' then
  redis.call('SET', KEYS[1], 'done', 'EX', ARGV[2])
elseif redis.call('GET', KEYS[1]) == 'pending:' .. ARGV[3] then
  redis.call('DEL', KEYS[1])
end
return 1]]

local OPTIONS = validate.set { "redis", "redis_tls", "ttl", "prefix", "lease", "timeout", "connect_timeout", "wait" }

--- options(o) -> the options checked (misuse raises)
function M.options(o)
  if type(o) ~= "table" then errors.misuse("dedupe must name a lua_shared_dict or be a table { redis = url, ttl = s }") end
  validate.options(o, OPTIONS, "dedupe")
  redis.check(o.redis, o.redis_tls, "dedupe.redis_tls")
  if o.ttl ~= nil and (type(o.ttl) ~= "number" or o.ttl < 1) then errors.misuse("dedupe.ttl must be a number of seconds >= 1") end
  if o.prefix ~= nil and type(o.prefix) ~= "string" then errors.misuse("dedupe.prefix must be a string") end
  -- (Redis refuses PX 0: a lease under a millisecond would be a 503 for every delivery)
  if o.lease ~= nil and (type(o.lease) ~= "number" or o.lease ~= o.lease or o.lease < 0.001) then
    errors.misuse("dedupe.lease must be a number of seconds >= 0.001")
  end
  redis.wait_option(o.wait, "dedupe")
  return o
end

--- new(o) -> store.  o: redis (URL), ttl (s a delivery is remembered,
-- default 3600), lease (s a claim stays pending at most, default 60),
-- prefix, timeout, connect_timeout, redis_tls (a rediss:// URL's TLS
-- settings: kinot.redis's tls)
function M.new(o)
  M.options(o)
  return setmetatable({
    client = redis.new(o.redis, { timeout = o.timeout, connect_timeout = o.connect_timeout, tls = o.redis_tls }),
    ttl = math.floor(o.ttl or 3600), prefix = o.prefix or M.PREFIX,
    lease = math.floor((o.lease or 60) * 1000),
    wait = redis.wait_option(o.wait, "dedupe"),
  }, M)
end

--- claim(id) -> "new", token | "done" | "busy" (another host has it in hand) | nil, err
function M:claim(id)
  -- 122 bits from OpenSSL's generator: unique across hosts and processes.
  -- (host:pid:counter:math.random was not: containers on one node share a
  -- hostname and their workers' pids, and LuaJIT's math.random starts from
  -- the same seed in every process, so two hosts made the same tokens and
  -- each took the other's pending mark for its own claim)
  local token = core.uuid()
  local v, err = self.client:eval(CLAIM, 1, self.prefix .. id, self.lease, token)
  if v == "new" then return v, token end
  return v, err
end

--- settle(id, token, ok) -> true | nil, err: done for ttl, or (the claim
-- `token` names, if still there) forgotten so a redelivery runs again
-- With `wait`, a "done" is WAITed for: a mark that reached `replicas`
-- replicas survives a failover, so a redelivery after it is not run again.
-- Fewer replicas is a settle error (the receiver logs it) and NOT a 5xx:
-- the dedupe keeps marks, not events, so nothing answered 200 can be lost
-- through it; the event was handed over (ack = "immediate") or handled
-- (ack = "after_handler") already, and a 5xx now would only bring the
-- redelivery that the mark exists to keep from running twice.
function M:settle(id, token, ok)
  local v, err
  if ok and self.wait then
    v, err = self.client:eval_wait(self.wait, SETTLE, 1, self.prefix .. id, "ok", self.ttl, token or "")
  else
    v, err = self.client:eval(SETTLE, 1, self.prefix .. id, ok and "ok" or "failed", self.ttl, token or "")
  end
  if v == nil then return nil, err end
  return true
end

return M
