-- `kinot serve` in the foreground: its sync lines on the terminal (not only
-- in the log), the stale sweep on a timer of its own, and every line the
-- log gives it shown through the CLI's escaping.
local H = require "helpers"
local launcher = require "kinot.sim.launcher"
local output = require "kinot.cli.output"
local serve = require "kinot.cli.serve"

local LUA = rawget(_G, "jit") and "luajit" or "lua5.4"

local function read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

describe("kinot serve's log lines on the terminal #unit #cli", function()
  it("shows the sync and sweep lines of the log, escaped, whole lines only, each once", function()
    local log_path, out_path = os.tmpname(), os.tmpname()
    finally(function() os.remove(log_path) os.remove(out_path) end)
    local f = assert(io.open(log_path, "wb"))
    f:write("2026/12/03 09:50:00 [notice] 12#12: *3 [lua] app.lua:31: sync_once(): kinot serve: sync: 1000 locks, " ..
            "500 sensors, 2 dtus read; 0 added, 3 missed, 0 gone, 0 stale, 6 changes in 0.41 s, context: ngx.timer\n",
            "2026/12/03 09:50:01 [notice] 12#12: signal process started\n",
            "2026/12/03 09:50:02 [error] 12#12: *4 [lua] app.lua:28: sync_once(): kinot serve: sync failed: api: " ..
            "\27]0;owned\7\27[2J the platform said, context: ngx.timer\n",
            "2026/12/03 09:50:03 [notice] 12#12: *5 [lua] app.lua:4")
    f:close()
    local sink = assert(io.open(out_path, "wb"))
    local out = output.new { stdout = sink, no_color = true }
    local log = { path = log_path, pos = 0, rest = "" }
    serve.follow_log(log, out)
    f = assert(io.open(log_path, "ab"))
    f:write("4: sweep_loop(): kinot serve: sweep: 7 devices turned stale, context: ngx.timer\n")
    f:close()
    serve.follow_log(log, out)
    serve.follow_log(log, out)
    sink:close()
    local text = read(out_path)
    assert.are.equal(
      "2026/12/03 09:50:00 sync: 1000 locks, 500 sensors, 2 dtus read; 0 added, 3 missed, 0 gone, 0 stale, " ..
      "6 changes in 0.41 s\n" ..
      "2026/12/03 09:50:02 sync failed: api: \\x1b]0;owned\\x07\\x1b[2J the platform said\n" ..
      "2026/12/03 09:50:03 sweep: 7 devices turned stale\n", text)
  end)
end)

describe("kinot serve in the foreground #cli #sim #nginx", function()
  local sim
  setup(function() sim = H.sim { locks = 200, sensors = 100 } end)
  teardown(function() if sim then sim.stop() end end)

  it("prints a line per sync, and the sweep marks devices stale between syncs", function()
    local port = launcher.free_port()
    local out_path = os.tmpname()
    local p = io.popen(string.format("(cd %s && exec env KINOT_ENDPOINT=%s KINOT_APP_KEY=%s KINOT_APP_SECRET=%s " ..
      "%s bin/kinot serve --listen 127.0.0.1:%d --sync-interval 0 --sweep-interval 1 --stale-after 2) >%s 2>&1 " ..
      "& echo $!", H.root, sim.endpoint, sim.app_key, sim.app_secret, LUA, port, out_path))
    local pid = tonumber(p:read("*l"))
    p:close()
    finally(function()
      os.execute("kill -TERM " .. pid .. " 2>/dev/null")
      H.wait_for(function() return not os.execute("kill -0 " .. pid .. " 2>/dev/null") end, 10)
      os.remove(out_path)
    end)
    local url = "http://127.0.0.1:" .. port
    assert.truthy(H.wait_for(function() return read(out_path):match("sync: 200 locks, 100 sensors") end, 15),
      read(out_path))
    -- the sim's own devices date from 2019 (stale at once); 20 made alive by
    -- callbacks turn stale 2 s later: the sweep's timer, not a sync, finds them
    local client = sim.client()
    for _, kind in ipairs { "lock", "sensor" } do
      assert(client:set_notifications { device_type = kind, status_changed_callback_url = url .. "/kinot/callback" })
    end
    local drift = sim.call("POST", "/drift", { count = 20 })
    local alive = {}
    for _, sn in ipairs(drift.changed) do alive[sn] = true end
    local n = 0
    for _ in pairs(alive) do n = n + 1 end
    assert.truthy(H.wait_for(function()
      local d = H.json("GET", url .. "/api/fleet")
      return d and d.stale == 300 - n
    end, 5), "the drift did not make devices alive")
    assert.truthy(H.wait_for(function()
      local d = H.json("GET", url .. "/api/fleet")
      return d and d.stale == 300
    end, 10), read(out_path))
    assert.truthy(H.wait_for(function() return read(out_path):match("sweep: %d+ devices turned stale") end, 5),
      read(out_path))
    local text = read(out_path)
    local _, syncs = text:gsub("sync: ", "")
    assert.are.equal(1, syncs, text)
    os.execute("kill -TERM " .. pid)
    assert.truthy(H.wait_for(function() return read(out_path):match("kinot serve stopped %(SIGTERM%)") end, 10),
      read(out_path))
  end)
end)
