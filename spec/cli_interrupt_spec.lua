-- Ctrl-C (SIGINT) in `kinot`, as a person at a terminal sends it, to a real
-- process against the simulator: no traceback and no "internal error", one
-- line on stderr, exit 130 (128 + SIGINT), at once rather than when the
-- transfer out ends, and nothing lost: a batch's journal resumes without
-- sending any command twice, a foreground simulator's nginx goes with it.
local json = require "kinot.json"
local H = require "helpers"
local B = require "background"
local batch = require "batch_support"

-- a transfer out stays this long: a stop "at once" is far under it
local LATENCY = 20

-- whether something accepts a connection on 127.0.0.1:port (a stopped
-- nginx must not)
local function answers(port)
  local c = require("socket").tcp()
  c:settimeout(0.5)
  local up = c:connect("127.0.0.1", port)
  c:close()
  return up ~= nil
end

describe("Ctrl-C in kinot #cli #sim", function()
  local sim, env
  setup(function()
    sim = H.sim { locks = 300, sensors = 20, command_pace = 0.02 }
    env = string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s", sim.app_key, sim.app_secret,
      sim.endpoint)
  end)
  teardown(function() sim.stop() end)
  before_each(function() sim.reset() end)

  local function arrived(endpoint, n)
    return H.wait_for(function()
      local e = sim.counters().endpoints
      return e ~= json.null and (e[endpoint] or 0) >= (n or 1)
    end, 10)
  end

  -- signals proc once `endpoint` got n requests; -> exit status, seconds it took
  local function interrupt(proc, endpoint, n)
    assert.truthy(arrived(endpoint, n), "no " .. endpoint .. " came: " .. proc.err())
    local t0 = B.now()
    proc.signal("INT")
    local rc = proc.wait(LATENCY / 2)
    return rc, B.now() - t0
  end

  for _, case in ipairs {
    { "lockers --all --concurrency 4", "GET /lockers", "the pages out of a scan (curl-multi)" },
    { "locker 419600001", "GET /lockers/{sn}", "one request (curl_easy_perform)" },
    { "report --concurrency 4", "GET /lockers", "the report's scan" },
  } do
    it("stops " .. case[3] .. " at once: 'kinot: interrupted', exit 130", function()
      sim.fault { kind = "latency", latency = LATENCY, share = 1 }
      local proc = B.kinot("--timeout " .. (LATENCY + 10) .. " " .. case[1], env)
      finally(proc.kill)
      local rc, took = interrupt(proc, case[2])
      assert.are.equal(130, rc, proc.err())
      assert.are.equal("kinot: interrupted\n", proc.err())
      assert.are.equal("", proc.out())
      assert.is_true(took < LATENCY / 4, "took " .. took .. " s: the transfer ran out")
    end)
  end

  it("says so as the JSON error object with --json", function()
    sim.fault { kind = "latency", latency = LATENCY, share = 1 }
    local proc = B.kinot("--json --timeout " .. (LATENCY + 10) .. " lockers --all", env)
    finally(proc.kill)
    assert.are.equal(130, (interrupt(proc, "GET /lockers")), proc.err())
    local doc = json.decode(proc.err())
    assert.are.equal("interrupted", doc.kind)
    assert.are.equal(json.null, doc.status)
  end)

  it("leaves a batch's journal whole: run again, it resumes and no command goes twice", function()
    local sns = batch.serials(20)
    local list = os.tmpname()
    local f = assert(io.open(list, "w"))
    f:write(table.concat(sns, "\n"), "\n")
    f:close()
    local journal = batch.tmpname()
    local latency = 2
    sim.fault { kind = "latency", latency = latency, share = 1, endpoint = "POST /commands" }
    local args = "command send --from " .. list .. " --concurrency 4 --journal " .. journal
    local proc = B.kinot("--timeout 30 " .. args, env)
    finally(function()
      proc.kill()
      os.remove(list)
      os.remove(journal)
    end)
    -- the first 4 answered, the next 4 out
    local rc = interrupt(proc, "POST /commands", 5)
    assert.are.equal(130, rc, proc.err())
    assert.are.equal("kinot: interrupted\n", proc.err())
    -- every line of the journal whole
    local text = assert(batch.read(journal))
    assert.matches("\n$", text)
    for line in text:gmatch("[^\n]+") do assert.is_table(json.decode(line), line) end
    -- the POSTs left out come to the simulator's handler all the same (it
    -- does not stop on a closed connection): the command is made
    local before = sim.counters().endpoints["POST /commands"]
    assert.truthy(H.wait_for(function() return sim.counters().commands_created >= before end, latency + 5))
    sim.call("DELETE", "/faults")
    local out, err, rc2 = H.kinot(args .. " --jsonl", env)
    assert.are.equal(5, rc2, err) -- those out when it stopped: unknown, never sent again
    local created, twice = batch.created(sim)
    assert.are.same({}, twice)
    local unknown, sent = 0, 0
    for l in out:gmatch("[^\n]+") do
      local r = json.decode(l)
      if r.outcome == "unknown" then
        unknown = unknown + 1
        assert.is_true(r.resumed)
      else
        assert.are.equal("sent", r.outcome, l)
        sent = sent + 1
      end
      assert.are.equal(1, created[r.sn], l)
    end
    assert.are.equal(20, unknown + sent)
    assert.is_true(unknown >= 1 and unknown <= 4, unknown .. " unknown")
    -- one POST a serial over both runs
    assert.are.equal(20, sim.counters().endpoints["POST /commands"])
  end)
end)

describe("Ctrl-C in kinot sim in the foreground #cli #sim", function()
  local launcher = require "kinot.sim.launcher"
  for _, case in ipairs { { "INT", 130 }, { "TERM", 0 } } do
    it("stops nginx on SIG" .. case[1] .. ", exit " .. case[2], function()
      local port = launcher.free_port()
      local proc = B.kinot("sim --port " .. port .. " --locks 3")
      finally(proc.kill)
      assert.is_true(launcher.wait_for_port(port))
      assert.truthy(H.wait_for(function() return proc.out():find("/open/lora/v1", 1, true) end, 5), proc.err())
      proc.signal(case[1])
      assert.are.equal(case[2], proc.wait(10), proc.err())
      assert.are.equal("simulator stopped (SIG" .. case[1] .. ")\n", proc.err())
      assert.is_false(answers(port), "nginx still answers")
    end)
  end
end)

describe("Ctrl-C in kinot worker #cli #redis", function()
  local worker = require "kinot.callback.worker"
  local R = require "redis_server"
  local SECRET = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"
  local r, dir
  setup(function()
    r = R.start {}
    dir = H.tmpdir("ctrlc")
    -- each entry: a wait of the C core (an API call would be one), then
    -- its serial noted: one stopped by the Ctrl-C is never noted
    H.write(dir .. "/ctrlc_handler.lua", [[
      local core = require "kinot.core"
      return function(ev)
        core.sleep(0.4)
        local out = assert(io.open(os.getenv("KINOT_SPEC_HANDLED"), "a"))
        out:write(tostring(ev.sn), "\n")
        out:close()
      end
    ]])
  end)
  teardown(function()
    r.stop()
    os.execute("rm -rf " .. dir)
  end)

  local function handled()
    local t = {}
    for sn in (H.read(dir .. "/handled") or ""):gmatch("%d+") do t[#t + 1] = tonumber(sn) end
    return t
  end

  it("stops within the read in hand: those run acknowledged, the others left pending and run once, later", function()
    H.put_statuses(r.url, "ctrlc", { 1, 2, 3, 4, 5, 6 }, SECRET)
    local proc = B.kinot("worker --handler ctrlc_handler --stream ctrlc --count 6 --block 1 --claim-after 60",
      string.format("LUA_PATH='%s/?.lua;;' KINOT_REDIS_URL='%s' KINOT_SPEC_HANDLED='%s/handled'", dir, r.url, dir))
    finally(proc.kill)
    assert.truthy(H.wait_for(function() return #handled() >= 1 end, 15), proc.err())
    proc.signal("INT")
    assert.are.equal(130, proc.wait(10), proc.err())
    local err = proc.err()
    assert.matches("\nkinot: interrupted\n$", err)
    assert.is_nil(err:find("internal", 1, true), err)
    assert.is_nil(err:find("handler failed", 1, true), err) -- one line for the stop, not one an entry
    local first = #handled()
    assert.is_true(first >= 1 and first < 6, first .. " handled before the Ctrl-C came through")
    local c = r.client()
    finally(function() c:close() proc.kill() end) -- (busted keeps an it's last finally: both here)
    local pending = c:call("XPENDING", "ctrlc", worker.GROUP)
    assert.are.equal(6 - first, tonumber(pending[1]))
    -- another worker claims them once they are idle long enough: each run once
    local w = worker.new { redis = r.url, stream = "ctrlc", consumer = "after", block = 0.1, claim_after = 0.3,
                           log = function() end, on_status = function(ev)
                             local out = assert(io.open(dir .. "/handled", "a"))
                             out:write(tostring(ev.sn), "\n")
                             out:close()
                           end }
    local t0 = B.now()
    w:run(function() return #handled() >= 6 or B.now() - t0 > 15 end)
    local seen, twice = {}, {}
    for _, sn in ipairs(handled()) do
      if seen[sn] then twice[#twice + 1] = sn end
      seen[sn] = true
    end
    assert.are.same({}, twice)
    for sn = 1, 6 do assert.is_true(seen[sn], "entry of sn " .. sn .. " never run") end
  end)

  -- the entries of sns first + 1 .. first + 3, each read once by a worker
  -- gone since and idle 10 minutes: at their last attempt under
  -- --max-attempts 2, and claimed at once (XAUTOCLAIM) by the next worker
  local function at_last_attempt(stream, first)
    H.put_statuses(r.url, stream, { first + 1, first + 2, first + 3 }, SECRET)
    local c = r.client()
    assert(c:call("XGROUP", "CREATE", stream, worker.GROUP, "0"))
    local read = assert(c:call("XREADGROUP", "GROUP", worker.GROUP, "gone", "COUNT", 3, "STREAMS", stream, ">"))
    for _, e in ipairs(read[1][2]) do
      assert(c:call("XCLAIM", stream, worker.GROUP, "gone", 0, e[1], "IDLE", 600000, "JUSTID"))
    end
    c:close()
  end

  -- { [entry] = deliveries } of the pending entries (XPENDING's count)
  local function deliveries(c, stream)
    local t = {}
    for _, row in ipairs(assert(c:call("XPENDING", stream, worker.GROUP, "-", "+", 100))) do t[row[1]] = row[4] end
    return t
  end

  -- The handler is inside a wait of the C core (as an API call would be)
  -- when the Ctrl-C comes: that is the worker being stopped, not the
  -- handler failing.  On the entry's last attempt it went to the
  -- dead-letter stream; it must stay pending, its attempt not counted
  -- (else the next worker's claim counts 3 of 2 and buries it as "died"),
  -- with no error kept; so must the entries of the batch not yet run
  for first, mode in pairs { [10] = "raises", [20] = "swallows" } do
    it("leaves pending, uncounted, an entry at its last attempt whose handler the Ctrl-C stopped (it " .. mode ..
       " the interruption), and those after it", function()
      local stream = "last-" .. mode
      at_last_attempt(stream, first)
      H.write(dir .. "/slow_handler.lua", [[
        local core = require "kinot.core"
        return function(ev)
          local out = assert(io.open(os.getenv("KINOT_SPEC_STARTED"), "a"))
          out:write(tostring(ev.sn), "\n")
          out:close()
          if os.getenv("KINOT_SPEC_MODE") == "swallows" then
            local ok, err = pcall(core.sleep, 30)
            if not ok then return nil, "gave up: " .. tostring(err) end
          else
            core.sleep(30)
          end
          return true
        end
      ]])
      local started = dir .. "/started-" .. mode
      local proc = B.kinot("worker --handler slow_handler --stream " .. stream .. " --max-attempts 2 --count 10 " ..
        "--block 1 --claim-after 60", string.format("LUA_PATH='%s/?.lua;;' KINOT_REDIS_URL='%s' " ..
        "KINOT_SPEC_STARTED='%s' KINOT_SPEC_MODE=%s", dir, r.url, started, mode))
      local c = r.client()
      finally(function() c:close() proc.kill() end)
      assert.truthy(H.wait_for(function() return H.read(started) end, 15), proc.err())
      proc.signal("INT")
      assert.are.equal(130, proc.wait(10), proc.err())
      assert.matches("\nkinot: interrupted\n$", proc.err())
      assert.is_nil(proc.err():find("dead", 1, true), proc.err())
      assert.are.equal((first + 1) .. "\n", H.read(started)) -- the first ran, the others were not started
      -- all three pending, each at the one delivery it had before
      assert.are.same({ 1, 1, 1 }, (function()
        local n = {}
        for _, d in pairs(deliveries(c, stream)) do n[#n + 1] = d end
        return n
      end)())
      assert.are.equal(0, c:call("XLEN", stream .. ":dead"))
      assert.are.equal(0, c:call("HLEN", stream .. ":errors"))
      -- the next worker (the same claim_after) claims them at once and runs each, as its last attempt: none dead
      local attempts = {}
      local w = worker.new { redis = r.url, stream = stream, consumer = "next", block = 0.1, max_attempts = 2,
                             claim_after = 60, log = function() end,
                             on_status = function(ev) attempts[ev.sn] = ev.attempt end }
      local t0 = B.now()
      w:run(function() return w.handled >= 3 or B.now() - t0 > 10 end)
      w.client:close()
      assert.are.same({ [first + 1] = 2, [first + 2] = 2, [first + 3] = 2 }, attempts)
      assert.are.equal(0, w.dead)
      assert.are.equal(0, c:call("XLEN", stream .. ":dead"))
      assert.are.same({}, deliveries(c, stream))
    end)
  end

  -- its read of the stream (XREADGROUP ... BLOCK, over LuaSocket) waits
  -- up to --block for an entry: the Ctrl-C must not wait as long
  it("stops at once while its read waits for entries (--block 30): exit 130, one line", function()
    local proc = B.kinot("worker --handler ctrlc_handler --stream idle --block 30",
      string.format("LUA_PATH='%s/?.lua;;' KINOT_REDIS_URL='%s' KINOT_SPEC_HANDLED='%s/handled'", dir, r.url, dir))
    local c = r.client()
    finally(function() c:close() proc.kill() end)
    -- its read is in: Redis holds the client blocked (flags b)
    assert.truthy(H.wait_for(function()
      return tostring(c:call("CLIENT", "LIST")):find("flags=b [^\n]*cmd=xreadgroup")
    end, 15), proc.err())
    local t0 = B.now()
    proc.signal("INT")
    local rc = proc.wait(10)
    local took = B.now() - t0
    assert.are.equal(130, rc, proc.err())
    assert.is_true(took < 2, "took " .. took .. " s: the read ran out")
    local err = proc.err()
    assert.matches("\nkinot: interrupted\n$", err)
    assert.are.equal(2, select(2, err:gsub("\n", "")), err) -- its first line, and the stop's
  end)
end)

describe("Ctrl-C in kinot, as the shell sees it #cli #sim", function()
  local sim, env
  setup(function()
    sim = H.sim { locks = 20, sensors = 5 }
    env = string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s", sim.app_key, sim.app_secret,
      sim.endpoint)
  end)
  teardown(function() sim.stop() end)
  before_each(function() sim.reset() end)

  -- a shell reads exit(130) as "it handled the Ctrl-C: go on" and runs the
  -- rest of a script's loop; a process that died of SIGINT stops it.  The
  -- shell's $? is 130 either way: Python's wait status tells them apart
  it("dies of SIGINT once its line is said, so that a script's loop around it stops", function()
    sim.fault { kind = "latency", latency = LATENCY, share = 1 }
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir " .. dir)
    finally(function() os.execute("rm -rf " .. dir) end)
    local lua = H.runtime == "luajit" and "luajit" or "lua5.4"
    local py = [[
import os, signal, subprocess, sys, time
d = sys.argv[1]
p = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=open(d + "/err", "w"))
while not os.path.exists(d + "/go"):
    time.sleep(0.05)
p.send_signal(signal.SIGINT)
try:
    rc = p.wait(timeout=10)
except subprocess.TimeoutExpired:
    p.kill()
    rc = "still running"
open(d + "/rc", "w").write(str(rc))
]]
    local f = assert(io.open(dir .. "/ctrlc.py", "w"))
    f:write(py)
    f:close()
    os.execute(string.format("cd %s && env %s python3 %s/ctrlc.py %s %s bin/kinot --timeout %d locker 419600001 " ..
      ">/dev/null 2>&1 &", H.root, env, dir, dir, lua, LATENCY + 10))
    finally(function()
      os.execute("touch " .. dir .. "/go")
      H.wait_for(function() return H.read(dir .. "/rc") end, 12)
      os.execute("rm -rf " .. dir)
    end)
    assert.truthy(H.wait_for(function()
      local e = sim.counters().endpoints
      return e ~= json.null and e["GET /lockers/{sn}"]
    end, 10))
    os.execute("touch " .. dir .. "/go")
    local rc = H.wait_for(function() return H.read(dir .. "/rc") end, 12)
    assert.are.equal("-2", rc) -- killed by signal 2, SIGINT
    assert.are.equal("kinot: interrupted\n", H.read(dir .. "/err"))
  end)

  it("stops before the batch when Ctrl-C came while its list was read: no journal, nothing sent", function()
    local journal = batch.tmpname()
    -- (the feeding subshell ignores the Ctrl-C, as a slow producer upstream would go on)
    local proc = B.kinot("command send --from - --journal " .. journal, env,
      "trap '' INT; sleep 2; seq 419600001 419600005")
    finally(function()
      proc.kill()
      os.remove(journal)
    end)
    require("kinot.core").sleep(0.5)
    proc.signal("INT")
    assert.are.equal(130, proc.wait(10), proc.err())
    assert.are.equal("kinot: interrupted\n", proc.err())
    assert.is_nil(batch.read(journal))
    assert.are.equal(json.null, sim.counters().endpoints)
  end)
end)

describe("Ctrl-C in kinot serve in the foreground #cli #sim #nginx", function()
  local launcher = require "kinot.sim.launcher"
  local sim
  setup(function() sim = H.sim { locks = 20, sensors = 5 } end)
  teardown(function() sim.stop() end)

  it("stops its nginx: 'kinot serve stopped (SIGINT)', exit 130", function()
    local port = launcher.free_port()
    local proc = B.kinot("serve --listen 127.0.0.1:" .. port .. " --sync-interval 0", string.format(
      "KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s", sim.app_key, sim.app_secret, sim.endpoint))
    finally(proc.kill)
    assert.truthy(H.wait_for(function() return proc.out():find("sync: ", 1, true) end, 20), proc.out() .. proc.err())
    proc.signal("INT")
    assert.are.equal(130, proc.wait(15), proc.err())
    assert.are.equal("kinot serve stopped (SIGINT)\n", proc.err())
    assert.is_false(answers(port), "nginx still answers")
  end)
end)
