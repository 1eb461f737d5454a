-- GET /metrics of `kinot serve` (docs/metrics.md): the registry's text
-- under the JSON API's rule (kinot.serve.api: loopback, else the API
-- token).  handle() is plain Lua (a request table in, status, headers and
-- body out); nginx() is its content handler.
local api = require "kinot.serve.api"
local metrics = require "kinot.metrics"

local M = {}

--- handle(registry, req, opts) -> status, content type, body.  req: {
-- method, remote_addr, host, authorization }; opts: { token }
function M.handle(registry, req, opts)
  local ok, why = api.allowed(req, opts and opts.token)
  if not ok then return 401, "text/plain", why .. "\n" end
  if req.method ~= "GET" and req.method ~= "HEAD" then return 405, "text/plain", "GET /metrics\n" end
  return 200, metrics.CONTENT_TYPE, registry:render()
end

--- nginx(registry, opts): answers the request in a content handler
function M.nginx(registry, opts)
  local ngx = rawget(_G, "ngx")
  local status, ctype, body = M.handle(registry, {
    method = ngx.req.get_method(), remote_addr = ngx.var.remote_addr, host = ngx.var.host,
    authorization = ngx.var.http_authorization,
  }, opts)
  ngx.status = status
  ngx.header["Content-Type"] = ctype
  ngx.header["X-Content-Type-Options"] = "nosniff"
  if status == 401 then ngx.header["WWW-Authenticate"] = 'Bearer realm="kinot"' end
  ngx.print(body)
end

return M
