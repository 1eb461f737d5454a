-- The twin's one rule: whether an update applies, what a device's state
-- counts as (its flags), and the changes between two states.  Written once,
-- as source text that runs in three places: loaded here for the Lua table
-- and the lua_shared_dict stores, and embedded whole in the Redis store's
-- script (Redis runs Lua 5.1 with no require), so every store decides
-- exactly alike.  Keep the source plain Lua 5.1: no goto, no integer
-- division, no library but string, table, math, pairs and type.
--
-- A record: { sn, kind = "lock"|"sensor"|"dtu", state = {reference fields},
--   updated_at (the platform's text), t (updated_at in seconds, UTC),
--   seen_at (our clock), source = "callback"|"scan", group (or nil), place (the groups file's row, or nil),
--   stale (true when t is older than stale_after), gone (true when a scan no
--   longer lists it) }
-- cfg: { now, stale_after (s, or false), weak_signal (rs_si below it is
--   weak), faults = { lock = {field...}, sensor = {field...} } }
local SOURCE = [==[
local R = {}

local pairs, type = pairs, type

-- a flag that turns on or off is a change event: flag -> { on, off }
local EVENTS = {
  occupied = { "occupied", "free" },
  up = { "up", "down" },
  low_battery = { "battery_low", "battery_normal" },
  offline = { "offline", "online" },
  stale = { "stale", "alive" },
  gone = { "gone", "back" },
}
R.EVENTS = EVENTS

-- flag names made once: "kind=lock", "fault=coil_fault", "group=A/1", "occupied@A/1"
local function names(prefix, suffix)
  return setmetatable({}, { __index = function(t, k)
    local v = (prefix or "") .. k .. (suffix or "")
    t[k] = v
    return v
  end })
end
local KIND, FAULT, GROUP = names("kind="), names("fault="), names("group=")
local FAULT_OF = setmetatable({}, { __index = function(t, name)
  local v = name:match("^fault=(.+)$") or false
  t[name] = v
  return v
end })
local AT = setmetatable({}, { __index = function(t, group)
  local v = names(nil, "@" .. group)
  t[group] = v
  return v
end })

--- flags(rec, cfg) -> { name = true }: what the record counts as.  Every
-- flag has a counter (the summary) and an index (the filtered lists); a
-- counter per group too ("name@group").  A gone device counts only as
-- gone and as one of its kind (kind=lock ...), which the sync reads.
function R.flags(rec, cfg)
  local f = { all = true }
  local k, s = rec.kind, rec.state
  f[KIND[k]] = true
  if rec.group then f[GROUP[rec.group]] = true end
  if rec.gone then
    f.gone = true
    return f
  end
  f[k] = true
  if k == "lock" or k == "sensor" then
    f.space = true
    if s.car_detected == 1 then f.occupied = true end
    if k == "lock" and s.locked == 1 then f.up = true end
    local list = cfg.faults[k] or {}
    for i = 1, #list do
      if s[list[i]] == 1 then
        f[FAULT[list[i]]] = true
        f.fault = true
      end
    end
    if s.low_battery == 1 then f.low_battery = true end
    if type(s.rs_si) == "number" and s.rs_si < cfg.weak_signal then f.weak_signal = true end
  elseif k == "dtu" then
    if s.online ~= "online" then f.offline = true end
  end
  if rec.stale then f.stale = true end
  return f
end

local function event(rec, change, source, extra)
  return { sn = rec.sn, kind = rec.kind, change = change, source = source, updated_at = rec.updated_at,
           at = rec.seen_at, group = rec.group, fault = extra }
end

-- d's counters of each flag (and of the flag in the group) moved by n.
-- No closure made in a call, here or below: LuaJIT 2.1 compiles no code
-- that makes one (FNEW), and ran the whole decision in its interpreter
local function add(d, flags, group, n)
  local at = group and AT[group]
  for name in pairs(flags) do
    d[name] = (d[name] or 0) + n
    if at then
      local g = at[name]
      d[g] = (d[g] or 0) + n
    end
  end
end

-- delta(old, new, old_group, new_group) -> { counter = +-n }, zeros left out
local function delta(held, rec, cfg)
  local d = {}
  local before, after = {}, R.flags(rec, cfg)
  if held then
    before = R.flags(held, cfg)
    add(d, before, held.group, -1)
  end
  add(d, after, rec.group, 1)
  for name, n in pairs(d) do
    if n == 0 then d[name] = nil end
  end
  return d, before, after
end

local function by_change(a, b)
  if a.change ~= b.change then return a.change < b.change end
  return (a.fault or "") < (b.fault or "")
end

-- the change events between two flag sets (none for a first sight)
local function events(held, rec, before, after, source)
  local out = {}
  if not held then return out end
  if before.gone or after.gone then
    if before.gone ~= after.gone then out[1] = event(rec, after.gone and "gone" or "back", source) end
    return out
  end
  for flag, names in pairs(EVENTS) do
    if (before[flag] or false) ~= (after[flag] or false) then
      out[#out + 1] = event(rec, after[flag] and names[1] or names[2], source)
    end
  end
  for name in pairs(after) do
    local fault = FAULT_OF[name]
    if fault and not before[name] then out[#out + 1] = event(rec, "fault_raised", source, fault) end
  end
  for name in pairs(before) do
    local fault = FAULT_OF[name]
    if fault and not after[name] then out[#out + 1] = event(rec, "fault_cleared", source, fault) end
  end
  if #out > 1 then
    table.sort(out, by_change)
  end
  return out
end

-- every field of `new` as `held` has it (numbers as their 14 significant
-- digits: the JSON the shared dict and Redis keep them in)
local function same_state(held, new)
  for k, v in pairs(new) do
    local h = held[k]
    if h ~= v and not (type(h) == "number" and type(v) == "number" and
                       string.format("%.14g", h) == string.format("%.14g", v)) then
      return false
    end
  end
  return true
end

-- held's state with new's fields over it: a callback carries fewer fields
-- than an answer (a lock's has no bt_match_code), which it must not erase.
-- A device now of another kind keeps nothing of its old state: its state
-- is new's own table (new is the caller's, made for this update, not kept)
local function merged(held, new)
  if not (held and held.kind == new.kind) then return new.state end
  local s = {}
  for k, v in pairs(held.state) do s[k] = v end
  for k, v in pairs(new.state) do s[k] = v end
  return s
end

--- decide(held, new, cfg) -> verdict, rec, delta, events, flags (rec's), held's flags
-- verdict: "added" (first sight), "applied", "missed" (a scan found the
-- platform newer than what a callback had brought: one never arrived),
-- "older" (not applied: the twin never goes backward), "duplicate" (the
-- same stamp and every field the same).  new's state is laid over held's.  rec is the record to keep (nil when nothing changes);
-- delta holds the counters to move, verdict's own included.
-- The tie rule (docs/fleet.md): the platform stamps updated_at to the
-- second, so an equal stamp cannot order two states.  The same state at the
-- same stamp is a duplicate.  A different state at the same stamp applies
-- (the later arrival wins), except that a callback never replaces a state a
-- scan read at the same stamp: the scan read the platform at or after that
-- second, so it holds the last state of it that the platform had.
function R.decide(held, new, cfg)
  -- no callback ever tells of a DTU: a scan is how its changes arrive, not a miss
  local newer = (new.source == "scan" and new.kind ~= "dtu") and "missed" or "applied"
  local verdict
  if not held then
    verdict = "added"
  elseif held.gone then
    if new.source ~= "scan" and new.t <= held.t then verdict = "older" else verdict = "applied" end
  elseif new.t < held.t then
    verdict = "older"
  elseif new.t == held.t then
    if same_state(held.state, new.state) then
      verdict = "duplicate"
    elseif held.source == "scan" and new.source ~= "scan" then
      verdict = "older"
    else
      verdict = newer
    end
  else
    verdict = newer
  end
  if verdict == "older" or verdict == "duplicate" then
    return verdict, nil, { [verdict] = 1 }, {}
  end
  local rec = { sn = new.sn, kind = new.kind, state = merged(held, new), updated_at = new.updated_at, t = new.t,
                seen_at = new.seen_at, source = new.source, group = new.group, place = new.place }
  if cfg.stale_after and cfg.now - rec.t >= cfg.stale_after then rec.stale = true end
  local d, before, after = delta(held, rec, cfg)
  d[verdict] = (d[verdict] or 0) + 1
  return verdict, rec, d, events(held, rec, before, after, new.source), after, before
end

-- a copy of rec with `field` set, and its delta and events
local function mark(held, field, value, cfg, source, now)
  local rec = {}
  for k, v in pairs(held) do rec[k] = v end
  rec[field] = value
  if now then rec.seen_at = now end
  local d, before, after = delta(held, rec, cfg)
  return rec, d, events(held, rec, before, after, source), after, before
end

--- gone(held, cfg) -> rec, delta, events, flags, held's flags | nil (already
-- gone, or updated since the listing began): a scan no longer lists it.
-- cfg.listed_at (our clock): when the listing that left it out began; a
-- device updated since (a callback that came during the sync: a device the
-- platform registered after its pages were read) is not judged by it, the
-- next sync's listing is
function R.gone(held, cfg)
  if held.gone then return nil end
  if cfg.listed_at and type(held.seen_at) == "number" and held.seen_at >= cfg.listed_at then return nil end
  return mark(held, "gone", true, cfg, "scan", cfg.now)
end

--- sweep(held, cfg) -> rec, delta, events, flags | nil: stale once its updated_at
-- is stale_after old (its seen_at stays the last time we heard of it)
function R.sweep(held, cfg)
  if held.gone or held.stale or not cfg.stale_after or cfg.now - held.t < cfg.stale_after then return nil end
  return mark(held, "stale", true, cfg, "sweep")
end

return R
]==]

local load = loadstring or load -- luacheck: ignore 113
local chunk = assert(load(SOURCE, "=kinot.fleet.rule"))
local M = chunk()
M.SOURCE = SOURCE
return M
