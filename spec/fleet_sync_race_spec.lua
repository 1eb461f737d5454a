-- kinot.fleet: a sync racing a callback (docs/fleet.md).  A sync lists the
-- platform's locks page by page (slowly here: the simulator answers each
-- page after 0.3 s) while a callback brings a device the listing did not
-- hold: a device the platform registered after its pages were read.  The
-- sync's gone pass judges by a listing older than that callback: it must
-- not mark the device gone (the next sync, which lists after it, judges it).
-- Real parts: kinot sim, nginx, the twin in its shared dict, and in Redis.
local H = require "helpers"

local SERVER = [[
  location = /sync {
    content_by_lua_block {
      local report, err = twin():sync(kinot_client())
      ngx.say(require("cjson").encode(report or { err = tostring(err) }))
    }
  }
  location = /cb {
    content_by_lua_block {
      local sn = tonumber(ngx.var.arg_sn)
      local verdict, err = twin():apply { kind = "status_changed", device = "lock", sn = sn, verified = true,
        data = { sn = sn, car_detected = 1, locked = 0, updated_at = os.date("!%Y-%m-%dT%H:%M:%SZ") } }
      ngx.say(verdict or tostring(err))
    }
  }
  location = /device {
    content_by_lua_block {
      local d = twin():device(tonumber(ngx.var.arg_sn))
      ngx.say(d and (d.gone and "gone" or "live") or "none")
    }
  }
]]

local function host(sim, redis_url)
  return H.nginx {
    http = [[
      lua_shared_dict race_fleet 4m;
      init_by_lua_block {
        local t
        function twin()
          t = t or require("kinot.fleet").new { store = ]] .. (redis_url and '"redis"' or '"shared"') ..
          [[, dict = "race_fleet", redis = ]] .. (redis_url and ("%q"):format(redis_url) or "nil") .. [[ }
          return t
        end
        function kinot_client()
          return require("kinot").new { app_key = "]] .. sim.app_key .. [[", app_secret = "]] .. sim.app_secret ..
            [[", endpoint = "]] .. sim.endpoint .. [[", timeout = 10 }
        end
      }
    ]],
    server = SERVER,
  }
end

local function race(sim, ng)
  local new_sn = 419799999
  sim.fault { kind = "latency", latency = 0.3, endpoint = "GET /lockers", share = 1 }
  local out = os.tmpname()
  os.execute("curl -s -m 30 -o " .. out .. " '" .. ng.url .. "/sync' &")
  H.wait_for(function() return false end, 0.4) -- the sync is reading its pages
  assert.are.equal("added\n", H.raw("GET", ng.url .. "/cb?sn=" .. new_sn).body)
  local report = H.wait_for(function()
    local f = io.open(out)
    local s = f and f:read("*a") or ""
    if f then f:close() end
    return s ~= "" and require("kinot.json").decode(s)
  end, 20)
  os.remove(out)
  assert.is_table(report)
  assert.is_nil(report.err, report.err)
  assert.are.equal(300, report.locks)
  assert.are.equal("live\n", H.raw("GET", ng.url .. "/device?sn=" .. new_sn).body,
    "a device whose callback came during the sync's listing was marked gone by it")
  assert.are.equal(0, report.gone)
  -- the next sync lists after the callback: the platform has no such device, it is gone now
  sim.call("DELETE", "/faults")
  local again = require("kinot.json").decode(H.raw("GET", ng.url .. "/sync").body)
  assert.are.equal(1, again.gone)
  assert.are.equal("gone\n", H.raw("GET", ng.url .. "/device?sn=" .. new_sn).body)
end

describe("kinot.fleet's sync racing a callback #sim #nginx", function()
  it("does not mark gone a device a callback brought during the listing (shared dict)", function()
    local sim, ng
    finally(function()
      if ng then ng.stop() end
      if sim then sim.stop() end
    end)
    sim = H.sim { locks = 300, sensors = 0 }
    ng = host(sim)
    race(sim, ng)
  end)
end)

describe("kinot.fleet's sync racing a callback, Redis #sim #nginx #redis", function()
  it("does not mark gone a device a callback brought during the listing (Redis)", function()
    local sim, ng, rs
    finally(function()
      if ng then ng.stop() end
      if sim then sim.stop() end
      if rs then rs.stop() end
    end)
    rs = require("redis_server").start()
    sim = H.sim { locks = 300, sensors = 0 }
    ng = host(sim, rs.url)
    race(sim, ng)
  end)
end)
