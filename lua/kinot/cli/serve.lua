-- `kinot serve`: the ready receiver, like `kinot sim` an nginx with the Lua
-- module on this machine: POST /kinot/callback (the verified handler
-- feeding the twin), GET /api/... (the twin's JSON API), a sync at start
-- and every --sync-interval (worker 0 of each host, a log line each).
-- `kinot serve stop` stops one started with --daemon.  Hooked from
-- cli/init.lua (define + run).  The in-nginx side is kinot.serve.app.
local launcher = require "kinot.sim.launcher"
local errors = require "kinot.errors"

local M = {}

-- $KINOT_SERVE_PID_FILE and $KINOT_SERVE_LISTEN change the defaults (a
-- script, or a test, that runs the documented commands somewhere else)
M.DEFAULT_PID_FILE = os.getenv("KINOT_SERVE_PID_FILE") or "/tmp/kinot-serve.pid"
M.DEFAULT_LISTEN = os.getenv("KINOT_SERVE_LISTEN") or "127.0.0.1:8080"

local function usage(msg) errors.misuse(msg) end

-- the CAs nginx trusts for a rediss:// Redis without --redis-ca-file (Debian's bundle)
M.SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"

--- define(parser): the `serve` command
function M.define(p, ex)
  local s = p:command("serve", "Run the live twin's receiver: callbacks in, the fleet's state out (nginx + Lua)")
    :epilog(ex({ "kinot serve --daemon                       # on 127.0.0.1:8080, the twin in a lua_shared_dict",
                 "kinot serve --groups bays.csv --sync-interval 60 --dtus 644219880",
                 "kinot serve --redis redis://127.0.0.1:6379/0 --listen 127.0.0.1:8081   # many hosts, one twin",
                 "kinot serve stop" },
               "Credentials from KINOT_APP_KEY, KINOT_APP_SECRET, KINOT_ENDPOINT (and KINOT_CALLBACK_SECRET, " ..
               "KINOT_API_TOKEN, KINOT_REDIS_URL). The JSON API and the twin: docs/fleet.md. The dashboard, GET / " ..
               "(open the printed URL in a browser; its commands need the API token): docs/dashboard.md."))
  s:command_target("serve_sub")
  s:require_command(false)
  s:option("--listen", "Address:port to listen on (default $KINOT_SERVE_LISTEN, else 127.0.0.1:8080)", M.DEFAULT_LISTEN)
  s:option("--redis", "Keep the twin in Redis (many hosts), redis://[:password@]host:port/db " ..
    "(default $KINOT_REDIS_URL; none: a lua_shared_dict on this host); rediss:// for TLS")
  require("kinot.cli.redis_tls").add(s)
  s:option("--groups", "CSV or JSON file mapping serials to zone / level / bay")
  s:option("--dtus", "The DTUs to follow, serials separated by commas (the API has no list of them)")
  s:option("--sync-interval", "Seconds between reconciliation scans (0: only at start)", "300"):convert(tonumber)
  s:option("--sweep-interval", "Seconds between the stale sweeps, a timer of its own (0: only with a sync)", "60")
    :convert(tonumber)
  s:option("--stale-after", "Seconds without an update before a device is stale", "86400"):convert(tonumber)
  s:option("--api-token", "Token the JSON API needs from anywhere but loopback, and every command, from loopback " ..
    "too (default $KINOT_API_TOKEN)")
  s:option("--callback-secret", "The callbacks' secret (default $KINOT_CALLBACK_SECRET, else the app secret)")
  s:option("--workers", "nginx worker processes", "2"):convert(tonumber)
  s:option("--dict-size", "The lua_shared_dict's size (~120m per 100,000 devices)", "128m")
  s:flag("--daemon", "Run in the background (stop with `kinot serve stop`)")
  s:option("--pid-file", "Where --daemon records the server (default $KINOT_SERVE_PID_FILE, else /tmp/kinot-serve.pid)")
  local stop = s:command("stop", "Stop a server started with --daemon")
    :epilog(ex { "kinot serve stop", "kinot serve stop --pid-file /run/kinot-serve.pid" })
  stop:option("--pid-file", "As given to --daemon (default $KINOT_SERVE_PID_FILE, else /tmp/kinot-serve.pid)")
end

-- inside the launcher's nginx.conf (launcher.nginx_conf: the module, the
-- pid, the logs, the Lua paths)
local HTTP = [[
${ssl}  lua_shared_dict kinot_fleet ${dict_size};
  lua_shared_dict kinot_serve_dedupe 16m;
  lua_shared_dict kinot_serve_dedupe_busy 1m;  # in-progress marks: never evicted (docs/callbacks.md)
  lua_shared_dict kinot_serve_metrics 1m;  # GET /metrics (docs/metrics.md)
  lua_shared_dict kinot_serve_commands 4m;  # the dashboard's commands: their records, one in course per device
  init_by_lua_block { require("kinot.serve.app").configure(dofile("${prefix}/serve_config.lua")) }
  init_worker_by_lua_block { require("kinot.serve.app").init_worker() }
  server {
    listen ${listen};
    location = /kinot/callback { content_by_lua_block { require("kinot.serve.app").callback() } }
    location /api/ { content_by_lua_block { require("kinot.serve.app").api() } }
    location = /metrics { content_by_lua_block { require("kinot.serve.app").metrics() } }
    # a command's body is a few dozen bytes: one larger than memory holds
    # (nginx would write it to a file, before the token is checked) is 413
    location ~ ^/api/(devices/[^/]+/commands|commands/[^/]+)$ {
      client_max_body_size 8k;
      client_body_buffer_size 8k;
      content_by_lua_block { require("kinot.serve.app").commands() }
    }
    location = / { content_by_lua_block { require("kinot.serve.app").dashboard() } }
    location / { return 404 '{"error":"not a kinot serve path"}'; }
  }
]]

-- one server per pid file (kinot.cli.pidfile: a live one refused, a stale
-- one taken over, only a kinot serve's own directory ever removed)
local PIDFILE = require("kinot.cli.pidfile").new { noun = "kinot serve", command = "kinot serve",
                                                    marker = "serve_config.lua", path = "/api/fleet" }

local function stop(args, out, EXIT)
  if PIDFILE:stop(args.pid_file, out) then out:print("kinot serve stopped") end
  return EXIT.ok
end

local function env(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

--- start(cfg, opts) -> server {url, prefix, pid, stop()} | nil, err, why
local function start(cfg, o)
  local parts, err = launcher.nginx_parts()
  if not parts then return nil, err end
  local host, port = o.listen:match("^(.+):(%d+)$")
  port = tonumber(port)
  if not port then return nil, "--listen must be address:port (got " .. o.listen .. ")", "usage" end
  if host == "127.0.0.1" and launcher.port_busy(port) then
    return nil, "port " .. port .. " on 127.0.0.1 is already in use: stop what listens there or pick another --listen",
      "port_in_use"
  end
  -- a private directory: the configuration holds the credentials
  local p = io.popen("umask 077 && mktemp -d /tmp/kinot-serve.XXXXXX")
  local prefix = p:read("*l")
  p:close()
  local f = assert(io.open(prefix .. "/serve_config.lua", "wb"))
  f:write("return ", launcher.serialize(cfg), "\n")
  f:close()
  local conf = launcher.nginx_conf(parts, {
    prefix = prefix, listen = o.listen, workers = o.workers, log_level = "notice", dict_size = o.dict_size,
    ssl = o.ssl or "",
  }, HTTP)
  local started, pid_or_log = launcher.start_nginx(parts, prefix, port, conf)
  if not started then
    os.execute("rm -rf " .. launcher.sh_quote(prefix))
    return nil, "nginx did not start: " .. pid_or_log
  end
  local pid = pid_or_log
  local shown = (host == "0.0.0.0" or host == "[::]") and "127.0.0.1" or host
  return { url = "http://" .. shown .. ":" .. port, prefix = prefix, pid = pid,
           stop = function() launcher.stop(prefix) os.execute("rm -rf " .. launcher.sh_quote(prefix)) end }
end

-- "2026/12/03 09:50:00 [notice] 12#12: *3 [lua] app.lua:31: sync_once(): kinot serve: sync: ..., context: ngx.timer"
-- -> "2026/12/03 09:50:00", "sync: ..." (nil for the log's other lines)
function M.log_line(line)
  local at, text = line:match("^(%d+/%d+/%d+ %d+:%d+:%d+) .-kinot serve: (.*)$")
  if not at then return nil end
  text = text:gsub(", context: [%w%._]+$", "")
  return at, text
end

--- follow_log(log, out): the sync lines (and the failures) written to the
-- server's log since the last call, on the terminal: through out:print,
-- escaped (a failure's text can hold what the platform answered)
function M.follow_log(log, out)
  local f = io.open(log.path, "rb")
  if not f then return end
  f:seek("set", log.pos)
  local chunk = f:read("*a") or ""
  log.pos = f:seek()
  f:close()
  local text = log.rest .. chunk
  local last = 1
  for line, after in text:gmatch("([^\n]*)\n()") do
    last = after
    local at, what = M.log_line(line)
    if at then out:print(out:paint("dim", at), " ", what) end
  end
  log.rest = text:sub(last)
  out.out:flush()
end

--- run(args, out, EXIT) -> exit code
function M.run(args, out, EXIT)
  args.pid_file = args.pid_file or M.DEFAULT_PID_FILE
  if args.stop then return stop(args, out, EXIT) end
  local cfg = {
    app_key = args.app_key or env("KINOT_APP_KEY"), app_secret = args.app_secret or env("KINOT_APP_SECRET"),
    endpoint = args.endpoint or env("KINOT_ENDPOINT"),
    callback_secret = args.callback_secret or env("KINOT_CALLBACK_SECRET"),
    api_token = args.api_token or env("KINOT_API_TOKEN"), redis = args.redis or env("KINOT_REDIS_URL"),
    sync_interval = args.sync_interval, sweep_interval = args.sweep_interval, stale_after = args.stale_after,
    dtus = {},
  }
  if cfg.api_token == "" then cfg.api_token = nil end -- --api-token '': none, the commands off
  if cfg.api_token and not cfg.api_token:match("^[\33-\126]+$") then
    usage("--api-token (or KINOT_API_TOKEN) must be printable ASCII without spaces: it travels in an " ..
      "Authorization header")
  end
  if not (cfg.app_key and cfg.app_secret and cfg.endpoint) then
    usage("serve needs KINOT_APP_KEY, KINOT_APP_SECRET and KINOT_ENDPOINT (or --app-key, --app-secret, --endpoint)")
  end
  if not args.sync_interval or args.sync_interval < 0 then usage("--sync-interval must be a number of seconds >= 0") end
  if not args.sweep_interval or args.sweep_interval < 0 then usage("--sweep-interval must be a number of seconds >= 0") end
  if not args.stale_after or args.stale_after <= 0 then usage("--stale-after must be a number of seconds > 0") end
  if not args.workers or args.workers < 1 or args.workers ~= math.floor(args.workers) then
    usage("--workers must be a whole number >= 1")
  end
  if not tostring(args.dict_size):match("^%d+[kKmMgG]?$") then usage("--dict-size must look like 128m") end
  for sn in (args.dtus or ""):gmatch("[^,%s]+") do
    local n = tonumber(sn)
    if not n then usage("--dtus holds serials separated by commas (got " .. sn .. ")") end
    cfg.dtus[#cfg.dtus + 1] = n
  end
  if args.groups then
    -- read here first: a wrong file is refused before anything starts
    require("kinot.fleet.groups").load(args.groups)
    local p = io.popen("realpath " .. launcher.sh_quote(args.groups))
    cfg.groups = p:read("*l") or args.groups
    p:close()
  end
  cfg.redis_tls = require("kinot.cli.redis_tls").of(args, cfg.redis)
  local ssl = ""
  if cfg.redis then
    local url = require("kinot.redis").check(cfg.redis, cfg.redis_tls, "--redis")
    if url.tls then
      -- inside nginx a rediss:// server is verified against nginx's own
      -- CAs (kinot.redis refuses ca_file there): --redis-ca-file, else the
      -- system's, to a depth that takes a chain with intermediates
      -- (the path as given is checked, then the one realpath prints, all
      -- of it: its first line alone named another file when the path held
      -- a newline)
      local ca = cfg.redis_tls and cfg.redis_tls.ca_file or M.SYSTEM_CAS
      local function plain(path)
        if path:find('["\\%c]') then usage("--redis-ca-file: a path without quotes, backslashes or controls, please") end
        return path
      end
      local p = io.popen("realpath " .. launcher.sh_quote(plain(ca)))
      local real = (p:read("*a") or ""):gsub("\n$", "")
      p:close()
      ca = plain(real ~= "" and real or ca)
      ssl = "  lua_ssl_trusted_certificate \"" .. ca .. "\";\n  lua_ssl_verify_depth 5;\n"
      if cfg.redis_tls then cfg.redis_tls.ca_file = nil end
    end
  end
  local signals = not args.daemon and require "kinot.simsignal"
  if signals then signals.block_signals() end
  local stale = args.daemon and PIDFILE:check(args.pid_file, out)
  local srv, err, why = start(cfg, { listen = args.listen, workers = args.workers, dict_size = args.dict_size,
                                     ssl = ssl })
  if not srv then
    if signals then signals.block_signals(false) end
    if why == "port_in_use" or why == "usage" then usage(err) end
    error(err, 0)
  end
  if args.daemon then PIDFILE:record(args.pid_file, stale, srv.prefix) end
  local info = { url = srv.url, callback_url = srv.url .. "/kinot/callback", api = srv.url .. "/api/fleet",
                 prefix = srv.prefix, store = cfg.redis and "redis" or "shared", log = srv.prefix .. "/error.log",
                 dashboard = srv.url .. "/" }
  if args.json then out:emit_json(info) else
    out:print(info.callback_url)
    out:print(out:paint("dim", string.format("  the twin: %s (store %s); log %s", info.api, info.store, info.log)))
    out:print(out:paint("dim", "  the dashboard: " .. info.dashboard .. (cfg.api_token and "" or
      " (its commands are off: no API token, --api-token or KINOT_API_TOKEN)")))
    out:print(out:paint("dim", "  point the platform's callbacks here: kinot notifications set --device-type lock " ..
      "--status-url " .. info.callback_url))
  end
  out.out:flush()
  if args.daemon then
    if not args.json then out:print(out:paint("dim", "  stop with: kinot serve stop --pid-file " .. args.pid_file)) end
    return EXIT.ok
  end
  local log = { path = info.log, pos = 0, rest = "" }
  local sig
  repeat
    sig = signals.wait_signal(srv.pid, 1)
    if not args.json then M.follow_log(log, out) end
  until sig ~= "timeout"
  srv.stop()
  if not args.json then out.err:write("kinot serve stopped (", sig, ")\n") end
  -- Ctrl-C ends it as it ends any command: 130 (128 + SIGINT); SIGTERM or
  -- SIGHUP (a supervisor): 0
  return sig == "SIGINT" and EXIT.interrupted or EXIT.ok
end

return M
