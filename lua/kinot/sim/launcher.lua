-- Starts and stops the simulator: writes an nginx config into a temporary
-- prefix and runs nginx with the Lua module on 127.0.0.1.  Used by
-- `kinot sim`, by `make demo` and by the specs (spec/support/sim.lua).
local read = require("kinot.file").read

local M = {}

local MODULE_DIRS = { "/usr/lib/nginx/modules", "/usr/share/nginx/modules", "/usr/local/openresty/nginx/modules" }

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.sh_quote = sh_quote

local function run(cmd)
  local ok, _, code = os.execute(cmd)
  if type(ok) == "number" then return ok == 0 end -- Lua 5.1 / LuaJIT
  return ok == true and (code == 0 or code == nil)
end

-- (the CLI's pid files run commands the same way: cli/pidfile.lua)
M.run = run

--- the directory that holds kinot/ (this checkout's lua/, or a rocks tree's
-- share/lua/5.x): where this very file was loaded from
local function lua_root()
  local src = debug.getinfo(1, "S").source
  local p = src:sub(1, 1) == "@" and src:sub(2) or nil
  if not (p and p:find("kinot/sim/launcher%.lua$") and exists(p)) then
    p = package.searchpath and package.searchpath("kinot.sim.launcher", package.path)
  end
  assert(p, "kinot: cannot find kinot/sim/launcher.lua on package.path")
  if p:sub(1, 1) ~= "/" then -- relative to where we run: nginx runs elsewhere
    local pwd = io.popen("pwd")
    p = pwd:read("*l") .. "/" .. p:gsub("^%./", "")
    pwd:close()
  end
  return (p:gsub("/kinot/sim/launcher%.lua$", ""))
end
M.lua_root = lua_root

--- luajit_cpath([root]) -> the directory holding the kinot/core.so built for
-- LuaJIT (nginx's Lua) that belongs with the Lua modules at root, or nil
-- and what to build.  Only that one: in a checkout (root = <checkout>/lua)
-- its build/5.1, in a LuaRocks tree (root = <tree>/share/lua/5.x) the
-- tree's lib/lua/5.1; KINOT_SIM_CPATH overrides.  Never a system or home
-- directory: a core built from other sources would serve these modules.
function M.luajit_cpath(root)
  root = root or lua_root()
  local env = os.getenv("KINOT_SIM_CPATH")
  if env and env ~= "" then
    if exists(env .. "/kinot/core.so") then return env end
    return nil, "KINOT_SIM_CPATH is " .. env .. ", which holds no kinot/core.so"
  end
  local tree = root:match("^(.*)/share/lua/[%d.]+$")
  local dir = tree and (tree .. "/lib/lua/5.1") or (root:gsub("/[^/]+$", "") .. "/build/5.1")
  if exists(dir .. "/kinot/core.so") then return dir end
  local how = tree and ("from the lua-kinot sources run `luarocks --lua-version=5.1 make --deps-mode=none --tree=" ..
    tree .. " LUA_INCDIR=/usr/include/luajit-2.1 kinot-scm-1.rockspec` (`make install TREE=" .. tree ..
    "` does both runtimes)") or "run `make build` in this checkout"
  return nil, "kinot sim runs inside nginx, whose Lua is LuaJIT, and needs the kinot.core built for LuaJIT " ..
    "that belongs with these Lua modules (" .. root .. "): " .. dir .. "/kinot/core.so is missing. To build it, " ..
    how .. "; or point KINOT_SIM_CPATH at the directory holding the kinot/core.so to use"
end

local function find_modules()
  for _, d in ipairs(MODULE_DIRS) do
    if exists(d .. "/ngx_http_lua_module.so") then return d end
  end
  return nil, "nginx's Lua module was not found (install Debian's libnginx-mod-http-lua: `make deps`)"
end

local function nginx_bin()
  for _, p in ipairs { "/usr/sbin/nginx", "/usr/local/openresty/nginx/sbin/nginx", "/usr/bin/nginx" } do
    if exists(p) then return p end
  end
  return nil, "nginx was not found (install Debian's nginx: `make deps`)"
end
M.find_modules, M.nginx_bin = find_modules, nginx_bin -- kinot serve starts its nginx alike (cli/serve.lua)

--- serialize(v) -> Lua source that rebuilds v (strings, numbers, booleans,
-- tables): the config an nginx it starts reads with dofile
local function serialize(v)
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t == "number" or t == "boolean" then return tostring(v) end
  if t == "table" then
    local out = {}
    for k, x in pairs(v) do out[#out + 1] = "[" .. serialize(k) .. "]=" .. serialize(x) end
    return "{" .. table.concat(out, ",") .. "}"
  end
  return "nil"
end

M.serialize = serialize

--- free_port() -> a TCP port on 127.0.0.1 that was free a moment ago
function M.free_port()
  local ok, socket = pcall(require, "socket")
  if ok then
    local s = socket.tcp()
    assert(s:bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    return tonumber(port)
  end
  return 20000 + (os.time() * 7 + math.random(1, 9999)) % 30000
end

--- "user root;" when we are root: nginx would otherwise run its workers as
-- nobody, who may not read a checkout under a private directory
function M.user_directive()
  local p = io.popen("id -u 2>/dev/null")
  local uid = p and p:read("*l")
  if p then p:close() end
  return uid == "0" and "user root;" or ""
end

-- what every nginx the launcher starts shares (nginx_conf); the caller's
-- http-level directives and server blocks go at ${http}
local PREAMBLE = [[
load_module ${mods}/ndk_http_module.so;
load_module ${mods}/ngx_http_lua_module.so;
${user}
worker_processes ${workers};
master_process on;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log ${log_level};
events { worker_connections 1024; }
http {
  access_log off;
  # a body larger than its buffer is written here, in the private prefix
  # removed with the server, not in nginx's /var/lib/nginx (root's)
  client_body_temp_path ${prefix}/client_body_temp;
  proxy_temp_path ${prefix}/proxy_temp;
  fastcgi_temp_path ${prefix}/fastcgi_temp;
  uwsgi_temp_path ${prefix}/uwsgi_temp;
  scgi_temp_path ${prefix}/scgi_temp;
  lua_package_path "${root}/?.lua;${root}/?/init.lua;;";
  lua_package_cpath "${cpath}/?.so;;";
  lua_socket_log_errors off;
${http}}
]]

--- nginx_parts() -> {root, cpath, mods, nginx} | nil, err: what starting an
-- nginx with these Lua modules needs (the modules' root, the LuaJIT core's
-- directory, nginx's module directory, the nginx binary), or what is missing
function M.nginx_parts()
  local root = lua_root()
  local cpath, err = M.luajit_cpath(root)
  if not cpath then return nil, err end
  local mods, merr = find_modules()
  if not mods then return nil, merr end
  local nginx, nerr = nginx_bin()
  if not nginx then return nil, nerr end
  return { root = root, cpath = cpath, mods = mods, nginx = nginx }
end

--- nginx_conf(parts, o, http) -> the nginx.conf of a server the launcher
-- starts (the simulator, `kinot serve`): the shared part (the Lua module,
-- `user root;` when we are root, the pid, log and temp files in o.prefix,
-- these Lua modules and the LuaJIT core) around http, the caller's own
-- http-level directives and server blocks.  ${name} in http is o[name];
-- o: prefix, workers (1), log_level ("warn"), and what http names.
function M.nginx_conf(parts, o, http)
  local function fill(template, values)
    return (template:gsub("%${([%w_]+)}", function(k)
      local v = values[k]
      if v == nil then error("kinot.sim.launcher.nginx_conf: no value for ${" .. k .. "}", 3) end
      return tostring(v)
    end))
  end
  local own = fill(http, o)
  return fill(PREAMBLE, {
    mods = parts.mods, root = parts.root, cpath = parts.cpath, user = M.user_directive(), prefix = o.prefix,
    workers = o.workers or 1, log_level = o.log_level or "warn", http = own,
  })
end

--- start_nginx(parts, prefix, port[, conf]) -> true, pid | nil, what nginx
-- said: writes conf (nginx_conf's text) to prefix/nginx.conf when given,
-- runs the nginx of prefix/nginx.conf, waits for 127.0.0.1:port.  nginx's Lua is
-- LuaJIT: a 5.4 LUA_PATH / LUA_CPATH in our environment (`luarocks path`
-- sets them) must not reach its ";;" defaults.
function M.start_nginx(parts, prefix, port, conf)
  if conf then
    local f = assert(io.open(prefix .. "/nginx.conf", "wb"))
    f:write(conf)
    f:close()
  end
  local cmd = "env -u LUA_PATH -u LUA_CPATH -u LUA_INIT " .. sh_quote(parts.nginx) .. " -p " .. sh_quote(prefix) ..
    " -c nginx.conf -e " .. sh_quote(prefix .. "/error.log")
  if not run(cmd .. " >" .. sh_quote(prefix .. "/start.log") .. " 2>&1") then
    return nil, (read(prefix .. "/start.log") or "") .. (read(prefix .. "/error.log") or "")
  end
  M.wait_for_port(port, prefix .. "/nginx.pid")
  return true, tonumber(read(prefix .. "/nginx.pid") or "")
end

local SIM_HTTP = [[
  client_body_buffer_size 1m;
  client_max_body_size 8m;
  keepalive_requests 100000;
  init_by_lua_block {
    require("kinot.sim.server").configure(dofile("${prefix}/sim_config.lua"))
  }
  server {
    listen 127.0.0.1:${port};
    location /open/lora/v1/ {
      content_by_lua_block { require("kinot.sim.server").api() }
    }
    location /__kinot_sim/ {
      allow 127.0.0.1;
      deny all;
      content_by_lua_block { require("kinot.sim.server").admin() }
    }
    location / { return 404 '{"message":"not a Kinot API path"}'; }
  }
]]

--- port_busy(port) -> true, why when something already listens on
-- 127.0.0.1:port (or the port cannot be bound), false when it is free
function M.port_busy(port)
  local ok_sock, socket = pcall(require, "socket")
  if not ok_sock then return false end -- nginx's own bind() then refuses it
  local s = socket.tcp()
  -- SO_REUSEADDR as nginx sets it (connections of an earlier simulator in
  -- TIME_WAIT do not count) but no SO_REUSEPORT: any listener makes bind fail
  s:setoption("reuseaddr", true)
  local ok, err = s:bind("127.0.0.1", port)
  s:close()
  if ok or not tostring(err):find("in use", 1, true) then return false end -- nginx says what else is wrong
  return true, err
end

local function busy_message(port, why)
  return "port " .. port .. " on 127.0.0.1 is already in use (" .. tostring(why) .. "): another simulator or " ..
    "server is listening there; stop it (`kinot sim stop`) or pick another --port (or none: a free one is chosen)"
end

--- fleet_summary(cfg) -> {dtus = {sn...}, first_lock = sn|nil, first_sensor = sn|nil, locks, sensors,
-- examples = {lock = {sn...}, sensor = {sn...}, dtu = {sn...}}}
function M.fleet_summary(cfg)
  local fleetmod = require "kinot.sim.fleet"
  local base = fleetmod.BASE
  local dtus = {}
  for i = 1, cfg.dtus do dtus[i] = base.dtu + i end
  local fleet, examples = fleetmod.new(cfg), {}
  for _, kind in ipairs { "lock", "sensor", "dtu" } do
    examples[kind] = {}
    for j, d in ipairs(fleet:example_rows(kind)) do examples[kind][j] = d.sn end
  end
  return { dtus = dtus, locks = cfg.locks, sensors = cfg.sensors,
           first_lock = cfg.locks > 0 and base.lock + 1 or nil,
           first_sensor = cfg.sensors > 0 and base.sensor + 1 or nil, examples = examples }
end

--- wait_for_port(port[, pidfile]): until 127.0.0.1:port accepts (5 s at most)
function M.wait_for_port(port, pidfile)
  local ok_sock, socket = pcall(require, "socket")
  for _ = 1, 100 do
    if ok_sock then
      local c = socket.tcp()
      c:settimeout(0.2)
      if c:connect("127.0.0.1", port) then c:close() return true end
      c:close()
      socket.sleep(0.05)
    else
      run("sleep 0.05")
      if pidfile and exists(pidfile) then return true end
    end
  end
  return false
end

--- start(opts) -> sim {url, endpoint, admin, port, prefix, pid, core, stop()} | nil, err
-- (core: the kinot/core.so that nginx loads, see luajit_cpath)
-- opts: port, app_key, app_secret, locks, sensors, dtus, seed, command_pace,
--       failure_rate, callback_secret, stage (only requests for that
--       X-Ca-Stage pass the gateway; none stands for RELEASE), quirks (the
--       reference's trailing commas), paging ("page0" | "page1" | "rows":
--       how `offset` is read), examples (false: without the platform
--       reference's example devices, 419631107 ...; kinot.sim.fleet)
-- A port already in use is refused (err names it; sim is nil).
local START = {
  "port", "app_key", "app_secret", "locks", "sensors", "dtus", "seed", "command_pace", "failure_rate",
  "callback_secret", "callback_retries", "stage", "quirks", "paging", "log_level", "prefix", "examples",
}
function M.start(opts)
  local validate = require "kinot.validate"
  opts = validate.options(opts, validate.set(START), "sim.launcher.start") or {}
  if opts.paging ~= nil and opts.paging ~= "page0" and opts.paging ~= "page1" and opts.paging ~= "rows" then
    require("kinot.errors").misuse("paging must be \"page0\", \"page1\" or \"rows\" (got " .. tostring(opts.paging) .. ")")
  end
  local parts, err = M.nginx_parts()
  if not parts then return nil, err end
  local port = opts.port or M.free_port()
  local busy, why = M.port_busy(port)
  if busy then return nil, busy_message(port, why), "port_in_use" end
  local prefix = opts.prefix
  if not prefix then
    local p = io.popen("mktemp -d /tmp/kinot-sim.XXXXXX")
    prefix = p:read("*l")
    p:close()
  end
  local cfg = {
    app_key = opts.app_key or "kinot-sim-key", app_secret = opts.app_secret or "kinot-sim-secret",
    locks = opts.locks or 50, sensors = opts.sensors or 50, dtus = opts.dtus or 5, seed = opts.seed or 1,
    command_pace = opts.command_pace, failure_rate = opts.failure_rate, callback_secret = opts.callback_secret,
    callback_retries = opts.callback_retries, stage = opts.stage, quirks = opts.quirks == true,
    paging = opts.paging or "page0", examples = opts.examples ~= false,
  }
  local f = assert(io.open(prefix .. "/sim_config.lua", "wb"))
  f:write("return ", serialize(cfg), "\n")
  f:close()
  local conf = M.nginx_conf(parts, { prefix = prefix, port = port, log_level = opts.log_level }, SIM_HTTP)
  local base = "http://127.0.0.1:" .. port
  local sim = {
    port = port, prefix = prefix, url = base, endpoint = base .. "/open/lora/v1",
    admin = base .. "/__kinot_sim", app_key = cfg.app_key, app_secret = cfg.app_secret,
    config = cfg, fleet = M.fleet_summary(cfg), core = parts.cpath .. "/kinot/core.so",
  }
  function sim.stop() return M.stop(prefix) end
  local started, pid_or_log = M.start_nginx(parts, prefix, port, conf)
  if not started then
    local log = pid_or_log
    if not opts.prefix then run("rm -rf " .. sh_quote(prefix)) end
    -- taken between our check and nginx's bind
    if log:find("Address already in use", 1, true) then return nil, busy_message(port, "bind"), "port_in_use" end
    return nil, "nginx did not start: " .. log
  end
  sim.pid = pid_or_log
  return sim
end

--- alive(pid) -> whether the process still runs.  One that has exited
-- but is not reaped yet (a zombie) does not: a daemon's parent is init,
-- and some inits reap only every second or two; `kill -0` alone would wait
-- for them.  (Where there is no /proc, `kill -0` is all there is.)
function M.alive(pid)
  if not run("kill -0 " .. pid .. " 2>/dev/null") then return false end
  local stat = read("/proc/" .. pid .. "/stat")
  if stat and stat:match("^%d+ %b() (%a)") == "Z" then return false end
  return stat ~= nil or not exists("/proc/self/stat")
end

--- running(prefix) -> pid, url | nil, why: the nginx master of the
-- simulator started in prefix, when it still runs.  A pid alone proves
-- nothing once its process is gone (the system hands it to another): the
-- process must be nginx started with this prefix (-p), as its command line
-- says (/proc, else ps).
function M.running(prefix)
  local pid = tonumber(read(prefix .. "/nginx.pid") or "")
  if not pid then return nil, "no nginx.pid in " .. prefix end
  if not M.alive(pid) then return nil, "its process " .. pid .. " is gone" end
  local cmdline = read("/proc/" .. pid .. "/cmdline")
  if not cmdline and not read("/proc/self/cmdline") then -- no /proc here
    local p = io.popen("ps -o args= -p " .. pid .. " 2>/dev/null")
    cmdline = p:read("*a")
    p:close()
  end
  if not cmdline or cmdline == "" then return nil, "its process " .. pid .. " is gone" end
  cmdline = cmdline:gsub("%z", " ") .. " "
  if not (cmdline:find("nginx", 1, true) and cmdline:find(" -p " .. prefix .. " ", 1, true)) then
    return nil, "its process " .. pid .. " is gone (pid " .. pid .. " is now another program's)"
  end
  local port = (read(prefix .. "/nginx.conf") or ""):match("listen 127%.0%.0%.1:(%d+)")
  return pid, port and ("http://127.0.0.1:" .. port) or nil
end

--- stop(prefix, graceful): TERM to nginx's master (QUIT when graceful:
-- requests in flight finish and timers waiting run), wait for it to go.
-- false when no simulator of that prefix runs: nothing is signalled.
function M.stop(prefix, graceful)
  local pid = M.running(prefix)
  if not pid then return false end
  run("kill -" .. (graceful and "QUIT " or "TERM ") .. pid .. " 2>/dev/null")
  for _ = 1, 100 do
    if not M.alive(pid) then break end
    run("sleep 0.05")
  end
  return true
end

return M
