-- A pager loop left by a plain `break` under LuaJIT (no to-be-closed
-- variables: the closer is not called) leaves its stream suspended: its
-- curl multi (a wakeup socket pair) and the connections of the pages out,
-- until the GC collects the iterator.  The GC paces itself by Lua memory,
-- not by descriptors: with a large heap, loop after loop could pile up
-- hundreds of them (EMFILE).  Each new stream on a handle with others open
-- collects first past a bound, so the descriptors stay bounded however
-- rarely the GC would run.  Under Lua 5.4 the `for` closes the stream
-- itself: the same bound holds trivially.  Nothing left out is sent again,
-- and the next request and the next loop on the client are right.
local H = require "helpers"

local LOCKS, LIMIT, CONCURRENCY = 300, 10, 8

local function open_fds()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("*l"):match("^%d+")
  f:close()
  local p = io.popen("ls /proc/" .. pid .. "/fd | wc -l")
  local n = tonumber(p:read("*l"))
  p:close()
  return n
end

describe("a pager loop left by break #sim", function()
  local sim
  setup(function() sim = H.sim { locks = LOCKS, sensors = 10 } end)
  teardown(function() sim.stop() end)

  it("holds a bounded number of descriptors however rarely the GC runs; nothing is asked twice", function()
    local c = sim.client { timeout = 10, paging = "page0" } -- (no probe of the reading: pages counted)
    -- a large live heap: the GC's next cycle waits for as much again to be
    -- allocated, far more than the loops below allocate
    local ballast = {}
    for i = 1, 400000 do ballast[i] = { i } end
    collectgarbage()
    local base = open_fds()
    local loops = 100
    for _ = 1, loops do
      local k = 0
      -- page 0, then up to pages 1..8 out; page 1 handed over; the loop
      -- leaves in it, the pages after it still out
      for _ in c:each_locker { concurrency = CONCURRENCY, limit = LIMIT } do
        k = k + 1
        if k >= LIMIT + 5 then break end
      end
    end
    local held = open_fds() - base
    -- the bound: kinot.core collects once 4 streams are open on a handle,
    -- each holding its socket pair and the pages out; and a margin of 10
    local bound = 5 * (2 + CONCURRENCY) + 10
    assert.is_true(held <= bound, held .. " descriptors held after " .. loops .. " loops left by break (bound " ..
      bound .. ", runtime " .. H.runtime .. ")")
    -- a page left out is never asked again, nor anything after the loop:
    -- not when the GC collects what was left, nor later
    local asked = sim.counters().endpoints["GET /lockers"]
    assert.is_true(asked <= loops * (1 + CONCURRENCY), asked .. " pages asked")
    collectgarbage()
    collectgarbage()
    require("kinot.core").sleep(0.3)
    assert.are.equal(asked, sim.counters().endpoints["GET /lockers"])
    -- the client is whole: one device, then a whole loop
    assert.are.equal(419600001, assert(c:locker(419600001)).sn)
    local n = 0
    for _ in c:each_locker { concurrency = CONCURRENCY, limit = 100 } do n = n + 1 end
    assert.are.equal(LOCKS, n)
    assert.is_true(#ballast > 0)
  end)

  it("closer:close() after the loop ends the stream at once, however many answers had come together", function()
    local c = sim.client { timeout = 10, paging = "page0" } -- (no probe of the reading: pages counted)
    collectgarbage("stop") -- (nothing left to the GC here: the closer ends it all)
    local ok, err = pcall(function()
      local base = open_fds()
      for _ = 1, 40 do
        local iter, _, _, closer = c:each_locker { concurrency = CONCURRENCY, limit = LIMIT }
        local k = 0
        for _ in iter do
          k = k + 1
          if k >= LIMIT + 5 then break end
        end
        closer:close()
      end
      local held = open_fds() - base
      -- the handle's warm stream (its socket pair) and the connections kept alive
      assert.is_true(held <= 2 + CONCURRENCY + 2, held .. " descriptors held after 40 loops closed (runtime " ..
        H.runtime .. ")")
    end)
    collectgarbage("restart")
    assert(ok, err)
  end)
end)
