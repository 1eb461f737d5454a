-- `kinot --paging`: the CLI reaches the client's paging option, so a fleet
-- listed with --all comes whole from a platform that numbers `offset` from
-- 1, and a wrong reading is named as the mix-up it is (exit 3), not as a
-- fleet that changed.
local json = require "kinot.json"
local H = require "helpers"


local kinot = H.kinot

describe("kinot --paging #cli #sim", function()
  local sim, env
  setup(function()
    sim = H.sim { locks = 237, sensors = 10, dtus = 1 } -- more than one page of 100
    sim.call("POST", "/config", { paging = "page1", page1_zero = "clamp", offset_bound = false })
    env = string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s", sim.app_key, sim.app_secret, sim.endpoint)
  end)
  teardown(function() sim.stop() end)

  local function all_sns(out)
    local seen, n = {}, 0
    for line in out:gmatch("[^\n]+") do
      local sn = json.decode(line).sn
      assert.is_nil(seen[sn], "sn " .. tostring(sn) .. " twice")
      seen[sn], n = true, n + 1
    end
    return n
  end

  it("lists every lock once from a page1 platform, by --paging page1, KINOT_PAGING and auto", function()
    for _, how in ipairs { { "--paging page1 ", "" }, { "", "KINOT_PAGING=page1 " }, { "", "" } } do
      local out, err, rc = kinot(how[1] .. "--jsonl lockers --all --concurrency 4", how[2] .. env)
      assert.are.equal(0, rc, err)
      assert.are.equal(237, all_sns(out))
    end
  end)

  it("names the mix-up when told page0 against a page1 platform, and refuses an unknown reading", function()
    local _, err, rc = kinot("--paging page0 lockers --all", env)
    assert.are.equal(3, rc)
    assert.matches("paging mismatch", err)
    assert.matches('set paging = "page1"', err, 1, true)
    assert.is_nil(err:find("fleet changed", 1, true))
    _, err, rc = kinot("--paging pages lockers", env)
    assert.are.equal(2, rc)
    assert.matches("--paging", err, 1, true)
  end)
end)
