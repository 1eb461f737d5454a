-- The stream under client:send_commands: request.stream over the C core's
-- curl-multi stream (http:stream), each slot given a new call as soon as its
-- last one ended.  Real libcurl against the simulator (kinot sim, in nginx):
-- a slow call does not hold the others (it would in rounds), a stream cut
-- short by an error leaves the handle usable, a client closed in the middle
-- is freed only once the stream lets go, and in a batch every command's
-- "sending" record is on the disk before its request reaches libcurl.
local core = require "kinot.core"
local json = require "kinot.json"
local request = require "kinot.request"
local H = require "helpers"
local B = require "batch_support"
local serials = B.serials

local function get_lockers()
  return { method = "GET", path = "/lockers", query = { page_index = 1, page_size = 1 }, idempotent = true }
end

describe("request.stream over curl-multi #sim", function()
  local sim
  setup(function() sim = H.sim { locks = 400, command_pace = 0.02 } end)
  teardown(function() sim.stop() end)
  before_each(function() sim.reset() end)

  it("a slow call does not hold the others: its slot alone waits", function()
    sim.fault { kind = "latency", latency = 1.5, next = 1, endpoint = "GET /lockers" }
    local c = sim.client()
    local left, order, first = 40, {}, {}
    local t0 = core.monotonic()
    request.stream(c, 4, function(free)
      local calls = {}
      while #calls < free and left > 0 do
        local call = get_lockers()
        first[call] = left == 40
        calls[#calls + 1], left = call, left - 1
      end
      return calls
    end, function(call, doc, err)
      assert.is_table(doc, tostring(err))
      order[#order + 1] = first[call] and "slow" or "fast"
    end)
    local took = core.monotonic() - t0
    assert.are.equal(40, #order)
    -- the 39 others went through the 3 other slots meanwhile: in rounds of
    -- 4, the first round would have held 3 of them behind the slow one
    assert.are.equal("slow", order[40])
    assert.is_true(took < 3, took)
    c:close()
  end)

  it("rate-like delays: take is asked again after the delay it gave, with nothing out", function()
    local c = sim.client()
    local asked, sent, t0 = 0, 0, core.monotonic()
    local answered = 0
    request.stream(c, 4, function()
      asked = asked + 1
      if sent >= 3 then return {} end
      -- one call each 0.2 s
      if core.monotonic() - t0 < sent * 0.2 then return {}, sent * 0.2 - (core.monotonic() - t0) end
      sent = sent + 1
      return { get_lockers() }, 0.2
    end, function(_, doc) assert.is_table(doc) answered = answered + 1 end)
    assert.are.equal(3, answered)
    assert.is_true(core.monotonic() - t0 >= 0.4)
    c:close()
  end)

  it("an error raised in on_answer ends the stream, what was out is abandoned, the next stream works", function()
    sim.fault { kind = "latency", latency = 0.5, share = 1, endpoint = "GET /lockers" }
    local c = sim.client()
    local given = false
    local ok, e = pcall(request.stream, c, 8, function()
      if given then return {} end
      given = true
      local calls = {}
      for k = 1, 8 do calls[k] = get_lockers() end
      return calls
    end, function() error("enough") end)
    assert.is_false(ok)
    assert.matches("enough", tostring(e))
    sim.reset()
    -- the handles went back warm, not half used
    local out = request.perform_many(c, { get_lockers(), get_lockers(), get_lockers() })
    for k = 1, 3 do assert.is_table(out[k][1], tostring(out[k][2])) end
    c:close()
  end)

  it("a request libcurl cannot make raises misuse, nothing goes, the stream is cleaned up", function()
    local http = core.http()
    local s = http:stream(2)
    local ok, e = pcall(s.add, s, 1, { url = sim.endpoint .. "/lockers", headers = { ["X-Bad"] = "a\r\nb: c" } })
    assert.is_false(ok)
    assert.matches("CR", tostring(e.message or e))
    s:close()
    assert.are.equal(json.null, sim.counters().endpoints) -- not a request reached the platform
    -- a busy slot is the caller's mistake; a closed stream says so
    s = http:stream(1)
    assert.is_true(s:add(1, { url = sim.endpoint .. "/lockers" }))
    ok, e = pcall(s.add, s, 1, { url = sim.endpoint .. "/lockers" })
    assert.is_false(ok)
    assert.matches("slot 1 is busy", e.message)
    local slots, res = s:wait(5)
    assert.are.same({ 1 }, slots)
    assert.is_number(res[1].status)
    s:close()
    ok, e = pcall(s.wait, s, 1)
    assert.is_false(ok)
    assert.matches("stream is closed", e.message)
    http:close()
  end)

  it("the handle closed while a stream runs: closed for new calls at once, freed when the stream ends", function()
    sim.fault { kind = "latency", latency = 0.3, share = 1, endpoint = "GET /lockers" }
    local http = core.http()
    local s = http:stream(2)
    s:add(1, { url = sim.endpoint .. "/lockers" })
    http:close()
    local ok, e = pcall(http.request, http, { url = sim.endpoint .. "/lockers" })
    assert.is_false(ok)
    assert.matches("closed", e.message)
    local slots, res = s:wait(5) -- the transfer out still ends
    assert.are.same({ 1 }, slots)
    assert.is_number(res[1].status)
    s:close()
    collectgarbage("collect")
    collectgarbage("collect")
  end)

  it("client:close() inside a batch's on_progress: nothing more goes, the commands out are read, then 'client is closed'", function()
    sim.fault { kind = "latency", latency = 0.2, share = 1, endpoint = "POST /commands" }
    local c = sim.client()
    local sent_at_close
    local ok, e = pcall(c.send_commands, c, serials(100), { parameter = { value = 1 }, concurrency = 4,
      on_progress = function(p)
        if p.sent >= 8 and not sent_at_close then sent_at_close = p.sent c:close() end
      end })
    assert.is_false(ok)
    assert.matches("client is closed", tostring(e.message or e))
    -- each one handed out was answered (a stream that let go of them at
    -- once would leave some on their way: the counter would run on)
    local made = sim.counters().commands_created
    core.sleep(0.4)
    assert.are.equal(made, sim.counters().commands_created)
    assert.are.equal(sent_at_close, made)
  end)
end)

describe("send_commands streams #sim", function()
  local sim
  setup(function() sim = H.sim { locks = 400, command_pace = 0.02 } end)
  teardown(function() sim.stop() end)
  before_each(function() sim.reset() end)

  it("a slow command holds its own slot only: the rest of the batch goes on meanwhile", function()
    sim.fault { kind = "latency", latency = 2, next = 1, endpoint = "POST /commands" }
    local c = sim.client()
    local t0, sent_by_1s = core.monotonic(), 0
    local _, summary = c:send_commands(serials(200), { parameter = { value = 1 }, concurrency = 4,
      on_progress = function(p) if core.monotonic() - t0 < 1 then sent_by_1s = p.sent end end })
    assert.are.equal(200, summary.pending)
    -- in rounds, the round with the slow command would hold the batch at 4
    -- sent for 2 s
    assert.is_true(sent_by_1s > 100, sent_by_1s)
    assert.are.equal(200, sim.counters().commands_created)
    c:close()
  end)

  it("each command's 'sending' record is on the disk before its request is handed to libcurl", function()
    local j = os.tmpname()
    os.remove(j)
    local c = sim.client()
    local stream = c.transport.stream
    local checked, missing = 0, {}
    -- (a watch on the real curl stream: what it is given, it sends at once)
    c.transport.stream = function(slots, take, done)
      return stream(slots, function(free)
        local reqs, delay = take(free)
        if #reqs > 0 then
          local f = assert(io.open(j, "rb"))
          local text = f:read("*a")
          f:close()
          for _, req in ipairs(reqs) do
            local sn = json.decode(req.body).sn
            checked = checked + 1
            -- (kinot.json writes keys sorted)
            if not text:find('"at":"sending","i":%d+,"sn":' .. sn .. "}") then
              missing[#missing + 1] = sn
            end
          end
        end
        return reqs, delay
      end, done)
    end
    local _, summary = c:send_commands(serials(100), { parameter = { value = 1 }, concurrency = 8, journal = j })
    assert.are.equal(100, summary.pending)
    assert.are.equal(100, checked)
    assert.are.same({}, missing)
    os.remove(j) os.remove(j .. ".lock")
    c:close()
  end)

  it("throttled answers that were out together halve the concurrency once, not once each", function()
    sim.fault { kind = "throttle", retry_after = 0, next = 6, endpoint = "POST /commands" }
    local c = sim.client()
    local seen = {}
    local _, summary = c:send_commands(serials(16), { parameter = { value = 1 }, concurrency = 16,
      on_progress = function(p) seen[#seen + 1] = p.concurrency end })
    assert.are.equal(6, summary.throttled)
    assert.are.equal(16, summary.pending)
    local low = math.huge
    for _, k in ipairs(seen) do low = math.min(low, k) end
    assert.are.equal(8, low)
    assert.are.equal(16, sim.counters().commands_created)
    c:close()
  end)
end)

describe("send_commands streams over resty inside nginx (light threads) #nginx #sim", function()
  local sim, ng
  setup(function()
    sim = H.sim { locks = 400, command_pace = 0.02 }
    ng = B.resty_host { client = "timeout = 5", send = [[
          ngx.update_time()
          local t0, by_1s = ngx.now(), 0
          local _, summary = c:send_commands(items, { parameter = { value = 1 }, concurrency = 4,
            on_progress = function(p)
              ngx.update_time()
              if ngx.now() - t0 < 1 then by_1s = p.sent end
            end })
          ngx.say(json.encode { summary = summary, by_1s = by_1s })]] }
  end)
  teardown(function()
    ng.stop()
    sim.stop()
  end)

  it("a slow command holds its own light thread only: the rest goes on meanwhile", function()
    sim.fault { kind = "latency", latency = 2, next = 1, endpoint = "POST /commands" }
    local doc = B.batch(ng, sim, 200)
    assert.is_table(doc, "nginx: " .. ng.log())
    assert.are.equal(200, doc.summary.pending, json.encode(doc))
    -- one after another, the slow first command would hold all for 2 s
    assert.is_true(doc.by_1s > 100, json.encode(doc))
    assert.are.equal(200, sim.counters().commands_created)
  end)
end)
