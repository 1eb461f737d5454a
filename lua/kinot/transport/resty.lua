-- The "resty" transport: HTTP/1.1 over nginx cosockets (docs/transports.md), for use
-- inside OpenResty where blocking libcurl would stall the whole worker.
-- Keep-alive pool per host; TLS through sslhandshake with verification
-- against nginx's lua_ssl_trusted_certificate; chunked and length bodies;
-- an http:// proxy (absolute-form requests, CONNECT tunnels for https).
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

-- "host", "host:port" or "[v6]:port" -> host, port (default_port when absent)
local function split_hostport(hostport, default_port)
  local host, port = hostport:match("^%[(.+)%]:?(%d*)$")
  if not host then host, port = hostport:match("^([^:]+):?(%d*)$") end
  return host, tonumber(port) or default_port
end

local function parse_url(url)
  local scheme, hostport, path = url:match("^(https?)://([^/?#]+)(.*)$")
  if not scheme then return nil end
  local host, port = split_hostport(hostport, scheme == "https" and 443 or 80)
  if path == "" then path = "/" end
  return scheme, host, port, path, hostport
end

-- "http://[user:password@]host[:port]" or "host[:port]", as curl takes
-- it (port 1080 by default) -> {host, port, hostport, auth}
local function parse_proxy(url)
  if type(url) ~= "string" then error("kinot: proxy must be a URL string", 4) end
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if scheme and lower(scheme) ~= "http" then
    error("kinot: the resty transport speaks to http:// proxies only (got " .. scheme .. "://)", 4)
  end
  rest = (rest or url):match("^([^/?#]*)")
  local userinfo, hostport = rest:match("^(.*)@(.*)$")
  hostport = hostport or rest
  local host, port = split_hostport(hostport, 1080)
  if not host then error("kinot: bad proxy URL (no host)", 4) end
  local auth
  if userinfo then
    local user, password = userinfo:match("^([^:]*):?(.*)$")
    auth = "Basic " .. ngx.encode_base64(ngx.unescape_uri(user) .. ":" .. ngx.unescape_uri(password))
  end
  return { host = host, port = port, hostport = host .. ":" .. port, auth = auth }
end

local function classify(err, phase_connect)
  if err == "timeout" then return "timeout" end
  if phase_connect and (find(err, "refused", 1, true) or find(err, "no resolver", 1, true)
      or find(err, "could not be resolved", 1, true)) then
    return "network", true
  end
  return "network", false
end

-- reads a status line and the headers after it (names lower-cased);
-- returns status, headers | nil, kind, message
local function read_head(sock)
  local line, err = sock:receive("*l")
  if not line then return nil, classify(err), "reading the status line: " .. err end
  local status = tonumber(line:match("^HTTP/%d[%.%d]* (%d%d%d)"))
  if not status then return nil, "network", "bad status line from server" end
  local headers = {}
  while true do
    line, err = sock:receive("*l")
    if not line then return nil, classify(err), "reading headers: " .. err end
    if line == "" then return status, headers end
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    if name then
      name = lower(name)
      headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
    end
  end
end

-- reads one response; returns status, headers, body | nil, kind, message
local function read_response(sock, max_body)
  local status, headers, why = read_head(sock)
  if not status then return nil, headers, why end
  local line, err, body
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

-- CONNECT through the proxy to hostport; true | nil, kind, message
local function tunnel(sock, proxy, hostport)
  local head = "CONNECT " .. hostport .. " HTTP/1.1\r\nHost: " .. hostport .. "\r\n" ..
    (proxy.auth and ("Proxy-Authorization: " .. proxy.auth .. "\r\n") or "") .. "\r\n"
  local ok, err = sock:send(head)
  if not ok then return nil, classify(err), "asking proxy " .. proxy.hostport .. " for a tunnel: " .. err end
  local status, kind, why = read_head(sock) -- a CONNECT answer has no body
  if not status then return nil, kind, "proxy " .. proxy.hostport .. ": " .. why end
  if status ~= 200 then
    return nil, "network", "proxy " .. proxy.hostport .. " refused the tunnel to " .. hostport .. ": " ..
      status .. (status == 407 and " (proxy credentials needed)" or "")
  end
  return true
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
  if opts.ca_file ~= nil then
    error("kinot: the resty transport cannot take ca_file: nginx verifies TLS against " ..
      "lua_ssl_trusted_certificate (set it in nginx.conf)", 3)
  end
  local proxy = opts.proxy and parse_proxy(opts.proxy)
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
    -- through a proxy, a pooled connection is one to the proxy for this
    -- origin: already tunnelled (https) or taking absolute-form requests
    local pool = scheme .. "://" .. hostport
    local chost, cport, where = host, port, hostport
    if proxy then
      chost, cport, where = proxy.host, proxy.port, "proxy " .. proxy.hostport
      pool = "proxy " .. proxy.hostport .. " " .. pool
    end
    local okc, err = sock:connect(chost, cport, { pool = pool })
    if not okc then
      local kind = classify(err, true)
      return nil, kind, "connecting to " .. where .. ": " .. err, kind == "network" or err == "timeout"
    end
    if scheme == "https" and sock:getreusedtimes() == 0 then
      if proxy then
        local ok, kind, msg = tunnel(sock, proxy, hostport)
        if not ok then
          sock:close()
          return nil, kind, msg, true -- nothing reached the platform
        end
      end
      local sess
      sess, err = sock:sslhandshake(nil, host, verify)
      if not sess then
        sock:close()
        return nil, "tls", "TLS failure: " .. tostring(err) ..
          (verify and " (the resty transport trusts nginx's lua_ssl_trusted_certificate)" or ""), true
      end
    end
    local plain_proxy = proxy and scheme == "http"
    local lines = { (req.method or "GET") .. " " .. (plain_proxy and ("http://" .. hostport .. target) or target) ..
      " HTTP/1.1", "Host: " .. hostport }
    if plain_proxy and proxy.auth then lines[#lines + 1] = "Proxy-Authorization: " .. proxy.auth end
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
M.parse_proxy = parse_proxy

return M
