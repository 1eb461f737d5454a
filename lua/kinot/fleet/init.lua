-- The car park's live twin (docs/fleet.md): the latest state of every lock,
-- sensor and DTU, fed by verified callbacks (twin:apply(ev)) and made true
-- by reconciliation scans (twin:sync(client)), answering the questions an
-- integrator asks (occupancy by group, faults, batteries, signal, offline
-- gateways, silent devices) from itself, never from the platform.
--
--   local fleet = require "kinot.fleet"
--   local twin = fleet.new { store = "redis", redis = "redis://127.0.0.1:6379/0", groups = "bays.csv" }
--   twin:sync(client, { dtus = { 644200001 }, concurrency = 4 })
--   twin:apply(ev)              -- from on_status, for each verified callback
--   twin:summary(), twin:device(sn), twin:devices { occupied = false, group = "A/1" }, twin:changes(since)
--
-- The decision (newer or not, what a state counts as, which changes it
-- makes) is kinot.fleet.rule, the same in every store.
local errors = require "kinot.errors"
local validate = require "kinot.validate"
local vocabulary = require "kinot.vocabulary"
local typed = require "kinot.typed"
local groups_of = require "kinot.fleet.groups"
local local_store = require "kinot.fleet.local_store"
local parse_time = require("kinot.callback.freshness").parse

local M = {}

local type, tostring, pairs, ipairs, format = type, tostring, pairs, ipairs, string.format
local misuse = errors.misuse

M.STALE_AFTER = 24 * 3600
M.WEAK_SIGNAL = -110
M.CHANGES_MAX = 10000
M.PREFIX = "kinot:fleet:"
M.DICT = "kinot_fleet"
M.MAX_AHEAD = require("kinot.callback.freshness").MAX_SKEW -- seconds a stamp may be ahead of our clock
local ZONE_EAST = 14 * 3600
-- a table with room for n named keys (LuaJIT's table.new; else an empty one)
local new_table = (function()
  local ok, new = pcall(require, "table.new")
  if ok then return new end
  return function() return {} end
end)()

local Twin = {}
Twin.__index = Twin
M.Twin = Twin

local KINDS = { lock = true, sensor = true, dtu = true }
local FAULT_NAMES = {} -- every fault flag a lock or sensor has, once
do
  local seen = {}
  for _, kind in ipairs { "lock", "sensor" } do
    for _, f in ipairs(vocabulary.faults[kind]) do
      if not seen[f] then
        seen[f] = true
        FAULT_NAMES[#FAULT_NAMES + 1] = f
      end
    end
  end
end
-- the reference's fields of each kind's state (sn and updated_at are the record's own)
local STATE_FIELDS = {}
for kind in pairs(KINDS) do
  local list = {}
  for _, k in ipairs(vocabulary.order[kind]) do
    if k ~= "sn" and k ~= "updated_at" then list[#list + 1] = k end
  end
  STATE_FIELDS[kind] = list
end

local function default_clock()
  local ngx = rawget(_G, "ngx")
  if ngx and ngx.now then return ngx.now() end
  return require("kinot.core").now_ms() / 1000
end

local function store_of(o)
  local kind = o.store
  if o.redis_tls ~= nil and kind ~= "redis" then misuse("kinot.fleet: redis_tls goes with store = \"redis\"") end
  if kind == nil then kind = (rawget(_G, "ngx") and ngx.shared) and "shared" or "table" end -- luacheck: ignore 113
  if kind == "table" then
    return local_store.new(local_store.table_backend(o.changes_max)), kind
  elseif kind == "shared" then
    return local_store.new(local_store.shared_backend(o.dict or M.DICT, o.changes_max)), kind
  elseif kind == "redis" then
    local client = o.redis
    if type(client) == "string" then
      local redis = require "kinot.redis"
      redis.check(client, o.redis_tls, "kinot.fleet: redis_tls")
      client = redis.new(client, { tls = o.redis_tls })
    elseif o.redis_tls ~= nil then
      misuse("kinot.fleet: redis_tls goes with a redis URL; a kinot.redis client has its own (redis.new's tls)")
    end
    if type(client) ~= "table" or type(client.eval) ~= "function" then
      misuse("kinot.fleet: store = \"redis\" needs redis = a redis:// URL or a kinot.redis client")
    end
    return require("kinot.fleet.redis_store").new(client, o.prefix or M.PREFIX), kind
  end
  misuse("kinot.fleet: store must be \"table\", \"shared\" or \"redis\" (got " .. tostring(kind) .. ")")
end

local KNOWN = validate.set { "store", "dict", "redis", "redis_tls", "prefix", "groups", "group_by", "stale_after", "weak_signal",
                             "on_change", "changes_max", "clock" }

--- new(opts) -> twin.  opts: store ("table" outside nginx, "shared" inside
-- by default, or "redis"), dict (the lua_shared_dict, default kinot_fleet),
-- redis (URL or kinot.redis client), redis_tls (a rediss:// URL's TLS
-- settings: kinot.redis's tls), prefix (Redis keys, default
-- "kinot:fleet:"), groups (a CSV or JSON file, or a table: serial -> zone /
-- level / bay), group_by (default {"zone", "level"}), stale_after (seconds
-- without an update, default 86400; false: never stale), weak_signal
-- (rs_si below it is weak, default -110), on_change(ev), changes_max (the
-- change log kept, default 10000), clock (seconds, for seen_at).
function M.new(opts)
  local o = validate.options(opts or {}, KNOWN, "kinot.fleet.new")
  if o.stale_after ~= false then validate.positive(o.stale_after, "stale_after") end
  if o.weak_signal ~= nil and type(o.weak_signal) ~= "number" then misuse("weak_signal must be a number (dBm)") end
  if o.on_change ~= nil and type(o.on_change) ~= "function" then misuse("on_change must be a function") end
  if o.clock ~= nil and type(o.clock) ~= "function" then misuse("clock must be a function returning seconds") end
  local cm = o.changes_max or M.CHANGES_MAX
  if not validate.integer(cm, 1, 10000000) then misuse("changes_max must be an integer from 1 to 10000000") end
  local self = setmetatable({
    stale_after = o.stale_after == nil and M.STALE_AFTER or o.stale_after,
    weak_signal = o.weak_signal or M.WEAK_SIGNAL,
    on_change = o.on_change,
    clock = o.clock or default_clock,
    changes_max = cm,
    places = {}, group_names = {},
  }, Twin)
  o.changes_max = cm
  self.store, self.store_kind = store_of(o)
  if o.groups ~= nil then self.places, self.group_names = groups_of.load(o.groups, o.group_by) end
  return self
end

-- the rule's configuration, with the time now
function Twin:cfg(now)
  return { now = now or self.clock(), stale_after = self.stale_after, weak_signal = self.weak_signal,
           faults = vocabulary.faults, changes_max = self.changes_max }
end

local function emit(self, events)
  local hook = self.on_change
  if hook then
    for i = 1, #events do hook(events[i]) end
  end
end

-- a record of an answer's or callback's object | nil, err
function Twin:record(kind, obj, source, now)
  local sn = obj.sn
  sn = typed.to_int(sn)
  -- past 2^53 - 1 (validate.sn's bound) a double may hold a neighbour of the
  -- serial meant, and a store's key ("%d") another device's: LuaJIT writes
  -- every serial past 2^63 as -9223372036854775808
  if type(sn) ~= "number" or sn < 1 or sn > vocabulary.INT_MAX or sn ~= math.floor(sn) then
    return nil, errors.new("decode", "kinot.fleet: a " .. kind .. " without a serial (sn " .. tostring(obj.sn) .. ")")
  end
  local t, zoned = parse_time(obj.updated_at)
  if not t then
    return nil, errors.new("decode", format("kinot.fleet: %s %d has no updated_at the twin can order (%s)", kind, sn,
      tostring(obj.updated_at):sub(1, 40)))
  end
  -- a stamp ahead of our clock (a platform's clock gone wrong: 2099) is
  -- ordered as no later than now + the skew allowed (without an offset,
  -- UTC+14's too), else no true update would ever be newer than it
  local ahead = now + M.MAX_AHEAD + (zoned and 0 or ZONE_EAST)
  if t > ahead then t = ahead end
  local fields = STATE_FIELDS[kind]
  local state = new_table(0, #fields) -- (grown a key at a time, it was rehashed 4 times)
  for i = 1, #fields do
    local k = fields[i]
    local v = obj[k]
    if v ~= nil then state[k] = v end
  end
  local place = self.places[sn]
  return { sn = sn, kind = kind, state = state, updated_at = obj.updated_at, t = t, seen_at = now,
           source = source, group = place and place.group or nil, place = place }
end

--- put(kind, objs, source) -> results ({verdict, events} each) | nil, err:
-- objects as the API answers them ("lock" | "sensor" | "dtu"), one call to
-- the store; results[i] is objs[i]'s.  An object the twin cannot order (no
-- serial, an updated_at null or unparsable) fails a callback's put (nil,
-- err: its caller decides); in a scan (source "scan") it is left out,
-- results[i] = { verdict = "unordered", events = {}, err = err }, and the
-- rest of the batch is applied: one odd device must not blind a scan to
-- the whole fleet.
function Twin:put(kind, objs, source)
  if not KINDS[kind] then misuse("kinot.fleet: kind must be lock, sensor or dtu (got " .. tostring(kind) .. ")") end
  source = source or "scan"
  local now = self.clock()
  local recs, at, odd = {}, {}, nil -- at[j]: the index in objs of recs[j]; odd[i]: objs[i]'s error
  for i = 1, #objs do
    local rec, err = self:record(kind, objs[i], source, now)
    if rec then
      recs[#recs + 1] = rec
      at[#recs] = i
    elseif source == "scan" then
      odd = odd or {}
      odd[i] = err
    else
      return nil, err
    end
  end
  local out = {}
  if #recs > 0 then
    local got, err = self.store:apply(recs, self:cfg(now))
    if not got then return nil, err end
    for j = 1, #got do
      emit(self, got[j].events)
      out[at[j]] = got[j]
    end
  end
  for i, err in pairs(odd or {}) do out[i] = { verdict = "unordered", events = {}, err = err } end
  return out
end

--- apply(ev) -> verdict, events | nil, err.  ev: a verified callback event
-- (kinot.callback): a lock's or sensor's status_changed is applied when
-- newer than what the twin holds; a command_resp, an event of an unknown
-- device and an unverified one (verify = "monitor") are "ignored".
-- verdict: "added", "applied", "older" (counted, not applied), "duplicate",
-- "ignored".  events: the changes it made (also given to on_change).
function Twin:apply(ev)
  if type(ev) ~= "table" then misuse("kinot.fleet: apply needs a callback event (a table)") end
  if ev.kind ~= "status_changed" or ev.verified == false or (ev.device ~= "lock" and ev.device ~= "sensor")
     or type(ev.data) ~= "table" then
    return "ignored", {}
  end
  local out, err = self:put(ev.device, { ev.data }, "callback")
  if not out then return nil, err end
  return out[1].verdict, out[1].events
end

local function copy(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- the record as the twin shows it: typed as the reference types its fields,
-- a copy (the table store's records are the twin itself)
local function view(self, rec)
  if not rec then return nil end
  local kind = rec.kind
  local sn = typed.to_int(rec.sn)
  local v = {
    sn = sn, kind = kind, state = typed.object(copy(rec.state or {}), vocabulary.fields[kind] or {}),
    updated_at = rec.updated_at, seen_at = rec.seen_at, source = rec.source, group = rec.group,
    place = copy(self.places[sn] or rec.place), stale = rec.stale or false, gone = rec.gone or false,
  }
  return v
end

--- device(sn) -> the device as the twin holds it | nil (never seen), | nil, err
function Twin:device(sn)
  sn = validate.sn(sn, "sn")
  local rec, err = self.store:get(sn)
  if rec == nil then return nil, err end
  return view(self, rec)
end

--- summary() -> the counts, kept as updates come (no pass over the devices)
function Twin:summary()
  local names = { "lock", "sensor", "dtu", "space", "occupied", "fault", "low_battery", "weak_signal", "offline",
                  "stale", "gone", "added", "applied", "missed", "older", "duplicate", "up" }
  for _, f in ipairs(FAULT_NAMES) do names[#names + 1] = "fault=" .. f end
  for _, g in ipairs(self.group_names) do
    names[#names + 1] = "space@" .. g
    names[#names + 1] = "occupied@" .. g
  end
  local c, err = self.store:counters(names)
  if not c then return nil, err end
  local synced_at = self.store:get_meta("synced_at")
  local by_group = {}
  for _, g in ipairs(self.group_names) do
    local total, occ = c["space@" .. g], c["occupied@" .. g]
    by_group[g] = { occupied = occ, free = total - occ, total = total }
  end
  local faults = { devices = c.fault }
  for _, f in ipairs(FAULT_NAMES) do faults[f] = c["fault=" .. f] end
  return {
    devices = { locks = c.lock, sensors = c.sensor, dtus = c.dtu, gone = c.gone },
    occupancy = { occupied = c.occupied, free = c.space - c.occupied, total = c.space, groups = by_group },
    locks_up = c.up,
    faults = faults,
    low_battery = c.low_battery,
    weak_signal = c.weak_signal,
    dtus_offline = c.offline,
    stale = c.stale,
    missed = c.missed,
    updates = { added = c.added, applied = c.applied, missed = c.missed, out_of_order = c.older,
                duplicate = c.duplicate },
    synced_at = synced_at,
    stale_after = self.stale_after, weak_signal_below = self.weak_signal,
  }
end

local FILTERS = validate.set { "kind", "group", "occupied", "fault", "low_battery", "weak_signal", "offline", "stale",
                               "gone", "up", "offset", "limit" }
local BOOLEAN = { occupied = "occupied", low_battery = "low_battery", weak_signal = "weak_signal",
                  offline = "offline", stale = "stale", gone = "gone", up = "up" }
M.MAX_LIMIT = 1000

--- devices{kind, group, occupied, fault, low_battery, weak_signal, offline,
-- stale, gone, up, offset = 0, limit = 50} -> { devices, total, offset, limit }
-- in serial order.  Booleans filter both ways (occupied = false: the free
-- spaces); fault = true, false or a fault's name ("motor_fail").
function Twin:devices(q)
  q = validate.options(q or {}, FILTERS, "kinot.fleet: devices")
  local want, without = { "all" }, {}
  if q.kind ~= nil then
    if not KINDS[q.kind] then misuse("kind must be lock, sensor or dtu (got " .. tostring(q.kind) .. ")") end
    want[#want + 1] = "kind=" .. q.kind
  end
  if q.group ~= nil then want[#want + 1] = "group=" .. tostring(q.group) end
  for name, flag in pairs(BOOLEAN) do
    local v = q[name]
    if v ~= nil then
      if type(v) ~= "boolean" then misuse(name .. " must be true or false") end
      if v then want[#want + 1] = flag else without[#without + 1] = flag end
      if name == "occupied" and not v then want[#want + 1] = "space" end
    end
  end
  if q.fault ~= nil then
    if q.fault == true then want[#want + 1] = "fault"
    elseif q.fault == false then without[#without + 1] = "fault"
    elseif type(q.fault) == "string" then want[#want + 1] = "fault=" .. q.fault
    else misuse("fault must be true, false or a fault's name") end
  end
  table.sort(want)
  table.sort(without)
  local offset = validate.integer(q.offset or 0, 0, 2 ^ 31)
  if not offset then misuse("offset must be an integer >= 0") end
  local limit = validate.integer(q.limit or 50, 1, M.MAX_LIMIT)
  if not limit then misuse("limit must be an integer from 1 to " .. M.MAX_LIMIT) end
  local recs, total = self.store:list(want, without, offset, limit, self:cfg())
  if not recs then return nil, total end
  local out = {}
  for i = 1, #recs do out[i] = view(self, recs[i]) end
  return { devices = out, total = total, offset = offset, limit = limit }
end

--- changes(since, limit) -> { changes = events after the cursor, oldest first, next = cursor }
-- since: nil (from the oldest kept) or a `next` an earlier call gave
-- a cursor's shape: a number (the local stores) or a stream id "ms-seq" (Redis)
local function cursor(v)
  if v == nil or (type(v) == "number" and v >= 0 and v == math.floor(v)) then return true end
  if type(v) ~= "string" then return false end
  local a, b = v:match("^(%d+)%-(%d+)$")
  if a then return #a <= 20 and #b <= 20 end
  return v:match("^%d+$") ~= nil and #v <= 20
end

function Twin:changes(since, limit)
  limit = validate.integer(limit or 100, 1, M.MAX_LIMIT)
  if not limit then misuse("limit must be an integer from 1 to " .. M.MAX_LIMIT) end
  if not cursor(since) then
    misuse("since must be a cursor an earlier changes() gave as next (got " .. tostring(since):sub(1, 40) .. ")")
  end
  local out, next_cursor = self.store:changes(since, limit)
  if not out then return nil, next_cursor end
  return { changes = out, next = next_cursor }
end

--- sweep() -> events | nil, err: marks the devices whose updated_at is now
-- stale_after old (change "stale"); a newer update makes them "alive"
function Twin:sweep(now)
  local events, err = self.store:sweep(self:cfg(now))
  if not events then return nil, err end
  emit(self, events)
  return events
end

--- gone(sns[, listed_at]) -> events | nil, err: these devices are no longer
-- listed by the platform; listed_at (the twin's clock): when that listing
-- began, a device updated since is left as it is (kinot.fleet.rule's gone)
function Twin:gone(sns, listed_at)
  if listed_at ~= nil and type(listed_at) ~= "number" then misuse("kinot.fleet: gone's listed_at must be a time") end
  local cfg = self:cfg()
  cfg.listed_at = listed_at
  local events, err = self.store:gone(sns, cfg)
  if not events then return nil, err end
  emit(self, events)
  return events
end

--- settings() -> what a reader of this twin's store needs to answer as it
-- does: { stale_after (false: never), weak_signal, groups = the group names }
function Twin:settings()
  return { stale_after = self.stale_after, weak_signal = self.weak_signal, groups = self.group_names }
end

--- adopt_settings() -> true | nil, err: a twin reading a store another
-- process keeps (`kinot fleet --redis`) takes the settings its last sync
-- wrote there (the summary's stale_after, weak_signal_below, the groups it
-- counts); the group names stay this twin's own when it was given groups.
-- A store no sync wrote yet keeps this twin's settings.
function Twin:adopt_settings()
  local text, err = self.store:get_meta("settings")
  if text == nil then
    if err then return nil, err end
    return true
  end
  local s = require("kinot.json").decode(text)
  if type(s) ~= "table" then return nil, errors.new("decode", "kinot.fleet: the store's settings are not JSON") end
  if s.stale_after == false or type(s.stale_after) == "number" then self.stale_after = s.stale_after end
  if type(s.weak_signal) == "number" then self.weak_signal = s.weak_signal end
  if #self.group_names == 0 and type(s.groups) == "table" then
    local names = {}
    for _, g in ipairs(s.groups) do
      if type(g) == "string" then names[#names + 1] = g end
    end
    self.group_names = names
  end
  return true
end

--- sync(client, {dtus = {sn...}, concurrency = 1, limit = 100}) -> report | nil, err (kinot.fleet.sync)
function Twin:sync(client, opts)
  return require("kinot.fleet.sync").run(self, client, opts)
end

return M
