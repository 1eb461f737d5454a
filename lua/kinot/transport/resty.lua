-- The "resty" transport: HTTP/1.1 over nginx cosockets (docs/transports.md), for use
-- inside OpenResty where blocking libcurl would stall the whole worker.
-- Keep-alive pool per host; TLS through sslhandshake with verification
-- against nginx's lua_ssl_trusted_certificate; chunked and length bodies;
-- an http:// proxy (absolute-form requests, CONNECT tunnels for https).
local M = {}

local ngx = ngx -- luacheck: ignore (only present inside nginx)
local tonumber, concat, lower, find = tonumber, table.concat, string.lower, string.find
local sub, byte, floor = string.sub, string.byte, math.floor
local unpack = table.unpack or unpack -- luacheck: ignore
local dns = require "kinot.transport.dns"
local misuse = require("kinot.errors").misuse

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
  hostport = hostport:gsub("^.*@", "") -- credentials are not part of where to connect
  local host, port = split_hostport(hostport, scheme == "https" and 443 or 80)
  if path == "" then path = "/" end
  return scheme, host, port, path, hostport
end

-- "http://[user:password@]host[:port]" or "host[:port]", as curl takes
-- it (port 1080 by default) -> {host, port, hostport, auth}
local function parse_proxy(url)
  if type(url) ~= "string" then misuse("proxy must be a URL string") end
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if scheme and lower(scheme) ~= "http" then
    misuse("the resty transport speaks to http:// proxies only (got " .. scheme .. "://)")
  end
  rest = (rest or url):match("^([^/?#]*)")
  local userinfo, hostport = rest:match("^(.*)@(.*)$")
  hostport = hostport or rest
  local host, port = split_hostport(hostport, 1080)
  if not host then misuse("bad proxy URL (no host)") end
  local auth
  if userinfo then
    local user, password = userinfo:match("^([^:]*):?(.*)$")
    -- %XX only, as curl decodes it: ngx.unescape_uri also reads '+' as a space
    local function unescape(s) return ngx.unescape_uri((s:gsub("%+", "%%2B"))) end
    auth = "Basic " .. ngx.encode_base64(unescape(user) .. ":" .. unescape(password))
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

-- Limits on what a server may send before its body.  The API's answers
-- carry a dozen short headers; these caps are far above that and still
-- keep one hostile answer to a few dozen KiB of worker memory:
--   * 16 KiB a line: twice the 8 KiB that nginx (large_client_header_buffers)
--     and Apache (LimitRequestFieldSize) accept for one request header line;
--     it bounds chunk-size lines too;
--   * 100 header lines: Apache's LimitRequestFields default;
--   * 64 KiB for the whole head (status line, headers, chunked trailers).
local LINE_MAX, HEADERS_MAX, HEAD_MAX = 16 * 1024, 100, 64 * 1024
-- bytes asked of the socket at once: a read never holds more than this
-- beyond the cap it checks, and never reads past a body's known end
local READ_CHUNK, SEND_CHUNK = 16 * 1024, 64 * 1024

local function now()
  ngx.update_time()
  return ngx.now()
end

-- milliseconds left before the deadline (at least 1), or nil once it passed
local function left(deadline)
  local ms = floor((deadline - now()) * 1000)
  if ms > 0 then return ms end
end

-- every socket operation gets the time the request has left, no more:
-- `timeout` is one deadline for the whole request, not a per-read idle
-- timer (nginx re-arms a read's timer on every byte, so a receive(n) fed a
-- byte at a time would never time out: reads go through receiveany, which
-- returns on the first bytes, and the timer is set again before each)
local function arm(sock, deadline, connect_ms)
  local ms = left(deadline)
  if not ms then return nil end
  sock:settimeouts(connect_ms and math.min(connect_ms, ms) or ms, ms, ms)
  return true
end

-- a buffered reader over a cosocket, bounded by the deadline
local function reader(sock, deadline)
  return { sock = sock, deadline = deadline, buf = "", pos = 1 }
end

-- reads up to n more bytes into the buffer; true | nil, kind, err
local function fill(rd, n)
  if not arm(rd.sock, rd.deadline) then return nil, "timeout", "timeout" end
  local data, err = rd.sock:receiveany(n or READ_CHUNK)
  if not data then return nil, classify(err), err end
  if rd.pos > #rd.buf then rd.buf = data else rd.buf = sub(rd.buf, rd.pos) .. data end
  rd.pos = 1
  return true
end

-- one line (CRLF or LF stripped) of at most LINE_MAX bytes;
-- line | nil, kind, err
local function line_of(rd)
  while true do
    local e = find(rd.buf, "\n", rd.pos, true)
    if e then
      if e - rd.pos > LINE_MAX then break end
      local l = sub(rd.buf, rd.pos, e - 1)
      rd.pos = e + 1
      if byte(l, -1) == 13 then l = sub(l, 1, -2) end
      return l
    end
    if #rd.buf - rd.pos + 1 > LINE_MAX then break end
    local ok, kind, err = fill(rd)
    if not ok then return nil, kind, err end
  end
  return nil, "too_large", "a line longer than " .. LINE_MAX .. " bytes"
end

-- appends exactly n bytes to parts; true | nil, kind, err
local function take(rd, n, parts)
  while n > 0 do
    local have = #rd.buf - rd.pos + 1
    if have > 0 then
      local k = math.min(have, n)
      parts[#parts + 1] = sub(rd.buf, rd.pos, rd.pos + k - 1)
      rd.pos, n = rd.pos + k, n - k
    else
      local ok, kind, err = fill(rd, math.min(n, READ_CHUNK))
      if not ok then return nil, kind, err end
    end
  end
  return true
end

-- header lines up to the empty one, into headers (names lower-cased,
-- repeats joined), within the head's caps; true | nil, kind, err
local function read_fields(rd, headers, count, size)
  while true do
    local line, kind, err = line_of(rd)
    if not line then return nil, kind, err end
    size = size + #line + 2
    if size > HEAD_MAX then return nil, "too_large", "a head larger than " .. HEAD_MAX .. " bytes" end
    if line == "" then return true end
    count = count + 1
    if count > HEADERS_MAX then return nil, "too_large", "more than " .. HEADERS_MAX .. " header lines" end
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    if name then
      name = lower(name)
      headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
    end
  end
end

-- reads a status line and the headers after it;
-- returns status, headers | nil, kind, message
local function read_head(rd)
  local line, kind, err = line_of(rd)
  if not line then return nil, kind, "reading the status line: " .. err end
  local status = tonumber(line:match("^HTTP/%d[%.%d]* (%d%d%d)"))
  if not status then return nil, "network", "bad status line from server" end
  local headers = {}
  local ok
  ok, kind, err = read_fields(rd, headers, 0, #line + 2)
  if not ok then return nil, kind, "reading headers: " .. err end
  -- an HTTP/1.0 server ends the connection after its answer unless it says
  -- keep-alive: not one to pool (the next request would find it closed)
  if find(line, "^HTTP/1%.0 ") and not find(lower(headers.connection or ""), "keep-alive", 1, true) then
    headers.connection = "close"
  end
  return status, headers
end

local function too_large(max_body)
  return nil, "too_large", "response larger than the " .. max_body .. "-byte cap (max_body)"
end

-- reads one response; returns status, headers, body | nil, kind, message.
-- The body is checked against max_body as it comes, never read whole first.
local function read_response(rd, max_body, method)
  local status, headers, why
  repeat -- an interim answer (100 Continue ...) has a head only: the final one follows
    status, headers, why = read_head(rd)
    if not status then return nil, headers, why end
  until status >= 200 or status == 101
  local parts, total = {}, 0
  local ok, kind, err
  local te = headers["transfer-encoding"]
  if method == "HEAD" or status == 204 or status == 304 or status == 101 then -- luacheck: ignore 542
    -- no body, whatever the headers say
  elseif te and find(lower(te), "chunked", 1, true) then
    while true do
      local line
      line, kind, err = line_of(rd)
      if not line then return nil, kind, "reading a chunk: " .. err end
      -- hex digits, then nothing or an extension: "0x10" is not a last chunk "0"
      local hex, rest = line:match("^(%x+)(.*)$")
      local size = hex and #hex <= 15 and (rest == "" or find(rest, "^[ \t]*;")) and tonumber(hex, 16)
      if not size then return nil, "network", "bad chunk size" end
      if size == 0 then
        ok, kind, err = read_fields(rd, {}, 0, 0) -- trailers, ignored but capped
        if not ok then return nil, kind, "reading the trailers: " .. err end
        break
      end
      total = total + size
      if max_body and total > max_body then return too_large(max_body) end
      ok, kind, err = take(rd, size, parts)
      if not ok then return nil, kind, "reading a chunk: " .. err end
      line, kind, err = line_of(rd)
      if not line then return nil, kind, "reading a chunk: " .. err end
      if line ~= "" then return nil, "network", "bad chunk end" end
    end
  elseif headers["content-length"] then
    -- digits only: tonumber would take 0x10, 1e1 or " 16" and read a
    -- body of another length than the server meant
    local n = find(headers["content-length"], "^%d+$") and tonumber(headers["content-length"])
    if not n then return nil, "network", "bad Content-Length" end
    if max_body and n > max_body then return too_large(max_body) end
    ok, kind, err = take(rd, n, parts)
    if not ok then return nil, kind, "reading the body: " .. err end
  else -- until the server closes: counted as it comes
    while true do
      local have = #rd.buf - rd.pos + 1
      if have > 0 then
        total = total + have
        if max_body and total > max_body then return too_large(max_body) end
        parts[#parts + 1] = sub(rd.buf, rd.pos)
        rd.buf, rd.pos = "", 1
      end
      ok, kind, err = fill(rd)
      if not ok then
        if err == "closed" then break end
        return nil, kind, "reading the body: " .. err
      end
    end
    headers.connection = "close"
  end
  -- bytes beyond this answer: the connection is not fit for another
  if rd.pos <= #rd.buf then headers.connection = "close" end
  return status, headers, concat(parts)
end

-- sends all of data, a piece at a time, each with the time left as its
-- timer, so that a slow reader cannot stretch a send past the deadline
-- whatever nginx does with the timer on partial writes; true | nil, err
local function send_all(sock, data, deadline)
  local i, n = 1, #data
  repeat
    if not arm(sock, deadline) then return nil, "timeout" end
    local j = math.min(n, i + SEND_CHUNK - 1)
    local ok, err = sock:send((i == 1 and j == n) and data or sub(data, i, j))
    if not ok then return nil, err end
    i = j + 1
  until i > n
  return true
end

-- CONNECT through the proxy to hostport; true | nil, kind, message
local function tunnel(sock, proxy, hostport, deadline)
  local head = "CONNECT " .. hostport .. " HTTP/1.1\r\nHost: " .. hostport .. "\r\n" ..
    (proxy.auth and ("Proxy-Authorization: " .. proxy.auth .. "\r\n") or "") .. "\r\n"
  local ok, err = send_all(sock, head, deadline)
  if not ok then return nil, classify(err), "asking proxy " .. proxy.hostport .. " for a tunnel: " .. err end
  local rd = reader(sock, deadline)
  local status, kind, why = read_head(rd) -- a CONNECT answer has no body
  if not status then return nil, kind, "proxy " .. proxy.hostport .. ": " .. why end
  if status ~= 200 then
    return nil, "network", "proxy " .. proxy.hostport .. " refused the tunnel to " .. hostport .. ": " ..
      status .. (status == 407 and " (proxy credentials needed)" or "")
  end
  if rd.pos <= #rd.buf then return nil, "network", "proxy " .. proxy.hostport .. " sent bytes after its answer" end
  return true
end

--- new(opts) -> transport object with :send(request), :stream(...), :close()
function M.new(opts)
  -- building a client in init_by_lua is fine (sending from there is not,
  -- and send says so); outside nginx there is nothing to build on
  if not (ngx and ngx.socket) then
    misuse("transport 'resty' needs nginx with the Lua module (ngx.socket)")
  end
  local self = {
    name = "resty",
    sleep = function(s) ngx.sleep(s) end,
    now = now,
  }
  if opts.ca_file ~= nil then
    misuse("the resty transport cannot take ca_file: nginx verifies TLS against " ..
      "lua_ssl_trusted_certificate (set it in nginx.conf)")
  end
  local proxy = opts.proxy and parse_proxy(opts.proxy)
  local verify = opts.verify_tls ~= false
  local pool_size = opts.pool_size or 32
  local idle = (opts.keepalive_timeout or 60) * 1000
  local servers = dns.servers(opts.resolver)

  function self.send(req)
    local can, reason = M.available()
    if not can then return nil, "network", reason, true end
    local scheme, host, port, target, hostport = parse_url(req.url)
    if not scheme then misuse("bad url " .. require("kinot.redact").url(tostring(req.url))) end
    -- `timeout` bounds the whole request: resolution, connect, TLS, send,
    -- head and body each get only what is left of it
    local timeout = req.timeout or 10
    local deadline = now() + timeout
    local late = " (the request's " .. timeout .. " s timeout)"
    local connect_ms = floor((req.connect_timeout or 3) * 1000)
    local sock = ngx.socket.tcp()
    -- through a proxy, a pooled connection is one to the proxy for this
    -- origin: already tunnelled (https) or taking absolute-form requests
    -- A pooled connection is only as good as the checks made when it was
    -- opened: the pool's name says whether its certificate was verified and
    -- (a tunnel) for which proxy credentials, so that another client in this
    -- worker never takes one it would not have opened itself.
    local pool = scheme .. "://" .. hostport .. (scheme == "https" and not verify and " unverified" or "")
    local chost, cport, where = host, port, hostport
    if proxy then
      chost, cport, where = proxy.host, proxy.port, "proxy " .. proxy.hostport
      pool = "proxy " .. proxy.hostport .. (proxy.auth and (" " .. ngx.md5(proxy.auth)) or "") .. " " .. pool
    end
    -- a request that is not idempotent never rides a pooled connection: one
    -- that died idle would take it and lose the answer.  It gets a new
    -- connection of its own (a pool name nothing is ever kept under), is
    -- written once, and the connection is closed after the answer.
    local once = req.method ~= nil and req.method ~= "GET" and req.method ~= "HEAD"
    local addr, rkind, rmsg = dns.resolve(chost, servers, deadline)
    if not addr then return nil, rkind, rmsg .. (rkind == "timeout" and late or ""), true end
    if not arm(sock, deadline, connect_ms) then
      return nil, "timeout", "connecting to " .. where .. ": timeout" .. late, true
    end
    local okc, err = sock:connect(addr, cport, { pool = once and (pool .. " once") or pool })
    if not okc then
      local kind = classify(err, true)
      return nil, kind, "connecting to " .. where .. ": " .. err, kind == "network" or err == "timeout"
    end
    if scheme == "https" and sock:getreusedtimes() == 0 then
      if proxy then
        local ok, kind, msg = tunnel(sock, proxy, hostport, deadline)
        if not ok then
          sock:close()
          return nil, kind, msg .. (kind == "timeout" and late or ""), true -- nothing reached the platform
        end
      end
      -- the handshake's timer is the connect timeout slot, set once
      local sess
      if arm(sock, deadline) then
        -- lua-resty-core (Debian 12's 0.1.25 among others) at times raises
        -- "assertion failed!" when the handshake fails at once, on a
        -- certificate it does not trust from a nearby server
        -- (openresty/lua-resty-core#499): a failed handshake, never a raise
        local done, s1, s2 = pcall(sock.sslhandshake, sock, nil, host, verify)
        if done then sess, err = s1, s2 else sess, err = nil, "the handshake failed (" .. tostring(s1) .. ")" end
      else
        err = "timeout"
      end
      if not sess then
        sock:close()
        if err == "timeout" then return nil, "timeout", "TLS handshake: timeout" .. late, true end
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
        misuse("header '" .. name:gsub("%c", "?") .. "' contains CR, LF or NUL")
      end
      if lower(name) == "content-length" then has_len = true end
      lines[#lines + 1] = name .. ": " .. value
    end
    -- a method that defines a body says its length, 0 included (RFC 9110
    -- 8.6, as libcurl does; some front ends answer 411 otherwise)
    local with_body = req.body or req.method == "POST" or req.method == "PUT" or req.method == "PATCH"
    if with_body and not has_len then lines[#lines + 1] = "Content-Length: " .. #(req.body or "") end
    lines[#lines + 1] = ""
    lines[#lines + 1] = req.body or ""
    local sent
    sent, err = send_all(sock, concat(lines, "\r\n"), deadline)
    if not sent then
      sock:close()
      local kind = classify(err)
      return nil, kind, "sending the request: " .. err .. (kind == "timeout" and late or ""), false
    end
    local status, headers, body = read_response(reader(sock, deadline), req.max_body or opts.max_body, req.method)
    if not status then
      sock:close()
      return nil, headers, body .. (headers == "timeout" and late or ""), false
    end
    local conn = headers.connection and lower(headers.connection)
    -- "close" among other tokens ("TE, close") ends the connection too
    if (conn and find(conn, "%f[%w]close%f[^%w]")) or once then sock:close() else sock:setkeepalive(idle, pool_size) end
    return { status = status, headers = headers, body = body }
  end

  --- stream(slots, take, done): as the curl transport's (kinot.request.stream),
  -- over nginx light threads, one a request out: each slot is given the
  -- next request as soon as its last one ended (ask: the stream's take).
  -- An error raised by ask or done ends the stream: the threads still out are killed (what the
  -- server made of their requests, no one knows), and it goes on.
  -- A thread that ends posts a semaphore, which the stream waits on: no
  -- ngx.thread.wait on several threads, which leaves those not returned
  -- marked as waited for, and one that ends later would resume this
  -- coroutine wherever it then waits (a cosocket, a semaphore, a
  -- coroutine.yield: the pager hands its pages over from inside done).
  -- Each ended thread is reaped (ngx.thread.wait on a dead one returns at
  -- once).
  -- wake(poke), when given, is handed a function that makes the stream ask
  -- again now (the pager's caller has handed a page over: room for one).
  function self.stream(slots, ask, done, wake)
    local spawn, wait, kill = ngx.thread.spawn, ngx.thread.wait, ngx.thread.kill
    local ended = require("ngx.semaphore").new(0)
    local running, nrunning = {}, 0 -- thread -> req, the threads out
    local finished = {}             -- threads ended, not yet reaped (in the order they ended)
    local function one(req)
      local okc, res, kind, message, not_sent = pcall(self.send, req)
      finished[#finished + 1] = coroutine.running()
      ended:post(1) -- (always: the stream waits on it)
      if not okc then error(res, 0) end
      return req, res or { error = kind, message = message, not_sent = not_sent }
    end
    if wake then wake(function() ended:post(1) end) end
    local ok, err = pcall(function()
      while true do
        local reqs, delay
        if nrunning < slots then reqs, delay = ask(slots - nrunning) end
        for k = 1, reqs and #reqs or 0 do
          running[spawn(one, reqs[k])] = reqs[k]
          nrunning = nrunning + 1
        end
        if nrunning == 0 then
          if not delay then return end
          ngx.sleep(delay)
        else
          -- the first to end, or the delay first
          local got = ended:wait(delay or 86400)
          local th = got and table.remove(finished, 1) -- (none: a poke)
          if th then
            local okw, req, res = wait(th) -- (dead: at once)
            running[th] = nil
            nrunning = nrunning - 1
            if not okw then error(req, 0) end
            done(req, res)
          end
        end
      end
    end)
    if not ok then
      for th in pairs(running) do kill(th) end
      error(err, 0)
    end
  end

  function self.close() end

  return self
end

M.parse_url = parse_url
M.parse_proxy = parse_proxy

return M
