-- make sanitize runs the Lua processes under ASan + UBSan, and only them:
-- what a spec spawns (ps, nginx, openssl, a shell) runs plain (`ps` under a
-- preloaded libasan never finishes, and with it the whole sanitized suite),
-- and a Lua child it starts as lua5.4 or luajit runs sanitized again.  The
-- probe runs in the Makefile's own environment, $(ASAN_ENV), after building
-- what `make sanitize` builds for this runtime.
local H = require "helpers"

local ABI = H.runtime == "luajit" and "5.1" or "5.4"
local LUA = H.runtime == "luajit" and "luajit" or "lua5.4"

local function sh(cmd) -- -> its exit code, its output (from the checkout's root)
  local out, rc = H.sh("cd " .. H.root .. " && " .. cmd)
  return rc, out
end

-- the probe: which processes carry the sanitizers' runtime (a process's own
-- /proc/self/maps), whether ps finishes, and whether the sanitized core loads
local PROBE = [[
local function run(cmd)
  local p = io.popen(cmd)
  local s = p:read("*a")
  p:close()
  return (s:gsub("%s+$", ""))
end
local f = io.open("/proc/self/maps")
print("self=" .. (f:read("*a"):find("libasan", 1, true) and "asan" or "plain"))
f:close()
-- (timeout: under the runtime ps blocks for good; this one is killed)
print("ps=" .. run("timeout 20 ps --ppid 1 --no-headers >/dev/null; echo $?"))
print("grep=" .. run("grep -c libasan /proc/self/maps"))
print("sh=[" .. run("printf %s \"$LD_PRELOAD\"") .. "]")
local child = "-e 'local f = io.open(\"/proc/self/maps\") " ..
  "print(f:read(\"*a\"):find(\"libasan\", 1, true) and \"asan\" or \"plain\")'"
print("lua5.4=" .. run("lua5.4 " .. child))
print("luajit=" .. run("luajit " .. child))
-- (LuaRocks takes the Lua installation of the first lua5.4 in PATH)
local rocks = run("luarocks --lua-version=5.4 config variables 2>&1")
local inc = rocks:match('LUA_INCDIR = "([^"]*)"')
local h = inc and io.open(inc .. "/lua.h")
print("luarocks_headers=" .. (h and "found" or ("missing " .. tostring(inc))))
if h then h:close() end
package.cpath = arg[1] .. "/?.so;" .. package.cpath
local ok, core = pcall(require, "kinot.core")
print("core=" .. (ok and package.searchpath("kinot.core", package.cpath) or tostring(core)))
]]

describe("make sanitize: only the Lua processes run sanitized #build #slow #nosanitize", function()
  local rc, out, tmp
  setup(function()
    tmp = os.tmpname()
    local f = assert(io.open(tmp, "wb"))
    f:write(PROBE)
    f:close()
    -- what the Makefile runs the suite with, and the tools it builds for that
    local vars
    rc, vars = sh("make -s --no-print-directory --eval 'kinot-asan-vars: ; $(info $(ASAN_ENV))$(info $(ASAN_TOOLS))' " ..
      "kinot-asan-vars")
    assert(rc == 0, vars)
    local env, tools = vars:match("^([^\n]*)\n([^\n]*)%s*$") -- (H.sh leaves out its rc= line)
    assert(env, vars)
    -- (both runtimes' suites may run at once: one make at a time here)
    local built
    rc, built = sh("mkdir -p build && flock build/.sanitize.lock make -s --no-print-directory build/asan/" .. ABI ..
      "/kinot/core.so " .. tools)
    assert(rc == 0, built)
    rc, out = sh("timeout 120 env " .. env .. " " .. LUA .. " " .. tmp .. " " .. H.root .. "/build/asan/" .. ABI)
  end)
  teardown(function() os.remove(tmp) end)

  it("the probe finishes", function()
    assert.are.equal(0, rc, out)
  end)

  it("ps finishes", function()
    assert.are.equal("0", out:match("ps=(%d+)"), out)
  end)

  it("the Lua process runs under the sanitizers and loads the sanitized core", function()
    assert.are.equal("asan", out:match("self=(%a+)"), out)
    assert.are.equal(H.root .. "/build/asan/" .. ABI .. "/kinot/core.so", out:match("core=([^\n]*)"), out)
  end)

  it("a shell utility it spawns runs plain, without LD_PRELOAD", function()
    assert.are.equal("0", out:match("grep=(%d+)"), out)
    assert.are.equal("", out:match("sh=%[(.-)%]"), out)
  end)

  it("LuaRocks finds the Lua 5.4 headers (it takes the wrapper for a Lua installation)", function()
    assert.are.equal("found", out:match("luarocks_headers=(%a+)"), out)
  end)

  it("a Lua child, lua5.4 or luajit, runs under the sanitizers again", function()
    assert.are.equal("asan", out:match("lua5%.4=(%a+)"), out)
    assert.are.equal("asan", out:match("luajit=(%a+)"), out)
  end)
end)
