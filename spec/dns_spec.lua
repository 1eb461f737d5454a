-- The resty transport's own resolver (lua/kinot/transport/dns.lua) against
-- a hostile nameserver (spec/support/dns_hostile.lua, its own process):
-- answers with a wrong id, to another question, that are not responses, or
-- from another port are not taken; a malformed answer (compression
-- pointers in a loop, records past the end) neither hangs nor crashes the
-- worker, and everything stays under the request's deadline.
local cjson = require "cjson"
local launcher = require "kinot.sim.launcher"
local H = require "helpers"

local function enc(s) return (s:gsub("[^%w%-_.~]", function(c) return string.format("%%%02X", c:byte()) end)) end

describe("the resty resolver against a hostile nameserver #nginx #peer", function()
  local ns_pid, ns_port, client
  setup(function()
    ns_port = launcher.free_port()
    ns_pid = H.lua_peer("dns_hostile.lua", ns_port)
    require("kinot.core").sleep(0.3) -- (UDP: nothing to wait for but the bind)
    client = H.nginx { server = [[
      location = /resolve { content_by_lua_block {
        local a = ngx.req.get_uri_args()
        local dns = require "kinot.transport.dns"
        ngx.update_time()
        local t0 = ngx.now()
        local addr, kind, msg = dns.resolve(a.name, dns.servers { a.ns }, t0 + tonumber(a.timeout))
        ngx.update_time()
        ngx.say(require("cjson").encode { addr = addr, kind = kind, msg = msg, took = ngx.now() - t0 })
      } }
    ]] }
  end)
  teardown(function()
    if client then client.stop() end
    if ns_pid then os.execute("kill " .. ns_pid .. " 2>/dev/null") end
  end)

  local function resolve(name, timeout)
    local q = "/resolve?name=" .. enc(name) .. "&ns=" .. enc("127.0.0.1:" .. ns_port) .. "&timeout=" .. (timeout or 2)
    return cjson.decode(H.raw("GET", client.url .. q).body)
  end

  it("takes only the answer to its own query (id, question, response bit, source port)", function()
    for i = 1, 3 do
      local r = resolve("api" .. i .. ".kinot-spoof.example")
      assert.are.equal("127.0.0.1", r.addr, cjson.encode(r))
    end
  end)

  it("a nameserver that sends only forgeries: a timeout at the deadline, no forged address", function()
    local r = resolve("silent.kinot-spoof.example", 1)
    assert.is_nil(r.addr, cjson.encode(r))
    assert.are.equal("timeout", r.kind, cjson.encode(r))
    assert.is_true(r.took < 1.5, cjson.encode(r))
  end)

  it("pointer loops and records past the end: an error, at once", function()
    local r = resolve("loop.kinot-spoof.example", 2)
    assert.is_nil(r.addr, cjson.encode(r))
    assert.are.equal("network", r.kind, cjson.encode(r))
    assert.matches("malformed", r.msg)
  end)
end)
