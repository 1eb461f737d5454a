-- Numbers as they go out: every JSON the SDK, the CLI and the simulator
-- write comes from kinot.json.encode, which writes an integer within
-- +-2^53 as its exact digits (a Lua 5.4 integer beyond that too) and a
-- float as the shortest text that reads back as the same double.  A serial
-- must never leave as a rounded, different one (lua-cjson's default was 14
-- significant digits: 123456789012345 went out as 1.2345678901234e+14).
local json = require "kinot.json"
local H = require "helpers"

local mtype = math.type

describe("kinot.json.encode: numbers #unit", function()
  it("writes every integer within +-2^53 as its exact digits, integer or integral float", function()
    for _, n in ipairs { 0, 1, -1, 419631107, 123456789012345, -123456789012345, 999999999999999,
                         2 ^ 53, -2 ^ 53, 2 ^ 53 - 1, 1e15, 4503599627370497 } do
      local digits = string.format("%d", n)
      assert.are.equal(digits, json.encode(n))
      assert.are.equal(digits, json.encode(n + 0.0), "as a float")
      assert.are.equal('{"sn":' .. digits .. "}", json.encode { sn = n })
    end
    assert.are.equal("0", json.encode(-0.0))
  end)

  it("writes a Lua 5.4 integer beyond 2^53 exactly (a double cannot hold it: validate.sn refuses it as a serial)", function()
    if not mtype then return end -- LuaJIT: no integers; the CLI refuses such text, see below
    local n = math.tointeger(9007199254740993)
    assert.are.equal("9007199254740993", json.encode(n))
    assert.are.equal("-9007199254740993", json.encode(-n))
    assert.are.equal(tostring(math.maxinteger), json.encode(math.maxinteger))
    assert.are.equal(tostring(math.mininteger), json.encode(math.mininteger))
  end)

  it("writes a float as the shortest text that reads back as the same double", function()
    for _, case in ipairs {
      { 0.1, "0.1" }, { 0.1 + 0.2, "0.30000000000000004" }, { 3.659, "3.659" }, { -2.5, "-2.5" },
      { 1e300, "1e+300" }, { -1e300, "-1e+300" }, { 5e-324, "4.94065645841247e-324" },
      { 1.7976931348623157e308, "1.7976931348623157e+308" }, { 2 ^ 60, "1.152921504606847e+18" },
      { 1 / 3, "0.3333333333333333" }, { 123456789012345.6, "123456789012345.6" },
    } do
      local v, text = case[1], case[2]
      assert.are.equal(text, json.encode(v))
      assert.are.equal(v, json.decode("[" .. json.encode(v) .. "]")[1])
    end
  end)

  it("round-trips doubles of every magnitude, and never writes more digits than needed", function()
    local seed = 20261203
    local function rand(n)
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed % n
    end
    for _ = 1, 20000 do
      local m = rand(2 ^ 26) * 2 ^ 27 + rand(2 ^ 27) -- 53 random bits
      local v = m * 2 ^ (rand(2000) - 1000 - 53)
      if rand(2) == 0 then v = -v end
      local text = json.encode(v)
      assert(json.decode("[" .. text .. "]")[1] == v, string.format("%.17g written as %s", v, text))
      local digits = #(text:gsub("e.*$", ""):gsub("[^%d]", ""):gsub("^0+", ""))
      if digits > 15 and text:find("[.e]") then -- (an integer within 2^53: its exact digits)
        local shorter = string.format("%." .. (digits - 1) .. "g", v)
        assert(tonumber(shorter) ~= v, text .. " is not the shortest: " .. shorter)
      end
    end
  end)

  it("is the encoder of the simulator's answers and callbacks: its fleet writes numbers the same way", function()
    local fleet = require "kinot.sim.fleet"
    for _, v in ipairs { 123456789012345, 0.1 + 0.2, 1e300, -7, "a\"b\n", true } do
      assert.are.equal(json.encode(v), fleet.value(v))
    end
    assert.are.equal("null", fleet.value(nil))
  end)

  it("is the only encoder: nothing under lua/ encodes with lua-cjson or formats numbers to 14 digits", function()
    -- but kinot/fleet/rule.lua, which also runs inside Redis, whose own
    -- cjson keeps 14 digits: it compares numbers at that precision there
    local p = io.popen("cd '" .. H.root .. "' && grep -rlnE --include='*.lua' -e 'require *[(]?.cjson' -e '%[.]14g' lua" ..
      " | grep -v '^lua/kinot/fleet/rule.lua$'")
    local found = p:read("*a")
    p:close()
    assert.are.equal("", found)
  end)
end)

describe("kinot.json.encode: what JSON is #unit", function()
  it("escapes quotes, backslashes and control bytes, and leaves '/' and UTF-8 as they are", function()
    assert.are.equal('"a\\"b\\\\c\\n\\t\\u0001\\u007f/é"', json.encode("a\"b\\c\n\t\1\127/é"))
    assert.are.equal("a\"b\\c\n\t\1\127/é", json.decode(json.encode("a\"b\\c\n\t\1\127/é")))
  end)

  it("writes lists, objects (keys sorted: the same text on every run), null and booleans", function()
    assert.are.equal('[1,"x",null,true,false,{},{"a":1,"b":[2]}]',
      json.encode { 1, "x", json.null, true, false, {}, { b = { 2 }, a = 1 } })
    assert.are.equal('{"a":1,"b":2,"c":3,"sn":4}', json.encode { sn = 4, c = 3, b = 2, a = 1 })
    assert.are.equal("{}", json.encode {})
  end)

  it("refuses what JSON cannot carry, naming where it is", function()
    local t = {}
    t.self = t
    for _, case in ipairs {
      { { sn = 0 / 0 }, "body.sn" }, { { 1, math.huge }, "body[2]" }, { { f = print }, "body.f" },
      { { [1] = 1, x = 2 }, "body" }, { { [2] = 1 }, "body" }, { t, "contains itself" },
    } do
      local ok, err = pcall(json.encode, case[1], "body")
      assert.is_false(ok)
      assert.matches(case[2], tostring(err.message or err), 1, true)
    end
  end)
end)

-- the CLI against a real simulator that records the bodies it received

local kinot = H.kinot

describe("exact numbers from the CLI through the simulator #cli #sim", function()
  local sim, env
  setup(function()
    sim = H.sim { locks = 5, sensors = 5, command_pace = 0.02 }
    env = string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s", sim.app_key, sim.app_secret, sim.endpoint)
  end)
  teardown(function() sim.stop() end)

  local function received()
    local r = sim.call("GET", "/received")
    return r.received
  end

  local function last_body(path)
    local list = received()
    for i = #list, 1, -1 do
      if list[i].path == "/open/lora/v1" .. path then return list[i].body end
    end
  end

  it("sends 123456789012345 as its digits (command send), and the simulator names it so", function()
    local out, err, rc = kinot("command send 123456789012345", env)
    assert.are.equal(3, rc, out .. err) -- no such device in the simulator's fleet
    assert.matches('"sn":123456789012345[,}]', last_body("/commands"))
    assert.matches("device not found: 123456789012345", err, 1, true)
  end)

  it("sends the serial of notifications test as its digits", function()
    local out, err, rc = kinot("notifications test 123456789012345 --type status_changed", env)
    assert.are.equal(3, rc, out .. err)
    assert.matches('"sn":123456789012345[,}]', last_body("/test/notifications"))
    assert.matches("device not found: 123456789012345", err, 1, true)
  end)

  it("sends --value as typed: negative, 0.1+0.2, 1e300, an integral float as an integer", function()
    for typed, sent in pairs { ["-5"] = "-5", ["0.30000000000000004"] = "0.30000000000000004", ["1e300"] = "1e+300",
                               ["2.0"] = "2", ["-123456789012345"] = "-123456789012345" } do
      local out, err, rc = kinot("command send 419600001 --value=" .. typed, env)
      assert.are.equal(3, rc, typed .. ": " .. out .. err) -- a lock takes value 1 only
      assert.matches('"value":' .. sent .. "}", last_body("/commands"), 1, true)
      assert.matches("parameter value " .. sent .. " is not valid", err, 1, true)
    end
  end)

  it("refuses 9007199254740993 (beyond 2^53) as a serial and as --value, on both runtimes, sending nothing", function()
    local before = #received()
    local out, err, rc = kinot("command send 9007199254740993", env)
    assert.are.equal(2, rc, out .. err)
    assert.matches("9007199254740991", err, 1, true)
    out, err, rc = kinot("command send 419600001 --value 9007199254740993", env)
    assert.are.equal(2, rc, out .. err)
    assert.matches("--value 9007199254740993", err, 1, true)
    assert.matches("2^53", err, 1, true)
    out, err, rc = kinot("notifications test 9007199254740993", env)
    assert.are.equal(2, rc, out .. err)
    assert.are.equal(before, #received(), "something was sent")
  end)

  it("writes exact numbers in its answers and in the callbacks it posts", function()
    local c = sim.client()
    -- a device whose readings are floats a 14-digit writer would round
    local doc = sim.call("POST", "/devices/419600002", { voltage = 0.1 + 0.2, rs_si = -123456789012345, frequency = 1e300 })
    assert.is_true(doc.ok)
    local status, _, body = c:request("GET", "/lockers/419600002")
    assert.are.equal(200, status)
    assert.matches('"voltage":0.30000000000000004,', body, 1, true)
    assert.matches('"frequency":1e+300,', body, 1, true)
    assert.matches('"rs_si":-123456789012345,', body, 1, true)
    local lock = assert(c:locker(419600002))
    assert.are.equal(0.1 + 0.2, lock.voltage)
    -- its status_changed callback carries the same digits (to a port nobody
    -- listens on: the simulator records the body it tried to deliver)
    assert(c:set_notifications { device_type = 18, status_changed_callback_url = "http://127.0.0.1:9/cb" })
    local r = sim.call("POST", "/trigger", { type = "status", sn = 419600002, set = { car_detected = 1 } })
    assert.are.equal(419600002, r.sn)
    local cb = H.wait_for(function()
      local d = sim.call("GET", "/callbacks").deliveries
      return type(d) == "table" and d[1] and d[1].body
    end, 5)
    assert.matches('"voltage":0.30000000000000004,', cb, 1, true)
    assert.matches('"rs_si":-123456789012345,', cb, 1, true)
  end)
end)
