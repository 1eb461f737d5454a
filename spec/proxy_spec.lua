-- Both transports through a forward HTTP proxy (the `proxy` option):
-- absolute-form requests for http://, CONNECT tunnels for https://, and
-- Proxy-Authorization from the proxy URL's credentials.  The proxy is
-- spec/support/proxy.lua (a corporate proxy is out of reach here); the
-- platform is the simulator, the TLS endpoint a real nginx.
local core = require "kinot.core"
local H = require "helpers"

local function has_line(lines, pattern)
  for _, l in ipairs(lines) do
    if l:find(pattern) then return true end
  end
  return false, table.concat(lines, "\n")
end

describe("transports through a proxy #nginx #sim #peer", function()
  local sim, px, tls, ng
  setup(function()
    px = H.proxy()
    sim = H.sim { locks = 12 }
    sim.port = tonumber(sim.endpoint:match(":(%d+)/"))
    tls = H.tls_nginx("localhost")
    -- the proxy's credentials ride in its URL, percent-encoded as curl takes them
    local proxy = "http://agent:p%40ss@127.0.0.1:" .. px.port
    ng = H.nginx {
      http = "lua_ssl_trusted_certificate " .. tls.cert .. ";\n" ..
             "init_by_lua_block { SIM = { key = '" .. sim.app_key .. "', secret = '" .. sim.app_secret ..
             "', endpoint = '" .. sim.endpoint .. "' }; PROXY = '" .. proxy .. "'; TLS = 'https://localhost:" ..
             tls.port .. "/' }",
      server = [[
        location = /api { content_by_lua_block {
          local c = require("kinot").new { app_key = SIM.key, app_secret = SIM.secret, endpoint = SIM.endpoint,
                                           proxy = PROXY }
          local n = 0
          for _ in c:each_locker { limit = 10 } do n = n + 1 end
          ngx.say(c.transport.name, " ", n)
        } }
        location = /tls { content_by_lua_block {
          local t = require("kinot.transport.resty").new { proxy = PROXY }
          for _ = 1, 2 do -- the second over the pooled tunnel
            local res, kind, msg = t.send { method = "GET", url = TLS }
            ngx.say(res and res.body or (kind .. ": " .. msg))
          end
        } }
        location = /refused { content_by_lua_block {
          -- the proxy answers 502: nothing listens behind the tunnel it was asked for
          local t = require("kinot.transport.resty").new { proxy = PROXY }
          local res, kind, msg, not_sent = t.send { method = "GET", url = "https://localhost:" .. ngx.var.arg_port .. "/" }
          ngx.say(tostring(res), " ", kind, " ", tostring(not_sent), " ", msg)
        } }
        location = /deadproxy { content_by_lua_block {
          local c = require("kinot").new { app_key = SIM.key, app_secret = SIM.secret, endpoint = SIM.endpoint,
                                           proxy = "http://agent:secretpw@127.0.0.1:" .. ngx.var.arg_port, retries = 0 }
          local _, err = c:lockers {}
          ngx.say(err.kind, " ", tostring(err.not_sent), " ", err.message)
        } }
        location = /plus { content_by_lua_block {
          -- a '+' in the password is a '+' (not a space, as in a form)
          local t = require("kinot.transport.resty").new { proxy = PROXY:gsub("p%%40ss", "p%%40s+s") }
          -- (an origin of its own: the proxy logs a connection's first request only)
          local res, kind, msg = t.send { method = "GET", url = SIM.endpoint:gsub("127%.0%.0%.1", "localhost") .. "/plus" }
          ngx.say(res and res.status or (kind .. ": " .. msg))
        } }
        location = /misuse { content_by_lua_block {
          local resty = require "kinot.transport.resty"
          for _, o in ipairs { { ca_file = "/x.pem" }, { proxy = "socks5://127.0.0.1:1" } } do
            local ok, err = pcall(resty.new, o)
            ngx.say(ok and "accepted" or tostring(err))
          end
        } }
      ]],
    }
  end)
  teardown(function()
    for _, s in ipairs { ng, tls, sim, px } do s.stop() end
  end)

  it("curl: API calls go to the proxy as absolute-form requests", function()
    local c = sim.client { proxy = px.url }
    local page = assert(c:lockers { limit = 10 })
    c:close()
    assert.are.equal(12, page.count)
    assert(has_line(px.lines(), "^GET http://127%.0%.0%.1:" .. sim.port .. "/open/lora/v1/lockers%?"))
  end)

  it("curl: https goes through a CONNECT tunnel, verified end to end", function()
    local h = core.http()
    local res = assert(h:request { url = "https://localhost:" .. tls.port .. "/", proxy = px.url,
                                   ca_file = tls.cert })
    h:close()
    assert.are.equal("secure", res.body)
    assert(has_line(px.lines(), "^CONNECT localhost:" .. tls.port .. " "))
  end)

  it("resty: API calls from nginx go through the proxy, with its credentials", function()
    assert.are.equal("resty 12\n", H.raw("GET", ng.url .. "/api").body)
    -- "agent:p@ss", base64
    assert(has_line(px.lines(), "^GET http://127%.0%.0%.1:" .. sim.port .. "/.* auth=Basic YWdlbnQ6cEBzcw==$"))
  end)

  -- (attack 11: resty decoded the password as a form does, '+' as a space)
  it("both transports send a '+' in the proxy password as a '+'", function()
    local want = " auth=Basic YWdlbnQ6cEBzK3M=$" -- "agent:p@s+s", base64
    local said = H.raw("GET", ng.url .. "/plus")
    assert.are.equal(200, said.status, said.body .. ng.log())
    assert(has_line(px.lines(), "^GET http://localhost:" .. sim.port .. "/open/lora/v1/plus .*" .. want:gsub("%+", "%%+")),
      table.concat(px.lines(), "\n"))
    local c = sim.client { proxy = "http://agent:p%40s+s@127.0.0.1:" .. px.port, retries = 0 }
    c:request("GET", "/plus2")
    c:close()
    assert(has_line(px.lines(), "^GET http://127%.0%.0%.1:" .. sim.port .. "/open/lora/v1/plus2 .*" .. want:gsub("%+", "%%+")),
      table.concat(px.lines(), "\n"))
  end)

  it("resty: https goes through a CONNECT tunnel and keeps it for the next request", function()
    local before = #px.lines()
    assert.are.equal("secure\nsecure\n", H.raw("GET", ng.url .. "/tls").body)
    local lines = px.lines()
    assert.are.equal(before + 1, #lines, "one tunnel for both requests")
    assert.matches("^CONNECT localhost:" .. tls.port .. " HTTP/1.1 auth=Basic ", lines[#lines])
  end)

  it("resty: says clearly what it cannot do", function()
    local body = H.raw("GET", ng.url .. "/misuse").body
    assert.matches("cannot take ca_file.*lua_ssl_trusted_certificate", body)
    assert.matches("http:// proxies only", body)
  end)

  it("a proxy that is not there is a network error before anything was sent, naming no credentials", function()
    local port = require("kinot.sim.launcher").free_port()
    local c = sim.client { proxy = "http://agent:secretpw@127.0.0.1:" .. port, retries = 0 }
    local _, err = c:lockers {}
    c:close()
    assert.are.same({ "network", true }, { err.kind, err.not_sent })
    assert.is_nil(tostring(err):find("secretpw", 1, true))
    local body = H.raw("GET", ng.url .. "/deadproxy?port=" .. port).body
    assert.matches("^network true connecting to proxy 127%.0%.0%.1:" .. port, body)
    assert.is_nil(body:find("secretpw", 1, true))
  end)

  it("a tunnel the proxy refuses is an error before anything was sent", function()
    local port = require("kinot.sim.launcher").free_port()
    local body = H.raw("GET", ng.url .. "/refused?port=" .. port).body
    assert.matches("^nil network true proxy 127%.0%.0%.1:%d+ refused the tunnel to localhost:" .. port .. ": 502", body)
    local h = core.http()
    local res, kind = h:request { url = "https://localhost:" .. port .. "/", proxy = px.url }
    h:close()
    assert.is_nil(res)
    assert.are.equal("network", kind)
  end)
end)
