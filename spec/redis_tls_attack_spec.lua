-- rediss:// attacked: certificates that must be refused (expired, not yet
-- valid, for another name, self-signed), a server that offers only TLS
-- 1.0, a pooled connection that must not pass to a client with other
-- settings, a handshake dripped inside nginx.  Real parts: Debian's
-- redis-server on a free 127.0.0.1 port with certificates made here by
-- openssl (spec/support/redis_server.lua), a real nginx; every server is
-- stopped by the spec that started it.
local kredis = require "kinot.redis"
local errors = require "kinot.errors"
local R = require "redis_server"
local H = require "helpers"

local PASSWORD = "att4ck-S3cret/pw"

local launcher_quote = require("kinot.sim.launcher").sh_quote

local sh = H.execute

local function no_password(s)
  assert.is_nil(tostring(s):find(PASSWORD, 1, true), "the password shows in: " .. tostring(s))
end

-- a PING that must fail with this kind; its error
local function refused(c, kind)
  local v, err = c:call("PING")
  assert.is_nil(v, "accepted: " .. tostring(v))
  assert.is_true(errors.is(err), tostring(err))
  assert.are.equal(kind, err.kind, tostring(err))
  no_password(err)
  return err
end

describe("rediss:// certificates that must be refused, outside nginx (LuaSec) #redis", function()
  it("an expired certificate and a not yet valid one, from the trusted CA and naming the host: kind tls", function()
    for _, case in ipairs {
      -- (LuaSec closes the connection on a failed verification without
      -- keeping OpenSSL's reason: the message is the generic one)
      { "expired", { from = "20200101000000Z", to = "20200201000000Z" }, "certificate verify failed" },
      { "future", { from = "20300101000000Z", to = "20300201000000Z" }, "certificate verify failed" },
    } do
      local r = R.start { tls = true, password = PASSWORD, server = case[1], sign = case[2] }
      H.guarded(function()
        local c = kredis.new(r.url, { tls = { ca_file = r.ca_file }, timeout = 1 })
        local err = refused(c, "tls")
        assert.is_false(err.retryable)
        assert.matches(case[3], err.message, 1, true)
        c:close()
        -- (the same server, unverified, answers: it is the certificate)
        c = kredis.new(r.url, { tls = { verify_tls = false }, timeout = 1 })
        assert.are.equal("PONG", c:call("PING"))
        c:close()
      end, r)
    end
  end)

  it("a self-signed certificate: refused with the system's CAs or another CA; pinned by ca_file, still name-checked", function()
    local r = R.start { tls = true, password = PASSWORD, server = "self", sign = { self_signed = true } }
    H.guarded(function()
      for _, tls in ipairs { {}, { ca_file = r.ca_file } } do
        local c = kredis.new(r.url, { tls = tls, timeout = 1 })
        assert.matches("certificate", refused(c, "tls").message)
        c:close()
      end
      local pinned = r.dir .. "/self.pem"
      local c = kredis.new(r.url, { tls = { ca_file = pinned }, timeout = 1 })
      assert.are.equal("PONG", c:call("PING"))
      c:close()
      c = kredis.new(r.url, { tls = { ca_file = pinned, server_name = "other.test" }, timeout = 1 })
      assert.matches("does not name other.test", refused(c, "tls").message, 1, true)
      c:close()
    end, r)
  end)

  it("a certificate for another name from the trusted CA: a wildcard of two labels, a DNS name for an address", function()
    -- *.redis.test does not cover redis.test, nor a.b.redis.test; DNS:127.0.0.1
    -- is not the address 127.0.0.1 (RFC 6125: addresses from IP entries only)
    local r = R.start { tls = true, password = PASSWORD, server = "wild",
                        sign = { cn = "localhost", san = "DNS:*.redis.test,DNS:127.0.0.1" } }
    H.guarded(function()
      for _, name in ipairs { "redis.test", "a.b.redis.test", "127.0.0.1", "localhost" } do
        local c = kredis.new(r.url, { tls = { ca_file = r.ca_file, server_name = name }, timeout = 1 })
        assert.matches("does not name " .. name, refused(c, "tls").message, 1, true)
        c:close()
      end
      local c = kredis.new(r.url, { tls = { ca_file = r.ca_file, server_name = "A.Redis.Test" }, timeout = 1 })
      assert.are.equal("PONG", c:call("PING"))
      c:close()
    end, r)
  end)

  it("a server that offers only TLS 1.0 / 1.1 (and would speak them) is refused: kind tls", function()
    -- SECLEVEL=0: the server's OpenSSL would really speak TLS 1.0 (its
    -- own default refuses it); shown by openssl s_client below
    local r = R.start { tls = true, password = PASSWORD, tls_protocols = "TLSv1 TLSv1.1",
                        tls_ciphers = "DEFAULT@SECLEVEL=0", server = "old", sign = {} }
    H.guarded(function()
      assert.is_true(sh("echo | openssl s_client -connect 127.0.0.1:" .. r.port .. " -tls1 -cipher DEFAULT@SECLEVEL=0" ..
        " -CAfile " .. r.ca_file .. " 2>/dev/null | grep -q 'Protocol *: TLSv1$'"), "the server does not speak TLS 1.0")
      local c = kredis.new(r.url, { tls = { ca_file = r.ca_file }, timeout = 1 })
      refused(c, "tls")
      c:close()
      -- not even when nothing is verified
      c = kredis.new(r.url, { tls = { verify_tls = false }, timeout = 1 })
      refused(c, "tls")
      c:close()
    end, r)
  end)
end)

describe("rediss:// attacked inside nginx (cosockets) #redis #nginx", function()
  -- an nginx trusting `ca` whose /t runs `code` (Lua, in a content handler)
  local function inside(ca, code)
    return H.nginx {
      http = "lua_ssl_trusted_certificate " .. ca .. ";\nlua_ssl_verify_depth 2;",
      server = "location = /t { content_by_lua_block { local redis = require('kinot.redis')\n" .. code .. "\n} }",
    }
  end
  local function run(ng) return H.raw("GET", ng.url .. "/t").body end

  it("a pooled connection never passes to a client that would not have opened it", function()
    local r = R.start { tls = true, password = PASSWORD }
    local ng
    local ok, e = pcall(function()
      local function say(a, b)
        return string.format([[
          local one = redis.new(%q, { tls = %s, timeout = 1 })
          local two = redis.new(%q, { tls = %s, timeout = 1 })
          local a, aerr = one:call("PING")
          local b, berr = two:call("PING")
          ngx.say(tostring(a or aerr.kind), " | ", tostring(b or berr.kind), " | ", tostring(berr))
        ]], r.url, a, r.url, b)
      end
      -- opened unverified (nginx trusts a CA that did not sign it), then asked for verified
      ng = inside(r.other_ca_file, say("{ verify_tls = false, server_name = 'localhost' }",
                                       "{ server_name = 'localhost' }"))
      local body = run(ng)
      assert.matches("^PONG | tls | ", body)
      no_password(body)
      ng.stop()
      -- opened for one name, asked for another the certificate does not hold
      ng = inside(r.ca_file, say("{ server_name = 'localhost' }", "{ server_name = 'redis.example' }"))
      assert.matches("^PONG | tls | .*certificate host mismatch", run(ng))
      ng.stop()
      -- opened with a client certificate for localhost, asked for a name
      -- that spells the same pool's text ("localhost:" and the md5 of the
      -- client certificate's paths): a name the certificate does not hold
      local cert = string.format("{ server_name = 'localhost', cert_file = %q, key_file = %q }", r.client_cert,
        r.client_key)
      local forged = string.format("{ server_name = 'localhost:' .. ngx.md5(%q) }", r.client_cert .. "\0" .. r.client_key)
      ng = inside(r.ca_file, say(cert, forged))
      assert.matches("^PONG | tls | .*certificate host mismatch", run(ng))
    end)
    if ng then ng.stop() end
    r.stop()
    assert(ok, e)
  end)

  it("a pooled connection never passes to other credentials that spell the same text (user a:b vs password b:c)", function()
    local r = R.start { tls = true, password = PASSWORD }
    local ng
    local ok, e = pcall(function()
      local c = r.client()
      assert.are.equal("OK", c:call("ACL", "SETUSER", "a", "on", ">b:c", "~*", "+@all"))
      c:close()
      local port = r.port
      -- user "a" with password "b:c"; then user "a:b" with password "c" (no such user)
      ng = inside(r.ca_file, string.format([[
        local one = redis.new("rediss://a:b%%3Ac@127.0.0.1:%d", { tls = { server_name = "localhost" }, timeout = 1 })
        local two = redis.new("rediss://a%%3Ab:c@127.0.0.1:%d", { tls = { server_name = "localhost" }, timeout = 1 })
        local a, aerr = one:call("PING")
        local b, berr = two:call("PING")
        ngx.say(tostring(a or aerr), " | ", tostring(b or berr.code))
      ]], port, port))
      assert.are.equal("PONG | WRONGPASS\n", run(ng))
    end)
    if ng then ng.stop() end
    r.stop()
    assert(ok, e)
  end)

  it("an expired certificate, and a server that offers only TLS 1.0 / 1.1: kind tls", function()
    for _, o in ipairs {
      { server = "expired", sign = { from = "20200101000000Z", to = "20200201000000Z" } },
      { server = "old", sign = {}, tls_protocols = "TLSv1 TLSv1.1", tls_ciphers = "DEFAULT@SECLEVEL=0" },
    } do
      o.tls, o.password = true, PASSWORD
      local r = R.start(o)
      local ng
      local ok, e = pcall(function()
        ng = inside(r.ca_file, string.format([[
          local c = redis.new(%q, { tls = { server_name = "localhost" }, timeout = 1 })
          local v, err = c:call("PING")
          ngx.say(tostring(v or err))
        ]], r.url))
        local body = run(ng)
        assert.matches("^kinot: tls: ", body)
        no_password(body)
        no_password(ng.log())
      end)
      if ng then ng.stop() end
      r.stop()
      assert(ok, e)
    end
  end)

  it("a handshake that drips a byte every 0.2 s ends at the call's deadline (a FAKE link: a paced proxy)", function()
    local r = R.start { tls = true, password = PASSWORD }
    local px = R.drip_proxy(r, "handshake")
    local ng
    local ok, e = pcall(function()
      ng = inside(r.ca_file, string.format([[
        local c = redis.new("rediss://:%s@127.0.0.1:%d", { tls = { server_name = "localhost" }, timeout = 1 })
        ngx.update_time()
        local t0 = ngx.now()
        local v, err = c:call("PING")
        ngx.update_time()
        ngx.say(string.format("%%.2f ", ngx.now() - t0), tostring(v or err))
      ]], PASSWORD, px.port))
      local body = run(ng)
      local took = tonumber(body:match("^([%d.]+) "))
      assert.is_true(took >= 0.9 and took < 1.5, body)
      assert.matches("kinot: timeout: ", body, 1, true)
      no_password(body)
    end)
    if ng then ng.stop() end
    px.stop()
    r.stop()
    assert(ok, e)
  end)
end)

describe("kinot serve --redis-ca-file: the path nginx is given #redis #cli #nginx", function()
  local LUA = rawget(_G, "jit") and "luajit" or "lua5.4"
  local launcher = require "kinot.sim.launcher"
  local function run(cmd)
    local p = io.popen("cd " .. H.root .. " && env -u KINOT_REDIS_URL -u KINOT_SERVE_URL " .. cmd .. " 2>&1; echo \"rc=$?\"")
    local out = p:read("*a")
    p:close()
    return out:gsub("rc=%d+%s*$", ""), tonumber(out:match("rc=(%d+)%s*$"))
  end
  -- kinot serve on a free port with this --redis-ca-file (the endpoint is
  -- nowhere: only the twin in Redis is looked at); its output, exit code,
  -- the JSON API's URL, and stop()
  local function serve(r, ca)
    local pid_file = os.tmpname()
    local port = launcher.free_port()
    local out, rc = run(string.format("KINOT_ENDPOINT=http://127.0.0.1:1 KINOT_APP_KEY=k KINOT_APP_SECRET=s " ..
      "KINOT_REDIS_URL=%s %s bin/kinot serve --daemon --sync-interval 0 --pid-file %s --listen 127.0.0.1:%d " ..
      "--redis-server-name localhost --redis-ca-file %s", launcher.sh_quote(r.url), LUA, pid_file, port,
      launcher.sh_quote(ca)))
    return out, rc, "http://127.0.0.1:" .. port .. "/api/fleet", function()
      run(LUA .. " bin/kinot serve stop --pid-file " .. pid_file)
      os.remove(pid_file)
    end
  end

  it("a path with spaces, ; ' $ { } # in it is the file nginx trusts; one with a newline is refused (exit 2)", function()
    local r = R.start { tls = true, password = PASSWORD }
    local dir = r.dir .. "/we ird;dir'x$y{z}#"
    local stop
    local ok, e = pcall(function()
      assert.is_true(sh("mkdir -p " .. launcher.sh_quote(dir)))
      -- the right CA: the twin in Redis answers; the wrong one at the same odd path: it does not
      for _, case in ipairs { { r.ca_file, 200 }, { r.other_ca_file, 503 } } do
        assert.is_true(sh("cp " .. case[1] .. " " .. launcher.sh_quote(dir .. "/ca.pem")))
        local out, rc, api
        out, rc, api, stop = serve(r, dir .. "/ca.pem")
        assert.are.equal(0, rc, out)
        no_password(out)
        assert.are.equal(case[2], H.raw("GET", api).status, case[1])
        stop()
        stop = nil
      end
      -- "<dir>/x\ny.pem": realpath's first line, "<dir>/x", is another file
      assert.is_true(sh("cp " .. r.other_ca_file .. " " .. launcher.sh_quote(dir .. "/x")))
      local f = assert(io.open(dir .. "/x\ny.pem", "w"))
      f:write(H.read(r.ca_file))
      f:close()
      local out, rc, _
      out, rc, _, stop = serve(r, dir .. "/x\ny.pem")
      assert.are.equal(2, rc, out)
      assert.matches("without quotes, backslashes or controls", out, 1, true)
      stop = nil
    end)
    if stop then stop() end
    r.stop()
    assert(ok, e)
  end)
end)

describe("redis.host_matches never accepts a name OpenSSL's X509_check_host / X509_check_ip refuses #unit", function()
  local dir
  setup(function()
    dir = H.tmpdir("tls-diff")
  end)
  teardown(function() if dir then sh("rm -rf " .. dir) end end)

  -- what `openssl x509 -checkhost` / `-checkip` says of this certificate and name
  local function openssl_says(pem, host, ip)
    local p = io.popen("openssl x509 -in " .. pem .. " -noout " .. (ip and "-checkip " or "-checkhost ") ..
      "'" .. host .. "' 2>&1")
    local out = p:read("*a")
    p:close()
    assert.matches("match", out)
    return out:find("does match", 1, true) ~= nil
  end

  it("wildcards (partial, bare, two labels, IDNA), case, a CN beside SANs, addresses and names that look like them", function()
    local certs = {
      odd = { "ignored.test", "DNS:f*.example.com,DNS:*,DNS:*.*.test,DNS:a*b.example.org,DNS:*.co.uk," ..
        "DNS:xn--*.example.net,DNS:*.xn--bcher-kva.test,DNS:*.Wild.Test,DNS:*.0.0.1,DNS:127.0.0.2" },
      ips = { "10.9.9.9", "IP:10.0.0.1,IP:::1,IP:fe80::1" },
      cn = { "cn.test" }, cn_wild = { "*.cnw.test" }, cn_ip = { "127.0.0.1" },
    }
    local hosts = { "foo.example.com", "f.example.com", "x.y.test", "a.b.test", "axb.example.org", "foo.co.uk", "co.uk",
      "x.xn--bcher-kva.test", "xn--a.example.net", "a.wild.test", "A.WILD.TEST", "wild.test", "a.b.wild.test",
      "127.0.0.1", "127.0.0.2", "10.0.0.1", "10.9.9.9", "::1", "fe80::1", "cn.test", "CN.TEST", "x.cn.test",
      "a.cnw.test", "cnw.test", "a.b.cnw.test", "ignored.test", "example.com", "test" }
    local ours_only, accepted = {}, {}
    for name, c in pairs(certs) do
      local pem = dir .. "/" .. name .. ".pem"
      R.sign(dir, name, { self_signed = true, cn = c[1], san = c[2] or false })
      local cert = require("ssl").loadcertificate(H.read(pem))
      for _, host in ipairs(hosts) do
        local ip = host:find("^[%d.]+$") or host:find(":", 1, true)
        -- (an address is checked only against IP entries: as X509_check_ip)
        if kredis.host_matches(cert, host) == true then
          accepted[#accepted + 1] = name .. " " .. host
          if not openssl_says(pem, host, ip) then ours_only[#ours_only + 1] = name .. " " .. host end
        end
      end
    end
    assert.are.same({}, ours_only)
    -- what it does accept (a check that refused everything would pass the
    -- above): not f*.example.com's foo (OpenSSL takes partial wildcards),
    -- not 127.0.0.1 from a CN or from DNS:*.0.0.1 (nginx's X509_check_host would)
    table.sort(accepted)
    assert.are.same({ "cn CN.TEST", "cn cn.test", "cn_wild a.cnw.test", "ips 10.0.0.1", "ips ::1", "ips fe80::1",
      "odd A.WILD.TEST", "odd a.wild.test", "odd foo.co.uk", "odd x.xn--bcher-kva.test" }, accepted)
  end)
  it("a NUL byte inside a DNS name (good.test\\0.evil.test) names neither good.test nor evil.test", function()
    -- the SAN's DER by hand (openssl's config cannot spell a NUL): SEQUENCE { [2] IA5String }
    local name = "good.test\0.evil.test"
    local der = string.format("30%02x82%02x", #name + 2, #name) .. name:gsub(".", function(c)
      return string.format("%02x", c:byte())
    end)
    local pem = dir .. "/nul.pem"
    assert.is_true(sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 " ..
      "-subj /CN=good.test -addext 2.5.29.17=DER:" .. der .. " -keyout " .. dir .. "/nul.key -out " .. pem ..
      " >/dev/null 2>&1"))
    local cert = require("ssl").loadcertificate(H.read(pem))
    assert.are.same({ name }, cert:extensions()["2.5.29.17"].dNSName) -- (LuaSec keeps the whole name)
    for _, host in ipairs { "good.test", "evil.test", "x.evil.test" } do
      assert.is_false((kredis.host_matches(cert, host)), host) -- (and not the CN: a DNS name is there)
      assert.is_false(openssl_says(pem, host), host)
    end
  end)
end)

describe("a connection closed during the TLS handshake is a network failure, not a certificate's #redis #nginx", function()
  it("a Redis at maxclients (it closes new connections): kind network, retryable outside nginx; inside, said", function()
    local r = R.start { tls = true, password = PASSWORD }
    local held, ng
    local ok, e = pcall(function()
      held = r.client()
      assert.are.equal("OK", held:call("CONFIG", "SET", "maxclients", "1"))
      local c = kredis.new(r.url, { tls = { ca_file = r.ca_file }, timeout = 1 })
      local err = refused(c, "network")
      assert.is_true(err.retryable)
      assert.is_nil(err.message:find("trusting", 1, true), err.message) -- (no certificate to look at)
      c:close()
      ng = H.nginx {
        http = "lua_ssl_trusted_certificate " .. r.ca_file .. ";",
        server = string.format([[location = /t { content_by_lua_block {
          local c = require("kinot.redis").new(%q, { tls = { server_name = "localhost" }, timeout = 1 })
          local v, err = c:call("PING")
          ngx.say(tostring(v or err.kind), " ", tostring(err and err.retryable), " ", tostring(err))
        } }]], r.url),
      }
      -- inside nginx the cosocket says only "handshake failed" (so does a
      -- server that shares no TLS version with nginx): kind tls, not
      -- retried, but saying what it may be, and not blaming the CAs
      local body = H.raw("GET", ng.url .. "/t").body
      assert.matches("^tls false .*TLS handshake failed: handshake failed %(the server closed the connection", body)
      assert.is_nil(body:find("trusting", 1, true), body)
      no_password(body)
    end)
    if ng then ng.stop() end
    if held then held:close() end
    r.stop()
    assert(ok, e)
  end)
end)

describe("an encrypted key_file (a passphrase OpenSSL would ask for on the terminal) #redis #nginx", function()
  local dir
  setup(function()
    dir = H.tmpdir("tls-enc")
    R.certificates(dir)
    -- the client key, encrypted both ways PEM has (PKCS#8, and the older Proc-Type header)
    assert.is_true(sh("openssl pkey -in " .. dir .. "/client.key -aes256 -passout pass:hunter2 -out " .. dir ..
      "/pkcs8.key >/dev/null 2>&1"))
    assert.is_true(sh("openssl ec -in " .. dir .. "/client.key -aes256 -passout pass:hunter2 -out " .. dir ..
      "/traditional.key >/dev/null 2>&1"))
  end)
  teardown(function() if dir then sh("rm -rf " .. dir) end end)

  it("is refused at once by name outside nginx, even on a terminal (it once sat at 'Enter PEM pass phrase:')", function()
    for _, key in ipairs { "pkcs8", "traditional" } do
      local script = dir .. "/new.lua"
      local f = assert(io.open(script, "w"))
      f:write(string.format([[
package.path = %q .. "/lua/?.lua;" .. %q .. "/lua/?/init.lua;" .. package.path
local ok, err = pcall(require("kinot.redis").new, "rediss://127.0.0.1:1",
  { tls = { ca_file = %q, cert_file = %q, key_file = %q } })
io.write(ok and "MADE" or tostring(err), "\n")
]], H.root, H.root, dir .. "/ca.pem", dir .. "/client.pem", dir .. "/" .. key .. ".key"))
      f:close()
      -- on a terminal of its own (script(1)), as a person starting `kinot worker`
      local p = io.popen(string.format("cd %s && timeout 5 script -qec %s /dev/null </dev/null 2>&1; echo \"rc=$?\"",
        H.root, launcher_quote(string.format("%s -e \"package.cpath='%s/build/%s/?.so;'..package.cpath\" %s",
          rawget(_G, "jit") and "luajit" or "lua5.4", H.root, rawget(_G, "jit") and "5.1" or "5.4", script))))
      local out = p:read("*a")
      p:close()
      assert.is_nil(out:find("pass phrase", 1, true), out)
      assert.matches("rc=0", out, 1, true)
      assert.matches("key_file " .. dir .. "/" .. key .. ".key is encrypted", out, 1, true)
    end
  end)

  it("is refused inside nginx by name: nginx does not start (nor asks)", function()
    local ng = H.nginx {
      may_fail = true,
      http = string.format("init_by_lua_block { require('kinot.redis').new('rediss://127.0.0.1:1', { tls = { " ..
        "cert_file = %q, key_file = %q } }) }", dir .. "/client.pem", dir .. "/pkcs8.key"),
    }
    local started = ng.started
    local said = ng.log() .. ng.stderr()
    if started then ng.stop() end
    assert.is_false(started)
    assert.matches("key_file " .. dir .. "/pkcs8.key is encrypted", said, 1, true)
  end)
end)
