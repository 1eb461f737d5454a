-- kinot.cli.report's rows, which the terminal (report.print) and the HTML
-- page (kinot.report.html) both show: computed once, in cli/report.
local report = require "kinot.cli.report"

describe("kinot report: the rows the terminal and the page share #unit", function()
  local function r(lf, sf, lw, sw)
    return { locks = { faults = lf, weakest = lw or {} }, sensors = { faults = sf, weakest = sw or {} } }
  end

  it("fault rows: the locks' then the sensors', each by kind in order", function()
    local rows = report.fault_rows(r({ stuck = 2, battery = 1 }, { radar = 3, battery = 4 }))
    assert.are.same({
      { device = "lock", fault = "battery", count = 1 }, { device = "lock", fault = "stuck", count = 2 },
      { device = "sensor", fault = "battery", count = 4 }, { device = "sensor", fault = "radar", count = 3 },
    }, rows)
    assert.are.same({}, report.fault_rows(r({}, {})))
  end)

  it("weakest rows: the five weakest of locks and sensors together, weakest first", function()
    local lw = { { sn = 1, rs_si = -90 }, { sn = 2, rs_si = -70 }, { sn = 3, rs_si = -110 }, { sn = 4, rs_si = -60 } }
    local sw = { { sn = 5, rs_si = -100 }, { sn = 6, rs_si = -80 }, { sn = 7, rs_si = -120 } }
    local rows = report.weakest_rows(r({}, {}, lw, sw))
    assert.are.equal(5, #rows)
    local got = {}
    for i, w in ipairs(rows) do got[i] = w.device .. ":" .. w.sn .. ":" .. w.rs_si end
    assert.are.same({ "sensor:7:-120", "lock:3:-110", "sensor:5:-100", "lock:1:-90", "sensor:6:-80" }, got)
    assert.are.same({}, report.weakest_rows(r({}, {})))
  end)

  it("pct: one decimal, \"-\" of nothing", function()
    assert.are.equal("12.5%", report.pct(1, 8))
    assert.are.equal("-", report.pct(0, 0))
  end)
end)
