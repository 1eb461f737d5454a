-- The C core's HTTP over real nginx: keep-alive, both timeouts, the size
-- cap, TLS verification, and the curl-multi batch path.
local core = require "kinot.core"
local socket = require "socket"
local H = require "helpers"

describe("kinot.core http against real nginx #nginx", function()
  local ng, http
  setup(function()
    ng = H.nginx {
      server = [[
        location = /conn { return 200 "$connection $connection_requests"; }
        location = /big { content_by_lua_block { ngx.print(string.rep("x", 100000)) } }
        location = /chunked { content_by_lua_block { for i = 1, 50 do ngx.print(string.rep("y", 1000)); ngx.flush(true) end } }
        location = /slow { content_by_lua_block { ngx.sleep(tonumber(ngx.var.arg_s) or 0.2); ngx.say("late") } }
        location = /echo { content_by_lua_block {
          ngx.req.read_body()
          local h = ngx.req.get_headers()
          ngx.header["X-Got-Ct"] = h["content-type"] or "none"
          ngx.header["X-Got-Expect"] = h["expect"] or "none"
          ngx.header["X-Multi"] = {"a", "b"}
          ngx.print(ngx.req.get_method(), " ", ngx.req.get_body_data() or "")
        } }
      ]],
    }
    http = core.http()
  end)
  teardown(function()
    http:close()
    ng.stop()
  end)

  it("keeps one connection alive across many requests", function()
    local first
    for i = 1, 20 do
      local res = assert(http:request { url = ng.url .. "/conn" })
      local conn, n = res.body:match("(%d+) (%d+)")
      first = first or conn
      assert.are.equal(first, conn)
      assert.are.equal(tostring(i), n)
    end
  end)

  it("returns status, lower-cased headers (repeats joined) and body", function()
    local res = assert(http:request { method = "POST", url = ng.url .. "/echo", body = '{"a":1}',
                                      headers = { ["Content-Type"] = "application/json" } })
    assert.are.equal(200, res.status)
    assert.are.equal("POST {\"a\":1}", res.body)
    assert.are.equal("application/json", res.headers["x-got-ct"])
    assert.are.equal("none", res.headers["x-got-expect"])
    assert.are.equal("a, b", res.headers["x-multi"])
  end)

  -- (attack 11: a HEAD went as a custom method, and libcurl waited for the
  -- body its Content-Length announced until the timeout)
  it("HEAD takes the head alone; PUT and DELETE go as asked", function()
    local res, kind, msg = http:request { method = "HEAD", url = ng.url .. "/conn", timeout = 2 }
    assert.is_table(res, tostring(kind) .. ": " .. tostring(msg))
    assert.are.equal(200, res.status)
    assert.are.equal("", res.body)
    assert(http:request { url = ng.url .. "/conn" }) -- the connection is fit for the next request
    for _, m in ipairs { "PUT", "DELETE" } do
      local r = assert(http:request { method = m, url = ng.url .. "/echo", body = m == "PUT" and "x" or nil, timeout = 2 })
      assert.are.equal(m .. (m == "PUT" and " x" or " "), r.body)
    end
  end)

  it("sends no Content-Type of libcurl's own with a body", function()
    local res = assert(http:request { method = "POST", url = ng.url .. "/echo", body = "x" })
    assert.are.equal("none", res.headers["x-got-ct"])
  end)

  it("caps the response size: too_large, for known and chunked lengths", function()
    local res, kind, msg = http:request { url = ng.url .. "/big", max_body = 1000 }
    assert.is_nil(res)
    assert.are.equal("too_large", kind)
    assert.matches("1000%-byte cap", msg)
    res, kind = http:request { url = ng.url .. "/chunked", max_body = 10000 }
    assert.is_nil(res)
    assert.are.equal("too_large", kind)
    assert.is_truthy(http:request { url = ng.url .. "/big", max_body = 100000 })
  end)

  it("gives up after the total timeout on a slow answer", function()
    local t0 = core.monotonic()
    local res, kind, _, not_sent = http:request { url = ng.url .. "/slow?s=3", timeout = 0.3 }
    assert.is_nil(res)
    assert.are.equal("timeout", kind)
    assert.is_false(not_sent)
    assert.is_true(core.monotonic() - t0 < 1.5)
  end)

  it("gives up after the total timeout on a listener that never answers", function()
    local srv = assert(socket.bind("127.0.0.1", 0))
    local _, port = srv:getsockname()
    local t0 = core.monotonic()
    local res, kind = http:request { url = "http://127.0.0.1:" .. port .. "/", timeout = 0.3, connect_timeout = 1 }
    srv:close()
    assert.is_nil(res)
    assert.are.equal("timeout", kind)
    assert.is_true(core.monotonic() - t0 < 1.5)
  end)

  it("gives up after the connect timeout when the connection is never accepted", function()
    local never = H.never_accepting() -- (the kernel drops further SYNs)
    local port = never.port
    local t0 = core.monotonic()
    local res, kind, msg, not_sent = http:request { url = "http://127.0.0.1:" .. port .. "/", connect_timeout = 0.3, timeout = 5 }
    local took = core.monotonic() - t0
    never.stop()
    assert.is_nil(res)
    assert.are.equal("timeout", kind)
    assert.matches("connect", msg:lower())
    assert.is_true(not_sent)
    assert.is_true(took < 2, "took " .. took)
  end)

  it("says network and not_sent when the connection is refused", function()
    local srv = assert(socket.bind("127.0.0.1", 0))
    local _, port = srv:getsockname()
    srv:close()
    local res, kind, msg, not_sent = http:request { url = "http://127.0.0.1:" .. port .. "/" }
    assert.is_nil(res)
    assert.are.equal("network", kind)
    assert.matches("refused", msg:lower())
    assert.is_true(not_sent)
  end)

  it("refuses header injection before sending anything", function()
    assert.has_error(function()
      http:request { url = ng.url .. "/echo", headers = { ["X-A"] = "1\r\nX-B: 2" } }
    end, "kinot: header 'X-A' value contains CR or LF")
  end)

  it("runs a batch concurrently over curl-multi, each result in its place", function()
    local reqs = {}
    for i = 1, 8 do reqs[i] = { url = ng.url .. "/slow?s=0.3" } end
    reqs[5] = { url = ng.url .. "/big", max_body = 10 }
    local t0 = core.monotonic()
    local out = http:request_many(reqs)
    local took = core.monotonic() - t0
    assert.are.equal(8, #out)
    for i = 1, 8 do
      if i == 5 then
        assert.are.equal("too_large", out[i].error)
      else
        assert.are.equal(200, out[i].status)
        assert.are.equal("late\n", out[i].body)
      end
    end
    assert.is_true(took < 1.2, "8 x 0.3 s took " .. took .. " s: not concurrent")
  end)

  it("closes idempotently (close, then collection)", function()
    local h = core.http()
    h:close()
    h:close()
    assert.has_error(function() h:request { url = ng.url } end, "kinot: http handle is closed")
  end)
end)

describe("kinot.core http over TLS #nginx", function()
  local ng
  setup(function() ng = H.tls_nginx("127.0.0.1") end)
  teardown(function() ng.stop() end)

  it("refuses a self-signed certificate by default", function()
    local h = core.http()
    local res, kind, msg = h:request { url = ng.url .. "/" }
    h:close()
    assert.is_nil(res)
    assert.are.equal("tls", kind)
    assert.matches("ca_file", msg)
  end)

  it("trusts it when ca_file names it", function()
    local h = core.http()
    local res = assert(h:request { url = ng.url .. "/", ca_file = ng.cert })
    h:close()
    assert.are.equal("secure", res.body)
  end)

  it("goes through a client with verify_tls and ca_file", function()
    local kinot = require "kinot"
    local c = kinot.new { app_key = "k", app_secret = "s", endpoint = ng.url .. "/open/lora/v1", retries = 0 }
    local _, err = c:lockers {}
    assert.are.equal("tls", err.kind)
    assert.is_false(err.retryable)
    c:close()
  end)
end)
