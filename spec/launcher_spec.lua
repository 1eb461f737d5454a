-- The launcher's wait for a stopped nginx: a daemon's master, once it has
-- exited, is a zombie until its parent (init, or whatever reaps orphans)
-- collects it, and some inits reap only every second or two.  The zombie
-- holds nothing (its sockets are closed), so it counts as gone; `kill -0`
-- alone would call it running, and every stop would wait for the reaper.
local launcher = require "kinot.sim.launcher"

describe("launcher: is a process still running #unit", function()
  it("a zombie (exited, not yet reaped) is not running; a live process is", function()
    -- a child exits soon; its parent has become sleep, which never reaps it
    local p = io.popen("sh -c 'sleep 0.2 & echo $!; echo $$; exec sleep 5' & ")
    local zombie, parent = tonumber(p:read("*l")), tonumber(p:read("*l"))
    finally(function()
      os.execute("kill " .. parent .. " 2>/dev/null")
      p:close()
    end)
    -- (until the child has exited: a moment)
    local st
    for _ = 1, 100 do
      local f = io.open("/proc/" .. zombie .. "/stat")
      st = f and f:read("*a"):match("^%d+ %b() (%a)")
      if f then f:close() end
      if st == "Z" then break end
      os.execute("sleep 0.02")
    end
    assert.are.equal("Z", st)
    local r = os.execute("kill -0 " .. zombie .. " 2>/dev/null")
    assert.is_true(r == true or r == 0, "kill -0 should still see the zombie")
    assert.is_false(launcher.alive(zombie))
    assert.is_true(launcher.alive(parent))
  end)

  it("a process that is gone is not running", function()
    local p = io.popen("sh -c 'echo $$'")
    local pid = tonumber(p:read("*l"))
    p:close()
    assert.is_false(launcher.alive(pid))
  end)
end)
