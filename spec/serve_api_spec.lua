-- kinot.serve.api, the twin's JSON API: its answers, filters and errors
-- in plain Lua (#unit), and in a real nginx whose workers keep the twin in
-- a lua_shared_dict, synced there from `kinot sim` through nginx's
-- cosockets, fed real signed callbacks, read over HTTP.
local api = require "kinot.serve.api"
local fleet = require "kinot.fleet"
local json = require "kinot.json"
local H = require "helpers"

local function stamp(s) return os.date("!%Y-%m-%dT%H:%M:%S+00:00", 1796083200 + s) end

describe("kinot.serve.api #unit", function()
  local twin
  before_each(function()
    twin = fleet.new { store = "table", stale_after = false }
    assert(twin:put("lock", {
      { sn = 419600001, car_detected = 1, locked = 1, coil_fault = 0, low_battery = 0, updated_at = stamp(1) },
      { sn = 419600002, car_detected = 0, locked = 0, coil_fault = 1, low_battery = 1, updated_at = stamp(1) },
    }, "scan"))
  end)
  local function get(path, args, extra)
    local req = { method = "GET", path = path, args = args or {}, remote_addr = "127.0.0.1" }
    for k, v in pairs(extra or {}) do req[k] = v end
    local status, text = api.handle(twin, req, { token = "t0ken" })
    return status, json.decode(text), text
  end

  it("answers the summary in the documented shape", function()
    local status, doc = get("/api/fleet")
    assert.are.equal(200, status)
    assert.are.same({ locks = 2, sensors = 0, dtus = 0, gone = 0 }, doc.devices)
    assert.are.equal(1, doc.occupancy.occupied)
    assert.are.equal(2, doc.occupancy.total)
    assert.are.equal(0, doc.missed)
    assert.are.equal(json.null, doc.synced_at)
  end)

  it("lists with filters and pages, and shows one device", function()
    local status, doc = get("/api/devices", { occupied = "false" })
    assert.are.equal(200, status)
    assert.are.equal(1, doc.total)
    assert.are.equal(419600002, doc.devices[1].sn)
    status, doc = get("/api/devices", { fault = "coil_fault", low_battery = "1" })
    assert.are.same({ 200, 419600002 }, { status, doc.devices[1].sn })
    local text
    status, doc, text = get("/api/devices", { kind = "sensor" })
    assert.are.same({ 200, 0 }, { status, doc.total })
    assert.matches('"devices":%[%]', text) -- an empty list is a JSON list
    status, doc = get("/api/devices", { offset = "1", limit = "1" })
    assert.are.same({ 200, 2, 1, 419600002 }, { status, doc.total, #doc.devices, doc.devices[1].sn })
    status, doc = get("/api/devices/419600001")
    assert.are.equal(200, status)
    assert.are.same({ "lock", "scan", stamp(1), 1 }, { doc.kind, doc.source, doc.updated_at, doc.state.car_detected })
  end)

  it("refuses what it cannot answer with a status and a message", function()
    assert.are.equal(404, (get("/api/devices/419699999")))
    assert.are.equal(400, (get("/api/devices/abc")))
    assert.are.equal(400, (get("/api/devices", { occupied = "maybe" })))
    assert.are.equal(400, (get("/api/devices", { colour = "red" })))
    assert.are.equal(400, (get("/api/devices", { limit = "0" })))
    assert.are.equal(400, (get("/api/devices", { limit = "x" })))
    assert.are.equal(400, (get("/api/devices", { kind = { "lock", "sensor" } })))
    assert.are.equal(404, (get("/api/nothing")))
    assert.are.equal(405, (get("/api/fleet", {}, { method = "POST" })))
  end)

  it("needs the token from anywhere but loopback, and compares it whole", function()
    local far = { remote_addr = "10.1.2.3" }
    assert.are.equal(401, (get("/api/fleet", {}, far)))
    assert.are.equal(401, (get("/api/fleet", {}, { remote_addr = "10.1.2.3", authorization = "Bearer t0ke" })))
    assert.are.equal(401, (get("/api/fleet", {}, { remote_addr = "10.1.2.3", authorization = "Bearer t0kenX" })))
    assert.are.equal(200, (get("/api/fleet", {}, { remote_addr = "10.1.2.3", authorization = "Bearer t0ken" })))
    assert.are.equal(200, (get("/api/fleet", {}, { remote_addr = "127.0.0.9" })))
    -- without a token configured, only loopback is answered
    local status, text = api.handle(twin, { method = "GET", path = "/api/fleet", remote_addr = "10.1.2.3" }, {})
    assert.are.equal(401, status)
    assert.matches("only loopback", text)
  end)

  it("pages the change feed by its cursor", function()
    for s = 2, 6 do
      twin:apply { kind = "status_changed", device = "lock", verified = true,
                   data = { sn = 419600001, car_detected = s % 2, updated_at = stamp(s) } }
    end
    local _, doc = get("/api/changes", { limit = "3" })
    assert.are.equal(3, #doc.changes)
    local _, rest = get("/api/changes", { since = tostring(doc.next), limit = "100" })
    assert.are.equal(2, #rest.changes)
    local _, none = get("/api/changes", { since = tostring(rest.next) })
    assert.are.same({}, none.changes)
  end)
end)

describe("kinot.serve.api in nginx, the twin in a shared dict, synced from the simulator #nginx #sim", function()
  local sim, ng
  setup(function()
    sim = H.sim { locks = 1000, sensors = 500, dtus = 5 }
    ng = H.nginx {
      workers = 2,
      http = "lua_shared_dict kinot_fleet 16m;\n" ..
        "init_worker_by_lua_block { twin = require('kinot.fleet').new { store = 'shared' } }", -- luacheck: ignore
      server = string.format([[
        location /api/ { content_by_lua_block { require("kinot.serve.api").nginx(twin, { token = "t" }) } }
        location = /sync {
          content_by_lua_block {
            local client = require("kinot").new { app_key = %q, app_secret = %q, endpoint = %q }
            local report, err = twin:sync(client, { dtus = { 644200001, 644200002 }, concurrency = 4 })
            if not report then ngx.status = 500 ngx.say(tostring(err)) return end
            ngx.say(require("cjson").encode(report))
          }
        }
        location = /callback {
          content_by_lua_block {
            ngx.req.read_body()
            local ev, err = require("kinot.callback").verify(ngx.req.get_body_data(), { secret = %q })
            if not ev then ngx.status = 400 ngx.say(tostring(err)) return end
            local verdict, e = twin:apply(ev)
            if not verdict then ngx.status = 500 ngx.say(tostring(e)) return end
            ngx.say('{"code":0,"message":"OK"}')
          }
        }
      ]], sim.app_key, sim.app_secret, sim.endpoint, sim.app_secret),
    }
  end)
  teardown(function()
    if ng then ng.stop() end
    if sim then sim.stop() end
  end)

  it("answers after the first sync the occupancy a full scan counts, and follows callbacks", function()
    local res = H.raw("POST", ng.url .. "/sync", "")
    assert.are.equal(200, res.status, res.body .. ng.log())
    local report = json.decode(res.body)
    assert.are.same({ 1000, 500, 2, 1502 }, { report.locks, report.sensors, report.dtus, report.added })
    local client = sim.client()
    local occupied = 0
    for _, each in ipairs { client.each_locker, client.each_sensor } do
      for d in each(client, { limit = 100 }) do occupied = occupied + d.car_detected end
    end
    local doc = H.json("GET", ng.url .. "/api/fleet")
    assert.are.equal(occupied, doc.occupancy.occupied)
    assert.are.equal(1500, doc.occupancy.total)
    assert.are.same({ locks = 1000, sensors = 500, dtus = 2, gone = 0 }, doc.devices)
    assert.is_string(doc.synced_at)

    -- the simulator's callbacks into the twin, read back from the API
    assert(client:set_notifications { device_type = "lock", status_changed_callback_url = ng.url .. "/callback" })
    local sn = 419600010
    local before = H.json("GET", ng.url .. "/api/devices/" .. sn)
    sim.call("POST", "/devices/" .. sn, { car_detected = 1 - before.state.car_detected })
    local after = H.wait_for(function()
      local d = H.json("GET", ng.url .. "/api/devices/" .. sn)
      return d.updated_at ~= before.updated_at and d
    end, 3)
    assert.is_table(after, "the callback did not reach the twin")
    assert.are.equal(1 - before.state.car_detected, after.state.car_detected)
    assert.are.equal("callback", after.source)
    local feed = H.json("GET", ng.url .. "/api/changes")
    local last = feed.changes[#feed.changes]
    assert.are.equal(sn, last.sn)
    assert.are.equal(after.state.car_detected == 1 and "occupied" or "free", last.change)
    doc = H.json("GET", ng.url .. "/api/fleet")
    assert.are.equal(occupied + (after.state.car_detected == 1 and 1 or -1), doc.occupancy.occupied)
  end)
end)
