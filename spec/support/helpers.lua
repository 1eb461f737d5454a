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

-- ---------------------------------------------------------------- simulator

--- sim(opts) -> running simulator with admin helpers; call :stop()
-- (without the reference's example devices unless opts.examples: specs count
-- the devices they asked for)
function H.sim(opts)
  opts = opts or {}
  if opts.examples == nil then opts.examples = false end
  local sim = assert(launcher.start(opts))
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

local function mods()
  for _, d in ipairs { "/usr/lib/nginx/modules", "/usr/share/nginx/modules" } do
    local f = io.open(d .. "/ngx_http_lua_module.so")
    if f then f:close() return d end
  end
  error("nginx's Lua module is missing: run make deps")
end

--- nginx{http = "...", server = "...", port = n} -> {url, port, prefix, stop()}
-- `server` is the body of a server block listening on 127.0.0.1:port.
function H.nginx(o)
  local port = o.port or launcher.free_port()
  local p = io.popen("mktemp -d /tmp/kinot-spec.XXXXXX")
  local prefix = p:read("*l")
  p:close()
  local conf = table.concat({
    "load_module " .. mods() .. "/ndk_http_module.so;",
    "load_module " .. mods() .. "/ngx_http_lua_module.so;",
    launcher.user_directive(),
    "worker_processes " .. (o.workers or 1) .. ";",
    "pid " .. prefix .. "/nginx.pid;",
    "error_log " .. prefix .. "/error.log warn;",
    "events { worker_connections 1024; }",
    "http {",
    "  access_log off;",
    '  lua_package_path "' .. H.root .. "/lua/?.lua;" .. H.root .. '/lua/?/init.lua;;";',
    '  lua_package_cpath "' .. H.root .. '/build/5.1/?.so;;";',
    "  lua_socket_log_errors off;",
    o.http or "",
    "  server {",
    "    listen 127.0.0.1:" .. port .. (o.ssl and " ssl" or "") .. ";",
    o.server or "",
    "  }",
    "}",
  }, "\n")
  local f = assert(io.open(prefix .. "/nginx.conf", "w"))
  f:write(conf)
  f:close()
  -- stderr too: what nginx says when it refuses to start
  local ok = os.execute("nginx -p " .. prefix .. " -c nginx.conf -e " .. prefix .. "/error.log 2>" ..
    prefix .. "/stderr")
  local started = ok == true or ok == 0
  local scheme = o.ssl and "https" or "http"
  local ng = {
    port = port, prefix = prefix, url = scheme .. "://127.0.0.1:" .. port, started = started,
    stop = function(graceful) launcher.stop(prefix, graceful) end,
    log = function()
      local lf = io.open(prefix .. "/error.log")
      local s = lf and lf:read("*a") or ""
      if lf then lf:close() end
      return s
    end,
    stderr = function()
      local lf = io.open(prefix .. "/stderr")
      local s = lf and lf:read("*a") or ""
      if lf then lf:close() end
      return s
    end,
  }
  -- o.may_fail: the spec looks at a refusal to start itself (ng.started)
  if o.may_fail and not started then return ng end
  assert(started, "nginx failed to start: see " .. prefix .. "/error.log")
  launcher.wait_for_port(port)
  return ng
end

--- tls_nginx(name) -> an https nginx answering 'secure' everywhere, with a
-- fresh self-signed certificate for name (an IP address or a DNS name):
-- its path is .cert; stop() also removes it
function H.tls_nginx(name)
  local p = io.popen("mktemp -d /tmp/kinot-tls.XXXXXX")
  local dir = p:read("*l")
  p:close()
  local san = (name:match("^[%d.]+$") and "IP:" or "DNS:") .. name
  assert(os.execute("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=" .. name ..
    " -addext subjectAltName=" .. san .. " -keyout " .. dir .. "/key.pem -out " .. dir .. "/cert.pem >/dev/null 2>&1"))
  local ng = H.nginx {
    ssl = true,
    server = "ssl_certificate " .. dir .. "/cert.pem; ssl_certificate_key " .. dir .. "/key.pem;\n" ..
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

--- proxy() -> a forward HTTP proxy (spec/support/proxy.lua, its own
-- process) with url, lines() (what it was asked, a line a connection) and
-- stop()
function H.proxy()
  local port = launcher.free_port()
  local log = os.tmpname()
  local p = io.popen("lua5.4 " .. H.root .. "/spec/support/proxy.lua " .. port .. " " .. log ..
    " >/dev/null 2>&1 & echo $!")
  local pid = tonumber(p:read("*l"))
  p:close()
  launcher.wait_for_port(port)
  return {
    url = "http://127.0.0.1:" .. port, port = port,
    lines = function()
      local out, f = {}, io.open(log)
      if f then
        for l in f:lines() do out[#out + 1] = l end
        f:close()
      end
      return out
    end,
    stop = function()
      os.execute("kill " .. pid .. " 2>/dev/null")
      os.remove(log)
    end,
  }
end

--- receiver(secret) -> nginx that records callbacks it gets at /cb and
-- hands them back from /received (a JSON list of raw bodies)
function H.receiver()
  return H.nginx {
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
end

--- read(path) -> the file's bytes, or nil when it cannot be opened
function H.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

--- kinot(args[, env[, stdin]]) -> stdout, stderr, exit code: this
-- checkout's bin/kinot under the runtime of the run, from the root; env:
-- "VAR=value ..." before it; stdin: text piped in
function H.kinot(args, env, stdin)
  local errf = os.tmpname()
  local lua = H.runtime == "luajit" and "luajit" or "lua5.4"
  local cmd = string.format("cd %s && %s %s bin/kinot %s 2>%s; echo \"rc=$?\"", H.root, env or "", lua, args, errf)
  if stdin then cmd = "printf '%s' '" .. stdin .. "' | (" .. cmd .. ")" end
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  local f = io.open(errf)
  local err = f:read("*a")
  f:close()
  os.remove(errf)
  local rc = tonumber(out:match("rc=(%d+)\n?$"))
  return (out:gsub("rc=%d+\n?$", "")), err, rc
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
