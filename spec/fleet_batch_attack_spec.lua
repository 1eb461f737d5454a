-- kinot.fleet's stores, a batch (a scan's page) attacked half way.
-- The shared dict moves a batch's counters once, after its records
-- (docs/fleet.md): a worker killed (SIGKILL) while the batch waits for a
-- device another holds, or a device the dict cannot keep (a number JSON
-- cannot carry: the platform's 1e999) raising mid-batch, must not leave the
-- counters short of the records written before.  A real nginx (one worker:
-- the master starts another after the kill; the dict outlives it).
local H = require "helpers"
local json = require "kinot.json"

local HTTP = [[
  lua_shared_dict fleet_kill 4m;
  init_by_lua_block {
    SNS = {}
    for i = 1, 20 do SNS[i] = 419800000 + i end
    local twin
    function kill_twin()
      twin = twin or require("kinot.fleet").new { store = "shared", dict = "fleet_kill", stale_after = false }
      return twin
    end
  }
]]

local SERVER = [[
  location = /pid { content_by_lua_block { ngx.say(ngx.worker.pid()) } }
  location = /hold {
    content_by_lua_block {
      -- device sn's lock, held by another (a worker elsewhere in its update)
      ngx.shared.fleet_kill:set("l:" .. ngx.var.arg_sn, "elsewhere:1", 30)
      ngx.say("held")
    }
  }
  location = /page {
    content_by_lua_block {
      local page = {}
      for i, sn in ipairs(SNS) do page[i] = { sn = sn, car_detected = 1, updated_at = "2026-12-01T00:00:00Z" } end
      local bad = tonumber(ngx.var.arg_bad)
      if bad then page[bad].rs_si = 1e999 end
      local twin = kill_twin()
      local ok, res = pcall(twin.put, twin, "sensor", page, "scan")
      ngx.say(ok and (res and "put" or "failed") or "raised")
    }
  }
  location = /check {
    content_by_lua_block {
      package.path = "${root}/spec/support/?.lua;" .. package.path
      local model = require "fleet_model"
      local twin = kill_twin()
      local want, got = model.recount(twin, SNS), model.counted(twin:summary())
      ngx.say(require("kinot.json").encode { recount = want, summary = got })
    }
  }
]]

local function start()
  return H.nginx { http = HTTP, server = (SERVER:gsub("%${root}", H.root)) }
end

local function check(ng)
  return json.decode(H.raw("GET", ng.url .. "/check").body)
end

describe("kinot.fleet's shared dict, a batch attacked half way #nginx", function()
  it("keeps the counters equal to a recount when the worker is killed while a batch waits for a lock", function()
    local ng = start()
    finally(function() ng.stop() end)
    assert.are.equal("held\n", H.raw("GET", ng.url .. "/hold?sn=419800015").body)
    local pid = tonumber(H.raw("GET", ng.url .. "/pid").body)
    -- the page: devices 1 to 14 written, then it waits (up to 5 s) for device 15
    os.execute("curl -s -m 10 -o /dev/null '" .. ng.url .. "/page' &")
    os.execute("sleep 0.8")
    local doc = check(ng)
    assert.are.equal(14, doc.recount.sensors, "the page is not waiting at device 15")
    local killed = os.execute("kill -9 " .. pid)
    assert.is_true(killed == true or killed == 0)
    local now_pid
    for _ = 1, 50 do
      os.execute("sleep 0.1")
      local ok, r = pcall(H.raw, "GET", ng.url .. "/pid") -- (refused while the master starts another)
      now_pid = ok and tonumber(r.body)
      if now_pid and now_pid ~= pid then break end
    end
    assert.are_not.equal(pid, now_pid)
    doc = check(ng)
    assert.are.equal(14, doc.recount.sensors)
    assert.are.same(doc.recount, doc.summary)
  end)

  it("keeps the counters equal to a recount when a device raises mid-batch", function()
    local ng = start()
    finally(function() ng.stop() end)
    assert.are.equal("raised\n", H.raw("GET", ng.url .. "/page?bad=15").body)
    local doc = check(ng)
    assert.are.equal(14, doc.recount.sensors)
    assert.are.same(doc.recount, doc.summary)
  end)
end)
