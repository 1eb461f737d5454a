-- The worlds of the fault matrix's other rows (spec/faults_spec.lua, "the
-- rest of the matrix"): each row names what breaks (a secret rotated on
-- the platform, a key revoked, the server stopped, an address that stops
-- accepting, a certificate replaced, a proxy stopped, the https endpoint
-- behind a proxy gone).  A fresh client is made once the world is broken;
-- a warm one made its first call while all was well (so its keep-alive
-- connection, or its tunnel, is warm), and then the world breaks.  Every
-- server listens on 127.0.0.1 on a free port and is stopped by cleanup().
local socket = require "socket"
local H = require "helpers"

local M = {}

local sh = H.execute

--- certs() -> dir holding a.pem/a.key and b.pem/b.key: two self-signed
-- certificates for "localhost" (the resty transport checks a name, not an
-- IP address); a trusts the first, never the second
function M.certs()
  local dir = H.tmpdir("worlds")
  for _, n in ipairs { "a", "b" } do H.self_signed(dir, n, { cn = "localhost", san = "DNS:localhost", key = "rsa" }) end
  return dir
end

-- an https nginx in front of the simulator, serving certificate a
local function front(sim, certs)
  local dir = H.tmpdir("front")
  assert(sh("cp " .. certs .. "/a.pem " .. dir .. "/cert.pem && cp " .. certs .. "/a.key " .. dir .. "/key.pem"))
  local ng = H.nginx {
    ssl = true,
    server = "ssl_certificate " .. dir .. "/cert.pem; ssl_certificate_key " .. dir .. "/key.pem;\n" ..
             "location / { proxy_pass http://127.0.0.1:" .. sim.port .. "; }",
  }
  ng.dir = dir
  return ng
end

-- the front now serves certificate b (nginx -s reload: the old worker
-- closes its idle keep-alive connections), once the new worker answers
local function swap_certificate(ng, certs)
  assert(sh("cp " .. certs .. "/b.pem " .. ng.dir .. "/cert.pem && cp " .. certs .. "/b.key " .. ng.dir .. "/key.pem"))
  assert(sh("nginx -p " .. ng.prefix .. " -c nginx.conf -e " .. ng.prefix .. "/error.log -s reload"))
  local core = require "kinot.core"
  assert(H.wait_for(function()
    local h = core.http()
    local res = h:request { url = "https://localhost:" .. ng.port .. "/", ca_file = certs .. "/b.pem", timeout = 2 }
    h:close()
    return res ~= nil
  end, 10), "the front never served the new certificate")
  -- and the old worker has gone: the warm connection is closed, not still
  -- served with the old certificate (seen: a GET rode it and succeeded)
  local master = io.open(ng.prefix .. "/nginx.pid"):read("*l")
  assert(H.wait_for(function()
    local p = io.popen("ps --ppid " .. master .. " --no-headers | wc -l")
    local n = tonumber(p:read("*l"))
    p:close()
    return n == 1
  end, 10), "the old nginx worker never exited")
end

-- the port stops accepting: a listener on it whose accept queue is full
local function never_accepting(port, w)
  w.cleanups[#w.cleanups + 1] = H.never_accepting(port).stop
end

--- world(row, shared) -> w = { sim, opts (client options), pool (the resty
-- pool of a shared endpoint, to empty for a fresh client), breaks(),
-- counted (the simulator still counts), cleanup() }
-- row.world: nil (the shared simulator), "own" (a simulator of its own,
-- to stop), "tls" (https through a front), "proxy" (through a proxy),
-- "proxy+tls" (https through a proxy's CONNECT tunnel)
function M.world(row, shared, certs)
  local w = { cleanups = {}, counted = true }
  local kind = row.world
  if kind == "own" then
    w.sim = H.sim { command_pace = 5 }
    w.sim.port = tonumber(w.sim.endpoint:match(":(%d+)/"))
    w.cleanups[#w.cleanups + 1] = function() w.sim.stop() end
    w.counted = false -- the simulator is stopped: nothing can arrive
  else
    w.sim = shared
    w.pool = "http://127.0.0.1:" .. shared.port
  end
  w.opts = { app_key = w.sim.app_key, app_secret = w.sim.app_secret, endpoint = w.sim.endpoint, retries = 2,
             timeout = 2, connect_timeout = 0.3, backoff = { base = 0.01, max = 0.05 } }
  if kind == "tls" or kind == "proxy+tls" then
    local ng = front(w.sim, certs)
    w.front = ng
    w.cleanups[#w.cleanups + 1] = function()
      ng.stop()
      sh("rm -rf " .. ng.dir)
    end
    w.opts.endpoint = "https://localhost:" .. ng.port .. "/open/lora/v1"
    w.ca_file = certs .. "/a.pem" -- curl's; the resty transport trusts it through lua_ssl_trusted_certificate
    w.pool = nil
  end
  if kind == "proxy" or kind == "proxy+tls" then
    local px = H.proxy()
    w.px = px
    w.cleanups[#w.cleanups + 1] = function() px.stop() end
    w.opts.proxy = px.url
    w.pool = nil
  end
  function w.breaks()
    local b = row.breaks
    if b == "secret" then
      w.sim.call("POST", "/config", { app_secret = "rotated-on-the-platform" })
    elseif b == "key" then
      w.sim.call("POST", "/config", { app_key = "revoked-on-the-platform" })
    elseif b == "clock" then
      w.sim.call("POST", "/config", { clock_offset_ms = -20 * 60 * 1000 })
    elseif b == "stop" then
      w.sim.stop()
    elseif b == "stop+silence" then
      w.sim.stop()
      never_accepting(w.sim.port, w)
    elseif b == "certificate" then
      swap_certificate(w.front, certs)
    elseif b == "proxy" then
      w.px.stop()
      -- (kill returns at once: wait until the proxy is gone, so the warm
      -- connection is closed before the call, not during it)
      assert(H.wait_for(function()
        local s = socket.tcp4()
        s:settimeout(1)
        local up = s:connect("127.0.0.1", w.px.port)
        s:close()
        return not up
      end, 5), "the proxy never stopped")
      socket.sleep(0.1)
    elseif b == "front" then
      w.front.stop()
    end
  end
  function w.cleanup()
    for i = #w.cleanups, 1, -1 do pcall(w.cleanups[i]) end
  end
  return w
end

return M
