-- kinot.metrics attacked (docs/metrics.md): an observation that is not a
-- number a histogram can hold (NaN, an infinity) must not poison its sum
-- for ever; a counter never moves down nor to NaN; a count past 2^53 is
-- written as the dict holds it; and a worker that exits gracefully (nginx
-- reloaded: HUP) writes what it buffered, even an increment made after
-- its flush timer was told to stop (a request still running at the reload).
local H = require "helpers"
local metrics = require "kinot.metrics"

local samples = H.samples

describe("kinot.metrics fed hostile numbers #unit", function()
  it("drops an observation of NaN or an infinity: the sum and every bucket stay what the others made them", function()
    local m = metrics.new { store = "table" }
    local h = m:histogram("kinot_attack_seconds", "Times", nil, { 0.1, 1 })
    h:observe(0.5)
    h:observe(0 / 0)
    h:observe(math.huge)
    h:observe(-math.huge)
    h:observe(0.05)
    local s = samples(m:render())
    assert.are.equal(0.55, s.kinot_attack_seconds_sum)
    assert.are.equal(2, s.kinot_attack_seconds_count)
    assert.are.equal(1, s['kinot_attack_seconds_bucket{le="0.1"}'])
    assert.are.equal(2, s['kinot_attack_seconds_bucket{le="+Inf"}'])
  end)

  it("counts a negative observation (a clock stepped back) in the lowest bucket, as Prometheus does", function()
    local m = metrics.new { store = "table" }
    local h = m:histogram("kinot_attack_seconds", "Times", nil, { 0.1, 1 })
    h:observe(-0.25)
    local s = samples(m:render())
    assert.are.equal(1, s['kinot_attack_seconds_bucket{le="0.1"}'])
    assert.are.equal(-0.25, s.kinot_attack_seconds_sum)
  end)

  it("refuses to move a counter down or to NaN (misuse), and counts on after", function()
    local m = metrics.new { store = "table" }
    local c = m:counter("kinot_attack_total", "Count")
    c:inc(2)
    for _, bad in ipairs { -1, 0 / 0, math.huge, "3" } do
      local ok, err = pcall(c.inc, c, bad)
      assert.is_false(ok, tostring(bad))
      assert.matches("kinot_attack_total", tostring(err))
    end
    c:inc()
    assert.are.equal(3, samples(m:render()).kinot_attack_total)
  end)

  it("writes a value past 2^53 with every digit the dict holds (no %.15g rounding)", function()
    for _, v in ipairs { 2 ^ 53, 2 ^ 53 + 2, 2 ^ 60, 123456789.123456789, 0.1, 1e-7 } do
      assert.are.equal(v, tonumber(metrics.number_text(v)), string.format("%.17g", v))
    end
    assert.are.equal("0.1", metrics.number_text(0.1))
    assert.are.equal("9007199254740994", metrics.number_text(2 ^ 53 + 2))
  end)
end)

-- an nginx whose registry flushes every 60 s: only an exit writes the counts
local function host()
  return H.nginx {
    http = [[
      lua_shared_dict metrics 1m;
      init_by_lua_block {
        registry = require("kinot.metrics").new { dict = "metrics", flush_interval = 60 }
        hits = registry:counter("kinot_attack_hits_total", "Hits")
        slow = registry:histogram("kinot_attack_slow_seconds", "Slow ones", nil, { 1 })
      }
    ]],
    server = [[
      location = /hit { content_by_lua_block { hits:inc() ngx.say(ngx.worker.pid()) } }
      location = /slow {
        content_by_lua_block {
          ngx.sleep(tonumber(ngx.var.arg_s))
          hits:inc()
          slow:observe(0.5)
          ngx.say(ngx.worker.pid())
        }
      }
      location = /metrics { content_by_lua_block { registry:nginx() } }
      location = /pid { content_by_lua_block { ngx.say(ngx.worker.pid()) } }
    ]],
  }
end

local function master_pid(ng)
  local f = assert(io.open(ng.prefix .. "/nginx.pid"))
  local pid = f:read("*l")
  f:close()
  return pid
end

describe("kinot.metrics when nginx reloads #nginx", function()
  it("writes what a worker buffered when it exits, an increment made after its timer stopped too", function()
    local ng = host()
    finally(function() ng.stop() end)
    local old = H.raw("GET", ng.url .. "/pid").body
    for _ = 1, 25 do assert.are.equal(200, H.raw("GET", ng.url .. "/hit").status) end
    -- a request still running when the reload comes: it counts after the worker was told to exit
    local out = os.tmpname()
    os.execute("curl -s -o " .. out .. " '" .. ng.url .. "/slow?s=1.5' &")
    H.wait_for(function() return false end, 0.4)
    local sent = os.execute("kill -HUP " .. master_pid(ng))
    assert.is_true(sent == true or sent == 0)
    -- the old worker finishes the slow request, then exits; a new one answers the scrape
    local s = H.wait_for(function()
      local res = H.raw("GET", ng.url .. "/metrics")
      local v = samples(res.body)
      local f = io.open(out)
      local done = f and f:read("*a") or ""
      if f then f:close() end
      return done ~= "" and v.kinot_attack_hits_total == 26 and v
    end, 6)
    os.remove(out)
    local res = H.raw("GET", ng.url .. "/metrics")
    assert.is_table(s, res.body)
    assert.are_not.equal(old, H.raw("GET", ng.url .. "/pid").body)
    assert.are.equal(1, s.kinot_attack_slow_seconds_count)
  end)
end)

-- two registries over one dict: two workers, or one worker before and after a reload
local CAP = [[
  location = /many {
    content_by_lua_block {
      local metrics = require "kinot.metrics"
      local reg = metrics.new { dict = "metrics" }
      local c = reg:counter("kinot_attack_many_total", "Many", { "endpoint" })
      local g = reg:gauge("kinot_attack_many_gauge", "Many", { "group" })
      local from = tonumber(ngx.var.arg_from)
      for i = from, from + metrics.MAX_SERIES + 199 do
        c:inc(1, "/p" .. i)
        g:set(i, "g" .. i)
      end
      reg:flush()
      local text = reg:render()
      local _, n = text:gsub("\nkinot_attack_many_total{", "")
      local _, m = text:gsub("\nkinot_attack_many_gauge{", "")
      ngx.say(n, " ", m)
    }
  }
]]

describe("kinot.metrics's cap of label sets across workers and reloads #nginx", function()
  it("holds MAX_SERIES label sets of a metric in the dict, however many registries write it", function()
    local ng = H.nginx { http = "lua_shared_dict metrics 8m;", server = CAP }
    finally(function() ng.stop() end)
    local max = metrics.MAX_SERIES
    assert.are.equal(max .. " " .. max .. "\n", H.raw("GET", ng.url .. "/many?from=1").body, ng.log())
    -- another registry (another worker, the same worker after a reload), other values: no more series
    assert.are.equal(max .. " " .. max .. "\n", H.raw("GET", ng.url .. "/many?from=5001").body, ng.log())
    -- a label set already held is still counted by the second registry
    assert.are.equal(max .. " " .. max .. "\n", H.raw("GET", ng.url .. "/many?from=1").body, ng.log())
  end)
end)
