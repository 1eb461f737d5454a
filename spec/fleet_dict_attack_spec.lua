-- kinot.fleet's lua_shared_dict store attacked by another than its
-- builder (docs/fleet.md, "Shared dict"), in a real nginx with two workers:
-- a serial crafted past what a key can name; ties (one stamp, other states)
-- racing across workers with the sweep marking the same devices stale and a
-- page holding one device twice.  Every end state is held against a
-- recount and against the newest stamps the spec itself sent.
local H = require "helpers"
local json = require "kinot.json"

local function get(ng, path) return H.raw("GET", ng.url .. path).body end

-- ------------------------------------------------------------ a serial past 2^53
local SN_HTTP = [[
  lua_shared_dict fleet_sn 4m;
  init_by_lua_block {
    local twin
    function sn_twin()
      twin = twin or require("kinot.fleet").new { store = "shared", dict = "fleet_sn", stale_after = false }
      return twin
    end
  }
]]
local SN_SERVER = [[
  location = /cb {
    content_by_lua_block {
      -- the callback's data as the platform's JSON brings it: sn a number
      local a = ngx.req.get_uri_args()
      local data = require("kinot.json").decode('{"sn":' .. a.sn .. ',"car_detected":' .. a.c ..
        ',"locked":1,"updated_at":"2026-12-01T00:00:' .. a.s .. 'Z"}')
      local v, err = sn_twin():apply { kind = "status_changed", device = "lock", sn = data.sn, data = data, verified = true }
      ngx.say(v or ("failed: " .. tostring(err)))
    }
  }
  location = /keys {
    content_by_lua_block {
      local out = {}
      for _, k in ipairs(ngx.shared.fleet_sn:get_keys(0)) do if k:sub(1, 2) == "d:" then out[#out + 1] = k end end
      table.sort(out)
      ngx.say(table.concat(out, " "))
    }
  }
]]

describe("kinot.fleet's shared dict, a serial past 2^53 #nginx", function()
  it("refuses it as no serial: two such devices never share one key", function()
    local ng = H.nginx { http = SN_HTTP, server = SN_SERVER, workers = 2 }
    finally(function() ng.stop() end)
    -- two devices, 1e20 and 3e20: LuaJIT's "%d" writes both (and any
    -- serial past 2^63) as -9223372036854775808
    local first = get(ng, "/cb?sn=100000000000000000000&c=1&s=10")
    local second = get(ng, "/cb?sn=300000000000000000000&c=0&s=20")
    local keys = get(ng, "/keys")
    assert.matches("^failed: .*serial", first, first .. second .. keys)
    assert.matches("^failed: .*serial", second, second .. keys)
    assert.are.equal("\n", keys)
    -- the largest serial a key holds (2^53 - 1) still applies
    assert.are.equal("added\n", get(ng, "/cb?sn=9007199254740991&c=1&s=10"))
  end)
end)

-- ------------------------------------------------------------ ties, the sweep, a page with a device twice
-- two workers: callbacks whose stamps collide often (one second, other
-- states: the later arrival wins), some pages holding one device twice,
-- while sweeps mark the same devices stale; three devices (the two workers
-- on one device at once, often), the first only stamps 90 s old and more
-- (stale once swept), the others fresh ones too
local TIE_HTTP = [[
  lua_shared_dict fleet_tie 8m;
  init_by_lua_block {
    SNS = {}
    for i = 1, 3 do SNS[i] = 419920000 + i end
    BASE = ${base}
    local twin
    function tie_twin()
      twin = twin or require("kinot.fleet").new { store = "shared", dict = "fleet_tie", stale_after = 60 }
      return twin
    end
    function tie_obj(sn, s, c, l)
      return { sn = sn, car_detected = c, locked = l, low_battery = 0, coil_fault = 0,
               updated_at = os.date("!%Y-%m-%dT%H:%M:%SZ", BASE + s) }
    end
  }
]]
local TIE_SERVER = [[
  location = /cb {
    content_by_lua_block {
      local twin = tie_twin()
      math.randomseed(tonumber(ngx.var.arg_seed))
      local sent = {}
      local function stamp(i)
        if i == 1 or math.random(2) == 1 then return math.random(0, 10) end
        return math.random(50, 60)
      end
      for n = 1, 300 do
        local i = math.random(#SNS)
        local sn = SNS[i]
        local page = {}
        for k = 1, (math.random(4) == 1 and 2 or 1) do
          local s, c, l = stamp(i), math.random(0, 1), math.random(0, 1)
          page[k] = tie_obj(sn, s, c, l)
          sent[#sent + 1] = sn .. ":" .. s .. ":" .. c .. ":" .. l
        end
        local out, err
        if #page == 1 then
          out, err = twin:apply { kind = "status_changed", device = "lock", sn = sn, data = page[1], verified = true }
        else
          out, err = twin:put("lock", page, "callback")
        end
        if not out then return ngx.say("failed: ", tostring(err)) end
        if n % 50 == 0 then ngx.sleep(0.001) end
      end
      ngx.say("ok ", table.concat(sent, " "))
    }
  }
  location = /sweep {
    content_by_lua_block {
      local twin = tie_twin()
      for _ = 1, 40 do
        local ev, err = twin:sweep()
        if not ev then return ngx.say("failed: ", tostring(err)) end
        ngx.sleep(0.003)
      end
      ngx.say("ok")
    }
  }
  location = /check {
    content_by_lua_block {
      package.path = "${root}/spec/support/?.lua;" .. package.path
      local model = require "fleet_model"
      local twin = tie_twin()
      assert(twin:sweep())
      local devices, events = {}, {}
      for _, sn in ipairs(SNS) do
        local d = twin:device(sn)
        if d then
          devices[tostring(sn)] = { updated_at = d.updated_at, c = d.state.car_detected, l = d.state.locked,
                                    stale = d.stale }
        end
      end
      local since
      repeat
        local page = twin:changes(since, 1000)
        for _, ev in ipairs(page.changes) do events[#events + 1] = { sn = ev.sn, change = ev.change } end
        local more = page.next ~= since and #page.changes > 0
        since = page.next
      until not more
      local s = twin:summary()
      ngx.say(require("kinot.json").encode { devices = devices, events = events, updates = s.updates,
        recount = model.recount(twin, SNS), summary = model.counted(s) })
    }
  }
]]

-- each flag's on / off events alternate and end at the device's state
local PAIRS = { occupied = { "occupied", "free", "c" }, free = { "occupied", "free", "c" },
                up = { "up", "down", "l" }, down = { "up", "down", "l" },
                stale = { "stale", "alive", "stale" }, alive = { "stale", "alive", "stale" } }
local function chains(events, devices)
  local last = {}
  for _, ev in ipairs(events) do
    local sn = tostring(math.floor(ev.sn))
    local p = assert(PAIRS[ev.change], ev.change)
    local key = sn .. p[3]
    assert.are_not.equal(last[key], ev.change, "twice in a row: " .. sn .. " " .. ev.change)
    last[key] = ev.change
  end
  for sn, d in pairs(devices) do
    local on = { c = d.c == 1, l = d.l == 1, stale = d.stale == true }
    for field, pair in pairs { c = { "occupied", "free" }, l = { "up", "down" }, stale = { "stale", "alive" } } do
      local l = last[sn .. field]
      if l then assert.are.equal(on[field] and pair[1] or pair[2], l, sn .. " " .. field) end
    end
  end
end

-- the bodies of urls fetched `parallel` at a time, one a line (each in a
-- file of its own: curls writing one pipe at once interleave past 4 KiB)
local function run_all(urls, parallel)
  local dir = H.tmpdir("dict_attack")
  local lines = {}
  for i, url in ipairs(urls) do lines[i] = dir .. "/" .. i .. " " .. url end
  H.write(dir .. "/list", table.concat(lines, "\n") .. "\n")
  assert(H.execute("xargs -P " .. parallel .. " -n 2 curl -s -o < " .. dir .. "/list"))
  local out = {}
  for i = 1, #urls do out[i] = H.read(dir .. "/" .. i) or "" end
  H.execute("rm -rf " .. dir)
  return table.concat(out)
end

describe("kinot.fleet's shared dict, ties racing across two workers with the sweep #nginx", function()
  it("ends each device at a state of its newest stamp, each change once, the summary equal to a recount", function()
    local base = os.time() - 100
    local ng = H.nginx { http = (TIE_HTTP:gsub("%${base}", base)), server = (TIE_SERVER:gsub("%${root}", H.root)),
                         workers = 2 }
    finally(function() ng.stop() end)
    local urls = {}
    for i = 1, 12 do urls[#urls + 1] = ng.url .. "/cb?seed=" .. i end
    for _ = 1, 4 do urls[#urls + 1] = ng.url .. "/sweep" end
    local out = run_all(urls, 8)
    local newest, states, sent = {}, {}, 0
    for line in out:gmatch("[^\n]+") do
      assert.matches("^ok", line, line:sub(1, 300) .. ng.log())
      for sn, s, c, l in line:gmatch("(%d+):(%d+):(%d):(%d)") do
        sent = sent + 1
        s = tonumber(s)
        if s > (newest[sn] or -1) then newest[sn], states[sn] = s, {} end
        if s == newest[sn] then states[sn][c .. l] = true end
      end
    end
    local doc = json.decode(get(ng, "/check"))
    for sn, s in pairs(newest) do
      local d = assert(doc.devices[sn], sn)
      assert.are.equal(os.date("!%Y-%m-%dT%H:%M:%SZ", base + s), d.updated_at, sn)
      assert.is_true(states[sn][math.floor(d.c) .. math.floor(d.l)] or false, sn .. " ended at a state never sent at its newest stamp")
      assert.are.equal(s <= 10, d.stale == true, sn .. " stale")
    end
    chains(doc.events, doc.devices)
    local u = doc.updates
    assert.are.equal(sent, u.added + u.applied + u.missed + u.out_of_order + u.duplicate)
    assert.is_true(u.out_of_order > 0 and u.applied > 0)
    assert.are.same(doc.recount, doc.summary)
    -- a wait for a device's lock sleeps a whole millisecond at least: a
    -- shorter one is ngx.sleep(0), which Debian's nginx (no delayed-events
    -- patch) warns of in the error log at each wait
    assert.is_nil(ng.log():find("ngx.sleep(0)", 1, true))
  end)
end)

-- ------------------------------------------------------------ a filter holding the flags' separator
describe("kinot.fleet's local stores, a devices filter holding the flags text's separator #unit", function()
  it("matches no device: 'A/1|occupied' is no group's name (a group cannot hold |)", function()
    local fleet = require "kinot.fleet"
    local T = os.date("!%Y-%m-%dT%H:%M:%SZ", 1796083200)
    local twin = fleet.new { store = "table", groups = { { sn = 419930001, zone = "A", level = "1" } },
                             stale_after = false }
    assert(twin:put("lock", { { sn = 419930001, car_detected = 1, locked = 1, low_battery = 1, coil_fault = 1,
                                updated_at = T } }, "scan"))
    assert.are.equal(1, twin:devices { group = "A/1" }.total)
    -- every flag the device has, after its group's in a crafted filter: the
    -- flags text "|...|group=A/1|X|...|" held one of them next to it
    local flags = { "all", "kind=lock", "lock", "space", "occupied", "up", "fault", "fault=coil_fault", "low_battery",
                    "t=1796083200" }
    for _, x in ipairs(flags) do
      assert.are.equal(0, twin:devices { group = "A/1|" .. x }.total, "group A/1|" .. x)
      assert.are.equal(0, twin:devices { fault = "coil_fault|" .. x }.total, "fault coil_fault|" .. x)
    end
  end)
end)

-- ------------------------------------------------------------ a dict full of other keys
-- the dict filled to the brim by other keys between two updates: the
-- second's record is as long as the one it replaces (nginx writes it in
-- place: "occupied" gone, "up" come, rs_si 6 characters longer), its
-- changes' entries in the log have no room.  Either the update is applied with
-- its change, or not at all (an error, and applied in full when tried again)
local FULL_HTTP = [[
  lua_shared_dict fleet_full 1m;
  init_by_lua_block {
    SN = 419950001
    local twin
    function full_twin()
      twin = twin or require("kinot.fleet").new { store = "shared", dict = "fleet_full", stale_after = false,
                                                   clock = function() return 1796083300 end }
      return twin
    end
  }
]]
local FULL_SERVER = [[
  location = /put {
    content_by_lua_block {
      local a = ngx.req.get_uri_args()
      local obj = { sn = SN, car_detected = tonumber(a.c), locked = tonumber(a.l), low_battery = 0, coil_fault = 0,
                    rs_si = tonumber(a.rs), updated_at = string.format("2026-12-01T00:00:%02dZ", tonumber(a.s)) }
      local out, err = full_twin():put("lock", { obj }, "callback")
      ngx.say(out and out[1].verdict or ("failed: " .. tostring(err)))
    }
  }
  location = /fill {
    content_by_lua_block {
      -- other keys, of every size nginx's slabs hold, until none fits;
      -- then a few small ones freed: room for the device's lock, none for
      -- a change's entry in the log
      local d, n = ngx.shared.fleet_full, 0
      for _, size in ipairs { 8192, 2048, 512, 128, 32, 8, 1 } do
        while d:safe_set("junk:" .. size .. ":" .. n, string.rep("j", size)) do n = n + 1 end
      end
      for i = 0, n, 1 do
        d:delete("junk:32:" .. i)
        d:delete("junk:8:" .. i)
        d:delete("junk:1:" .. i)
      end
      ngx.say(n)
    }
  }
  location = /unfill {
    content_by_lua_block {
      local d = ngx.shared.fleet_full
      for _, k in ipairs(d:get_keys(0)) do if k:sub(1, 5) == "junk:" then d:delete(k) end end
      ngx.say("ok")
    }
  }
  location = /check {
    content_by_lua_block {
      package.path = "${root}/spec/support/?.lua;" .. package.path
      local model = require "fleet_model"
      local twin = full_twin()
      local d = twin:device(SN)
      local changes = {}
      for _, ev in ipairs(twin:changes(nil, 1000).changes) do changes[#changes + 1] = ev.change end
      local s = twin:summary()
      ngx.say(require("kinot.json").encode { updated_at = d.updated_at, occupied = d.state.car_detected,
        changes = changes, recount = model.recount(twin, { SN }), summary = model.counted(s) })
    }
  }
]]

describe("kinot.fleet's shared dict, full of other keys between two updates #nginx", function()
  it("applies an update with its change or not at all: no change lost from the feed", function()
    local ng = H.nginx { http = FULL_HTTP, server = (FULL_SERVER:gsub("%${root}", H.root)), workers = 2 }
    finally(function() ng.stop() end)
    assert.are.equal("added\n", get(ng, "/put?s=1&c=0&l=1&rs=-90"))
    assert.are.equal("applied\n", get(ng, "/put?s=2&c=1&l=0&rs=-90"))
    assert.matches("^%d+", get(ng, "/fill"))
    local first = get(ng, "/put?s=3&c=0&l=1&rs=-90.12345")
    assert.are.equal("ok\n", get(ng, "/unfill"))
    local again = get(ng, "/put?s=3&c=0&l=1&rs=-90.12345")
    local doc = json.decode(get(ng, "/check"))
    -- applied at once with its change, or refused (dict full) then applied
    if first == "applied\n" then
      assert.are.equal("duplicate\n", again)
    else
      assert.matches("^failed: .*full", first)
      assert.are.equal("applied\n", again, first)
    end
    assert.are.equal("2026-12-01T00:00:03Z", doc.updated_at)
    assert.are.equal(0, doc.occupied)
    assert.are.same({ "down", "occupied", "free", "up" }, doc.changes, first)
    assert.are.same(doc.recount, doc.summary)
  end)
end)
