-- The twin's store in Redis, for many hosts: every change is one script
-- (EVALSHA through kinot.redis) that writes the record, the indexes the
-- lists read, the summary's counters and the change stream, all at once:
-- no host ever sees half an update (the indexes and counters of a call's
-- devices go in one write each, at its end).  What it writes is decided by
-- the rule every store shares (kinot.fleet.rule's source, embedded whole):
-- for one device (a callback) in the script, against the record it reads;
-- for a batch (a scan's page) here, against the records an MGET read, the
-- script writing that plan only if none of them changed since (Store:apply).
--
-- Keys, under the prefix (default "kinot:fleet:"), all on one server
-- (the script names keys it computes: not for Redis Cluster):
--   d:SN      the record (JSON)
--   i:FLAG    a sorted set of the serials with that flag (score: the serial)
--   t         a sorted set of the live, not stale serials (score: updated_at
--             in seconds): the sweep finds who turned stale without a scan
--   c         a hash of counters (the summary's, verdicts', missed ...)
--   x         the stream of changes (XADD ... MAXLEN ~ changes_max), one
--             field "e": the event's JSON; its id is the event's id
--   m         a hash of facts about the twin (synced_at)
local rule = require "kinot.fleet.rule"
local json = require "kinot.json"
local redis = require "kinot.redis"

local type, tostring, tonumber, ipairs, pairs = type, tostring, tonumber, ipairs, pairs

local M = {}

local PRELUDE = [[
local R = (function()
]] .. rule.SOURCE .. [[
end)()
local P = ARGV[1]
local cfg = cjson.decode(ARGV[2])
local op = ARGV[3]
-- the indexes' and counters' writes of the whole call, made once at its
-- end (flush): a page of 100 devices moves each counter by one HINCRBY and
-- each index by one ZADD / ZREM, not one a device.  in_index[name][sn]:
-- the last word for sn (true: in, false: out); t_score[sn]: its score in
-- t, false: out.  Records and events are written as they come (a later
-- device of the call reads its record).
local counts, in_index, t_score = {}, {}, {}
-- after, before: rec's and held's flags as the rule found them
local function commit(sn, held, rec, delta, events, after, before)
  if rec then
    redis.call("SET", P .. "d:" .. sn, cjson.encode(rec))
    before = before or {}
    for name in pairs(before) do
      if not after[name] then
        in_index[name] = in_index[name] or {}
        in_index[name][sn] = false
      end
    end
    for name in pairs(after) do
      if not before[name] then
        in_index[name] = in_index[name] or {}
        in_index[name][sn] = true
      end
    end
    if rec.gone or rec.stale then t_score[sn] = false else t_score[sn] = rec.t end
  end
  for name, n in pairs(delta) do counts[name] = (counts[name] or 0) + n end
  for i = 1, #events do
    local ev = events[i]
    ev.id = redis.call("XADD", P .. "x", "MAXLEN", "~", cfg.changes_max, "*", "e", cjson.encode(ev))
  end
end
-- cmd key a1 a2 ... in calls of at most 1000 arguments (Lua's unpack
-- bound; pairs stay pairs), key nil: cmd a1 a2 ...
local function each_chunk(cmd, key, args)
  for first = 1, #args, 1000 do
    if key then
      redis.call(cmd, key, unpack(args, first, math.min(#args, first + 999)))
    else
      redis.call(cmd, unpack(args, first, math.min(#args, first + 999)))
    end
  end
end
-- a sorted set made as `marks` says: ZADD each serial marked (scored by
-- itself, by_sn, or by its mark, a time), ZREM each marked false
local function sync_index(key, marks, by_sn)
  local add, rem = {}, {}
  for sn, mark in pairs(marks) do
    if mark then
      add[#add + 1] = by_sn and sn or mark
      add[#add + 1] = sn
    else
      rem[#rem + 1] = sn
    end
  end
  each_chunk("ZADD", key, add)
  each_chunk("ZREM", key, rem)
end
local function flush()
  for name, n in pairs(counts) do
    if n ~= 0 then redis.call("HINCRBY", P .. "c", name, n) end
  end
  for name, members in pairs(in_index) do sync_index(P .. "i:" .. name, members, true) end
  sync_index(P .. "t", t_score, false)
end
local function held_of(sn)
  local text = redis.call("GET", P .. "d:" .. sn)
  if text then return cjson.decode(text) end
end
local out = {}
]]

local SCRIPTS = {}

SCRIPTS.apply = PRELUDE .. [[
for i = 4, #ARGV do
  local new = cjson.decode(ARGV[i])
  local held = held_of(new.sn)
  local verdict, rec, delta, events, after, before = R.decide(held, new, cfg)
  commit(new.sn, held, rec, delta, events, after, before)
  out[#out + 1] = { verdict = verdict, events = events }
end
flush()
return cjson.encode(out)
]]

-- apply, as the client planned it (Store:apply: a batch whose records the
-- client read with MGET and decided by the same rule).  ARGV[4]: the plan
-- (JSON): c (counters: the sum of the devices' deltas), i / o (index name
-- -> the serials into it, as ZADD's score member pairs / out of it), t
-- (t's score member pairs), r (the serials out of t), e (the events' JSON,
-- in the devices' order); then 3 for each device: its serial, the record
-- text the client read ("" for none), the record to write ("" for none).
-- The compare-and-set: when every record is still the text the client
-- read, the plan is written, else nothing is and the answer is
-- {"changed":true} (the client sends the batch again through apply, which
-- decides here).  Redis runs Lua 5.1 without a JIT: deciding 100 devices
-- here (apply) took ~5 ms of its one thread, writing a plan a fifth of that.
SCRIPTS.apply_plan = PRELUDE .. [[
local n = (#ARGV - 4) / 3
local keys, sets = {}, {}
for k = 0, n - 1 do
  local key = P .. "d:" .. ARGV[5 + 3 * k]
  keys[k + 1] = key
  if ARGV[7 + 3 * k] ~= "" then
    sets[#sets + 1] = key
    sets[#sets + 1] = ARGV[7 + 3 * k]
  end
end
for first = 1, n, 1000 do
  local held = redis.call("MGET", unpack(keys, first, math.min(n, first + 999)))
  for k = 1, #held do
    if (held[k] or "") ~= ARGV[3 + 3 * (first + k - 1)] then return cjson.encode({ changed = true }) end
  end
end
local plan = cjson.decode(ARGV[4])
-- a key of another type (someone else's, under the prefix) fails the plan
-- before its first write: Redis keeps what a script wrote before an error,
-- which left records and counters written and their events never streamed
local function wrong(key, want)
  local kind = redis.call("TYPE", key).ok
  if kind ~= "none" and kind ~= want then
    return redis.error_reply("WRONGTYPE kinot.fleet: " .. key .. " is a " .. kind .. ", not a " .. want)
  end
end
local bad = wrong(P .. "c", "hash") or wrong(P .. "t", "zset") or wrong(P .. "x", "stream")
for name in pairs(plan.i) do bad = bad or wrong(P .. "i:" .. name, "zset") end
for name in pairs(plan.o) do bad = bad or wrong(P .. "i:" .. name, "zset") end
-- and a counter that holds no integer (HINCRBY's error) the same way
local names = {}
for name, by in pairs(plan.c) do
  if by ~= 0 then names[#names + 1] = name end
end
for first = 1, #names, 1000 do
  local last = math.min(#names, first + 999)
  local held = redis.call("HMGET", P .. "c", unpack(names, first, last))
  for k = 1, #held do
    local v = held[k]
    if v and not (#v <= 19 and string.match(v, "^%-?%d+$")) then
      bad = bad or redis.error_reply("ERR kinot.fleet: counter " .. names[first + k - 1] .. " is not an integer")
    end
  end
end
if bad then return bad end
each_chunk("MSET", nil, sets)
for name, by in pairs(plan.c) do
  if by ~= 0 then redis.call("HINCRBY", P .. "c", name, by) end
end
for name, pairs_of in pairs(plan.i) do each_chunk("ZADD", P .. "i:" .. name, pairs_of) end
for name, sns in pairs(plan.o) do each_chunk("ZREM", P .. "i:" .. name, sns) end
each_chunk("ZADD", P .. "t", plan.t)
each_chunk("ZREM", P .. "t", plan.r)
for e = 1, #plan.e do
  out[e] = redis.call("XADD", P .. "x", "MAXLEN", "~", cfg.changes_max, "*", "e", plan.e[e])
end
return cjson.encode({ ids = out })
]]

SCRIPTS.gone = PRELUDE .. [[
for i = 4, #ARGV do
  local held = held_of(ARGV[i])
  if held then
    local rec, delta, events, after, before = R.gone(held, cfg)
    if rec then
      commit(held.sn, held, rec, delta, events, after, before)
      for k = 1, #events do out[#out + 1] = events[k] end
    end
  end
end
flush()
return cjson.encode(out)
]]

-- at most ARGV[4] devices a call: the caller calls again while it gets that many
SCRIPTS.sweep = PRELUDE .. [[
local due = redis.call("ZRANGEBYSCORE", P .. "t", "-inf", cfg.now - cfg.stale_after,
                       "LIMIT", 0, tonumber(ARGV[4]))
for i = 1, #due do
  local held = held_of(due[i])
  local rec, delta, events, after, before = nil, nil, nil, nil, nil
  if held then rec, delta, events, after, before = R.sweep(held, cfg) end
  if rec then
    commit(held.sn, held, rec, delta, events, after, before)
    for k = 1, #events do out[#out + 1] = events[k] end
  else
    local gone_sn = due[i]
    t_score[gone_sn] = false
  end
end
flush()
return cjson.encode({ n = #due, events = out })
]]

-- want (flags all required), without (flags all absent), offset, limit:
-- walks the smallest wanted index in serial order
SCRIPTS.list = PRELUDE .. [[
local want, without = cjson.decode(ARGV[4]), cjson.decode(ARGV[5])
local offset, limit = tonumber(ARGV[6]), tonumber(ARGV[7])
local base, size = "all", redis.call("ZCARD", P .. "i:all")
for i = 1, #want do
  local n = redis.call("ZCARD", P .. "i:" .. want[i])
  if n < size then base, size = want[i], n end
end
local total, from = 0, 0
while from < size do
  local chunk = redis.call("ZRANGE", P .. "i:" .. base, from, from + 999)
  if #chunk == 0 then break end
  for c = 1, #chunk do
    local sn, ok = chunk[c], true
    for i = 1, #want do
      if ok and want[i] ~= base and not redis.call("ZSCORE", P .. "i:" .. want[i], sn) then ok = false end
    end
    for i = 1, #without do
      if ok and redis.call("ZSCORE", P .. "i:" .. without[i], sn) then ok = false end
    end
    if ok then
      total = total + 1
      if total > offset and #out < limit then out[#out + 1] = redis.call("GET", P .. "d:" .. sn) end
    end
  end
  from = from + 1000
end
return { total, out }
]]

local Store = {}
Store.__index = Store

--- new(client, prefix) -> store (client: a kinot.redis client)
function M.new(client, prefix)
  return setmetatable({ c = client, p = prefix }, Store)
end

local function cfg_text(cfg)
  return json.encode(cfg)
end

local function run(self, name, cfg, ...)
  local text, err = self.c:eval(SCRIPTS[name], 0, self.p, cfg_text(cfg), name, ...)
  if not text then return nil, err end
  if type(text) == "table" then return text end
  return json.decode(text)
end

local unpack = table.unpack or unpack -- luacheck: ignore 143

-- Serials go into the script as text: Redis's cjson and Lua 5.1 write a
-- number with 14 digits, which would make 9007199254740990 and
-- 9007199254740991 one key.  They come back as numbers.
local function sn_text(rec)
  local c = {}
  for k, v in pairs(rec) do c[k] = v end
  c.sn = string.format("%d", rec.sn)
  return c
end

local function events_of(out)
  if type(out) ~= "table" or out == json.null then return {} end
  for i = 1, #out do out[i].sn = tonumber(out[i].sn) end
  return out
end

-- the plan of a batch (SCRIPTS.apply_plan): each device decided here, by
-- the rule the script runs, against the record MGET read (held_texts[i]:
-- its text, or redis.null).  -> plan, args (3 a device), out (verdict and
-- events a device, their ids to come)
local function plan_of(news, held_texts, cfg)
  local counts, ins, outs, t_in, t_out, evs = {}, {}, {}, {}, {}, {}
  local args, out = {}, {}
  for i = 1, #news do
    local new, text = news[i], held_texts[i]
    local held
    if text == redis.null then text = "" else held = json.decode(text) end
    local verdict, rec, delta, events, after, before = rule.decide(held, new, cfg)
    for name, by in pairs(delta) do counts[name] = (counts[name] or 0) + by end
    local sn = new.sn
    if rec then
      before = before or {}
      for name in pairs(before) do
        if not after[name] then
          local list = outs[name] or {}
          outs[name] = list
          list[#list + 1] = sn
        end
      end
      for name in pairs(after) do
        if not before[name] then
          local list = ins[name] or {}
          ins[name] = list
          list[#list + 1] = sn
          list[#list + 1] = sn
        end
      end
      if rec.gone or rec.stale then
        t_out[#t_out + 1] = sn
      else
        t_in[#t_in + 1] = json.number_text(rec.t)
        t_in[#t_in + 1] = sn
      end
    end
    for k = 1, #events do evs[#evs + 1] = json.encode(events[k]) end
    local at = 3 * (i - 1)
    args[at + 1], args[at + 2], args[at + 3] = sn, text, rec and json.encode(rec) or ""
    out[i] = { verdict = verdict, events = events }
  end
  return { c = counts, i = ins, o = outs, t = t_in, r = t_out, e = evs }, args, out
end

-- the script decides (SCRIPTS.apply): a device, a batch with a serial
-- twice (the second reads the first), a batch whose plan came too late
local function decided(self, news, cfg)
  local args = {}
  for i = 1, #news do args[i] = json.encode(news[i]) end
  local out, err = run(self, "apply", cfg, unpack(args))
  if not out then return nil, err end
  for i = 1, #out do out[i].events = events_of(out[i].events) end
  return out
end

--- apply(recs, cfg) -> { {verdict, events}, ... } | nil, err.  One device:
-- one script, which reads, decides and writes.  A batch (a scan's page):
-- its records read (MGET) and decided here, then one script that writes
-- the plan if no record changed since the MGET (else the batch goes again
-- through the first way): Redis's one thread writes, the client's CPU
-- decides (SCRIPTS.apply_plan).  A batch of more than PLAN_MAX devices
-- goes the first way, one script as before (3 arguments a device would
-- pass what Lua can unpack into one call).
M.PLAN_MAX = 1000
function Store:apply(recs, cfg)
  local news, keys, seen, twice = {}, {}, {}, #recs < 2 or #recs > M.PLAN_MAX
  for i = 1, #recs do
    local new = sn_text(recs[i])
    news[i] = new
    keys[i] = self.p .. "d:" .. new.sn
    if seen[new.sn] then twice = true end
    seen[new.sn] = true
  end
  if twice then return decided(self, news, cfg) end
  local held_texts, err = self.c:call("MGET", unpack(keys))
  if not held_texts then return nil, err end
  local plan, args, out = plan_of(news, held_texts, cfg)
  local got
  got, err = run(self, "apply_plan", cfg, json.encode(plan), unpack(args))
  if not got then return nil, err end
  if got.changed then return decided(self, news, cfg) end
  local e = 0
  for i = 1, #out do
    local events = out[i].events
    for k = 1, #events do
      e = e + 1
      events[k].id = got.ids[e]
    end
    events_of(events)
  end
  return out
end

function Store:gone(sns, cfg)
  if #sns == 0 then return {} end
  local all = {}
  for first = 1, #sns, 500 do
    local texts = {}
    for i = first, math.min(#sns, first + 499) do texts[#texts + 1] = string.format("%d", sns[i]) end
    local out, err = run(self, "gone", cfg, unpack(texts))
    if not out then return nil, err end
    for _, ev in ipairs(events_of(out)) do all[#all + 1] = ev end
  end
  return all
end

function Store:sweep(cfg)
  if not cfg.stale_after then return {} end
  local all = {}
  repeat
    local out, err = run(self, "sweep", cfg, 1000)
    if not out then return nil, err end
    for _, ev in ipairs(events_of(out.events)) do all[#all + 1] = ev end
  until out.n < 1000
  return all
end

function Store:get(sn)
  local text, err = self.c:call("GET", self.p .. "d:" .. string.format("%d", sn))
  if not text then return nil, err end
  if text == redis.null then return nil end
  return json.decode(text)
end

function Store:counters(names)
  local got, err = self.c:call("HMGET", self.p .. "c", unpack(names))
  if not got then return nil, err end
  local out = {}
  for i = 1, #names do out[names[i]] = tonumber(got[i]) or 0 end
  return out
end

function Store:list(want, without, offset, limit, cfg)
  local got, err = run(self, "list", cfg, json.encode(want), json.encode(without), offset, limit)
  if not got then return nil, err end
  local out = {}
  for i = 1, #got[2] do out[i] = json.decode(got[2][i]) end
  return out, got[1]
end

--- sns(kind, except) -> every serial of that kind held (its index), but those in the set `except`
function Store:sns(kind, except)
  local got, err = self.c:call("ZRANGE", self.p .. "i:kind=" .. kind, 0, -1)
  if not got then return nil, err end
  local out = {}
  for i = 1, #got do
    local sn = tonumber(got[i])
    if not (except and except[sn]) then out[#out + 1] = sn end
  end
  return out
end

--- changes(since, limit) -> events after the stream id `since`, next cursor
function Store:changes(since, limit)
  local from = (since == nil or since == 0 or since == "0" or since == "") and "-" or "(" .. tostring(since)
  local got, err = self.c:call("XRANGE", self.p .. "x", from, "+", "COUNT", limit)
  if not got then return nil, err end
  local out = {}
  for i = 1, #got do
    local id, fields = got[i][1], got[i][2]
    local ev = json.decode(fields[2])
    ev.id = id
    ev.sn = tonumber(ev.sn)
    out[i] = ev
  end
  return out, #out > 0 and out[#out].id or since
end

function Store:set_meta(k, v)
  local ok, err = self.c:call("HSET", self.p .. "m", k, v)
  if not ok then return nil, err end
  return true
end

function Store:get_meta(k)
  local v, err = self.c:call("HGET", self.p .. "m", k)
  if v == nil then return nil, err end
  if v == redis.null then return nil end
  return v
end

M.SCRIPTS = SCRIPTS
return M
