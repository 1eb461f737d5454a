-- The pid file of a server a `--daemon` starts (`kinot sim`, `kinot serve`):
-- one server per pid file.  It records the server's prefix (whose
-- nginx.pid and nginx.conf give its pid and port).  A live one is refused,
-- a stale one (its nginx gone, or its pid now another program's:
-- launcher.running tells) is taken over, and only a prefix the launcher
-- made (holding the server's own configuration file, not whatever path a
-- pid file names: /tmp is everyone's) is ever removed.
--   local pidfile = require("kinot.cli.pidfile").new { noun = "simulator", command = "kinot sim",
--                                                     marker = "sim_config.lua", path = "/open/lora/v1" }
local errors = require "kinot.errors"
local launcher = require "kinot.sim.launcher"
local read = require("kinot.file").read

local M = {}

local function usage(msg) errors.misuse(msg) end

local sh_ok = launcher.run

local P = {}
P.__index = P

--- new{noun, command, marker, path} -> the pid file rules of one kind of server
function M.new(what)
  return setmetatable({ noun = what.noun, command = what.command, marker = what.marker, path = what.path or "" }, P)
end

--- remove_prefix(prefix): rm -rf of a prefix the launcher made, nothing else
function P:remove_prefix(prefix)
  if prefix and prefix ~= "" and read(prefix .. "/" .. self.marker) and read(prefix .. "/nginx.conf") then
    os.execute("rm -rf " .. launcher.sh_quote(prefix))
  end
end

function P:running_message(pid_file, pid, url)
  return "a " .. self.noun .. " is already running for the pid file " .. pid_file .. ": pid " .. pid .. ", " ..
    (url and (url .. self.path) or "port unknown") .. "; stop it first (" .. self.command .. " stop --pid-file " ..
    pid_file .. ") or give another --pid-file"
end

--- check(pid_file, out) -> what a stale pid file held | nil: before
-- starting; a live pid file is refused (misuse)
function P:check(pid_file, out)
  local content = read(pid_file)
  if not content then return nil end
  local prefix = content:match("^[^\n]*")
  local pid, url_or_why = launcher.running(prefix)
  if pid then usage(self:running_message(pid_file, pid, url_or_why)) end
  out.err:write("kinot: taking over the stale pid file ", pid_file, prefix == "" and
    (" (it records no " .. self.noun .. ")\n") or
    (" (the " .. self.noun .. " it records, " .. prefix .. ", is not running: " .. url_or_why .. ")\n"))
  self:remove_prefix(prefix)
  return content
end

--- record(pid_file, stale, prefix): after starting; unless another kinot
-- recorded its own meanwhile: then this one is stopped and the other named
function P:record(pid_file, stale, prefix)
  if stale and read(pid_file) == stale then os.remove(pid_file) end
  -- created only when absent (noclobber: O_EXCL): of two started at once, one is recorded
  if sh_ok("{ set -C; printf '%s\\n' " .. launcher.sh_quote(prefix) .. " > " .. launcher.sh_quote(pid_file) ..
           "; } 2>/dev/null") then
    return
  end
  launcher.stop(prefix)
  self:remove_prefix(prefix)
  local other = read(pid_file)
  if not other then
    usage("cannot create the pid file " .. pid_file .. " (is its directory there and writable?); the " .. self.noun ..
      " is stopped")
  end
  local pid, url = launcher.running(other:match("^[^\n]*"))
  if pid then usage(self:running_message(pid_file, pid, url)) end
  usage("the pid file " .. pid_file .. " was written by another kinot while this " .. self.noun .. " started; " ..
    "this one is stopped (" .. self.command .. " stop --pid-file " .. pid_file .. " first, or give another --pid-file)")
end

--- stop(pid_file, out) -> pid | nil (it was not running: said on stderr)
function P:stop(pid_file, out)
  local content = read(pid_file)
  if not content then usage("no " .. self.noun .. " recorded in " .. pid_file) end
  local prefix = content:match("^[^\n]*")
  local pid, why = launcher.running(prefix)
  os.remove(pid_file)
  if not pid then
    -- nothing signalled: a pid the system gave to another program is not ours to kill
    out.err:write("kinot: the ", self.noun, " recorded in ", pid_file, " is not running (", why, "); pid file removed\n")
    self:remove_prefix(prefix)
    return nil
  end
  launcher.stop(prefix)
  self:remove_prefix(prefix)
  return pid
end

return M
