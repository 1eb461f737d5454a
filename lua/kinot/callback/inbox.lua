-- The durable inbox: callback.handler's `inbox = { redis = url, stream =
-- "kinot:callbacks", maxlen = n, wait = { replicas = n, timeout = s } }`
-- appends each verified delivery to a Redis stream before the platform
-- gets its 200 (with wait: once that many replicas have it), so a 200 means stored;
-- kinot.callback.worker hands the entries to on_status / on_command.
--
-- An entry: id (the verified sign), body (the raw verified body), at (when
-- it was received, epoch seconds), and only when the receiver read it
-- otherwise than by the default rule: rule (the sign_rule's name) or
-- verified = "0" (verify = "monitor", not verified): the worker rebuilds
-- the event the receiver verified, and says so when it was not.  The append and the dedupe mark are one
-- script, so they happen together or not at all: a redelivery of a stored
-- event is answered 200 without a second entry, on any host.
local redis = require "kinot.redis"
local errors = require "kinot.errors"
local validate = require "kinot.validate"
local store = require "kinot.callback.redis_store"

local M = {}
M.__index = M

M.STREAM = "kinot:callbacks"

-- KEYS: dedupe key, stream; ARGV: ttl, maxlen ("" for none), id, body, at,
-- rule ("" for the default), verified ("0" when not, else ""), waited.
-- The mark is set after the append: a script that fails half way keeps
-- what it wrote, and a mark without its entry would make the redelivery
-- of an event never stored look like a duplicate.
-- ARGV[8]: "1" when the caller WAITs: a delivery found stored rewrites
-- its mark as it is (same value, same expiry), so that this connection's
-- last write comes after the entry and WAIT counts the replicas that have
-- it.  Redis 7.2 and later move a connection's WAIT offset only on a
-- command that wrote (their call(): "right after its last command that
-- resulted in propagation"): without a write here, a redelivery on a
-- connection that last wrote before the entry was appended (another nginx
-- worker's, another pooled one) would have its WAIT answered at once,
-- though no replica had the entry (Redis 6.2 to 7.0 move it on every
-- command: sentinel_attack_spec's 503 holds on 7.0 either way).
local PUT = [[
if redis.call('EXISTS', KEYS[1]) == 1 then
  if ARGV[8] == '1' then redis.call('SET', KEYS[1], redis.call('GET', KEYS[1]), 'KEEPTTL') end
  return 0
end
local a = { KEYS[2] }
if ARGV[2] ~= '' then a[#a + 1] = 'MAXLEN'; a[#a + 1] = '~'; a[#a + 1] = ARGV[2] end
for _, v in ipairs { '*', 'id', ARGV[3], 'body', ARGV[4], 'at', ARGV[5] } do a[#a + 1] = v end
if ARGV[6] ~= '' then a[#a + 1] = 'rule'; a[#a + 1] = ARGV[6] end
if ARGV[7] ~= '' then a[#a + 1] = 'verified'; a[#a + 1] = ARGV[7] end
redis.call('XADD', unpack(a))
redis.call('SET', KEYS[1], 'done', 'EX', ARGV[1])
return 1]]

local OPTIONS = validate.set { "redis", "redis_tls", "stream", "maxlen", "timeout", "connect_timeout", "wait" }

-- two TLS tables that say the same (nil and nil among them)
local function same_tls(a, b)
  if a == nil or b == nil then return a == b end
  for k, v in pairs(a) do if b[k] ~= v then return false end end
  for k, v in pairs(b) do if a[k] ~= v then return false end end
  return true
end

--- options(inbox, dedupe): misuse raises
function M.options(o, dedupe)
  if type(o) ~= "table" then errors.misuse("inbox must be a table { redis = url, stream = name, maxlen = n }") end
  validate.options(o, OPTIONS, "inbox")
  redis.check(o.redis, o.redis_tls, "inbox.redis_tls")
  if o.stream ~= nil and (type(o.stream) ~= "string" or o.stream == "") then errors.misuse("inbox.stream must be a name") end
  if o.maxlen ~= nil and (type(o.maxlen) ~= "number" or o.maxlen < 1) then errors.misuse("inbox.maxlen must be a positive number") end
  redis.wait_option(o.wait, "inbox")
  if type(dedupe) == "table" then
    store.options(dedupe)
    if dedupe.wait ~= nil then errors.misuse("with an inbox, give wait in inbox = { wait = ... }: it waits for the entry") end
    if dedupe.redis ~= o.redis then
      errors.misuse("dedupe.redis and inbox.redis must name the same Redis (the inbox dedupes as it appends)")
    end
    if dedupe.redis_tls ~= nil and not same_tls(dedupe.redis_tls, o.redis_tls) then
      errors.misuse("dedupe.redis_tls and inbox.redis_tls differ: the inbox's connection does the dedupe (leave dedupe's out)")
    end
  elseif dedupe ~= nil then
    errors.misuse("with an inbox, dedupe is the inbox's own: leave it out or give the same { redis = url, ttl = s }")
  end
end

--- new(inbox, dedupe) -> inbox.  dedupe (optional): { ttl = s, prefix = ... }
function M.new(o, dedupe)
  M.options(o, dedupe)
  dedupe = dedupe or {}
  return setmetatable({
    client = redis.new(o.redis, { timeout = o.timeout, connect_timeout = o.connect_timeout, tls = o.redis_tls }),
    stream = o.stream or M.STREAM, maxlen = o.maxlen and string.format("%d", o.maxlen) or "",
    ttl = math.floor(dedupe.ttl or 3600), prefix = dedupe.prefix or store.PREFIX,
    wait = redis.wait_option(o.wait, "inbox"),
  }, M)
end

--- put(id, raw, at[, form]) -> true (stored now) | false (stored before: a redelivery) | nil, err
-- form: nil, or { rule = name, verified = false } (kinot.callback.stores)
function M:put(id, raw, at, form)
  local rule = form and form.rule or ""
  local verified = form and form.verified == false and "0" or ""
  local v, err
  if self.wait then
    -- the 200 goes once `replicas` replicas have the entry (WAIT on the
    -- script's connection), a redelivery's too (docs/redis.md)
    v, err = self.client:eval_wait(self.wait, PUT, 2, self.prefix .. id, self.stream,
                                   self.ttl, self.maxlen, id, raw, string.format("%.3f", at), rule, verified, "1")
  else
    v, err = self.client:eval(PUT, 2, self.prefix .. id, self.stream,
                              self.ttl, self.maxlen, id, raw, string.format("%.3f", at), rule, verified)
  end
  if v == nil then return nil, err end
  return v == 1
end

-- The store contract (kinot.callback.stores): claiming is storing.  "new":
-- stored now, "done": stored before; the workers run it either way, and
-- the 200 goes once it is stored.  A lost answer is safe: the script
-- dedupes as it appends, and a stored event is one a worker will run.
local now = rawget(_G, "ngx") and ngx.now or os.time -- luacheck: ignore

function M:claim(id, raw, form)
  local stored, err = self:put(id, raw, now(), form)
  if stored == nil then return nil, err end
  return stored and "new" or "done", true
end

function M.settle() return true end

return M
