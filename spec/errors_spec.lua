-- One Lua error funnel (issue 18): every misuse the SDK raises outside the
-- C core is an errors.misuse object, whichever public module raises it;
-- its `where` names the caller's line on both runtimes; inside nginx an
-- uncaught one is logged readably (lua-nginx-module logs a table error as
-- "unknown reason" / "unknown error").
local errors = require "kinot.errors"
local H = require "helpers"

local getinfo = debug.getinfo

-- raises a misuse object whose where is this file at `line`
local function misuse_at(line, fn, what)
  local ok, e = pcall(fn)
  assert.is_false(ok, "no error (expected one naming " .. what .. ")")
  assert.is_true(errors.is_misuse(e), "not a misuse object: " .. tostring(e))
  assert.matches("^kinot: ", tostring(e))
  assert.is_truthy(tostring(e):find(what, 1, true), tostring(e) .. " does not name " .. what)
  assert.are.equal("spec/errors_spec.lua:" .. line, e.where)
  return e
end

local function here() return getinfo(2, "l").currentline end

describe("one Lua error funnel #unit", function()
  it("leaves no plain \"kinot: \" string raise in lua/kinot", function()
    -- core_loader raises
    -- a string on purpose: a core that will not load leaves no error classes
    -- (they live in that core), and require's own failures are strings
    local p = io.popen("cd " .. H.root .. " && grep -rn 'error(\"kinot:\\|error(string.format(\"kinot:' lua/kinot" ..
      " | grep -v '^lua/kinot/core_loader.lua:'")
    local found = p:read("*a")
    p:close()
    assert.are.equal("", found)
  end)

  it("raises a misuse object, where = the caller's line, from each public module", function()
    local kinot = require "kinot"
    local redis = require "kinot.redis"
    local callback = require "kinot.callback"
    local c = kinot.new { app_key = "k", app_secret = "s", endpoint = "http://127.0.0.1:9" }
    misuse_at(here(), function() kinot.new { app_key = "k" } end, "app_secret")                     -- kinot
    misuse_at(here(), function() c:locker("x") end, "sn")                                           -- client
    misuse_at(here(), function() c:lockers { offset = -1 } end, "offset")                           -- client
    misuse_at(here(), function() kinot.new { app_key = "k", app_secret = "s", transport = "x" } end,
      "transport")                                                                                  -- transport
    misuse_at(here(), function() redis.new(42) end, "redis://")                                     -- redis
    misuse_at(here(), function() redis.new("redis://h", { timeout = 0 }) end, "timeout")            -- redis
    misuse_at(here(), function() redis.new("redis://h"):call() end, "command")                      -- redis
    misuse_at(here(), function() require("kinot.transport.dns").servers { 1 } end, "resolver")       -- dns
    misuse_at(here(), function() require("kinot.vocabulary").coerce("x", 1) end, "coerce")          -- vocabulary
    misuse_at(here(), function() require("kinot.sim.launcher").start { paging = "x" } end, "paging") -- sim
    -- raised by the C core, called through SDK Lua (a tail call on LuaJIT)
    misuse_at(here(), function() kinot.sign_request { method = "GET", path = "/", app_secret = "s", headers = { 1 } } end,
      "header names")                                                                               -- C core
    misuse_at(here(), function() require("kinot.core").signer(nil) end, "secret")                  -- C core
    -- the callback modules (raises that already pass through kinot.redis;
    -- the callback modules' own raises are h-pipeline's, tested there)
    misuse_at(here(), function() callback.handler { secret = "s", dedupe = { redis = 42 } } end, "redis") -- callback
    misuse_at(here(), function() require("kinot.callback.handler").new { secret = "s", inbox = { redis = 42 } } end,
      "redis")                                                                                      -- handler
    misuse_at(here(), function() callback.worker { redis = "http://h", on_status = print } end, "redis") -- worker
    misuse_at(here(), function() require("kinot.callback.worker").new { redis = 42, on_status = print } end,
      "redis")                                                                                      -- worker
    c:close()
  end)

  it("names the caller, not the SDK, however deep in the SDK the raise is", function()
    local redis = require "kinot.redis"
    -- through two SDK frames (kinot.callback.worker -> kinot.redis.parse)
    local e = misuse_at(here(), function() require("kinot.callback.worker").new { redis = 1, on_status = print } end,
      "redis")
    assert.is_nil(e.where:find("lua/kinot/", 1, true))
    -- a caller whose file sits beside the SDK's directory and begins like
    -- it ("kinot_app.lua") is the caller, not the SDK
    local sdk_dir = getinfo(redis.new, "S").source:match("^@(.*)kinot/redis%.lua$")
    assert.is_truthy(sdk_dir)
    local chunk = assert(load("return function() require('kinot.redis').new(42) end", "@" .. sdk_dir .. "kinot_app.lua"))()
    local ok
    ok, e = pcall(chunk)
    assert.is_false(ok)
    assert.are.equal(sdk_dir .. "kinot_app.lua:1", e.where)
  end)
end)

describe("an unknown option raises misuse naming it, in every function taking options #unit", function()
  local kinot = require "kinot"
  local redis = require "kinot.redis"
  local OK = { app_key = "k", app_secret = "s", endpoint = "http://127.0.0.1:9" }
  local function with(extra)
    local o = {}
    for k, v in pairs(OK) do o[k] = v end
    for k, v in pairs(extra) do o[k] = v end
    return o
  end

  it("names the function and the option, and raises before anything is sent", function()
    local c = kinot.new(OK)
    local cases = {
      { "kinot.new", function() kinot.new(with { max_age = 1 }) end },
      { "kinot.new backoff", function() kinot.new(with { backoff = { base = 1, maximum = 2 } }) end },
      { "kinot.new", function() kinot.configure(with { timeuot = 1 }) end },
      { "lockers", function() c:lockers { offset = 0, limt = 10 } end },
      { "sensors", function() c:sensors { page = 1 } end },
      { "each_locker", function() c:each_locker { concurency = 2 } end },
      { "each_sensor", function() c:each_sensor { offset = 3 } end },
      { "wait_command", function() c:wait_command("g-1", { timeout = 1, poll = 1 }) end },
      { "set_notifications", function() c:set_notifications { device_type = 18, url = "http://x" } end },
      { "request", function() c:request("GET", "/lockers", { querry = {} }) end },
      { "sign_request", function() kinot.sign_request { method = "GET", path = "/", app_secret = "s", secret = "s" } end },
      { "transport.new", function() require("kinot.transport").new("curl", { verify = false }) end },
      { "redis.new", function() redis.new("redis://h", { read_timeout = 1 }) end },
      { "sim.launcher.start", function() require("kinot.sim.launcher").start { lock = 3 } end },
    }
    for _, case in ipairs(cases) do
      local ok, e = pcall(case[2])
      assert.is_false(ok, case[1])
      assert.is_true(errors.is_misuse(e), case[1] .. ": " .. tostring(e))
      assert.matches("^kinot: " .. case[1]:gsub("%.", "%%.") .. ": unknown option ", tostring(e))
      assert.matches("errors_spec%.lua:%d+$", e.where)
    end
    c:close()
  end)

  it("accepts every option docs/api.md documents for kinot.new, and documents every one it accepts", function()
    local f = assert(io.open(H.root .. "/docs/api.md"))
    local doc = f:read("*a")
    f:close()
    local rows = assert(doc:match("| option | default | meaning |\n| %-%-%- | %-%-%- | %-%-%- |\n(.-)\n\n"))
    local documented = {}
    for name in rows:gmatch("| `([%w_]+)` |") do documented[#documented + 1] = name end
    table.sort(documented)
    local accepted = {}
    for name in pairs(require("kinot.client").OPTIONS) do accepted[#accepted + 1] = name end
    table.sort(accepted)
    assert.are.same(documented, accepted)
  end)
end)

describe("a misuse inside real nginx is logged readably #nginx", function()
  it("init_by_lua: nginx refuses to start and names the misuse", function()
    local ng = H.nginx {
      http = [[ init_by_lua_block { require("kinot").new { app_key = "k" } } ]],
      may_fail = true,
    }
    finally(function() ng.stop() end)
    assert.is_false(ng.started)
    local said = ng.log() .. ng.stderr()
    assert.is_truthy(said:find("kinot: app_secret is required", 1, true), said)
    assert.is_truthy(said:find("init_by_lua", 1, true), said)
  end)

  it("content_by_lua: the client gets 500, the log names the misuse and where; a caught one is not logged", function()
    local ng = H.nginx {
      server = [[
        location = /uncaught { content_by_lua_block {
          require("kinot.redis").new("redis://h", { timeout = -1 })
        } }
        location = /uncaught_c { content_by_lua_block {
          require("kinot").sign_request { method = "GET", path = "/", app_secret = "s", headers = { 1 } }
        } }
        location = /caught { content_by_lua_block {
          local ok, e = pcall(require("kinot.transport.resty").new, { ca_file = "/x" })
          ngx.say(ok, " ", require("kinot.errors").is_misuse(e), " ", tostring(e))
        } }
      ]],
    }
    finally(function() ng.stop() end)
    local r = H.raw("GET", ng.url .. "/uncaught")
    assert.are.equal(500, r.status)
    local log = ng.log()
    assert.is_truthy(log:find("kinot: redis option timeout must be a positive number", 1, true), log)
    assert.matches("content_by_lua%(nginx%.conf:%d+%):2", log)
    r = H.raw("GET", ng.url .. "/uncaught_c") -- raised by the C core
    assert.are.equal(500, r.status)
    log = ng.log()
    assert.is_truthy(log:find("kinot: header names must be strings", 1, true), log)
    r = H.raw("GET", ng.url .. "/caught")
    assert.are.equal(200, r.status)
    assert.matches("^false true kinot: the resty transport cannot take ca_file", r.body)
    assert.is_nil(ng.log():find("cannot take ca_file", 1, true))
  end)
end)
