-- client:send_commands (kinot.batch) and its journal: counted at the
-- simulator (commands_by_sn: commands created per serial), never in the SDK.
-- Under resets after the platform acted and under throttling, over curl
-- here and over resty inside a real nginx; a batch killed with SIGKILL and
-- resumed from its journal; abort_after against the simulator's
-- failure_rate.
local core = require "kinot.core"
local json = require "kinot.json"
local errors = require "kinot.errors"
local H = require "helpers"
local B = require "batch_support"
local FIRST = B.FIRST
local serials, tmpname, read, created, agrees = B.serials, B.tmpname, B.read, B.created, B.agrees

local LUA = H.runtime == "luajit" and "luajit" or "lua5.4"

describe("send_commands: misuse raises #unit", function()
  local c
  setup(function()
    c = require("kinot").new { app_key = "k", app_secret = "s", endpoint = "http://127.0.0.1:9/open/lora/v1" }
  end)
  teardown(function() c:close() end)

  local function raises(pattern, items, opts)
    local ok, e = pcall(c.send_commands, c, items, opts)
    assert.is_false(ok)
    assert.is_true(errors.is_misuse(e), tostring(e))
    assert.matches(pattern, e.message)
  end

  it("names what is wrong", function()
    raises("list of serials", "419600001", { parameter = { value = 1 } })
    raises("items%[2%] must be a positive integer", { 1, "x" }, { parameter = { value = 1 } })
    raises("in the batch twice %(items 1 and 3%)", { 5, 6, "5" }, { parameter = { value = 1 } })
    raises("items%[1%] has no value", { 5 })
    raises("unknown option \"concurency\"", { 5 }, { parameter = { value = 1 }, concurency = 4 })
    raises("concurrency must be an integer from 1 to 64", { 5 }, { parameter = { value = 1 }, concurrency = 0 })
    raises("rate must be a number", { 5 }, { parameter = { value = 1 }, rate = 0 })
    raises("abort_after must be", { 5 }, { parameter = { value = 1 }, abort_after = 1.5 })
    raises("abort_after must be", { 5 }, { parameter = { value = 1 }, abort_after = 0 })
    raises("on_progress must be a function", { 5 }, { parameter = { value = 1 }, on_progress = 1 })
    raises("journal must be a file path", { 5 }, { parameter = { value = 1 }, journal = "" })
    raises("items must be a list", { 5, x = 1 }, { parameter = { value = 1 } })
  end)

  it("refuses a journal from another batch, and one that is no journal", function()
    local j = tmpname()
    local jf = assert(io.open(j, "w"))
    jf:write('{"journal":"kinot-batch","version":1,"fingerprint":"00","items":1}\n')
    jf:close()
    raises("belongs to another batch", { 5 }, { parameter = { value = 1 }, journal = j })
    jf = assert(io.open(j, "w"))
    jf:write("419600001\n")
    jf:close()
    raises("not a kinot batch journal", { 5 }, { parameter = { value = 1 }, journal = j })
    os.remove(j) os.remove(j .. ".lock")
  end)

  it("raises on a closed client", function()
    local c2 = require("kinot").new { app_key = "k", app_secret = "s" }
    c2:close()
    local ok, e = pcall(c2.send_commands, c2, { 5 }, { parameter = { value = 1 } })
    assert.is_false(ok)
    assert.matches("client is closed", e.message)
  end)
end)

describe("send_commands against the simulator (curl) #sim", function()
  local sim
  setup(function() sim = H.sim { locks = 2100, command_pace = 0.02 } end)
  teardown(function() sim.stop() end)
  before_each(function() sim.reset() end)

  it("2,000 under resets after the platform acted and 429s: at most one command per serial", function()
    sim.fault { kind = "reset", after = true, share = 0.05, endpoint = "POST /commands" }
    sim.fault { kind = "throttle", retry_after = 0, share = 0.1, endpoint = "POST /commands" }
    local c = sim.client()
    local results, summary = c:send_commands(serials(2000), { parameter = { value = 1 }, concurrency = 16 })
    local per, twice = created(sim)
    assert.are.same({}, twice)
    agrees(results, per)
    local cnt = sim.counters()
    -- each fault happened, and each unknown is a reset the simulator counted
    assert.is_true(summary.unknown > 0 and summary.throttled > 0)
    assert.are.equal(cnt.requests["POST /commands fault:reset-after"], summary.unknown)
    assert.are.equal(cnt.requests["POST /commands fault:throttle"], summary.throttled)
    -- a 429 held the item back and it went again: only resets stay unsent
    assert.are.equal(2000, summary.pending + summary.unknown)
    assert.are.equal(2000, cnt.commands_created)
    assert.are.equal(#summary.unknown_sns, summary.unknown)
    c:close()
  end)

  it("gateway throttling and resets together, with wait: every command followed to its end", function()
    sim.fault { kind = "gateway_throttle", share = 0.1, endpoint = "POST /commands" }
    sim.fault { kind = "reset", after = true, share = 0.05, endpoint = "POST /commands" }
    -- polls meet resets too: a GET goes again
    sim.fault { kind = "reset", share = 0.05, endpoint = "GET /commands" }
    local c = sim.client()
    local results, summary = c:send_commands(serials(500), { parameter = { value = 1 }, concurrency = 16, wait = true })
    local per, twice = created(sim)
    assert.are.same({}, twice)
    agrees(results, per)
    assert.are.equal(500, summary.succeeded + summary.unknown)
    for _, r in ipairs(results) do
      if r.outcome == "succeeded" then assert.are.equal("succeeded", r.command_status) end
    end
    c:close()
  end)

  it("a 429's Retry-After holds the batch back and halves its concurrency", function()
    sim.fault { kind = "throttle", retry_after = 1, next = 1, endpoint = "POST /commands" }
    local c = sim.client()
    local seen = {}
    local t0 = core.monotonic()
    local _, summary = c:send_commands(serials(8), { parameter = { value = 1 }, concurrency = 8,
      on_progress = function(p) seen[#seen + 1] = p.concurrency end })
    local took = core.monotonic() - t0
    assert.are.equal(1, summary.throttled)
    assert.are.equal(8, summary.pending)
    assert.is_true(took >= 1, "Retry-After 1 s not honoured: " .. took)
    assert.are.equal(4, seen[1]) -- halved after the throttled round
    assert.are.equal(8, sim.counters().commands_created)
    c:close()
  end)

  it("rate: no more commands a second than asked", function()
    local c = sim.client()
    local t0 = core.monotonic()
    local _, summary = c:send_commands(serials(30), { parameter = { value = 1 }, concurrency = 16, rate = 20 })
    local took = core.monotonic() - t0
    assert.are.equal(30, summary.pending)
    -- 30 at 20 a second: the 30th goes 29/20 s after the first
    assert.is_true(took >= 29 / 20, "30 commands at rate 20 in " .. took .. " s")
    c:close()
  end)

  it("abort_after a count: stops sending, what was sent is followed to its end", function()
    H.json("POST", sim.admin .. "/config", { failure_rate = 0.5 })
    local c = sim.client()
    -- (paced: a failure is known only once its command has run its course)
    local results, summary = c:send_commands(serials(200), { parameter = { value = 1 }, concurrency = 4, wait = true,
                                                             abort_after = 5, rate = 100 })
    assert.matches("^abort_after: %d+ failures", summary.aborted)
    assert.is_true(summary.failed >= 5)
    assert.is_true(summary.skipped > 100, summary.skipped)
    local cnt = sim.counters()
    assert.are.equal(200 - summary.skipped, cnt.commands_created)
    assert.are.equal(200, summary.succeeded + summary.failed + summary.skipped)
    for _, r in ipairs(results) do
      if r.outcome == "skipped" then assert.is_nil(r.guid) assert.matches("not sent", r.error.message) end
    end
    c:close()
  end)

  it("abort_after a ratio", function()
    H.json("POST", sim.admin .. "/config", { failure_rate = 0.6 })
    local c = sim.client()
    local _, summary = c:send_commands(serials(300), { parameter = { value = 1 }, concurrency = 8, wait = true,
                                                       abort_after = 0.3, rate = 100 })
    assert.matches("^abort_after: %d+ of %d+ failed", summary.aborted)
    assert.is_true(summary.skipped > 0)
    assert.are.equal(300 - summary.skipped, sim.counters().commands_created)
    c:close()
  end)

  it("per item failures: a refused value, an unknown serial", function()
    local c = sim.client()
    local results, summary = c:send_commands({ FIRST, { sn = FIRST + 1, value = 7 }, { 999999999, 1 } },
      { parameter = { value = 1 } })
    assert.are.equal("sent", results[1].outcome)
    assert.are.equal("failed", results[2].outcome)
    assert.are.equal("failed", results[3].outcome)
    assert.are.equal("not_found", results[3].error.kind)
    assert.are.equal(2, summary.failed)
    assert.are.equal(1, sim.counters().commands_created)
    c:close()
  end)

  it("resumes from its journal: nothing sent twice, a torn last line cut off", function()
    local j = tmpname()
    local c = sim.client()
    local items = serials(50)
    sim.fault { kind = "reset", after = true, next = 3, endpoint = "POST /commands" }
    local r1, s1 = c:send_commands(items, { parameter = { value = 1 }, concurrency = 8, journal = j })
    assert.are.equal(3, s1.unknown)
    -- the kill came in the middle of a write: a last line without its end
    local f = assert(io.open(j, "a"))
    f:write('{"i":1,"at":"torn-')
    f:close()
    local r2, s2 = c:send_commands(items, { parameter = { value = 1 }, concurrency = 8, journal = j })
    assert.are.equal(0, s2.sent)
    assert.are.equal(50, s2.resumed)
    assert.are.equal(3, s2.unknown)
    for i = 1, 50 do
      assert.are.equal(r1[i].outcome, r2[i].outcome)
      assert.are.equal(r1[i].guid, r2[i].guid)
    end
    local per, twice = created(sim)
    assert.are.same({}, twice)
    agrees(r2, per)
    assert.is_nil(read(j):find("torn-", 1, true))
    -- other items: refused
    local ok, e = pcall(c.send_commands, c, serials(51), { parameter = { value = 1 }, journal = j })
    assert.is_false(ok)
    assert.matches("belongs to another batch", e.message)
    -- another parameter: refused too
    ok, e = pcall(c.send_commands, c, items, { parameter = { value = 2 }, journal = j })
    assert.is_false(ok)
    assert.matches("belongs to another batch", e.message)
    os.remove(j) os.remove(j .. ".lock")
    c:close()
  end)

  it("resumed with wait: the commands created before are followed, not sent again", function()
    local j = tmpname()
    local c = sim.client()
    local items = serials(30)
    local _, s1 = c:send_commands(items, { parameter = { value = 1 }, concurrency = 8, journal = j })
    assert.are.equal(30, s1.pending)
    local r2, s2 = c:send_commands(items, { parameter = { value = 1 }, concurrency = 8, journal = j, wait = true,
                                            wait_timeout = 10 })
    assert.are.equal(0, s2.sent)
    assert.are.equal(30, s2.succeeded)
    for i = 1, 30 do assert.is_true(r2[i].resumed) assert.are.equal("succeeded", r2[i].command_status) end
    -- a third run reads the final states from the journal: not a request
    local before = sim.counters().endpoints["GET /commands"]
    local _, s3 = c:send_commands(items, { parameter = { value = 1 }, journal = j, wait = true })
    assert.are.equal(30, s3.succeeded)
    assert.are.equal(before, sim.counters().endpoints["GET /commands"])
    assert.are.equal(30, sim.counters().commands_created)
    os.remove(j) os.remove(j .. ".lock")
    c:close()
  end)

  it("on_progress that raises ends the batch there; the journal knows where", function()
    local j = tmpname()
    local c = sim.client()
    local items = serials(64)
    local ok, e = pcall(c.send_commands, c, items, { parameter = { value = 1 }, concurrency = 8, journal = j,
      on_progress = function(p) if p.sent >= 16 then error("enough") end end })
    assert.is_false(ok)
    assert.matches("enough", tostring(e))
    local made = sim.counters().commands_created
    assert.is_true(made >= 16 and made < 64, made)
    local _, s = c:send_commands(items, { parameter = { value = 1 }, concurrency = 8, journal = j })
    assert.are.equal(made, s.resumed)
    assert.are.equal(64, sim.counters().commands_created)
    local _, twice = created(sim)
    assert.are.same({}, twice)
    os.remove(j) os.remove(j .. ".lock")
    c:close()
  end)

  it("one run of a journal at a time: a second one while the first runs is refused", function()
    local j = tmpname()
    local c = sim.client()
    local items = serials(40)
    local inner
    local _, s = c:send_commands(items, { parameter = { value = 1 }, concurrency = 8, journal = j,
      on_progress = function()
        if inner == nil then
          local ok, e = pcall(c.send_commands, c, items, { parameter = { value = 1 }, journal = j })
          inner = ok and "ran" or e.message
        end
      end })
    assert.matches("is in use by another run of this batch", inner)
    assert.are.equal(40, s.pending)
    assert.are.equal(40, sim.counters().commands_created)
    -- and once it ended, the journal is free again
    local _, s2 = c:send_commands(items, { parameter = { value = 1 }, journal = j })
    assert.are.equal(40, s2.resumed)
    os.remove(j) os.remove(j .. ".lock")
    c:close()
  end)

  it("a journal it cannot write: nil and the error, nothing sent", function()
    local c = sim.client()
    local res, err = c:send_commands(serials(3), { parameter = { value = 1 }, journal = "/nonexistent-dir/j" })
    assert.is_nil(res)
    assert.matches("journal could not be written", err.message)
    assert.are.equal(0, sim.counters().commands_created)
    c:close()
  end)

  it("wait_commands follows guids already sent", function()
    local c = sim.client()
    local results = c:send_commands(serials(20), { parameter = { value = 1 }, concurrency = 8 })
    local guids = {}
    for i, r in ipairs(results) do guids[i] = r.guid end
    local w, ws = c:wait_commands(guids, { concurrency = 8, wait_timeout = 10 })
    assert.are.equal(20, ws.succeeded)
    for i = 1, 20 do assert.are.equal("succeeded", w[i].command_status) end
    assert.are.equal(20, sim.counters().commands_created)
    c:close()
  end)
end)

describe("send_commands killed with SIGKILL half-way, resumed with its journal #sim #cli #slow", function()
  local sim
  setup(function() sim = H.sim { locks = 2100, command_pace = 0.02 } end)
  teardown(function() sim.stop() end)

  it("exactly one command per serial but those reported unknown, 0 duplicates", function()
    local j, list, out = tmpname(), os.tmpname(), os.tmpname()
    local f = assert(io.open(list, "w"))
    for _, sn in ipairs(serials(2000)) do f:write(sn, "\n") end
    f:close()
    -- slow enough to be killed in the middle of a round
    sim.fault { kind = "latency", latency = 0.01, share = 1 }
    local env = string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s", sim.app_key, sim.app_secret,
      sim.endpoint)
    local cmd = string.format("cd %s && %s %s bin/kinot command send --from %s --concurrency 16 --journal %s",
      H.root, env, LUA, list, j)
    local p = io.popen(cmd .. " >/dev/null 2>&1 & echo $!")
    local pid = tonumber(p:read("*l"))
    p:close()
    finally(function()
      os.execute("kill -9 " .. pid .. " 2>/dev/null")
      os.remove(j) os.remove(j .. ".lock") os.remove(list) os.remove(out)
    end)
    H.wait_for(function() return sim.counters().commands_created >= 1000 end, 60)
    os.execute("kill -9 " .. pid)
    core.sleep(0.3)
    local first = sim.counters().commands_created
    assert.is_true(first < 2000, "the batch ended before the kill: " .. first)
    -- resumed: the same command line, the same journal
    local a, _, code = os.execute(cmd .. " --jsonl > " .. out .. " 2>/dev/null")
    local rc = type(a) == "number" and math.floor(a / 256) or code
    local results = {}
    for line in read(out):gmatch("[^\n]+") do results[#results + 1] = json.decode(line) end
    assert.are.equal(2000, #results)
    local per, twice = created(sim)
    assert.are.same({}, twice)
    local unknown = 0
    for _, r in ipairs(results) do
      if r.outcome == "unknown" then
        unknown = unknown + 1
        assert.is_true((per[r.sn] or 0) <= 1)
      else
        assert.are.equal("sent", r.outcome, json.encode(r))
        assert.are.equal(1, per[r.sn], r.sn)
      end
    end
    -- the round in flight when it was killed: at most 16 unknown
    assert.is_true(unknown <= 16, unknown)
    assert.are.equal(unknown > 0 and 5 or 0, rc)
  end)
end)

describe("send_commands over resty inside nginx #nginx #sim", function()
  local sim, ng
  setup(function()
    sim = H.sim { locks = 2100, command_pace = 0.02 }
    ng = B.resty_host { client = "timeout = 5, backoff = { base = 0.01, max = 0.05 }", send = [[
          local results, summary = c:send_commands(items, { parameter = { value = 1 }, concurrency = 16 })]] ..
      B.RESULTS }
  end)
  teardown(function()
    ng.stop()
    sim.stop()
  end)

  it("2,000 under resets after the platform acted and throttling: at most one command per serial", function()
    sim.fault { kind = "reset", after = true, share = 0.05, endpoint = "POST /commands" }
    sim.fault { kind = "throttle", retry_after = 0, share = 0.05, endpoint = "POST /commands" }
    sim.fault { kind = "gateway_throttle", share = 0.05, endpoint = "POST /commands" }
    local doc = B.batch(ng, sim, 2000)
    assert.is_table(doc, "nginx: " .. ng.log())
    assert.is_table(doc.results, json.encode(doc))
    for _, r in ipairs(doc.results) do assert.is_string(r.outcome, json.encode(r) .. json.encode(doc.summary)) end
    local per, twice = created(sim)
    assert.are.same({}, twice)
    for _, r in ipairs(doc.results) do
      if r.outcome ~= "unknown" then r.guid = r.guid ~= json.null and r.guid or nil end
    end
    agrees(doc.results, per)
    assert.is_true(doc.summary.unknown > 0 and doc.summary.throttled > 0)
    assert.are.equal(2000, doc.summary.pending + doc.summary.unknown)
  end)
end)
