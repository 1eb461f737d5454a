-- The twin's JSON API, the part of `kinot serve` that answers questions
-- (docs/fleet.md, "The JSON API"): every answer from the twin, never from
-- the platform.
--   GET /api/fleet              the summary
--   GET /api/devices            ?kind=&group=&occupied=&fault=&low_battery=&weak_signal=&offline=&stale=&gone=&up=
--                               &offset=&limit=  (booleans: true / false / 1 / 0)
--   GET /api/devices/{sn}       one device, 404 when the twin never saw it
--   GET /api/changes            ?since=&limit=   the change events after the cursor
-- A request from another host than loopback, or sent to another name than
-- this machine's (a rebound DNS name), needs the API token
-- (`Authorization: Bearer TOKEN`); without a token configured, only
-- loopback is answered.  handle() is plain Lua (a request table in, status
-- and body out); nginx() is its content handler.
local json = require "kinot.json"
local errors = require "kinot.errors"
local whole = require("kinot.vocabulary").whole

local M = {}

local type, tostring, tonumber, pcall, pairs, concat = type, tostring, tonumber, pcall, pairs, table.concat

local function body(doc) return json.encode(doc) end

local function problem(status, message)
  return status, body { error = message }
end

-- an object whose member `name` is a list, written as a list even when
-- empty (Debian's lua-cjson writes an empty table as {})
local function with_list(doc, name)
  local items = doc[name]
  doc[name] = nil
  local out = {}
  for i = 1, #items do out[i] = json.encode(items[i]) end
  local rest = json.encode(doc)
  return '{"' .. name .. '":[' .. concat(out, ",") .. "]" .. (rest == "{}" and "}" or ("," .. rest:sub(2)))
end

local LOOPBACK = { ["127.0.0.1"] = true, ["::1"] = true }
local function loopback(addr)
  return addr ~= nil and (LOOPBACK[addr] or addr:match("^127%.%d+%.%d+%.%d+$") ~= nil)
end

-- the name the request was sent to (Host, nginx's $host: lower case, no
-- port) is this machine's own: a loopback address or localhost. A page of
-- another site whose name the attacker turned to 127.0.0.1 (DNS rebinding)
-- connects from loopback too, but under its own name: it is not trusted.
-- No name at all (HTTP/1.0, plain Lua callers) is no browser's request.
local function local_name(host)
  if host == nil or host == "" then return true end
  host = host:lower():gsub(":%d+$", "")
  return host == "localhost" or host == "[::1]" or host == "::1" or loopback(host)
end

-- the two texts compared in constant time, their lengths too: the core's
-- comparison (kinot.core.ct_equal, CRYPTO_memcmp) over their SHA-256, so
-- that neither a first difference nor a length shows in the time taken
local core = require "kinot.core"
local function same_secret(a, b)
  return core.ct_equal(core.digest("sha256", a, nil, "raw"), core.digest("sha256", b, nil, "raw"))
end

-- the token a request gives (Authorization: Bearer TOKEN, the scheme in
-- any case: RFC 7235) | nil
local function bearer(req)
  local scheme, token
  if type(req.authorization) == "string" then scheme, token = req.authorization:match("^(%a+)%s+(%S+)%s*$") end
  return scheme and scheme:lower() == "bearer" and token or nil
end

local function allowed(req, token)
  if loopback(req.remote_addr) and local_name(req.host) then return true end
  if not token or token == "" then
    return false, "this API answers only loopback, under this machine's name (127.0.0.1, localhost), until it " ..
      "has an API token (--api-token or KINOT_API_TOKEN)"
  end
  local given = bearer(req)
  if not given or not same_secret(given, token) then return false, "a valid API token is needed (Authorization: Bearer ...)" end
  return true
end

M.allowed = allowed -- (GET /metrics takes the same rule: kinot.serve.metrics)

local BOOLEAN = { occupied = true, low_battery = true, weak_signal = true, offline = true, stale = true, gone = true,
                  up = true }
local TRUTH = { ["true"] = true, ["1"] = true, ["false"] = false, ["0"] = false }

-- the query's filters for twin:devices | nil, message
local function filters(args)
  local q = {}
  for k, v in pairs(args) do
    if type(v) == "table" then return nil, k .. " is given twice" end
    if BOOLEAN[k] then
      if TRUTH[v] == nil then return nil, k .. " must be true or false" end
      q[k] = TRUTH[v]
    elseif k == "fault" then
      if TRUTH[v] ~= nil then q.fault = TRUTH[v] else q.fault = v end
    elseif k == "offset" or k == "limit" then
      q[k] = tonumber(v)
      if not q[k] then return nil, k .. " must be a number" end
    elseif k == "kind" or k == "group" then
      q[k] = v
    else
      return nil, "unknown filter " .. tostring(k):sub(1, 40)
    end
  end
  return q
end

local function fleet(twin)
  local s, err = twin:summary()
  if not s then return problem(503, "the twin's store failed: " .. tostring(err)) end
  if s.synced_at == nil then s.synced_at = json.null end
  return 200, body(s)
end

local function devices(twin, args)
  local q, why = filters(args)
  if not q then return problem(400, why) end
  local ok, page, err = pcall(twin.devices, twin, q)
  if not ok then
    if errors.is_misuse(page) then return problem(400, tostring(page)) end
    error(page, 0)
  end
  if not page then return problem(503, "the twin's store failed: " .. tostring(err)) end
  return 200, with_list(page, "devices")
end

local function one(twin, sn)
  local n = whole(tonumber(sn)) -- the integer rule (kinot.vocabulary)
  if not n or n < 1 then return problem(400, "a serial is wanted") end
  local d, err = twin:device(n)
  if not d then
    if err then return problem(503, "the twin's store failed: " .. tostring(err)) end
    return problem(404, "the twin has never seen device " .. sn)
  end
  return 200, body(d)
end

local function changes(twin, args)
  local limit = args.limit and tonumber(args.limit)
  if args.limit and not limit then return problem(400, "limit must be a number") end
  local since = args.since
  if since == "" then since = nil end
  local ok, got, err = pcall(twin.changes, twin, since, limit)
  if not ok then
    if errors.is_misuse(got) then return problem(400, tostring(got)) end
    error(got, 0)
  end
  if not got then return problem(503, "the twin's store failed: " .. tostring(err)) end
  if got.next == nil then got.next = json.null end
  return 200, with_list(got, "changes")
end

--- handle(twin, req, opts) -> status, body (JSON text).  req: { method,
-- path, args (the query, decoded), remote_addr, host, authorization }; opts:
-- { token }
function M.handle(twin, req, opts)
  local ok, why = allowed(req, opts and opts.token)
  if not ok then return problem(401, why) end
  local path = req.path
  if req.method ~= "GET" and req.method ~= "HEAD" then return problem(405, "the JSON API answers GET") end
  local args = req.args or {}
  if path == "/api/fleet" then return fleet(twin) end
  if path == "/api/devices" then return devices(twin, args) end
  if path == "/api/changes" then return changes(twin, args) end
  local sn = path:match("^/api/devices/([^/]+)$")
  if sn then return one(twin, sn) end
  return problem(404, "no such API path")
end

--- allowed(req, token) -> true | false, why: the reading rule (loopback, or
-- the token), for the other routes of `kinot serve` (kinot.serve.commands)
M.allowed = allowed

--- token_given(req, token) -> true | false, why: the token itself, from
-- loopback too (what can send a command needs it; kinot.serve.commands)
function M.token_given(req, token)
  if not token or token == "" then
    return false, "no_token", "commands are off: this server has no API token (start kinot serve with --api-token " ..
      "or KINOT_API_TOKEN); anything that can send a command needs it"
  end
  local given = bearer(req)
  if not given then return false, "missing", "a command needs the API token (Authorization: Bearer ...)" end
  if not same_secret(given, token) then return false, "wrong", "the API token is wrong" end
  return true
end

--- nginx(twin, opts): answers the request in a content handler
function M.nginx(twin, opts)
  local ngx = rawget(_G, "ngx")
  local status, text = M.handle(twin, {
    method = ngx.req.get_method(), path = ngx.var.uri, args = ngx.req.get_uri_args(),
    remote_addr = ngx.var.remote_addr, host = ngx.var.host, authorization = ngx.var.http_authorization,
  }, opts)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.header["X-Content-Type-Options"] = "nosniff" -- an error echoes the path or the query
  if status == 401 then ngx.header["WWW-Authenticate"] = 'Bearer realm="kinot"' end
  ngx.print(text, "\n")
end

return M
