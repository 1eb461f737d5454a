-- `luarocks test` (the rockspecs' test script): LuaRocks runs this with the
-- interpreter of the Lua version it was asked for.  Builds kinot.core for
-- both runtimes (the simulator's specs need the LuaJIT one whatever runs
-- the specs), then runs busted under that runtime, LuaJIT for the 5.1 ABI,
-- with the arguments given after `luarocks test --`.  Offline: Debian's
-- busted (lua-busted), nothing fetched.
local abi = rawget(_G, "jit") and "5.1" or _VERSION:match("%d+%.%d+")
local interp = ({ ["5.1"] = "luajit", ["5.4"] = "lua5.4" })[abi]
if not interp then
  io.stderr:write("kinot: lua-kinot runs on Lua 5.4 and LuaJIT, not Lua ", abi, "\n")
  os.exit(2)
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function run(cmd)
  local ok, _, code = os.execute(cmd)
  if type(ok) == "number" then return ok == 0 end -- Lua 5.1
  return ok == true and (code == 0 or code == nil)
end

if not run("make -s build") then os.exit(1) end
local cmd = { interp, "/usr/bin/busted", q("--cpath=build/" .. abi .. "/?.so"), "-o", "plainTerminal" }
for _, a in ipairs { ... } do cmd[#cmd + 1] = q(a) end
os.exit(run(table.concat(cmd, " ")) and 0 or 1)
