-- A real redis-server for the specs: on a free 127.0.0.1 port, in its own
-- temporary directory, stopped by the spec that started it (also when the
-- spec fails: call stop() in teardown / finally).  The system's service on
-- 6379, if any, is never touched.
--   local R = require "redis_server"    (spec/support is on the path)
--   local r = R.start { aof = true, password = "pw", conf = { "replicaof 127.0.0.1 6390" } }
--   r.url, r.port, r.client(), r.kill(), r.restart(), r.stop()
local launcher = require "kinot.sim.launcher"
local kredis = require "kinot.redis"
local core = require "kinot.core"

local M = {}

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

local function read(p)
  local f = io.open(p)
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function M.start(o)
  o = o or {}
  local port = o.port or launcher.free_port()
  local p = io.popen("mktemp -d /tmp/kinot-redis.XXXXXX")
  local dir = p:read("*l")
  p:close()
  local conf = {
    "bind 127.0.0.1", "port " .. port, "dir " .. dir, "daemonize yes", "pidfile " .. dir .. "/redis.pid",
    "logfile " .. dir .. "/redis.log", "save \"\"", "protected-mode yes",
  }
  if o.aof then
    conf[#conf + 1] = "appendonly yes"
    conf[#conf + 1] = "appendfsync always"
  end
  if o.password then conf[#conf + 1] = "requirepass " .. o.password end
  -- o.conf: more lines (a replica's replicaof, masterauth ...; appendfsync everysec)
  for _, l in ipairs(o.conf or {}) do conf[#conf + 1] = l end
  local f = assert(io.open(dir .. "/redis.conf", "w"))
  f:write(table.concat(conf, "\n"), "\n")
  f:close()

  local r = { port = port, dir = dir }
  r.url = "redis://" .. (o.password and (":" .. o.password .. "@") or "") .. "127.0.0.1:" .. port .. "/" .. (o.db or 0)
  function r.pid() return tonumber((read(dir .. "/redis.pid") or ""):match("%d+")) end
  -- alive: not gone and not a zombie waiting for its reaper (a daemon's
  -- parent is PID 1, which may reap late)
  local function alive(pid)
    local stat = read("/proc/" .. pid .. "/stat")
    return stat ~= nil and stat:match("^%d+ %b() (%a)") ~= "Z"
  end
  function r.running()
    local pid = r.pid()
    return pid ~= nil and alive(pid)
  end
  function r.up()
    os.remove(dir .. "/redis.pid")
    assert(sh("redis-server " .. dir .. "/redis.conf"), "redis-server failed to start: see " .. dir .. "/redis.log")
    launcher.wait_for_port(port)
    -- accepting connections is not loaded: wait for PING to answer PONG
    local c = kredis.new(r.url, { timeout = 1 })
    local deadline = core.monotonic() + 10
    while core.monotonic() < deadline do
      if c:call("PING") == "PONG" then break end
      core.sleep(0.05)
    end
    c:close()
  end
  local function wait_gone(pid)
    local deadline = core.monotonic() + 10
    while pid and core.monotonic() < deadline and alive(pid) do core.sleep(0.02) end
  end
  --- down(signal): stops it (SIGTERM: a clean shutdown; KILL: no goodbye)
  function r.down(signal)
    local pid = r.pid()
    if pid then
      sh("kill -" .. (signal or "TERM") .. " " .. pid .. " 2>/dev/null")
      wait_gone(pid)
    end
    os.remove(dir .. "/redis.pid")
  end
  function r.kill() r.down("KILL") end
  function r.restart(signal)
    r.down(signal)
    r.up()
  end
  function r.stop()
    r.down("KILL")
    sh("rm -rf " .. dir)
  end
  --- client() -> a kinot.redis client (LuaSocket, this process)
  function r.client(opts) return kredis.new(r.url, opts) end
  r.up()
  return r
end

return M
