-- Receiving one callback delivery, whatever the server: verify, answer,
-- deduplicate, dispatch.  The OpenResty handler adapts it to nginx.
local callback = require "kinot.callback"
local recent = require "kinot.callback.recent"
local json = require "kinot.json"

local M = {}
M.__index = M

local OK_BODY = '{"code":0,"message":"OK"}'
M.OK_BODY = OK_BODY

local STATUS = { too_large = 413, no_sign = 401, bad_sign = 401 }

local function err_body(status, err)
  return json.encode { code = status, message = err.message }
end

function M.new(opts)
  if type(opts) ~= "table" then error("kinot: callback receiver needs a table of options", 3) end
  if opts.secret == nil then error("kinot: callback receiver needs opts.secret (string or list)", 3) end
  for _, k in ipairs { "on_status", "on_command" } do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then error("kinot: " .. k .. " must be a function", 3) end
  end
  local max_body = opts.max_body or callback.MAX_BODY
  if type(max_body) ~= "number" or max_body < 1 then error("kinot: max_body must be a positive number", 3) end
  return setmetatable({
    secrets = callback.secrets_of(opts.secret, 4), on_status = opts.on_status, on_command = opts.on_command,
    max_body = max_body, seen = opts.seen or recent.new(opts.dedupe_capacity or 10000, opts.dedupe_ttl or 3600, opts.clock),
  }, M)
end

--- receive(raw) -> status, response body, event (nil if refused or a duplicate), err, duplicate
-- The event is built by the call that verifies the body and owns all it
-- holds: seen:add may yield (a store on cosockets) without another
-- request's verification changing it.
function M:receive(raw)
  local ev, err = callback.check(raw, self.secrets, self.max_body)
  if not ev then
    local status = STATUS[err.reason] or 400 -- not_json, not_object, duplicate_key, malformed: 400
    return status, err_body(status, err), nil, err
  end
  if not self.seen:add(ev.id) then return 200, OK_BODY, nil, nil, true end
  return 200, OK_BODY, ev
end

--- dispatch(event): calls on_command / on_status; errors are returned, not raised
function M:dispatch(ev)
  local fn = ev.kind == "command_resp" and self.on_command or self.on_status
  if not fn then return true end
  return pcall(fn, ev)
end

return M
