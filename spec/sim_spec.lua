-- The simulator (docs/simulator.md) driven through raw signed HTTP: every endpoint's
-- shape, each gateway refusal, the command lifecycle with its callbacks,
-- and each fault mode.
local kinot = require "kinot"
local core = require "kinot.core"
local json = require "kinot.json"
local callback = require "kinot.callback"
local H = require "helpers"

-- one signed request, built by hand as any other client would
local function signed(sim, method, path, query, body, tweak)
  local headers = {
    Accept = "application/json",
    ["X-Ca-Key"] = sim.app_key, ["X-Ca-Timestamp"] = tostring(core.now_ms()), ["X-Ca-Nonce"] = core.uuid(),
  }
  if body then
    headers["Content-Type"] = "application/json"
    headers["Content-MD5"] = kinot.content_md5(body)
  end
  local secret = sim.app_secret
  if tweak then secret = tweak(headers) or secret end
  local r = kinot.sign_request { method = method, path = "/open/lora/v1" .. path, query = query or {},
                                 headers = headers, app_secret = secret }
  headers["X-Ca-Signature"] = r.signature
  headers["X-Ca-Signature-Headers"] = table.concat(r.signed_headers, ",")
  local qs = {}
  for i, p in ipairs(query or {}) do qs[i] = p[1] .. "=" .. p[2] end
  local url = sim.endpoint .. path .. (#qs > 0 and ("?" .. table.concat(qs, "&")) or "")
  local res = H.raw(method, url, body, headers)
  return res, json.decode(res.body), headers
end

local LOCK_FIELDS = { "sn", "voltage", "frequency", "locked", "car_detected", "shell_opened", "low_battery", "coil_fault",
                      "bar_position_error", "motor_fail", "rs_si", "bt_match_code", "bt_mac", "updated_at" }
local SENSOR_FIELDS = { "sn", "voltage", "frequency", "car_detected", "low_battery", "coil_fault", "rs_si", "updated_at" }
local DTU_FIELDS = { "sn", "hw", "sw", "firmware", "host", "online", "updated_at" }

local function has_fields(obj, fields)
  for _, f in ipairs(fields) do assert.is_not_nil(obj[f], "missing " .. f) end
end

describe("simulator endpoints #sim", function()
  local sim
  setup(function() sim = H.sim { locks = 25, sensors = 12, dtus = 3, seed = 7 } end)
  teardown(function() sim.stop() end)

  it("pages lockers by page index with count", function()
    local res, doc = signed(sim, "GET", "/lockers", { { "offset", "2" }, { "limit", "10" } })
    assert.are.equal(200, res.status)
    assert.are.equal(0, doc.code)
    assert.are.equal(25, doc.count)
    assert.are.equal(5, #doc.objects) -- the third page of 25 holds 5
    has_fields(doc.objects[1], LOCK_FIELDS)
    assert.is_string(res.headers["x-ca-request-id"])
  end)

  it("is deterministic for a seed", function()
    local _, a = signed(sim, "GET", "/sensors", { { "offset", "0" }, { "limit", "10" } })
    local _, b = signed(sim, "GET", "/sensors", { { "offset", "0" }, { "limit", "10" } })
    assert.are.same(a, b)
    has_fields(a.objects[1], SENSOR_FIELDS)
    assert.are.equal(12, a.count)
  end)

  it("refuses a limit outside 10..100 as the platform does (code ~= 0)", function()
    for _, l in ipairs { "9", "101", "x" } do
      local res, doc = signed(sim, "GET", "/lockers", { { "offset", "0" }, { "limit", l } })
      assert.are.equal(200, res.status)
      assert.are_not.equal(0, doc.code)
      assert.matches("limit", doc.message)
    end
  end)

  it("answers a device by sn, and code ~= 0 for an unknown sn", function()
    local _, page = signed(sim, "GET", "/lockers", { { "offset", "0" }, { "limit", "10" } })
    local sn = page.objects[3].sn
    local res, doc = signed(sim, "GET", "/lockers/" .. sn)
    assert.are.equal(sn, doc.objects[1].sn)
    assert.matches("}$", res.body)
    assert.is_nil(res.body:find(",%s*[}%]]"), "strict JSON: no trailing comma") -- the reference's commas only with quirks
    local _, s = signed(sim, "GET", "/sensors", { { "offset", "0" }, { "limit", "10" } })
    local _, one = signed(sim, "GET", "/sensors/" .. s.objects[1].sn)
    has_fields(one.objects[1], SENSOR_FIELDS)
    local _, none = signed(sim, "GET", "/lockers/1")
    assert.are.equal(404, none.code)
    assert.matches("not found", none.message)
  end)

  it("answers a DTU by sn", function()
    local _, doc = signed(sim, "GET", "/dtu_devices/644200002")
    has_fields(doc.objects[1], DTU_FIELDS)
    assert.is_true(doc.objects[1].online == "online" or doc.objects[1].online == "offline")
  end)

  it("creates a command and answers it by guid", function()
    local body = '{"sn":419600004,"command":1,"parameter":{"key":"handle","value":1}}'
    local _, doc = signed(sim, "POST", "/commands", {}, body)
    assert.are.equal(0, doc.code)
    local cmd = doc.objects[1]
    assert.matches("^%x+$", cmd.guid)
    assert.are.equal(32, #cmd.guid)
    assert.are.equal(419600004, cmd.sn)
    assert.are.same({ key = "handle", value = 1 }, cmd.parameter)
    local _, got = signed(sim, "GET", "/commands", { { "guid", cmd.guid } })
    assert.are.equal(cmd.guid, got.objects[1].guid)
    assert.is_string(got.objects[1].command_status)
  end)

  it("refuses a command value a device does not take", function()
    local _, doc = signed(sim, "POST", "/commands", {}, '{"sn":419600004,"command":1,"parameter":{"key":"handle","value":2}}')
    assert.are_not.equal(0, doc.code)
  end)

  it("stores and answers notification settings", function()
    local _, set = signed(sim, "POST", "/notifications", {},
      '{"device_type":34,"status_changed_callback_url":"http://127.0.0.1:9/a","command_resp_callback_url":"http://127.0.0.1:9/b"}')
    assert.are.equal(0, set.code)
    local res, doc = signed(sim, "GET", "/notifications", { { "device_type", "34" } })
    assert.are.equal("http://127.0.0.1:9/a", doc.objects[1].status_changed_callback_url)
    assert.are.equal("http://127.0.0.1:9/b", doc.objects[1].command_resp_callback_url)
    assert.is_string(doc.objects[1].update_at)
    assert.is_nil(res.body:find(",%s*[}%]]"), "strict JSON: no trailing comma")
  end)
end)

describe("simulator gateway checks #sim", function()
  local sim
  setup(function() sim = H.sim {} end)
  teardown(function() sim.stop() end)

  it("accepts header names in lower case as well as original case", function()
    local res = signed(sim, "GET", "/lockers", { { "offset", "0" }, { "limit", "10" } }, nil, function(h)
      local copy = {}
      for k, v in pairs(h) do copy[k] = v end
      for k, v in pairs(copy) do h[k] = nil; h[k:lower()] = v end
    end)
    assert.are.equal(200, res.status)
  end)

  it("refuses a bad signature with the server's string-to-sign", function()
    local res = signed(sim, "GET", "/lockers", {}, nil, function() return "wrong-secret" end)
    assert.are.equal(400, res.status)
    local msg = res.headers["x-ca-error-message"]
    assert.matches("^Invalid Signature, Server StringToSign:`GET#application/json####X%-Ca%-Key:", msg)
    assert.matches("#/open/lora/v1/lockers`$", msg)
    assert.is_string(res.headers["x-ca-request-id"])
  end)

  it("refuses an old timestamp", function()
    local res = signed(sim, "GET", "/lockers", {}, nil, function(h)
      h["X-Ca-Timestamp"] = tostring(core.now_ms() - 16 * 60 * 1000)
    end)
    assert.are.equal(400, res.status)
    assert.are.equal("Timestamp Expired", res.headers["x-ca-error-message"])
  end)

  it("refuses a reused nonce", function()
    local nonce = core.uuid()
    local res1 = signed(sim, "GET", "/lockers", {}, nil, function(h) h["X-Ca-Nonce"] = nonce end)
    local res2 = signed(sim, "GET", "/lockers", {}, nil, function(h) h["X-Ca-Nonce"] = nonce end)
    assert.are.equal(200, res1.status)
    assert.are.equal(400, res2.status)
    assert.are.equal("Nonce Used", res2.headers["x-ca-error-message"])
  end)

  it("refuses an unknown key", function()
    local res = signed(sim, "GET", "/lockers", {}, nil, function(h) h["X-Ca-Key"] = "nobody" end)
    assert.are.equal(400, res.status)
    assert.are.equal("Invalid AppKey", res.headers["x-ca-error-message"])
  end)

  it("refuses a Content-MD5 that does not match the body", function()
    local res = signed(sim, "POST", "/commands", {}, '{"sn":419600001,"command":1,"parameter":{"key":"handle","value":1}}',
      function(h) h["Content-MD5"] = kinot.content_md5("something else") end)
    assert.are.equal(400, res.status)
    assert.are.equal("Invalid Content-MD5", res.headers["x-ca-error-message"])
    assert.are.equal(0, sim.counters().commands_created)
  end)
end)

describe("simulator commands and callbacks #sim", function()
  local sim, rcv
  setup(function()
    sim = H.sim { command_pace = 0.05 }
    rcv = H.receiver()
  end)
  teardown(function()
    sim.stop()
    rcv.stop()
  end)

  local function received() return rcv.received() end

  it("runs sending => pending => arrived => succeeded, posting a signed callback at each step", function()
    local c = sim.client()
    assert(c:set_notifications { device_type = 18, status_changed_callback_url = rcv.url .. "/cb",
                                 command_resp_callback_url = rcv.url .. "/cb" })
    local before = #received()
    local cmd = assert(c:reset_bt_match_code(419600002))
    local lock_before = assert(c:locker(419600002))
    local done = assert(c:wait_command(cmd.guid, { timeout = 5, interval = 0.05 }))
    assert.are.equal("succeeded", done.command_status)
    -- 4 command_resp callbacks (pending, arrived, succeeded... from sending) + 1 status_changed for the new code
    local bodies = H.wait_for(function()
      local all = received()
      return #all - before >= 4 and all
    end, 5)
    local statuses, changed = {}, 0
    for i = before + 1, #bodies do
      local ev, err = callback.verify(bodies[i], { secret = sim.app_secret })
      assert(ev, tostring(err))
      assert.are.equal("lock", ev.device)
      if ev.kind == "command_resp" then
        assert.matches('"commnad_status"', bodies[i])
        statuses[#statuses + 1] = ev.command_status
      else
        changed = changed + 1
      end
    end
    assert.are.same({ "pending", "arrived", "succeeded" }, statuses)
    local lock_after = assert(c:locker(419600002))
    assert.are_not.equal(lock_before.bt_match_code, lock_after.bt_match_code)
    H.wait_for(function() return sim.counters().callbacks.delivered == sim.counters().callbacks.sent end, 3)
    local cb = sim.counters().callbacks
    assert.are.equal(cb.sent, cb.delivered)
    assert.are.equal(0, cb.failed)
    c:close()
  end)

  it("fails a command when told to, and freezes/activates sensors", function()
    sim.call("POST", "/config", { failure_rate = 1 })
    local c = sim.client()
    local cmd = assert(c:freeze_sensor(419800003))
    local done = assert(c:wait_command(cmd.guid, { timeout = 5, interval = 0.05 }))
    assert.are.equal("failed", done.command_status)
    sim.call("POST", "/config", { failure_rate = 0 })
    cmd = assert(c:freeze_sensor(419800003))
    assert.are.equal("succeeded", assert(c:wait_command(cmd.guid, { timeout = 5, interval = 0.05 })).command_status)
    assert.are.equal(0, assert(c:sensor(419800003)).active)
    cmd = assert(c:activate_sensor(419800003))
    assert(c:wait_command(cmd.guid, { timeout = 5, interval = 0.05 }))
    assert.are.equal(1, assert(c:sensor(419800003)).active)
    c:close()
  end)

  it("posts a status_changed callback for an admin change and on test notifications", function()
    local c = sim.client()
    assert(c:set_notifications { device_type = 34, status_changed_callback_url = rcv.url .. "/cb" })
    local before = #received()
    sim.call("POST", "/devices/419800005", { car_detected = 1, low_battery = 1 })
    local t = assert(c:test_notification(419800005, "status_changed"))
    assert.are.equal("sent", t.error_detail)
    local bodies = H.wait_for(function() local b = received(); return #b >= before + 2 and b end, 5)
    for i = before + 1, before + 2 do
      local ev = assert(callback.verify(bodies[i], { secret = sim.app_secret }))
      assert.are.equal("status_changed", ev.kind)
      assert.are.equal("sensor", ev.device)
      assert.are.equal(419800005, ev.sn)
      assert.are.equal(1, ev.data.low_battery)
    end
    c:close()
  end)

  it("retries a callback the receiver refuses, and logs each attempt", function()
    local c = sim.client()
    assert(c:set_notifications { device_type = 18, status_changed_callback_url = rcv.url .. "/nowhere" })
    local before = sim.counters().callbacks
    sim.call("POST", "/devices/419600009", { locked = 1 })
    local after = H.wait_for(function()
      local cb = sim.counters().callbacks
      return cb.failed > before.failed and cb
    end, 5)
    assert.are.equal(before.attempts + 3, after.attempts)
    local log = sim.call("GET", "/callbacks")
    local last = log.deliveries[#log.deliveries]
    assert.is_true(last.status >= 400, "receiver answered " .. tostring(last.status))
    assert.are.equal(3, last.attempt)
    c:close()
  end)
end)

describe("simulator faults #sim", function()
  local sim
  setup(function() sim = H.sim {} end)
  teardown(function() sim.stop() end)
  before_each(function() sim.call("DELETE", "/faults") end)

  local function get_page()
    return H.raw("GET", sim.endpoint .. "/lockers?offset=0&limit=10")
  end

  it("adds latency", function()
    sim.fault { kind = "latency", latency = 0.3, next = 1 }
    local t0 = core.monotonic()
    local res = signed(sim, "GET", "/lockers", {})
    assert.are.equal(200, res.status)
    assert.is_true(core.monotonic() - t0 >= 0.29)
  end)

  it("answers 5xx with Retry-After, and 429", function()
    sim.fault { kind = "status", status = 503, retry_after = 2, next = 1 }
    local res = get_page()
    assert.are.equal(503, res.status)
    assert.are.equal("2", res.headers["retry-after"])
    sim.fault { kind = "throttle", retry_after = 1, next = 1 }
    res = get_page()
    assert.are.equal(429, res.status)
    assert.are.equal("1", res.headers["retry-after"])
  end)

  it("throttles like the gateway (403)", function()
    sim.fault { kind = "gateway_throttle", next = 1 }
    local res = get_page()
    assert.are.equal(403, res.status)
    assert.matches("Throttled", res.headers["x-ca-error-message"])
  end)

  it("resets the connection", function()
    sim.fault { kind = "reset", next = 1 }
    local h = core.http()
    local res, kind = h:request { url = sim.endpoint .. "/lockers" }
    h:close()
    assert.is_nil(res)
    assert.are.equal("network", kind)
  end)

  it("sends malformed and truncated JSON", function()
    sim.fault { kind = "malformed", next = 1 }
    local res = get_page()
    assert.is_nil(json.decode(res.body))
    sim.fault { kind = "truncated", next = 1 }
    local h = core.http()
    local r2, kind, msg = h:request { url = sim.endpoint .. "/lockers" }
    h:close()
    assert.is_nil(r2)
    assert.are.equal("network", kind)
    assert.matches("bytes remaining", msg)
  end)

  it("applies a share of requests, scoped to an endpoint, and counts requests", function()
    sim.reset()
    sim.fault { kind = "status", status = 500, share = 1, endpoint = "GET /sensors" }
    assert.are.equal(500, H.raw("GET", sim.endpoint .. "/sensors").status)
    assert.are_not.equal(500, get_page().status)
    local c = sim.counters()
    assert.are.equal(1, c.requests["GET /sensors fault:status"])
    assert.are.equal(1, c.endpoints["GET /lockers"])
  end)
end)

describe("simulator gateway nonce memory #unit", function()
  it("sweeps its nonces rarely, not on every request past 20,000", function()
    local gateway = require "kinot.sim.gateway"
    local gw = gateway.new { app_key = "k", app_secret = "s" }
    local headers = { Accept = "application/json", ["X-Ca-Key"] = "k" }
    local h = setmetatable({}, { __index = function(_, name)
      for k, v in pairs(headers) do if k:lower() == name:lower() then return v end end
    end })
    for i = 1, 45000 do
      headers["X-Ca-Timestamp"] = tostring(core.now_ms())
      headers["X-Ca-Nonce"] = "n" .. i
      local r = kinot.sign_request { method = "GET", path = "/p", headers = headers, app_secret = "s" }
      headers["X-Ca-Signature"] = r.signature
      headers["X-Ca-Signature-Headers"] = table.concat(r.signed_headers, ",")
      assert(gateway.check(gw, { method = "GET", path = "/p", query = {}, headers = h }))
      headers["X-Ca-Signature"], headers["X-Ca-Signature-Headers"] = nil, nil
    end
    assert.are.equal(45000, gw.nonce_count)
    assert.is_true(gw.sweeps <= 2, gw.sweeps .. " sweeps")
  end)
end)

-- ------------------------------------------------------------ strict JSON, and --quirks (issue 13 §1, 12 §7)

local cjson = require "cjson"

-- lua-cjson refuses what Python's json and JSON.parse refuse: trailing commas
local function strict(text, what)
  local ok, doc = pcall(cjson.decode, text)
  assert(ok, tostring(what) .. " is not strict JSON (" .. tostring(doc) .. "): " .. tostring(text):sub(-120))
  return doc
end

describe("simulator sends strict JSON by default #sim", function()
  local sim, rcv
  setup(function()
    sim = H.sim { locks = 12, sensors = 11, dtus = 2, command_pace = 0.02 }
    rcv = H.receiver()
  end)
  teardown(function()
    sim.stop()
    rcv.stop()
  end)

  it("in every answer of every endpoint, errors included, and of the admin API", function()
    local cb = rcv.url .. "/cb"
    local calls = {
      { "GET", "/lockers", { { "offset", "0" }, { "limit", "10" } } },
      { "GET", "/lockers", { { "offset", "1" }, { "limit", "10" } } },
      { "GET", "/sensors", { { "offset", "0" }, { "limit", "100" } } },
      { "GET", "/lockers", { { "offset", "0" }, { "limit", "5" } } },
      { "GET", "/lockers/419600001" }, { "GET", "/sensors/419800001" }, { "GET", "/dtu_devices/644200001" },
      { "GET", "/lockers/1" }, { "GET", "/nothing/here" },
      { "POST", "/notifications", {}, '{"device_type":18,"status_changed_callback_url":"' .. cb ..
        '","command_resp_callback_url":"' .. cb .. '"}' },
      { "POST", "/notifications", {}, '{"device_type":34,"status_changed_callback_url":"' .. cb ..
        '","command_resp_callback_url":"' .. cb .. '"}' },
      { "GET", "/notifications", { { "device_type", "18" } } },
      { "GET", "/notifications", { { "device_type", "34" } } },
      { "GET", "/notifications", { { "device_type", "7" } } },
      { "POST", "/test/notifications", {}, '{"sn":419800002,"callback_type":"status_changed"}' },
      { "POST", "/test/notifications", {}, '{"sn":419600002,"callback_type":"command_resp"}' },
      { "POST", "/commands", {}, '{"sn":419600003,"command":1,"parameter":{"key":"handle","value":1}}' },
      { "POST", "/commands", {}, '{"sn":419600003,"command":1,"parameter":{"key":"handle","value":9}}' },
    }
    local guid
    for _, c in ipairs(calls) do
      local res = signed(sim, c[1], c[2], c[3], c[4])
      local doc = strict(res.body, c[1] .. " " .. c[2])
      if c[2] == "/commands" and doc.code == 0 then guid = doc.objects[1].guid end
    end
    assert.is_string(guid)
    strict(signed(sim, "GET", "/commands", { { "guid", guid } }).body, "GET /commands")
    sim.call("POST", "/trigger", { type = "status", sn = 419600004 })
    for _, a in ipairs { "/health", "/counters", "/callbacks", "/faults" } do
      strict(H.raw("GET", sim.admin .. a).body, "admin " .. a)
    end
    strict(H.raw("POST", sim.admin .. "/trigger", '{"type":"command","sn":419800004,"value":2}').body, "admin /trigger")
    strict(H.raw("POST", sim.admin .. "/drift", '{"count":2}').body, "admin /drift")
  end)

  it("in every callback body it posts (status_changed and command_resp, locks and sensors)", function()
    -- the two commands have run their course: 3 command_resp each, and a status_changed
    -- (the counters and the receiver read at one moment: under load a
    -- command's last callbacks may still be on their way after the first read)
    local bodies
    local sent = H.wait_for(function()
      local c = sim.counters().callbacks
      if not (c.sent >= 11 and c.delivered == c.sent) then return false end
      bodies = rcv.received()
      return #bodies == c.sent and c
    end, 10)
    assert.is_truthy(sent, "callbacks not all delivered")
    assert.are.equal(sent.sent, #bodies)
    local kinds = {}
    for _, b in ipairs(bodies) do
      local doc = strict(b, "callback body")
      kinds[#kinds + 1] = (doc.guid and "command_resp" or "status_changed") .. ":" .. string.format("%d", doc.device_type)
      kinds[kinds[#kinds]] = true
      assert(callback.verify(b, { secret = sim.app_secret }))
    end
    for _, k in ipairs { "command_resp:18", "command_resp:34", "status_changed:18", "status_changed:34" } do
      assert.is_true(kinds[k], k .. " missing from " .. table.concat(kinds, " "))
    end
  end)
end)

describe("simulator --quirks #sim #nginx", function()
  local sim, ng
  setup(function()
    sim = H.sim { locks = 12, sensors = 11, quirks = true, command_pace = 0.02 }
    -- the SDK's own callback receiver, in a real nginx
    ng = H.nginx {
      http = [[
        lua_shared_dict seen 1m;
        init_by_lua_block {
          local function note(ev)
            local d = ngx.shared.seen
            local n = d:incr("n", 1, 0)
            d:set(n, ev.kind .. " " .. ev.device .. " " .. ev.sn .. " " .. tostring(ev.command_status))
          end
          receive = require("kinot.callback").handler { secret = "]] .. sim.app_secret .. [[",
                                                        on_status = note, on_command = note }
        }
      ]],
      server = [[
        location = /cb { content_by_lua_block { receive() } }
        location = /seen { content_by_lua_block {
          local d, out = ngx.shared.seen, {}
          for i = 1, (d:get("n") or 0) do out[i] = d:get(i) end
          ngx.print(table.concat(out, "\n"))
        } }
      ]],
    }
  end)
  teardown(function()
    sim.stop()
    ng.stop()
  end)

  it("answers with the reference's trailing commas where it shows them, and the SDK reads them", function()
    local res = signed(sim, "GET", "/lockers/419600001")
    assert.matches(",\n}$", res.body)
    assert.is_false(pcall(cjson.decode, res.body))
    res = signed(sim, "GET", "/notifications", { { "device_type", "18" } })
    assert.matches(",\n}$", res.body)
    local c = sim.client()
    assert.are.equal(419600001, assert(c:locker(419600001)).sn)
    assert.are.equal(18, assert(c:notifications(18)).device_type)
    c:close()
  end)

  it("posts callback bodies ending in ',\\n}', which the SDK's handler in nginx verifies and hands over", function()
    local c = sim.client()
    for _, dt in ipairs { 18, 34 } do
      assert(c:set_notifications { device_type = dt, status_changed_callback_url = ng.url .. "/cb",
                                   command_resp_callback_url = ng.url .. "/cb" })
    end
    local cmd = assert(c:reset_bt_match_code(419600002))
    assert.are.equal("succeeded", assert(c:wait_command(cmd.guid, { timeout = 5, interval = 0.05 })).command_status)
    assert(c:test_notification(419800003, "status_changed"))
    assert(c:test_notification(419800003, "command_resp"))
    c:close()
    -- pending, arrived, succeeded + the lock's new code + the sensor's two tests
    local want = {
      "command_resp lock 419600002 pending", "command_resp lock 419600002 arrived",
      "command_resp lock 419600002 succeeded", "status_changed lock 419600002 nil",
      "status_changed sensor 419800003 nil", "command_resp sensor 419800003 succeeded",
    }
    local seen = H.wait_for(function()
      local s = H.raw("GET", ng.url .. "/seen").body
      local n = select(2, s:gsub("\n", "")) + (s ~= "" and 1 or 0)
      return n >= #want and s
    end, 5)
    assert.is_truthy(seen, "the handler did not see every callback: " .. H.raw("GET", ng.url .. "/seen").body)
    local got = {}
    for line in seen:gmatch("[^\n]+") do got[#got + 1] = line end
    table.sort(got)
    table.sort(want)
    assert.are.same(want, got)
    -- what went over the wire: the quirky bodies, each answered 200 at the first attempt
    local log = sim.call("GET", "/callbacks").deliveries
    assert.are.equal(#want, #log)
    for _, d in ipairs(log) do
      assert.matches(",\n}$", d.body)
      assert.is_false(pcall(cjson.decode, d.body))
      assert.are.equal(200, d.status)
      assert.are.equal(1, d.attempt)
    end
  end)
end)

-- ------------------------------------------------------------ the simulator as a tool (issue 13 §6)

local function kinot_cli(args, env) return H.kinot(args, env) end

describe("kinot sim as a tool #sim #cli", function()
  local launcher = require "kinot.sim.launcher"

  it("refuses a port already in use (a simulator or any listener), exit 2, and the first one serves alone", function()
    local pidf = os.tmpname()
    local first = H.sim { locks = 3 }
    -- busted keeps one finally per test (a second replaces the first): one for both
    finally(function()
      first.stop()
      kinot_cli("sim stop --pid-file " .. pidf)
      os.remove(pidf)
    end)
    local again, err = launcher.start { port = first.port, locks = 40 }
    if again then again.stop() end
    assert.is_nil(again, "a second simulator started on a busy port")
    assert.matches("port " .. first.port .. " on 127.0.0.1 is already in use", err)
    local out, errtxt, rc = kinot_cli("sim --daemon --locks 40 --pid-file " .. pidf .. " --port " .. first.port)
    assert.are.equal(2, rc, out .. errtxt)
    assert.matches("already in use", errtxt)
    -- every request still reaches the one fleet of 3 locks
    local c = first.client()
    for _ = 1, 6 do assert.are.equal(3, assert(c:lockers {}).count) end
    c:close()
    -- any listener, not only nginx
    local socket = require "socket"
    local srv = assert(socket.bind("127.0.0.1", 0))
    local _, port = srv:getsockname()
    local s2, err2 = launcher.start { port = tonumber(port) }
    srv:close()
    if s2 then s2.stop() end
    assert.is_nil(s2)
    assert.matches("already in use", err2)
  end)

  it("prints the DTU serials it serves and the first lock and sensor serials", function()
    local pidf = os.tmpname()
    finally(function() kinot_cli("sim stop --pid-file " .. pidf) os.remove(pidf) end)
    local out, err, rc = kinot_cli("sim --daemon --locks 7 --sensors 4 --dtus 3 --pid-file " .. pidf)
    assert.are.equal(0, rc, err)
    assert.matches("first 419600001", out)
    assert.matches("first 419800001", out)
    assert.matches("DTUs: 644200001 644200002 644200003\n", out)
    kinot_cli("sim stop --pid-file " .. pidf)
    out, err, rc = kinot_cli("--json sim --daemon --locks 7 --sensors 0 --dtus 2 --paging rows --pid-file " .. pidf)
    assert.are.equal(0, rc, err)
    local info = json.decode(out)
    assert.are.same({ 644200001, 644200002 }, info.fleet.dtus)
    assert.are.equal(419600001, info.fleet.first_lock)
    assert.is_nil(info.fleet.first_sensor)
    assert.are.equal("rows", info.paging)
    -- and the DTUs it named are the ones it serves
    local c = require("kinot").new { app_key = info.app_key, app_secret = info.app_secret, endpoint = info.endpoint }
    assert.are.equal(644200002, assert(c:dtu_device(644200002)).sn)
    assert.are.equal("not_found", select(2, c:dtu_device(644200003)).kind)
    c:close()
  end)

  it("--quirks and --paging from the command line", function()
    local pidf = os.tmpname()
    finally(function() kinot_cli("sim stop --pid-file " .. pidf) os.remove(pidf) end)
    local out, err, rc = kinot_cli("--json sim --daemon --quirks --paging page1 --locks 15 --pid-file " .. pidf)
    assert.are.equal(0, rc, err)
    local info = json.decode(out)
    assert.is_true(info.quirks)
    local sim = { endpoint = info.endpoint, app_key = info.app_key, app_secret = info.app_secret }
    assert.matches(",\n}$", signed(sim, "GET", "/lockers/419600001").body)
    local _, p1 = signed(sim, "GET", "/lockers", { { "offset", "2" }, { "limit", "10" } })
    assert.are.equal(419600011, p1.objects[1].sn)
    _, err, rc = kinot_cli("sim --daemon --paging pages --pid-file " .. pidf .. "x")
    assert.are.equal(2, rc)
    assert.matches("page0", err)
  end)

  describe("drives a running simulator's admin API", function()
    local sim, rcv, env
    setup(function()
      sim = H.sim { locks = 9, sensors = 9, command_pace = 0.02 }
      rcv = H.receiver()
      env = "KINOT_ENDPOINT=" .. sim.endpoint
      local c = sim.client()
      assert(c:set_notifications { device_type = 18, status_changed_callback_url = rcv.url .. "/cb",
                                   command_resp_callback_url = rcv.url .. "/cb" })
      c:close()
    end)
    teardown(function()
      sim.stop()
      rcv.stop()
    end)
    local function received() return rcv.received() end

    it("trigger status SN: the device changes and its status_changed callback goes out", function()
      local before = #received()
      local out, err, rc = kinot_cli("sim trigger status 419600005 --set locked=1 --set low_battery=1 --url " .. sim.url)
      assert.are.equal(0, rc, err)
      assert.matches("status_changed posted to " .. rcv.url:gsub("%p", "%%%0") .. "/cb", out)
      local bodies = H.wait_for(function() local b = received() return #b > before and b end, 3)
      local ev = assert(callback.verify(bodies[#bodies], { secret = sim.app_secret }))
      assert.are.equal(419600005, ev.sn)
      assert.are.equal(1, ev.data.low_battery)
      local c = sim.client()
      assert.are.equal(1, assert(c:locker(419600005)).locked)
      c:close()
      -- no URL for sensors: said so
      out, err, rc = kinot_cli("sim trigger status 419800005", env)
      assert.are.equal(0, rc, err)
      assert.matches("no status_changed callback URL", out)
    end)

    it("trigger command SN: a command runs its course with its callbacks", function()
      local created = sim.counters().commands_created
      local out, err, rc = kinot_cli("--json sim trigger command 419600006", env)
      assert.are.equal(0, rc, err)
      local cmd = json.decode(out)
      assert.matches("^%x+$", cmd.guid)
      assert.are.equal(created + 1, sim.counters().commands_created)
      local c = sim.client()
      assert.are.equal("succeeded", assert(c:wait_command(cmd.guid, { timeout = 5, interval = 0.05 })).command_status)
      c:close()
    end)

    it("fault KIND / list / clear", function()
      local out, err, rc = kinot_cli("sim fault status --status 503 --retry-after 1 --endpoint 'GET /sensors' --next 2", env)
      assert.are.equal(0, rc, err)
      assert.matches("fault status on the next 2", out)
      out = kinot_cli("--json sim fault list", env)
      assert.are.equal(503, json.decode(out)[1].status)
      local res = H.raw("GET", sim.endpoint .. "/sensors")
      assert.are.equal(503, res.status)
      assert.are.equal("1", res.headers["retry-after"])
      assert.are_not.equal(503, H.raw("GET", sim.endpoint .. "/lockers").status)
      out, err, rc = kinot_cli("sim fault clear", env)
      assert.are.equal(0, rc, err)
      assert.matches("faults cleared", out)
      assert.are.same({}, json.decode((kinot_cli("--json sim fault list", env))))
      assert.are_not.equal(503, H.raw("GET", sim.endpoint .. "/sensors").status)
    end)

    it("drift --count N", function()
      local out, err, rc = kinot_cli("--json sim drift --count 4 --url " .. sim.url .. "/open/lora/v1")
      assert.are.equal(0, rc, err)
      assert.are.equal(4, #json.decode(out))
    end)

    it("says which simulator it needs, and when none answers", function()
      local _, err, rc = kinot_cli("sim drift", "KINOT_ENDPOINT=")
      assert.are.equal(2, rc)
      assert.matches("%-%-url", err)
      _, err, rc = kinot_cli("sim drift --url http://127.0.0.1:" .. launcher.free_port())
      assert.are.equal(4, rc)
      assert.matches("no simulator answers at", err)
      local out
      out, err, rc = kinot_cli("sim trigger --help")
      assert.are.equal(0, rc, err)
      assert.matches("status_changed", out)
      for _, sub in ipairs { "fault", "drift" } do
        out, _, rc = kinot_cli("sim " .. sub .. " --help")
        assert.are.equal(0, rc)
        assert.matches("%-%-url", out)
      end
    end)
  end)
end)
