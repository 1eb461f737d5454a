-- The twin's store in this machine's memory, over one of two key-value
-- backends with the same few operations: a plain Lua table (a script, one
-- process) or a lua_shared_dict (one nginx host, every worker).  The rule
-- (kinot.fleet.rule) decides; this file keeps what it decided: the record,
-- its flags (a text "|all|lock|occupied|...|" the filtered lists match
-- without decoding), the counters the summary reads, and the change log (a
-- ring of the last `changes_max` events, ids 1, 2, 3 ...).
--
-- The shared dict's workers run at once: an update that writes holds a
-- per-device lock (dict:safe_add of "l:SN", 2 s expiry should a worker die
-- holding it) while it reads, decides and writes; one that writes nothing
-- is decided on one read, with no lock (locked, below); counters move by
-- dict:incr, atomic.  Inside one worker nothing here yields between the
-- read and the write but the lock's wait.
local rule = require "kinot.fleet.rule"
local json = require "kinot.json"
local errors = require "kinot.errors"

local pairs, tostring, tonumber, concat, sort, find, sub = pairs, tostring, tonumber, table.concat, table.sort,
  string.find, string.sub
local format = string.format -- a key of a serial: "%d" (LuaJIT writes 2^53 - 1 with 14 digits)

-- the keys of a serial, "d:SN" and "l:SN": an update asks for them five
-- times (read, lock, owns, put, unlock), made once; the lock's only when
-- asked (an update that writes nothing takes no lock: a resync's every one)
local key_sn, key_text, key_d, key_l_sn, key_l
local function keys(sn)
  if sn ~= key_sn then
    key_text = format("%d", sn)
    key_sn, key_d = sn, "d:" .. key_text
  end
  return key_d
end
local function lock_key(sn)
  if sn ~= key_l_sn then
    keys(sn)
    key_l_sn, key_l = sn, "l:" .. key_text
  end
  return key_l
end

local M = {}

-- the longest an id of the change log not ready yet (its writer between
-- its `incr x` and its log_ready) holds the shared dict's feed back, in
-- seconds: a writer killed there, or the dict full after its incr, leaves
-- it so for ever, and the feed then goes on past it
M.GAP_WAIT = 3

-- "|name|name|...|t=T|" of a flag set (in no order: the lists look names
-- up) and the record's updated_at in seconds, T: the sweep reads it there
-- without decoding the record
local function flags_text(flags, t)
  local names = {}
  for name in pairs(flags) do names[#names + 1] = name end
  return "|" .. concat(names, "|") .. "|t=" .. tostring(t) .. "|"
end

-- ------------------------------------------------------------ the table backend

local Table = {}
Table.__index = Table

--- table_backend{changes_max} -> a backend over plain Lua tables
function M.table_backend(changes_max)
  return setmetatable({ recs = {}, flags = {}, counters = {}, sns = {}, n = 0, log = {}, seq = 0,
                        max = changes_max, meta = {} }, Table)
end
function Table:get(sn) return self.recs[sn] end
-- read(sn) -> the device as one value (its snapshot: equal snapshots hold
-- the same device) | nil; rec_of(snapshot) -> its record.  Here the
-- record itself (put replaces a record, never changes one)
Table.read = Table.get
function Table.rec_of(_, rec) return rec end
function Table:put(sn, rec, flags)
  self.recs[sn] = rec
  self.flags[sn] = flags
  return true
end
function Table:flags_of(sn) return self.flags[sn] end
function Table:incr(name, n)
  self.counters[name] = (self.counters[name] or 0) + n
  return true
end
function Table:counter(name) return self.counters[name] or 0 end
function Table:made(name) return self:incr(name, 0) end
function Table.lock() return true end
function Table.owns() return true end
function Table.unlock() end
function Table:add_sn(sn)
  self.n = self.n + 1
  self.sns[self.n] = sn
  return true
end
function Table:count() return self.n end
function Table:sn_at(i) return self.sns[i] end
function Table:log_event(ev)
  self.seq = self.seq + 1
  ev.id = self.seq
  local kept = {}
  for k, v in pairs(ev) do kept[k] = v end
  self.log[self.seq % self.max] = kept
  return true
end
function Table.log_ready() return true end
-- (one process: an id is written whole before anyone reads; never "not ready")
function Table:last_id() return self.seq end
function Table:event_at(id)
  local ev = self.log[id % self.max]
  if ev and ev.id == id then
    local copy = {}
    for k, v in pairs(ev) do copy[k] = v end
    return copy
  end
end
function Table:set_meta(k, v) self.meta[k] = v return true end
function Table:get_meta(k) return self.meta[k] end

-- ------------------------------------------------------------ the shared dict backend

local Shared = {}
Shared.__index = Shared

local function full(dict_name, what)
  return nil, errors.new("internal", "kinot.fleet: the lua_shared_dict " .. dict_name .. " is full (" .. what ..
    "): give it more memory (docs/fleet.md says how much a device takes)")
end

-- the T of a flags text's "|t=T|" (string.find, plain: LuaJIT compiles it;
-- a match with a capture it does not, and ran the sweep's loop interpreted)
local function t_in(text)
  local at = find(text, "|t=", 1, true)
  if not at then return nil end
  local bar = find(text, "|", at + 3, true)
  return bar and tonumber(sub(text, at + 3, bar - 1))
end

--- shared_backend(dict_name, changes_max) -> a backend over ngx.shared[dict_name]
function M.shared_backend(dict_name, changes_max)
  local ngx = rawget(_G, "ngx")
  local dict = ngx and ngx.shared and ngx.shared[dict_name]
  if not dict then
    errors.misuse("kinot.fleet: store = \"shared\" needs nginx's lua_shared_dict " .. tostring(dict_name) ..
      " (lua_shared_dict " .. tostring(dict_name) .. " 64m; in the http block)")
  end
  return setmetatable({ dict = dict, name = dict_name, max = changes_max, ngx = ngx, known = {},
                        missing = {}, n_missing = 0 }, Shared)
end
-- a device is one key, "d:SN" = its flags text, a newline, its record's
-- JSON (which holds no raw newline): one safe_set writes both or neither
-- get(sn) -> the record, and its key's text (put's `old`: read under the device's lock)
function Shared:get(sn)
  local text = self:read(sn)
  if not text then return nil end
  return self:rec_of(text), text
end
-- read(sn) -> the key's text (one dict:get: flags and record at one
-- instant) | nil; rec_of(text) -> its record
function Shared:read(sn) return self.dict:get(keys(sn)) end
function Shared.rec_of(_, text) return json.decode(sub(text, find(text, "\n", 1, true) + 1)) end
-- put(sn, rec, flags, old): old, the key's text as get gave it under this lock
function Shared:put(sn, rec, flags, old)
  local key = keys(sn)
  local ok, err = self.dict:safe_set(key, flags .. "\n" .. json.encode(rec))
  if not ok then
    -- nginx drops the old value before it finds no room for a new one of
    -- another size: put the old one back (it fits where it was)
    if old then self.dict:safe_set(key, old) end
    return full(self.name, err)
  end
  return true
end
function Shared:flags_of(sn)
  local text = self.dict:get(keys(sn))
  if not text then return nil end
  local nl = find(text, "\n", 1, true) -- the flags end at the first newline (a match of "^(.*)\n" went to the end and back)
  return sub(text, 1, nl - 1)
end
-- dict:incr(key, n, 0) and dict:add make room by evicting the least recently
-- used keys (records, counters): the counter is made by safe_add, never so
local function incr(self, key, n)
  local dict = self.dict
  local v, err = dict:incr(key, n)
  if not v and err == "not found" then
    local ok, aerr = dict:safe_add(key, 0)
    if not ok and aerr ~= "exists" then return full(self.name, aerr) end
    v, err = dict:incr(key, n)
  end
  if not v then return full(self.name, err) end
  return v
end
function Shared:incr(name, n)
  local v, err = incr(self, "c:" .. name, n)
  if not v then return nil, err end
  return true
end
-- made(name) -> the counter exists (commit's first step: a counter, once
-- made, is never evicted, as every write here is a safe_ one that evicts
-- nothing, so this worker remembers it and asks the dict no more;
-- incr still makes one that went, should someone flush the dict)
function Shared:made(name)
  local known = self.known
  if known[name] then return true end
  local ok, err = self:incr(name, 0)
  if not ok then return nil, err end
  known[name] = true
  return true
end
function Shared:counter(name) return self.dict:get("c:" .. name) or 0 end
-- the lock's value: this holder's own, so that a holder that outlived the
-- 2 s expiry (a stalled worker) neither writes nor frees another's lock
-- before_wait(a1, a2) (or nil), called once before it first waits: a
-- batch's counters, made before a wait that another worker's lock may
-- stretch to 5 s (a worker killed meanwhile would lose them for good)
local lock_seq = 0
function Shared:lock(sn, before_wait, a1, a2)
  local key = lock_key(sn)
  local dict, sleep, now = self.dict, self.ngx.sleep, self.ngx.now
  -- (a wait under 1 ms is ngx.sleep(0): nginx rounds to whole ms, and
  -- Debian's, without the delayed-events patch, logs a warning for each)
  local deadline, wait = now() + 5, 0.001
  lock_seq = lock_seq + 1
  local token = self.ngx.worker.pid() .. ":" .. lock_seq
  while true do
    local ok, err = dict:safe_add(key, token, 2)
    if ok then return token end
    if err ~= "exists" then return full(self.name, err) end
    if now() > deadline then
      return nil, errors.new("timeout", "kinot.fleet: device " .. tostring(sn) .. " stayed locked for 5 s")
    end
    if before_wait then
      before_wait(a1, a2)
      before_wait = nil
    end
    sleep(wait)
    if wait < 0.01 then wait = wait * 2 end
  end
end
function Shared:owns(sn, token)
  local key = lock_key(sn)
  return self.dict:get(key) == token
end
-- owned: the caller knows it holds the lock (owns said so, nothing yielded since)
function Shared:unlock(sn, token, owned)
  local key = lock_key(sn)
  if owned or self.dict:get(key) == token then self.dict:delete(key) end
end
function Shared:add_sn(sn)
  local i, err = incr(self, "n", 1)
  if not i then return nil, err end
  local ok
  ok, err = self.dict:safe_set("i:" .. i, sn)
  if not ok then return full(self.name, err) end
  return true
end
function Shared:count() return self.dict:get("n") or 0 end
function Shared:sn_at(i) return self.dict:get("i:" .. i) end
-- log_event(ev) writes the change's entry not yet ready (ready = 0, and w:
-- when, this worker's ngx.now()), log_ready(ev) makes it so: the same text
-- but a 1, as long, which nginx writes in place (no room needed).  An
-- update's entries are written before its record: a dict with no room for
-- them fails the update before anything of it is written, never after its
-- record, which lost its changes from the feed for good (tried again: a
-- duplicate)
function Shared:log_event(ev)
  local id, err = incr(self, "x", 1)
  if not id then return nil, err end
  ev.id, ev.ready, ev.w = id, 0, self.ngx.now()
  local ok
  ok, err = self.dict:safe_set("x:" .. (id % self.max), json.encode(ev))
  ev.ready = nil
  if not ok then
    ev.w = nil
    return full(self.name, err)
  end
  return true
end
function Shared:log_ready(ev)
  ev.ready = 1
  local ok, err = self.dict:safe_set("x:" .. (ev.id % self.max), json.encode(ev))
  ev.ready, ev.w = nil, nil
  if not ok then return full(self.name, err) end
  return true
end
function Shared:last_id() return self.dict:get("x") or 0 end

-- when this worker first saw the id missing (taken by an incr, its entry
-- not written yet, or never: its writer killed, the dict full after the
-- incr), kept for at most MISSING_KEPT ids: past that, those seen longer
-- than twice the bound ago go (asked again, they wait the bound again)
local MISSING_KEPT = 1000
local function missing_since(self, id, now)
  local missing = self.missing
  local t = missing[id]
  if t then return t end
  if self.n_missing >= MISSING_KEPT then
    local n = 0
    for old, seen in pairs(missing) do
      if now - seen > 2 * M.GAP_WAIT then missing[old] = nil else n = n + 1 end
    end
    if n >= MISSING_KEPT then missing, n = {}, 0 self.missing = missing end
    self.n_missing = n
  end
  missing[id], self.n_missing = now, self.n_missing + 1
  return now
end
local function found(self, id)
  if self.missing[id] then
    self.missing[id], self.n_missing = nil, self.n_missing - 1
  end
end

-- event_at(id) -> the event | nil (none to give: overwritten, or given up
-- on) | nil, true (not ready yet: the feed stops before it).  An id not
-- ready is waited for GAP_WAIT seconds at most: since its entry's w, or,
-- missing, since the next id's entry's w or this worker's first sight of
-- it missing, whichever came first
function Shared:event_at(id)
  local text = self.dict:get("x:" .. (id % self.max))
  local ev = text and json.decode(text)
  local at = ev and ev.id
  if at and at > id then return nil end -- the ring went round: gone for good
  if at == id then
    if self.n_missing > 0 then found(self, id) end
    if ev.ready ~= 0 then
      ev.ready, ev.w = nil, nil
      return ev
    end
  end
  local now = self.ngx.now()
  local since
  if at == id then
    since = tonumber(ev.w) or 0
  else
    since = missing_since(self, id, now)
    -- the next id was taken after this one: its entry's w bounds this
    -- one's wait in every worker alike (a later update that had room, when
    -- the dict was full once this id was taken)
    local text2 = self.dict:get("x:" .. ((id + 1) % self.max))
    local next_ev = text2 and json.decode(text2)
    local w = next_ev and next_ev.id == id + 1 and tonumber(next_ev.w)
    if w and w < since then since = w end
  end
  if now - since > M.GAP_WAIT then return nil end
  return nil, true
end
function Shared:set_meta(k, v)
  local ok, err = self.dict:safe_set("m:" .. k, v)
  if not ok then return full(self.name, err) end
  return true
end
function Shared:get_meta(k) return self.dict:get("m:" .. k) end

-- ------------------------------------------------------------ the store

local Store = {}
Store.__index = Store

--- new(backend) -> store (the interface kinot.fleet calls; redis_store.lua has the same)
function M.new(backend)
  return setmetatable({ b = backend, sorted = {}, known = 0, listed = {}, t_of = {}, t_epoch = 0 }, Store)
end

-- keep what the rule decided: record, flags, counters, events
-- in an order that a full shared dict cannot leave half done: the counters
-- made first (at 0), the changes' entries written not yet ready, a new
-- serial listed (sorted() drops a repeat), then the record (one key: the
-- commit), then the counters moved (existing numbers: nothing to allocate)
-- and the entries made ready (in place).  pending (a batch's, or nil):
-- the counters' moves are added there, made by the batch's end (flush)
local function commit(self, sn, held, held_text, rec, delta, events, flags, pending)
  local b = self.b
  -- a gone device a scan brings back with an older updated_at (the one way
  -- a record's t goes down) is counted: each worker's sweep cache (sweep,
  -- below) holds t as a floor, and starts again when this count moves
  if rec and held and rec.t < held.t then delta.t_back = (delta.t_back or 0) + 1 end
  for name in pairs(delta) do
    local ok, err = b:made(name)
    if not ok then return nil, err end
  end
  for i = 1, #events do
    local ok, err = b:log_event(events[i])
    if not ok then return nil, err end
  end
  if rec then
    if not held then
      local ok, err = b:add_sn(sn)
      if not ok then return nil, err end
    end
    local ok, err = b:put(sn, rec, flags_text(flags, rec.t), held_text)
    if not ok then return nil, err end
  end
  if pending then
    for name, n in pairs(delta) do pending[name] = (pending[name] or 0) + n end
  else
    for name, n in pairs(delta) do
      local ok, err = b:incr(name, n)
      if not ok then return nil, err end
    end
  end
  for i = 1, #events do
    local ok, err = b:log_ready(events[i])
    if not ok then return nil, err end
  end
  return true
end

-- fn(held, a, b) -> verdict, rec, delta, events, flags (a function and
-- its arguments, not a closure made for each device: LuaJIT 2.1 compiles
-- no loop that makes one), decided on a read of the device first, without
-- its lock: a device is one key (record and flags), so that read is the
-- device at one instant.  A verdict that writes no record (older,
-- duplicate: every device of a resync that finds nothing new; a gone or
-- stale mark not due) is what it would have been had the update come at
-- that instant, and it changes nothing another worker could overwrite or
-- miss: returned with no lock (its counters move by incr, atomic).  One that
-- writes takes the lock and reads again: the same text, the same decision
-- (the rule depends on nothing else); another's write meanwhile, or a
-- device first seen, decided again under the lock.  Inside one worker
-- nothing yields from a read to its decision.
local flush
local function locked(self, sn, fn, a, b_arg, pending)
  local b = self.b
  local snap = b:read(sn)
  local held, verdict, rec, delta, events, flags
  if snap then
    held = b:rec_of(snap)
    verdict, rec, delta, events, flags = fn(held, a, b_arg)
    if not rec then
      if delta then
        local ok, err = commit(self, sn, held, snap, nil, delta, events, flags, pending)
        if not ok then return nil, err end
      end
      self.t_of[sn] = held.t -- what this worker now knows of the device's updated_at (the sweep's floor)
      return verdict, events or {}
    end
  end
  local token, err = b:lock(sn, pending and flush, self, pending)
  if not token then return nil, err end
  local now = b:read(sn)
  if not snap or now ~= snap then
    snap = now
    held = now and b:rec_of(now)
    verdict, rec, delta, events, flags = fn(held, a, b_arg)
  end
  local ok = true
  -- held past the lock's expiry (a stalled worker): another may have written
  -- since `held` was read; nothing here yields from this check to the writes
  if delta and not b:owns(sn, token) then
    return nil, errors.new("timeout", "kinot.fleet: device " .. tostring(sn) .. "'s lock expired (2 s) before its " ..
      "update was written: not applied, try again")
  end
  if delta then
    ok, err = commit(self, sn, held, snap, rec, delta, events, flags, pending)
  end
  -- what this worker now knows of the device's updated_at (the sweep's floor)
  if ok and rec then self.t_of[sn] = rec.t elseif held then self.t_of[sn] = held.t end
  b:unlock(sn, token, delta ~= nil) -- (delta: owns said so, and nothing yielded since)
  if not ok then return nil, err end
  return verdict, events or {}
end

-- the counters a batch moved, made: one incr a counter, not one a device
-- (a page of 100 first seen moved ~10 counters each: half the dict's work)
-- (made: taken out of pending)
function flush(self, pending)
  for name, n in pairs(pending) do
    pending[name] = nil
    if n ~= 0 then
      local ok, err = self.b:incr(name, n)
      if not ok then return nil, err end
    end
  end
  return true
end

--- apply(recs, cfg) -> { {verdict, events}, ... } | nil, err.  The
-- counters move once for the batch, after its records (also when a device
-- fails it: those written before are counted): a reader meanwhile may see
-- a record whose counts are still to come, never the other way
local function each(self, recs, cfg, out, pending)
  local decide = rule.decide
  for i = 1, #recs do
    local new = recs[i]
    local verdict, events = locked(self, new.sn, decide, new, cfg, pending)
    if not verdict then return nil, events end
    out[i] = { verdict = verdict, events = events }
  end
  return true
end
function Store:apply(recs, cfg)
  local out, pending = {}, {}
  -- a device that raises (a number JSON cannot carry: the platform's
  -- 1e999) after others were written: theirs are counted, then it raises
  local ran, ok, err = pcall(each, self, recs, cfg, out, pending)
  local made, made_err = flush(self, pending)
  if not ran then error(ok, 0) end
  if not ok then return nil, err end
  if not made then return nil, made_err end
  return out
end

-- pause (or nil): as the sweep's (below), called every 20 devices: marking
-- 20,000 devices stale at once (a twin back after a day down) blocked the
-- worker 1.2 s without it
local function marked(held, cfg, how)
  if not held then return true end
  local rec, delta, events, flags = rule[how](held, cfg)
  if not rec then return true end
  return true, rec, delta, events, flags
end
local function mark(self, sns, cfg, how, pause)
  local all = {}
  for i = 1, #sns do
    if pause and i % 20 == 0 then pause() end
    local verdict, events = locked(self, sns[i], marked, cfg, how)
    if not verdict then return nil, events end
    for k = 1, #events do all[#all + 1] = events[k] end
  end
  return all
end

-- every serial, in serial order (a cache per process, grown from the
-- backend's list of serials in the order first seen).  A serial listed
-- twice (an update the dict had no room for, tried again) is kept once; a
-- hole (another worker writing it, or no room to) is read again next time.
local function sorted(self)
  local b, list, listed = self.b, self.sorted, self.listed
  local n = b:count()
  if n > self.known then
    local hole
    for i = self.known + 1, n do
      local sn = b:sn_at(i)
      if sn == nil then hole = hole or i
      elseif not listed[sn] then
        listed[sn] = true
        list[#list + 1] = sn
      end
    end
    sort(list)
    self.known = (hole or n + 1) - 1
  end
  return list
end

--- sweep(cfg) -> events | nil, err: devices turned stale since the last
-- sweep, oldest updated_at first (Redis's order); a pass over every device:
-- the local stores keep no index by time
-- a pause for the other requests of this nginx worker, where one can be
-- taken (a timer, a request), else nil: pause() sleeps 1 ms once the pass
-- has run M.PAUSE_AFTER seconds since the last, so that no request waits
-- behind it longer than that (a pause every 2,000 devices blocked the worker
-- 13 ms a time, more on a loaded machine; and Debian's nginx logs a warning
-- for each ngx.sleep(0), which it runs without the delayed-events patch)
M.PAUSE_AFTER = 0.002
local PAUSE_PHASES = { timer = true, content = true, rewrite = true, access = true }
local function pause_of()
  local ngx = rawget(_G, "ngx")
  if ngx and ngx.sleep and ngx.get_phase and PAUSE_PHASES[ngx.get_phase()] then
    local update, now, sleep = ngx.update_time, ngx.now, ngx.sleep
    update()
    local last = now()
    return function()
      update()
      if now() - last >= M.PAUSE_AFTER then
        sleep(0.001)
        update()
        last = now()
      end
    end
  end
end

--- gone(sns, cfg) -> events | nil, err
function Store:gone(sns, cfg) return mark(self, sns, cfg, "gone", pause_of()) end

function Store:sweep(cfg)
  local b, due, t = self.b, {}, {}
  if not cfg.stale_after then return {} end
  local list = sorted(self)
  local pause = pause_of()
  -- t_of[sn]: an updated_at this worker has read or written for the device.
  -- A record's t never goes down (an older update is not applied) but when a
  -- scan brings a gone device back (counted as t_back): while that count
  -- stands, t_of is a floor of each t, and a device whose floor is younger
  -- than stale_after is not due, its text not read.  The count read here
  -- and a device brought back meanwhile: the next sweep finds it.
  local epoch = b:counter("t_back")
  if epoch ~= self.t_epoch then self.t_of, self.t_epoch = {}, epoch end
  local t_of = self.t_of
  for i = 1, #list do
    local sn = list[i]
    local floor = t_of[sn]
    if not (floor and cfg.now - floor < cfg.stale_after) then
      -- the flags text says stale, gone and updated_at: no record decoded but the due ones
      -- (a text written before it held t= is decoded)
      local text = b:flags_of(sn)
      local stale = text and find(text, "|stale|", 1, true)
      local at = text and not stale and t_in(text)
      if stale then -- luacheck: ignore 542
        -- already stale: not due (nor a floor worth keeping: an old t); its t
        -- not read (a sync of silent devices left every one so, each read each sweep)
      elseif at then
        t_of[sn] = at
        if not find(text, "|gone|", 1, true) and cfg.now - at >= cfg.stale_after then
          due[#due + 1] = sn
          t[sn] = at
        end
      else
        local rec = b:get(sn)
        if rec then t_of[sn] = rec.t end
        if rec and not rec.stale and not rec.gone and cfg.now - rec.t >= cfg.stale_after then
          due[#due + 1] = sn
          t[sn] = rec.t
        end
      end
    end
    -- 100,000 devices take a second: the worker answers others meanwhile
    -- (mark reads each due record again under its lock)
    if pause and i % 100 == 0 then pause() end
  end
  -- Redis's order: by time, a tie by the serial's text (written once a
  -- device: two tostring a comparison took 150 ms for 20,000 due at one
  -- time, and LuaJIT's tostring writes a serial past 10^14 as 9.0071992547e+15)
  local text = {}
  for i = 1, #due do text[due[i]] = format("%d", due[i]) end
  sort(due, function(x, y)
    if t[x] ~= t[y] then return t[x] < t[y] end
    return text[x] < text[y]
  end)
  return mark(self, due, cfg, "sweep", pause)
end

function Store:get(sn) return self.b:get(sn) end

--- counters(names) -> { name = n }
function Store:counters(names)
  local out = {}
  for i = 1, #names do out[names[i]] = self.b:counter(names[i]) end
  return out
end

-- does a flags text hold every flag of `want` and none of `without`?
local function matches(text, want, without)
  for i = 1, #want do
    if not find(text, "|" .. want[i] .. "|", 1, true) then return false end
  end
  for i = 1, #without do
    if find(text, "|" .. without[i] .. "|", 1, true) then return false end
  end
  return true
end

--- list(want, without, offset, limit) -> records, total: in serial order
function Store:list(want, without, offset, limit)
  local b, out, total = self.b, {}, 0
  -- a name holding the text's separator is no flag (a group or fault
  -- filter "A/1|occupied": no group holds |), and would match two adjacent
  -- ones: it matches nothing, as Redis's index by that name holds nothing
  for i = 1, #want do
    if find(want[i], "|", 1, true) then return out, 0 end
  end
  local list = sorted(self)
  for i = 1, #list do
    local text = b:flags_of(list[i])
    if text and matches(text, want, without) then
      total = total + 1
      if total > offset and #out < limit then out[#out + 1] = b:get(list[i]) end
    end
  end
  return out, total
end

--- sns(kind, except) -> every serial of that kind held, gone ones too, but
-- those in the set `except` (a sync's listed ones: a pass over the
-- devices reads only the flags of those it did not list)
function Store:sns(kind, except)
  local b, out, flag = self.b, {}, "|kind=" .. kind .. "|"
  local list = sorted(self)
  except = except or {}
  for i = 1, #list do
    local sn = list[i]
    if not except[sn] then
      local text = b:flags_of(sn)
      if text and find(text, flag, 1, true) then out[#out + 1] = sn end
    end
  end
  return out
end

--- changes(since, limit) -> events after the id `since` (oldest first), next cursor.
-- The walk stops before the first id not ready yet (the shared dict's: a
-- worker between its incr and its log_ready): a later id may be ready
-- already, and a cursor past the first would never give it.  The cursor
-- is the last id walked: returned, or gone (overwritten, given up on)
function Store:changes(since, limit)
  local b = self.b
  local last = b:last_id()
  since = tonumber(since) or 0
  local first = since + 1
  if first < last - b.max + 1 then first = last - b.max + 1 end -- the older ones are overwritten
  local out, walked = {}, since
  for id = first, last do
    if #out >= limit then break end
    local ev, later = b:event_at(id)
    if later then break end
    if ev then out[#out + 1] = ev end
    walked = id
  end
  return out, walked
end

function Store:set_meta(k, v) return self.b:set_meta(k, v) end
function Store:get_meta(k) return self.b:get_meta(k) end

return M
