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
local core = require "kinot.core_loader"
local errors = require "kinot.errors"
local validate = require "kinot.validate"
local misuse = errors.misuse

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
-- (a second argument, once a hand-counted level, is ignored: kinot.errors finds the caller)
function M.parse(url)
  if type(url) ~= "string" then misuse("redis must be a redis:// URL string") end
  local rest = url:match("^redis://(.*)$")
  if not rest then misuse("redis URL must look like redis://[:password@]host:port/db (got " .. M.redact(url) .. ")") end
  local o = { port = 6379, db = 0 }
  local userinfo, hostpath = rest:match("^(.*)@([^@]*)$")
  if userinfo then
    local user, pass = userinfo:match("^([^:]*):(.*)$")
    if not user then misuse("redis URL's userinfo must be :password or user:password (" .. M.redact(url) .. ")") end
    o.username = user ~= "" and unescape(user) or nil
    o.password = unescape(pass)
  else
    hostpath = rest
  end
  local hostport, path = hostpath:match("^([^/]*)(.*)$")
  local host, port = hostport:match("^%[([^%]]+)%]:?(%d*)$")
  if not host then host, port = hostport:match("^([^:]+):?(%d*)$") end
  if not host or host == "" then misuse("redis URL has no host (" .. M.redact(url) .. ")") end
  o.host = host
  if port ~= "" then o.port = tonumber(port) end
  if o.port < 1 or o.port > 65535 then misuse("redis URL's port is out of range (" .. M.redact(url) .. ")") end
  if path ~= "" and path ~= "/" then
    local db = path:match("^/(%d+)$")
    if not db then misuse("redis URL's path must be a database number, /0 to /15 (" .. M.redact(url) .. ")") end
    o.db = tonumber(db)
  end
  return o
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
--   open(self, deadline) -> sock, fresh | nil, err, "connect"
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
  return sock, (sock:getreusedtimes() or 0) == 0
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
  return sock, true
end

-- the first byte waits (LuaSocket's own wait, bounded by what is left of
-- the deadline), the rest is what has already come, without waiting
function luasocket.some(sock, deadline, n)
  local l = left(deadline)
  if not l then return nil, "timeout" end
  sock:settimeout(l)
  local first, err = sock:receive(1)
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
  if not ok then return nil, err end
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

-- What a reply may be, whatever the server sends (a broken one, or not
-- Redis at all): arrays nested at most MAX_DEPTH deep (the SDK's deepest,
-- XAUTOCLAIM's, is 4; a reader that recursed without a bound ended in
-- "stack overflow"), lines (+, -, :, and the headers) of at most LINE_MAX
-- bytes, and at most `max_reply` bytes in all, each array element counted
-- as ELEMENT bytes beside its text (what it costs in memory): a declared
-- length past what is left is refused before anything is read.
local MAX_DEPTH, LINE_MAX, ELEMENT = 32, 64 * 1024, 16
M.MAX_DEPTH, M.LINE_MAX = MAX_DEPTH, LINE_MAX

-- the reply reader: a buffer over io.some, its deadline, its byte budget
local function reader(io, sock, deadline, max_reply)
  return { io = io, sock = sock, deadline = deadline, buf = "", pos = 1, budget = max_reply, max = max_reply }
end

-- reads more bytes into the buffer (at most n); true | nil, kind, message
local function fill(rd, n)
  local data, err = rd.io.some(rd.sock, rd.deadline, n or CHUNK)
  if not data then return nil, err == "timeout" and "timeout" or "network", err end
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
-- type, rest | nil, kind, message
local function line_of(rd)
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

-- read(rd, depth) -> value | nil, kind, message | nil, nil, redis_error_text
local function read(rd, depth)
  local p, rest, msg = line_of(rd)
  if not p then return nil, rest, msg end
  local kind
  if p == PLUS then return rest end
  if p == MINUS then return nil, nil, rest end
  if p == COLON then
    local v = tonumber(rest)
    if not v then return nil, "decode", "protocol error: bad integer" end
    return v
  end
  if p == DOLLAR then
    local n = length(rest)
    if not n then return nil, "decode", "protocol error: bad bulk length" end
    if n < 0 then return M.null end
    local ok
    ok, kind, msg = spend(rd, n + 2)
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
  if p == STAR then
    local n = length(rest)
    if not n then return nil, "decode", "protocol error: bad array length" end
    if n < 0 then return M.null end
    if depth >= MAX_DEPTH then
      return nil, "decode", "protocol error: a reply nested deeper than " .. MAX_DEPTH .. " arrays"
    end
    local ok
    ok, kind, msg = spend(rd, n * ELEMENT)
    if not ok then return nil, kind, msg end
    local arr = {}
    for i = 1, n do
      local v, k, m = read(rd, depth + 1)
      if v == nil then
        if k then return nil, k, m end
        v = setmetatable({ text = m }, ReplyError)
      end
      arr[i] = v
    end
    return arr
  end
  return nil, "decode", "protocol error: unexpected reply type " .. string.format("%q", p == 0 and "" or string.char(p))
end

-- ------------------------------------------------------------ client

local KNOWN = validate.set { "connect_timeout", "timeout", "keepalive", "pool_size", "max_reply" }

--- new(url, opts) -> client.  opts: connect_timeout (s, default 1),
-- timeout (s, one deadline for each whole call, default 2), keepalive (s,
-- idle time in nginx's pool, default 60), pool_size (default 32),
-- max_reply (bytes a reply may hold, default 64 MiB).
function M.new(url, opts)
  local o = M.parse(url)
  validate.options(opts, KNOWN, "redis.new")
  opts = opts or {}
  for k in pairs(KNOWN) do
    if opts[k] ~= nil and (type(opts[k]) ~= "number" or opts[k] ~= opts[k] or opts[k] <= 0 or opts[k] == math.huge) then
      misuse("redis option " .. k .. " must be a positive number")
    end
  end
  o.connect_ms = (opts.connect_timeout or 1) * 1000
  o.timeout = opts.timeout or 2
  o.keepalive_ms = (opts.keepalive or 60) * 1000
  o.pool_size = opts.pool_size or 32
  o.max_reply = floor(opts.max_reply or M.MAX_REPLY)
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

--- the default of max_reply: 64 MiB (Redis itself allows a bulk string of 512 MiB)
M.MAX_REPLY = 64 * 1024 * 1024

-- nil, err for a failure of the connection or of what the server sent;
-- kind: "timeout" and "network" (retryable), "decode", "too_large"
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
-- value | nil, kind, message, step | nil, nil, redis_error_text
local function roundtrip(self, sock, args, n, deadline)
  local ok, err = self.io.send(sock, encode(args, n), deadline)
  if not ok then return nil, err == "timeout" and "timeout" or "network", err, "send" end
  local v, kind, msg = read(reader(self.io, sock, deadline, self.max_reply), 0)
  return v, kind, msg, "read"
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

--- call_timeout(seconds, cmd, ...) -> reply | nil, err: as call, with this
-- deadline (for blocking commands: XREADGROUP ... BLOCK).  `seconds` bounds
-- the whole call: connecting, AUTH, SELECT, sending, reading.  A kept
-- connection found dead (the server restarted, or closed it idle) is
-- dropped and the command sent again on a fresh one, once: so a command
-- may run twice when a connection dies between the server's work and its
-- reply.  The SDK's commands are all safe to repeat (SET NX, XACK, the
-- inbox's script that dedupes before it appends).
function M:call_timeout(timeout, ...)
  local n = select("#", ...)
  if n == 0 then misuse("redis call needs a command") end
  local args = { ... }
  local deadline = now() + timeout
  for _ = 1, self.pool_size + 1 do
    local sock, fresh, what = self.io.open(self, deadline)
    if not sock then return self:fail(what, fresh, nil, timeout) end
    if fresh then
      local ok, err = hello(self, sock, deadline, timeout)
      if not ok then
        self.io.release(self, sock, false)
        return nil, err
      end
    end
    local v, kind, msg, step = roundtrip(self, sock, args, n, deadline)
    if v ~= nil or kind == nil then
      self.io.release(self, sock, true)
      if v == nil then return reply_error(self, msg) end
      return v
    end
    self.io.release(self, sock, false) -- a half-read reply poisons the connection
    -- only a kept connection found closed is worth another: a fresh one
    -- failing, the deadline passing or a reply not fit to read end the call
    if fresh or kind ~= "network" or not left(deadline) then
      return self:fail(tostring(args[1]) .. " " .. step, msg, kind, timeout)
    end
  end
  return self:fail("connect", "no live connection")
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
-- run some, all or none of them) ends the call with nil, err.
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
  for _ = 1, self.pool_size + 1 do
    local sock, fresh, what = self.io.open(self, deadline)
    if not sock then return self:fail(what, fresh, nil, timeout) end
    if fresh then
      local ok, err = hello(self, sock, deadline, timeout)
      if not ok then
        self.io.release(self, sock, false)
        return nil, err
      end
    end
    local ok, serr = self.io.send(sock, data, deadline)
    local kind, msg, step = nil, serr, "send"
    if ok then
      local rd = reader(self.io, sock, deadline, self.max_reply)
      local replies = {}
      for i = 1, n do
        local v, k, m = read(rd, 0)
        if v == nil then
          if k then
            kind, msg, step = k, m, "read"
            -- a reply already read means this connection was alive: the
            -- server ran at least the first command, so none goes again
            if i > 1 then fresh = true end
            break
          end
          local e = setmetatable({ text = m }, ReplyError)
          e.code = m:match("^(%u+)") or "ERR"
          v = e
        end
        replies[i] = v
      end
      if not kind then
        self.io.release(self, sock, true)
        return replies
      end
    else
      kind = serr == "timeout" and "timeout" or "network"
    end
    self.io.release(self, sock, false) -- a half-read reply poisons the connection
    if fresh or kind ~= "network" or not left(deadline) then
      return self:fail("pipeline of " .. n .. " (" .. tostring(cmds[1][1]) .. " ...) " .. step, msg, kind, timeout)
    end
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
