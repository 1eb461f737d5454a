-- examples/openresty as a new user runs it: a fresh copy of the directory
-- (what git tracks), then the ```sh blocks of its README, verbatim, in the
-- copy.  One adaptation, because a test may not take a fixed port that other
-- servers on this machine use: 8080 becomes a free port, in nginx.conf and in
-- the commands alike (the spec first checks the README and nginx.conf say
-- 127.0.0.1:8080).  The checkout's modules reach nginx's LuaJIT through
-- LUA_PATH/LUA_CPATH, as the README says for a checkout.
local H = require "helpers"
local launcher = require "kinot.sim.launcher"

local function sh(cmd)
  local p = io.popen("(" .. cmd .. "\n) 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  return tonumber(out:match("rc=(%d+)%s*$")) == 0, out
end

local read = H.read

local write = H.write

--- the ```sh blocks of a markdown text, in order
local function sh_blocks(md)
  local blocks = {}
  for body in md:gmatch("\n```sh\n(.-)\n```") do blocks[#blocks + 1] = body end
  return blocks
end

-- an address of this machine other than loopback, or nil
local function other_address()
  local p = io.popen("hostname -I 2>/dev/null")
  local all = p:read("*a") or ""
  p:close()
  for a in all:gmatch("%S+") do
    if a:match("^%d+%.%d+%.%d+%.%d+$") and not a:match("^127%.") then return a end
  end
end

local function answers(host, port)
  local socket = require "socket"
  local c = socket.tcp()
  c:settimeout(1)
  local ok = c:connect(host, port)
  c:close()
  return ok ~= nil
end

describe("examples/openresty from a fresh copy, its README verbatim #nginx", function()
  it("starts with the README's commands, answers on 127.0.0.1 only, and stops with them", function()
    local p = io.popen("mktemp -d /tmp/kinot-example.XXXXXX")
    local dir = p:read("*l")
    p:close()
    local port = launcher.free_port()
    local copy = dir .. "/receiver"
    local stop_cmd
    finally(function()
      if stop_cmd then sh("cd " .. copy .. " && " .. stop_cmd) end
      -- whatever the README's stop did, the nginx this test started goes
      local pid = read(copy .. "/logs/nginx.pid")
      if pid and pid:match("^%d+") then os.execute("kill " .. pid:match("^%d+") .. " 2>/dev/null; sleep 0.2") end
      os.execute("rm -rf " .. dir)
    end)
    -- a fresh copy: the tracked files of examples/openresty only
    assert(sh("cd " .. H.root .. " && mkdir -p " .. dir .. " && git ls-files -z examples/openresty | " ..
      "xargs -0 cp --parents -t " .. dir .. " && mv " .. dir .. "/examples/openresty " .. copy))
    local readme = assert(read(copy .. "/README.md"), "examples/openresty has no README.md")
    local blocks = sh_blocks(readme)
    assert.are.equal(2, #blocks, "the README's ```sh blocks: run it, then stop it")
    local conf = read(copy .. "/nginx.conf")
    assert.truthy(conf:find("\n%s*listen 127%.0%.0%.1:8080;"), "nginx.conf listens on 127.0.0.1:8080 only")
    assert.truthy(blocks[1]:find("127.0.0.1:8080", 1, true))
    write(copy .. "/nginx.conf", (conf:gsub("127%.0%.0%.1:8080", "127.0.0.1:" .. port)))
    local function adapt(cmds) return (cmds:gsub("127%.0%.0%.1:8080", "127.0.0.1:" .. port)) end
    stop_cmd = adapt(blocks[2])

    local env = "export LUA_PATH='" .. H.root .. "/lua/?.lua;" .. H.root .. "/lua/?/init.lua;;' " ..
      "LUA_CPATH='" .. H.root .. "/build/5.1/?.so;;' KINOT_ENDPOINT=http://127.0.0.1:9 KINOT_POLL_SECONDS=600; "
    local ok, out = sh("cd " .. copy .. " && " .. env .. "set -e; " .. adapt(blocks[1]))
    assert(ok, out)
    assert.matches('"devices":0', out) -- the README's curl of /stats printed the counts
    assert.is_true(answers("127.0.0.1", port))
    -- every listening socket on the port is 127.0.0.1's (ss, iproute2: `make deps`) ...
    local ss = io.popen("ss -Hltn 'sport = :" .. port .. "'")
    local listeners = ss:read("*a")
    ss:close()
    local n = 0
    for addr in listeners:gmatch("%S+%s+%d+%s+%d+%s+(%S+):" .. port) do
      n = n + 1
      assert.are.equal("127.0.0.1", addr)
    end
    assert.is_true(n >= 1, listeners)
    -- ... and a connection to another address of this machine is refused
    local other = other_address()
    if other then
      assert.is_false(answers(other, port), "nginx answers on " .. other .. ":" .. port)
    end
    assert.truthy(read(copy .. "/logs/error.log"), "the log is in logs/")

    ok, out = sh("cd " .. copy .. " && " .. stop_cmd)
    assert(ok, out)
    assert.truthy(H.wait_for(function() return not answers("127.0.0.1", port) end, 5), "nginx stopped")
  end)
end)
