-- A raw HTTP/1.1 server on LuaSocket for spec/faults_spec.lua: the peer of
-- issue 11.  `lua5.4 closer.lua PORT` answers every GET with keep-alive;
-- it reads every POST whole and counts it on the wire, then, once, does what
-- it was told (GET /__mode/fin: close; /__mode/rst: reset), and after that
-- answers POSTs with a command, as a platform would to a replayed copy.
-- /__mode/stale: the next POST that comes on a connection which already
-- served a request is read, counted and never answered (a pooled
-- connection gone bad while idle); one on a new connection is answered.
-- /__mode/idle: every later GET is answered, then its connection closed
-- (without saying so: no "Connection: close"), as a server ends an idle
-- keep-alive connection.
-- /__mode/midbody: the next POST is counted once its head arrived, 100
-- bytes of its body are read, and its connection is reset (a warm
-- connection dying while the body is still being written).
-- GET /__count says how many POSTs arrived, on any connection.
local socket = require "socket"

local port = assert(tonumber(arg[1]), "usage: closer.lua PORT")
local srv = assert(socket.bind("127.0.0.1", port))
srv:settimeout(0)

local COMMAND = '{"code":0,"message":"OK","objects":[{"sn":419600001,"guid":"0123456789ABCDEF0123456789ABCDEF",' ..
  '"command":1,"command_status":"sending","parameter":{"key":"handle","value":1}}]}'
local EMPTY = '{"code":0,"message":"OK","objects":[]}'

local conns = {}
local served = {} -- requests answered on each connection
local posts, mode = 0, "answer"

local function answer(c, body)
  served[c] = (served[c] or 0) + 1
  c:send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
end

local function forget(c)
  for i, x in ipairs(conns) do
    if x == c then table.remove(conns, i) break end
  end
end

local zombies = {} -- luacheck: ignore (kept open: held here so that no collection closes them)
local function drop(c)
  forget(c)
  served[c] = nil
  c:close()
end

-- one whole request, or nil when the peer went away; `cut`: for a POST,
-- stop after the head and 100 bytes of the body (the caller resets)
local function read_request(c, cut)
  c:settimeout(2)
  local line = c:receive("*l")
  if not line then return nil end
  local method, target = line:match("^(%u+) (%S+)")
  local len = 0
  while true do
    local h = c:receive("*l")
    if not h then return nil end
    if h == "" then break end
    local n = h:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")
    if n then len = tonumber(n) end
  end
  if cut and method == "POST" then
    c:receive(math.min(len, 100))
    return method, target, true
  end
  if len > 0 and not c:receive(len) then return nil end
  return method, target
end

while true do
  local readable = socket.select({ srv, table.unpack(conns) }, nil, 1)
  for _, s in ipairs(readable) do
    if s == srv then
      local c = srv:accept()
      if c then conns[#conns + 1] = c end
    else
      local method, target, cut = read_request(s, mode == "midbody")
      if not method then
        drop(s)
      elseif method == "POST" then
        posts = posts + 1
        if cut then
          mode = "answer"
          s:setoption("linger", { on = true, timeout = 0 })
          drop(s)
        elseif mode == "fin" then
          mode = "answer"
          drop(s)
        elseif mode == "stale" and (served[s] or 0) > 0 then
          mode = "answer"
          forget(s)
          zombies[#zombies + 1] = s
        elseif mode == "rst" then
          mode = "answer"
          s:setoption("linger", { on = true, timeout = 0 })
          drop(s)
        else
          answer(s, COMMAND)
        end
      elseif target == "/__count" then
        answer(s, '{"posts":' .. posts .. "}")
      elseif target:match("^/__mode/") then
        mode = target:match("^/__mode/(%a+)")
        answer(s, '{"mode":"' .. mode .. '"}')
      else
        answer(s, EMPTY)
        if mode == "idle" then drop(s) end
      end
    end
  end
end
