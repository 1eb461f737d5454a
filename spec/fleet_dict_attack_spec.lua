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
      -- the refused update took an id (its incr) it had no room to write:
      -- the feed waits for it GAP_WAIT seconds, timed from the next id's
      -- entry (the update applied again), whichever worker answers, then
      -- goes on past it (spec/fleet_feed_spec.lua)
      assert.are.same({ "down", "occupied" }, doc.changes)
      os.execute("sleep " .. require("kinot.fleet.local_store").GAP_WAIT + 0.3)
      doc = json.decode(get(ng, "/check"))
    end
    assert.are.equal("2026-12-01T00:00:03Z", doc.updated_at)
    assert.are.equal(0, doc.occupied)
    assert.are.same({ "down", "occupied", "free", "up" }, doc.changes, first)
    assert.are.same(doc.recount, doc.summary)
  end)
end)

-- ------------------------------------------------------------ SIGKILL mid-page
-- a worker applying pages (every device of each written under its lock) is
-- SIGKILLed, ten times: the locks it held expire (2 s; about one kill in
-- two leaves one, the next loader waits on it and is killed there, and
-- /touch waits it out), no record is torn (each decodes), and each kill
-- leaves the counters at most one page (20 devices) further off a recount
-- (docs/fleet.md: a kill inside nginx's own write of a record, about one in
-- 100, loses that record, still counted)
local KILL_HTTP = [[
  lua_shared_dict fleet_kill 16m;
  init_by_lua_block {
    SNS = {}
    for i = 1, 200 do SNS[i] = 419940000 + i end
    T0 = 1796083200
    local twin
    function kill_twin()
      twin = twin or require("kinot.fleet").new { store = "shared", dict = "fleet_kill", stale_after = false }
      return twin
    end
    function kill_obj(sn, s)
      return { sn = sn, car_detected = s % 2, locked = (s + sn) % 2, low_battery = 0, coil_fault = s % 3 == 0 and 1 or 0,
               updated_at = os.date("!%Y-%m-%dT%H:%M:%SZ", T0 + s) }
    end
  }
]]
local KILL_SERVER = [[
  location = /load {
    content_by_lua_block {
      local twin = kill_twin()
      ngx.shared.fleet_kill:set("loader", ngx.worker.pid())
      for s = 1, 100000 do
        local first = (s * 20) % #SNS
        local page = {}
        for k = 1, 20 do page[k] = kill_obj(SNS[first + k], s) end
        local out, err = twin:put("lock", page, "scan")
        if not out then return ngx.say("failed: ", tostring(err)) end
        ngx.shared.fleet_kill:set("pages", s)
        if s % 5 == 0 then ngx.sleep(0.001) end -- (the worker answers the spec's other requests)
      end
      ngx.say("ok")
    }
  }
  location = /loader {
    content_by_lua_block {
      -- (taken: a loader not started yet is no pid, never the last one's)
      local d = ngx.shared.fleet_kill
      ngx.say(d:get("loader") or "")
      d:delete("loader")
    }
  }
  location = /touch {
    content_by_lua_block {
      -- every device once more, newer than any the loader wrote (a lock the
      -- killed worker held: waited for until it expires)
      local twin = kill_twin()
      for _, sn in ipairs(SNS) do
        local out, err = twin:put("lock", { kill_obj(sn, 10000000 + sn % 2) }, "scan")
        if not out then return ngx.say("failed: ", tostring(err)) end
      end
      ngx.say("ok")
    }
  }
  location = /check {
    content_by_lua_block {
      package.path = "${root}/spec/support/?.lua;" .. package.path
      local model = require "fleet_model"
      local twin = kill_twin()
      local s = twin:summary()
      ngx.say(require("kinot.json").encode { recount = model.recount(twin, SNS), summary = model.counted(s) })
    }
  }
]]

local KILLS = 10

-- each count of got at most n off want's
local function within(want, got, n, path)
  for k, v in pairs(want) do
    if type(v) == "table" then within(v, got[k] or {}, n, path .. k .. ".")
    else assert.is_true(math.abs(v - (got[k] or 0)) <= n, path .. k .. ": recount " .. v .. ", summary " .. tostring(got[k])) end
  end
end

describe("kinot.fleet's shared dict, a worker SIGKILLed mid-page #nginx", function()
  it("its locks expire, no record torn, the counters at most a page further off each kill", function()
    local ng = H.nginx { http = KILL_HTTP, server = (KILL_SERVER:gsub("%${root}", H.root)), workers = 2 }
    finally(function() ng.stop() end)
    for kill = 1, KILLS do
      local loading = io.popen("curl -s " .. ng.url .. "/load")
      os.execute("sleep 0.4")
      local pid = tonumber(get(ng, "/loader"))
      assert.is_truthy(pid)
      assert(H.execute("kill -9 " .. pid))
      loading:read("*a")
      loading:close()
      local doc = json.decode(get(ng, "/check"))
      within(doc.recount, doc.summary, 20 * kill, "")
    end
    -- every device updated again, past any lock a killed worker left
    assert.are.equal("ok\n", get(ng, "/touch"))
    local doc = json.decode(get(ng, "/check"))
    within(doc.recount, doc.summary, KILLS * 20, "")
  end)
end)

-- ------------------------------------------------------------ nginx -s reload mid-sync
-- a sync of `kinot sim`'s 300 locks (each page answered after 0.4 s) in one
-- worker while nginx reloads: the old worker finishes the sync (a graceful
-- quit), the new workers share the dict; a second sync then, in a new
-- worker, finds every device a duplicate, the summary equal to a recount
local RELOAD_SERVER = [[
  location = /sync {
    content_by_lua_block {
      local report, err = twin():sync(kinot_client())
      report = report or { err = tostring(err) }
      report.exiting = ngx.worker.exiting() -- (the reload came during it)
      ngx.say(require("kinot.json").encode(report))
    }
  }
  location = /check {
    content_by_lua_block {
      package.path = "${root}/spec/support/?.lua;" .. package.path
      local model = require "fleet_model"
      local t = twin()
      local sns = {}
      local page, offset = nil, 0
      repeat
        page = t:devices { offset = offset, limit = 1000 }
        for _, d in ipairs(page.devices) do sns[#sns + 1] = d.sn end
        offset = offset + #page.devices
      until #page.devices == 0
      -- (the model counts two of a lock's four fault fields: all four here)
      local recount, faults = model.recount(t, sns), require("kinot.vocabulary").faults
      recount.fault = 0
      for _, sn in ipairs(sns) do
        local d, any = t:device(sn), false
        for _, f in ipairs(faults[d.kind] or {}) do any = any or d.state[f] == 1 end
        if any and not d.gone then recount.fault = recount.fault + 1 end
      end
      ngx.say(require("kinot.json").encode { n = #sns, recount = recount, summary = model.counted(t:summary()) })
    }
  }
]]

describe("kinot.fleet's shared dict, nginx reloaded mid-sync #sim #nginx", function()
  it("keeps every device once, counted once: the next sync finds nothing new", function()
    local sim, ng
    finally(function()
      if ng then ng.stop() end
      if sim then sim.stop() end
    end)
    sim = H.sim { locks = 300, sensors = 0 }
    ng = H.nginx { workers = 2, server = (RELOAD_SERVER:gsub("%${root}", H.root)), http = [[
      lua_shared_dict reload_fleet 8m;
      init_by_lua_block {
        local t
        function twin()
          t = t or require("kinot.fleet").new { store = "shared", dict = "reload_fleet" }
          return t
        end
        function kinot_client()
          return require("kinot").new { app_key = "]] .. sim.app_key .. [[", app_secret = "]] .. sim.app_secret ..
            [[", endpoint = "]] .. sim.endpoint .. [[", timeout = 10 }
        end
      }
    ]] }
    sim.fault { kind = "latency", latency = 0.4, endpoint = "GET /lockers", share = 1 }
    local out = os.tmpname()
    os.execute("curl -s -m 30 -o " .. out .. " '" .. ng.url .. "/sync' &")
    H.wait_for(function() return false end, 0.5) -- the sync is reading its pages
    assert(H.execute("nginx -p " .. ng.prefix .. " -c nginx.conf -e " .. ng.prefix .. "/error.log -s reload"))
    local first
    assert(H.wait_for(function()
      first = H.read(out)
      return first and first:find("}") ~= nil
    end, 20), "the sync in the old worker never answered")
    os.remove(out)
    first = json.decode(first)
    assert.is_nil(first.err, first.err)
    assert.are.equal(300, first.locks)
    assert.are.equal(300, first.added)
    assert.is_true(first.exiting)
    sim.fault { kind = "latency", latency = 0, endpoint = "GET /lockers", share = 0 }
    local second = json.decode(get(ng, "/sync"))
    assert.is_nil(second.err, second.err)
    assert.are.same({ 0, 0, 0, 300, 0 }, { second.added, second.applied, second.missed, second.duplicate, second.changes })
    local doc = json.decode(get(ng, "/check"))
    assert.are.equal(300, doc.n)
    assert.are.same(doc.recount, doc.summary)
  end)
end)
