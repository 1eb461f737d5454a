-- `kinot report --html FILE` attacked (issue 21 review): device values a
-- platform or a twin may send that the page once choked on (a serial that
-- is no integer, null members, an rs_si of -1e400 or -0.0), a `--from`
-- server answering hostile JSON, a `--from` URL carrying a password, a FILE
-- that is a directory or a symlink.  Each figure the page shows is the text
-- report's and --json's; a failure leaves no page and no temp file.
local json = require "kinot.json"
local H = require "helpers"

local kinot = H.kinot

local parse = H.parse_report_html -- (the page as Python's parser reads it)

local function listing(dir)
  local p = io.popen("ls -A " .. dir)
  local text = p:read("*a")
  p:close()
  return text
end

-- a source for kinot.cli.report.build (the seam the client and the twin
-- both fill): these locks, no sensor, DTUs as given
local function source(locks, dtus)
  return {
    each_locker = function()
      local i = 0
      return function() i = i + 1 return locks[i] end
    end,
    each_sensor = function() return function() return nil end end,
    dtu_device = function(_, sn) return dtus[sn] end,
  }
end

local function render(r)
  return require("kinot.report.html").render(r, { generated_at = "2026-12-03T14:00:00Z", endpoint = "http://x" })
end

-- the rows of the weakest-signal table, as text
local function weakest_rows(page)
  local section = page:match('id="weakest".-</section>')
  local rows = {}
  for tr in section:gmatch("<tbody>(.-)</tbody>") do
    for cells in tr:gmatch("<tr>(.-)</tr>") do
      local row = {}
      for td in cells:gmatch("<td[^>]*>(.-)</td>") do row[#row + 1] = td end
      rows[#rows + 1] = row
    end
  end
  return rows
end

describe("kinot report's page on hostile device values #unit", function()
  local report = require "kinot.cli.report"

  it("shows a serial that is no integer as the text report does, never fails on it", function()
    local r = report.build(source {
      { sn = "12<b>x</b>", rs_si = -101, voltage = 3.5 },
      { sn = 1.5, rs_si = -102, voltage = 3.5 },
      { sn = json.null, rs_si = -103, voltage = 3.5 },
      { rs_si = -104, voltage = 3.5 },
      { sn = 419631107, rs_si = -105, voltage = 3.5 },
    }, {})
    local page = render(r)
    assert.are.same({
      { "lock", "419631107", "-105.0" }, { "lock", "", "-104.0" }, { "lock", "", "-103.0" },
      { "lock", "1.5", "-102.0" }, { "lock", "12&lt;b&gt;x&lt;/b&gt;", "-101.0" },
    }, weakest_rows(page))
  end)

  it("counts no rs_si that is no finite number among the weakest (--json could not carry it)", function()
    local minus_inf = json.decode('{"rs_si":-1e400}').rs_si
    assert.are.equal(-math.huge, minus_inf)
    local r = report.build(source {
      { sn = 1, rs_si = minus_inf, voltage = 3.5 },
      { sn = 2, rs_si = -0.0, voltage = 3.5 },
      { sn = 3, rs_si = -80, voltage = 3.5 },
    }, {})
    assert.are.equal(2, r.signal.readings)
    local doc = json.decode(json.encode(r)) -- --json's text: it encodes
    assert.are.same({ { sn = 3, rs_si = -80 }, { sn = 2, rs_si = 0 } }, doc.locks.weakest)
    assert.are.same({ { "lock", "3", "-80.0" }, { "lock", "2", "0.0" } }, weakest_rows(render(r)))
  end)

  it("shows a DTU's null members as nothing, as the text report does", function()
    local r = report.build(source({}, { ["7"] = { sn = 7, online = "offline", host = json.null, updated_at = json.null } }),
      { dtus = { "7" } })
    local page = render(r)
    assert.is_nil(page:find("userdata", 1, true))
    assert.matches('<td>7</td><td></td><td></td>', page:match('id="dtus".-</section>'), 1, true)
  end)
end)

describe("kinot report --from a server answering hostile JSON #cli", function()
  -- a stand-in for kinot serve (spec/support/serve_hostile.py): a real one
  -- never answers this, and the report must still not crash, hang or leave
  -- a temp file behind
  local dir, port, pid, body_file
  setup(function()
    dir = H.tmpdir("report")
    body_file = dir .. "/body.json"
    local f = assert(io.open(body_file, "wb"))
    f:write("{}")
    f:close()
    port = require("kinot.sim.launcher").free_port()
    local p = io.popen(string.format("python3 %s/spec/support/serve_hostile.py %d %s >%s/srv.log 2>&1 & echo $!",
      H.root, port, body_file, dir))
    pid = p:read("*l")
    p:close()
    assert(H.wait_for(function() return (H.read(dir .. "/srv.log") or ""):find("ready", 1, true) end, 10), "no server")
  end)
  teardown(function()
    if pid then os.execute("kill " .. pid) end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  local function answer(text)
    local f = assert(io.open(body_file, "wb"))
    f:write(text)
    f:close()
  end

  local function report(extra)
    local page = dir .. "/out/p.html"
    os.execute("rm -rf " .. dir .. "/out && mkdir " .. dir .. "/out")
    local out, err, rc = kinot(string.format("%s report --from http://127.0.0.1:%d --html %s", extra or "", port, page),
      "timeout 30")
    return out, err, rc, page
  end

  it("refuses a page of devices of the wrong shape as the serve's error (exit 3), no crash, no file", function()
    for _, body in ipairs {
      '{"devices":[{"sn":1,"state":{"rs_si":-90}}]}', -- no total
      '{"total":"1","devices":[{"sn":1}]}', -- a total that is text
      '{"total":1e400,"devices":[{"sn":1}]}', -- a total of infinity: once a scan without end
      '{"total":-1,"devices":[]}',
      '{"total":1,"devices":"x"}',
      '{"total":1,"devices":{"a":1}}',
      '{"total":1,"devices":[1]}',
      '{"total":1,"devices":[{"sn":1,"state":"x"}]}',
      '{"total":1,"devices":[{"sn":1,"state":[1,2]}]}',
      string.rep("[", 5000) .. string.rep("]", 5000),
    } do
      answer(body)
      local out, err, rc = report()
      assert.are.equal(3, rc, body:sub(1, 80) .. ": " .. err)
      assert.are.equal("", out)
      assert.is_nil(err:find("internal error", 1, true), err)
      assert.matches("kinot serve answered", err, 1, true)
      assert.are.equal("", listing(dir .. "/out"), body:sub(1, 80))
    end
  end)

  it("never shows the API token, even from a server that sends it back", function()
    -- a --from pointing at some other service, one that echoes the request
    answer('"GET /api/devices HTTP/1.1 Authorization: Bearer tok-s3cr3t-123 Host: x"')
    local out, err, rc = kinot(string.format("report --from http://127.0.0.1:%d", port),
      "KINOT_API_TOKEN=tok-s3cr3t-123")
    assert.are.equal(3, rc, err)
    assert.matches("kinot serve answered 200 to /api/devices", err, 1, true)
    assert.is_nil((out .. err):find("tok-s3cr3t-123", 1, true), err)
    out, err, rc = kinot(string.format("--json fleet summary --url http://127.0.0.1:%d --api-token tok-s3cr3t-123", port))
    assert.are.equal(3, rc, err)
    assert.is_nil((out .. err):find("tok-s3cr3t-123", 1, true), err)
  end)

  it("ends a scan whose total never comes: a short page is the last", function()
    -- a total far ahead, one device a page: the page of one is the last
    answer('{"total":4000000000000,"devices":[{"sn":1,"state":{"rs_si":-90,"car_detected":1}}]}')
    local out, err, rc = report("--json")
    assert.are.equal(0, rc, err)
    local r = json.decode(out)
    assert.are.same({ 1, 1 }, { r.locks.total, r.sensors.total })
    -- a serve that used a smaller limit than asked (it says so): its full
    -- pages are no short ones, the scan goes on to the total
    answer('{"total":4,"limit":2,"offset":0,"devices":[{"sn":1,"state":{}},{"sn":2,"state":{}}]}')
    out, err, rc = report("--json")
    assert.are.equal(0, rc, err)
    r = json.decode(out)
    assert.are.same({ 4, 4 }, { r.locks.total, r.sensors.total })
  end)

  it("writes the page for devices the page once failed on, and leaves no temp file", function()
    answer('{"total":3,"devices":[{"sn":"12<b>x</b>","state":{"rs_si":-101}},{"sn":1.5,"state":{"rs_si":-1e400}},' ..
      '{"sn":null,"state":{"rs_si":-0.0,"voltage":3.7999999}}]}')
    local out, err, rc, page = report("--json")
    assert.are.equal(0, rc, err)
    local r = json.decode(out)
    assert.are.equal(6, r.locks.total + r.sensors.total)
    assert.are.equal(4, r.signal.readings) -- -1e400 is no reading
    local doc = parse(page)
    assert.are.same({}, doc.errors)
    assert.is_nil(doc.tags.b)
    assert.matches("12<b>x</b>", doc.text, 1, true)
    assert.are.equal("p.html", (listing(dir .. "/out"):gsub("%s+$", "")))
  end)
end)

describe("kinot report --html: credentials, FILE, null members #cli #sim", function()
  local sim, env, dir
  setup(function()
    sim = H.sim { locks = 12, sensors = 5, dtus = 2 }
    env = sim.env
    dir = H.tmpdir("report")
  end)
  teardown(function()
    if sim then sim.stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)
  before_each(function() sim.reset() end)

  it("never shows the password of a --from URL, whatever fails", function()
    local port = require("kinot.sim.launcher").free_port()
    for _, url in ipairs { "http://user:hunter2@127.0.0.1:" .. port, "http://:hunter2@127.0.0.1:" .. port .. "/" } do
      local out, err, rc = kinot("report --from '" .. url .. "' --html " .. dir .. "/p.html", "")
      assert.are.equal(4, rc, err)
      assert.matches("no kinot serve answers at", err, 1, true)
      assert.is_nil((out .. err):find("hunter2", 1, true), err)
    end
    -- a query is no serve's URL: a usage error, the password hidden too
    local out, err, rc = kinot("report --from 'http://:hunter2@127.0.0.1:" .. port .. "?x=1'", "")
    assert.are.equal(2, rc, err)
    assert.is_nil((out .. err):find("hunter2", 1, true), err)
    -- kinot fleet reads through the same code
    local _
    _, err, rc = kinot("fleet summary --url 'http://user:hunter2@127.0.0.1:" .. port .. "/x'", "")
    assert.are.equal(2, rc, err)
    assert.is_nil(err:find("hunter2", 1, true), err)
  end)

  it("shows a DTU's null host as nothing, as the text report does", function()
    sim.call("POST", "/devices/644200002", { host = json.null, online = "offline" })
    local page = dir .. "/null.html"
    local text, err, rc = kinot("report --dtu 644200002 --html " .. page, env)
    assert.are.equal(0, rc, err)
    assert.is_nil(text:find("userdata", 1, true))
    local raw = H.read(page)
    assert.is_nil(raw:find("userdata", 1, true))
    assert.matches("<td>644200002</td><td></td>", raw, 1, true)
  end)

  it("a FILE that is a directory is a usage error before the scan", function()
    os.execute("mkdir -p " .. dir .. "/d/adir")
    local out, err, rc = kinot("report --html " .. dir .. "/d/adir", env)
    assert.are.equal(2, rc, err)
    assert.are.equal("", out)
    assert.matches("cannot write the HTML report to " .. dir .. "/d/adir (it is a directory)", err, 1, true)
    assert.are.equal(json.null, sim.counters().endpoints, "it scanned first")
    assert.are.equal("adir", (listing(dir .. "/d"):gsub("%s+$", "")))
    -- no name at all: the current directory was FILE
    out, err, rc = kinot("report --html ''", env)
    assert.are.equal(2, rc, err)
    assert.matches("--html needs a file name", err, 1, true)
    assert.are.equal(json.null, sim.counters().endpoints, "it scanned first")
    assert.are.equal("", out)

  end)

  it("a --dtu (or $KINOT_DTUS) that is no serial is a usage error before the scan, no page", function()
    for _, case in ipairs { { "--dtu abc", "" }, { "--dtu 1.5", "" }, { "--dtu ''", "" }, { "", "KINOT_DTUS=644200001,x7" } } do
      sim.reset()
      local out, err, rc = kinot("report --html " .. dir .. "/dtu.html " .. case[1], env .. " " .. case[2])
      assert.are.equal(2, rc, err)
      assert.are.equal("", out)
      assert.matches("--dtu must be a positive integer", err, 1, true)
      assert.are.equal(json.null, sim.counters().endpoints, "it scanned first: " .. case[1] .. case[2])
      assert.is_nil(H.read(dir .. "/dtu.html"))
    end
  end)

  it("writes a FILE whose name is as long as a name may be (its temp file's too)", function()
    local name = string.rep("r", 250) .. ".html" -- 255 bytes: NAME_MAX
    os.execute("mkdir -p " .. dir .. "/long")
    local _, err, rc = kinot("report --html " .. dir .. "/long/" .. name, env)
    assert.are.equal(0, rc, err)
    assert.matches("^<!DOCTYPE html>", H.read(dir .. "/long/" .. name))
    assert.are.equal(name, (listing(dir .. "/long"):gsub("%s+$", "")))
  end)

  it("writes into a FILE that is no file (a pipe, a device): never replaces the node", function()
    local function kind(path)
      local p = io.popen("stat -L -c %F " .. path)
      local k = p:read("*l")
      p:close()
      return k
    end
    os.execute("mkdir -p " .. dir .. "/n")
    -- a pipe with a reader: the page goes through it, the pipe stays
    os.execute("mkfifo " .. dir .. "/n/fifo.html")
    local p = io.popen(string.format("cat %s/n/fifo.html > %s/n/read.html 2>/dev/null </dev/null & echo $!", dir, dir))
    local reader = p:read("*l")
    p:close()
    finally(function() os.execute("kill " .. reader .. " 2>/dev/null") end)
    local _, err, rc = kinot("report --html " .. dir .. "/n/fifo.html", env .. " timeout 30")
    assert.are.equal(0, rc, err)
    assert(H.wait_for(function() return (H.read(dir .. "/n/read.html") or ""):find("</html>", 1, true) end, 5))
    assert.are.equal("fifo", kind(dir .. "/n/fifo.html"))
    -- a device node (a null device of this spec's own, not /dev/null)
    assert(os.execute("mknod " .. dir .. "/n/null c 1 3"), "mknod")
    _, err, rc = kinot("report --html " .. dir .. "/n/null", env)
    assert.are.equal(0, rc, err)
    assert.are.equal("character special file", kind(dir .. "/n/null"))
    assert.are.equal("", H.read(dir .. "/n/null"))
    -- the shell's process substitution: /dev/fd/N, a pipe
    p = io.popen(string.format("cd %s && %s bash -c '%s bin/kinot report --html >(cat > %s/n/sub.html) " ..
      ">/dev/null 2>%s/n/sub.err; echo $?'", H.root, env, H.runtime == "luajit" and "luajit" or "lua5.4", dir, dir))
    local code = p:read("*l")
    p:close()
    assert.are.equal("0", code, H.read(dir .. "/n/sub.err"))
    assert(H.wait_for(function() return (H.read(dir .. "/n/sub.html") or ""):find("</html>", 1, true) end, 5))
    assert.is_nil(listing(dir .. "/n"):find("tmp", 1, true))
  end)

  it("replaces a FILE that is a symlink with the page, never writing through it", function()
    local target = dir .. "/elsewhere.txt"
    local f = assert(io.open(target, "wb"))
    f:write("keep me")
    f:close()
    os.execute(string.format("ln -s %s %s/link.html", target, dir))
    local _, err, rc = kinot("report --html " .. dir .. "/link.html", env)
    assert.are.equal(0, rc, err)
    assert.are.equal("keep me", H.read(target))
    assert.matches("^<!DOCTYPE html>", H.read(dir .. "/link.html"))
    local p = io.popen("test -L " .. dir .. "/link.html && echo link || echo file")
    assert.are.equal("file", p:read("*l"))
    p:close()
  end)
end)

describe("kinot report --html interrupted #cli #sim", function()
  local sim, env, dir
  setup(function()
    sim = H.sim { locks = 12, sensors = 5, dtus = 2 }
    env = sim.env
    dir = H.tmpdir("report")
  end)
  teardown(function()
    if sim then sim.stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  it("a SIGINT mid-scan leaves no page and no temp file", function()
    sim.fault { kind = "latency", latency = 3, next = 1, endpoint = "GET /sensors" }
    local lua = H.runtime == "luajit" and "luajit" or "lua5.4"
    local p = io.popen(string.format("cd %s && %s %s bin/kinot report --html %s/int.html >%s/out 2>%s/err & echo $!",
      H.root, env, lua, dir, dir, dir))
    local pid = p:read("*l")
    p:close()
    finally(function() os.execute("kill " .. pid .. " 2>/dev/null") end)
    -- the locks scanned, the sensors' page under way: the temp file is there
    assert(H.wait_for(function() return listing(dir):find(".kinot-report.tmp-", 1, true) ~= nil and
      type(sim.counters().endpoints) == "table" and sim.counters().endpoints["GET /sensors"] ~= nil end, 10),
      listing(dir)) -- (endpoints is json.null before the first request: a userdata)
    os.execute("kill -INT " .. pid)
    assert(H.wait_for(function()
      local alive = os.execute("kill -0 " .. pid .. " 2>/dev/null")
      return not (alive == true or alive == 0) -- 5.4 or LuaJIT's os.execute
    end, 10), "still running")
    assert.are.equal("err\nout", (listing(dir):gsub("%s+$", "")))
    assert.matches("interrupted", H.read(dir .. "/err"), 1, true)
  end)
end)

describe("kinot report --from a kinot serve whose twin holds hostile values #cli #sim #nginx", function()
  local sim, dir, serve_url, serve
  local HOSTILE = [[</style></svg>]] .. "]]><script>alert('x')</script>\"&amp;\194\133\226\128\174\255"
  setup(function()
    sim = H.sim { locks = 20, sensors = 6, dtus = 2 }
    -- before the serve's first sync: its twin takes them as the platform sends them
    -- (not updated_at = null: the twin's sync refuses the whole fleet for it,
    -- "dtu ... has no updated_at the twin can order": a matter of kinot.fleet)
    sim.call("POST", "/devices/644200002", { host = HOSTILE, online = "offline" })
    sim.call("POST", "/devices/644200001", { host = json.null, online = "offline" })
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

  it("gives the platform's figures and shows the hostile values as text", function()
    local page = dir .. "/twin.html"
    local twin = H.twin_report(sim, serve_url, page, " report --dtu 644200001 --dtu 644200002")
    assert.are.equal(2, #twin.dtus.offline)
    local doc = parse(page)
    assert.are.same({}, doc.errors)
    assert.is_nil(doc.tags.script)
    local raw = H.read(page)
    assert.is_nil(raw:find("userdata", 1, true))
    assert.is_nil(raw:find("\194\133", 1, true), "a raw C1 control")
    assert.is_nil(raw:find("\226\128\174", 1, true), "a raw bidi override")
    assert.matches("</style></svg>]]><script>alert('x')</script>\"&amp;", doc.text, 1, true)
  end)
end)
