-- A real redis-server for the specs: on a free 127.0.0.1 port, in its own
-- temporary directory, stopped by the spec that started it (also when the
-- spec fails: call stop() in teardown / finally).  The system's service on
-- 6379, if any, is never touched.
--   local R = require "redis_server"    (spec/support is on the path)
--   local r = R.start { aof = true, password = "pw", conf = { "replicaof 127.0.0.1 6390" } }
--   r.url, r.port, r.client(), r.kill(), r.restart(), r.pause(), r.resume(), r.stop()
--   local master, replica = R.pair()   (a master and its replica, in sync)
--   R.start { tls = true }: TLS only (--port 0 --tls-port), with a CA made
--   here (r.ca_file), a server certificate for localhost and 127.0.0.1
--   signed by it, and a second CA that signed nothing (r.other_ca_file);
--   r.url is rediss://, r.tls the client's settings ({ ca_file })
local launcher = require "kinot.sim.launcher"
local kredis = require "kinot.redis"
local core = require "kinot.core"
local H = require "helpers"

local M = {}

local sh, read = H.execute, H.read

--- certificates(dir): with openssl, into dir: ca.pem/.key (a CA),
-- server.pem/.key (localhost and 127.0.0.1, signed by it), client.pem/.key
-- (signed by it), other-ca.pem/.key (a CA that signed nothing here)
function M.certificates(dir)
  local function run(cmd) assert(sh(cmd .. " >/dev/null 2>&1"), "openssl failed: " .. cmd) end
  local key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes" -- (quicker to make than RSA's)
  for _, ca in ipairs { "ca", "other-ca" } do
    run("openssl req -x509 " .. key .. " -days 2 -subj /CN=kinot-spec-" .. ca .. " -keyout " .. dir .. "/" ..
      ca .. ".key -out " .. dir .. "/" .. ca .. ".pem")
  end
  local f = assert(io.open(dir .. "/ext.cnf", "w"))
  f:write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
  f:close()
  for _, who in ipairs { "server", "client" } do
    run("openssl req " .. key .. " -subj /CN=" .. (who == "server" and "localhost" or "kinot-spec-client") ..
      " -keyout " .. dir .. "/" .. who .. ".key -out " .. dir .. "/" .. who .. ".csr")
    run("openssl x509 -req -in " .. dir .. "/" .. who .. ".csr -CA " .. dir .. "/ca.pem -CAkey " .. dir ..
      "/ca.key -CAcreateserial -days 2" .. (who == "server" and (" -extfile " .. dir .. "/ext.cnf") or "") ..
      " -out " .. dir .. "/" .. who .. ".pem")
  end
end

--- sign(dir, name, o): dir/name.pem and .key, a server certificate signed
-- by dir's CA (M.certificates first) with o.cn (default localhost), o.san
-- (an openssl subjectAltName value; default DNS:localhost,IP:127.0.0.1)
-- and, when given, o.from / o.to (openssl's YYYYMMDDHHMMSSZ: an expired
-- or a not yet valid certificate; openssl ca, which takes past dates);
-- o.self_signed: signed by its own key instead (o.san = false: none at all)
function M.sign(dir, name, o)
  o = o or {}
  local function run(cmd) assert(sh(cmd .. " >/dev/null 2>&1"), "openssl failed: " .. cmd) end
  if o.self_signed then return H.self_signed(dir, name, o) end -- (signed by its own key: no CA at all)
  local ca = dir .. "/" .. name .. "-ca"
  run("mkdir -p " .. ca)
  for file, text in pairs { ["index.txt"] = "", serial = "01\n" } do
    local w = assert(io.open(ca .. "/" .. file, "w"))
    w:write(text)
    w:close()
  end
  local f = assert(io.open(ca .. "/ca.cnf", "w"))
  f:write(table.concat({ "[ca]", "default_ca = d", "[d]", "database = " .. ca .. "/index.txt",
    "new_certs_dir = " .. ca, "serial = " .. ca .. "/serial", "default_md = sha256", "policy = p",
    "x509_extensions = e", "unique_subject = no", "default_days = 2", "[p]", "commonName = supplied", "[e]",
    "subjectAltName = " .. (o.san or "DNS:localhost,IP:127.0.0.1") }, "\n"), "\n")
  f:close()
  run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=" .. (o.cn or "localhost") ..
    " -keyout " .. dir .. "/" .. name .. ".key -out " .. ca .. "/req.csr")
  run("openssl ca -batch -config " .. ca .. "/ca.cnf -cert " .. dir .. "/ca.pem -keyfile " .. dir .. "/ca.key -in " ..
    ca .. "/req.csr -out " .. dir .. "/" .. name .. ".pem" .. (o.from and (" -startdate " .. o.from) or "") ..
    (o.to and (" -enddate " .. o.to) or ""))
end

function M.start(o)
  o = o or {}
  local port = o.port or launcher.free_port()
  local dir = H.tmpdir("redis")
  local conf = {
    "bind 127.0.0.1", "port " .. port, "dir " .. dir, "daemonize yes", "pidfile " .. dir .. "/redis.pid",
    "logfile " .. dir .. "/redis.log", "save \"\"", "protected-mode yes",
  }
  if o.aof then
    conf[#conf + 1] = "appendonly yes"
    conf[#conf + 1] = "appendfsync always"
  end
  if o.password then conf[#conf + 1] = "requirepass " .. o.password end
  if o.tls then
    M.certificates(dir)
    conf[2] = "port 0" -- (conf[2] is "port N"): TLS only
    -- o.server: the name of a certificate M.sign made in dir (o.sign: its
    -- settings) served instead of server.pem; o.tls_protocols, o.tls_ciphers: redis's own
    local server = "server"
    if o.server then
      M.sign(dir, o.server, o.sign)
      server = o.server
    end
    if o.tls_protocols then conf[#conf + 1] = "tls-protocols \"" .. o.tls_protocols .. "\"" end
    if o.tls_ciphers then conf[#conf + 1] = "tls-ciphers \"" .. o.tls_ciphers .. "\"" end
    for _, l in ipairs { "tls-port " .. port, "tls-cert-file " .. dir .. "/" .. server .. ".pem",
                         "tls-key-file " .. dir .. "/" .. server .. ".key", "tls-ca-cert-file " .. dir .. "/ca.pem",
                         "tls-auth-clients " .. (o.tls_auth_clients and "yes" or "no") } do
      conf[#conf + 1] = l
    end
  end
  -- o.conf: more lines (a replica's replicaof, masterauth ...; appendfsync everysec)
  for _, l in ipairs(o.conf or {}) do conf[#conf + 1] = l end
  local f = assert(io.open(dir .. "/redis.conf", "w"))
  f:write(table.concat(conf, "\n"), "\n")
  f:close()

  local r = { port = port, dir = dir }
  if o.tls then
    r.ca_file, r.other_ca_file = dir .. "/ca.pem", dir .. "/other-ca.pem"
    r.client_cert, r.client_key = dir .. "/client.pem", dir .. "/client.key"
    r.tls = { ca_file = r.ca_file }
    if o.tls_auth_clients then r.tls.cert_file, r.tls.key_file = r.client_cert, r.client_key end
  end
  r.url = (o.tls and "rediss://" or "redis://") .. (o.password and (":" .. o.password .. "@") or "") .. "127.0.0.1:" .. port .. "/" .. (o.db or 0)
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
    local listening = launcher.wait_for_port(port)
    -- a server held to old TLS versions (o.tls_protocols) is one this
    -- client refuses to speak to: listening is all that can be seen
    if o.tls_protocols then
      if not listening then error("redis-server on 127.0.0.1:" .. port .. " is not listening", 0) end
      return
    end
    -- accepting connections is not loaded: wait for PING to answer PONG
    -- (a certificate made to be refused, o.server's, is not verified here)
    local c = kredis.new(r.url, { timeout = 1, tls = (o.tls and o.server) and { verify_tls = false } or r.tls })
    local deadline, ready = core.monotonic() + 10, false
    while core.monotonic() < deadline do
      if c:call("PING") == "PONG" then ready = true break end
      core.sleep(0.05)
    end
    c:close()
    -- a server that never answered (its port taken meanwhile by another
    -- process: free_port only found it free) fails here, with its log,
    -- not later in the spec as a refused connection
    if not ready then
      local log = read(dir .. "/redis.log") or ""
      error("redis-server on 127.0.0.1:" .. port .. " did not answer PING within 10 s; its log ends:\n" ..
            log:sub(-800), 0)
    end
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
  --- pause(), resume(): SIGSTOP, SIGCONT (a server that hangs: connections
  -- taken, nothing answered)
  function r.pause() assert(sh("kill -STOP " .. assert(r.pid(), "no redis-server to pause"))) end
  function r.resume()
    local pid = r.pid()
    if pid then sh("kill -CONT " .. pid .. " 2>/dev/null") end
  end
  --- stop(): killed (a paused one too) and its directory removed
  function r.stop()
    r.resume()
    r.down("KILL")
    sh("rm -rf " .. dir)
  end
  --- replicas_online() -> how many replicas the server says are in sync
  -- (INFO replication's state=online)
  function r.replicas_online()
    local c = r.client { timeout = 1 }
    local info = c:call("INFO", "replication")
    c:close()
    return select(2, tostring(info or ""):gsub("state=online", ""))
  end
  --- call(...) -> one command's reply (asserted), on a connection of its
  -- own, closed after it
  function r.call(...)
    local c = r.client()
    local v, err = c:call(...)
    c:close()
    return assert(v, err)
  end
  --- client() -> a kinot.redis client (LuaSocket, this process)
  function r.client(opts)
    opts = opts or {}
    if r.tls and opts.tls == nil then opts.tls = r.tls end
    return kredis.new(r.url, opts)
  end
  -- a server started and then found unusable (no PONG, a client that
  -- cannot be made) is stopped here: the spec never got r to stop it
  local ok, err = pcall(r.up)
  if not ok then
    r.stop()
    error(err, 0)
  end
  return r
end

--- drip_proxy(r, mode) -> { port, stop() }: a FAKE link to the server r
-- (spec/support/drip_proxy.py) that drips r's bytes: mode "handshake" (a
-- byte every 0.2 s from the first), "later" (at full speed for half a
-- second, then dripped); the caller stops it
function M.drip_proxy(r, mode) return H.fake("drip_proxy.py", r.port .. " " .. mode) end

--- pair(o) -> master, replica: a master (o: M.start's options, and no
-- delay before a diskless sync) and one replica of it, in sync (within 10
-- s); the caller stops both. One that cannot be had stops what started.
function M.pair(o)
  o = o or {}
  local conf = { "repl-diskless-sync-delay 0" }
  for _, l in ipairs(o.conf or {}) do conf[#conf + 1] = l end
  local function with(lines)
    local c = {}
    for k, v in pairs(o) do c[k] = v end
    c.conf = lines
    return c
  end
  local master = M.start(with(conf))
  local ok, replica = pcall(function()
    local rconf = { "replicaof 127.0.0.1 " .. master.port }
    for _, l in ipairs(conf) do rconf[#rconf + 1] = l end
    if o.password then rconf[#rconf + 1] = "masterauth " .. o.password end
    local r = M.start(with(rconf))
    if not H.wait_for(function() return master.replicas_online() == 1 end, 10) then
      r.stop()
      error("the replica on " .. r.port .. " was not in sync with its master within 10 s", 0)
    end
    return r
  end)
  if not ok then
    master.stop()
    error(replica, 0)
  end
  return master, replica
end

return M
