-- Every known field of every API answer has the type the reference's
-- tables give it, whatever its JSON text (kinot.typed); unknown fields pass
-- through.  Tried against text the simulator would never send (a raw nginx
-- answering hand-written bodies: whole floats, quoted numbers, numbers
-- where text is wanted, unknown fields) and against the simulator's own
-- answers.  On Lua 5.4 the number subtype is checked; on LuaJIT every
-- number is a double, and what is checked is text becoming a number and a
-- number becoming text.  Then the CLI: a failed command's reason.
local json = require "kinot.json"
local kinot = require "kinot"
local typed = require "kinot.typed"
local H = require "helpers"

local mtype = math.type -- nil on LuaJIT

-- a float where the runtime has the subtype (a number on LuaJIT)
local function is_float(v)
  return type(v) == "number" and (not mtype or mtype(v) == "float")
end
-- an integer where the runtime has the subtype (a whole number on LuaJIT)
local function is_int(v)
  return type(v) == "number" and v == math.floor(v) and (not mtype or mtype(v) == "integer")
end
local function kind_of(v)
  return mtype and type(v) == "number" and mtype(v) or type(v)
end

local function float(obj, k, want)
  assert(is_float(obj[k]), k .. " should be a float, is " .. kind_of(obj[k]) .. " " .. tostring(obj[k]))
  if want then assert.are.equal(want, obj[k], k) end
end
local function int(obj, k, want)
  assert(is_int(obj[k]), k .. " should be an integer, is " .. kind_of(obj[k]) .. " " .. tostring(obj[k]))
  if want then assert.are.equal(want, obj[k], k) end
end
local function str(obj, k, want)
  assert(type(obj[k]) == "string", k .. " should be a string, is " .. kind_of(obj[k]) .. " " .. tostring(obj[k]))
  if want then assert.are.equal(want, obj[k], k) end
end

local LOCK = { "voltage", "frequency", "rs_si" }
local LOCK_INTS = { "sn", "locked", "car_detected", "shell_opened", "low_battery", "coil_fault", "bar_position_error",
                    "motor_fail" }
local SENSOR_INTS = { "sn", "car_detected", "low_battery", "coil_fault" }

local function kinot_cli(args, env) return H.kinot(args, env) end

-- --------------------------------------------------------------- hand-written answers

-- files served as the answer to /open/lora/v1/<path with / as _>.json,
-- read at every request (a test may rewrite one)
local BODIES = {
  -- whole floats, quoted numbers, a boolean for a 0/1 int, a number for a
  -- string, unknown fields of every kind; then values that cannot be typed
  lockers = [[{"code":"0","message":"OK","objects":[
    {"sn":"419631107","voltage":3,"frequency":"37.919","locked":1.0,"car_detected":true,"shell_opened":0,
     "low_battery":false,"coil_fault":0e0,"bar_position_error":"0","motor_fail":"1.0","rs_si":-55,
     "bt_match_code":12345,"bt_mac":"aa0018382001","updated_at":"2019-03-13T10:42:39+08:00",
     "extra_text":"7","extra_whole":2.0,"extra_int":3,"extra_obj":{"rs_si":1}},
    {"sn":419631108,"voltage":"3","frequency":0,"locked":"abc","car_detected":0.5,"shell_opened":null,
     "low_battery":" 1","coil_fault":"0x1","bar_position_error":{"a":1},"motor_fail":[1],"rs_si":"n/a",
     "bt_match_code":0.30000000000000004,"bt_mac":{"x":1},"updated_at":20190313}
  ],"count":"2",}]],
  lockers_419631107 = [[{"code":0,"message":"OK","objects":[{"sn":419631107.0,"voltage":4,"frequency":38,
    "locked":"0","car_detected":1,"rs_si":"0","bt_match_code":"61518","bt_mac":1e3,"updated_at":"x"}],}]],
  sensors = [[{"code":0,"message":"OK","objects":[{"sn":"419635201","voltage":"3.654","frequency":38,
    "active":1.0,"car_detected":"1","low_battery":1,"coil_fault":true,"rs_si":-109,"updated_at":"t"}],"count":1.0}]],
  sensors_419635201 = [[{"code":0,"message":"OK","objects":[{"sn":419635201,"voltage":3.654,"frequency":38.6,
    "car_detected":1,"low_battery":1,"coil_fault":1,"rs_si":0}]}]],
  dtu_devices_644219880 = [[{"code":0,"message":"OK","objects":[{"sn":"644219880","hw":"4097","sw":8193.0,
    "firmware":17,"host":"218.204.252.18:44062","online":1,"updated_at":"2019-03-24T17:03:44+08:00"}]}]],
  commands = [[{"code":0,"message":"OK","request_id":"r1","objects":[{"sn":"419635201",
    "guid":"ED33B369589222DB25B298C6E06C5DAE","command":1.0,"commnad_status":"failed","reason":"device jammed",
    "updated_at":"2019-03-13T10:42:39+08:00","parameter":{"key":"handle","value":1.0},"extra":"1"}]}]],
  -- the reference's own example: numbers for the two URLs, a trailing comma
  notifications = [[{"code":0,"message":"OK","objects":[{"device_type":"18","status_changed_callback_url":3.654,
    "command_resp_callback_url":38.6,"update_at":"2019-03-13T10:42:39+08:00",}]}]],
  test_notifications = [[{"code":0,"message":"OK","request_id":"19feab9dace17f0f9c6136969c621d76","objects":[
    {"sn":"419631107","callback_url":"http://192.168.16.238/test","error_detail":"sent"}]}]],
}

describe("typed answers, from text the simulator never sends #nginx #cli", function()
  local ng, dir, client
  setup(function()
    local p = io.popen("mktemp -d /tmp/kinot-typed.XXXXXX")
    dir = p:read("*l")
    p:close()
    for name, body in pairs(BODIES) do
      local f = assert(io.open(dir .. "/" .. name .. ".json", "wb"))
      f:write(body)
      f:close()
    end
    os.execute("chmod -R a+rX " .. dir) -- nginx's workers read them as another user
    ng = H.nginx {
      server = [[
        location /open/lora/v1/ {
          default_type application/json;
          content_by_lua_block {
            local name = ngx.var.uri:sub(#"/open/lora/v1/" + 1):gsub("/", "_")
            local f = io.open("]] .. dir .. [[/" .. name .. ".json", "rb")
            if not f then ngx.status = 404 ngx.say('{"code":404,"message":"no such body"}') return end
            ngx.print(f:read("*a"))
            f:close()
          }
        }
      ]],
    }
    client = kinot.new { app_key = "k", app_secret = "s", endpoint = ng.url .. "/open/lora/v1",
                         paging = "page0" }
  end)
  teardown(function()
    if client then client:close() end
    if ng then ng.stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  it("types a page of locks field by field, whatever the text", function()
    local page = assert(client:lockers { limit = 10 })
    int(page, "count", 2)
    local a, b = page.objects[1], page.objects[2]
    int(a, "sn", 419631107)
    float(a, "voltage", 3)
    float(a, "frequency", 37.919)
    float(a, "rs_si", -55)
    int(a, "locked", 1)
    int(a, "car_detected", 1)
    int(a, "low_battery", 0)
    int(a, "coil_fault", 0)
    int(a, "bar_position_error", 0)
    int(a, "motor_fail", 1)
    int(a, "shell_opened", 0)
    str(a, "bt_match_code", "12345")
    str(a, "bt_mac", "aa0018382001")
    str(a, "updated_at", "2019-03-13T10:42:39+08:00")
    -- unknown fields: as the decoder gave them
    str(a, "extra_text", "7")
    assert.are.equal(2, a.extra_whole)
    if mtype then
      assert.are.equal("float", mtype(a.extra_whole))
      assert.are.equal("integer", mtype(a.extra_int))
      assert.are.equal("integer", mtype(a.extra_obj.rs_si)) -- a nested object is not a device
    end
    -- the second: number text and numbers become what is wanted...
    int(b, "sn", 419631108)
    float(b, "voltage", 3)
    float(b, "frequency", 0)
    str(b, "bt_match_code", "0.30000000000000004") -- the shortest text that reads back the same
    str(b, "updated_at", "20190313")
    -- ...and what cannot be typed is kept as it came
    assert.are.equal("abc", b.locked)
    assert.are.equal(0.5, b.car_detected)
    assert.are.equal(json.null, b.shell_opened)
    assert.are.equal(" 1", b.low_battery) -- not a JSON number's text
    assert.are.equal("0x1", b.coil_fault)
    assert.are.same({ a = 1 }, b.bar_position_error)
    assert.are.same({ 1 }, b.motor_fail)
    assert.are.equal("n/a", b.rs_si)
    assert.are.same({ x = 1 }, b.bt_mac)
  end)

  it("types every device each_locker yields (the pager's path)", function()
    local n = 0
    for d in client:each_locker { limit = 10 } do
      n = n + 1
      int(d, "sn")
      if n == 1 then float(d, "rs_si", -55); float(d, "voltage", 3); str(d, "bt_match_code", "12345") end
    end
    assert.are.equal(2, n)
  end)

  it("types one lock, sensors, one sensor and a DTU", function()
    local l = assert(client:locker(419631107))
    int(l, "sn", 419631107)
    float(l, "voltage", 4)
    float(l, "frequency", 38)
    int(l, "locked", 0)
    float(l, "rs_si", 0)
    str(l, "bt_mac", "1000")

    local page = assert(client:sensors { limit = 10 })
    int(page, "count", 1)
    local s = page.objects[1]
    int(s, "sn", 419635201)
    float(s, "voltage", 3.654)
    float(s, "frequency", 38)
    float(s, "rs_si", -109)
    int(s, "car_detected", 1)
    int(s, "coil_fault", 1)
    assert.are.equal(1, s.active) -- not in the reference's sensor table: as it came
    if mtype then assert.are.equal("float", mtype(s.active)) end

    s = assert(client:sensor(419635201))
    float(s, "rs_si", 0)
    float(s, "frequency", 38.6)

    local d = assert(client:dtu_device(644219880))
    int(d, "sn", 644219880)
    int(d, "hw", 4097)
    int(d, "sw", 8193)
    int(d, "firmware", 17)
    str(d, "online", "1")
    str(d, "host", "218.204.252.18:44062")
  end)

  it("types a command as sent, read and awaited, both spellings of its status", function()
    for _, cmd in ipairs {
      assert(client:send_command(419635201, { key = "handle", value = 1 })),
      assert(client:command("ED33B369589222DB25B298C6E06C5DAE")),
      assert(client:wait_command("ED33B369589222DB25B298C6E06C5DAE", { timeout = 5 })),
    } do
      int(cmd, "sn", 419635201)
      int(cmd, "command", 1)
      str(cmd, "guid", "ED33B369589222DB25B298C6E06C5DAE")
      str(cmd, "commnad_status", "failed")
      str(cmd, "command_status", "failed")
      str(cmd, "reason", "device jammed")
      str(cmd, "extra", "1")
      -- parameter is the reference's "json": the caller's, as it came
      assert.are.equal(1, cmd.parameter.value)
      if mtype then assert.are.equal("float", mtype(cmd.parameter.value)) end
    end
  end)

  it("types notification settings (the reference's own example) and a test notification", function()
    for _, conf in ipairs {
      assert(client:notifications(18)),
      assert(client:set_notifications { device_type = 18, status_changed_callback_url = "http://example.com/s" }),
    } do
      int(conf, "device_type", 18)
      str(conf, "status_changed_callback_url", "3.654")
      str(conf, "command_resp_callback_url", "38.6")
      str(conf, "update_at", "2019-03-13T10:42:39+08:00")
    end
    local t = assert(client:test_notification(419631107, "status_changed"))
    int(t, "sn", 419631107)
    str(t, "callback_url", "http://192.168.16.238/test")
    str(t, "error_detail", "sent")
  end)

  it("lets the CLI show a command's reason, or say that the answer carries none", function()
    local env = "KINOT_APP_KEY=k KINOT_APP_SECRET=s KINOT_ENDPOINT=" .. ng.url .. "/open/lora/v1"
    local path = dir .. "/commands.json"
    local function answer(body)
      local f = assert(io.open(path, "wb"))
      f:write(body)
      f:close()
    end
    local ok, e = pcall(function()
      local out, err, rc = kinot_cli("command get ED33B369589222DB25B298C6E06C5DAE", env)
      assert.are.equal(3, rc, err)
      assert.matches("reason:%s+device jammed", out)
      answer((BODIES.commands:gsub('"reason":"device jammed",', "")))
      out, err, rc = kinot_cli("command get ED33B369589222DB25B298C6E06C5DAE", env)
      assert.are.equal(3, rc, err)
      assert.matches("reason:%s+not in the platform's answer %(its command_resp callback carries it%)", out)
      answer((BODIES.commands:gsub('"device jammed"', '"NULL"')))
      out, err, rc = kinot_cli("command get ED33B369589222DB25B298C6E06C5DAE", env)
      assert.are.equal(3, rc, err)
      assert.matches("reason:%s+none given", out)
    end)
    answer(BODIES.commands)
    assert(ok, e)
  end)

  it("leaves client:request's raw answer alone", function()
    local status, _, body = client:request("GET", "/lockers")
    assert.are.equal(200, status)
    assert.are.equal(BODIES.lockers, body)
  end)
end)

describe("typed values, one by one #unit", function()
  it("gives int fields integers only for whole numbers within +-2^53", function()
    local to_int = typed.to_int
    local n = to_int("9007199254740991")
    assert(is_int(n) and n == 2 ^ 53 - 1)
    assert.are.equal("12345678901234567890", to_int("12345678901234567890")) -- no exact integer on every runtime
    assert.are.equal(2 ^ 60, to_int(2 ^ 60))
    if mtype then assert.are.equal("float", mtype(to_int(2 ^ 60))) end -- no integer it is known to be
    assert.are.equal(-3, to_int("-3.0e0"))
    assert(is_int(to_int("-3.0e0")))
    assert.are.equal("3.5", to_int("3.5"))
    assert.are.equal("", to_int(""))
    assert.are.equal("-", to_int("-"))
    assert.are.equal("1e", to_int("1e"))
    assert.are.equal("inf", to_int("inf"))
    assert.are.equal("nan", to_int("nan"))
    local nan = 0 / 0
    local v = to_int(nan)
    assert(v ~= v)
    assert.are.equal(math.huge, to_int(math.huge))
  end)

  it("gives float fields floats, and leaves what is not a number's text", function()
    local to_float = typed.to_float
    assert(is_float(to_float(0)))
    assert(is_float(to_float("-0")))
    assert(is_float(to_float("12")))
    assert.are.equal(12, to_float("12"))
    assert.are.equal("1e999", to_float("1e999"))
    assert.are.equal("3,5", to_float("3,5"))
    assert.are.equal(true, to_float(true))
  end)

  it("gives string fields the decimal text of a number, read back to the same double", function()
    local to_string = typed.to_string
    assert.are.equal("419631107", to_string(419631107))
    assert.are.equal("419631107", to_string(419631107.0))
    assert.are.equal("-55", to_string(-55))
    assert.are.equal("3.659", to_string(3.659))
    assert.are.equal("0.1", to_string(0.1))
    assert.are.equal("1e+300", to_string(1e300))
    for _, x in ipairs { 0.1 + 0.2, 1 / 3, 2 ^ 53 + 2, -1e-7, 123456789.123 } do
      assert.are.equal(x, tonumber(to_string(x)))
    end
    assert.are.equal(json.null, to_string(json.null))
  end)
end)

describe("typed answers, the fast way and the careful way #unit", function()
  local vocabulary = require "kinot.vocabulary"
  -- values a field of each kind may carry that type without a question...
  local GOOD = {
    int = { 0, 1, -7, 419631107, 3.0, -0.0, 2 ^ 53 - 1, -(2 ^ 53 - 1) },
    float = { 0, -55, 3.659, 1e300, -109.5, 0.0, 2 ^ 60 },
    string = { "", "x", "2019-03-13T10:42:39+08:00", "NULL" },
  }
  -- ...and anything else
  local ODD = { "419631107", "3.5", "abc", " 1", "0x1", "1e999", 2.5, 2 ^ 53, -(2 ^ 53), 2 ^ 60, 1e300, true, false,
                json.null, { 1 }, { a = 1 }, 0.1 + 0.2, 12345, "-0", "1e3" }

  local function kind(v) return (mtype and type(v) == "number") and mtype(v) or type(v) end
  local function same(a, b)
    if type(a) == "table" and type(b) == "table" then return true end
    if a ~= a and b ~= b then return true end
    return kind(a) == kind(b) and a == b
  end

  it("types every object the same either way, all fields good or any odd", function()
    local rnd = require("kinot.sim.fleet").rng(20261127)
    local fields = vocabulary.fields.lock
    local names = {}
    for k in pairs(fields) do names[#names + 1] = k end
    table.sort(names)
    for round = 1, 3000 do
      local obj = { unknown = round }
      local odd_at = round % 2 == 0 and rnd(#names) + 1 or nil -- one odd field in half the objects
      for i, k in ipairs(names) do
        local pool = i == odd_at and ODD or GOOD[fields[k]]
        if rnd(8) > 0 then obj[k] = pool[rnd(#pool) + 1] end
      end
      local copy = {}
      for k, v in pairs(obj) do copy[k] = v end
      -- a page of one object (the fast way first, on Lua 5.4), and the field table's own typer (careful only)
      local page = typed.answer({ objects = { obj } }, "/lockers").objects[1]
      local one = typed.object(copy, fields)
      for _, k in ipairs(names) do
        assert(same(page[k], one[k]), k .. ": " .. kind(page[k]) .. " " .. tostring(page[k]) .. " vs " ..
          kind(one[k]) .. " " .. tostring(one[k]) .. " (round " .. round .. ")")
      end
      assert.are.equal(round, page.unknown)
    end
  end)

  it("types every object of a page when one value of its last is odd", function()
    local objs = {}
    for i = 1, 50 do objs[i] = { sn = i + 0.0, rs_si = -i, voltage = 3, bt_mac = i } end
    objs[50].locked = "abc"
    typed.answer({ objects = objs }, "/lockers")
    for i = 1, 50 do
      int(objs[i], "sn", i)
      float(objs[i], "rs_si", -i)
      float(objs[i], "voltage", 3)
      str(objs[i], "bt_mac", tostring(i))
    end
    assert.are.equal("abc", objs[50].locked)
  end)
end)

-- --------------------------------------------------------------- the simulator's answers

describe("typed answers from the simulator #sim", function()
  local sim, client
  setup(function()
    sim = H.sim { locks = 150, sensors = 120, dtus = 2, command_pace = 0.02 }
    client = sim.client()
  end)
  teardown(function()
    if client then client:close() end
    if sim then sim.stop() end
  end)

  local function check_device(d, ints)
    for _, k in ipairs(LOCK) do float(d, k) end
    for _, k in ipairs(ints) do int(d, k) end
    str(d, "updated_at")
  end

  it("gives floats for every float field, whole or not, on every page and device", function()
    local whole = 0
    local page = assert(client:lockers { limit = 100 })
    int(page, "count", 150)
    for _, d in ipairs(page.objects) do
      check_device(d, LOCK_INTS)
      str(d, "bt_match_code")
      str(d, "bt_mac")
      if d.rs_si == math.floor(d.rs_si) then whole = whole + 1 end
    end
    local n = 0
    for d in client:each_sensor { limit = 50, concurrency = 2 } do
      check_device(d, SENSOR_INTS)
      if d.rs_si == math.floor(d.rs_si) then whole = whole + 1 end
      n = n + 1
    end
    assert.are.equal(120, n)
    assert.is_true(whole > 0, "the fleet should have whole rs_si values to type")
    check_device(assert(client:locker(419600001)), LOCK_INTS)
    check_device(assert(client:sensor(419800001)), SENSOR_INTS)
    local d = assert(client:dtu_device(644200001))
    for _, k in ipairs { "sn", "hw", "sw", "firmware" } do int(d, k) end
  end)

  it("gives a failed command its reason (the simulator's command answer carries it once final)", function()
    assert(sim.call("POST", "/config", { failure_rate = 1 }))
    local cmd = assert(client:send_command(419600001, { key = "handle", value = 1 }))
    int(cmd, "sn", 419600001)
    int(cmd, "command", 1)
    cmd = assert(client:wait_command(cmd.guid, { timeout = 10, interval = 0.02 }))
    assert.are.equal("failed", cmd.command_status)
    str(cmd, "reason", "device did not acknowledge")
    assert(sim.call("POST", "/config", { failure_rate = 0 }))
    cmd = assert(client:wait_command(assert(client:send_command(419600002, { key = "handle", value = 1 })).guid,
      { timeout = 10, interval = 0.02 }))
    assert.are.equal("succeeded", cmd.command_status)
    assert.are.equal("NULL", cmd.reason) -- the platform's word for none, as it came
  end)
end)

-- --------------------------------------------------------------- the CLI

describe("kinot command send --wait #sim #cli", function()
  local sim, env
  setup(function()
    sim = H.sim { locks = 3, sensors = 3, dtus = 1, command_pace = 0.02, failure_rate = 1 }
    env = string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s", sim.app_key, sim.app_secret, sim.endpoint)
  end)
  teardown(function() if sim then sim.stop() end end)

  it("shows a failed command's reason, as a line and in --json", function()
    local out, err, rc = kinot_cli("command send 419600001 --value 1 --wait --wait-timeout 10", env)
    assert.are.equal(3, rc, err)
    assert.matches("status:%s+failed", out)
    assert.matches("reason:%s+device did not acknowledge", out)
    out, err, rc = kinot_cli("--json command send 419600002 --value 1 --wait --wait-timeout 10", env)
    assert.are.equal(3, rc, err)
    assert.are.equal("device did not acknowledge", json.decode(out).reason)
  end)

  it("shows no reason for a command that succeeded (the platform's \"NULL\")", function()
    assert(sim.call("POST", "/config", { failure_rate = 0 }))
    local out, err, rc = kinot_cli("command send 419600003 --value 1 --wait --wait-timeout 10", env)
    assert.are.equal(0, rc, err)
    assert.matches("status:%s+succeeded", out)
    assert.is_nil(out:find("reason", 1, true))
    assert.is_nil(out:find("NULL", 1, true))
  end)
end)
