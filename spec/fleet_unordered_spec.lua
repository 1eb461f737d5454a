-- A device the twin cannot order (its updated_at null or unparsable, or no
-- serial) must not blind a scan to the rest of the fleet: against `kinot
-- sim`, one lock, one sensor and one DTU turned unorderable are left out of
-- the sync (counted `unordered`, named in `unordered_sns`), never marked
-- gone, and every other device is in the twin; a callback with such an
-- update is still refused (nil, err).
local fleet = require "kinot.fleet"
local json = require "kinot.json"
local H = require "helpers"
local R = require "redis_server"

local DTUS = { 644200001, 644200002, 644200003, 644200004, 644200005 }
local ODD = { [419600002] = true, [419800007] = true, [644200002] = true }

-- a full scan's own count of the occupied spaces, without the odd devices
local function scan_count(client)
  local occupied, total = 0, 0
  for _, each in ipairs { client.each_locker, client.each_sensor } do
    for d in each(client, { limit = 100, concurrency = 4 }) do
      if not ODD[tonumber(d.sn)] then
        total = total + 1
        if d.car_detected == 1 then occupied = occupied + 1 end
      end
    end
  end
  return occupied, total
end

local function make_odd(sim)
  sim.call("POST", "/devices/419600002", { updated_at = json.null })
  sim.call("POST", "/devices/419800007", { updated_at = "yesterday, around noon" })
  sim.call("POST", "/devices/644200002", { updated_at = json.null })
end

local function sorted(list)
  local c = {}
  for i = 1, #list do c[i] = list[i] end
  table.sort(c)
  return c
end

describe("kinot.fleet: a scan with devices the twin cannot order #sim #redis #nginx", function()
  local sim, client, rs
  setup(function()
    sim = H.sim { locks = 1000, sensors = 500, dtus = 5 }
    client = sim.client()
    rs = R.start()
  end)
  teardown(function()
    if sim then sim.stop() end
    if rs then rs.stop() end
  end)
  before_each(function() sim.reset() end)

  for _, store in ipairs { "table", "redis" } do
    it("a first sync applies every other device and counts the odd ones unordered (" .. store .. ")", function()
      make_odd(sim)
      local twin = fleet.new { store = store, redis = rs.url, prefix = "unordered1:" .. store .. ":" }
      local report, err = twin:sync(client, { dtus = DTUS, concurrency = 4 })
      assert.is_nil(err)
      assert.are.same({ 1000, 500, 5, 1502, 3, 0 },
        { report.locks, report.sensors, report.dtus, report.added, report.unordered, report.gone })
      assert.are.same({ 419600002, 419800007, 644200002 }, sorted(report.unordered_sns))
      local occupied, total = scan_count(client)
      local s = assert(twin:summary())
      assert.are.equal(occupied, s.occupancy.occupied)
      assert.are.equal(total, s.occupancy.total)
      assert.are.same({ locks = 999, sensors = 499, dtus = 4, gone = 0 }, s.devices)
      assert.is_nil(twin:device(419600002))
      assert.is_nil(twin:device(644200002))
      assert.is_table(twin:device(419600003))
    end)

    it("a device held that turns unorderable is left as it was, not marked gone (" .. store .. ")", function()
      local twin = fleet.new { store = store, redis = rs.url, prefix = "unordered2:" .. store .. ":" }
      assert(twin:sync(client, { dtus = DTUS, concurrency = 4 }))
      local held = twin:device(419600002)
      make_odd(sim)
      sim.call("POST", "/devices/419600003", { car_detected = 1 - twin:device(419600003).state.car_detected })
      local report, err = twin:sync(client, { dtus = DTUS, concurrency = 4 })
      assert.is_nil(err)
      assert.are.same({ 3, 0, 0 }, { report.unordered, report.gone, report.added })
      assert.are.equal(1, report.missed) -- 419600003's change still came through
      assert.is_falsy(twin:device(419600002).gone)
      assert.is_falsy(twin:device(644200002).gone)
      assert.are.equal(held.updated_at, twin:device(419600002).updated_at)
      local occupied, total = scan_count(client)
      local s = assert(twin:summary())
      assert.are.same({ locks = 1000, sensors = 500, dtus = 5, gone = 0 }, s.devices)
      -- the two odd spaces are held as they were: the rest as the platform has them
      local odd_occupied = 0
      for _, sn in ipairs { 419600002, 419800007 } do
        if twin:device(sn).state.car_detected == 1 then odd_occupied = odd_occupied + 1 end
      end
      assert.are.equal(occupied + odd_occupied, s.occupancy.occupied)
      assert.are.equal(total + 2, s.occupancy.total)
    end)
  end

  it("names at most 10 serials, counts them all", function()
    for i = 1, 12 do
      sim.call("POST", "/devices/" .. (419600100 + i), { updated_at = json.null })
    end
    local twin = fleet.new { store = "table" }
    local report = assert(twin:sync(client, { dtus = DTUS }))
    assert.are.equal(12, report.unordered)
    assert.are.equal(10, #report.unordered_sns)
    assert.are.same({ locks = 988, sensors = 500, dtus = 5, gone = 0 }, twin:summary().devices)
  end)

  it("a callback with an update it cannot order is refused; a device without a serial too", function()
    local twin = fleet.new { store = "table" }
    local verdict, err = twin:apply { kind = "status_changed", device = "lock", verified = true,
      data = { sn = 419600002, car_detected = 1, updated_at = json.null } }
    assert.is_nil(verdict)
    assert.are.equal("decode", err.kind)
    verdict, err = twin:apply { kind = "status_changed", device = "lock", verified = true,
      data = { car_detected = 1, updated_at = "2019-03-01T10:00:00Z" } }
    assert.is_nil(verdict)
    assert.are.equal("decode", err.kind)
  end)

  it("twin:put from a scan answers one result a device, in order, the odd ones unordered", function()
    local twin = fleet.new { store = "table" }
    local out = assert(twin:put("lock", {
      { sn = 419600001, car_detected = 1, updated_at = "2019-03-01T10:00:00Z" },
      { car_detected = 1, updated_at = "2019-03-01T10:00:00Z" }, -- no serial
      { sn = 419600003, car_detected = 0, updated_at = json.null },
      { sn = 419600004, car_detected = 0, updated_at = "2019-03-01T10:00:00Z" },
    }, "scan"))
    assert.are.equal(4, #out)
    assert.are.same({ "added", "unordered", "unordered", "added" },
      { out[1].verdict, out[2].verdict, out[3].verdict, out[4].verdict })
    assert.are.equal("decode", out[3].err.kind)
    assert.are.same({}, out[3].events)
    assert.are.same({ locks = 2, sensors = 0, dtus = 0, gone = 0 }, twin:summary().devices)
  end)
end)
