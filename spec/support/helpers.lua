-- Shared by the specs: the real simulator, a real nginx for other roles,
-- and raw HTTP through the C core.  Every server listens on 127.0.0.1 on a
-- port picked here and is stopped by the spec that started it.
local core = require "kinot.core"
local json = require "kinot.json"
local launcher = require "kinot.sim.launcher"

local H = {}

H.runtime = rawget(_G, "jit") and "luajit" or _VERSION
H.root = (function()
  local p = io.popen("pwd")
  local d = p:read("*l")
  p:close()
  return d
end)()

local http = core.http()

--- raw(method, url, body, headers) -> response (status, headers, body) | error
function H.raw(method, url, body, headers)
  local res, kind, msg = http:request { method = method, url = url, body = body, headers = headers or {},
                                         timeout = 10, connect_timeout = 2 }
  assert(res, tostring(kind) .. ": " .. tostring(msg))
  return res
end

function H.json(method, url, doc)
  local res = H.raw(method, url, doc and json.encode(doc) or nil,
    doc and { ["Content-Type"] = "application/json" } or {})
  return json.decode(res.body), res
end

-- ---------------------------------------------------------------- shell and files

--- sh(cmd) -> its output (stdout and stderr, of every command in it), its
-- exit code (cmd runs in a subshell of its own: a trailing comment in it
-- ends at its line)
function H.sh(cmd)
  local p = io.popen("(" .. cmd .. "\n) 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  return (out:gsub("rc=%d+%s*$", "")), tonumber(out:match("rc=(%d+)%s*$"))
end

--- execute(cmd) -> true when it exited 0 (os.execute's answer under Lua 5.4
-- and LuaJIT alike: the launcher's, which the CLI uses too)
H.execute = launcher.run

--- tmpdir([name]) -> a new directory /tmp/kinot-<name>.XXXXXX (the caller
-- removes it: rm -rf)
function H.tmpdir(name)
  local p = io.popen("mktemp -d /tmp/kinot-" .. (name or "spec") .. ".XXXXXX")
  local dir = p:read("*l")
  p:close()
  return dir
end

--- write(path, text): the file holds text, and only it
function H.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

--- guarded(fn, server...): runs fn, then stops every server (its stop())
-- however fn ended, and raises fn's error (a failed assertion) again.
-- For servers an `it` starts and stops before it starts others, where a
-- busted finally (one an it: the last registered is kept) cannot stop
-- them all; the benchmarks' guard too (bench/support.lua)
function H.guarded(fn, ...)
  local servers = { ... }
  local ok, err = pcall(fn)
  for _, s in ipairs(servers) do s.stop() end
  if not ok then error(err, 0) end
end

-- ---------------------------------------------------------------- callbacks

--- signed(body, secret) -> body (a JSON object's text) with its "sign"
-- member added last, as the platform sends a callback
function H.signed(body, secret)
  return (body:gsub("}$", ',"sign":"' .. assert(require("kinot.callback").sign(body, secret)) .. '"}'))
end

--- lock_status(sn, secret[, locked]) -> a signed status_changed callback of
-- lock sn (locked: 1 unless given, no car, device_type 18)
function H.lock_status(sn, secret, locked)
  return H.signed(string.format('{"sn":%d,"locked":%d,"car_detected":0,"device_type":18}', sn, locked or 1), secret)
end

--- put_statuses(url, stream, sns, secret): the status callback of each
-- lock of sns (H.lock_status), stored in the inbox's stream at url as
-- callback.handler's inbox stores a delivery
function H.put_statuses(url, stream, sns, secret)
  local callback, inbox = require "kinot.callback", require "kinot.callback.inbox"
  local box = inbox.new { redis = url, stream = stream }
  for _, sn in ipairs(sns) do
    local body = H.lock_status(sn, secret)
    assert(box:put(assert(callback.verify(body, { secret = secret })).id, body, os.time()) == true)
  end
  box.client:close()
end

--- iso8(t) -> t (epoch seconds) as the platform writes a time: ISO 8601 at +08:00
function H.iso8(t) return os.date("!%Y-%m-%dT%H:%M:%S", t + 8 * 3600) .. "+08:00" end

-- ---------------------------------------------------------------- metrics

--- samples(text) -> the samples of a Prometheus exposition text:
-- "name{labels}" -> its value (a number; the text when not one)
function H.samples(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do
    if not line:match("^#") then
      local series, v = line:match("^(.-) (%S+)$")
      out[series] = tonumber(v) or v
    end
  end
  return out
end

-- ---------------------------------------------------------------- pages

--- json_of(cmd, what) -> the JSON object a command writes (its stderr
-- with it: an error is shown, named what, when it is not one)
function H.json_of(cmd, what)
  local p = io.popen(cmd .. " 2>&1")
  local text = p:read("*a")
  p:close()
  local doc = json.decode(text)
  assert(type(doc) == "table", what .. ": " .. text)
  return doc
end

--- parse_report_html(path) -> kinot report --html's page at path as
-- Python's HTML parser reads it (spec/support/report_html.py's JSON)
function H.parse_report_html(path)
  return H.json_of(string.format("python3 %s/spec/support/report_html.py %q", H.root, path), "report_html.py")
end

--- twin_report(sim, serve_url, page, args) -> what `kinot --json <args>
-- --from serve_url --html page` answers (decoded; no credential given),
-- after checking (luassert: a failure is the spec's) that it and the same
-- report from the platform (sim.env) both exit 0 and are the same report
function H.twin_report(sim, serve_url, page, args)
  local luassert = require "luassert" -- (a support module sees the global assert, not busted's)
  local direct, err, rc = H.kinot("--json" .. args, sim.env)
  luassert.are.equal(0, rc, err)
  local twin, terr, trc = H.kinot("--json" .. args .. " --from " .. serve_url .. " --html " .. page,
    "KINOT_APP_KEY= KINOT_APP_SECRET= KINOT_API_TOKEN=")
  luassert.are.equal(0, trc, terr)
  local doc = json.decode(twin)
  luassert.are.same(json.decode(direct), doc)
  return doc
end

-- ---------------------------------------------------------------- simulator

--- sim(opts) -> running simulator with admin helpers; call :stop()
-- (without the reference's example devices unless opts.examples: specs count
-- the devices they asked for)
function H.sim(opts)
  opts = opts or {}
  if opts.examples == nil then opts.examples = false end
  local sim = assert(launcher.start(opts))
  -- the environment a `kinot` command needs to reach it (H.kinot's env)
  sim.env = string.format("KINOT_ENDPOINT=%s KINOT_APP_KEY=%s KINOT_APP_SECRET=%s", sim.endpoint, sim.app_key,
    sim.app_secret)
  function sim.call(method, what, doc)
    return H.json(method, sim.admin .. what, doc)
  end
  function sim.counters() return (sim.call("GET", "/counters")) end
  function sim.fault(f) return sim.call("POST", "/faults", f) end
  function sim.reset() return sim.call("POST", "/reset", {}) end
  function sim.client(extra)
    local o = { app_key = sim.app_key, app_secret = sim.app_secret, endpoint = sim.endpoint,
                backoff = { base = 0.01, max = 0.05 }, timeout = 5, connect_timeout = 2 }
    for k, v in pairs(extra or {}) do o[k] = v end
    return require("kinot").new(o)
  end
  return sim
end

-- ---------------------------------------------------------------- nginx

--- nginx{http = "...", server = "...", port = n} -> {url, port, prefix, stop()}
-- `server` is the body of a server block listening on 127.0.0.1:port.  The
-- rest of nginx.conf is the launcher's, as for the simulator and `kinot serve`.
function H.nginx(o)
  local port = o.port or launcher.free_port()
  local prefix = H.tmpdir("spec")
  local parts = assert(launcher.nginx_parts())
  -- the caller's text goes in as a value: nginx_conf fills ${names} in its
  -- template only, never in what a value brings
  local conf = launcher.nginx_conf(parts, { prefix = prefix, workers = o.workers, own = table.concat({
    o.http or "",
    "  server {",
    "    listen 127.0.0.1:" .. port .. (o.ssl and " ssl" or "") .. ";",
    o.server or "",
    "  }",
    "",
  }, "\n") }, "${own}")
  -- as the launcher starts the simulator's (its stdout and stderr, what
  -- nginx says when it refuses to start, in start.log), waiting for the port
  local started = launcher.start_nginx(parts, prefix, port, conf) == true
  local scheme = o.ssl and "https" or "http"
  local ng = {
    port = port, prefix = prefix, url = scheme .. "://127.0.0.1:" .. port, started = started,
    stop = function(graceful) launcher.stop(prefix, graceful) end,
    log = function() return H.read(prefix .. "/error.log") or "" end,
    stderr = function() return H.read(prefix .. "/start.log") or "" end,
  }
  -- o.may_fail: the spec looks at a refusal to start itself (ng.started)
  if o.may_fail and not started then return ng end
  assert(started, "nginx failed to start: see " .. prefix .. "/error.log")
  return ng
end

--- self_signed(dir, name, o): dir/name.pem and dir/name.key, a
-- certificate signed by its own key (openssl): o.cn (localhost unless
-- given), o.san (an openssl subjectAltName value, DNS:localhost,IP:127.0.0.1
-- unless given; false: none at all), o.key ("ec": prime256v1, the default;
-- "rsa": 2048 bits)
function H.self_signed(dir, name, o)
  o = o or {}
  local san = o.san == nil and "DNS:localhost,IP:127.0.0.1" or o.san
  local cmd = "openssl req -x509 -newkey " .. (o.key == "rsa" and "rsa:2048" or "ec -pkeyopt ec_paramgen_curve:prime256v1") ..
    " -nodes -days 2 -subj " .. launcher.sh_quote("/CN=" .. (o.cn or "localhost")) ..
    (san and (" -addext " .. launcher.sh_quote("subjectAltName=" .. san)) or "") ..
    " -keyout " .. dir .. "/" .. name .. ".key -out " .. dir .. "/" .. name .. ".pem"
  assert(H.execute(cmd .. " >/dev/null 2>&1"), "openssl failed: " .. cmd)
end

--- tls_nginx(name) -> an https nginx answering 'secure' everywhere, with a
-- fresh self-signed certificate for name (an IP address or a DNS name):
-- its path is .cert; stop() also removes it
function H.tls_nginx(name)
  local dir = H.tmpdir("tls")
  H.self_signed(dir, "cert", { cn = name, san = (name:match("^[%d.]+$") and "IP:" or "DNS:") .. name, key = "rsa" })
  local ng = H.nginx {
    ssl = true,
    server = "ssl_certificate " .. dir .. "/cert.pem; ssl_certificate_key " .. dir .. "/cert.key;\n" ..
             "location / { return 200 'secure'; }",
  }
  ng.cert = dir .. "/cert.pem"
  local stop = ng.stop
  ng.stop = function()
    stop()
    os.execute("rm -rf " .. dir)
  end
  return ng
end

--- never_accepting([port]) -> { port, stop() }: a listener on 127.0.0.1
-- (on port, or one the kernel picks) whose accept queue is full: the
-- kernel drops further SYNs, a connect never completes
function H.never_accepting(port)
  local socket = require "socket"
  local srv = socket.tcp4() -- (socket.tcp() has no descriptor to set an option on before bind)
  assert(srv:setoption("reuseaddr", true)) -- (a stopped server's FIN-WAIT-2 ends may still hold the port)
  assert(srv:bind("127.0.0.1", port or 0))
  assert(srv:listen(0))
  local _, bound = srv:getsockname()
  local fillers = {}
  for i = 1, 4 do
    fillers[i] = socket.tcp()
    fillers[i]:settimeout(0)
    fillers[i]:connect("127.0.0.1", bound)
  end
  socket.sleep(0.1)
  return { port = tonumber(bound), stop = function()
    for _, f in ipairs(fillers) do f:close() end
    srv:close()
  end }
end

--- fake(script, args) -> { port, pid, stop() }: a FAKE peer,
-- spec/support/<script> under python3 with args, listening on a port of
-- its own (spec/support/fake_server.py: it prints "PORT PID"); the caller
-- stops it
function H.fake(script, args)
  local p = assert(io.popen("exec python3 " .. H.root .. "/spec/support/" .. script .. " " .. (args or "")))
  local line = p:read("*l")
  local port, pid = (line or ""):match("^(%d+) (%d+)$")
  if not port then
    p:close()
    error(script .. " did not start: " .. tostring(line), 2)
  end
  return { port = tonumber(port), pid = tonumber(pid), stop = function()
    os.execute("kill " .. pid .. " 2>/dev/null")
    p:close()
  end }
end

--- lua_peer(script, args) -> pid: spec/support/<script>, a peer in Lua
-- (LuaSocket, under lua5.4), started in the background with args (its
-- port first); the caller kills it
function H.lua_peer(script, args)
  local p = io.popen("lua5.4 " .. H.root .. "/spec/support/" .. script .. " " .. args .. " >/dev/null 2>&1 & echo $!")
  local pid = tonumber(p:read("*l"))
  p:close()
  return pid
end

--- proxy() -> a forward HTTP proxy (spec/support/proxy.lua, its own
-- process) with url, lines() (what it was asked, a line a connection) and
-- stop()
function H.proxy()
  local port = launcher.free_port()
  local log = os.tmpname()
  local pid = H.lua_peer("proxy.lua", port .. " " .. log)
  launcher.wait_for_port(port)
  return {
    url = "http://127.0.0.1:" .. port, port = port,
    lines = function() return H.lines(log) end,
    stop = function()
      os.execute("kill " .. pid .. " 2>/dev/null")
      os.remove(log)
    end,
  }
end

--- receiver() -> nginx that records callbacks it gets at /cb and
-- hands them back from /received (a JSON list of raw bodies: its
-- received() decodes it)
function H.receiver()
  local ng = H.nginx {
    http = "lua_shared_dict received 8m;",
    server = [[
      location = /cb {
        content_by_lua_block {
          ngx.req.read_body()
          local d = ngx.shared.received
          local n = d:incr("n", 1, 0)
          d:set("b" .. n, ngx.req.get_body_data() or "")
          ngx.say('{"code":0,"message":"OK"}')
        }
      }
      location = /received {
        content_by_lua_block {
          local d = ngx.shared.received
          local out = {}
          for i = 1, (d:get("n") or 0) do out[i] = d:get("b" .. i) end
          ngx.say(require("cjson").encode(out))
        }
      }
    ]],
  }
  function ng.received() return json.decode(H.raw("GET", ng.url .. "/received").body) end
  return ng
end

--- read(path) -> the file's bytes, or nil when it cannot be opened (the
-- launcher's, which the CLI uses too)
H.read = require("kinot.file").read

--- kinot(args[, env[, stdin]]) -> stdout, stderr, exit code: this
-- checkout's bin/kinot under the runtime of the run, from the root; env:
-- "VAR=value ..." before it; stdin: text piped in
function H.kinot(args, env, stdin)
  local lua = H.runtime == "luajit" and "luajit" or "lua5.4"
  return H.capture(string.format("cd %s && %s %s bin/kinot %s", H.root, env or "", lua, args), stdin)
end

--- capture(cmd[, stdin]) -> stdout, stderr, exit code of a shell command
-- (stdin: text piped in)
function H.capture(cmd, stdin)
  local errf = os.tmpname()
  cmd = string.format("%s 2>%s; echo \"rc=$?\"", cmd, errf)
  if stdin then cmd = "printf '%s' '" .. stdin .. "' | (" .. cmd .. ")" end
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  local err = H.read(errf) or ""
  os.remove(errf)
  local rc = tonumber(out:match("rc=(%d+)\n?$"))
  return (out:gsub("rc=%d+\n?$", "")), err, rc
end

--- serve(sim, o) -> { url, port, prefix, pid_file, stop() }: this
-- checkout's `kinot serve --daemon` over the simulator sim, listening on a
-- free 127.0.0.1 port, its first sync done (within o.sync_within seconds,
-- 15 unless given). o.token: its KINOT_API_TOKEN (none otherwise), o.args:
-- more arguments, o.env: more of the environment ("VAR=value ..."),
-- o.pid_file: where (a temporary file otherwise, removed by stop()).
-- The caller stops it (finally, teardown); one that started but never
-- synced is stopped here before the error.
function H.serve(sim, o)
  o = o or {}
  local port = launcher.free_port()
  local pid_file = o.pid_file or os.tmpname()
  local s = { port = port, url = "http://127.0.0.1:" .. port, pid_file = pid_file }
  function s.stop()
    H.kinot("serve stop --pid-file " .. pid_file)
    if not o.pid_file then os.remove(pid_file) end
  end
  local out, err, rc = H.kinot(string.format("serve --daemon --pid-file %s --listen 127.0.0.1:%d %s", pid_file, port,
    o.args or ""), sim.env .. (o.token and (" KINOT_API_TOKEN=" .. o.token) or "") .. " " .. (o.env or ""))
  if rc ~= 0 then
    s.stop()
    error("kinot serve --daemon exited " .. tostring(rc) .. ": " .. out .. err, 2)
  end
  s.prefix = (H.read(pid_file) or ""):match("^(%S+)")
  local ok, synced = pcall(H.wait_for, function()
    local doc = H.json("GET", s.url .. "/api/fleet")
    return doc and type(doc.synced_at) == "string"
  end, o.sync_within or 15)
  if not (ok and synced) then
    s.stop()
    error(ok and ("kinot serve: no first sync within " .. (o.sync_within or 15) .. " s") or synced, 2)
  end
  return s
end

--- kinot_spawn(args[, env[, out[, err]]]) -> pid: this checkout's bin/kinot
-- started in the background (exec'd: pid is kinot's own) under the
-- runtime of the run, from the root; env: "VAR=value ..." before it; its
-- output to the file out (/dev/null unless given), stderr to err (with
-- the output unless given). The caller kills it (finally).
function H.kinot_spawn(args, env, out, err)
  local lua = H.runtime == "luajit" and "luajit" or "lua5.4"
  local p = io.popen(string.format("cd %s && %s exec %s bin/kinot %s >%s 2>%s & echo $!", H.root, env or "", lua, args,
    out or "/dev/null", err or "&1"))
  local pid = tonumber(p:read("*l"))
  p:close()
  return pid
end

--- sn_handler(name) -> dir: a new temporary directory holding name.lua, a
-- `kinot worker --handler name` module (LUA_PATH='dir/?.lua;;') that
-- appends each event's sn to dir/handled, a line each (H.lines reads it)
function H.sn_handler(name)
  local dir = H.tmpdir(name)
  H.write(dir .. "/" .. name .. ".lua", string.format([[
return function(ev)
  local f = assert(io.open(%q, "a"))
  f:write(ev.sn, "\n")
  f:close()
end
]], dir .. "/handled"))
  return dir
end

--- lines(path) -> the lines of the file ({} when there is none)
function H.lines(path)
  local out, f = {}, io.open(path)
  if f then
    for l in f:lines() do out[#out + 1] = l end
    f:close()
  end
  return out
end

--- handler_host(secret, opts_lua[, extra_http]) -> nginx whose
-- /cb is kinot.callback.handler(opts) (opts_lua: a Lua table's source, the
-- secret added), and whose /seen answers how many events a handler counted
-- with H.COUNT_EVENT (H.seen(ng))
function H.handler_host(secret, opts_lua, extra_http)
  return H.nginx {
    http = [[
      lua_shared_dict seen 1m;
      init_by_lua_block {
        local o = ]] .. opts_lua .. [[
        o.secret = "]] .. secret .. [["
        receive = require("kinot.callback").handler(o)
      }
    ]] .. (extra_http or ""),
    server = [[
      location = /cb { content_by_lua_block { receive() } }
      location = /seen { content_by_lua_block { ngx.say(ngx.shared.seen:get("n") or 0) } }
    ]],
  }
end
H.COUNT_EVENT = "function(ev) ngx.shared.seen:incr('n', 1, 0) end"
function H.seen(ng) return tonumber(H.raw("GET", ng.url .. "/seen").body) end

--- wait until fn() is truthy (polling), up to `seconds`
--- post_many(dir, url, bodies[, at]) -> status by body index (0: no
-- answer): bodies (a list) posted 64 at a time (spec/support/post_many.py,
-- the file of bodies in dir); at = { after = n answers, cmd = a shell
-- command run then, in the background; timeout = s a request, 20 }
function H.post_many(dir, url, bodies, at)
  at = at or {}
  local f = assert(io.open(dir .. "/bodies", "w"))
  for _, b in ipairs(bodies) do f:write(b, "\n") end
  f:close()
  local p = assert(io.popen(string.format("python3 %s/spec/support/post_many.py %s %s/bodies %d %s %s", H.root,
    launcher.sh_quote(url), dir, at.after or 0, launcher.sh_quote(at.cmd or ""), tostring(at.timeout or 20))))
  local st = {}
  for l in p:lines() do
    local i, s = l:match("^(%d+) (%d+)$")
    st[tonumber(i)] = tonumber(s)
  end
  p:close()
  return st
end

function H.wait_for(fn, seconds)
  local deadline = core.monotonic() + (seconds or 5)
  while core.monotonic() < deadline do
    local v = fn()
    if v then return v end
    core.sleep(0.05)
  end
  return fn()
end

function H.fixture(name)
  local f = assert(io.open(H.root .. "/spec/fixtures/" .. name, "rb"))
  local s = f:read("*a")
  f:close()
  return require("cjson").decode(s)
end

return H
