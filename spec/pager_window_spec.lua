-- each_locker / each_sensor keep `concurrency` pages always in flight (a
-- sliding window over request.stream) and still keep every promise of the
-- pager (docs/paging.md): devices in order, each once, the end found by the
-- first page's count with no page asked past it, a failure stops the
-- iteration with nothing after it delivered, a loop left early (its closer)
-- leaves nothing running, an eager GC changes nothing.  Both transports:
-- curl (a script) and nginx light threads.  Every request count is the
-- simulator's.
local H = require "helpers"

local LOCKS, LIMIT = 237, 10
local PAGES = math.ceil(LOCKS / LIMIT)
local FIRST = 419600000

describe("pager's sliding window #sim #nginx", function()
  local sim
  setup(function()
    sim = H.sim { locks = LOCKS, sensors = 95, dtus = 1 }
    sim.call("POST", "/config", { paging = "page0", page1_zero = "clamp", offset_bound = false })
  end)
  teardown(function() sim.stop() end)
  after_each(function() sim.call("DELETE", "/faults") end)

  local function lockers_asked()
    local n = 0
    for k, v in pairs(sim.counters().requests) do
      if k:find("^GET /lockers") then n = n + v end
    end
    return n
  end

  -- the devices as a list of serials, checked in order and once each
  local function in_order(list, n)
    assert.are.equal(n, #list)
    for i = 1, n do assert.are.equal(FIRST + i, list[i]) end
  end

  it("asks the next page as soon as one is in: the others of a window are handed over before a slow one is in",
    function()
      -- after page 0 (alone), pages 1..4 go at once; the first three the
      -- simulator takes are quick, the fourth takes 0.6 s.  Rounds of 4
      -- (the pager before) ask nothing more until the slow one is in (5
      -- requests); a window asks one for each page handed over before it.
      -- (which of the four the simulator takes last is the network's: when
      -- it is page 1, the window waits for it too; up to three tries, where
      -- rounds of 4 give 5 every time)
      local tries = {}
      for _ = 1, 3 do
        local c = sim.client { paging = "page0" }
        local events = {}
        c.on_event = function(ev)
          if ev.type == "request" or ev.type == "response" then events[#events + 1] = ev end
        end
        local list = {}
        for d in c:each_locker { limit = LIMIT, concurrency = 4, on_page = function(done)
          if done == 1 then
            sim.fault { kind = "latency", latency = 0, next = 3, endpoint = "GET /lockers" }
            sim.fault { kind = "latency", latency = 0.6, next = 1, endpoint = "GET /lockers" }
          end
        end } do list[#list + 1] = d.sn end
        c:close()
        in_order(list, LOCKS)
        local asked = 0
        for _, ev in ipairs(events) do
          if ev.type == "request" then asked = asked + 1 end
          if ev.type == "response" and ev.elapsed >= 0.5 then break end
        end
        tries[#tries + 1] = asked
        if asked > 5 then break end
      end
      local asked = tries[#tries]
      asked = asked > 5 and asked or 0
      assert.is_true(asked > 5, "requests before the slow page was in, each try: " .. table.concat(tries, ", "))
    end)

  for _, conc in ipairs { 1, 4, 7, 24, 64 } do
    it("asks each page once and none past the end, at concurrency " .. conc, function()
      local c = sim.client { paging = "page0" }
      local before = lockers_asked()
      local list = {}
      for d in c:each_locker { limit = LIMIT, concurrency = conc } do list[#list + 1] = d.sn end
      in_order(list, LOCKS)
      assert.are.equal(PAGES, lockers_asked() - before)
      -- a list that ends exactly on a page, and an empty one
      sim.call("POST", "/fleet", { locks = 240, sensors = 95 })
      before, list = lockers_asked(), {}
      for d in c:each_locker { limit = LIMIT, concurrency = conc } do list[#list + 1] = d.sn end
      in_order(list, 240)
      assert.are.equal(24, lockers_asked() - before)
      sim.call("POST", "/fleet", { locks = 0, sensors = 95 })
      before = lockers_asked()
      for _ in c:each_locker { limit = LIMIT, concurrency = conc } do error("no device") end
      assert.are.equal(1, lockers_asked() - before)
      sim.call("POST", "/fleet", { locks = LOCKS, sensors = 95 })
      c:close()
    end)
  end

  it("hands the pages over in order when the first of a window is the slowest", function()
    local c = sim.client { paging = "page0" }
    local list = {}
    for d in c:each_locker { limit = LIMIT, concurrency = 8, on_page = function(done)
      if done == 1 then sim.fault { kind = "latency", latency = 0.4, next = 1, endpoint = "GET /lockers" } end
    end } do list[#list + 1] = d.sn end
    c:close()
    in_order(list, LOCKS)
  end)

  it("stops at a page that fails mid-window: the pages before it delivered, nothing after, nothing asked again",
    function()
      local c = sim.client { paging = "page0", retries = 0 }
      local list = {}
      local before = lockers_asked()
      local ok, err = pcall(function()
        for d in c:each_locker { limit = LIMIT, concurrency = 4, on_page = function(done)
          if done == 6 then
            sim.fault { kind = "status", status = 200, code = 500, message = "device busy", next = 1,
                        endpoint = "GET /lockers" }
          end
        end } do list[#list + 1] = d.sn end
      end)
      assert.is_false(ok)
      assert.matches("device busy", tostring(err.message or err))
      -- a prefix of whole pages, in order; the failed page was one of the
      -- window out when page 6 was handed over
      assert.are.equal(0, #list % LIMIT)
      assert.is_true(#list >= 6 * LIMIT and #list < 6 * LIMIT + 4 * LIMIT, "delivered " .. #list)
      in_order(list, #list)
      -- the pages asked: at most the window past the one that failed, and
      -- none after the error (a second look finds no more)
      local asked = lockers_asked() - before
      assert.is_true(asked <= #list / LIMIT + 1 + 4 + 2, "asked " .. asked) -- (+2: the diagnosis' probe)
      require("kinot.core").sleep(0.2)
      assert.are.equal(asked, lockers_asked() - before)
      c:close()
    end)

  it("a loop left early: its closer ends the pages out; the client pages on as new", function()
    local c = sim.client { paging = "page0" }
    sim.fault { kind = "latency", latency = 0.05, share = 1, endpoint = "GET /lockers" }
    local start = lockers_asked()
    local iter, _, _, closer = c:each_locker { limit = LIMIT, concurrency = 8 }
    local n = 0
    for _ in iter do
      n = n + 1
      if n == 35 then break end
    end
    closer:close()
    closer:close() -- twice: nothing more
    assert.is_nil(iter()) -- and the iterator is over
    -- (the simulator counts a request once it has answered it: those out
    -- at the close come in within their 50 ms; then nothing more)
    require("kinot.core").sleep(0.2)
    local asked = lockers_asked()
    require("kinot.core").sleep(0.3)
    assert.are.equal(asked, lockers_asked())
    assert.is_true(asked - start <= 4 + 8, "asked " .. (asked - start)) -- the 4 pages handed over, the window
    local list = {}
    for d in c:each_locker { limit = LIMIT, concurrency = 8 } do list[#list + 1] = d.sn end
    in_order(list, LOCKS)
    if _VERSION == "Lua 5.4" then
      -- the generic for's closing value: a plain break closes it
      local closed = 0
      local iter2, s, ctl, closer2 = c:each_locker { limit = LIMIT, concurrency = 8 }
      local spy = setmetatable({}, { __close = function() closed = closed + 1 closer2:close() end })
      for _ in iter2, s, ctl, spy do break end -- luacheck: ignore 512
      assert.are.equal(1, closed)
      assert.is_nil(iter2())
    end
    c:close()
  end)

  it("keeps order and count under an eager GC", function()
    if _VERSION == "Lua 5.4" then collectgarbage("generational") end
    local ok, err = pcall(function()
      local c = sim.client { paging = "page0" }
      for _, conc in ipairs { 3, 16 } do
        local list = {}
        for d in c:each_locker { limit = LIMIT, concurrency = conc, on_page = function()
          collectgarbage()
        end } do
          collectgarbage("step", 1)
          list[#list + 1] = d.sn
        end
        in_order(list, LOCKS)
        -- a loop left early, dropped without its closer: collected
        for _ in c:each_locker { limit = LIMIT, concurrency = conc } do break end -- luacheck: ignore 512
        collectgarbage()
        collectgarbage()
      end
      c:close()
    end)
    if _VERSION == "Lua 5.4" then collectgarbage("incremental") end
    assert(ok, err)
  end)

  it("does all of it inside nginx, over light threads", function()
    local ng = H.nginx { server = [[
      location = /each {
        content_by_lua_block {
          local a = ngx.req.get_uri_args()
          local c = require("kinot").new { app_key = a.key, app_secret = a.secret, endpoint = a.endpoint,
                                           paging = "page0", retries = 0 }
          local list = {}
          local asked, seen_slow = 0, false
          if a.slow then
            c.on_event = function(ev)
              if ev.type == "request" and not seen_slow then asked = asked + 1 end
              if ev.type == "response" and ev.elapsed >= 0.5 then seen_slow = true end
            end
          end
          local ok, err = pcall(function()
            local iter, _, _, closer = c:each_locker { limit = 10, concurrency = tonumber(a.conc),
              on_page = function() if a.gc then collectgarbage() end end }
            for d in iter do
              if a.gc then collectgarbage("step", 1) end
              if a.sleepy and d.sn % 10 == 0 then ngx.sleep(0.03) end -- (behind the pages: the thread ends, starts again)
              list[#list + 1] = d.sn
              if a.stop and #list == tonumber(a.stop) then break end
            end
            if a.noclose then
              -- a plain break under LuaJIT: the pages out end on their own,
              -- and nothing of theirs comes back into what follows
              ngx.sleep(0.3)
              local again = 0
              for _ in c:each_locker { limit = 10, concurrency = 4 } do again = again + 1 end
              assert(again == 237, "again " .. again)
            else
              closer:close()
            end
          end)
          local in_order = true
          for i = 1, #list do if list[i] ~= 419600000 + i then in_order = false end end
          ngx.print(#list, " ", tostring(in_order), " ", ok and "ok" or tostring(err and err.message or err),
                    a.slow and (" asked=" .. asked) or "")
          c:close()
        }
      }
      location = /beside {
        content_by_lua_block {
          -- kinot serve's sync: the pages in a light thread, the store's
          -- cosockets in this one, at once
          local a = ngx.req.get_uri_args()
          local c = require("kinot").new { app_key = a.key, app_secret = a.secret, endpoint = a.endpoint,
                                           paging = "page0" }
          local n, done, err = 0, false, nil
          local th = ngx.thread.spawn(function()
            local ok, e = pcall(function()
              for _ in c:each_locker { limit = 10, concurrency = 4 } do
                n = n + 1
                if n % 10 == 0 then ngx.sleep(0.001) end
              end
            end)
            if not ok then err = e end
            done = true
          end)
          local host, port = a.endpoint:match("^http://([^:/]+):(%d+)")
          local calls = 0
          while not done do
            local sock = ngx.socket.tcp()
            assert(sock:connect(host, tonumber(port)))
            assert(sock:send("GET /counters HTTP/1.0\r\nHost: x\r\n\r\n"))
            assert(sock:receive("*a"))
            sock:close()
            calls = calls + 1
          end
          ngx.thread.wait(th)
          ngx.print(n, " ", calls > 0 and "beside" or "alone", " ", err and tostring(err.message or err) or "ok")
          c:close()
        }
      }
    ]] }
    finally(ng.stop)
    local function each(q)
      local t0 = require("kinot.core").monotonic()
      local body = H.raw("GET", ng.url .. "/each?key=" .. sim.app_key .. "&secret=" .. sim.app_secret ..
        "&endpoint=" .. sim.endpoint .. "&" .. q).body
      return body, require("kinot.core").monotonic() - t0
    end
    for _ = 1, 3 do
      sim.fault { kind = "latency", latency = 0.005, share = 1, endpoint = "GET /lockers" }
      assert.are.equal(LOCKS .. " beside ok", H.raw("GET", ng.url .. "/beside?key=" .. sim.app_key .. "&secret=" ..
        sim.app_secret .. "&endpoint=" .. sim.endpoint).body)
      sim.call("DELETE", "/faults")
    end
    for _, conc in ipairs { 1, 4, 64 } do
      local before = lockers_asked()
      assert.are.equal(LOCKS .. " true ok", (each("conc=" .. conc .. "&gc=1")))
      assert.are.equal(PAGES, lockers_asked() - before)
    end
    -- a loop slower than the pages: the stream stops with its window full
    -- and starts again, each page still asked once
    local before = lockers_asked()
    assert.are.equal(LOCKS .. " true ok", (each("conc=4&sleepy=1")))
    assert.are.equal(PAGES, lockers_asked() - before)
    -- the last of the first window slow (0.6 s): the other three handed
    -- over, and as many pages asked, before it is in
    -- (up to three tries, as in a script)
    local slow, asked
    for _ = 1, 3 do
      sim.fault { kind = "latency", latency = 0, next = 4, endpoint = "GET /lockers" }
      sim.fault { kind = "latency", latency = 0.6, next = 1, endpoint = "GET /lockers" }
      slow = each("conc=4&slow=1")
      asked = tonumber(slow:match(" asked=(%d+)"))
      if asked and asked > 5 then break end
    end
    assert.is_true(asked and asked > 5, slow)
    -- a slow first page of the window: order
    sim.fault { kind = "latency", latency = 0, next = 1, endpoint = "GET /lockers" }
    sim.fault { kind = "latency", latency = 0.4, next = 1, endpoint = "GET /lockers" }
    assert.are.equal(LOCKS .. " true ok", (each("conc=8")))
    -- a failure mid-window: a prefix of whole pages, then the error
    sim.fault { kind = "latency", latency = 0, next = 5, endpoint = "GET /lockers" }
    sim.fault { kind = "status", status = 200, code = 500, message = "device busy", next = 1,
                endpoint = "GET /lockers" }
    local body = each("conc=4")
    local n, order, msg = body:match("^(%d+) (%S+) (.*)$")
    assert.are.equal("true", order)
    assert.are.equal(0, tonumber(n) % 10)
    assert.is_true(tonumber(n) < LOCKS)
    assert.matches("device busy", msg)
    -- left early: the light threads out are killed, not waited for (nginx
    -- ends a request when its last light thread does: a thread left
    -- waiting on its 1.5 s would hold the answer back that long)
    sim.call("DELETE", "/faults")
    sim.fault { kind = "latency", latency = 0, next = 3, endpoint = "GET /lockers" }
    sim.fault { kind = "latency", latency = 1.5, share = 1, endpoint = "GET /lockers" }
    local took
    body, took = each("conc=4&stop=15")
    assert.are.equal("15 true ok", body)
    assert.is_true(took < 1.2, "took " .. took)
    sim.call("DELETE", "/faults")
    sim.fault { kind = "latency", latency = 0, next = 3, endpoint = "GET /lockers" }
    sim.fault { kind = "latency", latency = 0.2, next = 3, endpoint = "GET /lockers" }
    assert.are.equal("15 true ok", (each("conc=4&stop=15&noclose=1")))
  end)
end)
