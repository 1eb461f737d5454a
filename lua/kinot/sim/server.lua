-- The simulator's request handlers, run inside nginx (one worker, so the
-- state below is the whole platform).  `api` serves /open/lora/v1 behind the
-- gateway checks; `admin` serves the unsigned local admin API.
local core = require "kinot.core_loader"
local json = require "kinot.json"
local fleetmod = require "kinot.sim.fleet"
local gateway = require "kinot.sim.gateway"
local vocabulary = require "kinot.vocabulary"

local ngx = ngx -- luacheck: ignore
local M = {}

local API_PREFIX = "/open/lora/v1"
local ADMIN_PREFIX = "/__kinot_sim"
M.API_PREFIX, M.ADMIN_PREFIX = API_PREFIX, ADMIN_PREFIX

local render, value = fleetmod.render, fleetmod.value
local DEVICE_TYPE_WANTED = "device_type must be " .. vocabulary.device_codes.lock .. " or " .. vocabulary.device_codes.sensor
local cfg = {}
local S -- the platform state

local function bump(t, k, n) t[k] = (t[k] or 0) + (n or 1) end

local function new_state()
  return {
    fleet = fleetmod.new(cfg),
    gw = gateway.new(cfg),
    commands = {}, last_command = {},
    notifications = {},
    faults = {},
    deliveries = {}, -- recent callback deliveries, newest last
    received = {}, -- the API requests as they came (method, path, body), newest last
    pace = cfg.command_pace or 0.2,
    failure_rate = cfg.failure_rate or 0,
    callback_retries = cfg.callback_retries or 3,
    callback_secret = cfg.callback_secret or cfg.app_secret,
    -- the reference's trailing commas (answers and callback bodies) only when asked
    quirks = cfg.quirks == true,
    -- how `offset` is read: page0 (page index from 0), page1 (from 1), rows
    paging = cfg.paging or "page0",
    rng = fleetmod.rng((cfg.seed or 1) + 99),
    counters = {
      requests = {}, endpoints = {}, commands_created = 0,
      commands_by_sn = {}, -- so a spec proves no device got two commands
      callbacks = { sent = 0, delivered = 0, failed = 0, attempts = 0, skipped = 0 },
    },
  }
end

--- configure(opts): in init_by_lua, before the worker starts
function M.configure(opts)
  cfg = opts
end

local function state()
  if not S then S = new_state() end
  return S
end

-- ------------------------------------------------------------ responses

local function respond(status, body, headers)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json; charset=utf-8"
  for k, v in pairs(headers or {}) do ngx.header[k] = v end
  if S and S.gw.clock_offset_ms ~= 0 then
    ngx.header["Date"] = ngx.http_time(math.floor(gateway.now_ms(S.gw) / 1000))
  end
  ngx.print(body)
end

-- a number in a message as JSON writes it (tostring would round a serial
-- to 14 digits on LuaJIT)
local function shown(v)
  return type(v) == "number" and json.number_text(v) or tostring(v)
end

-- the serial a request names: an integer from 1 to 2^53 - 1 (validate.sn's
-- range); beyond, a double may hold another serial than the one sent
local MAX_SN = vocabulary.INT_MAX
local function serial(v)
  local n = tonumber(v)
  if not n or n < 1 or n > MAX_SN or n ~= math.floor(n) then return nil end -- (validate.sn's rule)
  return n
end
local NOT_A_SERIAL = "sn must be an integer from 1 to " .. json.number_text(MAX_SN)

local function platform_error(code, message)
  return 200, '{"code":' .. code .. ',"message":' .. value(message) .. ',"objects":[]}'
end

-- strict JSON, but where the reference shows a trailing comma (`quirk`) and
-- the simulator runs with --quirks
local function ok_objects(items, extra, quirk)
  return 200, '{"code":0,"message":"OK"' .. (extra or "") .. ',"objects":[' .. table.concat(items, ",") .. "]" ..
    ((quirk and S.quirks) and ",\n}" or "}")
end

-- ------------------------------------------------------------ callbacks

local function sign_body(members)
  -- members: ordered list of {key, json_text}; sign goes before device_type
  local parts = {}
  for i, m in ipairs(members) do parts[i] = '"' .. m[1] .. '":' .. m[2] end
  local unsigned = "{" .. table.concat(parts, ",") .. "}"
  local canonical = core.callback_scan(unsigned)
  local sign = core.callback_digest(canonical, S.callback_secret)
  local out = {}
  for _, m in ipairs(members) do
    if m[1] == "device_type" then out[#out + 1] = '"sign":"' .. sign .. '"' end
    out[#out + 1] = '"' .. m[1] .. '":' .. m[2]
  end
  -- all four callback examples of the reference end with `,` before `}`
  return "{" .. table.concat(out, ",") .. (S.quirks and ",\n}" or "}")
end

local transport
local function deliver(premature, url, body, attempt)
  if premature then return end
  transport = transport or require("kinot.transport.resty").new { verify_tls = false }
  local c = S.counters.callbacks
  c.attempts = c.attempts + 1
  local res, kind, msg = transport.send { method = "POST", url = url, body = body, timeout = 5, connect_timeout = 2,
    headers = { ["Content-Type"] = "application/json" } }
  local good = res and res.status >= 200 and res.status < 300
  local entry = { url = url, attempt = attempt, status = res and res.status, error = not res and (kind .. ": " .. msg) or nil,
                  answer = res and res.body:sub(1, 200), body = body, at = ngx.now() }
  S.deliveries[#S.deliveries + 1] = entry
  if #S.deliveries > 500 then table.remove(S.deliveries, 1) end
  ngx.log(ngx.INFO, "callback ", require("kinot.redact").url(url), " attempt ", attempt, ": ", res and res.status or msg)
  if good then
    c.delivered = c.delivered + 1
  elseif attempt < S.callback_retries then
    ngx.timer.at(0.1 * 2 ^ (attempt - 1), deliver, url, body, attempt + 1)
  else
    c.failed = c.failed + 1
  end
end

local function post_callback(device_type, which, members)
  local conf = S.notifications[device_type]
  local url = conf and conf[which .. "_callback_url"]
  if not url or url == "" then
    S.counters.callbacks.skipped = S.counters.callbacks.skipped + 1
    return nil
  end
  S.counters.callbacks.sent = S.counters.callbacks.sent + 1
  ngx.timer.at(0, deliver, url, sign_body(members), 1)
  return url
end

local STATUS_FIELDS = { lock = vocabulary.order.lock_status_changed, sensor = vocabulary.order.sensor_status_changed }
local DEVICE_CODE = vocabulary.device_codes

local function status_changed(device, kind)
  local members = {}
  for _, k in ipairs(STATUS_FIELDS[kind]) do members[#members + 1] = { k, value(device[k]) } end
  members[#members + 1] = { "device_type", tostring(DEVICE_CODE[kind]) }
  return post_callback(DEVICE_CODE[kind], "status_changed", members)
end

local function command_resp(cmd)
  -- the members in the reference's order, commnad_status as the platform spells it
  local members = {}
  for i, k in ipairs(vocabulary.order.command_resp) do
    local v = cmd[k]
    if k == vocabulary.COMMAND_STATUS_AS_SENT then v = cmd.command_status end
    if k == "reason" then v = v or vocabulary.NO_REASON end
    members[i] = { k, value(v) }
  end
  members[#members + 1] = { "device_type", tostring(DEVICE_CODE[cmd.kind]) }
  return post_callback(DEVICE_CODE[cmd.kind], "command_resp", members)
end

local function now_text()
  return os.date("!%Y-%m-%dT%H:%M:%S+00:00", math.floor(ngx.now()))
end

local function change_device(sn, fields)
  local d, kind = S.fleet:change(sn, fields)
  local url
  if d and kind ~= "dtu" then url = status_changed(d, kind) end
  return d, kind, url
end

-- ------------------------------------------------------------ commands

local NEXT = { sending = "pending", pending = "arrived" }

local function step(premature, cmd)
  if premature then return end
  if cmd.command_status == "arrived" then
    cmd.command_status = cmd.will_fail and "failed" or "succeeded"
    cmd.reason = cmd.will_fail and "device did not acknowledge" or vocabulary.NO_REASON
  else
    cmd.command_status = NEXT[cmd.command_status]
  end
  cmd.updated_at = now_text()
  command_resp(cmd)
  if cmd.command_status == "succeeded" then
    if cmd.kind == "lock" then
      local r = S.rng
      local parts = {}
      for k = 1, 6 do parts[k] = string.format("%05d", r(65536)) end
      change_device(cmd.sn, { bt_match_code = table.concat(parts, "-"), updated_at = cmd.updated_at })
    else
      change_device(cmd.sn, { active = cmd.parameter.value == 1 and 1 or 0, updated_at = cmd.updated_at })
    end
  elseif cmd.command_status ~= "failed" then
    ngx.timer.at(S.pace, step, cmd)
  end
end

local function command_json(cmd)
  -- reason: once final (not in the reference's command answer; its
  -- command_resp callback carries it), so that a poller can show it
  return render(cmd, { "sn", "guid", "command", "command_status", "reason" },
    { parameter = '{"key":' .. value(cmd.parameter.key) .. ',"value":' .. value(cmd.parameter.value) .. "}" })
end

local function create_command(doc)
  if type(doc) ~= "table" then return platform_error(400, "body must be a JSON object") end
  local sn = serial(doc.sn)
  if not sn then return platform_error(400, NOT_A_SERIAL .. " (got " .. shown(doc.sn) .. ")") end
  local kind = S.fleet:locate(sn)
  if not kind or kind == "dtu" then return platform_error(404, "device not found: " .. shown(sn)) end
  if doc.command ~= 1 then return platform_error(400, "command must be 1") end
  local p = doc.parameter
  if type(p) ~= "table" or p.value == nil then return platform_error(400, "parameter {key, value} is required") end
  if (kind == "lock" and p.value ~= 1) or (kind == "sensor" and p.value ~= 1 and p.value ~= 2) then
    return platform_error(400, "parameter value " .. shown(p.value) .. " is not valid for a " .. kind)
  end
  local cmd = {
    guid = core.md5_hex(core.uuid()), sn = sn, command = 1, command_status = "sending", kind = kind,
    parameter = { key = tostring(p.key or "handle"), value = p.value }, updated_at = now_text(),
    will_fail = S.rng() < S.failure_rate,
  }
  S.commands[cmd.guid] = cmd
  S.last_command[sn] = cmd
  S.counters.commands_created = S.counters.commands_created + 1
  local by_sn = S.counters.commands_by_sn
  by_sn[tostring(sn)] = (by_sn[tostring(sn)] or 0) + 1
  ngx.timer.at(S.pace, step, cmd)
  return 200, select(2, ok_objects { command_json(cmd) }), cmd
end

-- ------------------------------------------------------------ routes

--- first_row(paging, offset, limit) -> index (from 0) of the page's first device
-- under each reading of `offset`; page1 reads offset 0 as page 1, as many
-- servers that number pages from 1 do
function M.first_row(paging, offset, limit)
  if paging == "rows" then return offset end
  if paging == "page1" then return (math.max(offset, 1) - 1) * limit end
  return offset * limit
end

local function page_args(args)
  local offset, limit = tonumber(args.offset or "0"), tonumber(args.limit or "10")
  if not offset or offset < 0 or offset ~= math.floor(offset) then return nil, "offset must be an integer >= 0" end
  if not limit or limit < 10 or limit > 100 or limit ~= math.floor(limit) then
    return nil, "limit must be an integer from 10 to 100"
  end
  return offset, limit
end

local function notifications_json(conf)
  return render(conf, vocabulary.order.notification)
end

local DEVICE_PATHS = { lockers = "lock", sensors = "sensor", dtu_devices = "dtu" }

--- read_path(raw) -> rel, device path {want, text, sn|nil} | nil: the path
-- below the API prefix as the router reads it, one way for every route: each
-- segment percent-decoded (a %2F stays inside its segment), so
-- /lockers/%34%31... is the serial it spells, the one the client signed.
-- A device path's serial is digits from 1 to 2^53 - 1; anything else
-- ("a;b", "1;x", beyond 2^53) is no serial, never a neighbour of one.
function M.read_path(raw)
  local segs, whole = {}, true
  for seg in raw:gmatch("/([^/]*)") do
    seg = seg:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
    if seg:find("/", 1, true) then whole = false end
    segs[#segs + 1] = seg
  end
  local rel = whole and ("/" .. table.concat(segs, "/")) or raw
  local want = DEVICE_PATHS[segs[1] or ""]
  if #segs == 2 and want then
    local text = segs[2]
    return rel, { want = want, text = text, sn = text:match("^%d+$") and serial(text) or nil }
  end
  return rel
end

local function route(method, rel, args, body, device, raw_rel)
  local fleet = S.fleet
  if method == "GET" and (rel == "/lockers" or rel == "/sensors") then
    local offset, limit = page_args(args)
    if not offset then return platform_error(400, limit) end
    -- the reference's bound, 0<=offset<=(count/limit)+1, enforced when asked (/config offset_bound)
    local n = fleet:count(rel == "/lockers" and "lock" or "sensor")
    if S.offset_bound and S.paging ~= "rows" and offset > math.floor(n / limit) + 1 then
      return platform_error(400, "offset must be from 0 to (count/limit)+1")
    end
    -- a page1 platform may read offset 0 as page 1 (the default), refuse it, or answer an empty page
    if S.paging == "page1" and offset == 0 and S.page1_zero == "error" then
      return platform_error(400, "offset must be >= 1")
    elseif S.paging == "page1" and offset == 0 and S.page1_zero == "empty" then
      return 200, '{"code":0,"message":"OK","objects":[],"count":' .. n .. "}"
    end
    return 200, fleet:page_json(rel == "/lockers" and "lock" or "sensor", M.first_row(S.paging, offset, limit), limit)
  elseif method == "GET" and device then
    if not device.sn then
      return platform_error(400, value(device.text:sub(1, 60)) .. " is not a serial (" .. NOT_A_SERIAL .. ")")
    end
    local d, kind = fleet:get(device.sn)
    if not d or kind ~= device.want then return platform_error(404, "device not found: " .. shown(device.sn)) end
    -- the reference shows a trailing comma on the single-lock answer
    return ok_objects({ fleet:render_device(kind, d) }, nil, kind == "lock")
  elseif rel == "/commands" and method == "POST" then
    return create_command(json.decode(body or ""))
  elseif rel == "/commands" and method == "GET" then
    local cmd = S.commands[args.guid or ""]
    if not cmd then return platform_error(404, "command not found: " .. tostring(args.guid)) end
    return ok_objects { command_json(cmd) }
  elseif rel == "/notifications" and method == "POST" then
    local doc = json.decode(body or "") or {}
    local dt = tonumber(doc.device_type)
    if not vocabulary.device_types[dt] then return platform_error(400, DEVICE_TYPE_WANTED) end
    local conf = S.notifications[dt] or { device_type = dt }
    -- the reference's table spells it commandResp_callback_url
    if doc.command_resp_callback_url == nil then doc.command_resp_callback_url = doc.commandResp_callback_url end
    for _, k in ipairs { "status_changed_callback_url", "command_resp_callback_url" } do
      if doc[k] ~= nil then conf[k] = tostring(doc[k]) end
    end
    conf.update_at = now_text()
    S.notifications[dt] = conf
    return ok_objects { notifications_json(conf) }
  elseif rel == "/notifications" and method == "GET" then
    local dt = tonumber(args.device_type)
    if not vocabulary.device_types[dt] then return platform_error(400, DEVICE_TYPE_WANTED) end
    local conf = S.notifications[dt] or { device_type = dt, status_changed_callback_url = "", command_resp_callback_url = "" }
    return ok_objects({ notifications_json(conf) }, nil, true)
  elseif rel == "/test/notifications" and method == "POST" then
    local doc = json.decode(body or "") or {}
    local tsn = serial(type(doc) == "table" and doc.sn)
    if not tsn then return platform_error(400, NOT_A_SERIAL) end
    local d, kind = fleet:get(tsn)
    if not d or kind == "dtu" then return platform_error(404, "device not found: " .. shown(tsn)) end
    local url
    if doc.callback_type == "command_resp" then
      local cmd = S.last_command[d.sn] or { guid = core.md5_hex("test" .. d.sn), sn = d.sn, kind = kind,
                                            command_status = "succeeded", updated_at = now_text() }
      url = command_resp(cmd)
    elseif doc.callback_type == "status_changed" then
      -- the device's state as of now: a receiver that checks freshness takes it
      local now = {}
      for k, v in pairs(d) do now[k] = v end
      now.updated_at = now_text()
      url = status_changed(now, kind)
    else
      return platform_error(400, "callback_type must be status_changed or command_resp")
    end
    if not url then return platform_error(400, "no " .. doc.callback_type .. " callback url is set for this device type") end
    return ok_objects({ '{"sn":' .. value(d.sn) .. ',"callback_url":' .. value(url) .. ',"error_detail":"sent"}' },
      ',"request_id":"' .. core.md5_hex(core.uuid()):lower() .. '"')
  end
  return 404, '{"message":' .. value("no such API: " .. method .. " " .. raw_rel:sub(1, 200)) .. "}"
end

-- ------------------------------------------------------------ faults

local function take_fault(endpoint)
  for i, f in ipairs(S.faults) do
    if not f.endpoint or endpoint:find(f.endpoint, 1, true) == 1 then
      if f.next then
        f.next = f.next - 1
        if f.next <= 0 then table.remove(S.faults, i) end
        return f
      elseif f.share and S.rng() < f.share then
        return f
      end
    end
  end
end

-- applies a fault before the gateway; true when it answered (or closed)
local function apply_fault(f)
  if f.kind == "latency" then
    ngx.sleep(f.latency or 0.5)
    return false
  elseif f.kind == "reset" then
    if f.after then return false end
    return true, ngx.exit(444)
  elseif f.kind == "status" then
    -- with `code`, the platform's refusal in a 200 (`{"code":N,"message":...}`)
    respond(f.status or 503, "{" .. (f.code and ('"code":' .. value(f.code) .. ",") or "") .. '"message":' ..
      value(f.message or "injected failure") .. "}", f.retry_after and { ["Retry-After"] = tostring(f.retry_after) })
  elseif f.kind == "throttle" then
    respond(429, '{"message":"too many requests"}', { ["Retry-After"] = tostring(f.retry_after or 1) })
  elseif f.kind == "gateway_throttle" then
    respond(403, "", { ["X-Ca-Error-Message"] = "Throttled by APP Flow Control", ["X-Ca-Request-Id"] = core.uuid():upper() })
  elseif f.kind == "gateway" then
    -- any refusal of the gateway's, e.g. {message = "Nonce Used", status = 400}
    respond(f.status or 400, "", { ["X-Ca-Error-Message"] = f.message or "Nonce Used",
                                   ["X-Ca-Request-Id"] = core.uuid():upper() })
  elseif f.kind == "malformed" then
    respond(200, '{"code":0,"message":"OK","objects":[{"sn":')
  elseif f.kind == "truncated" then
    local body = '{"code":0,"message":"OK","objects":[' .. string.rep('{"sn":1},', 200) .. '{"sn":2}],"count":201}'
    ngx.header["Content-Length"] = #body
    respond(200, body:sub(1, math.floor(#body / 2)))
    ngx.flush(true)
    return true, ngx.exit(444)
  elseif f.kind == "oversize" then
    local n = f.bytes or 9 * 1024 * 1024
    respond(200, '{"code":0,"message":"OK","pad":"' .. string.rep("x", n) .. '"}')
  else
    return false
  end
  return true
end

-- ------------------------------------------------------------ handlers

local function ordered_args(text)
  local list, map = {}, {}
  for pair in (text or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k, v = ngx.unescape_uri(k), ngx.unescape_uri(v)
    list[#list + 1] = { k, v }
    if map[k] == nil then map[k] = v end
  end
  return list, map
end

function M.api()
  state()
  local method = ngx.req.get_method()
  local path = ngx.var.request_uri:match("^[^?]*") -- as sent: the gateway signs it so
  local raw_rel = path:sub(#API_PREFIX + 1)
  local rel, device = M.read_path(raw_rel)
  local endpoint = method .. " " .. (device and device.sn and ("/" .. rel:match("^/([^/]+)") .. "/{sn}") or rel)
  local rid = core.uuid():upper()
  local status
  bump(S.counters.endpoints, endpoint)
  local f = take_fault(endpoint)
  if f then
    -- counted first: a reset ends this handler inside apply_fault
    if f.kind ~= "latency" and not (f.kind == "reset" and f.after) then
      bump(S.counters.requests, endpoint .. " fault:" .. f.kind)
    end
    if apply_fault(f) then return end
  end
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  S.received[#S.received + 1] = { method = method, path = path, body = body and body:sub(1, 4096) or json.null }
  if #S.received > 200 then table.remove(S.received, 1) end
  local headers = ngx.req.get_headers(200)
  local query, args = ordered_args(ngx.var.args)
  local form
  local ct = headers["content-type"]
  if type(ct) == "string" and ct:find("application/x-www-form-urlencoded", 1, true) then
    local fmap
    form, fmap = ordered_args(body)
    for k, v in pairs(fmap) do args[k] = v end
  end
  local ok, gst, gmsg = gateway.check(S.gw, { method = method, path = path, query = query, form = form,
                                              headers = headers, body = body })
  local out
  if not ok then
    status, out = gst, ""
    respond(status, out, { ["X-Ca-Error-Message"] = gmsg, ["X-Ca-Request-Id"] = rid })
  else
    status, out = route(method, rel, args, body, device, raw_rel)
    if f and f.kind == "reset" and f.after then
      bump(S.counters.requests, endpoint .. " fault:reset-after")
      return ngx.exit(444)
    end
    respond(status, out, { ["X-Ca-Request-Id"] = rid })
  end
  bump(S.counters.requests, endpoint .. " " .. status)
end

-- ------------------------------------------------------------ admin API

local function counters_json()
  local c = S.counters
  return json.encode {
    requests = next(c.requests) and c.requests or json.null,
    endpoints = next(c.endpoints) and c.endpoints or json.null,
    commands_created = c.commands_created, callbacks = c.callbacks,
    commands_by_sn = next(c.commands_by_sn) and c.commands_by_sn or json.null,
    faults_pending = #S.faults,
  }
end

local PAGING = { page0 = true, page1 = true, rows = true }
M.PAGING = PAGING

-- POST /trigger {type = "status", sn, set = {field = value}}: a device
-- changes (car_detected flips when `set` is empty) and its status_changed
-- callback goes out; {type = "command", sn, value}: a command is created as
-- if sent through the API, and runs its course with its callbacks
local function trigger(doc)
  local sn = serial(doc.sn)
  local d, kind = S.fleet:get(sn)
  if not d then return 404, '{"error":' .. value("no such device: " .. shown(doc.sn)) .. "}" end
  if doc.type == "status" then
    if kind == "dtu" then return 400, '{"error":"a DTU sends no callbacks"}' end
    local set = type(doc.set) == "table" and next(doc.set) and doc.set or { car_detected = 1 - d.car_detected }
    set.updated_at = set.updated_at or now_text()
    local _, _, url = change_device(sn, set)
    return 200, '{"sn":' .. value(sn) .. ',"device":"' .. kind .. '","callback_url":' .. value(url) .. ',"set":' ..
      json.encode(set) .. "}"
  elseif doc.type == "command" then
    local v = tonumber(doc.value) or 1
    local _, body, cmd = create_command { sn = sn, command = 1, parameter = { key = "handle", value = v } }
    if not cmd then return 400, body end
    return 200, command_json(cmd)
  end
  return 400, '{"error":"type must be status or command"}'
end

function M.admin()
  state()
  local method = ngx.req.get_method()
  local rel = ngx.var.uri:sub(#ADMIN_PREFIX + 1)
  ngx.req.read_body()
  local doc = json.decode(ngx.req.get_body_data() or "{}") or {}
  local function reply(status, body) respond(status, body) end
  if rel == "/health" then
    local n = S.fleet.n
    return reply(200, '{"ok":true,"locks":' .. n.lock .. ',"sensors":' .. n.sensor .. ',"dtus":' .. n.dtu ..
      ',"paging":"' .. S.paging .. '","quirks":' .. tostring(S.quirks) .. "}")
  elseif rel == "/counters" then
    return reply(200, counters_json())
  elseif rel == "/reset" and method == "POST" then
    S = new_state()
    return reply(200, '{"ok":true}')
  elseif rel == "/faults" and method == "DELETE" then
    S.faults = {}
    return reply(200, '{"ok":true}')
  elseif rel == "/faults" and method == "GET" then
    -- a list, [] when none (lua-cjson would write an empty table as {})
    return reply(200, '{"faults":' .. (#S.faults > 0 and json.encode(S.faults) or "[]") .. "}")
  elseif rel == "/faults" and method == "POST" then
    if type(doc.kind) ~= "string" then return reply(400, '{"error":"kind is required"}') end
    S.faults[#S.faults + 1] = doc
    return reply(200, '{"ok":true}')
  elseif rel == "/config" and method == "POST" then
    if doc.command_pace then S.pace = doc.command_pace end
    if doc.failure_rate then S.failure_rate = doc.failure_rate end
    if doc.callback_retries then S.callback_retries = doc.callback_retries end
    if doc.clock_offset_ms then S.gw.clock_offset_ms = doc.clock_offset_ms end
    -- the credentials the gateway accepts from now on (a key revoked, a
    -- secret rotated); POST /reset restores the started ones
    if type(doc.app_key) == "string" then S.gw.app_key = doc.app_key end
    if type(doc.app_secret) == "string" then S.gw.signer = require("kinot.signer").new(doc.app_secret) end
    if doc.quirks ~= nil then S.quirks = doc.quirks == true end
    if doc.page1_zero ~= nil then S.page1_zero = doc.page1_zero end -- "clamp" (default), "error", "empty"
    if doc.offset_bound ~= nil then S.offset_bound = doc.offset_bound == true end
    if doc.paging ~= nil then
      if not PAGING[doc.paging] then return reply(400, '{"error":"paging must be page0, page1 or rows"}') end
      S.paging = doc.paging
    end
    return reply(200, '{"ok":true}')
  elseif rel == "/fleet" and method == "POST" then
    for _, k in ipairs { "lock", "sensor", "dtu" } do
      local n = tonumber(doc[k .. "s"])
      if n then S.fleet.n[k] = math.max(0, math.floor(n)) end
    end
    S.fleet.version = S.fleet.version + 1
    S.fleet.cache, S.fleet.cache_size = {}, 0
    return reply(200, '{"ok":true}')
  elseif rel == "/received" then
    return reply(200, #S.received > 0 and json.encode { received = S.received } or '{"received":[]}')
  elseif rel == "/callbacks" then
    return reply(200, '{"deliveries":' .. (#S.deliveries > 0 and json.encode(S.deliveries) or "[]") .. "}")
  elseif rel == "/trigger" and method == "POST" then
    return reply(trigger(doc))
  elseif rel == "/drift" and method == "POST" then
    local n = math.min(tonumber(doc.count) or 1, 10000)
    local changed = {}
    for _ = 1, n do
      local kind = S.rng() < 0.5 and "lock" or "sensor"
      local i = 1 + S.rng(S.fleet.n[kind])
      if S.fleet.n[kind] > 0 then
        local d = S.fleet:device(kind, i)
        change_device(d.sn, { car_detected = 1 - d.car_detected, updated_at = now_text() })
        changed[#changed + 1] = d.sn
      end
    end
    return reply(200, '{"changed":[' .. table.concat(changed, ",") .. "]}")
  else
    local sn = rel:match("^/devices/(%d+)$")
    if sn and method == "POST" then
      if doc.updated_at == nil then doc.updated_at = now_text() end -- a change happens now
      local d = change_device(tonumber(sn), doc)
      if not d then return reply(404, '{"error":"no such device"}') end
      return reply(200, '{"ok":true}')
    end
  end
  return reply(404, '{"error":"no such admin call"}')
end

return M
