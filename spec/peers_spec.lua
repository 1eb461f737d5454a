-- Odd but lawful HTTP peers against the resty transport (second wave,
-- attack 11): an HTTP/1.0 server, which ends its connection after each
-- answer unless it says keep-alive, and a Content-Length that is not plain
-- digits.  The peer is a real nginx writing raw bytes (ngx.req.socket);
-- the transport runs in a second real nginx, two requests in a row on one
-- transport, so that a connection wrongly kept in the pool is taken again.
local cjson = require "cjson"
local H = require "helpers"

local function enc(s) return (s:gsub("[^%w%-_.~]", function(c) return string.format("%%%02X", c:byte()) end)) end

describe("resty against odd HTTP peers #nginx #peer", function()
  local peer, client
  setup(function()
    peer = H.nginx { server = [[
      # an HTTP/1.0 answer without keep-alive; the server drains a while,
      # then ends the connection without reading what came meanwhile
      location = /h10 { content_by_lua_block {
        local s = ngx.req.socket(true)
        s:send(ngx.var.arg_close and "HTTP/1.1 200 OK\r\nConnection: TE, Close\r\nContent-Length: 2\r\n\r\nok" or
               "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        ngx.sleep(0.3)
        ngx.exit(444)
      } }
      location = /chunk { content_by_lua_block {
        local s = ngx.req.socket(true)
        s:send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" ..
               ngx.unescape_uri(ngx.var.arg_line) .. "\r\n" .. string.rep("z", 16) .. "\r\n0\r\n\r\n")
      } }
      location = /len { content_by_lua_block { ngx.print(ngx.var.http_content_length or "none") } }
      location = /cl { content_by_lua_block {
        local s = ngx.req.socket(true)
        s:send("HTTP/1.1 200 OK\r\nContent-Length: " .. ngx.var.arg_cl .. "\r\n\r\n" .. string.rep("z", 16))
        ngx.sleep(0.3)
        ngx.exit(444)
      } }
    ]] }
    client = H.nginx { server = [[
      location = /run { content_by_lua_block {
        local a = ngx.req.get_uri_args()
        local t = require("kinot.transport.resty").new { max_body = 1000 }
        local out = {}
        for i = 1, 2 do
          local res, kind, msg = t.send { method = "GET", url = a.url, timeout = 2 }
          out[i] = res and { status = res.status, body = res.body } or { kind = kind, msg = msg }
        end
        ngx.say(require("cjson").encode(out))
      } }
      location = /send { content_by_lua_block {
        local a = ngx.req.get_uri_args()
        local res, kind, msg = require("kinot.transport.resty").new {}.send { method = a.method, url = a.url, timeout = 2 }
        ngx.say(require("cjson").encode(res and { status = res.status, body = res.body } or { kind = kind, msg = msg }))
      } }
    ]] }
  end)
  teardown(function()
    if client then client.stop() end
    if peer then peer.stop() end
  end)

  local function run(path)
    return cjson.decode(H.raw("GET", client.url .. "/run?url=" .. enc(peer.url .. path)).body)
  end

  it("does not pool the connection of an HTTP/1.0 answer without keep-alive, nor of one saying close among others", function()
    for _, path in ipairs { "/h10", "/h10?close=1" } do
      local out = run(path)
      for i = 1, 2 do
        assert.are.equal(200, out[i].status, path .. " " .. i .. ": " .. tostring(out[i].kind) .. " " .. tostring(out[i].msg))
        assert.are.equal("ok", out[i].body)
      end
    end
  end)

  -- RFC 9110 8.6: a POST without a body still says Content-Length: 0, as
  -- libcurl does; some front ends answer 411 Length Required otherwise
  it("says Content-Length: 0 on a POST, PUT or PATCH without a body, as libcurl does", function()
    local core = require "kinot.core"
    local h = core.http()
    for _, m in ipairs { "POST", "PUT", "PATCH" } do
      local out = cjson.decode(H.raw("GET", client.url .. "/send?method=" .. m .. "&url=" .. enc(peer.url .. "/len")).body)
      local viacurl = assert(h:request { method = m, url = peer.url .. "/len" })
      assert.are.equal("0", viacurl.body, m .. " over libcurl")
      assert.are.equal("0", out.body, m .. " over resty: " .. cjson.encode(out))
    end
    h:close()
  end)

  -- (attack 11: resty read "0x10" as a last chunk, "0", and answered 200
  -- with an empty body; the 16 bytes were taken for trailers)
  it("refuses a chunk-size line that is not hex digits (and an extension); never a body cut short", function()
    local h = require("kinot.core").http()
    for _, line in ipairs { "0x10", "10x", "+10", "-10", "1 0" } do
      local out = cjson.decode(H.raw("GET", client.url .. "/send?method=GET&url=" ..
        enc(peer.url .. "/chunk?line=" .. enc(line))).body)
      assert.are.equal("network", out.kind, line .. " over resty: " .. cjson.encode(out))
      -- libcurl reads what follows the digits as an extension ("10x" is 16):
      -- what it must never do is answer with the body cut short
      local res = h:request { url = peer.url .. "/chunk?line=" .. enc(line), timeout = 2 }
      assert.is_true(res == nil or res.body == string.rep("z", 16), line .. " over libcurl: " .. tostring(res and res.body))
    end
    for _, line in ipairs { "10", "10;ext=1", "10 ;ext" } do
      local out = cjson.decode(H.raw("GET", client.url .. "/send?method=GET&url=" ..
        enc(peer.url .. "/chunk?line=" .. enc(line))).body)
      assert.are.equal(string.rep("z", 16), out.body, line .. ": " .. cjson.encode(out))
    end
    h:close()
  end)

  it("takes a Content-Length of digits only (not 0x10, 1e1, +5 nor 16 16)", function()
    for _, cl in ipairs { "0x10", "1e1", "%2B5", "16,%2016" } do
      local out = run("/cl?cl=" .. cl)
      for i = 1, 2 do
        assert.are.equal("network", out[i].kind, cl .. " " .. i .. ": " .. cjson.encode(out[i]))
        assert.matches("bad Content%-Length", out[i].msg)
      end
    end
    local out = run("/cl?cl=16")
    assert.are.equal(string.rep("z", 16), out[1].body)
  end)
end)

-- A pooled connection is only as good as the checks made when it was
-- opened: one a client opened without verifying TLS, or through a tunnel
-- the proxy granted to other credentials, is not one for another client
-- in the same worker (attack 11: both were taken from the pool).
describe("resty's keep-alive pool and who opened the connection #nginx #peer", function()
  local tls, px, client
  setup(function()
    tls = H.tls_nginx("127.0.0.1") -- self-signed: the client nginx does not trust it
    px = H.proxy()
    client = H.nginx { server = [[
      location = /run { content_by_lua_block {
        local a = ngx.req.get_uri_args()
        local resty = require "kinot.transport.resty"
        local out = {}
        for i, o in ipairs(require("cjson").decode(a.opts)) do
          local tcp = ngx.socket.tcp
          if o.raise_in_handshake then
            ngx.socket.tcp = function()
              local s = tcp()
              return setmetatable({ sslhandshake = function() assert(false) end },
                { __index = function(_, k) return function(_, ...) return s[k](s, ...) end end })
            end
          end
          local ok, res, kind, msg = pcall(resty.new(o).send, { method = "GET", url = a.url, timeout = 2 })
          ngx.socket.tcp = tcp
          if not ok then res, kind, msg = nil, "raised", tostring(res) end
          out[i] = res and { status = res.status } or { kind = kind, msg = msg }
        end
        ngx.say(require("cjson").encode(out))
      } }
    ]] }
  end)
  teardown(function()
    for _, s in ipairs { client, px, tls } do if s then s.stop() end end
  end)

  local function run(url, opts)
    local q = "/run?url=" .. enc(url) .. "&opts=" .. enc(cjson.encode(opts))
    local res = H.raw("GET", client.url .. q)
    assert.are.equal(200, res.status, res.body .. client.log())
    return cjson.decode(res.body)
  end

  it("a connection opened without verifying TLS does not serve a client that verifies", function()
    local out = run(tls.url .. "/", { { verify_tls = false }, { verify_tls = true } })
    assert.are.equal(200, out[1].status, cjson.encode(out[1]))
    assert.are.equal("tls", out[2].kind, "the verifying client got: " .. cjson.encode(out[2]))
  end)

  -- The raise itself comes from a race (a handshake that completes within
  -- one call, on a loaded machine): out of reach on demand, so the socket's
  -- sslhandshake is replaced by one that raises as resty.core's does.
  it("a handshake that raises (resty.core's assertion) is a tls error, not a raise out of send", function()
    local out = run(tls.url .. "/", { { verify_tls = true, raise_in_handshake = true } })
    assert.are.equal("tls", out[1].kind, cjson.encode(out[1]))
    assert.matches("assertion failed", out[1].msg)
  end)

  it("a tunnel the proxy granted to some credentials does not serve others", function()
    local before = #px.lines()
    local out = run("https://127.0.0.1:" .. tls.port .. "/", {
      { verify_tls = false, proxy = "http://alice:pw1@127.0.0.1:" .. px.port },
      { verify_tls = false, proxy = "http://127.0.0.1:" .. px.port },
    })
    assert.are.equal(200, out[1].status, cjson.encode(out[1]))
    assert.are.equal(200, out[2].status, cjson.encode(out[2]))
    local lines = px.lines()
    assert.are.equal(before + 2, #lines, "one tunnel each: " .. table.concat(lines, "\n"))
    assert.matches(" auth=Basic ", lines[before + 1])
    assert.is_nil(lines[before + 2]:find("auth=", 1, true), lines[before + 2])
  end)
end)
