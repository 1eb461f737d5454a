-- `kinot` on the command line (DESIGN §9).  Exit codes:
--   0 success, 1 a check failed (`verify` refused the body),
--   2 usage error, 3 API error (platform, gateway, signature, decode ...),
--   4 network error (network, timeout, tls).
local argparse = require "argparse"
local kinot = require "kinot"
local errors = require "kinot.errors"
local json = require "kinot.json"
local output = require "kinot.cli.output"

local M = {}

local EXIT = { ok = 0, check = 1, usage = 2, api = 3, network = 4 }
M.EXIT = EXIT
local NETWORK_KINDS = { network = true, timeout = true, tls = true }
local DEFAULT_PID_FILE = "/tmp/kinot-sim.pid"

local LOCK_COLUMNS = { { "sn", "SN" }, { "state", "LOCK" }, { "car", "CAR" }, { "voltage", "VOLT" },
                       { "low_battery", "LOW" }, { "faults", "FAULTS" }, { "rs_si", "RS_SI" }, { "updated_at", "UPDATED" } }
local SENSOR_COLUMNS = { { "sn", "SN" }, { "active", "ACTIVE" }, { "car", "CAR" }, { "voltage", "VOLT" },
                         { "low_battery", "LOW" }, { "faults", "FAULTS" }, { "rs_si", "RS_SI" }, { "updated_at", "UPDATED" } }
local FAULTS = { "coil_fault", "bar_position_error", "motor_fail", "shell_opened" }

local function row_of(d)
  local f = {}
  for _, k in ipairs(FAULTS) do if d[k] == 1 then f[#f + 1] = k end end
  local r = {}
  for k, v in pairs(d) do r[k] = v end
  r.state = d.locked == 1 and "up" or d.locked == 0 and "down" or nil
  r.car = d.car_detected == 1 and "yes" or "no"
  r.faults = #f > 0 and table.concat(f, ",") or "-"
  r.low_battery = d.low_battery == 1 and "LOW" or "-"
  r.active = d.active == 0 and "frozen" or d.active == 1 and "active" or nil
  return r
end

local function build_parser()
  local p = argparse("kinot", "The Kinot open platform (LoRa parking locks, sensors, DTUs) from the command line.")
    :epilog("Credentials: --app-key/--app-secret or KINOT_APP_KEY/KINOT_APP_SECRET; endpoint: --endpoint or KINOT_ENDPOINT.\n" ..
            "Exit codes: 0 ok, 1 check failed, 2 usage, 3 API error, 4 network error.")
  p:option("--app-key", "AppKey (default $KINOT_APP_KEY)")
  p:option("--app-secret", "AppSecret (default $KINOT_APP_SECRET)")
  p:option("--endpoint", "API base URL (default $KINOT_ENDPOINT or the platform's)")
  p:option("--timeout", "Total timeout per request, seconds"):convert(tonumber)
  p:flag("--json", "One JSON document on stdout")
  p:flag("--jsonl", "One JSON object a line (fleet listings)")
  p:flag("--no-color", "No colour even on a terminal")
  p:flag("--version", "lua-kinot, Lua and libcurl versions"):action(function()
    local core = require "kinot.core"
    print("kinot " .. core.version .. " (" .. (rawget(_G, "jit") and jit.version or _VERSION) .. "; " .. core.curl_version() .. ")")
    os.exit(0)
  end)
  p:command_target("cmd")

  for _, what in ipairs { { "lockers", "parking locks" }, { "sensors", "parking sensors" } } do
    local c = p:command(what[1], "List " .. what[2] .. " (one page, or --all)")
    c:option("--offset", "Page index, from 0", "0"):convert(tonumber)
    c:option("--limit", "Devices a page, 10..100", "10"):convert(tonumber)
    c:flag("--all", "Every device, all pages")
    c:option("--concurrency", "Pages in flight with --all", "8"):convert(tonumber)
  end
  p:command("locker", "One parking lock"):argument("sn", "Lock SN")
  p:command("sensor", "One parking sensor"):argument("sn", "Sensor SN")
  p:command("dtu", "One DTU gateway"):argument("sn", "DTU SN")

  local cmd = p:command("command", "Send, read and await device commands")
  cmd:command_target("sub")
  local send = cmd:command("send", "Send a command (value 1: lock BT code reset / sensor activate; 2: sensor freeze)")
  send:argument("sn", "Device SN")
  send:option("--value", "Parameter value", "1"):convert(tonumber)
  send:option("--key", "Parameter key", "handle")
  send:flag("--wait", "Wait until it succeeds or fails")
  send:option("--wait-timeout", "Seconds to wait", "60"):convert(tonumber)
  cmd:command("get", "Read a command"):argument("guid", "Command guid")
  local wait = cmd:command("wait", "Wait until a command succeeds or fails")
  wait:argument("guid", "Command guid")
  wait:option("--wait-timeout", "Seconds to wait", "60"):convert(tonumber)

  local n = p:command("notifications", "Callback settings")
  n:command_target("sub")
  n:command("get", "Read the callback URLs of a device type"):argument("device_type", "18 / lock or 34 / sensor")
  local set = n:command("set", "Set the callback URLs of a device type")
  set:option("--device-type", "18 / lock or 34 / sensor"):count(1)
  set:option("--status-url", "status_changed callback URL")
  set:option("--command-url", "command_resp callback URL")
  local test = n:command("test", "Ask the platform to send a test callback now")
  test:argument("sn", "Device SN")
  test:option("--type", "status_changed or command_resp", "status_changed")

  local rep = p:command("report", "Fleet health: occupancy, faults, low battery, weakest signal, offline DTUs")
  rep:option("--concurrency", "Pages in flight", "8"):convert(tonumber)
  rep:option("--dtu", "A DTU SN to check (repeatable; also $KINOT_DTUS=sn,sn)"):count("*")

  local sign = p:command("sign", "Show the string-to-sign, signed headers and signature of a request (never the secret)")
  sign:option("--method", "HTTP method", "GET")
  sign:argument("path", "Path as sent, e.g. /open/lora/v1/lockers")
  sign:option("--query", "name=value (repeatable, raw values)"):count("*")
  sign:option("--form", "name=value of a form body (repeatable)"):count("*")
  sign:option("--header", "'Name: value' as sent (repeatable)"):count("*")
  sign:option("--sign-header", "extra header name to sign (repeatable)"):count("*")
  sign:option("--body", "JSON body (adds Content-MD5 and Content-Type)")
  sign:option("--timestamp", "X-Ca-Timestamp (default now)")
  sign:option("--nonce", "X-Ca-Nonce (default a fresh UUID)")
  sign:option("--signature-method", "HmacSHA256 or HmacSHA1", "HmacSHA256")

  local verify = p:command("verify", "Check a callback body: canonical string and verdict")
  verify:argument("file", "File with the raw body, or - for stdin")
  verify:option("--secret", "Callback secret (default the AppSecret)"):count("*")

  local sim = p:command("sim", "Run the local platform simulator (nginx + Lua)")
  sim:command_target("sub")
  sim:require_command(false)
  sim:option("--port", "Port on 127.0.0.1 (default a free one)"):convert(tonumber)
  sim:option("--locks", "Locks in the fleet", "50"):convert(tonumber)
  sim:option("--sensors", "Sensors in the fleet", "50"):convert(tonumber)
  sim:option("--dtus", "DTUs", "5"):convert(tonumber)
  sim:option("--seed", "Fleet seed", "1"):convert(tonumber)
  sim:option("--command-pace", "Seconds per command state", "0.5"):convert(tonumber)
  sim:option("--failure-rate", "Share of commands that fail, 0..1", "0"):convert(tonumber)
  sim:flag("--daemon", "Run in the background (stop with `kinot sim stop`)")
  sim:option("--pid-file", "Where --daemon records the simulator (default " .. DEFAULT_PID_FILE .. ")")
  local stop = sim:command("stop", "Stop a simulator started with --daemon")
  stop:option("--pid-file", "As given to --daemon (default " .. DEFAULT_PID_FILE .. ")")
  require("kinot.cli.worker").add(p) -- kinot worker (cli/worker.lua)
  return p
end

-- ------------------------------------------------------------ helpers

local function client_of(args)
  local key = args.app_key or os.getenv("KINOT_APP_KEY")
  local secret = args.app_secret or os.getenv("KINOT_APP_SECRET")
  if not key or key == "" or not secret or secret == "" then
    error({ usage = "credentials missing: pass --app-key and --app-secret, or set KINOT_APP_KEY and KINOT_APP_SECRET" }, 0)
  end
  return kinot.new { app_key = key, app_secret = secret,
                     endpoint = args.endpoint or os.getenv("KINOT_ENDPOINT"), timeout = args.timeout }
end

local function check(v, err)
  if v == nil and err ~= nil then error(err, 0) end
  return v
end

local function read_all(path)
  local f, e
  if path == "-" then f = io.stdin else f, e = io.open(path, "rb") end
  if not f then error({ usage = "cannot read " .. path .. ": " .. tostring(e) }, 0) end
  local s = f:read("*a")
  if f ~= io.stdin then f:close() end
  return s
end

local function pairs_of(list, sep, what)
  local out = {}
  for _, item in ipairs(list or {}) do
    local k, v = item:match("^([^" .. sep .. "]*)" .. sep .. "%s*(.*)$")
    if not k then error({ usage = what .. " must look like name" .. sep .. "value (got " .. item .. ")" }, 0) end
    out[#out + 1] = { k, v }
  end
  return out
end

-- ------------------------------------------------------------ commands

local run = {}

local function listing(args, out, which)
  local c = client_of(args)
  local columns = which == "lockers" and LOCK_COLUMNS or SENSOR_COLUMNS
  if args.all then
    local each = which == "lockers" and c.each_locker or c.each_sensor
    local rows = {}
    local opts = { limit = 100, concurrency = args.concurrency,
                   on_page = function(d, t) out:progress(d, t, which) end }
    for d in each(c, opts) do
      if args.jsonl then out:emit_json(d) else rows[#rows + 1] = d end
    end
    if args.json then out:emit_json(rows)
    elseif not args.jsonl then
      local display = {}
      for i, d in ipairs(rows) do display[i] = row_of(d) end
      out:table(display, columns)
    end
    return EXIT.ok
  end
  local page = check(c[which](c, { offset = args.offset, limit = args.limit }))
  if args.json then
    out:emit_json(page)
  elseif args.jsonl then
    for _, d in ipairs(page.objects) do out:emit_json(d) end
  else
    local display = {}
    for i, d in ipairs(page.objects) do display[i] = row_of(d) end
    out:table(display, columns)
    out:print(out:paint("dim", string.format("page %d (limit %d) of %d %s", page.offset, page.limit, page.count or 0, which)))
  end
  return EXIT.ok
end

run.lockers = function(a, o) return listing(a, o, "lockers") end
run.sensors = function(a, o) return listing(a, o, "sensors") end

local function one(args, out, method)
  local c = client_of(args)
  local d = check(c[method](c, args.sn))
  if args.json or args.jsonl then out:emit_json(d) return EXIT.ok end
  local keys = {}
  for k in pairs(d) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return a == "sn" or (b ~= "sn" and a < b) end)
  local kv = {}
  for i, k in ipairs(keys) do kv[i] = { k, d[k] } end
  out:kv(kv)
  return EXIT.ok
end

run.locker = function(a, o) return one(a, o, "locker") end
run.sensor = function(a, o) return one(a, o, "sensor") end
run.dtu = function(a, o) return one(a, o, "dtu_device") end

local function show_command(args, out, cmd)
  if args.json or args.jsonl then out:emit_json(cmd) return end
  local status = cmd.command_status
  local colour = status == "succeeded" and "green" or status == "failed" and "red" or "yellow"
  out:kv { { "guid", cmd.guid }, { "sn", cmd.sn }, { "status", out:paint(colour, tostring(status)) },
           { "parameter", type(cmd.parameter) == "table" and json.encode(cmd.parameter) or tostring(cmd.parameter) } }
end

run.command = function(args, out)
  local c = client_of(args)
  local cmd
  if args.send then
    cmd = check(c:send_command(args.sn, { key = args.key, value = args.value }))
    if args.wait then cmd = check(c:wait_command(cmd.guid, { timeout = args.wait_timeout })) end
  elseif args.get then
    cmd = check(c:command(args.guid))
  else
    cmd = check(c:wait_command(args.guid, { timeout = args.wait_timeout }))
  end
  show_command(args, out, cmd)
  return (cmd.command_status == "failed") and EXIT.api or EXIT.ok
end

run.notifications = function(args, out)
  local c = client_of(args)
  local dt = args.device_type and (tonumber(args.device_type) or args.device_type)
  local r
  if args.get then
    r = check(c:notifications(dt))
  elseif args.set then
    r = check(c:set_notifications { device_type = dt, status_changed_callback_url = args.status_url,
                                    command_resp_callback_url = args.command_url })
  else
    r = check(c:test_notification(args.sn, args.type))
  end
  if args.json or args.jsonl then out:emit_json(r) return EXIT.ok end
  local kv = {}
  for _, k in ipairs { "device_type", "sn", "status_changed_callback_url", "command_resp_callback_url", "callback_url",
                       "error_detail", "update_at" } do
    if r[k] ~= nil and r[k] ~= json.null then kv[#kv + 1] = { k, r[k] } end
  end
  out:kv(kv)
  return EXIT.ok
end

run.report = function(args, out)
  local report = require "kinot.cli.report"
  local c = client_of(args)
  local dtus = {}
  for _, s in ipairs(args.dtu or {}) do dtus[#dtus + 1] = s end
  for s in (os.getenv("KINOT_DTUS") or ""):gmatch("[^,%s]+") do dtus[#dtus + 1] = s end
  local r = report.build(c, { concurrency = args.concurrency, dtus = dtus,
                              on_page = function(kind, d, t) out:progress(d, t, kind) end })
  if args.json or args.jsonl then out:emit_json(r) else report.print(out, r) end
  return EXIT.ok
end

run.sign = function(args, out)
  local core = require "kinot.core"
  local secret = args.app_secret or os.getenv("KINOT_APP_SECRET")
  if not secret then error({ usage = "sign needs the secret: --app-secret or KINOT_APP_SECRET (it is never printed)" }, 0) end
  local headers = {}
  for _, h in ipairs(pairs_of(args.header, ":", "--header")) do headers[h[1]] = h[2] end
  local function default(name, v) for k in pairs(headers) do if k:lower() == name:lower() then return end end headers[name] = v end
  default("Accept", "application/json")
  default("X-Ca-Key", args.app_key or os.getenv("KINOT_APP_KEY") or "")
  default("X-Ca-Timestamp", args.timestamp or tostring(core.now_ms()))
  default("X-Ca-Nonce", args.nonce or core.uuid())
  default("X-Ca-Signature-Method", args.signature_method)
  if args.body then
    default("Content-Type", "application/json; charset=UTF-8")
    default("Content-MD5", core.content_md5(args.body))
  end
  local r = kinot.sign_request { method = args.method:upper(), path = args.path, query = pairs_of(args.query, "=", "--query"),
                                 form = #(args.form or {}) > 0 and pairs_of(args.form, "=", "--form") or nil,
                                 headers = headers, sign_headers = args.sign_header, app_secret = secret,
                                 signature_method = args.signature_method }
  if args.json or args.jsonl then
    out:emit_json { string_to_sign = r.string_to_sign, signed_headers = r.signed_headers, signature = r.signature,
                    headers = headers }
    return EXIT.ok
  end
  out:print(out:paint("bold", "string-to-sign") .. out:paint("dim", " (each line ends in \\n but the last)"))
  for line in (r.string_to_sign .. "\n"):gmatch("(.-)\n") do out:print("  ", line == "" and out:paint("dim", "(empty)") or line) end
  out:print("")
  local names = {}
  for k in pairs(headers) do names[#names + 1] = k end
  table.sort(names)
  local kv = {}
  for _, k in ipairs(names) do kv[#kv + 1] = { k, headers[k] } end
  kv[#kv + 1] = { "X-Ca-Signature-Headers", table.concat(r.signed_headers, ",") }
  kv[#kv + 1] = { "X-Ca-Signature", r.signature }
  out:kv(kv)
  return EXIT.ok
end

run.verify = function(args, out)
  local callback = require "kinot.callback"
  local body = read_all(args.file)
  local secrets = args.secret and #args.secret > 0 and args.secret or { args.app_secret or os.getenv("KINOT_APP_SECRET") }
  if not secrets[1] then error({ usage = "verify needs a secret: --secret, --app-secret or KINOT_APP_SECRET" }, 0) end
  local canonical, cerr = callback.canonical(body)
  local ev, err = callback.verify(body, { secret = secrets, max_body = math.huge })
  if args.json or args.jsonl then
    out:emit_json { valid = ev ~= nil, canonical = canonical or json.null, reason = err and err.reason or json.null,
                    message = err and err.message or json.null, kind = ev and ev.kind or json.null,
                    device = ev and ev.device or json.null, sn = ev and ev.sn or json.null }
  else
    out:kv { { "canonical", canonical or ("(none: " .. tostring(cerr and cerr.message) .. ")") } }
    if ev then
      out:kv { { "verdict", out:paint("green", "valid") }, { "event", ev.kind .. ", " .. ev.device .. " " .. tostring(ev.sn) } }
    else
      out:kv { { "verdict", out:paint("red", "refused: " .. err.message) } }
    end
  end
  return ev and EXIT.ok or EXIT.check
end

run.sim = function(args, out)
  local launcher = require "kinot.sim.launcher"
  args.pid_file = args.pid_file or DEFAULT_PID_FILE
  if args.stop then
    local f = io.open(args.pid_file)
    if not f then error({ usage = "no simulator recorded in " .. args.pid_file }, 0) end
    local prefix = f:read("*l")
    f:close()
    launcher.stop(prefix)
    os.remove(args.pid_file)
    os.execute("rm -rf " .. launcher.sh_quote(prefix))
    out:print("simulator stopped")
    return EXIT.ok
  end
  local opts = {
    port = args.port, app_key = args.app_key, app_secret = args.app_secret, locks = args.locks,
    sensors = args.sensors, dtus = args.dtus, seed = args.seed, command_pace = args.command_pace,
    failure_rate = args.failure_rate,
  }
  local core = require "kinot.core"
  -- held from before nginx starts: a signal in between must not be lost
  if not args.daemon then core.block_signals() end
  local sim, err = launcher.start(opts)
  if not sim then
    if not args.daemon then core.block_signals(false) end
    error(err, 0)
  end
  local info = { url = sim.url, endpoint = sim.endpoint, admin = sim.admin, app_key = sim.app_key,
                 app_secret = sim.app_secret, prefix = sim.prefix }
  if args.json then out:emit_json(info) else
    out:print(sim.endpoint)
    out:print(out:paint("dim", string.format("  app key %s, app secret %s (test credentials), admin %s",
      sim.app_key, sim.app_secret, sim.admin)))
    out:print(out:paint("dim", string.format("  export KINOT_ENDPOINT=%s KINOT_APP_KEY=%s KINOT_APP_SECRET=%s",
      sim.endpoint, sim.app_key, sim.app_secret)))
  end
  out.out:flush()
  if args.daemon then
    local f = assert(io.open(args.pid_file, "w"))
    f:write(sim.prefix, "\n")
    f:close()
    if not args.json then out:print(out:paint("dim", "  stop with: kinot sim stop --pid-file " .. args.pid_file)) end
    return EXIT.ok
  end
  -- foreground: until SIGINT / SIGTERM / SIGHUP, then nginx goes with us
  local why = core.wait_signal(sim.pid)
  launcher.stop(sim.prefix)
  os.execute("rm -rf " .. launcher.sh_quote(sim.prefix))
  if not args.json then out.err:write("simulator stopped (", why, ")\n") end
  return EXIT.ok
end

run.worker = function(a, o) return require("kinot.cli.worker").run(a, o) end

-- ------------------------------------------------------------ main

function M.main(argv, io_opts)
  local parser = build_parser()
  local ok, args = parser:pparse(argv)
  local base = output.new { stdout = io_opts and io_opts.stdout, stderr = io_opts and io_opts.stderr }
  if not ok then
    base:error(args)
    base.err:write(parser:get_usage(), "\n")
    return EXIT.usage
  end
  local out = output.new { json = args.json, jsonl = args.jsonl, no_color = args.no_color,
                           stdout = io_opts and io_opts.stdout, stderr = io_opts and io_opts.stderr }
  local okr, res = pcall(run[args.cmd], args, out)
  if okr then return res end
  if type(res) == "table" and res.usage then
    out:error(res.usage)
    return EXIT.usage
  end
  if errors.is(res) then
    out:error(tostring(res))
    return NETWORK_KINDS[res.kind] and EXIT.network or EXIT.api
  end
  -- misuse raised by the SDK carries the caller's position: drop it
  local msg = tostring(res):gsub("^[^\n]-:%d+: (kinot: )", "%1")
  if msg:match("^kinot: ") then -- misuse caught by the SDK: bad sn, limit ...
    out:error(msg:gsub("^kinot: ", ""))
    return EXIT.usage
  end
  out:error("internal error: " .. msg)
  return EXIT.api
end

return M
