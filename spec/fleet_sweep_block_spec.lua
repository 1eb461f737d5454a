-- kinot.fleet's sweep over the shared dict when 20,000 devices turn stale
-- at once (a twin back after stale_after down, a platform silent a day):
-- the marking, not only the pass, pauses for the worker's other requests.
-- It blocked the worker 1.2 s here (the marks ran without a pause, and the
-- sort of the due devices wrote two serials a comparison).  A bound on how
-- long the worker is held, far above what it does now (~0.04 s) and far
-- below what it did, not a speed measurement (bench/fleet.lua is that).
local H = require "helpers"

describe("kinot.fleet's sweep marking 20,000 devices stale at once #nginx #slow", function()
  it("lets the worker's other light threads run every few milliseconds", function()
    local ng = H.nginx {
      http = "lua_shared_dict kinot_fleet 64m; lua_shared_dict out 1m;",
      server = [[
        location = /sweep { content_by_lua_block {
          local now, n = 1796083200, 20000
          local function twin(at)
            return require("kinot.fleet").new { store = "shared", stale_after = 100, clock = function() return at end }
          end
          local t = twin(now)
          for first = 1, n, 100 do
            local page = {}
            for i = first, first + 99 do
              page[#page + 1] = { sn = 419600000 + i, car_detected = 0, locked = 1,
                                  updated_at = os.date("!%Y-%m-%dT%H:%M:%SZ", now) }
            end
            assert(t:put("lock", page, "scan"))
          end
          local sweeper = twin(now + 200)
          sweeper.store:sns("lock") -- its list of serials read (once a worker; not what is measured)
          -- a light thread of the worker that wakes every millisecond, and the longest it waited
          local ticks, done = {}, false
          assert(ngx.timer.at(0, function()
            while not done do
              ngx.sleep(0.001)
              ngx.update_time()
              ticks[#ticks + 1] = ngx.now()
            end
          end))
          assert(ngx.timer.at(0.05, function()
            ngx.update_time()
            local t0 = ngx.now()
            local events, err = sweeper:sweep()
            ngx.update_time()
            local t1 = ngx.now()
            done = true
            local gap, last = 0, t0
            for _, x in ipairs(ticks) do
              if x >= t0 and x <= t1 then
                gap = math.max(gap, x - last)
                last = x
              end
            end
            gap = math.max(gap, t1 - last)
            ngx.shared.out:set("swept", events and #events or ("failed: " .. tostring(err)))
            ngx.shared.out:set("gap", gap)
          end))
          ngx.say("started")
        } }
        location = /swept { content_by_lua_block {
          ngx.say(ngx.shared.out:get("swept") or "", " ", ngx.shared.out:get("gap") or "")
        } }
      ]],
    }
    finally(function() ng.stop() end)
    assert.are.equal(200, H.raw("GET", ng.url .. "/sweep").status)
    local swept, gap
    H.wait_for(function()
      swept, gap = H.raw("GET", ng.url .. "/swept").body:match("^(%S*) (%S*)")
      return swept ~= ""
    end, 60)
    assert.are.equal("20000", swept, ng.log())
    assert.is_true(tonumber(gap) < 0.4, "the worker was held " .. gap .. " s at a time")
  end)

  it("finishes a sweep a reload (HUP) interrupts: the old worker completes it, its counts exact", function()
    local ng = H.nginx {
      http = "lua_shared_dict kinot_fleet 64m;",
      server = [[
        location = /sweep { content_by_lua_block {
          local now, n = 1796083200, 20000
          local function twin(at)
            return require("kinot.fleet").new { store = "shared", stale_after = 100, clock = function() return at end }
          end
          local t = twin(now)
          for first = 1, n, 100 do
            local page = {}
            for i = first, first + 99 do
              page[#page + 1] = { sn = 419600000 + i, car_detected = i % 2, locked = 1,
                                  updated_at = os.date("!%Y-%m-%dT%H:%M:%SZ", now) }
            end
            assert(t:put("lock", page, "scan"))
          end
          assert(ngx.timer.at(0, function()
            local events, err = twin(now + 200):sweep()
            ngx.log(ngx.WARN, "swept: ", events and #events or tostring(err))
          end))
          ngx.say(ngx.worker.pid())
        } }
        location = /summary { content_by_lua_block {
          local twin = require("kinot.fleet").new { store = "shared", stale_after = 100 }
          local s = twin:summary()
          ngx.say(ngx.worker.pid(), " ", s.stale, " ", twin:devices { stale = true, limit = 1 }.total, " ",
                  s.occupancy.occupied, " ", s.devices.locks)
        } }
      ]],
    }
    finally(function() ng.stop() end)
    local old = H.raw("GET", ng.url .. "/sweep").body:gsub("\n$", "")
    H.wait_for(function() return false end, 0.3) -- the sweep is under way
    local f = assert(io.open(ng.prefix .. "/nginx.pid"))
    local master = f:read("*l")
    f:close()
    local sent = os.execute("kill -HUP " .. master)
    assert.is_true(sent == true or sent == 0)
    -- the old worker's sweep ended (its log line), then the summary read by a new worker
    local ended = H.wait_for(function() return ng.log():find("swept: ", 1, true) end, 60)
    assert.is_truthy(ended, ng.log())
    assert.matches("swept: 20000", ng.log(), 1, true)
    local got = H.wait_for(function()
      local pid, stale, listed, occupied, locks = H.raw("GET", ng.url .. "/summary").body:match(
        "^(%d+) (%d+) (%d+) (%d+) (%d+)")
      return pid and pid ~= old and
        { stale = tonumber(stale), listed = tonumber(listed), occupied = tonumber(occupied), locks = tonumber(locks) }
    end, 10)
    assert.is_table(got, ng.log())
    assert.are.same({ stale = 20000, listed = 20000, occupied = 10000, locks = 20000 }, got)
  end)
end)
