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
-- "NOGROUP", "BUSYGROUP", "WRONGPASS" ...).  No message ever contains the
-- password: messages name host:port only.
local errors = require "kinot.errors"

local ngx = rawget(_G, "ngx")
local type, tostring, tonumber, concat, floor = type, tostring, tonumber, table.concat, math.floor

local M = {}
M.__index = M

--- the nil of a Redis reply (a missing key, a refused SET NX, a BLOCK that timed out)
M.null = setmetatable({}, { __tostring = function() return "redis.null" end })

local RETRYABLE_CODES = { LOADING = true, BUSY = true, TRYAGAIN = true, MASTERDOWN = true }

--- redact(url) -> the URL with its userinfo replaced by ***
function M.redact(url)
  -- up to the last @: a password may hold an unescaped / or @; without a
  -- "scheme://" (none, or a mistyped one) everything before it
  local s, n = tostring(url):gsub("^(%a[%w+.-]*://).*@", "%1***@")
  if n == 0 then s = s:gsub("^.*@", "***@") end
  return s
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- parse(url) -> { host, port, db, username, password } (misuse raises, never showing the password)
function M.parse(url, level)
  level = (level or 1) + 1
  if type(url) ~= "string" then error("kinot: redis must be a redis:// URL string", level) end
  local rest = url:match("^redis://(.*)$")
  if not rest then error("kinot: redis URL must look like redis://[:password@]host:port/db (got " .. M.redact(url) .. ")", level) end
  local o = { port = 6379, db = 0 }
  local userinfo, hostpath = rest:match("^(.*)@([^@]*)$")
  if userinfo then
    local user, pass = userinfo:match("^([^:]*):(.*)$")
    if not user then error("kinot: redis URL's userinfo must be :password or user:password (" .. M.redact(url) .. ")", level) end
    o.username = user ~= "" and unescape(user) or nil
    o.password = unescape(pass)
  else
    hostpath = rest
  end
  local hostport, path = hostpath:match("^([^/]*)(.*)$")
  local host, port = hostport:match("^%[([^%]]+)%]:?(%d*)$")
  if not host then host, port = hostport:match("^([^:]+):?(%d*)$") end
  if not host or host == "" then error("kinot: redis URL has no host (" .. M.redact(url) .. ")", level) end
  o.host = host
  if port ~= "" then o.port = tonumber(port) end
  if o.port < 1 or o.port > 65535 then error("kinot: redis URL's port is out of range (" .. M.redact(url) .. ")", level) end
  if path ~= "" and path ~= "/" then
    local db = path:match("^/(%d+)$")
    if not db then error("kinot: redis URL's path must be a database number, /0 to /15 (" .. M.redact(url) .. ")", level) end
    o.db = tonumber(db)
  end
  return o
end

-- ------------------------------------------------------------ sockets
-- open(self, timeout) -> sock, fresh | nil, err ; release(self, sock, ok)

local cosocket = {}

function cosocket.open(self, timeout)
  local sock = ngx.socket.tcp()
  sock:settimeouts(self.connect_ms, timeout * 1000, timeout * 1000)
  local ok, err = sock:connect(self.host, self.port, self.pool_opts)
  if not ok then return nil, err, "connect" end
  return sock, (sock:getreusedtimes() or 0) == 0
end

function cosocket.release(self, sock, ok)
  if ok then
    if not sock:setkeepalive(self.keepalive_ms, self.pool_size) then sock:close() end
  else
    sock:close()
  end
end

local luasocket = {}

function luasocket.open(self, timeout)
  local sock = self.sock
  if sock then
    sock:settimeout(timeout)
    return sock, false
  end
  local socket = require "socket"
  sock = socket.tcp()
  sock:settimeout(self.connect_ms / 1000)
  local ok, err = sock:connect(self.host, self.port)
  if not ok then
    sock:close()
    return nil, err, "connect"
  end
  sock:setoption("tcp-nodelay", true)
  sock:settimeout(timeout)
  return sock, true
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

local function arg_text(v)
  if type(v) == "number" and v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return string.format("%d", v) end
  return tostring(v)
end

local function encode(args, n)
  local out = { "*" .. n .. "\r\n" }
  for i = 1, n do
    local s = arg_text(args[i])
    out[#out + 1] = "$" .. #s .. "\r\n"
    out[#out + 1] = s
    out[#out + 1] = "\r\n"
  end
  return concat(out)
end

-- A Redis error inside an array (a script's or EXEC's) is kept as this
local ReplyError = {}
ReplyError.__index = ReplyError
ReplyError.__tostring = function(e) return e.text end
M.ReplyError = ReplyError

-- read(sock) -> value | nil, io_err | nil, nil, redis_error_text
local function read(sock)
  local line, err = sock:receive("*l")
  if not line then return nil, err end
  local p, rest = line:sub(1, 1), line:sub(2)
  if p == "+" then return rest end
  if p == "-" then return nil, nil, rest end
  if p == ":" then return tonumber(rest) end
  if p == "$" then
    local n = tonumber(rest)
    if not n then return nil, "protocol error: bad bulk length" end
    if n < 0 then return M.null end
    local data, e = sock:receive(n + 2)
    if not data then return nil, e end
    return data:sub(1, n)
  end
  if p == "*" then
    local n = tonumber(rest)
    if not n then return nil, "protocol error: bad array length" end
    if n < 0 then return M.null end
    local arr = {}
    for i = 1, n do
      local v, e, rerr = read(sock)
      if v == nil then
        if rerr == nil then return nil, e end
        v = setmetatable({ text = rerr }, ReplyError)
      end
      arr[i] = v
    end
    return arr
  end
  return nil, "protocol error: unexpected reply type " .. string.format("%q", p)
end

-- ------------------------------------------------------------ client

--- new(url, opts) -> client.  opts: connect_timeout (s, default 1),
-- timeout (s, each read and write, default 2), keepalive (s, idle
-- time in nginx's pool, default 60), pool_size (default 32).
function M.new(url, opts)
  local o = M.parse(url, 2)
  opts = opts or {}
  if type(opts) ~= "table" then error("kinot: redis options must be a table", 2) end
  for _, k in ipairs { "connect_timeout", "timeout", "keepalive", "pool_size" } do
    if opts[k] ~= nil and (type(opts[k]) ~= "number" or opts[k] <= 0) then
      error("kinot: redis option " .. k .. " must be a positive number", 2)
    end
  end
  o.connect_ms = (opts.connect_timeout or 1) * 1000
  o.timeout = opts.timeout or 2
  o.keepalive_ms = (opts.keepalive or 60) * 1000
  o.pool_size = opts.pool_size or 32
  o.where = o.host .. ":" .. o.port
  if ngx and ngx.socket and ngx.socket.tcp then
    o.io = cosocket
    -- one pool per server, database and credentials: a connection
    -- authenticated for one is never handed to another
    local cred = o.password and ngx.md5((o.username or "") .. ":" .. o.password) or "-"
    o.pool_opts = { pool = "kinot-redis:" .. o.where .. "/" .. o.db .. ":" .. cred, pool_size = o.pool_size }
  else
    o.io = luasocket
  end
  return setmetatable(o, M)
end

function M:fail(what, err)
  local kind = err == "timeout" and "timeout" or "network"
  return nil, errors.new(kind, "redis " .. self.where .. ": " .. what .. " failed: " .. tostring(err),
                         { retryable = true })
end

local function reply_error(self, text, what)
  local code = text:match("^(%u+)") or "ERR"
  return nil, errors.new("redis", "redis " .. self.where .. ": " .. (what or "") .. text,
                         { code = code, retryable = RETRYABLE_CODES[code] or false })
end

-- one command on a socket: send, read
local function roundtrip(sock, args, n)
  local ok, err = sock:send(encode(args, n))
  if not ok then return nil, err, nil, "send" end
  local v, e, rerr = read(sock)
  return v, e, rerr, "read"
end

-- AUTH and SELECT on a fresh connection
local function hello(self, sock)
  if self.password then
    local args = self.username and { "AUTH", self.username, self.password } or { "AUTH", self.password }
    local v, err, rerr, what = roundtrip(sock, args, #args)
    if v == nil then
      if rerr then
        -- the server's words only: they never repeat the password
        return nil, select(2, reply_error(self, rerr, "AUTH refused: "))
      end
      return nil, select(2, self:fail("AUTH " .. what, err))
    end
  end
  if self.db ~= 0 then
    local v, err, rerr, what = roundtrip(sock, { "SELECT", self.db }, 2)
    if v == nil then
      if rerr then return nil, select(2, reply_error(self, rerr)) end
      return nil, select(2, self:fail("SELECT " .. what, err))
    end
  end
  return true
end

--- call_timeout(seconds, cmd, ...) -> reply | nil, err: as call, with this
-- read timeout (for blocking commands: XREADGROUP ... BLOCK).  A kept
-- connection found dead (the server restarted, or closed it idle) is
-- dropped and the command sent again on a fresh one, once: so a command
-- may run twice when a connection dies between the server's work and its
-- reply.  The SDK's commands are all safe to repeat (SET NX, XACK, the
-- inbox's script that dedupes before it appends).
function M:call_timeout(timeout, ...)
  local n = select("#", ...)
  if n == 0 then error("kinot: redis call needs a command", 2) end
  local args = { ... }
  for _ = 1, self.pool_size + 1 do
    local sock, fresh, what = self.io.open(self, timeout)
    if not sock then return self:fail(what, fresh) end
    if fresh then
      local ok, err = hello(self, sock)
      if not ok then
        self.io.release(self, sock, false)
        return nil, err
      end
    end
    local v, err, rerr, step = roundtrip(sock, args, n)
    if v ~= nil or rerr ~= nil then
      self.io.release(self, sock, true)
      if v == nil then return reply_error(self, rerr) end
      return v
    end
    self.io.release(self, sock, false) -- a half-read reply poisons the connection
    if fresh or err == "timeout" then return self:fail(tostring(args[1]) .. " " .. step, err) end
  end
  return self:fail("connect", "no live connection")
end

--- call(cmd, ...) -> reply | nil, err.  Replies: strings, integers,
-- arrays (tables), redis.null; an error inside an array is a ReplyError.
function M:call(...)
  return self:call_timeout(self.timeout, ...)
end

--- eval(script, numkeys, keys and args ...) -> reply | nil, err: EVALSHA of
-- the script, loaded once per client (and again after the server lost it)
function M:eval(script, ...)
  local shas = self.shas
  if not shas then
    shas = {}
    self.shas = shas
  end
  local sha = shas[script]
  if sha then
    local v, err = self:call("EVALSHA", sha, ...)
    if v ~= nil or err.code ~= "NOSCRIPT" then return v, err end
  end
  local loaded, err = self:call("SCRIPT", "LOAD", script)
  if not loaded then return nil, err end
  shas[script] = loaded
  return self:call("EVALSHA", loaded, ...)
end

--- close(): drops the kept connection (outside nginx; in nginx the pool keeps them)
function M:close()
  if self.sock then
    self.sock:close()
    self.sock = nil
  end
end

return M
