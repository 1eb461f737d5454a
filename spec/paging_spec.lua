-- Paging whichever way the platform numbers `offset` (page index from 0,
-- page index from 1, row offset): the simulator serves each reading
-- (`paging`), the client's `paging = "auto"` finds it out once per client,
-- each_locker / each_sensor yield every device exactly once under each
-- reading at every concurrency, and an error says whether the fleet changed
-- or the paging was mixed up.
local errors = require "kinot.errors"
local H = require "helpers"

local READINGS = { "page0", "page1", "rows" }

describe("paging #sim #nginx", function()
  local sim
  setup(function() sim = H.sim { locks = 237, sensors = 95, dtus = 1 } end)
  teardown(function() sim.stop() end)

  local function serve(reading, locks, sensors)
    sim.call("POST", "/config", { paging = reading, page1_zero = "clamp", offset_bound = false })
    sim.call("POST", "/fleet", { locks = locks or 237, sensors = sensors or 95 })
  end

  -- every device exactly once, in order; the sns as a list
  local function collect(iter, base, n)
    local seen, list = {}, {}
    for d in iter do
      assert.is_nil(seen[d.sn], "device " .. tostring(d.sn) .. " came twice")
      seen[d.sn] = true
      list[#list + 1] = d.sn
    end
    assert.are.equal(n, #list)
    for i = 1, n do assert.are.equal(base + i, list[i]) end
    return list
  end

  for _, reading in ipairs(READINGS) do
    for _, conc in ipairs { 1, 4, 16 } do
      it("yields every lock and sensor once: the platform reads offset as " .. reading .. ", concurrency " .. conc,
        function()
          serve(reading)
          for _, paging in ipairs { "auto", reading } do
            local c = sim.client { paging = paging }
            collect(c:each_locker { limit = 10, concurrency = conc }, 419600000, 237)
            collect(c:each_sensor { limit = 20, concurrency = conc }, 419800000, 95)
            collect(c:each_locker { limit = 100, concurrency = conc }, 419600000, 237)
            if paging == "auto" then assert.are.equal(reading, c.paging_found) end
            c:close()
          end
        end)
    end
  end

  it("the raw pages a page1 platform serves: offset 0 and 1 are both the first page", function()
    serve("page1")
    local c = sim.client()
    local a, b = assert(c:lockers { offset = 0 }), assert(c:lockers { offset = 1 })
    assert.are.same(a.objects, b.objects)
    assert.are.equal(419600011, assert(c:lockers { offset = 2 }).objects[1].sn)
    serve("rows")
    assert.are.equal(419600006, assert(c:lockers { offset = 5 }).objects[1].sn)
    c:close()
  end)

  it("tiny fleets and count <= limit: every device once under every reading, at every size", function()
    for _, reading in ipairs(READINGS) do
      for _, n in ipairs { 0, 1, 2, 9, 10, 11, 19, 20, 21, 100, 101 } do
        serve(reading, n, 0)
        for _, limit in ipairs { 10, 100 } do
          local c = sim.client()
          local ok, err = pcall(collect, c:each_locker { limit = limit, concurrency = 4 }, 419600000, n)
          assert(ok, reading .. ", " .. n .. " locks, limit " .. limit .. ": " .. tostring(err))
          -- what could be told was found, and only that
          if n >= 2 then assert.are.equal(reading, c.paging_found) end
          if n == 0 then assert.is_nil(c.paging_found) end
          local n_sensors = 0
          for _ in c:each_sensor {} do n_sensors = n_sensors + 1 end
          assert.are.equal(0, n_sensors)
          c:close()
        end
      end
    end
  end)

  it("a page1 platform that refuses offset 0, or answers it empty, is found as well", function()
    for _, zero in ipairs { "error", "empty" } do
      for _, n in ipairs { 1, 5, 11, 237 } do
        serve("page1", n, 0)
        sim.call("POST", "/config", { page1_zero = zero })
        local c = sim.client()
        local ok, err = pcall(collect, c:each_locker { limit = 10, concurrency = 4 }, 419600000, n)
        assert(ok, zero .. ", " .. n .. " locks: " .. tostring(err))
        assert.are.equal("page1", c.paging_found)
        c:close()
      end
    end
  end)

  it("auto asks the platform once per client: two small pages, then never again", function()
    serve("rows")
    local function gets() return sim.counters().endpoints["GET /lockers"] or 0 end
    local c = sim.client()
    local before = gets()
    collect(c:each_locker { limit = 100 }, 419600000, 237)
    assert.are.equal(2 + 3, gets() - before) -- the probe, then 3 pages
    before = gets()
    collect(c:each_locker { limit = 100, concurrency = 4 }, 419600000, 237)
    collect(c:each_sensor { limit = 100 }, 419800000, 95)
    assert.are.equal(3, gets() - before)
    c:close()
    -- an explicit reading asks nothing
    c = sim.client { paging = "rows" }
    before = gets()
    collect(c:each_locker { limit = 100 }, 419600000, 237)
    assert.are.equal(3, gets() - before)
    c:close()
  end)

  -- a client told the wrong reading: the error names the mix-up and the
  -- option, not a fleet change (it was "fleet changed ... came twice")
  local MIXUPS = {
    { client = "page0", server = "page1" }, { client = "page0", server = "rows" },
    { client = "page1", server = "page0" }, { client = "page1", server = "rows" },
    { client = "rows", server = "page0" }, { client = "rows", server = "page1" },
  }
  for _, m in ipairs(MIXUPS) do
    it("names a paging mix-up: paging = " .. m.client .. " against a " .. m.server .. " platform", function()
      serve(m.server)
      for _, conc in ipairs { 1, 16 } do
        local c = sim.client { paging = m.client }
        local ok, err = pcall(function() for _ in c:each_locker { limit = 10, concurrency = conc } do end end)
        c:close()
        assert.is_false(ok)
        assert.is_true(errors.is(err), tostring(err))
        assert.matches("paging mismatch", err.message)
        assert.matches('option paging = "' .. m.client .. '"', err.message, 1, true)
        assert.matches('set paging = "' .. m.server .. '"', err.message, 1, true)
        assert.is_nil(err.message:find("fleet changed", 1, true))
        assert.are.equal(m.client, err.paging)
        assert.are.equal(m.server, err.platform_paging)
      end
    end)
  end

  it("names a paging mix-up when the platform refuses an offset past its bound (count/limit)+1", function()
    for _, m in ipairs { { client = "rows", server = "page0" }, { client = "rows", server = "page1" } } do
      serve(m.server)
      sim.call("POST", "/config", { offset_bound = true })
      for _, conc in ipairs { 1, 16 } do
        local c = sim.client { paging = m.client }
        local ok, err = pcall(function() for _ in c:each_locker { limit = 10, concurrency = conc } do end end)
        c:close()
        assert.is_false(ok)
        assert.matches("paging mismatch", err.message)
        assert.matches("offset 30 refused: offset must be from 0 to", err.message)
        assert.matches('set paging = "' .. m.server .. '"', err.message, 1, true)
      end
      -- and the right reading goes through, bound and all
      local c = sim.client()
      collect(c:each_locker { limit = 10, concurrency = 16 }, 419600000, 237)
      c:close()
    end
  end)

  it("an auto client whose platform changes its reading says so, and finds the new one", function()
    serve("page0")
    local c = sim.client()
    collect(c:each_locker { limit = 10 }, 419600000, 237)
    serve("page1")
    local ok, err = pcall(function() for _ in c:each_locker { limit = 10 } do end end)
    assert.is_false(ok)
    assert.matches('paging mismatch.*found by paging = "auto"', err.message)
    assert.are.equal("page1", c.paging_found)
    collect(c:each_locker { limit = 10 }, 419600000, 237)
    c:close()
  end)

  for _, reading in ipairs(READINGS) do
    it("says the fleet changed when it did (" .. reading .. ")", function()
      serve(reading)
      for _, paging in ipairs { "auto", reading } do
        local c = sim.client { paging = paging }
        local pages = 0
        local ok, err = pcall(function()
          for _ in c:each_locker { limit = 10, on_page = function()
            pages = pages + 1
            if pages == 2 then sim.call("POST", "/fleet", { locks = 240 }) end
          end } do end
        end)
        c:close()
        serve(reading)
        assert.is_false(ok)
        assert.matches("the fleet changed while paging: count went from 237 to 240", err.message)
        assert.is_true(err.fleet_changed)
        assert.is_nil(err.message:find("paging mismatch", 1, true))
      end
    end)
  end

  it("does the same inside nginx, over cosockets (the resty transport)", function()
    local ng = H.nginx { server = [[
      location = /each {
        content_by_lua_block {
          local a = ngx.req.get_uri_args()
          local c = require("kinot").new { app_key = a.key, app_secret = a.secret, endpoint = a.endpoint,
                                           paging = a.paging }
          local n, dup, seen = 0, 0, {}
          local ok, err = pcall(function()
            for d in c:each_locker { limit = 10, concurrency = tonumber(a.conc) } do
              if seen[d.sn] then dup = dup + 1 end
              seen[d.sn] = true
              n = n + 1
            end
          end)
          ngx.print(c.transport.name or "?", " ", n, " ", dup, " ", tostring(c.paging_found), " ",
                    ok and "ok" or tostring(err))
          c:close()
        }
      }
    ]] }
    finally(ng.stop)
    local function each(paging, conc)
      return H.raw("GET", ng.url .. "/each?key=" .. sim.app_key .. "&secret=" .. sim.app_secret .. "&endpoint=" ..
        sim.endpoint .. "&paging=" .. paging .. "&conc=" .. conc).body
    end
    for _, reading in ipairs(READINGS) do
      serve(reading)
      for _, conc in ipairs { 1, 16 } do
        assert.are.equal("resty 237 0 " .. reading .. " ok", each("auto", conc))
      end
    end
    assert.matches('paging mismatch.*set paging = "rows"', each("page1", 4))
  end)

  it("refuses an unknown paging option, naming it", function()
    local ok, err = pcall(sim.client, { paging = "pages" })
    assert.is_false(ok)
    assert.matches('kinot: paging must be "auto", "page0", "page1" or "rows" (got pages)', err, 1, true)
  end)
end)
