-- A client: credentials, endpoint, transport and the API methods of docs/api.md.
local request = require "kinot.request"
local validate = require "kinot.validate"
local pager = require "kinot.pager"
local transports = require "kinot.transport"
local errors = require "kinot.errors"
local signer = require "kinot.signer"
local json = require "kinot.json"
local redact = require "kinot.redact"
local INT_LIMIT = require("kinot.vocabulary").INT_LIMIT -- 2^53: written exactly

local misuse = errors.misuse

--- A client (kinot.new): its methods return their result, or nil and a
--- kinot.Error; misuse raises (docs/api.md).
---@class kinot.Client
---@field app_key string
---@field endpoint string the base URL, without a trailing /
---@field stage? string
---@field timeout number
---@field connect_timeout number
---@field retries integer
---@field signature_method kinot.SignatureMethod
---@field paging kinot.Paging the reading asked for
---@field paging_found? kinot.Paging the reading paging = "auto" found, once it has found one
---@field verify_tls boolean
local Client = {}
Client.__index = Client

local DEFAULT_ENDPOINT = "http://device.api.parks8.com/open/lora/v1"

-- what kinot.new reads (docs/api.md): anything else is a mistake it names
local OPTIONS = validate.set {
  "app_key", "app_secret", "endpoint", "stage", "timeout", "connect_timeout", "retries", "backoff",
  "max_retry_after", "signature_method", "transport", "paging", "verify_tls", "ca_file", "proxy",
  "max_body", "resolver", "on_event", "metrics",
}
Client.OPTIONS = OPTIONS
local BACKOFF = validate.set { "base", "max" }
-- what each method taking an options (or query) table reads
local REQUEST = validate.set { "query", "body" }
local PAGE = validate.set { "offset", "limit" }
local EACH = validate.set { "limit", "concurrency", "on_page" }
local WAIT = validate.set { "timeout", "interval", "on_status" }
local NOTIFICATIONS = validate.set {
  "device_type", "status_changed_callback_url", "command_resp_callback_url", "commandResp_callback_url",
}

local function check_opts(o)
  local fail = misuse
  if type(o) ~= "table" then fail("kinot.new expects a table of options") end
  validate.options(o, OPTIONS, "kinot.new")
  if o.backoff ~= nil then validate.options(o.backoff, BACKOFF, "kinot.new backoff") end
  if type(o.app_key) ~= "string" or o.app_key == "" then
    fail("app_key is required (or set KINOT_APP_KEY)")
  end
  if type(o.app_secret) ~= "string" or o.app_secret == "" then
    fail("app_secret is required (or set KINOT_APP_SECRET)")
  end
  local endpoint = o.endpoint or DEFAULT_ENDPOINT
  local origin, path = tostring(endpoint):match("^(https?://[^/?#%s%c]+)(/?[^?#%s%c]*)$")
  if not origin then
    local shown = tostring(endpoint) -- its userinfo too: one without a scheme, or with a space
    fail("endpoint must be an http(s) URL like " .. DEFAULT_ENDPOINT .. " (got " .. redact.text(shown, shown) .. ")")
  end
  path = path:gsub("/+$", "")
  for _, k in ipairs { "timeout", "connect_timeout", "retries", "max_body" } do
    validate.positive(o[k], k)
  end
  -- what would mean one thing to libcurl and another to resty: a timeout
  -- under 1 ms (libcurl: none at all), max_body 0 (libcurl: no cap)
  for _, k in ipairs { "timeout", "connect_timeout" } do
    if o[k] ~= nil and o[k] < 0.001 then fail(k .. " must be at least 0.001 s (got " .. tostring(o[k]) .. ")") end
  end
  if o.retries ~= nil and not validate.integer(o.retries, 0, 1e9) then
    fail("retries must be a whole number >= 0 (got " .. tostring(o.retries) .. ")")
  end
  if o.max_body ~= nil and not validate.integer(o.max_body, 1, 1e15) then
    fail("max_body must be a whole number of bytes >= 1 (got " .. tostring(o.max_body) .. ")")
  end
  if o.signature_method and o.signature_method ~= "HmacSHA256" and o.signature_method ~= "HmacSHA1" then
    fail("signature_method must be \"HmacSHA256\" or \"HmacSHA1\"")
  end
  if o.on_event ~= nil and type(o.on_event) ~= "function" then fail("on_event must be a function") end
  if o.paging ~= nil and o.paging ~= "auto" and not pager.READINGS[o.paging] then
    fail("paging must be \"auto\", \"page0\", \"page1\" or \"rows\" (got " .. tostring(o.paging) .. ")")
  end
  return origin, path
end

--- new(opts) -> client
---@param o kinot.Options
---@return kinot.Client
function Client.new(o)
  local origin, base_path = check_opts(o)
  local self = setmetatable({
    app_key = o.app_key,
    origin = origin, base_path = base_path, endpoint = origin .. base_path,
    stage = o.stage,
    timeout = o.timeout or 10, connect_timeout = o.connect_timeout or 3,
    retries = o.retries or 2,
    backoff = { base = (o.backoff and o.backoff.base) or 0.25, max = (o.backoff and o.backoff.max) or 8 },
    max_retry_after = o.max_retry_after or 60,
    signature_method = o.signature_method or "HmacSHA256",
    on_event = o.on_event,
    metrics = o.metrics and require("kinot.metrics.api").new(o.metrics), -- kinot.request counts its calls there
    paging = o.paging or "auto", -- how the platform reads `offset` (pager.lua); auto: asked once
    verify_tls = o.verify_tls ~= false,
    clock_offset_ms = 0,
    -- the secret itself is kept only inside the C signer
    signer = signer.new(o.app_secret),
  }, Client)
  self.transport = transports.new(o.transport, {
    verify_tls = self.verify_tls, ca_file = o.ca_file, proxy = o.proxy,
    max_body = o.max_body or 8 * 1024 * 1024,
    resolver = o.resolver, -- resty: nameservers, under the request's deadline
  })
  return self
end

--- close(): frees the connection pool and the key; idempotent
function Client:close()
  if self.transport then self.transport.close() end
  if self.signer then self.signer:close() end
  self.transport, self.signer = nil, nil
end
Client.__close = Client.close
Client.__gc = Client.close

function Client:__tostring()
  return "kinot client " .. self.app_key .. " @ " .. redact.url(self.endpoint)
end

--- request(method, path, {query = {{k, v}...}, body = table|string}) -> status, headers, body | nil, err
-- One signed attempt, the answer as it came: for calls the SDK does not wrap.
---@param method string GET, POST, ...
---@param path string below the endpoint, starting with "/"
---@param opts? kinot.RequestOptions
---@return integer|nil status
---@return table<string, string>|kinot.Error headers_or_err
---@return string? body
function Client:request(method, path, opts)
  if type(method) ~= "string" or not method:match("^%u+$") then misuse("method must be GET, POST, ...") end
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" then misuse("path must start with '/' (below the endpoint)") end
  opts = validate.options(opts, REQUEST, "request") or {}
  local query = opts.query or {}
  if type(query) == "table" then -- (anything else: the signer names it)
    -- a number goes out as the integer it is, never "10.0", "2.5" or "nan"
    local copy = {}
    for i, p in ipairs(query) do
      copy[i] = p
      if type(p) == "table" and type(p[2]) == "number" then
        local n = validate.integer(p[2], -INT_LIMIT, INT_LIMIT)
        if not n then misuse("query " .. tostring(p[1]) .. " must be a string or an integer (got " .. tostring(p[2]) .. ")") end
        copy[i] = { p[1], validate.int_text(n) }
      end
    end
    query = copy
  end
  local call = { method = method, path = path, query = query }
  if type(opts.body) == "string" then call.raw_body = opts.body else call.body = json.check(opts.body, "body") end
  local res, err = request.send(self, call)
  if not res then return nil, err end
  return res.status, res.headers, res.body
end

local function get(self, path, query)
  return request.perform(self, { method = "GET", path = path, query = query or {}, idempotent = true })
end

local function first(doc, what)
  local obj = doc.objects and doc.objects[1]
  if not obj then
    return nil, errors.new("not_found", what .. " is not on the platform")
  end
  return obj
end

local AS_SENT = require("kinot.vocabulary").COMMAND_STATUS_AS_SENT
local function normalise_command(cmd)
  -- the platform's own spelling of command_status, in places
  if cmd.command_status == nil and cmd[AS_SENT] ~= nil then cmd.command_status = cmd[AS_SENT] end
  return cmd
end

local function page(self, path, opts, fname)
  validate.options(opts, PAGE, fname)
  local offset, limit = validate.page(opts)
  local doc, err = get(self, path, { { "offset", validate.int_text(offset) }, { "limit", validate.int_text(limit) } })
  if not doc then return nil, err end
  return { objects = doc.objects or {}, count = doc.count, offset = offset, limit = limit }
end

--- lockers{offset = 0, limit = 10} -> a page of locks
---@param opts? kinot.PageOptions
---@return kinot.LockPage|nil
---@return kinot.Error|nil
function Client:lockers(opts) return page(self, "/lockers", opts, "lockers") end
--- sensors{offset = 0, limit = 10} -> a page of sensors
---@param opts? kinot.PageOptions
---@return kinot.SensorPage|nil
---@return kinot.Error|nil
function Client:sensors(opts) return page(self, "/sensors", opts, "sensors") end

local function one(self, path, sn, what)
  sn = validate.sn(sn, "sn")
  local doc, err = get(self, path .. "/" .. validate.sn_text(sn))
  if not doc then return nil, err end
  return first(doc, what .. " " .. validate.sn_text(sn))
end

--- locker(sn) -> the lock, or nil and an error of kind not_found
---@param sn kinot.Sn
---@return kinot.Lock|nil
---@return kinot.Error|nil
function Client:locker(sn) return one(self, "/lockers", sn, "lock") end
---@param sn kinot.Sn
---@return kinot.Sensor|nil
---@return kinot.Error|nil
function Client:sensor(sn) return one(self, "/sensors", sn, "sensor") end
---@param sn kinot.Sn
---@return kinot.Dtu|nil
---@return kinot.Error|nil
function Client:dtu_device(sn) return one(self, "/dtu_devices", sn, "DTU") end

local function each(self, path, opts, fname)
  opts = validate.options(opts, EACH, fname) or {}
  local _, limit = validate.page({ limit = opts.limit or 100 })
  local conc = validate.integer(opts.concurrency or 1, 1, 64)
  if not conc then misuse("concurrency must be an integer from 1 to 64 (got " .. tostring(opts.concurrency) .. ")") end
  if opts.on_page ~= nil and type(opts.on_page) ~= "function" then misuse("on_page must be a function") end
  return pager.iterate(self, path, limit, conc, opts.on_page)
end

--- each_locker{limit = 100, concurrency = 1, on_page = fn} -> an iterator over every lock;
--- it raises the kinot.Error (catch it with pcall)
---@param opts? kinot.EachOptions
---@return fun(): kinot.Lock?
function Client:each_locker(opts) return each(self, "/lockers", opts, "each_locker") end
---@param opts? kinot.EachOptions
---@return fun(): kinot.Sensor?
function Client:each_sensor(opts) return each(self, "/sensors", opts, "each_sensor") end

-- A command, as send_command and send_commands (kinot.batch) make it: the
-- call that creates one, the call that reads one, and what their answers are
local command = {}
function command.call(sn, key, value)
  return { method = "POST", path = "/commands", query = {}, idempotent = false,
           body = { sn = sn, command = 1, parameter = { key = key, value = value } } }
end
function command.poll(guid)
  return { method = "GET", path = "/commands", query = { { "guid", guid } }, idempotent = true }
end
function command.answer(doc, what)
  local cmd, err = first(doc, what or "the command")
  if not cmd then return nil, err end
  return normalise_command(cmd)
end

--- send_command(sn, parameter) -> command; never sent twice by the SDK
---@param sn kinot.Sn
---@param parameter kinot.CommandParameter
---@return kinot.Command|nil
---@return kinot.Error|nil kind unknown_outcome when it cannot be known whether the command was created
function Client:send_command(sn, parameter)
  sn = validate.sn(sn, "sn")
  if type(parameter) ~= "table" or parameter.key == nil or parameter.value == nil then
    misuse("parameter must be a table like {key = \"handle\", value = 1}")
  end
  json.check(parameter.key, "parameter.key")
  json.check(parameter.value, "parameter.value")
  local doc, err = request.perform(self, command.call(sn, parameter.key, parameter.value))
  if not doc then return nil, err end
  return command.answer(doc, "the new command")
end

--- send_commands(items, opts) -> results, summary: many commands, each
--- device at most once (docs/api.md); nil, err only when its journal cannot
--- be written (nothing sent)
---@param items kinot.BatchItem[]
---@param opts? kinot.BatchOptions
---@return kinot.BatchResult[]|nil
---@return kinot.BatchSummary|kinot.Error
function Client:send_commands(items, opts)
  return require("kinot.batch").run(self, items, opts, command)
end

--- wait_commands(guids, {concurrency = 8, wait_timeout = 60, on_progress = fn}) -> results, summary:
--- commands already sent, each followed to succeeded or failed
---@param guids string[]
---@param opts? kinot.WaitManyOptions
---@return kinot.BatchResult[]
---@return kinot.BatchSummary
function Client:wait_commands(guids, opts)
  return require("kinot.batch").follow(self, guids, opts, command)
end

--- command(guid) -> the command's current state
---@param guid string
---@return kinot.Command|nil
---@return kinot.Error|nil
function Client:command(guid)
  guid = validate.guid(guid)
  local doc, err = request.perform(self, command.poll(guid))
  if not doc then return nil, err end
  return command.answer(doc, "command " .. guid)
end

local FINAL = { succeeded = true, failed = true }

--- wait_command(guid, {timeout = 60, interval = 0.5, on_status = fn}) -> command in a final state;
--- on_status(cmd) is called with each state read (the course: pending, arrived ... then the final one)
---@param guid string
---@param opts? kinot.WaitOptions
---@return kinot.Command|nil
---@return kinot.Error|nil kind timeout (err.command: the last state) when the wait runs out
function Client:wait_command(guid, opts)
  guid = validate.guid(guid)
  opts = validate.options(opts, WAIT, "wait_command") or {}
  local timeout = validate.positive(opts.timeout, "timeout", true) or 60
  local interval = validate.positive(opts.interval, "interval") or 0.5
  local on_status = opts.on_status
  if on_status ~= nil and type(on_status) ~= "function" then misuse("on_status must be a function") end
  -- 0 would poll the platform without a pause until the timeout
  if interval < 0.01 then misuse("interval must be at least 0.01 s (got " .. tostring(interval) .. ")") end
  local now, sleep = self.transport.now, self.transport.sleep
  local deadline = now() + timeout
  local last
  while true do
    local cmd, err = self:command(guid)
    if not cmd then return nil, err end
    last = cmd
    if on_status then on_status(cmd) end
    if FINAL[cmd.command_status] then return cmd end
    local left = deadline - now()
    if left <= 0 then
      return nil, errors.new("timeout", "command " .. guid .. " still " .. tostring(last.command_status) ..
        " after " .. timeout .. " s", { retryable = true, command = last })
    end
    sleep(math.min(interval, left))
    interval = math.min(interval * 1.5, 5)
  end
end

--- reset_bt_match_code(sn): a new BlueTooth match code for a lock (handle = 1)
---@param sn kinot.Sn
---@return kinot.Command|nil
---@return kinot.Error|nil
function Client:reset_bt_match_code(sn) return self:send_command(sn, { key = "handle", value = 1 }) end
--- activate_sensor(sn): handle = 1 for a sensor
---@param sn kinot.Sn
---@return kinot.Command|nil
---@return kinot.Error|nil
function Client:activate_sensor(sn) return self:send_command(sn, { key = "handle", value = 1 }) end
--- freeze_sensor(sn): handle = 2 for a sensor
---@param sn kinot.Sn
---@return kinot.Command|nil
---@return kinot.Error|nil
function Client:freeze_sensor(sn) return self:send_command(sn, { key = "handle", value = 2 }) end

-- settings answered with the table's spelling read as the example's
local function one_spelling(conf)
  if type(conf) == "table" and conf.command_resp_callback_url == nil then
    conf.command_resp_callback_url = conf.commandResp_callback_url
  end
  return conf
end

--- set_notifications{device_type = 18, status_changed_callback_url = u1, command_resp_callback_url = u2}
---@param opts kinot.NotificationSettings
---@return kinot.Notification|nil
---@return kinot.Error|nil
function Client:set_notifications(opts)
  if type(opts) ~= "table" then misuse("set_notifications expects a table") end
  validate.options(opts, NOTIFICATIONS, "set_notifications")
  local dt = validate.device_type(opts.device_type)
  local body = { device_type = dt }
  local any = false
  -- the reference's table spells commandResp_callback_url, its example
  -- command_resp_callback_url: either is taken, and both are sent
  local alias = opts.commandResp_callback_url
  if alias ~= nil and opts.command_resp_callback_url ~= nil and alias ~= opts.command_resp_callback_url then
    misuse("command_resp_callback_url and commandResp_callback_url (one field, two spellings) differ")
  end
  for _, k in ipairs { "status_changed_callback_url", "command_resp_callback_url" } do
    local v = opts[k]
    if v == nil and k == "command_resp_callback_url" then v = alias end
    if v ~= nil then body[k] = v == "" and "" or validate.url(v, k); any = true end -- "" clears it
  end
  if not any then misuse("give status_changed_callback_url and/or command_resp_callback_url") end
  body.commandResp_callback_url = body.command_resp_callback_url
  local doc, err = request.perform(self, { method = "POST", path = "/notifications", query = {}, body = body, idempotent = true })
  if not doc then return nil, err end
  return one_spelling((doc.objects and doc.objects[1]) or body)
end

---@param device_type kinot.DeviceType
---@return kinot.Notification|nil
---@return kinot.Error|nil
function Client:notifications(device_type)
  local dt = validate.device_type(device_type)
  local doc, err = get(self, "/notifications", { { "device_type", tostring(dt) } })
  if not doc then return nil, err end
  local conf, ferr = first(doc, "notification settings for device type " .. dt)
  return one_spelling(conf), ferr
end

--- test_notification(sn, callback_type): the platform sends a test callback now (never sent twice by the SDK)
---@param sn kinot.Sn
---@param callback_type? kinot.CallbackType default "status_changed"
---@return kinot.TestNotification|nil
---@return kinot.Error|nil
function Client:test_notification(sn, callback_type)
  sn = validate.sn(sn, "sn")
  validate.callback_type(callback_type or "status_changed")
  local doc, err = request.perform(self, { method = "POST", path = "/test/notifications", query = {},
    body = { sn = sn, callback_type = callback_type or "status_changed" }, idempotent = false })
  if not doc then return nil, err end
  return (doc.objects and doc.objects[1]) or {}
end

-- A closed client: every public method raises, before looking at its
-- arguments, whichever method it is (those added later included).
for name, fn in pairs(Client) do
  if type(fn) == "function" and not name:match("^_") and name ~= "new" and name ~= "close" then
    Client[name] = function(self, ...)
      if type(self) ~= "table" then misuse("call client:" .. name .. "(...) with a colon") end
      if self.signer == nil then misuse("client is closed") end
      return fn(self, ...)
    end
  end
end

-- ------------------------------------------------------------ LuaLS types
-- The shapes of the answers, from the reference's field tables
-- (kinot.vocabulary.fields; docs/platform.md). Fields the tables do not
-- list pass through as decoded.

--- a device's serial: a positive integer, or a string of digits
---@alias kinot.Sn integer|string
--- 18 or "lock", 34 or "sensor"
---@alias kinot.DeviceType 18|34|"lock"|"sensor"
---@alias kinot.CallbackType "status_changed"|"command_resp"
---@alias kinot.CommandStatus "sending"|"pending"|"arrived"|"succeeded"|"failed"

---@class kinot.PageOptions
---@field offset? integer 0..2^31-1, sent as given; how the platform reads it: the client's paging (default 0)
---@field limit? integer 10..100 (default 10)

---@class kinot.EachOptions
---@field limit? integer 10..100 devices a page (default 100)
---@field concurrency? integer 1..64 pages fetched at once (default 1)
---@field on_page? fun(pages_done: integer, pages_total: integer) after each page

---@class kinot.WaitOptions
---@field timeout? number seconds (default 60; math.huge waits for ever)
---@field interval? number seconds between polls, growing by half each time up to 5 (default 0.5)
---@field on_status? fun(cmd: kinot.Command) called with each state read, the final one included

---@class kinot.RequestOptions
---@field query? string[][] ordered {name, value} pairs
---@field body? table|string a table is sent as JSON, a string as it is

--- a serial (the value: parameter.value), or {sn = SN, value = V} / {SN, V}
---@alias kinot.BatchItem kinot.Sn|table

---@class kinot.WaitManyOptions
---@field concurrency? integer 1..64 polls at once (default 8)
---@field wait_timeout? number seconds per command (default 60)
---@field on_progress? fun(p: kinot.BatchProgress) after each round

---@class kinot.BatchOptions
---@field parameter? {key?: string, value?: any} key (default "handle") and the value of items that give none
---@field concurrency? integer 1..64 calls at once (default 8); halved while the platform throttles
---@field rate? number commands a second at most
---@field wait? boolean follow each command to succeeded or failed
---@field wait_timeout? number seconds per command from its creation (default 60)
---@field abort_after? number a count of failures (>= 1) or a ratio of them (0..1) that stops sending
---@field on_progress? fun(p: kinot.BatchProgress) after each round
---@field journal? string a file path: the batch's record, to resume it

---@class kinot.BatchProgress
---@field total integer
---@field sent integer
---@field succeeded integer
---@field failed integer
---@field unknown integer
---@field skipped integer
---@field pending integer
---@field concurrency integer the limit now

---@class kinot.BatchResult
---@field sn integer
---@field value any
---@field outcome "succeeded"|"failed"|"unknown"|"sent"|"skipped"
---@field guid? string
---@field command_status? kinot.CommandStatus the last one read
---@field reason? string
---@field error? kinot.Error kind unknown_outcome when the command may or may not have been created
---@field attempts integer POSTs written in this run
---@field resumed? boolean what it came to was read from the journal

---@class kinot.BatchSummary
---@field total integer
---@field sent integer POSTs written in this run
---@field succeeded integer
---@field failed integer
---@field unknown integer
---@field skipped integer not sent: the batch stopped
---@field pending integer created, no final status read
---@field throttled integer throttled answers
---@field resumed integer items found in the journal
---@field aborted false|string why the batch stopped sending
---@field unknown_sns? integer[]
---@field elapsed number seconds
---@field concurrency integer the limit at the end

---@class kinot.CommandParameter
---@field key string "handle"
---@field value any 1 or 2 (anything JSON can carry)

---@class kinot.NotificationSettings
---@field device_type kinot.DeviceType
---@field status_changed_callback_url? string "" clears it
---@field command_resp_callback_url? string "" clears it
---@field commandResp_callback_url? string the reference table's spelling of command_resp_callback_url

---@class kinot.Page
---@field count? integer the devices on the platform (the answer's count)
---@field offset integer as sent
---@field limit integer as sent

---@class kinot.LockPage: kinot.Page
---@field objects kinot.Lock[]

---@class kinot.SensorPage: kinot.Page
---@field objects kinot.Sensor[]

---@class kinot.Lock
---@field sn integer the lock's serial
---@field voltage number battery voltage (float)
---@field frequency number loop coil frequency (float)
---@field locked integer 0 down, 1 up
---@field car_detected integer 0 available, 1 occupied
---@field shell_opened integer cabinet: 0 normal, 1 open (a fault flag)
---@field low_battery integer 0 normal, 1 low
---@field coil_fault integer loop: 0 normal, 1 fault
---@field bar_position_error integer bar position: 0 normal, 1 fault
---@field motor_fail integer motor: 0 normal, 1 fault
---@field rs_si number signal strength, nearer 0 is stronger (float)
---@field bt_match_code string BlueTooth match code
---@field bt_mac string BlueTooth MAC
---@field updated_at string ISO 8601 with offset (2019-03-13T10:42:39+08:00)

---@class kinot.Sensor
---@field sn integer the sensor's serial
---@field voltage number battery voltage (float)
---@field frequency number loop coil frequency (float)
---@field car_detected integer 0 available, 1 occupied
---@field low_battery integer 0 normal, 1 low
---@field coil_fault integer loop: 0 normal, 1 fault
---@field rs_si number signal strength (float)
---@field updated_at string ISO 8601 with offset
---@field active? integer 1 active, 0 frozen (in the reference's example, in no table: untyped)

---@class kinot.Dtu
---@field sn integer the gateway's serial
---@field hw integer
---@field sw integer
---@field firmware integer
---@field host string
---@field online string "online" or "offline"
---@field updated_at string

---@class kinot.Command
---@field guid string
---@field sn integer
---@field command integer always 1
---@field command_status kinot.CommandStatus
---@field commnad_status? kinot.CommandStatus the platform's spelling, as it came
---@field parameter kinot.CommandParameter as the platform gave it (json)
---@field reason? string a failed command's reason, when the platform gives one

---@class kinot.Notification
---@field device_type integer 18 or 34
---@field status_changed_callback_url? string
---@field command_resp_callback_url? string
---@field commandResp_callback_url? string the reference table's spelling, when the platform answers with it
---@field update_at? string (the platform's spelling)

---@class kinot.TestNotification
---@field sn? integer
---@field callback_url? string
---@field error_detail? string
return Client
