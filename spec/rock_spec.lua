-- The rockspec: `luarocks make` of the tracked files, offline, into a temp
-- tree for Lua 5.4 and for LuaJIT; then `require "kinot"` from each.
local H = require "helpers"
local version = dofile(H.root .. "/lua/kinot/version.lua")

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return rc == 0, out
end

describe("kinot-scm-1.rockspec #install #slow", function()
  it("installs every Lua module and C source of the tree", function()
    local f = assert(io.open(H.root .. "/kinot-scm-1.rockspec"))
    local spec = f:read("*a")
    f:close()
    local p = io.popen("cd " .. H.root .. " && ls lua/kinot/*.lua lua/kinot/*/*.lua")
    for path in p:lines() do
      assert.is_truthy(spec:find('"' .. path .. '"', 1, true), path .. " is missing from the rockspec")
    end
    p:close()
    -- the C sources: the Makefile's `rock` target builds them (build_target), from SRC, as `make build` does
    assert.is_truthy(spec:find('build_target = "rock"', 1, true))
    f = assert(io.open(H.root .. "/Makefile"))
    local mk = f:read("*a"):gsub("\\\n", " ")
    f:close()
    local listed = (mk:match("\nCORE_C := ([^\n]*)") or "") .. " " .. (mk:match("\nBINDING := ([^\n]*)") or "") ..
      " " .. (mk:match("\nSIMSIGNAL_SRC := ([^\n]*)") or "")
    p = io.popen("cd " .. H.root .. " && ls src/*.c")
    for path in p:lines() do
      if not path:find("_fuzz") then
        assert.is_truthy((" " .. listed .. " "):find("%s" .. path:gsub("%p", "%%%0") .. "%s"),
          path .. " is built by neither `make build` nor `make rock`")
      end
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
    -- another LuaJIT build of kinot.core where a per-user install would put
    -- it: in this HOME's ~/.luarocks (kinot_in sets HOME); no tree's
    -- simulator may take it
    assert(sh("make -s -C " .. H.root .. " build/5.1/kinot/core.so && mkdir -p " .. tmp .. "/.luarocks/lib/lua/5.1/kinot " ..
      "&& cp " .. H.root .. "/build/5.1/kinot/core.so " .. tmp .. "/.luarocks/lib/lua/5.1/kinot/"))
  end)
  teardown(function() os.execute("rm -rf " .. tmp) end)

  local function make(tree, abi)
    return sh("cd " .. tmp .. "/src && luarocks --lua-version=" .. abi .. " make --deps-mode=none --tree=" .. tree ..
      (abi == "5.1" and " LUA_INCDIR=/usr/include/luajit-2.1" or "") .. " kinot-scm-1.rockspec")
  end
  -- what a user of a private tree does: the tree's paths, then its kinot
  local function kinot_in(tree, args, env)
    return sh("eval \"$(luarocks --lua-version=5.4 path --tree=" .. tree .. ")\" && HOME=" .. tmp .. " KINOT_SIM_CPATH= " ..
      (env or "") .. " " .. tree .. "/bin/kinot " .. args)
  end

  it("installs for Lua 5.4 with --deps-mode=none, and kinot loads", function()
    local ok, out = make(tmp .. "/a", "5.4")
    assert(ok, out)
    ok, out = sh("LUA_PATH='" .. tmp .. "/a/share/lua/5.4/?.lua;" .. tmp .. "/a/share/lua/5.4/?/init.lua;;' " ..
      "LUA_CPATH='" .. tmp .. "/a/lib/lua/5.4/?.so;;' lua5.4 -e 'local k = require \"kinot\"; " ..
      "assert(package.searchpath(\"kinot.core\", package.cpath):find(\"" .. tmp .. "\", 1, true)); print(k._VERSION)'")
    assert(ok, out)
    assert.matches(version:gsub("%p", "%%%0"), out)
  end)

  it("an installed `kinot sim` says exactly what to build while the LuaJIT side is missing", function()
    local ok, out = kinot_in(tmp .. "/a", "sim --daemon --pid-file " .. tmp .. "/a.pid")
    if ok then kinot_in(tmp .. "/a", "sim stop --pid-file " .. tmp .. "/a.pid") end
    assert.is_false(ok, out)
    assert.matches("luarocks %-%-lua%-version=5%.1 make %-%-deps%-mode=none %-%-tree=" .. tmp:gsub("%p", "%%%0") .. "/a", out)
  end)

  it("installs for LuaJIT (5.1 ABI) and kinot loads under luajit", function()
    local ok, out = make(tmp .. "/b", "5.1")
    assert(ok, out)
    ok, out = sh("LUA_PATH='" .. tmp .. "/b/share/lua/5.1/?.lua;" .. tmp .. "/b/share/lua/5.1/?/init.lua;;' " ..
      "LUA_CPATH='" .. tmp .. "/b/lib/lua/5.1/?.so;;' luajit -e 'local k = require \"kinot\"; print(k._VERSION)'")
    assert(ok, out)
    assert.matches(version:gsub("%p", "%%%0"), out)
  end)

  it("runs the simulator from a tree holding both, finding the LuaJIT side itself", function()
    local ok, out = make(tmp .. "/b", "5.4") -- last, so bin/kinot runs under 5.4
    assert(ok, out)
    ok, out = kinot_in(tmp .. "/b", "--json sim --daemon --locks 11 --pid-file " .. tmp .. "/b.pid")
    assert(ok, out)
    local info = require("kinot.json").decode(out:match("{.*}"))
    assert.equal(tmp .. "/b/lib/lua/5.1/kinot/core.so", info.core)
    ok, out = kinot_in(tmp .. "/b", "lockers", string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s",
      info.app_key, info.app_secret, info.endpoint))
    kinot_in(tmp .. "/b", "sim stop --pid-file " .. tmp .. "/b.pid")
    assert(ok, out)
    assert.matches("of 12 lockers", out) -- the 11 asked for, then the reference's example lock
  end)
end)

-- `luarocks make` for 5.1 straight from a checkout, as the README's Install
-- says for a LuaJIT-only tree: its `kinot` runs under LuaJIT (not PUC
-- lua5.1), and no build product lands on the checkout's module path (a
-- later lua5.4 run from the checkout would load it: ./?.so).
describe("luarocks make for 5.1 from a checkout #install #slow", function()
  local tmp, ok_make, out_make
  setup(function()
    local p = io.popen("mktemp -d /tmp/kinot-rock51.XXXXXX")
    tmp = p:read("*l")
    p:close()
    assert(sh("cd " .. H.root .. " && mkdir -p " .. tmp .. "/src && git ls-files -z | xargs -0 cp --parents -t " ..
      tmp .. "/src"))
    ok_make, out_make = sh("cd " .. tmp .. "/src && luarocks --lua-version=5.1 make --deps-mode=none --tree=" .. tmp ..
      "/t LUA_INCDIR=/usr/include/luajit-2.1 kinot-scm-1.rockspec")
  end)
  teardown(function() os.execute("rm -rf " .. tmp) end)

  it("leaves no kinot.core on the checkout's module path, nor objects in src/", function()
    assert(ok_make, out_make)
    local ok, out
    for _, what in ipairs { "kinot", "lua/kinot/*.so", "src/*.o" } do
      ok, out = sh("cd " .. tmp .. "/src && ls -d " .. what)
      assert.is_false(ok, out)
    end
    for _, rt in ipairs { "lua5.4", "luajit" } do
      ok, out = sh("cd " .. tmp .. "/src && " .. rt .. " -e 'print(package.searchpath(\"kinot.core\", package.cpath))'")
      assert(ok, out)
      assert.matches("^nil", out, rt)
    end
  end)

  it("the tree's kinot runs under LuaJIT", function()
    assert(ok_make, out_make)
    local ok, out = sh("eval \"$(luarocks --lua-version=5.1 path --tree=" .. tmp .. "/t)\" && " .. tmp ..
      "/t/bin/kinot --version")
    assert(ok, out)
    assert.matches("^kinot " .. version:gsub("%p", "%%%0") .. " %(LuaJIT ", out)
    -- and its exit code and arguments pass through
    out = select(2, sh("eval \"$(luarocks --lua-version=5.1 path --tree=" .. tmp .. "/t)\" && " .. tmp ..
      "/t/bin/kinot sign '/open/lora/v1/lockers' --query 'offset=0' --app-key k --app-secret 's p'; echo \"exit=$?\""))
    assert.matches("exit=0", out)
    out = select(2, sh("eval \"$(luarocks --lua-version=5.1 path --tree=" .. tmp .. "/t)\" && " .. tmp ..
      "/t/bin/kinot --no-such-option; echo \"exit=$?\""))
    assert.matches("exit=2", out)
  end)
end)
