-- `kinot` as a process in the background, to be signalled as a person at a
-- terminal would (Ctrl-C is SIGINT): its pid, its stdout and stderr, and
-- its exit status once it ends.  The caller stops it, even when its test
-- fails: `finally(proc.kill)`.
local core = require "kinot.core"
local H = require "helpers"

local M = {}

--- kinot(args[, env[, feed]]) -> proc { pid, signal(name), wait(seconds) -> rc | nil,
-- out(), err(), kill() }: this checkout's bin/kinot under the runtime of the
-- run, from the root; env "VAR=value ..." before it; feed: a shell command
-- whose output is its stdin (else /dev/null).  (A shell's `&` starts it with
-- SIGINT ignored; kinot, as lua.c and luajit.c, sets its own.)
function M.kinot(args, env, feed)
  local p = io.popen("mktemp -d /tmp/kinot-bg.XXXXXX")
  local dir = p:read("*l")
  p:close()
  local lua = H.runtime == "luajit" and "luajit" or "lua5.4"
  os.execute(string.format("cd %s && { %s %s %s bin/kinot %s >%s/out 2>%s/err %s & echo $! >%s/pid; " ..
    "wait $!; echo $? >%s/rc; } >/dev/null 2>&1 &", H.root, feed and ("{ " .. feed .. "; } |") or "", env or "", lua,
    args, dir, dir, feed and "" or "</dev/null", dir, dir))
  local proc = { dir = dir }
  proc.pid = H.wait_for(function()
    local s = H.read(dir .. "/pid")
    return s and tonumber(s:match("%d+"))
  end, 5)
  assert(proc.pid, "kinot did not start")
  function proc.signal(name) os.execute("kill -" .. name .. " " .. proc.pid .. " 2>/dev/null") end
  --- the exit status (the shell's: 128 + N when a signal N ended it), or nil
  -- if it still runs after `seconds`
  function proc.wait(seconds)
    return H.wait_for(function()
      local s = H.read(dir .. "/rc")
      return s and tonumber(s:match("%d+"))
    end, seconds or 10)
  end
  function proc.out() return H.read(dir .. "/out") or "" end
  function proc.err() return H.read(dir .. "/err") or "" end
  function proc.kill()
    -- TERM first: `kinot sim` / `kinot serve` in the foreground stop their nginx on it
    if not H.read(dir .. "/rc") then
      proc.signal("TERM")
      if not proc.wait(10) then
        proc.signal("KILL")
        proc.wait(5)
      end
    end
    os.execute("rm -rf " .. dir)
  end
  return proc
end

--- the time now, seconds (to tell a prompt stop from a transfer run out)
M.now = core.monotonic

return M
