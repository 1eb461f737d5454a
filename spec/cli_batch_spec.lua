-- `kinot command send --from` / `kinot command wait --from` as a process
-- against the simulator: input forms, results as JSON lines and CSV, the
-- summary, exit codes 0 / 3 / 5, the journal.
local json = require "kinot.json"
local H = require "helpers"


local kinot = H.kinot

local function file(lines)
  local p = os.tmpname()
  local f = assert(io.open(p, "w"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
  return p
end

describe("kinot command send --from #cli #sim", function()
  local sim, env
  setup(function()
    sim = H.sim { locks = 50, sensors = 10, command_pace = 0.02 }
    env = string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s", sim.app_key, sim.app_secret, sim.endpoint)
  end)
  teardown(function() sim.stop() end)
  before_each(function() sim.reset() end)

  local function run(args, stdin) return kinot(args, env, stdin) end

  it("serials a line, --wait: a summary table, exit 0", function()
    local f = file { "# level 2", "419600001", "", "419600002", "419600003" }
    local out, err, rc = run("command send --from " .. f .. " --wait --concurrency 2")
    os.remove(f)
    assert.are.equal(0, rc, err)
    assert.matches("BATCH%s+COUNT", out)
    assert.matches("items%s+3", out)
    assert.matches("succeeded%s+3", out)
    assert.are.equal("", err) -- no progress bar off a terminal
    assert.are.equal(3, sim.counters().commands_created)
  end)

  it("JSON lines from stdin, --jsonl results; a refused value: exit 3", function()
    local out, err, rc = run("command send --from - --jsonl",
      '{"sn": 419800001, "value": 2}\n{"sn": 419600001, "value": 7}\n419600002\n')
    assert.are.equal(3, rc, err)
    local rows = {}
    for l in out:gmatch("[^\n]+") do rows[#rows + 1] = json.decode(l) end
    assert.are.equal(3, #rows)
    assert.are.equal("sent", rows[1].outcome)
    assert.are.equal(2, rows[1].value)
    assert.are.equal("failed", rows[2].outcome)
    assert.are.equal("api", rows[2].error_kind)
    assert.are.equal("sent", rows[3].outcome)
    assert.matches("BATCH", err) -- the summary beside machine output: on stderr
    assert.are.equal(2, sim.counters().commands_created)
  end)

  it("--csv; a reset after the platform acted: exit 5, named unknown", function()
    sim.fault { kind = "reset", after = true, next = 1, endpoint = "POST /commands" }
    local f = file { "419600001", "419600002" }
    local out, err, rc = run("command send --from " .. f .. " --csv --concurrency 1")
    os.remove(f)
    assert.are.equal(5, rc, err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal("sn,value,outcome,guid,command_status,reason,error_kind,error", lines[1])
    assert.matches("^419600001,1,unknown,,,,unknown_outcome,\"", lines[2])
    assert.matches("^419600002,1,sent,%x+,sending", lines[3])
    assert.matches("unknown outcome .- 419600001", err)
  end)

  it("--journal: run again, nothing sent twice; another batch: usage error", function()
    local j = os.tmpname()
    os.remove(j)
    local f = file { "419600001", "419600002", "419600003" }
    local _, err, rc = run("command send --from " .. f .. " --journal " .. j)
    assert.are.equal(0, rc, err)
    local out
    out, err, rc = run("command send --from " .. f .. " --journal " .. j)
    assert.are.equal(0, rc, err)
    assert.matches("from the journal%s+3", out)
    assert.are.equal(3, sim.counters().commands_created)
    local g = file { "419600001", "419600002" }
    _, err, rc = run("command send --from " .. g .. " --journal " .. j)
    assert.are.equal(2, rc)
    assert.matches("belongs to another batch", err)
    os.remove(f) os.remove(g) os.remove(j) os.remove(j .. ".lock")
  end)

  it("command wait --from the results of send --jsonl", function()
    local f = file { "419600001", "419600002" }
    local out, err, rc = run("command send --from " .. f .. " --jsonl")
    assert.are.equal(0, rc, err)
    local g = file { (out:gsub("\n$", "")) }
    out, err, rc = run("command wait --from " .. g .. " --wait-timeout 10")
    assert.are.equal(0, rc, err)
    assert.matches("WAIT%s+COUNT", out)
    assert.matches("succeeded%s+2", out)
    os.remove(f) os.remove(g)
  end)

  it("usage errors: both a SN and --from, neither, a bad line", function()
    local f = file { "419600001", "not-a-serial" }
    local _, err, rc = run("command send --from " .. f)
    assert.are.equal(2, rc)
    assert.matches("line 2: expected a serial", err)
    _, err, rc = run("command send 419600001 --from " .. f)
    assert.are.equal(2, rc)
    assert.matches("not both", err)
    _, err, rc = run("command send")
    assert.are.equal(2, rc)
    assert.matches("needs a SN or %-%-from FILE", err)
    _, err, rc = run("command send 419600001 --journal /tmp/x")
    assert.are.equal(2, rc)
    assert.matches("%-%-journal applies to a batch", err)
    os.remove(f)
    assert.are.equal(0, sim.counters().commands_created)
  end)
end)
