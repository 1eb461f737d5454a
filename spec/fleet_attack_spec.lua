-- Attacks on the live twin's promises (kinot.fleet, kinot serve): a pid
-- file naming a directory that is not a server's, a second daemon on a live
-- pid file, hostile groups files, a lua_shared_dict that fills up under the
-- twin.  Real parts: bin/kinot, a real nginx.
local H = require "helpers"
local launcher = require "kinot.sim.launcher"
local errors = require "kinot.errors"

local LUA = rawget(_G, "jit") and "luajit" or "lua5.4"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  return out, tonumber(out:match("rc=(%d+)%s*$"))
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

describe("kinot serve's pid file, attacked #cli #nginx", function()
  it("stop never removes a directory the pid file names unless it is a kinot serve's", function()
    local p = io.popen("mktemp -d /tmp/kinot-attack.XXXXXX")
    local dir = p:read("*l")
    p:close()
    local pid_file = dir .. "/serve.pid"
    local victim = dir .. "/precious"
    os.execute("mkdir " .. victim)
    write(victim .. "/data.txt", "keep me\n")
    write(pid_file, victim .. "\n")
    finally(function() os.execute("rm -rf " .. dir) end)
    local out = sh(string.format("cd %s && %s bin/kinot serve stop --pid-file %s", H.root, LUA, pid_file))
    assert.is_true(exists(victim .. "/data.txt"), "kinot serve stop removed " .. victim .. ": " .. out)
    assert.matches("not running", out)
  end)

  it("refuses a second --daemon on a live pid file; the first keeps running and stops", function()
    local p = io.popen("mktemp -d /tmp/kinot-attack.XXXXXX")
    local dir = p:read("*l")
    p:close()
    local pid_file = dir .. "/serve.pid"
    local env = "KINOT_ENDPOINT=http://127.0.0.1:9/open/lora/v1 KINOT_APP_KEY=k KINOT_APP_SECRET=s " ..
      "KINOT_API_TOKEN= KINOT_REDIS_URL="
    local port1, port2 = launcher.free_port(), launcher.free_port()
    local function start(port)
      return sh(string.format("cd %s && %s %s bin/kinot serve --daemon --sync-interval 0 --pid-file %s " ..
        "--listen 127.0.0.1:%d", H.root, env, LUA, pid_file, port))
    end
    local stop = function()
      return sh(string.format("cd %s && %s bin/kinot serve stop --pid-file %s", H.root, LUA, pid_file))
    end
    local second_prefix
    finally(function()
      stop()
      if second_prefix then launcher.stop(second_prefix) os.execute("rm -rf " .. second_prefix) end
      os.execute("rm -rf " .. dir)
    end)
    local out, rc = start(port1)
    assert.are.equal(0, rc, out)
    local first = io.open(pid_file):read("*l")
    out, rc = start(port2)
    local now = io.open(pid_file):read("*l")
    if now ~= first then second_prefix = now end
    assert.are_not.equal(0, rc, "a second daemon was started over a live pid file: " .. out)
    assert.matches("already running", out)
    assert.are.equal(first, now)
    assert.is_false(launcher.port_busy(port2), "the refused server must not be left listening")
    assert.are.equal(200, H.raw("GET", "http://127.0.0.1:" .. port1 .. "/api/fleet").status)
    out, rc = stop()
    assert.are.equal(0, rc, out)
    assert.is_false(exists(pid_file))
    assert.is_false(exists(first .. "/nginx.conf"), "its private directory is removed")
  end)

  it("takes over a stale pid file (its server gone) and says so", function()
    local p = io.popen("mktemp -d /tmp/kinot-attack.XXXXXX")
    local dir = p:read("*l")
    p:close()
    local pid_file = dir .. "/serve.pid"
    write(pid_file, dir .. "/no-such-server\n")
    local env = "KINOT_ENDPOINT=http://127.0.0.1:9/open/lora/v1 KINOT_APP_KEY=k KINOT_APP_SECRET=s KINOT_REDIS_URL="
    finally(function()
      sh(string.format("cd %s && %s bin/kinot serve stop --pid-file %s", H.root, LUA, pid_file))
      os.execute("rm -rf " .. dir)
    end)
    local out, rc = sh(string.format("cd %s && %s %s bin/kinot serve --daemon --sync-interval 0 --pid-file %s " ..
      "--listen 127.0.0.1:%d", H.root, env, LUA, pid_file, launcher.free_port()))
    assert.are.equal(0, rc, out)
    assert.matches("stale pid file", out)
    assert.are_not.equal(dir .. "/no-such-server", io.open(pid_file):read("*l"))
  end)
end)

describe("kinot.fleet groups files, hostile #unit", function()
  local groups = require "kinot.fleet.groups"
  local files = {}
  local function file(ext, text)
    local path = os.tmpname() .. ext
    write(path, text)
    files[#files + 1] = path
    return path
  end
  teardown(function() for _, f in ipairs(files) do os.remove(f) end end)

  local function refused(source, pattern)
    local ok, err = pcall(groups.load, source)
    assert.is_false(ok, "accepted")
    assert.is_true(errors.is_misuse(err), "a raw error, not a clear one: " .. tostring(err))
    assert.matches(pattern, tostring(err))
  end

  it("reads a CSV that starts with a UTF-8 BOM and ends its lines with CRLF", function()
    local map, names = groups.load(file(".csv", "\239\187\191sn,zone,level,bay\r\n419600001,A,1,\"A1, \"\"x\"\"\"\r\n"))
    assert.are.equal("A/1", map[419600001].group)
    assert.are.equal('A1, "x"', map[419600001].bay)
    assert.are.same({ "A/1" }, names)
  end)

  it("reads a JSON file that starts with a BOM", function()
    local map = groups.load(file(".json", "\239\187\191{\"419600001\": {\"zone\": \"A\", \"level\": 1}}"))
    assert.are.equal("A/1", map[419600001].group)
  end)

  it("reads a CSV whose lines end with CR alone (an old spreadsheet's export)", function()
    local map = groups.load(file(".csv", "sn,zone,level\r419600001,A,1\r419600002,B,2\r"))
    assert.are.equal("A/1", map[419600001].group)
    assert.are.equal("B/2", map[419600002].group)
  end)

  it("refuses text after a closing quote instead of reading a garbled row", function()
    refused(file(".csv", 'sn,zone,level\n419600001,"A"x,1\n'), "after a closing quote")
  end)

  it("refuses a serial given twice, naming both lines", function()
    refused(file(".csv", "sn,zone,level\n419600001,A,1\n419600002,A,1\n419600001,B,2\n"),
      "419600001.*twice.*line 2.*line 4")
  end)

  it("refuses a CSV without an sn column, saying so", function()
    refused(file(".csv", "serial,zone,level\n419600001,A,1\n"), "no sn column")
  end)

  it("refuses JSON rows that are not objects, and values that are not text or numbers", function()
    refused(file(".json", "[1, 2, 3]"), "object")
    refused(file(".json", '[{"sn": 419600001, "zone": {"a": 1}}]'), "zone")
    refused(file(".json", '{"419600001": {"zone": ["A"]}}'), "zone")
  end)
end)

-- A lua_shared_dict too small for the fleet: updates must fail with an
-- error naming the dict, never evict what the twin holds (nginx's add and
-- incr with an initial value make room by dropping the least recently used
-- keys), and never leave the counters apart from the records.
local FILL = [[
  location = /fill {
    content_by_lua_block {
      local fleet = require "kinot.fleet"
      local cjson = require "cjson"
      local twin = fleet.new { store = "shared", dict = "fleet_tiny", stale_after = false,
                               groups = { ["1"] = { zone = "A", level = "1" } } }
      local held, failed, first_err = {}, 0, nil
      local function stamp(s) return os.date("!%Y-%m-%dT%H:%M:%S+00:00", 1796083200 + s) end
      math.randomseed(5)
      for round = 1, 6 do
        for sn = 1, 400 do
          local data = { sn = sn, car_detected = (sn + round) % 2, locked = (sn * round) % 2, low_battery = round % 2,
                         coil_fault = (sn + round) % 3 == 0 and 1 or 0, voltage = 3.4, rs_si = -60 - round * 10,
                         bt_mac = string.rep("ab", math.random(1, 40)), updated_at = stamp(round * 10) }
          local v, err = twin:apply { kind = "status_changed", device = sn % 3 == 0 and "sensor" or "lock",
                                      sn = sn, data = data, verified = true }
          if v then held[sn] = true else
            failed = failed + 1
            first_err = first_err or tostring(err)
          end
        end
      end
      -- a recount of what the twin holds, against its counters
      local s = twin:summary()
      local n, locks, sensors, occupied, up, fault, low = 0, 0, 0, 0, 0, 0, 0
      local lost = {}
      for sn = 1, 400 do
        local d = twin:device(sn)
        if d then
          n = n + 1
          if d.kind == "lock" then locks = locks + 1 else sensors = sensors + 1 end
          if d.state.car_detected == 1 then occupied = occupied + 1 end
          if d.kind == "lock" and d.state.locked == 1 then up = up + 1 end
          if d.state.coil_fault == 1 then fault = fault + 1 end
          if d.state.low_battery == 1 then low = low + 1 end
        elseif held[sn] then
          lost[#lost + 1] = sn
        end
      end
      local listed = twin:devices { limit = 1000 }
      ngx.say(cjson.encode {
        failed = failed, first_err = first_err, lost = lost,
        recount = { n = n, locks = locks, sensors = sensors, occupied = occupied, up = up, fault = fault, low = low,
                    listed = listed.total },
        counted = { n = s.devices.locks + s.devices.sensors, locks = s.devices.locks, sensors = s.devices.sensors,
                    occupied = s.occupancy.occupied, up = s.locks_up, fault = s.faults.devices, low = s.low_battery,
                    listed = n },
      })
    }
  }
]]

local BIG = [[
  location = /big {
    content_by_lua_block {
      local fleet = require "kinot.fleet"
      local twin = fleet.new { store = "shared", dict = "fleet_big", stale_after = false }
      local a, b = 9007199254740991, 9007199254740990
      local at = "2026-12-01T00:00:00+00:00"
      local v1 = twin:apply { kind = "status_changed", device = "lock", sn = a, verified = true,
                              data = { sn = a, car_detected = 1, updated_at = at } }
      local v2 = twin:apply { kind = "status_changed", device = "lock", sn = b, verified = true,
                              data = { sn = b, car_detected = 0, updated_at = at } }
      ngx.say(v1, " ", v2, " ", twin:device(a).state.car_detected, " ", twin:device(b).state.car_detected, " ",
              twin:devices{}.total)
    }
  }
]]

describe("kinot.fleet in a lua_shared_dict that fills up #nginx", function()
  it("keeps serials up to 2^53 - 1 apart (LuaJIT writes a number with 14 digits)", function()
    local ng = H.nginx { http = "lua_shared_dict fleet_big 1m;", server = BIG }
    finally(function() ng.stop() end)
    local res = H.raw("GET", ng.url .. "/big")
    assert.are.equal("added added 1 0 2\n", res.body, ng.log())
  end)

  it("fails updates naming the dict, evicts nothing it held, keeps its counters equal to a recount", function()
    local ng = H.nginx { http = "lua_shared_dict fleet_tiny 96k;", server = FILL }
    finally(function() ng.stop() end)
    local res = H.raw("GET", ng.url .. "/fill")
    assert.are.equal(200, res.status, res.body .. ng.log())
    local doc = require("kinot.json").decode(res.body)
    assert.is_true(doc.failed > 0, "the dict never filled: make it smaller")
    assert.matches("fleet_tiny is full", doc.first_err)
    assert.are.same({}, doc.lost, "devices the twin held were evicted")
    assert.are.same(doc.recount, doc.counted)
  end)
end)

describe("kinot.fleet and a stamp from the future #unit", function()
  local fleet = require "kinot.fleet"
  local N = 1796292000 -- our clock
  local function iso(t, offset)
    return os.date("!%Y-%m-%dT%H:%M:%S", t + (offset or 0) * 3600) ..
      (offset and string.format("%+03d:00", offset) or "+00:00")
  end
  local function ev(sn, at, car)
    return { kind = "status_changed", device = "lock", sn = sn, verified = true,
             data = { sn = sn, car_detected = car, locked = 0, updated_at = at } }
  end

  for _, bad in ipairs { "2099-01-01T00:00:00+00:00", "2099-01-01 00:00:00" } do
    it("does not let a platform's stamp of 2099 freeze a device (" .. bad .. ")", function()
      local now = N
      local twin = fleet.new { store = "table", stale_after = 3600, clock = function() return now end }
      assert.are.equal("added", (twin:apply(ev(419600001, bad, 1))))
      assert.are.equal(bad, twin:device(419600001).updated_at) -- shown as the platform wrote it
      -- once our clock is well past the allowed skew, the platform's true newer state applies
      now = N + 15 * 3600
      assert.are.equal("applied", (twin:apply(ev(419600001, iso(now - 5), 0))))
      assert.are.equal(0, twin:device(419600001).state.car_detected)
      -- an older one still never applies
      assert.are.equal("older", (twin:apply(ev(419600001, iso(now - 60), 1))))
      -- and the sweep still finds it silent
      now = now + 3600
      assert.are.equal(1, #twin:sweep())
      assert.is_true(twin:device(419600001).stale)
    end)
  end

  it("orders one time written in two zones as the same instant", function()
    local now = N + 100
    local twin = fleet.new { store = "table", stale_after = false, clock = function() return now end }
    assert.are.equal("added", (twin:apply(ev(419600002, iso(N, 8), 1))))
    assert.are.equal("duplicate", (twin:apply(ev(419600002, iso(N, -5), 1))))
    assert.are.equal("duplicate", (twin:apply(ev(419600002, os.date("!%Y-%m-%dT%H:%M:%SZ", N), 1))))
    assert.are.equal("older", (twin:apply(ev(419600002, iso(N - 1, 14), 0))))
    assert.are.equal("applied", (twin:apply(ev(419600002, iso(N + 1, -12), 0))))
  end)
end)

-- Promise: the summary's counters equal a full recount after any sequence.
-- A random sequence (seeded) of scans, callbacks, out-of-order and repeated
-- stamps, devices changing kind, gone and back, stale and alive, a second
-- twin with other groups over the same store; after each step the summary
-- is held against a recount of every device the twin shows.
local MODEL = [[
  location = /model {
    content_by_lua_block {
      package.path = "${root}/spec/support/?.lua;" .. package.path
      local fleet = require "kinot.fleet"
      local seed = tonumber(ngx.var.arg_seed)
      local n = 0
      local why = require("fleet_model").differential(function(o)
        n = n + 1
        o.store, o.dict, o.stale_after = "shared", "fleet_model_" .. seed, 120
        return fleet.new(o)
      end, seed, 150)
      ngx.say(why or "ok")
    }
  }
]]

describe("kinot.fleet's counters against a recount, random sequences #redis #nginx", function()
  local fleet = require "kinot.fleet"
  local R = require "redis_server"
  local differential = require("fleet_model").differential
  it("on a Lua table", function()
    for seed = 1, 20 do
      local store
      assert.is_nil(differential(function(o)
        o.store, o.stale_after = "table", 120
        local twin = fleet.new(o)
        if store then twin.store = store else store = twin.store end -- one store, a second twin over it
        return twin
      end, seed, 150))
    end
  end)
  it("on a lua_shared_dict, in nginx", function()
    local dicts = {}
    for seed = 1, 6 do dicts[#dicts + 1] = "lua_shared_dict fleet_model_" .. seed .. " 1m;" end
    local ng = H.nginx { http = table.concat(dicts, " "), server = (MODEL:gsub("%${root}", H.root)) }
    finally(function() ng.stop() end)
    for seed = 1, 6 do
      local res = H.raw("GET", ng.url .. "/model?seed=" .. seed)
      assert.are.equal("ok\n", res.body, ng.log())
    end
  end)
  it("on Redis", function()
    local rs = R.start()
    finally(function() rs.stop() end)
    for seed = 1, 4 do
      assert.is_nil(differential(function(o)
        o.store, o.stale_after, o.redis, o.prefix = "redis", 120, rs.url, "diff" .. seed .. ":"
        return fleet.new(o)
      end, seed, 150))
    end
  end)
end)

describe("kinot serve's JSON API, attacked #redis", function()
  local fleet = require "kinot.fleet"
  local api = require "kinot.serve.api"
  local R = require "redis_server"
  local function twin_on(store, url)
    local twin = fleet.new { store = store, redis = url, prefix = "api:" }
    assert(twin:put("lock", { { sn = 419600001, car_detected = 1, updated_at = "2026-12-01T00:00:00+00:00" } },
      "scan"))
    return twin
  end
  local function ask(twin, path, args, remote, auth, token)
    local status, body = api.handle(twin, { method = "GET", path = path, args = args or {},
                                            remote_addr = remote or "127.0.0.1", authorization = auth },
                                    { token = token })
    return status, require("kinot.json").decode(body)
  end

  it("needs the token from anywhere but loopback, an IPv4-mapped loopback included", function()
    local twin = twin_on("table")
    for _, addr in ipairs { "::ffff:127.0.0.1", "10.0.0.1", "::2", "", "127.0.0.1.evil" } do
      assert.are.equal(401, (ask(twin, "/api/fleet", nil, addr)), addr)
      assert.are.equal(401, (ask(twin, "/api/fleet", nil, addr, "Bearer nope", "s3cret")), addr)
      assert.are.equal(401, (ask(twin, "/api/fleet", nil, addr, "Bearer s3cre", "s3cret")), addr)
      assert.are.equal(401, (ask(twin, "/api/fleet", nil, addr, "Bearer s3cret-", "s3cret")), addr)
      assert.are.equal(200, (ask(twin, "/api/fleet", nil, addr, "Bearer s3cret", "s3cret")), addr)
    end
    assert.are.equal(200, (ask(twin, "/api/fleet", nil, "::1")))
    assert.are.equal(200, (ask(twin, "/api/fleet", nil, "127.3.2.1")))
  end)

  it("bounds paging and refuses hostile queries with a JSON error", function()
    local twin = twin_on("table")
    for _, args in ipairs { { limit = "1e9" }, { offset = "-1" }, { limit = "0" }, { limit = "abc" },
                            { offset = "1e300" }, { limit = "nan" }, { kind = "robot" }, { occupied = "maybe" },
                            { limit = { "1", "2" } }, { ["x;drop"] = "1" } } do
      local status, doc = ask(twin, "/api/devices", args)
      assert.are.equal(400, status, require("kinot.json").encode(args))
      assert.is_string(doc.error)
    end
    for _, sn in ipairs { "a;b", "9007199254740993", "0", "-1", "1.5", "1e400" } do
      local status, doc = ask(twin, "/api/devices/" .. sn)
      assert.are.equal(400, status, sn)
      assert.is_string(doc.error)
    end
    assert.are.equal(400, (ask(twin, "/api/changes", { limit = "1e9" })))
  end)

  for _, store in ipairs { "table", "redis" } do
    it("answers a cursor that is not one with 400, not a store failure (" .. store .. ")", function()
      local rs = store == "redis" and R.start()
      finally(function() if rs then rs.stop() end end)
      local twin = twin_on(store, rs and rs.url)
      for _, since in ipairs { "abc", "1-2-3", "-5", "1e999", string.rep("9", 400), "(0", "+" } do
        local status, doc = ask(twin, "/api/changes", { since = since })
        assert.are.equal(400, status, since .. ": " .. tostring(doc.error))
        assert.matches("since", doc.error)
      end
      assert.are.equal(200, (ask(twin, "/api/changes", { since = "0" })))
    end)
  end
end)

describe("kinot.fleet's Redis script fed hostile values #redis", function()
  local fleet = require "kinot.fleet"
  local R = require "redis_server"
  local rs
  setup(function() rs = R.start() end)
  teardown(function() if rs then rs.stop() end end)
  local AT = "2026-12-01T00:00:00+00:00"

  it("keeps serials up to 2^53 - 1 apart (cjson writes numbers with 14 digits)", function()
    local twin = fleet.new { store = "redis", redis = rs.url, prefix = "big:", stale_after = false }
    local a, b = 9007199254740991, 9007199254740990
    assert.are.equal("added", (twin:apply { kind = "status_changed", device = "lock", sn = a, verified = true,
                                            data = { sn = a, car_detected = 1, updated_at = AT } }))
    local v, err = twin:apply { kind = "status_changed", device = "lock", sn = b, verified = true,
                                data = { sn = b, car_detected = 0, updated_at = AT } }
    assert.are.equal("added", v, tostring(err))
    assert.are.equal(a, twin:device(a).sn)
    assert.are.equal(1, twin:device(a).state.car_detected)
    assert.are.equal(b, twin:device(b).sn)
    assert.are.equal(0, twin:device(b).state.car_detected)
    local list = twin:devices {}
    assert.are.equal(2, list.total)
    assert.are.same({ b, a }, { list.devices[1].sn, list.devices[2].sn })
  end)

  it("takes quotes, huge numbers and nested tables in a state without breaking the script", function()
    local twin = fleet.new { store = "redis", redis = rs.url, prefix = "hostile:", stale_after = false }
    local ref = fleet.new { store = "table", stale_after = false }
    local data = { sn = 419600009, car_detected = 1, bt_mac = 'a"b\\c\'d]]==]\0e', bt_match_code = "]]", voltage = 1e308,
                   rs_si = -1e300, frequency = { nested = { deeper = { "x", 'y"' } } }, locked = "1; redis.call('FLUSHALL')",
                   updated_at = AT }
    local ev = { kind = "status_changed", device = "lock", sn = 419600009, verified = true, data = data }
    local v1, e1 = twin:apply(ev)
    local v2 = ref:apply(ev)
    assert.are.equal(v2, v1, tostring(e1))
    assert.are.same(ref:device(419600009).state, twin:device(419600009).state)
    assert.are.same(ref:summary().occupancy, twin:summary().occupancy)
    assert.are.equal(1, twin:summary().devices.locks)
  end)
end)

describe("kinot serve's callback path and secrets, attacked #cli #nginx", function()
  local callback = require "kinot.callback"
  local SECRET, TOKEN = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b", "tok-7f3a9c2e51"
  local function iso8(t) return os.date("!%Y-%m-%dT%H:%M:%S", t + 8 * 3600) .. "+08:00" end
  local function signed(b, secret)
    return (b:gsub("}$", ',"sign":"' .. assert(callback.sign(b, secret or SECRET)) .. '"}'))
  end

  it("keeps forged and replayed callbacks out of the twin, takes hostile values, shows no secret", function()
    local p = io.popen("mktemp -d /tmp/kinot-attack.XXXXXX")
    local dir = p:read("*l")
    p:close()
    local pid_file = dir .. "/serve.pid"
    local port = launcher.free_port()
    local env = "KINOT_ENDPOINT=http://127.0.0.1:9/open/lora/v1 KINOT_APP_KEY=k KINOT_APP_SECRET=appsecret-51c " ..
      "KINOT_CALLBACK_SECRET=" .. SECRET .. " KINOT_API_TOKEN=" .. TOKEN .. " KINOT_REDIS_URL="
    finally(function()
      sh(string.format("cd %s && %s bin/kinot serve stop --pid-file %s", H.root, LUA, pid_file))
      os.execute("rm -rf " .. dir)
    end)
    local out, rc = sh(string.format("cd %s && %s %s bin/kinot serve --daemon --sync-interval 0 --pid-file %s " ..
      "--listen 127.0.0.1:%d", H.root, env, LUA, pid_file, port))
    assert.are.equal(0, rc, out)
    local prefix = io.open(pid_file):read("*l")
    local url = "http://127.0.0.1:" .. port
    local function post(body)
      return H.raw("POST", url .. "/kinot/callback", body, { ["Content-Type"] = "application/json" })
    end
    local function device(sn) return H.raw("GET", url .. "/api/devices/" .. sn) end
    local now = os.time()

    -- forged: another secret, no sign, a sign of another body
    local body = '{"sn":419600077,"locked":1,"car_detected":1,"updated_at":"' .. iso8(now) .. '","device_type":18}'
    assert.is_true(post(signed(body, "not-the-secret")).status >= 400)
    assert.is_true(post(body).status >= 400)
    local other = signed((body:gsub('"locked":1', '"locked":0')))
    assert.is_true(post(body:gsub("}$", ',"sign":"' .. other:match('"sign":"(%x+)"') .. '"}')).status >= 400)
    assert.are.equal(404, device(419600077).status)

    -- signed but a reference field of another type (nested tables): refused before the twin
    local nested = '{"sn":419600077,"locked":1,"car_detected":1,"frequency":{"a":[1,{"b":"]]"}]},"updated_at":"' ..
      iso8(now) .. '","device_type":18}'
    assert.are.equal(400, post(signed(nested)).status)
    assert.are.equal(404, device(419600077).status)
    -- hostile values, signed: quotes, brackets that end a Lua long string, huge numbers
    local hostile = '{"sn":419600077,"locked":1,"car_detected":1,"bt_mac":"a\\"b]]==]\'c","voltage":1e308,' ..
      '"rs_si":-12345678901234567890,"updated_at":"' .. iso8(now) .. '","device_type":18}'
    assert.are.equal(200, post(signed(hostile)).status)
    local res = device(419600077)
    assert.are.equal(200, res.status, res.body)
    local d = require("kinot.json").decode(res.body)
    assert.are.equal('a"b]]==]\'c', d.state.bt_mac)
    assert.are.equal(1, d.state.car_detected)

    -- replayed, and an older one: never applied
    assert.is_true(post(signed(hostile)).status < 500)
    local older = signed('{"sn":419600077,"locked":0,"car_detected":0,"updated_at":"' .. iso8(now - 30) ..
      '","device_type":18}')
    assert.is_true(post(older).status < 500)
    d = require("kinot.json").decode(device(419600077).body)
    assert.are.equal(1, d.state.car_detected)
    local s = require("kinot.json").decode(H.raw("GET", url .. "/api/fleet").body)
    assert.are.equal(1, s.updates.added)
    assert.are.equal(0, s.updates.applied)
    assert.are.equal(1, s.occupancy.occupied)

    -- no secret in the process list, the log, or a file others may read
    local ps = sh("ps -eo args")
    for _, secret in ipairs { SECRET, TOKEN, "appsecret-51c" } do
      assert.is_nil(ps:find(secret, 1, true), "in ps: " .. secret)
      assert.is_nil((io.open(prefix .. "/error.log"):read("*a")):find(secret, 1, true), "in the log: " .. secret)
    end
    local mode = sh("stat -c %a " .. prefix)
    assert.matches("^700", mode)
    for _, f in ipairs { "nginx.conf", "serve_config.lua", "error.log" } do
      local m = sh("stat -c %a " .. prefix .. "/" .. f)
      assert.is_true(m:match("^%d%d(%d)") == "0" or mode:match("^700") ~= nil, f .. " " .. m)
    end
  end)
end)

describe("kinot.fleet and a device that changes kind #redis", function()
  local fleet = require "kinot.fleet"
  local R = require "redis_server"
  it("keeps no field of its old kind in its state (table, Redis)", function()
    local rs = R.start()
    finally(function() rs.stop() end)
    for _, o in ipairs { { store = "table" }, { store = "redis", redis = rs.url, prefix = "kind:" } } do
      o.stale_after = false
      local twin = fleet.new(o)
      assert(twin:put("lock", { { sn = 419600055, locked = 1, car_detected = 1, bt_mac = "aa00",
                                  updated_at = "2026-12-01T00:00:00+00:00" } }, "scan"))
      assert(twin:put("sensor", { { sn = 419600055, car_detected = 0, active = 1,
                                    updated_at = "2026-12-01T00:00:05+00:00" } }, "scan"))
      local d = twin:device(419600055)
      assert.are.equal("sensor", d.kind, o.store)
      assert.is_nil(d.state.locked, o.store)
      assert.is_nil(d.state.bt_mac, o.store)
      assert.are.equal(0, twin:summary().locks_up, o.store)
      assert.are.equal(1, twin:summary().devices.sensors, o.store)
    end
  end)
end)

-- A worker SIGKILLed while it held a device's lock: its lock key stays
-- behind (with the 2 s expiry).  Here the key is left by a worker that is
-- then killed for real (SIGKILL), mid-sleep, holding it.
local HOLD = [[
  location = /hold {
    content_by_lua_block {
      local dict = ngx.shared.fleet_kill
      dict:safe_add("l:419600066", true, 2)
      ngx.say(ngx.worker.pid())
      ngx.flush(true)
      ngx.sleep(30)
    }
  }
  location = /apply {
    content_by_lua_block {
      local fleet = require "kinot.fleet"
      local twin = fleet.new { store = "shared", dict = "fleet_kill", stale_after = false }
      local t0 = ngx.now()
      local v, err = twin:apply { kind = "status_changed", device = "lock", sn = 419600066, verified = true,
                                  data = { sn = 419600066, car_detected = 1, updated_at = "2026-12-01T00:00:00Z" } }
      ngx.update_time()
      ngx.say(tostring(v or err), " ", string.format("%.1f", ngx.now() - t0))
    }
  }
]]

describe("kinot.fleet when a worker dies holding a device's lock #nginx", function()
  it("applies the next update once the dead worker's lock expires (2 s), within the 5 s wait", function()
    local ng = H.nginx { http = "lua_shared_dict fleet_kill 1m;", server = HOLD, workers = 2 }
    finally(function() ng.stop() end)
    local p = io.popen("curl -s -N --max-time 5 " .. ng.url .. "/hold")
    local pid = tonumber(p:read("*l"))
    assert.is_number(pid)
    os.execute("kill -KILL " .. pid)
    p:close()
    local res = H.raw("GET", ng.url .. "/apply")
    -- (a lock never freed would end in the 5 s wait's timeout error instead)
    assert.are.equal("added", res.body:match("^(%S+)"), res.body .. ng.log())
  end)
end)

-- A holder that stalls past the lock's 2 s expiry (here: the rule yields
-- for 2.5 s in one request, an nginx cosocket wait standing in for a
-- worker the OS does not run) must not write over the update that took
-- the expired lock meanwhile.
local STALL = [[
  location = /stall {
    content_by_lua_block {
      local fleet = require "kinot.fleet"
      local rule = require "kinot.fleet.rule"
      local twin = fleet.new { store = "shared", dict = "fleet_stall", stale_after = false }
      local s = tonumber(ngx.var.arg_s)
      local decide = rule.decide
      if ngx.var.arg_stall then
        rule.decide = function(held, new, cfg)
          if new.updated_at:find(":10Z", 1, true) then ngx.sleep(2.5) end
          return decide(held, new, cfg)
        end
      end
      local v, err = twin:apply { kind = "status_changed", device = "lock", sn = 419600088, verified = true,
                                  data = { sn = 419600088, car_detected = s % 2,
                                           updated_at = string.format("2026-12-01T00:00:%02dZ", s) } }
      rule.decide = decide
      ngx.say(tostring(v or err))
    }
  }
  location = /state {
    content_by_lua_block {
      local fleet = require "kinot.fleet"
      local twin = fleet.new { store = "shared", dict = "fleet_stall", stale_after = false }
      local s = twin:summary()
      ngx.say(twin:device(419600088).updated_at, " ", s.updates.added, " ", s.updates.applied)
    }
  }
]]

describe("kinot.fleet when a lock holder stalls past the lock's expiry #nginx", function()
  it("never lets the stalled holder write over the newer update that came meanwhile", function()
    local ng = H.nginx { http = "lua_shared_dict fleet_stall 1m;", server = STALL }
    finally(function() ng.stop() end)
    local p = io.popen("curl -s --max-time 10 '" .. ng.url .. "/stall?s=10&stall=1'")
    os.execute("sleep 2.1")
    local newer = H.raw("GET", ng.url .. "/stall?s=21").body
    local stalled = p:read("*a")
    p:close()
    assert.are.equal("added\n", newer)
    local state = H.raw("GET", ng.url .. "/state").body
    assert.are.equal("2026-12-01T00:00:21Z 1 0\n", state, "the stalled holder answered " .. stalled)
  end)
end)
