-- kinot.redis over TLS (rediss://) against Debian's redis-server started
-- here with --port 0 --tls-port on a free 127.0.0.1 port, with a CA, a
-- server certificate for localhost and 127.0.0.1, and a second CA that
-- signed nothing, all made by openssl in a temporary directory
-- (spec/support/redis_server.lua): outside nginx (LuaSocket + LuaSec),
-- inside a real nginx (cosockets: the callback handler's inbox), and in
-- `kinot worker`.  Every server is stopped by the spec that started it.
local kredis = require "kinot.redis"
local errors = require "kinot.errors"
local core = require "kinot.core"
local callback = require "kinot.callback"
local R = require "redis_server"
local H = require "helpers"

local PASSWORD = "tls-S3cret/Pa55@word"
local SECRET = "5e1f0c9a2b7d4e3f8a6b1c0d9e8f7a6b"

local sh = H.execute

local function no_password(s)
  assert.is_nil(tostring(s):find(PASSWORD, 1, true), "the password shows in: " .. tostring(s))
  assert.is_nil(tostring(s):find("Pa55", 1, true), "the password shows in: " .. tostring(s))
end

-- a call that fails: its error, after checking the SDK's contract
local function refused(c, kind)
  local v, err = c:call("PING")
  assert.is_nil(v)
  assert.is_true(errors.is(err), tostring(err))
  assert.are.equal(kind, err.kind, tostring(err))
  no_password(err)
  return err
end

local function status_body(sn) return H.lock_status(sn, SECRET) end

describe("rediss:// URLs and TLS settings #unit", function()
  it("reads rediss:// as redis:// over TLS; redis:// is unchanged", function()
    assert.are.same({ host = "10.0.0.5", port = 6380, db = 3, password = "p@ss", tls = true },
      kredis.parse("rediss://:p%40ss@10.0.0.5:6380/3"))
    assert.are.same({ host = "h", port = 6379, db = 0 }, kredis.parse("redis://h"))
  end)

  it("refuses TLS settings that cannot be right, naming them and never the password", function()
    local url = "rediss://:" .. PASSWORD .. "@127.0.0.1:1/0"
    local cases = {
      { "redis://:" .. PASSWORD .. "@h:1", { verify_tls = false }, "is for a rediss:// URL" },
      { url, { verify = false }, "verify" },
      { url, { verify_tls = "no" }, "verify_tls must be true or false" },
      { url, { ca_file = "/nonexistent/ca.pem" }, "cannot read /nonexistent/ca.pem" },
      { url, { cert_file = "/etc/hostname" }, "cert_file and key_file go together" },
      { url, { ca_file = "/etc/hostname", verify_tls = false }, "nothing would be verified" },
      { url, { server_name = "" }, "server_name must be a non%-empty string" },
      { url, "yes", "must be a table" },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(kredis.new, case[1], { tls = case[2] })
      assert.is_false(ok, case[3])
      assert.is_true(errors.is_misuse(err), tostring(err))
      assert.matches(case[3], tostring(err))
      no_password(err)
    end
  end)

  it("is taken the same way by the inbox, the dedupe, the workers and the twin", function()
    local url, bad = "rediss://127.0.0.1:1", { verify_tls = "no" }
    for name, make in pairs {
      inbox = function(t) return require("kinot.callback.inbox").new({ redis = url, redis_tls = t }) end,
      dedupe = function(t) return require("kinot.callback.redis_store").new({ redis = url, redis_tls = t }) end,
      worker = function(t)
        return require("kinot.callback.worker").new({ redis = url, redis_tls = t, on_status = print })
      end,
      fleet = function(t) return require("kinot.fleet").new({ store = "redis", redis = url, redis_tls = t }) end,
    } do
      local s = make({ verify_tls = false }) -- a good table builds
      assert.is_truthy(s, name)
      local ok, err = pcall(make, bad)
      assert.is_false(ok, name)
      assert.matches("redis_tls.verify_tls must be true or false", tostring(err), 1, false)
    end
    -- the inbox's connection does the dedupe: a different TLS table is a mistake
    assert.has_error(function()
      require("kinot.callback.inbox").new({ redis = url, redis_tls = { verify_tls = false } },
        { redis = url, redis_tls = { server_name = "x" } })
    end)
  end)
end)

describe("the host-name check outside nginx (certificates made by openssl) #unit", function()
  local dir
  setup(function()
    dir = H.tmpdir("tls-names")
  end)
  teardown(function() if dir then sh("rm -rf " .. dir) end end)

  -- a self-signed certificate with this subject CN and these SANs, as LuaSec reads it
  local function cert(name, cn, san)
    R.sign(dir, name, { self_signed = true, cn = cn, san = san or false })
    return assert(require("ssl").loadcertificate(H.read(dir .. "/" .. name .. ".pem")))
  end

  it("matches names as OpenSSL does: SANs first, one wildcard label, the CN only without DNS names", function()
    local wild = cert("wild", "ignored.example", "DNS:*.redis.test,DNS:cache.example,IP:10.1.2.3,IP:::1")
    for host, want in pairs {
      ["a.redis.test"] = true, ["A.Redis.Test."] = true, ["redis.test"] = false, ["a.b.redis.test"] = false,
      ["cache.example"] = true, ["xcache.example"] = false, ["ignored.example"] = false, -- (the CN: SANs say)
      ["10.1.2.3"] = true, ["10.1.2.4"] = false, ["::1"] = true, ["cache.example.evil"] = false,
    } do
      assert.are.equal(want, (kredis.host_matches(wild, host)), host)
    end
    local _, held = kredis.host_matches(wild, "other.test")
    assert.are.same({ "*.redis.test", "cache.example" }, held)
    local cn_only = cert("cn", "redis.internal")
    assert.is_true(kredis.host_matches(cn_only, "redis.internal"))
    assert.is_false(kredis.host_matches(cn_only, "other.internal"))
    assert.is_false(kredis.host_matches(cn_only, "127.0.0.1")) -- an address is never read from the CN
    -- a wildcard may not stand for a whole domain
    local broad = cert("broad", "x", "DNS:*.test")
    assert.is_false(kredis.host_matches(broad, "redis.test"))
  end)
end)

describe("kinot.redis over TLS, outside nginx (LuaSocket + LuaSec) #redis", function()
  local r, plain
  setup(function()
    r = R.start { tls = true, password = PASSWORD, db = 2 }
    plain = R.start {}
  end)
  teardown(function()
    if r then r.stop() end
    if plain then plain.stop() end
  end)

  it("works with the right CA: AUTH and SELECT over TLS, by address (its IP entry) and by name", function()
    for _, url in ipairs { r.url, (r.url:gsub("127%.0%.0%.1", "localhost")) } do
      local c = kredis.new(url, { tls = { ca_file = r.ca_file } })
      assert.are.equal("OK", c:call("SET", "k", "v"))
      assert.are.equal("v", c:call("GET", "k"))
      assert.are.equal(2, c:call("CLIENT", "INFO"):match("db=(%d+)") + 0)
      c:close()
    end
  end)

  it("refuses a server whose CA is not trusted (another CA, or the system's): kind tls, not retryable", function()
    for _, tls in ipairs { { ca_file = r.other_ca_file }, {} } do
      local c = kredis.new(r.url, { tls = tls, timeout = 2 })
      local err = refused(c, "tls")
      assert.is_false(err.retryable)
      assert.matches("redis 127.0.0.1:" .. r.port .. ": TLS handshake failed: certificate verify failed", err.message, 1,
        true)
      c:close()
    end
  end)

  it("refuses a certificate that does not name the server: a wrong server_name, an address it does not hold", function()
    local c = kredis.new(r.url, { tls = { ca_file = r.ca_file, server_name = "redis.example" } })
    local err = refused(c, "tls")
    assert.matches("the certificate does not name redis.example (it names localhost)", err.message, 1, true)
    -- the same certificate reached at an address it does not hold
    c = kredis.new(r.url, { tls = { ca_file = r.ca_file, server_name = "127.0.0.2" } })
    err = refused(c, "tls")
    assert.matches("does not name 127.0.0.2 (it names 127.0.0.1)", err.message, 1, true)
  end)

  it("connects to a server it cannot verify only when told: verify_tls = false", function()
    local c = kredis.new(r.url, { tls = { verify_tls = false, server_name = "redis.example" } })
    assert.are.equal("PONG", c:call("PING"))
    c:close()
  end)

  it("a plain redis:// client against the TLS port fails cleanly, at once", function()
    local c = kredis.new(r.url:gsub("^rediss", "redis"), { timeout = 2 })
    local t0 = core.monotonic()
    local err = refused(c, "network")
    assert.is_true(core.monotonic() - t0 < 1, "it waited " .. (core.monotonic() - t0) .. " s")
    assert.matches("127.0.0.1:" .. r.port, err.message, 1, true)
  end)

  it("a rediss:// client against a plain Redis gives up at its deadline, saying what it waited for", function()
    -- (a plain Redis reads the ClientHello as the start of a line and waits
    -- for its end: no answer, so a timeout, not a certificate's failure)
    local c = kredis.new("rediss://:" .. PASSWORD .. "@127.0.0.1:" .. plain.port, { timeout = 0.5 })
    local t0 = core.monotonic()
    local err = refused(c, "timeout")
    assert.is_true(core.monotonic() - t0 < 1.2, "it waited " .. (core.monotonic() - t0) .. " s")
    assert.matches("no TLS answer: is this Redis's --tls-port?", err.message, 1, true)
  end)

  it("a server that accepts and never answers the handshake cannot hold a call past its timeout", function()
    local socket = require "socket"
    local srv = assert(socket.bind("127.0.0.1", 0))
    local _, port = srv:getsockname()
    local ok, e = pcall(function()
      local c = kredis.new("rediss://127.0.0.1:" .. port, { timeout = 0.4, tls = { ca_file = r.ca_file } })
      local t0 = core.monotonic()
      refused(c, "timeout")
      assert.is_true(core.monotonic() - t0 < 1, "it waited " .. (core.monotonic() - t0) .. " s")
    end)
    srv:close()
    assert(ok, e)
  end)

  describe("behind a link that drips the server's bytes (a FAKE: a proxy of the real server, paced)", function()
    it("a handshake that drips a byte every 0.2 s ends at the call's deadline", function()
      local px = R.drip_proxy(r, "handshake")
      H.guarded(function()
        local c = kredis.new("rediss://:" .. PASSWORD .. "@127.0.0.1:" .. px.port,
          { timeout = 1, tls = { ca_file = r.ca_file, server_name = "localhost" } })
        local t0 = core.monotonic()
        refused(c, "timeout")
        local took = core.monotonic() - t0
        assert.is_true(took >= 0.9 and took < 1.6, "it took " .. took .. " s")
        c:close()
      end, px)
    end)

    it("a reply that drips inside TLS records ends at the call's deadline (a whole record is waited for)", function()
      local px = R.drip_proxy(r, "later")
      H.guarded(function()
        local c = kredis.new("rediss://:" .. PASSWORD .. "@127.0.0.1:" .. px.port .. "/2",
          { timeout = 1, tls = { ca_file = r.ca_file, server_name = "localhost" } })
        assert.are.equal("PONG", c:call("PING")) -- at full speed, its first half second
        core.sleep(0.6)
        local t0 = core.monotonic()
        refused(c, "timeout")
        local took = core.monotonic() - t0
        assert.is_true(took >= 0.9 and took < 1.6, "it took " .. took .. " s")
        c:close()
      end, px)
    end)
  end)

  it("a kept TLS connection the server closed (restarted) between two calls is replaced, once", function()
    local c = r.client()
    assert.are.equal("PONG", c:call("PING"))
    local before = c.sock
    r.restart()
    assert.are.equal("PONG", c:call("PING"))
    assert.are_not.equal(before, c.sock)
    -- and with the server gone, a clean network error, retryable
    r.kill()
    local ok, e = pcall(function()
      local err = refused(c, "network")
      assert.is_true(err.retryable)
    end)
    r.up()
    assert(ok, e)
    c:close()
  end)
end)

describe("kinot.redis over TLS, a client certificate (tls-auth-clients yes) #redis #nginx", function()
  it("presents cert_file / key_file, outside nginx and inside; without them the server refuses it", function()
    local r = R.start { tls = true, tls_auth_clients = true }
    local ng
    local ok, e = pcall(function()
      local c = kredis.new(r.url, { tls = { ca_file = r.ca_file, cert_file = r.client_cert, key_file = r.client_key } })
      assert.are.equal("PONG", c:call("PING"))
      c:close()
      c = kredis.new(r.url, { tls = { ca_file = r.ca_file }, timeout = 1 })
      local v, err = c:call("PING")
      assert.is_nil(v)
      -- TLS 1.3: the server refuses after the client's handshake is over, with
      -- an alert ("certificate required": tls) and a close; a send may meet
      -- the close before a read meets the alert (network)
      assert.is_true(err.kind == "tls" or err.kind == "network", tostring(err))
      assert.is_false(err.retryable and err.kind == "tls")
      c:close()
      ng = H.nginx {
        http = "lua_ssl_trusted_certificate " .. r.ca_file .. ";\n" .. [[init_by_lua_block {
          with = require("kinot.redis").new("]] .. r.url .. [[", { timeout = 1, tls = { server_name = "localhost",
            cert_file = "]] .. r.client_cert .. [[", key_file = "]] .. r.client_key .. [[" } })
          without = require("kinot.redis").new("]] .. r.url .. [[", { timeout = 1, tls = { server_name = "localhost" } })
        }]],
        server = [[location = /ping { content_by_lua_block {
          local a, aerr = with:call("PING")
          local b, berr = without:call("PING")
          ngx.say(tostring(a or aerr), " / ", tostring(b or berr))
        } }]],
      }
      local body = H.raw("GET", ng.url .. "/ping").body
      assert.matches("^PONG / kinot: [%w_]+: ", body)
      assert.is_nil(body:find(" / PONG", 1, true), body)
    end)
    if ng then ng.stop() end
    r.stop()
    assert(ok, e)
  end)
end)

describe("rediss:// inside nginx (cosockets: the callback inbox, the pool, the session) #redis #nginx", function()
  local r
  setup(function() r = R.start { tls = true, password = PASSWORD } end)
  teardown(function() if r then r.stop() end end)

  -- an nginx trusting `ca` (lua_ssl_trusted_certificate) with a callback
  -- handler storing into the TLS Redis, and a /ping through a client made
  -- with `tls` (a Lua table's text)
  local function host(ca, tls)
    return H.nginx {
      http = [[
        lua_ssl_trusted_certificate ]] .. ca .. [[;
        lua_ssl_verify_depth 2;
        init_by_lua_block {
          local url, tls = "]] .. r.url .. [[", ]] .. tls .. [[
          receive = require("kinot.callback").handler {
            secret = "]] .. SECRET .. [[", inbox = { redis = url, redis_tls = tls, stream = "kinot:tls" } }
          red = require("kinot.redis").new(url, { tls = tls, timeout = 1 })
        }
      ]],
      server = [[
        location = /cb { content_by_lua_block { receive() } }
        location = /id { content_by_lua_block {
          local v, err = red:call("CLIENT", "ID")
          ngx.say(tostring(v or err))
        } }
        location = /restart_seen { content_by_lua_block {
          local v, err = red:call("PING")
          ngx.say(tostring(v or err))
        } }
      ]],
    }
  end
  local function post(ng, body)
    return H.raw("POST", ng.url .. "/cb", body, { ["Content-Type"] = "application/json" })
  end
  local function stored(sn)
    local c = r.client()
    local n = 0
    for _, e in ipairs(assert(c:call("XRANGE", "kinot:tls", "-", "+"))) do
      for i = 1, #e[2], 2 do
        if e[2][i] == "body" and e[2][i + 1]:find('"sn":' .. sn .. ",", 1, true) then n = n + 1 end
      end
    end
    c:close()
    return n
  end

  -- sn's callback posted to ng: answered status, and then stored n times
  local function delivered(ng, sn, status, n)
    assert.are.equal(status, post(ng, status_body(sn)).status)
    assert.are.equal(n, stored(sn))
  end

  it("with the right CA: the inbox stores a callback (200), the pool keeps the connection, a restart is survived", function()
    local ng = host(r.ca_file, "{ server_name = 'localhost' }")
    H.guarded(function()
      delivered(ng, 7001, 200, 1)
      local a = H.raw("GET", ng.url .. "/id").body
      assert.are.equal(a, H.raw("GET", ng.url .. "/id").body) -- the same connection, from the pool
      r.restart() -- the pooled TLS connections die with it
      assert.matches("^%d+\n$", H.raw("GET", ng.url .. "/id").body)
      delivered(ng, 7002, 200, 1)
      no_password(ng.log())
    end, ng)
  end)

  it("with a CA that did not sign the server's certificate: 503, kind tls, and nothing stored", function()
    local ng = host(r.other_ca_file, "{ server_name = 'localhost' }")
    H.guarded(function()
      delivered(ng, 7101, 503, 0)
      local said = H.raw("GET", ng.url .. "/id").body
      assert.matches("^kinot: tls: redis 127.0.0.1:" .. r.port .. ": TLS handshake failed: ", said)
      assert.matches("lua_ssl_trusted_certificate", said, 1, true)
      no_password(said)
      no_password(ng.log())
    end, ng)
  end)

  it("refuses a wrong host name, and an IP address nginx cannot check as a name (saying to give server_name)", function()
    local ng = host(r.ca_file, "{ server_name = 'redis.example' }")
    H.guarded(function()
      delivered(ng, 7201, 503, 0)
      assert.matches("^kinot: tls: .*certificate host mismatch", H.raw("GET", ng.url .. "/id").body)
    end, ng)
    ng = host(r.ca_file, "nil")
    H.guarded(function()
      assert.are.equal(503, post(ng, status_body(7202)).status)
      assert.matches("certificate host mismatch %(nginx checks the name as a DNS name: give server_name",
        H.raw("GET", ng.url .. "/id").body)
    end, ng)
  end)

  it("with verify_tls = false, connects to the server nginx's CAs cannot verify", function()
    local ng = host(r.other_ca_file, "{ verify_tls = false }")
    H.guarded(function()
      delivered(ng, 7301, 200, 1)
    end, ng)
  end)

  it("a server that accepts and never answers the handshake cannot hold a call past its timeout", function()
    local socket = require "socket"
    local srv = assert(socket.bind("127.0.0.1", 0)) -- the kernel accepts; nobody answers
    local _, port = srv:getsockname()
    local ng = H.nginx {
      http = "lua_ssl_trusted_certificate " .. r.ca_file .. ";",
      server = [[location = /ping { content_by_lua_block {
        local c = require("kinot.redis").new("rediss://127.0.0.1:]] .. port .. [[", { timeout = 0.5,
          tls = { server_name = "localhost" } })
        ngx.update_time()
        local t0 = ngx.now()
        local v, err = c:call("PING")
        ngx.update_time()
        ngx.say(string.format("%.2f ", ngx.now() - t0), tostring(v or err))
      } }]],
    }
    local ok, e = pcall(function()
      local body = H.raw("GET", ng.url .. "/ping").body
      local took = tonumber(body:match("^([%d.]+) "))
      assert.is_true(took >= 0.4 and took < 1, body)
      assert.matches("kinot: timeout: redis 127.0.0.1:" .. port .. ": TLS handshake failed: timeout", body, 1, true)
    end)
    ng.stop()
    srv:close()
    assert(ok, e)
  end)

  it("refuses ca_file inside nginx (nginx's CAs are lua_ssl_trusted_certificate): nginx does not start", function()
    local ng = H.nginx {
      may_fail = true,
      http = "init_by_lua_block { require('kinot.redis').new('" .. r.url .. "', { tls = { ca_file = '" .. r.ca_file ..
        "' } }) }",
    }
    local started = ng.started
    local said = ng.log() .. ng.stderr()
    if started then ng.stop() end
    assert.is_false(started)
    assert.matches("ca_file cannot be used inside nginx: nginx verifies TLS against lua_ssl_trusted_certificate", said,
      1, true)
    no_password(said)
  end)
end)

describe("kinot worker against a rediss:// Redis #redis #cli", function()
  local r, dir
  setup(function()
    r = R.start { tls = true, password = PASSWORD }
    dir = H.sn_handler("spec_tls_handler") -- (its events' sn in dir/handled)
  end)
  teardown(function()
    if r then r.stop() end
    if dir then sh("rm -rf " .. dir) end
  end)

  local lines = H.lines
  local function spawn(name, args)
    return H.kinot_spawn("worker --stream kinot:tlsw --group g --handler spec_tls_handler --block 0.2 " .. args,
      "LUA_PATH='" .. dir .. "/?.lua;;' KINOT_REDIS_URL='" .. r.url .. "'", dir .. "/" .. name .. ".log")
  end
  local function put(sn)
    local c = r.client()
    local inbox = require("kinot.callback.inbox").new({ redis = r.url, redis_tls = r.tls, stream = "kinot:tlsw" })
    local body = status_body(sn)
    assert.is_true(inbox:put(assert(callback.verify(body, { secret = SECRET })).id, body, os.time()))
    c:close()
  end

  it("with the right CA (--redis-ca-file) handles the stored events", function()
    put(8001)
    put(8002)
    local pid = spawn("right", "--redis-ca-file " .. r.ca_file)
    local ok, e = pcall(function()
      assert.is_truthy(H.wait_for(function() return #lines(dir .. "/handled") == 2 end, 10),
        table.concat(lines(dir .. "/right.log"), "\n"))
      local handled = lines(dir .. "/handled")
      table.sort(handled)
      assert.are.same({ "8001", "8002" }, handled)
      local log = table.concat(lines(dir .. "/right.log"), "\n")
      assert.matches("on rediss://***@127.0.0.1:" .. r.port, log, 1, true)
      no_password(log)
    end)
    sh("kill " .. pid)
    assert(ok, e)
  end)

  it("with the wrong CA handles nothing and says tls, without the password; --redis-insecure connects", function()
    os.remove(dir .. "/handled")
    put(8101)
    local pid = spawn("wrong", "--redis-ca-file " .. r.other_ca_file)
    local ok, e = pcall(function()
      assert.is_truthy(H.wait_for(function()
        return table.concat(lines(dir .. "/wrong.log"), "\n"):find("certificate verify failed", 1, true)
      end, 10), table.concat(lines(dir .. "/wrong.log"), "\n"))
      core.sleep(0.5)
      assert.are.equal(0, #lines(dir .. "/handled"))
      local log = table.concat(lines(dir .. "/wrong.log"), "\n")
      assert.matches("tls: redis 127.0.0.1:" .. r.port .. ": TLS handshake failed: certificate verify failed", log, 1,
        true)
      no_password(log)
    end)
    sh("kill " .. pid)
    assert(ok, e)
    pid = spawn("insecure", "--redis-insecure")
    ok, e = pcall(function()
      assert.is_truthy(H.wait_for(function() return #lines(dir .. "/handled") == 1 end, 30),
        table.concat(lines(dir .. "/insecure.log"), "\n"))
    end)
    sh("kill " .. pid)
    assert(ok, e)
  end)

  it("refuses the TLS options with a redis:// URL, or --redis-insecure with --redis-ca-file (exit 2)", function()
    local function run(url, args)
      local p = io.popen(string.format("cd %s && KINOT_REDIS_URL='%s' %s bin/kinot worker --handler x %s 2>&1; " ..
        "echo \"rc=$?\"", H.root, url, H.runtime == "luajit" and "luajit" or "lua5.4", args))
      local out = p:read("*a")
      p:close()
      return out
    end
    local out = run("redis://:" .. PASSWORD .. "@127.0.0.1:1", "--redis-ca-file " .. r.ca_file)
    assert.matches("go with a rediss:// URL.*rc=2", out)
    no_password(out)
    out = run(r.url, "--redis-ca-file " .. r.ca_file .. " --redis-insecure")
    assert.matches("verifies nothing.*rc=2", out)
    no_password(out)
  end)
end)

describe("kinot serve and kinot fleet on a rediss:// Redis #redis #cli #sim #nginx", function()
  local LUA = rawget(_G, "jit") and "luajit" or "lua5.4"
  local function run(cmd)
    local p = io.popen("cd " .. H.root .. " && env -u KINOT_REDIS_URL -u KINOT_SERVE_URL " .. cmd .. " 2>&1; echo \"rc=$?\"")
    local out = p:read("*a")
    p:close()
    return out:gsub("rc=%d+%s*$", ""), tonumber(out:match("rc=(%d+)%s*$"))
  end

  it("kinot serve keeps its twin there (nginx trusting --redis-ca-file); kinot fleet reads it, and refuses the wrong CA", function()
    local sim = H.sim { locks = 20, sensors = 5 }
    local r = R.start { tls = true, password = PASSWORD }
    local pid_file = os.tmpname()
    local port = require("kinot.sim.launcher").free_port()
    local ok, e = pcall(function()
      local out, rc = run(string.format("KINOT_ENDPOINT=%s KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_REDIS_URL='%s' " ..
        "%s bin/kinot serve --daemon --pid-file %s --listen 127.0.0.1:%d --redis-ca-file %s --redis-server-name localhost",
        sim.endpoint, sim.app_key, sim.app_secret, r.url, LUA, pid_file, port, r.ca_file))
      assert.are.equal(0, rc, out)
      no_password(out)
      local url = "http://127.0.0.1:" .. port
      assert.is_truthy(H.wait_for(function()
        local doc = H.json("GET", url .. "/api/fleet")
        return doc and type(doc.synced_at) == "string"
      end, 15), "no first sync")
      -- the twin is in the TLS Redis: read there directly, the same answer
      local over_http = run(LUA .. " bin/kinot --json fleet summary --url " .. url)
      local over_redis, rc2 = run(string.format("KINOT_REDIS_URL='%s' %s bin/kinot --json fleet summary " ..
        "--redis-ca-file %s", r.url, LUA, r.ca_file))
      assert.are.equal(0, rc2, over_redis)
      assert.are.equal(over_http, over_redis)
      assert.matches('"locks":20', over_redis, 1, true)
      local wrong, rc3 = run(string.format("KINOT_REDIS_URL='%s' %s bin/kinot fleet summary --redis-ca-file %s",
        r.url, LUA, r.other_ca_file))
      assert.are.equal(4, rc3, wrong) -- a network error's exit code
      assert.matches("certificate verify failed", wrong, 1, true)
      no_password(wrong)
    end)
    run(LUA .. " bin/kinot serve stop --pid-file " .. pid_file)
    os.remove(pid_file)
    r.stop()
    sim.stop()
    assert(ok, e)
  end)
end)
