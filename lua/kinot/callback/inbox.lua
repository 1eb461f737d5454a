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
-- the event the receiver verified, and says so when it was not; and
-- stale = "1" when the receiver flagged it (out_of_order = "flag"): the
-- handler is told, as without an inbox.  The append and the dedupe mark are one
-- script, so they happen together or not at all: a redelivery of a stored
-- event is answered 200 without a second entry, on any host.
local redis = require "kinot.redis"
local errors = require "kinot.errors"
local validate = require "kinot.validate"
local store = require "kinot.callback.redis_store"

local M = {}
M.__index = M

M.STREAM = "kinot:callbacks"

-- One script stores a batch of deliveries (inside nginx, a worker's group
-- commit; outside, one): one call, so Redis's cost of a script call is paid
-- once a batch, not once a delivery.
-- KEYS: the stream, then each delivery's dedupe key; ARGV: ttl, maxlen
-- ("" for none), waited, then for each delivery (KEYS[i + 1]) six: id,
-- body, at, rule ("" for the default), verified ("0" when not, else ""),
-- stale ("1" when flagged, else "").
-- Returns each delivery's answer, in order: 1 stored now, 0 stored before,
-- or the error its append met (READONLY on a replica, OOM ...): nothing of
-- that delivery was written, and the others still get theirs (a
-- redelivery found stored, which only reads, is answered on a replica).
-- Every delivery refused READONLY: the call itself is that error, so that
-- the client sees a call a replica refused (behind Sentinel: followed to
-- the new master, kinot.redis).
-- A mark is set after its append: a script that fails half way keeps
-- what it wrote, and a mark without its entry would make the redelivery
-- of an event never stored look like a duplicate.
-- ARGV[3]: "1" when the caller WAITs: a delivery found stored rewrites
-- its mark as it is (same value, same expiry), so that this connection's
-- last write comes after the entry and WAIT counts the replicas that have
-- it.  Redis 7.2 and later move a connection's WAIT offset only on a
-- command that wrote (their call(): "right after its last command that
-- resulted in propagation"): without a write here, a redelivery on a
-- connection that last wrote before the entry was appended (another nginx
-- worker's, another pooled one) would have its WAIT answered at once,
-- though no replica had the entry (Redis 6.2 to 7.0 move it on every
-- command: sentinel_attack_spec's 503 holds on 7.0 either way).
-- (The XADD's arguments are one table, refilled for each delivery.)
local PUT = [[
local stream, ttl, maxlen, waited = KEYS[1], ARGV[1], ARGV[2], ARGV[3] == '1'
local a, base = { stream }, 1
if maxlen ~= '' then a[2] = 'MAXLEN'; a[3] = '~'; a[4] = maxlen; base = 4 end
a[base + 1] = '*'; a[base + 2] = 'id'; a[base + 4] = 'body'; a[base + 6] = 'at'
local out, refused = {}, 0
for i = 1, #KEYS - 1 do
  local key, j = KEYS[i + 1], 3 + (i - 1) * 6
  if redis.call('EXISTS', key) == 1 then
    if waited then redis.call('SET', key, redis.call('GET', key), 'KEEPTTL') end
    out[i] = 0
  else
    a[base + 3] = ARGV[j + 1]; a[base + 5] = ARGV[j + 2]; a[base + 7] = ARGV[j + 3]
    local n = base + 7
    if ARGV[j + 4] ~= '' then a[n + 1] = 'rule'; a[n + 2] = ARGV[j + 4]; n = n + 2 end
    if ARGV[j + 5] ~= '' then a[n + 1] = 'verified'; a[n + 2] = ARGV[j + 5]; n = n + 2 end
    if ARGV[j + 6] ~= '' then a[n + 1] = 'stale'; a[n + 2] = ARGV[j + 6]; n = n + 2 end
    local r = redis.pcall('XADD', unpack(a, 1, n))
    if type(r) == 'table' and r.err then
      out[i] = r
      if string.sub(r.err, 1, 8) == 'READONLY' then refused = refused + 1 end
    else
      redis.call('SET', key, 'done', 'EX', ttl)
      out[i] = 1
    end
  end
end
if refused == #KEYS - 1 then return out[1] end
return out]]

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
-- them sends all that waited, as one call of the PUT script: one round
-- trip and one script call for many requests, and never a wait for a
-- batch to fill.  Each request still gets its own answer from the script:
-- its 200 follows its own event's append.  A batch that fails
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
local SPARE = 256 -- semaphores of finished puts kept for the next
-- pipelines in flight at once in a worker (each on its own pooled
-- connection): a request that finds fewer sends at once, with whatever
-- waits; past it, requests queue for the next pipeline.  One measured
-- best (bench/inbox.lua's load, 2 cores: 1, 4 and 16 side by side in one
-- run, 4 and 16 slower by 5-35%): the waiting requests make bigger batches
M.IN_FLIGHT = 1

-- the PUT script's keys and arguments for these deliveries (a list of
-- puts: { key, id, raw, at, rule, verified, stale }), after `head` (the command
-- and the script's sha, or nothing)
local function script_args(self, batch, head)
  local n = #batch
  local args, k = head or {}, head and #head or 0
  args[k + 1], args[k + 2] = n + 1, self.stream
  k = k + 2
  for i = 1, n do args[k + i] = batch[i].key end
  k = k + n
  args[k + 1], args[k + 2], args[k + 3] = self.ttl, self.maxlen, self.wait and "1" or ""
  k = k + 3
  for i = 1, n do
    local item = batch[i]
    args[k + 1], args[k + 2], args[k + 3], args[k + 4], args[k + 5], args[k + 6] = item.id, item.raw, item.at,
      item.rule, item.verified, item.stale
    k = k + 6
  end
  return args, k
end

-- the error the script answered for one delivery (its append refused)
local function delivery_error(self, x)
  return errors.new("redis", "redis " .. self.client.where .. ": " .. x.text,
                    { code = x.code, retryable = redis.RETRYABLE_CODES[x.code] or false })
end

-- the script's reply for n deliveries: the list (1, 0 or a ReplyError
-- each) | nil, err
local function answers(self, v, n)
  if type(v) == "table" and getmetatable(v) == nil and #v == n then return v end
  return nil, errors.new("decode", "redis " .. self.client.where .. ": the inbox's script answered " ..
    (type(v) == "table" and (#v .. " answers for " .. n .. " deliveries") or type(v)), { retryable = true })
end

-- the batch's round trip: true | nil, err (each item gets v or err).
-- One EVALSHA of the script for the whole batch (then, with wait, one
-- WAIT on its connection).  A script the server lost (NOSCRIPT: a
-- restart, SCRIPT FLUSH) or a call refused whole (MASTERDOWN: a replica
-- cut from its master) goes again once, the script loaded anew; the
-- deliveries whose append a replica refused (READONLY: an old master
-- demoted, on a pooled connection; nothing of them was written) go again
-- once, together, as a batch of their own (with its own WAIT): behind
-- Sentinel, refused as a whole, to the new master (`again`: that second
-- round)
local function send(self, batch, again)
  local sha = self.sha
  if not sha then
    local loaded, err = self.client:call("SCRIPT", "LOAD", PUT)
    if not loaded then return nil, err end
    sha, self.sha = loaded, loaded
  end
  local cmds = { (script_args(self, batch, { "EVALSHA", sha })) }
  local w = self.wait
  -- with wait: one WAIT after the script, on its connection, counts the
  -- replicas that have every entry of it (a redelivery's too)
  if w then cmds[2] = { "WAIT", w.replicas, w.ms } end
  local replies, err = self.client:pipeline(cmds, w and self.client.timeout + w.ms / 1000 or nil)
  if not replies then return nil, err end
  local v = replies[1]
  if getmetatable(v) == redis.ReplyError then
    if not again and (v.code == "NOSCRIPT" or v.code == "READONLY" or v.code == "MASTERDOWN") then
      if v.code == "NOSCRIPT" and self.sha == sha then self.sha = nil end
      return send(self, batch, true)
    end
    -- the script failed part way (out of memory ...): what it stored
    -- stays, and the platform's next delivery finds it
    return nil, errors.new("redis", "redis " .. self.client.where .. ": " .. v.text, { code = v.code, retryable = false })
  end
  local list, lerr = answers(self, v, #batch)
  if not list then return nil, lerr end
  local short
  if w and (type(replies[2]) ~= "number" or replies[2] < w.replicas) then
    short = self.client:unreplicated("PUT", w, replies[2])
  end
  local lost = {}
  for i, item in ipairs(batch) do
    local x = list[i]
    if getmetatable(x) == redis.ReplyError then
      if not again and (x.code == "READONLY" or x.code == "MASTERDOWN") then
        lost[#lost + 1] = item
      else
        item.err = delivery_error(self, x)
      end
    elseif short then
      item.err = short
    else
      item.v = x
    end
  end
  if #lost > 0 then
    local ok, serr = send(self, lost, true)
    if not ok then
      for _, item in ipairs(lost) do item.err = serr end
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
  -- the slot first: the put it goes to wakes before this batch's (their
  -- semaphores' events run in the order posted), and sends what queued
  -- meanwhile while they answer, so Redis works as nginx does
  handoff(self, holder)
  for _, item in ipairs(batch) do
    if not ok then item.v, item.err = nil, err end
    item.done = true
    -- (not the holder's: it is not waiting, it is here)
    if item.sema and item ~= holder then item.sema:post(1) end
  end
end

-- store(item) -> the PUT script's answer for this put (1 | 0) | nil, err:
-- alone (outside nginx), or in this worker's group commit
function M:store(item)
  if not semaphore or not YIELDS[ngx.get_phase()] then
    -- (with wait: the 200 goes once `replicas` replicas have the entry,
    -- a redelivery's too: docs/redis.md)
    local args, n = script_args(self, { item })
    local v, err
    if self.wait then
      v, err = self.client:eval_wait(self.wait, PUT, unpack(args, 1, n))
    else
      v, err = self.client:eval(PUT, unpack(args, 1, n))
    end
    if v == nil then return nil, err end
    v, err = answers(self, v, 1)
    if not v then return nil, err end
    local x = v[1]
    if getmetatable(x) == redis.ReplyError then return nil, delivery_error(self, x) end
    return x
  end
  if not self.queue then self.queue, self.slots, self.flying = {}, {}, 0 end
  self.queue[#self.queue + 1] = item
  if self.flying < M.IN_FLIGHT then
    self.flying = self.flying + 1
    self.slots[item] = ngx.now()
    flush(self, item) -- this put, and any waiting
    return item.v, item.err
  end
  -- (a semaphore of an earlier put, when one is spare: see below)
  local spare = self.spare
  local n = spare and #spare or 0
  if n > 0 then
    item.sema = spare[n]
    spare[n] = nil
  else
    item.sema = semaphore.new()
  end
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
  -- Its semaphore serves a later put (making one is an FFI call, and a
  -- finalizer for the collector): only done, which no post follows (a
  -- put leaves the queue before its batch is sent, and only a queued one
  -- is handed a slot), and with nothing left in it: a put handed a slot
  -- and then sent by another pipeline was posted twice and waited once.
  -- A put that timed out keeps its own: its batch may still answer.
  local sema = item.sema
  item.sema = nil
  if sema:count() == 0 then
    spare = self.spare
    if not spare then
      spare = {}
      self.spare = spare
    end
    if #spare < SPARE then spare[#spare + 1] = sema end
  end
  return item.v, item.err
end

--- put(id, raw, at[, form]) -> true (stored now) | false (stored before: a redelivery) | nil, err
-- form: nil, or { rule = name, verified = false, stale = true } (kinot.callback.stores)
function M:put(id, raw, at, form)
  -- (with wait, the script's waited "1": a delivery found stored writes its mark again, see PUT)
  local v, err = self:store { key = self.prefix .. id, id = id, raw = raw, at = string.format("%.3f", at),
                              rule = form and form.rule or "", verified = form and form.verified == false and "0" or "",
                              stale = form and form.stale and "1" or "" }
  if v == nil then return nil, err end
  return v == 1
end

-- ------------------------------------------------------------ held events
-- The events this process stored, for its own workers (an nginx worker's
-- kinot.callback.worker loops): one read back here is run as it was
-- verified (event.as_rebuilt), not scanned and built a second time from
-- its body.  An entry read elsewhere (another nginx worker, `kinot
-- worker`, a claim after a restart) is rebuilt from its body, as always:
-- the same event either way.  Held by id with the body and the rule it
-- was read under (an entry of another receiver of the same body, under
-- another sign_rule, is not taken for it), at most M.HELD in each of two
-- generations: the older goes whole when the newer fills, so those never
-- read here (another process reads the stream) cost no more than that.
M.HELD = 1000
local held, older, n_held = {}, {}, 0

local function hold(id, raw, ev, rule)
  if n_held >= M.HELD then
    held, older, n_held = {}, held, 0
  end
  held[id] = { raw = raw, ev = ev, rule = rule }
  n_held = n_held + 1
end

--- take(id, raw, rule) -> the event this process stored under id, with
-- this body and read under this sign_rule (its name; nil: the default),
-- given once | nil
function M.take(id, raw, rule)
  local gen = held
  local h = gen[id]
  if not h then
    gen = older
    h = gen[id]
  end
  if not h or h.raw ~= raw or h.rule ~= rule then return nil end
  gen[id] = nil
  return h.ev
end

-- The store contract (kinot.callback.stores): claiming is storing.  "new":
-- stored now, "done": stored before; the workers run it either way, and
-- the 200 goes once it is stored.  A lost answer is safe: the script
-- dedupes as it appends, and a stored event is one a worker will run.
local now = ngx and ngx.now or os.time

function M:claim(id, raw, form, ev)
  local stored, err = self:put(id, raw, now(), form)
  if stored == nil then return nil, err end
  if stored and ev then hold(id, raw, ev, form and form.rule) end
  return stored and "new" or "done", true
end

function M.settle() return true end

return M
