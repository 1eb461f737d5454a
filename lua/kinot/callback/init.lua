-- The platform's callbacks (docs/callback-sign.md): canonical string, sign, verify.
-- The body scan and MD5 are C (kinot.core); this file turns the result into
-- an event and says clearly why a body is refused.
local core = require "kinot.core"
local json = require "kinot.json"
local scanner = require "kinot.callback.scanner"
local errors = require "kinot.errors"
local rules = require "kinot.callback.rules"

local M = {}

M.MAX_BODY = 64 * 1024

local scan, digest_of = core.callback_scan, core.callback_digest
local check, data_of = scanner.check, scanner.data
local type, pairs = type, pairs

local DEVICE_BY_TYPE = { [18] = "lock", [34] = "sensor" }
-- members only a lock reports
local LOCK_ONLY = { "locked", "shell_opened", "bar_position_error", "motor_fail", "bt_match_code", "bt_mac" }

local function refuse(reason, message)
  return nil, errors.new("callback", message, { reason = reason })
end

-- scan(raw) -> canonical, given sign | nil, err
local function scan_body(raw)
  if type(raw) ~= "string" then error("kinot: callback body must be a string", 4) end
  local canonical, given, message = scan(raw)
  if not canonical then return refuse(given, "callback body refused: " .. message) end
  return canonical, given
end

--- canonical(raw) -> the string that is signed, without the key | nil, err
function M.canonical(raw)
  return scan_body(raw)
end

--- sign(raw, secret) -> 32 upper-case hex chars (any sign member ignored) | nil, err
function M.sign(raw, secret)
  if type(secret) ~= "string" then error("kinot: callback secret must be a string", 2) end
  local canonical, err = scan_body(raw)
  if not canonical then return nil, err end
  return digest_of(canonical, secret)
end

--- secrets(opts) -> list of secrets, checked once (misuse raises)
local function secrets_of(s, level)
  if type(s) == "string" then return { s } end
  if type(s) == "table" and #s > 0 then
    for i = 1, #s do
      if type(s[i]) ~= "string" then error("kinot: secret[" .. i .. "] must be a string", level) end
    end
    return s
  end
  error("kinot: callback verification needs opts.secret (a string or a list of strings)", level)
end
M.secrets_of = secrets_of

--- check(raw, secrets, max_body) -> digest, secret index | nil, err
-- The sign alone, all in C: the members stay in the scanner for event().
function M.check(raw, secrets, max_body)
  if type(raw) ~= "string" then error("kinot: callback body must be a string", 3) end
  if #raw > max_body then
    return refuse("too_large", "callback body is " .. #raw .. " bytes, over the " .. max_body .. "-byte cap")
  end
  local digest, index, message = check(raw, secrets)
  if not digest then
    if index ~= "no_sign" and index ~= "bad_sign" then message = "callback body refused: " .. message end
    return refuse(index, message)
  end
  return digest, index
end

local function device_of(data)
  local by_type = DEVICE_BY_TYPE[tonumber(data.device_type)]
  if by_type then return by_type end
  for _, k in ipairs(LOCK_ONLY) do
    if data[k] ~= nil then return "lock" end
  end
  if data.guid == nil and (data.car_detected ~= nil or data.active ~= nil) then return "sensor" end
  return "unknown"
end

--- event(digest, index) -> the event of the body last checked
function M.event(digest, index)
  local data, nested = data_of()
  if nested then
    for k, text in pairs(nested) do
      local v = json.decode(text)
      if v ~= nil then data[k] = v end
    end
  end
  return M.event_of(data, digest, index)
end

--- event_of(data, id, index) -> the event of a body's members (as Lua values)
function M.event_of(data, digest, index)
  data.sign = nil -- a signature goes into no event
  if data.command_status == nil and data.commnad_status ~= nil then data.command_status = data.commnad_status end
  return {
    kind = data.guid ~= nil and "command_resp" or "status_changed",
    device = device_of(data),
    sn = data.sn,
    guid = data.guid,
    command_status = data.command_status,
    data = data,
    secret_index = index,
    -- the verified sign names the content: a redelivery carries the same
    id = digest,
    verified = true, -- false only under verify = "monitor" (receiver.lua)
  }
end

--- verify(raw, opts) -> event | nil, err
-- opts.secret: string or list (rotation); opts.max_body (default 64 KiB);
-- opts.sign_rule: a rule name or table (kinot.callback.rules; default "md5-key")
function M.verify(raw, opts)
  local secrets = secrets_of(opts and opts.secret, 3)
  -- sign_rule hook (kinot.callback.rules): any rule but the default
  if opts.sign_rule ~= nil and not rules.is_default(opts.sign_rule) then
    local id, index, members = rules.check(raw, secrets, rules.rule(opts.sign_rule, 2), opts.max_body or M.MAX_BODY)
    if not id then return nil, index end
    return M.event_of(rules.data(members), id, index)
  end
  local digest, index = M.check(raw, secrets, (opts and opts.max_body) or M.MAX_BODY)
  if not digest then return nil, index end
  return M.event(digest, index)
end

--- discover(raw, secrets[, rules]) -> report | nil, err: every sign rule
-- (the known ones, and any given) under which the body verifies with one of
-- the secrets (kinot.callback.rules)
function M.discover(raw, secrets, extra)
  return rules.discover(raw, secrets, extra)
end

--- receiver(opts) -> object with :receive(raw) -> status, body, event|nil, err|nil
-- Framework-neutral: the OpenResty handler is a thin adapter over it.
function M.receiver(opts)
  return require("kinot.callback.receiver").new(opts)
end

--- handler(opts) -> function for content_by_lua_block (docs/callbacks.md)
function M.handler(opts)
  return require("kinot.callback.handler").new(opts)
end

return M
