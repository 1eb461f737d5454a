-- `kinot fleet summary|devices|device SN|changes`: ask a running `kinot
-- serve` (its JSON API, kinot.serve.api), or read its twin in Redis
-- directly (--redis), and show the answer as the CLI's tables, or as it
-- came with --json.  Hooked from cli/init.lua.
local json = require "kinot.json"
local errors = require "kinot.errors"
local vocabulary = require "kinot.vocabulary"
local redact = require "kinot.redact"

local M = {}

M.DEFAULT_URL = "http://127.0.0.1:8080"

local function usage(msg) errors.misuse(msg) end

--- define(parser)
function M.define(p, ex)
  local f = p:command("fleet", "Ask a running `kinot serve` about the fleet: its live twin")
    :epilog(ex({ "kinot fleet summary", "kinot fleet devices --kind lock --occupied false --limit 20",
                 "kinot --json fleet device 419631107", "kinot fleet changes --since 0" },
               "The server: --url (default $KINOT_SERVE_URL, else " .. M.DEFAULT_URL .. "); its token: --api-token " ..
               "or $KINOT_API_TOKEN (needed from anywhere but loopback). Or its twin in Redis: --redis URL (or " ..
               "$KINOT_REDIS_URL without --url), the same answers."))
  f:command_target("fleet_sub")
  local function target(c)
    c:option("--url", "The kinot serve to ask")
    c:option("--api-token", "The API token (default $KINOT_API_TOKEN)")
    c:option("--redis", "Read the twin in Redis instead, redis://[:password@]host:port/db (default " ..
      "$KINOT_REDIS_URL when no --url)")
    require("kinot.cli.redis_tls").add(c)
    c:option("--prefix", "With --redis: the twin's key prefix (default kinot:fleet:)")
    c:option("--groups", "With --redis: the groups file (default: the group names the last sync wrote)")
  end
  target(f:command("summary", "Devices, occupancy overall and by group, faults, batteries, signal, DTUs, missed")
    :epilog(ex { "kinot fleet summary", "kinot --json fleet summary --url http://10.0.0.5:8080 --api-token T",
                 "kinot fleet summary --redis redis://127.0.0.1:6379/0   # its twin in Redis, no server needed" }))
  local d = f:command("devices", "List devices from the twin, filtered and paged")
    :epilog(ex { "kinot fleet devices --fault true", "kinot --jsonl fleet devices --group A/1 --limit 1000" })
  d:option("--kind", "lock, sensor or dtu")
  d:option("--group", "A group of the groups file (\"A/1\")")
  for _, name in ipairs { "occupied", "low-battery", "weak-signal", "offline", "stale", "gone" } do
    d:option("--" .. name, "true or false"):choices { "true", "false" }
  end
  d:option("--fault", "true, false or a fault's name (motor_fail ...)")
  d:option("--offset", "Skip this many", "0")
  d:option("--limit", "At most this many (1..1000)", "50")
  target(d)
  local one = f:command("device", "One device as the twin holds it"):epilog(ex { "kinot fleet device 419631107" })
  one:argument("sn", "Its serial")
  target(one)
  local ch = f:command("changes", "The change events after a cursor")
    :epilog(ex { "kinot fleet changes", "kinot --jsonl fleet changes --since 1733212800000-0" })
  ch:option("--since", "The `next` an earlier call printed (default: from the oldest kept)")
  ch:option("--limit", "At most this many", "100")
  target(ch)
end

-- the answer of the JSON API (kinot.serve.api) to GET path?query, from one
-- of two places, the same rendering after: a running `kinot serve` over
-- HTTP, or (--redis / $KINOT_REDIS_URL, without --url) the twin in Redis
-- read here, through the same kinot.serve.api.handle the server answers with
local function from_serve(args, path, q)
  local base = (args.url or os.getenv("KINOT_SERVE_URL") or M.DEFAULT_URL):gsub("/+$", "")
  -- base is shown in messages without its userinfo (a password in the URL)
  local shown = redact.url(base)
  if not base:match("^https?://[^/?#]+$") then usage("--url must look like http://127.0.0.1:8080 (got " .. shown .. ")") end
  local parts = {}
  for _, kv in ipairs(q) do
    parts[#parts + 1] = kv[1] .. "=" .. kv[2]:gsub("[^%w%-_.~]", function(c)
      return string.format("%%%02X", c:byte())
    end)
  end
  local url = base .. path .. (#parts > 0 and ("?" .. table.concat(parts, "&")) or "")
  local token = args.api_token or os.getenv("KINOT_API_TOKEN")
  local h = require("kinot.core").http()
  local res, kind, msg = h:request { method = "GET", url = url, timeout = args.timeout or 10, connect_timeout = 3,
                                      headers = token and { Authorization = "Bearer " .. token } or {} }
  h:close()
  if not res then
    error(errors.new(errors.KINDS[kind] and kind or "network",
      "no kinot serve answers at " .. shown .. " (" .. redact.text(tostring(msg), base) .. "): is it running there?"), 0)
  end
  return res.status, res.body, "kinot serve", token
end

local function from_redis(args, url, path, q)
  local redis = require "kinot.redis"
  local tls = require("kinot.cli.redis_tls").of(args, url)
  redis.check(url, tls, "--redis") -- a wrong URL is a usage error, its password never shown
  local twin = require("kinot.fleet").new { store = "redis", redis = redis.new(url, { tls = tls }), prefix = args.prefix,
                                            groups = args.groups }
  local where = "the twin in Redis at " .. redis.redact(url)
  local ok, err = twin:adopt_settings()
  if not ok then error(errors.new(err.kind or "network", where .. ": " .. tostring(err.message or err)), 0) end
  local query = {}
  for _, kv in ipairs(q) do query[kv[1]] = kv[2] end
  local status, body = require("kinot.serve.api").handle(twin, { method = "GET", path = path, args = query,
                                                                  remote_addr = "127.0.0.1" })
  twin.store.c:close()
  return status, body, where
end

local function get(args, path, query)
  local q = {}
  for _, kv in ipairs(query or {}) do
    if kv[2] ~= nil then q[#q + 1] = { kv[1], tostring(kv[2]) } end
  end
  local redis_url = args.redis or (not args.url and os.getenv("KINOT_REDIS_URL"))
  if redis_url == "" then redis_url = nil end
  if args.redis and args.url then usage("give --url (a kinot serve) or --redis (its twin), not both") end
  if not redis_url then require("kinot.cli.redis_tls").of(args, nil) end -- (refuses them without --redis)
  local status, text, who, token
  if redis_url then status, text, who = from_redis(args, redis_url, path, q)
  else status, text, who, token = from_serve(args, path, q) end
  local doc = json.decode(text or "")
  if status ~= 200 or type(doc) ~= "table" then
    local why = tostring(type(doc) == "table" and doc.error or text)
    -- a server that sends the request back (some other service at that
    -- URL) sends the token too: never shown
    if token and #token > 0 then why = why:gsub(token:gsub("%W", "%%%0"), redact.MARK) end
    error(errors.new(status == 404 and "not_found" or "api", who .. " answered " .. status .. " to " ..
      path .. ": " .. why:sub(1, 200), { status = status }), 0)
  end
  return doc, who
end

-- a device of the API's answer, as the platform sends it (its state), or
-- the error of an answer that is none (a hostile or broken server)
local function platform_device(d, who, path)
  if type(d) ~= "table" or (d.state ~= nil and (type(d.state) ~= "table" or d.state[1] ~= nil)) then
    error(errors.new("api", who .. " answered 200 to " .. path .. ": not a device (" .. type(d) ..
      (type(d) == "table" and (", state: " .. type(d.state)) or "") .. ")", { status = 200 }), 0)
  end
  local dev = {}
  for k, v in pairs(d.state or {}) do dev[k] = v end
  dev.sn, dev.updated_at = d.sn, dev.updated_at or d.updated_at
  return dev
end

--- twin_source(from) -> a source for kinot.cli.report.build that reads the
-- twin instead of the platform, through the same get as `kinot fleet`:
-- from is a running `kinot serve`'s URL (its token: $KINOT_API_TOKEN) or
-- the twin in Redis (redis://...).  It pages /api/devices as the client
-- pages the platform (each_locker, each_sensor with on_page) and reads a
-- DTU as /api/devices/SN; a device as the platform sends it (its state).
function M.twin_source(from)
  if not from:match("^rediss?://") and not from:match("^https?://[^/?#]+/*$") then
    usage("--from must be a kinot serve's URL, like http://127.0.0.1:8080, or its twin in Redis, redis://... (got " ..
      require("kinot.redact").url(from) .. ")")
  end
  local args = from:match("^rediss?://") and { redis = from } or { url = from }
  local function each(kind)
    return function(_, opts)
      local page, total, offset, buf, i, who, used = 0, nil, 0, {}, 0, nil, nil
      local limit = require("kinot.fleet").MAX_LIMIT
      return function()
        i = i + 1
        if i > #buf then
          -- the end: the total reached, or a short page (a total that
          -- never comes, from a broken server, ends no scan otherwise)
          if total and (offset >= total or #buf < used) then return nil end
          local got
          got, who = get(args, "/api/devices", { { "kind", kind }, { "offset", offset }, { "limit", limit } })
          local t, list = got.total, got.devices
          -- a count (NaN, 1e400, -1, "1" are none) and a list
          if type(t) ~= "number" or not (t >= 0 and t < 2 ^ 53) or t ~= math.floor(t) or type(list) ~= "table" or
            (next(list) ~= nil and list[1] == nil) then
            error(errors.new("api", who .. " answered 200 to /api/devices: not a page of devices (total: " ..
              type(t) .. ", devices: " .. type(list) .. ")", { status = 200 }), 0)
          end
          total, buf, i = t, list, 1
          -- the limit the serve says it used (kinot.fleet's query echoes it),
          -- when it is below the one asked: its short page, not ours
          used = (type(got.limit) == "number" and got.limit >= 1 and got.limit < limit) and got.limit or limit
          offset = offset + #buf
          page = page + 1
          if opts.on_page then opts.on_page(page, math.max(1, math.ceil(total / limit))) end
          if #buf == 0 then return nil end
        end
        return platform_device(buf[i], who, "/api/devices")
      end
    end
  end
  return {
    where = args.redis and require("kinot.redis").redact(args.redis) or args.url,
    each_locker = each("lock"),
    each_sensor = each("sensor"),
    dtu_device = function(_, sn)
      if not tostring(sn):match("^%d+$") then usage("--dtu needs a serial (got " .. tostring(sn) .. ")") end
      local d, who = get(args, "/api/devices/" .. sn)
      return platform_device(d, who, "/api/devices/" .. sn)
    end,
  }
end

-- "coil_fault 3, motor_fail 1 ...": each fault flag a lock has (a sensor's are among them)
local function fault_counts(faults)
  local parts = {}
  for _, k in ipairs(vocabulary.faults.lock) do parts[#parts + 1] = k .. " " .. tostring(faults[k] or 0) end
  return table.concat(parts, ", ")
end

local function summary(args, out, EXIT)
  local s = get(args, "/api/fleet")
  if args.json then out:emit_json(s) return EXIT.ok end
  local o = s.occupancy
  out:kv {
    { "devices", string.format("%d locks, %d sensors, %d DTUs (%d gone)", s.devices.locks, s.devices.sensors,
      s.devices.dtus, s.devices.gone or 0) },
    { "occupied", string.format("%d of %d spaces (%d free)", o.occupied, o.total, o.free or (o.total - o.occupied)) },
    { "faults", string.format("%d devices (%s)", s.faults.devices, fault_counts(s.faults)) },
    { "low battery", s.low_battery },
    { "weak signal", string.format("%d (rs_si below %s)", s.weak_signal, tostring(s.weak_signal_below)) },
    { "DTUs offline", s.dtus_offline },
    { "stale", string.format("%d (no update for %s s)", s.stale, tostring(s.stale_after)) },
    { "missed", string.format("%d (found by scans: callbacks that never arrived)", s.missed) },
    { "out of order", s.updates.out_of_order },
    { "synced at", s.synced_at == json.null and "never" or s.synced_at },
  }
  local rows = {}
  for g, c in pairs(o.groups or {}) do rows[#rows + 1] = { group = g, occupied = c.occupied, free = c.free, total = c.total } end
  if #rows > 0 then
    table.sort(rows, function(a, b) return a.group < b.group end)
    out:print("")
    out:table(rows, { { "group", "GROUP" }, { "occupied", "OCCUPIED" }, { "free", "FREE" }, { "total", "TOTAL" } })
  end
  return EXIT.ok
end

local function flags(d)
  local st, f = d.state or {}, {}
  if d.gone then f[#f + 1] = "gone" end
  if d.stale then f[#f + 1] = "stale" end
  for _, k in ipairs(vocabulary.faults[d.kind] or {}) do
    if st[k] == 1 then f[#f + 1] = k end
  end
  if st.low_battery == 1 then f[#f + 1] = "low_battery" end
  if d.kind == "dtu" and st.online ~= "online" then f[#f + 1] = tostring(st.online) end
  return #f > 0 and table.concat(f, ",") or "-"
end

local function devices(args, out, EXIT)
  local q = {}
  for _, k in ipairs { "kind", "group", "fault", "offset", "limit" } do q[#q + 1] = { k, args[k] } end
  for _, k in ipairs { "occupied", "low_battery", "weak_signal", "offline", "stale", "gone" } do q[#q + 1] = { k, args[k] } end
  local page = get(args, "/api/devices", q)
  if args.json then out:emit_json(page) return EXIT.ok end
  local rows = {}
  for i, d in ipairs(page.devices) do
    local st = d.state or {}
    rows[i] = { sn = d.sn, kind = d.kind, group = d.group, car = st.car_detected == 1 and "occupied" or
      st.car_detected == 0 and "free" or "", flags = flags(d), rs_si = st.rs_si, updated_at = d.updated_at,
      source = d.source }
  end
  out:table(rows, { { "sn", "SN" }, { "kind", "KIND" }, { "group", "GROUP" }, { "car", "SPACE" }, { "flags", "FLAGS" },
                    { "rs_si", "RS_SI" }, { "updated_at", "UPDATED_AT" }, { "source", "SOURCE" } })
  out:print(out:paint("dim", string.format("%d-%d of %d", #rows > 0 and page.offset + 1 or 0, page.offset + #rows,
    page.total)))
  return EXIT.ok
end

local function device(args, out, EXIT)
  if not tostring(args.sn):match("^%d+$") then usage("device needs a serial (got " .. tostring(args.sn) .. ")") end
  local d = get(args, "/api/devices/" .. args.sn)
  if args.json then out:emit_json(d) return EXIT.ok end
  local kv = { { "sn", d.sn }, { "kind", d.kind }, { "updated_at", d.updated_at }, { "source", d.source },
               { "seen_at", os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(d.seen_at or 0)) } }
  if d.group ~= nil and d.group ~= json.null then kv[#kv + 1] = { "group", d.group } end
  if type(d.place) == "table" and d.place.bay then kv[#kv + 1] = { "bay", d.place.bay } end
  kv[#kv + 1] = { "stale", tostring(d.stale) }
  kv[#kv + 1] = { "gone", tostring(d.gone) }
  local names = {}
  for k in pairs(d.state or {}) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do kv[#kv + 1] = { k, d.state[k] } end
  out:kv(kv)
  return EXIT.ok
end

local function changes(args, out, EXIT)
  local got = get(args, "/api/changes", { { "since", args.since }, { "limit", args.limit } })
  if args.json then out:emit_json(got) return EXIT.ok end
  local rows = {}
  for i, ev in ipairs(got.changes) do
    rows[i] = { id = tostring(ev.id), sn = ev.sn, kind = ev.kind,
                change = ev.change .. (ev.fault and ev.fault ~= json.null and (" " .. ev.fault) or ""),
                source = ev.source, updated_at = ev.updated_at }
  end
  out:table(rows, { { "id", "ID" }, { "sn", "SN" }, { "kind", "KIND" }, { "change", "CHANGE" }, { "source", "SOURCE" },
                    { "updated_at", "UPDATED_AT" } })
  out:print(out:paint("dim", "next: kinot fleet changes --since " .. tostring(got.next == json.null and "" or got.next)))
  return EXIT.ok
end

--- run(args, out, EXIT) -> exit code
function M.run(args, out, EXIT)
  if args.summary then return summary(args, out, EXIT) end
  if args.devices then return devices(args, out, EXIT) end
  if args.device then return device(args, out, EXIT) end
  if args.changes then return changes(args, out, EXIT) end
  usage("kinot fleet needs summary, devices, device SN or changes")
end

return M
