-- kinot.file: the one reader of a whole file in lua-kinot (the C core's
-- loader, the simulator's launcher, the CLI's pid files, the Redis TLS
-- files, /etc/hosts and /etc/resolv.conf for the nginx resolver).
-- Plain Lua on purpose: kinot.core_loader reads through it before the C core
-- (and so kinot.errors, which needs the core) exists; so a failure is said as
-- io.open says it, a string, and each caller turns it into its own error.
local open, tostring = io.open, tostring

local M = {}

--- read(path) -> the file's bytes, exactly as stored (binary mode, NUL
-- bytes and all; "" for an empty file), or nil and why ("<path>: <reason>"):
-- a missing or unreadable file, or a directory (which fopen opens on Linux,
-- and Lua 5.4 and LuaJIT then read as nil).
function M.read(path)
  local f, err = open(path, "rb")
  if not f then return nil, err end
  local s, rerr = f:read("*a")
  f:close()
  if s == nil then return nil, tostring(path) .. ": " .. tostring(rerr) end
  return s
end

return M
