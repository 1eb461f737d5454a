-- Redis behind Sentinel, for kinot.redis: the URL form, and where the
-- master is now.
--
--   redis+sentinel://[[user]:password@]host:port[,host:port...]/mastername[/db][?sentinel_password=...]
--
-- The userinfo is the MASTER's (as in redis://: AUTH after connecting to
-- whichever server is master); the Sentinels' own password, when they
-- have one (`requirepass` in sentinel.conf), is the query parameter
-- `sentinel_password` (and `sentinel_username` for an ACL user), percent-
-- escaped like the userinfo.  Hosts are the Sentinels (port 26379 when
-- left out); db is the database on the master (0 by default).
--
-- Finding the master: the Sentinels are asked in turn (`SENTINEL
-- get-master-addr-by-name`); the first address that a server confirms
-- with `ROLE` ("master": a Sentinel that has not yet seen a failover may
-- name a demoted one) is kept for TTL seconds, per process (per nginx
-- worker: every request does not ask a Sentinel), and forgotten at once
-- when the client meets a sign of a failover (kinot.redis: a refused
-- connection, READONLY, MASTERDOWN, a connection lost).
local errors = require "kinot.errors"
local misuse = errors.misuse

local M = {}

--- seconds a master found is used before the Sentinels are asked again
M.TTL = 1
M.PORT = 26379

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- The parts every Redis URL shares (redis://, rediss://, redis+sentinel://),
-- read here once: kinot.redis's parse uses them too.

--- credentials(rest, o, shown) -> rest after its userinfo; o.username and
-- o.password set from it (percent-decoded).  The userinfo runs to the last
-- @: a password may hold an unescaped @ or /.  shown: the URL redacted, for
-- the misuse message
function M.credentials(rest, o, shown)
  local userinfo, hostpath = rest:match("^(.*)@([^@]*)$")
  if not userinfo then return rest end
  local user, pass = userinfo:match("^([^:]*):(.*)$")
  if not user then misuse("redis URL's userinfo must be :password or user:password (" .. shown .. ")") end
  o.username = user ~= "" and unescape(user) or nil
  o.password = unescape(pass)
  return hostpath
end

--- address(hostport) -> host, port ("" when not given) | nil: "host:port",
-- "host", "[v6]:port", "[v6]"
function M.address(hostport)
  local host, port = hostport:match("^%[([^%]]+)%]:?(%d*)$")
  if not host then host, port = hostport:match("^([^:]+):?(%d*)$") end
  return host, port
end

local QUERY = { sentinel_password = true, sentinel_username = true }

--- parse(url, redact) -> { sentinel = { sentinels = {{host, port}...}, master, username, password, key },
--   db, username, password } (the master's credentials); misuse raises, never showing a password
function M.parse(url, redact)
  local shown = redact(url)
  local form = "redis+sentinel://[:password@]host:port[,host:port...]/mastername/db"
  local rest = url:match("^redis%+sentinel://(.*)$")
  if not rest then misuse("redis Sentinel URL must look like " .. form .. " (got " .. shown .. ")") end
  local query
  rest, query = rest:match("^([^?]*)%??(.*)$")
  local s = { sentinels = {} }
  local o = { db = 0, sentinel = s }
  if query ~= "" then
    for pair in query:gmatch("[^&]+") do
      local k, v = pair:match("^([^=]+)=(.*)$")
      if not k or not QUERY[k] then
        misuse("redis Sentinel URL's query takes sentinel_password= and sentinel_username= only (" .. shown .. ")")
      end
      s[k:sub(10)] = unescape(v) -- password, username
    end
  end
  local hostpath = M.credentials(rest, o, shown)
  local hosts, path = hostpath:match("^([^/]*)(.*)$")
  for hostport in (hosts .. ","):gmatch("([^,]*),") do
    local host, port = M.address(hostport)
    if not host or host == "" then misuse("redis Sentinel URL has an empty or bad Sentinel address (" .. shown .. ")") end
    port = port ~= "" and tonumber(port) or M.PORT
    if port < 1 or port > 65535 then misuse("redis Sentinel URL's port is out of range (" .. shown .. ")") end
    s.sentinels[#s.sentinels + 1] = { host = host, port = port }
  end
  local name, db = path:match("^/([^/]+)/?(%d*)$")
  if not name then
    misuse("redis Sentinel URL must name the master after the Sentinels: " .. form .. " (" .. shown .. ")")
  end
  s.master = unescape(name)
  if db ~= "" then o.db = tonumber(db) end
  -- one cache entry per Sentinel set and master (db and credentials do not change where the master is)
  local key = { s.master }
  for _, a in ipairs(s.sentinels) do key[#key + 1] = a.host .. ":" .. a.port end
  s.key = table.concat(key, " ")
  return o
end

-- key -> { host, port, until }: this process's (this nginx worker's) masters
local found = {}

local clock = require("kinot.core_loader").monotonic

--- known(s) -> host, port | nil: the master found less than TTL seconds ago
function M.known(s)
  local f = found[s.key]
  if f and clock() < f.expires then return f.host, f.port end
end

--- forget(s): the next call asks the Sentinels again (a sign of a failover)
function M.forget(s)
  found[s.key] = nil
end

local function remember(s, host, port)
  found[s.key] = { host = host, port = port, expires = clock() + M.TTL }
end

-- a client for each Sentinel, made once per master client
local function sentinel_clients(s, client_of)
  if not s.clients then
    s.clients = {}
    for i, a in ipairs(s.sentinels) do
      s.clients[i] = client_of { host = a.host, port = a.port, db = 0, username = s.username, password = s.password }
    end
  end
  return s.clients
end

-- the error, when it is a server refusing the credentials given
local REFUSED = { WRONGPASS = true, NOAUTH = true, NOPERM = true }
local function credentials_refused(err)
  if type(err) == "table" and err.kind == "redis" and REFUSED[err.code] then return err end
end

--- find(s, deadline, per, client_of, confirm) -> host, port | nil, err | nil (no time left to ask).
-- client_of(parts) -> a kinot.redis client; confirm(host, port, deadline)
-- -> true | nil, err (ROLE on the address says "master").  The
-- Sentinels are asked in turn, each within at most `per` seconds of what
-- is left (and the address it names confirmed within `per` more); the
-- first confirmed address is remembered, and the Sentinel that named it is
-- asked first from then on.  None found: the error of a password refused
-- (kind "redis", WRONGPASS ..., not retryable) if one was, else "network".
function M.find(s, deadline, per, client_of, confirm)
  local why, refused = {}, nil
  local clients = sentinel_clients(s, client_of)
  -- (a copy: inside nginx another request may reorder them meanwhile)
  local order = {}
  for i, c in ipairs(clients) do order[i] = c end
  for _, c in ipairs(order) do
    local left = deadline - clock()
    if left <= 0 then break end
    local v, err = c:call_timeout(math.min(left, per), "SENTINEL", "get-master-addr-by-name", s.master)
    local host, port
    if type(v) == "table" and type(v[1]) == "string" and v[1] ~= "" then host, port = v[1], tonumber(v[2]) end
    if port and port >= 1 and port <= 65535 and port == math.floor(port) then
      -- (ROLE gets `per` too: a hung server there, the old master a
      -- Sentinel has not yet seen fail over, once held the whole call)
      local ok, cerr = confirm(host, port, math.min(deadline, clock() + per))
      if type(cerr) == "table" and cerr.kind == "interrupted" then return nil, cerr end -- (Ctrl-C: not asked further)
      refused = refused or credentials_refused(cerr)
      if ok then
        remember(s, host, port)
        -- the one that answered is asked first next time (as Redis's
        -- guidelines for Sentinel clients say): a Sentinel down in a way
        -- that costs time (it never answers, its packets are dropped) once
        -- cost `per` seconds on every lookup, once a second
        for i = 2, #clients do
          if clients[i] == c then table.insert(clients, 1, table.remove(clients, i)) break end
        end
        return host, port
      end
      why[#why + 1] = c.where .. " named " .. host .. ":" .. tostring(port) .. ", " .. tostring(cerr and cerr.message or cerr)
    elseif v == require("kinot.redis").null then
      why[#why + 1] = c.where .. " knows no master of that name"
    elseif v ~= nil then
      why[#why + 1] = c.where .. " answered no address"
    else
      if err.kind == "interrupted" then return nil, err end
      why[#why + 1] = tostring(err.message)
      refused = refused or credentials_refused(err)
    end
  end
  if #why == 0 then return nil end -- the deadline passed before any was asked
  -- a password refused (the master's, or the Sentinels'): the caller's
  -- error, as with redis://, not the network's; asking again will not help
  if refused then return nil, refused end
  return nil, errors.new("network", "redis Sentinel: no master " .. s.master .. " found (" .. table.concat(why, "; ") .. ")",
                         { retryable = true })
end

return M
