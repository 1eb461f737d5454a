-- kinot.fleet against `kinot sim` (1,000 locks, 500 sensors, 5 DTUs): the
-- first sync against a full scan's own count, drift no callback told of
-- found by the next sync, real signed callbacks applied in and out of
-- order, and two twins on one real redis-server answering alike.
local fleet = require "kinot.fleet"
local callback = require "kinot.callback"
local H = require "helpers"
local R = require "redis_server"

local DTUS = { 644200001, 644200002, 644200003, 644200004, 644200005 }

-- a full scan's own count of the occupied spaces (no twin involved)
local function scan_count(client)
  local occupied, total = 0, 0
  for _, each in ipairs { client.each_locker, client.each_sensor } do
    for d in each(client, { limit = 100, concurrency = 4 }) do
      total = total + 1
      if d.car_detected == 1 then occupied = occupied + 1 end
    end
  end
  return occupied, total
end

describe("kinot.fleet against the simulator #sim #redis #nginx", function()
  local sim, client, rs, rcv
  setup(function()
    sim = H.sim { locks = 1000, sensors = 500, dtus = 5 }
    client = sim.client()
    rs = R.start()
    rcv = H.receiver()
  end)
  teardown(function()
    if sim then sim.stop() end
    if rs then rs.stop() end
    if rcv then rcv.stop() end
  end)
  before_each(function() sim.reset() end)

  for _, store in ipairs { "table", "redis" } do
    it("after the first sync, occupancy equals a full scan's count exactly (" .. store .. ")", function()
      local twin = fleet.new { store = store, redis = rs.url, prefix = "first:" .. store .. ":" }
      local report = assert(twin:sync(client, { dtus = DTUS, concurrency = 4 }))
      assert.are.same({ 1000, 500, 5, 1505, 0, 0 },
        { report.locks, report.sensors, report.dtus, report.added, report.missed, report.changes })
      local occupied, total = scan_count(client)
      local s = assert(twin:summary())
      assert.are.equal(occupied, s.occupancy.occupied)
      assert.are.equal(total, s.occupancy.total)
      assert.are.same({ locks = 1000, sensors = 500, dtus = 5, gone = 0 }, s.devices)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT", s.synced_at)
      -- the simulator stamps its devices in March 2019: a day silent, every one is stale
      assert.are.equal(1505, s.stale)
      -- the free spaces, listed from the twin, are the rest
      local free = assert(twin:devices { occupied = false, limit = 1 })
      assert.are.equal(total - occupied, free.total)
      -- a second sync finds nothing new
      report = assert(twin:sync(client, { dtus = DTUS, concurrency = 4 }))
      assert.are.same({ 0, 0, 1505, 0 }, { report.added, report.missed, report.duplicate, report.changes })
    end)
  end

  it("with no callback delivered while 30 devices change, the next sync finds them all (missed) and emits their changes",
    function()
      local events = {}
      local twin = fleet.new { store = "table", on_change = function(ev) events[#events + 1] = ev end }
      assert(twin:sync(client, { dtus = DTUS, concurrency = 4 }))
      local before = {}
      -- no callback URL is set: the simulator tells nobody of these changes
      local doc = sim.call("POST", "/drift", { count = 30 })
      assert.are.equal(30, #doc.changed)
      local flips, unique = {}, 0
      for _, sn in ipairs(doc.changed) do
        if not flips[sn] then
          unique = unique + 1
          before[sn] = twin:device(sn).state.car_detected
        end
        flips[sn] = (flips[sn] or 0) + 1
      end
      assert.are.equal(0, sim.counters().callbacks.sent)
      events = {}
      local report = assert(twin:sync(client, { dtus = DTUS, concurrency = 4 }))
      -- every device drift touched has a newer updated_at: each is a miss
      assert.are.equal(unique, report.missed)
      assert.are.equal(unique, twin:summary().missed)
      -- the changes: the simulator's devices were stamped in 2019 (stale since the first
      -- sync), each drift touched is alive again, and one flipped an odd number of
      -- times is occupied <-> free now
      local want, got, odd = {}, {}, 0
      for sn, n in pairs(flips) do
        want[#want + 1] = sn .. " alive scan"
        if n % 2 == 1 then
          odd = odd + 1
          want[#want + 1] = sn .. " " .. (before[sn] == 1 and "free" or "occupied") .. " scan"
        end
      end
      for _, ev in ipairs(events) do got[#got + 1] = ev.sn .. " " .. ev.change .. " " .. ev.source end
      table.sort(want)
      table.sort(got)
      assert.are.same(want, got)
      assert.is_true(odd >= 20, "drift chose too few distinct devices: " .. odd)
      -- and the twin agrees with the platform device by device
      for sn in pairs(flips) do
        local kind = sn < 419800000 and "locker" or "sensor"
        assert.are.equal(assert(client[kind](client, sn)).car_detected, twin:device(sn).state.car_detected)
      end
      local occupied = scan_count(client)
      assert.are.equal(occupied, twin:summary().occupancy.occupied)
    end)

  it("applies real signed callbacks, and an out-of-order one never moves a device back", function()
    local twin = fleet.new { store = "table" }
    assert(twin:sync(client, { dtus = DTUS }))
    assert(client:set_notifications { device_type = "lock", status_changed_callback_url = rcv.url .. "/cb" })
    local sn = 419600007
    local function received()
      return H.json("GET", rcv.url .. "/received")
    end
    local start = #received()
    sim.call("POST", "/devices/" .. sn, { car_detected = 1, locked = 1 })
    -- the platform stamps to the second: the second change is a second later
    require("kinot.core").sleep(1.1)
    sim.call("POST", "/devices/" .. sn, { car_detected = 0, locked = 0 })
    local bodies = H.wait_for(function()
      local all = received()
      return #all >= start + 2 and all
    end, 5)
    assert.is_table(bodies, "the simulator's callbacks did not arrive")
    local first = assert(callback.verify(bodies[start + 1], { secret = sim.app_secret }))
    local second = assert(callback.verify(bodies[start + 2], { secret = sim.app_secret }))
    assert.are.equal(1, first.data.car_detected)
    assert.are.equal(0, second.data.car_detected)
    -- delivered out of order: the newer first
    assert.are.equal("applied", (twin:apply(second)))
    local verdict, events = twin:apply(first)
    assert.are.equal("older", verdict)
    assert.are.same({}, events)
    local d = twin:device(sn)
    assert.are.equal(0, d.state.car_detected)
    assert.are.equal(0, d.state.locked)
    assert.are.equal(second.data.updated_at, d.updated_at)
    assert.are.equal(1, twin:summary().updates.out_of_order)
    -- a redelivery of the newest is a duplicate, and the next sync finds nothing missed
    assert.are.equal("duplicate", (twin:apply(second)))
    local report = assert(twin:sync(client, { dtus = DTUS }))
    assert.are.equal(0, report.missed)
    -- a command_resp is not a state: ignored
    assert.are.equal("ignored", (twin:apply { kind = "command_resp", device = "lock", sn = sn, data = {} }))
  end)

  it("is fed by a receiver given fleet = twin; a twin that cannot store fails the delivery (no 200)", function()
    assert(client:set_notifications { device_type = "lock", status_changed_callback_url = rcv.url .. "/cb" })
    local sn = 419600011
    local start = #H.json("GET", rcv.url .. "/received")
    sim.call("POST", "/devices/" .. sn, { car_detected = 1 })
    local bodies = H.wait_for(function()
      local all = H.json("GET", rcv.url .. "/received")
      return #all > start and all
    end, 5)
    assert.is_table(bodies, "the simulator's callback did not arrive")
    local body = bodies[start + 1]
    -- the twin alone (no on_status), the handler's default ack
    local twin = fleet.new { store = "table" }
    local r = callback.receiver { secret = sim.app_secret, ack = "after_handler", fleet = twin }
    local status = r:receive(body)
    assert.are.equal(200, status)
    assert.are.equal(1, twin:device(sn).state.car_detected)
    assert.are.equal("callback", twin:device(sn).source)
    -- a Redis twin whose server is gone: the delivery fails, on_status is not reached, nothing is acknowledged
    local dead = R.start()
    local broken = fleet.new { store = "redis", redis = dead.url, prefix = "wired:" }
    dead.stop()
    local called = false
    r = callback.receiver { secret = sim.app_secret, ack = "after_handler", fleet = broken,
                            on_status = function() called = true end }
    status = r:receive(body)
    assert.are.equal(500, status)
    assert.is_false(called)
    -- misuse: fleet must be a twin
    assert.has_error(function() callback.receiver { secret = "s", fleet = {} } end)
  end)

  it("marks a device the platform no longer lists as gone, and keeps it", function()
    local events = {}
    local twin = fleet.new { store = "table", on_change = function(ev) events[#events + 1] = ev end }
    assert(twin:sync(client, { dtus = DTUS }))
    sim.call("POST", "/fleet", { locks = 998, sensors = 500, dtus = 4 })
    events = {}
    local report = assert(twin:sync(client, { dtus = DTUS }))
    assert.are.equal(3, report.gone)
    local got = {}
    for _, ev in ipairs(events) do got[#got + 1] = ev.sn .. " " .. ev.change end
    table.sort(got)
    assert.are.same({ "419600999 gone", "419601000 gone", "644200005 gone" }, got)
    assert.is_true(twin:device(419601000).gone)
    local s = twin:summary()
    assert.are.same({ locks = 998, sensors = 500, dtus = 4, gone = 3 }, s.devices)
    assert.are.equal(1498, s.occupancy.total)
  end)

  it("a scan cut short by an error marks nothing gone", function()
    local twin = fleet.new { store = "table" }
    assert(twin:sync(client, { dtus = DTUS }))
    sim.fault { kind = "status", status = 500, endpoint = "GET /sensors", share = 1 }
    local report, err = twin:sync(sim.client { retries = 0 }, { dtus = DTUS })
    sim.call("DELETE", "/faults")
    assert.is_nil(report)
    assert.is_table(err.report)
    assert.are.equal(0, err.report.gone)
    assert.are.same({ locks = 1000, sensors = 500, dtus = 5, gone = 0 }, twin:summary().devices)
  end)

  it("two twins on one Redis answer the same summary and read each other's changes", function()
    local a = fleet.new { store = "redis", redis = rs.url, prefix = "two:" }
    local b = fleet.new { store = "redis", redis = rs.client(), prefix = "two:" }
    assert(a:sync(client, { dtus = DTUS, concurrency = 4 }))
    assert.are.same(a:summary(), b:summary())
    sim.call("POST", "/drift", { count = 10 })
    local report = assert(b:sync(client, { dtus = DTUS, concurrency = 2 }))
    assert.is_true(report.missed > 0)
    local sa, sb = a:summary(), b:summary()
    assert.are.same(sa, sb)
    assert.are.equal(report.missed, sa.missed)
    local occupied = scan_count(client)
    assert.are.equal(occupied, sa.occupancy.occupied)
    -- the stream of changes: what b's sync found, a reads
    local seen = a:changes(nil, 1000)
    assert.are.equal(report.changes, #seen.changes)
    local again = a:changes(seen.next, 1000)
    assert.are.same({}, again.changes)
  end)
end)
