-- A kinot/core.so built for another Lua ABI, found first on package.cpath
-- (a LuaRocks 5.1 build left at ./kinot/core.so in the directory a lua5.4 run
-- starts from, a LUA_CPATH of the wrong tree): loading kinot refuses it with
-- a message that names the file, both ABIs and the fix, not the linker's
-- "undefined symbol: lua_tonumber".
local H = require "helpers"

local function sh(cmd) -- -> true when it exited 0, its output
  local out, rc = H.sh(cmd)
  return rc == 0, out
end

local function pattern(s) return (s:gsub("%p", "%%%0")) end

describe("a kinot/core.so of another Lua ABI #build", function()
  local tmp
  setup(function()
    assert(sh("make -s -C " .. H.root .. " build"))
    local p = io.popen("mktemp -d /tmp/kinot-abi.XXXXXX")
    tmp = p:read("*l")
    p:close()
    assert(sh("mkdir -p " .. tmp .. "/from51/kinot " .. tmp .. "/from54/kinot && cp " .. H.root ..
      "/build/5.1/kinot/core.so " .. tmp .. "/from51/kinot/ && cp " .. H.root .. "/build/5.4/kinot/core.so " ..
      tmp .. "/from54/kinot/"))
  end)
  teardown(function() if tmp then os.execute("rm -rf " .. tmp) end end)

  -- `runtime` in dir, this checkout's Lua modules, the default cpath (./?.so first)
  local function load_kinot(runtime, dir)
    return sh("cd " .. dir .. " && " .. runtime .. " -e 'package.path = \"" .. H.root .. "/lua/?.lua;" .. H.root ..
      "/lua/?/init.lua;\" .. package.path' -e 'require \"kinot\"; print(\"loaded\")'")
  end

  it("Lua 5.4 refuses the LuaJIT (5.1) core, naming both ABIs, the file and the fix", function()
    local ok, out = load_kinot("lua5.4", tmp .. "/from51")
    assert.is_false(ok, out)
    assert.matches("%./kinot/core%.so", out)
    assert.matches("built for Lua 5%.1 %(LuaJIT%)", out)
    assert.matches("this is Lua 5%.4", out)
    assert.matches("make build", out)
    assert.matches("luarocks %-%-lua%-version=5%.4 make", out)
    assert.is_nil(out:find("undefined symbol", 1, true), out)
  end)

  it("LuaJIT refuses the Lua 5.4 core likewise", function()
    local ok, out = load_kinot("luajit", tmp .. "/from54")
    assert.is_false(ok, out)
    assert.matches("built for Lua 5%.4", out)
    assert.matches("this is Lua 5%.1 %(LuaJIT%)", out)
    assert.matches("luarocks %-%-lua%-version=5%.1 make", out)
  end)

  it("each runtime loads its own core, and the core says its ABI", function()
    for _, case in ipairs { { "lua5.4", "from54", "5.4" }, { "luajit", "from51", "5.1" } } do
      local ok, out = sh("cd " .. tmp .. "/" .. case[2] .. " && " .. case[1] .. " -e 'package.path = \"" .. H.root ..
        "/lua/?.lua;" .. H.root .. "/lua/?/init.lua;\" .. package.path' -e 'require \"kinot\"; print(require(\"kinot.core\").abi)'")
      assert(ok, out)
      assert.matches("^" .. pattern(case[3]) .. "\n", out)
    end
  end)

  -- package.searchpath takes a directory named kinot/core.so for the file
  -- (fopen opens a directory for reading); the loader then read it for its
  -- ABI stamp and raised "attempt to index a nil value", hiding why.
  it("a directory named kinot/core.so first on the cpath: the loader's own error, in both runtimes", function()
    assert(sh("mkdir -p " .. tmp .. "/dir/kinot/core.so"))
    for _, runtime in ipairs { "lua5.4", "luajit" } do
      local ok, out = load_kinot(runtime, tmp .. "/dir")
      assert.is_false(ok, out)
      assert.matches("kinot/core%.so", out)
      assert.matches("error loading module 'kinot%.core'", out) -- require's own words
      assert.is_nil(out:find("nil value", 1, true), out)
    end
  end)
end)
