-- `kinot` on the command line (docs/cli.md).  Exit codes:
--   0 success, 1 a check failed (`verify` refused the body),
--   2 usage error, 3 API error (platform, gateway, signature, decode ...),
--   4 network error (network, timeout, tls), 5 a command's outcome is
--   unknown (it may or may not have reached the platform: check before
--   sending again), 6 a wait for a command timed out (the command is still
--   pending).
-- Which one is decided by the error's type (kinot.errors), never its text.
local argparse = require "argparse"
local kinot = require "kinot"
local core = require "kinot.core_loader"
local errors = require "kinot.errors"
local json = require "kinot.json"
local output = require "kinot.cli.output"
local validate = require "kinot.validate"
local redact = require "kinot.redact"
local read_file = require("kinot.file").read
local vocabulary = require "kinot.vocabulary"

local misuse = errors.misuse

local M = {}

local EXIT = { ok = 0, check = 1, usage = 2, api = 3, network = 4, unknown_outcome = 5, wait_timeout = 6,
               interrupted = 130 }
M.EXIT = EXIT
local NETWORK_KINDS = { network = true, timeout = true, tls = true }

local LOCK_COLUMNS = { { "sn", "SN" }, { "state", "LOCK" }, { "car", "CAR" }, { "voltage", "VOLT" },
                       { "low_battery", "LOW" }, { "faults", "FAULTS" }, { "rs_si", "RS_SI" }, { "updated_at", "UPDATED" } }
local SENSOR_COLUMNS = { { "sn", "SN" }, { "active", "ACTIVE" }, { "car", "CAR" }, { "voltage", "VOLT" },
                         { "low_battery", "LOW" }, { "faults", "FAULTS" }, { "rs_si", "RS_SI" }, { "updated_at", "UPDATED" } }
local INT_LIMIT = vocabulary.INT_LIMIT -- 2^53: a number written exactly (the integer rule's bound)
local FAULTS = vocabulary.faults.lock -- a sensor's one fault flag is a lock's too
local DEVICE_TYPE_HELP = vocabulary.device_codes.lock .. " / lock or " .. vocabulary.device_codes.sensor .. " / sensor"

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

-- a converter for a numeric option that names the option when the value is
-- not a number, or is an integer beyond +-2^53: a double (LuaJIT's every
-- number) cannot hold it, and would send a neighbour instead
local function number(option)
  return function(s)
    local n = tonumber(s)
    if n == nil or n ~= n or n == math.huge or n == -math.huge then
      return nil, option .. " must be a number (got '" .. s .. "')"
    end
    local sign, digits = s:match("^%s*([-+]?)0*(%d-%d)%s*$")
    if digits and (n > INT_LIMIT or n < -INT_LIMIT or string.format("%d", n) ~= (sign == "-" and digits ~= "0" and "-" or "") .. digits) then
      return nil, option .. " " .. s .. " is an integer beyond +-2^53 (9007199254740992): it cannot be sent exactly"
    end
    return n
  end
end

local ex = output.examples

local function build_parser()
  local p = argparse("kinot", "The Kinot open platform (LoRa parking locks, sensors, DTUs) from the command line.")
    :epilog(ex({ "kinot sim --daemon                      # a local platform; it prints the exports to paste",
                 "kinot lockers --all",
                 "kinot --json locker 419600001",
                 "kinot command send 419600001 --wait",
                 "source <(kinot completion bash)" },
            "Credentials: --app-key/--app-secret or KINOT_APP_KEY/KINOT_APP_SECRET; endpoint: --endpoint or KINOT_ENDPOINT.\n" ..
            "Exit codes: 0 ok, 1 check failed, 2 usage, 3 API error, 4 network error, 5 command outcome unknown,\n" ..
            "6 wait for a command timed out, 130 interrupted (Ctrl-C)."))
  p:option("--app-key", "AppKey (default $KINOT_APP_KEY)")
  p:option("--app-secret", "AppSecret (default $KINOT_APP_SECRET)")
  p:option("--endpoint", "API base URL (default $KINOT_ENDPOINT or the platform's)")
  p:option("--timeout", "Total timeout per request, seconds"):convert(number("--timeout"))
  p:option("--stage", "API stage sent as X-Ca-Stage, e.g. TEST (default $KINOT_STAGE, else none: RELEASE); " ..
    "with `sim`, the only stage the simulator serves")
  p:option("--proxy", "HTTP proxy URL, http://[user:password@]host:port (default $KINOT_PROXY)")
  p:option("--paging", "How the platform numbers `offset`: auto (found out once), page0, page1 or rows " ..
    "(default $KINOT_PAGING, else auto)"):choices { "auto", "page0", "page1", "rows" }
  -- one or the other: together they are a usage error (exit 2)
  p:mutex(p:flag("--json", "One JSON document on stdout"), p:flag("--jsonl", "One JSON object a line (fleet listings)"))
  p:flag("--no-color", "No colour even on a terminal")
  p:flag("--version", "lua-kinot, Lua and libcurl versions"):action(function()
    print("kinot " .. require("kinot.version") .. " (" .. (rawget(_G, "jit") and jit.version or _VERSION) .. "; " .. core.curl_version() .. ")")
    os.exit(0)
  end)
  p:command_target("cmd")

  for _, what in ipairs { { "lockers", "parking locks" }, { "sensors", "parking sensors" } } do
    local c = p:command(what[1], "List " .. what[2] .. " (one page, or --all)")
    c:option("--offset", "The platform's offset, sent as given (a page index from 0 on the platform " ..
      "as we read it; see --paging)", "0"):convert(number("--offset"))
    c:option("--limit", "Devices a page, 10..100", "10"):convert(number("--limit"))
    c:flag("--all", "Every device, all pages")
    c:option("--concurrency", "Pages in flight with --all", "8"):convert(number("--concurrency"))
    c:epilog(ex { "kinot " .. what[1] .. " --offset 1 --limit 20", "kinot " .. what[1] .. " --all",
                  "kinot --jsonl " .. what[1] .. " --all > fleet.jsonl" })
  end
  p:command("locker", "One parking lock"):epilog(ex { "kinot locker 419600001", "kinot --json locker 419600001" })
    :argument("sn", "Lock SN")
  p:command("sensor", "One parking sensor"):epilog(ex { "kinot sensor 419800001", "kinot --json sensor 419800001" })
    :argument("sn", "Sensor SN")
  p:command("dtu", "One DTU gateway"):epilog(ex { "kinot dtu 644200001", "kinot --json dtu 644200001" })
    :argument("sn", "DTU SN")

  local cmd = p:command("command", "Send, read and await device commands")
  cmd:command_target("sub")
  cmd:epilog(ex { "kinot command send 419600001 --wait", "kinot command get GUID", "kinot command wait GUID" })
  local send = cmd:command("send", "Send a command (value 1: lock BT code reset / sensor activate; 2: sensor freeze)")
  send:argument("sn", "Device SN (or --from FILE)"):args("?")
  send:option("--value", "Parameter value", "1"):convert(number("--value"))
  send:option("--key", "Parameter key", "handle")
  send:flag("--wait", "Wait until it succeeds or fails")
  send:option("--wait-timeout", "Seconds to wait", "60"):convert(number("--wait-timeout"))
  send:epilog(ex { "kinot command send 419600001                 # a lock's BlueTooth match code reset",
                   "kinot command send --from level2.txt --concurrency 16 --wait --journal level2.journal",
                   "kinot command send 419800001 --value 2 --wait  # freeze a sensor, wait until done",
                   "kinot --json command send 419600001 --wait --wait-timeout 30" })
  cmd:command("get", "Read a command"):epilog(ex { "kinot command get 6F1A...", "kinot --json command get 6F1A..." })
    :argument("guid", "Command guid")
  local wait = cmd:command("wait", "Wait until a command succeeds or fails")
  wait:argument("guid", "Command guid (or --from FILE)"):args("?")
  wait:option("--wait-timeout", "Seconds to wait", "60"):convert(number("--wait-timeout"))
  wait:epilog(ex { "kinot command wait 6F1A... --wait-timeout 120", "kinot command wait --from results.jsonl" })
  require("kinot.cli.batch").add(send, wait, number) -- batches: --from FILE (cli/batch.lua)

  local n = p:command("notifications", "Callback settings")
  n:command_target("sub")
  n:epilog(ex { "kinot notifications get all", "kinot notifications set lock --status-url https://example.com/kinot",
                "kinot notifications test 419600001" })
  local nget = n:command("get", "Read the callback URLs of a device type (or of both: all)")
  nget:argument("device_type", DEVICE_TYPE_HELP .. ", or all"):args("?"):target("device_type_arg")
  nget:option("--device-type", "The same, as an option")
  nget:epilog(ex { "kinot notifications get lock", "kinot notifications get --device-type sensor",
                   "kinot --json notifications get all" })
  local set = n:command("set", "Set the callback URLs of a device type (or of both: all)")
  set:argument("device_type", DEVICE_TYPE_HELP .. ", or all (or --device-type)"):args("?"):target("device_type_arg")
  set:option("--device-type", DEVICE_TYPE_HELP .. ", or all")
  set:option("--status-url", "status_changed callback URL")
  set:option("--command-url", "command_resp callback URL")
  set:flag("--clear-status-url", "Remove the status_changed callback URL")
  set:flag("--clear-command-url", "Remove the command_resp callback URL")
  set:epilog(ex({ "kinot notifications set lock --status-url https://example.com/kinot/status",
                  "kinot notifications set --device-type all --command-url https://example.com/kinot/command",
                  "kinot notifications set sensor --clear-status-url" },
    "`all` sets both device types, the lock's first; if the sensor's then fails, the error says the lock's were set."))
  local test = n:command("test", "Ask the platform to send a test callback now")
  test:argument("sn", "Device SN")
  test:option("--type", "status_changed or command_resp", "status_changed")
  test:epilog(ex { "kinot notifications test 419600001", "kinot notifications test 419600001 --type command_resp" })

  local rep = p:command("report", "Fleet health: occupancy, faults, low battery, weakest signal, offline DTUs")
  rep:option("--concurrency", "Pages in flight", "8"):convert(number("--concurrency"))
  rep:option("--dtu", "A DTU SN to check (repeatable; also $KINOT_DTUS=sn,sn)"):count("*")
  rep:option("--groups", "CSV or JSON file mapping serials to zone / level / bay (as `kinot serve` takes): " ..
    "occupancy by group"):argname("FILE")
  rep:option("--from", "Read the devices from a running `kinot serve`'s twin (its URL; token $KINOT_API_TOKEN) " ..
    "or from the twin in Redis (redis://...), not from the platform"):argname("URL")
  rep:option("--html", "Also write the report as one self-contained HTML page (charts, no script, offline) to FILE")
    :argname("FILE")
  rep:epilog(ex { "kinot report", "kinot report --dtu 644200001 --dtu 644200002", "kinot --json report",
                  "kinot report --groups bays.csv --html report.html",
                  "kinot report --from http://127.0.0.1:8080 --html report.html   # a kinot serve's twin" })

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
  sign:epilog(ex { "kinot sign /open/lora/v1/lockers --query offset=0 --query limit=10",
                   "kinot sign /open/lora/v1/commands --method POST --body '{\"sn\":419600001,\"command\":1}'",
                   "kinot sign /p --timestamp 1700000000000 --nonce n1   # reproducible" })

  local verify = p:command("verify", "Check a callback body: canonical string and verdict")
  verify:argument("file", "File with the raw body, or - for stdin")
  verify:option("--secret", "Callback secret (default the AppSecret)"):count("*")
  verify:option("--sign-rule", "Sign rule to verify with (default md5-key; see README, Callbacks); " ..
    "with --discover, one more rule to try")
  verify:flag("--discover", "Name every known sign rule under which the body verifies")
  verify:epilog(ex { "kinot verify body.json --secret S", "kinot verify - < body.json",
                     "kinot verify --discover body.json --secret S" })

  p:command("completion", "A shell completion script on stdout")
    :epilog(ex { "kinot completion bash > ~/.local/share/bash-completion/completions/kinot",
                 "source <(kinot completion bash)                 # this shell only",
                 "kinot completion zsh > ~/.zfunc/_kinot",
                 "kinot completion fish > ~/.config/fish/completions/kinot.fish" })
    :argument("shell", "bash, zsh or fish"):choices { "bash", "zsh", "fish" }

  require("kinot.cli.sim").define(p, ex)
  require("kinot.cli.worker").add(p, ex) -- kinot worker (cli/worker.lua)
  require("kinot.cli.serve").define(p, ex) -- kinot serve (cli/serve.lua)
  require("kinot.cli.fleet").define(p, ex) -- kinot fleet: ask a running kinot serve (cli/fleet.lua)
  return p
end

-- ------------------------------------------------------------ helpers

local function client_of(args)
  local key = args.app_key or os.getenv("KINOT_APP_KEY")
  local secret = args.app_secret or os.getenv("KINOT_APP_SECRET")
  if not key or key == "" or not secret or secret == "" then
    misuse("credentials missing: pass --app-key and --app-secret, or set KINOT_APP_KEY and KINOT_APP_SECRET")
  end
  return kinot.new { app_key = key, app_secret = secret,
                     endpoint = args.endpoint or os.getenv("KINOT_ENDPOINT"), timeout = args.timeout,
                     stage = args.stage or os.getenv("KINOT_STAGE"),
                     proxy = args.proxy or os.getenv("KINOT_PROXY"),
                     paging = args.paging or os.getenv("KINOT_PAGING") }
end

local function check(v, err)
  if v == nil and err ~= nil then error(err, 0) end
  return v
end

local function read_all(path)
  if path == "-" then return io.stdin:read("*a") end
  local s, e = read_file(path)
  if not s then misuse("cannot read " .. tostring(e)) end -- e: "<path>: why"
  return s
end

local function pairs_of(list, sep, what)
  local out = {}
  for _, item in ipairs(list or {}) do
    local k, v = item:match("^([^" .. sep .. "]*)" .. sep .. "%s*(.*)$")
    if not k then misuse(what .. " must look like name" .. sep .. "value (got " .. item .. ")") end
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
    local shape = which == "lockers" and "lock" or "sensor"
    for d in each(c, opts) do
      if args.jsonl then out:emit_json(d, shape) else rows[#rows + 1] = d end
    end
    if args.json then out:emit_json(rows, shape .. "s")
    elseif not args.jsonl then
      local display = {}
      for i, d in ipairs(rows) do display[i] = row_of(d) end
      out:table(display, columns)
    end
    return EXIT.ok
  end
  local page = check(c[which](c, { offset = args.offset, limit = args.limit }))
  local shape = which == "lockers" and "lock" or "sensor"
  if args.json then
    out:emit_json(page, shape .. "_page")
  elseif args.jsonl then
    for _, d in ipairs(page.objects) do out:emit_json(d, shape) end
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

-- one device: its fields in the reference's order (then any other, sorted)
local function one(args, out, method, kind)
  local c = client_of(args)
  local d = check(c[method](c, args.sn))
  if args.json or args.jsonl then out:emit_json(d, kind) return EXIT.ok end
  local rank = {}
  for i, k in ipairs(vocabulary.order[kind]) do rank[k] = i end
  local keys = {}
  for k in pairs(d) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if rank[a] and rank[b] then return rank[a] < rank[b] end
    if rank[a] or rank[b] then return rank[a] ~= nil end
    return a < b
  end)
  local kv = {}
  for i, k in ipairs(keys) do kv[i] = { k, d[k] } end
  out:kv(kv)
  return EXIT.ok
end

run.locker = function(a, o) return one(a, o, "locker", "lock") end
run.sensor = function(a, o) return one(a, o, "sensor", "sensor") end
run.dtu = function(a, o) return one(a, o, "dtu_device", "dtu") end

local function show_command(args, out, cmd)
  if args.json or args.jsonl then out:emit_json(cmd, "command") return end
  local status = cmd.command_status
  local colour = status == "succeeded" and "green" or status == "failed" and "red" or "yellow"
  local rows = { { "guid", cmd.guid }, { "sn", cmd.sn }, { "status", out:paint(colour, tostring(status)) },
           { "parameter", type(cmd.parameter) == "table" and output.json_text(cmd.parameter, output.SHAPES.command.fields.parameter)
                          or tostring(cmd.parameter) } }
  -- the platform's reason ("NULL": none); its command answer may not carry one
  local reason = cmd.reason
  if type(reason) == "string" and reason ~= "" and reason ~= vocabulary.NO_REASON then
    rows[#rows + 1] = { "reason", reason }
  elseif status == "failed" then
    rows[#rows + 1] = { "reason", reason == nil and "not in the platform's answer (its command_resp callback carries it)"
                                  or "none given" }
  end
  out:kv(rows)
end

run.command = function(args, out)
  local c = client_of(args)
  local batch = require "kinot.cli.batch"
  if args.from then return batch.run(args, out, c, EXIT) end
  batch.single(args)
  if (args.sub == "send" and not args.sn) or (args.sub == "wait" and not args.guid) then
    misuse("command " .. args.sub .. " needs a " .. (args.sub == "send" and "SN" or "guid") .. " or --from FILE")
  end
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

-- the device types a `notifications get/set` names: positional or
-- --device-type, the same on both; `all` is both types
-- the device type code a word names ("18" or "lock" ...; "all" is itself),
-- or nil: a number only as its decimal digits (tonumber would take " 18",
-- "18.0" and "0x12" too)
local function device_type_code(word)
  if word == "all" then return "all" end
  local dt = word:match("^%d+$") and tonumber(word) or word
  local ok, code = pcall(validate.device_type, dt)
  return ok and code or nil
end

local function device_types_of(args, sub)
  local pos, opt = args.device_type_arg, args.device_type
  for _, given in ipairs { pos or false, opt or false } do
    if given and not device_type_code(given) then
      misuse("notifications " .. sub .. ": the device type must be " .. DEVICE_TYPE_HELP .. ", or all (got '" .. given .. "')")
    end
  end
  -- the same type in its two spellings is given once
  if pos and opt and device_type_code(pos) ~= device_type_code(opt) then
    misuse("notifications " .. sub .. ": the device type is given twice ('" .. pos .. "' and --device-type '" .. opt .. "')")
  end
  local given = pos or opt
  if not given then
    misuse("notifications " .. sub .. " needs a device type: " .. DEVICE_TYPE_HELP .. ", or all (as an argument or --device-type)")
  end
  local code = device_type_code(given)
  if code == "all" then return { vocabulary.device_codes.lock, vocabulary.device_codes.sensor }, true end
  return { code }, false
end

local function show_notification(args, out, r)
  local kv = {}
  for _, k in ipairs { "device_type", "sn", "status_changed_callback_url", "command_resp_callback_url", "callback_url",
                       "error_detail", "update_at" } do
    local v = r[k]
    if v == json.null or v == "" then v = nil end
    -- both URLs always, a cleared one as such
    if v == nil and not args.test and k:match("_callback_url$") then v = out:paint("dim", "(not set)") end
    if v ~= nil then kv[#kv + 1] = { k, v } end
  end
  out:kv(kv)
end

run.notifications = function(args, out)
  local c = client_of(args)
  local results, all = {}, false
  if args.get then
    local dts
    dts, all = device_types_of(args, "get")
    for i, dt in ipairs(dts) do results[i] = check(c:notifications(dt)) end
  elseif args.set then
    for _, w in ipairs { "status", "command" } do
      if args["clear_" .. w .. "_url"] then
        if args[w .. "_url"] then misuse("--" .. w .. "-url and --clear-" .. w .. "-url contradict each other") end
        args[w .. "_url"] = ""
      end
    end
    -- named as the user typed them, not as the Lua fields
    if not args.status_url and not args.command_url then
      misuse("notifications set needs --status-url and/or --command-url (or --clear-status-url / --clear-command-url)")
    end
    local dts
    dts, all = device_types_of(args, "set")
    if args.status_url and args.status_url ~= "" then validate.url(args.status_url, "--status-url") end
    if args.command_url and args.command_url ~= "" then validate.url(args.command_url, "--command-url") end
    for i, dt in ipairs(dts) do
      local r, err = c:set_notifications { device_type = dt, status_changed_callback_url = args.status_url,
                                           command_resp_callback_url = args.command_url }
      if not r and i > 1 then -- one type set, the other not: say which
        err.message = "the " .. vocabulary.device_types[dts[1]] .. "s' callback URLs were set, the " ..
          vocabulary.device_types[dt] .. "s' were not: " .. tostring(err.message)
      end
      results[i] = check(r, err)
    end
  else
    results[1] = check(c:test_notification(args.sn, args.type))
  end
  -- a callback URL may carry credentials: shown without them
  for _, r in ipairs(results) do
    for _, k in ipairs { "status_changed_callback_url", "command_resp_callback_url", "callback_url" } do
      if type(r[k]) == "string" then r[k] = redact.url(r[k]) end
    end
  end
  local shape = args.test and "test_notification" or "notification"
  if args.jsonl then
    for _, r in ipairs(results) do out:emit_json(r, shape) end
  elseif args.json then
    if all then out:emit_json(results, "notifications") else out:emit_json(results[1], shape) end
  else
    for i, r in ipairs(results) do
      if i > 1 then out:print("") end
      show_notification(args, out, r)
    end
  end
  return EXIT.ok
end

run.report = function(args, out)
  local report = require "kinot.cli.report"
  -- the platform (the API client), or a twin through `kinot fleet`'s source
  local c = args.from and require("kinot.cli.fleet").twin_source(args.from) or client_of(args)
  local dtus = {}
  for _, s in ipairs(args.dtu or {}) do dtus[#dtus + 1] = s end
  for s in (os.getenv("KINOT_DTUS") or ""):gmatch("[^,%s]+") do dtus[#dtus + 1] = s end
  -- each a serial, known before the scan (the DTUs are read after it)
  for i, s in ipairs(dtus) do dtus[i] = validate.sn_text(validate.sn(s, "--dtu")) end
  -- the page's file is opened before the scan: a path that cannot be
  -- written fails at once, not after it
  local page = args.html and report.page_file(args.html)
  local ok, r = pcall(report.build, c, { concurrency = args.concurrency, dtus = dtus, groups = args.groups,
                                         on_page = function(kind, d, t) out:progress(d, t, kind) end })
  if not ok then
    if page then page:discard() end
    error(r, 0)
  end
  if page then
    -- the page made, or no file left behind (its temp file neither)
    local made, text = pcall(require("kinot.report.html").render, r, { generated_at = os.date("!%Y-%m-%dT%H:%M:%SZ"),
                                                                       endpoint = c.endpoint or c.where,
                                                                       version = require "kinot.version" })
    if not made then
      page:discard()
      error(text, 0)
    end
    page:commit(text)
  end
  if args.json or args.jsonl then out:emit_json(r, "report") else report.print(out, r) end
  if page and not (args.json or args.jsonl) then
    out:print("")
    out:print(out:paint("dim", "HTML report: " .. output.escape(args.html)))
  end
  return EXIT.ok
end

run.sign = function(args, out)
  local secret = args.app_secret or os.getenv("KINOT_APP_SECRET")
  if not secret then misuse("sign needs the secret: --app-secret or KINOT_APP_SECRET (it is never printed)") end
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
    out:emit_json({ string_to_sign = r.string_to_sign, signed_headers = r.signed_headers, signature = r.signature,
                    headers = headers }, "sign")
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
  if not secrets[1] then misuse("verify needs a secret: --secret, --app-secret or KINOT_APP_SECRET") end
  if args.discover then -- --sign-rule adds a guess of the user's
    local ok_rule, rule_err = pcall(require("kinot.callback.rules").rule, args.sign_rule)
    if not ok_rule then misuse((tostring(rule_err):gsub("^.-kinot: ", ""))) end
    return M.discover(body, secrets, args, out)
  end
  local canonical, cerr = callback.canonical(body)
  local rules = require "kinot.callback.rules"
  local ok_rule, rule = pcall(rules.rule, args.sign_rule)
  if not ok_rule then misuse((tostring(rule):gsub("^.-kinot: ", ""))) end
  if canonical and not rules.is_default(rule) then -- the string signed under that rule
    canonical = rules.canonical(assert(rules.members(body)), rule)
  end
  local ev, err = callback.verify(body, { secret = secrets, max_body = math.huge, sign_rule = args.sign_rule })
  if args.json or args.jsonl then
    out:emit_json({ valid = ev ~= nil, canonical = canonical or json.null, reason = err and err.reason or json.null,
                    message = err and err.message or json.null, kind = ev and ev.kind or json.null,
                    device = ev and ev.device or json.null, sn = ev and ev.sn or json.null }, "verify")
  else
    out:kv { { "canonical", canonical or ("(none: " .. tostring(cerr and cerr.message) .. ")") } }
    if ev then
      out:kv { { "verdict", out:paint("green", "valid") }, { "event", ev.kind .. ", " .. ev.device .. " " .. tostring(ev.sn) } }
    else
      out:kv { { "verdict", out:paint("red", "refused: " .. err.message) } }
      if err.reason == "bad_sign" then
        out:kv { { "hint", "`kinot verify --discover` names the known sign rules it verifies under" } }
      end
    end
  end
  return ev and EXIT.ok or EXIT.check
end

-- kinot verify --discover: every known rule the body verifies under, or
-- none and what was tried; never the sign nor the secret
function M.discover(body, secrets, args, out)
  local callback = require "kinot.callback"
  local report, err = callback.discover(body, secrets, args.sign_rule and { args.sign_rule } or nil)
  if not report then
    if args.json or args.jsonl then
      out:emit_json({ valid = false, reason = err.reason, message = err.message, rules = {} }, "discover")
    else
      out:kv { { "verdict", out:paint("red", "refused: " .. err.message) } }
    end
    return EXIT.check
  end
  local names = {}
  for i, m in ipairs(report.matches) do names[i] = m.name end
  if args.json or args.jsonl then
    local matches = {}
    for i, m in ipairs(report.matches) do
      matches[i] = { name = m.name, secret_index = m.secret_index, undetermined = m.undetermined }
    end
    out:emit_json({ valid = #names > 0, rules = names, matches = matches, tried = report.tried, ruled_out = report.ruled_out,
                    sign_form = report.sign_form, canonical = report.canonical, note = report.note or json.null }, "discover")
  else
    out:kv { { "canonical", report.canonical }, { "sign", report.sign_form } }
    if #names > 0 then
      for _, m in ipairs(report.matches) do
        out:kv { { "verifies under", out:paint("green", m.name) ..
          (#secrets > 1 and (" (secret " .. m.secret_index .. ")") or "") } }
      end
      out:kv { { "use", "sign_rule = \"" .. names[1] .. "\"" .. (#names > 1 and " (or another listed)" or "") } }
    else
      out:kv { { "verdict", out:paint("red", "no known rule verifies this body with the secret" ..
        (#secrets > 1 and "s" or "") .. " given") },
               { "tried", #report.tried .. " rules: " .. table.concat(report.tried, ", ") } }
      if #report.ruled_out > 0 then
        out:kv { { "ruled out", table.concat(report.ruled_out, ", ") .. " (a digest of another length than the sign)" } }
      end
    end
    if report.note then out:kv { { "note", report.note } } end
  end
  return #names > 0 and EXIT.ok or EXIT.check
end

run.sim = function(a, o) return require("kinot.cli.sim").run(a, o, EXIT) end

-- lua-argparse writes the scripts from the parser itself
run.completion = function(args, out)
  local parser = build_parser()
  out.out:write(parser["get_" .. args.shell .. "_complete"](parser))
  return EXIT.ok
end
run.worker = function(a, o) return require("kinot.cli.worker").run(a, o) end
run.serve = function(a, o) return require("kinot.cli.serve").run(a, o, EXIT) end
run.fleet = function(a, o) return require("kinot.cli.fleet").run(a, o, EXIT) end

-- ------------------------------------------------------------ main

-- the exit code of what was raised, by its type
local function exit_code(e)
  if errors.is_misuse(e) then return EXIT.usage end
  if M.is_interrupt(e) then return EXIT.interrupted end
  if errors.is(e) then
    if e.kind == "unknown_outcome" then return EXIT.unknown_outcome end
    if e.kind == "timeout" and e.command ~= nil then return EXIT.wait_timeout end -- wait_command's own timeout
    if NETWORK_KINDS[e.kind] then return EXIT.network end
  end
  return EXIT.api
end

--- is_interrupt(e) -> true for Ctrl-C: the C core's kinot.Error of kind
-- "interrupted" (a wait stopped under main's SIGINT handler), or the error
-- the standalone interpreter (lua.c, luajit.c) raises from its own handler,
-- "...: interrupted!", where main's was not installed yet
function M.is_interrupt(e)
  if errors.is(e) then return e.kind == "interrupted" end
  return type(e) == "string" and e:find("interrupted!$") ~= nil
end

-- the text of what was raised as a person sees it: a line break inside the
-- platform's message, request id ... or an argument escaped like any other
-- control (it could forge a line of its own), the lines the error's text
-- puts between its parts kept (a wrong secret's two strings-to-sign)
local function shown(e)
  if not errors.is(e) then return output.escape(tostring(e)) end
  local c = {}
  for k, v in pairs(e) do
    c[k] = type(v) == "string" and output.escape(v, k:find("string_to_sign$") ~= nil) or v
  end
  return tostring(setmetatable(c, getmetatable(e)))
end

-- reports what was raised on stderr: "kinot: ..." once, or with --json one
-- JSON object { kind, message, status, code, request_id }
local function report(out, e)
  local doc
  if M.is_interrupt(e) then -- Ctrl-C: one line, no traceback, nothing "internal"
    out:failure({ kind = "interrupted", message = "interrupted", status = json.null, code = json.null,
                  request_id = json.null }, "kinot: interrupted")
    return EXIT.interrupted
  elseif errors.is(e) then
    doc = { kind = e.kind, message = e.message, status = e.status, code = e.code, request_id = e.request_id,
            server_string_to_sign = e.server_string_to_sign, client_string_to_sign = e.client_string_to_sign }
  elseif errors.is_misuse(e) then
    doc = { kind = "usage", message = e.message }
  elseif type(e) == "table" and e.usage then -- the sim subcommand's own way (kept as it is)
    e = errors.misuse_object(e.usage)
    doc = { kind = "usage", message = e.message }
  else -- a bug: say so, with what Lua said
    e = "kinot: internal error: " .. tostring(e)
    doc = { kind = "internal", message = e:sub(8) }
  end
  for _, k in ipairs { "status", "code", "request_id" } do
    if doc[k] == nil then doc[k] = json.null end
  end
  out:failure(doc, shown(e))
  return exit_code(e)
end

-- parses argv; a mistake names the (sub)command it was made in and shows that one's usage
local function parse(parser, argv)
  local failed
  parser.error = function(p, msg)
    failed = { parser = p, message = msg }
    error(failed, 0)
  end
  local ok, args = pcall(parser.parse, parser, argv)
  if ok then return args end
  if args ~= failed then error(args, 0) end
  return nil, failed
end

M.build_parser = build_parser -- (the specs walk its commands)

-- (main's body, under its SIGINT handler)
local function run_main(argv, io_opts)
  local parser = build_parser()
  local args, failed = parse(parser, argv)
  if not args then
    local as_json = false
    for _, a in ipairs(argv or {}) do if a == "--json" or a == "--jsonl" then as_json = true end end
    local base = output.new { json = as_json, stdout = io_opts and io_opts.stdout, stderr = io_opts and io_opts.stderr }
    base:failure({ kind = "usage", message = failed.message, status = json.null, code = json.null, request_id = json.null },
      "kinot: " .. output.escape(failed.message))
    if not as_json then base.err:write(failed.parser:get_usage(), "\n") end
    return EXIT.usage
  end
  local out = output.new { json = args.json, jsonl = args.jsonl, no_color = args.no_color,
                           stdout = io_opts and io_opts.stdout, stderr = io_opts and io_opts.stderr }
  local okr, res = pcall(run[args.cmd], args, out)
  -- a Ctrl-C the command did not wait after (it came while Lua ran): the
  -- user asked to stop all the same
  -- (and what failed after a Ctrl-C failed of it: stdin cut short, say)
  if core.interrupted() and not M.is_interrupt(res) then okr, res = false, errors.new("interrupted", "interrupted") end
  if okr then return res end
  return report(out, res)
end

--- main(argv[, io_opts]) -> exit code.  Ctrl-C (SIGINT) raises a flag the
-- C core's waits read (core.catch_interrupt): a transfer, a sleep stops at
-- once and raises "interrupted", which unwinds like any error (a batch's
-- journal written and synced on the way, a stream's transfers closed) and
-- ends as one line, exit 130.  A second Ctrl-C before that ends the process
-- at once (the default action).  The handler that was there before is put
-- back on the way out (main runs inside the specs' process too).
function M.main(argv, io_opts)
  local catch = core.catch_interrupt()
  local ok, code = pcall(run_main, argv, io_opts)
  core.release_interrupt(catch)
  if not ok then error(code, 0) end
  return code
end

return M
