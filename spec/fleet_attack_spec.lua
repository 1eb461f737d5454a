-- Attacks on the live twin's promises (kinot.fleet, kinot serve): a pid
-- file naming a directory that is not a server's, a second daemon on a live
-- pid file, hostile groups files, a lua_shared_dict that fills up under the
-- twin.  Real parts: bin/kinot, a real nginx.
local H = require "helpers"
local launcher = require "kinot.sim.launcher"
local errors = require "kinot.errors"

local LUA = rawget(_G, "jit") and "luajit" or "lua5.4"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  return out, tonumber(out:match("rc=(%d+)%s*$"))
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

describe("kinot serve's pid file, attacked #cli #nginx", function()
  it("stop never removes a directory the pid file names unless it is a kinot serve's", function()
    local p = io.popen("mktemp -d /tmp/kinot-attack.XXXXXX")
    local dir = p:read("*l")
    p:close()
    local pid_file = dir .. "/serve.pid"
    local victim = dir .. "/precious"
    os.execute("mkdir " .. victim)
    write(victim .. "/data.txt", "keep me\n")
    write(pid_file, victim .. "\n")
    finally(function() os.execute("rm -rf " .. dir) end)
    local out = sh(string.format("cd %s && %s bin/kinot serve stop --pid-file %s", H.root, LUA, pid_file))
    assert.is_true(exists(victim .. "/data.txt"), "kinot serve stop removed " .. victim .. ": " .. out)
    assert.matches("not running", out)
  end)

  it("refuses a second --daemon on a live pid file; the first keeps running and stops", function()
    local p = io.popen("mktemp -d /tmp/kinot-attack.XXXXXX")
    local dir = p:read("*l")
    p:close()
    local pid_file = dir .. "/serve.pid"
    local env = "KINOT_ENDPOINT=http://127.0.0.1:9/open/lora/v1 KINOT_APP_KEY=k KINOT_APP_SECRET=s " ..
      "KINOT_API_TOKEN= KINOT_REDIS_URL="
    local port1, port2 = launcher.free_port(), launcher.free_port()
    local function start(port)
      return sh(string.format("cd %s && %s %s bin/kinot serve --daemon --sync-interval 0 --pid-file %s " ..
        "--listen 127.0.0.1:%d", H.root, env, LUA, pid_file, port))
    end
    local stop = function()
      return sh(string.format("cd %s && %s bin/kinot serve stop --pid-file %s", H.root, LUA, pid_file))
    end
    local second_prefix
    finally(function()
      stop()
      if second_prefix then launcher.stop(second_prefix) os.execute("rm -rf " .. second_prefix) end
      os.execute("rm -rf " .. dir)
    end)
    local out, rc = start(port1)
    assert.are.equal(0, rc, out)
    local first = io.open(pid_file):read("*l")
    out, rc = start(port2)
    local now = io.open(pid_file):read("*l")
    if now ~= first then second_prefix = now end
    assert.are_not.equal(0, rc, "a second daemon was started over a live pid file: " .. out)
    assert.matches("already running", out)
    assert.are.equal(first, now)
    assert.is_false(launcher.port_busy(port2), "the refused server must not be left listening")
    assert.are.equal(200, H.raw("GET", "http://127.0.0.1:" .. port1 .. "/api/fleet").status)
    out, rc = stop()
    assert.are.equal(0, rc, out)
    assert.is_false(exists(pid_file))
    assert.is_false(exists(first .. "/nginx.conf"), "its private directory is removed")
  end)

  it("takes over a stale pid file (its server gone) and says so", function()
    local p = io.popen("mktemp -d /tmp/kinot-attack.XXXXXX")
    local dir = p:read("*l")
    p:close()
    local pid_file = dir .. "/serve.pid"
    write(pid_file, dir .. "/no-such-server\n")
    local env = "KINOT_ENDPOINT=http://127.0.0.1:9/open/lora/v1 KINOT_APP_KEY=k KINOT_APP_SECRET=s KINOT_REDIS_URL="
    finally(function()
      sh(string.format("cd %s && %s bin/kinot serve stop --pid-file %s", H.root, LUA, pid_file))
      os.execute("rm -rf " .. dir)
    end)
    local out, rc = sh(string.format("cd %s && %s %s bin/kinot serve --daemon --sync-interval 0 --pid-file %s " ..
      "--listen 127.0.0.1:%d", H.root, env, LUA, pid_file, launcher.free_port()))
    assert.are.equal(0, rc, out)
    assert.matches("stale pid file", out)
    assert.are_not.equal(dir .. "/no-such-server", io.open(pid_file):read("*l"))
  end)
end)

describe("kinot.fleet groups files, hostile #unit", function()
  local groups = require "kinot.fleet.groups"
  local files = {}
  local function file(ext, text)
    local path = os.tmpname() .. ext
    write(path, text)
    files[#files + 1] = path
    return path
  end
  teardown(function() for _, f in ipairs(files) do os.remove(f) end end)

  local function refused(source, pattern)
    local ok, err = pcall(groups.load, source)
    assert.is_false(ok, "accepted")
    assert.is_true(errors.is_misuse(err), "a raw error, not a clear one: " .. tostring(err))
    assert.matches(pattern, tostring(err))
  end

  it("reads a CSV that starts with a UTF-8 BOM and ends its lines with CRLF", function()
    local map, names = groups.load(file(".csv", "\239\187\191sn,zone,level,bay\r\n419600001,A,1,\"A1, \"\"x\"\"\"\r\n"))
    assert.are.equal("A/1", map[419600001].group)
    assert.are.equal('A1, "x"', map[419600001].bay)
    assert.are.same({ "A/1" }, names)
  end)

  it("reads a JSON file that starts with a BOM", function()
    local map = groups.load(file(".json", "\239\187\191{\"419600001\": {\"zone\": \"A\", \"level\": 1}}"))
    assert.are.equal("A/1", map[419600001].group)
  end)

  it("refuses a serial given twice, naming both lines", function()
    refused(file(".csv", "sn,zone,level\n419600001,A,1\n419600002,A,1\n419600001,B,2\n"),
      "419600001.*twice.*line 2.*line 4")
  end)

  it("refuses a CSV without an sn column, saying so", function()
    refused(file(".csv", "serial,zone,level\n419600001,A,1\n"), "no sn column")
  end)

  it("refuses JSON rows that are not objects, and values that are not text or numbers", function()
    refused(file(".json", "[1, 2, 3]"), "object")
    refused(file(".json", '[{"sn": 419600001, "zone": {"a": 1}}]'), "zone")
    refused(file(".json", '{"419600001": {"zone": ["A"]}}'), "zone")
  end)
end)
