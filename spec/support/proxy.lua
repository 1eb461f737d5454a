-- A forward HTTP proxy for the specs (run as its own process):
--   lua5.4 spec/support/proxy.lua PORT LOG
-- listens on 127.0.0.1:PORT; takes absolute-form requests
-- ("GET http://host:port/path") and CONNECT tunnels; writes one line per
-- client connection to LOG: its request line, then " auth=<value>" when
-- it carried Proxy-Authorization.  After the first request of a
-- connection it relays bytes both ways as they come (nginx upstreams take
-- absolute-form requests themselves).  It exists because the real thing
-- (a corporate proxy) is out of reach here; it is small on purpose.
local socket = require "socket"

local port, logfile = tonumber(arg[1]), arg[2]
local server = assert(socket.bind("127.0.0.1", port))
server:settimeout(0)

local peer, pending = {}, {} -- socket -> its other end; client -> head read so far
local function log(line)
  local f = assert(io.open(logfile, "a"))
  f:write(line, "\n")
  f:close()
end

local function drop(s)
  local other = peer[s]
  peer[s], pending[s] = nil, nil
  s:close()
  if other then
    peer[other] = nil
    other:close()
  end
end

-- the head of a new client connection is complete: open the upstream
local function open(client, head)
  local line = head:match("^[^\r\n]*")
  local auth = head:match("\r\n[Pp]roxy%-[Aa]uthorization:%s*([^\r\n]*)")
  log(line .. (auth and (" auth=" .. auth) or ""))
  local method, target = line:match("^(%S+)%s+(%S+)")
  local host, hport = (method == "CONNECT" and target or (target or ""):match("^http://([^/]+)") or ""):match("^([^:]+):?(%d*)$")
  local up = host and socket.connect(host, tonumber(hport) or 80)
  if not up then
    client:send("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    return drop(client)
  end
  up:settimeout(0)
  peer[client], peer[up] = up, client
  if method == "CONNECT" then
    client:send("HTTP/1.1 200 Connection established\r\n\r\n")
    local rest = head:match("\r\n\r\n(.*)$")
    if rest ~= "" then up:send(rest) end
  else
    up:send(head)
  end
end

while true do
  local watch = { server }
  for s in pairs(peer) do watch[#watch + 1] = s end
  for s in pairs(pending) do watch[#watch + 1] = s end
  local ready = socket.select(watch, nil, 1)
  for _, s in ipairs(ready) do
    if s == server then
      local c = server:accept()
      if c then
        c:settimeout(0)
        pending[c] = ""
      end
    else
      local data, err, partial = s:receive(65536)
      data = data or partial
      if data and #data > 0 then
        if pending[s] then
          local head = pending[s] .. data
          if head:find("\r\n\r\n", 1, true) then
            pending[s] = nil
            open(s, head)
          else
            pending[s] = head
          end
        elseif peer[s] then
          peer[s]:settimeout(5)
          peer[s]:send(data)
          peer[s]:settimeout(0)
        end
      end
      if err == "closed" then drop(s) end
    end
  end
end
