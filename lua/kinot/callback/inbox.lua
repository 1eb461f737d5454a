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

-- ------------------------------------------------------------ group commit
-- Inside nginx, the puts of one worker's requests go to Redis together:
-- a request whose put finds fewer than IN_FLIGHT pipelines in flight sends
-- its own at once; those that come while all are in flight wait (a
-- semaphore each), and when a pipeline's replies are read the first of
-- them sends all that waited, as one pipeline of PUT scripts: one round
-- trip for many requests, and never a wait for a batch to fill.  Each request still gets its own script's
-- reply: its 200 follows its own event's append.  A batch that fails
-- (the connection died part way) fails each of its requests (503: the
-- platform delivers again, and the script dedupes what was stored).
local ngx = rawget(_G, "ngx")
local unpack = table.unpack or unpack -- luacheck: ignore
local semaphore = ngx and ngx.get_phase and (function()
  local ok, sem = pcall(require, "ngx.semaphore")
  return ok and sem or nil
end)()
-- the phases where a request may wait on a semaphore
local YIELDS = { rewrite = true, access = true, content = true, timer = true }
local BATCH = 200 -- puts a pipeline at most
-- pipelines in flight at once in a worker (each on its own pooled
-- connection): a request that finds fewer sends at once, with whatever
-- waits; past it, requests queue for the next pipeline.  One measured
-- best (bench/inbox.lua's load, 2 cores: 1, 4 and 16 side by side in one
-- run, 4 and 16 slower by 5-35%): the waiting requests make bigger batches
M.IN_FLIGHT = 1

-- the batch's round trip: true | nil, err (each item gets v or err).
-- Items whose EVALSHA found the script gone go again once, together, as
-- a pipeline of their own (with its own WAIT): one EVAL and WAIT each, one
-- after the other, made the request sending the batch wait wait.timeout
-- once per item when a replica was down (`again`: that second round)
local function send(self, batch, again)
  local sha = self.sha
  if not sha then
    local loaded, err = self.client:call("SCRIPT", "LOAD", PUT)
    if not loaded then return nil, err end
    sha, self.sha = loaded, loaded
  end
  local cmds = {}
  for i, item in ipairs(batch) do cmds[i] = { "EVALSHA", sha, unpack(item.args) } end
  local w = self.wait
  -- with wait: one WAIT after the batch, on its connection, counts the
  -- replicas that have every entry of it (a redelivery's too)
  if w then cmds[#cmds + 1] = { "WAIT", w.replicas, w.ms } end
  local replies, err = self.client:pipeline(cmds, w and self.client.timeout + w.ms / 1000 or nil)
  if not replies then return nil, err end
  local short
  if w and (type(replies[#cmds]) ~= "number" or replies[#cmds] < w.replicas) then
    short = self.client:unreplicated("PUT", w, replies[#cmds])
  end
  local lost = {}
  for i, item in ipairs(batch) do
    local v = replies[i]
    if getmetatable(v) ~= redis.ReplyError then
      if short then item.err = short else item.v = v end
    elseif not again and (v.code == "NOSCRIPT" or v.code == "READONLY" or v.code == "MASTERDOWN") then
      -- the server lost the script (a restart, SCRIPT FLUSH), or is a
      -- replica now (an old master demoted, on a pooled connection) and
      -- refused this one while another's script only read (a redelivery
      -- found stored, without wait): nothing of it ran, it goes again
      -- (behind Sentinel, refused as a whole, to the new master)
      lost[#lost + 1] = item
      if v.code == "NOSCRIPT" and self.sha == sha then self.sha = nil end
    else
      item.err = errors.new("redis", "redis " .. self.client.where .. ": " .. v.text,
                            { code = v.code, retryable = false })
    end
  end
  if #lost > 0 then
    -- (with a WAIT of their own: the batch's counted nothing of theirs)
    local ok, lerr = send(self, lost, true)
    if not ok then
      for _, item in ipairs(lost) do item.err = lerr end
    end
  end
  return true
end

-- The slots (IN_FLIGHT of them) are held by puts: self.slots[item] = when
-- it got one.  A pipeline ended: its slot goes to the first queued put not
-- already handed one (it sends all that queued), or is freed.  A slot held
-- longer than a pipeline can last is taken back (sweep): its request was
-- ended under it (lua_check_client_abort, a killed light thread), and
-- without that every later put of this worker would wait for it in vain.
local function handoff(self, from)
  if not self.slots[from] then return end -- taken back meanwhile (sweep)
  self.slots[from] = nil
  for _, item in ipairs(self.queue) do
    if not item.lead then
      item.lead = true
      self.slots[item] = ngx.now()
      item.sema:post(1)
      return
    end
  end
  self.flying = self.flying - 1
end

local function sweep(self, older)
  local t = ngx.now()
  for holder, since in pairs(self.slots) do
    if t - since > older then
      self.slots[holder] = nil
      self.flying = self.flying - 1
    end
  end
end

-- sends the queued puts (at most BATCH), resolves each, hands on the slot
-- of `holder` (the put that sends them)
local function flush(self, holder)
  local q = self.queue
  local batch = q
  if #q > BATCH then
    batch = { unpack(q, 1, BATCH) }
    self.queue = { unpack(q, BATCH + 1) }
  else
    self.queue = {}
  end
  local ran, ok, err = pcall(send, self, batch)
  if not ran then ok, err = nil, errors.new("redis", "inbox: storing raised: " .. tostring(ok)) end
  for _, item in ipairs(batch) do
    if not ok then item.v, item.err = nil, err end
    item.done = true
    if item.sema then item.sema:post(1) end
  end
  handoff(self, holder)
end

-- store(args) -> the PUT script's reply | nil, err: alone (outside
-- nginx), or in this worker's group commit
function M:store(args)
  if not semaphore or not YIELDS[ngx.get_phase()] then
    -- (with wait: the 200 goes once `replicas` replicas have the entry,
    -- a redelivery's too: docs/redis.md)
    if self.wait then return self.client:eval_wait(self.wait, PUT, unpack(args)) end
    return self.client:eval(PUT, unpack(args))
  end
  local item = { args = args }
  if not self.queue then self.queue, self.slots, self.flying = {}, {}, 0 end
  self.queue[#self.queue + 1] = item
  if self.flying < M.IN_FLIGHT then
    self.flying = self.flying + 1
    self.slots[item] = ngx.now()
    flush(self, item) -- this put, and any waiting
    return item.v, item.err
  end
  item.sema = semaphore.new()
  -- at most the pipelines in flight, then this one's: each within the client's timeout
  local wait = 2 * (self.client.timeout + (self.wait and self.wait.ms / 1000 or 0)) + 1
  local deadline = ngx.now() + wait
  while not item.done do
    local posted = item.sema:wait(math.max(0.001, deadline - ngx.now()))
    if item.lead and not item.done then
      -- handed a slot: send what waits (this put, unless another
      -- pipeline took it meanwhile: then wait for that one's reply)
      item.lead = false
      if #self.queue > 0 then flush(self, item) else handoff(self, item) end
    elseif not posted and not item.done then
      local q = self.queue
      for i = 1, #q do
        if q[i] == item then
          table.remove(q, i)
          break
        end
      end
      -- still queued: never sent; or sent and not yet answered: the
      -- platform delivers again either way, and the script dedupes
      sweep(self, wait)
      return nil, errors.new("timeout", "inbox: not stored within " .. wait .. " s", { retryable = true })
    end
  end
  -- sent by another pipeline after this one was handed a slot: pass it on
  if item.lead then
    item.lead = false
    handoff(self, item)
  end
  return item.v, item.err
end

--- put(id, raw, at[, form]) -> true (stored now) | false (stored before: a redelivery) | nil, err
-- form: nil, or { rule = name, verified = false } (kinot.callback.stores)
function M:put(id, raw, at, form)
  local rule = form and form.rule or ""
  local verified = form and form.verified == false and "0" or ""
  -- (with wait, ARGV[8] "1": a delivery found stored writes its mark again, see PUT)
  local v, err = self:store { 2, self.prefix .. id, self.stream,
                              self.ttl, self.maxlen, id, raw, string.format("%.3f", at), rule, verified,
                              self.wait and "1" or "" }
  if v == nil then return nil, err end
  return v == 1
end

-- The store contract (kinot.callback.stores): claiming is storing.  "new":
-- stored now, "done": stored before; the workers run it either way, and
-- the 200 goes once it is stored.  A lost answer is safe: the script
-- dedupes as it appends, and a stored event is one a worker will run.
local now = ngx and ngx.now or os.time

function M:claim(id, raw, form)
  local stored, err = self:put(id, raw, now(), form)
  if stored == nil then return nil, err end
  return stored and "new" or "done", true
end

function M.settle() return true end

return M
