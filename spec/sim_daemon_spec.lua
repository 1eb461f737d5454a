-- `kinot sim --daemon` and its pid file: a live one is refused (exit 2,
-- naming the running simulator), a stale one (its nginx gone, or its pid
-- now another process's) is taken over, and `kinot sim stop` never signals
-- a process that is not the simulator.  Every simulator a test starts is
-- stopped by it, even when it fails.
local json = require "kinot.json"
local launcher = require "kinot.sim.launcher"
local H = require "helpers"

local LUA = H.runtime == "luajit" and "luajit" or "lua5.4"

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return out
end

local function kinot(args) return H.kinot(args) end

local read = H.read

local write = H.write

local function alive(pid)
  return sh("kill -0 " .. pid .. " 2>/dev/null && echo yes") == "yes\n"
end

-- every simulator started: its prefix, from the --json line it printed
local function started(list, out)
  for line in out:gmatch("[^\n]+") do
    local doc = json.decode(line)
    if type(doc) == "table" and type(doc.prefix) == "string" then list[#list + 1] = doc.prefix end
  end
  return list
end

local function stop_all(list)
  for _, prefix in ipairs(list) do
    local pid = tonumber(read(prefix .. "/nginx.pid") or "")
    if pid then os.execute("kill -TERM " .. pid .. " 2>/dev/null") end
    os.execute("rm -rf '" .. prefix .. "'")
  end
end

describe("kinot sim --daemon and its pid file #cli #sim", function()
  it("refuses a second simulator on a live pid file, naming the running one, and leaves the first stoppable", function()
    local pidf = os.tmpname()
    local prefixes = {}
    finally(function() stop_all(prefixes) os.remove(pidf) end)
    local out, err, rc = kinot("--json sim --daemon --locks 3 --pid-file " .. pidf)
    started(prefixes, out)
    assert.are.equal(0, rc, err)
    local first = json.decode(out)
    assert.is_number(first.pid)
    local recorded = read(pidf)
    local out2, err2, rc2 = kinot("--json sim --daemon --locks 3 --pid-file " .. pidf)
    started(prefixes, out2)
    assert.are.equal(2, rc2, out2 .. err2)
    assert.matches("already running", err2, 1, true)
    assert.matches("pid " .. first.pid, err2, 1, true)
    assert.matches(first.url, err2, 1, true)
    assert.are.equal(recorded, read(pidf), "the pid file was overwritten")
    assert.are.equal(1, #prefixes, "a second simulator started")
    local _, errs, rcs = kinot("sim stop --pid-file " .. pidf)
    assert.are.equal(0, rcs, errs)
    assert.is_true(H.wait_for(function() return not alive(first.pid) end, 5))
    assert.is_nil(read(pidf))
  end)

  it("takes over a stale pid file: its simulator gone", function()
    local pidf = os.tmpname()
    local prefixes = {}
    finally(function() stop_all(prefixes) os.remove(pidf) end)
    local out, err, rc = kinot("--json sim --daemon --locks 3 --pid-file " .. pidf)
    started(prefixes, out)
    assert.are.equal(0, rc, err)
    local first = json.decode(out)
    -- the simulator dies without `kinot sim stop` (SIGKILL: nginx leaves its pid file);
    -- its workers with it, as in a crash of the host: a worker outliving its
    -- master keeps the port, and nothing would ever stop it.  The master is
    -- stopped first: running, it would start a new worker for each one killed
    os.execute("kill -STOP " .. first.pid .. "; pkill -KILL -P " .. first.pid .. "; kill -KILL " .. first.pid)
    assert.is_true(H.wait_for(function() return not alive(first.pid) end, 5))
    local out2, err2, rc2 = kinot("--json sim --daemon --locks 3 --pid-file " .. pidf)
    started(prefixes, out2)
    assert.are.equal(0, rc2, err2)
    local second = json.decode(out2)
    assert.matches("stale", err2, 1, true)
    assert.are_not.equal(first.prefix, second.prefix)
    assert.matches(second.prefix, read(pidf), 1, true)
    local _, errs, rcs = kinot("sim stop --pid-file " .. pidf)
    assert.are.equal(0, rcs, errs)
    assert.is_true(H.wait_for(function() return not alive(second.pid) end, 5))
  end)

  it("takes over a pid file whose pid is now another process's, and stop never signals that process", function()
    local pidf = os.tmpname()
    local prefixes = {}
    local other = tonumber(sh("sleep 60 >/dev/null 2>&1 & echo $!"))
    finally(function() stop_all(prefixes) os.remove(pidf) os.execute("kill " .. other .. " 2>/dev/null") end)
    -- a dead simulator's prefix whose nginx.pid now names a live process that is not nginx
    local prefix = sh("mktemp -d /tmp/kinot-sim.XXXXXX"):gsub("%s+$", "")
    prefixes[#prefixes + 1] = prefix
    write(prefix .. "/nginx.pid", other .. "\n")
    write(prefix .. "/nginx.conf", "listen 127.0.0.1:9;\n")
    write(pidf, prefix .. "\n")
    -- stop: the process is not the simulator, it lives on
    local _, errs, rcs = kinot("sim stop --pid-file " .. pidf)
    assert.are.equal(0, rcs, errs)
    assert.matches("not running", errs, 1, true)
    assert.is_true(alive(other), "kinot sim stop killed a process that was not the simulator")
    -- start: taken over
    write(pidf, prefix .. "\n")
    local out, err, rc = kinot("--json sim --daemon --locks 3 --pid-file " .. pidf)
    started(prefixes, out)
    assert.are.equal(0, rc, err)
    local sim = json.decode(out)
    assert.matches(sim.prefix, read(pidf), 1, true)
    assert.is_true(alive(other))
    _, errs, rcs = kinot("sim stop --pid-file " .. pidf)
    assert.are.equal(0, rcs, errs)
    assert.is_true(H.wait_for(function() return not alive(sim.pid) end, 5))
    assert.is_true(alive(other))
  end)

  it("lets one of two simulators started at once on one pid file run, and refuses the other", function()
    local pidf = os.tmpname()
    os.remove(pidf)
    local prefixes = {}
    local outs = { os.tmpname(), os.tmpname() }
    finally(function()
      for _, o in ipairs(outs) do started(prefixes, read(o) or "") os.remove(o) os.remove(o .. ".err") end
      stop_all(prefixes)
      os.remove(pidf)
    end)
    local cmd = "cd %s && %s bin/kinot --json sim --daemon --locks 3 --pid-file %s >%s 2>%s.err; echo $? >>%s.err"
    sh(string.format("(" .. cmd .. ") & (" .. cmd .. ") & wait", H.root, LUA, pidf, outs[1], outs[1], outs[1],
      H.root, LUA, pidf, outs[2], outs[2], outs[2]))
    local codes, running = {}, {}
    for i, o in ipairs(outs) do
      codes[i] = tonumber((read(o .. ".err") or ""):match("(%d+)\n$"))
      local doc = json.decode(read(o) or "")
      if type(doc) == "table" and doc.pid and alive(doc.pid) then running[#running + 1] = doc end
    end
    table.sort(codes)
    assert.are.same({ 0, 2 }, codes, (read(outs[1] .. ".err") or "") .. (read(outs[2] .. ".err") or ""))
    assert.are.equal(1, #running)
    assert.matches(running[1].prefix, read(pidf), 1, true)
    local pid, url = launcher.running(running[1].prefix)
    assert.are.equal(running[1].pid, pid)
    assert.are.equal(running[1].url, url)
  end)
end)
