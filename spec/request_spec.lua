-- The request pipeline (kinot.request), one step at a time, without a
-- network: build (the call -> the signed transport request), classify (an
-- answer or a transport failure -> document or error table), retry (a
-- failed attempt -> go again or stop).  The signature is checked against
-- OpenSSL's command line, not against the SDK's own signer.
local kinot = require "kinot"
local errors = require "kinot.errors"
local request = require "kinot.request"
local build = require "kinot.request.build"
local classify = require "kinot.request.classify"
local retry = require "kinot.request.retry"

local version = require "kinot.version"

-- base64(HMAC-SHA256(key, msg)) and base64(MD5(msg)) by openssl(1)
local function openssl(args, msg)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(msg)
  f:close()
  local p = assert(io.popen("openssl dgst " .. args .. " -binary < " .. path .. " | openssl base64 -A"))
  local out = p:read("*a")
  p:close()
  os.remove(path)
  return out
end
local function hmac256(key, msg) return openssl("-sha256 -hmac " .. key, msg) end
local function md5(msg) return openssl("-md5", msg) end

local NOW, NONCE = 1764000000000, "3c1d5a0e-8f3b-4d1e-9c2a-7b6e5f4d3c2b"

describe("request: build #unit", function()
  local c
  before_each(function()
    c = kinot.new { app_key = "203000001", app_secret = "s3cr3t", endpoint = "http://127.0.0.1:1/open/lora/v1" }
  end)
  after_each(function() c:close() end)

  it("a GET: exact headers and url for a given clock and nonce, the query in the caller's order", function()
    local req, signed = build.build(c, { method = "GET", path = "/lockers",
      query = { { "offset", "0" }, { "limit", "10" } } }, { now_ms = NOW, nonce = NONCE })
    local sts = "GET\napplication/json\n\n\n\n" ..
      "X-Ca-Key:203000001\nX-Ca-Nonce:" .. NONCE .. "\nX-Ca-Signature-Method:HmacSHA256\n" ..
      "X-Ca-Timestamp:1764000000000\n/open/lora/v1/lockers?limit=10&offset=0"
    assert.are.equal(sts, signed.string_to_sign)
    assert.are.same({
      ["Accept"] = "application/json",
      ["User-Agent"] = "lua-kinot/" .. version,
      ["X-Ca-Key"] = "203000001",
      ["X-Ca-Timestamp"] = "1764000000000",
      ["X-Ca-Nonce"] = NONCE,
      ["X-Ca-Signature-Method"] = "HmacSHA256",
      ["X-Ca-Signature-Headers"] = "X-Ca-Key,X-Ca-Nonce,X-Ca-Signature-Method,X-Ca-Timestamp",
      ["X-Ca-Signature"] = hmac256("s3cr3t", sts),
    }, req.headers)
    assert.are.equal("http://127.0.0.1:1/open/lora/v1/lockers?offset=0&limit=10", req.url)
    assert.are.same({ "GET", nil, 10, 3 }, { req.method, req.body, req.timeout, req.connect_timeout })
  end)

  it("a POST with a body, a stage and a learnt clock offset", function()
    c.stage, c.clock_offset_ms = "TEST", -1500
    local body = '{"sn":419600001,"command":1}'
    local req, signed = build.build(c, { method = "POST", path = "/commands", query = {}, raw_body = body },
      { now_ms = NOW, nonce = NONCE })
    local content_md5 = md5(body)
    local sts = "POST\napplication/json\n" .. content_md5 .. "\napplication/json; charset=UTF-8\n\n" ..
      "X-Ca-Key:203000001\nX-Ca-Nonce:" .. NONCE .. "\nX-Ca-Signature-Method:HmacSHA256\n" ..
      "X-Ca-Stage:TEST\nX-Ca-Timestamp:1763999998500\n/open/lora/v1/commands"
    assert.are.equal(sts, signed.string_to_sign)
    assert.are.equal(body, req.body)
    assert.are.equal(content_md5, req.headers["Content-MD5"])
    assert.are.equal("application/json; charset=UTF-8", req.headers["Content-Type"])
    assert.are.equal("1763999998500", req.headers["X-Ca-Timestamp"])
    assert.are.equal("TEST", req.headers["X-Ca-Stage"])
    assert.are.equal("X-Ca-Key,X-Ca-Nonce,X-Ca-Signature-Method,X-Ca-Stage,X-Ca-Timestamp",
      req.headers["X-Ca-Signature-Headers"])
    assert.are.equal(hmac256("s3cr3t", sts), req.headers["X-Ca-Signature"])
    assert.are.equal("http://127.0.0.1:1/open/lora/v1/commands", req.url)
  end)

  it("percent-encodes the wire, signs the raw values", function()
    local req, signed = build.build(c, { method = "GET", path = "/x", query = { { "a b", "x/y~é" } } },
      { now_ms = NOW, nonce = NONCE })
    assert.are.equal("http://127.0.0.1:1/open/lora/v1/x?a%20b=x%2Fy~%C3%A9", req.url)
    assert.matches("\n/open/lora/v1/x%?a b=x/y~é$", signed.string_to_sign)
    assert.are.equal("AZaz09-._~%20%2B%2F%3D%26", build.pct("AZaz09-._~ +/=&"))
  end)

  it("a table body goes out as JSON; one that cannot be JSON raises before anything is built", function()
    local req = build.build(c, { method = "POST", path = "/notifications", query = {}, body = { device_type = 18 } })
    assert.are.equal('{"device_type":18}', req.body)
    local ok, e = pcall(build.build, c, { method = "POST", path = "/n", query = {}, body = { v = 0 / 0 } })
    assert.is_false(ok)
    assert.is_true(errors.is_misuse(e))
  end)

  it("every build signs afresh: a new nonce each time without a stamp", function()
    local a = build.build(c, { method = "GET", path = "/lockers", query = {} })
    local b = build.build(c, { method = "GET", path = "/lockers", query = {} })
    assert.are_not.equal(a.headers["X-Ca-Nonce"], b.headers["X-Ca-Nonce"])
    assert.are_not.equal(a.headers["X-Ca-Signature"], b.headers["X-Ca-Signature"])
  end)

  it("a closed client raises misuse", function()
    c:close()
    local ok, e = pcall(build.build, c, { method = "GET", path = "/lockers", query = {} })
    assert.is_false(ok)
    assert.is_true(errors.is_misuse(e))
    assert.matches("client is closed", tostring(e))
  end)

  it("kinot.request keeps the names the SDK reaches", function()
    assert.are.equal(build.build, request.build)
    assert.are.equal(build.pct, request.pct)
    assert.are.equal("lua-kinot/" .. version, request.USER_AGENT)
    assert.are.equal(classify.response, request.decode)
    assert.are.equal(classify.http_date_ms, request.http_date_ms)
    for _, k in ipairs { "send", "perform", "perform_many", "transport_error", "unknown_outcome" } do
      assert.is_function(request[k], k)
    end
  end)
end)

describe("request: classify #unit", function()
  local GET = { method = "GET", path = "/lockers" }
  local POST = { method = "POST", path = "/commands", body = { sn = 419600001 } }
  local signed = { string_to_sign = "GET\napplication/json\n\n\n\n/open/lora/v1/lockers" }

  local function res(status, headers, body)
    return { status = status, headers = headers or {}, body = body or "" }
  end
  local function gw(status, message, more)
    local h = { ["x-ca-error-message"] = message, ["x-ca-request-id"] = "RID" }
    for k, v in pairs(more or {}) do h[k] = v end
    return res(status, h)
  end

  -- every gateway / platform answer: kind, retryable, not_sent, whether a
  -- non-idempotent call's outcome is then unknown, timestamp_error
  local CASES = {
    { "gateway: Invalid Signature", gw(400, "Invalid Signature, Server StringToSign:`GET#x`"),
      "signature", false, true, false },
    { "gateway: Invalid Timestamp", gw(400, "Invalid Timestamp"), "gateway", false, true, false, true },
    { "gateway: Timestamp Expired", gw(400, "Timestamp Expired"), "gateway", false, true, false, true },
    { "gateway: Nonce Used (a copy of this attempt arrived)", gw(400, "Nonce Used"), "gateway", true, false, true },
    { "gateway: Invalid Nonce", gw(400, "Invalid Nonce"), "gateway", true, true, false },
    { "gateway: throttled (403)", gw(403, "Throttled by APP Flow Control", { ["retry-after"] = "2" }),
      "throttled", true, true, false },
    { "gateway: 429", gw(429, "Too Many Requests"), "throttled", true, true, false },
    { "gateway: Invalid AppKey", gw(400, "Invalid AppKey"), "gateway", false, true, false },
    { "gateway: Invalid Url", gw(404, "Invalid Url"), "gateway", false, true, false },
    { "gateway: 500", gw(500, "Internal Error"), "gateway", true, false, true },
    { "gateway: 503 backend", gw(503, "Backend Service Unavailable"), "gateway", true, false, true },
    { "platform: 429", res(429, { ["retry-after"] = "3" }), "throttled", true, nil, false },
    { "platform: 500", res(500), "http", true, nil, true },
    { "platform: 502", res(502), "http", true, nil, true },
    { "platform: 404", res(404), "not_found", false, nil, false },
    { "platform: 400", res(400), "http", false, nil, false },
    { "platform: 200, not JSON", res(200, {}, "<html>"), "decode", true, nil, true },
    { "platform: 200, a JSON string", res(200, {}, "\"ok\""), "decode", true, nil, true },
    { "platform: code 404", res(200, {}, '{"code":404,"message":"no such lock"}'), "not_found", false, nil, false },
    { "platform: 'not exist'", res(200, {}, '{"code":1,"message":"device Not Exist"}'), "not_found", false, nil, false },
    { "platform: code 1", res(200, {}, '{"code":1,"message":"bad parameter"}'), "api", false, nil, false },
  }
  for _, case in ipairs(CASES) do
    local name, r, kind, retryable, not_sent, unknown, ts = case[1], case[2], case[3], case[4], case[5], case[6], case[7]
    it(name .. " -> " .. kind, function()
      local doc, err = classify.response(r, signed, GET)
      assert.is_nil(doc)
      assert.is_true(errors.is(err))
      assert.are.same({ kind, retryable, not_sent, unknown, ts, r.status },
        { err.kind, err.retryable, err.not_sent, classify.outcome_unknown(err), err.timestamp_error, err.status })
      if r.headers["x-ca-error-message"] then
        assert.are.equal(r.headers["x-ca-error-message"], err.gateway_error)
        assert.are.equal("RID", err.request_id)
      end
    end)
  end

  it("Retry-After as seconds or as an HTTP date, never negative", function()
    local _, e = classify.response(gw(403, "Throttled", { ["retry-after"] = "2" }), signed, GET)
    assert.are.equal(2, e.retry_after)
    local date = "Wed, 25 Nov 2026 19:41:18 GMT"
    assert.are.equal(7, classify.retry_after(res(429, { ["retry-after"] = date }), 1795635671000))
    assert.are.equal(0, classify.retry_after(res(429, { ["retry-after"] = date }), 1795635699000))
    assert.is_nil(classify.retry_after(res(429, {})))
    assert.is_nil(classify.retry_after(res(429, { ["retry-after"] = "soon" })))
  end)

  it("HTTP dates to ms since the epoch (leap days, the epoch; nonsense is nil)", function()
    assert.are.equal(1795635678000, classify.http_date_ms("Wed, 25 Nov 2026 19:41:18 GMT"))
    assert.are.equal(951782400000, classify.http_date_ms("Tue, 29 Feb 2000 00:00:00 GMT"))
    assert.are.equal(1000, classify.http_date_ms("Thu, 01 Jan 1970 00:00:01 GMT"))
    assert.is_nil(classify.http_date_ms("yesterday"))
    assert.is_nil(classify.http_date_ms("Wed, 25 Foo 2026 19:41:18 GMT"))
    assert.is_nil(classify.http_date_ms(nil))
  end)

  it("Invalid Signature: both strings-to-sign, and which side differs when they are equal", function()
    local _, e = classify.response(gw(400, "Invalid Signature, Server StringToSign:`GET#application/json####" ..
      "/open/lora/v1/lockers`"), signed, GET)
    assert.are.equal(signed.string_to_sign, e.server_string_to_sign)
    assert.are.equal(signed.string_to_sign, e.client_string_to_sign)
    assert.matches("app_secret", e.message)
    local _, e2 = classify.response(gw(400, "Invalid Signature, Server StringToSign:`POST#x`"), signed, GET)
    assert.are.equal("POST\nx", e2.server_string_to_sign)
    assert.matches("check app_key/app_secret", e2.message)
  end)

  it("a good answer is typed by the endpoint's fields", function()
    local doc = assert(classify.response(res(200, {},
      '{"code":0,"message":"OK","objects":[{"sn":"419600001","rs_si":-55}],"count":"1"}'), signed, GET))
    assert.are.equal(419600001, doc.objects[1].sn)
    assert.are.equal(1, doc.count)
    if math.type then
      assert.are.equal("float", math.type(doc.objects[1].rs_si))
      assert.are.equal("integer", math.type(doc.count))
    end
  end)

  it("transport failures: kind, retryable, not_sent, outcome; no password in the message", function()
    local T = {
      -- kind, not_sent -> kind, retryable, unknown
      { "network", true, "network", true, false },
      { "network", false, "network", true, true },
      { "timeout", false, "timeout", true, true },
      { "tls", false, "tls", false, true },
      { "too_large", false, "too_large", false, true },
      { "nomem", false, "network", false, true },
    }
    for _, t in ipairs(T) do
      local e = classify.transport_error(t[1], "failed at http://user:hunter2@proxy:8080", t[2], "http://user:hunter2@h")
      assert.are.same({ t[3], t[4], t[2], t[5] }, { e.kind, e.retryable, e.not_sent, classify.outcome_unknown(e) }, t[1])
      assert.is_nil(e.message:find("hunter2", 1, true))
    end
    local ok, m = pcall(classify.transport_error, "invalid", "bad url http://u:hunter2@x:99999", false)
    assert.is_false(ok)
    assert.is_true(errors.is_misuse(m))
    assert.is_nil(tostring(m):find("hunter2", 1, true))
  end)

  it("unknown_outcome: its own kind, never retryable, the cause kept, how to find out", function()
    local cause = classify.transport_error("timeout", "read timed out", false)
    cause.attempts = 1
    local e = classify.unknown_outcome(POST, cause)
    assert.are.same({ "unknown_outcome", "timeout", false, false, 1 },
      { e.kind, e.cause, e.retryable, e.not_sent, e.attempts })
    assert.matches("POST /commands for sn 419600001", e.message, 1, true)
    assert.matches("it was not sent again", e.message, 1, true)
    assert.matches("kinot locker 419600001", e.message, 1, true)
    local t = classify.unknown_outcome({ method = "POST", path = "/test/notifications" }, cause)
    assert.matches("/__kinot_sim/callbacks", t.message, 1, true)
    assert.is_true(classify.safe_method("GET") and classify.safe_method("HEAD"))
    assert.is_false(classify.safe_method("POST") or classify.safe_method("DELETE"))
  end)
end)

describe("request: retry #unit", function()
  local policy = { backoff = { base = 0.25, max = 8 }, max_retry_after = 60 }
  local GET = { method = "GET", path = "/lockers", idempotent = true }
  local CMD = { method = "POST", path = "/commands", idempotent = false }
  local function half() return 0.5 end

  local function err(kind, fields)
    fields = fields or {}
    return errors.new(kind, kind, fields)
  end
  local function state(attempt, more)
    local s = { attempt = attempt, max_attempts = 3, skew_retried = false, answered = true }
    for k, v in pairs(more or {}) do s[k] = v end
    return s
  end

  -- error -> action for a GET, action for POST /commands (attempt 1 of 3)
  local TABLE = {
    { "network, never left", err("network", { retryable = true, not_sent = true }), "again", "again" },
    { "network, may have left", err("network", { retryable = true, not_sent = false }), "again", "unknown" },
    { "timeout", err("timeout", { retryable = true }), "again", "unknown" },
    { "tls", err("tls"), "stop", "unknown" },
    { "too_large", err("too_large"), "stop", "unknown" },
    { "decode (200, not JSON)", err("decode", { status = 200, retryable = true }), "again", "unknown" },
    { "http 503", err("http", { status = 503, retryable = true }), "again", "unknown" },
    { "gateway 500", err("gateway", { status = 500, retryable = true, not_sent = false, gateway_error = "Internal Error" }),
      "again", "unknown" },
    { "gateway Nonce Used", err("gateway", { status = 400, retryable = true, not_sent = false,
      gateway_error = "Nonce Used" }), "again", "unknown" },
    { "gateway Invalid Nonce", err("gateway", { status = 400, retryable = true, not_sent = true,
      gateway_error = "Invalid Nonce" }), "again", "again" },
    { "gateway throttled", err("throttled", { status = 403, retryable = true, not_sent = true }), "again", "again" },
    { "platform 429 (may have been read)", err("throttled", { status = 429, retryable = true }), "again", "stop" },
    { "signature", err("signature", { status = 400, not_sent = true }), "stop", "stop" },
    { "gateway 4xx", err("gateway", { status = 400, not_sent = true, gateway_error = "Invalid AppKey" }), "stop", "stop" },
    { "timestamp refused", err("gateway", { status = 400, not_sent = true, timestamp_error = true }), "clock", "clock" },
    { "not_found", err("not_found", { status = 404 }), "stop", "stop" },
    { "api", err("api", { status = 200, code = 1 }), "stop", "stop" },
    { "http 400", err("http", { status = 400 }), "stop", "stop" },
  }
  for _, row in ipairs(TABLE) do
    it(row[1] .. ": GET " .. row[3] .. ", POST /commands " .. row[4], function()
      assert.are.equal(row[3], (retry.decide(policy, GET, row[2], state(1), half)))
      assert.are.equal(row[4], (retry.decide(policy, CMD, row[2], state(1), half)))
    end)
  end

  it("the clock is learnt once, and only from an answer", function()
    local e = err("gateway", { status = 400, not_sent = true, timestamp_error = true })
    assert.are.equal("stop", retry.decide(policy, GET, e, state(1, { skew_retried = true }), half))
    assert.are.equal("stop", retry.decide(policy, GET, e, state(1, { answered = false }), half))
    local c = { clock_offset_ms = 0 }
    retry.learn_clock(c, { headers = { date = "Wed, 25 Nov 2026 19:41:18 GMT" } })
    assert.is_true(math.abs(c.clock_offset_ms - (1795635678000 - require("kinot.core").now_ms())) < 5000)
    retry.learn_clock(c, { headers = {} })
    assert.is_number(c.clock_offset_ms)
  end)

  it("no attempt past the last; none when the server asks to wait longer than max_retry_after", function()
    local e = err("network", { retryable = true, not_sent = true })
    assert.are.equal("again", retry.decide(policy, GET, e, state(2), half))
    assert.are.equal("stop", retry.decide(policy, GET, e, state(3), half))
    local t = err("throttled", { retryable = true, not_sent = true, retry_after = 61 })
    assert.are.equal("stop", retry.decide(policy, GET, t, state(1), half))
    t.retry_after = 60
    assert.are.same({ "again", 60 }, { retry.decide(policy, GET, t, state(1), half) })
  end)

  it("backoff: exponential, capped, with equal jitter (never zero)", function()
    local zero, one = function() return 0 end, function() return 1 end
    assert.are.equal(0.125, retry.backoff(policy, 1, nil, zero))
    assert.are.equal(0.25, retry.backoff(policy, 1, nil, one))
    assert.are.equal(0.5, retry.backoff(policy, 3, nil, zero))
    assert.are.equal(1, retry.backoff(policy, 3, nil, one))
    assert.are.equal(8, retry.backoff(policy, 20, nil, one))
    assert.are.equal(4, retry.backoff(policy, 20, nil, zero))
    assert.are.equal(3, retry.backoff(policy, 5, 3, zero)) -- Retry-After as given
    for _ = 1, 200 do
      local d = retry.backoff(policy, 2)
      assert.is_true(d >= 0.25 and d <= 0.5)
    end
    assert.are.same({ "again", 0.1875 }, { retry.decide(policy, GET, err("timeout", { retryable = true }), state(1), half) })
  end)

  it("a call that failed in a batch goes again alone when retryable or its timestamp was refused", function()
    assert.is_true(retry.alone(err("timeout", { retryable = true })))
    assert.is_true(retry.alone(err("gateway", { timestamp_error = true })))
    assert.is_false(retry.alone(err("not_found")))
  end)
end)

-- The loop that runs the steps, over a transport given as a function (a
-- public option: docs/transports.md), which answers from a script; no
-- network is needed to see which attempts go out.
describe("request: the loop (init.lua) #unit", function()
  local OK = { status = 200, headers = {}, body = '{"code":0,"message":"OK","objects":[{"sn":1}]}' }
  local function scripted(script, opts)
    local sent, events = {}, {}
    local o = { app_key = "k", app_secret = "s", endpoint = "http://127.0.0.1:1/open/lora/v1",
                backoff = { base = 0.001, max = 0.002 }, retries = 2,
                on_event = function(ev) events[#events + 1] = ev end,
                transport = function(req)
                  sent[#sent + 1] = req
                  local step = script[#sent]
                  if type(step) == "function" then return step(req) end
                  if step.kind then return nil, step end
                  return step
                end }
    for k, v in pairs(opts or {}) do o[k] = v end
    return kinot.new(o), sent, events
  end

  it("a GET goes again on 503 until an answer, events for each attempt, no signature in them", function()
    local c, sent, events = scripted { { status = 503, headers = {} }, { status = 503, headers = {} }, OK }
    local doc = assert(request.perform(c, { method = "GET", path = "/lockers", query = {}, idempotent = true }))
    assert.are.equal(1, doc.objects[1].sn)
    assert.are.equal(3, #sent)
    local types = {}
    for _, ev in ipairs(events) do
      types[#types + 1] = ev.type
      if ev.headers then assert.are.equal("<redacted>", ev.headers["X-Ca-Signature"]) end
    end
    assert.are.same({ "request", "response", "retry", "request", "response", "retry", "request", "response" }, types)
    assert.are_not.equal(sent[1].headers["X-Ca-Nonce"], sent[2].headers["X-Ca-Nonce"])
  end)

  it("a GET stops after retries + 1 attempts with the last error", function()
    local c, sent = scripted { { status = 503, headers = {} }, { status = 502, headers = {} }, { status = 500, headers = {} } }
    local doc, err = request.perform(c, { method = "GET", path = "/lockers", query = {}, idempotent = true })
    assert.is_nil(doc)
    assert.are.same({ "http", 500, 3, 3 }, { err.kind, err.status, err.attempts, #sent })
  end)

  it("POST /commands: sent once when it may have arrived, unknown_outcome; again when it never left", function()
    local c, sent = scripted { { kind = "timeout", message = "read timed out", not_sent = false } }
    local call = { method = "POST", path = "/commands", query = {}, body = { sn = 419600001 }, idempotent = false }
    local doc, err = request.perform(c, call)
    assert.is_nil(doc)
    assert.are.same({ "unknown_outcome", "timeout", 1 }, { err.kind, err.cause, #sent })
    local c2, sent2 = scripted { { kind = "network", message = "connection refused", not_sent = true }, OK }
    assert(request.perform(c2, call))
    assert.are.equal(2, #sent2)
  end)

  it("a refused timestamp: the clock learnt from Date, one more attempt beside the retries", function()
    local date = "Wed, 25 Nov 2026 19:41:18 GMT"
    local refused = { status = 400, headers = { ["x-ca-error-message"] = "Invalid Timestamp", date = date } }
    local c, sent = scripted({ refused, OK }, { retries = 0 })
    assert(request.perform(c, { method = "GET", path = "/lockers", query = {}, idempotent = true }))
    assert.are.equal(2, #sent)
    local ts = tonumber(sent[2].headers["X-Ca-Timestamp"])
    assert.is_true(math.abs(ts - 1795635678000) < 5000)
    local c2, sent2 = scripted({ refused, refused, OK }, { retries = 0 })
    local _, err = request.perform(c2, { method = "GET", path = "/lockers", query = {}, idempotent = true })
    assert.are.same({ "gateway", 2 }, { err.kind, #sent2 })
    assert.is_nil(err.timestamp_error)
  end)

  it("send: one attempt, the answer as it came; a POST's unknown outcome said so", function()
    local c, sent = scripted { { status = 503, headers = {}, body = "busy" } }
    local res = assert(request.send(c, { method = "GET", path = "/lockers", query = {} }))
    assert.are.same({ 503, "busy", 1 }, { res.status, res.body, #sent })
    local c2 = scripted { { kind = "network", message = "reset", not_sent = false } }
    local _, err = request.send(c2, { method = "POST", path = "/notifications", query = {} })
    assert.are.equal("unknown_outcome", err.kind)
    local c3 = scripted { { kind = "network", message = "reset", not_sent = false } }
    local _, err3 = request.send(c3, { method = "GET", path = "/lockers", query = {} })
    assert.are.equal("network", err3.kind)
  end)

  it("perform_many without a batch path runs each call through perform", function()
    local c, sent = scripted { OK, { status = 404, headers = {} } }
    local out = request.perform_many(c, { { method = "GET", path = "/lockers", query = {}, idempotent = true },
                                          { method = "GET", path = "/lockers/9", query = {}, idempotent = true } })
    assert.are.equal(1, out[1][1].objects[1].sn)
    assert.are.equal("not_found", out[2][2].kind)
    assert.are.equal(2, #sent)
  end)
end)
