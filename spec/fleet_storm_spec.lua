-- kinot.fleet's shared dict store under a storm from two nginx workers
-- (docs/fleet.md): scans, callbacks, gone marks and sweeps racing on a
-- dozen devices from many requests at once, in both workers, each worker
-- with its own twin (its own sweep cache, as kinot serve has).  After it:
-- the summary equals a full recount, and a sweep by either worker finds
-- stale every device silent for stale_after, whichever worker wrote it.
local H = require "helpers"

local SERVER = [[
  location = /storm {
    content_by_lua_block {
      local seed, steps = tonumber(ngx.var.arg_seed), tonumber(ngx.var.arg_steps)
      local twin = storm_twin()
      math.randomseed(seed)
      local rnd = math.random
      local bad
      for step = 1, steps do
        local sn = SNS[rnd(#SNS)]
        local kind = sn % 3 == 0 and "sensor" or "lock"
        local at = os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(twin.clock()) - rnd(0, 200))
        local obj = { sn = sn, car_detected = rnd(0, 1), locked = rnd(0, 1), coil_fault = rnd(0, 1) * rnd(0, 1),
                      low_battery = rnd(0, 1), rs_si = -90 - rnd(0, 40), updated_at = at }
        local op, ok, err = rnd(10)
        if op <= 4 then ok, err = twin:put(kind, { obj }, "scan")
        elseif op <= 7 then
          ok, err = twin:apply { kind = "status_changed", device = kind, sn = sn, data = obj, verified = true }
        elseif op == 8 then ok, err = twin:gone { sn }
        else ok, err = twin:sweep() end
        if not ok then bad = bad or ("step " .. step .. ": " .. tostring(err)) end
        if step % 7 == 0 then ngx.sleep(0.001) end
      end
      ngx.say(bad or "ok")
    }
  }
  location = /check {
    content_by_lua_block {
      package.path = "${root}/spec/support/?.lua;" .. package.path
      local model = require "fleet_model"
      local json = require "kinot.json"
      local twin = storm_twin()
      -- the clock moved on (or back): devices written young turn silent
      local skew = tonumber(ngx.var.arg_skew)
      if skew then ngx.shared.fleet_storm:incr("skew", skew, 0) end
      assert(twin:sweep())
      local now = twin.clock()
      local missed = {}
      for _, sn in ipairs(SNS) do
        local rec = twin.store:get(sn)
        if rec and not rec.gone and now - rec.t >= STALE and not rec.stale then missed[#missed + 1] = sn end
      end
      local want, got = model.recount(twin, SNS), model.counted(twin:summary())
      want.groups, got.groups = nil, nil
      ngx.say(json.encode { pid = ngx.worker.pid(), missed = missed, recount = want, summary = got })
    }
  }
]]

local HTTP = [[
  lua_shared_dict fleet_storm 4m;
  init_by_lua_block {
    REDIS = ${redis}
    STALE = 100
    SNS = {}
    for i = 1, 12 do SNS[i] = 419700000 + i end
    local twin
    function storm_twin()
      -- the twin's clock: nginx's, moved by the spec (the "skew" key)
      twin = twin or require("kinot.fleet").new { store = REDIS and "redis" or "shared", redis = REDIS,
        dict = "fleet_storm", stale_after = STALE,
        clock = function() return ngx.now() + (ngx.shared.fleet_storm:get("skew") or 0) end }
      return twin
    end
  }
]]

-- storm(held, redis_url): held.ng, the nginx (the caller's finally stops it)
local function storm(held, redis_url)
  local http = HTTP:gsub("%${redis}", redis_url and ("%q"):format(redis_url) or "nil")
  local ng = H.nginx { http = http, server = (SERVER:gsub("%${root}", H.root)), workers = 2 }
  held.ng = ng
  local json = require "kinot.json"
  for round = 1, 6 do
    -- 24 requests of 150 steps, 8 at a time, spread over both workers
    local cmd = "seq " .. (round * 100 + 1) .. " " .. (round * 100 + 24) .. " | xargs -P 8 -I{} curl -s '" ..
      ng.url .. "/storm?steps=150&seed={}'"
    local p = io.popen(cmd)
    local out = p:read("*a")
    p:close()
    local _, oks = out:gsub("ok\n", "")
    assert.are.equal(24, oks, out .. ng.log())
    -- checks until both workers have swept (nginx gives a connection to either), 40 at most
    local pids, seen = {}, 0
    for i = 1, 40 do
      if i > 12 and seen >= 2 then break end
      -- the clock 40 s on at the first check of a round, back 1 s at the third
      local skew = i == 1 and "?skew=40" or i == 3 and "?skew=-1" or ""
      local doc = json.decode(H.raw("GET", ng.url .. "/check" .. skew).body)
      if not pids[doc.pid] then seen = seen + 1 end
      pids[doc.pid] = true
      assert.are.same({}, doc.missed, "worker " .. doc.pid .. "'s sweep left silent devices not stale")
      assert.are.same(doc.recount, doc.summary)
    end
  end
end

describe("kinot.fleet in a shared dict under a storm from two workers #nginx #slow", function()
  it("keeps the summary equal to a recount, and every worker's sweep finds every silent device", function()
    local held = {}
    finally(function() if held.ng then held.ng.stop() end end)
    storm(held)
  end)
end)

describe("kinot.fleet in Redis under a storm from two workers #nginx #redis #slow", function()
  it("keeps the summary equal to a recount, and every worker's sweep finds every silent device", function()
    local rs, held = require("redis_server").start(), {}
    finally(function()
      if held.ng then held.ng.stop() end
      rs.stop()
    end)
    storm(held, rs.url)
  end)
end)
