-- kinot.callback.worker's acknowledgements sent with its next read (one
-- round trip a batch): attacked where they wait, against a real
-- redis-server started here.  A lost acknowledgement may only run an
-- event again (at least once), never lose one: the worker SIGKILLed with
-- them unsent, its connection killed before they went and while the read
-- that carried them blocked, the server stopped past the call's timeout.
-- (The moment to strike is read from the worker's `unacked` list, its
-- acknowledgements waiting: the spec says so, it is not an API.)
local core = require "kinot.core"
local worker = require "kinot.callback.worker"
local R = require "redis_server"
local H = require "helpers"

local SECRET = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"

-- stores the status callbacks of locks first .. last in stream, as the handler's inbox does
local function put(r, stream, first, last)
  local sns = {}
  for sn = first, last do sns[#sns + 1] = sn end
  H.put_statuses(r.url, stream, sns, SECRET)
end

local function pending(c, stream)
  return tonumber(c:call("XPENDING", stream, "kinot")[1])
end

-- every sn of first .. last run at least once by `runs` (sn -> times)
local function every_run(runs, first, last)
  local missing = {}
  for sn = first, last do
    if not runs[sn] then missing[#missing + 1] = sn end
  end
  return missing
end

describe("the worker's acknowledgements sent with its next read #redis", function()
  local r, c
  before_each(function()
    r = R.start {}
    c = r.client()
  end)
  after_each(function()
    if c then c:close() end
    r.stop()
  end)

  it("killed (SIGKILL) with a batch's acknowledgements unsent: that batch runs again, every event at least once",
    function()
      put(r, "s", 1, 30)
      local dir = H.tmpdir("ackkill")
      local script = dir .. "/w.lua"
      local f = assert(io.open(script, "w"))
      f:write(string.format([[
package.path = %q .. "/lua/?.lua;" .. %q .. "/lua/?/init.lua;" .. package.path
package.cpath = %q .. "/build/" .. (rawget(_G, "jit") and "5.1" or "5.4") .. "/?.so;" .. package.cpath
local worker = require "kinot.callback.worker"
local log = assert(io.open(%q, "a"))
local p = io.popen("echo $PPID")
local pid = p:read("*l")
p:close()
local w = worker.new { redis = %q, stream = "s", consumer = "a", block = 0.1, count = 10,
  on_status = function(ev) log:write(ev.sn, "\n") log:flush() end }
w:run(function()
  -- a batch handled, its acknowledgements waiting for the next read: killed here
  if w.unacked and #w.unacked > 0 then os.execute("kill -KILL " .. pid) end
  return false
end)
]], H.root, H.root, H.root, dir .. "/ran", r.url))
      f:close()
      local lua = H.runtime == "luajit" and "luajit" or "lua5.4"
      os.execute(lua .. " " .. script .. " >" .. dir .. "/out 2>&1")
      local runs = {}
      local first = 0
      for sn in (H.read(dir .. "/ran") or ""):gmatch("%d+") do
        runs[tonumber(sn)] = 1
        first = first + 1
      end
      -- one batch of 10 ran, and none of it was acknowledged: the kill came between
      assert.are.equal(10, first, H.read(dir .. "/out"))
      assert.are.equal(10, pending(c, "s"))
      -- another worker claims them once they idle past claim_after
      local again = 0
      local b = worker.new { redis = r.url, stream = "s", consumer = "b", block = 0.1, claim_after = 0.3,
        on_status = function(ev)
          if runs[ev.sn] then again = again + 1 end
          runs[ev.sn] = (runs[ev.sn] or 0) + 1
        end }
      local t0 = core.monotonic()
      b:run(function()
        return (#every_run(runs, 1, 30) == 0 and pending(c, "s") == 0 and b.unacked == nil) or
          core.monotonic() - t0 > 10
      end)
      assert.are.same({}, every_run(runs, 1, 30))
      assert.are.equal(10, again) -- the unacknowledged batch, run again
      assert.are.equal(0, pending(c, "s"))
      assert.are.equal(0, tonumber(c:call("XLEN", "s")))
    end)

  it("its connection killed (CLIENT KILL) before they went: sent on a fresh one, nothing run twice", function()
    put(r, "s", 1, 40)
    local runs, killed = {}, 0
    local w = worker.new { redis = r.url, stream = "s", consumer = "a", block = 0.1, count = 10,
                           log = function() end,
                           on_status = function(ev) runs[ev.sn] = (runs[ev.sn] or 0) + 1 end }
    local t0 = core.monotonic()
    w:run(function()
      if w.unacked and killed < 3 then
        killed = killed + 1
        -- every connection but this spec's own (SKIPME): the worker's kept one
        assert(tonumber(c:call("CLIENT", "KILL", "TYPE", "normal")) >= 1)
      end
      return (#every_run(runs, 1, 40) == 0 and w.unacked == nil) or core.monotonic() - t0 > 10
    end)
    assert.are.equal(3, killed)
    assert.are.same({}, every_run(runs, 1, 40))
    for sn = 1, 40 do assert.are.equal(1, runs[sn], "sn " .. sn .. " ran " .. runs[sn] .. " times") end
    assert.are.equal(0, pending(c, "s"))
    assert.are.equal(0, tonumber(c:call("XLEN", "s")))
  end)

  it("its connection killed while the read that carried them blocks: sent again, nothing lost", function()
    put(r, "s", 1, 10)
    local runs, killed = {}, false
    local errs = {}
    local w = worker.new { redis = r.url, stream = "s", consumer = "a", block = 1, count = 10,
                           log = function(level, msg) if level == "error" then errs[#errs + 1] = msg end end,
                           on_status = function(ev) runs[ev.sn] = (runs[ev.sn] or 0) + 1 end }
    local t0 = core.monotonic()
    local killer
    w:run(function()
      if w.unacked and not killed then
        killed = true
        -- the read goes with them and blocks (nothing more is stored): killed in it
        killer = io.popen("sleep 0.3; redis-cli -p " .. r.port .. " CLIENT KILL TYPE normal")
      end
      return (killed and #errs > 0 and w.unacked == nil) or core.monotonic() - t0 > 10
    end)
    if killer then killer:close() end
    assert.is_true(killed)
    assert.is_true(#errs > 0, "the read was not cut") -- the blocked read failed
    put(r, "s", 11, 20)
    t0 = core.monotonic()
    w:run(function() return (#every_run(runs, 1, 20) == 0 and w.unacked == nil) or core.monotonic() - t0 > 10 end)
    assert.are.same({}, every_run(runs, 1, 20))
    for sn = 1, 20 do assert.are.equal(1, runs[sn]) end
    assert.are.equal(0, pending(c, "s"))
    assert.are.equal(0, tonumber(c:call("XLEN", "s")))
  end)

  it("the server stopped (SIGSTOP) past the call's timeout with them waiting: every event runs at least once",
    function()
      put(r, "s", 1, 30)
      local runs, stopped = {}, false
      local w = worker.new { redis = r.url, stream = "s", consumer = "a", block = 0.1, count = 10, timeout = 0.5,
                             claim_after = 0.5, log = function() end,
                             on_status = function(ev) runs[ev.sn] = (runs[ev.sn] or 0) + 1 end }
      local t0 = core.monotonic()
      local resumer
      w:run(function()
        if w.unacked and not stopped then
          stopped = true
          r.pause()
          -- past the read's whole deadline (block + 2 s)
          resumer = io.popen("sleep 3; kill -CONT " .. r.pid())
        end
        if stopped and core.monotonic() - t0 < 3.5 then return false end
        return (#every_run(runs, 1, 30) == 0 and pending(c, "s") == 0 and w.unacked == nil) or
          core.monotonic() - t0 > 15
      end)
      if resumer then resumer:close() end
      r.resume()
      assert.is_true(stopped)
      assert.are.same({}, every_run(runs, 1, 30))
      assert.are.equal(0, pending(c, "s"))
      assert.are.equal(0, tonumber(c:call("XLEN", "s")))
    end)

  it("step() still acknowledges what it ran before it returns; run() what it ran before it stops", function()
    put(r, "s", 1, 5)
    local n = 0
    local w = worker.new { redis = r.url, stream = "s", consumer = "a", block = 0.1,
                           on_status = function() n = n + 1 end }
    assert.are.equal(5, w:step())
    assert.is_nil(w.unacked)
    assert.are.equal(0, pending(c, "s"))
    put(r, "s", 6, 8)
    w:run(function() return n == 8 end)
    assert.is_nil(w.unacked)
    assert.are.equal(0, pending(c, "s"))
    assert.are.equal(0, tonumber(c:call("XLEN", "s")))
  end)
end)
