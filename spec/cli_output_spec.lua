-- What a person sees from `kinot` (issue 23, items 2, 7, 9, 10, 11): no raw
-- control bytes from the platform or a callback body on the terminal,
-- exact JSON in a stable key order, fixed decimals in tables, both
-- spellings of a device type, examples in every --help, shell completion,
-- the simulator's admin answers a script can read.
local json = require "kinot.json"
local H = require "helpers"
local output = require "kinot.cli.output"

local LUA = H.runtime == "luajit" and "luajit" or "lua5.4"

local kinot = H.kinot

-- the bytes a terminal would act on: C0 but newline, DEL, C1 as UTF-8 (and
-- lone), and any byte of invalid UTF-8
local function raw_controls(s)
  if s:find("[%z\1-\9\11-\31\127]") then return s:match("()[%z\1-\9\11-\31\127]") end
  local i = 1
  while i <= #s do
    local b = s:byte(i)
    local n = b < 0x80 and 1 or (b >= 0xC2 and b <= 0xDF) and 2 or (b >= 0xE0 and b <= 0xEF) and 3
              or (b >= 0xF0 and b <= 0xF4) and 4 or nil
    if not n then return i end
    for k = 1, n - 1 do
      local c = s:byte(i + k)
      if not c or c < 0x80 or c > 0xBF then return i end
    end
    if b == 0xC2 and s:byte(i + 1) <= 0x9F then return i end -- C1
    i = i + n
  end
  return nil
end

-- ESC ] 0 ; title BEL (the window title), CSI 2J (clear), CSI as C1 (U+009B),
-- a bell, DEL, a lone invalid byte
local HOSTILE = "\27]0;pwned\7\27[2J\27[31mred\194\155" .. "1m\127\255end"

describe("escape() #unit", function()
  it("shows C0, DEL, C1, bidi overrides and invalid UTF-8 escaped, and the rest as it is", function()
    assert.are.equal("\\x1b]0;t\\x07", output.escape("\27]0;t\7"))
    assert.are.equal("a\\x7fb\\u009bc\\xff\\xc2", output.escape("a\127b\194\155c\255\194"))
    assert.are.equal("\\u202etxt", output.escape("\226\128\174txt"))
    assert.are.equal("Zürich 京 🚗 a\\b", output.escape("Zürich 京 🚗 a\\b"))
    assert.are.equal("l1\\x0al2", output.escape("l1\nl2"))
    assert.are.equal("l1\nl2\\x0d", output.escape("l1\nl2\r", true))
    assert.is_nil(raw_controls(output.escape(HOSTILE)))
    -- every byte value alone, and overlong / surrogate forms
    for b = 0, 255 do assert.is_nil(raw_controls(output.escape(string.char(b))), b) end
    for _, s in ipairs { "\192\128", "\224\128\128", "\237\160\128", "\244\144\128\128", "\226\128" } do
      assert.is_nil(raw_controls(output.escape(s)), s)
    end
  end)

  it("has a fixed number of decimals for every field the reference types as a float", function()
    local vocabulary = require "kinot.vocabulary"
    for kind, fields in pairs(vocabulary.fields) do
      for k, t in pairs(fields) do
        if t == "float" then assert.is_number(output.DECIMALS[k], kind .. "." .. k) end
      end
    end
    assert.are.equal("3.70", output.number_text("voltage", 3.697))
    assert.are.equal("-109.5", output.number_text("rs_si", -109.5))
    assert.are.equal("419631107", output.number_text("sn", 419631107))
  end)

  it("writes JSON with keys in the shape's order, the rest sorted, and / as it is", function()
    local t = { objects = { { updated_at = "a/b", sn = 1, zz = 0, voltage = 3.5 } }, count = 1, offset = 0, limit = 10 }
    assert.are.equal('{"offset":0,"limit":10,"objects":[{"sn":1,"voltage":3.5,"updated_at":"a/b","zz":0}],"count":1}',
      output.json_text(t, "lock_page"))
    -- a backslash before a slash, and a slash after an escaped backslash
    local s = "\\/x\\\\/y/"
    assert.are.equal(s, json.decode(output.json_text(s)))
    assert.are.equal('"\\\\/x\\\\\\\\/y/"', output.json_text(s))
    assert.are.equal('{"objects":[]}', output.json_text({ objects = {} }, "lock_page"))
    -- whole numbers as their digits (2^53 - 1 too), -0.0 as the integer 0 (kinot.json's one rule), floats in the fewest digits that read back
    assert.are.equal('[9007199254740991,-9007199254740991,0,0.1,3.5,"q\\"\\\\"]',
      output.json_text { 2 ^ 53 - 1, -(2 ^ 53 - 1), -0.0, 0.1, 3.5, 'q"\\' })
    -- what JSON cannot carry: misuse, as kinot.json says
    local cyclic = {}
    cyclic.self = cyclic
    for _, bad in ipairs { { 1, x = 2 }, { [1.5] = 1 }, { a = 0 / 0 }, { f = print }, cyclic } do
      assert.has_error(function() output.json_text(bad) end)
    end
  end)
end)

describe("kinot's output against the simulator #cli #sim", function()
  local sim, env
  setup(function()
    sim = H.sim { locks = 12, sensors = 5, dtus = 2, command_pace = 0.02 }
    env = string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s", sim.app_key, sim.app_secret, sim.endpoint)
  end)
  teardown(function() sim.stop() end)
  before_each(function() sim.reset() end)

  local function run(args) return kinot(args, env) end

  -- item 2
  it("shows a hostile string from the platform escaped on every human path, --no-color too; JSON stays exact", function()
    sim.call("POST", "/devices/419600003", { bt_match_code = HOSTILE, bt_mac = HOSTILE, updated_at = HOSTILE })
    sim.call("POST", "/devices/644200001", { host = HOSTILE, updated_at = HOSTILE, online = "offline" })
    local outputs = {}
    for _, args in ipairs { "locker 419600003", "--no-color locker 419600003", "lockers", "--no-color lockers --all",
                            "dtu 644200001", "report --dtu 644200001" } do
      local out, err, rc = run(args)
      assert.are.equal(0, rc, args .. ": " .. err)
      assert.is_nil(raw_controls(out), args .. ": " .. out)
      assert.is_nil(raw_controls(err), args .. ": " .. err)
      outputs[args] = out
    end
    assert.matches("\\x1b]0;pwned\\x07\\x1b[2J", outputs["locker 419600003"], 1, true)
    assert.matches("\\u009b1m\\x7f\\xffend", outputs["--no-color lockers --all"], 1, true)
    assert.matches("\\x1b]0;pwned", outputs["report --dtu 644200001"], 1, true)
    -- JSON: the string exactly (valid JSON needs valid UTF-8: the lone byte is the decoder's to judge)
    local doc = json.decode((run("--json locker 419600003")))
    assert.is_table(doc)
    assert.are.equal(HOSTILE:sub(1, 22), doc.bt_mac:sub(1, 22))
  end)

  it("on a terminal (a pty, colour on): the only escape sequences are its own colours", function()
    local have = os.execute("command -v script >/dev/null 2>&1")
    if have ~= true and have ~= 0 then pending("util-linux `script` is missing: no pty to run kinot on") return end
    sim.call("POST", "/devices/419600003", { bt_mac = HOSTILE, updated_at = HOSTILE })
    sim.call("POST", "/devices/644200001", { host = HOSTILE, online = "offline" })
    sim.fault { kind = "status", status = 200, code = 500, message = HOSTILE, next = 1, endpoint = "GET /lockers/{sn}" }
    -- the first meets the fault: the platform's message in a coloured error
    for _, args in ipairs { "locker 419600001", "locker 419600003", "lockers", "report --dtu 644200001" } do
      -- script(1) gives kinot a terminal for stdout and stderr both
      local p = io.popen(string.format("cd %s && %s script -qec %q /dev/null 2>&1", H.root, env,
        LUA .. " bin/kinot " .. args))
      local text = p:read("*a")
      p:close()
      assert.matches("\27%[[%d;]*m", text) -- coloured: it did see a terminal
      -- (\r: the pty's line ends, and the progress bar's; the pipe specs above see any other)
      local plain = text:gsub("\27%[[%d;]*m", ""):gsub("\r", "")
      assert.is_nil(raw_controls(plain), args .. ": " .. plain)
      assert.matches("\\x1b]0;pwned\\x07", plain, 1, true)
    end
  end)

  it("shows the platform's error message escaped, and the simulator's fault list too", function()
    -- the platform's message, in its JSON answer
    sim.fault { kind = "status", status = 200, code = 500, message = "\27]0;st\7Bad\27[2J\194\155", next = 2 }
    local out, err, rc = run("lockers")
    assert.are.equal(3, rc, err)
    assert.are.equal("", out)
    assert.is_nil(raw_controls(err), err)
    assert.matches("\\x1b]0;st\\x07Bad\\x1b[2J\\u009b", err, 1, true)
    local _, jerr = run("--json lockers")
    assert.matches("\27]0;st\7Bad", json.decode(jerr).message, 1, true)
    -- the gateway's, in a header
    sim.fault { kind = "gateway", status = 400, message = "\27]0;gw\7Bad\27[2J", next = 5 }
    out, err, rc = run("lockers")
    assert.are.equal(3, rc, err)
    assert.are.equal("", out)
    assert.is_nil(raw_controls(err), err)
    out, err, rc = kinot("sim fault list --url " .. sim.url)
    assert.are.equal(0, rc, err)
    assert.is_nil(raw_controls(out), out)
    assert.matches("\\x1b]0;gw\\x07Bad", out, 1, true)
  end)

  it("kinot verify shows a hostile callback body's canonical string escaped", function()
    local path = os.tmpname()
    local f = io.open(path, "wb")
    f:write('{"sn":419600001,"bt_mac":"\\u001b]0;cb\\u0007\\u009b","updated_at":"x\\u001b[2J","sign":"00","device_type":18}')
    f:close()
    local out, err, rc = kinot("verify " .. path .. " --secret s")
    local dout, derr = kinot("verify --discover " .. path .. " --secret s")
    os.remove(path)
    assert.are.equal(1, rc, err)
    for _, s in ipairs { out, err, dout, derr } do assert.is_nil(raw_controls(s), s) end
    assert.matches("bt_mac=\\x1b]0;cb\\x07\\u009b&", out, 1, true)
    assert.matches("updated_at=x\\x1b[2J", dout, 1, true)
  end)

  -- item 10
  it("--json keeps the reference's key order, the same every run, and / unescaped; --json --jsonl is a usage error", function()
    local a = run("--json locker 419600001")
    assert.are.equal(a, (run("--json locker 419600001")))
    local keys = {}
    for k in a:gmatch('"([%w_]+)":') do keys[#keys + 1] = k end
    assert.are.same(require("kinot.vocabulary").order.lock, keys)
    local page = run("--json lockers --limit 10")
    assert.matches('^{"offset":0,"limit":10,"objects":%[{"sn":419600001,"voltage":', page)
    assert.matches('%],"count":12}\n$', page)
    local line = run("--jsonl sensors --limit 10"):match("^[^\n]+")
    assert.matches('^{"sn":419800001,"voltage":[%d.]+,"frequency":[%d.]+,"active":', line)
    run("notifications set lock --status-url http://127.0.0.1:9/a/b")
    local n = run("--json notifications get lock")
    assert.matches('"status_changed_callback_url":"http://127.0.0.1:9/a/b"', n, 1, true)
    assert.is_nil(n:find("\\/", 1, true), n)
    local out, err, rc = run("--json --jsonl lockers")
    assert.are.equal(2, rc)
    assert.are.equal("", out)
    assert.are.equal("usage", json.decode(err).kind)
    local out2
    out2, err, rc = run("--jsonl --json lockers")
    assert.are.equal(2, rc, err)
    assert.are.equal("", out2)
  end)

  it("prints each numeric field of a table with its fixed decimals", function()
    sim.call("POST", "/devices/419600002", { voltage = 3.5, rs_si = -90, frequency = 38 })
    local out = run("lockers --limit 20")
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    for i = 2, 13 do
      local volt, rs = lines[i]:match("^%d+%s+%a+%s+%a+%s+(%S+)%s+%S+%s+%S+%s+(%S+)")
      assert.matches("^%d%.%d%d$", volt, lines[i])
      assert.matches("^%-?%d+%.%d$", rs, lines[i])
    end
    assert.matches("^419600002%s+%a+%s+%a+%s+3%.50%s.-%-90%.0%s", lines[3])
    local one = run("locker 419600002")
    assert.matches("voltage:%s+3%.50\n", one)
    assert.matches("frequency:%s+38%.000\n", one)
    assert.matches("rs_si:%s+%-90%.0\n", one)
  end)

  -- item 7
  it("takes the device type as an argument or --device-type on get and set, and `all` for both", function()
    local _, err, rc = run("notifications set --device-type sensor --command-url http://127.0.0.1:9/c")
    assert.are.equal(0, rc, err)
    _, err, rc = run("notifications set lock --status-url http://127.0.0.1:9/s")
    assert.are.equal(0, rc, err)
    local out
    out, err, rc = run("notifications get --device-type 34")
    assert.are.equal(0, rc, err)
    assert.matches("command_resp_callback_url:%s+http://127.0.0.1:9/c", out)
    out = run("notifications get lock")
    assert.matches("status_changed_callback_url:%s+http://127.0.0.1:9/s", out)
    _, err, rc = run("notifications set all --status-url http://127.0.0.1:9/both")
    assert.are.equal(0, rc, err)
    local docs = json.decode((run("--json notifications get --device-type all")))
    assert.are.equal(2, #docs)
    assert.are.equal(18, docs[1].device_type)
    assert.are.equal(34, docs[2].device_type)
    for _, d in ipairs(docs) do assert.are.equal("http://127.0.0.1:9/both", d.status_changed_callback_url) end
    assert.are.equal("http://127.0.0.1:9/c", docs[2].command_resp_callback_url)
    out = run("notifications get all")
    assert.are.equal(2, select(2, out:gsub("status_changed_callback_url:%s+http://127.0.0.1:9/both", "")))
    -- all, and the second refused: the error says which type was set
    sim.fault { kind = "latency", latency = 0, next = 1, endpoint = "POST /notifications" } -- the lock's goes through
    sim.fault { kind = "status", status = 200, code = 500, message = "refused", next = 1, endpoint = "POST /notifications" }
    out, err, rc = run("notifications set all --status-url http://127.0.0.1:9/half")
    assert.are.equal(3, rc, err)
    assert.are.equal("", out)
    assert.matches("^kinot: api: the locks' callback URLs were set, the sensors' were not: .*refused", err)
    docs = json.decode((run("--json notifications get all")))
    assert.are.equal("http://127.0.0.1:9/half", docs[1].status_changed_callback_url)
    assert.are.equal("http://127.0.0.1:9/both", docs[2].status_changed_callback_url)
    -- both, and different: a usage error
    _, err, rc = run("notifications get lock --device-type sensor")
    assert.are.equal(2, rc)
    assert.matches("given twice", err)
    _, err, rc = run("notifications get")
    assert.are.equal(2, rc)
    assert.matches("needs a device type", err)
    _, err, rc = run("notifications set car --status-url http://127.0.0.1:9/s")
    assert.are.equal(2, rc)
    assert.matches("must be", err)
  end)

  -- item 11
  it("the simulator's /callbacks answers deliveries [] when empty; `sim fault list` prints a table", function()
    local res = H.raw("GET", sim.admin .. "/callbacks")
    assert.are.equal('{"deliveries":[]}', res.body)
    res = H.raw("GET", sim.admin .. "/faults")
    assert.are.equal('{"faults":[]}', res.body)
    local out, err, rc = kinot("sim fault list --url " .. sim.url)
    assert.are.equal(0, rc, err)
    assert.matches("no fault pending", out)
    kinot("sim fault status --status 503 --next 2 --endpoint 'GET /lockers' --url " .. sim.url)
    kinot("sim fault latency --latency 0.5 --share 0.25 --url " .. sim.url)
    out, err, rc = kinot("sim fault list --url " .. sim.url)
    assert.are.equal(0, rc, err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.matches("^KIND%s+NEXT%s+SHARE%s+ENDPOINT%s+STATUS%s+CODE%s+LATENCY", lines[1])
    assert.matches("^status%s+2%s+%-?%s+GET /lockers%s+503", lines[2])
    assert.matches("^latency%s+.-0%.25%s.-0%.5", lines[3])
    assert.are.equal(3, #lines)
  end)
end)

describe("kinot verify FILE that cannot be read #cli", function()
  -- a directory was read as nil and reported as "callback body must be a
  -- string"; a missing file named its path twice
  it("says which file and why, once, exit 2", function()
    local dir = H.tmpdir("verify")
    finally(function() os.execute("rm -rf " .. dir) end)
    local _, err, rc = kinot("verify " .. dir .. " --secret s")
    assert.are.equal(2, rc, err)
    assert.are.equal("kinot: cannot read " .. dir .. ": Is a directory\n", err)
    _, err, rc = kinot("verify " .. dir .. "/absent --secret s")
    assert.are.equal(2, rc, err)
    assert.are.equal("kinot: cannot read " .. dir .. "/absent: No such file or directory\n", err)
  end)
end)

describe("kinot --help and completion #cli", function()
  it("shows examples in the --help of every command", function()
    -- every command of the parser, however many there come to be
    local commands = {}
    local function walk(parser, path)
      commands[#commands + 1] = path
      for _, sub in ipairs(parser._commands) do walk(sub, (path == "" and "" or path .. " ") .. sub._name) end
    end
    walk(require("kinot.cli").build_parser(), "")
    assert.is_true(#commands >= 24, #commands)
    for _, c in ipairs(commands) do
      local out, err, rc = kinot(c .. " --help")
      assert.are.equal(0, rc, c .. ": " .. err)
      assert.matches("\nExamples:\n  kinot " .. c:gsub("%p", "%%%0"), out, 1)
    end
  end)

  it("prints a bash completion that bash reads and that completes subcommands", function()
    local out, err, rc = kinot("completion bash")
    assert.are.equal(0, rc, err)
    local path = os.tmpname()
    local f = io.open(path, "w")
    f:write(out)
    f:close()
    -- a bash script of its own: no other shell expands it first
    local function sh(script)
      local file = os.tmpname()
      local sf = io.open(file, "w")
      sf:write(script, "\n")
      sf:close()
      local p = io.popen("bash " .. file .. " 2>&1; echo \"rc=$?\"")
      local text = p:read("*a")
      p:close()
      os.remove(file)
      return text
    end
    assert.matches("^rc=0\n$", sh("bash -n " .. path))
    -- as bash completes `kinot loc<TAB>` and `kinot notifications g<TAB>`
    local r = sh("source " .. path .. "; COMP_WORDS=(kinot loc); COMP_CWORD=1; _kinot; printf '%s\\n' \"${COMPREPLY[@]}\"")
    assert.matches("locker\n", r, 1, true)
    assert.matches("lockers\n", r, 1, true)
    r = sh("source " .. path .. "; COMP_WORDS=(kinot notifications ''); COMP_CWORD=2; _kinot; printf '%s\\n' \"${COMPREPLY[@]}\"")
    for _, w in ipairs { "get", "set", "test" } do assert.matches("\n?" .. w .. "\n", r) end
    r = sh("source " .. path .. "; complete -p kinot")
    assert.matches("complete .*%-F _kinot kinot", r)
    os.remove(path)
  end)

  for _, shell in ipairs { "zsh", "fish" } do
    it("prints a " .. shell .. " completion that " .. shell .. " reads (make deps installs it)", function()
      local text, e, code = kinot("completion " .. shell)
      assert.are.equal(0, code, e)
      assert.matches(shell == "zsh" and "^#compdef kinot\n" or "complete %-c kinot", text)
      local found = os.execute("command -v " .. shell .. " >/dev/null 2>&1")
      assert(found == true or found == 0, shell .. " is not installed: make deps installs it") -- 5.4 says true, LuaJIT 0
      local path = os.tmpname()
      local f = io.open(path, "w")
      f:write(text)
      f:close()
      local ok = os.execute(shell .. " -n " .. path)
      os.remove(path)
      assert.is_true(ok == true or ok == 0, shell .. " -n refused the script")
    end)
  end
end)

describe("kinot worker's lines #cli #redis", function()
  local R = require "redis_server"
  local r, c, dir
  local STREAM = "kinot:hcli"
  setup(function()
    r = R.start {}
    c = r.client()
    local p = io.popen("mktemp -d /tmp/kinot-cliout.XXXXXX")
    dir = p:read("*l")
    p:close()
    local f = io.open(dir .. "/hcli_handler.lua", "w")
    f:write([[return function(ev) if ev.sn == 2 then error("boom \27]0;title\7 \194\155") end return true end]])
    f:close()
  end)
  teardown(function()
    r.stop()
    if dir then os.execute("rm -rf " .. dir) end
  end)

  local function add(sn)
    local body = '{"sn":' .. sn .. ',"car_detected":1,"locked":1,"updated_at":"2019-03-13T10:42:39+08:00",' ..
                 '"sign":"00","device_type":18}'
    assert(c:call("XADD", STREAM, "*", "id", "cb" .. sn, "body", body, "at", tostring(os.time())))
  end

  local function spawn(name, extra)
    local p = io.popen(string.format("cd %s && LUA_PATH='%s/?.lua;;' KINOT_REDIS_URL='%s' exec %s bin/kinot worker " ..
      "--stream %s --group g --consumer %s --handler hcli_handler --block 0.2 %s >%s/%s.log 2>&1 & echo $!",
      H.root, dir, r.url, LUA, STREAM, name, extra, dir, name))
    local pid = tonumber(p:read("*l"))
    p:close()
    return pid
  end
  local function log(name)
    local f = io.open(dir .. "/" .. name .. ".log", "rb")
    local s = f and f:read("*a") or ""
    if f then f:close() end
    return s
  end

  it("--verbose: a line per entry handled or failed, counts every --stats-every, on SIGUSR1 too, escaped", function()
    local pids = {}
    finally(function() for _, pid in ipairs(pids) do os.execute("kill -KILL " .. pid .. " 2>/dev/null") end end)
    for sn = 1, 3 do add(sn) end
    pids[1] = spawn("v", "--verbose --stats-every 1")
    local text = H.wait_for(function()
      local t = log("v")
      return t:find("counts: 2 handled, 1 failed, 0 dead since start", 1, true) and t
    end, 10) or log("v")
    assert.matches("counts: 2 handled, 1 failed, 0 dead since start", text, 1, true)
    assert.matches("handled entry %d+%-%d+ %(status_changed, lock 1, attempt 1%)", text)
    assert.matches("handled entry %d+%-%d+ %(status_changed, lock 3, attempt 1%)", text)
    assert.matches("error: handler failed for entry %d+%-%d+ %(attempt 1 of 5%): .-boom \\x1b]0;title\\x07 \\u009b", text)
    assert.is_nil(text:find("[%z\1-\9\11-\31\127]"), text)
    -- without --verbose: no line per entry; a line of counts on SIGUSR1, and the worker lives on
    pids[2] = spawn("q", "--stats-every 3600 --consumer q")
    assert.is_truthy(H.wait_for(function() return log("q"):find("kinot worker q:", 1, true) end, 10), log("q"))
    add(4)
    assert.is_truthy(H.wait_for(function()
      return tonumber(c:call("XLEN", STREAM)) == 1 -- 4 handled (by either), 2 pending
    end, 10))
    os.execute("kill -USR1 " .. pids[2])
    assert.is_truthy(H.wait_for(function() return log("q"):find("counts: ", 1, true) end, 10), log("q"))
    os.execute("kill -USR1 " .. pids[2])
    assert.is_truthy(H.wait_for(function() return select(2, log("q"):gsub("counts: ", "")) == 2 end, 10), log("q"))
    assert.is_nil(log("q"):find("handled entry", 1, true), log("q"))
    assert.is_true(os.execute("kill -0 " .. pids[2]) == true or os.execute("kill -0 " .. pids[2]) == 0)
  end)
end)
