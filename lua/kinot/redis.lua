-- The SDK's own small Redis client (RESP2), for the callback scale-out path
-- (shared dedupe, the durable inbox, workers).  One code path over a tiny
-- socket adapter: nginx's cosockets inside nginx (connections go back to a
-- keepalive pool after each command), LuaSocket elsewhere (one connection
-- per client, kept open).  Debian's nginx Lua module does not ship
-- resty.redis, so this client is what runs everywhere.
--
--   local c = redis.new("redis://:password@127.0.0.1:6379/2", { connect_timeout = 1, timeout = 2 })
--   local v, err = c:call("SET", "k", "v", "NX", "EX", 60)   -- v == redis.null when NX refused
--
-- Failures come back as `nil, err` with err from kinot.errors: kind
-- "network" or "timeout" when the connection failed (retryable), kind
-- "redis" when the server answered an error (err.code is its first word:
-- "NOGROUP", "BUSYGROUP", "WRONGPASS" ...), kind "tls" when a rediss://
-- server could not be verified (not retryable), kind "interrupted" when
-- Ctrl-C under the CLI's SIGINT handler stopped a wait for a reply
-- (outside nginx; not retryable).  No message ever contains the password:
-- messages name host:port only.
local core = require "kinot.core_loader"
local errors = require "kinot.errors"
local sentinel = require "kinot.redis_sentinel"
local validate = require "kinot.validate"
local misuse = errors.misuse

local ngx = rawget(_G, "ngx")
local type, tostring, tonumber, concat, floor = type, tostring, tonumber, table.concat, math.floor

local M = {}
M.__index = M

--- the nil of a Redis reply (a missing key, a refused SET NX, a BLOCK that timed out)
M.null = setmetatable({}, { __tostring = function() return "redis.null" end })

local RETRYABLE_CODES = { LOADING = true, BUSY = true, TRYAGAIN = true, MASTERDOWN = true, READONLY = true,
                          NOREPLICAS = true }
--- the error codes worth a retry (err.retryable of a Redis error)
M.RETRYABLE_CODES = RETRYABLE_CODES

--- redact(url) -> the URL with its userinfo replaced by ***
local QUERY_NAMES = { sentinel_password = true, sentinel_username = true }

function M.redact(url)
  url = tostring(url)
  -- redis+sentinel://: the Sentinels' password is a query parameter, and
  -- the query starts at the first ? (as redis_sentinel.parse reads it):
  -- an unescaped @ in it is the password's, not the end of a userinfo
  local query = ""
  local scheme = url:match("^(rediss?%+sentinel://)")
  if scheme then
    local q = url:find("?", 1, true)
    if q then url, query = url:sub(1, q - 1), url:sub(q) end
    -- before it, no /mastername: that ? was inside the master's password
    -- (a URL parse refuses), and what is on either side of it may be secret
    if q and not url:find("^rediss?%+sentinel://[^/]*/") then return scheme .. "***" end
  end
  -- up to the last @: a password may hold an unescaped / or @; without a
  -- "scheme://" (none, or a mistyped one) everything before it
  local s, n = url:gsub("^(%a[%w+.-]*://).*@", "%1***@")
  if n == 0 then s = s:gsub("^.*@", "***@") end
  if query == "" then
    s, query = s:match("^([^?]*)(.*)$")
  end
  -- every value hidden, and a piece that is not name=value wholly (an
  -- unescaped & in a password cuts it: its tail is no name); only the
  -- names the query takes are shown
  query = query:gsub("([?&])([^&]*)", function(sep, pair)
    local name = pair:match("^([^=]*)=")
    return sep .. (name and QUERY_NAMES[name] and (name .. "=***") or "***")
  end)
  return s .. query
end


--- parse(url) -> { host, port, db, username, password } (misuse raises, never showing the password)
-- (a second argument, once a hand-counted level, is ignored: kinot.errors finds the caller)
function M.parse(url)
  if type(url) ~= "string" then misuse("redis must be a redis:// URL string") end
  if url:find("^rediss%+sentinel://") then
    misuse("redis: TLS behind Sentinel is not supported (redis+sentinel:// is plain TCP, to the Sentinels " ..
      "and to the master): " .. M.redact(url))
  end
  if url:find("^redis%+sentinel://") then
    -- { sentinel = {...}, db, username, password } (kinot.redis_sentinel)
    return sentinel.parse(url, M.redact)
  end
  local rest = url:match("^redis://(.*)$")
  local tls = false
  if not rest then -- rediss://: the same URL over TLS (docs/redis.md#tls)
    rest = url:match("^rediss://(.*)$")
    tls = rest ~= nil
  end
  if not rest then misuse("redis URL must look like redis://[:password@]host:port/db (got " .. M.redact(url) .. ")") end
  local o = { port = 6379, db = 0 }
  local hostpath = sentinel.credentials(rest, o, M.redact(url))
  local hostport, path = hostpath:match("^([^/]*)(.*)$")
  local host, port = sentinel.address(hostport)
  if not host or host == "" then misuse("redis URL has no host (" .. M.redact(url) .. ")") end
  o.host = host
  if port ~= "" then o.port = tonumber(port) end
  if o.port < 1 or o.port > 65535 then misuse("redis URL's port is out of range (" .. M.redact(url) .. ")") end
  if path ~= "" and path ~= "/" then
    local db = path:match("^/(%d+)$")
    if not db then misuse("redis URL's path must be a database number, /0 to /15 (" .. M.redact(url) .. ")") end
    o.db = tonumber(db)
  end
  if tls then o.tls = true end
  return o
end

-- ------------------------------------------------------------ TLS
-- rediss:// is the same URL over TLS (Redis 6's --tls-port).  Its settings
-- are one table wherever a client is built from a URL: redis.new's `tls`,
-- the `redis_tls` of the inbox, the dedupe, the workers and the twin
-- (docs/redis.md#tls).  The certificate chain and the host name are
-- verified unless verify_tls = false says otherwise.  Inside nginx the
-- trusted CAs are nginx's (lua_ssl_trusted_certificate): a cosocket cannot
-- take a CA file of its own, so ca_file is refused there, as the resty
-- HTTP transport refuses it.

local TLS_KNOWN = validate.set { "ca_file", "verify_tls", "server_name", "cert_file", "key_file" }
local SYSTEM_CAS = "/etc/ssl/certs" -- Debian's store, hashed (update-ca-certificates)

local function in_nginx() return ngx and ngx.socket and ngx.socket.tcp and true or false end

local function is_ip(host)
  return host:find("^%d+%.%d+%.%d+%.%d+$") ~= nil or host:find(":", 1, true) ~= nil
end

local readable = require("kinot.file").read -- nil for a missing file

--- check(url, tls[, name]) -> the parsed URL, its TLS settings checked
-- (misuse raises).  name: what the caller calls the table ("inbox.redis_tls")
function M.check(url, tls, name)
  local o = M.parse(url)
  if tls == nil then return o end
  name = name or "tls"
  if type(tls) ~= "table" then misuse(name .. " must be a table { ca_file = path, verify_tls = false ... }") end
  validate.options(tls, TLS_KNOWN, name)
  if o.sentinel then
    misuse(name .. ": TLS behind Sentinel is not supported (redis+sentinel:// is plain TCP, to the Sentinels " ..
      "and to the master): " .. M.redact(url))
  end
  if not o.tls then misuse(name .. " is for a rediss:// URL (TLS); this one is redis:// (" .. M.redact(url) .. ")") end
  if tls.verify_tls ~= nil and type(tls.verify_tls) ~= "boolean" then misuse(name .. ".verify_tls must be true or false") end
  for _, k in ipairs { "ca_file", "server_name", "cert_file", "key_file" } do
    if tls[k] ~= nil and (type(tls[k]) ~= "string" or tls[k] == "") then
      misuse(name .. "." .. k .. " must be a non-empty string")
    end
  end
  if (tls.cert_file == nil) ~= (tls.key_file == nil) then misuse(name .. ": cert_file and key_file go together") end
  if tls.ca_file and tls.verify_tls == false then
    misuse(name .. ": ca_file with verify_tls = false (nothing would be verified against it)")
  end
  if tls.ca_file and in_nginx() then
    misuse(name .. ".ca_file cannot be used inside nginx: nginx verifies TLS against lua_ssl_trusted_certificate " ..
      "(set it, and lua_ssl_verify_depth, in nginx.conf)")
  end
  for _, k in ipairs { "ca_file", "cert_file", "key_file" } do
    if tls[k] and not readable(tls[k]) then misuse(name .. "." .. k .. ": cannot read " .. tls[k]) end
  end
  -- an encrypted key would have OpenSSL ask for its passphrase on the
  -- terminal (LuaSec's and nginx's both), and wait there: "-----BEGIN
  -- ENCRYPTED PRIVATE KEY" (PKCS#8) or "Proc-Type: 4,ENCRYPTED"
  local key = tls.key_file and readable(tls.key_file)
  if key and (key:find("-----BEGIN ENCRYPTED PRIVATE KEY-----", 1, true) or key:find("Proc-Type: 4,ENCRYPTED", 1, true)) then
    misuse(name .. ".key_file " .. tls.key_file .. " is encrypted: give the key without its passphrase " ..
      "(openssl pkey -in it -out another), readable only by this user")
  end
  return o
end

-- the settings new() keeps: verify, server_name (the name checked, and
-- sent as SNI unless an IP address), and what each adapter needs
local function tls_settings(o, t)
  t = t or {}
  local s = { verify = t.verify_tls ~= false, server_name = t.server_name or o.host }
  if in_nginx() then
    if t.cert_file then
      local ssl = require "ngx.ssl"
      local cert, err = ssl.parse_pem_cert(readable(t.cert_file))
      if not cert then misuse("tls.cert_file " .. t.cert_file .. ": " .. tostring(err)) end
      local key, kerr = ssl.parse_pem_priv_key(readable(t.key_file))
      if not key then misuse("tls.key_file " .. t.key_file .. ": " .. tostring(kerr)) end
      s.cert, s.key = cert, key
    end
    s.trusted = "nginx's lua_ssl_trusted_certificate, to lua_ssl_verify_depth"
  else
    local found, ssl = pcall(require, "ssl")
    if not found then misuse("rediss:// outside nginx needs LuaSec (Debian: lua-sec)") end
    local ctx, err = ssl.newcontext {
      mode = "client", protocol = "any", options = { "all", "no_sslv3", "no_tlsv1", "no_tlsv1_1" },
      verify = s.verify and { "peer", "fail_if_no_peer_cert" } or "none",
      cafile = t.ca_file, capath = not t.ca_file and SYSTEM_CAS or nil,
      certificate = t.cert_file, key = t.key_file,
      password = function() end, -- (never the terminal's prompt: check refused an encrypted key)
    }
    if not ctx then misuse("redis TLS settings refused by LuaSec: " .. tostring(err)) end
    s.ctx = ctx
    s.sni = not is_ip(s.server_name) and s.server_name or nil
    s.trusted = t.ca_file or ("the system's CAs, " .. SYSTEM_CAS .. "; a private CA needs ca_file")
  end
  return s
end

-- "*.example.com" matches one whole left-most label ("a.example.com", not
-- "example.com" nor "a.b.example.com"); anything else, the name itself
local function name_matches(pattern, host)
  pattern = pattern:lower():gsub("%.$", "")
  if pattern == host then return true end
  local suffix = pattern:match("^%*(%.[^*]+%.[^*]+)$")
  if not suffix then return false end
  local first = host:match("^([^.]+)%.")
  return first ~= nil and host:sub(#first + 1) == suffix
end

--- host_matches(cert, host) -> true | false, the names it holds: whether
-- a LuaSec certificate names host: an IP address against its iPAddress
-- entries, a name against its dNSName entries, or its common name when it
-- has none (as OpenSSL's X509_check_ip / X509_check_host, which nginx uses)
function M.host_matches(cert, host)
  host = host:lower():gsub("%.$", "")
  local san = (cert:extensions() or {})["2.5.29.17"] or {}
  local held = {}
  local function holds(list, match)
    for _, name in ipairs(list) do
      if match(name) then return true end
      held[#held + 1] = name
    end
  end
  if is_ip(host) then
    if holds(san.iPAddress or {}, function(ip) return ip:lower() == host end) then return true end
  elseif san.dNSName and #san.dNSName > 0 then
    if holds(san.dNSName, function(d) return name_matches(d, host) end) then return true end
  else
    local cn = {}
    for _, e in ipairs(cert:subject() or {}) do
      if e.oid == "2.5.4.3" then cn[#cn + 1] = e.value end
    end
    if holds(cn, function(v) return name_matches(v, host) end) then return true end
  end
  return false, held
end

-- a handshake with no answer before the deadline: a stalled server, or a
-- plain Redis on this port (it waits for the end of a line that never comes)
local HANDSHAKE_LATE = "timeout (no TLS answer: is this Redis's --tls-port?)"

-- a handshake's failure: message, kind.  The connection closed or reset
-- before the handshake was done is the network's ("network", retryable:
-- a Redis at maxclients closes new connections, a restarting one too),
-- not the certificate's: it was once "tls", not retryable, and named the
-- CAs trusted as if they were the cause
local function handshake_failure(err, hint)
  local e = tostring(err):lower()
  if e == "timeout" or e == "wantread" or e == "wantwrite" then return HANDSHAKE_LATE, "timeout" end
  if e == "closed" or e:find("unexpected eof", 1, true) or e:find("reset by peer", 1, true)
     or e:find("broken pipe", 1, true) then
    return "the server closed the connection (" .. tostring(err) .. ")", "network"
  end
  return tostring(err) .. " (" .. hint .. ")", "tls"
end

-- ------------------------------------------------------------ sockets
-- A call has ONE deadline: connecting, AUTH, SELECT, sending and every read
-- of the reply get only what is left of it (as the HTTP transports,
-- docs/transports.md), so a server that drips a byte a second cannot hold a
-- `timeout = 2` call longer than 2 s.  Neither a cosocket's receive(n) nor
-- LuaSocket's "block" timeout can promise that (nginx re-arms its read timer
-- on every byte), so both adapters only ever "take the bytes there are, at
-- most n, waiting no later than the deadline", and the RESP reader buffers.
--
--   open(self, deadline) -> sock, fresh | nil, err, step, kind   (a fresh rediss:// one after its handshake)
--   some(sock, deadline, n) -> bytes | nil, err      ("timeout", "closed" ...)
--   send(sock, data, deadline) -> true | nil, err
--   release(self, sock, ok)

local now = core.monotonic
local min = math.min
local CHUNK = 64 * 1024 -- bytes asked of a socket at once, and sent at once

-- seconds left before the deadline, or nil once it passed
local function left(deadline)
  local l = deadline - now()
  if l > 0 then return l end
end

local cosocket = {}

local function arm(sock, deadline, connect_ms)
  local l = left(deadline)
  if not l then return nil end
  local ms = math.max(1, floor(l * 1000))
  sock:settimeouts(connect_ms and min(connect_ms, ms) or ms, ms, ms)
  return true
end

function cosocket.open(self, deadline)
  local sock = ngx.socket.tcp()
  if not arm(sock, deadline, self.connect_ms) then return nil, "timeout", "connect" end
  local ok, err = sock:connect(self.host, self.port, self.pool_opts)
  if not ok then return nil, err, "connect" end
  local fresh = (sock:getreusedtimes() or 0) == 0
  if fresh and self.tls then -- a pooled one was verified when it was opened
    local kind
    ok, err, kind = cosocket.handshake(self, sock, deadline)
    if not ok then
      sock:close()
      return nil, err, "TLS handshake", kind
    end
  end
  return sock, fresh
end

-- the message nginx's last FFI call left in resty.core's error pointer
local function last_ffi_error()
  local ok, msg = pcall(function()
    local ffi = require "ffi"
    local p = require("resty.core.base").get_errmsg_ptr()
    if p[0] ~= nil then return ffi.string(p[0]) end
  end)
  if ok and msg and msg ~= "" then return msg end
end

-- The handshake's timer is the connect slot, armed with what is left of
-- the deadline.  The last session is offered again (a resumed handshake
-- skips the certificate's work); nginx verifies the chain against
-- lua_ssl_trusted_certificate and the name with X509_check_host.
function cosocket.handshake(self, sock, deadline)
  if not arm(sock, deadline) then return nil, HANDSHAKE_LATE, "timeout" end
  local t = self.tls
  if t.cert and not sock:setclientcert(t.cert, t.key) then return nil, "the client certificate was refused", "tls" end
  -- lua-resty-core 0.1.25 raises "assertion failed!" when a handshake
  -- that did not have to wait fails (openresty/lua-resty-core#499): a
  -- failure, never a raise, with nginx's reason when it left one where
  -- resty.core keeps it (a nearby server's wrong name failed so)
  local done, sess, err = pcall(sock.sslhandshake, sock, self.session, t.server_name, t.verify)
  if not done then sess, err = nil, last_ffi_error() or ("the handshake failed (" .. tostring(sess) .. ")") end
  if not sess then
    local hint = "trusting " .. t.trusted
    if err == "certificate host mismatch" and is_ip(t.server_name) then
      hint = "nginx checks the name as a DNS name: give server_name, a name the certificate holds"
    elseif err == "handshake failed" then
      -- nginx says only this, before any certificate is looked at (its
      -- verification's failures have their own words): the server closed
      -- the connection (a Redis at maxclients), or the two share no TLS
      -- version or cipher.  Not told apart, so kind tls, not retried
      hint = "the server closed the connection, or it and nginx share no TLS version or cipher; " ..
        "the certificate was not looked at"
    end
    return nil, handshake_failure(err, hint)
  end
  self.session = sess
  return true
end

function cosocket.some(sock, deadline, n)
  if not arm(sock, deadline) then return nil, "timeout" end
  return sock:receiveany(n)
end

function cosocket.send(sock, data, deadline)
  local i, n = 1, #data
  repeat
    if not arm(sock, deadline) then return nil, "timeout" end
    local j = min(n, i + CHUNK - 1)
    local ok, err = sock:send((i == 1 and j == n) and data or data:sub(i, j))
    if not ok then return nil, err end
    i = j + 1
  until i > n
  return true
end

function cosocket.release(self, sock, ok)
  if ok then
    if not sock:setkeepalive(self.keepalive_ms, self.pool_size) then sock:close() end
  else
    sock:close()
  end
end

local luasocket = {}

function luasocket.open(self, deadline)
  local sock = self.sock
  if sock then return sock, false end
  local socket = require "socket"
  local l = left(deadline)
  if not l then return nil, "timeout", "connect" end
  sock = socket.tcp()
  sock:settimeout(min(self.connect_ms / 1000, l))
  local ok, err = sock:connect(self.host, self.port)
  if not ok then
    sock:close()
    return nil, err, "connect"
  end
  sock:setoption("tcp-nodelay", true)
  if self.tls then
    local kind
    sock, err, kind = luasocket.handshake(self, sock, deadline)
    if not sock then return nil, err, "TLS handshake", kind end
  end
  return sock, true
end

-- LuaSec over the connected socket (which it takes over): the handshake
-- before the deadline, then the host name, which LuaSec does not check
function luasocket.handshake(self, sock, deadline)
  local t = self.tls
  local conn, err = require("ssl").wrap(sock, t.ctx)
  if not conn then
    sock:close()
    return nil, tostring(err), "tls"
  end
  if t.sni then conn:sni(t.sni) end
  local l = left(deadline)
  local ok
  if l then
    conn:settimeout(l, "t")
    ok, err = conn:dohandshake()
  else
    err = "timeout"
  end
  if not ok then
    conn:close()
    return nil, handshake_failure(err, "trusting " .. t.trusted)
  end
  if t.verify then
    local cert = conn:getpeercertificate()
    local named, held = false, nil
    if cert then named, held = M.host_matches(cert, t.server_name) end
    if not named then
      conn:close()
      return nil, "the certificate does not name " .. t.server_name ..
        (held and (" (it names " .. (#held > 0 and concat(held, ", ") or "no " .. (is_ip(t.server_name) and
          "IP address" or "name")) .. ")") or ""), "tls"
    end
  end
  return conn
end

-- LuaSec says "wantread" / "wantwrite" where LuaSocket says "timeout"
local function plain(err)
  if err == "wantread" or err == "wantwrite" then return "timeout" end
  return err
end

-- LuaSocket waits again when a signal interrupts its poll: a Ctrl-C
-- under the CLI's SIGINT handler (core.interrupted) is seen between two
-- slices this long of a wait for the first byte (`kinot worker`'s read
-- blocks --block seconds)
local SLICE = 0.25

-- the first byte waits (LuaSocket's own wait, bounded by what is left of
-- the deadline, in slices), the rest is what has already come, without
-- waiting
function luasocket.some(sock, deadline, n)
  local first, err
  repeat
    local l = left(deadline)
    if not l then return nil, "timeout" end
    sock:settimeout(min(l, SLICE))
    first, err = sock:receive(1)
    if not first then
      err = plain(err)
      if err == "timeout" and core.interrupted() then return nil, "interrupted" end
    end
  until first or err ~= "timeout"
  if not first then return nil, err end
  if n == 1 then return first end
  sock:settimeout(0)
  local data, _, partial = sock:receive(n - 1)
  data = data or partial
  if not data or data == "" then return first end
  return first .. data
end

function luasocket.send(sock, data, deadline)
  local l = left(deadline)
  if not l then return nil, "timeout" end
  sock:settimeout(l, "t") -- "total": the whole send, however the server reads it
  local ok, err = sock:send(data)
  if not ok then return nil, plain(err) end
  return true
end

function luasocket.release(self, sock, ok)
  if ok then
    self.sock = sock
  else
    sock:close()
    self.sock = nil
  end
end

-- ------------------------------------------------------------ RESP2

local whole = require("kinot.vocabulary").whole -- the integer rule

-- a whole number as its digits (never "1e+15" or "3.0"), anything else as tostring
local function arg_text(v)
  if whole(v) then return string.format("%d", v) end
  return tostring(v)
end

-- (a string as it is; the lengths as numbers, which table.concat writes as
-- digits: no string made for each header)
local function encode(args, n)
  local out = { "*", n, "\r\n" }
  local k = 3
  for i = 1, n do
    local s = args[i]
    if type(s) ~= "string" then s = arg_text(s) end
    out[k + 1], out[k + 2], out[k + 3], out[k + 4], out[k + 5] = "$", #s, "\r\n", s, "\r\n"
    k = k + 5
  end
  return concat(out, "", 1, k)
end

-- A Redis error inside an array (a script's or EXEC's) is kept as this:
-- .text, and .code its first word
local ReplyError = {}
ReplyError.__index = ReplyError
ReplyError.__tostring = function(e) return e.text end
M.ReplyError = ReplyError

-- What a reply may be, whatever the server sends (a broken one, or not
-- Redis at all): arrays nested at most MAX_DEPTH deep (the SDK's deepest,
-- XAUTOCLAIM's, is 4; a reader that recursed without a bound ended in
-- "stack overflow"), lines (+, -, :, and the headers) of at most LINE_MAX
-- bytes, and at most `max_reply` bytes in all, each array element counted
-- as ELEMENT bytes beside its text (what it costs in memory), and each
-- array TABLE bytes more (a Lua table, even empty: a reply of "*0"s,
-- 4 bytes each, held 14 times its count): a declared length past what is
-- left is refused before anything is read.
local MAX_DEPTH, LINE_MAX, ELEMENT, TABLE = 32, 64 * 1024, 16, 64
M.MAX_DEPTH, M.LINE_MAX = MAX_DEPTH, LINE_MAX

-- the reply reader: a buffer over io.some, its deadline, its byte budget;
-- .came: a byte of a reply came (the server ran the command: never sent
-- again, on_connection)
local function reader(io, sock, deadline, max_reply)
  return { io = io, sock = sock, deadline = deadline, buf = "", pos = 1, budget = max_reply, max = max_reply,
           came = false }
end

-- the kind of a socket's failure: a TLS alert the server sent (LuaSec:
-- "tlsv13 alert certificate required", "sslv3 alert bad certificate": a
-- client certificate refused just after the handshake) is "tls", not a
-- connection that died
local function failure_kind(err)
  if err == "timeout" or err == "interrupted" then return err end
  if type(err) == "string" and err:find(" alert ", 1, true) then return "tls" end
  return "network"
end

-- reads more bytes into the buffer (at most n); true | nil, kind, message
local function fill(rd, n)
  local data, err = rd.io.some(rd.sock, rd.deadline, n or CHUNK)
  if not data then return nil, failure_kind(err), err end
  rd.came = true
  if rd.pos > #rd.buf then rd.buf = data else rd.buf = rd.buf:sub(rd.pos) .. data end
  rd.pos = 1
  return true
end

local function spend(rd, n)
  rd.budget = rd.budget - n
  if rd.budget < 0 then
    return nil, "too_large", "reply larger than the " .. rd.max .. "-byte cap (max_reply)"
  end
  return true
end

local byte, find, sub = string.byte, string.find, string.sub

-- one CRLF-ended line: its first byte (the reply's type; 0 for an empty
-- line) and the rest, without the CRLF (no copy of the whole line: a
-- reply of a thousand entries has thousands of them);
-- type, rest | nil, kind, message.  A line already in the buffer is taken
-- without a loop (line_of: LuaJIT compiles it into its caller's trace);
-- one not yet all there waits for more (wait_line)
local function wait_line(rd)
  while true do
    local buf, pos = rd.buf, rd.pos
    local e = find(buf, "\r\n", pos, true)
    if e then
      if e - pos > LINE_MAX then break end
      rd.pos = e + 2
      local ok, kind, msg = spend(rd, e - pos + 2)
      if not ok then return nil, kind, msg end
      if e == pos then return 0, "" end
      return byte(buf, pos), sub(buf, pos + 1, e - 1)
    end
    if #rd.buf - rd.pos + 1 > LINE_MAX + 1 then break end
    local ok, kind, err = fill(rd)
    if not ok then return nil, kind, err end
  end
  return nil, "decode", "protocol error: a line longer than " .. LINE_MAX .. " bytes"
end

local function line_of(rd)
  local buf, pos = rd.buf, rd.pos
  local e = find(buf, "\r\n", pos, true)
  if not e or e - pos > LINE_MAX then return wait_line(rd) end
  rd.pos = e + 2
  local budget = rd.budget - (e - pos + 2)
  rd.budget = budget
  if budget < 0 then return nil, "too_large", "reply larger than the " .. rd.max .. "-byte cap (max_reply)" end
  if e == pos then return 0, "" end
  return byte(buf, pos), sub(buf, pos + 1, e - 1)
end

-- exactly n bytes (the budget already spent); bytes | nil, kind, message
local function take(rd, n)
  local parts = {}
  while n > 0 do
    local have = #rd.buf - rd.pos + 1
    if have > 0 then
      local k = min(have, n)
      parts[#parts + 1] = rd.buf:sub(rd.pos, rd.pos + k - 1)
      rd.pos, n = rd.pos + k, n - k
    else
      local ok, kind, err = fill(rd, min(n, CHUNK))
      if not ok then return nil, kind, err end
    end
  end
  return concat(parts)
end

-- a length header: digits (a leading -1 is nil's); n | nil
local function length(text)
  if text == "-1" then return -1 end
  if text:find("^%d+$") and #text <= 15 then return tonumber(text) end
end

local PLUS, MINUS, COLON, DOLLAR, STAR = byte("+-:$*", 1, 5)

-- one reply that is not an array (p: its type byte, rest: its line's
-- rest) -> value | nil, kind, message | nil, nil, redis_error_text
local function scalar(rd, p, rest)
  if p == PLUS then return rest end
  if p == MINUS then return nil, nil, rest end
  if p == COLON then
    -- (digits only, as Redis writes them: tonumber alone takes "0x10",
    -- "1e3", " 5", "+5")
    local v = #rest <= 20 and find(rest, "^%-?%d+$") and tonumber(rest)
    if not v then return nil, "decode", "protocol error: bad integer" end
    return v
  end
  if p == DOLLAR then
    local n = length(rest)
    if not n then return nil, "decode", "protocol error: bad bulk length" end
    if n < 0 then return M.null end
    local ok, kind, msg = spend(rd, n + 2)
    if not ok then return nil, kind, msg end
    local at, buf = rd.pos, rd.buf
    if #buf - at + 1 >= n + 2 then -- all there already (the common case)
      local cr, lf = byte(buf, at + n, at + n + 1)
      if cr ~= 13 or lf ~= 10 then
        return nil, "decode", "protocol error: a bulk string not ended by CRLF"
      end
      rd.pos = at + n + 2
      return sub(buf, at, at + n - 1)
    end
    local data
    data, kind, msg = take(rd, n + 2)
    if not data then return nil, kind, msg end
    if data:sub(-2) ~= "\r\n" then return nil, "decode", "protocol error: a bulk string not ended by CRLF" end
    return data:sub(1, n)
  end
  return nil, "decode", "protocol error: unexpected reply type " .. string.format("%q", p == 0 and "" or string.char(p))
end

-- read(rd) -> value | nil, kind, message | nil, nil, redis_error_text.
-- Arrays are filled in a loop with a stack of the arrays still open (no
-- recursion, which LuaJIT does not compile: a reply of many entries is
-- read in one compiled loop); an error inside an array is a ReplyError
local function read(rd)
  local arr, n, i = nil, 0, 0 -- the array being filled
  local open, sa, sn, si = 0, nil, nil, nil -- arrays open, and the stack of those around arr
  while true do
    local p, rest, msg = line_of(rd)
    if not p then return nil, rest, msg end
    local v, kind
    if p == STAR then
      local len = length(rest)
      if not len then return nil, "decode", "protocol error: bad array length" end
      if len < 0 then
        v = M.null
      else
        if open >= MAX_DEPTH then
          return nil, "decode", "protocol error: a reply nested deeper than " .. MAX_DEPTH .. " arrays"
        end
        local ok
        ok, kind, msg = spend(rd, len * ELEMENT + TABLE)
        if not ok then return nil, kind, msg end
        v = {}
        if len > 0 then -- opened: its elements come next
          if arr then
            if not sa then sa, sn, si = {}, {}, {} end
            sa[open], sn[open], si[open] = arr, n, i
          end
          open = open + 1
          arr, n, i = v, len, 0
          v = nil
        end
      end
    else
      v, kind, msg = scalar(rd, p, rest)
      if v == nil then
        if kind then return nil, kind, msg end
        if not arr then return nil, nil, msg end
        v = setmetatable({ text = msg, code = msg:match("^(%u+)") or "ERR" }, ReplyError)
      end
    end
    -- v: a whole value, placed in the array open (which, full, is itself
    -- placed in the one around it ...), or the reply
    while v ~= nil do
      if not arr then return v end
      i = i + 1
      arr[i] = v
      if i < n then break end
      v = arr
      open = open - 1
      if open == 0 then
        arr = nil
      else
        arr, n, i = sa[open], sn[open], si[open]
        sa[open] = nil
      end
    end
  end
end

-- ------------------------------------------------------------ client

-- the parts of a pool's name, each after its length ("1:a3:b:c"): no two
-- different lists of parts spell the same name
local function spelled(...)
  local out = {}
  for i = 1, select("#", ...) do
    local part = tostring((select(i, ...)))
    out[i] = #part .. ":" .. part
  end
  return concat(out)
end

local NUMBERS = { "connect_timeout", "timeout", "keepalive", "pool_size", "max_reply" }
local KNOWN = validate.set { "connect_timeout", "timeout", "keepalive", "pool_size", "max_reply", "tls" }

--- new(url, opts) -> client.  opts: connect_timeout (s, default 1),
-- timeout (s, one deadline for each whole call, default 2), keepalive (s,
-- idle time in nginx's pool, default 60), pool_size (default 32),
-- max_reply (bytes a reply may hold, default 64 MiB), tls (a rediss://
-- URL's: ca_file, verify_tls, server_name, cert_file, key_file).
-- the server a client talks to: set when it is made, and again each time
-- Sentinel names another master
local function aim(self, host, port)
  if self.host == host and self.port == port and self.where then return end
  if self.sock then -- (LuaSocket) the kept connection is to the old one
    self.sock:close()
    self.sock = nil
  end
  self.session = nil -- (a TLS session is the old server's)
  self.host, self.port, self.where = host, port, host .. ":" .. port
  if self.io == cosocket then
    -- one pool per server, database and credentials: a connection
    -- authenticated for one is never handed to another; nor is a TLS one
    -- to a client that would not have opened it (another name checked,
    -- unverified, another client certificate)
    -- (each part spelled with its length: user "a" with password "b:c"
    -- and user "a:b" with password "c", or a server_name holding a ":",
    -- once spelled the same pool)
    local cred = self.password and ngx.md5(spelled(self.username or "", self.password)) or "-"
    local t = self.tls
    local tls = t and spelled(t.verify and "verified" or "unverified", t.server_name, t.cert_id or "") or "plain"
    self.pool_opts = { pool = "kinot-redis:" .. spelled(host, port, self.db, cred, tls), pool_size = self.pool_size }
  end
end

-- a client of parsed parts (M.parse's) and checked options
local function build(o, opts)
  o.connect_ms = (opts.connect_timeout or 1) * 1000
  o.timeout = opts.timeout or 2
  o.keepalive_ms = (opts.keepalive or 60) * 1000
  o.pool_size = opts.pool_size or 32
  o.max_reply = floor(opts.max_reply or M.MAX_REPLY)
  o.io = (ngx and ngx.socket and ngx.socket.tcp) and cosocket or luasocket
  if o.tls then
    o.tls = tls_settings(o, opts.tls)
    if o.tls.cert and o.io == cosocket then o.tls.cert_id = ngx.md5(spelled(opts.tls.cert_file, opts.tls.key_file)) end
  end
  if o.sentinel then
    o.where = o.sentinel.master .. " (Sentinel)" -- until a master is found
    -- the Sentinels' clients: the same options, their own credentials
    o.sentinel_client = function(parts) return build(parts, opts) end
  else
    aim(o, o.host, o.port)
  end
  return setmetatable(o, M)
end

function M.new(url, opts)
  validate.options(opts, KNOWN, "redis.new")
  opts = opts or {}
  local o = M.check(url, opts.tls, "tls")
  for _, k in ipairs(NUMBERS) do
    if opts[k] ~= nil and (type(opts[k]) ~= "number" or opts[k] ~= opts[k] or opts[k] <= 0 or opts[k] == math.huge) then
      misuse("redis option " .. k .. " must be a positive number")
    end
  end
  return build(o, opts)
end

--- the default of max_reply: 64 MiB (Redis itself allows a bulk string of 512 MiB)
M.MAX_REPLY = 64 * 1024 * 1024

-- nil, err for a failure of the connection or of what the server sent;
-- kind: "timeout" and "network" (retryable), "decode", "too_large", "tls"
-- (a server that could not be verified: it will not be on the next try)
function M:fail(what, err, kind, timeout)
  kind = kind or (err == "timeout" and "timeout" or "network")
  local late = kind == "timeout" and timeout and " (the call's " .. timeout .. " s timeout)" or ""
  return nil, errors.new(kind, "redis " .. self.where .. ": " .. what .. " failed: " .. tostring(err) .. late,
                         { retryable = kind == "timeout" or kind == "network" })
end

local function reply_error(self, text, what)
  local code = text:match("^(%u+)") or "ERR"
  return nil, errors.new("redis", "redis " .. self.where .. ": " .. (what or "") .. text,
                         { code = code, retryable = RETRYABLE_CODES[code] or false })
end

-- one command on a socket: send, read, before the deadline;
-- value | nil, kind, message, step, answered (a byte of the reply came
-- before the failure) | nil, nil, redis_error_text
local function roundtrip(self, sock, args, n, deadline)
  local ok, err = self.io.send(sock, encode(args, n), deadline)
  if not ok then return nil, failure_kind(err), err, "send" end
  local rd = reader(self.io, sock, deadline, self.max_reply)
  local v, kind, msg = read(rd)
  return v, kind, msg, "read", rd.came
end

-- AUTH and SELECT on a fresh connection
local function hello(self, sock, deadline, timeout)
  if self.password then
    local args = self.username and { "AUTH", self.username, self.password } or { "AUTH", self.password }
    local v, kind, msg, what = roundtrip(self, sock, args, #args, deadline)
    if v == nil then
      if not kind then
        -- the server's words only: they never repeat the password
        return nil, select(2, reply_error(self, msg, "AUTH refused: "))
      end
      return nil, select(2, self:fail("AUTH " .. what, msg, kind, timeout))
    end
  end
  if self.db ~= 0 then
    local v, kind, msg, what = roundtrip(self, sock, { "SELECT", self.db }, 2, deadline)
    if v == nil then
      if not kind then return nil, select(2, reply_error(self, msg)) end
      return nil, select(2, self:fail("SELECT " .. what, msg, kind, timeout))
    end
  end
  return true
end

-- a connection to the server the client aims at, a fresh one past AUTH and
-- SELECT: sock, fresh | nil, err, unsent (unsent: nothing of the caller's
-- can have run; `sent`: something went out on an earlier connection)
local function ready(self, deadline, timeout, sent)
  local sock, fresh, what, why = self.io.open(self, deadline)
  if not sock then return nil, select(2, self:fail(what, fresh, why, timeout)), not sent end
  if fresh then
    local ok, err = hello(self, sock, deadline, timeout)
    if not ok then
      self.io.release(self, sock, false)
      return nil, err, not sent and err.kind ~= "redis"
    end
  end
  return sock, fresh
end

-- A call on a connection to the server the client aims at, before the
-- deadline: attempt(self, sock, deadline, timeout, a, b, c) sends and reads
-- on sock -> true, reply[, second] (over: it released sock; a reply the
-- server refused included) | false, kind, message, what ("XADD read": the
-- connection failed), answered (a byte of a reply came on it first).
-- -> reply[, second] | nil, err, unsent (unsent: nothing left this process:
-- connecting, or AUTH / SELECT over the wire, failed).  A kept connection
-- found dead (the server restarted, or closed it idle) before anything was
-- read back is dropped and the attempt made again on a fresh one, once: so
-- a command may run twice when a connection dies between the server's work
-- and its reply.  The SDK's commands are all safe to repeat (docs/redis.md
-- "What a retry may repeat": the inbox's script dedupes before it
-- appends, the dedupe's claim is named by its token, XACK).
local function on_connection(self, deadline, timeout, attempt, a, b, c)
  local sent = false -- (on a kept connection found dead, before a fresh one failed)
  for _ = 1, self.pool_size + 1 do
    local sock, fresh, unsent = ready(self, deadline, timeout, sent)
    if not sock then return nil, fresh, unsent end
    sent = true
    local over, r1, r2, what, answered = attempt(self, sock, deadline, timeout, a, b, c)
    if over then return r1, r2 end
    self.io.release(self, sock, false) -- a half-read reply poisons the connection
    -- only a kept connection found closed is worth another: a fresh one
    -- failing, one that answered first, the deadline passing or a reply
    -- not fit to read end the call
    if fresh or answered or r1 ~= "network" or not left(deadline) then
      return self:fail(what, r2, r1, timeout)
    end
  end
  return self:fail("connect", "no live connection")
end

-- (on_connection's attempt) one command; with `wait` ({ replicas, timeout
-- }), then WAIT on the same connection (WAIT counts the replicas that have
-- this connection's writes: on another connection it would count for
-- another client's)
local function command_on(self, sock, deadline, timeout, args, n, wait)
  local v, kind, msg, step, answered = roundtrip(self, sock, args, n, deadline)
  if v ~= nil and wait then
    local acked
    acked, kind, msg, step = roundtrip(self, sock, { "WAIT", wait.replicas, wait.ms }, 3, deadline)
    self.io.release(self, sock, acked ~= nil or kind == nil)
    if acked == nil then
      if kind then return true, self:fail("WAIT " .. step, msg, kind, timeout) end
      return true, reply_error(self, msg)
    end
    if type(acked) ~= "number" or acked < wait.replicas then return true, nil, self:unreplicated(args[1], wait, acked) end
    return true, v, acked
  end
  if v ~= nil or kind == nil then
    self.io.release(self, sock, true)
    if v == nil then return true, reply_error(self, msg) end
    return true, v
  end
  return false, kind, msg, tostring(args[1]) .. " " .. step, answered
end

-- One command on the server the client aims at (on_connection, command_on)
-- -> reply[, acked replicas] | nil, err, unsent
local function exchange(self, deadline, timeout, args, n, wait)
  return on_connection(self, deadline, timeout, command_on, args, n, wait)
end

local function pause(s)
  if ngx and ngx.sleep then return ngx.sleep(s) end
  core.sleep(s)
end

-- ROLE on the address Sentinel named: a Sentinel that has not yet seen
-- the failover names the old master, which may be back as a replica
local function confirm(self, timeout)
  return function(host, port, deadline)
    aim(self, host, port)
    local role, err = exchange(self, deadline, timeout, { "ROLE" }, 1)
    if role == nil then return nil, err end
    if type(role) ~= "table" or role[1] ~= "master" then
      return nil, "its ROLE is " .. tostring(type(role) == "table" and role[1] or role)
    end
    return true
  end
end

-- Behind Sentinel: the command on the master this process knows (asking
-- the Sentinels when it knows none), following a failover while the
-- deadline lasts.  Sent again ONLY where it cannot have run: the
-- connection was refused (or timed out connecting), or the server
-- answered READONLY (a replica, maybe the old master demoted) or
-- MASTERDOWN (a replica cut from its master), which it does before
-- running anything (a script's first write fails on a replica, so nothing
-- of it was written).  A connection lost after the command went out (the
-- master killed mid-call) is NOT sent again here: the command may have
-- run, and whether it reached the replica that is now master cannot be
-- known; the error goes to the caller (the handler answers 503, the
-- platform delivers again, and the inbox's script finds its own mark if
-- the first run survived).  Every such sign makes the next call ask the
-- Sentinels again.
local function follow(self, deadline, timeout, attempt, ...)
  local s = self.sentinel
  local nap, last, asked = 0.02, nil, nil
  while true do
    local host, port = sentinel.known(s)
    local v, err, unsent
    if not host then
      host, port = sentinel.find(s, deadline, self.connect_ms / 1000, self.sentinel_client, confirm(self, timeout))
      if not host then
        -- (a password refused: at once, not retried)
        if port and port.retryable == false then return nil, port end
        err, unsent = port or last or select(2, self:fail("asking Sentinel", "timeout", "timeout", timeout)), true
        -- (the first round's reasons: the last round may have been cut short by the deadline)
        asked = asked or err
      end
    end
    if host then
      aim(self, host, port)
      v, err, unsent = attempt(self, deadline, timeout, ...)
      if v ~= nil then return v, err end
    end
    last = err
    local code = err.code
    if not (unsent or code == "READONLY" or code == "MASTERDOWN") then
      -- (too few replicas, NOREPLICAS, may be an old master whose replicas
      -- left it, but it is kept: its WAIT fails, 503, until the master
      -- found expires within the second.  Forgotten, every request while
      -- a replica is down asked a Sentinel, and AUTH and ROLE the master)
      if err.kind == "network" or err.kind == "timeout" then sentinel.forget(s) end
      return nil, err
    end
    sentinel.forget(s)
    local l = left(deadline)
    if not l then return nil, host and err or asked end
    pause(min(nap, l))
    nap = min(nap * 2, 0.25)
  end
end

local function run(self, timeout, wait, ...)
  local n = select("#", ...)
  if n == 0 then misuse("redis call needs a command") end
  local args = { ... }
  local deadline = now() + timeout + (wait and wait.ms / 1000 or 0)
  if self.sentinel then return follow(self, deadline, timeout, exchange, args, n, wait) end
  return exchange(self, deadline, timeout, args, n, wait)
end

--- call_timeout(seconds, cmd, ...) -> reply | nil, err: as call, with this
-- deadline (for blocking commands: XREADGROUP ... BLOCK).  `seconds` bounds
-- the whole call: connecting, AUTH, SELECT, sending, reading (behind
-- Sentinel: asking the Sentinels too, and following a failover).
function M:call_timeout(timeout, ...)
  local v, err = run(self, timeout, nil, ...) -- (not exchange's third value)
  return v, err
end

--- unreplicated(what, wait, acked) -> err: the error of a write done whose
-- WAIT counted fewer than wait.replicas replicas (code NOREPLICAS, retryable)
function M:unreplicated(what, wait, acked)
  return errors.new("redis", "redis " .. self.where .. ": " .. tostring(what) .. " done, but WAIT: " ..
    tostring(acked) .. " of " .. wait.replicas .. " replica(s) acknowledged it within " .. wait.ms .. " ms",
    { code = "NOREPLICAS", retryable = true, acked = acked })
end

--- wait_option(w, where) -> { replicas, ms } | nil: the `wait = { replicas
-- = n, timeout = s }` option of the inbox and the Redis dedupe, checked
-- (misuse raises)
function M.wait_option(w, where)
  if w == nil then return nil end
  if type(w) ~= "table" then misuse(where .. ".wait must be a table { replicas = n, timeout = seconds }") end
  validate.options(w, validate.set { "replicas", "timeout" }, where .. ".wait")
  local r, t = w.replicas, w.timeout == nil and 1 or w.timeout
  if not whole(r) or r < 1 then misuse(where .. ".wait.replicas must be a whole number >= 1") end
  -- (WAIT n 0 would block for ever)
  if type(t) ~= "number" or t ~= t or t < 0.001 or t > 3600 then
    misuse(where .. ".wait.timeout must be a number of seconds, 0.001 to 3600")
  end
  return { replicas = r, ms = floor(t * 1000) }
end

-- what a pipeline's failure says it was
local function pipeline_what(cmds, n, step)
  return "pipeline of " .. n .. " (" .. tostring(cmds[1][1]) .. " ...) " .. step
end

-- (on_connection's attempt) the pipeline's commands, written at once,
-- then their replies read in order
local function pipeline_on(self, sock, deadline, _, data, cmds, n)
  local ok, serr = self.io.send(sock, data, deadline)
  if not ok then return false, failure_kind(serr), serr, pipeline_what(cmds, n, "send") end
  local rd = reader(self.io, sock, deadline, self.max_reply)
  local replies, refused = {}, 0
  for i = 1, n do
    local v, k, m = read(rd)
    if v == nil then
      if k then
        -- a reply already read, or begun, means this connection was
        -- alive: the server ran at least the first command, so none goes
        -- again
        return false, k, m, pipeline_what(cmds, n, "read"), rd.came
      end
      local e = setmetatable({ text = m }, ReplyError)
      e.code = m:match("^(%u+)") or "ERR"
      if e.code == "READONLY" or e.code == "MASTERDOWN" then refused = refused + 1 end
      v = e
    end
    replies[i] = v
  end
  self.io.release(self, sock, true)
  -- a replica (or a master cut from its own) refused the first and
  -- wrote nothing: to the caller as its error, which behind Sentinel
  -- is followed to the new master
  -- (every command refused so; a trailing WAIT, which a replica
  -- refuses in words of its own, with them: then the n - 1 refused
  -- are all the others.  One reply that ran among them, and the
  -- replies are the caller's: sent again, it would run twice)
  local last = replies[n]
  if refused == n or (refused == n - 1 and refused > 0 and tostring(cmds[n][1]):upper() == "WAIT"
                      and getmetatable(last) == ReplyError
                      and last.code ~= "READONLY" and last.code ~= "MASTERDOWN") then
    return true, reply_error(self, replies[1].text)
  end
  return true, replies
end

-- the pipeline on the server the client aims at (on_connection,
-- pipeline_on): replies | nil, err, unsent
local function pipe(self, deadline, timeout, data, cmds, n)
  return on_connection(self, deadline, timeout, pipeline_on, data, cmds, n)
end

--- pipeline(cmds[, timeout]) -> replies | nil, err: many commands in one
-- round trip.  cmds: a list of commands, each a list { "CMD", arg, ... }.
-- All are written at once on one connection, then their replies read in
-- order; replies[i] is the i-th command's reply, or a ReplyError (its
-- text, and .code its first word) when the server refused that one: the
-- others still ran.  One deadline (`timeout`, default the client's) for
-- the whole exchange.  As call: a kept connection found dead is replaced
-- once and every command sent again, so a pipeline holds only commands
-- safe to repeat; a connection that fails part way (the server may have
-- run some, all or none of them) ends the call with nil, err.  Behind
-- Sentinel it follows a failover as call does (sent again only where
-- nothing can have run: a refused connection, READONLY or MASTERDOWN for
-- every command).
function M:pipeline(cmds, timeout)
  local n = type(cmds) == "table" and #cmds or 0
  if n == 0 then misuse("redis pipeline needs a list of commands") end
  local parts = {}
  for i = 1, n do
    local c = cmds[i]
    if type(c) ~= "table" or c[1] == nil then misuse("redis pipeline: command " .. i .. " must be a list { \"CMD\", ... }") end
    parts[i] = encode(c, #c)
  end
  local data = concat(parts)
  timeout = timeout or self.timeout
  local deadline = now() + timeout
  local v, err
  if self.sentinel then
    v, err = follow(self, deadline, timeout, pipe, data, cmds, n)
  else
    v, err = pipe(self, deadline, timeout, data, cmds, n)
  end
  return v, err
end

--- call(cmd, ...) -> reply | nil, err.  Replies: strings, integers,
-- arrays (tables), redis.null; an error inside an array is a ReplyError.
function M:call(...)
  return self:call_timeout(self.timeout, ...)
end

-- EVALSHA of the script, loaded once per client (and again after the
-- server lost it: a restart, a failover to a replica that never saw it)
local function eval(self, wait, script, ...)
  local known = self.shas and self.shas[script]
  if known then
    local v, err = run(self, self.timeout, wait, "EVALSHA", known, ...)
    if v ~= nil or err.code ~= "NOSCRIPT" then return v, err end
    self.shas[script] = nil -- the server lost it: loaded again (M:sha)
  end
  local sha, err = self:sha(script)
  if not sha then return nil, err end
  return run(self, self.timeout, wait, "EVALSHA", sha, ...)
end

--- sha(script) -> the script's SHA1, loaded on the server (once per
-- client, as eval loads it) | nil, err: for an EVALSHA in a pipeline (a
-- NOSCRIPT answer there: eval loads it again)
function M:sha(script)
  local shas = self.shas
  if not shas then
    shas = {}
    self.shas = shas
  end
  local sha = shas[script]
  if sha then return sha end
  local loaded, err = self:call("SCRIPT", "LOAD", script)
  if not loaded then return nil, err end
  shas[script] = loaded
  return loaded
end

--- eval(script, numkeys, keys and args ...) -> reply | nil, err: EVALSHA of
-- the script, loaded once per client (and again after the server lost it)
function M:eval(script, ...)
  local v, err = eval(self, nil, script, ...)
  return v, err
end

--- eval_wait(wait, script, numkeys, ...) -> reply, acked | nil, err: as
-- eval, then `WAIT wait.replicas wait.ms` on the same connection
-- (M.wait_option makes `wait`); fewer replicas than asked is an error of
-- kind "redis", code NOREPLICAS (retryable): the script ran, and its
-- writes are on the master, but a failover now could lose them
function M:eval_wait(wait, script, ...)
  return eval(self, wait, script, ...)
end

--- close(): drops the kept connection (outside nginx; in nginx the pool keeps them)
function M:close()
  if self.sock then
    self.sock:close()
    self.sock = nil
  end
  for _, c in ipairs(self.sentinel and self.sentinel.clients or {}) do c:close() end
end

return M
