-- Ctrl-C in `kinot worker` (a real process, a real redis-server) at the
-- points of a batch where an entry can be left counted without having run:
-- such an entry at its last attempt would be buried as "died" by the next
-- worker's claim, because of the Ctrl-C.
local worker = require "kinot.callback.worker"
local H = require "helpers"
local B = require "background"
local R = require "redis_server"

local SECRET = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"

describe("Ctrl-C in kinot worker, attacked #cli #redis", function()
  local r, dir
  setup(function()
    r = R.start {}
    dir = H.tmpdir("ctrlc-attack")
    H.write(dir .. "/noting_handler.lua", [[
      return function(ev)
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

  -- the next worker, max_attempts 1, claim_after 1: { [sn] = attempt } of
  -- what it ran, and what it buried
  local function next_worker(stream, n)
    local attempts = {}
    local w = worker.new { redis = r.url, stream = stream, consumer = "next", block = 0.1, max_attempts = 1,
                           claim_after = 1, log = function() end,
                           on_status = function(ev) attempts[ev.sn] = ev.attempt end }
    local t0 = B.now()
    w:run(function() return w.handled + w.dead >= n or B.now() - t0 > 10 end)
    w.client:close()
    return attempts, w.dead
  end

  -- its read blocks (XREADGROUP ... BLOCK 30); an entry comes just after
  -- the Ctrl-C, before the read's wait looks at it (a quarter second): the
  -- server gives it to the read the worker then drops
  for k, delay in ipairs { 0, 0.1 } do
  it("an entry given to the read that the Ctrl-C dropped is not counted: the next worker runs it (" .. delay .. ")", function()
    local stream = "blocked" .. k
    local proc = B.kinot("worker --handler noting_handler --stream " .. stream .. " --block 30 --max-attempts 1 " ..
      "--claim-after 1", string.format("LUA_PATH='%s/?.lua;;' KINOT_REDIS_URL='%s' KINOT_SPEC_HANDLED='%s/handled'",
      dir, r.url, dir))
    local c = r.client()
    finally(function() c:close() proc.kill() end)
    assert.truthy(H.wait_for(function()
      return tostring(c:call("CLIENT", "LIST")):find("flags=b [^\n]*cmd=xreadgroup")
    end, 15), proc.err())
    proc.signal("INT")
    require("kinot.core").sleep(delay)
    H.put_statuses(r.url, stream, { 7 + k }, SECRET)
    assert.are.equal(130, proc.wait(10), proc.err())
    assert.matches("\nkinot: interrupted\n$", proc.err())
    assert.is_nil(H.read(dir .. "/handled"), "ran after the Ctrl-C")
    local attempts, dead = next_worker(stream, 1)
    assert.are.same({ [7 + k] = 1 }, attempts)
    assert.are.equal(0, dead)
    assert.are.equal(0, c:call("XLEN", stream .. ":dead"))
  end)
  end
  -- Redis hangs (SIGSTOP) as the Ctrl-C comes, during a handler's wait:
  -- the worker must still stop at once (its give-back waits a quarter
  -- second), and what it sent before closing runs once Redis goes on
  it("stops at once while Redis hangs; its give-back runs when Redis goes on: none dead, each run once", function()
    local stream = "frozen"
    H.put_statuses(r.url, stream, { 31, 32, 33 }, SECRET)
    H.write(dir .. "/waiting_handler.lua", [[
      local core = require "kinot.core"
      return function(ev)
        local out = assert(io.open(os.getenv("KINOT_SPEC_HANDLED"), "a"))
        out:write(tostring(ev.sn), "\n")
        out:close()
        core.sleep(30)
      end
    ]])
    local handled = dir .. "/frozen-started"
    local proc = B.kinot("worker --handler waiting_handler --stream " .. stream .. " --block 1 --max-attempts 1 " ..
      "--claim-after 1", string.format("LUA_PATH='%s/?.lua;;' KINOT_REDIS_URL='%s' KINOT_SPEC_HANDLED='%s'",
      dir, r.url, handled))
    finally(function()
      r.resume()
      proc.kill()
    end)
    assert.truthy(H.wait_for(function() return H.read(handled) end, 15), proc.err())
    r.pause()
    local t0 = B.now()
    proc.signal("INT")
    assert.are.equal(130, proc.wait(10), proc.err())
    local took = B.now() - t0
    assert.is_true(took < 2, "took " .. took .. " s")
    assert.matches("\nkinot: interrupted\n$", proc.err())
    r.resume()
    local attempts, dead = next_worker(stream, 3)
    assert.are.same({ [31] = 1, [32] = 1, [33] = 1 }, attempts)
    assert.are.equal(0, dead)
  end)
  -- Redis hangs just as the first entry's handler returns, and the Ctrl-C
  -- comes: the batch's acknowledgement waits a quarter second and fails;
  -- the give-back must go all the same (sent, it runs once Redis goes on)
  it("gives the rest back even when the acknowledgement before it failed (Redis hung): none dead", function()
    local stream = "hung-ack"
    H.put_statuses(r.url, stream, { 61, 62, 63 }, SECRET)
    H.write(dir .. "/hanging_handler.lua", [[
      return function(ev)
        local out = assert(io.open(os.getenv("KINOT_SPEC_HANDLED"), "a"))
        out:write(tostring(ev.sn), "\n")
        out:close()
        local pid = assert(io.open("/proc/self/stat")):read("*n")
        io.popen("kill -STOP " .. os.getenv("KINOT_SPEC_REDIS_PID") .. "; kill -INT " .. pid):close()
        return true
      end
    ]])
    local handled = dir .. "/hung-ack-handled"
    local proc = B.kinot("worker --handler hanging_handler --stream " .. stream .. " --block 1 " ..
      "--max-attempts 1 --claim-after 1", string.format("LUA_PATH='%s/?.lua;;' KINOT_REDIS_URL='%s' " ..
      "KINOT_SPEC_HANDLED='%s' KINOT_SPEC_REDIS_PID=%d", dir, r.url, handled, r.pid()))
    finally(function()
      r.resume()
      proc.kill()
    end)
    assert.are.equal(130, proc.wait(10), proc.err())
    assert.matches("\nkinot: interrupted\n$", proc.err())
    r.resume()
    assert.are.equal("61\n", H.read(handled))
    local attempts, dead = next_worker(stream, 2)
    assert.are.same({ [62] = 1, [63] = 1 }, attempts)
    assert.are.equal(0, dead)
  end)

  -- the handler returned (its work done) and the Ctrl-C came before the
  -- batch's acknowledgement: that entry is acknowledged, the rest given back
  it("acknowledges an entry whose handler returned as the Ctrl-C came; the rest given back, run once", function()
    local stream = "between"
    H.put_statuses(r.url, stream, { 41, 42, 43 }, SECRET)
    H.write(dir .. "/self_interrupting_handler.lua", [[
      return function(ev)
        local out = assert(io.open(os.getenv("KINOT_SPEC_HANDLED"), "a"))
        out:write(tostring(ev.sn), "\n")
        out:close()
        local pid = assert(io.open("/proc/self/stat")):read("*n")
        io.popen("kill -INT " .. pid):close() -- (not os.execute: system() ignores SIGINT while it waits)
        return true
      end
    ]])
    local handled = dir .. "/between-handled"
    local proc = B.kinot("worker --handler self_interrupting_handler --stream " .. stream .. " --block 1 " ..
      "--max-attempts 1 --claim-after 1", string.format("LUA_PATH='%s/?.lua;;' KINOT_REDIS_URL='%s' " ..
      "KINOT_SPEC_HANDLED='%s'", dir, r.url, handled))
    finally(proc.kill)
    assert.are.equal(130, proc.wait(10), proc.err())
    assert.matches("\nkinot: interrupted\n$", proc.err())
    assert.are.equal("41\n", H.read(handled))
    local attempts, dead = next_worker(stream, 2)
    assert.are.same({ [42] = 1, [43] = 1 }, attempts)
    assert.are.equal(0, dead)
  end)

  -- its blocked read's connection killed by the server (CLIENT KILL) while
  -- the read waits in quarter-second slices: the read goes again on a
  -- fresh connection (nothing of it came back), the worker runs what comes
  -- next, and a Ctrl-C still stops it at once
  it("reads again after CLIENT KILL cut its blocked read, runs what comes, then stops at once", function()
    local stream = "killed"
    local handled = dir .. "/killed-handled"
    local proc = B.kinot("worker --handler noting_handler --stream " .. stream .. " --block 30",
      string.format("LUA_PATH='%s/?.lua;;' KINOT_REDIS_URL='%s' KINOT_SPEC_HANDLED='%s'", dir, r.url, handled))
    local c = r.client()
    finally(function() c:close() proc.kill() end)
    local function reader_addr()
      return tostring(c:call("CLIENT", "LIST")):match("addr=(%S+) [^\n]*flags=b [^\n]*cmd=xreadgroup")
    end
    local addr = H.wait_for(reader_addr, 15)
    assert.truthy(addr, proc.err())
    assert.are.equal(1, c:call("CLIENT", "KILL", "ADDR", addr))
    local again = H.wait_for(function()
      local a = reader_addr()
      return a and a ~= addr and a
    end, 5)
    assert.truthy(again, "no read again: " .. proc.err())
    H.put_statuses(r.url, stream, { 51 }, SECRET)
    assert.truthy(H.wait_for(function() return H.read(handled) end, 5), proc.err())
    assert.truthy(H.wait_for(reader_addr, 5))
    local t0 = B.now()
    proc.signal("INT")
    assert.are.equal(130, proc.wait(10), proc.err())
    assert.is_true(B.now() - t0 < 2)
    assert.are.equal("51\n", H.read(handled))
    local err = proc.err()
    assert.matches("\nkinot: interrupted\n$", err)
    assert.are.equal(2, select(2, err:gsub("\n", "")), err)
    assert.are.same({}, c:call("XPENDING", stream, worker.GROUP, "-", "+", 10))
  end)
  -- Redis down: each failed step waits before the next, doubling up to
  -- 2 s; a Ctrl-C in that wait must not sit it out
  it("stops at once while it waits to try a Redis that is down again", function()
    local port = require("kinot.sim.launcher").free_port() -- (nothing listens there)
    local proc = B.kinot("worker --handler noting_handler --stream down --block 1",
      string.format("LUA_PATH='%s/?.lua;;' KINOT_REDIS_URL='redis://127.0.0.1:%d' KINOT_SPEC_HANDLED='%s/down'",
      dir, port, dir))
    finally(proc.kill)
    -- its waits: 0.05, 0.1, 0.2 ... 1.6, then 2 s each
    local function failures() return select(2, proc.err():gsub("refused", "")) end
    assert.truthy(H.wait_for(function() return failures() >= 8 end, 15), proc.err())
    -- the Ctrl-C just as a 2 s wait begins
    local n = failures()
    assert.truthy(H.wait_for(function() return failures() > n end, 5), proc.err())
    local t0 = B.now()
    proc.signal("INT")
    assert.are.equal(130, proc.wait(10), proc.err())
    local took = B.now() - t0
    assert.is_true(took < 0.5, "took " .. took .. " s")
    assert.matches("\nkinot: interrupted\n$", proc.err())
  end)
end)

-- Behind Sentinel, the master hung (SIGSTOP, no failover yet): after its
-- read timed out, each call asks the Sentinels again and confirms the
-- master they name (ROLE), which hangs; a Ctrl-C then must not be taken
-- for that master's failure, asked about again and again until the call's
-- deadline
describe("Ctrl-C in kinot worker behind Sentinel, its master hung #cli #redis #slow", function()
  it("stops at once: exit 130, one line", function()
    local S = require "sentinel_cluster"
    local k = S.start { password = "pw", down_after = 600000, replicas = 1 }
    local dir = H.tmpdir("ctrlc-sentinel")
    H.write(dir .. "/nothing_handler.lua", "return function() end")
    local proc = B.kinot("worker --handler nothing_handler --stream s --block 1",
      string.format("LUA_PATH='%s/?.lua;;' KINOT_REDIS_URL='%s'", dir, k.url))
    finally(function()
      k.master().resume()
      proc.kill()
      k.stop()
      os.execute("rm -rf " .. dir)
    end)
    local c = k.master().client()
    assert.truthy(H.wait_for(function() return tostring(c:call("CLIENT", "LIST")):find("cmd=xreadgroup") end, 15),
      proc.err())
    c:close()
    k.master().pause()
    -- its read timed out (--block 1: a 3 s call): it is asking the Sentinels again
    assert.truthy(H.wait_for(function() return proc.err():find("XREADGROUP read failed: timeout", 1, true) end, 10),
      proc.err())
    require("kinot.core").sleep(0.5)
    local t0 = B.now()
    proc.signal("INT")
    assert.are.equal(130, proc.wait(10), proc.err())
    local took = B.now() - t0
    assert.is_true(took < 1, "took " .. took .. " s")
    assert.matches("\nkinot: interrupted\n$", proc.err())
  end)
end)
