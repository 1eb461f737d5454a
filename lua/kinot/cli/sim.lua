-- `kinot sim`: run the local simulator (foreground or --daemon), stop it,
-- and drive a running one through its admin API (/__kinot_sim/...):
-- `kinot sim trigger status|command SN`, `kinot sim fault KIND`,
-- `kinot sim drift`.  Hooked from cli/init.lua (define + run).
local json = require "kinot.json"
local errors = require "kinot.errors"

local M = {}

M.DEFAULT_PID_FILE = os.getenv("KINOT_SIM_PID_FILE") or "/tmp/kinot-sim.pid" -- $KINOT_SIM_PID_FILE: another default
local FAULT_KINDS = "latency, reset, status, throttle, gateway_throttle, gateway, malformed, truncated, oversize"

local function usage(msg) require("kinot.errors").misuse(msg) end

--- define(parser): the `sim` command and its subcommands
function M.define(p, ex)
  local sim = p:command("sim", "Run the local platform simulator (nginx + Lua), or drive a running one")
    :epilog(ex({ "kinot sim                                  # in the foreground, until Ctrl-C",
                 "kinot sim --daemon --locks 200 --pid-file /tmp/sim.pid",
                 "kinot sim --port 8080 --failure-rate 0.1 --quirks" },
            "A port already in use is refused (exit 2). The admin API, and what trigger/fault/drift send to it: " ..
            "README, \"The simulator\"."))
  sim:command_target("sub")
  sim:require_command(false)
  sim:option("--port", "Port on 127.0.0.1 (default a free one; a busy one is refused)"):convert(tonumber)
  sim:option("--locks", "Locks in the fleet", "50"):convert(tonumber)
  sim:option("--sensors", "Sensors in the fleet", "50"):convert(tonumber)
  sim:option("--dtus", "DTUs", "5"):convert(tonumber)
  sim:option("--seed", "Fleet seed", "1"):convert(tonumber)
  sim:option("--command-pace", "Seconds per command state", "0.5"):convert(tonumber)
  sim:option("--failure-rate", "Share of commands that fail, 0..1", "0"):convert(tonumber)
  sim:flag("--no-examples", "Without the platform reference's example devices (lock 419631107, sensor " ..
    "419635201, DTU 644219880), which otherwise follow the generated ones")
  sim:flag("--quirks", "The reference's trailing commas in answers and callback bodies (default: strict JSON)")
  sim:option("--paging", "How `offset` is read: page0 (page index from 0), page1 (page index from 1), rows (row offset)",
    "page0"):choices { "page0", "page1", "rows" }
  sim:flag("--daemon", "Run in the background (stop with `kinot sim stop`)")
  sim:option("--pid-file", "Where --daemon records the simulator (default $KINOT_SIM_PID_FILE, else /tmp/kinot-sim.pid)")
  local stop = sim:command("stop", "Stop a simulator started with --daemon")
  stop:option("--pid-file", "As given to --daemon (default $KINOT_SIM_PID_FILE, else /tmp/kinot-sim.pid)")
  stop:epilog(ex { "kinot sim stop", "kinot sim stop --pid-file /tmp/sim.pid" })

  local function target(c)
    c:option("--url", "The running simulator, as `kinot sim` printed it (default $KINOT_ENDPOINT)")
  end
  local trig = sim:command("trigger", "Make a running simulator send callbacks now: a device's status change " ..
    "(status_changed), or a command that runs its course (command_resp at each step)")
  trig:argument("what", "status or command"):choices { "status", "command" }
  trig:argument("sn", "Lock or sensor SN"):convert(tonumber)
  trig:option("--set", "status: field=value the device takes (repeatable; default car_detected flips)"):count("*")
  trig:option("--value", "command: the parameter value (1; 2 freezes a sensor)", "1"):convert(tonumber)
  target(trig)
  trig:epilog(ex { "kinot sim trigger status 419600001                      # car_detected flips",
                   "kinot sim trigger status 419600001 --set low_battery=1",
                   "kinot sim trigger command 419800001 --value 2 --url http://127.0.0.1:8080" })
  local fault = sim:command("fault", "Inject a fault into a running simulator's next requests, or list / clear them")
  fault:argument("kind", FAULT_KINDS .. "; or list, clear")
  fault:option("--next", "How many requests it hits, then it goes (default 1, unless --share)"):convert(tonumber)
  fault:option("--share", "Instead: the share of requests it hits, 0..1, until cleared"):convert(tonumber)
  fault:option("--endpoint", "Only requests to this endpoint, e.g. 'GET /lockers' or 'POST /commands'")
  fault:option("--status", "The HTTP status (status: 503 by default; gateway: 400)"):convert(tonumber)
  fault:option("--code", "status: the platform's code in the body, e.g. 500 with --status 200"):convert(tonumber)
  fault:option("--latency", "Seconds added (latency)"):convert(tonumber)
  fault:option("--retry-after", "Retry-After seconds (status, throttle)"):convert(tonumber)
  fault:option("--message", "gateway: X-Ca-Error-Message (default 'Nonce Used'); status: the body's message " ..
    "(default 'injected failure')")
  fault:flag("--after", "reset: close only after the platform acted on the request")
  target(fault)
  fault:epilog(ex { "kinot sim fault status --status 503 --next 2 --endpoint 'GET /lockers'",
                    "kinot sim fault latency --latency 2 --share 0.5",
                    "kinot sim fault list", "kinot sim fault clear" })
  local drift = sim:command("drift", "Random devices of a running simulator change (car_detected flips), " ..
    "each sending its status_changed callback")
  drift:option("--count", "How many changes", "1"):convert(tonumber)
  target(drift)
  drift:epilog(ex { "kinot sim drift --count 20" })
end

-- ------------------------------------------------------------ the admin API

local function admin_base(args)
  local u = args.url or os.getenv("KINOT_ENDPOINT")
  if not u or u == "" then
    usage("which simulator? give --url http://127.0.0.1:PORT or set KINOT_ENDPOINT, as `kinot sim` printed them")
  end
  local origin = u:match("^(https?://[^/?#%s]+)")
  if not origin then usage("--url must look like http://127.0.0.1:PORT (got " .. u .. ")") end
  return origin .. "/__kinot_sim"
end

local function admin(args, method, what, doc)
  local base = admin_base(args)
  local h = require("kinot.core_loader").http()
  local body = doc and json.encode(doc) or nil
  local res, kind, msg = h:request { method = method, url = base .. what, body = body,
                                      headers = body and { ["Content-Type"] = "application/json" } or {},
                                      timeout = args.timeout or 10, connect_timeout = 3 }
  h:close()
  if not res then
    error(errors.new(errors.KINDS[kind] and kind or "network",
      "no simulator answers at " .. base .. " (" .. tostring(msg) .. "): is `kinot sim` running there?"), 0)
  end
  local answer = json.decode(res.body or "")
  if res.status == 404 and not (type(answer) == "table" and answer.error) then
    error(errors.new("api", base .. " is not a kinot simulator's admin API (HTTP 404)", { status = 404 }), 0)
  end
  if res.status ~= 200 or type(answer) ~= "table" then
    local why = type(answer) == "table" and (answer.error or answer.message) or res.body
    error(errors.new("api", "the simulator refused " .. method .. " " .. what .. ": " .. tostring(why),
      { status = res.status }), 0)
  end
  return answer
end
M.admin = admin

local function scalar(v)
  if v == "true" then return true elseif v == "false" then return false end
  return tonumber(v) or v
end

local function trigger(args, out, EXIT)
  local doc = { type = args.what, sn = args.sn }
  if not args.sn then usage("sn must be a device SN (a number)") end
  if args.what == "status" then
    local set
    for _, item in ipairs(args.set or {}) do
      local k, v = item:match("^([%w_]+)=(.*)$")
      if not k then usage("--set must look like field=value (got " .. item .. ")") end
      set = set or {}
      set[k] = scalar(v)
    end
    doc.set = set
  else
    doc.value = args.value
  end
  local r = admin(args, "POST", "/trigger", doc)
  if args.json or args.jsonl then out:emit_json(r) return EXIT.ok end
  if args.what == "status" then
    local url = r.callback_url ~= json.null and r.callback_url or nil
    out:kv { { "device", tostring(r.device) .. " " .. tostring(r.sn) },
             { "changed", require("kinot.cli.output").json_text(r.set) },
             { "callback", url and ("status_changed posted to " .. url) or
                 "none: no status_changed callback URL is set for this device type (kinot notifications set ...)" } }
  else
    out:kv { { "guid", r.guid }, { "sn", r.sn }, { "status", r.command_status },
             { "callbacks", "command_resp at each step, to the command_resp callback URL if one is set" } }
  end
  return EXIT.ok
end

local function fault(args, out, EXIT)
  if args.kind == "list" then
    local r = admin(args, "GET", "/faults")
    local list = r.faults ~= json.null and r.faults or {}
    if args.json then out:emit_json(list, "faults") return EXIT.ok end
    if args.jsonl then
      for _, f in ipairs(list) do out:emit_json(f, "fault") end
      return EXIT.ok
    end
    if #list == 0 then out:print("no fault pending") return EXIT.ok end
    -- each fault as `kinot sim fault` takes it: blank where not given
    local rows = {}
    for i, f in ipairs(list) do
      rows[i] = { kind = f.kind, next = f.next, share = f.share, endpoint = f.endpoint, status = f.status, code = f.code,
                  latency = f.latency, retry_after = f.retry_after, message = f.message,
                  after = f.after == true and "yes" or nil }
    end
    out:table(rows, { { "kind", "KIND" }, { "next", "NEXT" }, { "share", "SHARE" }, { "endpoint", "ENDPOINT" },
                      { "status", "STATUS" }, { "code", "CODE" }, { "latency", "LATENCY" }, { "retry_after", "RETRY_AFTER" },
                      { "message", "MESSAGE" }, { "after", "AFTER" } })
    return EXIT.ok
  elseif args.kind == "clear" then
    admin(args, "DELETE", "/faults")
    if not (args.json or args.jsonl) then out:print("faults cleared") else out:emit_json { ok = true } end
    return EXIT.ok
  end
  if not args.kind:match("^[%a_]+$") then usage("fault kind must be one of " .. FAULT_KINDS .. ", list, clear") end
  if args.share and (args.share < 0 or args.share > 1) then usage("--share must be from 0 to 1") end
  if args.next and (args.next < 1 or args.next ~= math.floor(args.next)) then usage("--next must be an integer >= 1") end
  local f = { kind = args.kind, next = args.next, share = args.share, endpoint = args.endpoint, status = args.status,
              code = args.code,
              latency = args.latency, retry_after = args.retry_after, message = args.message,
              after = args.after or nil }
  if not f.next and not f.share then f.next = 1 end
  admin(args, "POST", "/faults", f)
  if args.json or args.jsonl then out:emit_json(f, "fault") return EXIT.ok end
  out:print(string.format("fault %s on %s of the requests to %s", f.kind,
    f.share and (f.share * 100 .. "%") or ("the next " .. f.next), f.endpoint or "any endpoint"))
  return EXIT.ok
end

local function drift(args, out, EXIT)
  if not args.count or args.count < 1 then usage("--count must be >= 1") end
  local r = admin(args, "POST", "/drift", { count = args.count })
  local changed = r.changed ~= json.null and r.changed or {}
  if args.json or args.jsonl then out:emit_json(changed, "sns") return EXIT.ok end
  local sns = {}
  for i, sn in ipairs(changed) do sns[i] = tostring(sn) end
  out:print("changed (car_detected flipped, status_changed sent): " .. table.concat(sns, " "))
  return EXIT.ok
end

-- ------------------------------------------------------------ run, stop

local function fleet_lines(out, fleet)
  local dtus = {}
  for i = 1, math.min(#fleet.dtus, 10) do dtus[i] = tostring(fleet.dtus[i]) end
  local more = #fleet.dtus > 10 and (" (and " .. (#fleet.dtus - 10) .. " more)") or ""
  out:print(string.format("  fleet: %d locks%s, %d sensors%s", fleet.locks,
    fleet.first_lock and (" (first " .. fleet.first_lock .. ")") or "", fleet.sensors,
    fleet.first_sensor and (" (first " .. fleet.first_sensor .. ")") or ""))
  out:print("  DTUs: " .. (#dtus > 0 and table.concat(dtus, " ") .. more or "none"))
  local ex = fleet.examples or {}
  local named = {}
  for _, k in ipairs { { "lock", "lock" }, { "sensor", "sensor" }, { "dtu", "DTU" } } do
    for _, sn in ipairs(ex[k[1]] or {}) do named[#named + 1] = k[2] .. " " .. sn end
  end
  if #named > 0 then out:print("  and the reference's examples: " .. table.concat(named, ", ")) end
end

-- ------------------------------------------------------------ the pid file
-- One simulator per pid file (kinot.cli.pidfile: a live one refused, a
-- stale one taken over)
local PIDFILE = require("kinot.cli.pidfile").new { noun = "simulator", command = "kinot sim",
                                                    marker = "sim_config.lua", path = "/open/lora/v1" }

local function stop(args, out, EXIT)
  local pid = PIDFILE:stop(args.pid_file, out)
  if pid then out:print("simulator stopped (pid " .. pid .. ")") end
  return EXIT.ok
end

--- run(args, out, EXIT) -> exit code
function M.run(args, out, EXIT)
  if args.trigger then return trigger(args, out, EXIT) end
  if args.fault then return fault(args, out, EXIT) end
  if args.drift then return drift(args, out, EXIT) end
  local launcher = require "kinot.sim.launcher"
  args.pid_file = args.pid_file or M.DEFAULT_PID_FILE
  if args.stop then return stop(args, out, EXIT) end
  local opts = {
    port = args.port, app_key = args.app_key, app_secret = args.app_secret, locks = args.locks,
    sensors = args.sensors, dtus = args.dtus, seed = args.seed, command_pace = args.command_pace,
    failure_rate = args.failure_rate, quirks = args.quirks, paging = args.paging, stage = args.stage,
    examples = not args.no_examples,
  }
  -- the signals of the foreground mode: a module of their own (kinot.simsignal), not the SDK's core
  local signals = not args.daemon and require "kinot.simsignal"
  -- held from before nginx starts: a signal in between must not be lost
  if signals then signals.block_signals() end
  local stale = args.daemon and PIDFILE:check(args.pid_file, out)
  local sim, err, why = launcher.start(opts)
  if not sim then
    if signals then signals.block_signals(false) end
    if why == "port_in_use" then usage(err) end
    error(err, 0)
  end
  if args.daemon then PIDFILE:record(args.pid_file, stale, sim.prefix) end
  local info = { url = sim.url, endpoint = sim.endpoint, admin = sim.admin, app_key = sim.app_key, pid = sim.pid,
                 app_secret = sim.app_secret, prefix = sim.prefix, port = sim.port, fleet = sim.fleet,
                 paging = sim.config.paging, quirks = sim.config.quirks, stage = args.stage, core = sim.core }
  if args.json then out:emit_json(info) else
    out:print(sim.endpoint)
    out:print(out:paint("dim", string.format("  app key %s, app secret %s (test credentials), admin %s",
      sim.app_key, sim.app_secret, sim.admin)))
    fleet_lines(out, sim.fleet)
    out:print(out:paint("dim", "  kinot.core for nginx: " .. sim.core))
    if sim.config.quirks or sim.config.paging ~= "page0" then
      out:print(string.format("  offset read as %s%s", sim.config.paging,
        sim.config.quirks and "; the reference's trailing commas on" or ""))
    end
    out:print(out:paint("dim", string.format("  export KINOT_ENDPOINT=%s KINOT_APP_KEY=%s KINOT_APP_SECRET=%s",
      sim.endpoint, sim.app_key, sim.app_secret) .. (args.stage and (" KINOT_STAGE=" .. args.stage) or "")))
  end
  out.out:flush()
  if args.daemon then
    if not args.json then
      out:print(out:paint("dim", "  pid " .. sim.pid .. "; stop with: kinot sim stop --pid-file " .. args.pid_file))
    end
    return EXIT.ok
  end
  -- foreground: until SIGINT / SIGTERM / SIGHUP, then nginx goes with us
  local sig = signals.wait_signal(sim.pid)
  launcher.stop(sim.prefix)
  os.execute("rm -rf " .. launcher.sh_quote(sim.prefix))
  if not args.json then out:note("simulator stopped (", sig, ")") end
  -- Ctrl-C ends it as it ends any command: 130 (128 + SIGINT); asked by
  -- SIGTERM or SIGHUP (a supervisor), it stopped as it should: 0
  return sig == "SIGINT" and EXIT.interrupted or EXIT.ok
end

return M
