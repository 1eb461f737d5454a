-- The dashboard of `kinot serve` (GET /) in a real browser: Debian's
-- chromium, headless, driven by playwright-core (spec/browser/dashboard.js,
-- installed by `make deps`; nothing downloaded), against `kinot serve`
-- over `kinot sim`, both on free 127.0.0.1 ports. The page shows what
-- /api/fleet says, follows `kinot sim drift --count 20` within 2 s without
-- a reload, sends one command a confirmed click (counted at the simulator)
-- and shows it succeeded, says so when the token is missing or wrong (and
-- nothing is sent), and writes hostile names and messages as text.
local H = require "helpers"
local json = require "kinot.json"
local launcher = require "kinot.sim.launcher"

local LUA = rawget(_G, "jit") and "luajit" or "lua5.4"
local TOKEN = "dashboard-spec-token-7f3a"
local HOSTILE_GROUP = [[<img src=x onerror="window.__pwned='group'">]]
local HOSTILE_BAY = [[<script>window.__pwned='bay'</script>]]

local sh = H.sh

-- browse(cfg) -> what spec/browser/dashboard.js saw (one chromium a call)
local function browse(cfg)
  assert(H.read(H.root .. "/spec/browser/node_modules/playwright-core/package.json"),
    "spec/browser/node_modules/playwright-core is missing: run make deps (npm ci, pinned by spec/browser/package-lock.json)")
  local arg = json.encode(cfg)
  local out, rc = sh(string.format("cd %s && node spec/browser/dashboard.js %s", H.root, launcher.sh_quote(arg)))
  local doc = json.decode(out:match("([^\n]+)\n*$") or "{}") -- the last line: the script's answer
  assert.are.equal(0, rc, out)
  assert.is_nil(doc.error, doc.error)
  return doc
end

describe("the dashboard in a real browser #browser #nginx #sim #cli", function()
  local sim, srv, groups_file, pid_file
  local LOCKS, SENSORS = 60, 30

  setup(function()
    sim = H.sim { locks = LOCKS, sensors = SENSORS, dtus = 3 }
    -- a car park: two levels of zone A for the locks, zone B for the
    -- sensors, a hostile group and bay; the last ten sensors ungrouped
    groups_file = os.tmpname()
    local f = assert(io.open(groups_file, "w"))
    f:write("sn,zone,level,bay\n")
    for i = 1, LOCKS do
      f:write(string.format("%d,A,%d,A%d-%03d\n", 419600000 + i, i <= 30 and 1 or 2, i <= 30 and 1 or 2, i))
    end
    for i = 1, SENSORS - 10 do f:write(string.format("%d,B,1,B1-%03d\n", 419800000 + i, i)) end
    f:write(string.format('%d,"%s",9,"%s"\n', 419800000 + SENSORS - 9, HOSTILE_GROUP:gsub('"', '""'),
      HOSTILE_BAY))
    f:close()
    local port = launcher.free_port()
    pid_file = os.tmpname()
    local out, rc = sh(string.format("cd %s && KINOT_ENDPOINT=%s KINOT_APP_KEY=%s KINOT_APP_SECRET=%s " ..
      "KINOT_API_TOKEN=%s %s bin/kinot serve --daemon --pid-file %s --listen 127.0.0.1:%d --dtus 644200001,644200002 " ..
      "--groups %s --sync-interval 300", H.root, sim.endpoint, sim.app_key, sim.app_secret, TOKEN, LUA, pid_file, port,
      groups_file))
    assert.are.equal(0, rc, out)
    srv = { url = "http://127.0.0.1:" .. port }
    function srv.fleet() return (H.json("GET", srv.url .. "/api/fleet")) end
    local client = sim.client()
    for _, kind in ipairs { "lock", "sensor" } do
      assert(client:set_notifications { device_type = kind, status_changed_callback_url = srv.url .. "/kinot/callback" })
    end
    assert.is_truthy(H.wait_for(function() return type(srv.fleet().synced_at) == "string" end, 15), "no sync")
  end)

  teardown(function()
    if pid_file then sh(string.format("cd %s && %s bin/kinot serve stop --pid-file %s", H.root, LUA, pid_file)) end
    if pid_file then os.remove(pid_file) end
    if groups_file then os.remove(groups_file) end
    if sim then sim.stop() end
  end)

  local function only_this_origin(doc)
    assert.is_true(#doc.requests > 3)
    for _, u in ipairs(doc.requests) do
      assert.are.equal(srv.url .. "/", u:sub(1, #srv.url + 1), "the page asked for " .. u)
    end
    assert.are.same({}, doc.console)
    assert.is_true(doc.pwned == nil or doc.pwned == json.null, "a script from the data ran: " .. tostring(doc.pwned))
    assert.are.equal(0, doc.images)
    assert.are.equal(0, doc.dialogs)
  end

  it("is one page that references nothing outside the server, under a CSP of its own", function()
    local res = H.raw("GET", srv.url .. "/")
    assert.are.equal(200, res.status)
    local headers = {}
    for k, v in pairs(res.headers) do headers[k:lower()] = v end
    assert.matches("^text/html", headers["content-type"])
    local csp = headers["content-security-policy"]
    assert.matches("default%-src 'none'", csp)
    assert.matches("connect%-src 'self'", csp)
    assert.matches("script%-src 'sha256%-[%w+/=]+';", csp)
    local page = res.body
    assert.is_true(#page > 5000)
    -- no URL of any scheme, no protocol-relative one, nothing loaded by src/href/url()/@import
    assert.is_nil(page:find("https?:"), "a URL in the page")
    assert.is_nil(page:find("//[%w%-]+%.[%w%-]"), "a protocol-relative URL in the page")
    assert.is_nil(page:find("src%s*="), "a src attribute")
    assert.is_nil(page:find("href%s*="), "an href attribute")
    assert.is_nil(page:find("url%s*%("), "a url() in the CSS")
    assert.is_nil(page:find("@import", 1, true))
    assert.is_nil(page:find("innerHTML", 1, true), "the script writes markup")
    -- the module the rockspec installs is the page served
    assert.are.equal(require("kinot.serve.dashboard").page(), page)
    assert.matches('"kinot.serve.dashboard"%] = "lua/kinot/serve/dashboard.lua"', H.read(H.root .. "/kinot-scm-1.rockspec"))
    assert.are.equal(405, H.raw("POST", srv.url .. "/", "x").status)
  end)

  it("shows the same occupancy as /api/fleet, by group, the ungrouped apart, hostile names as text", function()
    local doc = browse { url = srv.url, scenario = "occupancy" }
    local fleet = srv.fleet()
    only_this_origin(doc)
    local shown = doc.shown
    assert.are.equal(tostring(fleet.occupancy.occupied), shown.occupied)
    assert.are.equal(tostring(fleet.occupancy.free), shown.free)
    assert.are.equal(tostring(fleet.occupancy.total), shown.total)
    assert.are.equal(tostring(fleet.faults.devices), shown.faults)
    assert.are.equal(tostring(fleet.low_battery), shown.low_battery)
    assert.are.equal(tostring(fleet.weak_signal), shown.weak_signal)
    assert.are.equal(tostring(fleet.dtus_offline), shown.dtus_offline)
    assert.are.equal(tostring(fleet.stale), shown.stale)
    assert.are.equal(fleet.occupancy.occupied, shown.tiles_occupied)
    assert.are.equal(LOCKS + SENSORS, #(function() local t = {} for sn in pairs(shown.tiles) do t[#t + 1] = sn end
      return t end)())
    for name, g in pairs(fleet.occupancy.groups) do
      local s = shown.groups[name]
      assert.is_table(s, "no group " .. name .. " on the page")
      assert.are.same({ g.occupied, g.free, g.total }, { s.occupied, s.free, s.total })
      assert.are.equal(g.total, s.tiles)
      assert.are.equal(g.occupied, s.tiles_occupied)
    end
    assert.are.equal(10 - 1, shown.groups.Ungrouped.tiles)
    assert.are.same({ "644200001", "644200002" }, shown.dtus)
    -- the hostile group and bay, as the text they are
    assert.is_table(shown.groups[HOSTILE_GROUP .. "/9"])
    assert.truthy(shown.body_text:find(HOSTILE_GROUP .. "/9", 1, true))
    assert.truthy(shown.body_text:find(HOSTILE_BAY, 1, true))
  end)

  it("follows `kinot sim drift --count 20` within 2 s, without a reload", function()
    local doc = browse { url = srv.url, scenario = "drift", cwd = H.root, within_ms = 2000,
                         drift = { LUA, "bin/kinot", "--json", "sim", "drift", "--count", "20", "--url", sim.url } }
    only_this_origin(doc)
    assert.are.equal(20, #doc.changed)
    assert.is_true(next(doc.want) ~= nil)
    assert.is_true(doc.updated, "the page did not show the drift within 2 s (" .. doc.elapsed_ms .. " ms)")
    assert.are.equal("yes", doc.same_page)
    local fleet = srv.fleet()
    assert.are.equal(tostring(fleet.occupancy.occupied), doc.shown.occupied)
    assert.are.equal(fleet.occupancy.occupied, doc.shown.tiles_occupied)
    assert.is_true(doc.shown.feed >= 1)
  end)

  it("sends exactly one command a confirmed click, counted at the simulator, and shows succeeded", function()
    local sn = 419600007
    local before = sim.counters()
    local doc = browse { url = srv.url, scenario = "command", token = TOKEN, sn = sn, command = "reset_bt_match_code" }
    only_this_origin(doc)
    assert.are.equal("succeeded", doc.final)
    assert.are.equal("queued", doc.course[1])
    assert.are.equal("succeeded", doc.course[#doc.course])
    assert.are.same({}, doc.alert)
    local after = sim.counters()
    assert.are.equal(1, after.commands_created - before.commands_created)
    local function sent(c) return type(c.commands_by_sn) == "table" and c.commands_by_sn[tostring(sn)] or 0 end
    assert.are.equal(1, sent(after) - sent(before))
    -- and a sensor's freeze
    doc = browse { url = srv.url, scenario = "command", token = TOKEN, sn = 419800002, command = "freeze" }
    assert.are.equal("succeeded", doc.final)
    assert.are.equal(2, sim.counters().commands_created - before.commands_created)
  end)

  it("says a command needs the token, or that it is wrong, and sends nothing", function()
    local before = sim.counters().commands_created
    local doc = browse { url = srv.url, scenario = "refused", sn = 419600008, command = "reset_bt_match_code" }
    only_this_origin(doc)
    assert.matches("needs the API token", doc.alert)
    assert.matches("Token field", doc.alert)
    assert.matches("No API token is set", doc.modal_note)
    assert.are.equal("token needed", doc.token_state)
    assert.is_true(doc.buttons_enabled)
    doc = browse { url = srv.url, scenario = "refused", token = TOKEN .. "x", sn = 419800003, command = "activate" }
    assert.matches("the API token is wrong", doc.alert)
    assert.are.equal("wrong token", doc.token_state)
    assert.are.equal(before, sim.counters().commands_created)
  end)

  it("shows a hostile platform message as text", function()
    local before = sim.counters().commands_created
    sim.fault { kind = "status", status = 200, code = 500, message = [[<img src=x onerror="window.__pwned='msg'">]],
                endpoint = "POST /commands", next = 1 }
    local doc = browse { url = srv.url, scenario = "command", token = TOKEN, sn = 419600009,
                         command = "reset_bt_match_code" }
    only_this_origin(doc)
    assert.are.equal("failed", doc.final)
    assert.truthy(table.concat(doc.notes, "\n"):find([[<img src=x onerror="window.__pwned='msg'">]], 1, true),
      table.concat(doc.notes, "\n"))
    assert.are.equal(before, sim.counters().commands_created)
  end)
end)
