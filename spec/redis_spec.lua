-- kinot.redis, the SDK's own RESP2 client, against a real redis-server
-- started on a free port by this spec: URLs, AUTH and SELECT, errors in
-- the SDK's table and never the password, timeouts, a server restart,
-- and the cosocket path with nginx's keepalive pool.
local kredis = require "kinot.redis"
local core = require "kinot.core"
local R = require "redis_server"
local H = require "helpers"

local PASSWORD = "s3cr3t-Pa55/word"

describe("redis URLs #unit", function()
  it("reads host, port, db, password and user, percent-decoded", function()
    local o = kredis.parse("redis://:p%40ss@10.0.0.5:6380/3")
    assert.are.same({ host = "10.0.0.5", port = 6380, db = 3, password = "p@ss" }, o)
    o = kredis.parse("redis://app:pw@cache.local")
    assert.are.same({ host = "cache.local", port = 6379, db = 0, username = "app", password = "pw" }, o)
    o = kredis.parse("redis://[::1]:7000/")
    assert.are.same({ host = "::1", port = 7000, db = 0 }, o)
  end)

  it("refuses a wrong URL, naming it without its password", function()
    for _, url in ipairs { "http://:" .. PASSWORD .. "@h:1", "redis://:" .. PASSWORD .. "@h:99999",
                           "redis://:" .. PASSWORD .. "@h:1/x", "redis://" .. PASSWORD .. "@h",
                           "redis://:" .. PASSWORD .. "@",
                           -- (attack 11) no scheme, or a mistyped one: no "scheme://" to redact after
                           ":" .. PASSWORD .. "@h:6379", "redis:/:" .. PASSWORD .. "@h", "redis//:" .. PASSWORD .. "@h" } do
      local ok, err = pcall(kredis.new, url)
      assert.is_false(ok, url)
      assert.is_true(require("kinot.errors").is_misuse(err), tostring(err))
      assert.matches("^kinot: redis", tostring(err))
      assert.is_nil(tostring(err):find(PASSWORD, 1, true), tostring(err))
    end
    assert.has_error(function() kredis.new(42) end, "kinot: redis must be a redis:// URL string")
    assert.has_error(function() kredis.new("redis://h", { timeout = 0 }) end,
      "kinot: redis option timeout must be a positive number")
  end)
end)

describe("kinot.redis against redis-server #redis", function()
  local r
  setup(function() r = R.start { password = PASSWORD, db = 3 } end)
  teardown(function() r.stop() end)

  it("authenticates, selects the URL's database and speaks RESP2", function()
    local c = r.client()
    assert.are.equal("OK", c:call("SET", "k", "v"))
    assert.are.equal("v", c:call("GET", "k"))
    assert.are.equal(kredis.null, c:call("GET", "missing"))
    assert.are.equal(kredis.null, c:call("SET", "k", "w", "NX"))
    assert.are.equal(5, c:call("INCRBY", "n", 5))
    assert.are.equal(3, c:call("CLIENT", "INFO"):match("db=(%d+)") + 0)
    local arr = c:call("EVAL", "return {1, 'two', {3}, redis.error_reply('X bad')}", 0)
    assert.are.equal(1, arr[1])
    assert.are.equal("two", arr[2])
    assert.are.same({ 3 }, arr[3])
    assert.are.equal("X bad", tostring(arr[4]))
    local big = string.rep("x\r\n", 100000)
    assert.are.equal("OK", c:call("SET", "big", big))
    assert.are.equal(big, c:call("GET", "big"))
    -- db 0 does not hold what db 3 holds
    local c0 = kredis.new((r.url:gsub("/3$", "/0")))
    assert.are.equal(kredis.null, c0:call("GET", "k"))
    c:close()
    c0:close()
  end)

  it("runs scripts by their SHA, loading them again when the server lost them", function()
    local c = r.client()
    local script = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
    assert.are.equal(2, c:eval(script, 1, "ev", 2))
    assert.are.equal(4, c:eval(script, 1, "ev", 2))
    assert.are.equal("OK", c:call("SCRIPT", "FLUSH"))
    assert.are.equal(6, c:eval(script, 1, "ev", 2))
    c:close()
  end)

  it("returns server errors as kind redis with the code, and keeps the connection", function()
    local c = r.client()
    local v, err = c:call("XGROUP", "CREATE", "nostream", "g", "0")
    assert.is_nil(v)
    assert.are.equal("redis", err.kind)
    assert.are.equal("ERR", err.code)
    assert.matches("^kinot: redis: redis 127%.0%.0%.1:%d+: ", tostring(err))
    assert.are.equal("PONG", c:call("PING"))
    c:close()
  end)

  it("never shows the password: a wrong one, none at all", function()
    local wrong = kredis.new("redis://:not-" .. PASSWORD .. "@127.0.0.1:" .. r.port)
    local v, err = wrong:call("PING")
    assert.is_nil(v)
    assert.are.equal("redis", err.kind)
    assert.are.equal("WRONGPASS", err.code)
    assert.is_nil(tostring(err):find(PASSWORD, 1, true), tostring(err))
    local none = kredis.new("redis://127.0.0.1:" .. r.port)
    v, err = none:call("PING")
    assert.is_nil(v)
    assert.are.equal("NOAUTH", err.code)
    assert.is_nil(tostring(err):find(PASSWORD, 1, true))
  end)

  it("refuses a reply over its max_reply, then serves the next call on a fresh connection", function()
    local c = r.client { max_reply = 1024 }
    assert.are.equal("OK", c:call("SET", "big", string.rep("x", 2048)))
    local v, err = c:call("GET", "big")
    assert.is_nil(v)
    assert.are.equal("too_large", err.kind)
    assert.matches("1024-byte cap (max_reply)", err.message, 1, true)
    assert.are.equal(1000, #c:call("GETRANGE", "big", 0, 999))
    c:close()
  end)

  it("reconnects once when its kept connection died (a restarted server)", function()
    local c = r.client()
    assert.are.equal("PONG", c:call("PING"))
    r.restart()
    assert.are.equal("PONG", c:call("PING"))
    c:close()
  end)
end)

describe("kinot.redis pipeline against redis-server #redis", function()
  local r
  setup(function() r = R.start { password = PASSWORD } end)
  teardown(function() r.stop() end)

  it("sends many commands in one round trip, replies in order; a refused one is a ReplyError, the others ran", function()
    local c = r.client()
    local v = assert(c:pipeline { { "SET", "p1", "a" }, { "INCR", "p1" }, { "SET", "p2", 42 }, { "GET", "p2" },
                                  { "GET", "missing" } })
    assert.are.equal("OK", v[1])
    assert.are.equal(kredis.ReplyError, getmetatable(v[2]))
    assert.are.equal("ERR", v[2].code)
    assert.matches("not an integer", tostring(v[2]))
    assert.are.same({ "OK", "42" }, { v[3], v[4] })
    assert.are.equal(kredis.null, v[5])
    -- the connection is still good after the refused one
    assert.are.equal("a", c:call("GET", "p1"))
    local big = {}
    for i = 1, 5000 do big[i] = { "RPUSH", "plist", i } end
    v = assert(c:pipeline(big))
    assert.are.equal(5000, #v)
    assert.are.equal(5000, v[5000])
    c:close()
  end)

  it("replaces a kept connection found dead once (a restarted server), and refuses an empty list", function()
    local c = r.client()
    assert(c:pipeline { { "PING" } })
    r.restart()
    local v, err = c:pipeline { { "SET", "after", "1" }, { "GET", "after" } }
    assert(v, err)
    assert.are.same({ "OK", "1" }, v)
    assert.has_error(function() c:pipeline {} end, "kinot: redis pipeline needs a list of commands")
    assert.has_error(function() c:pipeline { "PING" } end)
    c:close()
  end)
end)

describe("kinot.redis failures #unit", function()
  it("says network, retryable, when nothing listens; never the password", function()
    local port = require("kinot.sim.launcher").free_port()
    local c = kredis.new("redis://:" .. PASSWORD .. "@127.0.0.1:" .. port, { connect_timeout = 0.5 })
    local v, err = c:call("PING")
    assert.is_nil(v)
    assert.are.equal("network", err.kind)
    assert.is_true(err.retryable)
    assert.matches("127.0.0.1:" .. port, err.message, 1, true)
    assert.is_nil(tostring(err):find(PASSWORD, 1, true))
  end)

  it("says timeout when the server accepts and never answers", function()
    local socket = require "socket"
    local srv = assert(socket.bind("127.0.0.1", 0))
    local _, port = srv:getsockname()
    local ok, e = pcall(function()
      local c = kredis.new("redis://127.0.0.1:" .. port, { timeout = 0.3 })
      local t0 = core.monotonic()
      local v, err = c:call("PING") -- the kernel accepts; nobody reads
      assert.is_nil(v)
      assert.are.equal("timeout", err.kind)
      assert.is_true(core.monotonic() - t0 < 2)
    end)
    srv:close()
    assert(ok, e)
  end)
end)

describe("kinot.redis inside nginx (cosockets, keepalive pool) #redis #nginx", function()
  local r, ng
  setup(function()
    r = R.start { password = PASSWORD, db = 2 }
    ng = H.nginx {
      http = [[
        init_by_lua_block {
          red = require("kinot.redis").new("]] .. r.url .. [[")
          bad = require("kinot.redis").new("redis://:wrong-]] .. PASSWORD .. "@127.0.0.1:" .. r.port .. [[")
        }
      ]],
      server = [[
        location = /id { content_by_lua_block {
          local id = assert(red:call("CLIENT", "ID"))
          assert(red:call("INCR", "hits"))
          ngx.say(id)
        } }
        location = /bad { content_by_lua_block {
          local v, err = bad:call("PING")
          ngx.say(tostring(err))
        } }
      ]],
    }
  end)
  teardown(function()
    if ng then ng.stop() end
    r.stop()
  end)

  it("reuses its connection from the pool, already authenticated", function()
    local a = H.raw("GET", ng.url .. "/id").body
    local b = H.raw("GET", ng.url .. "/id").body
    assert.are.equal(a, b)
    local c = r.client()
    assert.are.equal("2", c:call("GET", "hits"))
    c:close()
  end)

  it("keeps the password out of its errors", function()
    local body = H.raw("GET", ng.url .. "/bad").body
    assert.matches("WRONGPASS", body)
    assert.is_nil(body:find(PASSWORD, 1, true))
    assert.is_nil(ng.log():find(PASSWORD, 1, true))
  end)
end)
