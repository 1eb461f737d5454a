-- The local stores' sweep reads updated_at from each device's flags text
-- ("|...|t=T|") rather than decoding every record: the same devices found
-- stale as by their records, a text written before it held t= still read
-- through its record, a stale or gone device never marked again.
local fleet = require "kinot.fleet"

describe("kinot.fleet's sweep over the local stores #unit", function()
  it("finds the devices turned stale, by the flags text or (an older text) the record", function()
    local now = 1796083200
    local twin = fleet.new { store = "table", stale_after = 100, clock = function() return now end }
    local function lock(sn, age)
      return { sn = sn, car_detected = 0, locked = 1,
               updated_at = os.date("!%Y-%m-%dT%H:%M:%SZ", now - age) }
    end
    assert(twin:put("lock", { lock(419600001, 10), lock(419600002, 50), lock(419600003, 90), lock(419600004, 95) },
      "scan"))
    assert(twin:gone { 419600004 })
    local b = twin.store.b
    assert.matches("|t=" .. (now - 90) .. "|", b:flags_of(419600003), 1, true)
    -- a text as an earlier version wrote it: no t=
    b.flags[419600002] = b.flags[419600002]:gsub("t=%d+|$", "")
    now = now + 60
    local events = assert(twin:sweep())
    local stale = {}
    for _, ev in ipairs(events) do stale[#stale + 1] = ev.sn .. " " .. ev.change end
    assert.are.same({ "419600003 stale", "419600002 stale" }, stale)
    assert.are.same({}, assert(twin:sweep()))
    assert.are.equal(2, twin:summary().stale)
  end)
end)
