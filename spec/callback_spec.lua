-- Callbacks (docs/callbacks.md, docs/callback-sign.md): the sign vectors, verify's refusals, the
-- OpenResty handler under real nginx, the resty transport calling the
-- simulator from inside nginx, and the example receiver end to end.
local callback = require "kinot.callback"
local core = require "kinot.core"
local json = require "kinot.json"
local recent = require "kinot.callback.recent"
local scanner = require "kinot.callback.scanner"
local H = require "helpers"
require "gc_stress" -- KINOT_GC_STRESS=1: an eager collector (make sanitize)

local cjson = require "cjson"
local vectors = H.fixture("callback-sign.json").vectors

describe("callback sign vectors #unit", function()
  it("has the whole vector file", function() assert.are.equal(16, #vectors) end)

  for _, v in ipairs(vectors) do
    it(v.id .. " " .. v.name, function()
      local e = v.expected
      if e.reject_reason ~= nil and e.reject_reason ~= cjson.null then
        local ev, err = callback.verify(v.body, { secret = v.secret })
        assert.is_nil(ev)
        assert.are.equal("callback", err.kind)
        assert.matches(e.reject_reason, err.message, 1, true)
        assert.is_nil(callback.canonical(v.body))
        return
      end
      local valid = e.valid
      local ev, err = callback.verify(v.body, { secret = v.secret })
      assert.are.equal(valid, ev ~= nil, err and tostring(err))
      if e.sign ~= cjson.null and not v.name:find("tampered") then
        assert.are.equal(e.canonical, callback.canonical(v.body))
        assert.are.equal(e.sign, callback.sign(v.body, v.secret))
      end
      if not valid and not v.name:find("missing") then
        assert.are.equal("bad_sign", err.reason)
      end
    end)
  end
end)

describe("callback.verify #unit", function()
  local secret = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"
  local function signed(body_without_sign, key)
    local s = assert(callback.sign(body_without_sign, key or secret))
    return (body_without_sign:gsub("}%s*$", ',"sign":"' .. s .. '"}'))
  end

  it("makes a status_changed event for a lock with integer fields", function()
    local ev = assert(callback.verify(vectors[1].body, { secret = vectors[1].secret }))
    assert.are.same({ "status_changed", "lock", 419631107 }, { ev.kind, ev.device, ev.sn })
    assert.are.equal(3.659, ev.data.voltage)
    if math.type then assert.are.equal("integer", math.type(ev.sn)) end
  end)

  it("makes a command_resp event with command_status spelled correctly", function()
    local ev = assert(callback.verify(vectors[3].body, { secret = vectors[3].secret }))
    assert.are.same({ "command_resp", "lock", "succeeded" }, { ev.kind, ev.device, ev.command_status })
    assert.are.equal("succeeded", ev.data.command_status)
    assert.are.equal("succeeded", ev.data.commnad_status)
  end)

  it("judges the device from the fields when device_type is unknown (the reference's 38)", function()
    local lock = assert(callback.verify(signed('{"sn":1,"locked":1,"device_type":38}'), { secret = secret }))
    assert.are.equal("lock", lock.device)
    local sensor = assert(callback.verify(signed('{"sn":2,"car_detected":1,"device_type":38}'), { secret = secret }))
    assert.are.equal("sensor", sensor.device)
    local unknown = assert(callback.verify(signed('{"guid":"AB","sn":3,"device_type":38}'), { secret = secret }))
    assert.are.equal("unknown", unknown.device)
    assert.matches("command_resp", unknown.device_why)
  end)

  it("decodes nested members and leaves out null ones (outside the signature)", function()
    local ev = assert(callback.verify(signed('{"sn":4,"parameter":{"key":"handle","value":1},"x":null}'), { secret = secret }))
    assert.are.same({ key = "handle", value = 1 }, ev.data.parameter)
    assert.is_nil(ev.data.x)
  end)

  it("tries every secret for rotation and says which matched", function()
    local body = signed('{"sn":5,"locked":0}', "new-secret")
    local ev = assert(callback.verify(body, { secret = { "old-secret", "new-secret" } }))
    assert.are.equal(2, ev.secret_index)
    local _, err = callback.verify(body, { secret = { "old-secret" } })
    assert.are.equal("bad_sign", err.reason)
  end)

  it("refuses with a reason: too large, not JSON, no sign", function()
    local big = signed('{"sn":6,"pad":"' .. string.rep("x", 70000) .. '"}')
    local _, err = callback.verify(big, { secret = secret })
    assert.are.equal("too_large", err.reason)
    assert.is_truthy(callback.verify(big, { secret = secret, max_body = 100000 }))
    _, err = callback.verify('{"sn":7,', { secret = secret })
    assert.are.equal("not_json", err.reason)
    assert.matches("not valid JSON", err.message)
    _, err = callback.verify('{"sn":7,,}', { secret = secret })
    assert.are.equal("not_json", err.reason)
    _, err = callback.verify('{"sn":7} x', { secret = secret })
    assert.are.equal("not_json", err.reason)
    _, err = callback.verify('{"sn":7}', { secret = secret })
    assert.are.equal("no_sign", err.reason)
  end)

  it("raises on misuse", function()
    assert.has_error(function() callback.verify("{}", {}) end)
    assert.has_error(function() callback.verify(nil, { secret = "s" }) end)
    assert.has_error(function() callback.sign("{}") end)
  end)

  it("never puts the secret in a refusal", function()
    for _, body in ipairs { "{", '{"sn":1,"sign":"00"}', string.rep("a", 70000) } do
      local _, err = callback.verify(body, { secret = secret })
      assert.is_nil(tostring(err):find(secret, 1, true))
    end
  end)
end)

-- On LuaJIT the scanner goes through the FFI; on Lua 5.4 through the C
-- API.  Both must give exactly what the C API binding gives.
describe("the callback scanner's two bindings #unit", function()
  local secret = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"
  local function signed(body)
    return (body:gsub("}$", ',"sign":"' .. assert(callback.sign(body, secret)) .. '"}'))
  end
  local many = {}
  for i = 1, 600 do many[i] = '"k' .. i .. '":' .. i end -- more names than the 256 name slots
  local bodies = {
    signed('{"a":1e2,"b":-0.5,"c":12345678901234567890,"d":"x\\u00e9\\"y","e\\"q":true,"f":false,"g":null,' ..
      '"h":{"x":[1,2,]},"i":[],"j":' .. string.rep("9", 70) .. ',"k":3.6590,"l":-0,"m":""}'),
    signed('{' .. table.concat(many, ",") .. '}'),
    signed('{"a_member_name_well_over_thirty_two_bytes":1,"sn":2}'),
    signed('{"sn":3,"voltage":3.659}'), -- names seen before, now from their slots
    '{"sn":4,"sign":"00"}', '{"sn":5}', '[1]', '{"a":1,"a":2}', '{"a":1,,}', '{"sn":6,"sign":""}',
  }
  for _, v in ipairs(vectors) do bodies[#bodies + 1] = v.body end
  local secrets = { "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", secret } -- over 8: the C API allocates

  it("uses the FFI exactly where LuaJIT is", function()
    assert.are.equal(rawget(_G, "jit") ~= nil, scanner.ffi)
  end)

  local types = require("kinot.vocabulary").fields.callback
  it("verifies and decodes every body alike", function()
    for round = 1, 2 do -- the second round takes every name from its slot
      for _, body in ipairs(bodies) do
        for _, keys in ipairs { secrets, { vectors[1].secret } } do
          local a = { scanner.verify(body, keys, types) }
          local b = { core.callback_verify(body, keys, types) }
          assert.are.same(b, a, body:sub(1, 60))
          if a[1] and round == 2 then assert.is_truthy(next(a[3]) ~= nil) end
        end
      end
    end
  end)

  it("refuses a known field of another type alike", function()
    for _, body in ipairs { signed('{"sn":"1"}'), signed('{"voltage":true}'), signed('{"guid":{"a":1}}'),
                            signed('{"locked":1.5}'), signed('{"sn":' .. string.rep("9", 19) .. '}') } do
      local a = { scanner.verify(body, { secret }, types) }
      local b = { core.callback_verify(body, { secret }, types) }
      assert.are.same(b, a)
      assert.are.same({ nil, "malformed" }, { a[1], a[2] })
    end
  end)

  it("gives member values by the reader's rules", function()
    local body = bodies[1]
    local _, _, data, nested = assert(scanner.verify(body, { secret }, types))
    assert.are.same({ 100, -0.5, 12345678901234567890, 'x\u{e9}"y', true, false, 3.659 },
      { data.a, data.b, data.c, data.d, data['e"q'], data.f, data.k })
    assert.is_nil(data.g) -- null and "" are outside the signature, and outside the data
    assert.is_nil(data.m)
    assert.is_nil(data.sign)
    assert.are.equal(tonumber(string.rep("9", 70)), data.j)
    assert.are.same({ h = '{"x":[1,2,]}', i = "[]" }, nested)
  end)

  it("refuses a secret that is not a string", function()
    assert.has_error(function() scanner.verify(bodies[4], { secret, 7 }, types) end, "kinot: secret[2] must be a string")
  end)
end)

describe("callback receiver outside nginx #unit", function()
  it("answers OK, dispatches once, and acknowledges a duplicate without dispatching", function()
    local calls = 0
    local rcv = callback.receiver { secret = vectors[1].secret, max_age = false, -- the vectors are from 2019
                                    on_status = function() calls = calls + 1 end }
    local status, body, ev = rcv:receive(vectors[1].body)
    assert.are.equal(200, status)
    assert.are.equal('{"code":0,"message":"OK"}', body)
    assert(rcv:dispatch(ev))
    local s2, _, ev2, _, dup = rcv:receive(vectors[1].body)
    assert.are.same({ 200, true }, { s2, dup })
    assert.is_nil(ev2)
    assert.are.equal(1, calls)
    local s3, b3 = rcv:receive(vectors[11].body)
    assert.are.equal(401, s3)
    assert.are.equal(401, json.decode(b3).code)
  end)

  it("remembers a bounded number of recent deliveries, each for its ttl", function()
    local now = 100
    local set = recent.new(3, 60, function() return now end)
    for i = 1, 5 do assert.is_true(set:add("k" .. i)) end
    assert.is_false(set:add("k5"))
    assert.is_false(set:add("k3"))
    assert.is_true(set:add("k1")) -- evicted: the ring holds the last three
    assert.are.equal(3, set.size)
    now = 161
    assert.is_true(set:add("k5")) -- expired: new again
    assert.is_false(set:add("k5"))
  end)
end)

describe("callback.handler in real nginx #nginx", function()
  local ng
  local v1 = vectors[1]
  setup(function()
    ng = H.nginx {
      workers = 2,
      http = [[
        lua_shared_dict dedupe 1m;
        lua_shared_dict dedupe_busy 1m;
        lua_shared_dict seen 1m;
        init_by_lua_block {
          local callback = require "kinot.callback"
          local function note(ev)
            ngx.shared.seen:incr(ev.kind, 1, 0)
            if ev.data.slow then ngx.sleep(2) end
            ngx.shared.seen:incr("done", 1, 0)
          end
          receive = callback.handler { secret = "]] .. v1.secret .. [[", dedupe = "dedupe",
                                       ack = "immediate", max_age = false, -- the vectors are from 2019
                                       on_status = note, on_command = note, max_body = 4096 }
        }
      ]],
      server = [[
        location = /cb { content_by_lua_block { receive() } }
        location = /seen { content_by_lua_block {
          local d = ngx.shared.seen
          ngx.say(d:get("status_changed") or 0, " ", d:get("command_resp") or 0, " ", d:get("done") or 0)
        } }
      ]],
    }
  end)
  teardown(function() ng.stop() end)

  local function post(body) return H.raw("POST", ng.url .. "/cb", body, { ["Content-Type"] = "application/json" }) end
  local function seen() return H.raw("GET", ng.url .. "/seen").body end

  it("accepts a good callback with the platform's expected answer", function()
    local res = post(v1.body)
    assert.are.equal(200, res.status)
    assert.are.equal('{"code":0,"message":"OK"}', res.body)
    assert.are.equal("1 0 1\n", H.wait_for(function() local s = seen() return s == "1 0 1\n" and s end, 2))
  end)

  it("acknowledges a duplicate delivery without calling the handler twice", function()
    for _ = 1, 3 do assert.are.equal(200, post(v1.body).status) end
    core.sleep(0.2)
    assert.are.equal("1 0 1\n", seen())
    assert.are.equal(200, post(vectors[3].body).status) -- trailing comma, command_resp
    assert.are.equal("1 1 2\n", H.wait_for(function() local s = seen() return s == "1 1 2\n" and s end, 2))
  end)

  it("refuses forged, tampered, unsigned, malformed and oversized bodies", function()
    local cases = {
      { vectors[11].body, 401 }, { vectors[12].body, 401 }, { vectors[14].body, 401 },
      { vectors[13].body, 400 }, { vectors[15].body, 400 }, { "not json", 400 },
      { '{"pad":"' .. string.rep("x", 5000) .. '"}', 413 },
    }
    for _, c in ipairs(cases) do
      local res = post(c[1])
      assert.are.equal(c[2], res.status, c[1]:sub(1, 40))
      local doc = json.decode(res.body)
      assert.are.equal(c[2], doc.code)
      assert.is_string(doc.message)
    end
    assert.are.equal("1 1 2\n", seen())
  end)

  it("answers at once and keeps serving while a handler is slow", function()
    local body = assert(callback.sign('{"sn":9,"locked":1,"slow":true}', v1.secret))
    body = '{"sn":9,"locked":1,"slow":true,"sign":"' .. body .. '"}'
    local t0 = core.monotonic()
    assert.are.equal(200, post(body).status)
    assert.is_true(core.monotonic() - t0 < 0.5, "the answer waited for the handler")
    -- the handler is still sleeping, yet other callbacks go through
    local other = assert(callback.sign('{"sn":10,"locked":0}', v1.secret))
    assert.are.equal(200, post('{"sn":10,"locked":0,"sign":"' .. other .. '"}').status)
    assert.is_true(core.monotonic() - t0 < 1)
    assert.are.equal("3 1 4\n", H.wait_for(function() local s = seen() return s == "3 1 4\n" and s end, 4))
  end)
end)

-- One worker, so every event goes through the same queue and runners
describe("callback.handler's runners in one worker #nginx", function()
  local ng
  local secret = vectors[1].secret
  local function signed(body)
    return (body:gsub("}$", ',"sign":"' .. assert(callback.sign(body, secret)) .. '"}'))
  end
  setup(function()
    ng = H.nginx {
      http = [[
        lua_shared_dict seen 1m;
        init_by_lua_block {
          -- long enough that all four events are queued before a runner
          -- starts: the slow one must not hold back those behind it
          require("kinot.callback.handler").BATCH_DELAY = 0.2
          receive = require("kinot.callback").handler {
            secret = "]] .. secret .. [[", ack = "immediate",
            on_status = function(ev)
              if ev.data.slow then ngx.sleep(1.5) end
              ngx.shared.seen:incr("done", 1, 0)
              if ev.data.fail then error("this handler fails") end
            end,
          }
        }
      ]],
      server = [[
        location = /cb { content_by_lua_block { receive() } }
        location = /done { content_by_lua_block { ngx.say(ngx.shared.seen:get("done") or 0) } }
        location = /batch_delay {
          content_by_lua_block { require("kinot.callback.handler").BATCH_DELAY = tonumber(ngx.var.arg_s) }
        }
      ]],
    }
  end)
  teardown(function() ng.stop() end)

  local function post(body) return H.raw("POST", ng.url .. "/cb", body, { ["Content-Type"] = "application/json" }) end
  local function done() return tonumber(H.raw("GET", ng.url .. "/done").body) end

  it("runs the other events while one handler sleeps", function()
    local t0 = core.monotonic()
    assert.are.equal(200, post(signed('{"sn":1,"slow":true}')).status)
    for i = 2, 4 do assert.are.equal(200, post(signed('{"sn":' .. i .. '}')).status) end
    assert.are.equal(3, H.wait_for(function() return done() == 3 and 3 end, 1))
    assert.is_true(core.monotonic() - t0 < 1.4, "the quick events waited for the slow one")
    assert.are.equal(4, H.wait_for(function() return done() == 4 and 4 end, 3))
  end)

  it("hands every one of a burst of callbacks to the handler, even after one fails", function()
    -- (each POST here waits for its runner to start, BATCH_DELAY: at 0.2 s
    -- the burst took a minute and proved nothing more than at 0.01 s)
    assert.are.equal(200, H.raw("GET", ng.url .. "/batch_delay?s=0.01").status)
    local before = done()
    assert.are.equal(200, post(signed('{"sn":99,"fail":true}')).status)
    for i = 1, 300 do assert.are.equal(200, post(signed('{"sn":' .. (1000 + i) .. ',"locked":1}')).status) end
    assert.are.equal(before + 301, H.wait_for(function() local n = done() return n == before + 301 and n end, 5))
  end)
end)

describe("callback.handler when nginx stops #nginx", function()
  it("hands over the events still queued before the worker exits (a graceful stop or reload)", function()
    local secret = vectors[1].secret
    local out = os.tmpname()
    local ng = H.nginx {
      http = [[
        init_by_lua_block {
          -- events would wait 30 s for their timer: only the exit runs them
          require("kinot.callback.handler").BATCH_DELAY = 30
          receive = require("kinot.callback").handler {
            secret = "]] .. secret .. [[", ack = "immediate",
            on_status = function(ev)
              local f = assert(io.open("]] .. out .. [[", "a"))
              f:write(ev.sn, "\n")
              f:close()
            end,
          }
        }
      ]],
      server = "location = /cb { content_by_lua_block { receive() } }",
    }
    local ok, err = pcall(function()
      for i = 1, 5 do
        local body = '{"sn":' .. i .. '}'
        body = body:gsub("}$", ',"sign":"' .. assert(callback.sign(body, secret)) .. '"}')
        -- a connection apiece: the request that starts a runner stays until
        -- the runner's timer is due (30 s here), and so does its connection
        assert.are.equal(200, H.raw("POST", ng.url .. "/cb", body, { Connection = "close" }).status)
      end
    end)
    ng.stop(true)
    local f = io.open(out)
    local got = f and f:read("*a") or ""
    if f then f:close() end
    os.remove(out)
    assert(ok, err)
    assert.are.equal("1\n2\n3\n4\n5\n", got)
  end)
end)

describe("the resty transport inside nginx #nginx #sim", function()
  local sim, ng
  setup(function()
    sim = H.sim { locks = 33 }
    ng = H.nginx {
      http = "init_by_lua_block { SIM = { key = '" .. sim.app_key .. "', secret = '" .. sim.app_secret ..
             "', endpoint = '" .. sim.endpoint .. "' } }",
      server = [[
        location = /count { content_by_lua_block {
          local kinot = require "kinot"
          local c = kinot.new { app_key = SIM.key, app_secret = SIM.secret, endpoint = SIM.endpoint }
          local p, err = c:lockers { limit = 10 }
          if not p then return ngx.say("error ", err.kind, " ", err.message) end
          local n = 0
          for _ in c:each_locker { limit = 10, concurrency = 4 } do n = n + 1 end
          local cmd = assert(c:send_command(419600001, { key = "handle", value = 1 }))
          ngx.say(c.transport.name, " ", p.count, " ", n, " ", #cmd.guid)
        } }
        location = /timer { content_by_lua_block {
          local kinot = require "kinot"
          local result
          ngx.timer.at(0, function()
            local c = kinot.new { app_key = SIM.key, app_secret = SIM.secret, endpoint = SIM.endpoint }
            local l = c:locker(419600003)
            result = l and l.sn or "failed"
          end)
          for _ = 1, 50 do if result then break end ngx.sleep(0.05) end
          ngx.say(tostring(result))
        } }
        location = /wrongphase {
          set_by_lua_block $r {
            local kinot = require "kinot"
            local c = kinot.new { app_key = SIM.key, app_secret = SIM.secret, endpoint = SIM.endpoint, retries = 0 }
            local _, err = c:lockers {}
            return err and err.message or "no error"
          }
          return 200 $r;
        }
        location = /curl { content_by_lua_block {
          local ok, err = pcall(require("kinot").new, { app_key = "k", app_secret = "s", transport = "curl" })
          ngx.say(tostring(err))
        } }
      ]],
    }
  end)
  teardown(function()
    ng.stop()
    sim.stop()
  end)

  it("makes signed API calls, pages and sends a command from a content handler", function()
    assert.are.equal("resty 33 33 32\n", H.raw("GET", ng.url .. "/count").body)
    assert.are.equal(1, sim.counters().commands_created)
  end)

  it("works from a timer", function()
    assert.are.equal("419600003\n", H.raw("GET", ng.url .. "/timer").body)
  end)

  it("fails clearly where cosockets are not available", function()
    assert.matches("cosockets are not available in the 'set' phase", H.raw("GET", ng.url .. "/wrongphase").body)
  end)

  it("refuses libcurl inside a worker", function()
    assert.matches("would block the nginx worker", H.raw("GET", ng.url .. "/curl").body)
  end)
end)

describe("examples/openresty end to end with the simulator #nginx #sim #slow", function()
  local sim, prefix, port, url
  setup(function()
    sim = H.sim { locks = 20, sensors = 20, command_pace = 0.05 }
    port = require("kinot.sim.launcher").free_port()
    local p = io.popen("mktemp -d /tmp/kinot-example.XXXXXX")
    prefix = p:read("*l")
    p:close()
    os.execute("cp -r " .. H.root .. "/examples/openresty/. " .. prefix .. "/")
    local f = io.open(prefix .. "/nginx.conf")
    local conf = f:read("*a")
    f:close()
    conf = conf:gsub("listen 127%.0%.0%.1:8080;", "listen 127.0.0.1:" .. port .. ";")
      :gsub('lua_package_path "%$prefix/%?%.lua;', 'lua_package_path "$prefix/?.lua;' .. H.root .. "/lua/?.lua;" .. H.root .. "/lua/?/init.lua;")
      :gsub('lua_package_cpath "', 'lua_package_cpath "' .. H.root .. "/build/5.1/?.so;")
      :gsub("resolver [^\n]*\n", "")
      :gsub("worker_processes auto;", "worker_processes 2;\n" .. require("kinot.sim.launcher").user_directive())
    f = io.open(prefix .. "/nginx.conf", "w")
    f:write(conf)
    f:close()
    assert(os.execute(string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s KINOT_POLL_SECONDS=600 " ..
      "nginx -p %s -c nginx.conf -e %s/logs/error.log", sim.app_key, sim.app_secret, sim.endpoint, prefix, prefix)))
    url = "http://127.0.0.1:" .. port
    H.wait_for(function() local ok = pcall(H.raw, "GET", url .. "/stats") return ok end, 5)
  end)
  teardown(function()
    os.execute("kill $(cat " .. prefix .. "/logs/nginx.pid) 2>/dev/null; sleep 0.2; rm -rf " .. prefix)
    sim.stop()
  end)

  it("polls the fleet through the resty transport at start", function()
    local stats = H.wait_for(function()
      local s = json.decode(H.raw("GET", url .. "/stats").body)
      return s.poll ~= json.null and s.poll ~= nil and s
    end, 5)
    assert.is_true(stats.poll.ok, tostring(stats.poll.error))
    assert.are.equal(40, stats.poll.devices)
    assert.are.equal(200, H.raw("GET", url .. "/state/419600004").status)
  end)

  it("receives every simulator callback, all verified: sent = received", function()
    local c = sim.client()
    for _, dt in ipairs { 18, 34 } do
      assert(c:set_notifications { device_type = dt, status_changed_callback_url = url .. "/kinot/callback",
                                   command_resp_callback_url = url .. "/kinot/callback" })
    end
    local guids = {}
    for i = 1, 3 do guids[i] = assert(c:reset_bt_match_code(419600000 + i)).guid end
    guids[4] = assert(c:freeze_sensor(419800001)).guid
    sim.call("POST", "/devices/419600010", { locked = 1, low_battery = 1 })
    assert(c:test_notification(419800002, "status_changed"))
    sim.call("POST", "/drift", { count = 10 })
    for _, g in ipairs(guids) do assert(c:wait_command(g, { timeout = 5, interval = 0.05 })) end
    local cb = H.wait_for(function()
      local x = sim.counters().callbacks
      return x.delivered + x.failed == x.sent and x
    end, 5)
    assert.is_true(cb.sent >= 4 * 3 + 4 + 1 + 1 + 10)
    assert.are.equal(cb.sent, cb.delivered)
    assert.are.equal(0, cb.failed)
    local stats = json.decode(H.raw("GET", url .. "/stats").body)
    assert.are.equal(cb.sent, stats.devices + stats.commands)
    local lock = json.decode(H.raw("GET", url .. "/state/419600010").body)
    assert.are.equal(1, lock.low_battery)
    c:close()
  end)
end)
