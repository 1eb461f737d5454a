-- The version lives in one place (lua/kinot/version.lua); the rockspecs,
-- the CHANGELOG's top entry, kinot._VERSION, the User-Agent and
-- `kinot --version` agree with it, and the versioned rockspec is what
-- `make rockspec` generates from the scm one (the two cannot drift).
local H = require "helpers"

local function read(p)
  local f = assert(io.open(H.root .. "/" .. p, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function sh(cmd) -- -> true when it exited 0, its output
  local out, rc = H.sh(cmd)
  return rc == 0, out
end

-- a rockspec is Lua assignments: run it in an empty environment
local function rockspec(p)
  local env = {}
  local chunk
  if rawget(_G, "setfenv") then
    chunk = assert(loadstring(read(p), p))
    setfenv(chunk, env)
  else
    chunk = assert(load(read(p), p, "t", env))
  end
  chunk()
  return env
end

local function pattern(s) return (s:gsub("%p", "%%%0")) end

describe("the version #unit", function()
  local version = dofile(H.root .. "/lua/kinot/version.lua")

  it("is a semantic version, written once in lua/kinot/version.lua", function()
    assert.matches("^%d+%.%d+%.%d+$", version)
    assert.equal(version, require("kinot")._VERSION)
    assert.equal(version, require("kinot.version"))
  end)

  it("is the only copy: no other source file carries it", function()
    local p = io.popen("cd " .. H.root .. " && git ls-files src bin lua Makefile")
    for path in p:lines() do
      if path ~= "lua/kinot/version.lua" then
        local text = read(path)
        assert.is_nil(text:find(version, 1, true), path .. " carries the version " .. version)
      end
    end
    p:close()
    assert.is_nil(rawget(require("kinot.core"), "version"), "kinot.core carries a version of its own")
  end)

  it("reaches the User-Agent and `kinot --version`", function()
    assert.equal("lua-kinot/" .. version, require("kinot.request").USER_AGENT)
    local interp = rawget(_G, "jit") and "luajit" or "lua5.4"
    local abi = rawget(_G, "jit") and "5.1" or "5.4"
    local ok, out = sh("cd " .. H.root .. " && " .. interp .. " -e 'package.cpath=\"build/" .. abi ..
      "/?.so;\"..package.cpath' bin/kinot --version")
    assert(ok, out)
    assert.matches("^kinot " .. pattern(version) .. " %(", out)
  end)

  it("is the versioned rockspec's, with a tag v<version>; the scm rockspec stays scm", function()
    local scm = rockspec("kinot-scm-1.rockspec")
    assert.equal("scm-1", scm.version)
    local rel = rockspec("kinot-" .. version .. "-1.rockspec")
    assert.equal(version .. "-1", rel.version)
    assert.equal("v" .. version, rel.source.tag)
    assert.equal(scm.source.url, rel.source.url)
    -- no other versioned rockspec lies about
    local p = io.popen("cd " .. H.root .. " && ls kinot-*.rockspec")
    local names = {}
    for n in p:lines() do names[#names + 1] = n end
    p:close()
    table.sort(names)
    assert.same({ "kinot-" .. version .. "-1.rockspec", "kinot-scm-1.rockspec" }, names)
  end)

  it("the versioned rockspec is what `make rockspec` generates from the scm one", function()
    local tmp = os.tmpname()
    finally(function() os.remove(tmp) end)
    local ok, out = sh("make -s -C " .. H.root .. " rockspec ROCKSPEC_OUT=" .. tmp)
    assert(ok, out)
    local f = assert(io.open(tmp, "rb"))
    local generated = f:read("*a")
    f:close()
    assert.equal(generated, read("kinot-" .. version .. "-1.rockspec"),
      "kinot-" .. version .. "-1.rockspec differs from kinot-scm-1.rockspec: run `make rockspec`")
  end)

  it("both rockspecs run the tests offline through `luarocks test`", function()
    for _, p in ipairs { "kinot-scm-1.rockspec", "kinot-" .. version .. "-1.rockspec" } do
      local t = rockspec(p).test
      assert.is_table(t, p)
      assert.equal("command", t.type, p)
      assert.truthy(io.open(H.root .. "/" .. t.script), t.script)
    end
  end)

  it("is the CHANGELOG's top entry", function()
    local changelog = read("CHANGELOG.md")
    local top = changelog:match("\n## %[?(%d+%.%d+%.%d+)%]?")
    assert.equal(version, top)
  end)
end)
