-- Attacks on the CLI's promises (a reviewer's): a platform string that
-- tries to start a line of its own, --json that a strict parser must take
-- (numbers that round-trip, invalid UTF-8, a number JSON cannot carry),
-- and bin/kinot's re-exec under LuaJIT for a Lua 5.1 tree.
local H = require "helpers"
local json = require "kinot.json"
local errors = require "kinot.errors"
local output = require "kinot.cli.output"

local LUA = H.runtime == "luajit" and "luajit" or "lua5.4"

local function sh(cmd)
  local errf = os.tmpname()
  local p = io.popen("cd " .. H.root .. " && { " .. cmd .. " ; } 2>" .. errf .. "; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  local f = io.open(errf)
  local err = f:read("*a")
  f:close()
  os.remove(errf)
  local rc = tonumber(out:match("rc=(%d+)\n?$"))
  return (out:gsub("rc=%d+\n?$", "")), err, rc
end

local function kinot(args, env) return sh(string.format("%s %s bin/kinot %s", env or "", LUA, args)) end

-- python3's json module, strict: bytes must be UTF-8, NaN / Infinity refused
local function strict_json(text)
  local path = os.tmpname()
  local f = io.open(path, "wb")
  f:write(text)
  f:close()
  local out, err, rc = sh("python3 -c 'import json,sys\n" ..
    "def no(c): raise ValueError(\"constant \" + c)\n" ..
    "d = json.loads(open(sys.argv[1], \"rb\").read(), parse_constant=no)\nprint(repr(d))' " .. path)
  os.remove(path)
  return rc == 0, rc == 0 and out or err
end

local function has_python()
  local ok = os.execute("command -v python3 >/dev/null 2>&1")
  return ok == true or ok == 0
end

-- runs kinot's main in this process, stdout and stderr into files
local function main(argv)
  local o, e = io.tmpfile(), io.tmpfile()
  local rc = require("kinot.cli").main(argv, { stdout = o, stderr = e })
  o:seek("set") e:seek("set")
  local out, err = o:read("*a"), e:read("*a")
  o:close() e:close()
  return out, err, rc
end

describe("kinot's JSON under attack #unit", function()
  it("writes every float so that it reads back the same, and whole numbers up to +-2^53 as their digits", function()
    for _, v in ipairs { 0.1, 3.1234567890123456, 1 / 3, 1.7976931348623157e308, 5e-324, 2.2250738585072014e-308,
                         -109.5, 123456789.123456789, 2 ^ 60, -2 ^ 70 + 2 ^ 18, 1e21, 9007199254740993 * 1.0 } do
      local text = output.json_text({ v })
      local back = tonumber(text:match("^%[(.*)%]$"))
      assert.are.equal(v, back, text)
    end
    assert.are.equal("[9007199254740992,-9007199254740992,0,-1]", output.json_text({ 2 ^ 53, -2 ^ 53, 0, -1 }))
    -- -0.0 is a whole number: the integer 0, as kinot.json writes every integral float
    local text = output.json_text({ -0.0 })
    assert.are.equal("[0]", text)
    if math.type then -- Lua 5.4: the decoder keeps a 64-bit integer, and so does the writer
      local big = json.decode("[9007199254740993]")
      big[2] = math.mininteger + 1
      assert.are.equal("[9007199254740993,-9223372036854775807]", output.json_text(big))
    end
  end)

  it("writes invalid UTF-8 in a value or a key as U+FFFD, so a strict parser takes the line", function()
    local doc = json.decode('{"bt_mac":"a\255\194b\237\160\128c","k\254":"\\u001b]0;t\\u0007","ok":"Z\195\188rich/\226\128\174"}')
    local text = output.json_text(doc, "lock")
    local R = "\239\191\189"
    assert.are.equal('{"bt_mac":"a' .. R .. R .. 'b' .. R .. R .. R .. 'c","k' .. R .. '":"\\u001b]0;t\\u0007",' ..
                     '"ok":"Z\195\188rich/\226\128\174"}', text)
    if not has_python() then pending("no python3: the strict parser's check is skipped") return end
    local ok, why = strict_json(text)
    assert.is_true(ok, why)
  end)

  it("refuses a number JSON cannot carry (1e400 in a body) as the platform's fault, not a usage error", function()
    local lock = json.decode('{"sn":419600001,"voltage":1e400}') -- the SDK's own decoder, as for a platform answer
    local ok, e = pcall(output.json_text, lock, "lock")
    assert.is_false(ok)
    assert.is_true(errors.is(e), tostring(e))
    assert.are.equal("decode", e.kind)
    assert.matches("voltage", e.message, 1, true)
    -- shown to a person it is just a number
    assert.are.equal("inf", output.number_text("rssi", lock.voltage))
  end)
end)

describe("escape() under attack #unit", function()
  it("escapes every Bidi_Control code point, U+061C (ARABIC LETTER MARK) too, as Trojan Source lists them", function()
    -- U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069
    for _, cp in ipairs { 0x061C, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069 } do
      local s = utf8 and utf8.char(cp) or (cp < 0x800 and string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64)
        or string.char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64))
      assert.are.equal(string.format("a\\u%04xb", cp), output.escape("a" .. s .. "b"))
    end
  end)
end)

describe("kinot's stderr under attack #unit", function()
  it("an argument's line break does not start a line of its own in argparse's message", function()
    local _, err, rc = main { "lock\nkinot: all good\r" }
    assert.are.equal(2, rc)
    assert.is_nil(err:find("\nkinot: all good", 1, true), err)
    assert.matches("lock\\x0akinot: all good\\x0d", err, 1, true)
  end)
end)

describe("kinot's errors against the simulator under attack #cli #sim", function()
  local sim, env
  setup(function()
    sim = H.sim { locks = 3, sensors = 2, dtus = 1 }
    env = string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s", sim.app_key, sim.app_secret, sim.endpoint)
  end)
  teardown(function() sim.stop() end)
  before_each(function() sim.reset() end)

  it("a platform message's line break does not start a line of its own (it could forge one)", function()
    sim.fault { kind = "status", status = 200, code = 500, message = "Bad\nkinot: ok, all done\r\n", next = 1 }
    local out, err, rc = kinot("--no-color lockers", env)
    assert.are.equal(3, rc, err)
    assert.are.equal("", out)
    assert.is_nil(err:find("\nkinot: ok", 1, true), err)
    assert.matches("Bad\\x0akinot: ok, all done\\x0d\\x0a", err, 1, true)
    local _, n = err:gsub("\n", "")
    assert.are.equal(1, n, err)
    -- --json: the message exactly
    sim.fault { kind = "status", status = 200, code = 500, message = "Bad\nkinot: ok, all done\r\n", next = 1 }
    local _, jerr = kinot("--json lockers", env)
    assert.matches("Bad\nkinot: ok, all done\r\n", json.decode(jerr).message, 1, true)
  end)

  it("--json answers a strict parser takes, a hostile device included", function()
    if not has_python() then pending("no python3") return end
    sim.call("POST", "/devices/419600002", { bt_mac = "\27]0;x\7\194\155/\226\128\174", voltage = 3.1234567890123456 })
    for _, args in ipairs { "--json locker 419600002", "--json lockers --all", "--jsonl lockers --all", "--json report" } do
      local out, err, rc = kinot(args, env)
      assert.are.equal(0, rc, args .. ": " .. err)
      for line in out:gmatch("[^\n]+") do
        local ok, why = strict_json(line)
        assert.is_true(ok, args .. ": " .. why)
      end
    end
  end)
end)

describe("kinot notifications, the device type either way, under attack #cli #sim", function()
  local sim, env
  setup(function()
    sim = H.sim { locks = 2, sensors = 2, dtus = 1 }
    env = string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s", sim.app_key, sim.app_secret, sim.endpoint)
  end)
  teardown(function() sim.stop() end)

  it("takes the same type in its two spellings, as argument and option, and refuses what is neither", function()
    for _, args in ipairs { "18 --device-type lock", "lock --device-type 18", "34 --device-type sensor", "all --device-type all" } do
      local out, err, rc = kinot("--json notifications get " .. args, env)
      assert.are.equal(0, rc, args .. ": " .. err)
      assert.is_table(json.decode(out), args)
    end
    local _, err, rc = kinot("notifications get 18 --device-type sensor", env)
    assert.are.equal(2, rc, err)
    assert.matches("given twice", err, 1, true)
    -- a number in another spelling is not a device type (0x12 is 18 to tonumber, not to a person)
    for _, given in ipairs { "0x12", "18.0", "' 18'", "1e1", "LOCK" } do
      _, err, rc = kinot("notifications set " .. given .. " --status-url https://example.com/s", env)
      assert.are.equal(2, rc, given .. ": " .. err)
      assert.matches("device type must be", err, 1, true)
    end
  end)
end)

describe("bin/kinot under Lua 5.1 (re-exec under LuaJIT) #cli", function()
  local function have_lua51()
    local ok = os.execute("command -v lua5.1 >/dev/null 2>&1")
    return ok == true or ok == 0
  end

  it("stops, and says why, when the luajit on PATH is not LuaJIT (no re-exec loop)", function()
    if not have_lua51() then pending("no lua5.1") return end
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    finally(function() os.execute("rm -rf " .. dir) end)
    -- a `luajit` that is PUC Lua 5.1; it counts its runs and stops the 4th, so a loop ends
    local f = io.open(dir .. "/luajit", "w")
    f:write("#!/bin/sh\nn=$(cat " .. dir .. "/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > " .. dir .. "/count\n",
            "[ $n -gt 3 ] && { echo LOOP >&2; exit 99; }\nexec lua5.1 \"$@\"\n")
    f:close()
    os.execute("chmod +x " .. dir .. "/luajit")
    local _, err, rc = sh("PATH=" .. dir .. ":$PATH lua5.1 bin/kinot --version")
    local count = io.open(dir .. "/count"):read("*l")
    assert.are.equal("1", count, err)
    assert.are.equal(1, rc, err)
    assert.matches("LuaJIT", err, 1, true)
  end)

  it("passes arguments (spaces, quotes, --), stdin and the exit code through", function()
    if not have_lua51() then pending("no lua5.1") return end
    local args = [[--json sign --app-key k --app-secret "s p'c" --timestamp 1 --nonce "n 1" --query "x=a b'\"c" -- /p]]
    local jit_out, jit_err, jit_rc = sh("luajit bin/kinot " .. args)
    local out, err, rc = sh("lua5.1 bin/kinot " .. args)
    assert.are.equal(0, jit_rc, jit_err)
    assert.are.same({ jit_out, jit_err, jit_rc }, { out, err, rc })
    assert.matches([[x=a b'\"c]], out, 1, true)
    -- stdin, and exit 1 (the check failed)
    local body = [[{"sn":419600001,"sign":"00"}]]
    jit_out, jit_err, jit_rc = sh("printf '%s' '" .. body .. "' | luajit bin/kinot --json verify - --secret s")
    out, err, rc = sh("printf '%s' '" .. body .. "' | lua5.1 bin/kinot --json verify - --secret s")
    assert.are.equal(1, jit_rc, jit_err)
    assert.are.same({ jit_out, jit_err, jit_rc }, { out, err, rc })
    -- a usage error: 2
    local _, uerr, urc = sh("lua5.1 bin/kinot locker")
    assert.are.equal(2, urc, uerr)
  end)
end)

describe("kinot worker's lines under attack #redis #cli", function()
  local R = require "redis_server"
  local r, dir
  setup(function()
    r = R.start {}
    dir = H.tmpdir("attack")
    -- a handler whose error carries a line break and terminal controls
    H.write(dir .. "/attack_handler.lua", 'return function(ev) error("bad\\n\\27]0;pwned\\7 sn " .. tostring(ev.sn), 0) end\n')
  end)
  teardown(function()
    r.stop()
    if dir then os.execute("rm -rf " .. dir) end
  end)

  it("a burst of SIGUSR1 during a blocking read: alive, a line of counts after the read; a handler's error on one line", function()
    local p = io.popen(string.format("cd %s && LUA_PATH='%s/?.lua;;' KINOT_REDIS_URL='%s' exec %s bin/kinot worker " ..
      "--handler attack_handler --block 3 --stats-every 600 --max-attempts 1 --verbose >%s/w.log 2>&1 & echo $!",
      H.root, dir, r.url, LUA, dir))
    local pid = tonumber(p:read("*l"))
    p:close()
    finally(function() os.execute("kill -KILL " .. pid .. " 2>/dev/null") end)
    local function alive() local ok = os.execute("kill -0 " .. pid) return ok == true or ok == 0 end
    local function log()
      local f = io.open(dir .. "/w.log")
      local s = f and f:read("*a") or ""
      if f then f:close() end
      return s
    end
    assert.is_truthy(H.wait_for(function() return log():find("kinot worker ", 1, true) end, 10), log())
    os.execute("sleep 0.3; for i in $(seq 1 200); do kill -USR1 " .. pid .. "; done")
    assert.is_true(alive(), log())
    assert.is_truthy(H.wait_for(function() return log():find("counts:", 1, true) end, 6), log())
    local _, counts = log():gsub("counts:", "")
    assert.is_true(counts >= 1 and counts <= 3, log()) -- held signals are one, taken between two reads
    -- an entry whose handler fails: its error on one line, escaped
    local c = r.client()
    c:call("XADD", "kinot:callbacks", "*", "body", '{"sn":7}', "kind", "status")
    assert.is_truthy(H.wait_for(function() return log():find("sn 7", 1, true) end, 6), log())
    local text = log()
    assert.matches("bad\\x0a\\x1b]0;pwned\\x07 sn 7", text, 1, true)
    assert.is_nil(text:find("\27", 1, true), text)
    assert.is_true(alive(), text)
  end)
end)
