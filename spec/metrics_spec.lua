-- kinot.metrics in its plain-table mode (a script, these specs): the text
-- exposition format 0.0.4 as Prometheus reads it (HELP and TYPE, label
-- values escaped, a histogram's cumulative buckets ending in +Inf equal
-- to _count), misuse named, the series cap, and the client's API metrics
-- through the real request pipeline against a transport that answers as
-- told (a fake: the point is what the pipeline counts, the sim spec
-- covers the real server).
local metrics = require "kinot.metrics"
local H = require "helpers"

local samples = H.samples

describe("kinot.metrics #unit", function()
  it("renders counters, gauges and histograms with HELP and TYPE, a counter never moved as 0", function()
    local m = metrics.new { store = "table" }
    local c = m:counter("kinot_test_total", "A test\\count\nover two lines")
    local r = m:counter("kinot_test_refused_total", "Refused", { "reason" })
    local g = m:gauge("kinot_test_gauge", "A gauge", { "group" })
    local h = m:histogram("kinot_test_seconds", "Times", nil, { 0.1, 1 })
    local text = m:render()
    assert.matches("# HELP kinot_test_total A test\\\\count\\nover two lines\n# TYPE kinot_test_total counter\n" ..
      "kinot_test_total 0\n", text, 1, true)
    assert.matches("# TYPE kinot_test_refused_total counter\n", text, 1, true)
    assert.matches('kinot_test_seconds_bucket{le="+Inf"} 0\n', text, 1, true)
    c:inc()
    c:inc(2)
    r:inc(1, "bad_sign")
    r:inc(1, "bad_sign")
    r:inc(1, "stale")
    g:set(7, "A/1")
    g:set(3.5, "B/2")
    h:observe(0.05)
    h:observe(0.5)
    h:observe(0.5)
    h:observe(7)
    local s = samples(m:render())
    assert.are.equal(3, s.kinot_test_total)
    assert.are.equal(2, s['kinot_test_refused_total{reason="bad_sign"}'])
    assert.are.equal(1, s['kinot_test_refused_total{reason="stale"}'])
    assert.are.equal(7, s['kinot_test_gauge{group="A/1"}'])
    assert.are.equal(3.5, s['kinot_test_gauge{group="B/2"}'])
    assert.are.equal(1, s['kinot_test_seconds_bucket{le="0.1"}'])
    assert.are.equal(3, s['kinot_test_seconds_bucket{le="1"}'])
    assert.are.equal(4, s['kinot_test_seconds_bucket{le="+Inf"}'])
    assert.are.equal(4, s.kinot_test_seconds_count)
    assert.are.equal(8.05, s.kinot_test_seconds_sum)
  end)

  it("keeps every histogram's buckets monotonic, +Inf equal to _count, over many random observations", function()
    local m = metrics.new { store = "table" }
    local h = m:histogram("kinot_rand_seconds", "Random", { "endpoint" })
    math.randomseed(21)
    local n = { a = 0, b = 0 }
    for _ = 1, 5000 do
      local e = math.random() < 0.3 and "a" or "b"
      n[e] = n[e] + 1
      h:observe(math.random() ^ 4 * 20, e)
    end
    local text = m:render()
    for _, e in ipairs { "a", "b" } do
      local last, buckets = -1, 0
      for le, v in text:gmatch('kinot_rand_seconds_bucket{endpoint="' .. e .. '",le="([^"]+)"} (%d+)') do
        buckets = buckets + 1
        assert.is_true(tonumber(v) >= last, "bucket le=" .. le .. " of " .. e .. " below the one before it")
        last = tonumber(v)
        if le == "+Inf" then assert.are.equal(n[e], last) end
      end
      assert.are.equal(#metrics.BUCKETS + 1, buckets)
      assert.matches('kinot_rand_seconds_count{endpoint="' .. e .. '"} ' .. n[e] .. "\n", text, 1, true)
    end
  end)

  it("escapes a label value's backslash, double quote and newline (and a \\1, which parts a key)", function()
    local m = metrics.new { store = "table" }
    local g = m:gauge("kinot_esc", "Escaping", { "group" })
    g:set(1, 'a\\b"c\nd')
    g:set(2, "x\1y")
    local text = m:render()
    assert.matches('kinot_esc{group="a\\\\b\\"c\\nd"} 1\n', text, 1, true)
    assert.matches('kinot_esc{group="x?y"} 2\n', text, 1, true)
    -- one line each: a newline in a value never ends a sample
    local lines = 0
    for _ in text:gmatch("\n") do lines = lines + 1 end
    assert.are.equal(4, lines)
  end)

  it("names misuse: a bad name, a bad label, a missing label value, a histogram set, an unknown option", function()
    local m = metrics.new { store = "table" }
    assert.has_error(function() m:counter("kinot bad", "x") end)
    assert.has_error(function() m:counter("kinot_x_total", "x", { "le-x" }) end)
    assert.has_error(function() m:histogram("kinot_h", "x", { "le" }) end)
    assert.has_error(function() m:histogram("kinot_h2", "x", nil, { 1, 0.5 }) end)
    local c = m:counter("kinot_y_total", "y", { "reason" })
    assert.has_error(function() c:inc(1) end)
    assert.has_error(function() m:gauge("kinot_y_total", "y") end) -- already a counter
    assert.are.equal(c, m:counter("kinot_y_total", "y", { "reason" })) -- the same, asked twice
    assert.has_error(function() m:histogram("kinot_z", "z"):set(1) end)
    assert.has_error(function() metrics.new { stor = "table" } end, nil)
    assert.has_error(function() metrics.new { store = "table", flush_interval = 0 } end)
    assert.has_error(function() metrics.new { store = "shared", dict = "nope" } end)
    -- metrics = something else than a registry, named where it was given
    local ok, err = pcall(require("kinot").new, { app_key = "k", app_secret = "s", metrics = true })
    assert.is_false(ok)
    assert.matches("kinot.new: metrics must be a registry", tostring(err))
    ok, err = pcall(require("kinot.callback").handler, { secret = "s", metrics = {} })
    assert.is_false(ok)
    assert.matches("callback.handler: metrics must be a registry", tostring(err))
  end)

  it("keeps at most MAX_SERIES label sets of one metric: a label fed something unbounded cannot grow it", function()
    local m = metrics.new { store = "table" }
    local c = m:counter("kinot_many_total", "Many", { "endpoint" })
    for i = 1, metrics.MAX_SERIES + 50 do c:inc(1, "/p" .. i) end
    local n = 0
    for _ in m:render():gmatch("kinot_many_total{") do n = n + 1 end
    assert.are.equal(metrics.MAX_SERIES, n)
  end)

  it("counts the client's API calls by path template (a serial made {sn}) and status class, retries, unknown outcomes, latency", function()
    local m = metrics.new { store = "table" }
    local answers = {} -- what the transport answers next, in turn
    local sent = 0
    local function transport(_)
      sent = sent + 1
      local a = table.remove(answers, 1)
      if a.error then return nil, { kind = a.error, message = "told to fail", not_sent = a.not_sent } end
      return { status = a.status, headers = { ["content-type"] = "application/json" }, body = a.body }
    end
    local client = require("kinot").new { app_key = "k", app_secret = "s", endpoint = "http://127.0.0.1:9/v1",
                                          transport = transport, metrics = m, backoff = { base = 0.001, max = 0.001 } }
    local ok = '{"code":0,"message":"OK","objects":[{"sn":644200001,"updated_at":"2026-12-03 10:00:00"}]}'
    answers = { { status = 503, body = "{}" }, { status = 200, body = ok } }
    assert(client:locker(644200001))
    answers = { { status = 200, body = ok } }
    assert(client:locker(644200002))
    -- a command whose answer is lost after it went: unknown, never sent again
    answers = { { error = "timeout", not_sent = false } }
    local r, err = client:reset_bt_match_code(644200001)
    assert.is_nil(r)
    assert.are.equal("unknown_outcome", err.kind)
    -- a command created, polled pending, then final: counted once by its final status, however often read
    local cmd = '{"code":0,"message":"OK","objects":[{"guid":"g-1","sn":644200001,"command_status":"%s"}]}'
    answers = { { status = 200, body = cmd:format("pending") } }
    assert(client:reset_bt_match_code(644200001))
    answers = { { status = 200, body = cmd:format("pending") }, { status = 200, body = cmd:format("succeeded") } }
    assert.are.equal("succeeded", client:wait_command("g-1", { interval = 0.01 }).command_status)
    answers = { { status = 200, body = cmd:format("succeeded") } }
    assert(client:command("g-1"))
    local s = samples(m:render())
    assert.are.equal(1, s['kinot_commands_total{status="succeeded"}'])
    assert.are.equal(1, s.kinot_command_duration_seconds_count)
    assert.are.equal(2, s['kinot_api_requests_total{endpoint="/lockers/{sn}",status_class="2xx"}'])
    assert.are.equal(1, s['kinot_api_requests_total{endpoint="/lockers/{sn}",status_class="5xx"}'])
    assert.are.equal(1, s['kinot_api_requests_total{endpoint="/commands",status_class="error"}'])
    assert.are.equal(1, s['kinot_api_retries_total{endpoint="/lockers/{sn}"}'])
    assert.are.equal(1, s['kinot_api_unknown_outcomes_total{endpoint="/commands"}'])
    assert.are.equal(3, s['kinot_api_request_duration_seconds_count{endpoint="/lockers/{sn}"}'])
    assert.are.equal(8, sent)
    -- no serial in any label
    assert.is_nil(m:render():find("644200001", 1, true))
  end)

  it("GET /metrics of kinot serve: loopback free, elsewhere the API token, none configured: loopback only", function()
    local serve = require "kinot.serve.metrics"
    local m = metrics.new { store = "table" }
    m:counter("kinot_x_total", "X")
    local status, ctype, body = serve.handle(m, { method = "GET", remote_addr = "127.0.0.1" }, {})
    local _
    assert.are.equal(200, status)
    assert.are.equal("text/plain; version=0.0.4; charset=utf-8", ctype)
    assert.matches("kinot_x_total 0\n", body)
    status = serve.handle(m, { method = "GET", remote_addr = "::1" }, { token = "t-1" })
    assert.are.equal(200, status)
    status, _, body = serve.handle(m, { method = "GET", remote_addr = "10.0.0.5" }, {})
    assert.are.equal(401, status)
    assert.matches("API token", body)
    status = serve.handle(m, { method = "GET", remote_addr = "10.0.0.5", authorization = "Bearer t-2" }, { token = "t-1" })
    assert.are.equal(401, status)
    status, _, body = serve.handle(m, { method = "GET", remote_addr = "10.0.0.5", authorization = "Bearer t-1" },
      { token = "t-1" })
    assert.are.equal(200, status)
    assert.matches("kinot_x_total 0\n", body)
    assert.are.equal(405, (serve.handle(m, { method = "POST", remote_addr = "127.0.0.1" }, {})))
  end)
end)
