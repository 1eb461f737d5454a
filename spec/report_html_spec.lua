-- `kinot report --html FILE` (issue 21): the charts on their own (kinot.report.svg),
-- then the page against the simulator, read back with Python's HTML parser
-- (spec/support/report_html.py): it parses, its figures are the text report's
-- and --json's, its bars are the counts, a hostile value renders as text, it
-- refers to nothing outside itself; an unwritable FILE fails before the scan;
-- then chromium renders it (spec/browser/report-render.js).
local json = require "kinot.json"
local H = require "helpers"

local kinot = H.kinot
local LUA = H.runtime == "luajit" and "luajit" or "lua5.4"

local parse = H.parse_report_html -- (the page as Python's parser reads it)

-- the svg elements of a page's text, the charts parsed alone
local function svg_page(svg)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write("<!DOCTYPE html><html><head><title>t</title></head><body>", svg, "</body></html>")
  f:close()
  local doc = parse(path)
  os.remove(path)
  return doc
end

-- every bar's length over its count is one number (lengths proportional to
-- the counts); a count of 0 is a length of 0
local function proportional(items, key)
  local ratio
  for _, b in ipairs(items) do
    if b.count == 0 then
      assert.are.equal(0, b[key], json.encode(b))
    else
      local r = b[key] / b.count
      ratio = ratio or r
      assert.is_true(math.abs(r - ratio) <= 0.011 * math.max(1, 1 / b.count), json.encode(b) .. " vs " .. ratio)
    end
  end
  return ratio
end

describe("kinot.report.svg: the charts #unit", function()
  local svg = require "kinot.report.svg"

  it("puts the axis' top at a round number at or above the largest count", function()
    for _, c in ipairs { { 0, 1, 1 }, { 1, 1, 1 }, { 5, 5, 1 }, { 6, 6, 2 }, { 11, 15, 5 }, { 99, 100, 20 },
                         { 123, 150, 50 }, { 100000, 100000, 20000 } } do
      local top, step = svg.axis(c[1])
      assert.are.same({ c[2], c[3] }, { top, step }, "axis(" .. c[1] .. ")")
      assert.is_true(top >= c[1] and top / step <= 5)
    end
  end)

  it("draws a histogram's bars proportional to the counts, the largest to the axis' top", function()
    local bars = {}
    for i, n in ipairs { 0, 3, 17, 40, 1, 0, 9 } do bars[i] = { label = "b" .. i, count = n } end
    local doc = svg_page(svg.histogram { title = "t", x_label = "x", y_label = "y", bars = bars })
    assert.are.same({}, doc.errors)
    assert.are.equal(7, #doc.bars)
    for i, b in ipairs(doc.bars) do
      assert.are.equal(bars[i].count, b.count)
      assert.are.equal(bars[i].label, b.label)
    end
    local ratio = proportional(doc.bars, "height")
    -- 40 is the top of the axis: its bar is the plot's whole height (260 - 14 - 50)
    assert.is_true(math.abs(ratio * 40 - 196) < 0.01)
    assert.matches("y", doc.text)
  end)

  it("handles no data, and all of it in one bucket", function()
    local none = svg_page(svg.histogram { title = "t", x_label = "x", y_label = "y",
                                          bars = { { label = "a", count = 0 }, { label = "b", count = 0 } } })
    assert.are.same({}, none.errors)
    for _, b in ipairs(none.bars) do assert.are.equal(0, b.height) end
    assert.matches("no readings", none.text)
    local one = svg_page(svg.histogram { title = "t", x_label = "x", y_label = "y",
                                         bars = { { label = "a", count = 0 }, { label = "b", count = 1 } } })
    assert.are.same({ 0, 196 }, { one.bars[1].height, one.bars[2].height })
    assert.is_nil(one.text:find("no readings", 1, true))
    local empty = svg_page(svg.histogram { title = "t", x_label = "x", y_label = "y", bars = {} })
    assert.are.same({}, empty.errors)
    assert.are.equal(0, #empty.bars)
  end)

  it("draws horizontal bars in parts side by side, a row of 1 and no row at all", function()
    local parts = { { name = "occupied", class = "occupied" }, { name = "free", class = "free" } }
    local doc = svg_page(svg.hbars { title = "t", x_label = "spaces", parts = parts,
      rows = { { label = "A/1", counts = { 1, 0 } }, { label = "B/2", counts = { 30, 15 } }, { label = "C", counts = { 0, 7 } } } })
    assert.are.same({}, doc.errors)
    assert.are.equal(6, #doc.segs)
    assert.are.same({ "A/1", "occupied", 1 }, { doc.segs[1].row, doc.segs[1].part, doc.segs[1].count })
    assert.are.same({ "B/2", "free", 15 }, { doc.segs[4].row, doc.segs[4].part, doc.segs[4].count })
    proportional(doc.segs, "width")
    local none = svg_page(svg.hbars { title = "t", x_label = "x", parts = parts, rows = {}, empty = "no group" })
    assert.are.same({}, none.errors)
    assert.matches("no group", none.text)
  end)

  it("escapes a hostile label in text and in attributes", function()
    local evil = [[<script>alert(1)</script>"' onload="x" &amp;]] .. "\27]0;t\7"
    local text = svg.histogram { title = evil, x_label = evil, y_label = evil, bars = { { label = evil, count = 2 } },
                                 edges = { evil } } ..
                 svg.hbars { title = evil, x_label = evil, parts = { { name = evil, class = "free" } },
                             rows = { { label = evil, counts = { 1 }, note = evil } } }
    assert.is_nil(text:find("<script", 1, true))
    assert.is_nil(text:find("[\1-\31]"))
    local doc = svg_page(text)
    assert.are.same({}, doc.errors)
    assert.is_nil(doc.tags.script)
    for _, a in ipairs(doc.attrs) do assert.is_nil(a[2]:match("^on"), json.encode(a)) end
    assert.are.equal(evil:gsub("\27", "\\x1b"):gsub("\7", "\\x07"), doc.bars[1].label)
    assert.matches("<script>alert(1)</script>", doc.text, 1, true)
  end)
end)

describe("kinot report --html #cli #sim", function()
  local sim, env, dir
  local HOSTILE = [[<script>alert("x")</script><img src=x onerror=alert(1)>' &amp; ]] .. "\27]0;pwned\7"
  setup(function()
    sim = H.sim { locks = 123, sensors = 45, dtus = 4, command_pace = 0.02 }
    env = sim.env
    dir = H.tmpdir("report")
    -- a car park: two levels of two zones for the locks, the sensors in one
    -- zone of their own, a group of 1, three locks in no group
    local f = assert(io.open(dir .. "/bays.csv", "wb"))
    f:write("sn,zone,level,bay\n")
    for i = 1, 120 do
      f:write(string.format("%d,%s,%d,B%03d\n", 419600000 + i, i <= 60 and "A" or "B", i % 2 + 1, i))
    end
    for i = 1, 44 do f:write(string.format("%d,S,0,S%03d\n", 419800000 + i, i)) end
    f:write('419800045,"<b>VIP</b>",0,V1\n')
    f:close()
  end)
  teardown(function()
    sim.stop()
    os.execute("rm -rf " .. dir)
  end)
  before_each(function() sim.reset() end)

  local function run(args) return kinot(args, env) end

  it("writes one page whose figures are the text report's and --json's, its bars the counts", function()
    sim.call("POST", "/devices/644200002", { host = HOSTILE, online = "offline" })
    local page = dir .. "/r.html"
    local args = "report --groups " .. dir .. "/bays.csv --dtu 644200001 --dtu 644200002 --html " .. page
    local out, err, rc = run("--json " .. args)
    assert.are.equal(0, rc, err)
    local r = json.decode(out)
    local text, terr, trc = run(args)
    assert.are.equal(0, trc, terr)
    local doc = parse(page)
    assert.are.same({}, doc.errors)
    local F = doc.figures
    -- the figures, as --json has them
    local L, S = r.locks, r.sensors
    assert.are.same({ 123, 45, 168 }, { L.total, S.total, L.total + S.total })
    for path, want in pairs { ["locks.total"] = L.total, ["sensors.total"] = S.total, ["locks.up"] = L.up,
                              ["locks.down"] = L.down, ["sensors.frozen"] = S.frozen, ["locks.low_battery"] = L.low_battery,
                              ["sensors.low_battery"] = S.low_battery, ["occupied"] = L.occupied + S.occupied,
                              ["spaces"] = L.total + S.total, ["dtus.total"] = 2, ["dtus.offline"] = 1,
                              ["groups.ungrouped"] = 3, ["battery.readings"] = 168, ["signal.readings"] = 168 } do
      assert.are.equal(tostring(want), F[path], path)
    end
    assert.are.equal(sim.endpoint, F.endpoint)
    -- ... and as the text report prints them
    assert.matches(string.format("devices:%%s+%s locks, %s sensors, 2 DTUs checked", F["locks.total"], F["sensors.total"]), text)
    assert.matches(string.format("occupancy:%%s+[%%d.]+%%%% %%(%s of %s spaces%%)", F.occupied, F.spaces), text)
    assert.matches(string.format("locks:%%s+%s up, %s down", F["locks.up"], F["locks.down"]), text)
    assert.matches(string.format("low battery:%%s+%s locks, %s sensors", F["locks.low_battery"], F["sensors.low_battery"]), text)
    assert.matches(string.format("sensors frozen:%%s+%s\n", F["sensors.frozen"]), text)
    local shown_pct = text:match("occupancy:%s+([%d.]+%%)")
    assert.matches(">" .. shown_pct:gsub("%p", "%%%0") .. "<", H.read(page))
    -- the groups: the text report's table, --json's, the chart's segments
    assert.are.same({ "<b>VIP</b>/0", "A/1", "A/2", "B/1", "B/2", "S/0" }, (function()
      local g = {}
      for i, row in ipairs(r.groups.groups) do g[i] = row.group end
      return g
    end)())
    local seg = {}
    for _, s in ipairs(doc.segs) do
      if s.chart:find("occupancy", 1, true) then seg[s.row .. "|" .. s.part] = s.count end
    end
    local occupied_sum = 0
    for _, g in ipairs(r.groups.groups) do
      assert.are.equal(g.total, g.occupied + g.free)
      assert.are.same({ g.occupied, g.free }, { seg[g.group .. "|occupied"], seg[g.group .. "|free"] }, g.group)
      if g.group ~= "<b>VIP</b>/0" then
        assert.matches("\n" .. g.group:gsub("%p", "%%%0") .. "%s+" .. g.occupied .. "%s+" .. g.free .. "%s+" .. g.total .. "\n", text)
      end
      occupied_sum = occupied_sum + g.occupied
    end
    assert.are.same({ 1, 30, 30, 30, 30, 44 }, (function()
      local t = {}
      for i, g in ipairs(r.groups.groups) do t[i] = g.total end
      return t
    end)())
    assert.is_true(occupied_sum <= L.occupied + S.occupied)
    local occ_segs = {}
    for _, s in ipairs(doc.segs) do if s.chart:find("occupancy", 1, true) then occ_segs[#occ_segs + 1] = s end end
    proportional(occ_segs, "width")
    -- the histograms: a bar a bucket, in order, their heights the counts
    for _, name in ipairs { "battery", "signal" } do
      local bars = {}
      for _, b in ipairs(doc.bars) do if b.chart:find(name, 1, true) then bars[#bars + 1] = b end end
      local sum = 0
      assert.are.equal(#r[name].buckets, #bars, name)
      for i, bucket in ipairs(r[name].buckets) do
        assert.are.equal(bucket.count, bars[i].count, name .. " bucket " .. i)
        sum = sum + bucket.count
      end
      assert.are.equal(168, sum, name)
      proportional(bars, "height")
    end
    -- faults by kind: the chart's segments are --json's counts (0 where none)
    local fault_segs = {}
    for _, s in ipairs(doc.segs) do
      if s.chart:find("faults", 1, true) then fault_segs[s.row .. "|" .. s.part] = s.count end
    end
    for _, k in ipairs(require("kinot.vocabulary").faults.lock) do
      assert.are.equal(L.faults[k] or 0, fault_segs[k .. "|locks"], k)
      assert.are.equal(S.faults[k] or 0, fault_segs[k .. "|sensors"], k)
      if (L.faults[k] or 0) > 0 then assert.matches("lock%s+" .. k .. "%s+" .. L.faults[k] .. "\n", text) end
    end
    -- the offline DTU's hostile host, and the hostile group: text, never markup
    assert.is_nil(doc.tags.script)
    assert.is_nil(doc.tags.img)
    assert.is_nil(doc.tags.b)
    assert.matches([[<script>alert("x")</script><img src=x onerror=alert(1)>' &amp; \x1b]0;pwned\x07]], doc.text, 1, true)
    assert.matches("<b>VIP</b>/0", doc.text, 1, true)
    for _, a in ipairs(doc.attrs) do assert.is_nil(a[2]:match("^on"), json.encode(a)) end
    assert.is_nil(H.read(page):find("[\1-\8\11-\31\127]"), "a raw control byte in the page")
  end)

  it("refers to nothing outside itself: no script, no src or href, no url() or @import", function()
    local page = dir .. "/self.html"
    local _, err, rc = run("report --html " .. page)
    assert.are.equal(0, rc, err)
    local doc = parse(page)
    assert.are.same({}, doc.errors)
    for _, tag in ipairs { "script", "link", "img", "iframe", "object", "embed", "image", "use", "a", "base", "form" } do
      assert.is_nil(doc.tags[tag], tag)
    end
    for _, a in ipairs(doc.attrs) do
      assert.is_nil(({ src = true, href = true, ["xlink:href"] = true, action = true, srcset = true })[a[2]], json.encode(a))
      assert.is_nil(a[3]:find("://", 1, true), json.encode(a))
    end
    assert.is_nil(doc.css:find("url(", 1, true))
    assert.is_nil(doc.css:find("@import", 1, true))
    -- the one URL in the page is the endpoint, as text; no groups file: the page says how
    local raw = H.read(page)
    local _, n = raw:gsub("https?://", "")
    assert.are.equal(1, n)
    assert.matches("--groups FILE", doc.text, 1, true)
    assert.are.same({}, (function()
      local g = {}
      for _, s in ipairs(doc.segs) do if s.chart:find("occupancy", 1, true) and s.row ~= "all spaces" then g[#g + 1] = s end end
      return g
    end)())
  end)

  it("shows the endpoint without its credentials, and never the secret", function()
    local page = dir .. "/cred.html"
    local endpoint = sim.endpoint:gsub("^http://", "http://user:hunter2@")
    local _, err, rc = kinot("report --html " .. page, string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s",
      sim.app_key, sim.app_secret, endpoint))
    assert.are.equal(0, rc, err)
    local raw = H.read(page)
    assert.is_nil(raw:find("hunter2", 1, true))
    assert.is_nil(raw:find(sim.app_secret, 1, true))
    assert.matches("127.0.0.1", parse(page).figures.endpoint, 1, true)
  end)

  it("an unwritable FILE is a usage error (exit 2) before the scan; a failed scan leaves no file", function()
    local out, err, rc = run("report --html " .. dir .. "/no/such/dir/r.html")
    assert.are.equal(2, rc, err)
    assert.are.equal("", out)
    assert.matches("kinot: cannot write the HTML report to " .. dir .. "/no/such/dir/r.html", err, 1, true)
    assert.are.equal(json.null, sim.counters().endpoints, "it scanned first") -- no request at all
    -- a groups file without serials: a usage error too, before the scan
    local bad = assert(io.open(dir .. "/bad.csv", "wb"))
    bad:write("zone,level\nA,1\n")
    bad:close()
    out, err, rc = run("report --groups " .. dir .. "/bad.csv --html " .. dir .. "/bad.html")
    assert.are.equal(2, rc, err)
    assert.are.equal("", out)
    assert.matches("has no sn column", err, 1, true)
    assert.are.equal(json.null, sim.counters().endpoints, "it scanned first")
    assert.is_nil(H.read(dir .. "/bad.html"))
    -- a directory for FILE: a usage error too (report_html_attack_spec: before the scan)
    out, err, rc = run("report --html " .. dir)
    assert.are.equal(2, rc, err)
    assert.are.equal("", out)
    assert.matches("cannot write the HTML report to " .. dir, err, 1, true)
    -- the platform refuses the scan: its error's exit code, and no page, whole or part
    sim.fault { kind = "status", status = 403, code = 403, message = "denied", next = 1, endpoint = "GET /lockers" }
    local page = dir .. "/failed.html"
    out, err, rc = run("report --html " .. page)
    assert.are.equal(3, rc, err)
    assert.are.equal("", out)
    assert.is_nil(H.read(page))
    local p = io.popen("ls -A " .. dir) -- (-A: the temp file's name starts with a dot)
    local listing = p:read("*a")
    p:close()
    assert.is_nil(listing:find("tmp-", 1, true), listing)
    assert.is_nil(listing:find("failed", 1, true), listing)
  end)

  it("handles a fleet of no device: figures of 0, no bar, the histograms say so", function()
    local empty = H.sim { locks = 0, sensors = 0, dtus = 0 }
    finally(function() empty.stop() end)
    local page = dir .. "/empty.html"
    local f = assert(io.open(dir .. "/one.csv", "wb"))
    f:write("sn,zone,level\n419600001,A,1\n")
    f:close()
    local out, err, rc = kinot("--json report --groups " .. dir .. "/one.csv --html " .. page,
      string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s", empty.app_key, empty.app_secret, empty.endpoint))
    assert.are.equal(0, rc, err)
    local r = json.decode(out)
    assert.are.same({ { group = "A/1", occupied = 0, free = 0, total = 0 } }, r.groups.groups)
    local doc = parse(page)
    assert.are.same({}, doc.errors)
    for _, k in ipairs { "locks.total", "sensors.total", "occupied", "spaces", "battery.readings", "signal.readings" } do
      assert.are.equal("0", doc.figures[k], k)
    end
    assert.are.equal(10 + 14, #doc.bars) -- the battery buckets and the signal ones, all drawn
    for _, b in ipairs(doc.bars) do assert.are.same({ 0, 0 }, { b.count, b.height }) end
    for _, s in ipairs(doc.segs) do assert.are.same({ 0, 0 }, { s.count, s.width }) end
    local _, n = doc.text:gsub("no readings", "")
    assert.are.equal(2, n)
    assert.matches("No signal readings.", doc.text, 1, true)
  end)

  it("shows the scan's progress on a terminal, as the text report does", function()
    local have = os.execute("command -v script >/dev/null 2>&1")
    if have ~= true and have ~= 0 then pending("util-linux `script` is missing: no pty to run kinot on") return end
    local page = dir .. "/tty.html"
    local p = io.popen(string.format("cd %s && %s script -qec %q /dev/null 2>&1", H.root, env,
      LUA .. " bin/kinot report --concurrency 1 --html " .. page))
    local text = p:read("*a")
    p:close()
    assert.matches("locks %[#+%.*%] 1/2 pages", text)
    assert.matches("sensors %[#+%] 1/1 pages", text)
    assert.matches("HTML report: " .. page, text, 1, true)
    assert.are.same({}, parse(page).errors)
  end)
end)

describe("kinot report --html in chromium #cli #sim #browser", function()
  local sim, env, dir
  local RENDER = H.root .. "/spec/browser/report-render.js"
  setup(function()
    assert(H.read(H.root .. "/spec/browser/node_modules/playwright-core/package.json"),
      "playwright-core is missing: `make deps` installs it into spec/browser/node_modules")
    sim = H.sim { locks = 123, sensors = 45, dtus = 4 }
    env = sim.env
    dir = H.tmpdir("report")
  end)
  teardown(function()
    if sim then sim.stop() end -- (a setup that failed started none)
    if dir then os.execute("rm -rf " .. dir) end
  end)

  local function render(page, shot)
    return H.json_of(string.format("cd %s/spec/browser && node %s %q %s", H.root, RENDER, page, shot or ""),
      "report-render.js")
  end

  it("renders without a console error or a request, at a sane size, and prints", function()
    local page = dir .. "/r.html"
    local f = assert(io.open(dir .. "/bays.json", "wb"))
    f:write('{"419600001": {"zone": "A", "level": 1}, "419600002": {"zone": "A", "level": 2}}')
    f:close()
    local _, err, rc = kinot("report --dtu 644200001 --groups " .. dir .. "/bays.json --html " .. page, env)
    assert.are.equal(0, rc, err)
    local got = render(page, dir .. "/r.png")
    assert.are.same({}, got.console_errors)
    assert.are.same({}, got.page_errors)
    assert.are.same({}, got.requests)
    assert.are.equal(0, got.scripts)
    assert.matches("^Kinot fleet report", got.title)
    -- no sideways scroll at 1200 px; the length of a report, not of a runaway
    assert.is_true(got.width <= got.inner_width, json.encode(got))
    assert.is_true(got.height > 900 and got.height < 6000, json.encode(got))
    assert.are.equal(4, #got.charts)
    for _, c in ipairs(got.charts) do
      assert.is_true(c.width > 200 and c.height > 60 and c.right <= got.inner_width, json.encode(c))
    end
    assert.is_true(got.pdf_pages >= 1 and got.pdf_pages <= 4, json.encode(got))
    local png = H.read(dir .. "/r.png")
    assert.are.equal("\137PNG", png:sub(1, 4))
    assert.is_true(#png > 20000, "a blank screenshot? " .. #png .. " bytes")
  end)

  it("would see a page that fetches or fails: the harness itself (a page made to)", function()
    local page = dir .. "/bad.html"
    local f = assert(io.open(page, "wb"))
    f:write('<!DOCTYPE html><html><head><title>bad</title></head><body><img src="http://127.0.0.1:9/x.png">',
      '<script>console.error("boom"); undefined_function();</script></body></html>')
    f:close()
    local got = render(page)
    assert.are.same({ "http://127.0.0.1:9/x.png" }, got.requests)
    assert.is_true(#got.console_errors >= 1)
    assert.are.equal(1, #got.page_errors)
  end)
end)

describe("kinot report --from a kinot serve's twin #cli #sim #nginx", function()
  local sim, dir, serve_url, serve
  setup(function()
    sim = H.sim { locks = 234, sensors = 56, dtus = 3 }
    dir = H.tmpdir("report")
    serve = H.serve(sim, { env = "KINOT_REDIS_URL=", pid_file = dir .. "/serve.pid",
                           args = "--dtus 644200001,644200002" })
    serve_url = serve.url
  end)
  teardown(function()
    if serve then serve.stop() end
    if sim then sim.stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  it("gives the platform's report from the twin: the same JSON, the serve's URL on the page, no credential needed", function()
    local page = dir .. "/twin.html"
    local twin = H.twin_report(sim, serve_url, page, " report --dtu 644200001 --dtu 644200002")
    assert.are.equal(234, twin.locks.total)
    local doc = parse(page)
    assert.are.same({}, doc.errors)
    assert.are.equal(serve_url, doc.figures.endpoint)
    assert.are.equal("234", doc.figures["locks.total"])
  end)

  it("a --from nothing answers at is a network error (exit 4); one that is no URL a usage error (exit 2)", function()
    local port = require("kinot.sim.launcher").free_port()
    local _, err, rc = kinot("report --from http://127.0.0.1:" .. port .. " --html " .. dir .. "/none.html", "")
    assert.are.equal(4, rc, err)
    assert.matches("no kinot serve answers at", err, 1, true)
    assert.is_nil(H.read(dir .. "/none.html"))
    _, err, rc = kinot("report --from ftp://user:pw@x", "")
    assert.are.equal(2, rc, err)
    assert.matches("--from must be", err, 1, true)
    assert.is_nil(err:find("pw@", 1, true))
  end)
end)
