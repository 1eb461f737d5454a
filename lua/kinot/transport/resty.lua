-- The "resty" transport: HTTP/1.1 over nginx cosockets (DESIGN §6), for use
-- inside OpenResty where blocking libcurl would stall the whole worker.
-- Keep-alive pool per host; TLS through sslhandshake with verification
-- against nginx's lua_ssl_trusted_certificate; chunked and length bodies.
local M = {}

local ngx = ngx -- luacheck: ignore (only present inside nginx)
local tonumber, concat, lower, find = tonumber, table.concat, string.lower, string.find

local COSOCKET_PHASES = {
  rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}

--- available() -> true | nil, reason
function M.available()
  if not ngx or not ngx.socket then return nil, "not running inside nginx (no ngx.socket)" end
  local phase = ngx.get_phase()
  if not COSOCKET_PHASES[phase] then
    return nil, "nginx cosockets are not available in the '" .. phase ..
      "' phase: call the API from a content handler or a timer (ngx.timer.at)"
  end
  return true
end

local function parse_url(url)
  local scheme, hostport, path = url:match("^(https?)://([^/?#]+)(.*)$")
  if not scheme then return nil end
  local host, port = hostport:match("^%[(.+)%]:?(%d*)$")
  if not host then host, port = hostport:match("^([^:]+):?(%d*)$") end
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  if path == "" then path = "/" end
  return scheme, host, port, path, hostport
end

local function classify(err, phase_connect)
  if err == "timeout" then return "timeout" end
  if phase_connect and (find(err, "refused", 1, true) or find(err, "no resolver", 1, true)
      or find(err, "could not be resolved", 1, true)) then
    return "network", true
  end
  return "network", false
end

-- reads one response; returns status, headers, body | nil, kind, message
local function read_response(sock, max_body)
  local line, err = sock:receive("*l")
  if not line then return nil, classify(err), "reading the status line: " .. err end
  local status = tonumber(line:match("^HTTP/%d[%.%d]* (%d%d%d)"))
  if not status then return nil, "network", "bad status line from server" end
  local headers = {}
  while true do
    line, err = sock:receive("*l")
    if not line then return nil, classify(err), "reading headers: " .. err end
    if line == "" then break end
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    if name then
      name = lower(name)
      headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
    end
  end
  local body
  local te = headers["transfer-encoding"]
  if te and find(lower(te), "chunked", 1, true) then
    local parts, total = {}, 0
    while true do
      line, err = sock:receive("*l")
      if not line then return nil, classify(err), "reading a chunk: " .. err end
      local size = tonumber(line:match("^%x+"), 16)
      if not size then return nil, "network", "bad chunk size" end
      if size == 0 then
        repeat line = sock:receive("*l") until not line or line == "" -- trailers, ignored
        break
      end
      total = total + size
      if max_body and total > max_body then
        return nil, "too_large", "response larger than the " .. max_body .. "-byte cap (max_body)"
      end
      local data
      data, err = sock:receive(size)
      if not data then return nil, classify(err), "reading a chunk: " .. err end
      parts[#parts + 1] = data
      sock:receive(2)
    end
    body = concat(parts)
  elseif headers["content-length"] then
    local n = tonumber(headers["content-length"])
    if not n then return nil, "network", "bad Content-Length" end
    if max_body and n > max_body then
      return nil, "too_large", "response larger than the " .. max_body .. "-byte cap (max_body)"
    end
    body, err = sock:receive(n)
    if not body then return nil, classify(err), "reading the body: " .. err end
  else
    body, err = sock:receive("*a")
    if not body then return nil, classify(err), "reading the body: " .. err end
    if max_body and #body > max_body then
      return nil, "too_large", "response larger than the " .. max_body .. "-byte cap (max_body)"
    end
    headers.connection = "close"
  end
  return status, headers, body
end

--- new(opts) -> transport object with :send(request), :close()
function M.new(opts)
  -- building a client in init_by_lua is fine (sending from there is not,
  -- and send says so); outside nginx there is nothing to build on
  if not (ngx and ngx.socket) then
    error("kinot: transport 'resty' needs nginx with the Lua module (ngx.socket)", 3)
  end
  local self = {
    name = "resty",
    sleep = function(s) ngx.sleep(s) end,
    now = function() ngx.update_time(); return ngx.now() end,
  }
  local verify = opts.verify_tls ~= false
  local pool_size = opts.pool_size or 32
  local idle = (opts.keepalive_timeout or 60) * 1000

  function self.send(req)
    local can, reason = M.available()
    if not can then return nil, "network", reason, true end
    local scheme, host, port, target, hostport = parse_url(req.url)
    if not scheme then error("kinot: bad url " .. tostring(req.url), 2) end
    local timeout_ms = math.floor((req.timeout or 10) * 1000)
    local sock = ngx.socket.tcp()
    sock:settimeouts(math.floor((req.connect_timeout or 3) * 1000), timeout_ms, timeout_ms)
    local okc, err = sock:connect(host, port, { pool = scheme .. "://" .. hostport })
    if not okc then
      local kind = classify(err, true)
      return nil, kind, "connecting to " .. hostport .. ": " .. err, kind == "network" or err == "timeout"
    end
    if scheme == "https" and sock:getreusedtimes() == 0 then
      local sess
      sess, err = sock:sslhandshake(nil, host, verify)
      if not sess then
        sock:close()
        return nil, "tls", "TLS failure: " .. tostring(err) ..
          (verify and " (the resty transport trusts nginx's lua_ssl_trusted_certificate)" or ""), true
      end
    end
    local lines = { (req.method or "GET") .. " " .. target .. " HTTP/1.1", "Host: " .. hostport }
    local has_len = false
    for name, value in pairs(req.headers or {}) do
      value = tostring(value)
      if find(name, "[%c: ]") or find(value, "[\r\n%z]") then
        sock:close()
        error("kinot: header '" .. name:gsub("%c", "?") .. "' contains CR, LF or NUL", 2)
      end
      if lower(name) == "content-length" then has_len = true end
      lines[#lines + 1] = name .. ": " .. value
    end
    if req.body and not has_len then lines[#lines + 1] = "Content-Length: " .. #req.body end
    lines[#lines + 1] = ""
    lines[#lines + 1] = req.body or ""
    local sent
    sent, err = sock:send(concat(lines, "\r\n"))
    if not sent then
      sock:close()
      return nil, classify(err), "sending the request: " .. err, false
    end
    local status, headers, body = read_response(sock, req.max_body or opts.max_body)
    if not status then
      sock:close()
      return nil, headers, body, false
    end
    local conn = headers.connection and lower(headers.connection)
    if conn == "close" then sock:close() else sock:setkeepalive(idle, pool_size) end
    return { status = status, headers = headers, body = body }
  end

  function self.close() end

  return self
end

M.parse_url = parse_url

return M
