-- A standard client that never saw this SDK talks to `kinot sim`: Python's
-- urllib + json (a strict parser), with its own gateway signature
-- (spec/support/gateway_client.py, written from the signing rule, no SDK
-- code). It pages the fleet, fetches a lock, sends a command and reads it
-- back until it is final.
local json = require "kinot.json"
local H = require "helpers"

local function python()
  for _, p in ipairs { "/usr/bin/python3", "python3" } do
    local f = io.popen(p .. " --version 2>&1")
    local v = f and f:read("*a") or ""
    if f then f:close() end
    if v:match("^Python 3") then return p end
  end
  error("python3 is missing: run make deps")
end

local function run(sim)
  local out, err, rc = H.capture(string.format("%s %s/spec/support/gateway_client.py %s %s %s", python(), H.root,
    sim.endpoint, sim.app_key, sim.app_secret))
  return rc, out, err
end

describe("a Python client with its own signature #sim", function()
  local sim
  setup(function() sim = H.sim { locks = 23, sensors = 4, command_pace = 0.02 } end)
  teardown(function() sim.stop() end)

  it("pages the fleet, fetches a lock, sends a command and reads it back", function()
    local before = sim.counters()
    local rc, out, err = run(sim)
    assert.are.equal(0, rc, err)
    local r = json.decode(out)
    assert.are.equal(23, r.count)
    assert.are.equal(3, r.pages)
    local seen = {}
    for i, sn in ipairs(r.sns) do
      assert.are.equal(419600000 + i, sn)
      assert.is_nil(seen[sn])
      seen[sn] = true
    end
    assert.are.equal(23, #r.sns)
    assert.are.equal(419600023, r.lock.sn)
    assert.is_string(r.lock.bt_match_code)
    assert.are.equal(419600023, r.sent.sn)
    assert.are.equal(r.sent.guid, r.final.guid)
    assert.are.equal("succeeded", r.final.command_status)
    -- the platform's side: one command, and no request the gateway refused
    local after = sim.counters()
    assert.are.equal(before.commands_created + 1, after.commands_created)
    for k, n in pairs(after.requests) do
      assert.matches(" 200$", k, nil, nil, k .. ": " .. n)
    end
    -- the SDK sees the command the Python client sent, with the new code
    local c = sim.client()
    assert.are.equal("succeeded", assert(c:command(r.sent.guid)).command_status)
    assert.are_not.equal(r.lock.bt_match_code, assert(c:locker(419600023)).bt_match_code)
    c:close()
  end)

  it("fails, as it should, against the reference's trailing commas (--quirks)", function()
    local q = H.sim { locks = 23, quirks = true }
    finally(q.stop)
    local rc, _, err = run(q)
    assert.are_not.equal(0, rc)
    assert.matches("JSONDecodeError", err)
  end)

  it("is refused by the gateway when its secret is wrong: its signature is really checked", function()
    local rc, _, err = run { endpoint = sim.endpoint, app_key = sim.app_key, app_secret = "not-the-secret" }
    assert.are_not.equal(0, rc)
    assert.matches("HTTP 400 Invalid Signature", err)
  end)
end)
