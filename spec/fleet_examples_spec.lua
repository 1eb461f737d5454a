-- The simulator's fleet holds the platform reference's example devices
-- (lock 419631107, sensor 419635201, DTU 644219880) after the generated
-- ones: listed once, counted, found by serial as their own kind only, with
-- the reference's example values, changed like any other device.
local fleetmod = require "kinot.sim.fleet"
local json = require "cjson"

local function page(f, kind, first_row, limit)
  return json.decode(f:page_json(kind, first_row, limit))
end

describe("the simulator's fleet: the reference's example devices #unit", function()
  it("follow the generated devices, once, and count", function()
    local f = fleetmod.new { locks = 3, sensors = 2, dtus = 1, examples = true }
    local doc = page(f, "lock", 0, 100)
    assert.are.equal(4, doc.count)
    assert.are.equal(4, #doc.objects)
    assert.are.same({ 419600001, 419600002, 419600003, 419631107 },
      { doc.objects[1].sn, doc.objects[2].sn, doc.objects[3].sn, doc.objects[4].sn })
    doc = page(f, "sensor", 2, 10)
    assert.are.equal(3, doc.count)
    assert.are.equal(419635201, doc.objects[1].sn)
    -- a page past the end is empty
    assert.are.equal(0, #page(f, "lock", 4, 10).objects)
  end)

  it("carry the reference's example values, in its field order", function()
    local f = fleetmod.new { locks = 1, sensors = 1, dtus = 1, examples = true }
    local d, kind = f:get(419631107)
    assert.are.equal("lock", kind)
    assert.are.equal('{"sn":419631107,"voltage":3.659,"frequency":37.919,"locked":0,"car_detected":0,' ..
      '"shell_opened":0,"low_battery":0,"coil_fault":0,"bar_position_error":0,"motor_fail":0,"rs_si":0,' ..
      '"bt_match_code":"61518-59257-29505-55487-10411-15740","bt_mac":"aa0018382001",' ..
      '"updated_at":"2019-03-13T10:42:39+08:00"}', f:render_device(kind, d))
    d, kind = f:get(419635201)
    assert.are.equal("sensor", kind) -- its serial lies among the lock numbers: the example says sensor
    assert.are.equal(-109.5, d.rs_si)
    d, kind = f:get(644219880)
    assert.are.equal("dtu", kind)
    assert.are.equal("218.204.252.18:44062", d.host)
  end)

  it("change like any device, and the example table is not touched", function()
    local f = fleetmod.new { locks = 1, sensors = 1, dtus = 1, examples = true }
    local d = assert(f:change(419631107, { locked = 1 }))
    assert.are.equal(1, d.locked)
    assert.are.equal(1, f:get(419631107).locked)
    assert.are.equal(1, page(f, "lock", 0, 10).objects[2].locked)
    assert.are.equal(0, fleetmod.EXAMPLES.lock[1].locked)
    assert.are.equal(0, fleetmod.new({ locks = 1, examples = true }):get(419631107).locked)
  end)

  it("are the generated device where one has their serial: never listed twice", function()
    local f = fleetmod.new { locks = 35201, sensors = 1, dtus = 1, examples = true }
    assert.are.equal(35201, page(f, "lock", 0, 10).count)
    local d, kind = f:get(419631107)
    assert.are.equal("lock", kind)
    assert.are_not.equal("61518-59257-29505-55487-10411-15740", d.bt_match_code) -- the generated one
    -- 419635201 is now lock 35201: the example sensor steps aside
    assert.are.equal("lock", select(2, f:get(419635201)))
    assert.are.equal(1, page(f, "sensor", 0, 10).count)
    -- and when the fleet shrinks again (POST /fleet), they are back
    f.n.lock = 2
    assert.are.equal(3, f:count("lock"))
    assert.are.equal("sensor", select(2, f:get(419635201)))
  end)

  it("are not there without examples, nor with a serial of another kind", function()
    local f = fleetmod.new { locks = 1, sensors = 1, dtus = 1 }
    assert.is_nil(f:get(419631107))
    assert.are.equal(1, page(f, "lock", 0, 10).count)
    f = fleetmod.new { locks = 1, sensors = 1, dtus = 1, examples = true }
    assert.is_nil(f:get(419631108))
    assert.is_nil(f:change(419631108, { locked = 1 }))
  end)
end)
