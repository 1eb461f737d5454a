-- The commands of `kinot serve` (POST /api/devices/{sn}/commands, GET
-- /api/commands/{id}: what the dashboard's buttons call) attacked over
-- real HTTP against `kinot sim`, whose counters say what was sent: one
-- request_id POSTed eight times at once sends one command; eight ids for one
-- device at once send one; no token, a wrong token, or a server without
-- one sends nothing, from loopback too; a reset after the platform acted is
-- `unknown` and a retry does not send it again.
local H = require "helpers"
local json = require "kinot.json"
local launcher = require "kinot.sim.launcher"

local TOKEN = "commands-spec-token-91c2"

local sh = H.sh

describe("kinot serve's commands #nginx #sim #cli", function()
  local sim

  setup(function() sim = H.sim { locks = 20, sensors = 10, dtus = 1, command_pace = 0.1 } end)
  teardown(function() if sim then sim.stop() end end)

  -- serve(token) -> { url, stop() }: a `kinot serve --daemon` over the simulator, synced
  local function serve(token) return H.serve(sim, { token = token, args = "--dtus 644200001" }) end

  local function post(s, sn, doc, token)
    local res = H.raw("POST", s.url .. "/api/devices/" .. sn .. "/commands", json.encode(doc),
      { ["Content-Type"] = "application/json", Authorization = token and ("Bearer " .. token) or nil })
    return res.status, json.decode(res.body)
  end

  -- n POSTs at once (curl in the background), each its own body -> their statuses and answers
  local function at_once(s, sn, bodies)
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    local cmds = {}
    for i, b in ipairs(bodies) do
      cmds[#cmds + 1] = string.format("curl -s -o %s/%d.body -w '%%{http_code}' -H 'Authorization: Bearer %s' " ..
        "-H 'Content-Type: application/json' --data-binary %s %s/api/devices/%d/commands > %s/%d.status &",
        dir, i, TOKEN, launcher.sh_quote(json.encode(b)), s.url, sn, dir, i)
    end
    sh(table.concat(cmds, " ") .. " wait")
    local out = {}
    for i = 1, #bodies do
      out[i] = { status = tonumber(H.read(dir .. "/" .. i .. ".status")), body = json.decode(H.read(dir .. "/" .. i ..
        ".body")) }
    end
    os.execute("rm -rf " .. dir)
    return out
  end

  local function created(sn)
    local c = sim.counters()
    return type(c.commands_by_sn) == "table" and c.commands_by_sn[tostring(sn)] or 0
  end

  local function course(s, id)
    return H.wait_for(function()
      local doc = H.json("GET", s.url .. "/api/commands/" .. id)
      return doc.final and doc
    end, 10)
  end

  it("sends one command for one request_id POSTed eight times at once, and one for eight ids on one device", function()
    local s = serve(TOKEN)
    finally(function() s.stop() end)
    local id = "same-request-0001-aaaa"
    local bodies = {}
    for i = 1, 8 do bodies[i] = { command = "reset_bt_match_code", request_id = id } end
    local answers = at_once(s, 419600003, bodies)
    for _, a in ipairs(answers) do
      assert.is_true(a.status == 202 or a.status == 200, tostring(a.status))
      assert.are.equal(id, a.body.id)
    end
    local done = course(s, id)
    assert.are.equal("succeeded", done.status)
    assert.are.equal(1, created(419600003))
    -- the same id once more, after the end: the record, nothing sent
    local status, again = post(s, 419600003, bodies[1], TOKEN)
    assert.are.equal(200, status)
    assert.are.same(done, again)
    assert.are.equal(1, created(419600003))
    -- the same id for another device or command is refused
    status, again = post(s, 419600004, bodies[1], TOKEN)
    assert.are.equal(409, status)
    assert.are.equal("request_id_taken", again.reason)

    -- eight ids for one sensor at once: one goes, seven are refused (one in course a device)
    bodies = {}
    for i = 1, 8 do bodies[i] = { command = "freeze", request_id = "distinct-request-000" .. i } end
    answers = at_once(s, 419800002, bodies)
    local went, refused = 0, 0
    for _, a in ipairs(answers) do
      if a.status == 202 then went = went + 1 else
        assert.are.equal(409, a.status)
        assert.are.equal("refused", a.body.status)
        assert.matches("in course", a.body.reason)
        refused = refused + 1
      end
    end
    assert.are.same({ 1, 7 }, { went, refused })
    assert.are.equal(1, created(419800002))
    -- once final, the device takes another
    for _, a in ipairs(answers) do if a.status == 202 then course(s, a.body.id) end end
    status = post(s, 419800002, { command = "activate", request_id = "after-the-end-00001" }, TOKEN)
    assert.are.equal(202, status)
    assert.are.equal(2, created(419800002))
  end)

  it("needs the token from loopback too: none, a wrong one, or a server without one send nothing", function()
    local s = serve(TOKEN)
    finally(function() s.stop() end)
    local before = sim.counters().commands_created
    local body = { command = "reset_bt_match_code", request_id = "token-check-000001" }
    local status, doc = post(s, 419600005, body)
    assert.are.equal(401, status)
    assert.are.equal("missing", doc.reason)
    status, doc = post(s, 419600005, body, TOKEN .. "x")
    assert.are.equal(401, status)
    assert.are.equal("wrong", doc.reason)
    status, doc = post(s, 419600005, body, TOKEN:sub(1, -2))
    assert.are.equal(401, status)
    assert.are.equal("wrong", doc.reason)
    -- misuse, each refused before anything goes
    assert.are.equal(409, (post(s, 419600005, { command = "activate", request_id = "wrong-kind-0000001" }, TOKEN)))
    assert.are.equal(404, (post(s, 419699999, body, TOKEN)))
    assert.are.equal(400, (post(s, 419600005, { command = "explode", request_id = "bad-command-000001" }, TOKEN)))
    assert.are.equal(400, (post(s, 419600005, { command = "activate", request_id = "short" }, TOKEN)))
    assert.are.equal(400, (post(s, "1;2", body, TOKEN)))
    assert.are.equal(400, H.raw("POST", s.url .. "/api/devices/419600005/commands", "{not json",
      { Authorization = "Bearer " .. TOKEN }).status)
    assert.are.equal(405, H.raw("GET", s.url .. "/api/devices/419600005/commands").status)
    assert.are.equal(404, H.raw("GET", s.url .. "/api/commands/token-check-000001").status)
    assert.are.equal(before, sim.counters().commands_created)
    s.stop()

    local open = serve(nil)
    finally(function() open.stop() end)
    status, doc = post(open, 419600005, body, "anything")
    assert.are.equal(403, status)
    assert.are.equal("no_token", doc.reason)
    assert.matches("%-%-api%-token", doc.error)
    assert.are.equal(before, sim.counters().commands_created)
  end)

  it("reports a command whose outcome is unknown, and a retry does not send it again", function()
    local s = serve(TOKEN)
    finally(function() s.stop() end)
    sim.fault { kind = "reset", after = true, endpoint = "POST /commands", next = 1 }
    local body = { command = "reset_bt_match_code", request_id = "unknown-outcome-0001" }
    local status, doc = post(s, 419600006, body, TOKEN)
    assert.are.equal(202, status)
    assert.are.equal("unknown", doc.status)
    assert.is_true(doc.final)
    assert.matches("unknown", doc.reason)
    assert.are.equal(1, created(419600006)) -- the platform acted on it
    status, doc = post(s, 419600006, body, TOKEN)
    assert.are.equal(200, status)
    assert.are.equal("unknown", doc.status)
    assert.are.equal(1, created(419600006))
    -- a command the platform fails: its course to failed, with the platform's reason; the device free again
    sim.call("POST", "/config", { failure_rate = 1 })
    finally(function() sim.call("POST", "/config", { failure_rate = 0 }) s.stop() end)
    status = post(s, 419800004, { command = "activate", request_id = "fails-at-the-end-01" }, TOKEN)
    assert.are.equal(202, status)
    doc = course(s, "fails-at-the-end-01")
    assert.are.equal("failed", doc.status)
    assert.are.equal("failed", doc.course[#doc.course].status)
    assert.are.equal("queued", doc.course[1].status)
    assert.is_string(doc.reason)
    assert.are.equal(202, (post(s, 419800004, { command = "activate", request_id = "after-a-failure-01" }, TOKEN)))
  end)
end)
