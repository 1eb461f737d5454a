-- An eager collector for the callback specs.
--
-- KINOT_GC_STRESS=1 (make sanitize sets it): the collector of the Lua
-- state running the specs works continuously, so that a string or cdata
-- whose last reference is dropped is freed (and its memory reused) at
-- once, not some megabytes later.  A pointer kept into it then reads freed
-- memory: AddressSanitizer reports it on Lua 5.4 (whose strings are
-- malloc'd), and LuaJIT's own allocator hands the bytes to the next
-- string, so the values read come back wrong.  Without the variable this
-- module changes nothing on load.
--
-- eager(fn, size) runs fn with a full collection at every function call
-- (a call hook), whatever the variable says, and after each collection
-- makes a few fresh strings of `size` bytes filled with '#': the memory of
-- a string of that size freed by the collection is handed to them at once
-- (both runtimes' allocators reuse an exact fit first), so a pointer kept
-- into it reads '#'s, on any build.  For the few calls a spec wants under
-- the harshest collector: keep what runs under it small.
local M = { active = false }

local level = tonumber(os.getenv("KINOT_GC_STRESS") or "")
if level and level > 0 then
  M.active = true
  if rawget(_G, "jit") or _VERSION == "Lua 5.1" then
    -- a new cycle as soon as one ends, each step a large share of one;
    -- and, LuaJIT having no young collections, a full one every 1000 VM
    -- instructions (count hooks run in the interpreter, not in traces)
    collectgarbage("setpause", 0)
    collectgarbage("setstepmul", 10000)
    debug.sethook(function() collectgarbage("collect") end, "", 1000)
  else
    -- generational: every 100 VM instructions, a young collection frees
    -- whatever new object lost its last reference since the one before
    collectgarbage("generational")
    debug.sethook(function() collectgarbage("step", 0) end, "", 100)
  end
  collectgarbage("restart")
end

function M.eager(fn, size)
  local hook, mask, count = debug.gethook()
  local n = 0
  M.filler = {} -- held, so that their bytes stay '#'
  debug.sethook(function()
    collectgarbage("collect")
    if size and size > 16 then
      for i = 1, 4 do
        n = n + 1
        M.filler[i] = string.rep("#", size - 16) .. string.format("%016d", n) -- distinct: never interned
      end
    end
  end, "c")
  local ok, err = pcall(fn)
  debug.sethook(hook, mask, count)
  M.filler = nil
  if not ok then error(err, 0) end
end

return M
