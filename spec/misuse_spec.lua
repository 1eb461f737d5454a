-- A careless caller (issue 11 §4-§7): misuse raises one class of error,
-- naming the argument, before anything reaches the network; runtime
-- failures come back as error objects; both print "kinot: " once.
local kinot = require "kinot"
local core = require "kinot.core"
local errors = require "kinot.errors"
local json = require "kinot.json"
local curl_transport = require "kinot.transport.curl"
local H = require "helpers"

local NAN, INF = 0 / 0, math.huge

-- raises misuse (by type), and its message names `what`
local function misuse(fn, what)
  local ok, e = pcall(fn)
  assert.is_false(ok, "no error (expected one naming " .. what .. ")")
  assert.is_true(errors.is_misuse(e), "not a misuse error: " .. tostring(e))
  local s = tostring(e)
  assert.are.equal(1, select(2, s:gsub("kinot: ", "")), s)
  assert.matches("^kinot: ", s)
  assert.is_truthy(s:find(what, 1, true), s .. " does not name " .. what)
  return e
end

describe("a careless caller #sim", function()
  local sim, c, sent, curl
  local function recording(req)
    sent[#sent + 1] = req
    local res, kind, msg, not_sent = curl.send(req)
    if not res then return nil, { kind = kind, message = msg, not_sent = not_sent } end
    return res
  end
  setup(function()
    sim = H.sim { locks = 30, sensors = 12, dtus = 2, command_pace = 0.02 }
    curl = curl_transport.new { verify_tls = true, max_body = 1048576 }
    c = sim.client { transport = recording, retries = 0 }
  end)
  teardown(function()
    c:close()
    curl.close()
    sim.stop()
  end)
  before_each(function() sent = {} end)

  describe("§4 POSTs without a body, and bodies that are not JSON #nginx", function()
    it("signs every header of a POST (or PUT, PATCH, DELETE) without a body, over libcurl", function()
      local plain = sim.client()
      for _, m in ipairs { "POST", "PUT", "PATCH", "DELETE" } do
        for _, path in ipairs { "/notifications", "/commands", "/test/notifications" } do
          local status, headers = plain:request(m, path)
          assert.is_number(status, m .. " " .. path)
          local gw = headers["x-ca-error-message"] or ""
          assert.is_nil(gw:find("Signature", 1, true), m .. " " .. path .. ": " .. gw)
        end
      end
      -- and after a request with a body, on the same warm connection
      assert.is_truthy(plain:send_command(419600001, { key = "handle", value = 1 }))
      local status, headers = plain:request("POST", "/notifications")
      assert.is_number(status)
      assert.is_nil((headers["x-ca-error-message"] or ""):find("Signature", 1, true))
      plain:close()
    end)

    it("signs every header of a POST without a body over the resty transport too", function()
      local ng = H.nginx {
        server = [[
          location = /t { content_by_lua_block {
            local kinot = require "kinot"
            local errors = require "kinot.errors"
            local c = kinot.new { app_key = ngx.var.arg_key, app_secret = ngx.var.arg_secret,
                                  endpoint = ngx.var.arg_endpoint, transport = "resty", retries = 0 }
            for _, m in ipairs { "POST", "PUT", "PATCH", "DELETE" } do
              for _, path in ipairs { "/notifications", "/commands", "/test/notifications" } do
                local status, headers = c:request(m, path)
                ngx.say(m, " ", path, " ", tostring(status), " ", tostring(headers and headers["x-ca-error-message"]))
              end
            end
            local ok, e = pcall(c.send_command, c, 419600001, { key = "handle", value = 0 / 0 })
            ngx.say("nan: ", tostring(ok), " ", tostring(errors.is_misuse(e)), " ", tostring(e))
          } }
        ]],
      }
      local ok, res = pcall(H.raw, "GET", string.format("%s/t?key=%s&secret=%s&endpoint=%s", ng.url, sim.app_key,
        sim.app_secret, sim.endpoint))
      ng.stop()
      assert(ok, res)
      assert.are.equal(200, res.status)
      local n = 0
      for line in res.body:gmatch("[^\n]+") do
        if not line:match("^nan") then
          n = n + 1
          assert.matches("^%u+ /[%w/]+ %d+ ", line)
          assert.is_nil(line:find("Signature", 1, true), line)
        end
      end
      assert.are.equal(12, n)
      assert.matches("nan: false true kinot: parameter.value cannot be sent as JSON", res.body, 1, true)
    end)

    it("raises, naming the value, for a command parameter JSON cannot carry, and sends nothing", function()
      local before = sim.counters().commands_created
      local co = coroutine.create(function() end)
      for _, bad in ipairs { { NAN, "nan" }, { INF, "inf" }, { -INF, "-inf" }, { print, "function" },
                             { co, "thread" }, { io.stdout, "userdata" } } do
        local e = misuse(function() c:send_command(419600001, { key = "handle", value = bad[1] }) end, "parameter.value")
        assert.matches(bad[2], tostring(e), 1, true)
      end
      misuse(function() c:send_command(419600001, { key = print, value = 1 }) end, "parameter.key")
      assert.are.equal(0, #sent)
      assert.are.equal(before, sim.counters().commands_created)
    end)

    it("raises for a request body JSON cannot carry, naming where in the body", function()
      misuse(function() c:request("POST", "/commands", { body = { sn = 1, parameter = { value = NAN } } }) end,
        "body.parameter.value")
      misuse(function() c:request("POST", "/commands", { body = { list = { 1, 2, INF } } }) end, "body.list[3]")
      -- tables that are neither an array nor an object
      misuse(function() c:request("POST", "/x", { body = { 1, 2, a = 3 } }) end, "body")
      misuse(function() c:request("POST", "/x", { body = { [1] = 1, [3] = 3 } }) end, "body")
      misuse(function() c:request("POST", "/x", { body = { [true] = 1 } }) end, "body")
      misuse(function() c:request("POST", "/x", { body = { 1, 2, [4] = 4 } }) end, "body")
      misuse(function() c:request("POST", "/x", { body = { [1.5] = 1 } }) end, "body")
      local deep = {}
      for _ = 1, 1100 do deep = { a = deep } end
      misuse(function() c:request("POST", "/x", { body = deep }) end, "nested deeper")
      local loop = {}
      loop.self = loop
      misuse(function() c:request("POST", "/x", { body = loop }) end, "body.self")
      assert.are.equal(0, #sent)
      -- what JSON can carry still goes: null, empty tables, nested lists
      assert.are.equal('{"a":null}', json.encode { a = json.null })
      assert.are.equal('[1,2,[3]]', json.encode { 1, 2, { 3 } })
      assert.is_string(json.encode {})
    end)
  end)

  describe("§5 integers the reference types as int", function()
    local function query_of(req, name) return req.url:match("[?&]" .. name .. "=([^&]*)") end

    it("sends an integral float as an integer", function()
      local p = assert(c:lockers { offset = 2.0, limit = 10.0 })
      assert.are.equal("2", query_of(sent[1], "offset"))
      assert.are.equal("10", query_of(sent[1], "limit"))
      if math.type then
        assert.are.equal("integer", math.type(p.offset))
        assert.are.equal("integer", math.type(p.limit))
      end
      assert(c:sensors { limit = 100.0 })
      assert.are.equal("100", query_of(sent[2], "limit"))
      local n = 0
      for _ in c:each_locker { limit = 10.0 } do n = n + 1 end
      assert.are.equal(30, n)
      for i = 3, #sent do assert.are.equal("10", query_of(sent[i], "limit")) end
      assert.are.equal(419600005, assert(c:locker(419600005.0)).sn)
      assert.matches("/lockers/419600005$", sent[#sent].url)
    end)

    it("raises for any other number, naming the argument, and sends nothing", function()
      for _, v in ipairs { 2.5, INF, -INF, NAN, -1, "2", true } do
        misuse(function() c:lockers { offset = v } end, "offset")
      end
      for _, v in ipairs { 10.5, INF, NAN, 9, 101, "10" } do
        misuse(function() c:sensors { limit = v } end, "limit")
        misuse(function() c:each_locker { limit = v } end, "limit")
      end
      for _, v in ipairs { 1.5, INF, -INF, NAN, 0, -3, 2 ^ 53, 1e300, "1.0", "12a", "" } do
        misuse(function() c:locker(v) end, "sn")
        misuse(function() c:sensor(v) end, "sn")
        misuse(function() c:dtu_device(v) end, "sn")
        misuse(function() c:send_command(v, { key = "handle", value = 1 }) end, "sn")
        misuse(function() c:test_notification(v) end, "sn")
        misuse(function() c:freeze_sensor(v) end, "sn")
      end
      for _, v in ipairs { 1.5, INF, NAN, 0 } do
        misuse(function() c:each_locker { concurrency = v } end, "concurrency")
      end
      assert.are.equal(0, #sent)
    end)

    -- (attack 11) client:request's query took NaN and 2.5 as they printed
    -- ("-nan", "2.5"), and 10.0 as "10.0" on Lua 5.4
    it("raw requests: a query number is an integer, sent as one, or raises", function()
      for _, v in ipairs { NAN, INF, 2.5 } do
        misuse(function() c:request("GET", "/lockers", { query = { { "offset", 0 }, { "limit", v } } }) end, "limit")
      end
      assert.are.equal(0, #sent)
      local q = { { "offset", 0.0 }, { "limit", 10.0 } }
      assert.are.equal(200, (c:request("GET", "/lockers", { query = q })))
      assert.are.equal("0", query_of(sent[1], "offset"))
      assert.are.equal("10", query_of(sent[1], "limit"))
      assert.are.equal(10.0, q[2][2]) -- the caller's table is left as it was
    end)

    -- (attack 11) interval = 0 polled the platform without a pause until
    -- the timeout (60 s by default): a flood of GETs, throttled
    it("raises for a wait_command interval under 0.01 s, before polling", function()
      for _, v in ipairs { 0, 0.001, NAN, INF, -1 } do
        misuse(function() c:wait_command("0123456789ABCDEF0123456789ABCDEF", { interval = v, timeout = 0.2 }) end,
          "interval")
      end
      assert.are.equal(0, #sent)
    end)

    -- (attack 11) timeout = 0, or under a millisecond, was no deadline at
    -- all for libcurl (a request to a peer that never answers hung for
    -- good) and an instant one for resty; max_body = 0 no cap for libcurl
    -- and "everything too large" for resty; retries = 1.5 gave 3 attempts
    it("raises for client options that mean one thing to libcurl and another to resty", function()
      local base = { app_key = "k", app_secret = "s", endpoint = "http://127.0.0.1:9/v1" }
      local function new(k, v)
        local o = {}
        for a, b in pairs(base) do o[a] = b end
        o[k] = v
        return kinot.new(o)
      end
      for _, v in ipairs { 0, 0.0004, NAN, INF, -1 } do
        misuse(function() new("timeout", v) end, "timeout")
        misuse(function() new("connect_timeout", v) end, "connect_timeout")
      end
      for _, v in ipairs { 1.5, NAN, INF, -1 } do misuse(function() new("retries", v) end, "retries") end
      for _, v in ipairs { 0, 0.5, 1024.5, NAN, INF } do misuse(function() new("max_body", v) end, "max_body") end
      local ok = new("timeout", 0.001)
      ok:close()
      new("retries", 0):close()
      new("max_body", 1):close()
    end)
  end)

  describe("§6 a closed client", function()
    -- arguments that would be right on an open client
    local ARGS = {
      request = { "GET", "/lockers" }, lockers = {}, sensors = {}, locker = { 419600001 }, sensor = { 419800001 },
      dtu_device = { 644200001 }, each_locker = {}, each_sensor = {},
      send_command = { 419600001, { key = "handle", value = 1 } }, command = { "abc" }, wait_command = { "abc" },
      reset_bt_match_code = { 419600001 }, activate_sensor = { 419800001 }, freeze_sensor = { 419800001 },
      set_notifications = { { device_type = 18, status_changed_callback_url = "http://127.0.0.1:1/cb" } },
      notifications = { 18 }, test_notification = { 419600001 },
      send_commands = { { 419600001 }, { parameter = { value = 1 } } }, wait_commands = { { "abc" } },
    }

    it("raises \"kinot: client is closed\" from every public method, whatever the arguments", function()
      local closed = sim.client { transport = recording }
      closed:close()
      closed:close() -- idempotent
      local n = 0
      for name, fn in pairs(getmetatable(closed)) do
        if type(fn) == "function" and not name:match("^_") and name ~= "new" and name ~= "close" then
          n = n + 1
          local args = ARGS[name]
          assert.is_table(args, "the spec has no arguments for the public method " .. name)
          local e = misuse(function() return fn(closed, (table.unpack or unpack)(args)) end,
            "client is closed")
          assert.are.equal("kinot: client is closed", tostring(e), name)
          -- wrong arguments on a closed client: still "closed", the first thing wrong
          misuse(function() return fn(closed) end, "client is closed")
        end
      end
      assert.is_true(n >= 17)
      assert.are.equal(0, #sent)
    end)

    it("raises \"kinot: client is closed\" from an iterator whose client was closed under it", function()
      for _, conc in ipairs { 1, 3 } do
        local cl = sim.client()
        local it = cl:each_locker { limit = 10, concurrency = conc }
        assert.is_table(it())
        cl:close()
        local e = misuse(function() for _ in it do end end, "client is closed")
        assert.are.equal("kinot: client is closed", tostring(e))
      end
    end)
  end)

  describe("§7 one error convention, decided by type", function()
    it("raises one class of misuse from Lua and from the C core, \"kinot: \" once", function()
      local s = core.signer("secret")
      misuse(function() s:sign { method = "GET", path = "/", signature_method = "MD5" } end, "signature_method")
      misuse(function() s:sign { method = "GET", path = "/", query = { "notapair" } } end, "query[1]")
      misuse(function() s:sign { method = "GET", path = "/", query = 3 } end, "query")
      misuse(function() s:sign { method = "GET", path = "/", headers = { [1] = "x" } } end, "header names")
      misuse(function() s:sign { method = "GET", path = "/a\r\n" } end, "path contains CR or LF")
      misuse(function() s:sign { method = {}, path = "/" } end, "method must be a string")
      s:close()
      misuse(function() s:sign { method = "GET", path = "/" } end, "signer is closed")
      local http = core.http()
      misuse(function() http:request { method = "GET" } end, "request.url")
      misuse(function() http:request { method = "GET", url = "http://127.0.0.1:1/", timeout = -1 } end, "timeout")
      for _, v in ipairs { -1, NAN, INF, "soon" } do
        misuse(function() http:request { method = "GET", url = "http://127.0.0.1:1/", connect_timeout = v } end,
          "connect_timeout")
        misuse(function() http:request { method = "GET", url = "http://127.0.0.1:1/", max_body = v } end, "max_body")
      end
      misuse(function() http:request { method = "GET", url = "http://127.0.0.1:1/", body = {} } end, "request.body")
      misuse(function() http:request { method = "GET", url = "http://127.0.0.1:1/", headers = 1 } end, "request.headers")
      misuse(function() http:request_many(1) end, "request_many")
      http:close()
      misuse(function() http:request { method = "GET", url = "http://x/" } end, "closed")
      misuse(function() core.json_decode({}) end, "JSON text")
      misuse(function() core.content_md5(nil) end, "body")
      misuse(function() core.sleep("x") end, "sleep")
      misuse(function() core.signer(nil) end, "secret")
      misuse(function() kinot.sign_request { method = "GET", path = "/" } end, "app_secret")
      misuse(function() c:locker(0) end, "sn")
      misuse(function() kinot.new { app_key = "k" } end, "app_secret")
    end)

    it("records where the caller made the mistake, without counting stack levels", function()
      local e = misuse(function() c:locker("x") end, "sn")
      assert.matches("misuse_spec%.lua:%d+$", e.where)
      e = misuse(function() kinot.new { app_key = "k", app_secret = "s", timeout = -1 } end, "timeout")
      assert.matches("misuse_spec%.lua:%d+$", e.where)
      e = misuse(function() c:each_locker { concurrency = 0 } end, "concurrency")
      assert.matches("misuse_spec%.lua:%d+$", e.where)
    end)

    it("keeps runtime failures as error objects of their own class, prefixed once", function()
      local got, err = c:locker(419699999)
      assert.is_nil(got)
      assert.is_true(errors.is(err))
      assert.is_false(errors.is_misuse(err))
      assert.matches("^kinot: not_found: ", tostring(err))
      assert.are.equal(1, select(2, tostring(err):gsub("kinot: ", "")))
      local m = errors.misuse_object("x")
      assert.is_false(errors.is(m))
      assert.is_true(errors.is_misuse(m))
      assert.are.equal("kinot: x", tostring(m))
    end)

    it("has no raise in the C binding but through its two constructors, in every binding file", function()
      -- the binding files: every src/ file that includes a Lua header; they
      -- are src/lua_*.c and kinot_core.c, and no other file includes one
      local p = io.popen("cd " .. H.root .. " && ls src/*.c src/*.h")
      local names = {}
      for name in p:lines() do names[#names + 1] = name end
      p:close()
      local n, bindings = 0, 0
      for _, name in ipairs(names) do
        local f = assert(io.open(H.root .. "/" .. name))
        local src = f:read("*a")
        f:close()
        local lua = src:find("#include%s*[<\"]lua%.h[>\"]") or src:find("#include%s*[<\"]lauxlib%.h[>\"]")
          or src:find("#include%s*\"lua_binding%.h\"")
        local binding = name:match("^src/lua_[%w_]+%.[ch]$") or name == "src/kinot_core.c"
        assert.are.equal(not not binding, not not lua, name .. (binding and " is a binding file that includes no Lua header"
          or " is not a binding file (src/lua_*.c, kinot_core.c) but includes a Lua header"))
        if lua and name:match("%.c$") then
          bindings = bindings + 1
          for line in src:gmatch("[^\n]+") do
            if line:find("luaL_error%s*%(") or line:find("lua_error%s*%(") then
              n = n + 1
              assert.is_truthy(line:find("return lua_error%(L%); /%* the funnel"),
                "a raise outside the funnel in " .. name .. ": " .. line)
            end
          end
        end
      end
      assert.are.equal(1, n) -- the funnel itself, in lua_binding.c
      assert.is_true(bindings >= 8, "binding files found: " .. bindings)
    end)
  end)
end)

describe("validate.options: an option nobody reads is refused #unit", function()
  local validate = require "kinot.validate"

  it("names every unknown key, sorted, and the known ones", function()
    local ok, err = pcall(validate.options, { max_age = 1, bogus = 2, secret = "s" },
      validate.set { "secret", "sign_rule" }, "callback.verify")
    assert.is_false(ok)
    assert.is_true(errors.is_misuse(err))
    assert.are.equal('callback.verify: unknown options "bogus", "max_age" (known: secret, sign_rule)', err.message)
  end)

  it("passes nil and a table of known keys; refuses a non-table", function()
    local known = validate.set { "a" }
    assert.is_nil(validate.options(nil, known, "f"))
    local t = { a = 1 }
    assert.are.equal(t, validate.options(t, known, "f"))
    local ok, err = pcall(validate.options, "a", known, "f")
    assert.is_false(ok)
    assert.are.equal("f: options must be a table (got string)", err.message)
  end)
end)
