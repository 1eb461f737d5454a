-- The "curl" transport: the C core's libcurl handle (docs/transports.md).  One
-- handle per client, so connections stay alive between calls.
local core = require "kinot.core_loader"

local M = {}

--- new(opts) -> transport object with :send(request), :send_many(list), :close()
function M.new(opts)
  local http = core.http()
  local base = {
    verify_tls = opts.verify_tls, ca_file = opts.ca_file, proxy = opts.proxy,
    max_body = opts.max_body,
  }
  local self = { name = "curl", sleep = core.sleep, now = core.monotonic }

  local function fill(req)
    req.verify_tls = base.verify_tls
    req.ca_file = base.ca_file
    req.proxy = base.proxy
    req.max_body = req.max_body or base.max_body
    return req
  end

  --- send(req) -> response | nil, kind, message, not_sent
  function self.send(req)
    return http:request(fill(req))
  end

  --- send_many({req...}) -> { response | {error=, message=, not_sent=} ... }
  function self.send_many(reqs)
    for i = 1, #reqs do fill(reqs[i]) end
    return http:request_many(reqs)
  end

  function self.close()
    http:close()
  end

  return self
end

return M
