-- `kinot` as a process against the simulator: tables, --json, exit codes,
-- --help, and bad input with the usage exit code.
local json = require "kinot.json"
local H = require "helpers"

local LUA = H.runtime == "luajit" and "luajit" or "lua5.4"

local kinot = H.kinot

describe("kinot CLI #cli #sim", function()
  local sim, env
  setup(function()
    sim = H.sim { locks = 123, sensors = 45, dtus = 4, command_pace = 0.02 }
    env = string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s", sim.app_key, sim.app_secret, sim.endpoint)
  end)
  teardown(function() sim.stop() end)

  local function run(args) return kinot(args, env) end

  it("lists a page of locks as an aligned table", function()
    local out, err, rc = run("lockers --offset 1 --limit 10")
    assert.are.equal(0, rc, err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.matches("^SN%s+LOCK%s+CAR%s+VOLT%s+LOW%s+FAULTS%s+RS_SI%s+UPDATED$", lines[1])
    assert.matches("^419600011%s", lines[2])
    assert.are.equal(12, #lines)
    assert.matches("page 1 %(limit 10%) of 123 lockers", lines[12])
    assert.is_nil(out:find("\27[", 1, true)) -- no colour off a terminal
  end)

  it("gives one JSON document with --json and one object a line with --jsonl --all", function()
    local out, _, rc = run("--json sensors --limit 20")
    assert.are.equal(0, rc)
    local doc = json.decode(out)
    assert.are.equal(45, doc.count)
    assert.are.equal(20, #doc.objects)
    out, _, rc = run("--jsonl lockers --all --concurrency 4")
    assert.are.equal(0, rc)
    local n, last = 0, 0
    for line in out:gmatch("[^\n]+") do
      local d = json.decode(line)
      assert.is_true(d.sn > last)
      last, n = d.sn, n + 1
    end
    assert.are.equal(123, n)
    out = run("--json sensors --all")
    assert.are.equal(45, #json.decode(out))
  end)

  it("shows one device of each kind, as key: value or JSON", function()
    local out, _, rc = run("locker 419600007")
    assert.are.equal(0, rc)
    assert.matches("sn:%s+419600007", out)
    assert.matches("bt_match_code:", out)
    assert.are.equal(419800003, json.decode((run("--json sensor 419800003"))).sn)
    assert.matches("online:", (run("dtu 644200001")))
  end)

  it("sends a command, waits, reads it back", function()
    local out, err, rc = run("--json command send 419600001 --value 1 --wait --wait-timeout 10")
    assert.are.equal(0, rc, err)
    local cmd = json.decode(out)
    assert.are.equal("succeeded", cmd.command_status)
    local rc2
    out, err, rc2 = run("command get " .. cmd.guid)
    assert.are.equal(0, rc2, err)
    assert.matches("status:%s+succeeded", out)
    out = run("--json command wait " .. cmd.guid)
    assert.are.equal("succeeded", json.decode(out).command_status)
  end)

  it("sets, reads and tests notification settings", function()
    local _, err, rc = run("notifications set --device-type lock --status-url http://127.0.0.1:9/s --command-url http://127.0.0.1:9/c")
    assert.are.equal(0, rc, err)
    local out = run("notifications get 18")
    assert.matches("status_changed_callback_url:%s+http://127.0.0.1:9/s", out)
    out, err, rc = run("--json notifications test 419600002 --type command_resp")
    assert.are.equal(0, rc, err)
    assert.are.equal("sent", json.decode(out).error_detail)
  end)

  it("reports the fleet's health, as a table and as JSON", function()
    local out, err, rc = run("report --dtu 644200001 --dtu 644200002 --dtu 644200003 --dtu 644200004")
    assert.are.equal(0, rc, err)
    assert.matches("devices:%s+123 locks, 45 sensors, 4 DTUs checked", out)
    assert.matches("occupancy:%s+%d+%.%d%%", out)
    assert.matches("Weakest signal", out)
    local doc = json.decode((run("--json report --dtu 644200001")))
    assert.are.equal(123, doc.locks.total)
    assert.are.equal(123, doc.locks.up + doc.locks.down)
    assert.are.equal(5, #doc.locks.weakest)
    assert.are.equal(1, doc.dtus.total)
  end)

  it("signs a request without printing the secret", function()
    local out, _, rc = run("sign /open/lora/v1/lockers --query offset=0 --query limit=10 --timestamp 1700000000000 --nonce n1")
    assert.are.equal(0, rc)
    assert.matches("/open/lora/v1/lockers%?limit=10&offset=0", out)
    assert.matches("X%-Ca%-Signature:%s+%S+=", out)
    assert.is_nil(out:find(sim.app_secret, 1, true))
    local doc = json.decode((run("--json sign /p --timestamp 1 --nonce n")))
    assert.are.equal("GET\napplication/json\n\n\n\nX-Ca-Key:" .. sim.app_key .. "\nX-Ca-Nonce:n\nX-Ca-Signature-Method:HmacSHA256\nX-Ca-Timestamp:1\n/p",
      doc.string_to_sign)
  end)

  it("verifies a callback body from a file and from stdin", function()
    local v = H.fixture("callback-sign.json").vectors
    local path = os.tmpname()
    local f = io.open(path, "w")
    f:write(v[1].body)
    f:close()
    local out, _, rc = kinot("verify " .. path .. " --secret " .. v[1].secret)
    assert.are.equal(0, rc)
    assert.matches("verdict:%s+valid", out)
    assert.matches("canonical:%s+bar_position_error=0&", out)
    f = io.open(path, "w")
    f:write(v[11].body)
    f:close()
    out, _, rc = kinot("--json verify - --secret " .. v[11].secret .. " < " .. path)
    os.remove(path)
    assert.are.equal(1, rc)
    assert.are.equal("bad_sign", json.decode(out).reason)
  end)

  it("tells its version, the runtime's and libcurl's", function()
    local out, _, rc = kinot("--version")
    assert.are.equal(0, rc)
    assert.matches("^kinot " .. require("kinot.version"):gsub("%p", "%%%0") .. " %(.*libcurl/%d", out)
  end)

  it("has --help on every level", function()
    for _, args in ipairs { "--help", "lockers --help", "command --help", "command send --help", "notifications set --help",
                            "report --help", "sign --help", "verify --help", "sim --help" } do
      local out, _, rc = kinot(args)
      assert.are.equal(0, rc, args)
      assert.matches("^Usage: kinot", out)
    end
  end)

  it("refuses bad input with a clear message and exit 2", function()
    local _, err, rc = kinot("frobnicate")
    assert.are.equal(2, rc)
    assert.matches("unknown command 'frobnicate'", err)
    _, err, rc = run("locker 12ab")
    assert.are.equal(2, rc)
    assert.matches("^kinot: sn must be a positive integer", err)
    _, err, rc = run("lockers --limit 5")
    assert.are.equal(2, rc)
    assert.matches("limit must be an integer from 10 to 100", err)
    _, err, rc = kinot("lockers", "KINOT_APP_KEY= KINOT_APP_SECRET=")
    assert.are.equal(2, rc)
    assert.matches("credentials missing", err)
  end)

  it("tells API errors (3) from network errors (4) by exit code", function()
    local _, err, rc = run("locker 419699999")
    assert.are.equal(3, rc)
    assert.matches("not_found", err)
    _, err, rc = kinot("--timeout 1 lockers", string.format("KINOT_APP_KEY=k KINOT_APP_SECRET=s KINOT_ENDPOINT=http://127.0.0.1:%d/x",
      require("kinot.sim.launcher").free_port()))
    assert.are.equal(4, rc)
    assert.matches("network", err)
    _, err, rc = kinot("lockers", string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=wrong KINOT_ENDPOINT=%s", sim.app_key, sim.endpoint))
    assert.are.equal(3, rc)
    assert.matches("signature", err)
    assert.is_nil(err:find("wrong", 1, true))
  end)

  -- issue 11 §7: one error convention, decided by type
  it("prints an error with \"kinot: \" once, and with --json as one JSON object on stderr", function()
    local _, err, rc = run("locker 419699999")
    assert.are.equal(3, rc)
    assert.matches("^kinot: not_found: ", err)
    assert.is_nil(err:find("kinot: kinot:", 1, true), err)
    local cases = {
      { "--json locker 419699999", 3, "not_found" }, { "--json locker 12ab", 2, "usage" },
      { "--json lockers --limt 5", 2, "usage" }, { "--jsonl command send 1 --value abc", 2, "usage" },
    }
    for _, case in ipairs(cases) do
      local out
      out, err, rc = run(case[1])
      assert.are.equal(case[2], rc, case[1])
      assert.are.equal("", out, case[1])
      local line = err:match("^([^\n]*)\n$")
      assert.is_string(line, "not one line: " .. err)
      local doc = assert(json.decode(line))
      assert.are.equal(case[3], doc.kind, case[1])
      assert.is_string(doc.message)
      assert.is_nil(doc.message:find("^kinot: "))
      for _, k in ipairs { "status", "code", "request_id" } do assert.is_not_nil(doc[k], k) end
    end
    _, err, rc = kinot("--json --timeout 1 lockers", string.format("KINOT_APP_KEY=k KINOT_APP_SECRET=s KINOT_ENDPOINT=http://127.0.0.1:%d/x",
      require("kinot.sim.launcher").free_port()))
    assert.are.equal(4, rc)
    assert.are.equal("network", json.decode(err).kind)
  end)

  it("refuses an unknown signature method with the same message and exit 2 on every runtime", function()
    local out, err, rc = run("sign /open/lora/v1/lockers --signature-method MD5")
    assert.are.equal("", out)
    assert.are.equal('kinot: signature_method must be "HmacSHA256" or "HmacSHA1"\n', err)
    assert.are.equal(2, rc)
  end)

  -- issue 11 §8
  it("gives a wait that timed out its own exit code, 6, documented", function()
    sim.call("POST", "/config", { command_pace = 30 })
    local _, err, rc = run("command send 419600004 --wait --wait-timeout 0.3")
    local _, err2, rc2 = run("--json command send 419600005 --wait --wait-timeout 0.2")
    sim.call("POST", "/config", { command_pace = 0.02 })
    assert.are.equal(6, rc, err)
    assert.matches("^kinot: timeout: command [%w%-]+ still ", err)
    assert.are.equal(6, rc2, err2)
    assert.are.equal("timeout", json.decode(err2).kind)
    local help = kinot("--help")
    assert.matches("5 command outcome unknown", help)
    assert.matches("6 wait for a command timed out", help)
    local f = assert(io.open(H.root .. "/README.md"))
    local readme = f:read("*a"):gsub("%s+", " ")
    f:close()
    assert.matches("5 the outcome of a command is unknown", readme)
    assert.matches("6 a wait for a command timed out", readme)
  end)

  it("names the options as typed, and shows the usage of the subcommand that was mistyped", function()
    local _, err, rc = run("notifications set --device-type 18")
    assert.are.equal(2, rc)
    assert.matches("--status-url", err, 1, true)
    assert.matches("--command-url", err, 1, true)
    assert.is_nil(err:find("callback_url", 1, true), err)
    _, err, rc = run("notifications set --device-type 18 --status-url ftp://x")
    assert.are.equal(2, rc)
    assert.matches("^kinot: %-%-status%-url must be an http", err)
    _, err, rc = run("notifications set --device-type car --command-url http://127.0.0.1:9/c")
    assert.are.equal(2, rc)
    assert.matches("^kinot: notifications set: the device type must be 18 / lock or 34 / sensor, or all %(got .car.%)", err)
    for _, bad in ipairs { "command send 419600001 --value abc", "lockers --limit ten", "sensors --offset x",
                           "command wait abc --wait-timeout soon", "--timeout long lockers",
                           "command send 419600001 --value 1e999" } do
      _, err, rc = run(bad)
      assert.are.equal(2, rc, bad)
      local opt = bad:match("(%-%-[%w%-]+) %S+$") or bad:match("(%-%-[%w%-]+) %S+ ")
      assert.matches("^kinot: " .. opt:gsub("%-", "%%-") .. " must be a number %(got '", err)
    end
    _, err, rc = run("lockers --limt 5")
    assert.are.equal(2, rc)
    assert.matches("unknown option '--limt'", err, 1, true)
    assert.matches("\nUsage: kinot lockers ", err)
    _, err = run("command send 1 --bogus")
    assert.matches("\nUsage: kinot command send ", err)
    _, err = run("frobnicate")
    assert.matches("\nUsage: kinot %(%[%-%-json%] | %[%-%-jsonl%]%) %[%-h%]", err)
  end)

  it("says the secret is what differs when both strings-to-sign are the same", function()
    local _, err, rc = kinot("lockers", string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=wrong KINOT_ENDPOINT=%s",
      sim.app_key, sim.endpoint))
    assert.are.equal(3, rc)
    assert.matches("^kinot: signature: ", err)
    assert.matches("the app_secret (or the app_key it is paired with) is what differs", err, 1, true)
    assert.matches("the same on both sides", err, 1, true)
    assert.are.equal(1, select(2, err:gsub("string%-to%-sign", "")), err)
    assert.is_nil(err:find("wrong", 1, true), "the secret leaked")
  end)

  it("starts and stops a simulator in the background", function()
    local pidf = os.tmpname()
    local out, err, rc = kinot("--json sim --daemon --locks 12 --pid-file " .. pidf)
    assert.are.equal(0, rc, err)
    local info = json.decode(out)
    out, err, rc = kinot("lockers", string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s",
      info.app_key, info.app_secret, info.endpoint))
    assert.are.equal(0, rc, err)
    assert.matches("of 13 lockers", out) -- the 12 asked for, then the reference's example lock
    local _, _, rc_stop = kinot("sim stop --pid-file " .. pidf)
    assert.are.equal(0, rc_stop)
    local _, _, rc_after = kinot("lockers", string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s",
      info.app_key, info.app_secret, info.endpoint))
    assert.are.equal(4, rc_after)
  end)
end)

describe("kinot sim in the foreground #cli #sim", function()
  local socket = require "socket"
  local launcher = require "kinot.sim.launcher"

  for _, sig in ipairs { "TERM", "INT" } do
    it("stops nginx on SIG" .. sig, function()
      local port = launcher.free_port()
      local log = os.tmpname()
      local p = io.popen(string.format("cd %s && { %s bin/kinot sim --port %d --locks 3 >%s 2>&1 & echo $!; }",
        H.root, LUA, port, log))
      local pid = tonumber(p:read("*l"))
      p:close()
      -- however this test ends, the simulator it started goes too
      finally(function() os.execute("kill -TERM " .. pid .. " 2>/dev/null") end)
      assert.is_true(launcher.wait_for_port(port))
      local function printed()
        local lf = io.open(log)
        local text = lf:read("*a")
        lf:close()
        return text
      end
      -- nginx accepts a moment before kinot prints its URL and starts waiting
      assert.matches("http://127.0.0.1:" .. port .. "/open/lora/v1",
        H.wait_for(function() local t = printed() return t:find("/open/lora/v1", 1, true) and t end, 5) or printed())
      os.execute("kill -" .. sig .. " " .. pid)
      local gone = H.wait_for(function()
        local c = socket.tcp()
        c:settimeout(0.2)
        local up = c:connect("127.0.0.1", port)
        c:close()
        return not up
      end, 5)
      assert.is_true(gone, "nginx still answers after SIG" .. sig)
      H.wait_for(function()
        local alive = os.execute("kill -0 " .. pid .. " 2>/dev/null")
        return alive ~= true and alive ~= 0 -- 5.4 says true, LuaJIT 0
      end, 3)
      local final = printed()
      os.remove(log)
      assert.matches("simulator stopped %(SIG" .. sig .. "%)", final)
    end)
  end
end)
