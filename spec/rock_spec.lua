-- The rockspec: `luarocks make` of the tracked files, offline, into a temp
-- tree for Lua 5.4 and for LuaJIT; then `require "kinot"` from each.
local H = require "helpers"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return rc == 0, out
end

describe("kinot-scm-1.rockspec", function()
  it("installs every Lua module and C source of the tree", function()
    local f = assert(io.open(H.root .. "/kinot-scm-1.rockspec"))
    local spec = f:read("*a")
    f:close()
    local p = io.popen("cd " .. H.root .. " && ls lua/kinot/*.lua lua/kinot/*/*.lua src/*.c")
    for path in p:lines() do
      assert.is_truthy(spec:find('"' .. path .. '"', 1, true), path .. " is missing from the rockspec")
    end
    p:close()
  end)

  local tmp
  setup(function()
    local p = io.popen("mktemp -d /tmp/kinot-rock.XXXXXX")
    tmp = p:read("*l")
    p:close()
    -- only what git tracks: what a clean clone would hold
    assert(sh("cd " .. H.root .. " && mkdir -p " .. tmp .. "/src && git ls-files -z | xargs -0 cp --parents -t " .. tmp .. "/src"))
  end)
  teardown(function() os.execute("rm -rf " .. tmp) end)

  it("installs for Lua 5.4 with --deps-mode=none, and kinot loads", function()
    local ok, out = sh("cd " .. tmp .. "/src && luarocks --lua-version=5.4 make --deps-mode=none --tree=" .. tmp .. "/tree kinot-scm-1.rockspec")
    assert(ok, out)
    ok, out = sh("LUA_PATH='" .. tmp .. "/tree/share/lua/5.4/?.lua;" .. tmp .. "/tree/share/lua/5.4/?/init.lua;;' " ..
      "LUA_CPATH='" .. tmp .. "/tree/lib/lua/5.4/?.so;;' lua5.4 -e 'local k = require \"kinot\"; " ..
      "assert(package.searchpath(\"kinot.core\", package.cpath):find(\"" .. tmp .. "\", 1, true)); print(k._VERSION)'")
    assert(ok, out)
    assert.matches("0%.1%.0", out)
    assert.is_truthy(io.open(tmp .. "/tree/bin/kinot"))
  end)

  it("installs for LuaJIT (5.1 ABI) and kinot loads under luajit", function()
    local ok, out = sh("cd " .. tmp .. "/src && luarocks --lua-version=5.1 make --deps-mode=none --tree=" .. tmp ..
      "/tree LUA_INCDIR=/usr/include/luajit-2.1 kinot-scm-1.rockspec")
    assert(ok, out)
    ok, out = sh("LUA_PATH='" .. tmp .. "/tree/share/lua/5.1/?.lua;" .. tmp .. "/tree/share/lua/5.1/?/init.lua;;' " ..
      "LUA_CPATH='" .. tmp .. "/tree/lib/lua/5.1/?.so;;' luajit -e 'local k = require \"kinot\"; print(k._VERSION)'")
    assert(ok, out)
    assert.matches("0%.1%.0", out)
  end)
end)
