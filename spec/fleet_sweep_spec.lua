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

describe("kinot.fleet's sweep in nginx's shared dict #nginx", function()
  local H = require "helpers"

  it("pauses for the worker's other requests without a warning in the log for each pause", function()
    -- 6,000 devices, 3 of them old: the pass over the 6,000 takes well
    -- over the 2 ms after which it pauses (it paused every 2,000 devices
    -- with ngx.sleep(0), which Debian's nginx runs, without the
    -- delayed-events patch, logging a warning each time)
    local ng = H.nginx {
      http = "lua_shared_dict kinot_fleet 64m; lua_shared_dict out 1m;",
      server = [[
        location = /sweep { content_by_lua_block {
          local now = 1796083200
          local function twin(at)
            return require("kinot.fleet").new { store = "shared", stale_after = 100, clock = function() return at end }
          end
          local t = twin(now)
          for first = 1, 6000, 100 do
            local page = {}
            for i = first, first + 99 do
              page[#page + 1] = { sn = 419600000 + i, car_detected = 0, locked = 1,
                                  updated_at = os.date("!%Y-%m-%dT%H:%M:%SZ", now - (i % 2000 == 0 and 50 or 0)) }
            end
            assert(t:put("lock", page, "scan"))
          end
          assert(ngx.timer.at(0, function()
            local events, err = twin(now + 60):sweep() -- the three 50 s old are 110 s old
            local got = {}
            for _, ev in ipairs(events or {}) do got[#got + 1] = ev.sn .. " " .. ev.change end
            ngx.shared.out:set("swept", events and table.concat(got, ",") or ("failed: " .. tostring(err)))
          end))
          ngx.say("started")
        } }
        location = /swept { content_by_lua_block { ngx.say(ngx.shared.out:get("swept") or "") } }
      ]],
    }
    finally(function() ng.stop() end)
    assert.are.equal(200, H.raw("GET", ng.url .. "/sweep").status)
    local swept
    H.wait_for(function()
      swept = H.raw("GET", ng.url .. "/swept").body:gsub("\n$", "")
      return swept ~= ""
    end, 20)
    assert.are.equal("419602000 stale,419604000 stale,419606000 stale", swept, ng.log())
    assert.is_nil(ng.log():find("ngx.sleep(0)", 1, true), ng.log())
  end)
end)

describe("kinot.fleet's sweep cache in nginx's shared dict #nginx", function()
  local H = require "helpers"

  it("finds a device another worker's scan brought back with an older updated_at", function()
    -- two twins over one dict, as two workers hold them: A's sweep skips a
    -- device whose updated_at it knows to be young, and a gone device a
    -- scan brings back is the one way a record's updated_at goes down
    local ng = H.nginx {
      http = "lua_shared_dict kinot_fleet 8m;",
      server = [[
        location = /back { content_by_lua_block {
          local fleet = require "kinot.fleet"
          local now = 1796083200
          local clock = now
          local a = fleet.new { store = "shared", stale_after = 100, clock = function() return clock end }
          local b = fleet.new { store = "shared", stale_after = 100, clock = function() return clock end }
          local function lock(sn, age)
            return { sn = sn, car_detected = 0, locked = 1, updated_at = os.date("!%Y-%m-%dT%H:%M:%SZ", now - age) }
          end
          assert(a:put("lock", { lock(419600001, 10), lock(419600002, 10) }, "scan"))
          assert(#assert(a:sweep()) == 0)           -- A knows both 10 s old
          assert(a:gone { 419600001 })
          local out = assert(b:put("lock", { lock(419600001, 90) }, "scan")) -- back, 90 s old: not stale yet
          clock = now + 20                           -- 110 s old now; A last saw it 30 s old
          local got = {}
          for _, ev in ipairs(assert(a:sweep())) do got[#got + 1] = ev.sn .. " " .. ev.change end
          ngx.say(out[1].verdict, ": ", table.concat(got, ","), "; ", a:device(419600001).stale)
        } }
      ]],
    }
    finally(function() ng.stop() end)
    local res = H.raw("GET", ng.url .. "/back")
    assert.are.equal("applied: 419600001 stale; true\n", res.body, ng.log())
  end)
end)
