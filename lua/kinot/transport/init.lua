-- Picks a transport (docs/transports.md): "curl", "resty", a function, or "auto"
-- (resty inside nginx, curl elsewhere).  Never libcurl inside a worker.
local errors = require "kinot.errors"
local validate = require "kinot.validate"

local M = {}

local function in_nginx()
  return rawget(_G, "ngx") ~= nil and ngx.socket ~= nil -- luacheck: ignore
end

-- what the transports read of the client's options (kinot.client passes them)
local OPTIONS = validate.set { "verify_tls", "ca_file", "proxy", "max_body", "resolver" }

--- new(kind, opts) -> transport object {name, send, stream?, sleep, now, close}
function M.new(kind, opts)
  opts = validate.options(opts, OPTIONS, "transport.new") or {}
  kind = kind or "auto"
  if type(kind) == "function" then
    local core = require "kinot.core_loader"
    local fn = kind
    local sleep = in_nginx() and ngx.sleep or core.sleep -- luacheck: ignore
    return {
      name = "function",
      send = function(req)
        local res, err = fn(req)
        if not res then
          if type(err) == "table" then return nil, err.kind or "network", err.message or tostring(err), err.not_sent end
          return nil, "network", tostring(err or "transport failed"), false
        end
        return res
      end,
      sleep = sleep, now = core.monotonic, close = function() end,
    }
  end
  if kind == "auto" then kind = in_nginx() and "resty" or "curl" end
  if kind == "curl" then
    if in_nginx() then
      errors.misuse("the curl transport would block the nginx worker; use transport = \"resty\" (or \"auto\")")
    end
    return require("kinot.transport.curl").new(opts)
  elseif kind == "resty" then
    if not in_nginx() then errors.misuse("transport 'resty' needs nginx with the Lua module (ngx.socket)") end
    return require("kinot.transport.resty").new(opts)
  end
  errors.misuse("transport must be \"auto\", \"curl\", \"resty\" or a function (got " .. tostring(kind) .. ")")
end

return M
