-- Reconciliation: the twin made true by a full scan of the platform.  Every
-- lock and sensor comes through the client's each_locker / each_sensor
-- (`concurrency` pages in flight), the DTUs the user names through
-- dtu_device (the API has no list of DTUs), 100 devices at a time into the
-- store (with Redis: one MGET and one script each); inside nginx the paging runs in a light
-- thread of its own, overlapping the store's writes.  Where the platform is newer than the
-- twin the rule applies it and counts it `missed` (a callback that never
-- arrived; its changes are emitted with source = "scan").  Once a kind has
-- been listed to its end, the devices of that kind the twin holds and the
-- platform no longer lists are marked gone (kept, not deleted); a scan cut
-- short by an error marks nothing gone.  Then the sweep marks the devices
-- turned stale, and the twin's settings (for a reader: twin:adopt_settings)
-- and synced_at are set.
local errors = require "kinot.errors"
local validate = require "kinot.validate"
local json = require "kinot.json"
local typed = require "kinot.typed"

local M = {}

local KNOWN = validate.set { "dtus", "concurrency", "limit" }

local function iso(now)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(now))
end

-- put(twin, kind, batch, report) -> true | nil, err: a batch into the
-- store, its verdicts counted; a device the twin cannot order is left out
-- (counted `unordered`, the first UNORDERED_NAMED of their serials named)
local UNORDERED_NAMED = 10
local function put(twin, kind, batch, report)
  local out, err = twin:put(kind, batch, "scan")
  if not out then return nil, err end
  for i = 1, #out do
    local v = out[i].verdict
    report[v] = (report[v] or 0) + 1
    report.changes = report.changes + #out[i].events
    if v == "unordered" and #report.unordered_sns < UNORDERED_NAMED then
      local sn = typed.to_int(batch[i].sn)
      if type(sn) == "number" then report.unordered_sns[#report.unordered_sns + 1] = sn end
    end
  end
  return true
end

-- paging(client, kind, each) -> iterator, closer (a no-op for an
-- iterator without one: a source other than kinot's client)
local NO_CLOSER = { close = function() end }
local function paging(client, kind, each)
  local got = { (kind == "lock" and client.each_locker or client.each_sensor)(client, each) }
  return got[1], got[4] or NO_CLOSER
end

local function feed(twin, kind, each, report, listed)
  local batch = {}
  local function flush()
    if #batch == 0 then return true end
    local ok, err = put(twin, kind, batch, report)
    batch = {}
    return ok, err
  end
  local ok, err = pcall(function()
    for obj in each do
      batch[#batch + 1] = obj
      if obj.sn ~= nil then listed[obj.sn] = true end -- (one without a serial: counted unordered)
      report[kind .. "s"] = report[kind .. "s"] + 1
      if #batch >= 100 then
        local fine, e = flush()
        if not fine then error(e, 0) end
      end
    end
  end)
  if not ok then return nil, err end
  return flush()
end

-- ngx and ngx.semaphore where light threads can run (a timer, a request),
-- else nil: outside nginx the pages come, then go to the store, in turn
local THREAD_PHASES = { timer = true, content = true, rewrite = true, access = true }
local function threads()
  local ngx = rawget(_G, "ngx")
  if not (ngx and ngx.thread and ngx.get_phase and THREAD_PHASES[ngx.get_phase()]) then return nil end
  local ok, semaphore = pcall(require, "ngx.semaphore")
  if not ok then return nil end
  return ngx, semaphore
end

-- feed, inside nginx: a light thread pages the platform (its `concurrency`
-- pages in flight) while APPLIERS others write what came to the store, so
-- that a sync takes the longer of the two, not their sum.  At most `depth`
-- batches of 100 wait between them; a failure on either side stops both.
-- Two appliers: a Redis store's batch is two round trips (its MGET, its
-- script) with the client's decision between them; one applier left Redis
-- and this worker each idle while the other worked, and a loaded machine's
-- scheduling lengthened every round trip.  Two batches in flight keep both
-- busy; their scripts run in Redis one at a time, and a device in both (a
-- page shift) is decided by the compare-and-set (kinot.fleet.redis_store).
-- The local stores' writes never wait: one applier runs at a time.
local APPLIERS = 2
local function feed_overlapped(ngx, semaphore, twin, kind, each, closer, report, listed, depth)
  local queue, head, tail = {}, 1, 0 -- the batches waiting: queue[head .. tail]
  local ready, room = semaphore.new(0), semaphore.new(depth)
  local done, stop, failed = false, false, nil
  local producer = ngx.thread.spawn(function()
    local ok, err = pcall(function()
      local batch = {}
      for obj in each do
        if stop then return end
        batch[#batch + 1] = obj
        if #batch >= 100 then
          while not room:wait(1) do
            if stop then return end
          end
          if stop then return end
          tail = tail + 1
          queue[tail] = batch
          batch = {}
          ready:post(1)
        end
      end
      if #batch > 0 then
        tail = tail + 1
        queue[tail] = batch
      end
    end)
    closer:close() -- in this thread, the one that started the paging (nginx: its light threads)
    if not ok then failed = err end
    done = true
    ready:post(APPLIERS)
  end)
  local err
  local function applier()
    local ok, raised = pcall(function()
      while not err do
        local batch = queue[head]
        if batch then
          queue[head] = nil
          head = head + 1
          room:post(1)
          for i = 1, #batch do
            if batch[i].sn ~= nil then listed[batch[i].sn] = true end -- (one without a serial: counted unordered)
          end
          report[kind .. "s"] = report[kind .. "s"] + #batch
          local fine, e = put(twin, kind, batch, report)
          if not fine then
            err = err or e
            ready:post(APPLIERS) -- (the other applier, waiting, stops)
          end
        elseif done then
          return
        else
          ready:wait(1)
        end
      end
    end)
    if not ok then -- (a raised error, a bug: the sync fails with it, not a batch silently lost)
      err = err or (type(raised) == "table" and raised or errors.new("internal", "kinot.fleet: sync: " .. tostring(raised)))
      ready:post(APPLIERS)
    end
  end
  local others = {}
  for i = 2, APPLIERS do others[i - 1] = ngx.thread.spawn(applier) end
  applier()
  for i = 1, #others do ngx.thread.wait(others[i]) end
  stop = true
  room:post(depth)
  ngx.thread.wait(producer)
  if err then return nil, err end
  if failed then return nil, failed end
  return true
end

-- listed_at: when the listing began (a device a callback brought since is
-- not judged by it: the platform may have registered it after its page)
local function mark_gone(twin, kind, listed, report, listed_at)
  local gone, err = twin.store:sns(kind, listed) -- those held the platform no longer lists
  if not gone then return nil, err end
  local events
  events, err = twin:gone(gone, listed_at)
  if not events then return nil, err end
  report.gone = report.gone + #events
  report.changes = report.changes + #events
  return true
end

--- run(twin, client, opts) -> report | nil, err (err.report: what was done)
-- report: { locks, sensors, dtus (devices read), added, applied, missed,
-- older, duplicate, unordered (left out: no serial or no updated_at to
-- order), unordered_sns (the first 10 of their serials), gone, stale,
-- changes, started_at, duration }
function M.run(twin, client, opts)
  opts = validate.options(opts or {}, KNOWN, "kinot.fleet: sync")
  if type(client) ~= "table" or type(client.each_locker) ~= "function" then
    errors.misuse("kinot.fleet: sync needs a kinot client (kinot.new{...})")
  end
  local dtus = opts.dtus or {}
  if type(dtus) ~= "table" then errors.misuse("kinot.fleet: sync's dtus must be a list of serials") end
  for i = 1, #dtus do validate.sn(dtus[i], "dtus[" .. i .. "]") end
  local each = { concurrency = opts.concurrency or 1, limit = opts.limit or 100 }
  local started = twin.clock()
  local report = { locks = 0, sensors = 0, dtus = 0, added = 0, applied = 0, missed = 0, older = 0, duplicate = 0,
                   unordered = 0, unordered_sns = {}, gone = 0, stale = 0, changes = 0, started_at = iso(started) }
  local function fail(err)
    report.duration = twin.clock() - started
    if type(err) == "table" then err.report = report end
    return nil, err
  end
  for _, kind in ipairs { "lock", "sensor" } do
    local listed, listed_at = {}, twin.clock()
    -- (closer: a store that fails stops the paging with the pages still out)
    local iterator, closer = paging(client, kind, each)
    local ngx, semaphore = threads()
    local ok, err
    if ngx then
      ok, err = feed_overlapped(ngx, semaphore, twin, kind, iterator, closer, report, listed,
        2 * each.concurrency * math.ceil(each.limit / 100))
    else
      ok, err = feed(twin, kind, iterator, report, listed)
      closer:close()
    end
    if not ok then return fail(err) end
    ok, err = mark_gone(twin, kind, listed, report, listed_at)
    if not ok then return fail(err) end
  end
  local found, missing, dtus_at = {}, {}, twin.clock()
  for i = 1, #dtus do
    local d, err = client:dtu_device(dtus[i])
    if d then
      found[#found + 1] = d
      report.dtus = report.dtus + 1
    elseif err.kind == "not_found" then
      missing[#missing + 1] = dtus[i]
    else
      return fail(err)
    end
  end
  if #found > 0 then
    local ok, err = put(twin, "dtu", found, report)
    if not ok then return fail(err) end
  end
  local events, err = twin:gone(missing, dtus_at)
  if not events then return fail(err) end
  report.gone = report.gone + #events
  events, err = twin:sweep()
  if not events then return fail(err) end
  report.stale = #events
  report.changes = report.changes + #events
  local ok
  ok, err = twin.store:set_meta("settings", json.encode(twin:settings()))
  if not ok then return fail(err) end
  ok, err = twin.store:set_meta("synced_at", iso(twin.clock()))
  if not ok then return fail(err) end
  report.duration = twin.clock() - started
  return report
end

return M
