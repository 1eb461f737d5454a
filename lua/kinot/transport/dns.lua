-- Name resolution for the resty transport, under the request's deadline.
--
-- Why not nginx's own resolver (tcpsock:connect with a hostname)?  It runs
-- under `resolver_timeout` (30 s by default, retried), outside every
-- cosocket timeout, and a resolution abandoned by Lua keeps a timer that
-- holds `nginx -s quit` until it expires.  Here a query is one UDP
-- cosocket whose every receive is bounded by the time the request has left;
-- when the deadline passes the socket is closed and nothing is left behind.
--
-- Where the answers come from, in order:
--   * a numeric address (IPv4, or IPv6 in the URL's brackets) needs none;
--   * /etc/hosts, read once per worker (so "localhost" works as elsewhere);
--   * the `resolver` option ({"ip[:port]", ...}), else the `nameserver`
--     lines of /etc/resolv.conf, read once per worker.
-- A records only (IPv4), as the example's `ipv6=off` had it; answers are
-- kept per worker for their TTL (at most 5 minutes); failures are not kept.
local misuse = require("kinot.errors").misuse
local M = {}

local ngx = ngx -- luacheck: ignore (only present inside nginx)
local byte, char, sub, find, floor = string.byte, string.char, string.sub, string.find, math.floor

local CACHE_MAX, TTL_MAX = 512, 300

local cache, ncache = {}, 0
local hosts_file, resolv_servers -- read once per worker

local function now()
  ngx.update_time()
  return ngx.now()
end

local read_file = require("kinot.file").read

local function is_ipv4(s)
  return s:match("^%d+%.%d+%.%d+%.%d+$") ~= nil
end

-- /etc/hosts: name (lower case) -> first IPv4 address
local function hosts()
  if hosts_file then return hosts_file end
  hosts_file = {}
  for line in (read_file(M.hosts_path) or ""):gmatch("[^\n]+") do
    line = line:gsub("#.*", "")
    local addr, names = line:match("^%s*(%S+)%s+(.+)$")
    if addr and is_ipv4(addr) then
      for name in names:gmatch("%S+") do
        name = name:lower()
        if not hosts_file[name] then hosts_file[name] = addr end
      end
    end
  end
  return hosts_file
end

-- "ip", "ip:port" or "[v6]:port" -> {ip, port}
local function server(s)
  local ip, port = s:match("^%[(.+)%]:?(%d*)$")
  if not ip then ip, port = s:match("^([^:]+):?(%d*)$") end
  if not ip and s:find(":", 1, true) then ip, port = s, "" end -- a bare IPv6 address
  if not ip then return nil end
  return { ip, tonumber(port) or 53 }
end

local function system_servers()
  if resolv_servers then return resolv_servers end
  resolv_servers = {}
  for ip in (read_file(M.resolv_path) or ""):gmatch("%f[^\n%z]%s*nameserver%s+([^%s#;]+)") do
    resolv_servers[#resolv_servers + 1] = server(ip)
  end
  return resolv_servers
end

--- servers(list|nil) -> the nameservers to ask; raises on a malformed list
function M.servers(list)
  if list == nil then return nil end
  if type(list) == "string" then list = { list } end
  if type(list) ~= "table" or #list == 0 then
    misuse("resolver must be a list of \"ip[:port]\" nameservers")
  end
  local out = {}
  for i, s in ipairs(list) do
    out[i] = type(s) == "string" and server(s)
    if not out[i] then misuse("resolver[" .. i .. "] is not \"ip[:port]\" (got " .. tostring(s) .. ")") end
  end
  return out
end

local function u16(n) return char(floor(n / 256) % 256, n % 256) end

-- the question: name, type A, class IN
local function question(name)
  local q = {}
  for label in name:gmatch("[^.]+") do q[#q + 1] = char(#label) .. label end
  q[#q + 1] = "\0\0\1\0\1"
  return table.concat(q)
end

-- a query id nobody off the path can guess: from the kernel's random
-- source (read only when the cache misses), the clock if that fails
local function random_id()
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(2)
  if f then f:close() end
  if b and #b == 2 then return byte(b, 1) * 256 + byte(b, 2) end
  return floor((now() * 1000003) % 65536)
end

-- the position after the (possibly compressed) name at pos, or nil
local function skip_name(s, pos)
  while true do
    local n = byte(s, pos)
    if not n then return nil end
    if n == 0 then return pos + 1 end
    if n >= 192 then return pos + 2 end
    pos = pos + n + 1
  end
end

local function get16(s, pos)
  local a, b = byte(s, pos, pos + 1)
  return a * 256 + b
end

-- answer -> addrs, ttl | nil, reason (nil, nil: not ours, keep waiting)
local function parse(s, id, q)
  if #s < 12 + #q or get16(s, 1) ~= id or byte(s, 3) < 128 then return nil end
  if get16(s, 5) ~= 1 or sub(s, 13, 12 + #q):lower() ~= q then return nil end -- not our question
  local rcode = byte(s, 4) % 16
  if rcode == 3 then return nil, "no such name" end
  if rcode ~= 0 then return nil, "the nameserver answered with error " .. rcode end
  local qd, an = get16(s, 5), get16(s, 7)
  local pos = 13
  for _ = 1, qd do
    pos = skip_name(s, pos)
    if not pos then return nil, "malformed answer" end
    pos = pos + 4
  end
  local addrs, ttl = {}, TTL_MAX
  for _ = 1, an do
    pos = skip_name(s, pos)
    if not pos or pos + 10 > #s + 1 then return nil, "malformed answer" end
    local rtype, rclass, rttl = get16(s, pos), get16(s, pos + 2), get16(s, pos + 4) * 65536 + get16(s, pos + 6)
    local len = get16(s, pos + 8)
    pos = pos + 10
    if rtype == 1 and rclass == 1 and len == 4 and pos + 3 <= #s then
      addrs[#addrs + 1] = table.concat({ byte(s, pos, pos + 3) }, ".")
      if rttl < ttl then ttl = rttl end
    end
    pos = pos + len
  end
  if #addrs == 0 then return nil, "no IPv4 address (A record)" end
  return addrs, ttl
end

-- one exchange with one nameserver, bounded by ms;
-- addrs, ttl | nil, "timeout" | nil, reason
local function ask(srv, name, ms, deadline)
  local u = ngx.socket.udp()
  local ok, err = u:setpeername(srv[1], srv[2])
  if not ok then return nil, err end
  local id, q = random_id(), question(name)
  ok, err = u:send(u16(id) .. "\1\0\0\1\0\0\0\0\0\0" .. q) -- recursion desired, one question
  if not ok then
    u:close()
    return nil, err
  end
  local stop = math.min(deadline, now() + ms / 1000)
  while true do
    local left = floor((stop - now()) * 1000)
    if left <= 0 then
      u:close()
      return nil, "timeout"
    end
    u:settimeout(left)
    local data
    data, err = u:receive()
    if not data then
      u:close()
      return nil, err
    end
    local addrs, ttl = parse(data, id, q)
    if addrs or ttl then -- ttl is the reason here
      u:close()
      return addrs, ttl
    end -- someone else's answer: keep waiting for ours
  end
end

--- resolve(host, servers|nil, deadline) -> address | nil, kind, message
-- kind is "timeout" when the deadline passed, "network" otherwise; either
-- way nothing was sent to the host
function M.resolve(host, servers, deadline)
  if is_ipv4(host) or find(host, ":", 1, true) then return host end
  local name = host:lower():gsub("%.$", "")
  local fixed = hosts()[name]
  if fixed then return fixed end
  local hit = cache[name]
  local t = now()
  if hit and hit.expires > t then return hit.addrs[1] end
  if #name > 253 or find(name, "[^%w.-]") or find(name, "%.%.") or find(name, "[^.]" .. ("[^.]"):rep(63)) then
    return nil, "network", "cannot resolve " .. host .. ": not a host name"
  end
  servers = servers or system_servers()
  if #servers == 0 then
    return nil, "network", "cannot resolve " .. host .. ": no nameserver (set the resolver option, " ..
      "or a nameserver line in " .. M.resolv_path .. ")"
  end
  local why
  local round = 0
  while true do
    round = round + 1
    local silent = false
    for _, srv in ipairs(servers) do
      local left = floor((deadline - now()) * 1000)
      if left <= 0 then
        return nil, "timeout", "resolving " .. host .. ": no answer before the deadline (" ..
          (why and ("last: " .. why) or "nameservers silent") .. ")"
      end
      -- a silent nameserver gets a slice, then the next one is asked;
      -- slices grow each round (1 s, 2 s, 4 s ...) as glibc's do
      local addrs, ttl = ask(srv, name, 1000 * 2 ^ (round - 1), deadline)
      if addrs then
        if ncache >= CACHE_MAX then cache, ncache = {}, 0 end
        if not cache[name] then ncache = ncache + 1 end
        cache[name] = { addrs = addrs, expires = now() + math.min(ttl, TTL_MAX) }
        return addrs[1]
      end
      if ttl == "timeout" then
        silent = true
      else
        why = srv[1] .. ": " .. tostring(ttl)
        if ttl == "no such name" then return nil, "network", "cannot resolve " .. host .. ": no such name" end
      end
    end
    -- every nameserver refused or failed outright: asking again is no use
    if not silent then return nil, "network", "cannot resolve " .. host .. " (" .. why .. ")" end
  end
end

M.hosts_path = "/etc/hosts"
M.resolv_path = "/etc/resolv.conf"

-- for specs: forget what was read and resolved
function M.reset()
  cache, ncache, hosts_file, resolv_servers = {}, 0, nil, nil
end

return M
