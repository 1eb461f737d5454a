-- The launcher's wait for a stopped nginx: a daemon's master, once it has
-- exited, is a zombie until its parent (init, or whatever reaps orphans)
-- collects it, and some inits reap only every second or two.  The zombie
-- holds nothing (its sockets are closed), so it counts as gone; `kill -0`
-- alone would call it running, and every stop would wait for the reaper.
local H = require "helpers"
local launcher = require "kinot.sim.launcher"

describe("launcher: is a process still running #unit", function()
  it("a zombie (exited, not yet reaped) is not running; a live process is", function()
    -- a child exits soon; its parent has become sleep, which never reaps it
    local p = io.popen("sh -c 'sleep 0.2 & echo $!; echo $$; exec sleep 5' & ")
    local zombie, parent = tonumber(p:read("*l")), tonumber(p:read("*l"))
    finally(function()
      os.execute("kill " .. parent .. " 2>/dev/null")
      p:close()
    end)
    -- (until the child has exited: a moment)
    local st
    for _ = 1, 100 do
      local f = io.open("/proc/" .. zombie .. "/stat")
      st = f and f:read("*a"):match("^%d+ %b() (%a)")
      if f then f:close() end
      if st == "Z" then break end
      os.execute("sleep 0.02")
    end
    assert.are.equal("Z", st)
    local r = os.execute("kill -0 " .. zombie .. " 2>/dev/null")
    assert.is_true(r == true or r == 0, "kill -0 should still see the zombie")
    assert.is_false(launcher.alive(zombie))
    assert.is_true(launcher.alive(parent))
  end)

  it("a process that is gone is not running", function()
    local p = io.popen("sh -c 'echo $$'")
    local pid = tonumber(p:read("*l"))
    p:close()
    assert.is_false(launcher.alive(pid))
  end)
end)

-- launcher.nginx_conf: the one nginx.conf preamble of the servers the
-- launcher starts (the simulator, `kinot serve`), the caller's part inside
describe("launcher: the nginx.conf it writes #unit", function()
  local parts = { root = "/r/lua", cpath = "/r/build/5.1", mods = "/m", nginx = "/usr/sbin/nginx" }

  it("the shared part: the module, the pid, the logs and the temp files in the prefix, the Lua paths", function()
    local conf = launcher.nginx_conf(parts, { prefix = "/p", workers = 3, log_level = "notice" },
      "  server { listen 127.0.0.1:1; }\n")
    assert.truthy(conf:find("load_module /m/ngx_http_lua_module.so;", 1, true))
    assert.truthy(conf:find("worker_processes 3;", 1, true))
    assert.truthy(conf:find("pid /p/nginx.pid;", 1, true))
    assert.truthy(conf:find("error_log /p/error.log notice;", 1, true))
    assert.truthy(conf:find('lua_package_path "/r/lua/?.lua;/r/lua/?/init.lua;;";', 1, true))
    assert.truthy(conf:find('lua_package_cpath "/r/build/5.1/?.so;;";', 1, true))
    for _, temp in ipairs { "client_body", "proxy", "fastcgi", "uwsgi", "scgi" } do
      assert.truthy(conf:find(temp .. "_temp_path /p/" .. temp .. "_temp;", 1, true), temp)
    end
    -- the caller's part is inside http { }, which closes after it
    assert.matches("http {\n.-  server { listen 127%.0%.0%.1:1; }\n}\n$", conf)
    -- `user root;` exactly when we are root (else nginx's workers run as nobody)
    assert.are.equal(launcher.user_directive() ~= "", conf:find("\nuser root;\n", 1, true) ~= nil)
  end)

  it("defaults: one worker, warn", function()
    local conf = launcher.nginx_conf(parts, { prefix = "/p" }, "")
    assert.truthy(conf:find("worker_processes 1;", 1, true))
    assert.truthy(conf:find("error_log /p/error.log warn;", 1, true))
  end)

  it("fills the caller's ${names} once: a value's own ${...} and % stay as they are", function()
    local conf = launcher.nginx_conf(parts, { prefix = "/p", x = "${prefix}%1%%" }, "  # ${x} ${prefix}\n")
    assert.truthy(conf:find("  # ${prefix}%1%% /p\n", 1, true), conf)
  end)

  it("a ${name} the caller gave no value for raises, naming it", function()
    local ok, err = pcall(launcher.nginx_conf, parts, { prefix = "/p" }, "  listen ${port};\n")
    assert.is_false(ok)
    assert.matches("${port}", tostring(err), 1, true)
  end)
end)

describe("launcher: nginx reads the nginx.conf it writes #nginx", function()
  it("accepts it, and makes the temp directories inside the prefix", function()
    local real = assert(launcher.nginx_parts())
    local dir = H.tmpdir("conf")
    finally(function() os.execute("rm -rf " .. dir) end)
    local f = assert(io.open(dir .. "/nginx.conf", "wb"))
    f:write(launcher.nginx_conf(real, { prefix = dir }, "  server { listen 127.0.0.1:1; }\n"))
    f:close()
    local ok = os.execute(real.nginx .. " -t -q -p " .. dir .. " -c nginx.conf -e " .. dir .. "/error.log 2>" ..
      dir .. "/t.log")
    assert.is_true(ok == true or ok == 0, H.read(dir .. "/t.log"))
    local made = os.execute("test -d " .. dir .. "/client_body_temp")
    assert.is_true(made == true or made == 0)
  end)

  it("start_nginx: a configuration nginx refuses comes back as what nginx said, nothing left running", function()
    local real = assert(launcher.nginx_parts())
    local dir = H.tmpdir("conf")
    finally(function() os.execute("rm -rf " .. dir) end)
    local started, log = launcher.start_nginx(real, dir, launcher.free_port(),
      launcher.nginx_conf(real, { prefix = dir }, "  no_such_directive on;\n"))
    assert.is_nil(started)
    assert.matches('unknown directive "no_such_directive"', log)
    assert.is_nil(H.read(dir .. "/nginx.pid"))
  end)

  it("start_nginx: a server that starts gives its master's pid, and serves", function()
    local real = assert(launcher.nginx_parts())
    local dir, port = H.tmpdir("conf"), launcher.free_port()
    finally(function() launcher.stop(dir) os.execute("rm -rf " .. dir) end)
    local started, pid = launcher.start_nginx(real, dir, port, launcher.nginx_conf(real, { prefix = dir, port = port },
      "  server { listen 127.0.0.1:${port}; location / { return 200 'up'; } }\n"))
    assert.is_true(started)
    assert.are.equal(launcher.running(dir), pid)
    local body = H.sh("curl -s http://127.0.0.1:" .. port .. "/")
    assert.are.equal("up", body)
  end)
end)
