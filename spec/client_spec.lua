-- The API client against the simulator: every method of docs/api.md, every
-- error kind of §3, and the retry rules of §5 proven with the simulator's
-- counters.
local kinot = require "kinot"
local core = require "kinot.core"
local errors = require "kinot.errors"
local json = require "kinot.json"
local H = require "helpers"

describe("client methods #sim", function()
  local sim, c
  setup(function()
    sim = H.sim { locks = 137, sensors = 42, dtus = 3, command_pace = 0.03 }
    c = sim.client()
  end)
  teardown(function()
    c:close()
    sim.stop()
  end)

  it("lockers and sensors return a page with the reference's fields", function()
    local p = assert(c:lockers { offset = 13, limit = 10 })
    assert.are.same({ 137, 13, 10, 7 }, { p.count, p.offset, p.limit, #p.objects })
    assert.are.equal(419600131, p.objects[1].sn)
    if math.type then assert.are.equal("integer", math.type(p.objects[1].sn)) end
    local s = assert(c:sensors { limit = 100 })
    assert.are.equal(42, #s.objects)
    assert.is_number(s.objects[1].rs_si)
  end)

  it("defaults to offset 0, limit 10", function()
    local p = assert(c:lockers())
    assert.are.same({ 0, 10, 10 }, { p.offset, p.limit, #p.objects })
  end)

  it("locker, sensor and dtu_device return one table; sn may be a numeric string", function()
    assert.are.equal(419600005, assert(c:locker("419600005")).sn)
    assert.are.equal(419800002, assert(c:sensor(419800002)).sn)
    local d = assert(c:dtu_device(644200001))
    assert.are.equal(4097, d.hw)
  end)

  it("sends a command and waits for it, with the right parameters per helper", function()
    local cmd = assert(c:send_command(419600001, { key = "handle", value = 1 }))
    assert.are.equal(1, cmd.command)
    assert.is_string(cmd.command_status)
    local done = assert(c:wait_command(cmd.guid, { timeout = 5, interval = 0.02 }))
    assert.are.equal("succeeded", done.command_status)
    assert.are.same({ key = "handle", value = 1 }, assert(c:command(cmd.guid)).parameter)
    assert.are.equal(1, assert(c:reset_bt_match_code(419600001)).parameter.value)
    assert.are.equal(1, assert(c:activate_sensor(419800001)).parameter.value)
    assert.are.equal(2, assert(c:freeze_sensor(419800001)).parameter.value)
  end)

  it("wait_command's on_status sees each state read, in order, the final one last", function()
    sim.call("POST", "/config", { command_pace = 0.1 })
    local cmd = assert(c:send_command(419600003, { key = "handle", value = 1 }))
    local seen = {}
    local done = assert(c:wait_command(cmd.guid, { timeout = 5, interval = 0.02,
      on_status = function(s) seen[#seen + 1] = s.command_status end }))
    sim.call("POST", "/config", { command_pace = 0.03 })
    assert.are.equal("succeeded", done.command_status)
    assert.are.equal("succeeded", seen[#seen])
    local order = { sending = 1, pending = 2, arrived = 3, succeeded = 4 }
    for i = 2, #seen do assert.is_true(order[seen[i - 1]] <= order[seen[i]], table.concat(seen, ",")) end
    assert.is_true(#seen >= 3, table.concat(seen, ","))
    assert.has_error(function() c:wait_command(cmd.guid, { on_status = "x" }) end)
  end)

  it("times out wait_command with the last state", function()
    sim.call("POST", "/config", { command_pace = 30 })
    local cmd = assert(c:send_command(419600002, { key = "handle", value = 1 }))
    local got, err = c:wait_command(cmd.guid, { timeout = 0.3, interval = 0.05 })
    sim.call("POST", "/config", { command_pace = 0.03 })
    assert.is_nil(got)
    assert.are.equal("timeout", err.kind)
    assert.are.equal("sending", err.command.command_status)
  end)

  it("sets and reads notification settings, and sends a test notification", function()
    local set = assert(c:set_notifications { device_type = "lock", status_changed_callback_url = "http://127.0.0.1:9/s",
                                             command_resp_callback_url = "http://127.0.0.1:9/c" })
    assert.are.equal(18, set.device_type)
    local got = assert(c:notifications(18))
    assert.are.equal("http://127.0.0.1:9/s", got.status_changed_callback_url)
    local t = assert(c:test_notification(419600003, "command_resp"))
    assert.are.equal("http://127.0.0.1:9/c", t.callback_url)
  end)

  it("iterates every device across pages, sequentially and concurrently, in order", function()
    local seq, conc = {}, {}
    for l in c:each_locker { limit = 10 } do seq[#seq + 1] = l.sn end
    for l in c:each_locker { limit = 10, concurrency = 4 } do conc[#conc + 1] = l.sn end
    assert.are.equal(137, #seq)
    assert.are.same(seq, conc)
    for i = 2, #seq do assert.is_true(seq[i] > seq[i - 1]) end
    local n = 0
    for _ in c:each_sensor { concurrency = 8 } do n = n + 1 end
    assert.are.equal(42, n)
  end)

  -- (attack 11: the batches of a concurrent iteration went out without a
  -- "request" or "response" event; one GET of seven was seen)
  it("emits an event for every request of a concurrent iteration too, signature redacted", function()
    local seen = {}
    local ec = sim.client { on_event = function(e) seen[#seen + 1] = e end }
    local function gets()
      local e = sim.counters().endpoints
      return type(e) == "table" and e["GET /lockers"] or 0
    end
    local before = gets()
    local n = 0
    for _ in ec:each_locker { limit = 10, concurrency = 4 } do n = n + 1 end
    ec:close()
    local arrived = gets() - before
    local req, res = 0, 0
    for _, e in ipairs(seen) do
      if e.type == "request" then
        req = req + 1
        assert.are.equal("<redacted>", e.headers["X-Ca-Signature"])
      elseif e.type == "response" then
        res = res + 1
        assert.are.equal(200, e.status)
      end
    end
    assert.are.equal(137, n)
    assert.are.equal(arrived, req, "request events for the GETs that arrived")
    assert.are.equal(arrived, res, "response events")
  end)

  it("reports paging progress", function()
    local calls = {}
    for _ in c:each_locker { limit = 50, concurrency = 2, on_page = function(d, t) calls[#calls + 1] = d .. "/" .. t end } do end
    assert.are.same({ "1/3", "2/3", "3/3" }, calls)
  end)

  it("raises when the fleet changes under the iteration", function()
    local it = c:each_locker { limit = 10 }
    it()
    sim.call("POST", "/fleet", { locks = 150 })
    local ok, err = pcall(function() for _ in it do end end)
    sim.call("POST", "/fleet", { locks = 137 })
    assert.is_false(ok)
    assert.is_true(errors.is(err))
    assert.matches("fleet changed while paging: count went from 137 to 150", err.message)
  end)

  it("performs a raw signed request and returns status, headers and body", function()
    local status, headers, body, _ = c:request("GET", "/lockers", { query = { { "offset", "0" }, { "limit", "10" } } })
    assert.are.equal(200, status)
    assert.is_string(headers["x-ca-request-id"])
    assert.are.equal(137, require("kinot.json").decode(body).count)
    status, _, body = c:request("POST", "/commands", { body = { sn = 419600001, command = 1, parameter = { key = "handle", value = 1 } } })
    assert.are.equal(200, status)
    assert.matches('"guid"', body)
    -- an answer, even the gateway's refusal, is not a failure here
    local wrong = sim.client { app_secret = "wrong" }
    status, headers = wrong:request("GET", "/lockers")
    wrong:close()
    assert.are.equal(400, status)
    assert.matches("^Invalid Signature", headers["x-ca-error-message"])
    assert.has_error(function() c:request("get", "/x") end)
  end)

  it("works at module level after configure", function()
    kinot.configure { app_key = sim.app_key, app_secret = sim.app_secret, endpoint = sim.endpoint }
    assert.are.equal(137, assert(kinot.lockers { limit = 10 }).count)
    assert.are.equal(419600007, assert(kinot.locker(419600007)).sn)
  end)

  it("reads KINOT_* from the environment for the module-level client", function()
    local lua = H.runtime == "luajit" and "luajit" or "lua5.4"
    local cpath = H.runtime == "luajit" and "build/5.1/?.so" or "build/5.4/?.so"
    local cmd = string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s LUA_PATH='lua/?.lua;lua/?/init.lua;;' " ..
      "LUA_CPATH='%s;;' %s -e 'print(assert(require(\"kinot\").sensors{}).count)'",
      sim.app_key, sim.app_secret, sim.endpoint, cpath, lua)
    local p = io.popen(cmd)
    local out = p:read("*a")
    p:close()
    assert.are.equal("42\n", out)
  end)
end)

describe("client validation (misuse raises before sending) #sim", function()
  local sim, c
  setup(function()
    sim = H.sim {}
    c = sim.client()
  end)
  teardown(function() c:close(); sim.stop() end)

  local function no_requests() return sim.counters().endpoints == json.null end

  it("names the argument", function()
    assert.has_error(function() c:lockers { limit = 9 } end, "kinot: limit must be an integer from 10 to 100 (got 9)")
    assert.has_error(function() c:lockers { limit = 101 } end)
    assert.has_error(function() c:sensors { offset = -1 } end)
    assert.has_error(function() c:locker(0) end, "kinot: sn must be a positive integer (got 0)")
    assert.has_error(function() c:locker("12a") end)
    assert.has_error(function() c:locker(1.5) end)
    assert.has_error(function() c:notifications(99) end)
    assert.has_error(function() c:test_notification(1, "other") end)
    assert.has_error(function() c:set_notifications { device_type = 18, status_changed_callback_url = "ftp://x" } end)
    assert.has_error(function() c:send_command(1, { value = 1 }) end)
    assert.has_error(function() c:each_locker { concurrency = 0 } end)
    assert.has_error(function() kinot.new { app_key = "k" } end, "kinot: app_secret is required (or set KINOT_APP_SECRET)")
    assert.has_error(function() kinot.new { app_key = "k", app_secret = "s", endpoint = "nope" } end)
    assert.has_error(function() kinot.new { app_key = "k", app_secret = "s", transport = "carrier-pigeon" } end)
    assert.is_true(no_requests())
  end)
end)

describe("client errors and retries #sim", function()
  local sim
  setup(function() sim = H.sim { command_pace = 0.05 } end)
  teardown(function() sim.stop() end)
  before_each(function() sim.reset() end)

  local function count(key) return sim.counters().requests[key] or 0 end

  it("retries a GET on 5xx and succeeds; counters show every attempt", function()
    local c = sim.client { retries = 2 }
    local events = {}
    c.on_event = function(e) events[#events + 1] = e end
    sim.fault { kind = "status", status = 503, next = 2 }
    local p = assert(c:lockers())
    assert.are.equal(10, #p.objects)
    assert.are.equal(2, count("GET /lockers fault:status"))
    assert.are.equal(1, count("GET /lockers 200"))
    local retries = 0
    for _, e in ipairs(events) do if e.type == "retry" then retries = retries + 1 end end
    assert.are.equal(2, retries)
    c:close()
  end)

  it("gives up after retries with kind http, retryable, attempts counted", function()
    local c = sim.client { retries = 2 }
    sim.fault { kind = "status", status = 502, share = 1 }
    local p, err = c:lockers()
    assert.is_nil(p)
    assert.are.same({ "http", 502, true, 3 }, { err.kind, err.status, err.retryable, err.attempts })
    assert.are.equal(3, count("GET /lockers fault:status"))
    assert.matches("HTTP 502", tostring(err))
    c:close()
  end)

  it("honours Retry-After on 429 (throttled)", function()
    local c = sim.client { retries = 1 }
    sim.fault { kind = "throttle", retry_after = 1, next = 1 }
    local t0 = core.monotonic()
    assert(c:lockers())
    assert.is_true(core.monotonic() - t0 >= 0.95)
    sim.fault { kind = "throttle", retry_after = 1, share = 1 }
    local _, err = c:lockers()
    assert.are.equal("throttled", err.kind)
    assert.are.equal(429, err.status)
    c:close()
  end)

  it("says throttled for the gateway's 403 flow control", function()
    local c = sim.client { retries = 0 }
    sim.fault { kind = "gateway_throttle", next = 1 }
    local _, err = c:lockers()
    assert.are.equal("throttled", err.kind)
    assert.are.equal(403, err.status)
    assert.matches("Throttled by APP Flow Control", err.gateway_error)
    c:close()
  end)

  it("says timeout when the server stalls past the timeout", function()
    local c = sim.client { retries = 0, timeout = 0.3 }
    sim.fault { kind = "latency", latency = 2, next = 1 }
    local _, err = c:lockers()
    assert.are.equal("timeout", err.kind)
    assert.is_true(err.retryable)
    c:close()
  end)

  it("says network for a reset and for a refused connection", function()
    local c = sim.client { retries = 0 }
    sim.fault { kind = "reset", next = 1 }
    local _, err = c:lockers()
    assert.are.equal("network", err.kind)
    c:close()
    local dead = kinot.new { app_key = "k", app_secret = "s", endpoint = "http://127.0.0.1:" .. require("kinot.sim.launcher").free_port(),
                             retries = 1, backoff = { base = 0.01 } }
    local _, e2 = dead:lockers()
    assert.are.equal("network", e2.kind)
    assert.are.equal(2, e2.attempts)
    dead:close()
  end)

  it("says decode for malformed JSON after retrying", function()
    local c = sim.client { retries = 1 }
    sim.fault { kind = "malformed", share = 1 }
    local _, err = c:lockers()
    assert.are.equal("decode", err.kind)
    assert.are.equal(2, err.attempts)
    c:close()
  end)

  it("says too_large past max_body", function()
    local c = sim.client { retries = 2, max_body = 64 * 1024 }
    sim.fault { kind = "oversize", bytes = 200000, share = 1 }
    local _, err = c:lockers()
    assert.are.equal("too_large", err.kind)
    assert.are.equal(1, err.attempts)
    c:close()
  end)

  it("says not_found for an unknown sn and api for a refused command", function()
    local c = sim.client()
    local _, err = c:locker(1)
    assert.are.equal("not_found", err.kind)
    assert.are.equal(404, err.code)
    local _, e2 = c:send_command(419600001, { key = "handle", value = 7 })
    assert.are.equal("api", e2.kind)
    assert.matches("not valid", e2.api_message)
    c:close()
  end)

  it("says gateway for an unknown key, not retried", function()
    local c = sim.client { app_key = "somebody-else" }
    local _, err = c:lockers()
    assert.are.same({ "gateway", "Invalid AppKey", 1, false }, { err.kind, err.gateway_error, err.attempts, err.retryable })
    assert.is_string(err.request_id)
    c:close()
  end)

  it("says signature with both strings-to-sign side by side", function()
    local c = sim.client { app_secret = "not-the-secret" }
    local _, err = c:lockers()
    assert.are.equal("signature", err.kind)
    assert.are.equal(err.client_string_to_sign, err.server_string_to_sign)
    -- the same string on both sides: shown once, and the secret named as what differs (issue 11 §8)
    assert.matches("string%-to%-sign %(the same on both sides%): GET\\n", tostring(err))
    assert.matches("the app_secret (or the app_key it is paired with) is what differs", err.message, 1, true)
    assert.is_nil(tostring(err):find("not-the-secret", 1, true))
    c:close()
    -- a signed header altered on the way: two different strings, side by side, and no word of the secret
    local curl = require("kinot.transport.curl").new { verify_tls = true, max_body = 1048576 }
    local altered = sim.client { transport = function(req)
      req.headers["X-Ca-Nonce"] = "00000000-0000-4000-8000-000000000000"
      local res, kind, msg = curl.send(req)
      if not res then return nil, { kind = kind, message = msg } end
      return res
    end }
    _, err = altered:lockers()
    assert.are.equal("signature", err.kind)
    assert.are_not.equal(err.client_string_to_sign, err.server_string_to_sign)
    assert.matches("server string%-to%-sign: .*\n  client string%-to%-sign: ", tostring(err))
    assert.is_nil(err.message:find("what differs", 1, true))
    altered:close()
    curl.close()
  end)

  it("learns the server clock from Date and retries once on an expired timestamp", function()
    sim.call("POST", "/config", { clock_offset_ms = 3600 * 1000 })
    local c = sim.client { retries = 0 }
    assert(c:lockers())
    assert.is_true(math.abs(c.clock_offset_ms - 3600 * 1000) < 5000)
    c:close()
    sim.call("POST", "/config", { clock_offset_ms = 0 })
  end)

  describe("never sends a command twice", function()
    local FAULTS = {
      { kind = "status", status = 503 }, { kind = "status", status = 500 }, { kind = "throttle", retry_after = 0 },
      { kind = "reset" }, { kind = "reset", after = true },
      { kind = "truncated" }, { kind = "malformed" }, { kind = "latency", latency = 1 },
    }
    for _, f in ipairs(FAULTS) do
      it("under fault " .. f.kind .. (f.after and " after processing" or "") .. (f.status and (" " .. f.status) or ""), function()
        local c = sim.client { retries = 3, timeout = 0.5 }
        local fault = { next = 1, endpoint = "POST /commands" }
        for k, v in pairs(f) do fault[k] = v end
        sim.fault(fault)
        local cmd, err = c:send_command(419600001, { key = "handle", value = 1 })
        assert.is_nil(cmd)
        assert.are.equal(1, err.attempts)
        core.sleep(f.kind == "latency" and 0.8 or 0.05)
        local counters = sim.counters()
        assert.are.equal(1, counters.endpoints["POST /commands"])
        assert.is_true(counters.commands_created <= 1)
        c:close()
      end)
    end

    it("retries when the request provably never left (connection refused; a wrapped transport)", function()
      -- the real curl transport, wrapped only to refuse the first attempt the
      -- way a down server would: a real refused-then-up server is out of reach
      local curl = require("kinot.transport.curl").new { verify_tls = true, max_body = 8 * 1024 * 1024 }
      local calls = 0
      local c = sim.client { retries = 2, transport = function(req)
        calls = calls + 1
        if calls == 1 then return nil, { kind = "network", message = "Connection refused", not_sent = true } end
        local res, kind, msg, not_sent = curl.send(req)
        if not res then return nil, { kind = kind, message = msg, not_sent = not_sent } end
        return res
      end }
      local cmd = assert(c:send_command(419600001, { key = "handle", value = 1 }))
      assert.is_string(cmd.guid)
      assert.are.equal(2, calls)
      assert.are.equal(1, sim.counters().commands_created)
      c:close()
      curl.close()
    end)
  end)

  it("redacts the signature from events and never shows the secret", function()
    local seen = {}
    local c = sim.client { retries = 1, on_event = function(e) seen[#seen + 1] = e end }
    sim.fault { kind = "status", status = 503, next = 1 }
    assert(c:lockers())
    local _, err = c:locker(1)
    local text = {}
    for _, e in ipairs(seen) do
      text[#text + 1] = json.encode(e)
      if e.type == "request" then assert.are.equal("<redacted>", e.headers["X-Ca-Signature"]) end
    end
    text[#text + 1] = tostring(err)
    text = table.concat(text, "\n")
    assert.is_nil(text:find(sim.app_secret, 1, true))
    assert.are.same({ "request", "response", "retry", "request", "response", "request", "response" },
      (function() local t = {} for i, e in ipairs(seen) do t[i] = e.type end return t end)())
    c:close()
  end)
end)
