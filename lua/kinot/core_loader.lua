-- kinot.core, the C core, as every module of lua-kinot loads it:
-- `require "kinot.core_loader"`.  A kinot/core.so built for another Lua ABI
-- that comes first on package.cpath (a LuaJIT build at ./kinot/core.so in
-- the directory a lua5.4 run starts from, a LUA_CPATH of another tree) is
-- refused with a message naming the file, both ABIs and how to get the
-- right one, where the dynamic linker would only say "undefined symbol:
-- lua_tonumber".  The core states its ABI twice: core.abi once loaded, and
-- the text "kinot-core-abi=<abi>;" in the file (src/kinot_core.c), read only
-- when the file could not be loaded at all.
local read = require("kinot.file").read -- plain Lua: loads before the core

local RUNNING = rawget(_G, "jit") and "5.1" or _VERSION:match("%d+%.%d+")

local function name(abi)
  return abi == "5.1" and "Lua 5.1 (LuaJIT)" or ("Lua " .. abi)
end

-- the ABI stamped into the file at path, or nil (nor for a directory that
-- package.searchpath took for the file)
local function stamped_abi(path)
  local data = read(path)
  return data and data:match("kinot%-core%-abi=([%d.]+);")
end

local function refuse(path, abi)
  error(string.format("kinot: %s is a kinot.core built for %s, and this is %s: it cannot load here. Build the one " ..
    "for %s (`make build` in a checkout puts it in build/%s; into a LuaRocks tree: `luarocks --lua-version=%s make " ..
    "--deps-mode=none kinot-scm-1.rockspec`%s), and put it before this one on package.cpath, or remove %s if it is " ..
    "a leftover of an earlier build", path, name(abi), name(RUNNING), name(RUNNING), RUNNING, RUNNING,
    RUNNING == "5.1" and " with LUA_INCDIR=/usr/include/luajit-2.1" or "", path), 0)
end

local searchpath = package.searchpath
local ok, core = pcall(require, "kinot.core")
if not ok then
  local path = searchpath and searchpath("kinot.core", package.cpath)
  local abi = path and stamped_abi(path)
  if abi and abi ~= RUNNING then refuse(path, abi) end
  error(core, 0)
end
if type(core) == "table" and core.abi ~= RUNNING then
  -- loaded, yet of another ABI (a 5.3 core in 5.4): nothing of it may run
  package.loaded["kinot.core"] = nil
  refuse(searchpath and searchpath("kinot.core", package.cpath) or "kinot/core.so", tostring(core.abi))
end
return core
