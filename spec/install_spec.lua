-- `make install` as the README gives it, from the tracked files only (what a
-- clean clone holds), into a temp tree: both runtimes, the LuaJIT build
-- first and the Lua 5.4 one last; the simulator's launcher loads the core
-- of the tree it was started from, whatever other kinot/core.so is about.
-- Nothing is written outside the temp directory.
local H = require "helpers"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return rc == 0, out
end

local function pattern(s) return (s:gsub("%p", "%%%0")) end

local read = H.read

describe("make install #install #slow", function()
  local tmp, tree, home, fake
  local install_ok, install_out

  -- the environment of a user of that tree: its paths (luarocks path), and
  -- a HOME of our own with another LuaJIT kinot/core.so in ~/.luarocks,
  -- where the launcher used to look; `fake` (another one again) goes last on
  -- LuaJIT's cpath, where /usr/local/lib/lua/5.1 sits
  local function env(abi)
    return "eval \"$(luarocks --lua-version=" .. abi .. " path --tree=" .. tree .. ")\" && " ..
      "export HOME=" .. home .. " KINOT_SIM_CPATH= && " ..
      (abi == "5.1" and ("export LUA_CPATH=\"$LUA_CPATH;" .. fake .. "/?.so\" && ") or "")
  end

  setup(function()
    local p = io.popen("mktemp -d /tmp/kinot-install.XXXXXX")
    tmp = p:read("*l")
    p:close()
    tree, home, fake = tmp .. "/tree", tmp .. "/home", tmp .. "/fake"
    assert(sh("cd " .. H.root .. " && mkdir -p " .. tmp .. "/src && git ls-files -z | xargs -0 cp --parents -t " ..
      tmp .. "/src"))
    -- another LuaJIT build of kinot.core, where the launcher used to look
    assert(sh("make -s -C " .. H.root .. " build/5.1/kinot/core.so"))
    assert(sh("mkdir -p " .. fake .. "/kinot " .. home .. "/.luarocks/lib/lua/5.1/kinot && cp " .. H.root ..
      "/build/5.1/kinot/core.so " .. fake .. "/kinot/ && cp " .. H.root .. "/build/5.1/kinot/core.so " .. home ..
      "/.luarocks/lib/lua/5.1/kinot/"))
    install_ok, install_out = sh("cd " .. tmp .. "/src && make install TREE=" .. tree)
  end)
  teardown(function() os.execute("rm -rf " .. tmp) end)

  it("installs both runtimes into TREE without a missing-dependency warning", function()
    assert(install_ok, install_out)
    assert.is_nil(install_out:find("Missing dependencies", 1, true), install_out)
    assert.is_nil(install_out:find("not tracked by this installation", 1, true), install_out)
    for _, abi in ipairs { "5.1", "5.4" } do
      assert.truthy(read(tree .. "/lib/lua/" .. abi .. "/kinot/core.so"), abi)
      assert.truthy(read(tree .. "/share/lua/" .. abi .. "/kinot/init.lua"), abi)
    end
    -- the checkout is left as it was: no build products of LuaRocks in it
    local ok, out = sh("cd " .. tmp .. "/src && ls -d kinot src/*.o")
    assert.is_false(ok, out)
  end)

  it("the tree's kinot runs under Lua 5.4 and says the version", function()
    assert(install_ok, install_out)
    local version = dofile(H.root .. "/lua/kinot/version.lua")
    local ok, out = sh(env("5.4") .. tree .. "/bin/kinot --version")
    assert(ok, out)
    assert.matches("^kinot " .. pattern(version) .. " %(Lua 5%.4;", out)
  end)

  it("luajit with the tree's paths loads the LuaJIT build of kinot.core from the tree", function()
    assert(install_ok, install_out)
    local ok, out = sh(env("5.1") .. "luajit -e 'local k = require \"kinot\"; " ..
      "print(k._VERSION, package.searchpath(\"kinot.core\", package.cpath)); " ..
      "print(type(assert(package.loaded[\"kinot.core\"]).curl_version) == \"function\")'")
    assert(ok, out)
    assert.matches(pattern(tree .. "/lib/lua/5.1/kinot/core.so"), out)
    assert.matches("true", out)
  end)

  it("a simulator started from the tree loads the tree's LuaJIT core, and says so", function()
    assert(install_ok, install_out)
    local pid_file = tmp .. "/sim.pid"
    local ok, out = sh(env("5.4") .. tree .. "/bin/kinot --json sim --daemon --locks 3 --pid-file " .. pid_file)
    finally(function() sh(env("5.4") .. tree .. "/bin/kinot sim stop --pid-file " .. pid_file) end)
    assert(ok, out)
    local info = require("kinot.json").decode(out:match("{.*}"))
    assert.equal(tree .. "/lib/lua/5.1/kinot/core.so", info.core)
    -- what nginx really mapped: the tree's core, not the other one
    local maps
    local p = io.popen("for p in $(cat " .. info.prefix .. "/nginx.pid) $(pgrep -P $(cat " .. info.prefix ..
      "/nginx.pid)); do cat /proc/$p/maps; done 2>/dev/null")
    maps = p:read("*a")
    p:close()
    assert.matches(pattern(tree .. "/lib/lua/5.1/kinot/core.so"), maps)
    assert.is_nil(maps:find(fake, 1, true))
    assert.is_nil(maps:find(home, 1, true))
    -- and the plain output names it too
    local pid2 = tmp .. "/sim2.pid"
    ok, out = sh(env("5.4") .. tree .. "/bin/kinot sim --daemon --locks 3 --pid-file " .. pid2)
    sh(env("5.4") .. tree .. "/bin/kinot sim stop --pid-file " .. pid2)
    assert(ok, out)
    assert.matches("kinot%.core for nginx: " .. pattern(tree .. "/lib/lua/5.1/kinot/core.so"), out)
  end)

  it("`luarocks test` runs the specs offline under the runtime asked for (LuaJIT for 5.1)", function()
    for _, case in ipairs { { "5.4", "Lua 5%.4" }, { "5.1", "LuaJIT" } } do
      local ok, out = sh("cd " .. tmp .. "/src && printf '%s\\n' 'describe(\"rt\", function() it(\"is\", function() " ..
        "print(\"runtime: \" .. (rawget(_G, \"jit\") and jit.version or _VERSION)) end) end)' > spec/zz_rt_spec.lua && " ..
        "luarocks --lua-version=" .. case[1] .. " test -- spec/zz_rt_spec.lua spec/json_spec.lua")
      assert(ok, out)
      assert.matches("runtime: " .. case[2], out)
      assert.matches("%d+ successes / 0 failures / 0 errors", out)
      assert.is_nil(out:find("luarocks.org", 1, true), out)
    end
  end)

  it("a second make install over the first: no warning, no kinot~ left, kinot still under 5.4", function()
    assert(install_ok, install_out)
    local ok, out = sh("cd " .. tmp .. "/src && make install TREE=" .. tree)
    assert(ok, out)
    assert.is_nil(out:find("Warning", 1, true), out)
    assert.is_nil(read(tree .. "/bin/kinot~"))
    ok, out = sh(env("5.4") .. tree .. "/bin/kinot --version")
    assert(ok, out)
    assert.matches("%(Lua 5%.4;", out)
  end)

  it("make uninstall removes both runtimes and the command", function()
    assert(install_ok, install_out)
    local ok, out = sh("cd " .. tmp .. "/src && make uninstall TREE=" .. tree)
    assert(ok, out)
    for _, f in ipairs { "/lib/lua/5.1/kinot/core.so", "/lib/lua/5.4/kinot/core.so", "/share/lua/5.1/kinot/init.lua",
                         "/share/lua/5.4/kinot/init.lua", "/bin/kinot", "/bin/kinot~" } do
      assert.is_nil(read(tree .. f), f)
    end
  end)
end)

describe("the launcher's kinot.core for nginx #unit", function()
  local launcher = require "kinot.sim.launcher"
  local tmp
  before_each(function()
    local p = io.popen("mktemp -d /tmp/kinot-core.XXXXXX")
    tmp = p:read("*l")
    p:close()
  end)
  after_each(function() os.execute("rm -rf " .. tmp) end)

  local function touch(path)
    assert(os.execute("mkdir -p " .. path:match("^(.*)/") .. " && : > " .. path))
  end

  it("is the one this launcher file came from", function()
    if os.getenv("KINOT_SIM_CPATH") then pending("KINOT_SIM_CPATH is set") return end
    local src = debug.getinfo(launcher.luajit_cpath, "S").source:gsub("^@", "")
    local root = launcher.lua_root()
    assert.equal("/", root:sub(1, 1))
    assert.equal(root .. "/kinot/sim/launcher.lua", (src:sub(1, 1) == "/" and src or (H.root .. "/" .. src)))
    assert.equal(H.root .. "/lua", root)
    assert.equal(H.root .. "/build/5.1", launcher.luajit_cpath())
  end)

  it("in a checkout without build/5.1: refused, saying to run make build, whatever else is built", function()
    if os.getenv("KINOT_SIM_CPATH") then pending("KINOT_SIM_CPATH is set") return end
    touch(tmp .. "/co/lua/kinot/sim/launcher.lua")
    touch(tmp .. "/co/build/5.4/kinot/core.so")
    local dir, err = launcher.luajit_cpath(tmp .. "/co/lua")
    assert.is_nil(dir)
    assert.matches("make build", err)
    assert.matches(tmp:gsub("%p", "%%%0") .. "/co/build/5%.1/kinot/core%.so is missing", err)
    touch(tmp .. "/co/build/5.1/kinot/core.so")
    assert.equal(tmp .. "/co/build/5.1", launcher.luajit_cpath(tmp .. "/co/lua"))
  end)

  it("in a LuaRocks tree: the tree's lib/lua/5.1, from either runtime's share/lua", function()
    if os.getenv("KINOT_SIM_CPATH") then pending("KINOT_SIM_CPATH is set") return end
    for _, abi in ipairs { "5.1", "5.4" } do
      local dir, err = launcher.luajit_cpath(tmp .. "/tree/share/lua/" .. abi)
      assert.is_nil(dir)
      assert.matches("%-%-tree=" .. tmp:gsub("%p", "%%%0") .. "/tree ", err)
    end
    touch(tmp .. "/tree/lib/lua/5.1/kinot/core.so")
    for _, abi in ipairs { "5.1", "5.4" } do
      assert.equal(tmp .. "/tree/lib/lua/5.1", launcher.luajit_cpath(tmp .. "/tree/share/lua/" .. abi))
    end
  end)
end)
