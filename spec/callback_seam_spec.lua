-- The seam between verifying a callback and reading its members (issue 12
-- §1-§3, issue 13 §5): what verification returns owns everything it
-- holds; nothing is left behind for a later call to read; the event is
-- built from the signed members only, each known field typed as the
-- reference's tables give it.
local callback = require "kinot.callback"
local json = require "kinot.json"
local gc = require "gc_stress"
local H = require "helpers"

local secret = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"
local function signed(body, key)
  local s = assert(callback.sign(body, key or secret))
  return (body:gsub("}%s*$", ',"sign":"' .. s .. '"}'))
end
local is54 = math.type ~= nil

describe("callback.verify's event owns its members (#gc) #unit", function()
  -- a body of n members built afresh each time: when verify returns, no
  -- one but verify itself ever held it
  local function value_of(i, r) return string.format("v%d_%d_%s", i, r, string.rep("x", 24)) end
  -- the body's text in two pieces: table.concat makes it afresh under
  -- the eager collector, and only the call it is passed to holds it
  local function pieces(n, r)
    local parts = {}
    for i = 1, n do parts[i] = string.format('"member_%03d":"%s"', i, value_of(i, r)) end
    parts[n + 1] = '"sn":' .. (419600000 + r)
    local body = signed("{" .. table.concat(parts, ",") .. "}")
    return { body:sub(1, 100), body:sub(101) }, #body
  end

  it("keeps every member of a 200-member body whose last reference went with the call", function()
    local bad, opts = 0, { secret = secret }
    for r = 1, 3 do
      local p, size = pieces(200, r)
      local ev
      -- a full collection at every call: the body is freed the moment
      -- nothing holds it, and its memory filled with '#'s
      gc.eager(function() ev = callback.verify(table.concat(p), opts) end, size)
      assert(ev)
      for i = 1, 200 do
        if ev.data[string.format("member_%03d", i)] ~= value_of(i, r) then bad = bad + 1 end
      end
      if ev.sn ~= 419600000 + r then bad = bad + 1 end
    end
    assert.are.equal(0, bad)
  end)

  it("keeps them through the receiver too", function()
    local rcv = callback.receiver { secret = secret }
    local bad = 0
    for r = 4, 5 do
      local p, size = pieces(200, r)
      local status, ev
      gc.eager(function()
        local st, _, e = rcv:receive(table.concat(p))
        status, ev = st, e
      end, size)
      assert.are.equal(200, status)
      for i = 1, 200 do
        if ev.data[string.format("member_%03d", i)] ~= value_of(i, r) then bad = bad + 1 end
      end
    end
    assert.are.equal(0, bad)
  end)
end)

describe("a verification inside another (#gc) #unit", function()
  it("stays right when a finalizer verifies another body in the middle of a verification", function()
    local opts = { secret = secret }
    local other = signed('{"sn":999,"locked":0,"voltage":3.5}')
    local nested, bad_inner = 0, 0
    local scanner, core = require "kinot.callback.scanner", require "kinot.core"
    local function inside_verify() -- is a verification on the stack below?
      for level = 2, 200 do
        local info = debug.getinfo(level, "fS")
        if not info then return false end
        if info.func == scanner.verify or info.func == core.callback_verify then return true end
      end
      return false
    end
    local function finalizer()
      if inside_verify() then nested = nested + 1 end
      local ev = callback.verify(other, opts)
      if not ev or ev.sn ~= 999 or ev.data.voltage ~= 3.5 then bad_inner = bad_inner + 1 end
    end
    local finalized
    if rawget(_G, "jit") then
      local ffi = require "ffi"
      finalized = function() return ffi.gc(ffi.new("int[1]"), finalizer) end
    else
      finalized = function() return setmetatable({}, { __gc = finalizer }) end
    end
    local parts = {}
    for i = 1, 200 do parts[i] = string.format('"member_%03d":"v%03d"', i, i) end
    local body = signed("{" .. table.concat(parts, ",") .. "}")
    local bad = 0
    -- a collector that runs finalizers while the outer call allocates (and
    -- not from a hook between calls, as KINOT_GC_STRESS's does)
    local restore
    local hook, mask, count = debug.gethook()
    debug.sethook()
    if is54 then
      local mode = collectgarbage("generational")
      restore = function() collectgarbage(mode) end
    else
      local pause, mul = collectgarbage("setpause", 0), collectgarbage("setstepmul", 1000)
      -- LuaJIT runs no finalizer while compiled code runs: whether one ran
      -- inside a verification hung on what else had been compiled (it
      -- failed with every unit spec loaded), so this loop is interpreted
      jit.off()
      jit.flush()
      restore = function() collectgarbage("setpause", pause) collectgarbage("setstepmul", mul) jit.on() end
    end
    local restore_gc = restore
    restore = function()
      restore_gc()
      debug.sethook(hook, mask, count)
    end
    local ok, err = pcall(function()
      -- when the collector runs is up to it: go on until a finalizer has run
      -- inside a verification (or give up after many rounds, and fail below)
      for round = 1, 5000 do
        if round > 200 and nested > 0 then break end
        for _ = 1, 20 do finalized() end
        -- a pad of a size that changes each round, so that where a
        -- collection falls moves from round to round, whatever the heap
        -- held before (else a few more tables loaded elsewhere can make it
        -- fall outside every verification, every round)
        local pad = {}
        for k = 1, round % 23 do pad[k] = { k } end
        local ev = assert(callback.verify(body, opts))
        if #pad ~= round % 23 then bad = bad + 1 end -- (kept alive across the verification)
        for i = 1, 200 do
          if ev.data[string.format("member_%03d", i)] ~= string.format("v%03d", i) then bad = bad + 1 end
        end
      end
    end)
    restore()
    collectgarbage("collect")
    assert(ok, err)
    assert.is_true(nested > 0, "no finalizer ran inside a verification: the spec proves nothing")
    assert.are.same({ 0, 0 }, { bad, bad_inner })
  end)
end)

describe("nothing is shared between two verifications #unit", function()
  local b111 = signed('{"guid":"AAAA1111","sn":111,"commnad_status":"succeeded","reason":"NULL","device_type":18}')
  local b222 = signed('{"sn":222,"locked":1,"voltage":3.5,"device_type":18}')

  -- A dedupe store whose claim() yields, as one on cosockets does (Redis,
  -- ngx.shared behind a lock...).  A coroutine stands for the nginx light
  -- thread here; the real thing runs in the nginx spec below.
  local function yielding_store()
    return { claim = function() coroutine.yield() return "new", true end, settle = function() return true end }
  end

  it("gives each delivery its own event when the dedupe store yields between", function()
    local rcv = callback.receiver { secret = secret, store = yielding_store() }
    local got = {}
    local a = coroutine.create(function() local _, _, ev = rcv:receive(b111) got.a = ev end)
    local b = coroutine.create(function() local _, _, ev = rcv:receive(b222) got.b = ev end)
    assert(coroutine.resume(a)) -- a: verified, now waiting in the store
    assert(coroutine.resume(b)) -- b: verified, waiting too
    assert(coroutine.resume(a))
    assert(coroutine.resume(b))
    assert.are.same({ 111, "command_resp", "AAAA1111" }, { got.a.sn, got.a.kind, got.a.guid })
    assert.are.same({ 222, "status_changed", 1 }, { got.b.sn, got.b.kind, got.b.data.locked })
    assert.are_not.equal(got.a.id, got.b.id)
  end)

  it("gives the right event when a refused body is received in between", function()
    local inner
    local rcv
    rcv = callback.receiver { secret = secret, store = { claim = function()
      -- another request, refused half way through its scan, in between
      inner = { rcv:receive('{"sn":333,"pad":"' .. string.rep("y", 300) .. '","locked":1,,}') }
      return "new", true
    end, settle = function() return true end } }
    local status, _, ev = rcv:receive(b222)
    assert.are.equal(400, inner[1])
    assert.are.equal(200, status)
    assert.are.same({ sn = 222, locked = 1, voltage = 3.5, device_type = 18 }, ev.data)
  end)

  it("has no call that reads what an earlier one left: each scans the body it is given", function()
    assert.is_nil(callback.event)
    local scanner = require "kinot.callback.scanner"
    local types = require("kinot.vocabulary").fields.callback
    for _, data_of in ipairs { scanner.data, require("kinot.core").callback_data } do
      assert(callback.verify(signed('{"sn":1,"locked":1,"x":"a"}'), { secret = secret }))
      assert.are.same({ sn = 2 }, assert(data_of('{"sn":2}', types)))
      -- refused half way after a good scan: nothing of the earlier body
      local none, reason = data_of('{"sn":3,"locked":"1","x":"b"}', types)
      assert.is_nil(none)
      assert.are.equal("malformed", reason)
      assert.are.same({ x = "b" }, assert(data_of('{"x":"b","sign":"s","n":null}', types)))
    end
  end)
end)

describe("the event holds the signed members only, typed as the reference says #unit", function()
  local status = '{"sn":419631107,"voltage":3.659,"frequency":37.919,"locked":0,"car_detected":1,"shell_opened":0,' ..
    '"low_battery":0,"coil_fault":0,"bar_position_error":0,"motor_fail":1,"rs_si":1,' ..
    '"updated_at":"2019-03-13T10:42:39+08:00","device_type":18}'

  local function add_member(body, member) return (body:gsub("}$", "," .. member .. "}")) end

  it("is not turned into a command_resp by a guid outside the signature", function()
    for _, extra in ipairs { '"guid":""', '"guid":null' } do
      local ev, err = callback.verify(add_member(signed(status), extra), { secret = secret })
      assert(ev, err and err.message)
      assert.are.equal("status_changed", ev.kind, extra)
      assert.is_nil(ev.guid)
      assert.is_nil(ev.data.guid)
    end
  end)

  it("leaves out every unsigned member: empty strings, nulls and the sign itself", function()
    local ev = assert(callback.verify(signed('{"sn":5,"reason":"","note":null,"x":"1"}'), { secret = secret }))
    assert.are.same({ sn = 5, x = "1" }, ev.data)
  end)

  it("refuses a quoted number in an int field: reason malformed", function()
    local body = signed((status:gsub('"sn":419631107', '"sn":"419631107"')))
    local ev, err = callback.verify(body, { secret = secret })
    assert.is_nil(ev)
    assert.are.same({ "callback", "malformed" }, { err.kind, err.reason })
    assert.matches('"sn"', err.message, 1, true)
    assert.matches("int", err.message, 1, true)
  end)

  it("refuses each known field of the wrong type", function()
    local cases = {
      '{"sn":1.5}', '{"sn":true}', '{"sn":12345678901234567890}', '{"locked":"1"}', '{"car_detected":[1]}',
      '{"voltage":"3.6"}', '{"rs_si":false}', '{"updated_at":20190313}', '{"guid":{"a":1}}',
      '{"commnad_status":1}', '{"reason":0}', '{"device_type":"38"}', '{"bt_mac":1}', '{"motor_fail":0.5}',
    }
    for _, body in ipairs(cases) do
      local ev, err = callback.verify(signed(body), { secret = secret })
      assert.is_nil(ev, body)
      assert.are.equal("malformed", err.reason, body)
    end
  end)

  it("answers 400 for a malformed body in the receiver", function()
    local rcv = callback.receiver { secret = secret }
    local st, body = rcv:receive(signed('{"sn":"419631107","locked":1}'))
    assert.are.equal(400, st)
    assert.are.equal(400, json.decode(body).code)
  end)

  it("makes float fields floats even when the value is whole, int fields integers", function()
    local body = '{"sn":419631107,"voltage":3,"frequency":0,"rs_si":-55,"locked":1,"device_type":18,"low_battery":1e0}'
    local ev = assert(callback.verify(signed(body), { secret = secret }))
    assert.are.same({ 3, 0, -55, 1, 1 }, { ev.data.voltage, ev.data.frequency, ev.data.rs_si, ev.data.locked,
                                           ev.data.low_battery })
    if is54 then
      for _, k in ipairs { "voltage", "frequency", "rs_si" } do
        assert.are.equal("float", math.type(ev.data[k]), k)
      end
      for _, k in ipairs { "sn", "locked", "device_type", "low_battery" } do
        assert.are.equal("integer", math.type(ev.data[k]), k)
      end
    end
  end)

  it("passes unknown fields through, typed by their text", function()
    local body = '{"sn":1,"extra_n":7,"extra_f":2.5,"extra_s":"7","extra_b":true,"extra_o":{"k":[1,2]}}'
    local ev = assert(callback.verify(signed(body), { secret = secret }))
    assert.are.same({ 7, 2.5, "7", true, { k = { 1, 2 } } },
      { ev.data.extra_n, ev.data.extra_f, ev.data.extra_s, ev.data.extra_b, ev.data.extra_o })
    if is54 then assert.are.equal("integer", math.type(ev.data.extra_n)) end
  end)
end)

describe("typing against a reference written here #unit", function()
  local vocabulary = require "kinot.vocabulary"
  local core = require "kinot.core"
  local scanner = require "kinot.callback.scanner"
  local cjson = require "cjson"
  local types = vocabulary.fields.callback

  -- what the data must be, from cjson's reading of the body and the rules
  local function expected(body)
    local doc = cjson.decode(body)
    local data, bad = {}, nil
    for k, v in pairs(doc) do
      if k ~= "sign" and v ~= cjson.null and v ~= "" then
        local want = types[k]
        if want == "int" or want == "float" or want == "string" then
          local c = vocabulary.coerce(want, v)
          if c == nil then
            bad = bad or {}
            bad[k] = true
          end
          v = c
        end
        data[k] = v
      end
    end
    if bad then return nil, bad end
    return data
  end

  -- names that share the binding's name slots: the known fields and 600
  -- others (more than its 256 slots)
  local names = {}
  for k in pairs(types) do if k ~= "sign" then names[#names + 1] = k end end
  table.sort(names)
  for i = 1, 600 do names[#names + 1] = "x" .. i end
  local seed = 12345
  local function rnd(n) -- MINSTD: the same bodies on every runtime
    seed = (seed * 48271) % 2147483647
    return seed % n + 1
  end
  local VALUES = { "7", "-55", "0", "3.5", "1e2", '"7"', '"s"', '""', "null", "true", "[1]", '{"a":1}', "1.5e300" }
  local function body_of()
    local used, parts = {}, {}
    for _ = 1, 1 + rnd(25) do
      local k = names[rnd(#names)]
      if not used[k] then
        used[k] = true
        local v = VALUES[rnd(#VALUES)]
        if types[k] and rnd(4) > 1 then -- mostly the right type
          local t = types[k]
          v = t == "int" and tostring(rnd(100)) or t == "float" and (rnd(2) == 1 and "3" or "3.25") or '"t' .. rnd(9) .. '"'
        end
        parts[#parts + 1] = '"' .. k .. '":' .. v
      end
    end
    return signed("{" .. table.concat(parts, ",") .. "}")
  end

  it("gives what the rules give for thousands of random bodies, in both bindings", function()
    local runs = { core.callback_verify }
    if scanner.verify ~= core.callback_verify then runs[2] = scanner.verify end
    local checked, refused = 0, 0
    for _ = 1, gc.active and 600 or 3000 do -- fewer under the stress of make sanitize
      local body = body_of()
      local want, bad_keys = expected(body)
      for _, verify in ipairs(runs) do
        local sign, index, data, nested = verify(body, { secret }, types)
        if want then
          assert(sign, body)
          assert.are.equal(1, index)
          for k, text in pairs(nested or {}) do -- objects and arrays come as their text
            assert.are.equal(text, data[k])
            data[k] = cjson.decode(text)
          end
          assert.are.same(want, data, body)
          if is54 then
            for k, v in pairs(data) do
              local t = types[k]
              if t == "int" then assert.are.equal("integer", math.type(v), body) end
              if t == "float" then assert.are.equal("float", math.type(v), body) end
            end
          end
        else
          assert.are.same({ nil, "malformed" }, { sign, index }, body)
          assert.is_true(bad_keys[data:match('member "(.-)"')], data) -- the first in body order
        end
      end
      checked = checked + 1
      if not want then refused = refused + 1 end
    end
    assert.is_true(refused > checked / 50 and refused < checked * 9 / 10,
      "the bodies do not exercise both outcomes: " .. refused .. " of " .. checked .. " refused")
  end)

  it("reads a different types table afresh", function()
    local body = signed('{"sn":5,"voltage":3}')
    local _, _, data = assert(core.callback_verify(body, { secret }, types))
    assert.are.equal(5, data.sn)
    local other = { sn = "string", voltage = "int" }
    local ok, reason = core.callback_verify(body, { secret }, other)
    assert.are.same({ nil, "malformed" }, { ok, reason })
    _, _, data = assert(core.callback_verify(signed('{"voltage":3}'), { secret }, other))
    assert.are.equal(3, data.voltage)
    if is54 then assert.are.equal("integer", math.type(data.voltage)) end
  end)
end)

describe("device_type codes and the command reason (issue 13 §5) #unit", function()
  -- the reference's four callback examples, as written (38 and trailing
  -- commas), signed here with a test secret
  local examples = {
    lock_status = '{\n\t"sn": 419631107,\n\t"voltage": 3.659,\n\t"frequency": 37.919,\n\t"locked": 0,\n\t' ..
      '"car_detected": 1,\n\t"shell_opened": 0,\n\t"low_battery": 0,\n\t"coil_fault": 0,\n\t' ..
      '"bar_position_error": 0,\n\t"motor_fail": 1,\n\t"rs_si": 1,\n\t"updated_at": "2019-03-13T10:42:39+08:00",\n' ..
      '    "device_type":38,\n}',
    lock_command = '{\n    "guid": "3019FF21F07FA9EFD7CA1DBBE8AF3749",\n\t"sn": 419631107,\n\t' ..
      '"commnad_status": "succeeded",\n\t"reason":"NULL",\n    "updated_at": "2019-03-13T10:42:39+08:00",\n' ..
      '     "device_type":38,\n}',
    sensor_status = '{\n\t"sn": 419631107,\n\t"voltage": 3.659,\n\t"frequency": 37.919,\n\t"car_detected": 1,\n\t' ..
      '"low_battery": 0,\n    "coil_fault": 0,\n\t"rs_si": 1,\n\t"updated_at": "2019-03-13T10:42:39+08:00",\n' ..
      '    "device_type":38,\n}',
    sensor_command = '{\n    "guid": "3019FF21F07FA9EFD7CA1DBBE8AF3749",\n\t"sn": 419631107,\n\t' ..
      '"commnad_status": "succeeded",\n\t"reason":"NULL",\n    "updated_at": "2019-03-13T10:42:39+08:00",\n' ..
      '    "device_type":34,\n}',
  }
  -- the sign goes before the trailing comma, as in the reference
  local function sign_example(body)
    local s = assert(callback.sign(body, secret))
    return (body:gsub(",%s*}$", ',\n    "sign":"' .. s .. '",\n}'))
  end
  local function verify(name)
    local ev, err = callback.verify(sign_example(examples[name]), { secret = secret })
    return assert(ev, err and err.message)
  end

  it("judges a lock and a sensor sent with 38 from their fields, and says so", function()
    local lock, sensor = verify("lock_status"), verify("sensor_status")
    assert.are.same({ "lock", "status_changed", 38 }, { lock.device, lock.kind, lock.data.device_type })
    assert.are.same({ "sensor", "status_changed" }, { sensor.device, sensor.kind })
    assert.matches("38", lock.device_why)
    assert.matches("fields", lock.device_why)
    assert.matches("38", sensor.device_why)
  end)

  it("says why when the fields cannot tell (a command_resp with 38)", function()
    local ev = verify("lock_command")
    assert.are.same({ "command_resp", "unknown", "succeeded" }, { ev.kind, ev.device, ev.command_status })
    assert.is_string(ev.device_why)
    assert.matches("38", ev.device_why)
    assert.matches("command_resp", ev.device_why)
  end)

  it("trusts a known code and leaves device_why out", function()
    local ev = verify("sensor_command")
    assert.are.same({ "command_resp", "sensor" }, { ev.kind, ev.device })
    assert.is_nil(ev.device_why)
  end)

  it("gives the command's reason, nil for the text NULL", function()
    assert.is_nil(verify("lock_command").reason)
    local ev = assert(callback.verify(signed('{"guid":"AB","sn":1,"commnad_status":"failed","reason":"device offline",' ..
      '"device_type":18}'), { secret = secret }))
    assert.are.same({ "failed", "device offline", "lock" }, { ev.command_status, ev.reason, ev.device })
  end)
end)

describe("the platform's vocabulary #unit", function()
  local vocabulary = require "kinot.vocabulary"

  it("names the device codes and each device's fields with the reference's types", function()
    assert.are.same({ [18] = "lock", [34] = "sensor" }, vocabulary.device_types)
    assert.are.equal("int", vocabulary.fields.lock.bar_position_error)
    assert.are.equal("float", vocabulary.fields.sensor.rs_si)
    assert.are.equal("string", vocabulary.fields.dtu.host)
    assert.are.equal("json", vocabulary.fields.command.parameter)
    assert.are.equal("string", vocabulary.fields.callback.commnad_status)
    assert.are.equal("commnad_status", vocabulary.COMMAND_STATUS_AS_SENT)
    assert.is_string(vocabulary.unconfirmed_device_types[38])
  end)

  it("coerces a value to a field's type, or says why not", function()
    local c = vocabulary.coerce
    assert.are.equal(3, c("int", 3.0))
    if is54 then
      assert.are.equal("integer", math.type(c("int", 3.0)))
      assert.are.equal("float", math.type(c("float", 0)))
    end
    assert.are.equal("x", c("string", "x"))
    for _, bad in ipairs { { "int", "3" }, { "int", 1.5 }, { "int", 2 ^ 60 }, { "float", "1" }, { "string", 1 },
                           { "int", true }, { "float", 0 / 0 } } do
      local v, why = c(bad[1], bad[2])
      assert.is_nil(v, bad[1] .. " " .. tostring(bad[2]))
      assert.is_string(why)
    end
    assert.has_error(function() c("integer", 1) end)
  end)
end)

describe("callbacks in a real nginx worker (#gc) #nginx", function()
  local ng
  setup(function()
    ng = H.nginx {
      http = [[
        init_by_lua_block {
          local callback = require "kinot.callback"
          -- a dedupe store on cosockets: add() yields (here by sleeping)
          rcv = callback.receiver { secret = "]] .. secret .. [[",
                                    store = { claim = function() ngx.sleep(0.01) return "new", true end,
                                              settle = function() return true end } }
        }
      ]],
      server = [[
        # callback.verify(ngx.req.get_body_data(), ...): the body is held by
        # nothing but the call; a full collection at every call, and the
        # memory of a string of the body's size filled with '#' after it
        location = /verify { content_by_lua_block {
          local callback = require "kinot.callback"
          ngx.req.read_body()
          local size, n, filler = tonumber(ngx.var.content_length), 0, {}
          debug.sethook(function()
            collectgarbage("collect")
            for i = 1, 4 do
              n = n + 1
              filler[i] = string.rep("#", size - 16) .. string.format("%016d", n)
            end
          end, "c")
          local ev, err = callback.verify(ngx.req.get_body_data(), { secret = "]] .. secret .. [[" })
          debug.sethook()
          if not ev then return ngx.say("refused ", err.message) end
          local bad, r = 0, ev.sn - 419600000
          for i = 1, 200 do
            if ev.data[string.format("member_%03d", i)] ~= "v" .. i .. "_" .. r .. string.rep("x", 24) then
              bad = bad + 1
            end
          end
          ngx.say(bad)
        } }
        location = /race { content_by_lua_block {
          local args = ngx.req.get_uri_args()
          local function one(body)
            local status, _, ev = rcv:receive(body)
            return status .. " " .. tostring(ev and ev.sn) .. " " .. tostring(ev and ev.kind)
          end
          local a = ngx.thread.spawn(one, args.a)
          local b = ngx.thread.spawn(one, args.b)
          local _, ra = ngx.thread.wait(a)
          local _, rb = ngx.thread.wait(b)
          ngx.say(ra, "|", rb)
        } }
      ]],
    }
  end)
  teardown(function() if ng then ng.stop() end end)

  it("keeps every member of a body passed straight from ngx.req.get_body_data()", function()
    for r = 1, 10 do
      local parts = {}
      for i = 1, 200 do parts[i] = string.format('"member_%03d":"v%d_%d%s"', i, i, r, string.rep("x", 24)) end
      parts[201] = '"sn":' .. (419600000 + r)
      local body = signed("{" .. table.concat(parts, ",") .. "}")
      assert.are.equal("0\n", H.raw("POST", ng.url .. "/verify", body).body)
    end
  end)

  it("gives each its own event", function()
    local a = signed('{"guid":"AAAA1111","sn":111,"commnad_status":"succeeded","device_type":18}')
    local b = signed('{"sn":222,"locked":1,"device_type":18}')
    local function q(s) return (s:gsub("[^%w]", function(c) return string.format("%%%02X", c:byte()) end)) end
    local res = H.raw("GET", ng.url .. "/race?a=" .. q(a) .. "&b=" .. q(b))
    assert.are.equal("200 111 command_resp|200 222 status_changed\n", res.body)
  end)
end)
