-- A real Redis behind Sentinel for the specs: Debian's redis-server (a
-- master and `replicas` replicas) and redis-sentinel (`sentinels` of them,
-- quorum 2), every one on a free 127.0.0.1 port in its own temporary
-- directory, with short failover timings.  The spec that starts it stops
-- it (stop() kills every process it started, also when the spec failed).
--   local S = require "sentinel_cluster"
--   local k = S.start { password = "pw", sentinel_password = "spw" }
--   k.url ("redis+sentinel://..."), k.master() (its redis_server handle), k.servers, k.sentinels,
--   k.wait_master(other_than_port, seconds) -> the new master's port, k.stop()
local R = require "redis_server"
local launcher = require "kinot.sim.launcher"
local kredis = require "kinot.redis"
local core = require "kinot.core"
local H = require "helpers"

local M = {}

M.NAME = "kinotmaster"

local sh, read = H.execute, H.read

local function escape(s)
  return (s:gsub("[^%w%-._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

function M.start(o)
  o = o or {}
  local k = { servers = {}, sentinels = {} }
  -- (Redis 7 waits 5 s before a diskless full sync, for more replicas to join)
  -- (every server, the master too: demoted, it must sync with the new one)
  local common = { "repl-diskless-sync-delay 0", o.password and ("masterauth " .. o.password) or nil }
  for _, l in ipairs(o.conf or {}) do common[#common + 1] = l end
  local ok, err = pcall(function()
    local master = R.start { password = o.password, conf = common }
    k.servers[1] = master
    for i = 1, o.replicas or 2 do
      local conf = { "replicaof 127.0.0.1 " .. master.port }
      for _, l in ipairs(common) do conf[#conf + 1] = l end
      k.servers[i + 1] = R.start { password = o.password, conf = conf }
    end
    for i = 1, o.sentinels or 3 do
      local port = launcher.free_port()
      local dir = H.tmpdir("sentinel")
      local conf = {
        "bind 127.0.0.1", "port " .. port, "dir " .. dir, "daemonize yes", "pidfile " .. dir .. "/sentinel.pid",
        "logfile " .. dir .. "/sentinel.log",
        "sentinel monitor " .. M.NAME .. " 127.0.0.1 " .. master.port .. " 2",
        "sentinel down-after-milliseconds " .. M.NAME .. " " .. (o.down_after or 400),
        "sentinel failover-timeout " .. M.NAME .. " " .. (o.failover_timeout or 2000),
        "sentinel parallel-syncs " .. M.NAME .. " 2",
      }
      if o.password then conf[#conf + 1] = "sentinel auth-pass " .. M.NAME .. " " .. o.password end
      if o.sentinel_password then
        conf[#conf + 1] = "requirepass " .. o.sentinel_password
        conf[#conf + 1] = "sentinel sentinel-pass " .. o.sentinel_password -- to each other
      end
      local f = assert(io.open(dir .. "/sentinel.conf", "w"))
      f:write(table.concat(conf, "\n"), "\n")
      f:close()
      local s = { port = port, dir = dir }
      function s.pid() return tonumber((read(dir .. "/sentinel.pid") or ""):match("%d+")) end
      k.sentinels[i] = s
      assert(sh("redis-sentinel " .. dir .. "/sentinel.conf"), "redis-sentinel failed to start: see " .. dir .. "/sentinel.log")
      launcher.wait_for_port(port)
    end
  end)
  local hosts = {}
  for _, s in ipairs(k.sentinels) do hosts[#hosts + 1] = "127.0.0.1:" .. s.port end
  k.url = "redis+sentinel://" .. (o.password and (":" .. escape(o.password) .. "@") or "") .. table.concat(hosts, ",") ..
    "/" .. M.NAME .. "/" .. (o.db or 0) ..
    (o.sentinel_password and ("?sentinel_password=" .. escape(o.sentinel_password)) or "")

  --- stop(): every process this started, and their directories
  function k.stop()
    for _, s in ipairs(k.sentinels) do
      local pid = s.pid()
      if pid then sh("kill -KILL " .. pid .. " 2>/dev/null") end
      sh("rm -rf " .. s.dir)
    end
    for _, r in ipairs(k.servers) do r.stop() end
  end
  if not ok then
    k.stop()
    error(err, 0)
  end

  -- a Sentinel's own client (the Sentinel password, if any)
  function k.sentinel_client(i)
    return kredis.new("redis://" .. (o.sentinel_password and (":" .. escape(o.sentinel_password) .. "@") or "") ..
      "127.0.0.1:" .. k.sentinels[i or 1].port, { timeout = 2 })
  end
  --- master_port(i) -> the port Sentinel i names for the master now
  function k.master_port(i)
    local c = k.sentinel_client(i)
    local v = c:call("SENTINEL", "get-master-addr-by-name", M.NAME)
    c:close()
    return type(v) == "table" and tonumber(v[2]) or nil
  end
  --- server(port) -> the redis_server handle on that port
  function k.server(port)
    for _, r in ipairs(k.servers) do if r.port == port then return r end end
  end
  function k.master() return k.server(k.master_port()) end
  --- replicas() -> the redis_server handles of every server but the master now
  function k.replicas()
    local master, out = k.master_port(), {}
    for _, r in ipairs(k.servers) do if r.port ~= master then out[#out + 1] = r end end
    return out
  end
  --- monitor(i, port): Sentinel i told that the master (M.NAME) is the
  -- Redis on port, quorum 1 (a Sentinel misconfigured, or in an
  -- attacker's hands: SENTINEL REMOVE, then MONITOR)
  function k.monitor(i, port)
    local sc = k.sentinel_client(i)
    local removed = sc:call("SENTINEL", "REMOVE", M.NAME)
    local monitored = sc:call("SENTINEL", "MONITOR", M.NAME, "127.0.0.1", port, 1)
    sc:close()
    assert(removed == "OK" and monitored == "OK", "SENTINEL REMOVE, MONITOR: " .. tostring(removed) .. ", " ..
      tostring(monitored))
  end
  --- wait_ready(seconds): every Sentinel knows both replicas and the other Sentinels (a failover needs them)
  function k.wait_ready(seconds)
    local deadline = core.monotonic() + (seconds or 10)
    while core.monotonic() < deadline do
      local ready = true
      for i = 1, #k.sentinels do
        local c = k.sentinel_client(i)
        local m = c:call("SENTINEL", "MASTER", M.NAME)
        c:close()
        local f = {}
        if type(m) == "table" then for j = 1, #m - 1, 2 do f[m[j]] = m[j + 1] end end
        if tonumber(f["num-slaves"]) ~= #k.servers - 1 or tonumber(f["num-other-sentinels"]) ~= #k.sentinels - 1 then
          ready = false
        end
      end
      -- and the master has every replica online (synced)
      if ready then ready = k.master().replicas_online() == #k.servers - 1 end
      if ready then return true end
      core.sleep(0.1)
    end
    error("the Sentinels did not see every replica and each other within " .. (seconds or 10) .. " s")
  end
  --- wait_master(old_port, seconds) -> the port of a new master every Sentinel names, and which says ROLE master
  function k.wait_master(old, seconds)
    local deadline = core.monotonic() + (seconds or 15)
    while core.monotonic() < deadline do
      local port = k.master_port(1)
      local same = port and port ~= old
      for i = 2, #k.sentinels do if same and k.master_port(i) ~= port then same = false end end
      if same then
        local c = k.server(port).client { timeout = 1 }
        local role = c:call("ROLE")
        c:close()
        if type(role) == "table" and role[1] == "master" then return port end
      end
      core.sleep(0.1)
    end
    error("no new master within " .. (seconds or 15) .. " s")
  end
  return k
end

return M
