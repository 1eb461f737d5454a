-- A hostile review of the callback path (second wave): each spec here
-- failed on the main it was written against, and names the promise it
-- holds.
local callback = require "kinot.callback"
local core = require "kinot.core"
local scanner = require "kinot.callback.scanner"
local vocabulary = require "kinot.vocabulary"
local worker = require "kinot.callback.worker"
local R = require "redis_server"

local SECRET = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"
local function signed(body)
  return (body:gsub("}$", ',"sign":"' .. assert(callback.sign(body, SECRET)) .. '"}'))
end

describe("a callback from the future (503) is not lost by the dedupe #unit", function()
  it("hands over the redelivery that comes once the clocks agree", function()
    -- the receiver's clock an hour behind the device's: over max_skew
    local device_time = 1552444959 -- 2019-03-13T10:42:39+08:00
    local now = device_time - 3600
    local rcv = callback.receiver { secret = SECRET, clock = function() return now end }
    local body = signed('{"sn":419631107,"locked":1,"updated_at":"2019-03-13T10:42:39+08:00"}')
    local status, _, ev, err = rcv:receive(body)
    assert.are.equal(503, status) -- "deliver again later"
    assert.is_nil(ev)
    assert.are.equal("future", err.reason)
    -- the platform delivers again later, within the dedupe window, once
    -- the clocks agree: the event must reach the handler now
    now = device_time - 100
    local status2, _, ev2, _, duplicate = rcv:receive(body)
    assert.are.equal(200, status2)
    assert.is_nil(duplicate)
    assert.is_table(ev2)
    assert.are.equal(419631107, ev2.sn)
    -- and a third copy is the duplicate
    local status3, _, ev3, _, dup3 = rcv:receive(body)
    assert.are.equal(200, status3)
    assert.is_nil(ev3)
    assert.is_true(dup3)
  end)
end)

describe("int fields at 2^53, in every reader #unit", function()
  -- what verify gives (the FFI on LuaJIT, the C API on Lua 5.4), what the
  -- C API gives on either runtime, and the worker's rebuild (the Lua
  -- reader) must agree: refused, or the same exact value
  local function readings(body)
    local out = {}
    local ev, err = callback.verify(body, { secret = SECRET, max_age = false })
    out.verify = ev and ev.data.sn or err.reason
    local sign, index, data = core.callback_verify(body, { SECRET }, vocabulary.fields.callback)
    out.c_api = sign and data.sn or index
    local d, i, data2 = scanner.verify(body, { SECRET }, vocabulary.fields.callback)
    out.binding = d and data2.sn or i
    local again, rerr = callback.rebuild(body, "id")
    out.rebuild = again and again.data.sn or rerr.reason
    return out
  end

  for _, text in ipairs { "9007199254740993", "-9007199254740993", "9007199254740992", "9007199254740992.0",
                          "9007199254740991.9", "9.007199254740993e15" } do
    it("reads sn " .. text .. " alike, and never as another number", function()
      local r = readings(signed('{"sn":' .. text .. ',"locked":1}'))
      assert.are.same({ verify = "malformed", c_api = "malformed", binding = "malformed", rebuild = "malformed" }, r)
    end)
  end

  it("reads sn -0 and -0.0 as 0 (not -0) in every reader", function()
    for _, text in ipairs { "-0", "-0.0", "-0e0" } do
      local r = readings(signed('{"sn":' .. text .. ',"locked":1}'))
      for how, v in pairs(r) do assert.are.equal("0", tostring(v), how .. " " .. text) end
    end
  end)

  it("reads the other fields' -0 and -0.0 alike in verify and in the worker's rebuild", function()
    local body = signed('{"sn":1,"voltage":-0.0,"frequency":-0,"x":-0,"y":-0.0}')
    local ev = assert(callback.verify(body, { secret = SECRET }))
    local again = assert(callback.rebuild(body, ev.id))
    for _, k in ipairs { "voltage", "frequency", "x", "y" } do
      assert.are.equal(tostring(ev.data[k]), tostring(again.data[k]), k)
    end
  end)

  it("still reads the largest exact int, 2^53 - 1, as itself", function()
    local r = readings(signed('{"sn":9007199254740991,"locked":1}'))
    for how, v in pairs(r) do assert.are.equal(2 ^ 53 - 1, v, how) end
  end)
end)

describe("a worker's handler returning false, err or false (real redis-server) #redis", function()
  local r, c
  local STREAM = "kinot:attack"
  setup(function()
    r = R.start {}
    c = r.client()
  end)
  teardown(function() r.stop() end)

  it("is a failure, as it is for callback.handler: the entry is not acknowledged and runs again", function()
    local body = signed('{"sn":419631107,"locked":1,"device_type":18}')
    local id = assert(callback.verify(body, { secret = SECRET })).id
    assert(c:call("XADD", STREAM, "*", "id", id, "body", body, "at", "1"))
    local attempts = {}
    local w = worker.new { redis = r.url, stream = STREAM, group = "g", block = 0.1, claim_after = 0.1,
                           log = function() end,
                           on_status = function(ev)
                             attempts[#attempts + 1] = ev.attempt
                             if ev.attempt == 1 then return false, "not stored yet" end
                             if ev.attempt == 2 then return false end
                             return true
                           end }
    local t0 = core.monotonic()
    w:run(function() return w.handled > 0 or core.monotonic() - t0 > 5 end)
    assert.are.same({ 1, 2, 3 }, attempts)
    assert.are.equal(2, w.failed)
    assert.are.equal(0, tonumber(c:call("XPENDING", STREAM, "g")[1]))
  end)
end)

describe("a signed body recut under the same canonical string #unit", function()
  -- The canonical string joins key=value with '&': a '&' or '=' in a key,
  -- or a '&' in a string value, lets an attacker move members into one
  -- another and keep the sign.  Folding updated_at away bypassed max_age:
  -- a command_resp from 2019 reached on_command as fresh.
  local rules = require "kinot.callback.rules"
  local STATUS = '{"car_detected":0,"device_type":18,"locked":1,"sn":419631107,' ..
    '"updated_at":"2019-03-13T10:42:39+08:00"}'
  local RESP = '{"commnad_status":"success","device_type":18,"guid":"9b2f6a1c","reason":"NULL",' ..
    '"sn":419631107,"updated_at":"2019-03-13T10:42:39+08:00"}'
  local function with_sign(body, sign) return (body:gsub("}$", ',"sign":"' .. sign .. '"}')) end
  -- the genuine body's sign on each recut body (under rule, default md5-key)
  local function recuts(rule)
    local s1 = assert(rules.sign(STATUS, SECRET, rule))
    local s2 = assert(rules.sign(RESP, SECRET, rule))
    return {
      { "a key holding the next members",
        with_sign('{"car_detected":0,"device_type":18,"locked":1,' ..
          '"sn=419631107&updated_at":"2019-03-13T10:42:39+08:00"}', s1) },
      { "a key holding the members before",
        with_sign('{"car_detected=0&device_type":18,"locked":1,"sn":419631107,' ..
          '"updated_at":"2019-03-13T10:42:39+08:00"}', s1) },
      { "a string value holding the next members",
        with_sign('{"commnad_status":"success","device_type":18,"guid":"9b2f6a1c",' ..
          '"reason":"NULL&sn=419631107&updated_at=2019-03-13T10:42:39+08:00"}', s2) },
      { "guid holding the members after it",
        with_sign('{"commnad_status":"success","device_type":18,' ..
          '"guid":"9b2f6a1c&reason=NULL&sn=419631107&updated_at=2019-03-13T10:42:39+08:00"}', s2) },
    }
  end

  it("verifies the genuine bodies (the recuts below carry their signs)", function()
    for _, body in ipairs { STATUS, RESP } do
      local ev = callback.verify(with_sign(body, assert(callback.sign(body, SECRET))), { secret = SECRET, max_age = false })
      assert.is_table(ev)
      assert.are.equal(419631107, ev.sn)
    end
  end)

  for _, case in ipairs(recuts()) do
    it("refuses " .. case[1] .. " (malformed), in every reader", function()
      local raw = case[2]
      assert.are.equal(rules.canonical(assert(rules.members(raw))), (rules.canonical(assert(rules.members(
        raw:find("commnad") and RESP or STATUS)))))
      local ev, err = callback.verify(raw, { secret = SECRET, max_age = false })
      assert.is_nil(ev)
      assert.are.equal("malformed", err.reason)
      local d, reason, message = core.callback_verify(raw, { SECRET }, vocabulary.fields.callback)
      assert.is_nil(d)
      assert.are.equal("malformed", reason)
      local d2, reason2, message2 = scanner.verify(raw, { SECRET }, vocabulary.fields.callback)
      assert.is_nil(d2)
      assert.are.equal("malformed", reason2)
      assert.are.equal(message, message2) -- the FFI's words are the C API's
      assert.are.equal(message, err.message)
      local again, rerr = callback.rebuild(raw, "id")
      assert.is_nil(again)
      assert.are.equal("malformed", rerr.reason)
      -- and through the receiver, with its default max_age: never handed over
      local status = callback.receiver { secret = SECRET }:receive(raw)
      assert.are.equal(400, status)
    end)
  end

  it("refuses them under another sign_rule too", function()
    for _, case in ipairs(recuts("md5-secret+lower")) do
      local ev, err = callback.verify(case[2], { secret = SECRET, sign_rule = "md5-secret+lower", max_age = false })
      assert.is_nil(ev, case[1])
      assert.are.equal("malformed", err.reason, case[1])
    end
  end)

  it("still passes a '&' or '=' in a member the reference does not type, and '=' in a typed string", function()
    local body = '{"sn":419631107,"locked":1,"note":"a&b=c","reason":"x=y"}'
    local ev = assert(callback.verify(with_sign(body, assert(callback.sign(body, SECRET))), { secret = SECRET }))
    assert.are.equal("a&b=c", ev.data.note)
    assert.are.equal("x=y", ev.reason)
  end)
end)

describe("the inbox's append when Redis refuses it half way (real redis-server) #redis", function()
  local inbox = require "kinot.callback.inbox"
  local r, c
  setup(function()
    r = R.start {}
    c = r.client()
  end)
  teardown(function() r.stop() end)

  it("marks nothing delivered when the entry was not stored: the redelivery is stored", function()
    local box = inbox.new { redis = r.url, stream = "kinot:wrong" }
    -- the stream's name taken by another type (an operator's mistake): XADD fails
    assert(c:call("SET", "kinot:wrong", "not a stream"))
    local stored, err = box:put("ID1", "{}", 1)
    assert.is_nil(stored) -- the handler answers 503: "deliver again"
    assert.are.equal("redis", err.kind)
    -- fixed; the platform delivers again: it must be stored now, not
    -- taken for a redelivery of something stored
    assert(c:call("DEL", "kinot:wrong"))
    assert.is_true(box:put("ID1", "{}", 2))
    assert.are.equal(1, tonumber(c:call("XLEN", "kinot:wrong")))
    assert.is_false(box:put("ID1", "{}", 3)) -- and now it is a redelivery
  end)
end)

describe('verify = "monitor" and the error log #unit', function()
  it("never returns a message holding a line of the attacker's (the handler logs it)", function()
    local rcv = callback.receiver { secret = SECRET, verify = "monitor" }
    local body = '{"sn":7,"a&\\n2026/01/01 00:00:00 [emerg] 1#1: forged":1,"sign":"00"}'
    local status, _, ev, err = rcv:receive(body)
    assert.are.equal(400, status)
    assert.is_nil(ev)
    assert.are.equal("malformed", err.reason)
    assert.is_nil(err.message:find("%c"))
  end)
end)

describe("a refusal message of a signed body #unit", function()
  it("never holds a control character of a member name, on either path (C API and FFI)", function()
    -- a body the platform's sign covers can still carry an attacker's
    -- name (a relay, a leaked secret): the receiver answers the message and
    -- the handler logs it.  A recut name, a typed field of the wrong type,
    -- a typed string holding '&'
    for _, body in ipairs {
      '{"sn":7,"a&\\n2026/01/01 00:00:00 [emerg] 1#1: forged":1}',
      '{"sn":7,"x\\n[emerg]=":1}',
    } do
      local ev, err = callback.verify(signed(body), { secret = SECRET })
      assert.is_nil(ev)
      assert.are.equal("malformed", err.reason)
      assert.is_nil(err.message:find("%c"), err.message)
      local data, reason, why = core.callback_data(body, vocabulary.fields.callback)
      assert.is_nil(data)
      assert.are.equal("malformed", reason)
      assert.is_nil(why:find("%c"), why)
    end
  end)
end)

describe("an updated_at without an offset #unit", function()
  local now = 1764201600 -- 2025-11-27T00:00:00Z
  local function receive(stamp)
    local rcv = callback.receiver { secret = SECRET, clock = function() return now end }
    return rcv:receive(signed('{"sn":419631107,"locked":1,"updated_at":"' .. stamp .. '"}'))
  end

  it("is still judged by max_age: a capture from 2019 is stale in every zone", function()
    local status, _, ev, err = receive("2019-03-13T10:42:39")
    assert.are.equal(200, status)
    assert.is_nil(ev)
    assert.are.equal("stale", err.reason)
  end)

  it("passes when some zone (UTC-12 to UTC+14) makes it fresh, and is future only beyond them all", function()
    assert.are.equal(200, select(1, receive("2025-11-27T13:00:00")))     -- 13 h ahead read as UTC: UTC+14 fits
    assert.is_table(select(3, receive("2025-11-27T13:00:00")))
    assert.is_table(select(3, receive("2025-11-25T00:00:00")))           -- 48 h old as UTC: UTC-12 makes it 36 h
    assert.are.equal(503, select(1, receive("2025-11-27T15:00:00")))     -- 15 h ahead: no zone makes it now
  end)
end)

describe("a handler that yields, then fails (real nginx, ack = after_handler) #nginx", function()
  local H = require "helpers"
  local json = require "kinot.json"
  local ng
  setup(function()
    ng = H.nginx {
      http = [[
        lua_shared_dict tries 1m;
        lua_shared_dict dedupe 1m;
        lua_shared_dict dedupe_busy 1m;
        init_by_lua_block {
          local function note(ev)
            ngx.sleep(0.05) -- yields first
            local tries = ngx.shared.tries:incr(ev.sn, 1, 0)
            if ev.data.how == "false" and tries == 1 then return false end
            if ev.data.how == "raise" and tries == 1 then error("raised after a sleep") end
            ngx.shared.tries:incr("done " .. ev.sn, 1, 0)
            return true
          end
          receive = require("kinot.callback").handler {
            secret = "]] .. SECRET .. [[", dedupe = "dedupe", max_age = false, on_status = note,
          }
        }
      ]],
      server = [[
        location = /cb { content_by_lua_block { receive() } }
        location = /done { content_by_lua_block { ngx.print(ngx.shared.tries:get("done " .. ngx.var.arg_sn) or 0) } }
      ]],
    }
  end)
  teardown(function() if ng then ng.stop() end end)
  local function post(body) return H.raw("POST", ng.url .. "/cb", body, { ["Content-Type"] = "application/json" }) end
  local function done(sn) return tonumber(H.raw("GET", ng.url .. "/done?sn=" .. sn).body) end

  it("takes a body of exactly max_body (64 KiB) and refuses one byte more (413)", function()
    local function sized(n, sn)
      local probe = signed('{"sn":' .. sn .. ',"locked":1,"pad":""}')
      local pad = string.rep("p", n - #probe)
      local body = signed('{"sn":' .. sn .. ',"locked":1,"pad":"' .. pad .. '"}')
      assert.are.equal(n, #body)
      return body
    end
    assert.are.equal(200, post(sized(65536, 13)).status)
    assert.are.equal(1, done(13))
    assert.are.equal(413, post(sized(65537, 14)).status)
    assert.are.equal(0, done(14))
  end)

  for sn, how in pairs { [11] = "raise", [12] = "false" } do
    it("answers 500 when it " .. (how == "raise" and "raises" or "returns false") .. ", then 200 to the redelivery",
      function()
        local body = signed('{"sn":' .. sn .. ',"locked":1,"how":"' .. how .. '"}')
        local res = post(body)
        assert.are.equal(500, res.status)
        assert.are.equal(500, json.decode(res.body).code)
        assert.are.equal(0, done(sn))
        assert.are.equal(200, post(body).status)
        assert.are.equal(1, done(sn))
        assert.are.equal(200, post(body).status) -- a duplicate now
        assert.are.equal(1, done(sn))
      end)
  end
end)

describe("dedupe = { redis = ..., lease = ... } (misuse) #unit", function()
  it("raises on a lease that Redis would refuse at every delivery (each answered 503)", function()
    for _, lease in ipairs { 0, -1, "60", 0.0001 } do
      assert.has_error(function()
        callback.handler { secret = SECRET, dedupe = { redis = "redis://127.0.0.1:1", lease = lease } }
      end, "kinot: dedupe.lease must be a number of seconds >= 0.001")
    end
  end)
end)

describe("an empty callback secret (misuse) #unit", function()
  -- MD5(canonical .. "&key=") is anyone's to compute: with "" among the
  -- secrets every forged body verified
  it("raises, alone or in a list, wherever a secret is taken", function()
    local body = '{"sn":1,"locked":1}'
    local forged = body:gsub("}$", ',"sign":"' .. assert(callback.sign(body, "")) .. '"}')
    for _, s in ipairs { "", { SECRET, "" } } do
      assert.has_error(function() callback.verify(forged, { secret = s }) end,
        "kinot: a callback secret must not be empty (anyone could sign with it)")
      assert.has_error(function() callback.receiver { secret = s } end,
        "kinot: a callback secret must not be empty (anyone could sign with it)")
      assert.has_error(function() callback.handler { secret = s } end,
        "kinot: a callback secret must not be empty (anyone could sign with it)")
    end
  end)
end)

describe("every reader of a verified body, on hostile members #unit", function()
  -- verify (FFI on LuaJIT), the C API, and the worker's rebuild (Lua):
  -- the same data or the same refusal, for bodies mixing known and
  -- unknown names, recut characters, -0, 2^53 + 1, nested values
  local names = { "sn", "guid", "reason", "locked", "voltage", "updated_at", "a&b", "c=d", "x", "y", "bt_mac",
                  "commnad_status", "device_type" }
  local vals = { '1', '"a&b"', '"ok"', '9007199254740993', '-0', '-0.0', '1.5', '""', 'null', '{"k":1}', '[1,2,]',
                 '"x=y"', 'true', '"\\u0026"', '3e2', '18', '1e400', '123456789012345678901' }
  local seed = 11
  local function rnd(n)
    seed = (seed * 48271) % 2147483647
    return seed % n + 1
  end
  local function ser(t)
    if type(t) ~= "table" then return tostring(t) end
    local k = {}
    for a, b in pairs(t) do k[#k + 1] = a .. "=" .. ser(b) .. (math.type and tostring(math.type(b)) or "") end
    table.sort(k)
    return table.concat(k, ",")
  end

  it("gives the same, 2000 bodies", function()
    local diff = {}
    for _ = 1, 2000 do
      local used, parts = {}, {}
      for _ = 1, rnd(6) do
        local n = names[rnd(#names)]
        if not used[n] then
          used[n] = true
          parts[#parts + 1] = '"' .. n .. '":' .. vals[rnd(#vals)]
        end
      end
      local body = "{" .. table.concat(parts, ",") .. "}"
      body = body:gsub("}$", (#parts > 0 and "," or "") .. '"sign":"' .. assert(callback.sign(body, SECRET)) .. '"}')
      local ev, err = callback.verify(body, { secret = SECRET, max_age = false })
      local d, reason, data = core.callback_verify(body, { SECRET }, vocabulary.fields.callback)
      local rb, rerr = callback.rebuild(body, "id")
      local a = ev and ser(ev.data) or err.reason
      local c = d and ser(ev and data) or reason
      if d and ev then -- the C API's data before build() decoded nested members and added command_status
        c = a
        for k, v in pairs(data) do
          if type(ev.data[k]) ~= "table" and ser(v) ~= ser(ev.data[k]) then c = "C " .. k end
        end
      end
      local b = rb and ser(rb.data) or rerr.reason
      if a ~= b or a ~= c then diff[#diff + 1] = body .. " verify " .. a .. " C " .. c .. " rebuild " .. b end
    end
    assert.are.same({}, diff)
  end)
end)

describe("Redis dedupe's pending mark (ack = after_handler, real redis-server) #redis", function()
  local store = require "kinot.callback.redis_store"
  local r
  setup(function() r = R.start {} end)
  teardown(function() r.stop() end)

  it("is not dropped by a host whose lease ran out: a third copy stays away while the second host runs", function()
    local a = store.new { redis = r.url, lease = 0.05 }
    local s = store.new { redis = r.url, lease = 10 }
    local state, token_a = a:claim("EV1") -- host A: a handler slower than its lease
    assert.are.equal("new", state)
    core.sleep(0.15)
    local state_b, token_b = s:claim("EV1") -- host B takes it over
    assert.are.equal("new", state_b)
    assert.are_not.equal(token_a, token_b)
    assert(a:settle("EV1", token_a, false)) -- A's handler fails at last
    assert.are.equal("busy", (s:claim("EV1"))) -- B still runs it: a copy must wait
    assert(s:settle("EV1", token_b, true))
    assert.are.equal("done", (s:claim("EV1")))
  end)
end)
